#!/usr/bin/env python3
"""dfloat11_fast.py — DFloat11's encoder (PyPI dfloat11 0.5.0,
dfloat11_utils.encode_weights) computed with whole-tensor torch operations, so
that a 7B model can be compressed by DFloat11's own compress_model inside one
GPU machine call (its encoder is a Python loop over every element: about a
minute per 45M-element matrix, over two hours for a 7B).

Only the bit packing is redone here. The Huffman code (DFloat11's get_codec
and get_32bit_codec over dahuffman), the lookup tables and the decode kernel
stay DFloat11's; the arrays this returns are byte for byte the ones its
encode_weights returns (`--check` compares both on random, trained-like and
adversarial bf16 values), and compress_model's own check_correctness decodes
every module with DFloat11's kernel and compares it with the bf16 weights.

  python3 tests/bench/dfloat11_fast.py --check [--n 300000]

tests/bench/dfloat11_model_bench.py uses `encode_weights` in place of
DFloat11's (docs/packed.md "DFloat11 at the engine").
"""
import argparse
import importlib.util
import math
import os
import sys

import numpy as np
import torch


def code_table(codec):
    """(lengths, values) of the codec's symbols 0..255 and its end-of-file code."""
    lens = torch.zeros(256, dtype=torch.int64)
    vals = torch.zeros(256, dtype=torch.int64)
    for sym, (bits, val) in codec._table.items():
        if isinstance(sym, int):
            lens[sym] = bits
            vals[sym] = val
    return lens, vals, codec._table[codec._eof]


def first_of_each_chunk(positions, chunk, what):
    """The loop's appends: at each checked position whose chunk (position // chunk)
    is new, one entry; the index of the first position in each chunk.  The loop
    appends one entry per new chunk even if chunks were skipped, which with codes
    of at most 32 bits and chunks of at least 64 never happens: asserted."""
    c = torch.div(positions, chunk, rounding_mode="floor")
    first = torch.ones_like(c, dtype=torch.bool)
    first[1:] = c[1:] != c[:-1]
    idx = torch.nonzero(first).flatten()
    if not torch.equal(c[idx], torch.arange(idx.numel(), device=c.device)):
        raise ValueError(f"{what}: a chunk holds no code start (a code longer than the chunk?)")
    return idx


def encode_weights(weights, codec, bytes_per_thread, threads_per_block, device=None):
    """What dfloat11_utils.encode_weights returns: (encoded exponent bytes, sign and
    mantissa bytes, output positions, gaps, split positions), as torch tensors on
    the CPU.  The work runs on `device` (cuda:0 when there is one)."""
    if device is None:
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    split_positions = torch.cumsum(torch.LongTensor([w.numel() for w in weights]), dim=0)[:-1]
    W_combined = torch.cat(weights).view(torch.int16)
    other_8bits = ((W_combined >> 8) & 0x80 | (W_combined & 0x7F)).to(torch.uint8)

    lens, vals, (eof_bits, eof_val) = code_table(codec)
    exps = ((W_combined.to(device) >> 7) & 0xFF).to(torch.int64)
    n = exps.numel()
    L = lens.to(device)[exps]
    if int((L == 0).sum()) != 0:
        raise ValueError("an exponent without a code in the codec")
    V = vals.to(device)[exps]
    del exps
    starts = torch.cumsum(L, 0) - L
    total = int(starts[-1] + L[-1]) if n else 0

    # The loop's last step: when the bits do not end on a byte, one more check at
    # the end position and one byte holding the rest and the end-of-file code's
    # first bits.  Written here as one more code at the end position.
    tail = total % 8 != 0
    if tail:
        starts = torch.cat([starts, torch.tensor([total], device=device)])
        L = torch.cat([L, torch.tensor([eof_bits], device=device)])
        V = torch.cat([V, torch.tensor([eof_val], device=device)])
    n_bytes = (total + 7) // 8

    # Big-endian 32-bit words: a code of at most 32 bits touches at most two.
    word = starts >> 5
    end = (starts & 31) + L
    one = end <= 32
    hi = torch.where(one, V << (32 - end).clamp(min=0), V >> (end - 32).clamp(min=0))
    lo = torch.where(one, torch.zeros_like(V), (V << (64 - end).clamp(max=63)) & 0xFFFFFFFF)
    n_words = (n_bytes + 3) // 4 + 2
    words = torch.zeros(n_words, dtype=torch.int64, device=device)
    words.index_add_(0, word, hi)  # codes never share a bit: the sum is the OR
    words.index_add_(0, word + 1, lo)
    encoded = words.cpu().numpy().astype(">u4").tobytes()[:n_bytes]
    del word, end, one, hi, lo, words, L, V

    # Gaps: per thread (bytes_per_thread * 8 bits), where its first code starts;
    # output positions: per thread block, the index of its first element.
    gap_idx = first_of_each_chunk(starts, 8 * bytes_per_thread, "gaps")
    gaps = (starts[gap_idx] - torch.div(starts[gap_idx], 8 * bytes_per_thread, rounding_mode="floor")
            * (8 * bytes_per_thread)).cpu().numpy()
    pos_idx = first_of_each_chunk(starts, 8 * bytes_per_thread * threads_per_block, "output positions")
    output_positions = list(pos_idx.cpu().numpy()) + [n]
    if gaps.size and gaps.max() >= 32:
        raise ValueError("a gap does not fit DFloat11's 5 bits")

    blocks_per_grid = int(np.ceil(n_bytes / (threads_per_block * bytes_per_thread)))
    gaps = np.concatenate([gaps, np.zeros(max(0, threads_per_block * blocks_per_grid - gaps.size), dtype=gaps.dtype)])
    gap_bits = ((gaps[:, None].astype(np.int64) >> np.arange(4, -1, -1)) & 1).astype(np.uint8).flatten()

    encoded_t = torch.from_numpy(np.frombuffer(encoded, dtype=np.uint8).copy())
    gaps_t = torch.from_numpy(np.packbits(gap_bits))
    positions_t = torch.from_numpy(np.array(output_positions, dtype=np.uint32))
    print(f"Compression factor: {(encoded_t.numel() + other_8bits.numel() + positions_t.numel() * 4 + gaps_t.numel()) * 100 / (W_combined.numel() * 2):.2f}%")
    return encoded_t, other_8bits, positions_t, gaps_t, split_positions


