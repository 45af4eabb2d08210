--- lrun.resilient — runs a function again under a changed configuration
-- when it runs out of device memory, asking fallback strategies in order.
--
--     local text = lrun.resilient(function(cfg)
--       return m:generate(prompt, cfg)
--     end, {"offload_kv", "offload_weights"}, {num_beams = 8, max_new_tokens = 64})
--
-- fn(config) returns its results, or nil and an error. On an OOM error
-- ({kind="oom", ...}, lrun.errors) each strategy in turn is asked
-- strategy.apply(err, config): the first to return a changed configuration
-- "fires" and fn runs again with it; a strategy declines with nil and a
-- reason. When every strategy declines, the OOM error comes back, with the
-- log of what was tried in err.fallbacks. Every decision is logged
-- (lrun.log): which strategy fired and why, or why it declined.
--
-- A strategy is the name of a module in policies/fallback/ ("offload_kv"),
-- a table with apply(err, config) (and a name), or a function(err, config).
-- Strategies never change the config they are given; they return a copy
-- (M.with). docs/fallbacks.md has the list and how to write one.
-- @module lrun.resilient
local errors = require("lrun.errors")
local log = require("lrun.log")

local M = {}

M.max_retries = 8

local function pack(...) return { n = select("#", ...), ... } end

--- A copy of config with changes applied (one level deep; `load` and
-- `place` tables are copied too, so a change never reaches the original).
-- @tparam table config
-- @tparam table changes
-- @treturn table
function M.with(config, changes)
  local out = {}
  for k, v in pairs(config) do
    if (k == "load" or k == "place") and type(v) == "table" then
      local t = {}
      for kk, vv in pairs(v) do t[kk] = vv end
      out[k] = t
    else
      out[k] = v
    end
  end
  for k, v in pairs(changes) do out[k] = v end
  return out
end

local loaded = {}

-- The file of a strategy name: policies/fallback/<name>.lua on
-- package.path, or under the checkout root (lrun.config.root).
local function strategy_path(name)
  local found = package.searchpath("policies.fallback." .. name, package.path)
  if found then return found end
  return (require("lrun.config").root or ".") .. "/policies/fallback/" .. name .. ".lua"
end

-- The strategy module of a name, loaded in a sandbox of its own
-- (lrun.sandbox): apply runs under the instruction limit.
local function load_strategy(name, level)
  if loaded[name] then return loaded[name] end
  if not name:match("^[%w_]+$") then error("fallback: bad strategy name '" .. name .. "'", level) end
  local sandbox = require("lrun.sandbox")
  local path = strategy_path(name)
  local mod, err = sandbox.dofile(path)
  if mod == nil and type(err) == "string" then error("fallback: no strategy '" .. name .. "' (" .. err .. ")", level) end
  if type(mod) ~= "table" or type(mod.apply) ~= "function" then
    error("fallback: policies/fallback/" .. name .. ".lua does not return a table with apply(err, config)", level)
  end
  local guarded = sandbox.guard("fallback " .. path, mod.apply)
  -- the configuration it returns is read outside the limit: plain tables only
  local function apply(oom, config)
    local new, why = guarded(oom, config)
    for _, t in ipairs({ new, type(new) == "table" and rawget(new, "place") or nil }) do
      if type(t) == "table" and debug.getmetatable(t) ~= nil then
        error("fallback " .. path .. ": returned a configuration with a metatable (return plain tables)", 0)
      end
    end
    return new, why
  end
  local s = { name = mod.name or name, exact = mod.exact, apply = apply }
  loaded[name] = s
  return s
end

--- The strategies of a list, resolved (raises on an unknown name).
-- @tparam {string|table|function,...} list
-- @treturn {{name=, apply=},...}
function M.resolve(list, level)
  level = (level or 1) + 1
  if type(list) ~= "table" then error("fallback: the strategies must be a list", level) end
  local out = {}
  for i, s in ipairs(list) do
    if type(s) == "string" then
      out[i] = load_strategy(s, level + 1)
    elseif type(s) == "function" then
      out[i] = { name = "function #" .. i, apply = s }
    elseif type(s) == "table" and type(s.apply) == "function" then
      out[i] = { name = s.name or ("strategy #" .. i), apply = s.apply }
    else
      error("fallback: strategy #" .. i .. " must be a name, a function or a table with apply, got " .. type(s), level)
    end
  end
  return out
