/* packed_gemv_lane.h — everything one lane does to decode its part of a
 * packed codec block (runtime/packed/codec.h), shared by the CUDA kernels
 * (packed_gemv.cu) and a host replay of them (tests/c/test_packed_gemv_emu.c):
 * the loads with their addresses and widths, the staging of a block's tier-2
 * codes in shared memory, the bit work, and the 16-byte stores. Only the two
 * warp prefix sums and the warp barriers are the kernel's own (the replay
 * runs the same shuffle steps over an array of 32 lanes), so `make test`
 * checks on any machine the index arithmetic the GPU runs, and, on the host,
 * counts every load or store that would be misaligned on the device.
 *
 * A warp decodes one codec block of 1024 elements as 4 groups of 256; lane l
 * of group g owns elements 256g + 8l .. 256g + 8l + 7 of the block: 16 bits
 * of tier-1 codes, 8 kept bytes (bf16: sign and mantissa; f16: the low
 * mantissa byte) and, for f16, 24 bits of the hi stream. Exponents are picked
 * out of the codebooks by byte permutes, eight elements at a time, escapes
 * included (no loop over elements, no walk along a bit stream). */
#ifndef LRUN_KERNELS_PACKED_GEMV_LANE_H
#define LRUN_KERNELS_PACKED_GEMV_LANE_H

#include "packed/codec.h"
#ifdef __CUDACC__
#include <cuda_fp16.h>
#else
#include "quant/quant.h" /* lrun_f16_to_f32 */
#endif

#include <stdint.h>
#include <string.h>

#define PG_BLOCK 1024      /* LRUN_PACKED_BLOCK: elements of a codec block */
#define PG_STAGE2 400      /* a warp's stage of tier-2 codes: <= 97 words of them + 2 zero words (bytes) */
#define PG_STAGE3 128      /* then its first tier-3 bytes (the rest, rare, are read from global memory) */
#define PG_STAGE (PG_STAGE2 + PG_STAGE3)
#define PG_TILE 24576      /* elements of a fused GEMV tile the row count aims at (48 KiB of bf16) */
#define PG_MAX_RB 8        /* rows per fused GEMV block at most */

/* PG_ASSUME(c): nothing, except in the instruction-count build
 * (tests/bench/packed_sass_count.sh defines PG_SASS_HOT), where it tells the
 * compiler the common case (aligned sections, a lane inside its rows, no
 * tier-2 escape, one pass of the staging loops) so that the decode of one
 * codec block compiles to the straight line whose SASS is counted. */
#if defined(PG_SASS_HOT) && defined(__CUDACC__)
#define PG_ASSUME(c) __builtin_assume(c)
#else
#define PG_ASSUME(c) ((void)0)
#endif

#ifdef __CUDACC__
#define PG_FN static __device__ __forceinline__
#define PG_UNROLL _Pragma("unroll")
/* prmt.b32 itself, not __byte_perm: the intrinsic masks a variable
 * selector with 0x7777 first (one LOP3 per permute, 24 per lane and codec
 * block) to rule out sign replication, which no selector here asks for
 * (test_packed_gemv_emu counts any that would: pg_emu_signsel) */
PG_FN uint32_t pg_perm(uint32_t x, uint32_t y, uint32_t s)
{
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(x), "r"(y), "r"(s));
    return r;
}
#define pg_popc(x) ((uint32_t)__popc(x))
#define pg_fshr(lo, hi, s) __funnelshift_r((lo), (hi), (s))
#define pg_fshrc(lo, hi, s) __funnelshift_rc((lo), (hi), (s))
/* the packed tensor is read-only while a kernel runs: through the read-only path */
#define pg_ld8(p) ((uint32_t)__ldg((const unsigned char *)(p)))
#define pg_ld16(p) ((uint32_t)__ldg((const unsigned short *)(p)))
#define pg_ld32(p) ((uint32_t)__ldg((const unsigned int *)(p)))
#define pg_ld64(p) ((uint64_t)__ldg((const unsigned long long *)(p)))
#define PG_LD2x32(p, a, b)                                                                                           \
    do {                                                                                                             \
        const uint2 pg_v_ = __ldg((const uint2 *)(p));                                                               \
        (a) = pg_v_.x, (b) = pg_v_.y;                                                                                \
    } while (0)
