/* gemv_stage_lane.h — the indexing of the staged GEMV (gemv_stage.cu),
 * shared by the CUDA kernel and its host replay (tests/c/test_gemv_stage_emu.c),
 * so the loads, the shared-memory layout and the block extraction that
 * `make test` checks on any machine are the ones the GPU runs.
 *
 * The weights are 32-element blocks of BS bytes (Q8_0 34, Q4_0 and IQ4_NL
 * 18, Q4_1 20, Q5_0 22, Q5_1 24). A CUDA block owns RB rows and walks them
 * in chunks of GS_CB weight blocks: chunk c of a row is its bytes
 * [c·GS_CB·BS, min(nb, (c+1)·GS_CB)·BS), nb = k/32. GS_CB·BS is a multiple
 * of 16 for every even BS (GS_CB a multiple of 8), so where the rows start
 * on 16-byte boundaries every chunk does too and is copied as 16-byte
 * pieces (cp.async: LDGSTS.128); only a row's last chunk can end in a tail
 * of len % 16 bytes (even: BS is), copied as 2-byte pieces.
 *
 * Shared memory, one stage (of a ring of GS_NS): RB rows of gs_srow(BS)
 * bytes, row r's chunk at r·gs_srow. The 16 bytes past each row's chunk
 * are read (not used) by the word extraction below, never written.
 *
 * Piece L of a stage (L = t, t + NT, ... for thread t) is row L / P, bytes
 * 16(L % P).. of its chunk, P = GS_CB·BS/16: a warp's 32 pieces are 512
 * consecutive bytes of a row (or of two rows), a fully coalesced LDG.128
 * per thread. Item L (L = t + s·NT, s < RB·GS_CB/NT) is weight block L %
 * GS_CB of row L / GS_CB: with GS_CB a multiple of 32 a warp's items are
 * 32 consecutive blocks of one row, and thread t's items keep their rows
 * from chunk to chunk (its RB·GS_CB/NT sums, one per item slot). */
#ifndef LRUN_KERNELS_GEMV_STAGE_LANE_H
#define LRUN_KERNELS_GEMV_STAGE_LANE_H

#include "gemv_dp4a_lane.h"

#include <stdint.h>

#define GS_CB 32 /* weight blocks per row per chunk (a multiple of 32: one warp, one row) */
#define GS_NT 128 /* threads per CUDA block */
#define GS_RB 8   /* rows per CUDA block: GS_RB·GS_CB items, 2 per thread per chunk (the
                     chunk's fixed costs, its wait, barrier and copies, spread over two) */
#define GS_NS 4   /* stages in the ring by default (lrun_k_gemv_stage_tune sweeps 2..8):
                     GS_NS - 1 chunks in flight while one is multiplied */

/* the sizes and the piece mapping serve the launch (host) too */
#ifdef __CUDACC__
#define GS_HD static __host__ __device__ __forceinline__
#else
#define GS_HD static inline
#endif

#ifdef __CUDACC__
#define gs_funnel(lo, hi, sh) __funnelshift_r((lo), (hi), (sh))
#else
/* CUDA's __funnelshift_r: the low 32 bits of hi:lo shifted right by sh (0..31) */
static inline uint32_t gs_funnel(uint32_t lo, uint32_t hi, uint32_t sh)
{
    return sh ? (lo >> sh) | (hi << (32 - sh)) : lo;
}
#endif

/* Bytes of one row's slot in a stage: the chunk and 16 bytes of overread room. */
GS_HD int gs_srow(int bs) { return GS_CB * bs + 16; }
/* Bytes of one stage; of the ring. */
GS_HD int gs_stage_bytes(int bs) { return GS_RB * gs_srow(bs); }
GS_HD int gs_ring_bytes(int bs, int ns) { return ns * gs_stage_bytes(bs); }

/* Weight blocks and bytes of chunk c of a row of nb blocks. */
GS_HD int gs_chunk_blocks(int nb, int c)
{
    const int left = nb - c * GS_CB;
    return left < GS_CB ? left : GS_CB;
}

/* Row r (0..GS_RB-1) of the CUDA block whose first output row is row0, in
 * part p of n rows: *q the part it is read from (p; for a paired block, sw,
 * gate (0) for r < GS_RB/2 and up (1) after) and the row returned. Rows
 * past n re-read row n - 1 (valid memory) and are never written. */
GS_HD int64_t gs_row(int r, int sw, int p, int64_t row0, int64_t n, int *q)
{
    const int rh = GS_RB / 2;
    *q = sw && r >= rh ? 1 : p;
    const int64_t rr = row0 + (sw ? r % rh : r);
    return rr < n ? rr : n - 1;
}

/* 16-byte piece L of a stage: its row *r and byte offset *off in that row's
 * chunk (and in its stage slot); 0 when the piece is past the chunk's
 * whole 16-byte pieces (len its bytes). */
