#!/usr/bin/env bash
# packed_bench.sh — builds and runs tests/bench/packed_decode_bench.c against
# the build's static library: the packed codec's ratio, CPU encode/decode MB/s
# and (with CUDA=1 and a GPU) the decode kernel's GB/s and mode 3 (the fused packed
# GEMV against the plain bf16 GEMV, its default and its other variants side by
# side (PEX1: the pipelined decode loop; PEX2: the m = 1 product rows
# outermost, the decode pipelined), the packed prefill GEMM; docs/packed.md).
#   make CUDA=1 && tests/bench/packed_bench.sh [rows cols]
#   tests/bench/packed_bench.sh --gguf models/SmolLM2-135M-Instruct.Q4_1.gguf
#   tests/bench/packed_bench.sh --host [rows cols]   the host's product of a packed weight
#                                                    (packed_host_bench.c) against the plain one and DRAM
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${LRUN_BUILD:-build}
cuda_home=${CUDA_HOME:-/usr/local/cuda}
flags=(-O2 -march=native -std=c11 -D_GNU_SOURCE -pthread -Iruntime -Ikernels)
libs=("$build/liblrun.a" -lpcre2-8 -lcjson -lm)
if grep -q LRUN_WITH_CUDA "$build/.flags" 2>/dev/null; then
  flags+=(-DLRUN_WITH_CUDA "-I$cuda_home/include")
  libs+=("-L$cuda_home/lib64" "-Wl,-rpath,$cuda_home/lib64" -lcudart -lcublas -lstdc++)
fi
if [ "${1:-}" = --host ]; then
  shift
  cc "${flags[@]}" tests/bench/packed_host_bench.c -o "$build/packed_host_bench" "${libs[@]}"
  exec "$build/packed_host_bench" "$@"
fi
cc "${flags[@]}" tests/bench/packed_decode_bench.c -o "$build/packed_decode_bench" "${libs[@]}"
exec "$build/packed_decode_bench" "$@"
