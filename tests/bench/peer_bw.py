#!/usr/bin/env python3
"""peer_bw.py — the bandwidths the peer benchmarks' limits divide by, as one JSON line (GB/s):

  hbm_read   device memory read: tests/bench/hf_bench.py's bandwidth() (the
             best of torch sums over a 4 GiB tensor), what gpu_bench.lua uses
  pcie_h2d   host-to-device copies from pinned memory: the best of 5 copies
             of 1 GiB (torch, non_blocking from a pinned tensor)
  dram_read  host memory read: numpy sums over a 4 GiB buffer (larger than
             any LLC), one slice per core in threads (numpy's reductions
             release the GIL), best of 3

A figure whose module (torch, numpy) is missing, or that fails, is left out.
Usage: python3 tests/bench/peer_bw.py [--what hbm,pcie,dram]
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

GiB = 1 << 30


def hbm_read():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import hf_bench

    return hf_bench.bandwidth()[0]


def pcie_h2d():
    import torch

    src = torch.ones(GiB, dtype=torch.uint8).pin_memory()
    dst = torch.empty(GiB, dtype=torch.uint8, device="cuda")
    dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return GiB / best / 1e9


def dram_read(gib=4):
    import numpy as np

    buf = np.ones(gib * GiB // 8, dtype=np.int64)
    n = os.cpu_count() or 1
    parts = np.array_split(buf, n)
    best = float("inf")
    with ThreadPoolExecutor(n) as pool:
        for _ in range(3):
            t0 = time.perf_counter()
            list(pool.map(lambda a: int(a.sum()), parts))
            best = min(best, time.perf_counter() - t0)
    return buf.nbytes / best / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", default="hbm,pcie,dram")
    args = p.parse_args()
    fns = {"hbm": ("hbm_read", hbm_read), "pcie": ("pcie_h2d", pcie_h2d), "dram": ("dram_read", dram_read)}
    out = {}
    for w in args.what.split(","):
        key, fn = fns[w]
        try:
            out[key] = fn()
        except Exception as e:  # a missing module or device: the figure is left out
            print(f"peer_bw: {key}: {e}", file=sys.stderr)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
