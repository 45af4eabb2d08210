-- route_trace: which experts a mixture of experts routes each token to when
-- decoding teacher-forced random token ids (what tests/bench/peer_lrun.lua
-- feeds, like llama-bench's tg), and the statistics an expert cache sees.
-- Used by tests/gen_routing_spec.lua (the generator's routing must not
-- collapse) and tests/bench/route_stats.lua (the numbers in docs/moe.md).
--
-- Each token is one lrun_engine_step of one token at the next position; its
-- experts in block l are the (block, expert) counts of
-- lrun_engine_expert_counts that grew during the step.
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C

local M = {}

--- Decodes n_tokens pseudo-random ids (3 .. n_vocab-1, a fixed LCG seed) one
-- at a time on model m's CPU engine.
-- @tparam table m a loaded MoE model (lrun.load)
-- @tparam number n_tokens tokens to decode
-- @treturn table {n_layer=, n_expert=, k=, sets = {[t] = {[l] = {expert ids, 0-based}}}}
-- @treturn[2] nil, err when the engine fails
function M.trace(m, n_tokens)
  local info = m:info()
  local L, E, k = info.n_layer, info.n_expert or 0, info.n_expert_used or 0
  if E == 0 then error("route_trace.trace: the model has no experts", 2) end
  local e, err = m:engine({ n_batch = 1 })
  if not e then return nil, err end
  local n_vocab = m.n_vocab
  local logits = ffi.new("float[?]", n_vocab)
  local n_out, seq, tok = ffi.new("int64_t[1]"), ffi.new("int32_t[1]"), ffi.new("int32_t[1]")
  local counts, tokens = ffi.new("int64_t[?]", L * E), ffi.new("int64_t[?]", L)
  local prev = {}
  for i = 0, L * E - 1 do prev[i] = 0 end
  local sets, y = {}, 777
  for t = 1, n_tokens do
    y = (y * 1103515245 + 12345) % 2147483648 -- exact in a double: the product stays below 2^53
    tok[0] = 3 + y % (n_vocab - 3)
    if C.lrun_engine_step(e, 1, tok, seq, nil, logits, 1, n_out) ~= C.LRUN_OK then return nil, lf.last_error() end
    if C.lrun_engine_expert_counts(e, counts, tokens) ~= C.LRUN_OK then return nil, lf.last_error() end
    local per = {}
    for l = 0, L - 1 do
      local s = {}
      for x = 0, E - 1 do
        local c = tonumber(counts[l * E + x])
        if c > prev[l * E + x] then s[#s + 1] = x end
        prev[l * E + x] = c
      end
      per[l] = s
    end
    sets[t] = per
  end
  return { n_layer = L, n_expert = E, k = k, sets = sets }
end

--- Statistics of a trace, per block (0-based) and averaged over blocks.
-- distinct: experts used at least once; lru_hit: hits of an LRU cache of
-- `slots` experts per block, over every selection (the first ones miss);
-- top_quarter: the share of selections the busiest quarter of the experts
-- takes; reuse: the share of a token's experts the token before also used.
-- Independent uniform routing gives distinct ≈ E·(1 - (1 - k/E)^N),
-- lru_hit ≈ slots/E, top_quarter ≈ 1/4 (a little more from sampling) and
-- reuse ≈ k/E: M.uniform says how much for the same shape.
-- @tparam table tr M.trace's result
-- @tparam number slots LRU slots per block
-- @treturn table {blocks = {[l] = {distinct=, lru_hit=, top_quarter=, reuse=}}, distinct=, lru_hit=, top_quarter=, reuse=}
function M.stats(tr, slots)
  local L, E, n = tr.n_layer, tr.n_expert, #tr.sets
  local blocks, sum = {}, { distinct = 0, lru_hit = 0, top_quarter = 0, reuse = 0 }
  for l = 0, L - 1 do
    local count, last_use, cached, hits, sel, reused, pairs_n = {}, {}, 0, 0, 0, 0, 0
    for x = 0, E - 1 do count[x] = 0 end
    for t = 1, n do
      local s = tr.sets[t][l]
      local before = t > 1 and tr.sets[t - 1][l] or nil
      local was = {}
      if before then for _, x in ipairs(before) do was[x] = true end end
      for _, x in ipairs(s) do
        sel = sel + 1
        count[x] = count[x] + 1
        if last_use[x] then hits = hits + 1 else cached = cached + 1 end
        last_use[x] = t
        if before then
          pairs_n = pairs_n + 1
          if was[x] then reused = reused + 1 end
        end
      end
      while cached > slots do -- evict the least recently used
        local oldest, victim = math.huge, nil
        for x, u in pairs(last_use) do if u < oldest then oldest, victim = u, x end end
        last_use[victim], cached = nil, cached - 1
      end
    end
    local sorted, distinct = {}, 0
    for x = 0, E - 1 do
      sorted[#sorted + 1] = count[x]
      if count[x] > 0 then distinct = distinct + 1 end
    end
    table.sort(sorted, function(a, b) return a > b end)
    local top = 0
    for i = 1, math.max(1, math.floor(E / 4)) do top = top + sorted[i] end
    local b = { distinct = distinct, lru_hit = sel > 0 and hits / sel or 0, top_quarter = sel > 0 and top / sel or 0,
      reuse = pairs_n > 0 and reused / pairs_n or 0 }
    blocks[l] = b
    for key in pairs(sum) do sum[key] = sum[key] + b[key] / L end
  end
  sum.blocks = blocks
  return sum
end

--- What independent uniform routing gives for the same shape (expected
-- values; top_quarter is its lower bound 1/4).
-- @treturn table {distinct=, lru_hit=, top_quarter=, reuse=}
function M.uniform(n_expert, k, n_tokens, slots)
  return { distinct = n_expert * (1 - (1 - k / n_expert) ^ n_tokens), lru_hit = math.min(1, slots / n_expert),
    top_quarter = 0.25, reuse = k / n_expert }
end

return M
