#!/usr/bin/env bash
# make bench: prefill and decode tokens/s of lrun and llama.cpp on the same GGUF,
# same threads, same prompt ids, same number of generated tokens; prints a
# table and the ratios lrun / llama.cpp (tests/bench/bench.py does the work).
#
# Environment:
#   LRUN_MODEL          the GGUF (default: models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   LRUN_BENCH_THREADS  CPU threads for both engines (default: nproc)
#   LRUN_BENCH_RUNS     rounds; the best of them is kept (default: 5)
#   LRUN_BENCH_NPROMPT  prompt tokens (default: 128)
#   LRUN_BENCH_NGEN     generated tokens (default: 128)
#   PYTHON              python3 by default
#   LRUN_LLAMA_BENCH    on a GPU machine: a llama.cpp CUDA build's llama-bench (docs/benchmarks.md "Same-run
#                       llama.cpp CUDA peer": built from the llama-cpp-python sdist); the quant table
#                       (cuda_peer.py) and llama.cpp -ngl in the offload bench then run beside lrun
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"

model=${LRUN_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
threads=${LRUN_BENCH_THREADS:-$(nproc)}
runs=${LRUN_BENCH_RUNS:-5}
python=${PYTHON:-python3}

if [ ! -f "$model" ]; then
  echo "bench: model $model not found (make model, or set LRUN_MODEL)" >&2
  exit 1
fi

# llama.cpp comes from the xllamacpp wheel (prebuilt, CPU).
if ! "$python" -c 'import xllamacpp' 2>/dev/null; then
  echo "bench: installing xllamacpp (llama.cpp) with pip"
  "$python" -m pip install -q xllamacpp
fi

# On a machine with a GPU, the CUDA engine's table too (docs/gpu.md).
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  build/lrun tests/bench/gpu_bench.lua "$model" 7b:bf16 7b:q8_0 7b:q4_0 || echo "bench: the GPU bench failed" >&2
  # weights that do not fit: streaming and host compute vs PCIe and accelerate (docs/streaming.md)
  peer=()
  if [ -n "${LRUN_LLAMA_BENCH:-}" ]; then
    peer=(--llama-bench "$LRUN_LLAMA_BENCH")
    "$python" tests/bench/cuda_peer.py --llama-bench "$LRUN_LLAMA_BENCH" 7b:q4_0 7b:q4_1 7b:q8_0 7b:q4_k 7b:q5_k \
      7b:q6_k 7b:bf16 || echo "bench: the llama.cpp CUDA peer failed" >&2
  fi
  "$python" tests/bench/offload_bench.py --out build/offload_bench.json "${peer[@]}" ||
    echo "bench: the offload bench failed" >&2
  # KV cache kinds at 4k/16k/32k against HF's same kinds (docs/kv-cache.md, docs/benchmarks.md)
  build/lrun tests/bench/kv_bench.lua --hf --out build/kv_bench.json || echo "bench: the KV cache bench failed" >&2
fi

exec "$python" tests/bench/bench.py --model "$model" --threads "$threads" --runs "$runs" \
  --n-prompt "${LRUN_BENCH_NPROMPT:-128}" --n-gen "${LRUN_BENCH_NGEN:-128}" "$@"
