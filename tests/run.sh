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
crashed=() # programs that exited non-zero (a crash or a sanitizer report)
for t in "$@"; do
  echo "# $t"
  echo "## program $t" >>"$log" # names the program of a failure in the summary
  "$t" 2>&1 | tee -a "$log" || { status=1; crashed+=("$t"); }
done
[ -n "$c_only" ] || echo "# busted"
specs=(tests/*_spec.lua)
if [ -n "${LRUN_GPU:-}" ]; then specs=(tests/*_gpu_spec.lua); fi
if [ -z "$c_only" ] && [ -e "${specs[0]}" ]; then
  echo "## program busted" >>"$log"
  "${LRUN_BUILD:-build}/lrun" /usr/bin/busted -o TAP "${specs[@]}" 2>&1 | tee -a "$log" ||
    { status=1; crashed+=(busted); }
fi
skipped=$(grep -cE '^ok [0-9]* ?-? ?.*# SKIP' "$log")
passed=$(( $(grep -cE '^ok\b' "$log") - skipped ))
failed=$(grep -cE '^not ok\b' "$log")
[ "$failed" -eq 0 ] || status=1
# The failures again at the end, where a CI log's tail shows them: each
# "not ok" line with the diagnostic lines that follow it.
if [ "$status" -ne 0 ]; then
  echo "# failures:"
  awk '/^## program / { prog = $3; next }
       /^not ok/ { show = 1; print "[" prog "] " $0; next }
       show && /^#/ { print; next } { show = 0 }' "$log"
  [ "${#crashed[@]}" -eq 0 ] || echo "# exited non-zero: ${crashed[*]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