GS_HD int gs_piece(int L, int bs, int len, int *r, int *off)
{
    const int p = GS_CB * bs / 16; /* pieces of a whole chunk */
    *r = L / p, *off = 16 * (L % p);
    return *r < GS_RB && *off + 16 <= len;
}
/* Pieces a thread walks per stage: L < gs_pieces(bs). */
GS_HD int gs_pieces(int bs) { return GS_RB * (GS_CB * bs / 16); }

/* 2-byte tail piece L of a stage (the last len % 16 bytes of every row's
 * chunk): row *r, byte offset *off; 0 past them. */
GS_HD int gs_tail(int L, int len, int *r, int *off)
{
    const int n = (len & 15) / 2; /* 2-byte pieces per row */
    if (n == 0) return 0;
    *r = L / n, *off = (len & ~15) + 2 * (L % n);
    return *r < GS_RB;
}

/* n words of a stage row s (32-bit words of shared memory) starting at byte
 * off (even): two aligned words funnel-shifted per word, so the 2-byte
 * aligned fields of 18-, 22- and 34-byte blocks cost one LDS.32 and one SHF
 * per word. Reads the words at off & ~3 through off + 4n + 3 (at most 4
 * bytes past a block's end: the slot's 16 spare bytes take the last's). */
DL_FN void gs_words(const uint32_t *s, int off, int n, uint32_t *out)
{
    const int a = off >> 2;
    const uint32_t sh = (uint32_t)(off & 3) * 8;
    uint32_t lo = s[a];
    for (int i = 0; i < n; i++) {
        const uint32_t hi = s[a + i + 1];
        out[i] = gs_funnel(lo, hi, sh);
        lo = hi;
    }
}

/* The f16 bits at byte off (even) of stage row s: one LDS.32 and a shift. */
DL_FN uint32_t gs_half(const uint32_t *s, int off) { return (s[off >> 2] >> ((off & 2) * 8)) & 0xffffu; }

/* Weight block j (bytes j·bs.. of stage row s) of type t (0 Q8_0, 1 Q4_0,
 * 2 Q4_1, 3 Q5_0, 4 Q5_1, 5 IQ4_NL) as 8 int8 words w, the f16 bits of d
 * and of m (0 where the type has none) and a zero point z: element i is
 * d·(w_i − z) + m. The quants are read at their own byte offset (one SHF a
 * word where it is 2 mod 4). Q4_0 and Q5_0 keep their unsigned quants and
 * z = 8, 16: their Σ(w − z)·xq is Σw·xq − z·Σxq, and Σxq is x's block sum
 * the kernel already has (dl_quantize's s), so the 3 byte operations per
 * word of dl_sub4 become one FMA per block. */
enum { GS_Q8_0, GS_Q4_0, GS_Q4_1, GS_Q5_0, GS_Q5_1, GS_IQ4_NL };
DL_FN void gs_block(int t, const uint32_t *s, int j, uint32_t w[8], uint32_t *d, uint32_t *m, int *z)
{
    *m = 0, *z = 0;
    switch (t) {
    case GS_Q8_0: { /* d, qs[32] */
        const int o = 34 * j;
        gs_words(s, o + 2, 8, w);
        *d = gs_half(s, o);
        return;
    }
    case GS_Q4_0:
    case GS_IQ4_NL: { /* d, qs[16] */
        const int o = 18 * j;
        uint32_t qs[4];
        gs_words(s, o + 2, 4, qs);
        *d = gs_half(s, o);
        if (t == GS_Q4_0) dl_q4_1(qs, w), *z = 8; /* the nibbles as they are */
        else dl_iq4nl(qs, w);
        return;
    }
    case GS_Q4_1: { /* d, m, qs[16]: 20 bytes, 4-aligned in the stage */
        const uint32_t *b = s + 5 * j;
        const uint32_t qs[4] = {b[1], b[2], b[3], b[4]};
        dl_q4_1(qs, w);
        *d = b[0] & 0xffffu, *m = b[0] >> 16;
        return;
    }
    case GS_Q5_0: { /* d, qh[4], qs[16] */
        const int o = 22 * j;
        uint32_t v[5];
        gs_words(s, o + 2, 5, v); /* qh, then the qs */
        *d = gs_half(s, o);
        dl_q5(v + 1, v[0], 0u, w), *z = 16;
        return;
    }
    default: { /* Q5_1: d, m, qh[4], qs[16]: 24 bytes, 4-aligned in the stage */
        const uint32_t *b = s + 6 * j;
        const uint32_t qs[4] = {b[2], b[3], b[4], b[5]};
        dl_q5(qs, b[1], 0u, w);
        *d = b[0] & 0xffffu, *m = b[0] >> 16;
        return;
    }
    }
}

#endif