#define pg_st128(p, a, b, c, d) (*(uint4 *)(p) = make_uint4((a), (b), (c), (d)))
/* f16 bits → f32 bits: lrun_k_f16's conversion (the embedding gather's, kernels/common.cuh) */
#define pg_f16_f32(h) __float_as_uint(__half2float(__ushort_as_half((unsigned short)(h))))
#else
#define PG_FN static inline
#define PG_UNROLL
/* CUDA's __byte_perm: byte i of the result is byte (s >> 4i) & 7 of the
 * 8 bytes y:x (x the low four), the selector's upper 16 bits unused; bit 3
 * of a nibble (sign replication on the device) must never be set here:
 * pg_emu_signsel counts where it is. */
static int pg_emu_signsel;
static inline uint32_t pg_perm(uint32_t x, uint32_t y, uint32_t s)
{
    if (s & 0x8888u) pg_emu_signsel++;
    const uint64_t v = (uint64_t)y << 32 | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) r |= (uint32_t)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
static inline uint32_t pg_popc(uint32_t x) { return (uint32_t)__builtin_popcount(x); }
/* __funnelshift_r: the low 32 bits of hi:lo shifted right by s & 31;
 * __funnelshift_rc: by min(s, 32). */
static inline uint32_t pg_fshr(uint32_t lo, uint32_t hi, uint32_t s)
{
    return (uint32_t)((((uint64_t)hi << 32) | lo) >> (s & 31));
}
static inline uint32_t pg_fshrc(uint32_t lo, uint32_t hi, uint32_t s)
{
    return (uint32_t)((((uint64_t)hi << 32) | lo) >> (s < 32 ? s : 32));
}
/* The replay's memory: loads and stores as the device does them, each
 * counted in pg_emu_misaligned when its address is not a multiple of its
 * width (the replay keeps buffers at the device's alignment: the packed
 * tensor and tiles 16-byte aligned), and in pg_emu_oob when it leaves
 * [pg_emu_lo, pg_emu_hi) (the packed tensor, its reads). */
static int pg_emu_misaligned, pg_emu_oob;
static const uint8_t *pg_emu_lo, *pg_emu_hi;
static inline uint64_t pg_emu_ld(const void *p, int bytes)
{
    const uint8_t *q = (const uint8_t *)p;
    if ((uintptr_t)q % (uintptr_t)bytes) pg_emu_misaligned++;
    if (pg_emu_lo && (q < pg_emu_lo || q + bytes > pg_emu_hi)) {
        pg_emu_oob++;
        return 0;
    }
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; k--) v = (v << 8) | q[k];
    return v;
}
#define pg_ld8(p) ((uint32_t)pg_emu_ld((p), 1))
#define pg_ld16(p) ((uint32_t)pg_emu_ld((p), 2))
#define pg_ld32(p) ((uint32_t)pg_emu_ld((p), 4))
#define pg_ld64(p) pg_emu_ld((p), 8)
#define PG_LD2x32(p, a, b)                                                                                           \
    do {                                                                                                             \
        const uint64_t pg_v_ = pg_emu_ld((p), 8);                                                                    \
        (a) = (uint32_t)pg_v_, (b) = (uint32_t)(pg_v_ >> 32);                                                        \
    } while (0)
