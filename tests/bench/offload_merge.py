#!/usr/bin/env python3
"""offload_merge.py — joins the JSON of several offload_bench.py runs (each
for some budgets: one device call may run ten minutes at most) into one file
for docs/plot_offload.py.

    python3 tests/bench/offload_merge.py OUT.json RUN1.json RUN2.json ...

Budget rows come from the first run that measured that budget; accelerate's
figure for a budget and llama.cpp's -ngl points from the first run that has
them (a run may measure lrun alone); the uncapped rows (resident,
--cpu-offload-gb) and the machine's figures (GPU name, pinned host->device
bandwidth) from the first run, which the JSON notes per run.
"""
import json
import sys


def main():
    out, runs = sys.argv[1], [json.load(open(p)) for p in sys.argv[2:]]
    if not runs:
        sys.exit("offload_merge: give the output file and at least one run")
    merged = dict(runs[0])
    merged["lrun"] = [r for r in runs[0]["lrun"] if not isinstance(r["budget_gib"], (int, float))]
    merged["accelerate"] = {}
    merged["runs"] = [{"file": p, "h2d_bytes_per_s": r["h2d_bytes_per_s"]} for p, r in zip(sys.argv[2:], runs)]
    merged["llama_ngl"] = []
    seen = set()
    for run in runs:
        budgets = {r["budget_gib"] for r in run["lrun"] if isinstance(r["budget_gib"], (int, float))}
        for b in sorted(budgets - seen):
            merged["lrun"] += [r for r in run["lrun"] if r["budget_gib"] == b]
        seen |= budgets
        # a peer's figure from the first run that has it (a run may measure lrun alone: --no-accelerate)
        for k, v in run.get("accelerate", {}).items():
            merged["accelerate"].setdefault(k, v)
        have = {p["ngl"] for p in merged["llama_ngl"]}
        merged["llama_ngl"] += [p for p in run.get("llama_ngl", []) if p["ngl"] not in have]
    json.dump(merged, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
