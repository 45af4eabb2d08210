-- pack_plan_gpu_spec: auto-fit's packed choice on cuda (make test-gpu;
-- lua/lrun/pack_plan.lua, docs/packed.md "The automatic choice"). A
-- generated bf16 model (trained-like values: PEX2 packs it to about 0.70)
-- under a device budget 20% of its weights short. On the H100 with its
-- measured rates this small a model stays plain (session 17: plain
-- predicted 1596 tok/s against 1461 with blocks 0..5 packed: 59 MB stream
-- or host-compute in launches' time), so the choice is made here with a
-- slow link and host (the rates the planner measured, those replaced, as
-- tests/pack_plan_spec.lua does on the CPU): packed weights resident are then
-- predicted faster than plain weights streamed or host-computed, auto-fit
-- packs whole blocks by itself, stays under the budget, and the CUDA engine
-- gives the plain model's tokens and logits bit for bit (the decode is
-- lossless; test_packed_stream_gpu checks the same kernels). Streamed
-- matrices packed beside host-computed plain ones give the plain model's
-- tokens; host-computed ones packed too (multiplied as the host decodes
-- them) give that run's logits bit for bit. packed = false keeps every
-- weight plain.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local lf = require("lrun.ffi")
local C = lf.C
local lrun = require("lrun")
local residency = require("lrun.residency")
local bandwidth = require("lrun.bandwidth")

-- The measured rates with the link and the host's read replaced by slow ones, and host compute slower still:
-- smart then streams what leaves the device rather than compute it on the host, whose products are not the
-- GPU's bits (session 18, H100: with host matmul as slow as the link, 21 tensors host-computed, logits 3.6e-5 off).
-- The host's rate beside copies goes too (empty: lrun.predict then takes host_matmul), else its measured figure
-- stands for host compute (session 26, H100: plain predicted 1620 tok/s against 1919 packed, and not packed).
local measured = bandwidth.bandwidths
local slow_link = require("tests.bandwidth_override").replace(measured,
  { h2d_pinned = 1e8, h2d_pageable = 1e8, host_read = 1e8, host_matmul = 1e5, host_matmul_copying = {} })

local has_gpu = C.lrun_cuda_device_count() > 0

-- 8 bf16 blocks of width 512 (~59 MB of weights: the budgets stay above one pool arena, 16 MiB).
local function gen_model()
  local path = os.tmpname() .. ".gguf"
  require("tests.bf16_model_fixture").generate(path, { n_layer = 8, n_embd = 512, n_head = 8, n_head_kv = 4,
    n_ff = 1536, n_vocab = 2048, seed = 29, threads = 2 })
  return path
end

-- A policy for blocks 2 on: q, k, v, o streamed packed from pinned memory, gate, up, down host-computed (packed
-- too with pack_host).
local function mix_policy(pack_host)
  return { name = pack_host and "packed off the device" or "packed streamed, plain host", plan = function(tensors)
    local plan, hc, packs, off = {}, {}, {}, 0
    for _, t in ipairs(tensors) do
      if t.layer and t.layer >= 2 and #t.shape == 2 then
        if t.role:find("^ffn") then plan[t.name], hc[t.name], packs[t.name] = "host", true, pack_host or nil
        else plan[t.name], packs[t.name] = "pinned", true end
        off = off + t.bytes
      end
    end
    return plan, off, { host_compute = hc, packed = packs }
  end }
end

local PROMPT = { 1, 300, 42, 7, 260, 99, 12 }
local function run(m)
  local _, ids = assert(m:generate(PROMPT, { max_new_tokens = 6, do_sample = false, eos_token_id = {} }))
  return ids, assert(m:logits(PROMPT))
end

