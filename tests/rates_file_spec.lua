-- rates_file_spec: the planner's rates kept in a file and given back (lua/lrun/rates_file.lua): a written
-- table reads back equal, a model's measured rates too, and a file that fails (syntax, no table, a field
-- of the wrong type or a negative rate, an endless loop) is an error naming the file and the field.
package.path = "./?.lua;" .. package.path
local rates_file = require("lrun.rates_file")

local shell = require("tests.shell")
local tmp = shell.tmpfile

-- A tiny bf16 model's path (2 blocks, width 64).
local function gen_model()
  local lf = require("lrun.ffi")
  local path = os.tmpname() .. ".gguf"
  local s = lf.ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff, s.n_vocab, s.n_ctx = 2, 64, 4, 2, 128, 300, 64
  s.weight_dtype, s.embd_dtype, s.rope_freq_base, s.rms_eps, s.seed = lf.C.LRUN_DTYPE_BF16, lf.C.LRUN_DTYPE_BF16,
    10000, 1e-5, 7
  assert(lf.C.lrun_model_generate(path, s) == lf.C.LRUN_OK, lf.last_error())
  return path
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

describe("rates files", function()
  local bw = { device = "cuda", h2d_pinned = 54.6e9, h2d_pageable = 12.7e9, host_read = 16.3e9,
    device_read = 2838.4e9, round_trip_s = 2.1e-5, host_matmul = { bf16 = 110.0e9, q4_K = 62.7e9 },
    host_matmul_copying = { bf16 = 83.8e9 }, host_batch = {} }

  it("writes a table that reads back equal, bit for bit", function()
    local p = os.tmpname()
    assert(rates_file.write(bw, p))
    local back = assert(rates_file.read(p, bw))
    os.remove(p)
    assert.is_true(same(bw, back))
    assert.are.equal(1 / 3, assert(rates_file.read(tmp("return { x = " .. string.format("%.17g", 1 / 3) .. " }"))).x)
  end)

  it("puts a file's fields in place and keeps the others", function()
    local p = tmp("return { h2d_pinned = 1e8, host_matmul = { bf16 = 1e5 } }")
    local b = {}
    for k, v in pairs(bw) do b[k] = v end
    assert(rates_file.apply(b, p))
    os.remove(p)
    assert.are.equal(1e8, b.h2d_pinned)
    assert.are.same({ bf16 = 1e5 }, b.host_matmul)
    assert.are.equal(bw.device_read, b.device_read)
  end)

  it("says what is wrong and where", function()
    local cases = {
      { "return {", "rates file .*:1:" },
      { "return 42", "returns a number, not a table" },
      { "return { h2d_pinned = 'fast' }", "h2d_pinned: a string where lrun measures a number" },
      { "return { host_read = -1 }", "host_read: must be a number >= 0" },
      { "return { host_matmul = { bf16 = 0/0 } }", "host_matmul.bf16: must be a number >= 0" },
      { "return { f = function() end }", "f: a function" },
      { "while true do end", "instruction" },
      { "return { x = os.getenv('HOME') }", "os" },
    }
    for _, c in ipairs(cases) do
      local p = tmp(c[1])
      local r, err = rates_file.read(p, bw)
      os.remove(p)
      assert.is_nil(r, c[1])
      assert.truthy(tostring(err):find(c[2]), c[1] .. " -> " .. tostring(err))
      assert.truthy(tostring(err):find(p, 1, true), "names the file: " .. tostring(err))
    end
    local r, err = rates_file.read("/nonexistent/rates.lua")
    assert.is_nil(r)
    assert.truthy(err:find("/nonexistent/rates.lua", 1, true), err)
  end)

  it("keeps a model's measured rates (what LRUN_RATES_OUT writes)", function()
    local lrun = require("lrun")
    local path = gen_model()
    local m = assert(lrun.load(path, { progress = false }))
    local measured = assert(require("lrun.bandwidth").bandwidths(m))
    local p = os.tmpname()
    assert(rates_file.write(measured, p))
    local back = assert(rates_file.read(p, measured))
    os.remove(p)
    m:free()
    os.remove(path)
    assert.are.equal(measured.h2d_pinned, back.h2d_pinned)
    assert.are.equal(measured.host_read, back.host_read)
    assert.are.equal(measured.device, back.device)
  end)

  it("LRUN_RATES_OUT writes what a smart load measured, LRUN_RATES gives it back, a bad file fails the load", function()
    local path = gen_model()
    local script = tmp("package.path = './?.lua;' .. package.path\n"
      .. "local m = assert(require('lrun').load(arg[1], { policy = 'smart', gpu_budget = 8388608, progress = false }))\n"
      .. "print(m:placement().explain)\n")
    local out_file = os.tmpname()
    local out, rc = shell.run("LRUN_RATES_OUT=" .. shell.quote(out_file) .. " " .. shell.launcher .. " "
      .. shell.quote(script) .. " " .. shell.quote(path))
    assert.are.equal(0, rc, out)
    local written = assert(rates_file.read(out_file))
    local shown = string.format("host->device pinned %.1f GB/s", written.h2d_pinned / 1e9)
    assert.truthy(out:find(shown, 1, true), shown .. " in\n" .. out)
    local given = tmp("return { h2d_pinned = 123.4e9 }")
    out, rc = shell.run("LRUN_RATES=" .. shell.quote(given) .. " " .. shell.launcher .. " " .. shell.quote(script)
      .. " " .. shell.quote(path))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("host->device pinned 123.4 GB/s", 1, true), out)
    local bad = tmp("return { h2d_pinned = 'fast' }")
    out, rc = shell.run("LRUN_RATES=" .. shell.quote(bad) .. " " .. shell.launcher .. " " .. shell.quote(script)
      .. " " .. shell.quote(path))
    assert.are_not.equal(0, rc)
    assert.truthy(out:find("h2d_pinned: a string where lrun measures a number", 1, true), out)
    for _, f in ipairs({ path, script, out_file, given, bad }) do os.remove(f) end
  end)
end)
