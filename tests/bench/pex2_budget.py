#!/usr/bin/env python3
"""pex2_budget.py — where a PEX2 tensor's bytes go, per bf16 matrix of a GGUF
(issue #12's ratio goal, docs/packed.md "Where PEX2's bytes go").

PEX2's sections (docs/packed.md "The codec PEX2") are fixed by the exponent
histogram alone, so they are computed here without encoding: the rest byte
(sign and mantissa, 1 B an element), the 3-bit codes, the block table (8 B
per 1024 elements and one more entry, then 8 B of superblock bases per 64
entries; 12 B per 1024 before packed file version 2), one position byte per
exception (an exponent outside the 8 most frequent) and one far byte per
exception outside the 15 most frequent; plus the header and the zero padding to 16. The
entropy column is the exponents' Shannon entropy, the bound a per-tensor
exponent code (DFloat11's Huffman) approaches.

Usage: python3 tests/bench/pex2_budget.py MODEL.gguf [NAME_SUBSTRING]
"""
import sys

import numpy as np
from gguf import GGUFReader


def align16(x):
    return (x + 15) // 16 * 16


def budget(words):
    n = words.size
    e = (words >> 7) & 0xFF
    h = np.sort(np.bincount(e, minlength=256))[::-1]
    n_exc = int(n - h[:8].sum())
    n_far = int(n - h[:15].sum())
    nb = (n + 1023) // 1024
    rest_end = align16(32 + n)
    code_end = rest_end + 3 * n // 8 + 8
    table = (nb + 1) * 8 + (nb // 64 + 1) * 8  # the entries, then a superblock's bases per 64 of them
    size = align16(align16(code_end) + table + n_exc + n_far)
    p = h[h > 0] / n
    return {"n": n, "size": size, "rest": n, "codes": 3 * n / 8, "table": table, "exc": n_exc, "far": n_far,
            "entropy": float(-(p * np.log2(p)).sum())}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    want = sys.argv[2] if len(sys.argv) > 2 else ""
    r = GGUFReader(sys.argv[1])
    tot = {"n": 0, "size": 0, "rest": 0, "codes": 0, "table": 0, "exc": 0, "far": 0}
    print("| tensor | elements | ratio | codes | table | exceptions | far | exponent entropy (bits) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in r.tensors:
        # bf16 is GGML type 30; only matrices a multiple of 8 values long are PEX2
        if int(t.tensor_type) != 30 or len(t.shape) < 2 or want not in t.name or t.n_elements % 8:
            continue
        b = budget(np.asarray(t.data).view(np.uint16).ravel())
        two = 2 * b["n"]
        print("| %s | %d | %.4f | %.4f | %.4f | %.4f | %.4f | %.3f |" % (
            t.name, b["n"], b["size"] / two, b["codes"] / two, b["table"] / two, b["exc"] / two, b["far"] / two,
            b["entropy"]))
        for k in tot:
            tot[k] += b[k]
    if tot["n"]:
        two = 2 * tot["n"]
        print("| all | %d | **%.4f** | %.4f | %.4f | %.4f | %.4f | |" % (
            tot["n"], tot["size"] / two, tot["codes"] / two, tot["table"] / two, tot["exc"] / two, tot["far"] / two))
        print("(each column: bytes / plain bf16 bytes; the rest bytes are 0.5 of every row)")


if __name__ == "__main__":
    main()