describe("auto-fit's packed choice on cuda", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  local path, ref_ids, ref_logits, budget
  setup(function()
    path = gen_model()
    local m = assert(lrun.load(path, { device = "cuda:0", progress = false }))
    assert.is_nil(m.residency) -- fits: left alone
    ref_ids, ref_logits = run(m)
    local fits, need = residency.fits(m, {})
    assert.is_true(fits)
    budget = need - math.floor(0.2 * m:info().weight_bytes)
    m:free()
  end)
  teardown(function()
    bandwidth.bandwidths = measured
    os.remove(path)
  end)
  after_each(function() bandwidth.bandwidths = measured end)

  -- The plan fills the budget with packed blocks and streams the rest, so the engine made on it must fit with
  -- the packed scratch it decodes into (session 18, H200: a 7B bf16 under 4 and 10 GiB failed at engine init
  -- when the planner left that scratch out; passed on the H100 after the fix).
  it("packs whole blocks resident, under the budget, logits bit for bit", function()
    bandwidth.bandwidths = slow_link
    local m = assert(lrun.load(path, { device = "cuda:0", progress = false, gpu_budget = budget }))
    local p = m:placement()
    print("\n" .. p.explain:match("packed: [^\n]*"))
    assert.is_true(p.auto_fit)
    assert.are.equal("smart", p.policy)
    local r = m.residency.pack_choice
    assert.is_not_nil(r, "not weighed")
    assert.are_not.equal(r.plain, r.chosen, r.text)
    -- faster than plain by more than the choice's margin (H200, session 18: 7.2 against 5.3 tok/s predicted)
    assert.is_true(r.chosen.eval.tok_s > (1 + require("lrun.pack_choice").min_gain) * r.plain.eval.tok_s, r.text)
    assert.matches("packed: chosen %(", p.explain)
    local per_block = {}
    for _, t in ipairs(m:tensors()) do
      if t.packed and t.layer >= 0 then per_block[t.layer] = (per_block[t.layer] or 0) + 1 end
    end
    assert.is_not_nil(next(per_block))
    for l, k in pairs(per_block) do assert.are.equal(7, k, "block " .. l) end
    assert.is_nil(next(p.host_compute), "host-computed tensors")
    local ids, logits = run(m)
    assert.is_true(compare.same(ref_ids, ids), "tokens differ")
    assert.is_true(compare.same(ref_logits, logits), "logits differ (relative " .. compare.rel_diff(ref_logits, logits)
      .. ")\n" .. p.explain)
    assert.is_true(tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle))) <= budget)
    m:free()
  end)

  -- What "packed where streamed" runs (lrun.pack_choice; the choice itself is tests/pack_choice_spec.lua's, on
  -- given rates): a block's streamed matrices packed (mode 2: packed bytes cross, decoded on the device) beside
  -- its host-computed ones plain, here from a policy's plan. The host's products are not the GPU's bits, so the
  -- tokens match and the logits are close, not equal.
  it("streamed matrices packed beside host-computed plain ones: the plain model's tokens", function()
    local m = assert(lrun.load(path, { device = "cuda:0", progress = false, policy = mix_policy(false) }))
    local n_host, n_stream = 0, 0
    local p = m:placement()
    for _, t in ipairs(m:tensors()) do
      if p.host_compute[t.name] then n_host = n_host + 1; assert.is_false(t.packed, t.name)
      elseif t.tier == "pinned" then n_stream = n_stream + 1; assert.is_true(t.packed, t.name) end
    end
    assert.are.equal(18, n_host) -- 6 blocks x gate, up, down
    assert.are.equal(24, n_stream) -- 6 blocks x q, k, v, o
    local ids, logits = run(m)
    assert.is_true(compare.same(ref_ids, ids), "tokens differ")
    assert.is_true(compare.rel_diff(ref_logits, logits) < 1e-3, "logits " .. compare.rel_diff(ref_logits, logits))
    local s = assert(m:stats())
    assert.is_true(s.bytes_streamed > 0 and s.host_compute_bytes > 0)
    m:free()
  end)

  -- What "packed off the device" runs (session 28): the host-computed matrices packed too, multiplied by the
  -- host as it decodes them a tile at a time (lrun_cpu_matmul_packed): the same host bits as the plain ones, so
  -- the logits equal the previous case's plain-host run's exactly.
  it("host-computed matrices packed too: the plain-host run's logits bit for bit", function()
    -- and a 96-token prompt, whose products of host-computed matrices run on the device from the host stream's
    -- staging (docs/streaming.md): packed ones cross packed and are decoded there, the same plain bytes multiplied
    local long = {}
    for i = 1, 96 do long[i] = (i * 37) % 2000 + 1 end
    local runs = {}
    for i, pack_host in ipairs({ false, true }) do
      local m = assert(lrun.load(path, { device = "cuda:0", progress = false, policy = mix_policy(pack_host) }))
      local p, n_packed_host = m:placement(), 0
      for _, t in ipairs(m:tensors()) do
        if p.host_compute[t.name] and t.packed then n_packed_host = n_packed_host + 1 end
      end
      assert.are.equal(pack_host and 18 or 0, n_packed_host)
      runs[i] = { run(m) }
      m:stats(true) -- counted from here
      runs[i][3] = assert(m:logits(long))
      runs[i][4] = assert(m:stats()).host_stream_bytes or 0
      m:free()
    end
    assert.is_true(compare.same(runs[1][1], runs[2][1]), "tokens differ")
    assert.is_true(compare.same(runs[1][2], runs[2][2]), "logits differ (relative "
      .. compare.rel_diff(runs[1][2], runs[2][2]) .. ")")
    assert.is_true(compare.same(runs[1][3], runs[2][3]), "the long prompt's logits differ (relative "
      .. compare.rel_diff(runs[1][3], runs[2][3]) .. ")")
    -- both prompts' host-computed products streamed, the packed ones' at their packed bytes
    assert.is_true(runs[1][4] > 0 and runs[2][4] > 0 and runs[2][4] < 0.8 * runs[1][4],
      string.format("host stream bytes %d plain, %d packed", runs[1][4], runs[2][4]))
  end)

  it("packed = false: plain, streamed or host-computed by smart", function()
    bandwidth.bandwidths = slow_link
    local m = assert(lrun.load(path, { device = "cuda:0", progress = false, gpu_budget = budget, packed = false }))
    local p = m:placement()
    assert.are.equal("smart", p.policy)
    assert.is_nil(m.residency.pack_choice)
    for _, t in ipairs(m:tensors()) do assert.is_false(t.packed, t.name) end
    local ids = run(m)
    assert.is_true(compare.same(ref_ids, ids), "tokens differ")
    m:free()
  end)
end)
