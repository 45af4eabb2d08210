--- lrun.cache_kinds — KV cache implementations by name, as far as this
-- build of the library has them. "dynamic" and "static" always exist; the
-- others ("offloaded", "offloaded_static", "quantized") exist when the core
-- defines LRUN_CACHE_KIND_<NAME>.
-- @module lrun.cache_kinds
local lf = require("lrun.ffi")
local C = lf.C

local M = {}

M.names = { "dynamic", "static", "offloaded", "offloaded_static", "quantized" }

--- The lrun_cache_kind of a name, or nil and why not.
-- @tparam string name
function M.value(name)
  local known = false
  for _, n in ipairs(M.names) do if n == name then known = true end end
  if not known then
    return nil, "unknown cache implementation \"" .. tostring(name) .. "\" (one of " .. table.concat(M.names, ", ") .. ")"
  end
  local ok, v = pcall(function() return C["LRUN_CACHE_KIND_" .. name:upper()] end)
  if not ok or v == nil then return nil, "this build of lrun has no \"" .. name .. "\" cache" end
  return tonumber(v)
end

--- The name of an lrun_cache_kind value ("dynamic", …), or nil.
function M.name(value)
  for _, n in ipairs(M.names) do
    if M.value(n) == tonumber(value) then return n end
  end
end

--- The cache implementation a run with these generate options uses: the
-- option, else the model's.
-- @tparam table config generate options (cache_implementation=, model=)
function M.current(config)
  if config.cache_implementation then return config.cache_implementation end
  if config.model and config.model.cache_implementation then return config.model.cache_implementation end
  return "dynamic"
end

--- True when this build has the cache implementation.
function M.available(name)
  return M.value(name) ~= nil
end

return M
