/* quant_dot_avx2.h — AVX2's forms of the lane helpers that the block walks
 * (quant_dot_walk.h) are written over, for quant_dot.c and quant_dot_more.c
 * (quant_dot_avx512.c has its own). Include inside #if LRUN_HAVE_AVX2,
 * after defining ALWAYS_INLINE. */
#ifndef LRUN_QUANT_DOT_AVX2_H
#define LRUN_QUANT_DOT_AVX2_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* AVX's horizontal sum of 8 lanes: t[i] = v[i+4] + v[i], then (t0 + t2) + (t1 + t3). */
static ALWAYS_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 32 nibbles of qs[16] in element order (low nibbles 0..15, high 16..31). */
static ALWAYS_INLINE __m256i nibbles32(const uint8_t *qs)
{
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

/* lane l = Σ of the 4 products of elements 4l..4l+3, u unsigned: maddubs
 * then madd with ones. The callers' u ≤ 128 against int8 s keep every pair
 * in [−32768, 32512], so maddubs never saturates and the sums are exact. */
static ALWAYS_INLINE __m256 lanes_us(__m256i u, __m256i s)
{
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

/* Bit i of the 32-bit word at qh as byte i (0 or 1), i = 0..31. */
static ALWAYS_INLINE __m256i bits32(const uint8_t *qh)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202,
                                            0x0303030303030303);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), shuf); /* byte i = byte i/8 of h */
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit), _mm256_set1_epi8(1));
}

/* Q5 quants (0..31) of a block: nibbles | bit i of qh as 16. */
static ALWAYS_INLINE __m256i q5_quants(const uint8_t *qs, const uint8_t *qh)
{
    return _mm256_or_si256(nibbles32(qs), _mm256_slli_epi16(bits32(qh), 4));
}

#endif
