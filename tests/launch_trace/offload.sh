#!/bin/sh
# offload.sh BASE — the CUDA staging's runtime calls (weights:
# runtime/cuda/engine_cuda_offload.c; KV slots: runtime/cuda/engine_cuda_kv.c;
# copies, kernels, events, stream waits, synchronizations, allocations and
# the stats they feed), now and at commit BASE, compared without a GPU: the
# files are linked against stubs that log every CUDA runtime call and kernel
# (offload_main.c) and driven through 16 weight and 12 KV scenarios.
# Prints IDENTICAL or the first differences. Needs nvcc's headers.
# Written for the staging ring (issue #10): BASE 80be426 is the last commit
# with the CUDA engine's own copies of the fill/wait/release schedule.
set -e
base=${1:-80be426}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# a model.h without the named block fields (wq, w_down …): the harness names them by id
ids() { grep -q 'lrun_tensor \*wq' "$1/runtime/model/model.h" || echo -DLRUN_TRACE_IDS; }
# a tree with the host account (after 80be426): its stubs for the device's host allocations, and the
# fillers for the paths no scenario takes
newer() { grep -q lrun_device_host_alloc "$1/runtime/core/device.h" && echo -DLRUN_TRACE_NEW "$here/offload_fillers.c"; }
git -C "$root" archive "$base" runtime kernels | tar -x -C "$tmp"
CF="-std=c11 -D_GNU_SOURCE -DLRUN_WITH_CUDA -I${CUDA_HOME:-/usr/local/cuda}/include -w -g -pthread"
old_src="$tmp/runtime/cuda/engine_cuda_offload.c $tmp/runtime/cuda/engine_cuda_kv.c $(ls $tmp/runtime/arch/*.c | tr "\n" " ")"
[ -f "$tmp/runtime/residency/ring.c" ] && old_src="$old_src $tmp/runtime/residency/ring.c"
new_src="$root/runtime/cuda/engine_cuda_offload.c $root/runtime/cuda/engine_cuda_kv.c $root/runtime/residency/ring.c"
new_src="$new_src $(ls $root/runtime/arch/*.c | tr "\n" " ")"
cc $CF $(ids "$tmp") $(newer "$tmp") -I"$tmp/runtime" -I"$tmp/kernels" -o "$tmp/old" "$here/offload_main.c" $old_src
cc $CF $(ids "$root") $(newer "$root") -I"$root/runtime" -I"$root/kernels" -o "$tmp/new" "$here/offload_main.c" \
  $new_src
"$tmp/old" > "$tmp/old.log"
"$tmp/new" > "$tmp/new.log"
echo "$(grep -c '^===' "$tmp/old.log") scenarios, $(wc -l < "$tmp/old.log") logged calls at $base"
if cmp -s "$tmp/old.log" "$tmp/new.log"; then echo IDENTICAL; else diff "$tmp/old.log" "$tmp/new.log" | head -40; exit 1; fi
