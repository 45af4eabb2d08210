/* packed_gemv_lane.h — what one lane does to decode 8 packed elements
 * (runtime/packed/codec.h), shared by the CUDA kernels (packed_gemv.cu) and a
 * host emulation of them (tests/c/test_packed_gemv_emu.c), so that the bit
 * arithmetic the GPU runs is the arithmetic `make test` checks on any machine.
 *
 * A warp decodes one codec block of 1024 elements as 4 groups of 256; lane l
 * of group g owns elements 256g + 8l .. 256g + 8l + 7 of the block: 16 bits
 * of tier-1 codes, 8 kept bytes (bf16: sign and mantissa; f16: the low
 * mantissa byte) and, for f16, 24 bits of the hi stream. The warp's prefix
 * sums (packed_gemv.cu) give each lane where its tier-2 codes and tier-3
 * bytes start; these functions do the rest without any loop over a bit
 * stream. Everything is 32-bit integer work: byte permutes pick exponents out
 * of the codebooks four at a time. */
#ifndef LRUN_KERNELS_PACKED_GEMV_LANE_H
#define LRUN_KERNELS_PACKED_GEMV_LANE_H

#include <stdint.h>

#ifdef __CUDACC__
#define PG_FN static __device__ __forceinline__
#define pg_perm(x, y, s) __byte_perm((x), (y), (s))
#define pg_popc(x) ((uint32_t)__popc(x))
#define pg_fshr(lo, hi, s) __funnelshift_r((lo), (hi), (s))
#define PG_UNROLL _Pragma("unroll")
#else
#define PG_UNROLL
#define PG_FN static inline
/* CUDA's __byte_perm: byte i of the result is byte (s >> 4i) & 7 of the
 * 8 bytes y:x (x the low four); the selector's bit 3 (sign replication) is
 * never set here. */
static inline uint32_t pg_perm(uint32_t x, uint32_t y, uint32_t s)
{
    const uint64_t v = (uint64_t)y << 32 | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) r |= (uint32_t)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
static inline uint32_t pg_popc(uint32_t x) { return (uint32_t)__builtin_popcount(x); }
/* __funnelshift_r: the low 32 bits of hi:lo shifted right by s & 31. */
static inline uint32_t pg_fshr(uint32_t lo, uint32_t hi, uint32_t s)
{
    return (uint32_t)((((uint64_t)hi << 32) | lo) >> (s & 31));
}
#endif

/* Tier-1 escapes (code 3) among the 8 codes of c1: bit 2j set for element j. */
PG_FN uint32_t pg_esc_mask(uint32_t c1) { return c1 & (c1 >> 1) & 0x5555u; }

/* The 8 2-bit codes of c1 spread to the 8 nibbles of a byte-permute
 * selector: nibble j = code j. */
PG_FN uint32_t pg_spread(uint32_t c1)
{
    uint32_t s = c1 & 0xffffu;
    s = (s | (s << 8)) & 0x00ff00ffu;
    s = (s | (s << 4)) & 0x0f0f0f0fu;
    return (s | (s << 2)) & 0x33333333u;
}

/* The tier-2 codes of a lane: ng codes (ng <= 8) from bit 3*p of the block's
 * tier-2 stream, staged as 32-bit words w (LSB first), 3 bits each. */
PG_FN uint32_t pg_tier2(const uint32_t *w, uint32_t p, uint32_t ng)
{
    const uint32_t bit = 3 * p, v = pg_fshr(w[bit >> 5], w[(bit >> 5) + 1], bit & 31);
    return v & ((1u << (3 * ng)) - 1);
}

/* How many of the 3-bit codes in v are 7 (tier-2 escapes). */
PG_FN uint32_t pg_count7(uint32_t v) { return pg_popc(v & (v >> 1) & (v >> 2) & 0x00249249u); }

/* Byte-permute selector that replaces byte j (0..3) of x by byte 0 of y. */
#define PG_PATCH(j) ((0x3210u & ~(0xfu << (4 * (j)))) | (4u << (4 * (j))))