end

local function describe_oom(err)
  local function mib(n) return n and string.format("%.1f MiB", n / 1048576) or "?" end
  return string.format("out of memory on %s (%s phase, needs %s, %s free)", err.device or "the device",
    err.phase or "unknown", mib(err.requested), mib(err.free))
end

-- A configuration as a string, keys sorted, to recognise one already
-- tried. The model (config.model) is the same object every time: left out.
local function key_of(v, depth)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t ~= "table" then return tostring(v) end
  if depth > 4 then return "{...}" end
  local keys = {}
  for k in pairs(v) do
    if not (depth == 0 and k == "model") then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = tostring(k) .. "=" .. key_of(v[k], depth + 1) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- What an OOM looked like: the failing request, the free memory and where
-- the weights were (config.model:placement()). Two equal states mean the
-- retry between them changed nothing that memory sees.
local function state_of(err, config)
  local placed = ""
  local m = config.model
  if type(m) == "table" and type(m.placement) == "function" then
    local ok, p = pcall(m.placement, m)
    if ok and type(p) == "table" then placed = key_of(p.bytes, 1) end
  end
  return table.concat({ tostring(err.device), tostring(err.phase), tostring(err.stage), tostring(err.requested),
    tostring(err.free), placed }, "|")
end

local function give_up(err, history, strategy, why)
  log.info("fallback: stopping: %s", why)
  history[#history + 1] = { strategy = strategy, fired = false, reason = why, error = tostring(err) }
  err.fallbacks = history
  return nil, err
end

--- Runs fn(config), retrying under the strategies on OOM. It stops when
-- every strategy declines, when a retry changed nothing (the same failing
-- request, free memory and placement as before it), and after max_retries;
-- a configuration already tried is never tried again (the strategy that
-- proposes it counts as declining).
-- @tparam function fn function(config) → results or nil, err
-- @tparam {string|table|function,...} strategies
-- @tparam[opt] table config the first configuration ({} when nil)
-- @tparam[opt] table opts {log = a list to append {strategy=, fired=, reason=} to}
-- @return fn's results, or nil and the last error (err.fallbacks = the log)
function M.run(fn, strategies, config, opts)
  local chain = M.resolve(strategies, 2)
  config = config or {}
  local history = (opts and opts.log) or {}
  local retries = 0
  local tried = { [key_of(config, 0)] = true }
  local last_state, last_fired
  while true do
    local res = pack(fn(config))
    local err = res[2]
    if res[1] ~= nil or not errors.is_oom(err) then return unpack(res, 1, res.n) end
    local state = state_of(err, config)
    if last_state == state then
      return give_up(err, history, last_fired, "the retry after " .. last_fired .. " changed nothing (" ..
        describe_oom(err) .. " again, the same placement)")
    end
    last_state = state
    if retries >= M.max_retries then
      log.info("fallback: giving up after %d retries: %s", retries, tostring(err))
      err.fallbacks = history
      return nil, err
    end
    local fired = false
    for _, s in ipairs(chain) do
      local new, why = s.apply(err, config)
      if new ~= nil then
        if type(new) ~= "table" then error("fallback: strategy " .. s.name .. " returned a " .. type(new)) end
        local key = key_of(new, 0)
        if tried[key] then
          why = "its configuration was tried already (" .. tostring(why or "no change") .. ")"
        else
          tried[key] = true
          why = why or "changed the configuration"
          log.info("fallback %s fired: %s; %s", s.name, describe_oom(err), why)
          history[#history + 1] = { strategy = s.name, fired = true, reason = why, error = tostring(err) }
          config = new
          fired = s.name
          break
        end
      end
      why = why or "declined"
      log.info("fallback %s declined: %s", s.name, why)
      history[#history + 1] = { strategy = s.name, fired = false, reason = why, error = tostring(err) }
    end
    if not fired then
      err.fallbacks = history
      return nil, err
    end
    last_fired = fired
    retries = retries + 1
  end
end

return M
