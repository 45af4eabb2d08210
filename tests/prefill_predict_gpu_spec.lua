-- prefill_predict_gpu_spec: the predicted prefill on cuda (make test-gpu;
-- docs/residency.md "Predicted prefill"): lrun_model_measure_matmul measures
-- the engine's cuBLAS product (on_device 1) and the host's (0) for the
-- dtypes a model has; a resident model and a plan under a GPU budget carry
-- a prefill prediction (streamed copies overlapped with compute) beside the
-- decode one; lrun_model_measure_device_gemv times the engine's decode GEMV
-- per dtype, which the decode prediction reads device weights at. Accuracy against the measured speed is for the benches
-- (tests/bench/prefill_predict.lua, docs/benchmarks.md), not this spec.
-- LRUN_GPU_SPEC_DEVICE=cpu dry-runs it on the CPU.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

local device = os.getenv("LRUN_GPU_SPEC_DEVICE") or "cuda:0"
local has_gpu = device == "cpu" or C.lrun_cuda_device_count() > 0

local function gen_model(dtype)
  local path = os.tmpname() .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 4, 512, 8, 4, 1536
  s.n_vocab, s.n_ctx = 2048, 1024
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = dtype, C.LRUN_DTYPE_F16, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 5, 0
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
  return path
end

describe("predicted prefill on " .. device, function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  local paths = {}
  teardown(function() for _, p in ipairs(paths) do os.remove(p) end end)

  it("lrun_model_measure_matmul measures the device's and the host's batched product", function()
    for _, dt in ipairs({ C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_Q4_K, C.LRUN_DTYPE_BF16, C.LRUN_DTYPE_F16 }) do
      local path = gen_model(dt)
      paths[#paths + 1] = path
      local m = assert(lrun.load(path, { device = device, progress = false }))
      local dev, host = ffi.new("double[1]"), ffi.new("double[1]")
      local name = ffi.string(C.lrun_dtype_name(dt))
      assert.are.equal(C.LRUN_OK, C.lrun_model_measure_matmul(m.handle, 1, dt, 1536, 512, 512, dev), lf.last_error())
      assert.are.equal(C.LRUN_OK, C.lrun_model_measure_matmul(m.handle, 0, dt, 1536, 512, 512, host), lf.last_error())
      print(string.format("# %s: device %.1f TFLOP/s, host %.1f GFLOP/s", name, dev[0] / 1e12, host[0] / 1e9))
      assert.is_true(dev[0] > 0 and host[0] > 0, name)
      -- the device's memory is given back: a second call measures again
      assert.are.equal(C.LRUN_OK, C.lrun_model_measure_matmul(m.handle, 1, dt, 1536, 512, 64, dev), lf.last_error())
      m:free()
    end
  end)

  it("lrun_model_measure_device_gemv times the engine's decode GEMV per dtype (cuda)", function()
    if device == "cpu" then return end -- the cpu's decode GEMV is lrun_model_measure_weights_gemv's
    local path = gen_model(C.LRUN_DTYPE_Q8_0)
    paths[#paths + 1] = path
    local m = assert(lrun.load(path, { device = device, progress = false }))
    local out = ffi.new("double[1]")
    for _, dt in ipairs({ C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_Q4_K, C.LRUN_DTYPE_Q4_1, C.LRUN_DTYPE_BF16 }) do
      local name = ffi.string(C.lrun_dtype_name(dt))
      assert.are.equal(C.LRUN_OK, C.lrun_model_measure_device_gemv(m.handle, dt, 11008, 4096, 256 * 2 ^ 20, out),
        lf.last_error())
      print(string.format("# decode GEMV %s 11008x4096: %.1f GB/s", name, out[0] / 1e9))
      assert.is_true(out[0] > 0 and out[0] < math.huge, name)
    end
    -- the prediction of the resident model reads its matrices at those rates
    local p = m:placement()
    assert.matches("limit: decode GEMV", tostring(p))
    m:free()
  end)

  -- a q8_0 model on the device, for the measurements beside copies, and the device bytes it holds
  local function q8_model()
    local path = gen_model(C.LRUN_DTYPE_Q8_0)
    paths[#paths + 1] = path
    local m = assert(lrun.load(path, { device = device, progress = false }))
    return m, tonumber(C.lrun_device_used(C.lrun_model_device(m.handle)))
  end

  it("lrun_model_measure_weights_gemv_copying times the host's products with the copy engine busy (cuda)", function()
    if device == "cpu" then return end -- decode_predict_spec.lua has the cpu refusal
    local m, used = q8_model()
    local alone, busy, copy = ffi.new("double[1]"), ffi.new("double[1]"), ffi.new("double[1]")
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_weights_gemv(m.handle, C.LRUN_DTYPE_Q8_0, 2 ^ 24, alone))
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_weights_gemv_copying(m.handle, C.LRUN_DTYPE_Q8_0, 2 ^ 24,
      2 ^ 24, busy, copy), lf.last_error())
    print(string.format("# host q8_0 gemv: %.1f GB/s alone, %.1f GB/s beside copies of %.1f GB/s", alone[0] / 1e9,
      busy[0] / 1e9, copy[0] / 1e9))
    assert.is_true(busy[0] > 0 and copy[0] > 0)
    -- the copy buffer went back to the budget
    assert.are.equal(used, tonumber(C.lrun_device_used(C.lrun_model_device(m.handle))))
    local rates = require("lrun.bandwidth").host_matmul_copying_rates(m)
    assert.is_true(rates.q8_0 > 0)
    m:free()
  end)

  it("lrun_model_measure_host_copy_copying times the staging copy with the copy engine busy (cuda)", function()
    if device == "cpu" then return end -- residency_spec.lua has the cpu refusal
    local m, used = q8_model()
    local alone, busy, dma = ffi.new("double[1]"), ffi.new("double[1]"), ffi.new("double[1]")
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_host_copy(m.handle, 2 ^ 30, alone))
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_host_copy_copying(m.handle, 2 ^ 30, 2 ^ 24, busy, dma),
      lf.last_error())
    print(string.format("# host copy: %.1f GB/s alone, %.1f GB/s beside copies of %.1f GB/s", alone[0] / 1e9,
      busy[0] / 1e9, dma[0] / 1e9))
    assert.is_true(busy[0] > 0 and dma[0] > 0)
    assert.are.equal(used, tonumber(C.lrun_device_used(C.lrun_model_device(m.handle))))
    local bw = assert(require("lrun.bandwidth").bandwidths(m))
    assert.is_true(bw.host_copy_copying > 0 and bw.h2d_copying > 0)
    m:free()
  end)

  it("a resident model and a plan under a budget predict prefill beside decode", function()
    local path = gen_model(C.LRUN_DTYPE_Q8_0)
    paths[#paths + 1] = path
    local m = assert(lrun.load(path, { device = device, progress = false, n_ctx = 600 }))
    local p = m:placement()
    assert.is_true(p.prefill.tok_s > 0 and p.predicted.tok_s > 0, tostring(p))
    assert.are.equal(0, p.prefill.copy_s)
    local weights = m:info().weight_bytes
    m:free()
    local m2 = assert(lrun.load(path, { device = device, progress = false, n_ctx = 600, cache_implementation = "static",
      gpu_budget = math.floor(weights / 2) + 48 * 2 ^ 20, policy = "layers" }))
    local p2 = m2:placement()
    assert.is_true(p2.prefill.copy_s > 0, tostring(p2))
    assert.matches("predicted: prefill 512 tok: [%d.]+ tok/s, decode [%d.]+ tok/s", tostring(p2))
    print("# " .. p2.explain:gsub("\n", "\n# "))
    local _, ids = assert(m2:generate({ 1, 300, 42 }, { max_new_tokens = 4, eos_token_id = {} }))
    assert.are.equal(4, #ids)
    m2:free()
  end)
end)
