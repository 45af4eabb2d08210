-- expert_choice_spec: smart's choice for a mixture's host experts on CUDA
-- (lrun.expert_choice, docs/moe.md "Choosing compute, cache or hybrid") with given
-- bandwidths, rooms and routing counts: under uniform routing the copying
-- cache loses to host compute (and never trades resident blocks for slots)
-- while the hybrid cache beats it by about the slot fraction; host compute
-- stays when no slot fits or the hybrid saves under min_gain; the copying
-- cache wins when PCIe × the miss rate beats the host's expert GEMV and the
-- hybrid does not; Zipf-skewed counts choose the hybrid over both (the more
-- so over a slow link), and moe_host = cache trades resident blocks for
-- slots while that pays; the budget split, the
-- explanation's numbers, the decode prediction with the cache
-- (lrun.predict), smart weighing experts by k/E, prefill streaming's
-- threshold from a measured batched host rate, and the bandwidth cache's
-- thread key.
package.path = "./?.lua;" .. package.path
local choice = require("lrun.expert_choice")
local expert_plan = require("lrun.expert_plan")
local predict = require("lrun.predict")

local MiB = 2 ^ 20
local E, K = 8, 2
local PART = MiB -- one expert's slice of each projection, bytes (256-aligned)
local BW = { device = "cuda", device_read = 2000e9, h2d_pinned = 25e9, h2d_pageable = 20e9, host_read = 50e9,
  host_matmul = { q4_K = 40e9 } }

-- 4 blocks of E experts: blocks 0 and 1 host-computed in host memory, 2 and 3 resident.
local function model_tensors()
  local tensors, plan, hc = {}, {}, {}
  for l = 0, 3 do
    for _, r in ipairs({ "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps" }) do
      local name = string.format("blk.%d.%s.weight", l, r)
      tensors[#tensors + 1] = { name = name, role = r, layer = l, dtype = "q4_K", bytes = E * PART,
        plain_bytes = E * PART, shape = { 2048, 512, E } }
      if l < 2 then plan[name], hc[name] = "host", true end
    end
  end
  return tensors, plan, hc
end

local function zipf()
  local c = {}
  for l = 0, 3 do
    c[l] = {}
    for x = 1, E do c[l][x] = math.floor(1200 / x) end
  end
  return c
end

-- Seconds per token of a cached block with hit rate h, and of a resident or host-computed one.
local function cached_s(h) return 3 * K * PART / BW.device_read + (1 - h) * 3 * K * PART / BW.h2d_pageable end
local resident_s = 3 * K * PART / BW.device_read
local host_s = 3 * K * PART / BW.host_matmul.q4_K

local function near(a, b) return math.abs(a - b) <= 1e-9 * math.max(math.abs(a), math.abs(b)) end

