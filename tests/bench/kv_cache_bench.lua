-- kv_cache_bench: decode tokens/s of each cache_implementation on the CPU
-- engine, and whether its greedy ids match dynamic's (docs/kv-cache.md).
--   LRUN_MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf build/lrun tests/bench/kv_cache_bench.lua
-- Environment: LRUN_BENCH_THREADS (default 2), LRUN_BENCH_NPROMPT (500),
-- LRUN_BENCH_NGEN (48), LRUN_BENCH_RUNS (3, the best is kept).
local lrun = require("lrun")
local env = function(k, d) return tonumber(os.getenv(k) or "") or d end
local threads, n_prompt = env("LRUN_BENCH_THREADS", 2), env("LRUN_BENCH_NPROMPT", 500)
local n_gen, runs = env("LRUN_BENCH_NGEN", 48), env("LRUN_BENCH_RUNS", 3)
local m = assert(lrun.load(assert(os.getenv("LRUN_MODEL"), "set LRUN_MODEL"), { progress = false, threads = threads }))
local ids = {}
for i = 1, n_prompt do ids[i] = 200 + (i * 37) % 40000 end
local ref
print(string.format("%d-token prompt, %d new tokens, %d threads, best of %d", n_prompt, n_gen, threads, runs))
for _, impl in ipairs({ "dynamic", "static", "offloaded", "offloaded_static", "quantized" }) do
  local best, out = math.huge, nil
  for _ = 1, runs do
    local _, o, st = assert(m:generate(ids, { max_new_tokens = n_gen, eos_token_id = false,
      cache_implementation = impl }))
    best = math.min(best, st.generate_seconds / (st.n_generated - 1))
    out = o
  end
  ref = ref or out
  local same = 0
  for i = 1, #out do if out[i] == ref[i] then same = same + 1 end end
  print(string.format("%-17s %6.1f tok/s   %d/%d ids as dynamic", impl, 1 / best, same, #out))
end
m:free()
