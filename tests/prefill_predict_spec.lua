-- prefill_predict_spec: the predicted prefill speed (lua/lrun/predict.lua,
-- M.prefill) with given bandwidths and matmul rates (nothing measured),
-- computed by hand here from the formula of docs/residency.md "Predicted
-- prefill": all resident, streamed (cuda overlapped, cpu summed), hybrid
-- (host compute), the disk tier, a mixture of experts' host experts
-- computed on the host or streamed; then the measured rate
-- (lrun_model_measure_matmul) and the plan's and m:placement()'s text on a
-- generated model.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local fixture = require("tests.predict_fixture")
local near = fixture.near
local predict = require("lrun.predict")
local residency = require("lrun.residency")

local T = 100
local CUDA = { device = "cuda", device_read = 1e12, h2d_pinned = 2e10, h2d_pageable = 1e10, host_read = 5e10,
  host_matmul = { q8_0 = 2e10 }, disk_read = 2e9, device_matmul = { q8_0 = 1e13, f16 = 2e14 },
  host_gemm = { q8_0 = 1e11 } }
local CPU = { device = "cpu", device_read = 4e10, h2d_pinned = 2e10, h2d_pageable = 2e10, host_read = 4e10,
  device_matmul = { q8_0 = 1e11 } }

local TENSORS = fixture.TENSORS -- one block and the head
local Q, UP, DOWN = "blk.0.attn_q.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight"

-- The device's time for the block's three matrices at T tokens (flop-bound at these rates).
local function block_device(bw)
  local flops = 2 * T * (500 * 500 + 500 * 1000 + 1000 * 500)
  return flops / bw.device_matmul.q8_0
end
-- The parts every plan here keeps on the device: the chunk's embedding rows (T of 1000) and the head (one row).
local function fixed(bw) return (T * 512) / bw.device_read + 4e6 / bw.device_read end

