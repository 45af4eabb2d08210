/* quant_dot_walk_k456.h — the super-block walks of the Q4_K, Q5_K and Q6_K
 * dot kernels (with Q8_K activations), written once for every x86 level,
 * as quant_dot_walk_k.h's for Q2_K, Q3_K and IQ4_XS (which see: the same
 * rule, one f32 FMA per lane and super-block over an exact integer lane sum
 * in AVX2's lanes, then hsum8). The file that includes this header
 * (quant_dot_k.c for AVX2, quant_dot_avx512.c inside its target pragma)
 * first defines, as static ALWAYS_INLINE functions, hsum8,
 * q4_K_unpack_scales (quant_dot_k.c's) and:
 *
 *   void q45_K_sums(int is5, const void *blk, const uint8_t sc[8], const lrun_block_q8_K *const *xr,
 *                   int64_t b, const int NX, __m256i *sumi)
 *        Σ q·y·sc of Q4_K (is5 = 0) or Q5_K block blk, sc its 8 six-bit scales
 *   void q6_K_sums(const lrun_block_q6_K *wb, __m256i sc, const lrun_block_q8_K *const *xr, int64_t b,
 *                  const int NX, __m256i *sumi)
 *        Σ q·y·sc with Q6_K's unsigned quants q (0..63), sc its 16 scales as int16; the −32 left to the walk
 *
 * each writing sumi[r] for rows r < NX, and the macros ALWAYS_INLINE,
 * UNROLL and ROW. */
#ifndef LRUN_QUANT_DOT_WALK_K456_H
#define LRUN_QUANT_DOT_WALK_K456_H

#include "quant/quant_dot.h"
#include "quant/quant_dot_walk_kbias.h"

#include <immintrin.h>
#include <stddef.h>

/* Q4_K and Q5_K share the header (d, dmin, scales) and differ in where qs
 * is: Σ (d·sc·q − dmin·m)·y = d·Σ sc Σ q·y − dmin·Σ m·bsums. */
static ALWAYS_INLINE void dot_q45_K_nx(int is5, int64_t k, const void *w, const void *x, size_t xs, const int NX,
                                       float *out)
{
    const size_t bbytes = is5 ? sizeof(lrun_block_q5_K) : sizeof(lrun_block_q4_K);
    const lrun_block_q8_K *xr[LRUN_DOT_MAX_ROWS];
    __m256 acc[LRUN_DOT_MAX_ROWS], accm[LRUN_DOT_MAX_ROWS]; /* scale part, min part */
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r] = accm[r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < k / LRUN_QK_K; ++b) {
        const uint8_t *blk = (const uint8_t *)w + (size_t)b * bbytes;
        const lrun_block_q4_K *hdr = (const lrun_block_q4_K *)(const void *)blk; /* d, dmin, scales: the same in Q5_K */
        uint8_t sc[8], m[8];
        q4_K_unpack_scales(hdr->scales, sc, m);
        const float d = _cvtsh_ss(hdr->d), dmin = _cvtsh_ss(hdr->dmin);
        /* mins as 16 int16 [m0 m0 m1 m1 …]: each pairs with two 16-sums of bsums */
        const __m128i m8 = _mm_loadl_epi64((const __m128i *)m);
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
        __m256i sumi[LRUN_DOT_MAX_ROWS];
        q45_K_sums(is5, blk, sc, xr, b, NX, sumi);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const lrun_block_q8_K *xb = &xr[r][b];
            const __m256i pm = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)xb->bsums));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb->d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
            accm[r] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * xb->d), _mm256_cvtepi32_ps(pm), accm[r]);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8(acc[r]) - hsum8(accm[r]);
}

static ALWAYS_INLINE void dot_q4_K_nx(int64_t k, const void *w, const void *x, size_t xs, const int NX, float *out)
{
    dot_q45_K_nx(0, k, w, x, xs, NX, out);
}

static ALWAYS_INLINE void dot_q5_K_nx(int64_t k, const void *w, const void *x, size_t xs, const int NX, float *out)
{
    dot_q45_K_nx(1, k, w, x, xs, NX, out);
}

/* Q6_K: Σ (q − 32)·y·sc = Σ q·y·sc − 32·Σ sc·bsums, the second part exact from bsums. */
static ALWAYS_INLINE void dot_q6_K_nx(int64_t k, const lrun_block_q6_K *w, const void *x, size_t xs, const int NX,
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
        const __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[b].scales));
        __m256i sumi[LRUN_DOT_MAX_ROWS];
        q6_K_sums(&w[b], sc, xr, b, NX, sumi);
        kbias_step(sc, sumi, _cvtsh_ss(w[b].d), xr, b, 5, NX, acc);
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8(acc[r]);
}

#endif
