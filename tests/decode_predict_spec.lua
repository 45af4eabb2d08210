-- decode_predict_spec: the CPU's decode prediction (issue #15; docs/residency.md
-- "Predicted decode on the CPU"): lrun.predict.decode with given rates, the
-- decode GEMV's rate per dtype (decode_matmul) and a token's attention
-- (decode_attention_s) computed by hand; then the two measurements behind
-- them (lrun_model_measure_weights_gemv over the model's own matrices,
-- lrun_model_measure_decode_attention) on a generated model, the cuda
-- measurement's refusals on it (lrun_model_measure_device_gemv: its rates
-- are tests/prefill_predict_gpu_spec.lua's), and
-- lrun.predict_plan keeping the caller's rates and the shared bandwidth
-- table untouched.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local fixture = require("tests.predict_fixture")
local near = fixture.near
local with = require("tests.compare").with
local predict = require("lrun.predict")
local predict_plan = require("lrun.predict_plan")

-- device_read far above the GEMV's rate: a term that used it would show
local CPU = { device = "cpu", device_read = 1e12, h2d_pinned = 1e10, h2d_pageable = 1e10, host_read = 4e10,
  decode_matmul = { q8_0 = 2e10, f16 = 1e10 } }

local TENSORS = fixture.TENSORS -- one block and the head
-- the embedding moves one row (512 bytes) at its dtype's GEMV rate; the q8_0 matrices at theirs
local DEVICE = 512 / 1e10 + (4e6 + 1e6 + 2e6 + 2e6) / 2e10

