# packed_codec_candidates.py — the measurement behind the packed codec's design
# (docs/packed.md): bits per bf16 weight of candidate exponent codes, as a
# fraction of 16, on synthetic trained-like matrices (normal, std ~0.02, three
# outliers 5-20x per row) and on SmolLM2-135M's matrices (the Q4_1 GGUF
# dequantized to bf16). Estimates: the codec's real sizes come from
# build/packed_decode_bench (tests/bench/packed_decode_bench.c).
#   H      the entropy bound: 8 kept bits + the exponent's entropy
#   kK     one K-bit code: the 2^K-1 most frequent exponents, else an escape + 8 bits
#   tAB    two tiers: A-bit codes for 2^A-1 exponents, escapes get B-bit codes for
#          the next 2^B-1, their escapes 8 bits (the chosen design is t23)
#   python3 tests/bench/packed_codec_candidates.py [model.gguf]
import numpy as np, gguf, sys
def bf16(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7fff + ((u>>16)&1))>>16).astype(np.uint16)
def sizes(h, B=1024):
    e = ((h>>7)&0xff).astype(np.int64)
    cnt = np.bincount(e, minlength=256)
    order = np.argsort(-cnt, kind='stable')
    n = len(h); p = cnt[cnt>0]/n; ent = -(p*np.log2(p)).sum()
    out = {'H': (8+ent)/16}
    for k in (2,3,4):
        ns = (1<<k)-1
        esc = n - cnt[order[:ns]].sum()
        bits = n*8 + n*k + esc*8 + (n//B+1)*32
        out['k%d'%k] = bits/(16*n)
    # two tier: k1=2 (3 syms) then 3-bit (7 syms) then raw
    for k1,k2 in ((2,3),(3,3),(2,4),(3,4)):
        n1=(1<<k1)-1; n2=(1<<k2)-1
        e1 = n - cnt[order[:n1]].sum(); e2 = n - cnt[order[:n1+n2]].sum()
        bits = n*(8+k1) + e1*k2 + e2*8 + (n//B+1)*32
        out['t%d%d'%(k1,k2)] = bits/(16*n)
    return out
def realistic(rows, cols, rng, std=None):
    std = std or 0.02*rng.uniform(0.5,1.5)
    w = rng.normal(0, std, (rows, cols)).astype(np.float32)
    # a few outliers per row
    idx = rng.integers(0, cols, (rows, 3))
    w[np.arange(rows)[:,None], idx] *= rng.uniform(5, 20, (rows,3))
    return w
rng = np.random.default_rng(1)
tot = {}
def acc(name, r, n):
    for k,v in r.items(): tot.setdefault(name,{}).setdefault(k,[0,0]); tot[name][k][0]+=v*n; tot[name][k][1]+=n
for (r,c) in [(576,576),(1536,576),(576,1536),(4096,4096),(11008,4096)]:
    w = realistic(r,c,rng); acc('synthetic', sizes(bf16(w.ravel())), w.size)
r = gguf.GGUFReader(sys.argv[1] if len(sys.argv) > 1 else 'models/SmolLM2-135M-Instruct.Q4_1.gguf')
from gguf.quants import dequantize
for t in r.tensors:
    if len(t.shape) < 2: continue
    w = dequantize(t.data, t.tensor_type).astype(np.float32).ravel()
    acc('smollm2', sizes(bf16(w)), w.size)
for name, d in tot.items():
    print(name, ' '.join('%s=%.4f'%(k, v[0]/v[1]) for k,v in d.items()))
