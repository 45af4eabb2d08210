--- tests/arch_models.lua — the random-weight model of each architecture that
-- lrun is checked with against llama.cpp (tests/llamacpp_arch_spec.lua,
-- golden by tests/golden/make_arch_golden.py) and against itself across
-- backends (tests/engine_gpu_spec.lua). Tiny shapes; the same seed gives the
-- same file, so the golden's models are regenerated, never committed.
--
--   lrun tests/arch_models.lua OUTDIR [float]   writes OUTDIR/<name>.gguf for every
--                                               entry of M.models (of M.float_models with "float")
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C

local M = {}

local GEMMA_EXACT = "soft-caps and GeGLU go through tanhf, whose bits CUDA does not share with glibc"
local GPT_OSS_EXACT = "sinks, YaRN and the experts' swiglu_oai have no exact variant on CUDA (MXFP4 experts neither)"

-- name, arch, weight dtype, and what differs from the base shape below.
M.models = {
  { name = "llama_f32", arch = "llama", dtype = "f32" },
  -- Llama 3.1's rope_scaling as rope_freqs.weight (factor 8; head size 64 so
  -- that the low, smoothed and high frequency bands all occur)
  { name = "llama3_rope_f32", arch = "llama", dtype = "f32", head_dim = 64, rope_llama3_factor = 8,
    rope_freq_base = 500000 },
  { name = "qwen2_f32", arch = "qwen2", dtype = "f32" },
  { name = "qwen2_q8_0", arch = "qwen2", dtype = "q8_0" },
  -- head size 64, not n_embd / n_head = 32: q_dim 256 > n_embd, as Qwen3's
  { name = "qwen3_f32", arch = "qwen3", dtype = "f32", head_dim = 64 },
  { name = "qwen3_q8_0", arch = "qwen3", dtype = "q8_0", head_dim = 64 },
  -- fused attn_qkv and ffn_up [gate; up], split by the loader
  { name = "phi3_f32", arch = "phi3", dtype = "f32" },
  { name = "phi3_q8_0", arch = "phi3", dtype = "q8_0" },
  -- the 128k variants' LongRoPE: the long factors (context 256 > 64), then the short ones (256 < 4096)
  { name = "phi3_longrope_f32", arch = "phi3", dtype = "f32", rope_orig_ctx = 64 },
  { name = "phi3_shortrope_f32", arch = "phi3", dtype = "f32", rope_orig_ctx = 4096 },
  -- GeGLU, sandwich norms, embedding times sqrt(n_embd), soft-capping (50, 30), a window of 4 on the even
  -- blocks (4 layers: two windowed, two not); head size 64 (q_dim 256 > n_embd), tied head as llama.cpp's
  -- (no_cuda_exact: the CUDA exact path refuses it, so tests/arch_gpu_spec.lua runs only the fast path on
  -- it; the CPU's exact numerics stay the reference). Seed 2027: with
  -- 2026 one continuation ends inside a UTF-8 sequence and llama.cpp's server then sends no probabilities
  -- (the golden script needs them)
  { name = "gemma2_f32", arch = "gemma2", dtype = "f32", n_layer = 4, head_dim = 64, sliding_window = 4, seed = 2027,
    no_cuda_exact = GEMMA_EXACT },
  { name = "gemma2_q8_0", arch = "gemma2", dtype = "q8_0", n_layer = 4, head_dim = 64, sliding_window = 4, seed = 2027,
    no_cuda_exact = GEMMA_EXACT },
  -- gemma3: q/k head norms, no soft-caps; 7 layers so that block 5 is global (5 local : 1) and block 6 local
  -- again; global RoPE base 1e6 against the local blocks' 10000
  { name = "gemma3_f32", arch = "gemma3", dtype = "f32", n_layer = 7, head_dim = 64, sliding_window = 4,
    rope_freq_base = 1000000, no_cuda_exact = GEMMA_EXACT },
  { name = "gemma3_q8_0", arch = "gemma3", dtype = "q8_0", n_layer = 7, head_dim = 64, sliding_window = 4,
    rope_freq_base = 1000000, no_cuda_exact = GEMMA_EXACT },
  -- mixtures of experts (docs/moe.md): qwen3moe, 8 experts of width 64, top-4, with qwen3's q/k head norms and
  -- head size 64; Mixtral (llama with llama.expert_count), 4 experts of width 256, top-2. The router stays f32
  -- (llama.cpp never quantizes ffn_gate_inp); the long prompt routes its tokens to every expert. qwen3moe
  -- seed 2027: with 2026 a continuation ends inside a UTF-8 sequence (no probabilities from llama.cpp's server)
  { name = "qwen3moe_f32", arch = "qwen3moe", dtype = "f32", head_dim = 64, n_ff = 64, n_expert = 8,
    n_expert_used = 4, seed = 2027 },
  { name = "qwen3moe_q8_0", arch = "qwen3moe", dtype = "q8_0", head_dim = 64, n_ff = 64, n_expert = 8,
    n_expert_used = 4, seed = 2027 },
  { name = "mixtral_f32", arch = "llama", dtype = "f32", n_expert = 4, n_expert_used = 2 },
  { name = "mixtral_q8_0", arch = "llama", dtype = "q8_0", n_expert = 4, n_expert_used = 2 },
  -- gpt-oss (docs/moe.md): q/k/v/o and router biases, attention sinks, a window of 8 on the even blocks, YaRN
  -- (factor 32 over an original context of 4096/32 = 128, so the ramp spans dims 0..9), 8 MXFP4 experts of width
  -- 64 with biases, top-4 by logit and swiglu_oai; an untied head (llama.cpp requires output.weight). CUDA runs
  -- it with fast numerics only (no exact variant of its ops). Seed 2033: with 2026-2032 a continuation starts inside a UTF-8 sequence,
  -- and llama.cpp's server then reports a later step's probabilities first (make_generation_golden.py refuses it)
  { name = "gpt_oss_f32", arch = "gpt-oss", dtype = "f32", head_dim = 64, n_ff = 64, n_expert = 8, n_expert_used = 4,
    sliding_window = 8, tied = 0, n_ctx = 4096, rope_freq_base = 150000, expert_dtype = "mxfp4", seed = 2033,
    rope_yarn_factor = 32, no_cuda_exact = GPT_OSS_EXACT, tol = 5e-2 },
  { name = "gpt_oss_q8_0", arch = "gpt-oss", dtype = "q8_0", head_dim = 64, n_ff = 64, n_expert = 8,
    n_expert_used = 4, sliding_window = 8, tied = 0, n_ctx = 4096, rope_freq_base = 150000, expert_dtype = "mxfp4",
    seed = 2033, rope_yarn_factor = 32, no_cuda_exact = GPT_OSS_EXACT },
}

-- Models llama.cpp cannot check: its llama architecture ignores
-- llama.attention.sliding_window. The reference is a float64 forward with
-- the window (tests/golden/make_swa_golden.py → swa_float64.json).
M.float_models = {
  { name = "mistral_swa_f32", arch = "llama", dtype = "f32", sliding_window = 8 },
}

-- The shape every entry starts from: 2 layers, GQA 4:2, head size 32.
local BASE = { n_layer = 2, n_embd = 128, n_head = 4, n_head_kv = 2, n_ff = 256, n_vocab = 512, n_ctx = 256,
  head_dim = 0, rope_freq_base = 10000, rms_eps = 1e-5, seed = 2026, tied = 1, rope_llama3_factor = 0,
  sliding_window = 0, rope_orig_ctx = 0, n_expert = 0, n_expert_used = 0, router_skew = 0 }

--- Writes entry e's GGUF at path; raises with lrun's message on failure.
function M.generate(e, path)
  local s = ffi.new("lrun_model_gen_spec")
  for _, k in ipairs({ "n_layer", "n_embd", "n_head", "n_head_kv", "n_ff", "n_vocab", "n_ctx", "head_dim",
                       "rope_freq_base", "rms_eps", "seed", "rope_llama3_factor", "sliding_window",
                       "rope_orig_ctx", "n_expert", "n_expert_used", "router_skew" }) do
    s[k] = e[k] or BASE[k]
  end
  local dt = ffi.new("lrun_dtype[1]")
  assert(C.lrun_dtype_from_name(e.dtype, dt) == C.LRUN_OK, "unknown dtype " .. e.dtype)
  s.weight_dtype, s.embd_dtype = dt[0], dt[0]
  s.tied_embeddings = e.tied or BASE.tied
  if e.expert_dtype then
    assert(C.lrun_dtype_from_name(e.expert_dtype, dt) == C.LRUN_OK, "unknown dtype " .. e.expert_dtype)
    s.expert_dtype = dt[0]
  end
  s.rope_yarn_factor = e.rope_yarn_factor or 0
  s.n_threads, s.progress = 2, 0
  s.arch = e.arch
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
end

if arg and arg[0] and arg[0]:match("arch_models%.lua$") then
  local dir = assert(arg[1], "usage: lrun tests/arch_models.lua OUTDIR")
  for _, e in ipairs(arg[2] == "float" and M.float_models or M.models) do
    M.generate(e, dir .. "/" .. e.name .. ".gguf")
    io.stdout:write(e.name, "\n")
  end
end

return M
