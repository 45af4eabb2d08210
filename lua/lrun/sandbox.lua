--- lrun.sandbox — where policy files and fallback strategies run.
--
-- Policy files and fallback strategies come from other people. Each runs
-- in an environment of its own: private copies of string, table and math
-- (a file that sets math.huge = 1 or replaces string.format changes its
-- copy, never lrun's), the safe base functions, and read-only views of the
-- lrun modules it is given. It cannot reach io, os, ffi, debug, load,
-- coroutines or the string metatable, and require answers only the modules
-- listed in M.modules. Every call into sandboxed code runs under an
-- instruction limit (a count hook, with the JIT off for the file's
-- functions, since compiled loops do not fire hooks), and a Ctrl-C in the
-- launcher stops it at once. docs/policies.md says what a policy may do.
-- @module lrun.sandbox
local ffi = require("ffi")

local M = {}

--- Lua VM instructions one call into a sandboxed file may run (the file's
-- chunk, one plan, one apply). A policy over thousands of tensors needs a
-- few million; an interpreted infinite loop reaches this in well under a
-- second.
M.max_instructions = 1e8

--- Instructions between two looks of the hook (at the limit and Ctrl-C).
local EVERY = 1000

--- Modules a sandboxed file may require (read-only views of them).
M.modules = {
  ["lrun.cache_kinds"] = true, ["lrun.resilient"] = true, ["lrun.size"] = true,
  ["policies.predicates"] = true, ["policies.offload_policy"] = true, ["policies.common"] = true,
  ["policies.conservative"] = true, ["policies.aggressive"] = true, ["policies.layers"] = true,
  ["policies.smart"] = true, ["policies.experts_on_host"] = true,
  ["policies.n_cpu_moe"] = true,
}

pcall(ffi.cdef, "extern volatile int lrun_launcher_interrupted;")
local can_interrupt = pcall(function() return ffi.C.lrun_launcher_interrupted end)

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

--- A read-only view of a module table: reads go through, writes raise, a
-- callable module stays callable.
function M.readonly(mod, name)
  if type(mod) ~= "table" then return mod end
  local mt = getmetatable(mod)
  return setmetatable({}, {
    __index = mod,
    __newindex = function(_, k) error(name .. " is read-only (setting " .. tostring(k) .. ")", 2) end,
    __call = mt and mt.__call and function(_, ...) return mod(...) end or nil,
    __metatable = false,
  })
end

-- The state of the call that runs now: nil outside sandboxed code.
local current

-- Raised from the hook; every wrapped pcall rethrows it, so a file cannot
-- catch its own limit and loop on.
local function trip(msg)
  current.tripped = msg
  error(msg, 0)
end

local function hook()
  local s = current
  if not s then return end
  if s.tripped then error(s.tripped, 0) end
  -- the flag stays set: the code around the policy (generate) stops too
  if can_interrupt and ffi.C.lrun_launcher_interrupted ~= 0 then trip(s.where .. ": interrupted!") end
  s.count = s.count + EVERY
  if s.count > M.max_instructions then
    trip(string.format("%s: stopped after %.0f instructions (the limit, lrun.sandbox.max_instructions): "
      .. "an endless loop?", s.where, M.max_instructions))
  end
end

local function pack(...) return { n = select("#", ...), ... } end

--- Calls fn(...) under the instruction limit, as pcall does. where names
-- the file in the error. Nested calls share the outer call's count.
function M.pcall(where, fn, ...)
  if current then return pcall(fn, ...) end
  local old = { debug.gethook() }
  current = { where = where, count = 0 }
  debug.sethook(hook, "", EVERY)
  local res = pack(pcall(fn, ...))
  debug.sethook(old[1], old[2] or "", old[3] or 0)
  current = nil
  return unpack(res, 1, res.n)
end

--- fn wrapped so that each call runs under the limit; errors are raised
-- again (with the file named), as if fn had raised them.
function M.guard(where, fn)
  return function(...)
    local res = pack(M.pcall(where, fn, ...))
    if not res[1] then error(res[2], 0) end
    return unpack(res, 2, res.n)
  end
end

-- After a pcall inside sandboxed code: a tripped limit or a Ctrl-C passes
-- through, and the hook is set again (the launcher's Ctrl-C hook replaces
-- it, then removes itself when it raises).
local function after_pcall()
  if not current then return end
  if current.tripped then error(current.tripped, 0) end
  if can_interrupt and ffi.C.lrun_launcher_interrupted ~= 0 then trip(current.where .. ": interrupted!") end
  debug.sethook(hook, "", EVERY)
end

-- pcall and xpcall for sandboxed code.
local function safe_pcall(f, ...)
  local res = pack(pcall(f, ...))
  after_pcall()
  return unpack(res, 1, res.n)
end

local function safe_xpcall(f, handler, ...)
  local args = pack(...)
  local res = pack(xpcall(function() return f(unpack(args, 1, args.n)) end, handler))
  after_pcall()
  return unpack(res, 1, res.n)
end

-- getmetatable without the string metatable (its __index is lrun's string).
local function safe_getmetatable(v)
  if type(v) == "string" then return nil end
  return getmetatable(v)
end

--- A fresh environment for one file; extra (name → value) is added to it.
-- @tparam[opt] table extra
-- @treturn table
function M.env(extra)
  local env = {
    assert = assert, error = error, ipairs = ipairs, pairs = pairs, next = next, select = select,
    tonumber = tonumber, tostring = tostring, type = type, unpack = unpack, print = print,
    rawequal = rawequal, rawget = rawget, rawset = rawset,
    setmetatable = setmetatable, getmetatable = safe_getmetatable,
    pcall = safe_pcall, xpcall = safe_xpcall,
    math = copy(math), string = copy(string), table = copy(table),
  }
  env.string.dump = nil
  env.require = function(name)
    if not M.modules[name] then
      error("require '" .. tostring(name) .. "': not available here (lrun.sandbox.modules lists what is)", 2)
    end
    return M.readonly(require(name), name)
  end
  env._G = env
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

--- Loads a Lua file into a fresh environment, JIT off for every function
-- it defines, and runs it under the limit.
-- @tparam string path
-- @tparam[opt] table extra names added to the environment
-- @treturn[1] any what the file returned
-- @treturn[1] table its environment
-- @treturn[2] nil
-- @treturn[2] string "path:line: why"
function M.dofile(path, extra)
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local env = M.env(extra)
  setfenv(chunk, env)
  if jit then jit.off(chunk, true) end
  local ok, result = M.pcall(path, chunk)
  if not ok then return nil, tostring(result) end
  return result, env
end

return M