/* bf16 bits of two elements: kept bytes and exponents of elements a, b
 * (sel 0x4140: bytes 0, 1 of r4/e4; 0x4342: bytes 2, 3) as one word, a low. */
PG_FN uint32_t pg_bf16x2(uint32_t r4, uint32_t e4, uint32_t sel)
{
    const uint32_t r = pg_perm(r4, 0, sel), e = pg_perm(e4, 0, sel); /* 0x00bb00aa */
    const uint32_t s = r & 0x00800080u;                              /* the signs, bits 7 and 23 */
    return (r - s) + (s << 8) + (e << 7); /* sign to bit 15, exponent to 7..14, mantissa stays */
}

/* f16 bits of element j: kept byte r (mantissa & 0xff), exponent e, 3 hi bits h (sign << 2 | mantissa >> 8). */
PG_FN uint32_t pg_f16(uint32_t r, uint32_t e, uint32_t h)
{
    return ((h & 4u) << 13) | (e << 10) | ((h & 3u) << 8) | r;
}

/* The exponents of the 8 elements, bytes of e[0] (elements 0..3) and e[1]
 * (4..7). book1: tier-1 exponents in bytes 0..2 (byte 3 zero); book2lo/hi:
 * tier-2 exponents in bytes 0..6 of the pair (byte 7 zero); v2 the lane's
 * tier-2 codes (pg_tier2); p3 the lane's first index in the block's tier-3
 * bytes, ESC(i) tier-3 byte i of the block. */
#define PG_EXPONENTS(e, c1, book1, book2lo, book2hi, v2, p3, ESC)                                                    \
    do {                                                                                                             \
        const uint32_t pg_s_ = pg_spread(c1), pg_m_ = pg_esc_mask(c1);                                               \
        (e)[0] = pg_perm((book1), 0, pg_s_ & 0xffffu);                                                               \
        (e)[1] = pg_perm((book1), 0, pg_s_ >> 16);                                                                   \
        if (pg_m_) {                                                                                                 \
            uint32_t pg_v_ = (v2), pg_p_ = (p3);                                                                     \
            PG_UNROLL for (int pg_j_ = 0; pg_j_ < 8; pg_j_++)                                                        \
            {                                                                                                        \
                if (!(pg_m_ & (1u << (2 * pg_j_)))) continue;                                                        \
                const uint32_t pg_c_ = pg_v_ & 7u;                                                                   \
                pg_v_ >>= 3;                                                                                         \
                const uint32_t pg_x_ = pg_c_ < 7u ? pg_perm((book2lo), (book2hi), pg_c_) : (uint32_t)ESC(pg_p_++);   \
                (e)[pg_j_ >> 2] = pg_perm((e)[pg_j_ >> 2], pg_x_, PG_PATCH(pg_j_ & 3));                              \
            }                                                                                                        \
        }                                                                                                            \
    } while (0)

/* The 8 decoded 16-bit values as 4 words (element 2i in the low half of
 * out[i]): bf16 from the kept bytes r (r[0]: elements 0..3) and exponents e;
 * f16 also from the 24 hi bits hb. */
PG_FN void pg_assemble(uint32_t *out, int is_bf16, const uint32_t *r, const uint32_t *e, uint32_t hb)
{
    if (is_bf16) {
        out[0] = pg_bf16x2(r[0], e[0], 0x4140u), out[1] = pg_bf16x2(r[0], e[0], 0x4342u);
        out[2] = pg_bf16x2(r[1], e[1], 0x4140u), out[3] = pg_bf16x2(r[1], e[1], 0x4342u);
        return;
    }
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int i = 0; i < 4; i++) {
        const int j = 2 * i, w = j >> 2, b = 8 * (j & 3);
        const uint32_t lo = pg_f16((r[w] >> b) & 0xffu, (e[w] >> b) & 0xffu, (hb >> (3 * j)) & 7u);
        const uint32_t hi = pg_f16((r[w] >> (b + 8)) & 0xffu, (e[w] >> (b + 8)) & 0xffu, (hb >> (3 * j + 3)) & 7u);
        out[i] = lo | (hi << 16);
    }
}

#endif
