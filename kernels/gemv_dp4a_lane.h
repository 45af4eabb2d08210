/* gemv_dp4a_lane.h — what one thread of the dp4a GEMV (gemv_dp4a.cu) does
 * to one 32-element weight block: its raw words become 8 words of signed
 * int8 values (word l = elements 4l..4l+3, in the block's order) with a
 * float scale d and offset m (element i = d·q_i + m), ready for __dp4a
 * against 8 words of q8 activations. Shared by the CUDA kernel and a host
 * emulation (tests/c/test_gemv_dp4a_emu.c), so the bit arithmetic the GPU
 * runs is the arithmetic `make test` checks against lrun_dequantize_row on
 * any machine. Layouts as docs/REFERENCE (ggml): all little-endian words. */
#ifndef LRUN_KERNELS_GEMV_DP4A_LANE_H
#define LRUN_KERNELS_GEMV_DP4A_LANE_H

#include <stdint.h>

#ifdef __CUDACC__
#define DL_FN static __device__ __forceinline__
#define dl_perm(x, y, s) __byte_perm((x), (y), (s))
#else
#define DL_FN static inline
/* CUDA's __byte_perm: byte i of the result is byte (s >> 4i) & 7 of the 8
 * bytes y:x (x the low four); selectors here never set bit 3 (sign mode). */
static inline uint32_t dl_perm(uint32_t x, uint32_t y, uint32_t s)
{
    const uint64_t v = (uint64_t)y << 32 | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) r |= (uint32_t)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
#endif

#ifdef __CUDACC__
#define dl_dp4a(a, b, c) __dp4a((int)(a), (int)(b), (c))
#else
/* CUDA's __dp4a(a, b, c): c + Σ of the 4 signed byte products */
static inline int dl_dp4a(uint32_t a, uint32_t b, int c)
{
    for (int e = 0; e < 4; e++) c += (int)(int8_t)(a >> (8 * e)) * (int)(int8_t)(b >> (8 * e));
    return c;
}
#endif

/* Low / high nibbles of 4 bytes, one per byte. */
DL_FN uint32_t dl_lo(uint32_t q) { return q & 0x0f0f0f0fu; }
DL_FN uint32_t dl_hi(uint32_t q) { return (q >> 4) & 0x0f0f0f0fu; }

/* q − c per byte, for bytes of q below 128 and of c at most 128: the 0x80
 * bit keeps every byte's subtraction from borrowing out of it. */
DL_FN uint32_t dl_sub4(uint32_t q, uint32_t c) { return ((q | 0x80808080u) - c) ^ 0x80808080u; }

/* Bits 0..3 of v to bit 4 of bytes 0..3 (Q5's fifth bits): the multiply
 * puts copies of the nibble at bits 4, 11, 18 and 25, which never overlap
 * (no carries), so bit i of v lands on bit 8i + 4 (3 instructions, not 8). */
DL_FN uint32_t dl_qh4(uint32_t v) { return ((v & 0xfu) * 0x02040810u) & 0x10101010u; }

/* IQ4's codebook (lrun_kvalues_iq4nl) as int8 bytes: entries 0..3, 4..7, 8..11, 12..15. */
#define DL_IQ4_T0 0xBFAD9881u /* -127 -104 -83 -65 */
#define DL_IQ4_T1 0xF6EADDCFu /* -49 -35 -22 -10 */
#define DL_IQ4_T2 0x26190D01u /* 1 13 25 38 */
#define DL_IQ4_T3 0x71594535u /* 53 69 89 113 */

/* 4 bytes of indices 0..15 to their codebook values: the low 3 bits of each
 * make a selector nibble into entries 0..7 and into 8..15; bit 3 picks. */
DL_FN uint32_t dl_iq4(uint32_t v)
{
    const uint32_t s = (v & 7u) | ((v >> 4) & 0x70u) | ((v >> 8) & 0x700u) | ((v >> 12) & 0x7000u);
    const uint32_t lo = dl_perm(DL_IQ4_T0, DL_IQ4_T1, s), hi = dl_perm(DL_IQ4_T2, DL_IQ4_T3, s);
    const uint32_t pick = ((v >> 3) & 0x01010101u) * 0xffu;
    return (lo & ~pick) | (hi & pick);
}

/* The types' unpacking: qs[4] the 16 bytes of nibbles (byte j: element j
 * low, element 16 + j high), w[8] the int8 words out. */
DL_FN void dl_q4_0(const uint32_t qs[4], uint32_t w[8])
{
    for (int l = 0; l < 4; l++) {
        w[l] = dl_sub4(dl_lo(qs[l]), 0x08080808u);
        w[4 + l] = dl_sub4(dl_hi(qs[l]), 0x08080808u);
    }
}
DL_FN void dl_q4_1(const uint32_t qs[4], uint32_t w[8])
{
    for (int l = 0; l < 4; l++) w[l] = dl_lo(qs[l]), w[4 + l] = dl_hi(qs[l]);
}
/* Q5: qh bit j is element j's fifth bit (j < 32); off 16 (Q5_0) or 0 (Q5_1). */
DL_FN void dl_q5(const uint32_t qs[4], uint32_t qh, uint32_t off, uint32_t w[8])
{
    for (int l = 0; l < 4; l++) {
        w[l] = dl_sub4(dl_lo(qs[l]) | dl_qh4(qh >> (4 * l)), off);
        w[4 + l] = dl_sub4(dl_hi(qs[l]) | dl_qh4(qh >> (4 * l + 16)), off);
    }
}
/* IQ4_NL's 8 nibbles of q (byte b: element b low, 16 + b high) to the
 * codebook values of elements 0..3 (*lo) and 16..19 (*hi) in 8 permutes
 * and ~5 bit operations, about half of dl_iq4's 2·13: each half-word's 4
 * nibbles (low 3 bits) index entries 0..7 and 8..15 at once, a third
 * permute picks by bit 3 (moved to the selector's bit 2), two more undo
 * the interleaving. */