describe("lrun.expert_choice", function()
  -- the choice's logic with the hybrid cache weighed (the default since session 16), whatever the default is
  local default
  setup(function() default, choice.auto_hybrid = choice.auto_hybrid, true end)
  teardown(function() choice.auto_hybrid = default end)

  local tensors, plan, hc = model_tensors()
  local blocks = choice.blocks(tensors, plan, hc, E, BW)
  local room = 8 * 3 * PART -- 8 slots' worth left after the placement

  it("sees resident and host blocks", function()
    assert.are.equal(4, #blocks)
    assert.are.equal("host", blocks[1].state)
    assert.are.equal("device", blocks[3].state)
    assert.are.equal(PART, blocks[1].parts[1].bytes_e)
    assert.are.equal(BW.h2d_pageable, blocks[1].parts[1].link)
  end)

  it("under uniform routing: the copying cache loses to host compute (a miss over PCIe costs more than the "
    .. "host's product), the hybrid beats both by about the slot fraction", function()
    local r = assert(choice.choose({ blocks = blocks, k = K, n_expert = E, bw = BW, room = room, mode = "auto" }))
    local compute = r.options[1]
    assert.are.equal("compute", compute.how)
    assert.is_true(near(2 * host_s + 2 * resident_s, compute.seconds))
    -- the cache without trades: 7 slots (22.5 MiB after the 1/16 margin) over 16 experts, uniform 7/16
    local c0, h0 = r.options[2], r.options[3]
    assert.are.equal("cache", c0.how)
    assert.are.equal(7, c0.slots)
    assert.are.equal("uniform", c0.source)
    assert.is_true(near(2 * cached_s(7 / 16) + 2 * resident_s, c0.seconds))
    assert.is_true(c0.seconds > compute.seconds)
    -- the hybrid cache in the same slots: the hits on the device beside the misses on the host
    assert.are.equal("hybrid", h0.how)
    assert.are.equal(7, h0.slots)
    assert.is_true(near(2 * math.max(7 / 16 * resident_s, 9 / 16 * host_s) + 2 * resident_s, h0.seconds))
    -- a copying trade under uniform routing does not pay (the same misses, less the margin, give or take a
    -- slot's rounding: 15 slots over 24 experts misses as often as 7.5 over 16)
    for i = 4, #r.options do
      local o = r.options[i]
      if o.how == "cache" then assert.is_true(o.seconds > c0.seconds * (1 - choice.min_gain), "trade " .. i) end
    end
    -- hybrid, and one trade: the same misses, but the traded block's device reads now hide under the host's
    -- (1.6% < the 2 blocks' misses; over min_gain)
    assert.are.equal("hybrid", r.how)
    assert.are.same({ 2 }, r.trade)
    assert.are.equal(15, r.slots)
    assert.is_true(near(3 * math.max(15 / 24 * resident_s, 9 / 24 * host_s) + resident_s, r.seconds))
    assert.is_true(r.seconds < h0.seconds * (1 - choice.min_gain))
    assert.truthy(r.text:find("smart caches (hybrid: misses computed on the host) the host experts of 3 blocks",
      1, true), r.text)
    assert.truthy(r.text:find(string.format("host compute %.3f ms", compute.seconds * 1e3), 1, true), r.text)
    assert.truthy(r.text:find(string.format("hybrid %.3f ms (7 slots, hit rate 0.44)", h0.seconds * 1e3), 1, true),
      r.text)
  end)

  it("keeps host compute when no slot fits the room unless blocks are traded, which does not pay", function()
    local r = assert(choice.choose({ blocks = blocks, k = K, n_expert = E, bw = BW, room = 2 * MiB, mode = "auto" }))
    assert.are.equal("compute", r.how)
    for _, o in ipairs(r.options) do -- the only slots are a traded block's, whose misses are the same
      assert.is_true(o.how == "compute" or #o.trade > 0, o.how)
    end
    assert.is_true(near(2 * host_s + 2 * resident_s, r.seconds))
    assert.truthy(r.text:find("smart computes the host experts of 2 blocks on the host", 1, true), r.text)
    assert.truthy(r.text:find(string.format("host compute %.3f ms", r.seconds * 1e3), 1, true), r.text)
  end)

  it("keeps host compute over a hybrid cache that would save under min_gain", function()
    -- 1 slot of 2 host blocks × 64 experts, uniform: the slot catches 1/128 of the selections (< 1%)
    local e64 = 64
    local t64, p64, hc64 = {}, {}, {}
    for l = 0, 1 do
      for _, r in ipairs({ "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps" }) do
        local name = string.format("blk.%d.%s.weight", l, r)
        t64[#t64 + 1] = { name = name, role = r, layer = l, dtype = "q4_K", bytes = e64 * PART,
          plain_bytes = e64 * PART, shape = { 2048, 512, e64 } }
        p64[name], hc64[name] = "host", true
      end
    end
    local b64 = choice.blocks(t64, p64, hc64, e64, BW)
    local r = assert(choice.choose({ blocks = b64, k = K, n_expert = e64, bw = BW, room = 3.5 * MiB, mode = "auto" }))
    local hyb
    for _, o in ipairs(r.options) do if o.how == "hybrid" then hyb = o end end
    assert.are.equal(1, assert(hyb).slots)
    assert.is_true(hyb.seconds < r.options[1].seconds, "the hybrid is a little faster")
    assert.are.equal("compute", r.how, "but not by min_gain")
  end)

  it("caches under uniform routing when the host is slower than the link, without trading", function()
    local slow = {}
    for k, v in pairs(BW) do slow[k] = v end
    slow.host_matmul = { q4_K = 5e9 }
    local b = choice.blocks(tensors, plan, hc, E, slow)
    local r = assert(choice.choose({ blocks = b, k = K, n_expert = E, bw = slow, room = room, mode = "auto" }))
    assert.are.equal("cache", r.how)
    assert.are.same({}, r.trade)
    assert.are.equal(7, r.slots)
  end)

  it("with moe_host = cache and Zipf-skewed counts, trades resident blocks for slots while it pays", function()
    local counts = zipf()
    local r = assert(choice.choose({ blocks = blocks, k = K, n_expert = E, bw = BW, room = room, counts = counts,
      mode = "cache" }))
    assert.are.equal("cache", r.how)
    assert.are.equal("observed", r.source)
    -- one block traded: (24 + 24) MiB less 1/16 = 15 slots over 24 experts; its top 15 hold 3 × 2740 of 3 × 3261
    assert.are.same({ 2 }, r.trade)
    assert.are.equal(15, r.slots)
    local per = 0
    for x = 1, E do per = per + math.floor(1200 / x) end
    local h = 3 * (1200 + 600 + 400 + 300 + 240) / (3 * per)
    assert.is_true(near(h, r.hit_rate), r.hit_rate)
    assert.is_true(near(3 * cached_s(h) + resident_s, r.seconds))
    -- better than the cache alone, and than trading both blocks; no other kind of option
    for _, o in ipairs(r.options) do
      assert.are.equal("cache", o.how)
      if o ~= r.best then assert.is_true(o.seconds > r.seconds, o.how .. " " .. #o.trade) end
    end
    assert.truthy(r.text:find("smart caches the host experts of 3 blocks: 15 slots", 1, true), r.text)
    assert.truthy(r.text:find("1 resident block traded for slots: 2", 1, true), r.text)
    assert.truthy(r.text:find("from observed frequencies", 1, true), r.text)
    assert.truthy(r.text:find(string.format("cache %.3f ms (15 slots, hit rate %.2f, 1 resident block traded)",
      r.seconds * 1e3, h), 1, true), r.text)
  end)

  it("from Zipf-skewed counts chooses the hybrid cache over host compute and the copying cache, the more so "
    .. "over a slow link", function()
    local per = 0
    for x = 1, E do per = per + math.floor(1200 / x) end
    local h = (1200 + 600 + 400 + 300 + 240) / per
    local slow = {}
    for key, v in pairs(BW) do slow[key] = v end
    slow.h2d_pageable = 5e9
    for _, bw in ipairs({ BW, slow }) do
      local b = choice.blocks(tensors, plan, hc, E, bw)
      local r = assert(choice.choose({ blocks = b, k = K, n_expert = E, bw = bw, room = room, counts = zipf(),
        mode = "auto" }))
      assert.are.equal("hybrid", r.how)
      assert.are.same({ 2 }, r.trade)
      assert.are.equal(15, r.slots)
      assert.is_true(near(h, r.hit_rate), r.hit_rate)
      assert.is_true(near(3 * math.max(h * resident_s, (1 - h) * host_s) + resident_s, r.seconds))
      local best_cache = math.huge
      for _, o in ipairs(r.options) do
        if o.how == "cache" then best_cache = math.min(best_cache, o.seconds) end
        if o ~= r.best then assert.is_true(o.seconds > r.seconds, o.how .. " " .. #o.trade) end
      end
      assert.is_true(r.seconds < best_cache * (1 - choice.min_gain))
      assert.is_true(r.seconds < r.options[1].seconds * (1 - choice.min_gain))
      if bw == slow then assert.is_true(best_cache > r.options[1].seconds, "the slow link: cache loses to compute") end
      assert.truthy(r.text:find(string.format("hybrid %.3f ms (15 slots, hit rate %.2f, 1 resident block traded)",
        r.seconds * 1e3, h), 1, true), r.text)
    end
  end)

  it("keeps prefill streaming's staging out of the slots' room", function()
    local r = assert(choice.choose({ blocks = blocks, k = K, n_expert = E, bw = BW, room = room + 3 * 3 * PART,
      staging = 3 * 3 * PART, mode = "cache" }))
    assert.are.equal("cache", r.how) -- the user asked for the cache: no compute option
    assert.are.equal(7, r.slots)
  end)

  it("chooses nothing without host experts or without a budget", function()
    local none = choice.blocks(tensors, {}, {}, E, BW)
    assert.is_nil(choice.choose({ blocks = none, k = K, n_expert = E, bw = BW, room = room, mode = "auto" }))
    assert.is_nil(choice.choose({ blocks = blocks, k = K, n_expert = E, bw = BW, room = nil, mode = "auto" }))
  end)

  it("moves a trade into the plan and leaves it to smart on cuda only (for_plan)", function()
    local C = require("lrun.ffi").C
    local t2, p2, hc2 = model_tensors()
    local model = { moe_host_auto = true, moe_prefill_stream = C.LRUN_MOE_PREFILL_STREAM_OFF, owned = {},
      info = function() return { n_expert = E, n_expert_used = K } end }
    local q = { policy = "smart", cpu = false, bw = BW, room = room, tensors = t2, plan = p2, host_compute = hc2,
      tier = "host" }
    local r = assert(choice.for_plan(model, q, { expert_counts = zipf() }))
    assert.are.same({ 2 }, r.trade)
    assert.are.equal("host", p2["blk.2.ffn_up_exps.weight"])
    assert.is_true(hc2["blk.2.ffn_down_exps.weight"])
    assert.is_nil(p2["blk.3.ffn_up_exps.weight"])
    -- the cache is then sized for the chosen option's blocks
    local ec = assert(expert_plan.for_plan(model, { tensors = t2, host_compute = hc2, room = room + 24 * MiB,
      choice = r }, {}))
    assert.are.equal(r.slots, ec.slots)
    assert.are.equal("hybrid", r.how)
    assert.are.equal("hybrid", ec.mode) -- lrun.residency hands the engine LRUN_EXPERT_CACHE_MODE_HYBRID
    assert.truthy(ec.text:find("expert cache (hybrid: misses computed on the host):", 1, true), ec.text)
    assert.are.same({ 0, 1, 2 }, ec.layers)
    assert.is_nil(expert_plan.for_plan(model, { tensors = t2, host_compute = hc2, room = room,
      choice = { how = "compute" } }, {}))
    assert.is_nil(expert_plan.for_plan(model, { tensors = t2, host_compute = hc2, room = room }, {}),
      "a cache without smart's choice")
    for _, other in ipairs({ { policy = "experts_on_host" }, { cpu = true }, { room = false } }) do
      local q2 = {}
      for k, v in pairs(q) do q2[k] = v end
      for k, v in pairs(other) do q2[k] = v or nil end
      assert.is_nil(choice.for_plan(model, q2, {}))
    end
    model.moe_host_auto = nil -- moe_host = "compute" (or slots given): no choice
    assert.is_nil(choice.for_plan(model, q, {}))
  end)
end)

describe("lrun.expert_choice by default (the hybrid weighed since its prefill runs from slots)", function()
  it("weighs the hybrid cache; auto_hybrid = false weighs only host compute and the copying cache, and "
    .. "moe_host = hybrid still gets the hybrid cache", function()
    assert.is_true(choice.auto_hybrid)
    local tensors, plan, hc = model_tensors()
    local p = { blocks = choice.blocks(tensors, plan, hc, E, BW), k = K, n_expert = E, bw = BW,
      room = 8 * 3 * PART, counts = zipf(), mode = "auto" }
    assert.are.equal("hybrid", assert(choice.choose(p)).how)
    choice.auto_hybrid = false
    local ok, r = pcall(choice.choose, p)
    choice.auto_hybrid = true
    r = assert(ok and r, tostring(r))
    assert.are.equal("cache", r.how) -- the same counts take the hybrid cache when it is weighed
    for _, o in ipairs(r.options) do assert.are_not.equal("hybrid", o.how) end
    choice.auto_hybrid = false
    p.mode = "hybrid"
    ok, r = pcall(choice.choose, p)
    choice.auto_hybrid = true
    assert.equal("hybrid", assert(ok and r, tostring(r)).how)
  end)
end)

describe("lrun.expert_choice weighing prefill (M.request)", function()
  local tensors, plan, hc = model_tensors()
  local blocks = choice.blocks(tensors, plan, hc, E, BW)
  local p = { blocks = blocks, k = K, n_expert = E, bw = BW, room = 8 * 3 * PART, mode = "auto", prefill_tokens = 512 }

  it("takes the option that finishes the request first, by min_gain of decode; equal prefill leaves decode's "
    .. "choice", function()
    p.prefill = function() return 0.1 end
    local r = assert(choice.choose(p))
    assert.are.equal("hybrid", r.how) -- as without prefill (the uniform case above): one trade
    assert.are.same({ 2 }, r.trade)
    assert.are.equal(0.1, r.prefill_s)
    for _, o in ipairs(r.options) do
      assert.is_true(near(choice.request.generate * o.seconds + choice.request.prompt / 512 * 0.1, o.request_s))
    end
    assert.truthy(r.text:find("weighed on a 512-token prompt and 128 generated tokens (prefill chunks of 512)", 1,
      true), r.text)
    assert.truthy(r.text:find("prefill chunk 100.000 ms", 1, true), r.text)
  end)

  it("does not trade much prefill for little decode", function()
    -- every trade moves a resident block's experts to the host, where prefill streams them: 30 ms a chunk
    -- each, against the hybrid's few µs a token of decode
    p.prefill = function(o) return 0.1 + 0.03 * #o.trade end
    local r = assert(choice.choose(p))
    assert.are.equal("hybrid", r.how)
    assert.are.same({}, r.trade)
    local seen = false
    for _, o in ipairs(r.options) do
      if o.how == "hybrid" and #o.trade == 1 then
        seen = true
        assert.is_true(o.seconds < r.seconds, "the trade decodes faster")
        assert.is_true(o.request_s > r.best.request_s, "but the request takes longer")
      end
    end
    assert.is_true(seen)
    -- a prefill that loses more than every cached option gains keeps host compute
    p.prefill = function(o) return o.how == "compute" and 0.1 or 0.2 end
    assert.are.equal("compute", assert(choice.choose(p)).how)
  end)

  it("weighs decode alone when an option has no prefill figure", function()
    p.prefill = function(o) return o.how ~= "compute" and 0.2 or nil end
    local r = assert(choice.choose(p))
    assert.are.equal("hybrid", r.how)
    assert.is_nil(r.prefill_s)
    assert.is_nil(r.options[1].request_s)
    assert.is_nil(r.text:find("weighed on", 1, true), r.text)
  end)
end)

describe("the 30B-A3B benchmark's choice (session 15: Qwen3-30B-A3B Q4_K, 8 GiB, H100)", function()
  local a3b = require("tests.a3b_shape")
  local smart = dofile("policies/smart.lua")
  local tensors, bw = a3b.tensors(), a3b.bandwidths()
  local total = 0
  for _, t in ipairs(tensors) do total = total + t.bytes end
  -- auto-fit's smart under the budget, then the choice with the room it left (as lrun.residency.plan)
  local plan, off, info = smart.plan(tensors, { max_bytes = total - a3b.weight_room, bandwidth = bw,
    n_expert_used = a3b.k })
  local hc = info.host_compute
  local room = a3b.weight_room - (total - off)
  local blocks = choice.blocks(tensors, plan, hc, a3b.n_expert, bw)
  local staging = expert_plan.stream_staging_bytes(3 * a3b.expert_slice, a3b.n_expert)
  local pq = { tokens = 512, n_expert_used = a3b.k, q_dim = 4096, n_layer = a3b.n_layer }
  local q = { tensors = tensors, plan = plan, host_compute = hc, tier = "host" }
  local function choose(counts, weigh)
    return assert(choice.choose({ blocks = blocks, k = a3b.k, n_expert = a3b.n_expert, bw = bw, room = room,
      staging = staging, counts = counts, mode = "auto", host_pass = true,
      prefill = weigh and choice.prefill_fn(q, blocks, bw, pq) or nil, prefill_tokens = 512 }))
  end
  local function options_of(r, how)
    local list = {}
    for _, o in ipairs(r.options) do if o.how == how then list[#list + 1] = o end end
    return list
  end

  it("smart fills the budget with 21 resident expert blocks: no room is left for a slot without a trade",
    function()
      local n = { host = 0, device = 0 }
      for _, b in ipairs(blocks) do n[b.state] = (n[b.state] or 0) + 1 end
      assert.are.equal(27, n.host)
      assert.are.equal(21, n.device)
      assert.is_true(room < 3 * a3b.expert_slice, "room " .. room)
      -- the fixture's budget is session 15's: experts_on_host's hybrid cache gets its 2417 slots
      local eoh_room = a3b.weight_room
      for _, t in ipairs(tensors) do
        if not t.role:find("_exps") then eoh_room = eoh_room - t.bytes end
      end
      local c = expert_plan.choose({ room = eoh_room - staging, slot_bytes = 3 * a3b.expert_slice,
        layers = { 0 }, n_expert = a3b.n_expert * a3b.n_layer })
      assert.are.equal(2417, c.slots)
    end)

  it("uniform routing (no counts at plan time): host compute; every hybrid trade adds a sixteenth of a block's "
    .. "misses and a host pass, so the hybrid loses more the more it trades", function()
    for _, weigh in ipairs({ false, true }) do
      local r = choose(nil, weigh)
      assert.are.equal("compute", r.how)
      assert.truthy(r.text:find("smart computes the host experts of 27 blocks on the host", 1, true), r.text)
      local hyb = options_of(r, "hybrid")
      assert.are.equal(21, #hyb) -- one per trade count: none fits without a trade
      for j = 1, #hyb do
        assert.are.equal(j, #hyb[j].trade)
        assert.is_true(hyb[j].seconds > r.seconds, "hybrid, " .. j .. " trades")
        if j > 1 then assert.is_true(hyb[j].seconds > hyb[j - 1].seconds, j .. " trades") end
      end
      -- all traded is experts_on_host's hybrid: 11% slower than host compute at these rates
      assert.is_true(hyb[21].seconds > 1.1 * r.seconds)
      if weigh then
        assert.truthy(r.text:find(string.format("host compute %.3f ms, prefill chunk", r.seconds * 1e3), 1, true),
          r.text)
      end
    end
  end)

  it("a trained router's popularity (observed counts, Zipf 0.65 as --router-skew 8): the hybrid with trades, a "
    .. "third less expert time, prefill within 5% of host compute's", function()
    local counts = a3b.zipf_counts(0.65)
    local d = choose(counts, false)
    assert.are.equal("hybrid", d.how)
    assert.are.equal("observed", d.source)
    assert.is_true(#d.trade > 0)
    assert.is_true(d.hit_rate > 0.55, d.hit_rate)
    local r = choose(counts, true)
    assert.are.equal("hybrid", r.how)
    assert.is_true(#r.trade > 0 and #r.trade <= #d.trade, #r.trade .. " trades weighed, " .. #d.trade .. " not")
    local compute = r.options[1]
    assert.are.equal("compute", compute.how)
    assert.is_true(r.seconds < 0.75 * compute.seconds, r.seconds / compute.seconds)
    assert.is_true(r.prefill_s < 1.05 * compute.prefill_s, r.prefill_s / compute.prefill_s)
    assert.truthy(r.text:find("smart caches (hybrid: misses computed on the host) the host experts of", 1, true),
      r.text)
    assert.truthy(r.text:find(string.format("hybrid %.3f ms (%d slots, hit rate %.2f, %d resident blocks traded, "
      .. "prefill chunk %.3f ms)", r.seconds * 1e3, r.slots, r.hit_rate, #r.trade, r.prefill_s * 1e3), 1, true),
      r.text)
  end)

  it("with slot-held experts streamed (LRUN_CUDA_MOE_PREFILL_SLOTS=0) the weighing trades fewer blocks",
    function()
      local counts = a3b.zipf_counts(0.65)
      local with = choose(counts, true)
      local saved = expert_plan.prefill_from_slots
      expert_plan.prefill_from_slots = false
      local ok, r = pcall(choose, counts, true)
      expert_plan.prefill_from_slots = saved
      r = assert(ok and r, tostring(r))
      assert.are.equal("hybrid", r.how)
      assert.is_true(#r.trade < #with.trade, #r.trade .. " against " .. #with.trade)
      assert.is_true(r.prefill_s > with.prefill_s)
    end)
end)

describe("lrun.predict.decode of a mixture", function()
  local tensors, plan, hc = model_tensors()

  it("reads k/E of the experts per token, and the cache's misses over PCIe", function()
    local q = { n_expert_used = K }
    local p = predict.decode(tensors, plan, hc, BW, q)
    assert.is_true(near(2 * host_s, p.host_s))
    assert.is_true(near(2 * resident_s, p.device_s))
    assert.are.equal(0, p.cache_s)
    q.expert_cache = { slots = 4, hit_rate = 0.75, layers = { 0, 1 } }
    local c = predict.decode(tensors, plan, hc, BW, q)
    assert.are.equal(0, c.host_s)
    assert.is_true(near(2 * (1 - 0.75) * 3 * K * PART / BW.h2d_pageable, c.cache_s))
    assert.is_true(near(4 * resident_s, c.device_s))
    assert.is_true(near(1 / (c.device_s + c.cache_s), c.tok_s))
    assert.truthy(predict.text(c, BW):find("expert cache misses", 1, true))
    -- hybrid: per block, the hits' device reads beside the misses' host products, the longer of the two
    q.expert_cache = { slots = 4, hit_rate = 0.75, layers = { 0, 1 }, mode = "hybrid" }
    local hy = predict.decode(tensors, plan, hc, BW, q)
    assert.are.equal(0, hy.host_s)
    assert.are.equal(0, hy.cache_s)
    assert.is_true(near(2 * math.max(0.75 * resident_s, 0.25 * host_s), hy.hybrid_s))
    assert.is_true(near(2 * resident_s, hy.device_s))
    assert.is_true(near(1 / (hy.device_s + hy.hybrid_s), hy.tok_s))
    assert.are.equal("hybrid experts", hy.limit)
    assert.truthy(predict.text(hy, BW):find("hybrid experts", 1, true))
    -- with the host pass's fixed costs: one round trip and a pool call a tensor, per block
    local bw2 = {}
    for key, v in pairs(BW) do bw2[key] = v end
    bw2.round_trip_s, bw2.host_call_s = 20e-6, 5e-6
    local hy2 = predict.decode(tensors, plan, hc, bw2, q)
    assert.is_true(near(2 * math.max(0.75 * resident_s, 0.25 * host_s + 20e-6 + 3 * 5e-6), hy2.hybrid_s))
    -- without k (older callers): every expert read whole
    local old = predict.decode(tensors, plan, hc, BW)
    assert.is_true(near(2 * 3 * E * PART / BW.host_matmul.q4_K, old.host_s))
    -- streamed whole with the block, read k/E on the device
    local s = predict.decode(tensors, { ["blk.0.ffn_up_exps.weight"] = "pinned" }, {}, BW, { n_expert_used = K })
    assert.is_true(near(E * PART / BW.h2d_pinned, s.copy_s))
  end)
end)

describe("host products' fixed costs (cuda: a thread-pool call and a round trip each)", function()
  local tensors, plan, hc = model_tensors()
  local RT, CALL = 20e-6, 5e-6
  local bw = {}
  for key, v in pairs(BW) do bw[key] = v end
  bw.round_trip_s, bw.host_call_s = RT, CALL

  it("predict.decode charges k products and k round trips per host expert tensor; with the pass one grouped "
    .. "product a tensor and one trip a block",
    function()
      local q = { n_expert_used = K }
      local base = predict.decode(tensors, plan, hc, BW, q)
      local p = predict.decode(tensors, plan, hc, bw, q)
      -- two host blocks of three stacked tensors, k products each
      local fixed = 2 * 3 * K * (RT + CALL)
      assert.is_true(near(fixed, p.host_fixed_s))
      assert.is_true(near(base.host_s + fixed, p.host_s))
      local pass = predict.decode(tensors, plan, hc, bw, { n_expert_used = K, host_pass = true })
      assert.is_true(near(2 * (3 * CALL + RT), pass.host_fixed_s))
      -- a host-computed dense weight: one product, one round trip; nothing on the cpu
      local dense = { { name = "blk.0.attn_q.weight", role = "attn_q", layer = 0, dtype = "q4_K", bytes = MiB,
        shape = { 2048, 2048 } } }
      local d = predict.decode(dense, { ["blk.0.attn_q.weight"] = "host" }, { ["blk.0.attn_q.weight"] = true }, bw)
      assert.is_true(near(RT + CALL, d.host_fixed_s))
      assert.are.equal(0, predict.host_overhead_s({ device = "cpu", round_trip_s = RT, host_call_s = CALL }, 3, 3))
    end)

  it("predict.decode charges one round trip a product op's host weights (q, k, v; gate, up), one a weight with "
    .. "LRUN_CUDA_HOST_GROUP=0",
    function()
      local dense, plan1, hc1 = {}, {}, {}
      for _, role in ipairs({ "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down" }) do
        for l = 0, 1 do
          local name = string.format("blk.%d.%s.weight", l, role)
          dense[#dense + 1] = { name = name, role = role, layer = l, dtype = "bf16", bytes = MiB,
            shape = { 512, 1024 } }
          plan1[name], hc1[name] = "host", true
        end
      end
      -- per block: 7 products; trips: qkv, output, gate+up, down
      local d = predict.decode(dense, plan1, hc1, bw)
      assert.is_true(near(2 * (7 * CALL + 4 * RT), d.host_fixed_s), d.host_fixed_s)
      local grouped = predict.host_products_grouped
      predict.host_products_grouped = function() return false end
      local one = predict.decode(dense, plan1, hc1, bw)
      predict.host_products_grouped = grouped
      assert.is_true(near(2 * 7 * (CALL + RT), one.host_fixed_s), one.host_fixed_s)
    end)

  it("expert_choice's host compute option carries them, so the cache wins sooner", function()
    local blocks = choice.blocks(tensors, plan, hc, E, bw)
    local p = { blocks = blocks, k = K, n_expert = E, bw = bw, room = 8 * 3 * PART }
    local r = choice.choose(p)
    local plain = choice.choose({ blocks = choice.blocks(tensors, plan, hc, E, BW), k = K, n_expert = E, bw = BW,
      room = 8 * 3 * PART })
    assert.is_true(near(plain.options[1].seconds + 2 * 3 * K * (RT + CALL), r.options[1].seconds))
    p.host_pass = true
    local rp = choice.choose(p)
    assert.is_true(near(plain.options[1].seconds + 2 * (3 * CALL + RT), rp.options[1].seconds))
  end)
end)

describe("smart with a mixture of experts", function()
  local smart = dofile("policies/smart.lua")

  it("host-computes stacked experts first (k/E per token) and keeps the dense matrices on the device", function()
    local tensors = model_tensors()
    for l = 0, 3 do
      tensors[#tensors + 1] = { name = string.format("blk.%d.attn_q.weight", l), role = "attn_q", layer = l,
        dtype = "q4_K", bytes = 2 * MiB, plain_bytes = 2 * MiB, shape = { 2048, 2048 } }
    end
    local bw = {}
    for k, v in pairs(BW) do bw[k] = v end
    local plan, off, info = smart.plan(tensors, { max_bytes = 2 * 3 * E * PART, bandwidth = bw, n_expert_used = K })
    assert.are.equal(2 * 3 * E * PART, off)
    local n = 0
    for name, tier in pairs(plan) do
      if tier ~= "device" then
        n = n + 1
        assert.truthy(name:find("_exps"), name)
        assert.is_true(info.host_compute[name], name .. " not host-computed")
      end
    end
    assert.are.equal(6, n)
    assert.truthy(info.explain:find("mixture of experts, 2 used per token: 6 stacked expert tensors", 1, true),
      info.explain)
    assert.is_true(near(2 * host_s, info.seconds_per_token), info.seconds_per_token)
  end)
end)

describe("prefill streaming's threshold from a measured batched host rate", function()
  it("takes bw.host_batch when measured, else the assumed gain", function()
    local tensors, hc = {}, {}
    for _, r in ipairs({ "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps" }) do
      local name = "blk.0." .. r .. ".weight"
      tensors[#tensors + 1] = { name = name, role = r, layer = 0, dtype = "q4_K", plain_bytes = 128 * 884736,
        shape = r == "ffn_down_exps" and { 768, 2048, 128 } or { 2048, 768, 128 } }
      hc[name] = true
    end
    local bw = { h2d_pinned = 25e9, host_matmul = { q4_K = 40e9 } }
    local _, _, src = expert_plan.prefill_stream_tokens(tensors, hc, 128, bw)
    assert.are.equal("assumed", src)
    bw.host_batch = { q4_K = 300e9 }
    local t, per, src2 = expert_plan.prefill_stream_tokens(tensors, hc, 128, bw)
    assert.are.equal("measured", src2)
    assert.are.equal(expert_plan.prefill_stream_threshold({ bytes = 3 * 884736, flops_per_token = 2 * 3 * 2048 * 768,
      pcie = 25e9, host_read = 40e9, host_flops = 300e9 }), t)
    assert.are.equal(t, per[0])
    -- and the prefill prediction's host experts take it too
    local all = {}
    for i, x in ipairs(tensors) do all[i] = x; x.bytes = x.plain_bytes end
    local pbw = { device = "cuda", h2d_pinned = 25e9, host_read = 50e9, device_read = 2000e9,
      host_matmul = { q4_K = 40e9 }, device_matmul = { q4_K = 100e12 }, host_gemm = { q4_K = 1e12 } }
    local plan = {}
    for name in pairs(hc) do plan[name] = "host" end
    local a = predict.prefill(all, plan, hc, pbw, { tokens = 512, n_expert_used = 8, expert_stream = false })
    pbw.host_batch = { q4_K = 0.5e12 }
    local b = predict.prefill(all, plan, hc, pbw, { tokens = 512, n_expert_used = 8, expert_stream = false })
    assert.is_true(b.host_s > a.host_s, "the measured (slower) batched rate was not used")
  end)
end)

describe("lrun.residency.bandwidths on a generated mixture", function()
  local lrun = require("lrun")
  local arch_models = require("tests.arch_models")
  local residency = require("lrun.residency")
  local path
  setup(function()
    path = os.tmpname()
    for _, e in ipairs(arch_models.models) do
      if e.name == "qwen3moe_q8_0" then arch_models.generate(e, path) end
    end
  end)
  teardown(function() os.remove(path) end)

  it("keeps a table per thread count, measures the host's batched expert product, observes counts", function()
    local m1 = assert(lrun.load(path, { threads = 1, progress = false, device = "cpu" }))
    local m2 = assert(lrun.load(path, { threads = 2, progress = false, device = "cpu" }))
    local b1, b2 = assert(residency.bandwidths(m1)), assert(residency.bandwidths(m2))
    assert.are_not.equal(b1, b2)
    assert.are.equal(b1, residency.bandwidths(m1))
    assert.are.equal(b1.h2d_pinned, b2.h2d_pinned) -- the links once per device
    -- after a warm-up the choice predicts from the engine's observed counts (m:stats().experts)
    assert(m2:generate({ 5, 6, 7, 8 }, { max_new_tokens = 2, do_sample = false, eos_token_id = {} }))
    local counts = assert(expert_plan.observed_counts(m2, {}), "no counts after a warm-up")
    local info = m2:info()
    for l = 0, info.n_layer - 1 do
      local sum = 0
      for _, c in ipairs(counts[l]) do sum = sum + c end
      assert.is_true(sum > 0 and sum % info.n_expert_used == 0, "block " .. l .. ": " .. sum .. " selections")
    end
    local given = { [0] = { 1 } }
    assert.are.equal(given, expert_plan.observed_counts(m2, { expert_counts = given }))
    local rates = residency.host_batch_rates(m2, {})
    assert.is_true((rates.q8_0 or 0) > 0, "no batched rate for the experts' q8_0")
    -- the 30B-A3B expert's shape at 64 rows, timed
    local ffi, C = require("ffi"), require("lrun.ffi").C
    local dt, out = ffi.new("lrun_dtype[1]"), ffi.new("double[1]")
    assert(C.lrun_dtype_from_name("q4_K", dt) == C.LRUN_OK)
    local t0 = os.clock()
    assert(C.lrun_model_measure_matmul(m2.handle, 0, dt[0], 768, 2048, 64, out) == C.LRUN_OK)
    print(string.format("# host batched q4_K 768x2048 at 64 rows: %.1f GFLOP/s, measured in %.3f s of CPU time "
      .. "(2 threads)", out[0] / 1e9, os.clock() - t0))
    m1:free()
    m2:free()
  end)
end)
