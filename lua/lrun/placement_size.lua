--- lrun.placement_size — what a placement takes on the device, sized by the
-- engine's own layout code (lrun_engine_size_placement): nothing moves and
-- nothing is allocated. The planner searches with these sizes; it does not
-- copy the engine's arithmetic.
-- @module lrun.placement_size
local lf = require("lrun.ffi")
local errors = require("lrun.errors")
local ffi, C = lf.ffi, lf.C

local M = {}

M.kv_reserve_positions = 512 -- dynamic caches: positions reserved when n_ctx is not given

local unlimited = 2 ^ 62
M.tier_enum = { device = 0, pinned = 1, host = 2, mmap = 3, disk = 4 }
local tier_enum = M.tier_enum

-- the split_layers arrays of the options made here, kept alive with them (weak keys: gone with the options)
local keep = setmetatable({}, { __mode = "k" })

--- The options Model:engine makes the placed engine with (the load's n_seq,
-- one sequence unless given; the load's n_ctx, cache kind and config, threads, KV dtype, numerics, k, and a
-- layer split's parts: opts.split_layers = {blocks of each part}, as
-- Model:engine sets them); n_ctx overrides the context for sizing a
-- dynamic cache's reserve.
function M.engine_opts(opts, n_ctx)
  local eo = ffi.new("lrun_engine_opts")
  eo.n_seq_max = opts.n_seq or 1
  eo.n_ctx_max = n_ctx or ((opts.n_ctx and opts.n_ctx > 0) and opts.n_ctx or 0)
  eo.n_batch_max = opts.n_batch or 0 -- tokens per step (lrun.prefill_batch); 0: the engine's 512
  eo.n_threads = opts.threads or 0
  eo.kv_dtype = opts.kv_dtype == "f32" and C.LRUN_KV_DTYPE_F32 or C.LRUN_KV_DTYPE_F16
  eo.weight_mode = C.LRUN_WEIGHT_MODE_AS_PLACED
  eo.prefetch_layers = opts.prefetch_layers or 0
  eo.host_stream_rows = opts.host_stream_rows or 0 -- -1: no staging for prompts over host-computed matrices
  -- the exact path's scratch differs from the float path's (no cuBLAS slots, its own quants)
  eo.numerics = opts.numerics == "exact" and C.LRUN_NUMERICS_EXACT or C.LRUN_NUMERICS_DEFAULT
  local fields = require("lrun.cache").engine_fields(opts.cache_implementation, opts.cache_config)
  for k, v in pairs(fields) do eo[k] = v end
  local layers = opts.split_layers
  if layers and #layers > 1 then
    local arr = ffi.new("int64_t[?]", #layers)
    for i, n in ipairs(layers) do arr[i - 1] = n end
    keep[eo] = arr
    eo.n_split, eo.split_layers = #layers, arr
  end
  return eo
end

--- What an AS_PLACED engine would take on the device were the model placed
-- as proposed, by the engine's own layout code (lrun_engine_size_placement):
-- nothing moves and nothing is allocated on the device.
-- @tparam table model an lrun.model
-- @tparam[opt] table plan {[name] = tier}; nil: where the weights are now
-- @tparam[opt] table host_compute {[name] = true}
-- @tparam[opt] table packed {[name] = true|false}: the form proposed (absent: the tensor's form now)
-- @tparam[opt] table opts the engine's options as for lrun.residency.plan (n_ctx, cache_implementation, cache_config,
--   kv_dtype, threads, numerics, prefetch_layers)
-- @treturn[1] table {weights=, slots=, rows=, scratch=, kv_init=, kv_max=, slack=, init=, peak=, k=} bytes
--   (lrun.h's lrun_placement_size)
-- @treturn[2] nil
-- @treturn[2] table error
function M.size(model, plan, host_compute, opts, packed)
  return M.size_with(model, M.engine_opts(opts or {}), plan, host_compute, packed)
end

--- M.size with the lrun_engine_opts already made (the planner sizes many
-- candidates with one set of options). part (0-based, with eo a layer
-- split's options): that part alone (lrun_engine_size_placement_part), its
-- blocks' weights and its engine's slots, scratch and KV cache.
function M.size_with(model, eo, plan, host_compute, packed, part)
  local h = model.handle
  local n = tonumber(C.lrun_model_tensor_count(h))
  local tier_of, hc, pk
  if plan then
    tier_of, hc = ffi.new("lrun_tier[?]", n + 1), ffi.new("int8_t[?]", n + 1)
    for i = 0, n - 1 do
      local name = ffi.string(C.lrun_tensor_name(C.lrun_model_tensor(h, i)))
      tier_of[i] = tier_enum[plan[name] or "device"]
      hc[i] = (host_compute and host_compute[name]) and 1 or 0
    end
  end
  if packed then
    pk = ffi.new("int8_t[?]", n + 1)
    for i = 0, n - 1 do
      local t = C.lrun_model_tensor(h, i)
      local want = packed[ffi.string(C.lrun_tensor_name(t))]
      if want == nil then want = C.lrun_tensor_packed(t) ~= 0 end
      pk[i] = want and 1 or 0
    end
  end
  local out = ffi.new("lrun_placement_size")
  local st
  if part then st = C.lrun_engine_size_placement_part(out, h, eo, part, tier_of, hc, pk)
  else st = C.lrun_engine_size_placement_packed(out, h, eo, tier_of, hc, pk) end
  if st ~= C.LRUN_OK then return nil, errors.from_status(st, "sizing the placement") end
  return {
    weights = tonumber(out.weight_bytes), slots = tonumber(out.slot_bytes), rows = tonumber(out.embd_rows_bytes),
    scratch = tonumber(out.scratch_bytes), kv_init = tonumber(out.kv_init_bytes),
    kv_max = tonumber(out.kv_max_bytes), slack = tonumber(out.pool_slack_bytes), init = tonumber(out.init_bytes),
    peak = tonumber(out.peak_bytes), k = tonumber(out.prefetch_layers),
  }
end

--- KV cache bytes to reserve: the cache at its highest for the n_ctx asked
-- (static kinds hold it from the start); a growing cache with no n_ctx is
-- reserved for M.kv_reserve_positions, not the model's whole context.
-- part: as for M.size_with (opts then carries split_layers).
function M.kv_reserve(model, opts, sized, part)
  local impl = opts.cache_implementation or "dynamic"
  local growing = impl ~= "static" and impl ~= "offloaded_static"
  if not growing or (opts.n_ctx and opts.n_ctx > 0) then return sized.kv_max end
  local n_train = tonumber(C.lrun_model_get_info(model.handle).n_ctx_train)
  local short, err = M.size_with(model, M.engine_opts(opts, math.min(n_train, M.kv_reserve_positions)), {}, nil, nil,
    part)
  if not short then return nil, err end
  return short.kv_max
end

--- Whether the model's engine can be made with no placement (auto-fit's
-- test, lrun.load): what engine init takes for an ALL_DEVICE engine,
-- weights + slots + embedding rows + scratch + the KV cache as it starts
-- (lrun_placement_size's init_bytes: a static cache's whole store, a
-- dynamic one's first block), against the device's room now. Only cuda's
-- ALL_DEVICE engine moves weights to the device; the cpu engine reads them
-- in place, so there they count only with opts.weights_resident (tests). A
-- dynamic cache that outgrows the device later is the on_oom fallbacks'
-- (docs/fallbacks.md), as today.
-- @tparam table model an lrun.model
-- @tparam[opt] table opts the engine's options as for lrun.residency.plan, weights_resident=
-- @treturn[1] boolean fits
-- @treturn[1] number bytes engine init needs
-- @treturn[1] number|nil bytes free now (nil: no cap)
-- @treturn[2] nil
-- @treturn[2] table error
function M.fits(model, opts)
  opts = opts or {}
  local dev = C.lrun_model_device(model.handle)
  local capacity = tonumber(C.lrun_device_capacity(dev))
  local resident = opts.weights_resident
  if resident == nil then resident = C.lrun_device_kind_of(dev) == C.LRUN_DEVICE_KIND_CUDA end
  if capacity >= unlimited or not resident then return true, 0, nil end
  local free = capacity - tonumber(C.lrun_device_used(dev))
  local sized, err = M.size(model, {}, nil, opts)
  if not sized then return nil, err end
  local need = sized.weights + sized.init
  return need <= free, need, free
end

return M
