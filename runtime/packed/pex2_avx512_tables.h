/* pex2_avx512_tables.h — what PEX2's AVX-512 VBMI decoders share: the byte
 * tables, the codebooks as permute tables, a block's exceptions as masks and
 * one 64-element chunk's bytes, for the block decoder (codec_pex2_avx512.c)
 * and the product in registers (pex2_gemv_avx512.c). Include inside a region
 * compiled for avx512f, avx512bw and avx512vbmi (the files' target pragmas). */
#ifndef LRUN_PACKED_PEX2_AVX512_TABLES_H
#define LRUN_PACKED_PEX2_AVX512_TABLES_H

#include <immintrin.h>
#include <stdint.h>

#include "packed/codec_pex2.h"

/* Byte b of each index vector: spread takes lane b / 8's 3 code bytes low
 * in its qword; shift puts element j = b % 8's code from bit 3j; first and
 * second interleave the low (o) and high (h) bytes of elements 0..31 and
 * 32..63 into bf16 (byte 2i from o[i], 2i + 1 from h[i], index 64 + i). */
#define LANE3(l) 3 * (l), 3 * (l) + 1, 3 * (l) + 2, 3 * (l) + 2, 3 * (l) + 2, 3 * (l) + 2, 3 * (l) + 2, 3 * (l) + 2
static const uint8_t spread[64] = {LANE3(0), LANE3(1), LANE3(2), LANE3(3), LANE3(4), LANE3(5), LANE3(6), LANE3(7)};
#define SHIFTS 0, 3, 6, 9, 12, 15, 18, 21
static const uint8_t shift[64] = {SHIFTS, SHIFTS, SHIFTS, SHIFTS, SHIFTS, SHIFTS, SHIFTS, SHIFTS};
#define PAIR(i, h) (i), (h) + (i)
#define PAIRS8(i, h)                                                                                                 \
    PAIR(i, h), PAIR(i + 1, h), PAIR(i + 2, h), PAIR(i + 3, h), PAIR(i + 4, h), PAIR(i + 5, h), PAIR(i + 6, h),      \
        PAIR(i + 7, h)
static const uint8_t first[64] = {PAIRS8(0, 64), PAIRS8(8, 64), PAIRS8(16, 64), PAIRS8(24, 64)};
static const uint8_t second[64] = {PAIRS8(32, 64), PAIRS8(40, 64), PAIRS8(48, 64), PAIRS8(56, 64)};

/* A codebook's 8 exponents (byte c of book) as the two byte tables the
 * permutes read, repeated in every qword so that the bits above a code need
 * no mask: each exponent's high 7 bits (the bf16's high byte but the sign)
 * and its low bit at bit 7 (the low byte's top). */
static inline void book_tables(uint64_t book, __m512i *ehi, __m512i *elo)
{
    const __m512i table = _mm512_set1_epi64((long long)book);
    *ehi = _mm512_and_si512(_mm512_srli_epi16(table, 1), _mm512_set1_epi8(0x7f));
    *elo = _mm512_and_si512(_mm512_slli_epi16(table, 7), _mm512_set1_epi8((char)0x80));
}

/* A tensor's decode constants: its codebooks as permute tables, the index
 * vectors and the byte masks. */
typedef struct {
    __m512i ehi1, elo1, ehi2, elo2; /* book1's and book2's exponent bytes (book2[7] = 0: far ones come after) */
    __m512i spread, shift, sign, mant, seven;
} pex2_books;

static inline void pex2_books_init(pex2_books *k, const lrun_pex2_layout *lay)
{
    uint64_t b1book = 0, b2book = 0;
    for (int c = 0; c < 8; c++) {
        b1book |= (uint64_t)lay->book1[c] << (8 * c);
        b2book |= (uint64_t)lay->book2[c] << (8 * c);
    }
    book_tables(b1book, &k->ehi1, &k->elo1);
    book_tables(b2book, &k->ehi2, &k->elo2);
    k->spread = _mm512_loadu_si512(spread), k->shift = _mm512_loadu_si512(shift);
    k->sign = _mm512_set1_epi8((char)0x80), k->mant = _mm512_set1_epi8(0x7f), k->seven = _mm512_set1_epi8(7);
}

/* Block b's exceptions, a bit each in ex[g * 4 + c] (group g's chunk c of
 * 64), x0 its first exception: one loop over them all, each one's group
 * from the table's run ends without a branch (a loop per group mispredicts
 * its exit once a group). Returns the next block's first, so that a caller
 * walking blocks in order reads two table words a block (its ends, the
 * next first); its far bytes follow on too: the caller's far pointer,
 * advanced past each code 7 of every chunk, ends a block at the next one's. */
static inline uint32_t pex2_block_exceptions(const uint8_t *P, const lrun_pex2_layout *lay, uint64_t b, uint32_t x0,
                                             uint64_t ex[16])
{
    const uint32_t x1 = lrun_pex2_first_exc(P, lay, b + 1), ends = lrun_pex2_ends(P, lay, b), n = x1 - x0;
    const uint8_t *pos = P + lay->exc + x0;
    const uint32_t e0 = ends & 1023u, e1 = (ends >> 10) & 1023u, e2 = ends >> 20;
    for (int i = 0; i < 16; i++) ex[i] = 0;
    for (uint32_t x = 0; x < n; x++) {
        const uint32_t g = (x >= e0) + (x >= e1) + (x >= e2);
        ex[g * 4 + (pos[x] >> 6)] |= 1ull << (pos[x] & 63);
    }
    return x1;
}

/* The 64 elements from e (a multiple of 64) as bytes: *o the low ones (the
 * exponent's low bit and the mantissa), *h the high ones (the sign and the
 * exponent's high 7), the exceptions km's exponents from book2, blended in
 * with no branch on whether there are any (over half the chunks of trained
 * weights have one, unpredictably); returns the far ones among them (code 7),
 * whose exponents the caller puts in from the far bytes. */
static inline __mmask64 pex2_chunk(const pex2_books *k, const uint8_t *code, const uint8_t *rest, uint64_t e,
                                   __mmask64 km, __m512i *o, __m512i *h)
{
    const __m512i c24 = _mm512_maskz_loadu_epi8(0xFFFFFFull, code + 3 * (e / 8));
    const __m512i codes = _mm512_multishift_epi64_epi8(k->shift, _mm512_permutexvar_epi8(k->spread, c24));
    __m512i eh = _mm512_permutexvar_epi8(codes, k->ehi1), el = _mm512_permutexvar_epi8(codes, k->elo1);
    eh = _mm512_mask_permutexvar_epi8(eh, km, codes, k->ehi2);
    el = _mm512_mask_permutexvar_epi8(el, km, codes, k->elo2);
    const __m512i r = _mm512_loadu_si512(rest + e);
    /* (r & sign) | exponent >> 1, and (r & mant) | exponent's low bit << 7: 0xEA is (A & B) | C */
    *h = _mm512_ternarylogic_epi32(r, k->sign, eh, 0xEA);
    *o = _mm512_ternarylogic_epi32(r, k->mant, el, 0xEA);
    return _mm512_mask_cmpeq_epi8_mask(km, _mm512_and_si512(codes, k->seven), k->seven);
}

#endif
