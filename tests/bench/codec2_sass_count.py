#!/usr/bin/env python3
"""codec2_sass_count.py — SASS instructions per element, by issue pipe, of the
codec2 prototype's kernels (tests/bench/codec2_proto.cu compiled with
-DC2_SASS_HOT; run by tests/bench/codec2_study.sh), counted the way
packed_sass_count.py counts PEX1's (its pipe classes and loop finder):

decode_rows: the whole kernel, one codec block (32 elements) per lane, the
  exceptions' patch included (one pass: C2_ASSUME) — compare with PEX1's
  decode_rows bf16 (15.3 per element);
fused GEMV: the decode loop's body (one codec block per warp: the lanes'
  decode, the patch, the loop's bookkeeping) and the product loop's body (one
  8-element unit) — compare with PEX1's 18.7 + 4.0 per element.
Usage: codec2_sass_count.py FILE.sass"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from packed_sass_count import functions, loops, show  # noqa: E402


def has(ins, a, b, prefix):
    return any(op.startswith(prefix) for _, op, _ in ins[a:b + 1])


def main():
    fns = functions(open(sys.argv[1]).read())
    for name, ins in sorted(fns.items()):
        code = "pfor-2p (3-bit)" if "ILi8E" in name else "b6-2p (base 6)"
        if "c2_decode_rows_k" in name:
            show(f"decode_rows {code}: whole kernel, per lane", ins, 32)
        if "c2_gemv_k" in name:
            ls = loops(ins)
            dec = [l for l in ls if has(ins, l[0], l[1], "PRMT") and not has(ins, l[0], l[1], "FFMA")]
            if dec:
                a, b = max(dec, key=lambda l: l[1] - l[0])
                show(f"fused {code}: decode loop, per codec block", ins[a:b + 1], 32)
            prod = [l for l in ls if has(ins, l[0], l[1], "FFMA")]
            if prod:
                a, b = min(prod, key=lambda l: l[1] - l[0])
                ffma = sum(1 for _, op, _ in ins[a:b + 1] if op.startswith("FFMA"))
                units = max(1, ffma // 8)
                show(f"fused {code}: product loop ({units} unit(s) of 8)", ins[a:b + 1], 8 * units)


if __name__ == "__main__":
    main()
