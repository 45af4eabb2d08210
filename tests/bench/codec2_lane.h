/* codec2_lane.h — a prototype of a fixed-width packed code for mode 3
 * ("pfor-2p" of tests/bench/codec2_candidates.py; docs/packed.md "A faster
 * code for mode 3 (study, session 14)"). NOT the engine's codec (that is
 * PEX1, runtime/packed/codec.h): a bench-only format, bf16 only, n a
 * multiple of 8, to measure what its decode costs. Shared by the CUDA
 * prototype (codec2_proto.cu) and the host round trip (codec2_roundtrip.c),
 * which replays every lane with this very code.
 *
 * Every element has a code of A values: 3 bits (A = 8, "pfor-2p") or a
 * base-6 digit, eight of them in 21 bits (A = 6, "b6-2p"). An ordinary
 * element's exponent is book1[code] (the tensor's A most frequent
 * exponents); an exception's is book2[code] (the next A - 1), or, where
 * code is A - 1, a byte of the far stream.
 * Exceptions are listed by position, so a lane decodes its 8 elements from
 * its index alone (no scan, no escape symbol) and the warp then patches the
 * block's few exceptions, lane j taking exception j (PFOR-style).
 *
 * Layout, every field little-endian, sections back to back:
 *
 *   header 32 bytes   "PX2p" (A = 8) or "PX26" (A = 6), u32 dtype (1 = bf16), u64 n,
 *                     u8 book1[8], u8 book2[8] (unused entries 0)
 *   rest   n bytes    sign << 7 | mantissa, element order (at offset 32: 16-aligned)
 *   code   A = 8: 3n/8 bytes, lane L (elements 8L..8L+7) 24 bits at byte 3L, element i
 *                     at bit 3i; A = 6: 21 bits per lane at bit 21L, the fraction
 *                     ceil(v 2^21 / 6^8) of v = the lane's digits, element 0 the most
 *                     significant (so each digit is one wide multiply by 6);
 *                     then 8 zero bytes (a lane's second word), padded to 16
 *   table  (nb+1)x12  per block of 1024: u32 first exception, u32 first far byte,
 *                     u32 group ends (exceptions of groups 0, 1, 2 of 256 elements,
 *                     cumulative, 10 bits each); entry nb holds the totals
 *   exc    n_exc      per exception, its position in its 256-element group, element order
 *   far    n_far      per exception with code 7, its exponent, element order
 */
#ifndef LRUN_BENCH_CODEC2_LANE_H
#define LRUN_BENCH_CODEC2_LANE_H

#include <stdint.h>

#define C2_BLOCK 1024 /* elements of a codec block: a warp's unit */
#define C2_GROUP 256  /* elements of a group: 32 lanes of 8 */
#define C2_HEADER 32

/* The decoder's view of one tensor, filled on the host by c2_layout()
 * (codec2_roundtrip.c checks the bytes first). Offsets in bytes from the
 * tensor's start; the codebooks as byte-permute tables. */
typedef struct {
    uint64_t n;                 /* elements */
    uint32_t base;              /* A: 8 (3-bit codes) or 6 (base-6 digits) */
    uint64_t rest, code, table; /* section offsets */
    uint64_t exc, far;          /* section offsets */
    uint32_t h1lo, h1hi;        /* book1[i] >> 1, bytes 0-3 and 4-7: a value's high byte, less its sign */
    uint32_t l1lo, l1hi;        /* (book1[i] & 1) << 7: the exponent's bit in the low byte */
    uint32_t b2lo, b2hi;        /* book2[0..7] (book2[A-1] = 0: that code is far) */
} c2_layout;

#if defined(C2_SASS_HOT) && defined(__CUDACC__)
#define C2_ASSUME(c) __builtin_assume(c)
#else
#define C2_ASSUME(c) ((void)0)
#endif

#ifdef __CUDACC__
#define C2_FN static __device__ __forceinline__
C2_FN uint32_t c2_perm(uint32_t x, uint32_t y, uint32_t s)
{
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(x), "r"(y), "r"(s));
    return r;
}
#define c2_fshr(lo, hi, s) __funnelshift_r((lo), (hi), (s))
#define c2_umulhi(a, b) __umulhi((a), (b))
#define c2_ld8(p) ((uint32_t)__ldg((const unsigned char *)(p)))
#define c2_ld32(p) ((uint32_t)__ldg((const unsigned int *)(p)))
#define c2_ld64(p) ((uint64_t)__ldg((const unsigned long long *)(p)))
#define c2_st128(p, w) (*(uint4 *)(p) = make_uint4((w)[0], (w)[1], (w)[2], (w)[3]))
#else
#define C2_FN static inline
/* prmt.b32: byte i of the result is byte (s >> 4i) & 7 of y:x; a set bit 3
 * (sign replication on the device) is counted, never wanted */
