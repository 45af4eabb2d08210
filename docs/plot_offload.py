#!/usr/bin/env python3
"""plot_offload.py — tokens/s against GPU budget from offload_bench.py's JSON.

    python3 docs/plot_offload.py [docs/offload_bench.json] [docs/offload_sweep.png]

One line each: lrun with the budget alone (auto-fit, no placement flag),
the same with packed = false (rows "auto, plain", since session 27),
lrun streaming (k=1), lrun with hybrid host compute (the best hand-picked
hybrid configuration at k=2), HF accelerate, llama.cpp's -ngl N at the
device memory it took, the PCIe limit of lrun's own placement (bandwidth /
bytes it keeps off the device per token), the ideal PCIe limit of the
budget (bandwidth / (bytes a step reads - budget)) and the budget's
PCIe+DRAM limit (the same bytes over both links at once). Series a JSON
file lacks (older runs) are left out. Needs matplotlib.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "docs/offload_bench.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/offload_sweep.png"
    d = json.load(open(src))
    rows = [r for r in d["lrun"] if isinstance(r["budget_gib"], (int, float))]
    budgets = sorted({r["budget_gib"] for r in rows})

    def series(pick):
        xs, ys = [], []
        for b in budgets:
            r = pick([x for x in rows if x["budget_gib"] == b])
            if r is not None:
                xs.append(b)
                ys.append(r)
        return xs, ys

    stream = series(lambda rs: next((r["tps"] for r in rs if r["config"] == "stream k=1"), None))
    limit = series(lambda rs: next((r["pcie_limit_tps"] for r in rs if r["config"] == "stream k=1"), None))
    ideal = series(lambda rs: next((r["ideal_limit_tps"] for r in rs if r["config"] == "stream k=1"), None))
    hybrid_rows = lambda rs: [r for r in rs if r["config"].startswith("hybrid") and r["config"].endswith("k=2")]
    hybrid = series(lambda rs: max((r["tps"] for r in hybrid_rows(rs)), default=None))
    acc = sorted((float(k), v["tps"]) for k, v in d["accelerate"].items())
    auto = series(lambda rs: next((r["tps"] for r in rs if r["config"] == "auto"), None))
    auto_plain = series(lambda rs: next((r["tps"] for r in rs if r["config"] == "auto, plain"), None))
    combined = series(lambda rs: next((r["combined_limit_tps"] for r in rs if r.get("combined_limit_tps")), None))
    ngl = sorted((p["device_gib"], p["tg"], p["ngl"]) for p in d.get("llama_ngl", []) if p.get("device_gib")
                 and p.get("tg"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if auto[0]:
        ax.plot(*auto, "D-", color="black", label="lrun, budget only (auto-fit)")
    if auto_plain[0]:  # since session 27: auto-fit with packed = false, for what packing adds
        ax.plot(*auto_plain, "d--", color="dimgray", label="lrun, budget only, nothing packed")
    ax.plot(*hybrid, "o-", color="tab:green", label="lrun, hybrid host compute (k=2, hand-picked)")
    if stream[0]:  # offload_bench --quick measures no streaming rows
        ax.plot(*stream, "o-", color="tab:blue", label="lrun, streaming (k=1)")
        ax.plot(*limit, "--", color="tab:blue", alpha=0.6, label="PCIe limit of lrun's placement")
        ax.plot(*ideal, ":", color="gray", label="PCIe limit if the whole budget held weights")
    if combined[0]:
        ax.plot(*combined, "-.", color="tab:purple", alpha=0.7, label="PCIe+DRAM limit of the budget")
    ax.plot([a for a, _ in acc], [t for _, t in acc], "s-", color="tab:red", label="HF accelerate (dispatch_model)")
    if ngl:
        ax.plot([g for g, _, _ in ngl], [t for _, t, _ in ngl], "^-", color="tab:orange",
                label="llama.cpp -ngl N (at its device memory)")
        for g, t, n in ngl:
            ax.annotate(f"-ngl {n}", (g, t), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xticks(budgets)
    ax.set_xlabel("GPU budget (GiB)")
    ax.set_ylabel("decode tokens/s (batch 1)")
    ax.set_title(f"Llama-2-7B shape, bf16, {d['gpu']}\npinned H2D {d['h2d_bytes_per_s'] / 1e9:.1f} GB/s", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print("wrote", dst)


if __name__ == "__main__":
    main()
