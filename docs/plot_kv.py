#!/usr/bin/env python3
"""plot_kv.py — decode tokens/s and peak device memory against context, per
KV cache kind, for lrun and HF transformers, from kv_bench.lua's JSON lines.

    python3 docs/plot_kv.py [docs/kv_bench.json] [docs/kv_bench.png]

Left: decode tok/s (log scale), lrun solid, HF dashed, and the physical limit
of each lrun kind that has one (HBM for the resident kinds, PCIe for the
offloaded ones) dotted. Right: peak device memory. Needs matplotlib.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KINDS = ["dynamic", "static", "offloaded", "offloaded_static", "quantized"]
COLORS = dict(zip(KINDS, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]))


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "docs/kv_bench.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/kv_bench.png"
    rows = [json.loads(line) for line in open(src) if line.startswith("{")]
    lrun = [r for r in rows if r.get("engine") == "lrun" and "error" not in r]
    hf = [r for r in rows if r.get("engine") != "lrun" and "impl" in r and "error" not in r]

    def series(rs, kind, field):
        pts = sorted((r["context"], r[field]) for r in rs if r["impl"] == kind and r.get(field) is not None)
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5))
    for kind in KINDS:
        c = COLORS[kind]
        ax_t.plot(*series(lrun, kind, "decode_tps"), "o-", color=c, label=f"lrun {kind}")
        ax_t.plot(*series(hf, kind, "decode_tps"), "s--", color=c, alpha=0.7, label=f"HF {kind}")
        if kind in ("static", "offloaded"):  # dynamic and offloaded_static share these limits
            xs, ys = series(lrun, kind, "limit_tps")
            ax_t.plot(xs, ys, ":", color=c, label=f"limit ({'HBM' if kind == 'static' else 'PCIe'})")
        xs, ys = series(lrun, kind, "peak_bytes")
        ax_m.plot(xs, [y / 1e9 for y in ys], "o-", color=c, label=f"lrun {kind}")
        xs, ys = series(hf, kind, "peak_bytes")
        ax_m.plot(xs, [y / 1e9 for y in ys], "s--", color=c, alpha=0.7, label=f"HF {kind}")
    for ax in (ax_t, ax_m):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_yscale("log")
    ax_t.set_ylabel("decode tokens/s (batch 1)")
    ax_t.set_title("Llama-2-7B shape, bf16, H100: decode speed")
    ax_m.set_ylabel("peak device memory, GB (weights 13.5 GB included)")
    ax_m.set_title("peak device memory")
    ax_t.legend(fontsize=7, ncol=2)
    ax_m.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print("wrote", dst)


if __name__ == "__main__":
    main()