describe("predict.prefill with given rates", function()
  it("all resident: the device's batched product, the head one row, vectors free", function()
    local p = predict.prefill(TENSORS, {}, nil, CUDA, { tokens = T })
    near(block_device(CUDA) + fixed(CUDA), p.seconds, "seconds")
    near(T / p.seconds, p.tok_s, "tok/s")
    assert.are.equal("device matmul", p.limit)
    assert.are.equal(0, p.copy_s)
    assert.are.equal(T, p.tokens)
  end)

  it("a chunk too small to be flop-bound reads the weights at device_read", function()
    local p = predict.prefill(TENSORS, {}, nil, CUDA, { tokens = 1 })
    local reads = (1e6 + 2e6 + 2e6) / 1e12 -- each max(flops / rate, bytes / read) is the read at one token
    near(reads + 512 / 1e12 + 4e6 / 1e12, p.seconds, "seconds")
  end)

  it("attention: 2 · T² · q_dim per layer at the device's rate", function()
    local p = predict.prefill(TENSORS, {}, nil, CUDA, { tokens = T, n_layer = 1, q_dim = 500 })
    near(2 * T * T * 500 / 2e14, p.attention_s, "attention") -- the f16 rate
    near(block_device(CUDA) + fixed(CUDA) + p.attention_s, p.seconds, "seconds")
  end)

  -- cuda's attention runs on the CUDA cores, far slower than the GEMM rate (session 9, H100: the
  -- prediction +56..121%): a measured chunk time replaces the flop count, scaled by T² to other chunks
  it("attention: a measured chunk time (prefill_attention_s) replaces the flop count", function()
    local bw = setmetatable({ prefill_attention_s = 4e-5, prefill_attention_tokens = 2 * T }, { __index = CUDA })
    local p = predict.prefill(TENSORS, {}, nil, bw, { tokens = T, n_layer = 1, q_dim = 500 })
    near(4e-5 / 4, p.attention_s, "attention, half the measured chunk")
    near(block_device(CUDA) + fixed(CUDA) + p.attention_s, p.seconds, "seconds")
    assert.are.equal("device matmul", p.limit)
    bw.prefill_attention_s = 1
    local slow = predict.prefill(TENSORS, {}, nil, bw, { tokens = 2 * T })
    near(1, slow.attention_s, "attention at the measured length, without q_dim")
    assert.are.equal("attention", slow.limit)
    -- with streamed weights the copies overlap the attention too (cuda: max of copies and compute)
    local s = predict.prefill(TENSORS, { [UP] = "pinned" }, nil, bw, { tokens = 2 * T })
    near(math.max(2e6 / 2e10, s.device_s + 1), s.seconds, "seconds, streamed")
  end)

  -- the kernels between the products (session 13, H100: every dtype's prediction 22-29% fast without them)
  it("cuda: the elementwise kernels stream T · act_bytes per block at device_read; the cpu's are not added", function()
    local act = predict.activation_bytes({ n_embd = 500, q_dim = 500, kv_dim = 250, ff = 1000 })
    assert.are.equal(40 * 500 + 8 * 500 + 12 * 250 + 12 * 1000, act)
    local p = predict.prefill(TENSORS, {}, nil, CUDA, { tokens = T, n_layer = 2, act_bytes = act })
    near(T * 2 * act / CUDA.device_read, p.elementwise_s, "elementwise")
    near(block_device(CUDA) + fixed(CUDA) + p.elementwise_s, p.seconds, "seconds")
    assert.truthy(predict.prefill_text(p):find(string.format("%.3f ms elementwise", p.elementwise_s * 1e3), 1, true))
    local c = predict.prefill(TENSORS, {}, nil, CPU, { tokens = T, n_layer = 2, act_bytes = act })
    assert.are.equal(0, c.elementwise_s)
    assert.is_nil(predict.prefill_text(c):find("elementwise", 1, true))
  end)

  it("cuda streaming: bytes over the link once per chunk, overlapped with compute (max)", function()
    local plan = { [UP] = "pinned", [DOWN] = "host" }
    local p = predict.prefill(TENSORS, plan, nil, CUDA, { tokens = T })
    local copy = 2e6 / 2e10 + 2e6 / 1e10
    near(copy, p.copy_s, "copy")
    near(block_device(CUDA) + fixed(CUDA), p.device_s, "device")
    near(math.max(copy, p.device_s), p.seconds, "seconds")
    assert.are.equal("PCIe pageable", p.limit)
    assert.is_true(p.overlapped)
    -- a longer chunk hides the copies: the same bytes cross once for more tokens
    local long = predict.prefill(TENSORS, plan, nil, CUDA, { tokens = 100000 })
    assert.are.equal("device matmul", long.limit)
  end)

  it("cpu streaming: the fill's copies and the matmuls add up", function()
    local plan = { [UP] = "mmap" }
    local p = predict.prefill(TENSORS, plan, nil, CPU, { tokens = T })
    near(block_device(CPU) + fixed(CPU) + 2e6 / 2e10, p.seconds, "seconds")
    assert.is_falsy(p.overlapped)
  end)

  it("hybrid: host-computed weights cost host flops for T tokens (max with their bytes over the host's read)", function()
    local plan, hc = { [UP] = "host", [DOWN] = "host" }, { [UP] = true, [DOWN] = true }
    local p = predict.prefill(TENSORS, plan, hc, CUDA, { tokens = T })
    local host = 2 * (2 * T * 500 * 1000) / 1e11 -- host_gemm q8_0
    near(host, p.host_s, "host")
    near(2 * T * 500 * 500 / 1e13 + fixed(CUDA), p.device_s, "device")
    near(p.device_s + host, p.seconds, "seconds: host products are synchronous")
    assert.are.equal("host matmul", p.limit)
    -- one token: the host reads the weights (2e6 bytes each at host_matmul's 2e10 bytes/s)
    local one = predict.prefill(TENSORS, plan, hc, CUDA, { tokens = 1 })
    near(2 * 2e6 / 2e10, one.host_s, "host at one token")
  end)

  it("disk: the disk's bytes once per chunk; a host-computed disk weight read at most at disk speed", function()
    local p = predict.prefill(TENSORS, { [UP] = "disk", [Q] = "pinned" }, nil, CUDA, { tokens = T })
    near(2e6 / 2e9 + 1e6 / 2e10, p.copy_s, "copy")
    near(2e6 / 2e9, p.links.disk, "disk link")
    assert.are.equal("disk", p.limit)
    local h = predict.prefill(TENSORS, { [UP] = "disk" }, { [UP] = true }, CUDA, { tokens = 1 })
    near(2e6 / 2e9, h.host_s, "host-computed disk weight at one token")
  end)

  it("refuses a table without the matmul rate", function()
    assert.has_error(function() predict.prefill(TENSORS, {}, nil, { device = "cpu", device_read = 1, h2d_pinned = 1,
      host_read = 1 }) end)
  end)

  it("the short line and the detail line", function()
    local pre = predict.prefill(TENSORS, {}, nil, CUDA, { tokens = 512 })
    local dec = predict.decode(TENSORS, {}, nil, CUDA)
    assert.matches("^predicted: prefill 512 tok: [%d.]+ tok/s, decode [%d.]+ tok/s$", predict.summary(pre, dec))
    assert.matches("^predicted prefill ~[%d.]+ tok/s for a 512%-token chunk %(limit: device matmul",
      predict.prefill_text(pre))
  end)
end)

-- A mixture of experts: one block of E = 64 experts, k = 4, stacked tensors {k, n, E}.
local E, K = 64, 4
local ek, en = 256, 512 -- one expert's matrix: k, n
local eb = ek * en * 1.0625 -- q8_0 bytes of one expert's slice
local MOE = {
  { name = "blk.0.ffn_gate_exps.weight", role = "ffn_gate_exps", layer = 0, dtype = "q8_0", bytes = eb * E,
    shape = { ek, en, E } },
  { name = "blk.0.ffn_up_exps.weight", role = "ffn_up_exps", layer = 0, dtype = "q8_0", bytes = eb * E,
    shape = { ek, en, E } },
  { name = "blk.0.ffn_down_exps.weight", role = "ffn_down_exps", layer = 0, dtype = "q8_0", bytes = eb * E,
    shape = { en, ek, E } },
}
local function host_all(tiers)
  local plan, hc = {}, {}
  for _, t in ipairs(MOE) do plan[t.name], hc[t.name] = tiers, true end
  return plan, hc
end

describe("predict.prefill of a mixture of experts", function()
  it("expected distinct experts for uniform routing: E · (1 − (1 − k/E)^T)", function()
    near(64 * (1 - (1 - 4 / 64) ^ 10), predict.distinct_experts(64, 4, 10), "D")
    near(4, predict.distinct_experts(64, 4, 1), "one token")
    assert.is_true(predict.distinct_experts(64, 4, 10000) > 63.999)
  end)

  it("resident experts: the chunk's T · k selections' flops, the touched experts read once", function()
    local p = predict.prefill(MOE, {}, nil, CUDA, { tokens = T, n_expert_used = K })
    local flops = 2 * T * K * 3 * ek * en
    near(math.max(flops / 1e13, predict.distinct_experts(E, K, T) * 3 * eb / 1e12), p.device_s, "device")
  end)

  it("host experts computed on the host when the chunk is short (cuda)", function()
    local plan, hc = host_all("host")
    local bw = {}
    for key, v in pairs(CUDA) do bw[key] = v end
    bw.host_gemm = { q8_0 = 1e12 } -- a fast host: computing beats copying
    local t = 8
    local p = predict.prefill(MOE, plan, hc, bw, { tokens = t, n_expert_used = K })
    assert.is_falsy(p.expert_streamed)
    local D = predict.distinct_experts(E, K, t)
    -- per touched expert: max(its bytes at the host's read, its tokens' flops at the host's rate)
    local n = math.floor(D + 0.5)
    local per = t * K / n
    near(n * math.max(3 * eb / 2e10, per * 2 * 3 * ek * en / 1e12), p.host_s, "host")
    assert.are.equal(0, p.copy_s)
  end)

  -- pageable host experts go through the engine's pinned bounce buffers (engine_cuda_moe_stream.c): a
  -- host memcpy (half the host's read) then the pinned DMA, not the driver's pageable rate
  it("pageable host experts stream at min(pinned link, host read / 2) (cuda)", function()
    local plan, hc = host_all("host")
    local bw = {}
    for key, v in pairs(CUDA) do bw[key] = v end
    bw.host_read = 3e10 -- the memcpy (1.5e10) below the pinned link (2e10) and above pageable (1e10)
    local p = predict.prefill(MOE, plan, hc, bw, { tokens = 512, n_expert_used = K })
    assert.is_true(p.expert_streamed)
    local D = predict.distinct_experts(E, K, 512)
    near(D * 3 * eb / 1.5e10, p.copy_s, "copy")
    assert.is_not_nil(p.links["PCIe pinned (bounce)"])
  end)

  it("host experts streamed when the chunk is long: the touched experts cross once (cuda)", function()
    local plan, hc = host_all("pinned")
    local p = predict.prefill(MOE, plan, hc, CUDA, { tokens = 512, n_expert_used = K })
    assert.is_true(p.expert_streamed)
    local D = predict.distinct_experts(E, K, 512)
    near(D * 3 * eb / 2e10, p.copy_s, "copy")
    assert.are.equal(0, p.host_s)
    assert.matches("host experts streamed", predict.prefill_text(p))
    -- forced off: computed on the host, at host_gemm's rate
    local h = predict.prefill(MOE, plan, hc, CUDA, { tokens = 512, n_expert_used = K, expert_stream = false })
    near(math.max(2 * 512 * K * 3 * ek * en / 1e11, D * 3 * eb / 2e10), h.host_s, "host forced")
  end)

  -- a cached block's touched experts already in the expert cache's slots run there and are not streamed
  -- (engine_cuda_moe_stream.c); the share from lrun.expert_plan.prefill_held_share
  -- with the engine's slot prefill on (its default; LRUN_CUDA_MOE_PREFILL_SLOTS=0 turns it off)
  local function from_slots(on)
    local ep = require("lrun.expert_plan")
    local was = ep.prefill_from_slots
    ep.prefill_from_slots = on
    finally(function() ep.prefill_from_slots = was end)
  end

  it("a cached block streams every touched expert while the engine's slot prefill is off (LRUN_CUDA_MOE_PREFILL_SLOTS=0)", function()
    from_slots(false)
    local plan, hc = host_all("pinned")
    local all = predict.prefill(MOE, plan, hc, CUDA, { tokens = 512, n_expert_used = K })
    local p = predict.prefill(MOE, plan, hc, CUDA, { tokens = 512, n_expert_used = K,
      expert_cache = { slots = 16, hit_rate = 0.25, layers = { 0 } } })
    assert.is_nil(p.slot_share)
    near(all.copy_s, p.copy_s, "copy: every touched expert")
    near(all.bytes.streamed, p.bytes.streamed, "streamed bytes")
  end)

  it("a cached block streams only the touched experts not in slots (cuda)", function()
    from_slots(true)
    local plan, hc = host_all("pinned")
    local D = predict.distinct_experts(E, K, 512)
    local all = predict.prefill(MOE, plan, hc, CUDA, { tokens = 512, n_expert_used = K })
    -- 16 slots of the block's 64 experts, uniform routing (hit rate = slot share): a quarter held
    local q = { tokens = 512, n_expert_used = K, expert_cache = { slots = 16, hit_rate = 0.25, layers = { 0 } } }
    local p = predict.prefill(MOE, plan, hc, CUDA, q)
    near(0.25, p.slot_share, "slot share")
    near(0.75 * D * 3 * eb / 2e10, p.copy_s, "copy: the uncached three quarters")
    near(0.75 * all.bytes.streamed, p.bytes.streamed, "streamed bytes")
    near(0.25 * D * 3 * eb, p.bytes.slots, "bytes read from slots")
    near(all.device_s, p.device_s, "every touched expert still multiplied on the device")
    assert.matches("25%% of cached blocks' experts from the cache's slots", predict.prefill_text(p))
    -- skewed: the hit rate the planner expects (0.6) over the same slots, through prefill_held_share
    q.expert_cache.hit_rate = 0.6
    local s = require("lrun.expert_plan").prefill_held_share(0.6, 0.25, K, E, 512)
    local sk = predict.prefill(MOE, plan, hc, CUDA, q)
    near(s, sk.slot_share, "skewed share")
    near((1 - s) * D * 3 * eb / 2e10, sk.copy_s, "skewed copy")
    -- a cache of other blocks, or on the cpu: nothing changes
    local other = predict.prefill(MOE, plan, hc, CUDA, { tokens = 512, n_expert_used = K,
      expert_cache = { slots = 16, hit_rate = 0.25, layers = { 5 } } })
    near(all.copy_s, other.copy_s, "another block's cache")
    local cpu = predict.prefill(MOE, plan, hc, CPU, q)
    assert.is_nil(cpu.slot_share)
  end)

  it("a cached block's held experts leave the host's share too when the host computes the rest (cuda)", function()
    from_slots(true)
    local plan, hc = host_all("host")
    local bw = {}
    for key, v in pairs(CUDA) do bw[key] = v end
    bw.host_gemm = { q8_0 = 1e12 } -- a fast host: computing beats copying
    local t = 8
    local all = predict.prefill(MOE, plan, hc, bw, { tokens = t, n_expert_used = K })
    local p = predict.prefill(MOE, plan, hc, bw, { tokens = t, n_expert_used = K,
      expert_cache = { slots = 32, hit_rate = 0.5, layers = { 0 } } })
    assert.is_falsy(p.expert_streamed)
    near(0.5, p.slot_share, "uniform: half the experts in slots")
    near(0.5 * all.host_s, p.host_s, "the host computes the other half")
    assert.is_true(p.device_s > all.device_s, "the held half multiplied on the device")
  end)

  it("cpu: host experts are the device's own products, never streamed", function()
    local plan, hc = host_all("host")
    local p = predict.prefill(MOE, plan, hc, CPU, { tokens = T, n_expert_used = K })
    assert.is_falsy(p.expert_streamed)
    near(math.max(2 * T * K * 3 * ek * en / 1e11, predict.distinct_experts(E, K, T) * 3 * eb / 4e10), p.host_s)
  end)
end)

describe("the measured rate and the plan's text", function()
  local path, m
  setup(function()
    path, m = fixture.model(3)
  end)
  teardown(function()
    if m then m:free() end
    os.remove(path)
  end)

  it("lrun_model_measure_matmul gives flop/s and refuses what it cannot measure", function()
    local out = ffi.new("double[1]")
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_matmul(m.handle, 1, C.LRUN_DTYPE_Q8_0, 128, 64, 32, out))
    assert.is_true(out[0] > 0)
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_matmul(m.handle, 1, C.LRUN_DTYPE_Q8_0, 128, 33, 32, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_matmul(m.handle, 0, C.LRUN_DTYPE_Q8_K, 128, 256, 32, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_matmul(m.handle, 0, C.LRUN_DTYPE_F32, 0, 64, 32, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_matmul(m.handle, 0, C.LRUN_DTYPE_F32, 8, 64, 9000, out))
    assert.are.equal(0, out[0])
  end)

  it("every plan carries a prefill prediction beside the decode one", function()
    local r = assert(residency.plan(m, { policy = "aggressive", cpu_offload_gb = 2 ^ -12, threads = 1 }))
    assert.is_table(r.prefill)
    assert.is_true(r.prefill.tok_s > 0 and r.prefill.tokens == 512)
    assert.matches("predicted: prefill 512 tok: [%d.]+ tok/s, decode [%d.]+ tok/s", r.explain)
    assert.matches("predicted prefill ~", r.explain)
    local none = assert(residency.plan(m, { policy = "aggressive", cpu_offload_gb = 2 ^ -12, predict = false }))
    assert.is_nil(none.prefill)
  end)

  it("m:placement() of a model nothing was planned for predicts the resident speeds", function()
    local p = m:placement()
    assert.is_nil(p.policy)
    assert.is_true(p.prefill.tok_s > 0 and p.predicted.tok_s > 0)
    assert.are.equal(0, p.prefill.copy_s)
    assert.matches("predicted: prefill 512 tok: ", tostring(p))
  end)
end)
