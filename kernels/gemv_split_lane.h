/* gemv_split_lane.h — what one lane of the split-row GEMV (gemv_split.cu)
 * does with one 16-byte chunk of a split Q8_0/Q4_0 row
 * (runtime/quant/quant_split.h): where the chunk, its scale and its x sit,
 * and the chunk's integer dot against x's q8 bytes. Shared by the CUDA
 * kernel and a host emulation (tests/c/test_gemv_split_emu.c), so the
 * arithmetic the GPU runs is the arithmetic `make test` checks against
 * lrun_dequantize_row on any machine. Words are little-endian. */
#ifndef LRUN_KERNELS_GEMV_SPLIT_LANE_H
#define LRUN_KERNELS_GEMV_SPLIT_LANE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define GS_FN static __device__ __forceinline__
#define gs_dp4a(a, b, c) __dp4a((int)(a), (int)(b), (c))
#else
#define GS_FN static inline
/* CUDA's __dp4a(a, b, c): c + Σ of the 4 signed byte products */
static inline int gs_dp4a(uint32_t a, uint32_t b, int c)
{
    for (int e = 0; e < 4; e++) c += (int)(int8_t)(a >> (8 * e)) * (int)(int8_t)(b >> (8 * e));
    return c;
}
#endif

// ---------------------------------------------------------------- where a chunk's bytes sit

/* Elements of a 16-byte chunk: Q8_0 16 (half a block), Q4_0 32 (a block). */
GS_FN int64_t gs_chunk_elems(int q8) { return q8 ? 16 : 32; }
/* Byte offset in its row of chunk c's quants. */
GS_FN size_t gs_chunk_at(int64_t c) { return 16 * (size_t)c; }
/* Block (of 32 elements) of chunk c: its f16 scale is at qb + 2·block in the
 * row (qb = lrun_quant_split_scales_at), its x scale xd[block]. */
GS_FN int64_t gs_chunk_block(int q8, int64_t c) { return q8 ? c >> 1 : c; }
/* First byte of chunk c's x in the q8 x (k int8): 16 bytes for Q8_0, 32 for Q4_0. */
GS_FN size_t gs_chunk_x(int q8, int64_t c) { return (size_t)gs_chunk_elems(q8) * (size_t)c; }

/* The same chunk in a GGUF row (gemv_split_q8x.cu reads streamed weights
 * there with the split rows' arithmetic): the byte offset of its 16 quant
 * bytes (block c/2's half c%2 for Q8_0, block c's 16 bytes for Q4_0; on a
 * 2-byte boundary) and of its block's f16 scale. */
GS_FN size_t gs_gguf_scale_at(int q8, int64_t c) { return (size_t)gs_chunk_block(q8, c) * (q8 ? 34 : 18); }
GS_FN size_t gs_gguf_chunk_at(int q8, int64_t c)
{
    return gs_gguf_scale_at(q8, c) + 2 + (q8 ? 16 * (size_t)(c & 1) : 0);
}

// ---------------------------------------------------------------- the chunk's integer dot

/* Q8_0: Σ q·xq over the chunk's 16 elements (w: its 4 words of int8, x: the
 * 4 words of x's bytes); |Σ| ≤ 16·127·128 < 2^24, exact as a float. */
GS_FN int gs_dot_q8(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3, uint32_t x0, uint32_t x1, uint32_t x2,
                    uint32_t x3)
{
    int v = gs_dp4a(w0, x0, 0);
    v = gs_dp4a(w1, x1, v);
    v = gs_dp4a(w2, x2, v);
    return gs_dp4a(w3, x3, v);
}

/* Σ xq of a Q4_0 chunk's 32 x bytes (words xl[0..3] = elements 0..15, xh
 * = 16..31), shared by every row the lane multiplies. */
GS_FN int gs_sum_x(const uint32_t xl[4], const uint32_t xh[4])
{
    int s = 0;
    for (int i = 0; i < 4; i++) s = gs_dp4a(xl[i], 0x01010101u, s), s = gs_dp4a(xh[i], 0x01010101u, s);
    return s;
}

/* Q4_0: Σ (q − 8)·xq over the block = Σ q·xq − 8·Σxq (sx = gs_sum_x): byte
 * j of the chunk holds element j (low nibble) and j + 16 (high nibble), so
 * word i's low nibbles meet x word i and its high nibbles x word 4 + i; the
 * nibbles (0..15) are non-negative int8 for dp4a. */
GS_FN int gs_dot_q4(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3, const uint32_t xl[4], const uint32_t xh[4],
                    int sx)
{
    const uint32_t w[4] = {w0, w1, w2, w3};
    int v = -8 * sx;
    for (int i = 0; i < 4; i++) {
        v = gs_dp4a(w[i] & 0x0f0f0f0fu, xl[i], v);
        v = gs_dp4a((w[i] >> 4) & 0x0f0f0f0fu, xh[i], v);
    }
    return v;
}

#endif
