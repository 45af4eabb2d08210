#!/usr/bin/env python3
"""offload_bench.py — batch-1 decode of a Llama-2-7B-shape bf16 model under
GPU budgets too small for it (13.5 GB of weights): lrun streaming weights
through device slots and computing some on the host, against the PCIe limit
and HF accelerate on the same shape, in the same run.

    python3 tests/bench/offload_bench.py [--lrun build/lrun] [--budgets 2,4,8,12]
        [--ngen 12] [--accel-ngen 8] [--no-accelerate] [--quick] [--llama-bench PATH [--ngl 4,8,16]]
        [--out FILE.json]

Steps:
  1. pinned host->device bandwidth, measured with torch (1 GiB, best of 5);
  2. lrun: tests/bench/offload_lrun.lua on the generated 7b:bf16 GGUF (it
     writes one JSON line per configuration);
  3. accelerate: LlamaForCausalLM of the 7B shape, random bf16 weights,
     infer_auto_device_map(max_memory={0: "<B>GiB", "cpu": "200GiB"},
     no_split_module_classes=["LlamaDecoderLayer"]) + dispatch_model, greedy
     decode with the KV cache; one process per budget;
  4. with --llama-bench (a llama.cpp CUDA build): llama-bench -ngl N on the
     same GGUF for each N of --ngl, its device memory the nvidia-smi peak over
     idle (tests/bench/ngl_peer.py's sampler): a point at that memory;
  5. the PCIe limit of each lrun row: bandwidth / bytes it keeps off the
     device per token (streamed + host-computed); the budget's ideal limit:
     bandwidth / (bytes a decode step reads - budget); and the budget's
     PCIe+DRAM limit: the same bytes over both links at once, (bytes a decode
     step reads - budget) / (pinned H2D + the host's bf16 matmul rate beside
     the copies, as the planner measured them), the roof of hybrid decode
     when copies and host products share the host's DRAM (#15).
Prints a markdown table; --out writes everything as JSON (docs/plot_offload.py
plots it).
"""
import argparse
import json
import os
import subprocess
import sys
import time

GIB = 1024**3
MIB = 1024**2
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import peer_common as pc  # noqa: E402
from ngl_peer import PeakSampler  # noqa: E402


