#!/usr/bin/env bash
# codec2_study.sh — the codec2 study without a GPU (docs/packed.md "A faster
# code for mode 3 (study, session 14)"): builds and runs the prototype
# format's CPU round trip (codec2_roundtrip.c), then compiles the CUDA
# prototype (codec2_proto.cu) for sm_90, prints ptxas' registers, and counts
# its SASS per element by pipe (codec2_sass_count.py): the hot path
# (-DC2_SASS_HOT: one patch pass, no far exponent), and the lanes' decode
# alone (-DC2_COUNT_NO_PATCH). PEX1's counts for comparison come from
# tests/bench/packed_sass_count.sh.
#   tests/bench/codec2_study.sh            # needs cc, nvcc and cuobjdump
#   python3 tests/bench/codec2_candidates.py [model.gguf]   # the ratios (numpy, gguf)
# On a GPU (times, bit-exactness on the device):
#   nvcc -O3 -std=c++17 -arch=sm_90 -Itests/bench tests/bench/codec2_proto.cu -o /tmp/codec2_proto && /tmp/codec2_proto
# cuobjdump: $CUOBJDUMP, else on PATH or in $CUDA_HOME/bin (pip's
# nvidia-cuda-cuobjdump, or triton's copy, has one where the toolkit lacks it).
set -euo pipefail
cd "$(dirname "$0")/../.."
cuda_home=${CUDA_HOME:-/usr/local/cuda}
nvcc=${NVCC:-$cuda_home/bin/nvcc}
cuobjdump=${CUOBJDUMP:-$(command -v cuobjdump || echo "$cuda_home/bin/cuobjdump")}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== CPU round trip of the prototype format (tests/bench/codec2_roundtrip.c)"
${CC:-cc} -O2 -std=c11 -Wall -Wextra -Itests/bench tests/bench/codec2_roundtrip.c -lm -o "$out/roundtrip"
"$out/roundtrip"
flags=(-O3 -std=c++17 -Itests/bench -gencode arch=compute_90,code=sm_90)
echo "== registers (ptxas, sm_90, the real build)"
"$nvcc" "${flags[@]}" -Xptxas -v -c tests/bench/codec2_proto.cu -o "$out/real.o" 2>&1 |
  awk '/Compiling entry/{split($0,a,"'"'"'"); f=a[2]} /spill/{sp=$5" "$6" "$7" spill"} /Used/{print "  " f ": " $5 " regs, " sp}'
[ -x "$cuobjdump" ] || { echo "codec2_study.sh: no cuobjdump (set CUOBJDUMP)" >&2; exit 2; }
echo "== instructions per lane (hot path: -DC2_SASS_HOT)"
"$nvcc" "${flags[@]}" -DC2_SASS_HOT -c tests/bench/codec2_proto.cu -o "$out/hot.o"
"$cuobjdump" --dump-sass "$out/hot.o" >"$out/hot.sass"
python3 tests/bench/codec2_sass_count.py "$out/hot.sass"
echo "== the lanes' decode alone (-DC2_COUNT_NO_PATCH)"
"$nvcc" "${flags[@]}" -DC2_SASS_HOT -DC2_COUNT_NO_PATCH -c tests/bench/codec2_proto.cu -o "$out/nopatch.o"
"$cuobjdump" --dump-sass "$out/nopatch.o" >"$out/nopatch.sass"
python3 tests/bench/codec2_sass_count.py "$out/nopatch.sass" | grep -v product
