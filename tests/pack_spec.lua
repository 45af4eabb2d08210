-- pack_spec: lrun.pack / lrun.unpack from Lua and `lrun pack` / `lrun unpack`
-- on the command line (runtime/packed/, lua/lrun/pack.lua, lua/lrun/commands.lua).
package.path = "./?.lua;" .. package.path
local shell = require("tests.shell")
local lrun = require("lrun")
local ffi = require("ffi")
local C = require("lrun.ffi").C

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. shell.quote(dir))
local gguf = dir .. "/m.gguf"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

setup(function()
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff, s.n_vocab, s.n_ctx = 2, 64, 4, 2, 160, 300, 64
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_BF16, C.LRUN_DTYPE_BF16, 1
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads, s.trained_stats = 10000, 1e-5, 3, 1, 1
  assert(require("lrun.ffi").check(C.lrun_model_generate(gguf, s)))
end)
teardown(function() os.execute("rm -rf " .. shell.quote(dir)) end)

describe("lrun.pack", function()
  it("packs a bf16 model below 0.70 (codec pex1) and unpacks it byte for byte", function()
    local st = assert(lrun.pack(gguf, dir .. "/m.lrpk", { threads = 2, codec = "pex1" }))
    assert.are.equal(15, st.n_packed)
    assert.are.equal(0, st.n_pex2)
    assert.is_true(st.ratio < 0.70, "ratio " .. st.ratio)
    assert.is_true(st.out_bytes < st.in_bytes)
    assert.is_true(require("lrun.pack").unpack(dir .. "/m.lrpk", dir .. "/back.gguf"))
    assert.are.equal(read(gguf), read(dir .. "/back.gguf"))
  end)

  it("packs with codec pex2 (bf16: every matrix PEX2), unpacks byte for byte and loads", function()
    local st = assert(lrun.pack(gguf, dir .. "/p2.lrpk", { threads = 2, codec = "pex2" }))
    assert.are.equal(15, st.n_packed)
    assert.are.equal(15, st.n_pex2)
    assert.is_true(st.ratio < 0.75, "ratio " .. st.ratio)
    assert.is_true(require("lrun.pack").unpack(dir .. "/p2.lrpk", dir .. "/p2.gguf"))
    assert.are.equal(read(gguf), read(dir .. "/p2.gguf"))
    local m = assert(lrun.load(dir .. "/p2.lrpk", { threads = 1 }))
    assert.are.equal(2, m:info().n_layer)
    m:free()
  end)

  it("packs bf16 tensors PEX2 by default", function()
    local st = assert(lrun.pack(gguf, dir .. "/d.lrpk", { threads = 2 }))
    assert.are.equal(15, st.n_packed)
    assert.are.equal(15, st.n_pex2)
  end)

  it("raises on an unknown codec", function()
    assert.has_error(function() lrun.pack(gguf, dir .. "/x.lrpk", { codec = "pex9" }) end,
      "lrun.pack: opts.codec must be \"pex1\" or \"pex2\", not pex9")
  end)

  it("returns nil and a message for a missing file; raises on misuse", function()
    local st, err = lrun.pack(dir .. "/missing.gguf", dir .. "/x.lrpk")
    assert.is_nil(st)
    assert.matches("missing.gguf", err)
    assert.is_nil(read(dir .. "/x.lrpk"))
    assert.has_error(function() lrun.pack(1, 2) end)
  end)

  it("loads a packed model like the GGUF it came from", function()
    local m = assert(lrun.load(dir .. "/m.lrpk", { threads = 1 }))
    assert.are.equal(2, m:info().n_layer)
    m:free()
  end)
end)

describe("lrun pack (command line)", function()
  it("packs and unpacks", function()
    local out, rc = shell.run(table.concat({ shell.quote(shell.launcher), "pack", "-t", "2", shell.quote(gguf),
      shell.quote(dir .. "/c.lrpk") }, " "))
    assert.are.equal(0, rc, out)
    assert.matches("15 tensors packed", out)
    out, rc = shell.run(table.concat({ shell.quote(shell.launcher), "unpack", shell.quote(dir .. "/c.lrpk"),
      shell.quote(dir .. "/c.gguf") }, " "))
    assert.are.equal(0, rc, out)
    assert.are.equal(read(gguf), read(dir .. "/c.gguf"))
  end)

  it("packs with --codec pex2", function()
    local out, rc = shell.run(table.concat({ shell.quote(shell.launcher), "pack", "--codec", "pex2", shell.quote(gguf),
      shell.quote(dir .. "/c2.lrpk") }, " "))
    assert.are.equal(0, rc, out)
    assert.matches("15 tensors packed %(15 PEX2", out)
  end)

  it("says its usage and fails on wrong arguments or a bad file", function()
    local out, rc = shell.run(shell.quote(shell.launcher) .. " pack only-one")
    assert.are.equal(2, rc)
    assert.matches("usage: lrun pack", out)
    out, rc = shell.run(table.concat({ shell.quote(shell.launcher), "pack", "--codec", "zip", shell.quote(gguf),
      shell.quote(dir .. "/z.lrpk") }, " "))
    assert.are.equal(2, rc)
    assert.matches("%-%-codec pex1|pex2", out)
    out, rc = shell.run(table.concat({ shell.quote(shell.launcher), "unpack", shell.quote(gguf),
      shell.quote(dir .. "/d.gguf") }, " "))
    assert.are.equal(1, rc)
    assert.matches("bad magic", out)
  end)
end)
