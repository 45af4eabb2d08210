#!/usr/bin/env python3
"""Instructions per weight byte of the staged GEMV (kernels/gemv_stage.cu).

Reads `cuobjdump --dump-sass` of gemv_stage.o and, for each type's kernel,
counts the instructions a thread issues per chunk (its 2 weight blocks) on
the main loop's whole-chunk path: from the loop head through the test
for a whole chunk, then the whole-chunk copies, the multiply and the loop
branch (the partial chunk's copies and the 2-byte tail, once per row, are
left out; @!PT padding is not issued). docs/benchmarks.md has the command;
a second argument (any) counts every ring depth, not only the default 4.
"""
import re, sys
txt = open(sys.argv[1]).read()
names = {'8': 'q8_0', '2': 'q4_0', '3': 'q4_1', '6': 'q5_0', '7': 'q5_1', '20': 'iq4_nl'}
bs = {'q8_0': 34, 'q4_0': 18, 'q4_1': 20, 'q5_0': 22, 'q5_1': 24, 'iq4_nl': 18}
for f in re.split(r'\n\s*Function : ', txt)[1:]:
    m = re.match(r'_Z10gemv_stageILi(\d+)ELi(\d+)E', f)  # <type, ring depth>
    if not m or (len(sys.argv) < 3 and m.group(2) != '4'): continue  # the default depth unless 'all'
    name = names[m.group(1)]
    ins = [(int(a, 16), t.strip()) for a, t in re.findall(r'/\*([0-9a-f]{4,})\*/\s+(.*?);', f)]
    dep = next(a for a, t in ins if t.startswith('DEPBAR.LE'))
    lo, hi = next((int(b, 16), a) for a, t in ins for b in re.findall(r'BRA (0x[0-9a-f]+)', t) if a > dep and int(b, 16) <= dep)
    body = [(a, t) for a, t in ins if lo <= a <= hi]
    sts = next(a for a, t in body if 'STS.U16' in t)
    bar = next(a for a, t in body if t.startswith('BAR.SYNC'))
    commit = next(a for a, t in body if t.startswith('LDGDEPBAR'))
    # the whole-chunk test: the branch past the partial path (it ends in the tail's STS.U16) to the whole path
    br, tgt = next((a, int(b, 16)) for a, t in body for b in re.findall(r'@!?P\d BRA (0x[0-9a-f]+)', t) if a > bar and sts < int(b, 16) < commit
                   and any('LDGSTS' in u and int(b, 16) <= x < commit for x, u in body))
    path = [(a, t) for a, t in body if a <= br or a >= tgt]
    op = lambda t: re.sub(r'^@!?U?P\w+\s+', '', t).split()[0]
    real = [t for a, t in path if not t.startswith('@!PT')]  # @!PT: never-executed padding
    c = lambda p: sum(1 for t in real if op(t).startswith(p))
    n = len(real)
    print(f"{name:7s} ns {m.group(2)} {n:4d} instr per thread per chunk (2 blocks, {2*bs[name]} B): {n/(2*bs[name]):.2f} per weight byte; "
          f"LDGSTS.128 {c('LDGSTS')}, LDS {c('LDS')}, IDP.4A {c('IDP')}, SHF {c('SHF')}, LOP3 {c('LOP3')}, PRMT {c('PRMT')}, "
          f"FFMA/FMUL {c('FFMA')+c('FMUL')}, BAR {c('BAR')}, branches {c('BRA')}")
