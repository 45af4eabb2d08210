/* packed_pex2_lane.h — what one lane does to decode its part of a PEX2
 * codec block (runtime/packed/codec_pex2.h), shared by the CUDA kernels
 * (packed_pex2.cu) and a host replay of them (tests/c/test_packed_pex2_emu.c).
 * Ported from the prototype that was measured bit-exact on an H100
 * (tests/bench/codec2_lane.h, A = 8 only: PEX2 is its "pfor-2p").
 *
 * A warp decodes one codec block of 1024 elements as 4 groups of 256; lane l
 * of group g owns elements 256g + 8l .. +7: their 24 code bits (two aligned
 * words and a funnel shift), 8 kept bytes (one 8-byte load), four byte
 * permutes into the codebook, as if every element were ordinary. Then the
 * warp patches the block's exceptions (lane j takes exception j of a pass of
 * 32): its position, its code, book2[code] or, for code 7, the next far byte
 * of the block (the far ones before it counted by a ballot, the kernel's own).
 *
 * The loads stay inside a validated tensor (lrun_pex2_validate): a lane is
 * decoded only when its first element is below n (n a multiple of 8, so all
 * 8 are); its second code word lies in the 8 zero bytes after the codes; a
 * block's table entry, the next one's and their superblocks' exist (entry
 * nb holds the totals, and has a superblock);
 * exception j < count lies in the exc stream, its far byte in the far stream
 * (the block's code-7 count is the table's far count, checked at load). */
#ifndef LRUN_KERNELS_PACKED_PEX2_LANE_H
#define LRUN_KERNELS_PACKED_PEX2_LANE_H

#include "packed/codec.h"

#include <stdint.h>
#include <string.h>

#define PX_BLOCK 1024     /* LRUN_PEX2_BLOCK: elements of a codec block, a warp's unit */
#define PX_GROUP 256      /* LRUN_PEX2_GROUP: 32 lanes of 8 */
#define PX_CODE_BLOCK 384 /* code bytes of a block (3 bits x 1024) */

/* PX_ASSUME(c): nothing, except in the instruction-count build
 * (tests/bench/packed_sass_count.sh defines PX_SASS_HOT), where it tells the
 * compiler the common case (every lane inside its rows, one patch pass, no
 * far exception) so that the decode of a codec block compiles to the
 * straight line whose SASS is counted. */
#if defined(PX_SASS_HOT) && defined(__CUDACC__)
#define PX_ASSUME(c) __builtin_assume(c)
#else
#define PX_ASSUME(c) ((void)0)
#endif

#ifdef __CUDACC__
#define PX_FN static __device__ __forceinline__
#define PX_UNROLL _Pragma("unroll")
/* prmt.b32 itself (see packed_gemv_lane.h's pg_perm: __byte_perm masks the selector) */
PX_FN uint32_t px_perm(uint32_t x, uint32_t y, uint32_t s)
{
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(x), "r"(y), "r"(s));
    return r;
}
#define px_fshr(lo, hi, s) __funnelshift_r((lo), (hi), (s))
#define px_ld8(p) ((uint32_t)__ldg((const unsigned char *)(p)))
#define px_ld32(p) ((uint32_t)__ldg((const unsigned int *)(p)))
#define px_ld64(p) ((uint64_t)__ldg((const unsigned long long *)(p)))
#define px_st128(p, a, b, c, d) (*(uint4 *)(p) = make_uint4((a), (b), (c), (d)))
#define px_f32(u) __uint_as_float(u)
#define px_u32(f) __float_as_uint(f)
#else
#define PX_FN static inline
#define PX_UNROLL
/* The host replay's device operations: prmt.b32 (byte i of the result is
 * byte (s >> 4i) & 7 of y:x; a set bit 3, sign replication on the device,
 * is counted, never wanted) and loads as the device does them, counted when
 * misaligned for their width or outside [px_emu_lo, px_emu_hi). */
static int px_emu_signsel, px_emu_misaligned, px_emu_oob;
static const uint8_t *px_emu_lo, *px_emu_hi;
static inline uint32_t px_perm(uint32_t x, uint32_t y, uint32_t s)
{
    if (s & 0x8888u) px_emu_signsel++;
    const uint64_t v = (uint64_t)y << 32 | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) r |= (uint32_t)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
