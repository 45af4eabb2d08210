-- expert_plan_spec: the planner's sizing of the expert cache (lrun.expert_plan,
-- docs/moe.md "Sizing the cache") with given rooms, slot sizes and routing
-- counts: the slots the room holds after the margin, a user's fixed count,
-- no room, no budget, and the hit rate predicted from observed counts (LFU's
-- steady state: the most selected pairs' share) or from uniform routing.
-- The slot layout is checked on a generated qwen3moe model's tensors.
package.path = "./?.lua;" .. package.path
local plan = require("lrun.expert_plan")
local arch_models = require("tests.arch_models")
local lrun = require("lrun")

local MiB = 2 ^ 20

describe("lrun.expert_plan", function()
  it("gives the cache the room left after the placement, less the margin", function()
    -- 2.25 MiB slots, 240 MiB left: 225 MiB usable after 1/16, 100 slots
    local c = plan.choose({ room = 240 * MiB, slot_bytes = 2.25 * MiB, layers = { 0, 1, 2, 3 }, n_expert = 128 })
    assert.are.equal(100, c.slots)
    assert.are.equal(100 * 2.25 * MiB, c.bytes)
    assert.are.equal("uniform", c.source)
    assert.is_true(math.abs(c.hit_rate - 100 / 512) < 1e-12)
    assert.truthy(c.text:find("expert cache: 100 slots", 1, true), c.text)
    assert.truthy(c.text:find("expected hit rate 0.20 from uniform routing", 1, true), c.text)
  end)

  it("holds at most one slot per host expert", function()
    local c = plan.choose({ room = 2 ^ 40, slot_bytes = MiB, layers = { 0, 1 }, n_expert = 8 })
    assert.are.equal(16, c.slots)
    assert.are.equal(1, c.hit_rate)
  end)

  it("keeps the user's slot count and explains it", function()
    local c = plan.choose({ room = 240 * MiB, slot_bytes = MiB, layers = { 0 }, n_expert = 64, fixed = 8 })
    assert.are.equal(8, c.slots)
    assert.truthy(c.text:find("as asked", 1, true), c.text)
  end)

  it("says so when no slot fits, and leaves the engine's own choice without a budget", function()
    local c = plan.choose({ room = MiB, slot_bytes = 2 * MiB, layers = { 0, 1 }, n_expert = 8 })
    assert.are.equal(0, c.slots)
    assert.truthy(c.text:find("no room for one slot", 1, true), c.text)
    c = plan.choose({ room = nil, slot_bytes = 2 * MiB, layers = { 0, 1 }, n_expert = 8 })
    assert.are.equal(-1, c.slots)
    assert.truthy(c.text:find("no device budget", 1, true), c.text)
  end)

  it("predicts the hit rate from observed counts: the top slots' share of the cached blocks' selections", function()
    -- block 0 skewed (60, 20, 10, 10), block 1 uniform (10 each); block 2 not cached
    local counts = { [0] = { 60, 20, 10, 10 }, [1] = { 10, 10, 10, 10 }, [2] = { 1000, 0, 0, 0 } }
    local rate, source = plan.hit_rate(counts, { 0, 1 }, 4, 3)
    assert.are.equal("observed", source)
    assert.is_true(math.abs(rate - 90 / 140) < 1e-12, rate) -- 60 + 20 + 10 of 140
    local c = plan.choose({ room = 10 * MiB, slot_bytes = 4 * MiB, layers = { 0, 1 }, n_expert = 4, counts = counts })
    assert.are.equal(2, c.slots) -- 9.375 MiB usable
    assert.is_true(math.abs(c.hit_rate - 80 / 140) < 1e-12)
    assert.truthy(c.text:find("expected hit rate 0.57 from observed frequencies", 1, true), c.text)
    -- counts all zero (no warm-up yet): uniform
    local _, src = plan.hit_rate({ [0] = { 0, 0, 0, 0 } }, { 0 }, 4, 2)
    assert.are.equal("uniform", src)
  end)

  it("chooses prefill streaming from given bandwidths: from the threshold tokens on, decode stays on the host", function()
    -- a 30B-A3B expert in Q4_K: 3 · 2048 · 768 params, ~0.56 bytes each; PCIe 25 GB/s, host 40 GB/s, 500 GFLOP/s
    local params = 3 * 2048 * 768
    local c = { bytes = params * 0.5625, flops_per_token = 2 * params, pcie = 25e9, host_read = 40e9,
      host_flops = 500e9 }
    local t = plan.prefill_stream_threshold(c)
    -- copy 106 us; host products 18.9 us per token: streaming pays from 6 tokens
    assert.are.equal(6, t)
    assert.is_false((plan.prefill_streams(c, { 1 })), "decode (one token) streams")
    assert.is_false((plan.prefill_streams(c, { 5, 5 })))
    assert.is_true((plan.prefill_streams(c, { 6, 6 })))
    -- a skewed chunk: one busy expert pays for several idle ones' copies
    local yes, dev, host = plan.prefill_streams(c, { 64, 1, 1, 1 })
    assert.is_true(yes, string.format("%.1f us streaming vs %.1f us on the host", dev * 1e6, host * 1e6))
    -- a link faster than the host reads memory: always; a host of unbounded flops: never
    assert.are.equal(1, plan.prefill_stream_threshold({ bytes = 1e6, flops_per_token = 1e6, pcie = 50e9,
      host_read = 40e9, host_flops = 1e12 }))
    assert.are.equal(math.huge, plan.prefill_stream_threshold({ bytes = 1e6, flops_per_token = 1e6, pcie = 25e9,
      host_read = 40e9, host_flops = math.huge }))
  end)

  it("gives the engine a prefill streaming threshold from a plan's host experts and bandwidths", function()
    -- a 30B-A3B Q4_K block: 128 experts of 2048x768 per projection, 884736 bytes per slice
    local tensors, hc = {}, {}
    for _, r in ipairs({ "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps" }) do
      local name = "blk.0." .. r .. ".weight"
      local shape = r == "ffn_down_exps" and { 768, 2048, 128 } or { 2048, 768, 128 }
      tensors[#tensors + 1] = { name = name, role = r, layer = 0, dtype = "q4_K", plain_bytes = 128 * 884736,
        shape = shape }
      hc[name] = true
    end
    local bw = { h2d_pinned = 25e9, host_matmul = { q4_K = 40e9 } }
    -- copy 106 us; the host at 8 x its one-token rate: 8.3 us per token, so from 13 tokens
    assert.are.equal(13, plan.prefill_stream_tokens(tensors, hc, 128, bw))
    assert.are.equal(plan.prefill_stream_threshold({ bytes = 3 * 884736, flops_per_token = 2 * 3 * 2048 * 768,
      pcie = 25e9, host_read = 40e9, host_flops = 40e9 / (3 * 884736) * 2 * 3 * 2048 * 768 * plan.host_batch_gain }),
      plan.prefill_stream_tokens(tensors, hc, 128, bw))
    -- per block: block 1 in Q8_0, whose bytes the host multiplies faster (60 GB/s), streams from more tokens
    local t2, hc2 = {}, {}
    for i, t in ipairs(tensors) do
      t2[i] = t
      hc2[t.name] = true
      local name = t.name:gsub("^blk%.0%.", "blk.1.")
      t2[#tensors + i] = { name = name, role = t.role, layer = 1, dtype = "q8_0", plain_bytes = 128 * 1671168,
        shape = t.shape }
      hc2[name] = true
    end
    bw.host_matmul.q8_0 = 60e9
    local best, per = plan.prefill_stream_tokens(t2, hc2, 128, bw)
    assert.are.equal(13, per[0])
    assert.are.equal(plan.prefill_stream_threshold({ bytes = 3 * 1671168, flops_per_token = 2 * 3 * 2048 * 768,
      pcie = 25e9, host_read = 60e9, host_flops = 60e9 / (3 * 1671168) * 2 * 3 * 2048 * 768 * plan.host_batch_gain }),
      per[1])
    assert.is_true(per[1] > per[0], "the Q8_0 block's threshold is not above the Q4_K one's")
    assert.are.equal(per[0], best, "the smallest block's threshold")
    assert.is_nil(plan.prefill_stream_tokens(tensors, {}, 128, bw), "no host experts")
    assert.is_nil(plan.prefill_stream_tokens(tensors, hc, 128, { h2d_pinned = 25e9 }), "no host matmul rate")
    -- a link faster than the host reads its weights for one token: every touched expert
    assert.are.equal(1, plan.prefill_stream_tokens(tensors, hc, 128, { h2d_pinned = 50e9, host_matmul = { q4_K = 40e9 } }))
    assert.is_nil(plan.prefill_stream_tokens(tensors, hc, 128, nil), "no bandwidths")
  end)

  -- a prefill chunk over a cached block runs the experts already in slots from there (docs/moe.md "Prefill over a
  -- cached block"); the planner's share of the touched experts they are, from f (slots / cached experts) and h
  -- (the hit rate it expects for decode)
  it("prefill_held_share: h for one token, f for a long chunk, f at any length under uniform routing", function()
    local function near(want, got, what)
      assert.is_true(math.abs(want - got) < 1e-9, string.format("%s: want %.12g, got %.12g", what, want, got))
    end
    -- 30B-A3B's block: 128 experts, k = 8; the bench's 2417 slots over 48 blocks: f = 0.393
    local f = 2417 / (48 * 128)
    near(f, plan.prefill_held_share(f, f, 8, 128, 512), "uniform, 512 tokens")
    near(f, plan.prefill_held_share(f, f, 8, 128, 3), "uniform, 3 tokens")
    near(0.61, plan.prefill_held_share(0.61, f, 8, 128, 1), "one token: each touched expert is a selection")
    -- skewed (h = 0.61, as --router-skew 8 measured): by hand, the two classes' touched experts
    local held, rest = f * 128, (1 - f) * 128
    local th = held * (1 - (1 - 0.61 * 8 / held) ^ 64)
    local tu = rest * (1 - (1 - 0.39 * 8 / rest) ^ 64)
    local s64 = plan.prefill_held_share(0.61, f, 8, 128, 64)
    near(th / (th + tu), s64, "64 tokens")
    assert.is_true(s64 > f and s64 < 0.61, "between the slot share and the hit rate")
    assert.is_true(plan.prefill_held_share(0.61, f, 8, 128, 512) < s64, "a longer chunk touches the rare ones too")
    near(f, plan.prefill_held_share(0.61, f, 8, 128, 100000), "a very long chunk: every expert, the slot share")
    assert.are.equal(0, plan.prefill_held_share(0.5, 0, 8, 128, 512), "no slots")
    assert.are.equal(1, plan.prefill_held_share(1, 1, 8, 128, 512), "every expert in a slot")
  end)

  describe("on a generated qwen3moe model", function()
    local path, m
    setup(function()
      path = os.tmpname()
      for _, e in ipairs(arch_models.models) do
        if e.name == "qwen3moe_q8_0" then arch_models.generate(e, path) end
      end
      m = assert(lrun.load(path, { threads = 2, progress = false, device = "cpu" }))
    end)
    teardown(function()
      if m then m:free() end
      os.remove(path)
    end)

    it("lays a slot out as the CUDA cache does and covers the blocks with all three parts host-computed", function()
      local tensors = m:tensors()
      local info = m:info()
      local hc, expect = {}, { 0, 0, 0 }
      local parts = { ffn_gate_exps = 1, ffn_up_exps = 2, ffn_down_exps = 3 }
      for _, t in ipairs(tensors) do
        local p = parts[t.role]
        if p and t.layer ~= 1 then
          hc[t.name] = true
          expect[p] = math.max(expect[p], math.ceil(t.plain_bytes / info.n_expert / 256) * 256)
        end
        if p == 3 and t.layer == 1 then hc[t.name] = true end -- block 1: only down, not cached
      end
      local slot, layers = plan.slot_layout(tensors, hc, info.n_expert)
      assert.are.equal(expect[1] + expect[2] + expect[3], slot)
      assert.are.equal(info.n_layer - 1, #layers)
      for _, l in ipairs(layers) do assert.are_not.equal(1, l) end
      -- packed experts are not cached
      local pk = {}
      for name in pairs(hc) do pk[name] = true end
      local s0, l0 = plan.slot_layout(tensors, hc, info.n_expert, pk)
      assert.are.equal(0, s0)
      assert.are.equal(0, #l0)
    end)

    it("sizes the cache for a plan only on CUDA with moe_host = cache (or hybrid, marked so)", function()
      local r = assert(require("lrun.residency").plan(m, { policy = "experts_on_host" }))
      local q = { tensors = m:tensors(), host_compute = r.host_compute, packed = r.packed, room = 64 * MiB }
      assert.is_nil(plan.for_plan(m, q, {}), "planned a cache without moe_host = cache")
      m.expert_cache_auto = true
      assert.is_nil(plan.for_plan(m, { tensors = q.tensors, host_compute = q.host_compute, cpu = true }, {}))
      local counts = {}
      local info = m:info()
      for l = 0, info.n_layer - 1 do
        counts[l] = {}
        for x = 1, info.n_expert do counts[l][x] = x == 1 and 100 or 1 end
      end
      local slot = plan.slot_layout(q.tensors, q.host_compute, info.n_expert, q.packed)
      q.room = slot * info.n_layer -- 1/16 less: one slot fewer than a slot per block
      local saved = m.moe_prefill_stream
      m.moe_prefill_stream = require("lrun.ffi").C.LRUN_MOE_PREFILL_STREAM_OFF -- no staging kept out of the room
      local c = assert(plan.for_plan(m, q, { expert_counts = counts }))
      m.moe_prefill_stream = saved
      assert.are.equal(info.n_layer - 1, c.slots)
      assert.are.equal(slot, c.slot_bytes)
      assert.are.equal("observed", c.source)
      assert.is_true(c.hit_rate > c.slots / (info.n_layer * info.n_expert), "skewed counts predict no better than uniform")
      assert.is_nil(c.mode)
      -- moe_host = "hybrid": the same slots, marked for the engine and the explanation
      m.moe_host = "hybrid"
      m.moe_prefill_stream = require("lrun.ffi").C.LRUN_MOE_PREFILL_STREAM_OFF
      local h = assert(plan.for_plan(m, q, { expert_counts = counts }))
      m.moe_prefill_stream, m.moe_host = saved, nil
      assert.are.equal(c.slots, h.slots)
      assert.are.equal("hybrid", h.mode)
      assert.truthy(h.text:find("^expert cache %(hybrid: misses computed on the host%): "), h.text)
      m.expert_cache_auto = nil
    end)

    it("keeps prefill streaming's staging out of the cache's room when the engine streams", function()
      local C = require("lrun.ffi").C
      local r = assert(require("lrun.residency").plan(m, { policy = "experts_on_host" }))
      local info = m:info()
      local q = { tensors = m:tensors(), host_compute = r.host_compute, packed = r.packed }
      local slot = plan.slot_layout(q.tensors, q.host_compute, info.n_expert, q.packed)
      local staging = plan.stream_staging_bytes(slot, info.n_expert)
      assert.are.equal(2 * math.min(plan.stream_group, info.n_expert) * slot, staging)
      m.expert_cache_auto = true
      q.room = info.n_layer * info.n_expert * slot -- under a slot per host expert: not capped
      local saved = m.moe_prefill_stream
      m.moe_prefill_stream = C.LRUN_MOE_PREFILL_STREAM_DEFAULT -- the engine's default: auto, unless the environment's off
      assert.are.equal(os.getenv("LRUN_CUDA_MOE_PREFILL_STREAM") ~= "off", plan.streams_prefill(m))
      m.moe_prefill_stream = C.LRUN_MOE_PREFILL_STREAM_OFF
      assert.is_false(plan.streams_prefill(m))
      local off = assert(plan.for_plan(m, q, {}))
      assert.is_nil(off.staging_bytes)
      m.moe_prefill_stream = C.LRUN_MOE_PREFILL_STREAM_ON
      assert.is_true(plan.streams_prefill(m))
      local on = assert(plan.for_plan(m, q, {}))
      assert.are.equal(staging, on.staging_bytes)
      assert.is_true(on.slots < off.slots, "the staging took no slot's room")
      assert.is_truthy(on.text:find("prefill streaming", 1, true), on.text)
      m.moe_prefill_stream = saved
      m.expert_cache_auto = nil
    end)
  end)
end)
