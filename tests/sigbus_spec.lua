--- A model file truncated while it is in use (issue 16). Weights read
-- through its mapping fault with SIGBUS: inside a step the library turns
-- that into an error naming the file (core/mapguard.h), the generate call
-- returns nil, err and the script goes on; a fault outside a step reaches
-- the launcher's handler, which names the file and says what to do instead
-- of dying with "Bus error" (app/sigbus.h). The library's own reads
-- outside a step (lrun.load, lrun pack) turn a truncation into an error as
-- well: the launcher runs with build/tests/cut_on_map.so preloaded, which
-- cuts the file right after the library maps it. The disk tier's clean
-- error for the same case is in disk_tier_spec.lua; tests/c/test_sigbus.c
-- checks the C API.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local shell = require("tests.shell")

local tmpfile = shell.tmpfile

local function sanitizer_build()
  local build = require("lrun.config").build
  if build:match("asan") or build:match("tsan") then
    pending("sanitizer build " .. build .. ": the sanitizer keeps SIGBUS for its own report")
    return true
  end
end

-- f32 weights, so that cutting the file at 8 KiB cuts what a step reads
local function make_model()
  local model = os.tmpname() .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 2, 256, 4, 2, 512
  s.n_vocab, s.n_ctx = 512, 128
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32, 1
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 3, 1
  assert.are.equal(C.LRUN_OK, C.lrun_model_generate(model, s))
  return model
end

local function run_script(text)
  local script = tmpfile(text)
  local out, rc = shell.run(shell.launcher .. " " .. shell.quote(script))
  os.remove(script)
  return out, rc
end