static inline uint32_t px_fshr(uint32_t lo, uint32_t hi, uint32_t s)
{
    return (uint32_t)((((uint64_t)hi << 32) | lo) >> (s & 31));
}
static inline uint64_t px_emu_ld(const void *p, int bytes)
{
    const uint8_t *q = (const uint8_t *)p;
    if ((uintptr_t)q % (uintptr_t)bytes) px_emu_misaligned++;
    if (px_emu_lo && (q < px_emu_lo || q + bytes > px_emu_hi)) {
        px_emu_oob++;
        return 0;
    }
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; k--) v = (v << 8) | q[k];
    return v;
}
#define px_ld8(p) ((uint32_t)px_emu_ld((p), 1))
#define px_ld32(p) ((uint32_t)px_emu_ld((p), 4))
#define px_ld64(p) px_emu_ld((p), 8)
/* a 16-byte store of four words, counted when misaligned */
static inline void px_st128(void *p, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    if ((uintptr_t)p % 16) px_emu_misaligned++;
    const uint32_t w[4] = {a, b, c, d};
    memcpy(p, w, 16);
}
static inline float px_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t px_u32(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
#endif

/* ---------------------------------------------------------------- the tensor as the kernels read it */

/* A validated PEX2 tensor: section offsets from its first byte (bytes) and
 * the codebooks as byte-permute tables (kernel parameters, never indexed). */
typedef struct px_tensor {
    const uint8_t *in;          /* the packed tensor, 16-byte aligned */
    uint64_t n;                 /* elements, a multiple of 8 */
    uint64_t rest, code, table; /* section offsets */
    uint64_t super, exc, far;   /* section offsets */
    uint32_t h1lo, h1hi;        /* book1[i] >> 1, codes 0-3 and 4-7: a value's high byte less its sign */
    uint32_t l1lo, l1hi;        /* (book1[i] & 1) << 7: the exponent's bit in the low byte */
    uint32_t b2lo, b2hi;        /* book2[0..7] (book2[7] = 0: code 7 is far) */
} px_tensor;

/* Host side: the kernels' view of a validated PEX2 tensor at packed. */
static inline px_tensor px_tensor_of(const void *packed, const lrun_packed_layout *lay)
{
    const lrun_pex2_layout *L = &lay->pex2;
    px_tensor t;
    memset(&t, 0, sizeof t);
    t.in = (const uint8_t *)packed;
    t.n = L->n;
    t.rest = L->rest, t.code = L->code, t.table = L->table, t.super = L->super, t.exc = L->exc, t.far = L->far;
    uint32_t h1[2] = {0, 0}, l1[2] = {0, 0}, b2[2] = {0, 0};
    for (int i = 0; i < LRUN_PEX2_CODES; i++) {
        h1[i / 4] |= (uint32_t)(L->book1[i] >> 1) << (8 * (i % 4));
        l1[i / 4] |= (uint32_t)((L->book1[i] & 1) << 7) << (8 * (i % 4));
        b2[i / 4] |= (uint32_t)L->book2[i] << (8 * (i % 4));
    }
    t.h1lo = h1[0], t.h1hi = h1[1], t.l1lo = l1[0], t.l1hi = l1[1], t.b2lo = b2[0], t.b2hi = b2[1];
    return t;
}

/* ---------------------------------------------------------------- the lane's decode */

/* Eight 3-bit fields (the low 24 bits of x) into the low 3 bits of eight
 * nibbles: field i moves up by i bits in three masked multiply-adds
 * (fields 4-7 by 4, then {2,3,6,7} by 2, then the odd ones by 1). */
PX_FN uint32_t px_spread3(uint32_t x)
{
    x &= 0x00ffffffu;
    x += (x & 0x00fff000u) * 15u;
    x += (x & 0x0fc00fc0u) * 3u;
    x += x & 0x38383838u;
    return x;
}

/* Four values from their kept bytes k (sign | mantissa) and the exponent
 * halves the codes picked (h: exponent >> 1, no bit 7; l: exponent bit 0 at
 * bit 7), interleaved into two words of two bf16 values each. */
PX_FN void px_assemble4(uint32_t k, uint32_t h, uint32_t l, uint32_t *w0, uint32_t *w1)
{
    const uint32_t hi = (k & 0x80808080u) | h;
    const uint32_t lo = (k & 0x7f7f7f7fu) | l;
    *w0 = px_perm(lo, hi, 0x5140u);
    *w1 = px_perm(lo, hi, 0x7362u);
}

/* Elements p .. p+7 of codec block b (p a multiple of 8, b·1024 + p + 8 <= n)
 * as they are when every exponent is book1[code]: w[0..3], two values a word. */
PX_FN void px_lane_decode(const px_tensor *t, uint64_t b, uint32_t p, uint32_t w[4])
{
    const uint32_t bit = 3u * p; /* within the block's 384 code bytes */
    const uint8_t *cw = t->in + t->code + PX_CODE_BLOCK * b + 4u * (bit >> 5);
    const uint32_t s = px_spread3(px_fshr(px_ld32(cw), px_ld32(cw + 4), bit & 31u)); /* nibble i: element i's code */
    const uint64_t kept = px_ld64(t->in + t->rest + PX_BLOCK * b + p);
    const uint32_t s4 = s >> 16;
    px_assemble4((uint32_t)kept, px_perm(t->h1lo, t->h1hi, s), px_perm(t->l1lo, t->l1hi, s), &w[0], &w[1]);
    px_assemble4((uint32_t)(kept >> 32), px_perm(t->h1lo, t->h1hi, s4), px_perm(t->l1lo, t->l1hi, s4), &w[2], &w[3]);
}

/* ---------------------------------------------------------------- the block's patch */

/* One codec block's exceptions, from its table entry, its superblock's and
 * the next entry. */
typedef struct px_block {
    uint32_t count;      /* exceptions of the block */
    uint32_t ends;       /* cumulative counts of groups 0, 1, 2: 10 bits each */
    const uint8_t *exc;  /* its first position byte */
    const uint8_t *far;  /* its first far byte */
    const uint8_t *code; /* its codes */
} px_block;

/* Five 32-bit loads, all independent and the same for every lane: the
 * entry's offsets (u16 exc, u16 far) and ends, its superblock's bases (exc,
 * far), and the next block's first: the next entry's offset from the same
 * bases, except where b + 1 starts a superblock, whose offsets are 0 there
 * and its first the next superblock's base (b is the warp's, so the choice
 * never diverges). 32-bit loads rather than two 64-bit ones: the pairs held
 * two more registers across the lane pass, and ptxas spilled 76 bytes in the
 * 40-register fused GEMV (px_gemv_tiles<1, 256, 0>, sm_90); with these it
 * spills nothing and uses the registers the 12-byte table's four loads did. */
PX_FN px_block px_block_at(const px_tensor *t, uint64_t b)
{
    const uint8_t *e = t->in + t->table + LRUN_PEX2_TABLE_ENTRY * b;
    const uint8_t *s = t->in + t->super + LRUN_PEX2_SUPER_ENTRY * (b / LRUN_PEX2_SUPER);
    const uint32_t offs = px_ld32(e), ends = px_ld32(e + 4), xb = px_ld32(s), fb = px_ld32(s + 4);
    const uint32_t next = (b + 1) % LRUN_PEX2_SUPER ? xb + (px_ld32(e + LRUN_PEX2_TABLE_ENTRY) & 0xffffu)
                                                    : px_ld32(s + LRUN_PEX2_SUPER_ENTRY);
    const uint32_t first = xb + (offs & 0xffffu);
    px_block r;
    r.count = next - first;
    r.ends = ends;
    r.exc = t->in + t->exc + first;
    r.far = t->in + t->far + fb + (offs >> 16);
    r.code = t->in + t->code + PX_CODE_BLOCK * b;
    return r;
}

/* Exception j of block B (j < count) as lane j mod 32 of a patch pass sees it. */
typedef struct px_exc {
    int act;       /* j < count */
    uint32_t pos;  /* its position in the block */
    uint32_t code; /* its code: 7 for a far one */
} px_exc;

PX_FN px_exc px_exc_load(const px_block *B, uint32_t j)
{
    px_exc x = {0, 0, 0};
    if (j < B->count) {
        const uint32_t g = (j >= (B->ends & 1023u)) + (j >= ((B->ends >> 10) & 1023u)) + (j >= (B->ends >> 20));
        x.act = 1;
        x.pos = g * PX_GROUP + px_ld8(B->exc + j);
        const uint32_t bit = 3u * x.pos;
        const uint8_t *cw = B->code + 4u * (bit >> 5);
        x.code = px_fshr(px_ld32(cw), px_ld32(cw + 4), bit & 31u) & 7u;
    }
    return x;
}

/* Its exponent: book2[code], or, for a far one, the block's far byte
 * far_index (the far exceptions before it in the block). */
PX_FN uint32_t px_exc_exp(const px_tensor *t, const px_block *B, const px_exc *x, uint32_t far_index)
{
    return x->code == 7u ? px_ld8(B->far + far_index) : px_perm(t->b2lo, t->b2hi, x->code) & 0xffu;
}

/* The bf16 value v with its exponent replaced by e. */
PX_FN uint32_t px_with_exp(uint32_t v, uint32_t e) { return (v & 0x807fu) | (e << 7); }

/* ---------------------------------------------------------------- a block's share of a destination */

/* Which of block b's elements go out: [plo, phi) of the block (phi <= the
 * elements the block has), for a destination holding elements [e0, e1) of
 * the tensor; doff: the destination index of the block's element 0. */
typedef struct px_span {
    int plo, phi;
    int64_t doff;
} px_span;

PX_FN px_span px_span_of(uint64_t b, uint64_t e0, uint64_t e1)
{
    const uint64_t s = b * PX_BLOCK, e = s + PX_BLOCK;
    px_span r;
    r.plo = e0 > s ? (int)(e0 - s) : 0;
    r.phi = (int)((e1 < e ? e1 : e) - s);
    r.doff = (int64_t)s - (int64_t)e0;
    return r;
}

/* ---------------------------------------------------------------- stores and patches */

/* Lane's 8 values w (the block's elements p .. p+7) to the destination d
 * (d[sp.doff + p]): one 16-byte store (two for f32) where all 8 belong to
 * it and a16 (the block's element 0 lands 16-byte aligned), else element
 * by element (a range that starts or ends inside a lane). */
PX_FN void px_store8_u16(uint16_t *d, const px_span *sp, int p, const uint32_t w[4], int a16)
{
    uint16_t *q = d + (sp->doff + p);
    if (a16 && p >= sp->plo && p + 8 <= sp->phi) {
        px_st128(q, w[0], w[1], w[2], w[3]);
        return;
    }
    PX_UNROLL for (int i = 0; i < 8; i++)
    {
        if (p + i >= sp->plo && p + i < sp->phi) q[i] = (uint16_t)(w[i / 2] >> (16 * (i & 1)));
    }
}

/* f32 rows (the embedding gather): a bf16 value is the top half of its
 * float, as lrun_k_embed widens it. */
PX_FN void px_store8_f32(float *d, const px_span *sp, int p, const uint32_t w[4], int a16)
{
    float *q = d + (sp->doff + p);
    uint32_t f[8];
    PX_UNROLL for (int i = 0; i < 4; i++) f[2 * i] = w[i] << 16, f[2 * i + 1] = w[i] & 0xffff0000u;
    if (a16 && p >= sp->plo && p + 8 <= sp->phi) {
        px_st128(q, f[0], f[1], f[2], f[3]);
        px_st128(q + 4, f[4], f[5], f[6], f[7]);
        return;
    }
    PX_UNROLL for (int i = 0; i < 8; i++)
    {
        if (p + i >= sp->plo && p + i < sp->phi) q[i] = px_f32(f[i]);
    }
}

PX_FN void px_patch_u16(uint16_t *v, uint32_t e) { *v = (uint16_t)px_with_exp(*v, e); }
PX_FN void px_patch_f32(float *v, uint32_t e) { *v = px_f32(px_with_exp(px_u32(*v) >> 16, e) << 16); }

/* Lane's share of the lanes' pass over block b: its 8 elements of each
 * group that has any in [plo, phi) (then inside the tensor: phi is at most
 * the block's elements), decoded as if ordinary and stored. */
PX_FN void px_lane_pass_u16(const px_tensor *t, uint64_t b, const px_span *sp, uint16_t *d, int a16, unsigned lane)
{
    PX_UNROLL for (int g = 0; g < 4; g++)
    {
        const int p = PX_GROUP * g + 8 * (int)lane;
        if (p + 8 > sp->plo && p < sp->phi) {
            uint32_t w[4];
            px_lane_decode(t, b, (uint32_t)p, w);
            px_store8_u16(d, sp, p, w, a16);
        }
    }
}

PX_FN void px_lane_pass_f32(const px_tensor *t, uint64_t b, const px_span *sp, float *d, int a16, unsigned lane)
{
    PX_UNROLL for (int g = 0; g < 4; g++)
    {
        const int p = PX_GROUP * g + 8 * (int)lane;
        if (p + 8 > sp->plo && p < sp->phi) {
            uint32_t w[4];
            px_lane_decode(t, b, (uint32_t)p, w);
            px_store8_f32(d, sp, p, w, a16);
        }
    }
}

/* ---------------------------------------------------------------- the fused GEMV's tile */

/* The fused GEMV's lane pass over codec block b, in two halves so that a
 * pipelined loop can issue the next block's loads between them: its rows
 * start and end on multiples of 8 (k is), so [plo, phi) holds whole lanes
 * and the tile is 16-byte aligned at every lane: no element stores, no span
 * arithmetic. The block's code and kept bytes are found once (64-bit), the
 * lane's 32-bit offset once, and the 4 groups sit at fixed distances from
 * it (96 code bytes, 256 kept bytes), so the lane's 12 loads are issued back
 * to back from two bases before any bit work (a group past [plo, phi)
 * loads nothing: the last block's may lie past the tensor). */
typedef struct px_tile_loads {
    uint32_t c0[4], c1[4]; /* group g's two code words */
    uint64_t kept[4];      /* group g's 8 kept bytes */
} px_tile_loads;

PX_FN void px_tile_load(const px_tensor *t, uint64_t b, int plo, int phi, unsigned lane, px_tile_loads *L)
{
    const uint32_t bit = 24u * lane; /* 3 bits x 8 elements; group g adds 768 bits: 24 whole words */
    const uint8_t *cw = t->in + t->code + PX_CODE_BLOCK * b + 4u * (bit >> 5);
    const uint8_t *kp = t->in + t->rest + PX_BLOCK * b + 8u * lane;
    PX_UNROLL for (int g = 0; g < 4; g++)
    {
        const int p = PX_GROUP * g + 8 * (int)lane;
        L->c0[g] = L->c1[g] = 0, L->kept[g] = 0;
        PX_ASSUME(p >= plo && p < phi);
        if (p < plo || p >= phi) continue; /* past the tensor's end, maybe: no load */
        L->c0[g] = px_ld32(cw + 96 * g), L->c1[g] = px_ld32(cw + 96 * g + 4);
        L->kept[g] = px_ld64(kp + PX_GROUP * g);
    }
}

/* The lane's 8 values of each group in [plo, phi) from its loads L, as if
 * ordinary, to bdst[p]: bdst is the tile's slot of the block's element 0
 * (before the tile when the block starts in the rows before; only [plo,
 * phi) is written). */
PX_FN void px_tile_store(const px_tensor *t, const px_tile_loads *L, int plo, int phi, uint16_t *bdst, unsigned lane)
{
    const uint32_t sh = (24u * lane) & 31u;
    PX_UNROLL for (int g = 0; g < 4; g++)
    {
        const int p = PX_GROUP * g + 8 * (int)lane;
        if (p < plo || p >= phi) continue;
        const uint32_t s = px_spread3(px_fshr(L->c0[g], L->c1[g], sh)), s4 = s >> 16;
        uint32_t w[4];
        px_assemble4((uint32_t)L->kept[g], px_perm(t->h1lo, t->h1hi, s), px_perm(t->l1lo, t->l1hi, s), &w[0], &w[1]);
        px_assemble4((uint32_t)(L->kept[g] >> 32), px_perm(t->h1lo, t->h1hi, s4), px_perm(t->l1lo, t->l1hi, s4),
                     &w[2], &w[3]);
        px_st128(bdst + p, w[0], w[1], w[2], w[3]);
    }
}

/* Both halves: the lane's pass over block b into the tile. */
PX_FN void px_lane_pass_tile(const px_tensor *t, uint64_t b, int plo, int phi, uint16_t *bdst, unsigned lane)
{
    px_tile_loads L;
    px_tile_load(t, b, plo, phi, lane, &L);
    px_tile_store(t, &L, plo, phi, bdst, lane);
}

#endif
