#!/usr/bin/env bash
# moe_disk_peer.sh — a mixture of experts larger than the memory it may use,
# on the CPU: lrun's disk tier (experts read per chosen expert, docs/moe.md
# "Experts from the disk"; --host-budget = the limit less the runtime's own
# share) against llama.cpp (the xllamacpp package: the file mapped, the page
# cache its only cache of experts) in memory cgroups of the same limit, the
# file dropped from the page cache before each, and the disk's O_DIRECT rate
# measured in the same run (tests/bench/disk_bench.lua's dd).
#
#   tests/bench/moe_disk_peer.sh MODEL LIMIT_MIB [THREADS] [NGEN]
#
# Needs root (a memory cgroup, tests/disk/memory_cgroup.sh) and xllamacpp.
# Prints each engine's JSON line and a markdown table.
set -u
cd "$(dirname "$0")/../.."
model=${1:?usage: moe_disk_peer.sh MODEL LIMIT_MIB [THREADS] [NGEN]}
limit=${2:?LIMIT_MIB}
threads=${3:-2}
ngen=${4:-32}
build=${LRUN_BUILD:-$([ -x build-cpu/lrun ] && echo build-cpu || echo build)}
runtime_mib=${LRUN_PEER_RUNTIME_MIB:-96} # the launcher, LuaJIT and the library's own memory in the cgroup
. tests/disk/memory_cgroup.sh
size_mib=$(( $(stat -c %s "$model") >> 20 ))
echo "# $model: $size_mib MiB; limit $limit MiB; lrun $build, --host-budget $((limit - runtime_mib)) MiB; $threads threads"

# the page cache's share of the file before a run: what a run finds there it does not read (nor is charged for)
cached() { fincore -nb -o RES "$model" 2>/dev/null | tr -d ' ' || echo "?"; }
make_cg "lrun_moe_peer_lrun_$$" "$limit"
[ -n "$cg" ] || { echo "moe_disk_peer: no memory cgroup can be made here (root, a memory controller)" >&2; exit 1; }
drop_cache "$model"
echo "# lrun: $(cached) bytes of the file in the page cache before the run"
budget_gib=$(python3 -c "print(($limit - $runtime_mib) / 1024)")
lrun_out=$(LRUN_BENCH_DEVICE=cpu in_cg "$build/lrun" tests/bench/disk_bench.lua "$model" --device cpu \
  --gpu-budget "$budget_gib" --host-budget "$budget_gib" --ngen "$ngen" --depths 8 --prefill 0 2>/dev/null)
lrun_line=$(echo "$lrun_out" | grep '^{' | tail -1)
lrun_peak=$(( $(cg_peak) >> 20 )); lrun_oom=$(cg_oom)
rmdir "$cg"
echo "$lrun_line"

make_cg "lrun_moe_peer_llama_$$" "$limit"
drop_cache "$model"
echo "# llama.cpp: $(cached) bytes of the file in the page cache before the run"
llama_line=$(in_cg python3 tests/bench/llamacpp_bench.py --model "$model" --threads "$threads" \
  --prompt-file tests/bench/prompt.txt --n-prompt 8 --n-gen "$ngen" 2>/dev/null | grep '^{' | tail -1)
llama_peak=$(( $(cg_peak) >> 20 )); llama_oom=$(cg_oom)
rmdir "$cg"
echo "$llama_line"

python3 - "$lrun_line" "$llama_line" "$lrun_peak" "$llama_peak" "${lrun_oom:-0}" "${llama_oom:-0}" "$limit" <<'PY'
import json, sys
lr = json.loads(sys.argv[1]) if sys.argv[1] else {}
ll = json.loads(sys.argv[2]) if sys.argv[2] else {}
lp, llp, lo, llo, limit = sys.argv[3:8]
lt, llt = lr.get("tps"), ll.get("decode_tps")
print()
print(f"memory limit {limit} MiB; dd iflag=direct {lr.get('dd_bps', 0) / 1e9:.2f} GB/s")
print()
print("| engine | decode tok/s | disk GB/token | peak charged MiB | OOM kills | lrun / llama.cpp |")
print("|---|---:|---:|---:|---:|---:|")
ratio = f"{lt / llt:.2f}" if lt and llt else ""
print(f"| lrun (disk tier, host budget) | {lt or 0:.2f} | {lr.get('disk_bytes_per_tok', 0) / 1e9:.3f} | {lp} | {lo} | "
      f"{ratio} |")
print(f"| llama.cpp (mmap) | {llt or 0:.2f} | | {llp} | {llo} | 1 |")
PY
