--- lrun.host_stream — a prompt chunk's products over host-computed
-- matrices, run on the GPU (cuda). The planner computes a matrix on the host
-- when, at a decode step's few rows, reading it from DRAM beside the
-- streamed copies beats sending it; a chunk of hundreds of rows costs the
-- host hundreds of times the flops but a copy the same bytes. So the CUDA
-- engine copies such a matrix into a staging buffer and multiplies it there
-- once a chunk has `rows` rows (runtime/cuda/engine_cuda_host_stream.c;
-- docs/streaming.md "Prefill over host-computed matrices"), as llama.cpp
-- sends a CPU layer's weights to the GPU for a large batch. This module holds
-- the engine's rule for the predictions (which matrices, from how many rows)
-- and the planner's threshold from measured rates.
-- @module lrun.host_stream
local M = {}

M.default_rows = 32 -- LRUN_CUDA_HOST_STREAM_ROWS_DEFAULT (engine_cuda_host_stream.h)
M.gemv_max_rows = 8 -- GEMV_MAX_ROWS: a decode chunk's host products stay where the planner put them

--- The engine's threshold for an engine option value: opt > 0 itself, < 0
-- off, 0 or nil the environment's LRUN_CUDA_HOST_STREAM_ROWS (0: off), else
-- M.default_rows; never at or below M.gemv_max_rows.
-- @tparam[opt] number opt
-- @treturn number|nil rows, nil when off
function M.rows(opt)
  local r = opt
  if r == nil or r == 0 then
    r = tonumber(os.getenv("LRUN_CUDA_HOST_STREAM_ROWS") or "") or M.default_rows
    if r == 0 then r = -1 end
  end
  if r < 0 then return nil end
  return math.max(math.floor(r), M.gemv_max_rows + 1)
end

--- Whether the engine can stream t, host-computed in tier: a 2-D block
-- matrix in memory, plain or packed (a packed one crosses packed and is
-- decoded on the device, session 28; the disk tier and stacked experts have
-- their own paths).
function M.coverable(t, tier)
  local shape = t.shape or {}
  return type(t.layer) == "number" and t.layer >= 0 and tier ~= nil and tier ~= "device" and tier ~= "disk"
    and #shape >= 2 and (shape[3] or 1) <= 1
end

--- Whether a chunk of T rows streams t (host-computed in tier) under the engine option opt.
function M.streams(t, tier, T, opt)
  local r = M.rows(opt)
  return r ~= nil and T >= r and M.coverable(t, tier)
end

--- The chunk size from which streaming a plan's host-computed matrices
-- beats computing them on the host, from measured rates: the copies
-- (Σ bytes / the link of each tier, lrun.predict.expert_stream_link: pinned
-- by DMA, pageable through pinned bounce buffers; a packed one's packed
-- bytes and its decode) against the host's products (Σ max(plain bytes /
-- its read rate, or a packed one's lrun.predict.packed_host_s,
-- 2·rows·params / bw.host_gemm)),
-- found by bisection (the host's time only grows with rows).
-- @tparam {table,...} tensors descriptions (model:tensors())
-- @tparam table plan {[name] = tier}
-- @tparam table host_compute {[name] = true}
-- @tparam table bw the bandwidths with host_gemm= (flop/s, {[dtype]=}) measured
-- @treturn number|nil rows (at least M.gemv_max_rows + 1), -1 when the host never loses; nil without host-computed
--   matrices the engine streams or without a batched host rate
function M.threshold(tensors, plan, host_compute, bw)
  local predict = require("lrun.predict")
  local parts, copy = {}, 0
  for _, t in ipairs(tensors) do
    local tier = plan[t.name]
    if host_compute[t.name] and M.coverable(t, tier) then
      local flops = predict.rate_of(bw.host_gemm, t.dtype)
      if not flops then return nil end
      copy = copy + t.bytes / predict.expert_stream_link(tier, bw)
      local plain, rate = t.plain_bytes or t.bytes, predict.host_rate(t, bw)
      local read = plain / rate
      if t.packed then -- crosses packed, decoded on the device; on the host, decoded tile by tile as it is read
        copy = copy + predict.decode_s(t, plain, bw.packed_decode)
        read = predict.packed_host_s(t, plain, rate, bw, bw.host_decode or bw.packed_decode)
      end
      parts[#parts + 1] = { read = read, per_row = 2 * t.shape[1] * t.shape[2] / flops }
    end
  end
  if #parts == 0 then return nil end
  local function host(rows)
    local s = 0
    for _, p in ipairs(parts) do s = s + math.max(p.read, rows * p.per_row) end
    return s
  end
  local lo, hi = M.gemv_max_rows + 1, 2 ^ 20
  if host(lo) > copy then return lo end
  if host(hi) <= copy then return -1 end
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    if host(mid) > copy then hi = mid else lo = mid end
  end
  return hi
end

return M