DL_FN void dl_iq4_word(uint32_t q, uint32_t *lo, uint32_t *hi)
{
    const uint32_t q7 = q & 0x77777777u, pick = ((q >> 1) & 0x44444444u) | 0x32103210u;
    uint32_t t[2];
    for (int i = 0; i < 2; i++) {
        const uint32_t s = q7 >> (16 * i);
        t[i] = dl_perm(dl_perm(DL_IQ4_T0, DL_IQ4_T1, s & 0xffffu), dl_perm(DL_IQ4_T2, DL_IQ4_T3, s & 0xffffu),
                       (pick >> (16 * i)) & 0xffffu);
    }
    *lo = dl_perm(t[0], t[1], 0x6420u), *hi = dl_perm(t[0], t[1], 0x7531u);
}
DL_FN void dl_iq4nl(const uint32_t qs[4], uint32_t w[8])
{
    for (int l = 0; l < 4; l++) dl_iq4_word(qs[l], &w[l], &w[4 + l]);
}
/* IQ4_XS sub-block j (0..7) of a super-block: its 6-bit scale from
 * scales_h (16 bits, 2 per sub-block) and scales_l byte j/2 (a nibble
 * each); the scale is d·(ls − 32). */
DL_FN int dl_iq4xs_ls(uint32_t scales_h, uint32_t scales_l_byte, int j)
{
    return (int)(((scales_l_byte >> (4 * (j & 1))) & 0xfu) | (((scales_h >> (2 * j)) & 3u) << 4)) - 32;
}

// ---------------------------------------------------------------- Q2_K, Q3_K

/* Unit u (0..7) of a Q2_K or Q3_K super-block is elements 32u..32u+31: the
 * 2-bit field u % 4 (bits 2(u % 4)) of the 32 qs bytes of half u / 4, byte
 * l element 32u + l; its two 16-element sub-blocks 2u and 2u + 1 (words
 * 0..3 and 4..7) have their own scales, so a unit's integer dot is
 * sc0·Σ_{words 0..3} + sc1·Σ_{words 4..7}, one dp4a per word. */

/* Q2_K's 2-bit values of unit u from its 8 qs words: 0..3 per byte. */
DL_FN void dl_q2k(const uint32_t q[8], int u, uint32_t w[8])
{
    for (int l = 0; l < 8; l++) w[l] = (q[l] >> (2 * (u & 3))) & 0x03030303u;
}

/* Q3_K's values of unit u: the 2-bit field, plus 4 where hmask byte l's bit
 * u is set, minus 4 (element = d·sc·(q − (hbit ? 0 : 4))): −4..3 per byte.
 * hm[8]: the 32 hmask bytes (byte l belongs to element 32u + l of every u). */
DL_FN void dl_q3k(const uint32_t q[8], const uint32_t hm[8], int u, uint32_t w[8])
{
    for (int l = 0; l < 8; l++)
        w[l] = dl_sub4(((q[l] >> (2 * (u & 3))) & 0x03030303u) | (((hm[l] >> u) & 0x01010101u) << 2), 0x04040404u);
}

/* Q3_K's scale of sub-block 2u + t (t 0, 1), −32..31: its low 4 bits are
 * the nibble 4(i / 8) of scales byte i % 8, its high 2 bits bits 2(i / 4)
 * of byte 8 + i % 4 (i = 2u + t). sl: the 16 bits of scales bytes 2u % 8,
 * 2u % 8 + 1; sh: of bytes 8 + 2u % 4, 9 + 2u % 4. */
DL_FN int dl_q3k_scale(uint32_t sl, uint32_t sh, int u, int t)
{
    return (int)(((sl >> (8 * t + 4 * (u >> 2))) & 0xfu) | (((sh >> (8 * t + 2 * (u >> 1))) & 3u) << 4)) - 32;
}

/* sc0·Σ w·xq over words 0..3 + sc1·Σ over words 4..7 (exact in int:
 * |sc| ≤ 32, |w| ≤ 4, |xq| ≤ 127). */
DL_FN int dl_dot2(const uint32_t w[8], const uint32_t xw[8], int sc0, int sc1)
{
    int s0 = 0, s1 = 0;
    for (int l = 0; l < 4; l++) s0 = dl_dp4a(w[l], xw[l], s0), s1 = dl_dp4a(w[4 + l], xw[4 + l], s1);
    return sc0 * s0 + sc1 * s1;
}

/* m0·Σ xq over words 0..3 + m1·Σ over words 4..7: Q2_K's mins meet the
 * sums of x's halves, not the whole unit's s. */
DL_FN int dl_sum2(const uint32_t xw[8], int m0, int m1)
{
    int s0 = 0, s1 = 0;
    for (int l = 0; l < 4; l++) s0 = dl_dp4a(0x01010101u, xw[l], s0), s1 = dl_dp4a(0x01010101u, xw[4 + l], s1);
    return m0 * s0 + m1 * s1;
}

#endif
