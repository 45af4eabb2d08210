#!/usr/bin/env bash
# The disk tier under a memory limit the operating system enforces: a
# generated model of about 600 MiB runs in a memory cgroup limited to
# 256 MiB (v1 memory.limit_in_bytes, or v2 memory.max), with
# --host-budget, and must give the tokens and logits of the unlimited
# resident run, without being OOM-killed, its peak charged memory under
# the limit: a dense model, then a mixture of experts whose experts are
# read per chosen expert (docs/moe.md "Experts from the disk"), each in a
# cgroup of its own. Skipped, with the reason, where no memory cgroup can be made
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
echo "1..10"
skip_all() { for i in 1 2 3 4 5 6 7 8 9 10; do echo "ok $i - # SKIP $1"; done; exit 0; }
case "$build" in *asan*|*tsan*) skip_all "sanitizer build $build: its shadow memory does not fit the limit";; esac

# ---------------------------------------------------------------- a memory cgroup of our own
if [ "$(id -u)" -ne 0 ]; then skip_all "not root: cannot make a memory cgroup"; fi
. tests/disk/memory_cgroup.sh
make_cg "lrun_disk_test_$$" "$limit_mib"
if [ -z "$cg" ]; then skip_all "no writable memory cgroup (v1: memory.limit_in_bytes, v2: memory.max) here"; fi
rmdir "$cg"
model="$here/build/lrun_disk_cgroup_$$.gguf"
cleanup() { [ -n "$cg" ] && rmdir "$cg" 2>/dev/null; rm -f "$model"; }
trap cleanup EXIT

# run_case KIND FIRST: the model of kind "dense" or "moe", its five checks numbered from FIRST
run_case() {
  local kind=$1 n=$2
  make_cg "lrun_disk_test_${kind}_$$" "$limit_mib"
  echo "# $kind: cgroup v$v $cg, limit $limit_mib MiB; $build/lrun, --host-budget $budget"

  # ---------------------------------------------------------------- the model and the reference
  "$build/lrun" tests/disk/gen_model.lua "$model" "$model_mib" "$kind" | sed 's/^/# /'
  local size ref out rc peak oom
  size=$(stat -c %s "$model")
  ref=$("$build/lrun" tests/disk/run_tokens.lua "$model" 2>&1)
  drop_cache "$model" # in the cgroup every page read is charged there

  # ---------------------------------------------------------------- the limited run
  out=$(in_cg "$build/lrun" tests/disk/run_tokens.lua "$model" "$budget" 2>&1)
  rc=$?
  echo "$out" | sed 's/^/# /'
  peak=$(cg_peak); oom=$(cg_oom)
  echo "# $kind: model $((size >> 20)) MiB, limit $limit_mib MiB, peak charged $((peak >> 20)) MiB, oom kills ${oom:-0}"
  [ "$size" -ge $((2 * limit_mib << 20)) ] && echo "ok $n - $kind: the model is at least twice the limit" \
    || echo "not ok $n - $kind: the model ($size bytes) is not twice the limit"
  [ "$rc" -eq 0 ] && [ "${oom:-0}" -eq 0 ] && echo "ok $((n + 1)) - $kind: completes under the limit, not OOM-killed" \
    || echo "not ok $((n + 1)) - $kind: exit status $rc, oom kills ${oom:-?}"
  [ "$(echo "$out" | grep '^tokens:')" = "$(echo "$ref" | grep '^tokens:')" ] && [ -n "$(echo "$ref" | grep '^tokens:')" ] \
    && echo "ok $((n + 2)) - $kind: tokens identical to the unlimited resident run" \
    || echo "not ok $((n + 2)) - $kind: tokens differ: $(echo "$ref" | grep '^tokens:')"
  [ "$(echo "$out" | grep '^logits:')" = "$(echo "$ref" | grep '^logits:')" ] && [ -n "$(echo "$ref" | grep '^logits:')" ] \
    && echo "ok $((n + 3)) - $kind: logits bit-identical" || echo "not ok $((n + 3)) - $kind: logits differ"
  # the mixture of experts reads its experts per chosen expert, never a whole stack
  local read_how="disk read"
  [ "$kind" = moe ] && read_how="experts from the disk: [0-9]* read"
  [ "$peak" -le $((limit_mib << 20)) ] && echo "$out" | grep -q "$read_how" \
    && echo "ok $((n + 4)) - $kind: peak charged memory $((peak >> 20)) MiB under the $limit_mib MiB limit, weights read from disk" \
    || echo "not ok $((n + 4)) - $kind: peak $peak bytes, or no disk reads ($read_how)"
  rmdir "$cg" 2>/dev/null; cg=""
  rm -f "$model"
}
run_case dense 1
run_case moe 6
