--- lrun.predict_plan — the predictions of a placement for a loaded model
-- (docs/residency.md "Predicted prefill"): measures what lrun.predict needs
-- and is not measured yet (the batched product's rate, once per device and
-- dtype per process, cached in the bandwidth table the way the bandwidths
-- are), then predicts decode and a prefill chunk. lrun.residency.plan
-- calls it for every plan; Model:placement for a model nothing was planned
-- for (all resident). The cost model itself is lrun.predict (pure, tested
-- with given rates).
-- @module lrun.predict_plan
local lf = require("lrun.ffi")
local predict = require("lrun.predict")
local host_stream = require("lrun.host_stream")
local ffi, C = lf.ffi, lf.C

local M = {}

local rate_cache = {} -- [device, threads, dtype, n, k, rows] = {device=, host=} flop/s, once per process

local matrix_roles = { attn_q = true, attn_k = true, attn_v = true, attn_output = true, ffn_gate = true,
  ffn_up = true, ffn_down = true, ffn_gate_exps = true, ffn_up_exps = true, ffn_down_exps = true }

-- The largest matrix (n, k) per dtype among the model's block matrices: the
-- shape the rate is measured at (a stacked expert tensor: one expert's).
local function shapes(tensors, with_head)
  return predict.largest_shapes(tensors, function(t)
    return matrix_roles[t.role] or (with_head and t.role == "lm_head")
  end)
end

-- The pool size a model's measurements ran on, for the caches' keys: a
-- figure measured on two threads is not a one-thread model's (the bench's
-- first load used to fix it for every later one).
local function threads_key(model)
  return tostring(model.threads or 0)
end

