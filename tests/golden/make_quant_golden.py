#!/usr/bin/env python3
"""Writes tests/golden/quant_blocks.json: quantized blocks and their values as
computed by gguf-py (the `gguf` package's numpy codecs, written by the ggml
authors, not by us), for tests/c/test_quant.c to compare lrun's codecs with.

For each case:
  type         lrun/ggml type name
  n            number of elements
  input        float32 inputs (only for types gguf-py can quantize)
  quantized    gguf-py's bytes as hex: its quantization of input, or, for the
               K-quants gguf-py can only decode (and Q5_0/Q5_1 too), random
               raw blocks: any bytes, with f16 scales of sane magnitude
  dequantized  gguf-py's decoding of quantized, float32
  exact_quant  true when gguf-py's quantizer is ggml's round-to-nearest
               reference, so lrun's quantizer must give the same bytes

MXFP4 (gpt-oss's experts): gguf-py's quantization of the three input kinds
(lrun's quantizer is gguf-py's rule), and random raw blocks: any codes, with
E8M0 scales from tiny (subnormal halves) to large.

IQ4_NL and IQ4_XS are not here: gguf-py has no codec for them (their
reference is llama.cpp itself, tests/llamacpp_quants_spec.lua).

Regenerate with: python3 tests/golden/make_quant_golden.py  (never hand-edit).
"""
import json
import os
from importlib.metadata import version

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

SEED = 20240611
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quant_blocks.json")


def f32_list(a):
    # float32 → Python float is exact, and json writes the shortest repr that
    # reads back to the same double, hence the same float32.
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


def inputs(rng, n, kind):
    if kind == "gauss":  # blocks of different magnitudes
        scales = np.repeat(10.0 ** rng.uniform(-3, 1, n // 32), 32)
        return (rng.standard_normal(n) * scales).astype(np.float32)
    if kind == "positive":  # Q4_1's min > 0, Q4_0's max of either sign
        return rng.uniform(0.5, 2.0, n).astype(np.float32)
    if kind == "special":  # zeros, a constant block, one outlier, tiny values
        x = np.zeros(n, dtype=np.float32)
        x[32:64] = 0.75
        x[64:96] = rng.standard_normal(32) * 0.01
        x[70] = -3.0
        x[96:128] = rng.standard_normal(32) * 1e-6
        return x
    raise ValueError(kind)


def case_quantizable(rng, name, qtype, n, kind):
    x = inputs(rng, n, kind)
    q = quants.quantize(x, qtype)
    y = quants.dequantize(q, qtype)
    return {"type": name, "n": n, "kind": kind, "input": f32_list(x),
            "quantized": q.view(np.uint8).tobytes().hex(), "dequantized": f32_list(y), "exact_quant": True}


def random_f16(rng, size, lo, hi):
    mag = 10.0 ** rng.uniform(np.log10(lo), np.log10(hi), size)
    return (mag * rng.choice([-1.0, 1.0], size)).astype(np.float16)


# Where the f16 fields sit in each raw block: (bytes before them, how many,
# bytes after them) — ggml-common.h's layouts.
RAW_LAYOUT = {
    T.Q4_K: (0, 2, 12 + 128),        # f16 d, dmin; scales[12]; qs[128]
    T.Q6_K: (128 + 64 + 16, 1, 0),   # ql[128]; qh[64]; scales[16]; f16 d
    T.Q5_0: (0, 1, 4 + 16),          # f16 d; qh[4]; qs[16]
    T.Q5_1: (0, 2, 4 + 16),          # f16 d, m; qh[4]; qs[16]
    T.Q2_K: (16 + 64, 2, 0),         # scales[16]; qs[64]; f16 d, dmin
    T.Q3_K: (32 + 64 + 12, 1, 0),    # hmask[32]; qs[64]; scales[12]; f16 d
    T.Q5_K: (0, 2, 12 + 32 + 128),   # f16 d, dmin; scales[12]; qh[32]; qs[128]
}


def case_mxfp4_raw(rng, n_blocks):
    """Random MXFP4 blocks: u8 e (E8M0; 0 and 1 decode to subnormal halves), u8 qs[16]."""
    e = np.concatenate([[0, 1, 200], rng.integers(100, 140, n_blocks - 3)]).astype(np.uint8)
    blocks = [bytes([int(x)]) + rng.integers(0, 256, 16, dtype=np.uint8).tobytes() for x in e]
    raw = np.frombuffer(b"".join(blocks), dtype=np.uint8)
    y = quants.dequantize(raw, T.MXFP4)
    return {"type": "mxfp4", "n": 32 * n_blocks, "kind": "random_blocks",
            "quantized": raw.tobytes().hex(), "dequantized": f32_list(y), "exact_quant": False}


def case_k(rng, name, qtype, n_blocks, block=256):
    before, n_f16, after = RAW_LAYOUT[qtype]
    blocks = []
    for _ in range(n_blocks):
        head = rng.integers(0, 256, before, dtype=np.uint8)
        d = random_f16(rng, n_f16, 1e-4, 1e-1)
        tail = rng.integers(0, 256, after, dtype=np.uint8)
        blocks.append(head.tobytes() + d.view(np.uint8).tobytes() + tail.tobytes())
    raw = np.frombuffer(b"".join(blocks), dtype=np.uint8)
    y = quants.dequantize(raw, qtype)
    return {"type": name, "n": block * n_blocks, "kind": "random_blocks",
            "quantized": raw.tobytes().hex(), "dequantized": f32_list(y), "exact_quant": False}


def main():
    rng = np.random.default_rng(SEED)
    cases = []
    for name, qtype in (("q4_0", T.Q4_0), ("q4_1", T.Q4_1), ("q8_0", T.Q8_0), ("bf16", T.BF16), ("f16", T.F16)):
        for kind in ("gauss", "positive", "special"):
            cases.append(case_quantizable(rng, name, qtype, 128, kind))
    for name, qtype in (("q4_k", T.Q4_K), ("q6_k", T.Q6_K)):
        cases.append(case_k(rng, name, qtype, 3))
    # the types added later, after the first ones so those keep their bytes
    for name, qtype in (("q5_0", T.Q5_0), ("q5_1", T.Q5_1)):
        for kind in ("gauss", "positive", "special"):
            cases.append(case_quantizable(rng, name, qtype, 128, kind))
        cases.append(case_k(rng, name, qtype, 4, block=32))
    for name, qtype in (("q2_k", T.Q2_K), ("q3_k", T.Q3_K), ("q5_k", T.Q5_K)):
        cases.append(case_k(rng, name, qtype, 3))
    for kind in ("gauss", "positive", "special"):
        cases.append(case_quantizable(rng, "mxfp4", T.MXFP4, 128, kind))
    cases.append(case_mxfp4_raw(rng, 8))
    with open(OUT, "w") as f:
        # one case per line: readable diffs when it is regenerated
        head = {"generator": "tests/golden/make_quant_golden.py, gguf-py " + version("gguf"), "seed": SEED}
        f.write(json.dumps(head)[:-1] + ', "cases": [\n')
        f.write(",\n".join(json.dumps(c) for c in cases))
        f.write("\n]}\n")


if __name__ == "__main__":
    main()
