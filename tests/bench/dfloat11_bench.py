#!/usr/bin/env python3
"""dfloat11_bench.py — DFloat11 (PyPI dfloat11 0.5.0, its own Huffman coder and
CUDA decode kernel) on the same bf16 matrices lrun's packed codec is measured
on, for the comparison issue #12 asks for in the same run (docs/packed.md).

Input: an HF directory written by lrun's generator with trained-like
statistics (synthetic, no checkpoint downloaded):

  build/lrun examples/genmodel.lua -o /tmp/df11 --hf --trained --dtype bf16 \\
      --layers 1 --embd 4096 --ff 11008 --heads 32 --vocab 512
  python3 tests/bench/dfloat11_bench.py /tmp/df11 [--json OUT]

For each of the layer's MLP matrices (gate_proj 11008x4096, down_proj
4096x11008): DFloat11's ratio (all its arrays: encoded exponents, sign and
mantissa bytes, output positions, gaps, lookup tables), a bit-exact check of
its decode, its decode GB/s (plain bf16 bytes written per second, best of 20),
and its decode + GEMV (batch 1, torch) against the plain bf16 GEMV. Needs
torch, cupy, safetensors and the dfloat11 and dahuffman wheels (carried);
runs on the GPU machine. DFloat11's encoder is a Python loop: about a minute
per 45M-element matrix, with its own progress bar.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
from safetensors.torch import load_file


def df11_encode(w):
    """DFloat11's own pipeline (dfloat11.compress_model's per-module steps)."""
    from dfloat11.dfloat11_utils import get_codec, get_32bit_codec, get_luts, encode_weights
    from dfloat11 import dfloat11 as df
    _, counter = get_codec(w)
    codec, _, table = get_32bit_codec(counter)
    luts = get_luts(table)
    encoded, other, positions, gaps, _ = encode_weights([w], codec, df.bytes_per_thread, df.threads_per_block[0])
    return luts, encoded, other, positions, gaps


def df11_decoder(luts, encoded, other, positions, gaps):
    """A callable decoding into a bf16 tensor on cuda:0 with DFloat11's kernel."""
    import cupy as cp
    from dfloat11 import dfloat11 as df
    dev = torch.device("cuda:0")
    d = [t.to(dev) for t in (luts, encoded, other, positions, gaps)]
    n_luts, n_bytes, n_elements = luts.shape[0], encoded.numel(), other.numel()
    pos = positions.view(torch.uint32).numpy().astype("int64")
    shared = df.threads_per_block[0] * 4 + 4 + int((pos[1:] - pos[:-1]).max()) * 2
    grid = (int(math.ceil(n_bytes / (df.threads_per_block[0] * df.bytes_per_thread))),)
    out = torch.empty(n_elements, dtype=torch.bfloat16, device=dev)

    def decode():
        with cp.cuda.Device(0):
            df._decode(grid=grid, block=df.threads_per_block, shared_mem=shared,
                       args=[d[0].data_ptr(), d[1].data_ptr(), d[2].data_ptr(), d[3].data_ptr(), d[4].data_ptr(),
                             out.data_ptr(), n_luts, n_bytes, n_elements])
        return out
    return decode


def best_ms(fn, reps=20, inner=10):
    """Best mean milliseconds of fn over reps rounds of inner calls (CUDA events)."""
    best = float("inf")
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        torch.cuda.synchronize()
        best = min(best, a.elapsed_time(b) / inner)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="HF directory from examples/genmodel.lua --hf --trained --dtype bf16")
    ap.add_argument("--json", help="write the rows here too")
    a = ap.parse_args()
    files = sorted(f for f in os.listdir(a.dir) if f.endswith(".safetensors"))
    tensors = {}
    for f in files:
        tensors.update(load_file(os.path.join(a.dir, f)))
    rows = []
    for name in sorted(tensors):
        if not any(k in name for k in ("gate_proj", "down_proj")):
            continue
        w = tensors[name]
        assert w.dtype == torch.bfloat16, f"{name}: {w.dtype}, not bf16"
        t0 = time.time()
        parts = df11_encode(w.flatten())
        enc_s = time.time() - t0
        packed = sum(p.numel() * p.element_size() for p in parts)
        plain = w.numel() * 2
        decode = df11_decoder(*parts)
        exact = torch.equal(decode().cpu().view(torch.int16), w.flatten().view(torch.int16))
        ms = best_ms(decode)
        wd = w.to("cuda:0")
        x = torch.randn(1, w.shape[1], dtype=torch.bfloat16, device="cuda:0")
        gemv_ms = best_ms(lambda: torch.nn.functional.linear(x, wd))
        both_ms = best_ms(lambda: torch.nn.functional.linear(x, decode().view(w.shape)))
        row = {"tensor": name, "shape": list(w.shape), "ratio": packed / plain, "bit_exact": exact,
               "encode_s": enc_s, "decode_ms": ms, "decode_gbps": plain / ms / 1e6,
               "gemv_ms": gemv_ms, "decode_gemv_ms": both_ms, "decode_gemv_over_gemv": both_ms / gemv_ms}
        rows.append(row)
        print(f"dfloat11 {name} {w.shape[0]}x{w.shape[1]}: ratio {row['ratio']:.4f}, bit-exact {exact}, "
              f"decode {row['decode_gbps']:.1f} GB/s ({ms:.3f} ms), GEMV {gemv_ms:.3f} ms, "
              f"decode+GEMV {both_ms:.3f} ms = {row['decode_gemv_over_gemv']:.2f}x the plain GEMV", flush=True)
    if not rows:
        sys.exit("no gate_proj/down_proj bf16 tensor in " + a.dir)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
