#!/usr/bin/env bash
# gemvq_sass.sh — the q8_0/q4_0 decode GEMV study without a GPU (docs/gpu.md
# "q8_0 / q4_0 decode GEMV study"): compiles kernels/gemv.cu (the current
# kernel), tests/bench/gemvq_proto.cu (the candidates), kernels/gemv_split.cu
# and kernels/gemv_split_q8x.cu (the library's copies of two) for sm_90, prints
# ptxas' registers of the candidates, and counts each main loop's SASS per
# weight byte (gemvq_sass.py).
#   tests/bench/gemvq_sass.sh        # needs nvcc and cuobjdump
# cuobjdump: $CUOBJDUMP, else on PATH or in $CUDA_HOME/bin (pip's
# nvidia-cuda-cuobjdump, or triton's copy, has one where the toolkit lacks it).
# On a GPU, the prototype's times: see the command in gemvq_proto.cu.
set -euo pipefail
cd "$(dirname "$0")/../.."
cuda_home=${CUDA_HOME:-/usr/local/cuda}
nvcc=${NVCC:-$cuda_home/bin/nvcc}
cuobjdump=${CUOBJDUMP:-$(command -v cuobjdump || echo "$cuda_home/bin/cuobjdump")}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-O3 -std=c++17 -Iruntime -Ikernels -DLRUN_WITH_CUDA -gencode arch=compute_90,code=sm_90)
echo "== registers of the candidates (ptxas, sm_90): <type 8 q8_0 | 2 q4_0, x mode, RW, NW, U, PF>"
"$nvcc" "${flags[@]}" -Xptxas -v -c tests/bench/gemvq_proto.cu -o "$out/proto.o" 2>&1 |
  awk '/Compiling entry/{split($0,a,"'"'"'"); f=a[2]} /spill/{sp=$5" "$6" "$7" spill"} /Used/{ if (f ~ /gq_kernel/) print "  " f ": " $5 " regs, " sp}'
"$nvcc" "${flags[@]}" -c kernels/gemv.cu -o "$out/gemv.o"
"$nvcc" "${flags[@]}" -c kernels/gemv_split.cu -o "$out/gemv_split.o"
"$nvcc" "${flags[@]}" -c kernels/gemv_split_q8x.cu -o "$out/gemv_split_q8x.o"
[ -x "$cuobjdump" ] || { echo "gemvq_sass.sh: no cuobjdump (set CUOBJDUMP)" >&2; exit 2; }
"$cuobjdump" --dump-sass "$out/gemv.o" >"$out/gemv.sass"
"$cuobjdump" --dump-sass "$out/proto.o" >"$out/proto.sass"
"$cuobjdump" --dump-sass "$out/gemv_split.o" >"$out/gemv_split.sass"
"$cuobjdump" --dump-sass "$out/gemv_split_q8x.o" >"$out/gemv_split_q8x.sass"
echo "== main loop instructions per weight byte (per thread)"
python3 tests/bench/gemvq_sass.py "$out/gemv.sass" "$out/proto.sass" "$out/gemv_split.sass" "$out/gemv_split_q8x.sass"
