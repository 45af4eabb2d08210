#!/usr/bin/env bash
# Runs the C test programs given as arguments, then the busted specs under
# tests/, all speaking TAP, and ends with one line "N passed, N failed, N skipped".
# The exit code is 0 only when nothing failed. LRUN_BUILD names the build
# whose launcher runs the specs (default build; make asan uses build-asan).
set -u
# pipefail: a test program that crashes (or a sanitizer that stops it) fails
# the run through its exit status, not only through "not ok" lines.
set -o pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0
c_only=
if [ "${1:-}" = --c-only ]; then c_only=1; shift; fi # the C programs, no busted specs
for t in "$@"; do
  echo "# $t"
  "$t" 2>&1 | tee -a "$log" || status=1
done
[ -n "$c_only" ] || echo "# busted"
specs=(tests/*_spec.lua)
if [ -n "${LRUN_GPU:-}" ]; then specs=(tests/*_gpu_spec.lua); fi
if [ -z "$c_only" ] && [ -e "${specs[0]}" ]; then
  "${LRUN_BUILD:-build}/lrun" /usr/bin/busted -o TAP "${specs[@]}" 2>&1 | tee -a "$log" || status=1
fi
skipped=$(grep -cE '^ok [0-9]* ?-? ?.*# SKIP' "$log")
passed=$(( $(grep -cE '^ok\b' "$log") - skipped ))
failed=$(grep -cE '^not ok\b' "$log")
[ "$failed" -eq 0 ] || status=1
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
