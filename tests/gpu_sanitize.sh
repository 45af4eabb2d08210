#!/usr/bin/env bash
# gpu_sanitize.sh — the CUDA engine tests under compute-sanitizer (memcheck
# for out-of-bounds and misaligned device accesses and leaks, racecheck for
# shared-memory hazards), speaking TAP for tests/run.sh: one line per tool
# and test, ok only with "ERROR SUMMARY: 0 errors". Slices of
# test_engine_gpu (LRUN_TEST_QUICK: f32 and q4_0 weights, a batch, CUDA
# graphs) and of test_attention_flash_gpu (the cp.async tiles of the
# tensor-core attention: one case per layout) keep the run within minutes. SKIP where no GPU or no compute-sanitizer is found.
# Part of make test-gpu; by hand: tests/gpu_sanitize.sh [build]
set -u
build=${1:-${LRUN_BUILD:-build}}
san=${COMPUTE_SANITIZER:-${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer}
n=0
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "ok 1 - compute-sanitizer # SKIP no GPU visible"; echo "1..1"; exit 0
fi
if [ ! -x "$san" ]; then
  echo "ok 1 - compute-sanitizer # SKIP $san not found"; echo "1..1"; exit 0
fi
status=0
for test in test_engine_gpu test_attention_flash_gpu; do
for tool in memcheck racecheck; do
  n=$((n + 1))
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  log=$(mktemp)
  LRUN_TEST_QUICK=1 "$san" --tool "$tool" "${extra[@]}" --error-exitcode 86 "$build/tests/$test" >"$log" 2>&1
  rc=$?
  summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | tail -1)
  if [ $rc -eq 0 ] && ! grep -q "^not ok" "$log" && grep -qE "SUMMARY: 0 (errors|hazards)" <<<"$summary"; then
    echo "ok $n - compute-sanitizer $tool on $test (quick): $summary"
  else
    echo "not ok $n - compute-sanitizer $tool on $test (quick): exit $rc, ${summary:-no summary}"
    grep -E "^=========|^not ok" "$log" | head -40 | sed 's/^/# /'
    status=1
  fi
  rm -f "$log"
done
done
echo "1..$n"
exit $status
