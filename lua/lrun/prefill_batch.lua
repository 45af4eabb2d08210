--- lrun.prefill_batch — how many prompt tokens one engine step takes (the
-- engine's n_batch_max, llama.cpp's -ub), chosen with the placement.
--
-- 512 (the engines' default, llama.cpp's n_ubatch) unless the load says
-- otherwise (`n_batch`, the CLI's -ub/-b) or the model is a mixture of
-- experts on CUDA that does not fit its device: its host experts are then
-- streamed to the GPU once per prefill chunk (docs/moe.md "Prefill:
-- streaming host experts"), every chunk of 512 tokens or more touching
-- nearly every expert, so a 4096-token prompt in chunks of 512 copies the
-- host experts eight times. Chunks of M.moe_tokens copy them twice; the
-- price is the larger scratch (activations and the experts' rows, about
-- 0.1 MiB a token on the 30B-A3B shape), which the planner sizes within
-- the budget like the rest of the engine's scratch, and takes only while
-- that costs at most M.max_scratch_share of the budget (M.affordable).
-- @module lrun.prefill_batch
local M = {}

M.default_tokens = 512 -- the engines' own default (0 asks for it)
M.moe_tokens = 2048 -- a mixture of experts that streams host experts (llama.cpp's default n_batch)

--- The engine's n_batch_max for a plan, and why (nil: the default).
-- @tparam table opts the plan's options (n_batch = the caller's, if any)
-- @tparam table q {cpu = bool, n_expert = experts per block (0: dense), fits = bool (every weight on the device)}
-- @treturn int tokens per step, 0 for the engine's default
-- @treturn[opt] string why, when not the default
function M.choose(opts, q)
  if opts.n_batch and opts.n_batch > 0 then return opts.n_batch, "asked" end
  if q.cpu or (q.n_expert or 0) == 0 or q.fits then return 0 end
  return M.moe_tokens, "host experts stream once per chunk"
end

M.max_scratch_share = 1 / 32 -- of the device budget: what the larger chunk's extra scratch may take

--- Whether a larger chunk's extra scratch is worth its room: at most
-- M.max_scratch_share of the budget (on the 30B-A3B shape at 8 GiB, 2048
-- tokens' extra ~0.25 GB is 3% of it, a few percent of resident experts; a
-- small model under a tight budget keeps 512 rather than trade its weights).
-- @tparam number extra bytes more scratch than the default chunk's
-- @tparam[opt] number capacity the device budget (nil: none)
function M.affordable(extra, capacity)
  return capacity == nil or extra <= capacity * M.max_scratch_share
end

--- The line --explain shows, or nil for the default.
function M.text(n_batch, why)
  if not n_batch or n_batch == 0 then return nil end
  return string.format("prefill: chunks of up to %d tokens (%s)", n_batch, why or "asked")
end

return M
