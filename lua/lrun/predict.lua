--- lrun.predict — a predicted decode speed (tokens/s) for a placement,
-- from a simple cost model over the plan and the machine's bandwidths
-- (docs/policies.md "Predicted speed"). Pure Lua: no measurement here, the
-- bandwidths come in (lrun.residency.bandwidths measures them), so the
-- numbers are unit-tested with given tables (tests/predict_spec.lua).
--
-- Per generated token (batch 1), every weight is read once:
--   t_device = bytes the device reads / device_read
--              (resident weights and streamed ones once they landed)
--   t_copy   = sum over streamed weights of bytes / the link of their tier:
--              pinned h2d_pinned, host and mmap h2d_pageable, disk disk_read
--   t_host   = sum over host-computed weights of plain bytes / the host's
--              matmul rate (cuda: host_matmul[dtype]; cpu: host_read)
-- The embedding table (when the LM head is its own tensor) moves one row per
-- token wherever it is. Norms and biases are free (engine memory).
-- cuda: the copy stream runs beside compute (docs/streaming.md), so
--   seconds = max(t_copy, t_device + t_host)
-- (the per-layer max summed over layers is at least this; with streamed
-- weights spread evenly over the layers the two agree);
-- cpu: the copies are memcpys by the same threads, so
--   seconds = t_device + t_copy + t_host.
-- Not modelled: attention over the KV cache, kernel launch and
-- synchronisation overheads, packed weights' decode, prefill.
--
--     local p = predict.decode(m:tensors(), plan, host_compute, bw)
--     print(predict.text(p))   -- predicted decode ~41.3 tok/s (limit: PCIe pinned ...)
-- @module lrun.predict
local M = {}

--- Disk read bandwidth used when none is given (bytes/s): a PCIe 4 NVMe drive.
M.assumed_disk_read = 3e9

local vector_roles = { attn_norm = true, ffn_norm = true, output_norm = true, rope_freqs = true, bias = true }

local function is_vector(t)
  return vector_roles[t.role] == true or (t.name and t.name:find("%.bias$") ~= nil) or #(t.shape or {}) < 2
end

-- Bytes/s the host's decode matmul reads t at.
local function host_rate(t, bw)
  if bw.device ~= "cuda" then return bw.host_read end
  local h = bw.host_matmul
  if type(h) == "table" then h = h[t.dtype] or h.default end
  return type(h) == "number" and h > 0 and h or bw.host_read
end

-- The link a streamed weight of this tier crosses, and its name for the limit.
local function link(tier, bw)
  if tier == "pinned" then return bw.h2d_pinned, "PCIe pinned" end
  if tier == "disk" then return bw.disk_read or M.assumed_disk_read, "disk" end
  return bw.h2d_pageable or bw.h2d_pinned, "PCIe pageable" -- host, mmap
end

--- The decode prediction of a placement.
-- @tparam {table,...} tensors descriptions (model:tensors())
-- @tparam table plan {[name] = tier} (names left out: device)
-- @tparam[opt] table host_compute {[name] = true}
-- @tparam table bw {h2d_pinned=, h2d_pageable=, host_read=, device_read=, device="cpu"|"cuda",
--   host_matmul= bytes/s or {[dtype]=}, disk_read=} bytes/s
-- @treturn table {seconds=, tok_s=, limit= text, overlapped= (cuda), device_s=, copy_s=, host_s=,
--   links = {[name] = seconds}, bytes = {device=, streamed=, host=}}
function M.decode(tensors, plan, host_compute, bw)
  host_compute = host_compute or {}
  for _, k in ipairs({ "h2d_pinned", "host_read", "device_read" }) do
    if type(bw[k]) ~= "number" or bw[k] <= 0 then
      error("predict.decode: bandwidth." .. k .. " must be a number of bytes/s > 0", 2)
    end
  end
  local tied = true
  for _, t in ipairs(tensors) do if t.role == "lm_head" then tied = false end end
  local p = { device_s = 0, copy_s = 0, host_s = 0, links = {}, bytes = { device = 0, streamed = 0, host = 0 } }
  for _, t in ipairs(tensors) do
    local tier = plan[t.name] or "device"
    local bytes = t.bytes
    if t.role == "embedding" and not tied then bytes = bytes / ((t.shape and t.shape[2]) or 1) end
    if is_vector(t) then
      bytes = 0 -- converted into engine memory at init
    elseif tier ~= "device" and host_compute[t.name] then
      local plain = bytes * (t.plain_bytes or t.bytes) / t.bytes
      local rate = host_rate(t, bw)
      -- a disk weight computed on the host is read from the disk first
      if tier == "disk" then rate = math.min(rate, bw.disk_read or M.assumed_disk_read) end
      p.host_s = p.host_s + plain / rate
      p.bytes.host = p.bytes.host + plain
      bytes = 0
    elseif tier ~= "device" then
      local rate, name = link(tier, bw)
      p.copy_s = p.copy_s + bytes / rate
      p.links[name] = (p.links[name] or 0) + bytes / rate
      p.bytes.streamed = p.bytes.streamed + bytes
    end
    p.device_s = p.device_s + bytes / bw.device_read
    p.bytes.device = p.bytes.device + bytes
  end
  local compute = p.device_s + p.host_s
  if bw.device == "cuda" then p.seconds = math.max(p.copy_s, compute)
  else p.seconds = compute + p.copy_s end
  -- the limit: the term that sets the time (cuda: the copies when they are
  -- the slower side; cpu: the largest of the three), and for copies the
  -- link that takes longest
  local copies
  if bw.device == "cuda" then copies = p.copy_s > compute
  else copies = p.copy_s > p.device_s and p.copy_s > p.host_s end
  if copies then
    local best, worst = -1, nil
    for name, s in pairs(p.links) do
      if s > best or (s == best and name < worst) then best, worst = s, name end
    end
    p.limit = worst
  elseif p.host_s > p.device_s then p.limit = "host matmul"
  else p.limit = "device read" end
  p.overlapped = bw.device == "cuda"
  p.tok_s = p.seconds > 0 and 1 / p.seconds or math.huge
  return p
end

local function gbs(b) return string.format("%.1f GB/s", b / 1e9) end

--- One line: "predicted decode ~41.3 tok/s (limit: PCIe pinned 25.0 GB/s; ...)".
-- @tparam table p M.decode's result
-- @tparam[opt] table bw the bandwidths, to name the limit's rate
function M.text(p, bw)
  local rate = ""
  if bw then
    local r = p.limit == "PCIe pinned" and bw.h2d_pinned
      or p.limit == "PCIe pageable" and (bw.h2d_pageable or bw.h2d_pinned)
      or p.limit == "disk" and (bw.disk_read or M.assumed_disk_read)
      or p.limit == "device read" and bw.device_read or nil
    if r then rate = " " .. gbs(r) end
  end
  return string.format("predicted decode ~%.1f tok/s (limit: %s%s; per token %.3f ms device, %.3f ms copies, "
    .. "%.3f ms host compute%s; accuracy to be measured)", p.tok_s, p.limit, rate, p.device_s * 1e3,
    p.copy_s * 1e3, p.host_s * 1e3, p.overlapped and ", copies overlapped" or "")
end

return M
