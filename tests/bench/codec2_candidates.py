# codec2_candidates.py — fixed-width exponent codes for mode 3 (docs/packed.md
# "A faster code for mode 3 (study, session 14)"): bits per bf16 weight as a
# fraction of 16, with tensor headers, block tables, codebooks and padding
# counted, on the synthetic trained-like matrices of packed_codec_candidates.py
# and on SmolLM2-135M (its Q4_1 GGUF dequantized to bf16). PEX1 (the present
# three-tier code, "t23") and the rejected single 3-bit code ("k3") are the
# references. Every candidate decodes the common element with no scan: a lane
# knows where its codes are from its index alone.
#   k3          3-bit code, the tensor's 7 most frequent exponents + escape; escapes'
#               exponents in a byte stream (a warp scan places them)
#   k3/B        as k3, each block of B elements with its own 7 exponents (7 bytes + a
#               4-byte escape offset per block)
#   t34         3-bit then 4-bit then byte: the escape as a 4-bit code when it fits
#               (one of the 15 next exponents), else a byte
#   pfor-e      3-bit code, the 8 most frequent exponents, no escape symbol; an element
#               outside them is an exception patched after the decode from a per-block
#               list of u16 (position in the 1024-block, 10 bits | 6-bit exponent offset),
#               the rare rest in a u32 list (position | exponent); table 8 bytes per block
#   pfor-h      as pfor-e on the bf16 HIGH byte (sign and exponent >> 1); the low byte
#               (exponent bit 0 and mantissa) is kept verbatim, so a decoded value is one
#               byte permute of the two; the u16 exception is position | sign | 5-bit offset
#               of exponent >> 1; the patch is one byte store
#   pfor-h/B    pfor-h with a per-block codebook (8 bytes more per block)
# It also prints the share of 32-element groups with at least one escape (k3)
# or exception (pfor): the ballot-skip idea pays only when that share is small.
#   python3 tests/bench/codec2_candidates.py [model.gguf] [--quick] [--dump DIR]
# --dump DIR also writes each matrix of the GGUF as DIR/NAME.bf16 (raw bf16) for the
# prototype's encoder and round trip: codec2_roundtrip DIR/*.bf16
import os
import sys

import gguf
import numpy as np
from gguf.quants import dequantize

HEADER_BITS = 32 * 8  # a tensor header, as PEX1's
BLOCK = 1024