describe("a model file truncated in use", function()
  for _, threads in ipairs({ 1, 2 }) do
    it("makes generate return nil, err naming the file, and the script goes on (" .. threads .. " threads)", function()
      if sanitizer_build() then return end
      local model = make_model()
      -- weights stay in the mmap tier on the CPU: generate once, truncate, generate again
      local out, rc = run_script(string.format([[
        local m = assert(lrun.load(%q, { device = "cpu", threads = %d }))
        assert(m:generate({ 1, 300, 42 }, { max_new_tokens = 2, eos_token_id = {} }))
        print("first generate ok")
        io.stdout:flush()
        assert(os.execute("truncate -s 8192 %s"))
        local text, err = m:generate({ 1, 301, 43 }, { max_new_tokens = 2, eos_token_id = {} })
        print("second generate returned", text, err)
        local text2, err2 = m:generate({ 1, 302, 44 }, { max_new_tokens = 2, eos_token_id = {} })
        print("third generate returned", text2, err2 and err2.kind)
        m:free()
        print("still running")
      ]], model, threads, model))
      os.remove(model)
      assert.matches("first generate ok", out, 1, true)
      assert.matches("second generate returned\tnil\tio: ", out, 1, true)
      assert.matches("model file " .. model .. " was truncated while in use", out, 1, true)
      assert.matches("third generate returned\tnil\tio", out, 1, true)
      assert.matches("still running", out, 1, true)
      assert.are.equal(0, rc)
    end)
  end

  it("leaves the REPL running: the generate line prints nil and the error", function()
    if sanitizer_build() then return end
    local model = make_model()
    local input = table.concat({
      string.format("m = assert(lrun.load(%q, { device = 'cpu', threads = 2 }))", model),
      "ids = m:generate({ 1, 300, 42 }, { max_new_tokens = 2, eos_token_id = {} }) ~= nil",
      "ids",
      string.format("os.execute('truncate -s 8192 %s') ~= nil", model),
      "m:generate({ 1, 301, 43 }, { max_new_tokens = 2, eos_token_id = {} })",
      "m:free()",
      "print('still here', 6 * 7)",
      "",
    }, "\n")
    local out = shell.run(shell.quote(shell.launcher), input)
    os.remove(model)
    assert.matches("true\ntrue\nnil\t", out)
    assert.matches("was truncated while in use", out, 1, true)
    assert.matches("still here\t42\n$", out)
  end)

  -- the launcher with the file cut to bytes right after the library maps it
  local function cut_on_map(file, bytes)
    local so = require("lrun.config").build .. "/tests/cut_on_map.so"
    assert(io.open(so, "rb"), so .. " is missing: make test builds it"):close()
    return string.format("LD_PRELOAD=%s LRUN_TEST_CUT_FILE=%s LRUN_TEST_CUT_BYTES=%d ",
      shell.quote(so), shell.quote(file), bytes)
  end

  it("while lrun.load reads it makes load return nil, err naming the file, and the script goes on", function()
    if sanitizer_build() then return end
    local model = make_model()
    local script = tmpfile(string.format([[
      local m, err = lrun.load(%q, { device = "cpu", threads = 2 })
      print("load returned", m, err)
      print("kind", err and err.kind)
      print("still running", 6 * 7)
    ]], model))
    local out, rc = shell.run(cut_on_map(model, 4096) .. shell.launcher .. " " .. shell.quote(script))
    os.remove(script)
    os.remove(model)
    assert.matches("load returned\tnil\t", out)
    assert.matches("file " .. model .. " was truncated while it was read", out, 1, true)
    assert.matches("kind\tio\n", out)
    assert.matches("still running\t42", out, 1, true)
    assert.are.equal(0, rc)
  end)

  it("while lrun.load reads it leaves the REPL running", function()
    if sanitizer_build() then return end
    local model = make_model()
    local input = table.concat({
      string.format("lrun.load(%q, { device = 'cpu' })", model),
      "print('still here', 6 * 7)",
      "",
    }, "\n")
    local out = shell.run(cut_on_map(model, 4096) .. shell.quote(shell.launcher), input)
    os.remove(model)
    assert.matches("nil\t", out)
    assert.matches("was truncated while it was read", out, 1, true)
    assert.matches("still here\t42\n$", out)
  end)

  it("while lrun pack reads it ends lrun pack with an error naming the file, no output", function()
    if sanitizer_build() then return end
    local model = make_model()
    local packed = model .. ".lrpk"
    local size = assert(io.open(model, "rb")):seek("end")
    local out, rc = shell.run(cut_on_map(model, math.floor(size / 2)) .. shell.launcher .. " pack -t 2 "
      .. shell.quote(model) .. " " .. shell.quote(packed))
    local made = io.open(packed, "rb")
    if made then made:close() end
    os.remove(model)
    os.remove(packed)
    assert.matches("lrun pack: ", out, 1, true)
    assert.matches("file " .. model .. " was truncated while it was read", out, 1, true)
    assert.is_nil(out:find("bus error", 1, true))
    assert.is_nil(made)
    assert.are.equal(1, rc)
  end)

  it("outside a step, ends the launcher with a message naming the file, status 128 + SIGBUS", function()
    if sanitizer_build() then return end
    local model = make_model()
    -- a read of the mapping that no step guards: the GGUF reader's own
    local out, rc = run_script(string.format([[
      local lf = require("lrun.ffi")
      local g = lf.ffi.new("lrun_gguf *[1]")
      assert(lf.C.lrun_gguf_open(g, %q) == lf.C.LRUN_OK)
      local last = lf.C.lrun_gguf_tensor_count(g[0]) - 1
      local p = lf.ffi.cast("const volatile uint8_t *", lf.C.lrun_gguf_tensor_data(g[0], last))
      assert(os.execute("truncate -s 8192 %s"))
      print("read", p[0])
      print("read returned")
    ]], model, model))
    os.remove(model)
    assert.is_nil(out:find("read returned", 1, true))
    assert.matches("bus error reading a memory-mapped file (" .. model .. "): it was truncated", out, 1, true)
    assert.are.equal(128 + 7, rc)
  end)
end)
