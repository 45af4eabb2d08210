#!/bin/sh
# moe_group_ab.sh — the CPU engine's MoE decode with one lrun_cpu_matmul per
# expert (moe_cpu.c before the grouped products, from BASE) against the grouped
# products (the working tree's), interleaved RUNS times on THREADS threads.
# Builds both binaries; restores moe_cpu.c and the build on exit.
# Usage: tests/bench/moe_group_ab.sh MODEL THREADS [BASE] [RUNS]
#   MODEL e.g. a 4-block slice of the Qwen3-30B-A3B Q4_K shape:
#   build/lrun examples/genmodel.lua --preset qwen3-30b-a3b --dtype q4_k --layers 4 -o /tmp/moe4.gguf
# Prints one JSON line per run (tests/bench/lrun_bench.lua), each prefixed by before/after.
set -eu
model=$1
threads=$2
base=${3:-f15a637} # the commit that added cpu_matmul_grouped, moe_cpu.c still per expert
runs=${4:-3}
cuda=${CUDA:-1}
tmp=$(mktemp -d)
seq 100 131 | tr '\n' ' ' >"$tmp/ids" # 32 prompt ids
cp runtime/cpu/moe_cpu.c "$tmp/moe_cpu.c"
restore() {
    cp "$tmp/moe_cpu.c" runtime/cpu/moe_cpu.c
    make -s -j"$threads" CUDA="$cuda" >/dev/null
}
trap restore EXIT
make -s -j"$threads" CUDA="$cuda" >/dev/null
cp build/lrun "$tmp/after"
git show "$base":runtime/cpu/moe_cpu.c >runtime/cpu/moe_cpu.c
make -s -j"$threads" CUDA="$cuda" >/dev/null
cp build/lrun "$tmp/before"
i=0
while [ "$i" -lt "$runs" ]; do
    for b in before after; do
        printf '%s ' "$b"
        LRUN_ROOT=$PWD "$tmp/$b" tests/bench/lrun_bench.lua "$model" "$threads" "$tmp/ids" 64 | tail -1
    done
    i=$((i + 1))
done
