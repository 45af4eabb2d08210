--- tests.bf16_model_fixture — the packed specs' model and run: a generated
-- bf16 model with trained-like values (PEX2 packs it to about 0.70), loaded
-- quietly on two threads, and the greedy run whose tokens and logits they
-- compare placements by (tests/pack_plan_spec.lua, packed_place_spec.lua,
-- pack_plan_gpu_spec.lua).
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

local M = {}

M.PROMPT = { 1, 300, 42, 7, 260, 99, 12 }

--- Writes the model: shape = {n_layer=, n_embd=, n_head=, n_head_kv=, n_ff=, n_vocab=, seed=, threads=,
-- arch=, n_expert=, n_expert_used=} (a mixture of experts where n_expert is given).
function M.generate(path, shape)
  local s = ffi.new("lrun_model_gen_spec")
  s.arch, s.n_expert, s.n_expert_used = shape.arch, shape.n_expert or 0, shape.n_expert_used or 0
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = shape.n_layer, shape.n_embd, shape.n_head, shape.n_head_kv,
    shape.n_ff
  s.n_vocab, s.n_ctx = shape.n_vocab or 512, 256
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_BF16, C.LRUN_DTYPE_BF16, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads, s.trained_stats = 10000, 1e-5, shape.seed, shape.threads or 1, 1
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
end

--- lrun.load with progress off and two threads (opts is changed).
function M.load(path, opts)
  opts = opts or {}
  opts.progress, opts.threads = false, 2
  return lrun.load(path, opts)
end

--- Five greedy tokens after M.PROMPT, and the prompt's logits.
function M.run(m)
  local _, ids = assert(m:generate(M.PROMPT, { max_new_tokens = 5 }))
  return ids, assert(m:logits(M.PROMPT))
end

return M
