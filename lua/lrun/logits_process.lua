--- lrun.logits_process — generate()'s logits processors and warpers in Lua,
-- in transformers' order (GenerationMixin._get_logits_processor):
--
--   repetition_penalty, presence/frequency penalty (llama.cpp's, not HF's),
--   llama.cpp's DRY, no_repeat_ngram_size, bad_words_ids, min_length,
--   min_new_tokens, suppress_tokens, then the caller's logits_processor
--   functions, then, when sampling, the warpers temperature, top_n_sigma,
--   top_k, top_p, min_p, typical_p and llama.cpp's XTC (or, with mirostat,
--   temperature and mirostat alone, as llama.cpp's chain). The penalties
--   look at the last repeat_last_n tokens (llama.cpp's penalty_last_n) when
--   it is given, else at the whole sequence (HF).
--
-- Each works in place on `scores`, a float[n_vocab] indexed by token id,
-- as transformers' classes do on one row; `ids` is an int32 array of the
-- sequence so far (prompt, then new tokens), n its length. Masked tokens
-- get -inf. tests/golden/make_generate_golden.py mirrors transformers'
-- classes in numpy and tests/logits_process_spec.lua compares.
--
-- generate uses this path only when an option needs it (or scores are
-- asked for); otherwise the C sampler does everything (lrun_sample).
-- @module lrun.logits_process
local M = {}

local NEG_INF = -math.huge
local exp, log, abs = math.exp, math.log, math.abs

-- ---------------------------------------------------------------- processors

--- RepetitionPenaltyLogitsProcessor: each token present in ids, once:
-- score < 0 → score * penalty, else score / penalty.
function M.repetition_penalty(scores, ids, n, penalty)
  local seen = {}
  for i = 0, n - 1 do
    local id = ids[i]
    if not seen[id] then
      seen[id] = true
      local s = scores[id]
      scores[id] = s < 0 and s * penalty or s / penalty
    end
  end
end

--- llama.cpp's presence and frequency penalties (OpenAI's definition):
-- score -= count * frequency + (count > 0) * presence, over ids.
function M.presence_frequency(scores, ids, n, presence, frequency)
  local count = {}
  for i = 0, n - 1 do
    local id = ids[i]
    count[id] = (count[id] or 0) + 1
  end
  for id, c in pairs(count) do scores[id] = scores[id] - c * frequency - presence end
end

--- NoRepeatNGramLogitsProcessor: bans every token that would complete an
-- n-gram already in ids.
function M.no_repeat_ngram(scores, ids, n, size)
  if n + 1 < size then return end
  local start = n + 1 - size -- 0-based start of the n-1 last tokens
  for i = 0, n - size do
    local match = true
    for j = 0, size - 2 do
      if ids[i + j] ~= ids[start + j] then match = false; break end
    end
    if match then scores[ids[i + size - 1]] = NEG_INF end
  end
end

--- NoBadWordsLogitsProcessor: a one-token entry is always banned; the last
-- token of a longer one when ids end with the rest. Entries that are just
-- an eos id are dropped, as transformers drops them.
function M.bad_words(scores, ids, n, bad_words_ids, eos)
  for _, seq in ipairs(bad_words_ids) do
    local len = #seq
    if not (len == 1 and eos[seq[1]]) then
      local match = len - 1 <= n
      for j = 1, len - 1 do
        if not match then break end
        if ids[n - (len - 1) + (j - 1)] ~= seq[j] then match = false end
      end
      if match then scores[seq[len]] = NEG_INF end
    end
  end
end

--- MinLengthLogitsProcessor / MinNewTokensLengthLogitsProcessor: eos ids
-- get -inf while length < min.
function M.min_length(scores, length, min, eos_list)
  if length < min then
    for _, id in ipairs(eos_list) do scores[id] = NEG_INF end
  end
end

--- SuppressTokensLogitsProcessor.
function M.suppress(scores, list, n_vocab)
  for _, id in ipairs(list) do
    if id >= 0 and id < n_vocab then scores[id] = NEG_INF end
  end
end

