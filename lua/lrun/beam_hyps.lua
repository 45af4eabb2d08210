--- lrun.beam_hyps — the finished hypotheses of one beam group, as HF's
-- BeamHypotheses (transformers 4.55, generation/beam_search.py) keeps them:
-- at most n entries, each scored sum log-prob / generated_len^length_penalty;
-- a new entry enters while there is room or when it beats the worst, which
-- then leaves (the earliest added of equal worst scores).
-- @module lrun.beam_hyps
local M = {}

local Hyps = {}
Hyps.__index = Hyps

--- @tparam int n hypotheses kept (the group size)
-- @tparam number length_penalty
-- @tparam boolean|string early_stopping false, true or "never"
-- @tparam int max_new_tokens HF's max_length - prompt length
function M.new(n, length_penalty, early_stopping, max_new_tokens)
  return setmetatable({ n = n, lp = length_penalty, es = early_stopping, max_new = max_new_tokens,
    beams = {}, worst = 1e9 }, Hyps)
end

--- Adds a hypothesis.
-- @tparam {int,...} tokens generated tokens
-- @tparam number sum_logprobs its beam score
-- @tparam int generated_len the length the penalty divides by
-- @tparam boolean eos finished by an eos token
function Hyps:add(tokens, sum_logprobs, generated_len, eos)
  local score = sum_logprobs / (generated_len ^ self.lp)
  local beams = self.beams
  if #beams < self.n or score > self.worst then
    beams[#beams + 1] = { score = score, tokens = tokens, eos = eos }
    if #beams > self.n then
      -- sorted by (score, index): the lowest goes, the next lowest is the new worst
      local order = {}
      for i in ipairs(beams) do order[i] = i end
      table.sort(order, function(a, b)
        if beams[a].score ~= beams[b].score then return beams[a].score < beams[b].score end
        return a < b
      end)
      local worst2 = beams[order[2]].score
      table.remove(beams, order[1])
      self.worst = worst2
    else
      self.worst = math.min(score, self.worst)
    end
  end
end

--- Whether no running beam can improve the group (HF's is_done).
-- @tparam number best_sum_logprobs the best candidate score of this step
-- @tparam int generated the generated length, the new token included
function Hyps:is_done(best_sum_logprobs, generated)
  if #self.beams < self.n then return false end
  if self.es == true then return true end
  local L = generated
  if self.es == "never" and self.lp > 0 then L = self.max_new end
  return self.worst >= best_sum_logprobs / (L ^ self.lp)
end

return M