static inline void pg_st128(void *p, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    if ((uintptr_t)p % 16) pg_emu_misaligned++;
    const uint32_t w[4] = {a, b, c, d};
    memcpy(p, w, 16);
}
/* f16 bits → f32 bits: the CPU engine's conversion (exact, as the device's) */
static inline uint32_t pg_f16_f32(uint32_t h)
{
    const float f = lrun_f16_to_f32((uint16_t)h);
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
#endif

/* One packed tensor as the kernels read it: section offsets from its first
 * byte (bytes), the codebooks as words (byte k = code k; kernel parameters
 * indexed dynamically would go through local memory). */
typedef struct pg_tensor {
    const uint8_t *in;                           /* the packed tensor (16-byte aligned) */
    uint64_t n;                                  /* elements, a multiple of 8 */
    uint64_t total;                              /* bytes of the packed tensor */
    uint64_t rest, hi, code1, table, code2, esc; /* section offsets, bytes */
    uint32_t book1;                              /* tier-1 exponents in bytes 0..2, byte 3 zero */
    uint32_t book2lo, book2hi;                   /* tier-2 exponents in bytes 0..6, byte 7 zero */
    int c1_a2;                                   /* 1: in + code1 is 2-byte aligned (16-bit loads of codes) */
    int tab_a8;                                  /* 1: in + table is 8-byte aligned (64-bit loads of the table) */
} pg_tensor;

/* Host side: the kernels' view of a validated packed tensor at packed. */
static inline pg_tensor pg_tensor_of(const void *packed, const lrun_packed_layout *lay)
{
    pg_tensor t;
    memset(&t, 0, sizeof t);
    t.in = (const uint8_t *)packed;
    t.n = lay->n, t.total = lay->total;
    t.rest = lay->rest, t.hi = lay->hi, t.code1 = lay->code1, t.table = lay->table, t.code2 = lay->code2,
    t.esc = lay->esc;
    for (int k = 0; k < LRUN_PACKED_N1; k++) t.book1 |= (uint32_t)lay->book1[k] << (8 * k);
    for (int k = 0; k < LRUN_PACKED_N2; k++) {
        if (k < 4) t.book2lo |= (uint32_t)lay->book2[k] << (8 * k);
        else t.book2hi |= (uint32_t)lay->book2[k] << (8 * (k - 4));
    }
    t.c1_a2 = ((uintptr_t)packed + lay->code1) % 2 == 0;
    t.tab_a8 = ((uintptr_t)packed + lay->table) % 8 == 0;
    return t;
}

/* What a lane holds of its 32 elements of a codec block (4 groups of 8). */
typedef struct pg_lane {
    uint32_t c1[4];    /* tier-1 codes of group g, 16 bits (0 past e1: no escapes) */
    uint32_t r[4][2];  /* kept bytes of group g: elements 0..3, 4..7 */
    uint32_t hb[4];    /* f16: 24 hi bits of group g */
} pg_lane;

/* Where a codec block's variable streams are and what the warp stages. */
typedef struct pg_streams {
    uint64_t c2w;  /* byte offset in the tensor of the 4-byte word holding its first tier-2 code byte */
    uint32_t sh;   /* bits of that word before the block's codes (0, 8, 16, 24) */
    uint32_t nw;   /* words staged from the tensor (those holding any of its code bytes) */
    uint32_t len3; /* tier-3 bytes staged (at most PG_STAGE3) */
    uint64_t esc;  /* byte offset in the tensor of the block's tier-3 bytes */
} pg_streams;

/* A little-endian u64 of the block table (8-byte aligned, or read by bytes). */
PG_FN uint64_t pg_table64(const uint8_t *p, int a8)
{
    PG_ASSUME(a8);
    if (a8) return pg_ld64(p);
    uint64_t v = 0;
    PG_UNROLL for (int k = 7; k >= 0; k--) v = (v << 8) | pg_ld8(p + k);
    return v;
}

/* Elements [e0, e1) relative to codec block cb's first, clamped to the
 * block: [lo, hi) within 0 .. PG_BLOCK. Lane offsets within a block are
 * 32-bit (a lane's 64-bit element index would cost a carry chain per
 * address); only the block's bases are 64-bit. */
typedef struct pg_span {
    uint32_t lo, hi; /* wanted elements of the block, offsets from its first */
    int64_t doff;    /* dst index of the block's first element: cb * PG_BLOCK - e0 */
} pg_span;

PG_FN pg_span pg_span_of(uint64_t cb, uint64_t e0, uint64_t e1)
{
    const uint64_t cbe = cb * PG_BLOCK;
    pg_span sp;
    sp.lo = e0 <= cbe ? 0u : (e0 - cbe < PG_BLOCK ? (uint32_t)(e0 - cbe) : (uint32_t)PG_BLOCK);
    sp.hi = e1 <= cbe ? 0u : (e1 - cbe < PG_BLOCK ? (uint32_t)(e1 - cbe) : (uint32_t)PG_BLOCK);
    sp.doff = (int64_t)cbe - (int64_t)e0;
    return sp;
}

/* The loads of lane `lane` for codec block cb, elements [e0, e1) wanted
 * (multiples of 8 within the tensor): codes up to e1 (those before e0 place
 * the tier-2 and tier-3 entries of the rest; none after e1 does), kept bytes
 * and hi bits in [e0, e1). A lane's 8 elements are all in or all out. */
PG_FN void pg_lane_load(pg_lane *L, const pg_tensor *t, uint64_t cb, uint64_t e0, uint64_t e1, unsigned lane,
                        int bf16)
{
    const pg_span sp = pg_span_of(cb, e0, e1);
    const uint64_t cbe = cb * PG_BLOCK;
    const uint8_t *c1 = t->in + t->code1 + cbe / 4; /* 2 bits an element: a block's codes start on a byte */
    const uint8_t *rp = t->in + t->rest + cbe, *hp = t->in + t->hi + cbe / 8 * 3;
    PG_ASSUME(t->c1_a2);
    PG_UNROLL for (int g = 0; g < 4; g++)
    {
        const uint32_t o = 256u * (uint32_t)g + 8u * lane;
        PG_ASSUME(o >= sp.lo && o < sp.hi);
        L->c1[g] = 0, L->hb[g] = 0, L->r[g][0] = 0, L->r[g][1] = 0;
        if (o < sp.hi) {
            const uint8_t *q = c1 + o / 4; /* o / 4 is even */
            L->c1[g] = t->c1_a2 ? pg_ld16(q) : pg_ld8(q) | (pg_ld8(q + 1) << 8);
        }
        if (o >= sp.lo && o < sp.hi) {
            PG_LD2x32(rp + o, L->r[g][0], L->r[g][1]); /* rest is at 32: 8-byte aligned */
            if (!bf16) {
                const uint8_t *h = hp + o / 8 * 3; /* 24 bits, starting on a byte */
                L->hb[g] = pg_ld8(h) | (pg_ld8(h + 1) << 8) | (pg_ld8(h + 2) << 16);
            }
        }
    }
}

/* Tier-1 escapes (code 3) among the 8 codes of c1: bit 2j set for element j. */
PG_FN uint32_t pg_esc_mask(uint32_t c1) { return c1 & (c1 >> 1) & 0x5555u; }

/* Field g (16 bits) of the result: the lane's tier-1 escapes in group g. */
PG_FN uint64_t pg_lane_escapes(const pg_lane *L)
{
    uint64_t cnt = 0;
    PG_UNROLL for (int g = 0; g < 4; g++) cnt |= (uint64_t)pg_popc(pg_esc_mask(L->c1[g])) << (16 * g);
    return cnt;
}

/* The counters of groups before g added to field g: the block-wide prefix of
 * a group-wise exclusive scan ex whose group totals are tot. */
PG_FN uint64_t pg_group_prefix(uint64_t ex, uint64_t tot)
{
    /* in 32-bit halves (no field reaches 16 bits, so no carry crosses bit
     * 32): groups 0, 1 get 0 and tot0; groups 2, 3 get tot0 + tot1, and
     * tot2 more */
    const uint32_t t = (uint32_t)tot, t01 = (t & 0xffffu) + (t >> 16);
    const uint32_t lo = (uint32_t)ex + (t << 16), hi = (uint32_t)(ex >> 32) + t01 * 0x10001u + ((uint32_t)(tot >> 32) << 16);
    return (uint64_t)hi << 32 | lo;
}

/* Codec block cb's streams from its and the next block's table entries. */
PG_FN pg_streams pg_block_streams(const pg_tensor *t, uint64_t cb)
{
    const uint8_t *tb = t->in + t->table + 16 * cb;
    const uint64_t o2 = pg_table64(tb, t->tab_a8), o3 = pg_table64(tb + 8, t->tab_a8);
    const uint64_t o2n = pg_table64(tb + 16, t->tab_a8), o3n = pg_table64(tb + 24, t->tab_a8);
    /* differences of the low words: a valid block has at most 384 tier-2
     * bytes and 1024 tier-3 bytes (the kernels trust the validated layout) */
    const uint32_t d2 = (uint32_t)o2n - (uint32_t)o2, d3 = (uint32_t)o3n - (uint32_t)o3;
    const uint32_t len2 = d2 < 384u ? d2 : 384u;
    const uint64_t a = t->code2 + o2; /* its first code byte */
    pg_streams s;
    s.c2w = a & ~(uint64_t)3;
    s.sh = ((uint32_t)a & 3u) * 8u;
    s.nw = len2 ? (((uint32_t)a & 3u) + len2 + 3u) / 4u : 0u; /* words from a's to the last code byte's */
    s.len3 = d3 < PG_STAGE3 ? d3 : PG_STAGE3;
    s.esc = t->esc + o3;
    return s;
}

/* Lane `lane`'s share of staging: the words holding the block's tier-2
 * code bytes (aligned 4-byte loads; the last one by bytes where it would
 * reach past the tensor), then two zero words (a lane reads the word after
 * the one its codes start in), then its first tier-3 bytes. stage: the
 * warp's PG_STAGE bytes, 16-byte aligned. */
PG_FN void pg_stage_fill(uint8_t *stage, const pg_tensor *t, const pg_streams *s, unsigned lane)
{
    uint32_t *w = (uint32_t *)stage;
    PG_ASSUME(s->len3 <= 32);
    const uint8_t *src = t->in + s->c2w, *src3 = t->in + s->esc;
    /* bytes of the tensor from src on, as far as the words can reach (32-bit) */
    const uint64_t rem = t->total - s->c2w;
    const uint32_t rem32 = rem < 4u * (PG_STAGE2 / 4) ? (uint32_t)rem : 4u * (PG_STAGE2 / 4);
    /* the first 32 words in one pass of every lane (words past nw + 2 are
     * zeros no lane reads: a typical block's codes take about 20 words),
     * then the rest of a long block's */
    for (uint32_t j = lane; j < 32 || j < s->nw + 2; j += 32) {
        uint32_t v = 0;
        if (j < s->nw) {
            PG_ASSUME(4 * j + 4 <= rem32);
            if (4 * j + 4 <= rem32) v = pg_ld32(src + 4 * j);
            else
                for (uint32_t k = 0; 4 * j + k < rem32; k++) v |= pg_ld8(src + 4 * j + k) << (8 * k);
        }
        w[j] = v;
        PG_ASSUME(s->nw + 2 <= 32);
    }
    for (uint32_t j = lane; j < s->len3; j += 32) stage[PG_STAGE2 + j] = (uint8_t)pg_ld8(src3 + j);
}

/* The tier-2 codes of a lane's group: ng codes (ng <= 8) from code p of the
 * block, i.e. bit sh + 3p of the staged words (LSB first), 3 bits each; 0
 * past them. */
PG_FN uint32_t pg_tier2(const uint32_t *w, uint32_t sh, uint32_t p, uint32_t ng)
{
    const uint32_t bit = sh + 3 * p, v = pg_fshr(w[bit >> 5], w[(bit >> 5) + 1], bit & 31);
    return v & ((1u << (3 * ng)) - 1);
}

/* Bit 3i set where the 3-bit code i of v is 7 (a tier-2 escape). */
PG_FN uint32_t pg_sevens(uint32_t v) { return v & (v >> 1) & (v >> 2) & 0x00249249u; }

/* The lane's tier-2 codes per group (v2) from the stage, and field g of the
 * result: how many of them are tier-2 escapes. p2: the lane's first tier-2
 * code per group (pg_group_prefix of the escape scan), cnt its escapes. */
PG_FN uint64_t pg_lane_tier2(uint32_t *v2, const uint32_t *stage_words, uint32_t sh, uint64_t p2, uint64_t cnt)
{
    uint64_t cnt3 = 0;
    PG_UNROLL for (int g = 0; g < 4; g++)
    {
        v2[g] = pg_tier2(stage_words, sh, (uint32_t)(p2 >> (16 * g)) & 0xffffu, (uint32_t)(cnt >> (16 * g)) & 0xffffu);
        cnt3 |= (uint64_t)pg_popc(pg_sevens(v2[g])) << (16 * g);
    }
    return cnt3;
}

/* x + (x & m) * k: the bits of m moved up by log2(k + 1) (an IMAD, which
 * runs on the FMA pipe, not the integer one) where they land on zeros. */
#define PG_MOVE(x, m, k) ((x) + ((x) & (m)) * (k))

/* The 8 2-bit codes of c1 spread to the 8 nibbles of a byte-permute
 * selector: nibble j = code j. */
PG_FN uint32_t pg_spread(uint32_t c1)
{
    uint32_t s = c1 & 0xffffu;
    s = PG_MOVE(s, 0x0000ff00u, 0xffu); /* byte 1 to byte 2 */
    s = PG_MOVE(s, 0x00f000f0u, 0xfu);  /* bits 4..7 of each half to 8..11 */
    return PG_MOVE(s, 0x0c0c0c0cu, 3u); /* bits 2..3 of each byte to 4..5 */
}

/* The 8 3-bit codes of v (24 bits) spread to nibbles: nibble i = code i. */
PG_FN uint32_t pg_spread3(uint32_t v)
{
    uint32_t s = PG_MOVE(v, 0x00fff000u, 0xfu); /* codes 4..7 to bits 16..27 */
    s = PG_MOVE(s, 0x0fc00fc0u, 3u);            /* codes 2, 3 of each half to bits 8..13 */
    return PG_MOVE(s, 0x38383838u, 1u);         /* odd codes of each byte to bits 4..6 */
}

/* The block's tier-3 byte i: staged, or past the stage from the tensor (a
 * function, not a macro: its argument is evaluated once). */
PG_FN uint32_t pg_esc_byte(const uint8_t *stage, const pg_tensor *t, const pg_streams *s, uint32_t i)
{
    return i < s->len3 ? (uint32_t)stage[PG_STAGE2 + i] : pg_ld8(t->in + s->esc + i);
}

/* The exponents of a group's 8 elements, bytes of e[0] (elements 0..3) and
 * e[1] (4..7). Tier 1 by two permutes of the codebook; escapes at once: the
 * lane's compacted tier-2 exponents (c2: byte i = exponent of its i-th
 * escape) come from two permutes of the tier-2 codebook; a multiply gives,
 * for all 8 elements, the count of escapes before each (nibble j of x), and
 * a permute of c2 by those counts puts each element's escape exponent in its
 * byte (ec: meaningful where the element escapes); a last permute per 4
 * elements takes byte j of the tier-1 word or, where element j escapes
 * (selector nibble j + 4), byte j of ec. v2: the group's tier-2 codes; p3:
 * its first tier-3 byte. */
PG_FN void pg_exponents(uint32_t *e, uint32_t c1, uint32_t v2, uint32_t p3, const pg_tensor *t, const uint8_t *stage,
                        const pg_streams *s)
{
    const uint32_t sel = pg_spread(c1);
    const uint32_t e1lo = pg_perm(t->book1, 0, sel), e1hi = pg_perm(t->book1, 0, sel >> 16);
    const uint32_t f = sel & (sel >> 1) & 0x11111111u; /* nibble j: 1 where element j escapes */
    const uint32_t x = f * 0x11111110u;                  /* nibble j: escapes before element j (<= 7) */
    const uint32_t pick = f * 4u + 0x32103210u;          /* nibble j: j & 3, + 4 where element j escapes */
    const uint32_t s2 = pg_spread3(v2);
    uint32_t c2lo = pg_perm(t->book2lo, t->book2hi, s2), c2hi = pg_perm(t->book2lo, t->book2hi, s2 >> 16);
    const uint32_t m7 = pg_sevens(v2);
    PG_ASSUME(m7 == 0);
    if (m7) { /* tier-2 escapes (code 7 picked byte 7, a zero): their bytes in order (rare) */
        uint64_t c2 = (uint64_t)c2hi << 32 | c2lo;
        uint32_t q = p3;
        PG_UNROLL for (int i = 0; i < 8; i++)
        {
            if (m7 & (1u << (3 * i))) c2 |= (uint64_t)pg_esc_byte(stage, t, s, q++) << (8 * i);
        }
        c2lo = (uint32_t)c2, c2hi = (uint32_t)(c2 >> 32);
    }
    e[0] = pg_perm(e1lo, pg_perm(c2lo, c2hi, x), pick);
    e[1] = pg_perm(e1hi, pg_perm(c2lo, c2hi, x >> 16), pick >> 16);
}

/* f16 bits of an element: kept byte r (mantissa & 0xff), exponent e, 3 hi bits h (sign << 2 | mantissa >> 8). */
PG_FN uint32_t pg_f16(uint32_t r, uint32_t e, uint32_t h) { return ((h & 4u) << 13) | (e << 10) | ((h & 3u) << 8) | r; }

/* The 8 decoded 16-bit values as 4 words (element 2i in the low half of
 * out[i]) from the kept bytes r and exponents e (element j: byte j & 3 of
 * r[j >> 2], e[j >> 2]); f16 also from the 24 hi bits hb. bf16: low byte
 * mantissa | exponent bit 0 << 7, high byte exponent >> 1 | sign << 7,
 * computed four elements a word, then interleaved. */
PG_FN void pg_assemble(uint32_t *out, int bf16, const uint32_t *r, const uint32_t *e, uint32_t hb)
{
    if (bf16) {
        PG_UNROLL for (int w = 0; w < 2; w++)
        {
            const uint32_t lo = (r[w] & 0x7f7f7f7fu) | ((e[w] * 128u) & 0x80808080u);
            const uint32_t hi = (r[w] & 0x80808080u) | ((e[w] >> 1) & 0x7f7f7f7fu);
            out[2 * w] = pg_perm(lo, hi, 0x5140u), out[2 * w + 1] = pg_perm(lo, hi, 0x7362u);
        }
        return;
    }
    PG_UNROLL for (int i = 0; i < 4; i++)
    {
        const int j = 2 * i, w = j >> 2, b = 8 * (j & 3);
        const uint32_t lo = pg_f16((r[w] >> b) & 0xffu, (e[w] >> b) & 0xffu, (hb >> (3 * j)) & 7u);
        const uint32_t hi = pg_f16((r[w] >> (b + 8)) & 0xffu, (e[w] >> (b + 8)) & 0xffu, (hb >> (3 * j + 3)) & 7u);
        out[i] = lo | (hi << 16);
    }
}

/* The lane's values in [e0, e1) of codec block cb to dst[element - e0]
 * (dst 16-byte aligned): one 16-byte store per group. p3: the lane's first
 * tier-3 byte per group (pg_group_prefix of the second scan). */
PG_FN void pg_lane_emit(const pg_lane *L, const uint32_t *v2, uint64_t p3, const pg_tensor *t, const uint8_t *stage,
                        const pg_streams *s, uint64_t cb, uint64_t e0, uint64_t e1, unsigned lane, int bf16,
                        uint16_t *dst)
{
    const pg_span sp = pg_span_of(cb, e0, e1);
    PG_UNROLL for (int g = 0; g < 4; g++)
    {
        const uint32_t o = 256u * (uint32_t)g + 8u * lane;
        if (o < sp.lo || o >= sp.hi) continue;
        uint32_t ex[2], out[4];
        pg_exponents(ex, L->c1[g], v2[g], (uint32_t)(p3 >> (16 * g)) & 0xffffu, t, stage, s);
        pg_assemble(out, bf16, L->r[g], ex, L->hb[g]);
        pg_st128(dst + (sp.doff + (int64_t)o), out[0], out[1], out[2], out[3]);
    }
}

// ---------------------------------------------------------------- the embedding gather (f32 rows)

/* The 8 values of out (pg_assemble's words) as f32 bits, f[j] = value j:
 * bf16 is the top half of a float, f16 through pg_f16_f32; exactly the
 * conversion lrun_k_embed applies to a plain table's values. */
PG_FN void pg_widen(uint32_t *f, const uint32_t *out, int bf16)
{
    PG_UNROLL for (int i = 0; i < 4; i++)
    {
        if (bf16) f[2 * i] = out[i] << 16, f[2 * i + 1] = out[i] & 0xffff0000u;
        else f[2 * i] = pg_f16_f32(out[i] & 0xffffu), f[2 * i + 1] = pg_f16_f32(out[i] >> 16);
    }
}

/* As pg_lane_emit, but the values as f32 to dst[element - e0] (dst 16-byte
 * aligned; element - e0 is a multiple of 8): two 16-byte stores per group. */
PG_FN void pg_lane_emit_f32(const pg_lane *L, const uint32_t *v2, uint64_t p3, const pg_tensor *t,
                            const uint8_t *stage, const pg_streams *s, uint64_t cb, uint64_t e0, uint64_t e1,
                            unsigned lane, int bf16, float *dst)
{
    const pg_span sp = pg_span_of(cb, e0, e1);
    PG_UNROLL for (int g = 0; g < 4; g++)
    {
        const uint32_t o = 256u * (uint32_t)g + 8u * lane;
        if (o < sp.lo || o >= sp.hi) continue;
        uint32_t ex[2], out[4], f[8];
        pg_exponents(ex, L->c1[g], v2[g], (uint32_t)(p3 >> (16 * g)) & 0xffffu, t, stage, s);
        pg_assemble(out, bf16, L->r[g], ex, L->hb[g]);
        pg_widen(f, out, bf16);
        pg_st128(dst + (sp.doff + (int64_t)o), f[0], f[1], f[2], f[3]);
        pg_st128(dst + (sp.doff + (int64_t)o) + 4, f[4], f[5], f[6], f[7]);
    }
}

/* Host side: warps per token of the gather, the most codec blocks a row of k
 * elements (k a multiple of 8) can touch: rows start at multiples of
 * gcd(k, PG_BLOCK) within a block, so at most PG_BLOCK - gcd into one. */
static inline int pg_embed_warps(int64_t k)
{
    int64_t g = PG_BLOCK;
    while (k % g) g /= 2; /* PG_BLOCK is a power of two */
    return (int)((PG_BLOCK - g + k - 1) / PG_BLOCK + 1);
}

/* What warp j (0 .. nw - 1) of a token does: decode codec block cb of the
 * table for the row's elements [e0, e1) (live), or nothing (the row ends
 * before its block), or, for an id outside [0, rows) (valid 0: a token the
 * host failed to check), write its share of a row of zeros (pg_lane_zero_f32),
 * as lrun_k_embed gives for a negative id. */
typedef struct pg_embed_job {
    int valid, live;
    uint64_t cb, e0, e1;
} pg_embed_job;

PG_FN pg_embed_job pg_embed_job_of(int32_t id, int j, int64_t rows, int64_t k)
{
    pg_embed_job J;
    J.valid = id >= 0 && (int64_t)id < rows;
    J.e0 = J.valid ? (uint64_t)id * (uint64_t)k : 0;
    J.e1 = J.e0 + (uint64_t)k;
    J.cb = J.e0 / PG_BLOCK + (uint64_t)j;
    J.live = J.valid && J.cb * PG_BLOCK < J.e1;
    return J;
}

/* An invalid id's row: warp j's lanes zero elements j*PG_BLOCK + 256g + 8l .. +7 below k. */
PG_FN void pg_lane_zero_f32(float *row, int j, int64_t k, unsigned lane)
{
    PG_UNROLL for (int g = 0; g < 4; g++)
    {
        const int64_t e = (int64_t)j * PG_BLOCK + 256 * g + 8 * lane;
        if (e >= k) continue;
        pg_st128(row + e, 0, 0, 0, 0);
        pg_st128(row + e + 4, 0, 0, 0, 0);
    }
}

/* The fused GEMV's CUDA block b: which weight (part p), its rows row0 ..
 * row0 + live - 1 (live <= rh: rows per segment), their elements [e0, e1)
 * and the codec blocks cb0 .. cb0 + nc - 1 covering them. b0: the parts'
 * first blocks (pg_parts.b0), n: their rows. */
typedef struct pg_rows {
    int p;
    int64_t row0, live;
    uint64_t e0, e1, cb0;
    int64_t nc;
} pg_rows;

PG_FN pg_rows pg_block_rows(const int64_t *b0, const int64_t *n, int64_t b, int64_t k, int rh)
{
    pg_rows r;
    r.p = (b >= b0[1]) + (b >= b0[2]);
    const int64_t rows = r.p == 0 ? n[0] : (r.p == 1 ? n[1] : n[2]);
    r.row0 = (b - (r.p == 0 ? b0[0] : (r.p == 1 ? b0[1] : b0[2]))) * rh;
    r.live = rows - r.row0 < rh ? rows - r.row0 : rh;
    r.e0 = (uint64_t)(r.row0 * k), r.e1 = (uint64_t)((r.row0 + r.live) * k);
    r.cb0 = r.e0 / PG_BLOCK;
    r.nc = (int64_t)((r.e1 - 1) / PG_BLOCK - r.cb0 + 1);
    return r;
}

/* Host side: rows per block of the fused GEMV, a power of two up to
 * PG_MAX_RB whose tile is about PG_TILE elements (fewer codec blocks shared
 * with the next block's rows the larger it is); at least 2 for a gate/up
 * pair (sw), whose blocks own rb / 2 rows of each. */
static inline int pg_rows_per_block(int64_t k, int sw)
{
    int rb = 1;
    while (rb < PG_MAX_RB && 2 * rb * k <= PG_TILE) rb *= 2;
    return sw && rb < 2 ? 2 : rb;
}

/* Host side: the grid of the fused GEMV: b0[p] the first block of part p
 * (b0[3] entries past the parts: the total), rows_out rows of each part a
 * block; a gate/up pair (sw) is one part's blocks. Returns the blocks. */
static inline int64_t pg_grid(int64_t *b0, const int64_t *n, int n_parts, int rows_out, int sw)
{
    const int grid_parts = sw ? 1 : n_parts; /* up shares gate's blocks */
    int64_t b = 0;
    for (int p = 0; p < 4; p++) {
        b0[p] = b;
        if (p < grid_parts) b += (n[p] + rows_out - 1) / rows_out;
    }
    return b;
}

#endif
