#!/usr/bin/env bash
# packed_sass_count.sh — the instruction count of the packed decode without a
# GPU: compiles kernels/packed_gemv.cu for sm_90 with -DPG_SASS_HOT (the
# common case assumed, so one codec block's decode is a straight line; see
# PG_ASSUME in kernels/packed_gemv_lane.h), prints ptxas' registers and
# spills, and counts the SASS per lane and codec block (32 elements) by pipe
# (tests/bench/packed_sass_count.py). docs/packed.md "What to measure".
# Then the same for PEX2's fused GEMV (kernels/packed_pex2.cu, -DPX_SASS_HOT:
# PX_ASSUME in kernels/packed_pex2_lane.h): docs/packed.md "PEX2 on CUDA".
#   tests/bench/packed_sass_count.sh          # needs nvcc and cuobjdump
# cuobjdump: $CUOBJDUMP, else on PATH or in $CUDA_HOME/bin (pip's
# nvidia-cuda-cuobjdump has one where the toolkit lacks it).
set -euo pipefail
cd "$(dirname "$0")/../.."
cuda_home=${CUDA_HOME:-/usr/local/cuda}
nvcc=${NVCC:-$cuda_home/bin/nvcc}
cuobjdump=${CUOBJDUMP:-$(command -v cuobjdump || echo "$cuda_home/bin/cuobjdump")}
[ -x "$cuobjdump" ] || { echo "packed_sass_count.sh: no cuobjdump (set CUOBJDUMP)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-O3 -std=c++17 -Iruntime -Ikernels -DLRUN_WITH_CUDA -gencode arch=compute_90,code=sm_90)
echo "registers (ptxas, sm_90, the real build):"
"$nvcc" "${flags[@]}" -Xptxas -v -c kernels/packed_gemv.cu -o "$out/real.o" 2>&1 |
  awk '/Compiling entry/{split($0,a,"'"'"'"); f=a[2]} /spill/{sp=$5" "$6" "$7" spill"} /Used/{print "  " f ": " $5 " regs, " sp}' |
  grep -E 'ILi30ELi1ELi256|ILi1ELi1ELi256|ILi30ELi2ELi256|decode_rows' || true
"$nvcc" "${flags[@]}" -DPG_SASS_HOT -c kernels/packed_gemv.cu -o "$out/hot.o"
"$cuobjdump" --dump-sass "$out/hot.o" >"$out/hot.sass"
echo "instructions (hot path: -DPG_SASS_HOT), per lane:"
python3 tests/bench/packed_sass_count.py "$out/hot.sass"
echo "PEX2 registers (ptxas, sm_90, the real build: px_gemv_tiles<M, threads>):"
"$nvcc" "${flags[@]}" -Xptxas -v -c kernels/packed_pex2.cu -o "$out/px.o" 2>&1 |
  awk '/Compiling entry/{split($0,a,"'"'"'"); f=a[2]} /spill/{sp=$5" "$6" "$7" spill"} /Used/{print "  " f ": " $5 " regs, " sp}' |
  grep -E 'px_gemv_tiles' || true
"$nvcc" "${flags[@]}" -DPX_SASS_HOT -c kernels/packed_pex2.cu -o "$out/pxhot.o"
"$cuobjdump" --dump-sass "$out/pxhot.o" >"$out/pxhot.sass"
echo "PEX2 instructions (hot path: -DPX_SASS_HOT), per lane:"
python3 tests/bench/packed_sass_count.py --pex2 "$out/pxhot.sass"
