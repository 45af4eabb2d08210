#!/usr/bin/env python3
"""plot_moe.py — mixture-of-experts decode and prefill under a GPU budget,
lrun's placements against llama.cpp's, from moe_bench.py's JSON lines.

    python3 docs/plot_moe.py [docs/moe_bench.jsonl] [docs/moe_bench.png]

One group of bars per (router, budget): decode tok/s of each engine and
placement, with the run's limit (the chosen experts' off-device bytes per
token over PCIe and host DRAM used together, moe_bench.py's limit_tps) as a
dashed line; right, prefill tok/s per prompt length. Needs matplotlib.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(r):
    return f"{r['engine']} {r['config']}"


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "docs/moe_bench.jsonl"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/moe_bench.png"
    rows = [json.loads(line) for line in open(src) if line.strip()]
    runs = [r for r in rows if "engine" in r and r.get("decode_tps")]
    info = next((r["info"] for r in rows if "info" in r), {})
    groups = sorted({(r.get("router", "?"), r["budget_gib"]) for r in runs})
    series = []
    for r in runs:
        if label(r) not in series:
            series.append(label(r))
    lengths = sorted({int(n) for r in runs for n in r.get("prefill_tps", {})})

    fig, (ax_d, ax_p) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(series))
    for si, name in enumerate(series):
        xs, ys, pxs, pys = [], [], [], []
        for gi, g in enumerate(groups):
            hit = [r for r in runs if label(r) == name and (r.get("router", "?"), r["budget_gib"]) == g]
            if hit:
                xs.append(gi + si * width)
                ys.append(hit[0]["decode_tps"])
                for li, n in enumerate(lengths):
                    v = hit[0].get("prefill_tps", {}).get(str(n))
                    if v:
                        pxs.append(gi * (len(lengths) + 1) + li + si * width)
                        pys.append(v)
        bars = ax_d.bar(xs, ys, width, label=name)
        ax_d.bar_label(bars, fmt="%.0f", fontsize=8)
        ax_p.bar(pxs, pys, width, label=name)
    for gi, g in enumerate(groups):
        lim = next((r["limit_tps"] for r in runs if (r.get("router", "?"), r["budget_gib"]) == g), None)
        if lim:
            ax_d.hlines(lim, gi - width / 2, gi + 0.8 - width / 2, colors="k", linestyles="dashed",
                        label="limit (PCIe + DRAM)" if gi == 0 else None)
    ax_d.set_xticks([gi + 0.4 - width / 2 for gi in range(len(groups))])
    ax_d.set_xticklabels([f"{router}, {b} GiB" for router, b in groups])
    ax_d.set_ylabel("decode tok/s (batch 1)")
    ax_d.legend(fontsize=8)
    ticks = [(gi * (len(lengths) + 1) + li + 0.4 - width / 2, f"{n}\n{router}, {b} GiB")
             for gi, (router, b) in enumerate(groups) for li, n in enumerate(lengths)]
    ax_p.set_xticks([t[0] for t in ticks])
    ax_p.set_xticklabels([t[1] for t in ticks], fontsize=8)
    ax_p.set_ylabel("prefill tok/s (prompt tokens)")
    title = f"{info.get('model', 'MoE')} ({info.get('n_layer', '?')} blocks, {info.get('n_expert', '?')} experts, " \
            f"top-{info.get('n_expert_used', '?')})"
    gpu = next((r["raw"].get("gpu_info") for r in runs if isinstance(r.get("raw"), dict) and r["raw"].get("gpu_info")),
               None)
    fig.suptitle(title + (f", {gpu}" if gpu else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
