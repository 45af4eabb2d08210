--- lrun.predict_pipeline — a decode token's time on cuda from its blocks'
-- copies and compute, as the streaming ring overlaps them
-- (docs/streaming.md "The pipeline"), for lrun.predict.decode.
--
-- The engine streams a block's off-device matrices as one unit through
-- k+1 slots: a unit's copy starts once the copy before it ended and the
-- unit k+1 before it released its slot (compute finished that block), and
-- a block's compute (device reads, host products, cache misses) starts once
-- its copy landed and the block before it finished. Over the cycle of
-- blocks this gives
--   max(copies, compute) when both are spread evenly over the blocks, and
--   up to copies + compute when they are not: a stretch of host-computed
--   blocks leaves the link idle once the next k+1 units are in, and a
--   stretch of streamed blocks leaves the host idle.
-- Staged sources (host, mmap, disk: the CPU fills pinned buffers) are
-- issued by the CPU after it saw the slot's release, at the release of the
-- unit before: a unit's copy then also waits for the host products of the
-- block before it (the CPU computes them before it gets there). Pinned
-- sources are refilled that way only with LRUN_CUDA_REFILL_QUEUED=0 (the
-- engine's switch, on by default: M.refill_queued).
-- Pure arithmetic, no measurement (tests/predict_spec.lua).
-- @module lrun.predict_pipeline
local M = {}

--- Seconds per token in steady state.
-- @tparam {table,...} blocks in compute order (the cycle of one token), each {copy=, compute=, host=}
--   seconds (host: compute's share on the host, for staged)
-- @tparam[opt=2] int slots the ring's slots (k + 1)
-- @tparam[opt] bool staged the copies are issued by the CPU after it saw a release (staged sources)
-- @treturn number seconds of one token, the third of three simulated back to back
function M.token_s(blocks, slots, staged)
  local units = 0
  for _, b in ipairs(blocks) do
    if (b.copy or 0) > 0 then units = units + 1 end
  end
  -- the engine's k is at most units - 1 (engine_cuda_offload.c): one unit, one slot
  slots = math.max(1, math.min(slots or 2, units))
  local copy_end, done, released, unit = 0, 0, {}, 0
  local hosted = {} -- [unit] = when the CPU was done with its block's host products (staged)
  local ends = {}
  for cycle = 1, 3 do
    for _, b in ipairs(blocks) do
      if (b.copy or 0) > 0 then
        unit = unit + 1
        local issued = staged and hosted[unit - 1] or 0
        copy_end = math.max(copy_end, released[unit - slots] or 0, issued) + b.copy
        done = math.max(done, copy_end) + (b.compute or 0)
        released[unit] = done
        hosted[unit] = (b.host or 0) > 0 and done or 0
      else
        done = done + (b.compute or 0)
      end
    end
    ends[cycle] = done
  end
  return ends[3] - ends[2]
end

--- Whether the cuda engine refills a pinned unit's slot behind a device wait
-- for its release (engine_cuda_offload.c, the same switch).
function M.refill_queued() return os.getenv("LRUN_CUDA_REFILL_QUEUED") ~= "0" end

return M