def h2d_bandwidth():
    import torch

    n = GIB
    src = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    dst = torch.empty(n, dtype=torch.uint8, device="cuda:0")
    dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src, non_blocking=True)
        b.record()
        torch.cuda.synchronize()
        best = min(best, a.elapsed_time(b) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return n / best, torch.cuda.get_device_name(0)


def accelerate_one(budget, ngen, batch=1):
    """One budget in this process (batch rows per step): prints one JSON line."""
    import torch
    import transformers
    from accelerate import dispatch_model, infer_auto_device_map
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                      tie_word_embeddings=False)
    t0 = time.time()
    torch.set_default_dtype(torch.bfloat16)
    try:
        from transformers.modeling_utils import no_init_weights
    except ImportError:  # newer transformers
        from transformers.initialization import no_init_weights
    with no_init_weights():
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model = model.to(torch.bfloat16).eval()
    # random weights, fast: one random block copied over every parameter
    block = (torch.randn(1 << 24) * 0.02).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            flat = p.data.view(-1)
            for at in range(0, flat.numel(), block.numel()):
                m = min(block.numel(), flat.numel() - at)
                flat[at:at + m].copy_(block[:m])
    dmap = infer_auto_device_map(model, max_memory={0: f"{budget}GiB", "cpu": "200GiB"},
                                 no_split_module_classes=["LlamaDecoderLayer"], dtype=torch.bfloat16)
    model = dispatch_model(model, device_map=dmap)
    setup_s = time.time() - t0
    on_gpu = sum(1 for v in dmap.values() if v == 0)
    ids = torch.tensor([[(100 + 37 * k + 11 * r) % 32000 for k in range(8)] for r in range(batch)], device="cuda:0")
    with torch.no_grad():
        out = model(ids, use_cache=True)
        pkv, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        out = model(tok, past_key_values=pkv, use_cache=True)  # warm-up step
        pkv, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        t = time.time()
        for _ in range(ngen):
            out = model(tok, past_key_values=pkv, use_cache=True)
            pkv, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        dt = time.time() - t
    print(json.dumps({"budget_gib": budget, "batch": batch, "tps": batch * ngen / dt, "setup_s": setup_s,
                      "modules_on_gpu": on_gpu,
                      "device_map": {k: str(v) for k, v in dmap.items()},
                      "gpu_alloc_bytes": torch.cuda.max_memory_allocated(0),
                      "transformers": transformers.__version__, "torch": torch.__version__}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lrun", default=os.path.join(ROOT, "build", "lrun"))
    ap.add_argument("--budgets", default="2,4,8,12")
    ap.add_argument("--ngen", type=int, default=12)
    ap.add_argument("--accel-ngen", type=int, default=8)
    ap.add_argument("--no-accelerate", action="store_true")
    ap.add_argument("--quick", action="store_true", help="lrun: per budget only auto and hybrid smart k=2")
    ap.add_argument("--out")
    ap.add_argument("--llama-bench", help="a llama.cpp CUDA build's llama-bench: its -ngl N on the same file")
    ap.add_argument("--ngl", default="4,8,16", help="with --llama-bench: the -ngl block counts")
    ap.add_argument("--accelerate-one", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--accel-batch", type=int, default=1, help="rows per step in --accelerate-one "
                    "(tests/bench/batch_offload.lua's peer at batch 32); tps is then aggregate")
    a = ap.parse_args()
    if a.accelerate_one is not None:
        return accelerate_one(int(a.accelerate_one) if a.accelerate_one.is_integer() else a.accelerate_one,
                              a.accel_ngen, a.accel_batch)
    budgets = [float(b) for b in a.budgets.split(",")]
    budgets = [int(b) if b.is_integer() else b for b in budgets]

    bw, gpu = h2d_bandwidth()
    print(f"offload_bench: {gpu}, pinned host->device {bw / 1e9:.1f} GB/s", file=sys.stderr)

    # one file for lrun and llama.cpp, removed at the end unless it was there before
    kept = os.path.exists(pc.path_7b("bf16"))
    path, _ = pc.generate_7b(a.lrun, "bf16", 900)
    try:
        cmd = [a.lrun, os.path.join(HERE, "offload_lrun.lua"), path, "--budgets", ",".join(map(str, budgets)),
               "--ngen", str(a.ngen)] + (["--quick"] if a.quick else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(r.stderr)
        rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        llama = llama_ngl(a, path) if a.llama_bench else []
    finally:
        if not kept:
            os.remove(path)
    if not rows:
        print("offload_bench: lrun gave no results: " + " ".join(cmd), file=sys.stderr)
        return 1

    accel = {}
    if not a.no_accelerate:
        for b in budgets:
            r = subprocess.run([sys.executable, __file__, "--accelerate-one", str(b), "--accel-ngen",
                                str(a.accel_ngen)], capture_output=True, text=True)
            line = [x for x in r.stdout.splitlines() if x.startswith("{")]
            if r.returncode or not line:
                print(f"offload_bench: accelerate at {b} GiB failed:\n{r.stderr[-2000:]}", file=sys.stderr)
                continue
            accel[b] = json.loads(line[-1])
            print(f"offload_bench: accelerate {b} GiB: {accel[b]['tps']:.2f} tok/s", file=sys.stderr)

    decode_bytes = None
    limits = {}  # budget -> PCIe+DRAM limit tok/s
    for row in rows:
        row["pcie_limit_tps"] = bw / row["offloaded_bytes"] if row["offloaded_bytes"] else None
        row["of_limit"] = row["tps"] / row["pcie_limit_tps"] if row["pcie_limit_tps"] else None
        # a decode step reads every matrix and one embedding row (the table itself is 32000 rows)
        decode_bytes = row["weight_bytes"] - 4096 * 2 * (32000 - 1)
        b = row["budget_gib"]
        if isinstance(b, (int, float)):
            row["ideal_limit_tps"] = bw / max(1.0, decode_bytes - b * GIB)
            host = row.get("host_matmul_copying_bf16") or row.get("host_matmul_bf16")
            if host and row.get("h2d_pinned"):
                row["combined_limit_tps"] = (row["h2d_pinned"] + host) / max(1.0, decode_bytes - b * GIB)
                limits.setdefault(b, row["combined_limit_tps"])
            if b in accel:
                row["vs_accelerate"] = row["tps"] / accel[b]["tps"]

    print(f"GPU: {gpu}; pinned host->device {bw / 1e9:.1f} GB/s; Llama-2-7B shape, bf16, batch 1, greedy decode")
    print()
    print("| budget | configuration | layers on GPU | off-device GB/token (streamed + host) | lrun tok/s | "
          "PCIe limit tok/s | % of limit | stall ms/token | accelerate tok/s | × accelerate | "
          "predicted tok/s (error) | prefill 512 tok/s | predicted (error) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        b = row["budget_gib"]
        bl = f"{b} GiB" if isinstance(b, (int, float)) else "no cap"
        ac = accel.get(b)
        lim = row["pcie_limit_tps"]
        pred = row.get("predicted_tps")  # lrun.predict's figure for the plan (#15: within 10%)
        pred = f"{pred:.2f} ({100 * (pred - row['tps']) / row['tps']:+.0f}%)" if pred else "–"
        pf, ppf = row.get("prefill_tps"), row.get("predicted_prefill_tps")  # one 512-token chunk (#15)
        pred += f" | {pf:.0f} | " if pf else " | – | "
        pred += f"{ppf:.0f} ({100 * (ppf - pf) / pf:+.0f}%)" if pf and ppf else "–"
        print(f"| {bl} | {row['config']} | {row['n_dev_layers'] if row['n_dev_layers'] >= 0 else '–'} | "
              f"{row['offloaded_bytes'] / 1e9:.2f} ({row['streamed_bytes'] / 1e9:.2f} + {row['host_bytes'] / 1e9:.2f}) | "
              f"{row['tps']:.2f} | {lim:.2f} | {100 * row['of_limit']:.0f}% | {1e3 * row['stall_s_per_tok']:.1f} | "
              f"{ac['tps']:.2f} | {row['tps'] / ac['tps']:.1f}× | {pred} |" if ac and lim else
              f"| {bl} | {row['config']} | {row['n_dev_layers'] if row['n_dev_layers'] >= 0 else '–'} | "
              f"{row['offloaded_bytes'] / 1e9:.2f} | {row['tps']:.2f} | {lim or 0:.2f} | "
              f"{100 * (row['of_limit'] or 0):.0f}% | {1e3 * row['stall_s_per_tok']:.1f} | – | – | {pred} |")
    if limits:
        print()
        print("| budget | PCIe+DRAM limit tok/s | lrun auto tok/s | % of it |")
        print("|---|---:|---:|---:|")
        for b, lim in limits.items():
            auto = next((r["tps"] for r in rows if r["budget_gib"] == b and r["config"] == "auto"), None)
            share = f"{100 * auto / lim:.0f}%" if auto else "–"
            print(f"| {b} GiB | {lim:.2f} | {pc.fmt(auto, '.2f')} | {share} |")
    if llama:
        print()
        print("| llama.cpp -ngl | device GiB (peak) | llama.cpp tg tok/s | lrun auto at the nearest budget below |")
        print("|---:|---:|---:|---|")
        for p in llama:
            below = [r for r in rows if r["config"] == "auto" and isinstance(r["budget_gib"], (int, float))
                     and p.get("device_gib") and r["budget_gib"] <= p["device_gib"]]
            best = max(below, key=lambda r: r["budget_gib"], default=None)
            near = f"{best['tps']:.2f} at {best['budget_gib']} GiB ({best['tps'] / p['tg']:.2f}×)" \
                if best and p.get("tg") else "–"
            print(f"| {p['ngl']} | {pc.fmt(p.get('device_gib'), '.2f')} | {pc.fmt(p.get('tg'), '.2f')} | {near} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"gpu": gpu, "h2d_bytes_per_s": bw, "decode_bytes": decode_bytes, "lrun": rows,
                       "accelerate": {str(k): v for k, v in accel.items()}, "llama_ngl": llama}, f, indent=1)
    return 0


def llama_ngl(a, path):
    """llama-bench -ngl N (batch-1 tg of a.ngen tokens) for each N of a.ngl, each with the device memory it
    took (nvidia-smi's peak over idle): [{ngl, device_gib, tg, pp}]."""
    out = []
    for n in (int(x) for x in a.ngl.split(",")):
        with PeakSampler(0) as s:
            r = pc.llama_bench(a.llama_bench, path, [512], a.ngen, [], 600, ngl=n)
        mib = s.peak()
        p = {"ngl": n, "device_gib": mib * MIB / GIB if mib else None, "tg": r.get("tg"),
             "pp": r.get("pp", {}).get("512"), "error": r.get("error")}
        print(f"offload_bench: llama.cpp -ngl {n}: {pc.fmt(p['tg'], '.2f')} tok/s at "
              f"{pc.fmt(p['device_gib'], '.2f')} GiB", file=sys.stderr)
        out.append(p)
    return out


if __name__ == "__main__":
    sys.exit(main())
