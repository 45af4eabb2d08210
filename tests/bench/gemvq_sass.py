#!/usr/bin/env python3
"""SASS per weight byte of the m = 1 Q8_0/Q4_0 GEMVs (gemvq_sass.sh).

Reads `cuobjdump --dump-sass` output (any number of files) and, for the
study's kernels — gemv.cu's unit kernel gemv_tiles<Q8_0|Q4_0, m 1> at its
default shape (128 threads, 8 rows, U 2: what gemv_choice runs on sm_90)
every gq_kernel of tests/bench/gemvq_proto.cu, the library's
gemv_split_kernel (kernels/gemv_split.cu) and its gemv_q8x_kernel at m = 1 on
split rows (kernels/gemv_split_q8x.cu, the engine's default) — finds the main loop:
the innermost backward branch whose body holds the most weight loads, and
counts its instructions (@!PT padding is never issued) by kind, over the
weight bytes the body consumes:
  gemv_tiles: a Q8_0 unit is 8 quant bytes (4 LDG.U16) plus its block's
    scale (1 LDG.U16; 2 bytes shared by 4 units); Q4_0 4 bytes (2 LDG.U16)
    plus the scale (1; shared by 4), so bytes = units · (8.5 | 4.5);
  gq_kernel, gemv_split_kernel, gemv_q8x_kernel: each LDG.E.NA.128 is one 16-byte chunk of quants of one row,
    plus its scale's share (Q8_0: 2 bytes per 2 chunks, Q4_0: 2 per chunk),
    so bytes = chunks · (17 | 18).
The compiler unrolls each loop once more and keeps remainder copies; the
ratio is per byte, so it does not depend on which copy is counted.
"""
import re, sys, subprocess

TYPES = {'8': 'q8_0', '2': 'q4_0'}
XM = {'0': 'f32', '1': 'q8g', '2': 'q8s'}


def demangle(name):
    try:
        return subprocess.run(['c++filt', name], capture_output=True, text=True).stdout.strip()
    except OSError:
        return name


def classify(t):
    """(group, is_weight_load) of one instruction text"""
    op = re.sub(r'^@!?U?P\w+\s+', '', t).split()[0]
    if op.startswith('LDG'):
        if '.NA.128' in op: return 'LDG.128w', True
        if '.U16' in op: return 'LDG.U16', True
        return 'LDG(x)', False
    for g in ('LDS', 'IDP', 'FFMA', 'FADD', 'FMUL', 'I2F', 'PRMT', 'LOP3', 'SHF', 'IMAD', 'IADD', 'ISETP', 'BRA', 'MOV',
              'HADD2', 'F2F', 'LEA', 'SEL'):
        if op.startswith(g): return g, False
    return 'other', False


def main_loop(ins):
    loops = []
    for a, t in ins:
        for b in re.findall(r'BRA (0x[0-9a-f]+)', t):
            if int(b, 16) < a: loops.append((int(b, 16), a))
    inner = [l for l in loops if not any(o != l and l[0] <= o[0] and o[1] <= l[1] for o in loops)]
    best = None
    for lo, hi in inner:
        body = [t for a, t in ins if lo <= a <= hi and not t.startswith('@!PT')]
        w = sum(1 for t in body if classify(t)[1])
        if w and (best is None or w > best[0]): best = (w, body)
    return best[1] if best else None


def report(label, body, bytes_):
    groups = {}
    for t in body:
        g = classify(t)[0]
        groups[g] = groups.get(g, 0) + 1
    n = len(body)
    keys = ['LDG.128w', 'LDG.U16', 'LDG(x)', 'LDS', 'IDP', 'FFMA', 'FADD', 'FMUL', 'I2F', 'PRMT', 'LOP3', 'SHF', 'IMAD',
            'IADD', 'ISETP', 'BRA']
    parts = ', '.join(f'{k} {groups[k]}' for k in keys if groups.get(k))
    print(f'{label:34s} {n:4d} instr / {bytes_:6.1f} B = {n / bytes_:5.2f} per weight byte  ({parts}, other {n - sum(groups.get(k, 0) for k in keys)})')


for path in sys.argv[1:]:
    txt = open(path).read()
    for f in re.split(r'\n\s*Function : ', txt)[1:]:
        name = f.split('\n', 1)[0].strip()
        ins = [(int(a, 16), t.strip()) for a, t in re.findall(r'/\*([0-9a-f]{4,})\*/\s+(.*?);', f)]
        m = re.match(r'_Z10gemv_tilesILi(\d+)ELi1ELi128ELi8ELi2EE', name)
        if m and m.group(1) in TYPES:
            body = main_loop(ins)
            if not body: continue
            u16 = sum(1 for t in body if classify(t)[0] == 'LDG.U16')
            q8 = m.group(1) == '8'
            units = u16 / (5 if q8 else 3)
            report(f'cur {TYPES[m.group(1)]} (gemv_tiles 128x8 U2)', body, units * (8.5 if q8 else 4.5))
            continue
        m = re.match(r'_Z17gemv_split_kernelILi(\d+)ELi(\d+)ELi(\d+)ELi(\d+)EE', name)
        if m and m.group(1) in TYPES:  # the library's copy (kernels/gemv_split.cu)
            body = main_loop(ins)
            if not body: continue
            chunks = sum(1 for t_ in body if classify(t_)[0] == 'LDG.128w')
            t, rw, nw, u = m.groups()
            report(f'lib gemv_split {TYPES[t]} rw{rw} nw{nw} u{u}', body, chunks * (17 if t == '8' else 18))
            continue
        m = re.match(r'_Z15gemv_q8x_kernelILi(\d+)ELi(\d+)ELi(\d+)ELi(\d+)ELi(\d+)ELb1EE', name)
        if m and m.group(1) in TYPES and m.group(2) == '1':  # the engine's default (gemv_split_q8x.cu), m = 1, split rows
            body = main_loop(ins)
            if not body: continue
            chunks = sum(1 for t_ in body if classify(t_)[0] == 'LDG.128w')
            t, _, rw, nw, u = m.groups()
            report(f'lib gemv_q8x {TYPES[t]} rw{rw} nw{nw} u{u} PF', body, chunks * (17 if t == '8' else 18))
            continue
        m = re.match(r'_Z9gq_kernelILi(\d+)ELi(\d)ELi(\d+)ELi(\d+)ELi(\d+)ELi(\d)EE', name)
        if m:
            body = main_loop(ins)
            if not body: continue
            t, xm, rw, nw, u, pf = m.groups()
            chunks = sum(1 for t_ in body if classify(t_)[0] == 'LDG.128w')
            label = f'gq {TYPES[t]} {XM[xm]} rw{rw} nw{nw} u{u}{" PF" if pf == "1" else ""}'
            report(label, body, chunks * (17 if t == '8' else 18))