describe("predict.decode on the cpu with given rates", function()
  it("every matrix at its dtype's decode GEMV rate, not device_read; the limit names the GEMV", function()
    local p = predict.decode(TENSORS, {}, nil, CPU)
    near(DEVICE, p.device_s, "device")
    near(DEVICE, p.seconds, "seconds")
    assert.are.equal(0, p.attention_s)
    assert.are.equal("decode GEMV", p.limit)
    local rate = string.format("%.1f GB/s", (512 + 9e6) / DEVICE / 1e9)
    assert.matches("limit: decode GEMV " .. rate:gsub("%.", "%%."), predict.text(p, CPU))
  end)

  it("a token's attention over the cached context adds to the step", function()
    local bw = with(CPU, { decode_attention_s = 1e-4 })
    local p = predict.decode(TENSORS, {}, nil, bw)
    near(1e-4, p.attention_s, "attention")
    near(DEVICE + 1e-4, p.seconds, "seconds")
    assert.are.equal("decode GEMV", p.limit)
    assert.matches(", 0%.100 ms attention", predict.text(p, bw))
  end)

  it("attention is the limit when it is the largest term", function()
    local p = predict.decode(TENSORS, {}, nil, with(CPU, { decode_attention_s = 1 }))
    assert.are.equal("attention", p.limit)
  end)

  it("copies and attention add up (the fill's memcpys share the cores)", function()
    local bw = with(CPU, { decode_attention_s = 2e-4 })
    local p = predict.decode(TENSORS, { ["blk.0.ffn_up.weight"] = "host" }, nil, bw)
    near(DEVICE + 2e6 / 1e10 + 2e-4, p.seconds, "seconds")
  end)

  it("cuda: no attention term; device_read without a decode GEMV rate", function()
    local bw = { device = "cuda", device_read = 1e12, h2d_pinned = 2e10, h2d_pageable = 1e10, host_read = 5e10,
      decode_attention_s = 1 }
    local p = predict.decode(TENSORS, {}, nil, bw)
    near((512 + 9e6) / 1e12, p.seconds, "seconds")
    assert.are.equal("device read", p.limit)
    assert.is_nil(p.attention_s)
  end)

  -- the engine's GEMV kernels reach 40-85% of the memory's read rate by dtype (session 9, H100): with
  -- lrun_model_measure_device_gemv's rates the device's reads go at the kernel's speed, as on the cpu
  it("cuda: the device's reads at the engine's decode GEMV rate per dtype when measured", function()
    local bw = { device = "cuda", device_read = 1e12, h2d_pinned = 2e10, h2d_pageable = 1e10, host_read = 5e10,
      decode_matmul = { q8_0 = 2e11, f16 = 1e11 }, decode_attention_s = 1 }
    local p = predict.decode(TENSORS, {}, nil, bw)
    local dev = 512 / 1e11 + 9e6 / 2e11
    near(dev, p.device_s, "device")
    near(dev, p.seconds, "seconds")
    assert.are.equal("decode GEMV", p.limit)
    assert.is_nil(p.attention_s)
    -- a streamed weight crosses PCIe, then is read at its GEMV rate on the device; one streamed unit
    -- has one slot (the engine's k is at most units - 1), so its copy and the compute after the embedding
    -- row take turns (lrun.predict_pipeline)
    local s = predict.decode(TENSORS, { ["blk.0.ffn_up.weight"] = "pinned" }, nil, bw)
    near(dev, s.device_s, "device, streamed")
    near(2e6 / 2e10 + 9e6 / 2e11, s.seconds, "seconds, streamed")
  end)
end)

-- cuda's decode rate per dtype combines the model's shapes by bytes (a 7B's 4096x4096 and 11008-wide
-- matrices run the GEMV at different rates): the helpers predict_plan.device_gemv_rates uses
describe("the decode GEMV's shapes and their combined rate", function()
  it("lists each distinct shape per dtype once, with all its bytes", function()
    local ts = {
      { name = "a", role = "attn_q", dtype = "q4_0", shape = { 4096, 4096 }, bytes = 10 },
      { name = "b", role = "attn_k", dtype = "q4_0", shape = { 4096, 4096 }, bytes = 10 },
      { name = "c", role = "ffn_up", dtype = "q4_0", shape = { 4096, 11008 }, bytes = 27 },
      { name = "d", role = "lm_head", dtype = "q6_k", shape = { 4096, 32000 }, bytes = 100 },
      { name = "e", role = "attn_norm", dtype = "f32", shape = { 4096 }, bytes = 4 },
    }
    local s = predict.shapes_by_dtype(ts, function(t) return t.role ~= "lm_head" end)
    assert.are.same({ q4_0 = { { n = 4096, k = 4096, bytes = 20 }, { n = 11008, k = 4096, bytes = 27 } } }, s)
  end)

  it("combines rates as bytes over the sum of each part's time, skipping unmeasured parts", function()
    near(30 / (10 / 1e11 + 20 / 2e11), predict.combined_rate({ { bytes = 10, rate = 1e11 }, { bytes = 20, rate = 2e11 },
      { bytes = 50 } }), "rate")
    assert.is_nil(predict.combined_rate({ { bytes = 10 } }))
  end)
end)

describe("the cpu decode measurements", function()
  local path, m
  setup(function()
    path, m = fixture.model(5)
  end)
  teardown(function()
    if m then m:free() end
    os.remove(path)
  end)

  it("lrun_model_measure_weights_gemv reads the model's own matrices and refuses what it cannot", function()
    local out = ffi.new("double[1]")
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_weights_gemv(m.handle, C.LRUN_DTYPE_Q8_0, 2 ^ 20, out))
    assert.is_true(out[0] > 0)
    -- the head is f16 (a matrix), the embedding too (one row a token: not measured)
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_weights_gemv(m.handle, C.LRUN_DTYPE_F16, 2 ^ 20, out))
    assert.is_true(out[0] > 0)
    assert.are.equal(C.LRUN_E_UNSUPPORTED, C.lrun_model_measure_weights_gemv(m.handle, C.LRUN_DTYPE_BF16, 2 ^ 20, out))
    assert.matches("no bf16 matrix", lf.last_error())
    assert.are.equal(0, out[0])
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_weights_gemv(m.handle, C.LRUN_DTYPE_Q8_0, 1024, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_weights_gemv(m.handle, C.LRUN_DTYPE_Q8_K, 2 ^ 20, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_weights_gemv(nil, C.LRUN_DTYPE_Q8_0, 2 ^ 20, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_weights_gemv(m.handle, C.LRUN_DTYPE_Q8_0, 2 ^ 20, nil))
  end)

  it("lrun_model_measure_weights_gemv_copying needs a device that copies beside the host: cpu is refused", function()
    local out, copy = ffi.new("double[1]"), ffi.new("double[1]")
    out[0], copy[0] = 7, 7
    assert.are.equal(C.LRUN_E_UNSUPPORTED,
      C.lrun_model_measure_weights_gemv_copying(m.handle, C.LRUN_DTYPE_Q8_0, 2 ^ 20, 2 ^ 20, out, copy))
    assert.matches("has no asynchronous copies", lf.last_error(), 1, true)
    assert.are.equal(0, out[0])
    assert.are.equal(0, copy[0])
    assert.are.equal(C.LRUN_E_ARG,
      C.lrun_model_measure_weights_gemv_copying(m.handle, C.LRUN_DTYPE_Q8_0, 2 ^ 20, 1024, out, nil))
    assert.matches("copy bytes is outside", lf.last_error(), 1, true)
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_weights_gemv_copying(nil, C.LRUN_DTYPE_Q8_0, 2 ^ 20, 2 ^ 20,
      out, nil))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_weights_gemv_copying(m.handle, C.LRUN_DTYPE_Q8_0, 2 ^ 20,
      2 ^ 20, nil, nil))
    -- and lrun.bandwidth finds no such rate on cpu
    assert.are.same({}, require("lrun.bandwidth").host_matmul_copying_rates(m))
  end)

  it("lrun_model_measure_device_gemv is cuda's: a cpu model and bad arguments are refused", function()
    local out = ffi.new("double[1]")
    out[0] = 7
    assert.are.equal(C.LRUN_E_DEVICE, C.lrun_model_measure_device_gemv(m.handle, C.LRUN_DTYPE_Q8_0, 512, 512, 2 ^ 20, out))
    assert.matches("not a CUDA device", lf.last_error())
    assert.are.equal(0, out[0])
    local bad = { { C.LRUN_DTYPE_Q8_K, 512, 512, 2 ^ 20 }, { C.LRUN_DTYPE_Q8_0, 0, 512, 2 ^ 20 },
      { C.LRUN_DTYPE_Q8_0, 512, 65537, 2 ^ 20 }, { C.LRUN_DTYPE_Q8_0, 512, 100, 2 ^ 20 },
      { C.LRUN_DTYPE_Q8_0, 512, 512, 1024 } }
    for i, a in ipairs(bad) do
      assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_device_gemv(m.handle, a[1], a[2], a[3], a[4], out), i)
    end
    assert.matches("not a whole number of q8_0 blocks", (function()
      C.lrun_model_measure_device_gemv(m.handle, C.LRUN_DTYPE_Q8_0, 512, 100, 2 ^ 20, out)
      return lf.last_error()
    end)())
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_device_gemv(nil, C.LRUN_DTYPE_Q8_0, 512, 512, 2 ^ 20, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_device_gemv(m.handle, C.LRUN_DTYPE_Q8_0, 512, 512, 2 ^ 20, nil))
  end)

  it("lrun_model_measure_decode_attention gives seconds and refuses a context out of range", function()
    local out = ffi.new("double[1]")
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_decode_attention(m.handle, 64, out))
    assert.is_true(out[0] > 0 and out[0] < 1)
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_decode_attention(m.handle, 0, out))
    assert.are.equal(0, out[0])
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_decode_attention(m.handle, 2 ^ 21, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_decode_attention(nil, 64, out))
  end)

  it("predict_plan measures into its own table: the shared one stays as given, given rates win", function()
    local shared = { device = "cpu", device_read = 4e10, h2d_pinned = 1e10, h2d_pageable = 1e10, host_read = 4e10 }
    local dec = predict_plan.predict(m, m:tensors(), {}, {}, shared)
    assert.is_nil(shared.decode_matmul)
    assert.is_nil(shared.decode_attention_s)
    assert.is_nil(shared.device_matmul)
    assert.is_true(dec.tok_s > 0 and dec.attention_s > 0)
    assert.is_truthy(dec.limit == "decode GEMV" or dec.limit == "attention")
    -- given rates: the prediction is the hand formula's
    local given = with(shared, { decode_matmul = { q8_0 = 1e9, f16 = 1e9 }, decode_attention_s = 1e-3 })
    local dec2 = predict_plan.predict(m, m:tensors(), {}, {}, given)
    local bytes = 0
    for _, t in ipairs(m:tensors()) do
      if t.role == "embedding" then bytes = bytes + t.bytes / t.shape[2]
      elseif #t.shape >= 2 and t.role ~= "attn_norm" and t.role ~= "ffn_norm" and t.role ~= "output_norm" then
        bytes = bytes + t.bytes
      end
    end
    near(bytes / 1e9 + 1e-3, dec2.seconds, "seconds")
    assert.are.equal(1e9, given.decode_matmul.q8_0)
  end)
end)
