--- lrun.expert_choice — what smart (and auto-fit) do with a mixture of
-- experts' host experts on CUDA (docs/moe.md "Choosing compute, cache or hybrid"):
-- compute them on the host, copy the chosen ones into an expert cache of
-- device slots, or both (hybrid: the slots' hits on the GPU, the misses on the
-- host in the same step); and how much of the device budget goes to resident expert
-- blocks against cache slots.
--
-- The engine's cache covers every block whose gate, up and down stacked
-- tensors are host-computed and plain (runtime/cuda/engine_cuda_moe_cache.c:
-- `covers` is "all three on the host", with no per-block switch), so the
-- choice between computing and caching is for the model; the unit traded is
-- a block (the placement's unit for experts). Per token (decode, batch 1),
-- with k experts chosen per block, an expert's three slices bytes_e on the
-- device (plain_e on the host):
--   resident block   k · bytes_e / device_read
--   host compute     k · plain_e / host_matmul[dtype]       (the host's expert GEMV, from DRAM)
--                    + the products' fixed costs (predict.host_overhead_s: a thread-pool call and a
--                    round trip each, one round trip a block with the host pass)
--   cached block     k · bytes_e / device_read + (1 − h) · k · bytes_e / link
--                    (a miss copies the expert over PCIe: pinned, or pageable for host memory;
--                    h the hit rate LFU settles at with N slots, lrun.expert_plan.hit_rate: the
--                    observed counts' top-N share after a warm-up, else uniform N / experts)
--   hybrid block     max(h · k · bytes_e / device_read, (1 − h) · k · plain_e / host_matmul[dtype])
--                    + one host pass's fixed costs (the hits run on the GPU while the host computes
--                    the misses; admissions copy in the background: no PCIe term on the critical path)
-- Options: host compute (the placement as the policy left it), and the cache
-- and the hybrid cache, each with j = 0, 1, … resident blocks traded for slots (the most skewed blocks
-- first when counts are known, else the lowest). Under uniform routing a
-- trade is neutral at best (N slots over E experts hit N/E, as N/E of a
-- block resident would, less the margin, give or take a slot's rounding), so
-- the cache pays only when a miss over PCIe is cheaper than the host's
-- product, and trades pay only when popularity is skewed. An option is taken
-- only when it saves more than M.min_gain over the simpler one (compute,
-- then fewer trades). With each option's predicted prefill chunk (p.prefill:
-- lrun.predict.prefill of the option's plan and cache, for_plan gives it) the
-- options are compared on a typical request, M.request (a prompt, then
-- generated tokens): generate · decode + prompt / chunk · prefill, so a
-- choice that loses much prefill for little decode is not taken (docs/moe.md
-- "Weighing prefill"). Pure: sizes, rates and counts in,
-- so tests/expert_choice_spec.lua checks it with given numbers.
-- @module lrun.expert_choice
local size = require("lrun.size")
local expert_plan = require("lrun.expert_plan")
local predict = require("lrun.predict")
local predict_plan = require("lrun.predict_plan")

local M = {}

-- What an option must save over a simpler one (host compute, then fewer
-- trades) to be taken, of the simpler one's time: the model's own precision
-- (slots rounded down, LFU's steady state taken as reached).
M.min_gain = 0.01

--- The request the options are weighed on when their prefill is known: llama-bench's pp512 and tg128, the
-- pair every benchmark here reports. A decode gain is paid back on every generated token, a prefill loss once
-- a prompt: session 15's hybrid (before prefill from slots) traded 35-45% of prefill for 3% of decode under
-- uniform routing (a loss on this request: 2.94 s against auto's 2.47) and for 30% at skew 8 (a gain: 2.40
-- against 2.45). Longer generations favour decode, longer prompts prefill.
M.request = { prompt = 512, generate = 128 }

local parts = { ffn_gate_exps = 1, ffn_up_exps = 2, ffn_down_exps = 3 }

local function round256(b) return math.ceil(b / 256) * 256 end

-- Bytes/s the host's expert GEMV reads t's dtype at (bw.host_matmul, else host_read).
local function host_rate(t, bw)
  local h = bw.host_matmul
  if type(h) == "table" then h = h[t.dtype] or h.default end
  return type(h) == "number" and h > 0 and h or bw.host_read
end

-- The link a cache miss of a tensor in this tier crosses, as lrun.predict prices it: pinned ones by DMA,
-- pageable ones through the cache's staging buffers (engine_cuda_moe_cache.c) at the threaded copy's
-- measured rate when known.
local function link(tier, bw) return (predict.link(tier, bw)) end

--- The model's expert blocks as the choice sees them.
-- @tparam table tensors descriptions (role, layer, dtype, bytes, plain_bytes, shape, name)
-- @tparam table plan {[name] = tier}
-- @tparam table host_compute {[name] = true}
-- @tparam int n_expert
-- @tparam table bw bandwidths (device_read, h2d_pinned, h2d_pageable, host_read, host_matmul)
-- @tparam[opt] table packed {[name] = true}: the plan's packed forms (not cached)
-- @tparam[opt] string tier where a traded block's experts go (default "host")
-- @treturn table blocks in layer order: {layer=, parts = {{name=, bytes_e=, plain_e=, slot=, rate=, link=,
--   device=, bytes=}×3}, state = "device" (all three resident) | "host" (all host-computed, plain: cacheable) |
--   "partial" (resident and host-computed plain parts: tradable) }; blocks of any other kind are left out
function M.blocks(tensors, plan, host_compute, n_expert, bw, packed, tier)
  tier = tier or "host"
  local by = {}
  for _, t in ipairs(tensors) do
    local i = parts[t.role]
    if i and t.layer and t.layer >= 0 and n_expert > 0 then
      local b = by[t.layer] or { layer = t.layer, parts = {} }
      local where = plan[t.name] or "device"
      local pk = packed and packed[t.name]
      if pk == nil then pk = t.packed end
      local plain = t.plain_bytes or t.bytes
      b.parts[i] = { name = t.name, bytes = t.bytes, bytes_e = t.bytes / n_expert, plain_e = plain / n_expert,
        slot = round256(plain / n_expert), rate = host_rate(t, bw), device = where == "device",
        host = where ~= "device" and host_compute[t.name] and not pk,
        link = link(where ~= "device" and where or tier, bw) }
      by[t.layer] = b
    end
  end
  local out = {}
  for _, b in pairs(by) do
    local n_dev, n_host = 0, 0
    for i = 1, 3 do
      local p = b.parts[i]
      if p and p.device then n_dev = n_dev + 1 elseif p and p.host then n_host = n_host + 1 end
    end
    if n_dev == 3 then b.state = "device"
    elseif n_host == 3 then b.state = "host"
    elseif n_dev + n_host == 3 then b.state = "partial" end
    if b.state then out[#out + 1] = b end
  end
  table.sort(out, function(x, y) return x.layer < y.layer end)
  return out
end

-- Seconds per token of a hybrid block with miss rate `miss`: the hits on the device beside the misses on the
-- host (one host pass: a grouped product a tensor, one round trip), whichever takes longer.
local function hybrid_block_s(b, k, bw, miss)
  local dev, host = 0, 0
  for _, p in ipairs(b.parts) do
    dev = dev + (1 - miss) * k * p.bytes_e / bw.device_read
    host = host + miss * k * p.plain_e / p.rate
  end
  return (predict.hybrid_block_s(bw, dev, host, #b.parts))
end

-- Seconds per token of block b's experts: cached with miss rate `miss`, or as placed (host parts with their
-- products' fixed costs, predict.host_overhead_s: k products each, and a round trip each, unless the host pass
-- takes the whole block: one grouped product a tensor and one round trip).
local function block_s(b, k, bw, miss, host_pass, hybrid)
  if miss and hybrid then return hybrid_block_s(b, k, bw, miss) end
  local s, n_host = 0, 0
  for _, p in ipairs(b.parts) do
    if miss then s = s + k * p.bytes_e / bw.device_read + miss * k * p.bytes_e / p.link
    elseif p.device then s = s + k * p.bytes_e / bw.device_read
    else s, n_host = s + k * p.plain_e / p.rate, n_host + 1 end
  end
  if n_host > 0 then
    local pass = host_pass and n_host == 3
    s = s + predict.host_overhead_s(bw, pass and n_host or n_host * k, pass and 1 or n_host * k)
  end
  return s
end

-- Device bytes a trade frees: the block's resident parts.
local function freed(b)
  local n = 0
  for _, p in ipairs(b.parts) do if p.device then n = n + p.bytes end end
  return n
end

-- The slot for a set of cached blocks: each projection's largest 256-aligned slice.
local function slot_of(cached)
  local stride = { 0, 0, 0 }
  for _, b in ipairs(cached) do
    for i = 1, 3 do stride[i] = math.max(stride[i], b.parts[i].slot) end
  end
  return stride[1] + stride[2] + stride[3]
end

-- How concentrated a block's observed routing is: its busiest quarter's share.
local function skew(counts, l, n_expert)
  local c, total = {}, 0
  for _, v in ipairs(counts and counts[l] or {}) do c[#c + 1] = v; total = total + v end
  if total == 0 then return 0 end
  table.sort(c, function(a, b) return a > b end)
  local top = 0
  for i = 1, math.max(1, math.floor(n_expert / 4)) do top = top + (c[i] or 0) end
  return top / total
end

-- One cache option (how: "cache" or "hybrid"): blocks `cached` (host ones and the traded), room for slots.
local function cache_option(p, cached, others, room, trade, how)
  local slot = slot_of(cached)
  local usable = math.max(0, room - math.ceil(math.max(0, room) * expert_plan.margin))
  local slots = slot > 0 and math.min(math.floor(usable / slot), #cached * p.n_expert) or 0
  if slots < 1 then return nil end
  local layers = {}
  for i, b in ipairs(cached) do layers[i] = b.layer end
  local h, source = expert_plan.hit_rate(p.counts, layers, p.n_expert, slots)
  local s = 0
  for _, b in ipairs(cached) do s = s + block_s(b, p.k, p.bw, 1 - h, nil, how == "hybrid") end
  for _, b in ipairs(others) do s = s + block_s(b, p.k, p.bw, nil, p.host_pass) end
  return { how = how, seconds = s, slots = slots, slot_bytes = slot, hit_rate = h, source = source,
    trade = trade, layers = layers, room = room }
end

--- Whether the automatic choice (mode "auto": smart, auto-fit) weighs the hybrid cache too. On since the
-- hybrid's decode ran on a GPU (session 15: 1.30x auto's at skew 8) and its prefill runs slot-held experts from
-- their slots (on by default since; before, it lost 35-45% of auto's prefill), with each option's prefill
-- weighed (M.request). false: host compute and the copying cache only, as before session 16.
M.auto_hybrid = true

--- Chooses host compute or the cache, and the resident blocks traded for slots.
-- @tparam table p blocks= (M.blocks), k= (experts per token), n_expert=, bw= (as M.blocks),
--   room= (device bytes the placement leaves, before any trade), counts= (m:stats().experts.layers; optional),
--   staging= (device bytes prefill streaming keeps when the cache is on; default 0),
--   mode= ("auto": compute, cache or hybrid; "cache" or "hybrid": the user asked for that cache, only the
--   trade is chosen),
--   host_pass= (true: the engine computes a block's host experts in one round trip, predict_plan.host_pass),
--   prefill= (optional function(option) -> seconds of a prefill chunk of prefill_tokens tokens under that
--   option's plan and cache, or nil; given, the options are weighed on M.request), prefill_tokens= (the chunk)
-- @treturn table|nil nil when no block has host experts (nothing to choose); else
--   {how = "compute"|"cache"|"hybrid", seconds=, slots=, hit_rate=, source=, trade = {layers traded, in order},
--   prefill_s= (the chosen option's chunk, when weighed), options = {each option considered: how=, seconds=,
--   slots=, hit_rate=, trade=, prefill_s=, request_s=}, text=}
function M.choose(p)
  local host, tradable = {}, {}
  for _, b in ipairs(p.blocks) do
    if b.state == "host" then host[#host + 1] = b else tradable[#tradable + 1] = b end
  end
  if #host == 0 or not p.room then return nil end
  table.sort(tradable, function(x, y)
    local sx, sy = skew(p.counts, x.layer, p.n_expert), skew(p.counts, y.layer, p.n_expert)
    if sx ~= sy then return sx > sy end
    return x.layer < y.layer
  end)
  local options = {}
  local hows = p.mode == "cache" and { "cache" } or p.mode == "hybrid" and { "hybrid" }
    or (M.auto_hybrid and { "cache", "hybrid" } or { "cache" })
  if p.mode ~= "cache" and p.mode ~= "hybrid" then
    local s = 0
    for _, b in ipairs(p.blocks) do s = s + block_s(b, p.k, p.bw, nil, p.host_pass) end
    options[1] = { how = "compute", seconds = s, slots = 0, hit_rate = 0, trade = {} }
  end
  local room = p.room - (p.staging or 0)
  local cached, trade = {}, {}
  for _, b in ipairs(host) do cached[#cached + 1] = b end
  for j = 0, #tradable do
    if j > 0 then
      local b = tradable[j]
      cached[#cached + 1], trade[#trade + 1] = b, b.layer
      room = room + freed(b)
    end
    local others = {}
    for i = j + 1, #tradable do others[#others + 1] = tradable[i] end
    local copy = {}
    for i, l in ipairs(trade) do copy[i] = l end
    for _, how in ipairs(hows) do -- the copying cache before the hybrid one: a near tie keeps the first
      local o = cache_option(p, cached, others, room, copy, how)
      if o then options[#options + 1] = o end
    end
  end
  if #options == 0 then return nil end
  local weighed = M.weigh_prefill(options, p)
  local best = options[1]
  for _, o in ipairs(options) do
    -- a near tie keeps the simpler plan: an option must save more than min_gain of the best's decode time, on
    -- the request when prefill is weighed (so with equal prefill the rule is decode's alone)
    local gain = weighed and best.request_s - o.request_s or (best.seconds - o.seconds) * M.request.generate
    if gain > M.min_gain * best.seconds * M.request.generate then best = o end
  end
  local r = { how = best.how, seconds = best.seconds, slots = best.slots, slot_bytes = best.slot_bytes,
    hit_rate = best.hit_rate, source = best.source, trade = best.trade, layers = best.layers, options = options,
    best = best, prefill_s = best.prefill_s, prefill_tokens = weighed and p.prefill_tokens or nil }
  r.text = M.text(r, p)
  return r
end

--- Sets each option's prefill_s (p.prefill's chunk) and request_s (M.request: generate · seconds + prompt /
-- chunk · prefill_s). Only when every option has a prefill figure: one without would win or lose by omission.
-- @treturn boolean whether the options were weighed
function M.weigh_prefill(options, p)
  if type(p.prefill) ~= "function" then return false end
  local T = p.prefill_tokens or predict.prefill_tokens
  local f = {}
  for i, o in ipairs(options) do
    f[i] = p.prefill(o)
    if type(f[i]) ~= "number" or f[i] <= 0 then return false end
  end
  for i, o in ipairs(options) do
    o.prefill_s = f[i]
    o.request_s = M.request.generate * o.seconds + M.request.prompt / T * f[i]
  end
  return true
end

local function ms(s) return string.format("%.3f ms", s * 1e3) end

-- One option in a line's words.
local function describe(o)
  local pre = o.prefill_s and string.format(", prefill chunk %s", ms(o.prefill_s)) or ""
  if o.how == "compute" then return "host compute " .. ms(o.seconds) .. pre end
  return string.format("%s %s (%d slots, hit rate %.2f%s%s)", o.how, ms(o.seconds), o.slots, o.hit_rate,
    #o.trade > 0 and string.format(", %d resident block%s traded", #o.trade, #o.trade == 1 and "" or "s") or "",
    pre)
end

--- The explanation: the choice, then the options with their predicted ms per token.
function M.text(r, p)
  local n_host = 0
  for _, b in ipairs(p.blocks) do if b.state == "host" then n_host = n_host + 1 end end
  local head
  if r.how == "compute" then
    head = string.format("experts: smart computes the host experts of %d block%s on the host", n_host,
      n_host == 1 and "" or "s")
  else
    head = string.format("experts: smart %s the host experts of %d block%s: %d slots × %s%s, expected hit "
      .. "rate %.2f from %s", r.how == "hybrid" and "caches (hybrid: misses computed on the host)" or "caches",
      #r.layers, #r.layers == 1 and "" or "s", r.slots, size.format(r.slot_bytes),
      #r.trade > 0 and string.format(" (%d resident block%s traded for slots: %s)", #r.trade,
        #r.trade == 1 and "" or "s", table.concat(r.trade, ", ")) or "", r.hit_rate,
      r.source == "observed" and "observed frequencies" or "uniform routing")
  end
  local seen, list = {}, {}
  -- compute, each cache without a trade, the best, the last trade of each: at most 6 options named
  local function add(o) if o and not seen[o] then seen[o] = true; list[#list + 1] = describe(o) end end
  for _, o in ipairs(r.options) do if o.how == "compute" or #o.trade == 0 then add(o) end end
  add(r.best)
  local last = {}
  for _, o in ipairs(r.options) do last[o.how] = o end
  add(last.cache)
  add(last.hybrid)
  local weighed = r.prefill_tokens and string.format("; weighed on a %d-token prompt and %d generated tokens "
    .. "(prefill chunks of %d)", M.request.prompt, M.request.generate, r.prefill_tokens) or ""
  return head .. string.format("; predicted expert time per token (k = %d, PCIe misses at %.1f GB/s)%s: %s",
    p.k, (p.blocks[1] and p.blocks[1].parts[1].link or 0) / 1e9, weighed, table.concat(list, "; "))
end

--- Moves the traded blocks' resident parts to tier, host-computed (the plan tables, in place).
function M.trade(blocks, layers, plan, host_compute, tier)
  local want = {}
  for _, l in ipairs(layers) do want[l] = true end
  for _, b in ipairs(blocks) do
    if want[b.layer] then
      for _, part in ipairs(b.parts) do
        if part.device then plan[part.name] = tier or "host" end
        host_compute[part.name] = true
      end
    end
  end
end

--- smart's choice for a plan (lrun.residency.plan calls it after the policy
-- and the overrides): nil unless the policy is smart (auto-fit's too), the
-- device CUDA with a budget, the model a mixture with host experts, and what
-- happens to host experts left to the planner (lrun.load without moe_host
-- and expert_cache_slots: model.moe_host_auto; or moe_host = "cache" or
-- "hybrid" without slots: only the trade). Traded blocks are moved in q.plan and
-- q.host_compute; the caller sizes the placement again.
-- @tparam table model an lrun.model
-- @tparam table q policy= (its name), cpu=, room= (device bytes left; nil: no budget), tensors=, plan=,
--   host_compute=, packed=, bw= (bandwidths), tier= (where traded experts go)
-- @tparam table opts the plan's options (expert_counts=)
-- @treturn table|nil M.choose's result
function M.for_plan(model, q, opts)
  if q.policy ~= "smart" or q.cpu or not q.room or not q.bw then return nil end
  local mode = model.moe_host_auto and "auto"
    or model.expert_cache_auto and (model.moe_host == "hybrid" and "hybrid" or "cache") or nil
  if not mode then return nil end
  local info = model:info()
  local n_expert, k = info.n_expert or 0, info.n_expert_used or 0
  if n_expert == 0 or k == 0 then return nil end
  local blocks = M.blocks(q.tensors, q.plan, q.host_compute, n_expert, q.bw, q.packed, q.tier)
  local slot = expert_plan.slot_layout(q.tensors, q.host_compute, n_expert, q.packed)
  local staging = slot > 0 and expert_plan.streams_prefill(model) and expert_plan.stream_staging_bytes(slot, n_expert)
    or 0
  local prefill, tokens = M.prefill_of(model, q, blocks, opts)
  local r = M.choose({ blocks = blocks, k = k, n_expert = n_expert, bw = q.bw, room = q.room, staging = staging,
    counts = expert_plan.observed_counts(model, opts), mode = mode, host_pass = predict_plan.host_pass(),
    prefill = prefill, prefill_tokens = tokens })
  if r and #r.trade > 0 then M.trade(blocks, r.trade, q.plan, q.host_compute, q.tier) end
  return r
end

--- The prefill of an option, for M.choose's p.prefill: a function(option) giving lrun.predict.prefill's
-- seconds for a chunk over the plan with the option's trades applied (on copies) and its cache ({slots=,
-- hit_rate=, layers=, mode=}: slot-held experts run from their slots, expert_plan.prefill_held_share).
-- @tparam table q tensors=, plan=, host_compute=, tier= (as M.for_plan's)
-- @tparam table blocks M.blocks of the plan
-- @tparam table bw bandwidths with the prefill's rates (device_matmul=, host_gemm=, host_batch=, ...)
-- @tparam table pq predict.prefill's query (tokens=, n_expert_used=, q_dim=, n_layer=, act_bytes=)
function M.prefill_fn(q, blocks, bw, pq)
  return function(o)
    local plan, hc = {}, {}
    for name, tier in pairs(q.plan) do plan[name] = tier end
    for name, on in pairs(q.host_compute) do hc[name] = on end
    if #o.trade > 0 then M.trade(blocks, o.trade, plan, hc, q.tier) end
    local query = {}
    for key, v in pairs(pq) do query[key] = v end
    query.expert_cache = o.how ~= "compute" and { slots = o.slots, hit_rate = o.hit_rate, layers = o.layers,
      mode = o.how == "hybrid" and "hybrid" or nil } or nil
    local ok, f = pcall(predict.prefill, q.tensors, plan, hc, bw, query)
    return ok and f.seconds or nil
  end
end

--- M.prefill_fn for a loaded model: its measured matmul rates (lrun.predict_plan.matmul_rates, once per
-- device and dtype per process) and its prefill query (opts.prefill_tokens, else predict's 512).
-- @treturn function|nil nil when the rates cannot be had (the choice then weighs decode alone)
-- @treturn int the chunk's tokens
function M.prefill_of(model, q, blocks, opts)
  if model.handle == nil then return nil end -- nothing to measure the rates on
  local bw = setmetatable({}, { __index = q.bw })
  local ok = pcall(predict_plan.matmul_rates, model, bw, nil, opts and opts.decode_context)
  if not ok or not bw.device_matmul then return nil end
  local pq = predict_plan.query(model, opts and opts.prefill_tokens)
  return M.prefill_fn(q, blocks, bw, pq), pq.tokens
end

return M
