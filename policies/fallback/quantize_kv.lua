--- quantize_kv — on OOM, store the KV cache quantized (int8/int4 codes
-- with per-group scales, recent tokens exact, as HF's QuantizedCache):
-- cache_implementation = "quantized". Not exact: tokens may differ from an
-- unconstrained run. Declines when the OOM happened loading weights, when
-- the cache is already quantized or off the device, or when this build has
-- no quantized cache.
local cache_kinds = require("lrun.cache_kinds")
local resilient = require("lrun.resilient")

local M = { name = "quantize_kv", exact = false }

function M.apply(err, config)
  if err.phase == "load" or err.phase == "weights" then
    return nil, "the allocation that failed was weights (" .. err.phase .. "), not the KV cache"
  end
  local cur = cache_kinds.current(config)
  if cur == "quantized" then return nil, "the KV cache is already quantized" end
  if cur == "offloaded" or cur == "offloaded_static" then
    return nil, "the KV cache is already off the device (quantizing it would put it back)"
  end
  local ok, why = cache_kinds.value("quantized")
  if not ok then return nil, why end
  return resilient.with(config, { cache_implementation = "quantized" }),
    "cache_implementation " .. cur .. " -> quantized (approximate: outputs may differ)"
end

return M
