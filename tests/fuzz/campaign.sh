#!/usr/bin/env bash
# tests/fuzz/campaign.sh — long fuzz runs that add up across sessions: each
# target named runs in chunks (FUZZ_CHUNK wall seconds, default 600) at nice
# 19, from its corpus in build-fuzz/corpus/<target> (kept between runs) and
# its committed seeds, until the CPU time (user + system) logged for it in
# build-fuzz/hours.tsv reaches FUZZ_CPU_SECONDS (default 3600, issue 16's
# CPU-hour). One line per chunk goes to the log:
#   date  target  wall_s  user_s  sys_s  executions  coverage  exit
# A finding (non-zero exit: crash, sanitizer report, leak, timeout) stops
# that target and leaves the input as build-fuzz/<target>-crash-* and the
# output as build-fuzz/<target>.finding.log. Several campaigns may run at
# once on different targets (one per core; a lock file per target skips
# a target another campaign is running). `--summary` prints the log as
# the table of docs/reliability.md. Built by `make fuzz-build`; run through
# `make fuzz-campaign FUZZ_TARGETS_RUN="fuzz_gguf fuzz_model"`.
set -u
cd "$(dirname "$0")/../.." || exit 2
dir=build-fuzz
log=$dir/hours.tsv
goal=${FUZZ_CPU_SECONDS:-3600}
chunk_max=${FUZZ_CHUNK:-600}
touch "$log"

cpu_used() { awk -v t="$1" '$2 == t { s += $4 + $5 } END { printf "%d", s }' "$log"; }

if [ "${1:-}" = --summary ]; then
  echo "| target | CPU hours | wall hours | executions | coverage (last) | findings |"
  echo "|---|---:|---:|---:|---:|---|"
  awk -F'\t' '{ cpu[$2] += $4 + $5; wall[$2] += $3; ex[$2] += $6; cov[$2] = $7; if ($8 != 0) bad[$2]++ }
    END { for (t in cpu) printf "| `%s` | %.2f | %.2f | %d | %s | %d |\n", t, cpu[t] / 3600, wall[t] / 3600, ex[t], cov[t], bad[t] + 0 }' \
    "$log" | sort
  exit 0
fi

for t in "$@"; do
  bin=$dir/$t
  [ -x "$bin" ] || { echo "campaign: $bin is not built (make fuzz-build)" >&2; exit 2; }
  # one campaign per target at a time: two would share its output and time
  # files and write each other's figures into the log
  exec {lock}>"$dir/$t.lock"
  flock -n "$lock" || { echo "campaign: $t is running in another campaign; skipped" >&2; exec {lock}>&-; continue; }
  while :; do
    used=$(cpu_used "$t")
    [ "$used" -ge "$goal" ] && { echo "campaign: $t has $used CPU s (goal $goal)"; break; }
    chunk=$chunk_max
    [ $((goal - used)) -lt "$chunk" ] && chunk=$((goal - used + 5))
    work=$dir/corpus/$t
    mkdir -p "$work"
    seeds=$(test -d "tests/fuzz/corpus/$t" && echo "tests/fuzz/corpus/$t")
    dict=$(test -f "tests/fuzz/$t.dict" && echo "-dict=tests/fuzz/$t.dict")
    opts=$(cat "tests/fuzz/$t.options" 2>/dev/null)
    out=$dir/$t.campaign.log
    start=$(date +%s)
    # shellcheck disable=SC2086 # dict, opts and seeds are word lists
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      /usr/bin/time -f "TIME %U %S" -o "$dir/$t.time" nice -n 19 "$bin" -max_total_time="$chunk" -timeout=10 \
      -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="$dir/$t-" $dict $opts "$work" $seeds \
      > "$out" 2>&1
    rc=$?
    wall=$(($(date +%s) - start))
    read -r _ user sys < <(grep ^TIME "$dir/$t.time")
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$out" | awk '{ print $2 }')
    cov=$(grep -E '^#[0-9]+' "$out" | tail -1 | grep -o 'cov: [0-9]*' | awk '{ print $2 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$wall" "${user:-0}" "${sys:-0}" \
      "${execs:-0}" "${cov:-0}" "$rc" >> "$log"
    echo "campaign: $t ran $wall s (exit $rc), $(cpu_used "$t") CPU s so far"
    if [ "$rc" -ne 0 ]; then cp "$out" "$dir/$t.finding.log"; echo "campaign: $t FOUND SOMETHING" >&2; break; fi
  done
  exec {lock}>&-
done
