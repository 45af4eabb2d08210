--- lrun.policy_file — finding a policy by name, table or file.
--
-- A policy file is a Lua chunk run in a sandbox that offers the predicates
-- (is_embedding_table, is_norm_vector, is_bias, is_lm_head, is_attention,
-- is_mlp, layer_range, name_matches, any), OffloadPolicy, the built-in
-- policies (conservative, aggressive, layers, smart), KiB/MiB/GiB, and the
-- safe parts of the standard library (lrun.sandbox: private copies of
-- string, table and math; no io, os, ffi, debug, load; an instruction
-- limit; docs/policies.md). It
-- returns a policy table ({plan = function(tensors, budget) … end}), a
-- plan function, or defines a global `plan`:
--
--     -- keep-embeddings.lua
--     return OffloadPolicy{predicates = {is_embedding_table, is_norm_vector}}
--
-- Errors name the file and line ("p.lua:3: …"), as Lua reports them.
-- @module lrun.policy_file
local M = {}

local builtin = { conservative = true, aggressive = true, layers = true, smart = true, experts_on_host = true,
  n_cpu_moe = true }

local loaded = {}

--- A module of policies/ ("predicates", "offload_policy", a policy), found
-- through package.path or, failing that, under lrun's root directory.
function M.module(name)
  if loaded[name] then return loaded[name] end
  local ok, mod = pcall(require, "policies." .. name)
  if not ok then mod = dofile(require("lrun.config").root .. "/policies/" .. name .. ".lua") end
  loaded[name] = mod
  return mod
end

--- A built-in policy module by name, or nil.
function M.builtin(name)
  if not builtin[name] then return nil end
  return M.module(name)
end

-- What a policy file finds in its environment besides lrun.sandbox's
-- (docs/policies.md): the predicates, OffloadPolicy, the built-in policies
-- and the size units, as read-only views.
local function names()
  local sandbox = require("lrun.sandbox")
  local P = M.module("predicates")
  local extra = {
    OffloadPolicy = sandbox.readonly(M.module("offload_policy"), "OffloadPolicy"),
    KiB = 2 ^ 10, MiB = 2 ^ 20, GiB = 2 ^ 30,
    predicates = sandbox.readonly(P, "predicates"),
  }
  for k, v in pairs(P) do extra[k] = v end
  for name in pairs(builtin) do extra[name] = sandbox.readonly(M.builtin(name), name) end
  return extra
end

-- lrun reads what a plan returns outside the sandbox's limit, so those
-- tables must be plain: a metatable's __index could run the file's code
-- there, unlimited.
local function plain(path, v, what)
  if type(v) == "table" and debug.getmetatable(v) ~= nil then
    error("policy file " .. path .. ": " .. what .. " has a metatable (return plain tables)", 0)
  end
end

--- Loads a policy file, in a sandbox of its own (lrun.sandbox): its chunk
-- and every call of its plan run under the instruction limit.
-- @tparam string path
-- @treturn[1] table policy {name=, plan=, source="path"}
-- @treturn[2] nil
-- @treturn[2] string "policy file path:line: why"
function M.load(path)
  local sandbox = require("lrun.sandbox")
  local result, env = sandbox.dofile(path, names())
  if result == nil and type(env) == "string" then return nil, "policy file " .. env end
  if result == nil then result = rawget(env, "plan") end
  if type(result) == "function" then result = { plan = result } end
  if type(result) ~= "table" or type(result.plan) ~= "function" then
    return nil, "policy file " .. path .. ": must return a policy ({plan = function(tensors, budget)}), "
      .. "a plan function, or define plan; got " .. type(result)
  end
  local policy = setmetatable({}, { __index = result })
  policy.name = result.name or path:match("([^/]+)%.lua$") or path
  policy.source = path
  policy.plan_unguarded = result.plan
  local guarded = sandbox.guard("policy file " .. path, result.plan)
  policy.plan = function(tensors, budget)
    local plan, off, extra = guarded(tensors, budget)
    plain(path, plan, "its plan")
    plain(path, extra, "its extra table")
    if type(extra) == "table" then plain(path, rawget(extra, "host_compute"), "host_compute") end
    if type(extra) == "table" then plain(path, rawget(extra, "packed"), "packed") end
    return plan, off, extra
  end
  return policy
end

--- Where a policy's plan function is defined, "file:line", for messages.
-- A file's policy built from a library function (return OffloadPolicy{…})
-- has its plan defined elsewhere: then the file alone is named.
function M.where(policy)
  local info = debug.getinfo(policy.plan_unguarded or policy.plan, "S")
  if not info or info.what == "C" then return policy.source or policy.name end
  local src = info.source:sub(1, 1) == "@" and info.source:sub(2) or info.short_src
  if policy.source and src ~= policy.source then return policy.source end
  return src .. ":" .. info.linedefined
end

--- Resolves a policy option: a built-in name, a file path, or a table
-- with a plan function.
-- @treturn[1] table policy
-- @treturn[2] nil
-- @treturn[2] string
function M.resolve(spec)
  if type(spec) == "table" then
    if type(spec.plan) ~= "function" then return nil, "policy: a table policy needs a plan function" end
    return spec
  end
  if type(spec) ~= "string" then return nil, "policy: expected a name, a file or a table, got " .. type(spec) end
  local b = M.builtin(spec)
  if b then return b end
  if spec:find("/", 1, true) or spec:find("%.lua$") then return M.load(spec) end
  return nil, "policy '" .. spec .. "': not a built-in policy (conservative, aggressive, layers, smart, "
    .. "experts_on_host, n_cpu_moe) "
    .. "nor a .lua file"
end

return M
