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

exec "$python" tests/bench/bench.py --model "$model" --threads "$threads" --runs "$runs" \
  --n-prompt "${LRUN_BENCH_NPROMPT:-128}" --n-gen "${LRUN_BENCH_NGEN:-128}" "$@"
