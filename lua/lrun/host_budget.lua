--- lrun.host_budget — the host memory a placement holds, against the host
-- budget (host_budget, --host-budget; docs/residency.md "The host budget").
--
-- Held: weights in pinned and host memory; on a cpu device everything on
-- the device too (its memory is host memory: weights, slots, KV cache,
-- scratch); on cuda the engine's own pinned staging (step table and logits,
-- lrun_engine_host_staging_bytes), the pinned staging buffers of streamed
-- weights and an offloaded KV store. Weights in mmap (page cache,
-- reclaimable) and disk (read with direct I/O into the slots) hold none.
-- @module lrun.host_budget
local lf = require("lrun.ffi")
local size = require("lrun.size")
local errors = require("lrun.errors")
local host_stream = require("lrun.host_stream")
local ffi, C = lf.ffi, lf.C

local M = {}

M.cuda_staging_bytes = 2 * 32 * 2 ^ 20 -- engine_cuda_offload.c: two pinned staging buffers (N_STAGING x STAGING_CHUNK)
-- residency/loader.c: weights read from the file onto a GPU pass through at least one reader's two
-- pinned chunks of LRUN_LOADER_CHUNK_MIN, charged to the host account while the load runs
M.loader_staging_min = 2 * 2 ^ 20

--- The pinned bytes an engine of this kind takes at init for its own staging
-- (cuda: the step table and the logits' host copy, 64 rows of n_vocab f32;
-- cpu: none), from the C side (lrun_engine_host_staging_bytes) so that the
-- number has one source.
-- @tparam table model an lrun.model
-- @tparam string kind "cuda" or "cpu"
-- @tparam[opt] cdata eo lrun_engine_opts (n_batch_max; nil: the default)
-- @treturn[1] number bytes
-- @treturn[2] nil
-- @treturn[2] table error
function M.engine_staging(model, kind, eo)
  local out = ffi.new("size_t[1]")
  local k = kind == "cuda" and C.LRUN_DEVICE_KIND_CUDA or C.LRUN_DEVICE_KIND_CPU
  local st = C.lrun_engine_host_staging_bytes(out, model.handle, k, eo)
  if st ~= C.LRUN_OK then return nil, errors.from_status(st, "sizing the engine's host staging") end
  return tonumber(out[0])
end

--- Host bytes a placement holds, as two parts: fixed (what does not depend
-- on where the weights are) and held (weights in pinned and host memory).
-- @tparam table ctx {cpu=, reserve= (KV cache and scratch), kv_host= (cuda: an offloaded KV store),
--   engine_staging= (cuda: M.engine_staging), tensors=, host_stream_rows= (the engine's option, nil: default)}
-- @tparam table final {[name] = tier}
-- @tparam table host_compute {[name] = true}
-- @tparam table sized lrun.placement_size's sizes of the placement
-- @treturn number fixed
-- @treturn number held
function M.held(ctx, final, host_compute, sized)
  local fixed, held, staged = 0, 0, false
  if ctx.cpu then fixed = sized.weights + sized.slots + sized.rows + sized.slack + ctx.reserve end
  for _, t in ipairs(ctx.tensors) do
    local tier = final[t.name]
    if tier == "pinned" or tier == "host" then held = held + t.bytes end
    if tier ~= "device" and tier ~= "pinned" and not host_compute[t.name] then staged = true end
    -- prompts copy pageable host-computed matrices to the GPU through the same buffers (lrun.host_stream)
    if not ctx.cpu and host_compute[t.name] and tier ~= "pinned" and host_stream.coverable(t, tier)
      and host_stream.rows(ctx.host_stream_rows) then
      staged = true
    end
  end
  if not ctx.cpu then
    fixed = fixed + (ctx.engine_staging or 0) + (staged and M.cuda_staging_bytes or 0) + (ctx.kv_host or 0)
  end
  return fixed, held
end

--- Moves streamed pinned/host weights to disk, largest first, until the
-- placement's host bytes fit host_budget (final is changed in place).
-- @treturn[1] number bytes held
-- @treturn[1] number bytes moved to disk
-- @treturn[2] nil
-- @treturn[2] string what is missing
function M.fit(ctx, final, host_compute, sized, host_budget)
  local fixed, held = M.held(ctx, final, host_compute, sized)
  local movable, moved, to_device = {}, 0, false
  for _, t in ipairs(ctx.tensors) do
    local tier = final[t.name]
    if (tier == "pinned" or tier == "host") and not host_compute[t.name] then movable[#movable + 1] = t end
    if tier == "device" then to_device = true end
  end
  -- the load's staging comes and goes before the engine's staging is made: the budget keeps room
  -- for the larger of the two (the placement's host_bytes stay the steady state)
  local steady = fixed
  if not ctx.cpu and to_device then fixed = math.max(fixed, M.loader_staging_min) end
  table.sort(movable, function(a, b)
    if a.bytes ~= b.bytes then return a.bytes > b.bytes end
    return a.name < b.name
  end)
  for _, t in ipairs(movable) do
    if fixed + held <= host_budget then break end
    final[t.name] = "disk"
    held, moved = held - t.bytes, moved + t.bytes
  end
  if fixed + held > host_budget then
    local hc = 0
    for name in pairs(host_compute) do
      if final[name] == "pinned" or final[name] == "host" then
        for _, t in ipairs(ctx.tensors) do if t.name == name then hc = hc + t.bytes end end
      end
    end
    return nil, string.format("host budget %s cannot be met: %s %s + host-computed weights in host memory %s: "
      .. "%s missing", size.format(host_budget), ctx.cpu and "the cpu device's weights, slots, KV cache and scratch"
      or "the engine's staging (step table and logits), pinned staging and offloaded KV cache", size.format(fixed),
      size.format(hc), size.format(fixed + held - host_budget))
  end
  return steady + held, moved
end

return M
