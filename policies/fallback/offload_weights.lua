--- offload_weights — on OOM, keep more weights off the device: raise the
-- placement's cpu_offload_gb (GiB of weights kept off the device, vLLM's
-- option, lrun.load / model:place) by what the failed allocation lacked,
-- at least 1/8 of the weights still on the device. Exact: off-device
-- weights are streamed or computed where they live with the same
-- arithmetic (docs/residency.md), only slower.
-- The runner applies config.place with model:place() before retrying.
-- Declines without a model to inspect, when no weights are on the device,
-- or when this build cannot place weights (no model:place).
local resilient = require("lrun.resilient")

local M = { name = "offload_weights", exact = true }

local GiB = 1024 ^ 3

function M.apply(err, config)
  local m = config.model
  if not m then return nil, "no model to inspect (config.model)" end
  local on_device = m:placement().bytes.device or 0
  if on_device == 0 then return nil, "no weights are on the device" end
  if type(m.place) ~= "function" then return nil, "this build cannot move weights off the device (no model:place)" end
  local place = config.place or {}
  local off = (place.cpu_offload_gb or 0) * GiB
  local lack = math.max(0, (err.requested or 0) - (err.free or 0))
  local more = math.min(on_device, math.max(lack, on_device / 8))
  local gb = (off + more) / GiB
  local changed = resilient.with(config, {})
  changed.place = changed.place or {}
  changed.place.cpu_offload_gb = gb
  return changed, string.format("cpu_offload_gb %.3f -> %.3f (%.1f MiB of weights were on the device)",
    off / GiB, gb, on_device / 1048576)
end

return M
