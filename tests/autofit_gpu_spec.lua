-- autofit_gpu_spec: auto-fit on cuda (make test-gpu; docs/policies.md
-- "Auto-fit"): a model whose ALL_DEVICE engine does not fit gpu_budget
-- loads with no placement option, placed by smart, with a predicted decode
-- speed, stays under the budget and generates; one that fits is left alone.
-- The prediction's accuracy against the measured speed is for the
-- benchmarks (docs/benchmarks.md), not this spec.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")
local residency = require("lrun.residency")

local has_gpu = C.lrun_cuda_device_count() > 0
local moe = require("tests.autofit_moe")

-- 4 blocks of q8_0 (n_embd 256), an f16 embedding table and a q8_0 head.
local function gen_model()
  local path = os.tmpname() .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 8, 512, 8, 4, 2048
  s.n_vocab, s.n_ctx = 2048, 256
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_F16, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 11, 2
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
  return path
end

describe("auto-fit on cuda", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  local path
  setup(function() path = gen_model() end)
  teardown(function() os.remove(path) end)

  it("leaves a model that fits alone", function()
    local m = assert(lrun.load(path, { device = "cuda:0", progress = false }))
    assert.is_nil(m.residency)
    local _, ids = assert(m:generate({ 1, 300, 42 }, { max_new_tokens = 4, eos_token_id = {} }))
    assert.are.equal(4, #ids)
    m:free()
  end)

  it("places a model that does not fit gpu_budget with smart and stays under it", function()
    local probe = assert(lrun.load(path, { device = "cuda:0", progress = false, gpu_budget = "1G" }))
    local fits, need = residency.fits(probe, {})
    assert.is_true(fits)
    local total = probe:info().weight_bytes
    probe:free()
    -- a quarter of the weights short: the KV cache, scratch and streaming slots stay
    -- (on the H200 a 4-layer 256-wide model left too little: the scratch dominated, the pool fragmented)
    local budget = need - math.floor(total / 4)
    local m = assert(lrun.load(path, { device = "cuda:0", progress = false, gpu_budget = budget }))
    local p = m:placement()
    assert.is_true(p.auto_fit)
    assert.are.equal("smart", p.policy)
    assert.is_true(p.predicted.tok_s > 0)
    assert.is_true(p.bytes.device < total)
    local _, ids = assert(m:generate({ 1, 300, 42 }, { max_new_tokens = 4, eos_token_id = {} }))
    assert.are.equal(4, #ids)
    assert.is_true(tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle))) <= budget)
    m:free()
  end)

  -- A plan that fills the budget with weights used to leave no room for the staging that multiplies a
  -- prompt's host-computed matrices on the device, and dropped it (session 27, H100: a 7B bf16 at 4 GiB
  -- prefilled 127 tok/s, the host's products): the planner makes room for it first.
  it("keeps room for the prompts' staging when smart host-computes under a tight budget", function()
    local bandwidth = require("lrun.bandwidth")
    local measured = bandwidth.bandwidths
    -- a slow link and a host as fast: smart host-computes part of what leaves the device
    bandwidth.bandwidths = require("tests.bandwidth_override").replace(measured, { h2d_pinned = 1e8,
      h2d_pageable = 1e8, host_read = 1.6e8, host_matmul = 1.5e8, host_matmul_copying = { q8_0 = 1.5e8 } })
    local ok, err = pcall(function()
      local probe = assert(lrun.load(path, { device = "cuda:0", progress = false, gpu_budget = "1G" }))
      local _, need = residency.fits(probe, {})
      local budget = need - math.floor(probe:info().weight_bytes * 0.3)
      probe:free()
      local m = assert(lrun.load(path, { device = "cuda:0", progress = false, gpu_budget = budget }))
      local p = m:placement()
      assert.is_not_nil(next(p.host_compute), p.explain)
      assert.is_nil(p.explain:find("no room in the budget for the staging", 1, true), p.explain)
      local prompt = {}
      for i = 1, 64 do prompt[i] = 1 + (i * 37) % 2000 end
      assert(m:generate(prompt, { max_new_tokens = 2, eos_token_id = {} }))
      local st = assert(m:stats())
      assert.is_true(st.host_stream_products > 0, "no host-computed matrix multiplied on the device")
      assert.is_true(tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle))) <= budget)
      m:free()
    end)
    bandwidth.bandwidths = measured
    assert(ok, err)
  end)
end)

-- A mixture of experts at budgets down to just above what the plan needs:
-- the engine at the first attempt, its scratch (the MoE routing block
-- included) and slots the plan's, under the budget while the cache grows and
-- when a static engine with 512-token steps replaces it: the remade engine
-- found the pool's holes before large blocks owned their arenas
-- (docs/residency.md "Fragmentation"; the cpu twin is autofit_moe_spec.lua).
describe("auto-fit of a mixture of experts on cuda under tight budgets", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  local path, need, experts
  setup(function()
    path = os.tmpname() .. ".gguf"
    moe.generate(path, moe.large)
    need, experts = moe.need(path, "cuda:0")
  end)
  teardown(function() if path then os.remove(path) end end)

  it("makes the engine at the first attempt at every budget it accepts, and stays under it", function()
    local accepted, refused, tightest = moe.sweep(path, "cuda:0", need, experts)
    print(string.format("# %d budgets accepted (the tightest %d bytes, %.0f%% of all-resident), %d refused",
      accepted, tightest or 0, 100 * (tightest or 0) / need, refused))
    assert.is_true(accepted >= 3 and refused >= 1)
  end)
end)