static int c2_emu_signsel, c2_emu_misaligned;
static inline uint32_t c2_perm(uint32_t x, uint32_t y, uint32_t s)
{
    if (s & 0x8888u) c2_emu_signsel++;
    const uint64_t v = (uint64_t)y << 32 | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) r |= (uint32_t)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
static inline uint32_t c2_fshr(uint32_t lo, uint32_t hi, uint32_t s)
{
    return (uint32_t)((((uint64_t)hi << 32) | lo) >> (s & 31));
}
static inline uint32_t c2_umulhi(uint32_t a, uint32_t b) { return (uint32_t)(((uint64_t)a * b) >> 32); }
/* loads as the device does them: counted when misaligned for their width */
static inline uint64_t c2_emu_ld(const void *p, int bytes)
{
    const uint8_t *q = (const uint8_t *)p;
    if ((uintptr_t)q % (uintptr_t)bytes) c2_emu_misaligned++;
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; k--) v = (v << 8) | q[k];
    return v;
}
#define c2_ld8(p) ((uint32_t)c2_emu_ld((p), 1))
#define c2_ld32(p) ((uint32_t)c2_emu_ld((p), 4))
#define c2_ld64(p) c2_emu_ld((p), 8)
/* a 16-byte store of 8 values, counted when misaligned */
static inline void c2_st128(uint16_t *p, const uint32_t w[4])
{
    if ((uintptr_t)p % 16) c2_emu_misaligned++;
    for (int i = 0; i < 4; i++) p[2 * i] = (uint16_t)w[i], p[2 * i + 1] = (uint16_t)(w[i] >> 16);
}
#endif

/* ---------------------------------------------------------------- the lane's decode */

/* Eight 3-bit fields (the low 24 bits of x; the rest is the next lane's)
 * into the low 3 bits of eight nibbles: field i moves up by i bits, in
 * three steps of x + (x & m)·(2^s − 1), which move the masked fields up by
 * s (fields 4-7 by 4, then {2,3,6,7} by 2, then the odd ones by 1): one
 * LOP3 and one multiply-add (FMA pipe) each, after the mask. */
C2_FN uint32_t c2_spread3(uint32_t x)
{
    x &= 0x00ffffffu;
    x += (x & 0x00fff000u) * 15u;
    x += (x & 0x0fc00fc0u) * 3u;
    x += x & 0x38383838u;
    return x;
}

/* Four values from their kept bytes k (sign | mantissa) and the exponent
 * halves picked by the codes: hi = the high bytes (sign | exponent >> 1),
 * lo = the low bytes (exponent bit 0 | mantissa); then interleaved into two
 * words of two bf16 values each. */
C2_FN void c2_assemble4(uint32_t k, uint32_t h, uint32_t l, uint32_t *w0, uint32_t *w1)
{
    const uint32_t hi = (k & 0x80808080u) | h; /* h has no bit 7 */
    const uint32_t lo = (k & 0x7f7f7f7fu) | l; /* l only bit 7 */
    *w0 = c2_perm(lo, hi, 0x5140u);
    *w1 = c2_perm(lo, hi, 0x7362u);
}

/* Where lane l (0..31) of codec block b finds its codes and kept bytes in
 * group 0; in group g they are 96g (A = 8; 84g for A = 6: 32 lanes of 21
 * bits) and 256g bytes further. Block-relative 32-bit offsets, so the
 * per-group addresses are constant offsets from two pointers. A is
 * L->base, passed apart so that a kernel specialised on it folds it. */
typedef struct {
    const uint8_t *code; /* the aligned word holding the lane's first code bit */
    const uint8_t *kept; /* its 8 kept bytes */
    uint32_t shift;      /* the first code bit's place in that word */
} c2_lane_at;

C2_FN c2_lane_at c2_lane_base(const uint8_t *P, const c2_layout *L, uint32_t A, uint64_t b, uint32_t lane)
{
    c2_lane_at a;
    const uint32_t bit = (A == 8 ? 24u : 21u) * lane;
    a.code = P + L->code + (A == 8 ? 384 : 336) * b + 4 * (bit >> 5);
    a.shift = bit & 31;
    a.kept = P + L->rest + C2_BLOCK * b + 8 * lane;
    return a;
}