--- The part of ids that llama.cpp's penalties look at: the last `last_n`
-- tokens (nil or -1: all of them, HF's rule; 0: none). Returns the first
-- index and the count.
function M.window(n, last_n)
  if last_n == nil or last_n < 0 or last_n >= n then return 0, n end
  return n - last_n, last_n
end

--- llama.cpp's DRY ("don't repeat yourself"): a token that would extend a
-- repeat of length L >= allowed_length (a suffix of ids that occurred
-- before, followed by that token) loses multiplier * base^(L - allowed).
-- Repeats do not reach back over a sequence breaker (`breakers`, a set of
-- token ids whose text holds a breaker string), and breakers are never
-- penalised. ids[first .. first+n-1] is the window looked at.
function M.dry(scores, ids, first, n, o, breakers)
  local multiplier, base, allowed = o.dry_multiplier, o.dry_base or 1.75, o.dry_allowed_length or 2
  if multiplier == 0 or base < 1 or n <= allowed then return end
  local last = first + n - 1
  -- repeats may not span the last breaker: rep_limit tokens after it
  local rep_limit = n
  for i = 0, n - 1 do
    if breakers[ids[last - i]] then rep_limit = i; break end
  end
  if rep_limit < allowed then return end
  -- for each earlier position p: how many tokens ending at p match the
  -- tokens ending at the last one (capped at rep_limit); the token after p
  -- would extend that repeat
  local max_repeat = {}
  for p = last - 1, first, -1 do
    local len = 0
    while len < rep_limit and p - len >= first and ids[p - len] == ids[last - len] do len = len + 1 end
    if len >= allowed then
      local next_id = ids[p + 1]
      if max_repeat[next_id] == nil or max_repeat[next_id] < len then max_repeat[next_id] = len end
    end
  end
  local max_exponent = 0
  if base > 1.000001 then max_exponent = math.floor(88.7228391 / log(base)) end
  for id, len in pairs(max_repeat) do
    if not breakers[id] then
      local e = len - allowed
      if max_exponent > 0 and e > max_exponent then e = max_exponent end
      scores[id] = scores[id] - multiplier * base ^ e
    end
  end
end

-- ---------------------------------------------------------------- warpers

function M.temperature(scores, n_vocab, t)
  for i = 0, n_vocab - 1 do scores[i] = scores[i] / t end
end

-- Token ids with finite scores, sorted by score, highest first (ties by id).
local function ranked(scores, n_vocab)
  local order = {}
  for i = 0, n_vocab - 1 do
    if scores[i] > NEG_INF then order[#order + 1] = i end
  end
  table.sort(order, function(a, b)
    local sa, sb = scores[a], scores[b]
    if sa ~= sb then return sa > sb end
    return a < b
  end)
  return order
end

-- Softmax over all of scores (-inf → 0), as probabilities by id.
local function softmax(scores, n_vocab)
  local max = NEG_INF
  for i = 0, n_vocab - 1 do if scores[i] > max then max = scores[i] end end
  local p, sum = {}, 0
  for i = 0, n_vocab - 1 do
    local e = scores[i] > NEG_INF and exp(scores[i] - max) or 0
    p[i] = e
    sum = sum + e
  end
  for i = 0, n_vocab - 1 do p[i] = p[i] / sum end
  return p
end

-- The k-th highest of the finite scores, or nil when there are k or fewer:
-- a min-heap of the k highest seen, so a large vocabulary costs
-- n log k comparisons of numbers instead of a sort with a Lua comparator.
local function kth_highest(scores, n_vocab, k)
  local heap, n = {}, 0
  for i = 0, n_vocab - 1 do
    local v = scores[i]
    if v > NEG_INF then
      if n < k then
        n = n + 1
        local j = n
        while j > 1 do -- sift up
          local parent = math.floor(j / 2)
          if heap[parent] <= v then break end
          heap[j] = heap[parent]
          j = parent
        end
        heap[j] = v
      elseif v > heap[1] then
        local j = 1
        while true do -- sift down from the root, replacing the smallest
          local c = 2 * j
          if c > k then break end
          if c < k and heap[c + 1] < heap[c] then c = c + 1 end
          if heap[c] >= v then break end
          heap[j] = heap[c]
          j = c
        end
        heap[j] = v
      end
    end
  end
  if n < k then return nil end
  return heap[1]
end

--- TopKLogitsWarper: scores below the k-th highest get -inf.
function M.top_k(scores, n_vocab, k, keep)
  k = math.min(math.max(k, keep or 1), n_vocab)
  local kth = kth_highest(scores, n_vocab, k)
  if not kth then return end
  for i = 0, n_vocab - 1 do if scores[i] < kth then scores[i] = NEG_INF end end
end

--- TopPLogitsWarper: ascending cumulative probability <= 1 - top_p removed,
-- the min_tokens_to_keep highest kept.
function M.top_p(scores, n_vocab, top_p, keep)
  keep = keep or 1
  local p = softmax(scores, n_vocab)
  local order = ranked(scores, n_vocab) -- highest first; cumulate from the lowest
  local n = #order
  local cum = 0
  for r = n, 1, -1 do
    local id = order[r]
    cum = cum + p[id]
    if cum <= 1 - top_p and r > keep then scores[id] = NEG_INF end
  end
end

--- MinPLogitsWarper: probability < min_p * the highest probability removed.
function M.min_p(scores, n_vocab, min_p, keep)
  keep = keep or 1
  local p = softmax(scores, n_vocab)
  local order = ranked(scores, n_vocab)
  if #order == 0 then return end
  local threshold = min_p * p[order[1]]
  for r = keep + 1, #order do
    local id = order[r]
    if p[id] < threshold then scores[id] = NEG_INF end
  end
end

--- TypicalLogitsWarper: keeps the tokens whose surprise is closest to the
-- entropy, until their probability mass reaches `mass`.
function M.typical(scores, n_vocab, mass, keep)
  keep = keep or 1
  local p = softmax(scores, n_vocab)
  local ent = 0
  for i = 0, n_vocab - 1 do
    if p[i] > 0 then ent = ent - log(p[i]) * p[i] end
  end
  -- Only tokens with p > 0 are sorted: the others (shifted = inf) sort
  -- last, after every finite one, and are already -inf.
  local shifted, order = {}, {}
  for i = 0, n_vocab - 1 do
    if p[i] > 0 then
      shifted[i] = abs(-log(p[i]) - ent)
      order[#order + 1] = i
    end
  end
  table.sort(order, function(a, b)
    if shifted[a] ~= shifted[b] then return shifted[a] < shifted[b] end
    return a < b
  end)
  -- last_ind: how many leading tokens have cumulative probability < mass
  local cum, last = 0, 0
  for r = 1, #order do
    cum = cum + p[order[r]]
    if cum < mass then last = r else break end
  end
  if last > n_vocab - 1 then last = n_vocab - 1 end
  if last + 1 > #order then return end -- the cut falls among the -inf ones: nothing more goes
  local cut = shifted[order[last + 1]]
  for r = keep + 1, #order do
    local id = order[r]
    if shifted[id] > cut then scores[id] = NEG_INF end
  end
end

--- llama.cpp's top-n-sigma: logits below max - n * (their standard
-- deviation) removed; the statistics are over the finite logits
-- (population standard deviation). n <= 0 is off.
function M.top_n_sigma(scores, n_vocab, n)
  if n <= 0 then return end
  local max, sum, count = NEG_INF, 0, 0
  for i = 0, n_vocab - 1 do
    local v = scores[i]
    if v > NEG_INF then
      if v > max then max = v end
      sum, count = sum + v, count + 1
    end
  end
  if count <= 1 then return end
  local mean, acc = sum / count, 0
  for i = 0, n_vocab - 1 do
    local v = scores[i]
    if v > NEG_INF then acc = acc + (v - mean) ^ 2 end
  end
  local cut = max - n * math.sqrt(acc / count)
  for i = 0, n_vocab - 1 do if scores[i] < cut then scores[i] = NEG_INF end end
end

--- llama.cpp's XTC ("exclude top choices"): with chance `probability`
-- (u, a uniform draw in [0, 1), decides), every token with p >= threshold
-- but the least likely of them is removed. threshold > 0.5 is off (at
-- most one token can pass it).
function M.xtc(scores, n_vocab, probability, threshold, u, keep)
  keep = keep or 1
  if probability <= 0 or threshold > 0.5 or u > probability then return end
  local p = softmax(scores, n_vocab)
  local order = ranked(scores, n_vocab)
  if #order < 2 then return end
  local pos_last = 0 -- 0-based rank of the last token at or over the threshold
  for r = 1, #order do
    if p[order[r]] >= threshold then pos_last = r - 1 else break end
  end
  if #order - pos_last >= keep and pos_last > 0 then
    for r = 1, pos_last do scores[order[r]] = NEG_INF end
  end
end

--- Mirostat (v1, llama.cpp's llama_sampler_mirostat): estimates the Zipf
-- exponent s from the m most likely tokens, keeps the top k that the
-- target surprise mu allows. Returns the kept probabilities by id (for
-- M.mirostat_update once a token is drawn).
function M.mirostat_v1(scores, n_vocab, mu, m)
  local p = softmax(scores, n_vocab)
  local order = ranked(scores, n_vocab)
  local sum_ti_bi, sum_ti_sq = 0, 0
  for i = 0, math.min(m - 1, #order - 1) - 1 do
    local t_i = log((i + 2) / (i + 1))
    local b_i = log(p[order[i + 1]] / p[order[i + 2]])
    sum_ti_bi = sum_ti_bi + t_i * b_i
    sum_ti_sq = sum_ti_sq + t_i * t_i
  end
  local s_hat = sum_ti_bi / sum_ti_sq
  local eps = s_hat - 1
  local k = ((eps * 2 ^ mu) / (1 - n_vocab ^ (-eps))) ^ (1 / s_hat)
  k = k ~= k and 1 or math.max(math.floor(math.min(k, #order)), 1)
  for r = k + 1, #order do scores[order[r]] = NEG_INF end
  return softmax(scores, n_vocab)
end

--- Mirostat v2: tokens whose surprise -log2 p exceeds mu removed (the most
-- likely one always stays). Returns the kept probabilities by id.
function M.mirostat_v2(scores, n_vocab, mu)
  local p = softmax(scores, n_vocab)
  local order = ranked(scores, n_vocab)
  local cut = #order
  for r = 1, #order do
    if -log(p[order[r]]) / log(2) > mu then cut = r - 1; break end
  end
  if cut == 0 then cut = 1 end
  for r = cut + 1, #order do scores[order[r]] = NEG_INF end
  return softmax(scores, n_vocab)
end

--- Mirostat's learning step once token id was drawn with probability p:
-- mu - eta * (surprise - tau).
function M.mirostat_update(mu, p, tau, eta)
  return mu - eta * (-log(p) / log(2) - tau)
end

-- ---------------------------------------------------------------- the chain

-- DRY's sequence breakers as token ids: every token whose text holds one
-- of the strings (llama.cpp's rule for one-token breakers; a breaker that
-- spans several tokens is not looked for). Cached on the model per list.
local DRY_BREAKERS = { "\n", ":", "\"", "*" }
local function dry_breakers(model, strings)
  local key = table.concat(strings, "\0")
  model._dry_breakers = model._dry_breakers or {}
  local set = model._dry_breakers[key]
  if set then return set end
  set = {}
  for id = 0, model.n_vocab - 1 do
    local text = model:detokenize({ id }, { special = true }) or "" -- the piece, as llama.cpp detokenizes it
    for _, b in ipairs(strings) do
      if text:find(b, 1, true) then set[id] = true; break end
    end
  end
  model._dry_breakers[key] = set
  return set
end

--- A row's state for M.apply: XTC's draws (a stream of its own,
-- from the row's seed), DRY's breakers; mirostat keeps mu in it.
function M.state(model, opts, seed)
  local st = {}
  if (opts.dry_multiplier or 0) > 0 then
    st.breakers = dry_breakers(model, opts.dry_sequence_breakers or DRY_BREAKERS)
  end
  if (opts.xtc_probability or 0) > 0 and seed then
    local lf = require("lrun.ffi") -- the library only when XTC draws
    local ffi, C = lf.ffi, lf.C
    local out = ffi.new("lrun_rng *[1]")
    if C.lrun_rng_init(out, (seed + 0x58544300) % 2 ^ 53) == C.LRUN_OK then
      local rng = ffi.gc(out[0], C.lrun_rng_free)
      st.uniform = function() return C.lrun_rng_uniform(rng) end
      st.free = function()
        if rng then ffi.gc(rng, nil); C.lrun_rng_free(rng); rng = nil end
      end
    end
  end
  return st
end

--- True when the options need the Lua chain (the C sampler does the rest).
function M.wanted(opts)
  return (opts.no_repeat_ngram_size or 0) > 0 or opts.bad_words_ids ~= nil or (opts.min_length or 0) > 0
    or (opts.min_new_tokens or 0) > 0 or opts.suppress_tokens ~= nil or (opts.typical_p or 1) < 1
    or (opts.presence_penalty or 0) ~= 0 or (opts.frequency_penalty or 0) ~= 0
    or opts.logits_processor ~= nil or opts.output_scores == true or opts.output_logits == true
    or M.llama_wanted(opts)
end

--- True when an option of llama.cpp's samplers is on (DRY, top-n-sigma,
-- XTC, mirostat). A penalty window alone (repeat_last_n) needs no Lua:
-- the C sampler takes the window as its history.
function M.llama_wanted(opts)
  return (opts.dry_multiplier or 0) > 0 or (opts.top_n_sigma or -1) > 0 or (opts.xtc_probability or 0) > 0
    or (opts.mirostat or 0) > 0
end

--- Applies the chain to one row in place.
-- @tparam table opts generate's options (checked)
-- @tparam cdata scores float[n_vocab]
-- @tparam int n_vocab
-- @tparam cdata ids int32[n] the sequence so far
-- @tparam int n
-- @tparam int n_prompt tokens of the prompt in ids
-- @tparam table eos {[id]=true}
-- @tparam {int,...} eos_list
-- @tparam[opt] table st the row's sampler state: uniform (a function → [0, 1),
--   for XTC), breakers (DRY's set of ids), mu (mirostat's; set here), kept
--   (mirostat's probabilities by id, for M.accept)
function M.apply(opts, scores, n_vocab, ids, n, n_prompt, eos, eos_list, st)
  local wfirst, wn = M.window(n, opts.repeat_last_n)
  local wids = wfirst > 0 and ids + wfirst or ids -- (wn,) the penalties' window
  if opts.repetition_penalty ~= 1 then M.repetition_penalty(scores, wids, wn, opts.repetition_penalty) end
  if (opts.presence_penalty or 0) ~= 0 or (opts.frequency_penalty or 0) ~= 0 then
    M.presence_frequency(scores, wids, wn, opts.presence_penalty or 0, opts.frequency_penalty or 0)
  end
  if (opts.dry_multiplier or 0) > 0 then
    local first, count = M.window(n, opts.dry_penalty_last_n)
    M.dry(scores, ids, first, count, opts, st and st.breakers or {})
  end
  if (opts.no_repeat_ngram_size or 0) > 0 then M.no_repeat_ngram(scores, ids, n, opts.no_repeat_ngram_size) end
  if opts.bad_words_ids then M.bad_words(scores, ids, n, opts.bad_words_ids, eos) end
  if (opts.min_length or 0) > 0 then M.min_length(scores, n, opts.min_length, eos_list) end
  if (opts.min_new_tokens or 0) > 0 then M.min_length(scores, n - n_prompt, opts.min_new_tokens, eos_list) end
  if opts.suppress_tokens then M.suppress(scores, opts.suppress_tokens, n_vocab) end
  local procs = opts.logits_processor
  if procs then
    if type(procs) == "function" then procs = { procs } end
    local list = {}
    for i = 0, n - 1 do list[i + 1] = ids[i] end
    for _, f in ipairs(procs) do
      local out = f(list, scores, n_vocab)
      if out ~= nil and out ~= scores then
        for i = 0, n_vocab - 1 do scores[i] = out[i] end
      end
    end
  end
  if opts.do_sample then
    local keep = 1
    if opts.temperature ~= 1 then M.temperature(scores, n_vocab, opts.temperature) end
    local mirostat = opts.mirostat or 0
    if mirostat > 0 then
      -- llama.cpp's chain with mirostat: temperature, then mirostat alone
      st = st or {}
      local tau = opts.mirostat_tau or 5.0
      st.mu = st.mu or 2 * tau
      if mirostat == 1 then st.kept = M.mirostat_v1(scores, n_vocab, st.mu, 100)
      else st.kept = M.mirostat_v2(scores, n_vocab, st.mu) end
      return
    end
    if (opts.top_n_sigma or -1) > 0 then M.top_n_sigma(scores, n_vocab, opts.top_n_sigma) end
    if opts.top_k ~= 0 then M.top_k(scores, n_vocab, opts.top_k, keep) end
    if opts.top_p < 1 then M.top_p(scores, n_vocab, opts.top_p, keep) end
    if opts.min_p > 0 then M.min_p(scores, n_vocab, opts.min_p, keep) end
    if (opts.typical_p or 1) < 1 then M.typical(scores, n_vocab, opts.typical_p, keep) end
    if (opts.xtc_probability or 0) > 0 then
      local u = st and st.uniform and st.uniform() or 0
      M.xtc(scores, n_vocab, opts.xtc_probability, opts.xtc_threshold or 0.1, u, keep)
    end
  end
end

--- After a token is drawn: mirostat's mu learns from its surprise.
function M.accept(opts, st, id)
  if st and st.kept and st.kept[id] and st.kept[id] > 0 then
    st.mu = M.mirostat_update(st.mu, st.kept[id], opts.mirostat_tau or 5.0, opts.mirostat_eta or 0.1)
  end
end

return M
