#!/usr/bin/env bash
# The disk tier under a memory limit the operating system enforces: a
# generated model of about 600 MiB runs in a memory cgroup limited to
# 256 MiB (v1 memory.limit_in_bytes, or v2 memory.max), with
# --host-budget, and must give the tokens and logits of the unlimited
# resident run, without being OOM-killed, its peak charged memory under
# the limit. Skipped, with the reason, where no memory cgroup can be made
# (not root, no memory controller, v2 without a delegable subtree).
# Speaks TAP. LRUN_CGROUP_BUILD picks the build (default build-cpu when it
# exists: the CUDA build's runtime alone takes ~170 MiB at start).
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
limit_mib=${LRUN_CGROUP_LIMIT_MIB:-256}
model_mib=${LRUN_CGROUP_MODEL_MIB:-600}
build=${LRUN_CGROUP_BUILD:-}
# build-cpu only when it is at least as new as the build under test (a stale one would test old code)
main_build=${LRUN_BUILD:-build}
if [ -z "$build" ]; then
  if [ -x build-cpu/lrun ] && ! [ build-cpu/lrun -ot "$main_build/lrun" ]; then build=build-cpu; else build=$main_build; fi
fi
budget=$([ "$build" = build-cpu ] && echo 160M || echo 100M)
echo "1..5"
skip_all() { for i in 1 2 3 4 5; do echo "ok $i - # SKIP $1"; done; exit 0; }
case "$build" in *asan*|*tsan*) skip_all "sanitizer build $build: its shadow memory does not fit the limit";; esac

# ---------------------------------------------------------------- a memory cgroup of our own
cg=""; v=""
if [ "$(id -u)" -ne 0 ]; then skip_all "not root: cannot make a memory cgroup"; fi
v1_rel=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup | head -1)
v2_rel=$(awk -F: '$1 == "0" && $2 == "" {print $3}' /proc/self/cgroup | head -1)
if [ -n "$v1_rel" ] && [ -d "/sys/fs/cgroup/memory$v1_rel" ]; then
  cg="/sys/fs/cgroup/memory${v1_rel%/}/lrun_disk_test_$$"; v=1
  mkdir "$cg" 2>/dev/null && echo $((limit_mib << 20)) >"$cg/memory.limit_in_bytes" 2>/dev/null || cg=""
elif [ -n "$v2_rel" ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
  parent="/sys/fs/cgroup${v2_rel%/}"; cg="$parent/lrun_disk_test_$$"; v=2
  grep -qw memory "$parent/cgroup.subtree_control" 2>/dev/null || echo +memory >"$parent/cgroup.subtree_control" 2>/dev/null
  mkdir "$cg" 2>/dev/null && echo $((limit_mib << 20)) >"$cg/memory.max" 2>/dev/null || cg=""
fi
if [ -z "$cg" ]; then skip_all "no writable memory cgroup (v1: memory.limit_in_bytes, v2: memory.max) here"; fi
model="$here/build/lrun_disk_cgroup_$$.gguf"
cleanup() { rmdir "$cg" 2>/dev/null; rm -f "$model"; }
trap cleanup EXIT
echo "# cgroup v$v $cg, limit $limit_mib MiB; $build/lrun, --host-budget $budget"

# ---------------------------------------------------------------- the model and the reference
"$build/lrun" tests/disk/gen_model.lua "$model" "$model_mib" | sed 's/^/# /'
size=$(stat -c %s "$model")
ref=$("$build/lrun" tests/disk/run_tokens.lua "$model" 2>&1)
# out of the page cache: in the cgroup every page read is charged there
python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)" "$model"

# ---------------------------------------------------------------- the limited run
out=$(sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
      "$build/lrun" tests/disk/run_tokens.lua "$model" "$budget" 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
if [ "$v" = 1 ]; then
  peak=$(cat "$cg/memory.max_usage_in_bytes"); oom=$(awk '$1 == "oom_kill" {print $2}' "$cg/memory.oom_control")
else
  peak=$(cat "$cg/memory.peak" 2>/dev/null || echo 0); oom=$(awk '$1 == "oom_kill" {print $2}' "$cg/memory.events")
fi
echo "# model $((size >> 20)) MiB, limit $limit_mib MiB, peak charged $((peak >> 20)) MiB, oom kills ${oom:-0}"
[ "$size" -ge $((2 * limit_mib << 20)) ] && echo "ok 1 - the model is at least twice the limit" \
  || echo "not ok 1 - the model ($size bytes) is not twice the limit"
[ "$rc" -eq 0 ] && [ "${oom:-0}" -eq 0 ] && echo "ok 2 - completes under the limit, not OOM-killed" \
  || echo "not ok 2 - exit status $rc, oom kills ${oom:-?}"
[ "$(echo "$out" | grep '^tokens:')" = "$(echo "$ref" | grep '^tokens:')" ] && [ -n "$(echo "$ref" | grep '^tokens:')" ] \
  && echo "ok 3 - tokens identical to the unlimited resident run" || echo "not ok 3 - tokens differ: $(echo "$ref" | grep '^tokens:')"
[ "$(echo "$out" | grep '^logits:')" = "$(echo "$ref" | grep '^logits:')" ] && [ -n "$(echo "$ref" | grep '^logits:')" ] \
  && echo "ok 4 - logits bit-identical" || echo "not ok 4 - logits differ"
[ "$peak" -le $((limit_mib << 20)) ] && echo "$out" | grep -q "disk read" \
  && echo "ok 5 - peak charged memory $((peak >> 20)) MiB under the $limit_mib MiB limit, weights read from disk" \
  || echo "not ok 5 - peak $peak bytes, or no disk reads"
