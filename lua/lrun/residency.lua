--- lrun.residency — turning a policy and a budget into a placement, and
-- applying it to a loaded model (docs/policies.md, docs/residency.md).
--
--     local r = require("lrun.residency")
--     local result = assert(r.plan(m, {policy = "smart", cpu_offload_gb = 0.05}))
--     print(result.explain)
--     assert(r.apply(m, result))    -- moves tensors; the next engine is AS_PLACED
--
-- The device budget (lrun.load's gpu_budget) caps weights + KV cache +
-- scratch + streaming slots (+ on cuda gathered embedding rows and the
-- pool's fragmentation bound): the bytes that must leave the device are
-- total weights - (budget - reserve - slots), at least cpu_offload_gb GiB.
-- Every size (slots, rows, scratch, KV cache, pool slack) comes from the
-- engine's own layout code for the device the model is on
-- (lrun_engine_size_placement, M.size): this module searches and explains,
-- it does not copy the engine's arithmetic.
-- Policies offload *up to* a cap (max_bytes); the cap is raised until the
-- policy offloads at least what is needed, or it can offload no more, which
-- is an error that says how much is missing.
--
-- The host budget (host_budget, --host-budget) caps the host memory lrun
-- holds: weights in pinned and host memory, and on a cpu device everything
-- on the device too (its memory is host memory: weights, slots, KV cache,
-- scratch); on cuda the pinned staging buffers and an offloaded KV store.
-- Weights in mmap (page cache, reclaimable) and disk (read with direct I/O
-- into the slots) hold none. On cpu the budget lowers the device's room
-- and what leaves the device goes to disk; on cuda the off-device weights
-- that do not fit move from pinned/host to disk (streamed ones, largest
-- first; host-computed ones stay, since the CPU reads them in place). A
-- budget no placement meets fails at planning, naming what is missing.
-- @module lrun.residency
local lf = require("lrun.ffi")
local errors = require("lrun.errors")
local size = require("lrun.size")
local policy_file = require("lrun.policy_file")
local predict = require("lrun.predict")
local ffi, C = lf.ffi, lf.C

local M = {}

M.kv_reserve_positions = 512 -- dynamic caches: positions reserved when n_ctx is not given

local GiB = 2 ^ 30
local unlimited = 2 ^ 62
local tiers = { device = true, pinned = true, host = true, mmap = true, disk = true }
local matrix_roles = { attn_q = true, attn_k = true, attn_v = true, attn_output = true, ffn_gate = true,
  ffn_up = true, ffn_down = true }

local function fail(kind, msg, fields) return nil, errors.new(kind, msg, fields) end

-- ---------------------------------------------------------------- bandwidths

local bw_cache = {}

--- How fast the CPU's decode matmul reads each matrix dtype of the model
-- (host compute on cuda), bytes/s, keyed by dtype name.
function M.host_matmul_rates(model)
  local rates, seen = {}, {}
  for _, t in ipairs(model:tensors()) do
    if (matrix_roles[t.role] or t.role == "lm_head") and not seen[t.dtype] then
      seen[t.dtype] = true
      local dt = ffi.new("lrun_dtype[1]")
      local out = ffi.new("double[1]")
      if C.lrun_dtype_from_name(t.dtype, dt) == C.LRUN_OK
          and C.lrun_model_measure_host_matmul(model.handle, dt[0], 64 * 2 ^ 20, out) == C.LRUN_OK
          and out[0] > 0 then
        rates[t.dtype] = out[0]
      end
    end
  end
  return rates
end

--- Fills bw.packed_decode and bw.host_decode (plain bytes/s) when the
-- model has weights that may be packed and they are not measured yet.
function M.decode_rates(model, bw)
  if bw.packed_decode then return end
  local any = false
  for _, t in ipairs(model:tensors()) do
    if M.packable(t) then any = true break end
  end
  if not any then return end
  local out = ffi.new("double[1]")
  if C.lrun_model_measure_packed_decode(model.handle, 1, 16 * 2 ^ 20, out) == C.LRUN_OK and out[0] > 0 then
    bw.packed_decode = out[0]
  end
  if bw.device ~= "cuda" then bw.host_decode = bw.packed_decode
  elseif C.lrun_model_measure_packed_decode(model.handle, 0, 16 * 2 ^ 20, out) == C.LRUN_OK and out[0] > 0 then
    bw.host_decode = out[0]
  end
end

-- The stacked expert tensors' shapes per dtype (one expert's slice: n rows
-- of k), the largest: what the batched host rate is measured at.
local function expert_shapes(model)
  return predict.largest_shapes(model:tensors(), function(t)
    return t.role:match("_exps$") and #(t.shape or {}) >= 3
  end)
end

--- How fast the host multiplies one expert's slice by a prefill chunk's rows
-- (flop/s per expert dtype of the model, at lrun.expert_plan.batch_rows rows;
-- lrun_model_measure_matmul on the host over a zeroed slice of the expert's
-- shape, warm-up and best of three: ~4 × 0.2 GFLOP for a 30B-A3B expert, well
-- under 0.1 s on a few cores). What prefill streaming's threshold and the
-- prefill prediction weigh against the copy. Missing dtypes are added to rates.
function M.host_batch_rates(model, rates)
  local rows = require("lrun.expert_plan").batch_rows
  local dt, out = ffi.new("lrun_dtype[1]"), ffi.new("double[1]")
  for dtype, s in pairs(expert_shapes(model)) do
    if rates[dtype] == nil and C.lrun_dtype_from_name(dtype, dt) == C.LRUN_OK then
      rates[dtype] = C.lrun_model_measure_matmul(model.handle, 0, dt[0], s.n, s.k, rows, out) == C.LRUN_OK
        and out[0] > 0 and out[0] or false
    end
  end
  return rates
end

local host_cache = {} -- [device, threads] = {host_matmul = {[dtype]=}, host_batch = {[dtype]=}}: the pool's rates

--- Measures host→device (pinned and pageable), host read and device read
-- bandwidths on the model's device, once per device per process; on cuda
-- also the CPU's decode matmul rate per weight dtype of the model (host
-- compute) and, for a mixture of experts, the host's batched expert product
-- (M.host_batch_rates), once per device, thread count and dtype: the CPU's
-- rates are its thread pool's, so a table is kept per (device, threads).
-- With bf16/f16 matrices (which may be packed, docs/packed.md), also the
-- packed decode's speed where the engine decodes (packed_decode: cuda, the
-- decode kernel; cpu, the host decoder) and on the host (host_decode).
-- @treturn table {h2d_pinned=, h2d_pageable=, host_read=, device_read=, device="cpu"|"cuda",
--   host_matmul={[dtype]=bytes/s} (cuda), host_batch={[dtype]=flop/s} (cuda, experts' dtypes),
--   packed_decode=, host_decode= (plain bytes/s, or nil)} bytes/s
function M.bandwidths(model)
  local dev = C.lrun_model_device(model.handle)
  local key = ffi.string(C.lrun_device_name(dev))
  local cuda = C.lrun_device_kind_of(dev) == C.LRUN_DEVICE_KIND_CUDA
  local tkey = key .. "\0" .. tostring(model.threads or 0)
  local bw = bw_cache[tkey]
  if not bw then
    local base = bw_cache[key] -- the links and memories, whatever the thread count
    if not base then
      local err
      base, err = M.measure_links(dev, cuda)
      if not base then return nil, err end
      bw_cache[key] = base
    end
    bw = {}
    for k, v in pairs(base) do bw[k] = v end
    bw_cache[tkey] = bw
  end
  M.decode_rates(model, bw)
  if cuda then
    local h = host_cache[tkey] or { host_matmul = {}, host_batch = {} }
    host_cache[tkey] = h
    for _, t in ipairs(model:tensors()) do
      if (matrix_roles[t.role] or t.role == "lm_head") and not h.host_matmul[t.dtype] then
        for dt, rate in pairs(M.host_matmul_rates(model)) do h.host_matmul[dt] = h.host_matmul[dt] or rate end
        break
      end
    end
    M.host_batch_rates(model, h.host_batch)
    bw.host_matmul, bw.host_batch = h.host_matmul, {}
    for dt, r in pairs(h.host_batch) do if r then bw.host_batch[dt] = r end end
  end
  return bw
end

--- The device's links and memories (M.bandwidths' figures that do not depend
-- on the CPU's threads): 16 MiB copies, best of three.
function M.measure_links(dev, cuda)
  local free = tonumber(C.lrun_device_capacity(dev)) - tonumber(C.lrun_device_used(dev))
  local bytes = math.max(4096, math.min(16 * 2 ^ 20, math.floor(free / 3 / 4096) * 4096))
  local out = ffi.new("double[1]")
  local function measure(from, to)
    local st = C.lrun_device_measure_bandwidth(dev, from, to, bytes, out)
    if st ~= C.LRUN_OK then return nil, errors.from_status(st, "measuring bandwidth") end
    return out[0]
  end
  local bw = {}
  local err
  bw.h2d_pinned, err = measure(C.LRUN_TIER_PINNED, C.LRUN_TIER_DEVICE)
  if not bw.h2d_pinned then return nil, err end
  bw.h2d_pageable = measure(C.LRUN_TIER_HOST, C.LRUN_TIER_DEVICE) or bw.h2d_pinned
  -- a same-tier copy reads and writes every byte: reading alone is about twice as fast
  bw.host_read = 2 * (measure(C.LRUN_TIER_HOST, C.LRUN_TIER_HOST) or bw.h2d_pageable)
  bw.device_read = 2 * (measure(C.LRUN_TIER_DEVICE, C.LRUN_TIER_DEVICE) or bw.host_read / 2)
  bw.bytes = bytes
  bw.device = cuda and "cuda" or "cpu"
  return bw
end

local disk_cache = {}

--- The disk tier's read bandwidth on the model's file (bytes/s of direct
-- reads, lrun_model_measure_disk_read over up to 64 MiB of its weights),
-- measured once per file and device per process; nil when no weight is in
-- a file on disk.
function M.disk_read(model)
  local key = ffi.string(C.lrun_device_name(C.lrun_model_device(model.handle))) .. "\0" .. tostring(model.path)
  if disk_cache[key] == nil then
    local out = ffi.new("double[1]")
    local ok = C.lrun_model_measure_disk_read(model.handle, 64 * 2 ^ 20, out) == C.LRUN_OK and out[0] > 0
    disk_cache[key] = ok and out[0] or false
  end
  return disk_cache[key] or nil
end

-- ---------------------------------------------------------------- options

--- Parses "-ot" text "PATTERN=TIER" (TIER device, pinned, host, mmap, disk, or
-- cpu = host with host compute, llama.cpp's buffer name).
-- @treturn[1] table {pattern, tier}
-- @treturn[2] nil
-- @treturn[2] string
function M.parse_override(text)
  if type(text) ~= "string" then return nil, "override: expected PATTERN=TIER, got a " .. type(text) end
  local pattern, tier = text:match("^(.+)=([%w_]+)$")
  if not pattern then return nil, "override '" .. text .. "': expected PATTERN=TIER" end
  tier = tier:lower()
  if not tiers[tier] and tier ~= "cpu" then
    return nil, "override '" .. text .. "': tier must be device, pinned, host, mmap, disk or cpu"
  end
  return { pattern, tier }
end

--- True when opts ask for a placement (any of the placement options).
function M.wanted(opts)
  local cfg = require("lrun.config")
  return opts.policy ~= nil or opts.smart_offload or opts.cpu_offload_gb ~= nil or opts.overrides ~= nil
    or opts.n_gpu_layers ~= nil or opts.n_cpu_moe ~= nil or opts.prefetch_layers ~= nil or opts.host_budget ~= nil or opts.packed ~= nil
    or (cfg.policies ~= nil and #cfg.policies > 0)
end

-- ---------------------------------------------------------------- sizes

local tier_enum = { device = 0, pinned = 1, host = 2, mmap = 3, disk = 4 }

-- The options Model:engine makes the placed engine with (one sequence, the
-- load's n_ctx, cache kind and config, threads, KV dtype, numerics, k);
-- n_ctx overrides the context for sizing a dynamic cache's reserve.
local function engine_opts(opts, n_ctx)
  local eo = ffi.new("lrun_engine_opts")
  eo.n_seq_max = 1
  eo.n_ctx_max = n_ctx or ((opts.n_ctx and opts.n_ctx > 0) and opts.n_ctx or 0)
  eo.n_batch_max = 0
  eo.n_threads = opts.threads or 0
  eo.kv_dtype = opts.kv_dtype == "f32" and C.LRUN_KV_DTYPE_F32 or C.LRUN_KV_DTYPE_F16
  eo.weight_mode = C.LRUN_WEIGHT_MODE_AS_PLACED
  eo.prefetch_layers = opts.prefetch_layers or 0
  -- the exact path's scratch differs from the float path's (no cuBLAS slots, its own quants)
  eo.numerics = opts.numerics == "exact" and C.LRUN_NUMERICS_EXACT or C.LRUN_NUMERICS_DEFAULT
  local fields = require("lrun.cache").engine_fields(opts.cache_implementation, opts.cache_config)
  for k, v in pairs(fields) do eo[k] = v end
  return eo
end

--- What an AS_PLACED engine would take on the device were the model placed
-- as proposed, by the engine's own layout code (lrun_engine_size_placement):
-- nothing moves and nothing is allocated on the device.
-- @tparam table model an lrun.model
-- @tparam[opt] table plan {[name] = tier}; nil: where the weights are now
-- @tparam[opt] table host_compute {[name] = true}
-- @tparam[opt] table packed {[name] = true|false}: the form proposed (absent: the tensor's form now)
-- @tparam[opt] table opts the engine's options as for M.plan (n_ctx, cache_implementation, cache_config,
--   kv_dtype, threads, numerics, prefetch_layers)
-- @treturn[1] table {weights=, slots=, rows=, scratch=, kv_init=, kv_max=, slack=, init=, peak=, k=} bytes
--   (lrun.h's lrun_placement_size)
-- @treturn[2] nil
-- @treturn[2] table error
function M.size(model, plan, host_compute, opts, packed)
  return M.size_with(model, engine_opts(opts or {}), plan, host_compute, packed)
end

--- M.size with the lrun_engine_opts already made (the planner sizes many
-- candidates with one set of options).
function M.size_with(model, eo, plan, host_compute, packed)
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
  local st = C.lrun_engine_size_placement_packed(out, h, eo, tier_of, hc, pk)
  if st ~= C.LRUN_OK then return nil, errors.from_status(st, "sizing the placement") end
  return {
    weights = tonumber(out.weight_bytes), slots = tonumber(out.slot_bytes), rows = tonumber(out.embd_rows_bytes),
    scratch = tonumber(out.scratch_bytes), kv_init = tonumber(out.kv_init_bytes),
    kv_max = tonumber(out.kv_max_bytes), slack = tonumber(out.pool_slack_bytes), init = tonumber(out.init_bytes),
    peak = tonumber(out.peak_bytes), k = tonumber(out.prefetch_layers),
  }
end

-- KV cache bytes to reserve: the cache at its highest for the n_ctx asked
-- (static kinds hold it from the start); a growing cache with no n_ctx is
-- reserved for M.kv_reserve_positions, not the model's whole context.
local function kv_reserve(model, opts, sized)
  local impl = opts.cache_implementation or "dynamic"
  local growing = impl ~= "static" and impl ~= "offloaded_static"
  if not growing or (opts.n_ctx and opts.n_ctx > 0) then return sized.kv_max end
  local n_train = tonumber(C.lrun_model_get_info(model.handle).n_ctx_train)
  local short, err = M.size_with(model, engine_opts(opts, math.min(n_train, M.kv_reserve_positions)), {})
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
-- @tparam[opt] table opts the engine's options as for M.plan, weights_resident=
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

-- ---------------------------------------------------------------- the host budget

M.cuda_staging_bytes = 2 * 32 * 2 ^ 20 -- engine_cuda_offload.c: two pinned staging buffers (N_STAGING x STAGING_CHUNK)
-- residency/loader.c: weights read from the file onto a GPU pass through at least one reader's two
-- pinned chunks of LRUN_LOADER_CHUNK_MIN, charged to the host account while the load runs
M.loader_staging_min = 2 * 2 ^ 20

-- Host bytes a placement holds (the module's comment says which). ctx:
-- {cpu=, reserve=, kv_host= (cuda: an offloaded KV store), tensors=}.
local function host_held(ctx, final, host_compute, sized)
  local fixed, held, staged = 0, 0, false
  if ctx.cpu then fixed = sized.weights + sized.slots + sized.rows + sized.slack + ctx.reserve end
  for _, t in ipairs(ctx.tensors) do
    local tier = final[t.name]
    if tier == "pinned" or tier == "host" then held = held + t.bytes end
    if tier ~= "device" and tier ~= "pinned" and not host_compute[t.name] then staged = true end
  end
  if not ctx.cpu then fixed = fixed + (staged and M.cuda_staging_bytes or 0) + ctx.kv_host end
  return fixed, held
end

-- Moves streamed pinned/host weights to disk, largest first, until the
-- placement's host bytes fit host_budget. Returns the bytes held and moved,
-- or nil and a message naming what is missing.
local function fit_host(ctx, final, host_compute, sized, host_budget)
  local fixed, held = host_held(ctx, final, host_compute, sized)
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
      or "pinned staging and offloaded KV cache", size.format(fixed), size.format(hc),
      size.format(fixed + held - host_budget))
  end
  return steady + held, moved
end

-- ---------------------------------------------------------------- packed forms

local packable_dtypes = { bf16 = true, f16 = true }

--- Whether a tensor description may be held packed (docs/packed.md): a
-- bf16/f16 weight matrix (block matrices, the LM head, the embedding table).
function M.packable(t)
  return packable_dtypes[t.dtype] == true and (matrix_roles[t.role] or t.role == "lm_head" or t.role == "embedding")
    and #(t.shape or {}) == 2
end

-- opts.packed as a test over descriptions: true (every packable weight),
-- false (none), a predicate, or a list of predicates (any).
local function packed_selector(spec)
  if spec == nil then return nil end
  if spec == true or spec == false then return function() return spec end end
  if type(spec) == "function" then return spec end
  if type(spec) == "table" then
    for i, p in ipairs(spec) do
      if type(p) ~= "function" then return nil, "packed: predicate #" .. i .. " is a " .. type(p) end
    end
    return function(t)
      for _, p in ipairs(spec) do if p(t) then return true end end
      return false
    end
  end
  return nil, "packed: expected true, false, a predicate or a list of predicates, got " .. type(spec)
end

-- The form of every tensor: its form now, then the policy's extra.packed,
-- then opts.packed; a form the tensor cannot have is an error naming it
-- (explicit) or left out (selected by a predicate). The mmap tier holds the
-- file's form, whatever was asked.
local function choose_packed(tensors, by_name, extra_packed, select, final, where)
  local packed = {}
  for _, t in ipairs(tensors) do packed[t.name] = t.packed or false end
  if type(extra_packed) == "table" then
    for name, on in pairs(extra_packed) do
      local t = by_name[name]
      if not t then return nil, "policy " .. where .. ": packed names unknown tensor '" .. tostring(name) .. "'" end
      if on and not M.packable(t) then
        return nil, "policy " .. where .. ": tensor '" .. name .. "' (" .. t.dtype .. ", " .. t.role
          .. ") cannot be packed: only bf16/f16 weight matrices"
      end
      packed[name] = on and true or false
    end
  end
  if select then
    for _, t in ipairs(tensors) do
      local on = select(t)
      if on and M.packable(t) then packed[t.name] = true elseif not on then packed[t.name] = false end
    end
  end
  for _, t in ipairs(tensors) do
    if final[t.name] == "mmap" then packed[t.name] = t.file_packed end
  end
  return packed
end

-- ---------------------------------------------------------------- planning

-- Runs policy.plan, raising its cap until at least need bytes are off.
local function run_policy(policy, tensors, need, base, total)
  local where = policy.source and policy_file.where(policy) or (policy.name or "policy")
  -- an error raised inside the policy ends the search: it is the policy's bug
  local function call(budget)
    local ok, plan, off, extra = pcall(policy.plan, tensors, budget)
    if not ok then return false, "policy " .. where .. ": " .. tostring(plan) end
    return true, plan, off, extra
  end
  local budget = {}
  for k, v in pairs(base) do budget[k] = v end
  if need <= 0 then
    local ok, plan, off, extra = call(budget)
    if not ok then return nil, plan end
    if plan == nil then return nil, "policy " .. where .. ": " .. tostring(off) end
    return plan, off, extra
  end
  local cap, last_off, last_msg = need, 0, nil
  for step = 0, 62 do
    budget.max_bytes = cap
    local ok, plan, off, extra = call(budget)
    if not ok then return nil, plan end
    if type(plan) == "table" then
      off = tonumber(off) or 0
      if off >= need then return plan, off, extra end
      last_off = math.max(last_off, off)
    else
      last_msg = off
    end
    if cap >= total then break end
    cap = math.min(total, cap + math.max(need - (tonumber(off) or 0), 1) * 2 ^ step)
  end
  return nil, string.format("policy %s: keeps at most %s of weights off the device, but %s must leave it: "
    .. "%s missing%s", where, size.format(last_off), size.format(need), size.format(need - last_off),
    last_msg and (" (" .. tostring(last_msg) .. ")") or "")
end

--- Computes a placement for model.
-- @tparam table model an lrun.model
-- @tparam table opts policy (name, file or table), smart_offload, cpu_offload_gb,
--   overrides ({{pattern, tier}, ...} or {"pattern=tier", ...}), n_gpu_layers,
--   prefetch_layers, offload_tier, host_budget (bytes or "4G"), and the load options n_ctx, kv_dtype,
--   cache_implementation, cache_config, threads, numerics; reserve_extra (bytes, internal)
-- @treturn[1] table {plan={[name]=tier}, host_compute={[name]=true}, policy=name,
--   explain=text, off_bytes=, device_bytes=, slot_bytes=, extra_bytes= (cuda: embedding rows, pool
--   slack), reserve_bytes= (KV cache, scratch), prefetch=k (the engine's), budget=,
--   size= (M.size of the placement), cache_implementation=, attempts= (M.place: plans made),
--   host_bytes=, host_budget=, disk_bytes= (weights in the disk tier),
--   predicted= (lrun.predict.decode of the plan, unless opts.predict == false), prefill= (lrun.predict.prefill
--   of a chunk of opts.prefill_tokens, default 512; nil when opts.predict == false or no rate was measured)}
-- @treturn[2] nil
-- @treturn[2] table error
function M.plan(model, opts)
  opts = opts or {}
  local tensors = model:tensors()
  local select, serr0 = packed_selector(opts.packed)
  if serr0 then return fail("arg", serr0) end
  local by_name, total = {}, 0
  for i, t in ipairs(tensors) do
    local h = C.lrun_model_tensor(model.handle, i - 1)
    t.file_packed = C.lrun_tensor_file_packed(h) ~= 0
    -- the bytes a policy weighs are those of the form asked for (a size known
    -- from an earlier packing, else the plain size: never under the truth)
    local want = t.packed
    if select and M.packable(t) then want = select(t) and true or false end
    if want ~= t.packed then
      local pb = tonumber(C.lrun_tensor_packed_bytes(h))
      t.bytes = want and pb > 0 and pb or t.plain_bytes
    end
    t.packed = want -- the form the policy weighs
    t.file_form = t.file_packed
    by_name[t.name] = t
    total = total + t.bytes
  end

  -- the policy
  local spec = opts.policy
  if spec == nil and opts.smart_offload then spec = "smart" end
  -- n_cpu_moe alone is its policy's; beside another placement request, overrides (below)
  if spec == nil and opts.n_cpu_moe and opts.n_gpu_layers == nil and opts.cpu_offload_gb == nil then
    spec = "n_cpu_moe"
  end
  if spec == nil then
    local cfg = require("lrun.config")
    if cfg.policies and #cfg.policies > 0 then spec = cfg.policies[#cfg.policies] end
  end
  -- with nothing that must leave the device, the default policy and smart
  -- (which only ranks) keep everything on it; an explicit policy has its say
  local only_if_needed = spec == nil or spec == "smart"
  if spec == nil then spec = "aggressive" end
  local policy, perr = policy_file.resolve(spec)
  if not policy then return fail("arg", perr) end
  local pname = policy.source or policy.name or "policy"

  -- overrides: n_cpu_moe's blocks when another policy plans (llama.cpp writes --n-cpu-moe as -ot
  -- patterns too), then the caller's, which win
  local overrides = {}
  if opts.n_cpu_moe and spec ~= "n_cpu_moe" then
    for _, t in ipairs(tensors) do
      if policy_file.module("predicates").is_expert(t) and (t.layer or -1) >= 0 and t.layer < opts.n_cpu_moe then
        overrides[#overrides + 1] = { "^" .. t.name:gsub("%p", "%%%0") .. "$", "cpu" }
      end
    end
  end
  for i, o in ipairs(opts.overrides or {}) do
    if type(o) == "string" then
      local parsed, err = M.parse_override(o)
      if not parsed then return fail("arg", err) end
      o = parsed
    end
    if type(o) ~= "table" or type(o[1]) ~= "string" or type(o[2]) ~= "string" then
      return fail("arg", "override #" .. i .. ": expected {pattern, tier} or \"pattern=tier\"")
    end
    local tier = o[2]:lower()
    if not tiers[tier] and tier ~= "cpu" then
      return fail("arg", "override '" .. o[1] .. "=" .. o[2] .. "': tier must be device, pinned, host, mmap, disk or cpu")
    end
    overrides[#overrides + 1] = { o[1], tier }
  end

  -- the budget
  local dev = C.lrun_model_device(model.handle)
  local capacity = tonumber(C.lrun_device_capacity(dev))
  if capacity >= unlimited then capacity = nil end
  local cpu = C.lrun_device_kind_of(dev) ~= C.LRUN_DEVICE_KIND_CUDA
  local host_budget
  if opts.host_budget ~= nil then
    local hb, herr = size.parse(opts.host_budget)
    if not hb then return fail("arg", "host_budget: " .. tostring(herr)) end
    host_budget = hb
  end
  -- a cpu device's memory is host memory: the host budget is its room too
  local device_capped = false
  if cpu and host_budget and (not capacity or host_budget < capacity) then
    capacity, device_capped = host_budget, true
  end
  -- the engine's scratch and KV cache do not depend on the placement: sized for all on the device
  local eo = engine_opts(opts)
  local resident, serr = M.size_with(model, eo, {})
  if not resident then return nil, serr end
  local kv, kerr = kv_reserve(model, opts, resident)
  if not kv then return nil, kerr end
  local reserve = kv + resident.scratch + (opts.reserve_extra or 0)
  local forced = opts.cpu_offload_gb and math.floor(opts.cpu_offload_gb * GiB) or 0
  if forced > total then forced = total end
  local k = resident.k -- prefetch_layers, or the device's default (lrun_engine_default_prefetch)

  local bw
  if policy.name == "smart" or opts.smart_offload then
    local err
    bw, err = M.bandwidths(model)
    if not bw then return nil, err end
  end
  -- where offloaded weights go unless asked: on cpu with a host budget the
  -- disk (it holds no host memory); on cpu with a device budget the file's
  -- mapping (a copy in host memory would hold the model twice, docs/residency.md);
  -- else the policy's own (host)
  local off_tier = opts.offload_tier
  if off_tier == nil and cpu and host_budget then off_tier = "disk"
  elseif off_tier == nil and cpu and opts.gpu_budget ~= nil then off_tier = "mmap" end
  if bw and off_tier == "disk" then -- disk placements: the disk's measured read speed (lrun.predict, smart)
    local with_disk = {}
    for key, v in pairs(bw) do with_disk[key] = v end
    with_disk.disk_read = M.disk_read(model)
    bw = with_disk
  end
  -- a mixture of experts: smart weighs its experts' k/E read per token
  local n_used = model:info().n_expert_used or 0
  local base = { tier = off_tier, n_gpu_layers = opts.n_gpu_layers, n_cpu_moe = opts.n_cpu_moe, bandwidth = bw,
    n_expert_used = n_used > 0 and n_used or nil }
  local host_ctx = { cpu = cpu, reserve = reserve, tensors = tensors,
    kv_host = (opts.cache_implementation == "offloaded" or opts.cache_implementation == "offloaded_static")
      and kv or 0 }

  local slots = 0
  for _ = 1, 8 do
    local need = forced
    if capacity then
      local room = capacity - reserve - slots
      if room < 0 then
        return fail("oom", string.format("%s %s is below the engine's KV cache and scratch (%s) and "
          .. "streaming slots (%s): %s missing even with every weight off the device",
          device_capped and "host budget (the cpu device's room)" or "budget", size.format(capacity),
          size.format(reserve), size.format(slots), size.format(-room)), { requested = reserve + slots, free = capacity })
      end
      need = math.max(need, total - room)
    end
    local run_base = base
    if need <= 0 and only_if_needed then
      run_base = {}
      for key, v in pairs(base) do run_base[key] = v end
      run_base.max_bytes = 0
    end
    local plan, off, extra = run_policy(policy, tensors, need, run_base, total)
    if not plan then
      return fail(capacity and need > forced and "oom" or "arg", tostring(off) .. (capacity and string.format(
        " (budget %s: %s of weights, %s reserved for KV cache and scratch, %s of slots)", size.format(capacity),
        size.format(total), size.format(reserve), size.format(slots)) or ""))
    end
    if type(plan) ~= "table" then return fail("arg", "policy " .. pname .. ": plan returned " .. type(plan)) end
    local host_compute = {}
    if type(extra) == "table" and type(extra.host_compute) == "table" then
      for name, on in pairs(extra.host_compute) do if on then host_compute[name] = true end end
    end

    -- the plan must name only real tensors and tiers
    local where = policy.source and policy_file.where(policy) or pname
    for name, tier in pairs(plan) do
      if not by_name[name] then
        return fail("arg", "policy " .. where .. ": unknown tensor '" .. tostring(name) .. "'")
      end
      if not tiers[tier] then
        return fail("arg", "policy " .. where .. ": tensor '" .. name .. "' has tier '" .. tostring(tier)
          .. "' (expected device, pinned, host, mmap or disk)")
      end
    end
    for name in pairs(host_compute) do
      if not by_name[name] then
        return fail("arg", "policy " .. where .. ": host_compute names unknown tensor '" .. tostring(name) .. "'")
      end
    end
    local final = {}
    for _, t in ipairs(tensors) do final[t.name] = plan[t.name] or "device" end

    -- -ot overrides, after the policy, in order
    for _, o in ipairs(overrides) do
      local hit = false
      for _, t in ipairs(tensors) do
        if t.name:find(o[1]) then
          hit = true
          if o[2] == "cpu" then final[t.name] = "host"; host_compute[t.name] = true
          else final[t.name] = o[2]; host_compute[t.name] = nil end
        end
      end
      if not hit then
        return fail("arg", "override '" .. o[1] .. "=" .. o[2] .. "': the pattern matches no tensor")
      end
    end
    for name in pairs(host_compute) do
      if final[name] == "device" then host_compute[name] = nil end
    end
    local packed, perr2 = choose_packed(tensors, by_name, type(extra) == "table" and extra.packed, select, final, where)
    if not packed then return fail("arg", perr2) end

    local off_bytes = 0
    for _, t in ipairs(tensors) do
      if final[t.name] ~= "device" then off_bytes = off_bytes + t.bytes end
    end
    local sized, zerr = M.size_with(model, eo, final, host_compute, packed)
    if not sized then return nil, zerr end
    local dev_bytes, slot_b, other_b = sized.weights, sized.slots, sized.rows + sized.slack
    local need_slots = slot_b + other_b
    local fits = not capacity or dev_bytes + need_slots + reserve <= capacity
    if fits or need_slots <= slots then
      if not fits then
        local missing = dev_bytes + need_slots + reserve - capacity
        return fail("oom", string.format("policy %s cannot meet the budget %s: weights on the device %s + "
          .. "slots %s + embedding rows and pool slack %s + KV cache and scratch %s: %s missing", where,
          size.format(capacity), size.format(dev_bytes), size.format(slot_b), size.format(other_b),
          size.format(reserve), size.format(missing)),
          { requested = dev_bytes + need_slots + reserve, free = capacity })
      end
      -- smart on cuda: host experts computed or cached, resident expert blocks traded for slots
      local choice = require("lrun.expert_choice").for_plan(model, { policy = policy.name, cpu = cpu, bw = bw,
        room = capacity and capacity - (dev_bytes + need_slots + reserve), tensors = tensors, plan = final,
        host_compute = host_compute, packed = packed, tier = off_tier or "host" }, opts)
      if choice and #choice.trade > 0 then -- traded blocks left the device: the placement's sizes again
        sized, zerr = M.size_with(model, eo, final, host_compute, packed)
        if not sized then return nil, zerr end
        dev_bytes, slot_b, other_b = sized.weights, sized.slots, sized.rows + sized.slack
        need_slots, off_bytes = slot_b + other_b, 0
        for _, t in ipairs(tensors) do
          if final[t.name] ~= "device" then off_bytes = off_bytes + t.bytes end
        end
      end
      local host_bytes, moved = nil, 0
      if host_budget then
        -- disk regions are aligned, so a move can grow the slots: size again until nothing moves
        for _ = 1, 4 do
          local held, mv = fit_host(host_ctx, final, host_compute, sized, host_budget)
          if not held then return fail("oom", mv, { requested = host_budget, free = host_budget }) end
          host_bytes = held
          if mv == 0 then break end
          moved = moved + mv
          sized, zerr = M.size_with(model, eo, final, host_compute)
          if not sized then return nil, zerr end
          dev_bytes, slot_b = sized.weights, sized.slots
          local f, h = host_held(host_ctx, final, host_compute, sized)
          host_bytes = f + h
          local total_dev = dev_bytes + slot_b + sized.rows + sized.slack + reserve
          if capacity and total_dev > capacity then
            return fail("oom", string.format("policy %s: moving weights to disk for the host budget %s grew the "
              .. "slots to %s: the device budget %s is %s short", where, size.format(host_budget),
              size.format(slot_b), size.format(capacity), size.format(total_dev - capacity)),
              { requested = total_dev, free = capacity })
          end
        end
        if host_bytes > host_budget then
          return fail("oom", string.format("host budget %s cannot be met: %s held after moving %s to disk: %s missing",
            size.format(host_budget), size.format(host_bytes), size.format(moved),
            size.format(host_bytes - host_budget)), { requested = host_bytes, free = host_budget })
        end
      else
        local f, h = host_held(host_ctx, final, host_compute, sized)
        host_bytes = f + h
      end
      local disk_bytes, disk_packed = 0, 0
      for _, t in ipairs(tensors) do
        if final[t.name] == "disk" then
          disk_bytes = disk_bytes + t.bytes
          -- a packed file's weights are read packed from it (fewer bytes from the disk)
          if packed[t.name] then disk_packed = disk_packed + 1 end
        end
      end
      if off_bytes < forced then
        return fail("arg", string.format("policy %s: cpu_offload_gb asks for %s off the device, overrides left "
          .. "%s: %s missing", where, size.format(forced), size.format(off_bytes), size.format(forced - off_bytes)))
      end
      local explain = type(extra) == "table" and extra.explain or nil
      local n_host = 0
      for _ in pairs(host_compute) do n_host = n_host + 1 end
      local n_packed, packed_b, packed_plain = 0, 0, 0
      for _, t in ipairs(tensors) do
        if packed[t.name] then
          local pb = tonumber(C.lrun_tensor_packed_bytes(C.lrun_model_find_tensor(model.handle, t.name)))
          n_packed, packed_plain = n_packed + 1, packed_plain + t.plain_bytes
          packed_b = packed_b + (pb > 0 and pb or t.plain_bytes)
        end
      end
      local packed_text = n_packed == 0 and "" or string.format("; %d packed tensors: %s of %s plain (ratio %.3f%s)",
        n_packed, size.format(packed_b), size.format(packed_plain), packed_b / packed_plain,
        packed_b == packed_plain and ", sizes known once packed" or "")
      local summary = string.format("%s: %s on the device, %s off it (%d host-compute tensors), %s of slots "
        .. "(k = %d)%s, %s reserved for the %s KV cache and scratch%s", policy.name or pname,
        size.format(dev_bytes), size.format(off_bytes), n_host, size.format(slot_b), k,
        other_b > 0 and (", " .. size.format(other_b) .. " for embedding rows and pool slack") or "",
        size.format(reserve), opts.cache_implementation or "dynamic",
        capacity and (", " .. (device_capped and "host budget as device budget " or "budget ")
          .. size.format(capacity)) or "") .. packed_text
      if host_budget or disk_bytes > 0 then -- the host side, when it was asked about or used
        summary = summary .. string.format("\nhost memory held %s%s; disk tier %s (read with direct I/O, k = %d "
          .. "ahead%s)", size.format(host_bytes), host_budget and (" of a host budget " .. size.format(host_budget)
            .. (moved > 0 and (", " .. size.format(moved) .. " moved to disk to meet it") or "")) or "",
          size.format(disk_bytes), k,
          disk_packed > 0 and string.format("; disk, packed: %d tensors read packed", disk_packed) or "")
      end
      -- the predicted decode speed of the final plan (lrun.predict): smart measured the
      -- bandwidths already; any other policy measures them now (once per device per process,
      -- well under a second), so that every plan says what it should reach before it runs
      -- (#15); opts.predict = false skips it
      local pbw = bw
      if not pbw and opts.predict ~= false then
        pbw = M.bandwidths(model)
        if pbw and disk_bytes > 0 then
          local with_disk = {}
          for key, v in pairs(pbw) do with_disk[key] = v end
          with_disk.disk_read = M.disk_read(model)
          pbw = with_disk
        end
      end
      -- moe_host = "cache" or smart's choice: the expert cache gets what the placement left (lrun.expert_plan)
      local ec = require("lrun.expert_plan").for_plan(model, { tensors = tensors, host_compute = host_compute,
        packed = packed, cpu = cpu, room = capacity and capacity - (dev_bytes + need_slots + reserve),
        choice = choice }, opts)
      local moe_q = { n_expert_used = n_used > 0 and n_used or nil, expert_cache = ec }
      -- and a prefill chunk's (lrun.predict_plan: the batched product's rate measured once per device)
      local predicted, prefill, ptext
      if pbw and opts.predict ~= false then
        -- a prediction never fails a plan: on an error, decode alone (and the error in the text)
        local ok, d, f, text = pcall(require("lrun.predict_plan").predict, model, tensors, final, host_compute, pbw,
          opts, ec)
        if ok then predicted, prefill, ptext = d, f, text
        else
          predicted = predict.decode(tensors, final, host_compute, pbw, moe_q)
          ptext = predict.text(predicted, pbw) .. "\nno prefill prediction: " .. tostring(d)
        end
      elseif pbw then
        predicted = predict.decode(tensors, final, host_compute, pbw, moe_q)
        ptext = predict.text(predicted, pbw)
      end
      if ptext then summary = summary .. "\n" .. ptext end
      if choice then summary = summary .. "\n" .. choice.text end
      if ec then summary = summary .. "\n" .. ec.text end
      -- prefill streaming of host experts (AUTO): the planner's threshold from the bandwidths
      local n_expert = cpu and 0 or (model:info().n_expert or 0)
      local stream_tokens, block_tokens
      if n_expert > 0 and pbw then
        stream_tokens, block_tokens = require("lrun.expert_plan").prefill_stream_tokens(tensors, host_compute,
          n_expert, pbw)
      end
      return {
        plan = final, host_compute = host_compute, packed = packed, policy = policy.name or pname, source = policy.source,
        explain = explain and (summary .. "\n" .. explain) or summary, predicted = predicted, prefill = prefill,
        off_bytes = off_bytes, device_bytes = dev_bytes, slot_bytes = slot_b, extra_bytes = other_b,
        reserve_bytes = reserve, prefetch = k, budget = capacity, size = sized,
        host_bytes = host_bytes, host_budget = host_budget, disk_bytes = disk_bytes,
        cache_implementation = opts.cache_implementation or "dynamic", expert_cache = ec, expert_choice = choice,
        prefill_stream_tokens = stream_tokens, prefill_stream_block_tokens = block_tokens,
      }
    end
    slots = need_slots
  end
  return fail("oom", "policy " .. pname .. ": no placement fits the budget with its streaming slots")
end

-- ---------------------------------------------------------------- applying

--- Moves every tensor to the tier of result.plan in the form of
-- result.packed (converted on the host on the way) and marks host-compute
-- tensors; the model's engine is remade (weight mode AS_PLACED, k =
-- result.prefetch) on next use. Off-device moves go first, so device
-- bytes are given back before others are taken.
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] table error
function M.apply(model, result)
  local h = model.handle
  if model.owned.engine ~= nil then
    C.lrun_engine_free(model.owned.engine)
    model.owned.engine = nil
  end
  local n = tonumber(C.lrun_model_tensor_count(h))
  local index, to = ffi.new("int64_t[?]", math.max(n, 1)), ffi.new("lrun_tier[?]", math.max(n, 1))
  for pass = 1, 2 do
    -- one batch per pass: tensors still in the file are read by the streaming loader
    local k = 0
    for i = 0, n - 1 do
      local t = C.lrun_model_tensor(h, i)
      local name = ffi.string(C.lrun_tensor_name(t))
      local tier = result.plan[name] or "device"
      if (tier == "device") == (pass == 2) then
        local want = result.packed and result.packed[name]
        if want ~= nil and tier ~= "mmap" and want ~= (C.lrun_tensor_packed(t) ~= 0) then
          -- a change of form: converted on the host on the way, one tensor at a time
          local st = C.lrun_tensor_move_form(t, C.lrun_model_device(h), tier_enum[tier], want and 1 or 0)
          if st ~= C.LRUN_OK then return nil, errors.from_status(st, "placing " .. name .. " in " .. tier) end
        else
          index[k], to[k] = i, tier_enum[tier]
          k = k + 1
        end
        C.lrun_tensor_set_host_compute(t, result.host_compute[name] and 1 or 0)
      end
    end
    local st = C.lrun_model_move_tensors(h, k, index, to)
    if st ~= C.LRUN_OK then
      return nil, errors.from_status(st, "placing " .. (pass == 1 and "the off-device" or "the device") .. " weights")
    end
  end
  model.residency = result
  -- the planner's slots for an expert cache the user left to it (moe_host = "cache" without expert_cache_slots)
  if result.expert_cache and model.expert_cache_auto then model.expert_cache_slots = result.expert_cache.slots end
  -- moe_host left to the planner: the cache's slots when smart chose it, else host compute
  if model.moe_host_auto then
    model.expert_cache_slots = result.expert_cache and result.expert_cache.slots or 0
  end
  return true
end

--- Plans, applies and makes the engine. The plan is sized by the engine's
-- own layout code (lrun_engine_size_placement), so it fits at the first
-- attempt (result.attempts is 1; the CPU specs check it). The retry below is
-- only a safety net, for a hole in the CUDA pool larger than the bound
-- placement reserves for fragmentation: the plan is made again with the
-- reserve raised by what was missing, at least 1/16 of the block that failed.
-- @treturn[1] table the plan result
-- @treturn[2] nil
-- @treturn[2] table error
function M.place(model, opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  local last
  for attempt = 1, 4 do
    local result, err = M.plan(model, o)
    if not result then return nil, err end
    result.attempts = attempt
    local ok, aerr = M.apply(model, result)
    if ok then
      local engine
      engine, aerr = model:engine()
      if engine then return result end
    end
    -- the model now holds this attempt's placement (callers say so: Model:auto_fit)
    if type(aerr) == "table" then aerr.applied = true end
    if aerr.kind ~= "oom" or not result.budget or not aerr.requested then return nil, aerr end
    last = aerr
    o.reserve_extra = (o.reserve_extra or 0)
      + math.max(aerr.requested - (aerr.free or 0), math.ceil(aerr.requested / 16), 4096)
  end
  return fail("oom", "placement: the engine does not fit the budget after raising the reserve ("
    .. tostring(last and last.message) .. ")", { applied = true })
end

return M
