--- lrun.beam_groups — group (diverse) beam search with HF transformers'
-- semantics (GenerationMixin._group_beam_search, BeamSearchScorer and
-- HammingDiversityLogitsProcessor of transformers 4.55).
--
-- num_beams beams in num_beam_groups groups of G = num_beams/num_beam_groups;
-- each group keeps its own finished hypotheses (lrun.beam_hyps). Each step
-- the groups are decoded in order; for group g:
--   1. each beam's log-softmax (then repetition penalty, when set), minus
--      diversity_penalty × how many beams of groups 0..g-1 chose each token
--      at this step (Hamming diversity; a finished group counts as having
--      chosen pad_token_id), plus the beam's score: the penalty stays in the
--      score, as in HF;
--   2. the K = max(2, 1 + #eos) · G best (beam, token) candidates in order:
--      an eos token among the first G finishes a hypothesis (its score over
--      the generated length with the eos), later eos are skipped, other
--      tokens fill the G new beams;
--   3. the group is done when it holds G hypotheses and (early_stopping =
--      true, or the best candidate's score over the length, or over
--      max_new_tokens for "never" with length_penalty > 0, cannot beat the
--      worst of them).
-- The run ends when every group is done or at max_new_tokens; then every
-- group not done adds its running beams, and the best num_return_sequences
-- of all groups' hypotheses are returned (equal scores: the later group's first).
-- At the start each group's first beam scores 0 and the rest -1e9, as in HF.
-- @module lrun.beam_groups
local lf = require("lrun.ffi")
local topk = require("lrun.beam_topk")
local beam = require("lrun.beam")
local beam_slots = require("lrun.beam_slots")
local beam_hyps = require("lrun.beam_hyps")
local sys = require("lrun.sys")
local ffi = lf.ffi

local M = {}

local NEG = -1.0e9

