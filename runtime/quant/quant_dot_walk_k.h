/* quant_dot_walk_k.h — the super-block walks of the Q2_K, Q3_K and IQ4_XS
 * dot kernels (with Q8_K activations), written once for every x86 level.
 *
 * Per activation row one accumulator of 8 lanes; per super-block each lane
 * gets one FMA, acc[l] = fma(dw·dx, (float)sumi[l], acc[l]) (Q2_K's mins in
 * a second accumulator), and the result is hsum8. sumi[l] is an exact
 * integer: lane l's share of the super-block's Σ quant·y·sub-block-scale,
 * in AVX2's lanes (the int32 lanes of madd(maddubs(v, y), scale) over the
 * 32-byte chunks of the block). How a level forms it does not change the
 * bits, as long as every int16 pair stays unsaturated and each lane gets the
 * same products. So the file that includes this header (quant_dot_more.c
 * for AVX2, quant_dot_avx512.c inside its target pragma) first defines,
 * as static ALWAYS_INLINE functions, hsum8 (quant_dot_walk.h) and:
 *
 *   void q2_K_sums(const lrun_block_q2_K *wb, __m256i sc, const lrun_block_q8_K *const *xr, int64_t b,
 *                  const int NX, __m256i *sumi)    sc: the 16 sub-block scales (0..15) as int16
 *   void q3_K_sums(const lrun_block_q3_K *wb, __m256i sc, ..same..)
 *                  sc: the 16 scales (−32..31); the quants q' = q + 4·hbit (0..7), the −4 left to the walk
 *   void iq4_xs_sums(const lrun_block_iq4_xs *wb, const lrun_block_q8_K *const *xr, int64_t b,
 *                  const int NX, __m256i *sumi)
 *
 * each writing sumi[r] for rows r < NX of block b, and the macros
 * ALWAYS_INLINE, UNROLL and ROW. */
#ifndef LRUN_QUANT_DOT_WALK_K_H
#define LRUN_QUANT_DOT_WALK_K_H

#include "quant/quant_dot.h"
#include "quant/quant_dot_walk_kbias.h"

#include <immintrin.h>
#include <string.h>

/* Q2_K: Σ (dl·q − ml)·y = d·Σ_j sc_j Σ q·y − dmin·Σ_j m_j bsums_j. */
static ALWAYS_INLINE void dot_q2_K_nx(int64_t k, const lrun_block_q2_K *w, const void *x, size_t xs, const int NX,
                                      float *out)
{
    const lrun_block_q8_K *xr[LRUN_DOT_MAX_ROWS];
    __m256 acc[LRUN_DOT_MAX_ROWS], accm[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r] = accm[r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < k / LRUN_QK_K; ++b) {
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)w[b].scales);
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0F)));
        const __m256i sc = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, _mm_set1_epi8(0x0F)));
        const float d = _cvtsh_ss(w[b].d), dmin = _cvtsh_ss(w[b].dmin);
        __m256i sumi[LRUN_DOT_MAX_ROWS];
        q2_K_sums(&w[b], sc, xr, b, NX, sumi);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const lrun_block_q8_K *xb = &xr[r][b];
            const __m256i pm = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)xb->bsums));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(xb->d * d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
            accm[r] = _mm256_fmadd_ps(_mm256_set1_ps(xb->d * dmin), _mm256_cvtepi32_ps(pm), accm[r]);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8(acc[r]) - hsum8(accm[r]);
}

/* Q3_K's 16 scales (−32..31) as int8, in sub-block order: the SIMD form of
 * lrun_q3_K_scale (low nibbles from bytes 0..7, two high bits from 8..11). */
static ALWAYS_INLINE __m128i q3_K_scales(const uint8_t s[12])
{
    uint32_t a[3];
    memcpy(a, s, 12);
    const uint32_t lo = 0x0F0F0F0Fu, hi = 0x03030303u;
    const __m128i sc = _mm_setr_epi32((int)((a[0] & lo) | ((a[2] & hi) << 4)),
                                      (int)((a[1] & lo) | (((a[2] >> 2) & hi) << 4)),
                                      (int)(((a[0] >> 4) & lo) | (((a[2] >> 4) & hi) << 4)),
                                      (int)(((a[1] >> 4) & lo) | (((a[2] >> 6) & hi) << 4)));
    return _mm_sub_epi8(sc, _mm_set1_epi8(32));
}

/* Q3_K: with q' = q + 4·hbit (0..7), Σ (q' − 4)·y·sc = Σ_j sc_j (Σ q'·y − 4·bsums_j);
 * the −4 part comes from bsums (an exact integer, subtracted from the sums). */
static ALWAYS_INLINE void dot_q3_K_nx(int64_t k, const lrun_block_q3_K *w, const void *x, size_t xs, const int NX,
                                      float *out)
{
    const lrun_block_q8_K *xr[LRUN_DOT_MAX_ROWS];
    __m256 acc[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < k / LRUN_QK_K; ++b) {
        const __m256i sc = _mm256_cvtepi8_epi16(q3_K_scales(w[b].scales)); /* 16 × int16 */
        __m256i sumi[LRUN_DOT_MAX_ROWS];
        q3_K_sums(&w[b], sc, xr, b, NX, sumi);
        kbias_step(sc, sumi, _cvtsh_ss(w[b].d), xr, b, 2, NX, acc);
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8(acc[r]);
}

/* IQ4_XS: table values (signed) per 32-element sub-block, each with its 6-bit scale. */
static ALWAYS_INLINE void dot_iq4_xs_nx(int64_t k, const lrun_block_iq4_xs *w, const void *x, size_t xs, const int NX,
                                        float *out)
{
    const lrun_block_q8_K *xr[LRUN_DOT_MAX_ROWS];
    __m256 acc[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < k / LRUN_QK_K; ++b) {
        __m256i sumi[LRUN_DOT_MAX_ROWS];
        iq4_xs_sums(&w[b], xr, b, NX, sumi);
        const float d = _cvtsh_ss(w[b].d);
        UNROLL
        for (int r = 0; r < NX; ++r)
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * xr[r][b].d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8(acc[r]);
}

#endif