/* Lane l's eight values of group g as they are when every exponent is
 * book1[code] (the exceptions are patched after): the 24 code bits (two
 * aligned words and a funnel shift), the 8 kept bytes (one 8-byte load),
 * four permutes into the codebooks, the assembly. */
C2_FN void c2_lane_decode(const c2_lane_at *a, uint32_t g, const c2_layout *L, uint32_t w[4])
{
    const uint8_t *cw = a->code + 96 * g;
    const uint32_t s = c2_spread3(c2_fshr(c2_ld32(cw), c2_ld32(cw + 4), a->shift)); /* nibble i: element i's code */
    const uint64_t kept = c2_ld64(a->kept + C2_GROUP * g);
    const uint32_t s4 = s >> 16;
    c2_assemble4((uint32_t)kept, c2_perm(L->h1lo, L->h1hi, s), c2_perm(L->l1lo, L->l1hi, s), &w[0], &w[1]);
    c2_assemble4((uint32_t)(kept >> 32), c2_perm(L->h1lo, L->h1hi, s4), c2_perm(L->l1lo, L->l1hi, s4), &w[2], &w[3]);
}

/* Eight base-6 digits from the lane's 21-bit fraction f (the low 21 bits
 * of x): with f·2^11 as a 0.32 fixed-point fraction, digit i is the high
 * word of fr_i·6, where fr_i = f·2^11·6^i mod 2^32 is the fraction left
 * after i digits (exact because 6^8 <= 2^21). Written with the fr_i as
 * independent multiplies by constants, so the eight digits do not wait on
 * each other: one IMAD, one IMAD.HI and one IMAD (into nibble i) each. */
C2_FN uint32_t c2_digits6(uint32_t x)
{
    const uint32_t f = x << 11;
    uint32_t s = 0, p6 = 1, p16 = 1;
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int i = 0; i < 8; i++) {
        s += c2_umulhi(f * p6, 6u) * p16;
        p6 *= 6u, p16 <<= 4;
    }
    return s;
}

/* c2_lane_decode for A = 6: the same but for the codes. */
C2_FN void c2_lane_decode6(const c2_lane_at *a, uint32_t g, const c2_layout *L, uint32_t w[4])
{
    const uint8_t *cw = a->code + 84 * g;
    const uint32_t s = c2_digits6(c2_fshr(c2_ld32(cw), c2_ld32(cw + 4), a->shift));
    const uint64_t kept = c2_ld64(a->kept + C2_GROUP * g);
    const uint32_t s4 = s >> 16;
    c2_assemble4((uint32_t)kept, c2_perm(L->h1lo, L->h1hi, s), c2_perm(L->l1lo, L->l1hi, s), &w[0], &w[1]);
    c2_assemble4((uint32_t)(kept >> 32), c2_perm(L->h1lo, L->h1hi, s4), c2_perm(L->l1lo, L->l1hi, s4), &w[2], &w[3]);
}

/* ---------------------------------------------------------------- the block's patch */

/* One codec block's exceptions, from its table entry and the next one's. */
typedef struct {
    uint32_t count;      /* exceptions of the block */
    uint32_t ends;       /* cumulative counts of groups 0, 1, 2: 10 bits each */
    const uint8_t *exc;  /* its first position byte */
    const uint8_t *far;  /* its first far byte */
    const uint8_t *code; /* its codes */
} c2_block;

C2_FN c2_block c2_block_at(const uint8_t *P, const c2_layout *L, uint32_t A, uint64_t b)
{
    const uint8_t *t = P + L->table + 12 * b;
    c2_block r;
    const uint32_t first = c2_ld32(t);
    r.count = c2_ld32(t + 12) - first;
    r.ends = c2_ld32(t + 8);
    r.exc = P + L->exc + first;
    r.far = P + L->far + c2_ld32(t + 4);
    r.code = P + L->code + (A == 8 ? 384 : 336) * b;
    return r;
}

/* Exception j (< count): its position in the block (its group from the
 * block's group ends, then its byte). c2_code_at3/6 then give its code,
 * A - 1 for a far one (the warp counts those before it by a ballot). */