def bf16(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def pad_bits(bits, align_bytes=4):
    a = align_bytes * 8
    return -(-bits // a) * a


def top_k(cnt, k):
    return np.argsort(-cnt, kind="stable")[:k]


def block_counts(sym, B, nsym=256):
    """(n_blocks, nsym) histogram of sym per block of B (last block partial)."""
    nb = -(-len(sym) // B)
    blk = np.arange(len(sym)) // B
    return np.bincount(blk * nsym + sym, minlength=nb * nsym).reshape(nb, nsym)


def in_book_per_block(sym, B, k):
    """Boolean per element: sym is among its block's k most frequent."""
    cnt = block_counts(sym, B)
    order = np.argsort(-cnt, axis=1, kind="stable")[:, :k]
    member = np.zeros_like(cnt, dtype=bool)
    np.put_along_axis(member, order, True, axis=1)
    blk = np.arange(len(sym)) // B
    return member[blk, sym]


def groups_hit(mask, g=32):
    n = len(mask) // g * g
    if n == 0:
        return 0.0
    return mask[:n].reshape(-1, g).any(axis=1).mean()


def sizes(h):
    n = len(h)
    nb = -(-n // BLOCK)
    e = ((h >> 7) & 0xFF).astype(np.int64)
    cnt = np.bincount(e, minlength=256)
    order = np.argsort(-cnt, kind="stable")
    p = cnt[cnt > 0] / n
    out = {"H": (8 + -(p * np.log2(p)).sum()) / 16}
    rest = pad_bits(8 * n, 16)
    code3 = pad_bits(3 * n)
    # PEX1 (t23): header, rest, 2-bit codes, table (nb+1) x 16 bytes, 3-bit codes per
    # block padded to a byte, tier-3 bytes (codec.h)
    in1 = np.isin(e, order[:3])
    in2 = np.isin(e, order[3:10])
    esc1 = ~in1
    per_blk1 = np.bincount(np.arange(n)[esc1] // BLOCK, minlength=nb)
    c2 = ((per_blk1 * 3 + 7) // 8 * 8).sum()
    e2 = (esc1 & ~in2).sum()
    out["t23 (PEX1)"] = (HEADER_BITS + rest + pad_bits(2 * n) + (nb + 1) * 128 + c2 + 8 * e2) / (16 * n)
    # k3: 7 exponents + escape; escape bytes; per block a u32 offset of its escapes
    esc = ~np.isin(e, order[:7])
    out["k3"] = (HEADER_BITS + rest + code3 + 32 * (nb + 1) + 8 * esc.sum()) / (16 * n)
    shares = {"k3 esc/32": groups_hit(esc)}
    for B in (256, 1024, 4096):
        escb = ~in_book_per_block(e, B, 7)
        nbb = -(-n // B)
        out["k3/%d" % B] = (HEADER_BITS + rest + code3 + nbb * (56 + 32) + 8 * escb.sum()) / (16 * n)
    # t34: 3-bit code (7 + escape), escapes a 4-bit code (15 + escape), then bytes;
    # per block a u32 offset into each escape stream
    in7 = np.isin(e, order[:7])
    in22 = np.isin(e, order[7:22])
    out["t34"] = (HEADER_BITS + rest + code3 + 64 * (nb + 1) + 4 * (~in7).sum() + 8 * (~in7 & ~in22).sum()) / (16 * n)
    # bA: A-1 exponents + escape as base-A digits, 8 digits of a lane in
    # ceil(8 log2 A) bits (stored as the fraction ceil(v 2^b / A^8), so a digit is one
    # wide multiply); escapes as t34 (a 4-bit code for the next 15, else a byte)
    for A in (5, 6, 7):
        b = int(np.ceil(8 * np.log2(A)))
        inA = np.isin(e, order[: A - 1])
        inN = np.isin(e, order[A - 1 : A + 14])
        lanes = -(-n // 8)
        out["b%d (%d bits/8)" % (A, b)] = (HEADER_BITS + rest + pad_bits(b * lanes) + 64 * (nb + 1) + 4 * (~inA).sum()
                                          + 8 * (~inA & ~inN).sum()) / (16 * n)
        shares["b%d esc/32" % A] = groups_hit(~inA)
    # pfor-e: 8 exponents, exceptions u16 (pos10 | 6-bit offset from a per-tensor base)
    # when the offset fits, else u32; per block two u32 list offsets
    exc = ~np.isin(e, order[:8])
    ex = e[exc]
    best = max(range(0, 256 - 63), key=lambda lo: ((ex >= lo) & (ex < lo + 63)).sum()) if len(ex) else 0
    near = ((ex >= best) & (ex < best + 63)).sum()
    far = len(ex) - near
    table = 64 * (nb + 1)
    out["pfor-e"] = (HEADER_BITS + rest + code3 + table + pad_bits(16 * near) + 32 * far) / (16 * n)
    shares["pfor-e exc/32"] = groups_hit(exc)
    # pfor-n: as pfor-e with the 8 exponents a window [lo, lo+8) and the exception's own
    # 3-bit code used: an exponent in [lo-8, lo) is code = lo-1-e and its entry is one
    # byte (near flag | position in a 128-element group); any other costs that byte and
    # an exponent byte; per block a u32 entry offset and 8 u8 group counts (12 bytes)
    lo = max(range(0, 249), key=lambda a: cnt[a:a + 8].sum())
    win = (e >= lo) & (e < lo + 8)
    nearn = ((e >= lo - 8) & (e < lo)).sum()
    farn = n - win.sum() - nearn
    out["pfor-n"] = (HEADER_BITS + rest + code3 + 96 * (nb + 1) + pad_bits(8 * nearn + 16 * farn)) / (16 * n)
    # pfor-2p: as pfor-e, but denser entries: an exception keeps its 3-bit code as an
    # index into a second codebook (the next 8 exponents), so its entry is only its
    # position (one byte, in its 256-element group); the rest (outside both books) add
    # an exponent byte (code 7 of the second book marks them); per block a u32 entry
    # offset, three 10-bit group ends and a u32 offset of the rest (12 bytes); this is
    # the format of the prototype (tests/bench/codec2_lane.h)
    in16 = np.isin(e, order[8:15])  # book2[7] marks a far exponent
    far2 = (exc & ~in16).sum()
    out["pfor-2p"] = (HEADER_BITS + rest + code3 + 96 * (nb + 1) + pad_bits(8 * exc.sum()) + pad_bits(8 * far2)) / (16 * n)
    # b6-2p, b7-2p: pfor-2p with base-A digits (A exponents, A - 1 more in the second
    # book, digit A - 1 of an exception marks a far one); the prototype's second variant
    for A in (6, 7):
        b = int(np.ceil(8 * np.log2(A)))
        excA = ~np.isin(e, order[:A])
        farA = (excA & ~np.isin(e, order[A:2 * A - 1])).sum()
        out["b%d-2p" % A] = (HEADER_BITS + rest + pad_bits(b * -(-n // 8)) + 96 * (nb + 1) + pad_bits(8 * excA.sum())
                             + pad_bits(8 * farA)) / (16 * n)
    # pfor-h: codes over the high byte (sign | exponent >> 1); exception u16 = pos10 |
    # sign | 5-bit offset of exponent >> 1 from a per-tensor base, else u32
    hb = (h >> 8).astype(np.int64)
    hcnt = np.bincount(hb, minlength=256)
    hexc = ~np.isin(hb, top_k(hcnt, 8))
    hx = hb[hexc] & 0x7F
    hbest = max(range(0, 128 - 31), key=lambda lo: ((hx >= lo) & (hx < lo + 32)).sum()) if len(hx) else 0
    hnear = ((hx >= hbest) & (hx < hbest + 32)).sum()
    hfar = len(hx) - hnear
    out["pfor-h"] = (HEADER_BITS + rest + code3 + table + pad_bits(16 * hnear) + 32 * hfar) / (16 * n)
    shares["pfor-h exc/32"] = groups_hit(hexc)
    shares["pfor-h exc/8"] = groups_hit(hexc, 8)
    hexcb = ~in_book_per_block(hb, BLOCK, 8)
    hxb = hb[hexcb] & 0x7F
    hnb = ((hxb >= hbest) & (hxb < hbest + 32)).sum()
    out["pfor-h/1024"] = (HEADER_BITS + rest + code3 + table + 64 * nb + pad_bits(16 * hnb) + 32 * (len(hxb) - hnb)) / (16 * n)
    out.update(shares)
    return out


def realistic(rows, cols, rng, std=None):
    std = std or 0.02 * rng.uniform(0.5, 1.5)
    w = rng.normal(0, std, (rows, cols)).astype(np.float32)
    idx = rng.integers(0, cols, (rows, 3))
    w[np.arange(rows)[:, None], idx] *= rng.uniform(5, 20, (rows, 3))
    return w


def main():
    argv = sys.argv[1:]
    dump = None
    if "--dump" in argv:
        i = argv.index("--dump")
        if i + 1 >= len(argv):
            sys.exit("codec2_candidates.py: --dump needs a directory")
        dump = argv[i + 1]
        del argv[i:i + 2]
        os.makedirs(dump, exist_ok=True)
    args = [a for a in argv if not a.startswith("--")]
    quick = "--quick" in argv
    rng = np.random.default_rng(1)
    tot = {}

    def acc(name, r, n):
        for k, v in r.items():
            t = tot.setdefault(name, {}).setdefault(k, [0.0, 0])
            t[0] += v * n
            t[1] += n

    shapes = [(576, 576), (1536, 576), (576, 1536), (4096, 4096), (11008, 4096)]
    for r, c in shapes[:3] if quick else shapes:
        w = realistic(r, c, rng)
        acc("synthetic", sizes(bf16(w.ravel())), w.size)
    rd = gguf.GGUFReader(args[0] if args else "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    for i, t in enumerate(rd.tensors):
        if len(t.shape) < 2 or (quick and i > 12):
            continue
        w = dequantize(t.data, t.tensor_type).astype(np.float32).ravel()
        h = bf16(w)
        if dump:
            h.astype("<u2").tofile(os.path.join(dump, t.name + ".bf16"))
        acc("smollm2", sizes(h), w.size)
    keys = list(next(iter(tot.values())).keys())
    print("%-16s %s" % ("candidate", " ".join("%10s" % k for k in tot)))
    for k in keys:
        print("%-16s %s" % (k, " ".join("%10.4f" % (tot[name][k][0] / tot[name][k][1]) for name in tot)))


if __name__ == "__main__":
    main()
