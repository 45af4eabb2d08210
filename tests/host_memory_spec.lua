-- host_memory_spec: real memory on the CPU (issue 16). Without a budget the
-- CPU device holds what the host has available, so an impossible request is
-- an ordinary OOM naming the phase and sizes before anything is allocated,
-- never the kernel's OOM killer; a context past the training one warns.
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local lf = require("lrun.ffi")
local C = lf.C
local beam_model = require("tests.beam_model")
local log = require("lrun.log")
local shell = require("tests.shell")

describe("host memory on the cpu", function()
  it("is the unbudgeted cpu device's capacity, not unlimited", function()
    local m = assert(lrun.load(beam_model.path(), { progress = false }))
    local dev = C.lrun_model_device(m.handle)
    local cap = tonumber(C.lrun_device_capacity(dev))
    assert.is_true(cap > 0 and cap <= tonumber(C.lrun_device_total_memory(dev)), "capacity " .. cap)
    m:free()
  end)

  it("refuses a static cache of 10^9 positions before allocating it: an OOM with phase and sizes", function()
    -- in a child under an address-space limit, so that a regression ends in
    -- a failed allocation there rather than in the OOM killer here (not
    -- under ASan, whose shadow memory needs terabytes of address space)
    local script = os.tmpname() .. ".lua"
    local f = assert(io.open(script, "w"))
    f:write(string.format([[
      local lrun = require("lrun")
      require("lrun.log").sink = false
      local m = assert(lrun.load(%q, { n_ctx = 1e9, cache_implementation = "static", progress = false }))
      local t, err = m:generate({ 1, 2, 3 }, { max_new_tokens = 2 })
      print("kind=" .. tostring(err and err.kind), "phase=" .. tostring(err and err.phase),
        "requested=" .. tostring(err and err.requested), "free=" .. tostring(err and err.free))
      print(tostring(err))
    ]], beam_model.path()))
    f:close()
    local asan = select(2, shell.run("ldd " .. shell.launcher .. " | grep -q libasan")) == 0
    local out, rc = shell.run((asan and "" or "ulimit -v 4000000; ") .. shell.launcher .. " " .. shell.quote(script))
    os.remove(script)
    assert.are.equal(0, rc, out)
    assert.matches("kind=oom", out)
    assert.matches("phase=cache", out)
    assert.matches("KV cache %(1000000000 positions", out)
    assert.not_matches("Cannot allocate memory", out)
    local requested, free = out:match("requested=(%d+)"), out:match("free=(%d+)")
    assert.is_true(tonumber(requested) > 2 ^ 37, out) -- the 238 GiB store
    assert.is_true(tonumber(free) < 2 ^ 50, out)       -- real memory, not "16.0 EiB free"
  end)

  it("warns when n_ctx is longer than the training context", function()
    local lines, old = {}, log.sink
    log.sink = function(l) lines[#lines + 1] = l end
    local m = lrun.load(beam_model.path(), { n_ctx = 4096, progress = false })
    log.sink = old
    assert.is_table(m)
    m:free()
    assert.matches("warning: n_ctx 4096 is longer than the context .* was trained for %(2048%)", lines[1])
  end)
end)