--- Fills bw.device_matmul (flop/s of the engine's batched product per
-- dtype: cuBLAS on cuda, lrun_cpu_matmul on cpu) and on cuda bw.host_gemm
-- (host compute's batched product), for the model's matrix dtypes not yet
-- measured, at rows activation rows. A dtype that cannot be measured is left
-- out (the prediction then uses another dtype's rate, or none).
function M.matmul_rates(model, bw, rows, context)
  rows = rows or predict.prefill_tokens
  local dev = ffi.string(C.lrun_device_name(C.lrun_model_device(model.handle)))
  local function copy(t) -- the caller's rates, kept; this model's measured ones added to the copy
    local c = {}
    if type(t) == "table" then for k, v in pairs(t) do c[k] = v end end
    return c
  end
  local given = copy(bw.device_matmul)
  bw.device_matmul = copy(bw.device_matmul)
  if bw.device == "cuda" then bw.host_gemm = copy(bw.host_gemm) end
  local out, dt = ffi.new("double[1]"), ffi.new("lrun_dtype[1]")
  for dtype, s in pairs(shapes(model:tensors())) do
    local key = string.format("%s\0%s\0%s\0%d\0%d\0%d", dev, threads_key(model), dtype, s.n, s.k, rows)
    local c = rate_cache[key]
    if not c and C.lrun_dtype_from_name(dtype, dt) == C.LRUN_OK then
      c = {}
      if C.lrun_model_measure_matmul(model.handle, 1, dt[0], s.n, s.k, rows, out) == C.LRUN_OK and out[0] > 0 then
        c.device = out[0]
      end
      if bw.device == "cuda" and C.lrun_model_measure_matmul(model.handle, 0, dt[0], s.n, s.k, rows, out) == C.LRUN_OK
          and out[0] > 0 then
        c.host = out[0]
      end
      rate_cache[key] = c
    end
    if c then
      bw.device_matmul[dtype] = bw.device_matmul[dtype] or c.device
      if bw.host_gemm then bw.host_gemm[dtype] = bw.host_gemm[dtype] or c.host end
    end
  end
  if bw.device == "cuda" then M.device_gemm_by_shape(model, bw, rows, dev, given) end
  -- a matrix of a dtype not measured (a router, a projection outside the
  -- blocks) is costed at the slowest rate measured
  for _, key in ipairs({ "device_matmul", "host_gemm" }) do
    local t, slow = bw[key], nil
    if type(t) == "table" then
      for dtype, r in pairs(t) do if dtype ~= "default" then slow = math.min(slow or r, r) end end
      t.default = slow
    end
  end
  if next(bw.device_matmul) == nil then bw.device_matmul = nil end
  if bw.device ~= "cuda" then M.decode_rates(model, bw, context)
  else
    M.device_gemv_rates(model, bw)
    M.prefill_attention(model, bw, rows)
  end
  return bw
end

local gemm_shape_cache = {} -- [device, dtype, n, k, rows] = flop/s of the engine's GEMM at that shape, once per process

-- A block's dense matrices (the experts' products run at a chunk's few rows per expert: their rate stays the largest shape's)
local function dense_matrix(t)
  return matrix_roles[t.role] and not t.role:find("_exps", 1, true)
end

--- cuda: bw.device_matmul[dtype] combined over the distinct shapes of the
-- model's dense block matrices of that dtype (Σ bytes / Σ bytes / rate,
-- bytes standing for flops within one dtype): cuBLAS runs a 7B's
-- 4096x4096 attention products slower than its 11008-wide FFN ones, and
-- the largest shape alone made every prefill prediction 22-29% fast
-- (session 13, H100). Rates the caller gave are kept; a dtype with one
-- shape keeps matmul_rates' figure.
function M.device_gemm_by_shape(model, bw, rows, dev, given)
  given = given or {}
  local out, dt = ffi.new("double[1]"), ffi.new("lrun_dtype[1]")
  for dtype, list in pairs(predict.shapes_by_dtype(model:tensors(), dense_matrix)) do
    if #list > 1 and not given[dtype] and C.lrun_dtype_from_name(dtype, dt) == C.LRUN_OK then
      local parts = {}
      for _, sh in ipairs(list) do
        local key = string.format("%s\0%s\0%d\0%d\0%d", dev, dtype, sh.n, sh.k, rows)
        if gemm_shape_cache[key] == nil then
          gemm_shape_cache[key] = C.lrun_model_measure_matmul(model.handle, 1, dt[0], sh.n, sh.k, rows, out)
            == C.LRUN_OK and out[0] > 0 and out[0] or false
        end
        parts[#parts + 1] = { bytes = sh.bytes, rate = gemm_shape_cache[key] or nil }
      end
      bw.device_matmul[dtype] = predict.combined_rate(parts) or bw.device_matmul[dtype]
    end
  end
end

local prefill_attn_cache = {} -- [device, heads, kv heads, head_dim, tokens] = seconds per layer, once per process

--- cuda: fills bw.prefill_attention_s (seconds of a chunk of rows tokens'
-- attention, every layer) and bw.prefill_attention_tokens = rows, from the
-- engine's own attention kernel (lrun_model_measure_prefill_attention): it
-- runs on the CUDA cores, so the GEMM's tensor-core rate made it ~100x too
-- cheap. A time the caller gave is kept; when it cannot be measured the
-- prediction falls back to the flop count at the matmul rate.
function M.prefill_attention(model, bw, rows)
  if bw.prefill_attention_s ~= nil then return end
  local dev = ffi.string(C.lrun_device_name(C.lrun_model_device(model.handle)))
  local i = C.lrun_model_get_info(model.handle)
  local key = string.format("%s\0%d\0%d\0%d\0%d", dev, tonumber(i.n_head), tonumber(i.n_head_kv),
    tonumber(i.head_dim), rows)
  if prefill_attn_cache[key] == nil then
    local out = ffi.new("double[1]")
    prefill_attn_cache[key] = C.lrun_model_measure_prefill_attention(model.handle, rows, out) == C.LRUN_OK
      and out[0] > 0 and out[0] or false
  end
  if prefill_attn_cache[key] then
    bw.prefill_attention_s = prefill_attn_cache[key] * tonumber(i.n_layer)
    bw.prefill_attention_tokens = rows
  end
end

local device_gemv_cache = {} -- [device, dtype, n, k] = bytes/s of the engine's decode GEMV, once per process

-- The matrices decode reads: the blocks' and the head.
local function decode_matrix(t) return matrix_roles[t.role] or t.role == "lm_head" end

--- cuda: fills bw.decode_matmul (bytes/s the engine's batch-1 decode GEMV
-- reads each matrix dtype of the model at, from device memory: the kernels
-- reach 40-85% of the memory's read rate depending on the dtype, so one
-- copy bandwidth mispredicts most of them; lrun_model_measure_device_gemv
-- over 256 MiB of each of the model's distinct (n, k) shapes of the dtype,
-- beyond L2, combined by bytes: Σ bytes / Σ (bytes / rate), since a 7B's
-- 4096x4096 attention matrices and 11008-wide FFN ones are not read at the
-- same rate). Rates the caller gave are kept; a shape that cannot be
-- measured is left out, a dtype with none (the prediction then reads it at
-- bw.device_read).
function M.device_gemv_rates(model, bw)
  local dev = ffi.string(C.lrun_device_name(C.lrun_model_device(model.handle)))
  local rates = {}
  if type(bw.decode_matmul) == "table" then for k, v in pairs(bw.decode_matmul) do rates[k] = v end end
  local out, dt = ffi.new("double[1]"), ffi.new("lrun_dtype[1]")
  for dtype, list in pairs(predict.shapes_by_dtype(model:tensors(), decode_matrix)) do
    if rates[dtype] == nil and C.lrun_dtype_from_name(dtype, dt) == C.LRUN_OK then
      local parts = {}
      for _, s in ipairs(list) do
        local key = string.format("%s\0%s\0%d\0%d", dev, dtype, s.n, s.k)
        if device_gemv_cache[key] == nil then
          device_gemv_cache[key] = C.lrun_model_measure_device_gemv(model.handle, dt[0], s.n, s.k, 256 * 2 ^ 20, out)
            == C.LRUN_OK and out[0] > 0 and out[0] or false
        end
        parts[#parts + 1] = { bytes = s.bytes, rate = device_gemv_cache[key] or nil }
      end
      rates[dtype] = predict.combined_rate(parts)
    end
  end
  bw.decode_matmul = rates
end

local gemv_cache = {} -- [device, threads, dtype] = bytes/s of the cpu's decode GEMV, once per process
local attn_cache = {} -- [device, threads, heads, context] = seconds of one layer's decode attention


--- cpu: fills bw.decode_matmul (bytes/s the decode GEMV reads each matrix
-- dtype of the model at, over its own weights, from DRAM when they are
-- larger than the cache) and bw.decode_attention_s (seconds of a token's
-- attention over context cached positions, every layer), which
-- lrun.predict.decode adds to the device's reads. Rates the caller gave
-- are kept. Measured once per device, thread count and dtype (attention:
-- heads and context) per process.
function M.decode_rates(model, bw, context)
  local dev = ffi.string(C.lrun_device_name(C.lrun_model_device(model.handle)))
  local th = threads_key(model)
  local given = type(bw.decode_matmul) == "table" and bw.decode_matmul or {}
  local rates = {}
  for k, v in pairs(given) do rates[k] = v end
  local dt = ffi.new("lrun_dtype[1]")
  for dtype in pairs(shapes(model:tensors(), true)) do
    local key = dev .. "\0" .. th .. "\0" .. dtype
    if gemv_cache[key] == nil and C.lrun_dtype_from_name(dtype, dt) == C.LRUN_OK then
      gemv_cache[key] = require("lrun.bandwidth").host_gemv_rate(model, dt[0])
    end
    rates[dtype] = rates[dtype] or gemv_cache[key] or nil
  end
  bw.decode_matmul = rates
  if bw.decode_attention_s == nil then
    local i = C.lrun_model_get_info(model.handle)
    context = context or predict.prefill_tokens
    local key = string.format("%s\0%s\0%d\0%d\0%d\0%d", dev, th, tonumber(i.n_head), tonumber(i.n_head_kv),
      tonumber(i.head_dim), context)
    if attn_cache[key] == nil then
      local out = ffi.new("double[1]")
      attn_cache[key] = C.lrun_model_measure_decode_attention(model.handle, context, out) == C.LRUN_OK
        and out[0] > 0 and out[0] or false
    end
    bw.decode_attention_s = attn_cache[key] and attn_cache[key] * tonumber(i.n_layer) or nil
  end
end

--- Whether the CUDA engine computes a block's host experts in one host pass
-- (engine_cuda_moe_host.c; the default, LRUN_CUDA_MOE_HOST_PASS=0 turns it off).
function M.host_pass()
  return os.getenv("LRUN_CUDA_MOE_HOST_PASS") ~= "0"
end

-- Whether the model's engine runs the default numerics (the exact path keeps host products on the host).
local function numerics_default(model)
  return model.numerics == nil or model.numerics == C.LRUN_NUMERICS_DEFAULT
end

--- The prefill query for a model: chunk tokens, attention's width, MoE's k,
-- the bytes a token's elementwise kernels move per block.
function M.query(model, tokens)
  local i = C.lrun_model_get_info(model.handle)
  local q_dim, kv_dim = tonumber(i.n_head) * tonumber(i.head_dim), tonumber(i.n_head_kv) * tonumber(i.head_dim)
  local k = tonumber(i.n_expert_used)
  local ff = tonumber(i.n_ff) * (tonumber(i.n_expert) > 0 and k > 0 and k or 1) -- a mixture: k experts' widths
  return { tokens = tokens or predict.prefill_tokens, n_layer = tonumber(i.n_layer), q_dim = q_dim,
    n_expert_used = k,
    act_bytes = predict.activation_bytes({ n_embd = tonumber(i.n_embd), q_dim = q_dim, kv_dim = kv_dim, ff = ff }) }
end

--- Decode and prefill predictions of a plan with bandwidths bw (measured;
-- the matmul rates are measured here when missing).
-- @treturn table|nil decode (lrun.predict.decode)
-- @treturn table|nil prefill (lrun.predict.prefill), nil when no matmul rate could be measured
-- @treturn string the text: the summary line, then the two detail lines
-- @tparam[opt] table cache a mixture's expert cache as planned ({slots=, hit_rate=, layers=}), for decode and
--   prefill
function M.predict(model, tensors, plan, host_compute, bw, opts, cache)
  opts = opts or {}
  -- this model's measured rates over the shared bandwidths (a table per
  -- device): its thread count and its weights are its own
  bw = setmetatable({}, { __index = bw })
  M.matmul_rates(model, bw, nil, opts.decode_context)
  local k = tonumber(C.lrun_model_get_info(model.handle).n_expert_used)
  local dec = predict.decode(tensors, plan, host_compute, bw,
    { n_expert_used = k and k > 0 and k or nil, expert_cache = cache, host_pass = M.host_pass(),
      prefetch_layers = tonumber(opts.prefetch_layers) })
  local pq = M.query(model, opts.prefill_tokens)
  pq.expert_cache = cache -- a cached block's experts in slots are not streamed (lrun.expert_plan.prefill_held_share)
  -- the rows from which a chunk streams host-computed matrices: the caller's, else from the rates measured above
  local rows = opts.host_stream_rows
  if (rows == nil or rows == 0) and os.getenv("LRUN_CUDA_HOST_STREAM_ROWS") then -- the benchmarks' override
    rows = host_stream.rows(0) or -1
  end
  if (rows == nil or rows == 0) and bw.device == "cuda" and numerics_default(model) then
    rows = host_stream.threshold(tensors, plan, host_compute or {}, bw)
  end
  pq.host_stream_rows = numerics_default(model) and rows or -1 -- the exact path computes them where they are
  local pre = bw.device_matmul and predict.prefill(tensors, plan, host_compute, bw, pq) or nil
  if pre then -- the engine's option (nil: its default; -1 never), and the chunk size it streams from
    pre.host_stream_rows, pre.host_stream_from = rows, host_stream.rows(rows)
  end
  local lines = { predict.summary(pre, dec), predict.text(dec, bw) }
  if pre then lines[#lines + 1] = predict.prefill_text(pre) end
  return dec, pre, table.concat(lines, "\n")
end

return M
