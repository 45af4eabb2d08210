-- sandbox_spec: policy files and fallback strategies run in lrun.sandbox
-- (issue 16): private standard tables, no escape to io/os/ffi, an
-- instruction limit that ends an endless loop naming the file, and Ctrl-C.
package.path = "./?.lua;" .. package.path
local policy_file = require("lrun.policy_file")
local resilient = require("lrun.resilient")
local errors = require("lrun.errors")
local log = require("lrun.log")
local shell = require("tests.shell")

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local function tmpfile(text) return write(os.tmpname() .. ".lua", text) end

describe("a policy file", function()
  it("changes only its own copies of string, table and math", function()
    local path = tmpfile([[
      math.huge = 1
      string.format = function() return "hijacked" end
      table.concat = nil
      local ok = pcall(function() getmetatable("").__index.rep = nil end)
      return { plan = function(t, b)
        math.pi = 3
        string.rep = function() return "" end
        return {}, 0, ok
      end }
    ]])
    local p = assert(policy_file.load(path))
    local _, _, escaped = p.plan({}, {})
    os.remove(path)
    assert.is_false(escaped)
    assert.are.equal(1 / 0, math.huge)
    assert.are.equal("7", string.format("%d", 7))
    assert.are.equal("xx", ("x"):rep(2))
    assert.is_function(table.concat)
    assert.is_true(math.pi > 3.14)
  end)

  it("cannot reach io, os, ffi, debug, load or arbitrary modules", function()
    local path = tmpfile([[
      local seen = {}
      for _, k in ipairs({ "io", "os", "debug", "load", "loadstring", "loadfile", "dofile", "jit",
        "coroutine", "setfenv", "getfenv", "collectgarbage", "module", "package" }) do
        if _G[k] ~= nil then seen[#seen + 1] = k end
      end
      local ok_ffi = pcall(require, "ffi")
      local ok_io = pcall(require, "io")
      local pred = require("policies.predicates")
      local ro = not pcall(function() pred.is_bias = nil end)
      return function() return {}, 0, { seen = seen, ffi = ok_ffi, io = ok_io, ro = ro, dump = string.dump } end
    ]])
    local p = assert(policy_file.load(path))
    local _, _, r = p.plan({}, {})
    os.remove(path)
    assert.are.same({}, r.seen)
    assert.is_false(r.ffi)
    assert.is_false(r.io)
    assert.is_true(r.ro)
    assert.is_nil(r.dump)
    assert.is_function(require("policies.predicates").is_bias)
  end)

  it("with an endless loop in plan stops with an error naming the file", function()
    local path = tmpfile("return { plan = function() while true do end end }")
    local p = assert(policy_file.load(path))
    local t0 = os.clock()
    local ok, err = pcall(p.plan, {}, {})
    local dt = os.clock() - t0
    os.remove(path)
    assert.is_false(ok)
    assert.matches(path:gsub("%p", "%%%0"), err)
    assert.matches("instructions", err)
    assert.is_true(dt < 10, "took " .. dt .. " s")
  end)

  it("cannot catch its own limit with pcall and loop on", function()
    local path = tmpfile([[
      return function()
        local n = 0
        while true do pcall(function() while true do n = n + 1 end end) end
      end
    ]])
    local p = assert(policy_file.load(path))
    local ok, err = pcall(p.plan, {}, {})
    os.remove(path)
    assert.is_false(ok)
    assert.matches("instructions", err)
  end)

  it("cannot smuggle code out in a plan with a metatable", function()
    local path = tmpfile([[
      return function()
        return setmetatable({}, { __index = function() while true do end end }), 0
      end
    ]])
    local p = assert(policy_file.load(path))
    local ok, err = pcall(p.plan, {}, {})
    os.remove(path)
    assert.is_false(ok)
    assert.matches("its plan has a metatable", err)
  end)

  it("with an endless loop in its chunk fails to load, naming the file", function()
    local path = tmpfile("local x = 0\nwhile true do x = x + 1 end")
    local p, err = policy_file.load(path)
    os.remove(path)
    assert.is_nil(p)
    assert.matches("^policy file .*instructions", err)
  end)

  it("stops at the first Ctrl-C in the launcher", function()
    local path = tmpfile("return function() local x = 0 while true do x = x + 1 end end")
    local ready = os.tmpname()
    os.remove(ready)
    local script = tmpfile(string.format([[
      require("lrun.sandbox").max_instructions = 1e15
      local p = assert(require("lrun.policy_file").load(%q))
      io.open(%q, "w"):close() -- in the loop from here on
      p.plan({}, {})
    ]], path, ready))
    -- SIGINT once the script is about to loop (not after a fixed time: a loaded
    -- machine may not have started it by then), SIGKILL 20 s later if that did nothing
    local out, rc = shell.run("timeout -k 5 60 sh -c " .. shell.quote(string.format(
      "%s %s & pid=$!; while [ ! -e %s ]; do sleep 0.05; done; sleep 0.2; kill -INT $pid; "
      .. "( sleep 20; kill -KILL $pid 2>/dev/null ) & wait $pid", shell.launcher, shell.quote(script), shell.quote(ready))))
    os.remove(path)
    os.remove(script)
    os.remove(ready)
    assert.matches("interrupted", out)
    assert.are_not.equal(137, rc)
    assert.are_not.equal(0, rc)
  end)
end)

describe("a fallback strategy", function()
  local dir, old_path
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/policies/fallback"))
    write(dir .. "/policies/fallback/spin_test.lua",
      "return { apply = function() math.huge = 1; while true do end end }")
    old_path = package.path
    package.path = dir .. "/?.lua;" .. package.path
  end)
  teardown(function()
    package.path = old_path
    os.execute("rm -rf " .. dir)
  end)

  it("with an endless loop stops with an error naming its file, and changes nothing of lrun's", function()
    local old_sink = log.sink
    log.sink = false
    local ok, err = pcall(resilient.run, function() return nil, errors.new("oom", "test", { phase = "cache" }) end,
      { "spin_test" }, {})
    log.sink = old_sink
    assert.is_false(ok)
    assert.matches("fallback .*spin_test%.lua.*instructions", err)
    assert.are.equal(1 / 0, math.huge)
  end)
end)
