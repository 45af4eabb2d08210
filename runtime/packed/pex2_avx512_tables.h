/* pex2_avx512_tables.h — the byte tables and codebook tables PEX2's AVX-512
 * VBMI decoders share: the block decoder (codec_pex2_avx512.c) and the
 * fused product (pex2_gemv_avx512.c). Include inside a region compiled for
 * avx512f, avx512bw and avx512vbmi (the files' target pragmas). */
#ifndef LRUN_PACKED_PEX2_AVX512_TABLES_H
#define LRUN_PACKED_PEX2_AVX512_TABLES_H

#include <immintrin.h>
#include <stdint.h>

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

#endif
