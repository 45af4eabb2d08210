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
-- 0.2 MiB a token on the 30B-A3B shape), which the planner sizes within
-- the budget like the rest of the engine's scratch.
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

--- The line --explain shows, or nil for the default.
function M.text(n_batch, why)
  if not n_batch or n_batch == 0 then return nil end
  return string.format("prefill: chunks of up to %d tokens (%s)", n_batch, why or "asked")
end

return M
