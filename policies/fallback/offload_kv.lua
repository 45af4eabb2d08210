--- offload_kv — on OOM, keep the KV cache in pinned host memory: the
-- cache_implementation becomes "offloaded" ("offloaded_static" for a
-- static cache). Exact: the offloaded caches give the same tokens and
-- logits as the resident ones (issue 5), only slower.
-- Declines when the OOM happened loading weights, when the cache is
-- already offloaded, or when this build has no offloaded cache.
local cache_kinds = require("lrun.cache_kinds")
local resilient = require("lrun.resilient")

local M = { name = "offload_kv", exact = true }

function M.apply(err, config)
  if err.phase == "load" or err.phase == "weights" then
    return nil, "the allocation that failed was weights (" .. err.phase .. "), not the KV cache"
  end
  local cur = cache_kinds.current(config)
  if cur == "offloaded" or cur == "offloaded_static" then return nil, "the KV cache is already offloaded" end
  local target = cur == "static" and "offloaded_static" or "offloaded"
  local ok, why = cache_kinds.value(target)
  if not ok then return nil, why end
  return resilient.with(config, { cache_implementation = target }),
    "cache_implementation " .. cur .. " -> " .. target .. " (KV cache in pinned host memory, two layers on the device)"
end

return M
