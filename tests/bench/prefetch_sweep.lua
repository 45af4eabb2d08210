-- prefetch_sweep.lua — decode tokens/s and prefetch hits of the CPU engine with every
-- weight streamed, for k = 1, 2, 4 (docs/residency.md "Choosing k").
--   build/lrun tests/bench/prefetch_sweep.lua models/SmolLM2-135M-Instruct.Q4_1.gguf
local lrun = require("lrun")
local path = arg[1]
for rep = 1, 3 do
  for _, k in ipairs({1, 2, 4}) do
    local m = assert(lrun.load(path, {progress=false, threads=2, policy="layers", n_gpu_layers=0, prefetch_layers=k}))
    m:generate("The capital of France is", {max_new_tokens=4})
    m:stats(true)
    local _, _, st = m:generate("The capital of France is", {max_new_tokens=32})
    local s = m:stats()
    print(string.format("k=%d rep=%d %.1f tok/s hits %d misses %d stall %.3f s copy %.3f s slots %.1f MiB", k, rep,
      st.n_generated / st.generate_seconds, s.prefetch_hits, s.prefetch_misses, s.stall_seconds, s.copy_seconds, s.slot_bytes/2^20))
    m:free()
  end
end
