--- A model file truncated while it is in use (issue 16): weights read through
-- its mapping fault with SIGBUS, and the launcher says which file and what
-- to do instead of dying with "Bus error" (app/sigbus.h). The disk tier's
-- clean error for the same case is in disk_tier_spec.lua.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local shell = require("tests.shell")

local function tmpfile(text)
  local p = os.tmpname()
  local f = assert(io.open(p, "w"))
  f:write(text)
  f:close()
  return p
end

describe("a model file truncated in use", function()
  it("ends the launcher with a message naming the file, status 128 + SIGBUS", function()
    local build = require("lrun.config").build
    if build:match("asan") or build:match("tsan") then
      pending("sanitizer build " .. build .. ": the sanitizer keeps SIGBUS for its own report")
      return
    end
    local model = os.tmpname() .. ".gguf"
    local s = ffi.new("lrun_model_gen_spec")
    s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 2, 256, 4, 2, 512
    s.n_vocab, s.n_ctx = 512, 128
    s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32, 1
    s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 3, 1
    assert.are.equal(C.LRUN_OK, C.lrun_model_generate(model, s))
    -- weights stay in the mmap tier on the CPU: generate once, truncate, generate again
    local script = tmpfile(string.format([[
      local m = assert(lrun.load(%q, { device = "cpu", threads = 1 }))
      assert(m:generate({ 1, 300, 42 }, { max_new_tokens = 2, eos_token_id = {} }))
      print("first generate ok")
      io.stdout:flush()
      assert(os.execute("truncate -s 8192 %s"))
      m:generate({ 1, 301, 43 }, { max_new_tokens = 2, eos_token_id = {} })
      print("second generate returned")
    ]], model, model))
    local out, rc = shell.run(shell.launcher .. " " .. shell.quote(script))
    os.remove(script)
    os.remove(model)
    assert.matches("first generate ok", out, 1, true)
    assert.is_nil(out:find("second generate returned", 1, true))
    assert.matches("bus error reading a memory-mapped file (" .. model .. "): it was truncated", out, 1, true)
    assert.are.equal(128 + 7, rc)
  end)
end)
