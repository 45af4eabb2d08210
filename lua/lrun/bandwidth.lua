--- lrun.bandwidth — the rates the planner weighs, measured where the bytes
-- will really be (DRAM, not cache): links and memories, the host's matmul and
-- batched expert products, the packed decoders and the disk tier. Each is
-- measured once per process per device (and thread count, file) and kept.
-- @module lrun.bandwidth
local lf = require("lrun.ffi")
local errors = require("lrun.errors")
local predict = require("lrun.predict")
local packed_form = require("lrun.packed_form")
local ffi, C = lf.ffi, lf.C

local M = {}

-- the matrices the host may compute: a block's, and the stacked experts
-- (whose dtype can be one no other matrix has: gpt-oss's MXFP4)
local host_roles = { ffn_gate_exps = true, ffn_up_exps = true, ffn_down_exps = true }
for role in pairs(packed_form.matrix_roles) do host_roles[role] = true end

local bw_cache = {}

--- How fast the CPU's decode matmul reads each matrix dtype of the model
-- (host compute on cuda), bytes/s, keyed by dtype name: over the model's own
-- matrices where the host can read them (lrun_model_measure_weights_gemv, as
-- the cpu device's decode rate), else a synthetic weight
-- (lrun_model_measure_host_matmul). Session 19, H100 machine: the model's bf16
-- matrices read at 68-78 GB/s and the engine's host products ran at 60-69,
-- where a zeroed synthetic weight had read at 230-290 (now filled with
-- varied words; issue #15).
-- rate(dt) for each dtype of the model's matrices the host may multiply (host_roles, the head), keyed by
-- dtype name; a rate of nil or false is left out.
local function per_host_dtype(model, rate)
  local rates, seen = {}, {}
  for _, t in ipairs(model:tensors()) do
    if (host_roles[t.role] or t.role == "lm_head") and not seen[t.dtype] then
      seen[t.dtype] = true
      local dt = ffi.new("lrun_dtype[1]")
      if C.lrun_dtype_from_name(t.dtype, dt) == C.LRUN_OK then rates[t.dtype] = rate(dt[0]) or nil end
    end
  end
  return rates
end

function M.host_matmul_rates(model)
  return per_host_dtype(model, function(dt) return M.host_gemv_rate(model, dt) end)
end

--- The host's decode matmul rates (M.host_matmul_rates) measured with the
-- device copying pinned host memory to itself the whole time, as a decode
-- step's streamed weights do beside the host's products (both read the host's
-- DRAM): lrun_model_measure_weights_gemv_copying with a copy buffer of up to
-- 64 MiB of the device's free room. Session 24, H100: the engine's products
-- beside the copies ran 11-22% below the rate measured alone. Empty when the
-- device cannot copy asynchronously, has no room, or the host cannot read
-- the model's matrices of a dtype.
-- The copy load's buffer for the measurements beside copies: up to 64 MiB, a third of the device's free
-- room, in whole MiB; nil below 1 MiB.
local function copy_load_bytes(model)
  local dev = C.lrun_model_device(model.handle)
  local free = tonumber(C.lrun_device_capacity(dev)) - tonumber(C.lrun_device_used(dev))
  local bytes = math.min(64, math.floor(free / 3 / 2 ^ 20)) * 2 ^ 20
  return bytes >= 2 ^ 20 and bytes or nil
end

function M.host_matmul_copying_rates(model)
  local copy_bytes = copy_load_bytes(model)
  if not copy_bytes then return {} end
  local out = ffi.new("double[1]")
  return per_host_dtype(model, function(dt)
    return C.lrun_model_measure_weights_gemv_copying(model.handle, dt, 64 * 2 ^ 20, copy_bytes, out, nil) == C.LRUN_OK
      and out[0] > 0 and out[0]
  end)
end

--- Bytes/s the host's one-row decode matmul reads dtype at: over the model's
-- own matrices (lrun_model_measure_weights_gemv), or a synthetic weight when
-- the host cannot read them (lrun_model_measure_host_matmul); false when
-- neither. The cpu device's decode rate (lrun.predict_plan) and cuda's host
-- compute rate (host_matmul_rates) both.
function M.host_gemv_rate(model, dt)
  local out = ffi.new("double[1]")
  if C.lrun_model_measure_weights_gemv(model.handle, dt, 64 * 2 ^ 20, out) == C.LRUN_OK and out[0] > 0 then
    return out[0]
  end
  return C.lrun_model_measure_host_matmul(model.handle, dt, 64 * 2 ^ 20, out) == C.LRUN_OK and out[0] > 0 and out[0]
    or false
end

--- Fills bw.packed_decode and bw.host_decode (plain bytes/s) when the
-- model has weights that may be packed and they are not measured yet.
function M.decode_rates(model, bw)
  if bw.packed_decode then return end
  local any = false
  for _, t in ipairs(model:tensors()) do
    if packed_form.packable(t) then any = true break end
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

local packed_host_cache = {} -- [device, threads] = {packed=, plain=} or false (not measurable)

-- The key of the rates that depend on the model's device and thread pool.
local function pool_key(model)
  return ffi.string(C.lrun_device_name(C.lrun_model_device(model.handle))) .. "\0" .. tostring(model.threads or 0)
end

--- Fills bw.host_packed_matmul (plain bytes/s: the host's batch-1 product
-- of a packed weight, decoded a tile at a time as it goes, from DRAM) and
-- bw.host_packed_plain (the same weight's plain product on the same span:
-- lrun.predict.packed_host_s takes their ratio), once per device and
-- thread count: about a second and a half on the build machine's 2 cores,
-- so only for plans that weigh a weight packed (lrun.residency,
-- lrun.pack_plan), not at every load.
function M.host_packed_rates(model, bw)
  if bw.host_packed_matmul then return end
  local key = pool_key(model)
  local r = packed_host_cache[key]
  if r == nil then
    local out, plain = ffi.new("double[1]"), ffi.new("double[1]")
    r = C.lrun_model_measure_packed_host_matmul(model.handle, 64 * 2 ^ 20, out, plain) == C.LRUN_OK and out[0] > 0
      and plain[0] > 0 and { packed = out[0], plain = plain[0] } or false
    packed_host_cache[key] = r
  end
  if r then bw.host_packed_matmul, bw.host_packed_plain = r.packed, r.plain end
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
-- decode kernel; cpu, the host decoder) and on the host (host_decode); the
-- host's product of a packed weight only where a plan weighs one
-- (M.host_packed_rates).
-- LRUN_RATES=FILE puts a rates file's fields in place of the measured ones,
-- LRUN_RATES_OUT=FILE writes the table used (lrun.rates_file).
-- @treturn table {h2d_pinned=, h2d_pageable=, host_read=, device_read=, device="cpu"|"cuda",
--   host_matmul={[dtype]=bytes/s} (cuda), host_matmul_copying={[dtype]=bytes/s} (cuda: the same beside the
--   device's copies, M.host_matmul_copying_rates), host_batch={[dtype]=flop/s} (cuda, experts' dtypes),
--   round_trip_s=, host_call_s= (cuda: host products' fixed costs, M.round_trip_s, M.host_call_s),
--   host_copy=, host_copy_copying=, h2d_copying= (cuda: the threads' copy into staging, alone and beside
--   the DMA, and the DMA's rate beside it: M.host_copy, M.host_copy_copying),
--   packed_decode=, host_decode=, host_packed_matmul=, host_packed_plain= (plain bytes/s, or nil)} bytes/s
function M.bandwidths(model)
  local dev = C.lrun_model_device(model.handle)
  local key = ffi.string(C.lrun_device_name(dev))
  local cuda = C.lrun_device_kind_of(dev) == C.LRUN_DEVICE_KIND_CUDA
  local tkey = pool_key(model)
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
    local h = host_cache[tkey] or { host_matmul = {}, host_matmul_copying = {}, host_batch = {} }
    host_cache[tkey] = h
    for _, t in ipairs(model:tensors()) do
      if (host_roles[t.role] or t.role == "lm_head") and not h.host_matmul[t.dtype] then
        for dt, rate in pairs(M.host_matmul_rates(model)) do h.host_matmul[dt] = h.host_matmul[dt] or rate end
        for dt, rate in pairs(M.host_matmul_copying_rates(model)) do
          h.host_matmul_copying[dt] = h.host_matmul_copying[dt] or rate
        end
        break
      end
    end
    M.host_batch_rates(model, h.host_batch)
    if h.host_call_s == nil then h.host_call_s = M.host_call_s(model) or false end
    if h.host_copy == nil then h.host_copy = M.host_copy(model) or false end
    if h.host_copy_copying == nil then h.host_copy_copying, h.h2d_copying = M.host_copy_copying(model) end
    bw.host_copy = h.host_copy or nil
    bw.host_copy_copying, bw.h2d_copying = h.host_copy_copying or nil, h.h2d_copying or nil
    bw.host_call_s = h.host_call_s or nil
    bw.host_matmul, bw.host_batch = h.host_matmul, {}
    bw.host_matmul_copying = next(h.host_matmul_copying) and h.host_matmul_copying or nil
    for dt, r in pairs(h.host_batch) do if r then bw.host_batch[dt] = r end end
  end
  -- LRUN_RATES / LRUN_RATES_OUT: given rates in place of the measured ones, or the measured ones kept
  return require("lrun.rates_file").from_env(bw)
end

--- The device's links and memories (M.bandwidths' figures that do not depend
-- on the CPU's threads): 16 MiB copies, best of three; on cuda the device's
-- own copy is 256 MiB (free memory permitting), beyond the GPU's L2 (50 MB
-- on an H100, where a 16 MiB copy measured the cache: ~2.0 TB/s of read
-- against the HBM's ~2.9).
function M.measure_links(dev, cuda)
  local free = tonumber(C.lrun_device_capacity(dev)) - tonumber(C.lrun_device_used(dev))
  local bytes = math.max(4096, math.min(16 * 2 ^ 20, math.floor(free / 3 / 4096) * 4096))
  local device_bytes = cuda and math.max(bytes, math.min(256 * 2 ^ 20, math.floor(free / 3 / 4096) * 4096)) or bytes
  local out = ffi.new("double[1]")
  local function measure(from, to)
    local n = from == C.LRUN_TIER_DEVICE and to == C.LRUN_TIER_DEVICE and device_bytes or bytes
    local st = C.lrun_device_measure_bandwidth(dev, from, to, n, out)
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
  if cuda then bw.round_trip_s = M.round_trip_s(dev) end
  return bw
end

--- cuda: seconds of the round trip a host product makes (activations down,
-- a sync, the product up: lrun_cuda_offload_host_matmul), from two 4 KiB
-- copies each with its synchronisation (the latency, not the bytes); nil
-- when either cannot be measured. predict.host_overhead_s charges it per
-- host product.
function M.round_trip_s(dev)
  local out, small = ffi.new("double[1]"), 4096
  if C.lrun_device_measure_bandwidth(dev, C.LRUN_TIER_DEVICE, C.LRUN_TIER_PINNED, small, out) ~= C.LRUN_OK
      or out[0] <= 0 then return nil end
  local down = small / out[0]
  if C.lrun_device_measure_bandwidth(dev, C.LRUN_TIER_PINNED, C.LRUN_TIER_DEVICE, small, out) ~= C.LRUN_OK
      or out[0] <= 0 then return nil end
  return down + small / out[0]
end

--- Seconds of one call of the host's matmul on the model's threads beyond
-- its bytes: a 64 x 64 f32 product (16 KiB, in cache), i.e. the thread
-- pool's fork and join; nil when it cannot be measured.
function M.host_call_s(model)
  local out = ffi.new("double[1]")
  if C.lrun_model_measure_matmul(model.handle, 0, C.LRUN_DTYPE_F32, 64, 64, 1, out) ~= C.LRUN_OK or out[0] <= 0 then
    return nil
  end
  return 2 * 64 * 64 / out[0]
end

--- How fast the model's threads copy host memory (lrun_model_measure_host_copy,
-- 1 GiB or more from DRAM): what a host or mmap weight streamed on cuda
-- crosses into the pinned staging buffers; nil when it cannot be measured.
function M.host_copy(model)
  local out = ffi.new("double[1]")
  if C.lrun_model_measure_host_copy(model.handle, 2 ^ 30, out) ~= C.LRUN_OK or out[0] <= 0 then return nil end
  return out[0]
end

--- The same copy with the device copying pinned host memory the whole time
-- (lrun_model_measure_host_copy_copying), as a staged weight's DMA runs beside
-- its threads' copy: that copy's rate and the DMA's meanwhile, bytes/s; false,
-- false when the device cannot copy beside the host (cpu) or has no room.
function M.host_copy_copying(model)
  local copy_bytes = copy_load_bytes(model)
  if not copy_bytes then return false, false end
  local out, dma = ffi.new("double[1]"), ffi.new("double[1]")
  if C.lrun_model_measure_host_copy_copying(model.handle, 2 ^ 30, copy_bytes, out, dma) ~= C.LRUN_OK
    or out[0] <= 0 or dma[0] <= 0 then
    return false, false
  end
  return out[0], dma[0]
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
--- bw with the disk tier's read speed added (a copy: bw is the cache's).
function M.with_disk(model, bw)
  local with_disk = {}
  for key, v in pairs(bw) do with_disk[key] = v end
  with_disk.disk_read = M.disk_read(model)
  return with_disk
end

return M
