--- lrun.beam — beam search with HF transformers' semantics (GenerationMixin.
-- _beam_search of transformers 4.55, the vectorized one): per prompt,
-- num_beams running beams and num_beams finished ones.
--
-- Each step, per prompt:
--   1. every running beam's logits become log-probabilities (log-softmax,
--      then the repetition penalty when set), plus the beam's score;
--   2. the K = max(2, 1 + #eos) · num_beams best (beam, token) candidates;
--   3. a candidate "hits" when its token is an eos id or the step is the last;
--      the best num_beams that do not hit are the next running beams;
--   4. hits among the first num_beams candidates join the finished set with
--      score / (generated length, eos included)^length_penalty, unless the
--      set is full and early_stopping is true, or the prompt is settled; the
--      best num_beams of old and new stay;
--   5. the prompt is settled when all num_beams finished slots are taken and
--      the best running score / L^length_penalty cannot beat the worst
--      finished score, with L the generated length, or the longest one
--      (max_new_tokens) for early_stopping = "never" with length_penalty > 0.
-- The run ends when every prompt is settled (or full, for early_stopping =
-- true) or at max_new_tokens. At the start only beam 0 is live (the others
-- score -1e9, as in HF), so the first step's candidates all extend it.
--
-- Scores are summed in double precision (HF sums in f32).
-- @module lrun.beam
local lf = require("lrun.ffi")
local topk = require("lrun.beam_topk")
local beam_slots = require("lrun.beam_slots")
local sys = require("lrun.sys")
local ffi, C = lf.ffi, lf.C

local M = {}

local NEG = -1.0e9

-- The log-probabilities of a logits row, in place, with the repetition
-- penalty over prompt and beam tokens when it is set (HF applies its
-- processors to the log-probabilities in beam search).
local function log_probs(row, n_vocab, penalty, prompt, tokens)
  C.lrun_logits_log_softmax(row, n_vocab)
  if penalty ~= 1.0 then
    local n = #prompt + #tokens
    local h = ffi.new("int32_t[?]", n)
    for i = 1, #prompt do h[i - 1] = prompt[i] end
    for i = 1, #tokens do h[#prompt + i - 1] = tokens[i] end
    C.lrun_logits_repetition_penalty(row, n_vocab, h, n, penalty)
  end
end

-- The same with every processor of lrun.logits_process that the options
-- ask for (no_repeat_ngram_size, bad_words_ids, min_length, min_new_tokens,
-- suppress_tokens, the caller's logits_processor; repetition_penalty
-- among them), in transformers' order, over prompt and beam tokens, as
-- GenerationMixin._beam_search runs its logits_processor on log_softmax.
local function processed_log_probs(row, n_vocab, o, prompt, tokens, eos, eos_list)
  C.lrun_logits_log_softmax(row, n_vocab)
  local n = #prompt + #tokens
  local h = ffi.new("int32_t[?]", n)
  for i = 1, #prompt do h[i - 1] = prompt[i] end
  for i = 1, #tokens do h[#prompt + i - 1] = tokens[i] end
  require("lrun.logits_process").apply(o, row, n_vocab, h, n, #prompt, eos, eos_list)
end
M.log_probs = log_probs

local function append(list, x)
  local t = {}
  for i = 1, #list do t[i] = list[i] end
  t[#t + 1] = x
  return t
end
M.append = append

-- One prompt's step over its running beams' rows. g: tokens generated so far.
local function step_prompt(P, logits, n_vocab, o, g, eos, last)
  local nb = o.num_beams
  local K = P.K
  -- rows shared by several beams (the first step) are processed once
  local tops = {}
  local cands = {}
  for j, b in ipairs(P.running) do
    local t = tops[b.row]
    if not t then
      local row = logits + b.row * n_vocab
      if P.processors then
        processed_log_probs(row, n_vocab, o, P.prompt, b.tokens, eos, P.eos_list)
      else
        log_probs(row, n_vocab, o.repetition_penalty, P.prompt, b.tokens)
      end
      local ids, vals = topk.row(row, n_vocab, K)
      t = { ids = ids, vals = vals }
      tops[b.row] = t
    end
    for i = 1, #t.ids do
      cands[#cands + 1] = { score = b.score + t.vals[i], beam = j, token = t.ids[i],
                            flat = (j - 1) * n_vocab + t.ids[i] }
    end
  end
  topk.sort(cands)
  for i = #cands, K + 1, -1 do cands[i] = nil end
  for _, c in ipairs(cands) do c.hit = last or eos[c.token] == true end

  -- next running beams: the best num_beams candidates that do not hit
  local order = {}
  for i, c in ipairs(cands) do order[i] = { score = c.score + (c.hit and NEG or 0), flat = i, c = c } end
  topk.sort(order)
  local running = {}
  for i = 1, nb do
    local c = order[i].c
    local parent = P.running[c.beam]
    running[i] = { tokens = append(parent.tokens, c.token), score = order[i].score, parent_slot = parent.slot }
  end

  -- finished beams
  local full = true
  for i = 1, nb do if not P.fin[i].finished then full = false end end
  local block = (full and o.early_stopping == true) or not P.unsatisfied
  local merged = {}
  for i, f in ipairs(P.fin) do merged[i] = { score = f.score, flat = i, f = f } end
  local denom = (g + 1) ^ o.length_penalty
  for r, c in ipairs(cands) do
    local just = c.hit and r <= nb
    local s = c.score / denom
    if block then s = s + NEG end
    if not just then s = s + NEG end
    local parent = P.running[c.beam]
    merged[#merged + 1] = { score = s, flat = nb + r, f = { tokens = append(parent.tokens, c.token),
      score = s, finished = just, eos = just and eos[c.token] == true } }
  end
  topk.sort(merged)
  local fin = {}
  for i = 1, nb do fin[i] = merged[i].f end
  P.fin = fin
  P.running = running
end

-- Whether the prompt can still improve (HF's early-stop heuristic), after
-- a step; g: tokens generated so far.
local function still_unsatisfied(P, o, g)
  if not P.unsatisfied then return false end
  local L = (o.early_stopping == "never" and o.length_penalty > 0) and o.max_new_tokens or g
  local best = P.running[1].score / (L ^ o.length_penalty)
  local worst = math.huge
  for _, f in ipairs(P.fin) do if f.score < worst then worst = f.score end end
  for _, f in ipairs(P.fin) do
    local w = f.finished and worst or NEG
    if best > w then return true end
  end
  return false
end

local function is_active(P, o)
  if not P.unsatisfied then return false end
  if o.early_stopping == true then
    for _, f in ipairs(P.fin) do if not f.finished then return true end end
    return false
  end
  return true
end

--- Runs beam search for a batch of prompts.
-- @tparam table run {model=, prompts={{int,...},...}, opts=, eos={[id]=true}, eos_list=, check_interrupt=, t0=}
-- @tparam table stats timings are added here
-- @treturn[1] {{ids=, score=, reason=},...} num_return_sequences per prompt, best first
-- @treturn[2] nil
-- @treturn[2] table error
function M.run(run, stats)
  local o, eos = run.opts, run.eos
  local nb = o.num_beams
  local model = run.model
  local n_vocab = model.n_vocab
  return require("lrun.engine_rows").with_rows(model, #run.prompts * nb, o, function(rows)
    local K = math.max(2, 1 + #run.eos_list) * nb
    local processors = require("lrun.logits_process").wanted(o)
    local deadline = o.max_time and (run.t0 or sys.now()) + o.max_time
    local prompts, entries = {}, {}
    for p, ids in ipairs(run.prompts) do
      local base = (p - 1) * nb
      local P = { prompt = ids, K = K, unsatisfied = true, running = {}, fin = {},
                  slots = beam_slots.new(rows, base, nb), processors = processors, eos_list = run.eos_list }
      for j = 1, nb do
        P.running[j] = { tokens = {}, score = j == 1 and 0 or NEG, slot = base, row = p - 1 }
        P.fin[j] = { tokens = {}, score = NEG, finished = false }
      end
      prompts[p] = P
      entries[p] = { slot = base, ids = ids }
    end
    local logits, e = rows:prefill(entries, stats)
    if not logits then return nil, e end
    local t1 = sys.now()

    local max_new = o.max_new_tokens
    for g = 0, max_new - 1 do
      run.check_interrupt()
      -- max_time: a candidate past the deadline hits a stopping criterion,
      -- as at the last step (HF's MaxTimeCriteria in beam search)
      local last = g + 1 >= max_new or (deadline ~= nil and sys.now() >= deadline)
      local any = false
      for _, P in ipairs(prompts) do
        if is_active(P, o) then
          step_prompt(P, logits, n_vocab, o, g, eos, last)
          P.unsatisfied = still_unsatisfied(P, o, g + 1)
          if is_active(P, o) then any = true end
        end
      end
      if last or not any then break end
      -- the next step: each active prompt's running beams, in their slots
      local n = 0
      local tokens = ffi.new("int32_t[?]", #prompts * nb)
      local slot_ids = ffi.new("int32_t[?]", #prompts * nb)
      for _, P in ipairs(prompts) do
        if is_active(P, o) then
          local ce
          n, ce = P.slots:place(P.running, n, tokens, slot_ids)
          if not n then return nil, ce end
        end
      end
      logits, e = rows:step(n, tokens, slot_ids)
      if not logits then return nil, e end
    end
    stats.generate_seconds = stats.generate_seconds + (sys.now() - t1)

    local results = {}
    stats.beam_copies = (stats.beam_copies or 0)
    for _, P in ipairs(prompts) do
      stats.beam_copies = stats.beam_copies + P.slots.copies
      for i = 1, o.num_return_sequences do
        local f = P.fin[i]
        local ids = {}
        for k, id in ipairs(f.tokens) do
          if not (k == #f.tokens and f.eos) then ids[#ids + 1] = id end
        end
        results[#results + 1] = { ids = ids, score = f.score, reason = f.eos and "eos" or "length" }
      end
    end
    return results
  end)
end

return M
