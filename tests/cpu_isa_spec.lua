--- The host kernel level (runtime/quant/quant_isa.c): lrun_cpu_kernels names
-- it, --explain prints it, LRUN_CPU_ISA forces one and falls back, saying so,
-- on a value that is no level. The kernels' bits at each level are
-- tests/c/test_dot_isa.c's; llama.cpp's goldens at the AVX2 level are
-- tests/isa_levels.sh's.
package.path = "./?.lua;" .. package.path
local ffi = require("ffi")
local lf = require("lrun.ffi")
local shell = require("tests.shell")
local sh, launcher, quote = shell.run, shell.launcher, shell.quote

local levels = { avx512 = true, avx2 = true, scalar = true }
local model = os.getenv("LRUN_MODEL")
local have_model = model and io.open(model, "rb") ~= nil

describe("host kernel level", function()
  it("lrun_cpu_kernels names a level", function()
    assert.is_true(levels[ffi.string(lf.C.lrun_cpu_kernels())] ~= nil)
  end)

  it("LRUN_CPU_ISA=scalar is taken, and a bad value falls back saying so", function()
    local probe = " -e " .. quote("io.write(require('ffi').string(require('lrun.ffi').C.lrun_cpu_kernels()))")
    local out, rc = sh("LRUN_CPU_ISA=scalar " .. launcher .. probe)
    assert.are.equal(0, rc, out)
    assert.are.equal("scalar", out)
    out, rc = sh("LRUN_CPU_ISA=avx9000 " .. launcher .. probe)
    assert.are.equal(0, rc, out)
    assert.is_truthy(out:find("LRUN_CPU_ISA=avx9000 is not one of avx512, avx2, scalar, auto; using ", 1, true), out)
    assert.are.equal(ffi.string(lf.C.lrun_cpu_kernels()), out:match("using (%w+)\n"))
  end)

  local it_model = have_model and it or pending
  it_model("--explain prints the level in use (LRUN_MODEL)", function()
    local out, rc = sh(launcher .. " examples/generate.lua -m " .. quote(model) .. " -p hi -n 1 --temp 0 --explain")
    assert.are.equal(0, rc, out)
    assert.is_truthy(out:find("host kernels: " .. ffi.string(lf.C.lrun_cpu_kernels()) .. "\n", 1, true), out)
    out, rc = sh("LRUN_CPU_ISA=scalar " .. launcher .. " examples/generate.lua -m " .. quote(model)
      .. " -p hi -n 1 --temp 0 --explain")
    assert.are.equal(0, rc, out)
    assert.is_truthy(out:find("host kernels: scalar\n", 1, true), out)
  end)
end)