C2_FN uint32_t c2_exc_pos(const c2_block *B, uint32_t j)
{
    const uint32_t g = (j >= (B->ends & 1023u)) + (j >= ((B->ends >> 10) & 1023u)) + (j >= (B->ends >> 20));
    return g * C2_GROUP + c2_ld8(B->exc + j);
}

C2_FN uint32_t c2_code_at3(const c2_block *B, uint32_t pos)
{
    const uint32_t bit = 3 * pos;
    const uint8_t *cw = B->code + 4 * (bit >> 5);
    return c2_fshr(c2_ld32(cw), c2_ld32(cw + 4), bit & 31) & 7u;
}

/* A = 6: digit pos mod 8 of its lane's fraction alone (6^i from a table of
 * 8: one constant-bank load on the device) */
#ifdef __CUDACC__
static __constant__ uint32_t c2_pow6[8] = {1, 6, 36, 216, 1296, 7776, 46656, 279936};
#else
static const uint32_t c2_pow6[8] = {1, 6, 36, 216, 1296, 7776, 46656, 279936};
#endif
C2_FN uint32_t c2_code_at6(const c2_block *B, uint32_t pos)
{
    const uint32_t bit = 21 * (pos / 8);
    const uint8_t *cw = B->code + 4 * (bit >> 5);
    return c2_umulhi((c2_fshr(c2_ld32(cw), c2_ld32(cw + 4), bit & 31) << 11) * c2_pow6[pos & 7], 6u);
}

/* The bf16 value v with its exponent replaced by e. */
C2_FN uint32_t c2_with_exp(uint32_t v, uint32_t e) { return (v & 0x807fu) | (e << 7); }

/* The near exponent of code c (book2[c]). */
C2_FN uint32_t c2_near_exp(const c2_layout *L, uint32_t c) { return c2_perm(L->b2lo, L->b2hi, c) & 0xffu; }

/* ---------------------------------------------------------------- a warp's codec block, lane by lane */

/* What the kernels and the host replay compose (only the ballot and the
 * warp barriers are the kernels' own): bdst[p] is the block's element p,
 * and only p in [plo, phi) belongs to the destination (a fused tile may
 * hold part of a block). */

/* Lane l's 8 elements of each of the block's 4 groups: decoded as if
 * ordinary and stored with one 16-byte store each. */
C2_FN void c2_lane_block(const uint8_t *P, const c2_layout *L, uint32_t A, uint64_t b, uint32_t lane, uint16_t *bdst,
                         int plo, int phi)
{
    const c2_lane_at a = c2_lane_base(P, L, A, b, lane);
#ifdef __CUDACC__
#pragma unroll
#endif
    for (uint32_t g = 0; g < 4; g++) {
        const int p = (int)(C2_GROUP * g + 8 * lane);
        C2_ASSUME(p >= plo && p < phi);
        if (p >= plo && p < phi) {
            uint32_t w[4];
            if (A == 8) c2_lane_decode(&a, g, L, w);
            else c2_lane_decode6(&a, g, L, w);
            c2_st128(bdst + p, w);
        }
    }
}

/* Exception j of block B as lane j mod 32 of a patch pass sees it. */
typedef struct {
    int act;       /* j < count */
    uint32_t pos;  /* its position in the block */
    uint32_t code; /* its code: A - 1 for a far one */
} c2_exc;

C2_FN c2_exc c2_exc_load(const c2_block *B, uint32_t A, uint32_t j)
{
    c2_exc x = {0, 0, 0};
    if (j < B->count) {
        x.act = 1;
        x.pos = c2_exc_pos(B, j);
        x.code = A == 8 ? c2_code_at3(B, x.pos) : c2_code_at6(B, x.pos);
    }
    return x;
}

/* Its exponent written into its value: book2[code], or, for a far one, the
 * far byte far_index (the far ones before it in the block, which the warp
 * counts with a ballot). */
C2_FN void c2_exc_apply(const c2_layout *L, const c2_block *B, uint32_t A, const c2_exc *x, uint32_t far_index,
                        uint16_t *bdst, int plo, int phi)
{
    const uint32_t e = x->code == A - 1 ? c2_ld8(B->far + far_index) : c2_near_exp(L, x->code);
    C2_ASSUME((int)x->pos >= plo && (int)x->pos < phi);
    if ((int)x->pos >= plo && (int)x->pos < phi) bdst[x->pos] = (uint16_t)c2_with_exp(bdst[x->pos], e);
}

#endif
