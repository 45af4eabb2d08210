#!/usr/bin/env python3
"""packed_sass_count.py — counts the SASS instructions of the packed decode
(kernels/packed_gemv.cu compiled with -DPG_SASS_HOT, see packed_sass_count.sh)
per lane and codec block, by issue pipe, from `cuobjdump --dump-sass` text.

decode_rows: the whole kernel (one codec block per warp, straight line in
the hot build) less nothing: every instruction a lane issues for its block.
fused GEMV: the body of the loop that holds the warp scans (the decode of one
codec block) and the body of the product's inner loop (one 8-element unit).
--pex2: kernels/packed_pex2.cu's fused GEMV instead (main_pex2).
Usage: packed_sass_count.py [--pex2] FILE.sass"""
import re
import sys
from collections import Counter

INS = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z0-9_.]+)([^;]*);")

# Hopper issue pipes, as far as public material (and ncu's pipe names) goes:
# alu = LOP3/IADD3/SHF/PRMT/SEL/ISETP/LEA/POPC/FLO... (16 lanes per SMSP,
# half the FP32 rate); fma = IMAD*/FFMA/FMUL (the FMA pipes); mem = loads,
# stores, shuffles; ctl = branches, barriers, uniform datapath, moves of
# constants.
FMA = ("IMAD", "FFMA", "FMUL", "FADD", "HFMA2", "VIADD", "IABS")
MEM = ("LDG", "LDS", "STS", "STG", "SHFL", "LDC", "LD", "ST", "CCTL", "LDGSTS")
CTL = ("BRA", "BSSY", "BSYNC", "EXIT", "BAR", "WARPSYNC", "NOP", "RET", "CALL", "S2R", "S2UR", "CS2R", "ULDC",
       "UMOV", "UIADD3", "ULOP3", "USHF", "ULEA", "UIMAD", "USEL", "UISETP", "R2UR", "YIELD", "DEPBAR", "MEMBAR",
       "ERRBAR", "CGAERRBAR", "ACQBULK", "BPT", "PLOP3", "UPRMT", "UFLO", "UPOPC", "ELECT", "VOTEU", "MOV")


def pipe(op):
    base = op.split(".")[0]
    if base.startswith(FMA) or base == "IMAD":
        return "fma"
    if base in MEM or base.startswith(("LDG", "LDS", "STS", "STG", "SHFL", "LDC")):
        return "mem"
    if base in CTL or base.startswith("U"):
        return "ctl"
    return "alu"


def functions(text):
    out, name, ins = {}, None, []
    for line in text.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            if name:
                out[name] = ins
            name, ins = m.group(1), []
            continue
        m = INS.match(line)
        if m and name:
            ins.append((int(m.group(1), 16), m.group(3), m.group(4)))
    if name:
        out[name] = ins
    return out


def loops(ins):
    """(start index, end index) of each backward branch's body."""
    at = {a: i for i, (a, _, _) in enumerate(ins)}
    res = []
    for i, (a, op, args) in enumerate(ins):
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", args)
            if m and int(m.group(1), 16) <= a and int(m.group(1), 16) in at:
                res.append((at[int(m.group(1), 16)], i))
    return res


def tally(seq):
    c = Counter(pipe(op) for _, op, _ in seq if not op.startswith("NOP"))
    return c, sum(c.values())


def show(label, seq, elems):
    c, n = tally(seq)
    per = " ".join(f"{k} {c[k]}" for k in ("alu", "fma", "mem", "ctl"))
    print(f"{label:46s} {n:5d}  ({per})  {n / elems:5.2f}/element  alu {c['alu'] / elems:5.2f}/element")


def main():
    fns = functions(open(sys.argv[1]).read())
    for name, ins in fns.items():
        if "packed_decode_rows_k" in name:
            body = [x for x in ins if not x[1].startswith("BRA") or x is not ins[-1]]
            show(f"decode_rows {'bf16' if 'Lb1' in name else 'f16 '} (whole kernel, 1 block/lane)", body, 32)
        if "packed_gemv_tiles" in name and re.search(r"ILi(1|30)ELi1ELi256E", name):
            dt = "bf16" if "ILi30E" in name else "f16 "
            ls = loops(ins)
            dec = [l for l in ls if any(op.startswith("SHFL.UP") for _, op, _ in ins[l[0]:l[1] + 1]) and
                   not any(op.startswith("FFMA") for _, op, _ in ins[l[0]:l[1] + 1])]
            if dec:
                a, b = min(dec, key=lambda l: l[1] - l[0])
                show(f"fused {dt} m=1: decode loop, per codec block", ins[a:b + 1], 32)
            prod = [l for l in ls if any(op.startswith("FFMA") for _, op, _ in ins[l[0]:l[1] + 1])]
            if prod:
                a, b = min(prod, key=lambda l: l[1] - l[0])
                c, n = tally(ins[a:b + 1])
                ffma = sum(1 for _, op, _ in ins[a:b + 1] if op.startswith("FFMA"))
                units = max(1, ffma // 9)  # 8 FMAs + the add into acc per unit and row of x
                show(f"fused {dt} m=1: product loop ({units} unit(s) of 8)", ins[a:b + 1], 8 * units)


def main_pex2(path):
    """kernels/packed_pex2.cu's fused GEMV (-DPX_SASS_HOT): for m = 1 and 2
    and each variant (px_variant), the decode loop's body (a codec block per
    warp: the lanes' 32 elements each, the patch, the part's switch, the
    loop) and the product loops' bodies (rows outermost: one row's unit of 8
    elements; units outermost: a loop per tile height, whose static body
    holds paths a thread does not all run)."""
    fns = functions(open(path).read())
    for name, ins in sorted(fns.items()):
        mm = re.search(r"px_gemv_tilesILi([12])ELi256ELi([012])E", name)
        if not mm:
            continue
        m = mm.group(1) + ", variant " + mm.group(2)
        ls = loops(ins)
        has = lambda l, p: any(op.startswith(p) for _, op, _ in ins[l[0]:l[1] + 1])  # noqa: E731
        dec = [l for l in ls if has(l, "PRMT") and not has(l, "FFMA")]
        if dec:
            a, b = max(dec, key=lambda l: l[1] - l[0])
            show(f"PEX2 fused m={m}: decode loop, per codec block", ins[a:b + 1], 32)
        # the product loops (units outer: one per tile height, 1/2/4/8 rows)
        prod = [l for l in ls if has(l, "FFMA") and not any(has(o, "FFMA") for o in ls if o != l and
                                                              l[0] < o[0] and o[1] < l[1])]
        for a, b in sorted(set(prod)):
            ffma = sum(1 for _, op, _ in ins[a:b + 1] if op.startswith("FFMA"))
            units = max(1, ffma // (9 * int(m[0])))  # 8 FMAs + the add into acc per unit, row and x
            show(f"PEX2 fused m={m}: product loop ({units} row-unit(s) of 8)", ins[a:b + 1], 8 * units)


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--pex2":
    main_pex2(sys.argv[2])
elif __name__ == "__main__":
    main()