def dfloat11_utils():
    """DFloat11's dfloat11_utils module, loaded by file (its package __init__ imports
    cupy and the CUDA kernel, which the check does not need)."""
    spec = importlib.util.find_spec("dfloat11")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("dfloat11 is not installed (pip install --no-deps .whl/dfloat11-*.whl, with dahuffman)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "dfloat11_utils.py")
    s = importlib.util.spec_from_file_location("dfloat11_utils_by_file", path)
    m = importlib.util.module_from_spec(s)
    s.loader.exec_module(m)
    return m


def bf16(values):
    return torch.tensor(values, dtype=torch.float32).to(torch.bfloat16)


def check_cases(n, gen):
    """Random, trained-like and adversarial bf16 tensors (lists of matrices, as
    compress_model concatenates a block's)."""
    trained = [torch.randn(n, generator=gen) * s for s in (0.02, 0.005)]
    trained[0][::997] *= 40.0  # a few large outliers per row, as trained weights have
    cases = {
        "trained-like, two matrices": [t.to(torch.bfloat16) for t in trained],
        "uniform bits": [torch.randint(-32768, 32767, (n,), generator=gen, dtype=torch.int16).view(torch.bfloat16)],
        "every exponent once": [torch.arange(0, 65536, 127, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)],
        "special values": [bf16([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-40, -1e-40, 3.0e38] * 3)],
        "one exponent, all equal": [bf16([1.5] * 4099)],
        "one element": [bf16([0.25])],
        "many short tensors": [torch.randn(k, generator=gen).to(torch.bfloat16) for k in (1, 7, 64, 513, 4096)],
    }
    return cases


def check(n):
    du = dfloat11_utils()
    gen = torch.Generator().manual_seed(11)
    bpt, tpb = 8, 512
    failed = 0
    for name, weights in check_cases(n, gen).items():
        _, counter = du.get_codec(torch.cat(weights))
        codec, _, _ = du.get_32bit_codec(counter)
        theirs = du.encode_weights(weights, codec, bpt, tpb)
        ours = encode_weights(weights, codec, bpt, tpb)
        same = all(torch.equal(a, b) for a, b in zip(theirs, ours))
        print(f"{'ok' if same else 'not ok'} - {name}: {sum(w.numel() for w in weights)} elements, "
              f"{theirs[0].numel()} encoded bytes, {theirs[2].numel() - 1} thread blocks")
        failed += not same
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with DFloat11's own encode_weights")
    ap.add_argument("--n", type=int, default=300000, help="elements of the random cases")
    a = ap.parse_args()
    if not a.check:
        ap.print_help()
        return 0
    return 1 if check(a.n) else 0


if __name__ == "__main__":
    sys.exit(main())
