#!/usr/bin/env python3
"""ngl_peer.py — llama.cpp's -ngl N against lrun at the same device memory (#15).

Usage: python3 tests/bench/ngl_peer.py --llama-bench PATH [--lrun build/lrun] [--ngl 4,8,16]
         [--device cuda:0] [--gpu 0] [--prefill 512] [--ngen 32] [--timeout S] [--out FILE] [--keep] MODEL
  MODEL  a GGUF path, or 7b:<type> (tests/bench/llama7b.lua's random Llama-2-7B
         shape, written to $LRUN_BENCH_DIR unless there; deleted after unless --keep).

For each N of --ngl, one after the other:
  llama.cpp  llama-bench -m FILE -ngl N -p PREFILL -n NGEN -r 2 -o json: N blocks
             on the GPU, the rest computed by its CPU backend; meanwhile
             nvidia-smi samples the GPU's memory.used every 0.1 s, and its
             device memory is the peak over the idle figure before the run
             (weights, KV cache, compute buffers: what llama.cpp really took).
  lrun       tests/bench/peer_lrun.lua FILE --device DEVICE --gpu-budget <that
             peak> --prefill PREFILL --ngen NGEN: no placement flag, auto-fit's
             plan under the same device memory, with its predictions.
Without nvidia-smi the budget is estimated as N/n_layer of the weights plus
512 MiB, and the row says "estimated". Prints a markdown table; --out gets
one JSON line per N.
"""
import argparse
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

MiB = 1024 * 1024
HEADER = ("| -ngl | llama.cpp device MiB | llama.cpp pp | llama.cpp tg | lrun budget | lrun pp | lrun decode | "
          "decode lrun/llama | prefill lrun/llama | lrun predicted decode (error) |\n"
          "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")


def gpu_used_mib(gpu):
    """memory.used of GPU gpu in MiB (nvidia-smi), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i",
                              str(gpu)], capture_output=True, text=True, timeout=10).stdout
        return float(out.strip().splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


class PeakSampler:
    """Samples gpu_used_mib every 0.1 s from start to stop; peak() over the idle figure at start."""

    def __init__(self, gpu):
        self.gpu, self.idle, self.top, self.done = gpu, gpu_used_mib(gpu), None, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.done.wait(0.1):
            v = gpu_used_mib(self.gpu)
            if v is not None and (self.top is None or v > self.top):
                self.top = v

    def __enter__(self):
        if self.idle is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()

    def peak(self):
        return None if self.idle is None or self.top is None else max(0.0, self.top - self.idle)


def bench_ngl(args, path, info, n):
    r = {"ngl": n}
    with PeakSampler(args.gpu) as s:
        r["llama"] = pc.llama_bench(args.llama_bench, path, [args.prefill], args.ngen, [], args.timeout, ngl=n)
    mib = s.peak()
    if mib:
        r["llama_device_mib"], r["budget_from"] = mib, "measured"
    else:  # no nvidia-smi: N blocks' share of the weights and room for the KV cache and buffers
        mib = n / max(1, info.get("n_layer", 1)) * info.get("weight_bytes", 0) / MiB + 512
        r["llama_device_mib"], r["budget_from"] = mib, "estimated"
    budget = f"{int(mib)}M"
    r["lrun"] = pc.lrun_side(args.lrun, path, ["--device", args.device, "--gpu-budget", budget, "--prefill",
                                               str(args.prefill), "--ngen", str(args.ngen)], args.timeout)
    r["lrun_budget"] = budget
    return r


def row(r, prefill):
    lc, lr = r.get("llama", {}), r.get("lrun", {})
    pp, tg = lc.get("pp", {}).get(str(prefill)), lc.get("tg")
    lpp, ltg = (lr.get("prefill_tps") or {}).get(str(prefill)), lr.get("decode_tps")
    pred = lr.get("predicted_decode_tps")
    err = f"{pred:.1f} ({100 * (pred - ltg) / ltg:+.0f}%)" if pred and ltg else "–"
    mib = pc.fmt(r.get("llama_device_mib"), ".0f") + (" (estimated)" if r.get("budget_from") == "estimated" else "")
    return (f"| {r['ngl']} | {mib} | {pc.fmt(pp, '.0f')} | {pc.fmt(tg, '.2f')} | {r.get('lrun_budget', '–')} | "
            f"{pc.fmt(lpp, '.0f')} | {pc.fmt(ltg, '.2f')} | {pc.fmt(pc.ratio(ltg, tg), '.2f')} | "
            f"{pc.fmt(pc.ratio(lpp, pp), '.2f')} | {err} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--llama-bench", required=True)
    p.add_argument("--lrun", default=os.path.join(pc.ROOT, "build", "lrun"))
    p.add_argument("--ngl", default="4,8,16", help="comma-separated block counts for llama.cpp's -ngl")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--gpu", type=int, default=0, help="nvidia-smi's index of that device")
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--ngen", type=int, default=32)
    p.add_argument("--timeout", type=float, default=300, help="seconds per step (generation, llama-bench, lrun)")
    p.add_argument("--out")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    try:
        ngls = [int(x) for x in args.ngl.split(",")]
    except ValueError:
        p.error(f"--ngl {args.ngl}: comma-separated whole numbers")
    if any(n < 0 for n in ngls):
        p.error("--ngl: block counts are >= 0")
    dtype = args.model[3:] if args.model.startswith("7b:") else None
    path = args.model
    if dtype:
        path, _ = pc.generate_7b(args.lrun, dtype, args.timeout)
    lines = pc.Lines(args.out)
    try:
        info = pc.lrun_side(args.lrun, path, ["--info"], args.timeout)
        if "error" in info:
            pc.log(f"ngl_peer: {path}: {info['error']}")
            return 1
        print(f"{os.path.basename(path)}: {info.get('n_layer')} blocks, {pc.fmt(info.get('weight_bytes', 0) / 1e9, '.2f')}"
              f" GB of weights; prefill {args.prefill}, {args.ngen} generated tokens", flush=True)
        print(HEADER, flush=True)
        for n in ngls:
            r = bench_ngl(args, path, info, n)
            lines.write(r)
            print(row(r, args.prefill), flush=True)
    finally:
        if dtype and not args.keep:
            os.remove(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
