#!/bin/sh
# run.sh BASE — the CUDA forward's launch sequence, now and at commit BASE,
# compared without a GPU: the forward files are linked against stubs that
# log every kernel launch and every staging/KV hook with its arguments
# (pointers as offsets into one arena), over 240 scenarios (fast/exact,
# streamed and host-computed weights, biases, mixed dtypes, quantized-fused
# attention, odd head size, 1/3/16 tokens, gathered rows, a later block of
# logits). Prints IDENTICAL or the first differences. Needs nvcc's headers.
# Written for the op-table interpreter (issue #10): BASE e2c576a is the
# last commit with the two hand-written forward passes.
set -e
base=${1:-e2c576a}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# a model.h without the named block fields (wq, w_down …): the harness names them by id
ids() { grep -q 'lrun_tensor \*wq' "$1/runtime/model/model.h" || echo -DLRUN_TRACE_IDS; }
git -C "$root" archive "$base" runtime kernels | tar -x -C "$tmp"
CF="-std=c11 -D_GNU_SOURCE -DLRUN_WITH_CUDA -I${CUDA_HOME:-/usr/local/cuda}/include -w -g"
old_src="$tmp/runtime/cuda/engine_cuda_forward.c $tmp/runtime/cuda/engine_cuda_exact.c"
# a BASE with the op-table interpreter has the weights interface and the arch descriptions too
old_new=
if [ -d "$tmp/runtime/arch" ]; then
  old_new=-DNEW
  old_src="$old_src $tmp/runtime/cuda/engine_cuda_weights.c $(ls "$tmp"/runtime/arch/*.c | tr "\n" " ")"
fi
new_src="$root/runtime/cuda/engine_cuda_forward.c $root/runtime/cuda/engine_cuda_exact.c"
new_src="$new_src $root/runtime/cuda/engine_cuda_weights.c $(ls $root/runtime/arch/*.c | tr "\n" " ")"
cc $CF $(ids "$tmp") $old_new -I"$tmp/runtime" -I"$tmp/kernels" -o "$tmp/old" "$here/main.c" "$here/stubs.c" "$here/unused.c" $old_src -lm
cc $CF $(ids "$root") -DNEW -I"$root/runtime" -I"$root/kernels" -o "$tmp/new" "$here/main.c" "$here/stubs.c" "$here/unused.c" $new_src -lm
"$tmp/old" > "$tmp/old.log"
"$tmp/new" > "$tmp/new.log"
echo "$(grep -c '^===' "$tmp/old.log") scenarios, $(wc -l < "$tmp/old.log") logged calls at $base"
if cmp -s "$tmp/old.log" "$tmp/new.log"; then echo IDENTICAL; else diff "$tmp/old.log" "$tmp/new.log" | head -40; exit 1; fi
