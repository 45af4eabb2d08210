--- lrun.plan_explain — the first lines of a placement's explain text
-- (lrun.residency.plan's result.explain, --explain): where the bytes went on
-- the device, the packed forms, and the host side when it was asked about or
-- used. The prediction, the expert choice and the policy's own text follow it.
-- @module lrun.plan_explain
local lf = require("lrun.ffi")
local size = require("lrun.size")
local C = lf.C

local M = {}

--- The summary of a plan.
-- @tparam table model an lrun.model (the packed sizes known so far)
-- @tparam table p {policy=, tensors=, host_compute=, packed=, device_bytes=, off_bytes=, slot_bytes=,
--   extra_bytes=, packed_scratch= (the part of extra_bytes that is scratch the placement adds: the packed decode
--   scratch, the host stream's staging), k=, reserve=,
--   cache_implementation=, budget=, device_capped=, host_bytes=, host_budget=, moved=, disk_bytes=, disk_packed=}
-- @treturn string
function M.summary(model, p)
  local n_host = 0
  for _ in pairs(p.host_compute) do n_host = n_host + 1 end
  local n_packed, packed_b, packed_plain = 0, 0, 0
  for _, t in ipairs(p.tensors) do
    if p.packed[t.name] then
      local pb = tonumber(C.lrun_tensor_packed_bytes(C.lrun_model_find_tensor(model.handle, t.name)))
      n_packed, packed_plain = n_packed + 1, packed_plain + t.plain_bytes
      packed_b = packed_b + (pb > 0 and pb or t.plain_bytes)
    end
  end
  local packed_text = n_packed == 0 and "" or string.format("; %d packed tensors: %s of %s plain (ratio %.3f%s)",
    n_packed, size.format(packed_b), size.format(packed_plain), packed_b / packed_plain,
    packed_b == packed_plain and ", sizes known once packed" or "")
  local summary = string.format("%s: %s on the device, %s off it (%d host-compute tensors), %s of slots "
    .. "(k = %d)%s, %s reserved for the %s KV cache and scratch%s", p.policy,
    size.format(p.device_bytes), size.format(p.off_bytes), n_host, size.format(p.slot_bytes), p.k,
    p.extra_bytes > 0 and (", " .. size.format(p.extra_bytes) .. " for embedding rows and pool slack"
      .. ((p.packed_scratch or 0) > 0 and (" and the scratch the placement adds (" .. size.format(p.packed_scratch)
        .. ": packed weights' decode, prompts' staging of host-computed matrices)")
        or "")) or "",
    size.format(p.reserve), p.cache_implementation or "dynamic",
    p.budget and (", " .. (p.device_capped and "host budget as device budget " or "budget ")
      .. size.format(p.budget)) or "") .. packed_text
  if p.host_budget or p.disk_bytes > 0 then -- the host side, when it was asked about or used
    summary = summary .. string.format("\nhost memory held %s%s; disk tier %s (read with direct I/O, k = %d "
      .. "ahead%s)", size.format(p.host_bytes), p.host_budget and (" of a host budget " .. size.format(p.host_budget)
        .. (p.moved > 0 and (", " .. size.format(p.moved) .. " moved to disk to meet it") or "")) or "",
      size.format(p.disk_bytes), p.k,
      (p.disk_packed > 0 and string.format("; disk, packed: %d tensors read packed", p.disk_packed) or "")
        .. ((p.disk_experts or 0) > 0 and string.format("; %d expert stacks read per chosen expert",
          p.disk_experts) or ""))
  end
  return summary
end

return M