-- One group's step. prev: token counts of the earlier groups this step.
local function step_group(P, gi, logits, n_vocab, o, g, eos, prev, n_prev_distinct)
  local G = P.G
  local first = (gi - 1) * G
  local K = P.K
  local tops = {}
  local cands = {}
  for j = 1, G do
    local b = P.beams[first + j]
    local t = tops[b.row]
    if not t then
      local row = logits + b.row * n_vocab
      if not P.processed[b.row] then
        beam.log_probs(row, n_vocab, o.repetition_penalty, P.prompt, b.tokens)
        P.processed[b.row] = true
      end
      -- the penalty lowers at most n_prev_distinct tokens: the best K after
      -- it are among the best K + n_prev_distinct before it
      local ids, vals = topk.row(row, n_vocab, K + n_prev_distinct)
      for i = 1, #ids do
        local c = prev[ids[i]]
        if c then vals[i] = vals[i] - o.diversity_penalty * c end
      end
      t = { ids = ids, vals = vals }
      tops[b.row] = t
    end
    for i = 1, #t.ids do
      cands[#cands + 1] = { score = b.score + t.vals[i], beam = first + j, token = t.ids[i],
                            flat = (j - 1) * n_vocab + t.ids[i] }
    end
  end
  topk.sort(cands)
  for i = #cands, K + 1, -1 do cands[i] = nil end

  local hyps = P.hyps[gi]
  local new = {}
  for rank, c in ipairs(cands) do
    local parent = P.beams[c.beam]
    if eos[c.token] then
      if rank <= G then hyps:add(parent.tokens, c.score, g + 1, true) end
    else
      new[#new + 1] = { tokens = beam.append(parent.tokens, c.token), score = c.score, parent_slot = parent.slot }
    end
    if #new == G then break end
  end
  if #new < G then error("beam_groups: fewer than " .. G .. " candidates that are not eos") end
  P.done[gi] = P.done[gi] or hyps:is_done(cands[1].score, g + 1)
  for j = 1, G do P.beams[first + j] = new[j] end
end

--- Runs group beam search for a batch of prompts.
-- @tparam table run {model=, prompts=, opts=, eos=, eos_list=, pad=, check_interrupt=}
-- @tparam table stats
-- @treturn[1] {{ids=, score=, reason=},...} num_return_sequences per prompt, best first
-- @treturn[2] nil
-- @treturn[2] table error
function M.run(run, stats)
  local o, eos = run.opts, run.eos
  local nb, ng = o.num_beams, o.num_beam_groups
  local G = nb / ng
  local model = run.model
  local n_vocab = model.n_vocab
  return require("lrun.engine_rows").with_rows(model, #run.prompts * nb, o, function(rows)
    local K = math.max(2, 1 + #run.eos_list) * G
    local prompts, entries = {}, {}
    for p, ids in ipairs(run.prompts) do
      local base = (p - 1) * nb
      local P = { prompt = ids, G = G, K = K, beams = {}, hyps = {}, done = {},
                  slots = beam_slots.new(rows, base, nb) }
      for j = 1, nb do
        P.beams[j] = { tokens = {}, score = ((j - 1) % G == 0) and 0 or NEG, slot = base, row = p - 1 }
      end
      for gi = 1, ng do
        P.hyps[gi] = beam_hyps.new(G, o.length_penalty, o.early_stopping, o.max_new_tokens)
        P.done[gi] = false
      end
      prompts[p] = P
      entries[p] = { slot = base, ids = ids }
    end
    local logits, e = rows:prefill(entries, stats)
    if not logits then return nil, e end
    local t1 = sys.now()

    local g = 0
    while true do
      run.check_interrupt()
      for _, P in ipairs(prompts) do
        P.processed = {}
        local prev, n_distinct = {}, 0
        local function count(tok)
          if not prev[tok] then prev[tok] = 0; n_distinct = n_distinct + 1 end
          prev[tok] = prev[tok] + 1
        end
        for gi = 1, ng do
          if P.done[gi] then
            -- a finished group's beams take pad_token_id at every step
            for _ = 1, G do count(run.pad) end
          else
            step_group(P, gi, logits, n_vocab, o, g, eos, prev, n_distinct)
            for j = 1, G do local b = P.beams[(gi - 1) * G + j]; count(b.tokens[#b.tokens]) end
          end
        end
      end
      g = g + 1
      local all_done = true
      for _, P in ipairs(prompts) do
        for gi = 1, ng do if not P.done[gi] then all_done = false end end
      end
      if all_done or g >= o.max_new_tokens then break end
      -- the next step: the beams of groups not done, in their slots
      local n = 0
      local tokens = ffi.new("int32_t[?]", #prompts * nb)
      local slot_ids = ffi.new("int32_t[?]", #prompts * nb)
      for _, P in ipairs(prompts) do
        local live = {}
        for gi = 1, ng do
          if not P.done[gi] then
            for j = 1, G do live[#live + 1] = P.beams[(gi - 1) * G + j] end
          end
        end
        local ce
        n, ce = P.slots:place(live, n, tokens, slot_ids)
        if not n then return nil, ce end
      end
      logits, e = rows:step(n, tokens, slot_ids)
      if not logits then return nil, e end
    end
    stats.generate_seconds = stats.generate_seconds + (sys.now() - t1)

    local results = {}
    stats.beam_copies = stats.beam_copies or 0
    for _, P in ipairs(prompts) do
      stats.beam_copies = stats.beam_copies + P.slots.copies
      local all = {}
      for gi = 1, ng do
        if not P.done[gi] then
          for j = 1, G do
            local b = P.beams[(gi - 1) * G + j]
            P.hyps[gi]:add(b.tokens, b.score, g, false)
          end
        end
        for _, h in ipairs(P.hyps[gi].beams) do all[#all + 1] = h end
      end
      -- Python's stable sort ascending, then pop() from the end
      local idx = {}
      for i = 1, #all do idx[i] = i end
      table.sort(idx, function(a, b)
        if all[a].score ~= all[b].score then return all[a].score > all[b].score end
        return a > b
      end)
      for i = 1, o.num_return_sequences do
        local h = all[idx[i]]
        results[#results + 1] = { ids = h.tokens, score = h.score, reason = h.eos and "eos" or "length" }
      end
    end
    return results
  end)
end

return M
