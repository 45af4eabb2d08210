--- llama7b.lua — a random-weight Llama-2-7B shape for the GPU benchmarks
-- (gpu_bench.lua, kv_bench.lua): 32 layers, width 4096, FFN 11008, 32 heads
-- and 32 KV heads (head_dim 128), vocab 32000, untied head, every matrix in
-- one dtype, written by lrun_model_generate to $LRUN_BENCH_DIR (default /tmp).
local ffi = require("ffi")
local lf = require("lrun.ffi")
local sys = require("lrun.sys")
local C = lf.C

local M = {}

--- Writes the model in dtype_name ("bf16", "q8_0", "q4_0", …) and returns its path.
-- trained: values shaped like trained weights (lrun_random_fill_trained: per-tensor normal scales, a few
-- outliers per row), what packed weights' ratios must be measured on (issue #12); else uniform values.
function M.generate(dtype_name, who, trained)
  local dir = os.getenv("LRUN_BENCH_DIR") or "/tmp"
  local path = string.format("%s/lrun-bench-llama2-7b-%s%s.gguf", dir, dtype_name, trained and "-trained" or "")
  local dt = ffi.new("lrun_dtype[1]")
  assert(C.lrun_dtype_from_name(dtype_name, dt) == C.LRUN_OK, "unknown dtype " .. dtype_name)
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 32, 4096, 32, 32, 11008
  s.n_vocab, s.n_ctx = 32000, 4096
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = dt[0], dt[0], 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads, s.progress = 10000, 1e-5, 7, 0, 0
  s.trained_stats = trained and 1 or 0
  local t0 = sys.now()
  local st = C.lrun_model_generate(path, s)
  if st ~= C.LRUN_OK then error("generating " .. path .. ": " .. lf.last_error(), 0) end
  io.stderr:write(string.format("%s: wrote %s in %.1f s\n", who or "llama7b", path, sys.now() - t0))
  return path
end

return M
