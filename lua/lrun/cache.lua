--- lrun.cache — the `cache_implementation` and `cache_config` options, shared
-- by lrun.load and generate (docs/kv-cache.md):
--
--   cache_implementation  "dynamic" (default), "static", "offloaded",
--                         "offloaded_static" or "quantized"
--   cache_config          for "quantized", HF's QuantizedCacheConfig names:
--                         {nbits = 8|4 (8), q_group_size = (64), residual_length = (128)}
--
-- A bad value is an error naming the option and listing what is valid.
-- @module lrun.cache
local lf = require("lrun.ffi")
local C = lf.C

local M = {}

M.names = { "dynamic", "static", "offloaded", "offloaded_static", "quantized" }

local kinds = {
  dynamic = C.LRUN_CACHE_KIND_DYNAMIC, static = C.LRUN_CACHE_KIND_STATIC,
  offloaded = C.LRUN_CACHE_KIND_OFFLOADED, offloaded_static = C.LRUN_CACHE_KIND_OFFLOADED_STATIC,
  quantized = C.LRUN_CACHE_KIND_QUANTIZED,
}

local config_keys = { nbits = true, q_group_size = true, residual_length = true }

local INT_MAX = require("lrun.size").INT_MAX

-- > 0 and within a C int (the engine's fields; a larger value would wrap on its way there)
local function whole(v) return type(v) == "number" and v % 1 == 0 and v > 0 and v <= INT_MAX end

--- Checks the two options; raises error(msg, level) naming a bad one.
-- @tparam string where "lrun.load" or "generate", for messages
-- @tparam any impl cache_implementation (nil: not given)
-- @tparam any config cache_config (nil: not given)
-- @tparam int level
function M.check(where, impl, config, level)
  level = level + 1
  if impl ~= nil and (type(impl) ~= "string" or not kinds[impl]) then
    error(string.format('%s: cache_implementation must be one of "%s", got %s', where,
      table.concat(M.names, '", "'), type(impl) == "string" and ('"' .. impl .. '"') or type(impl)), level)
  end
  if config == nil then return end
  if type(config) ~= "table" then error(where .. ": cache_config must be a table, got " .. type(config), level) end
  for k, v in pairs(config) do
    if not config_keys[k] then
      error(where .. ": cache_config: unknown key '" .. tostring(k)
        .. "' (nbits, q_group_size, residual_length)", level)
    end
    if not whole(v) then error(where .. ": cache_config." .. k .. " must be a whole number > 0 and <= " .. INT_MAX, level) end
  end
  if config.nbits and config.nbits ~= 8 and config.nbits ~= 4 then
    error(where .. ": cache_config.nbits must be 8 or 4, got " .. config.nbits, level)
  end
end

--- The engine options of a cache choice: a table of lrun_engine_opts fields.
-- @tparam[opt] string impl
-- @tparam[opt] table config
-- @treturn table
function M.engine_fields(impl, config)
  config = config or {}
  return {
    cache_kind = kinds[impl or "dynamic"],
    kv_quant_bits = config.nbits or 0,
    kv_quant_group = config.q_group_size or 0,
    kv_residual_len = config.residual_length or 0,
  }
end

--- A key that tells two cache choices apart (the model keeps one engine per choice at a time).
function M.key(impl, config)
  config = config or {}
  return string.format("%s/%d/%d/%d", impl or "dynamic", config.nbits or 0, config.q_group_size or 0,
    config.residual_length or 0)
end

return M
