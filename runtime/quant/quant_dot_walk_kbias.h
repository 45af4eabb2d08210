/* quant_dot_walk_kbias.h — the super-block step that Q3_K's and Q6_K's walks
 * share (quant_dot_walk_k.h, quant_dot_walk_k456.h): both store quants with
 * a bias (Q3_K q' − 4, Q6_K q − 32, the bias 2^shift), and take
 * Σ (q − 2^shift)·y·sc = Σ q·y·sc − 2^shift·Σ sc·bsums, the second part an
 * exact integer from the Q8_K activations' bsums. The includer defines the
 * macros ALWAYS_INLINE and UNROLL first. */
#ifndef LRUN_QUANT_DOT_WALK_KBIAS_H
#define LRUN_QUANT_DOT_WALK_KBIAS_H

#include "quant/quant_dot.h"

#include <immintrin.h>

/* acc[r] += d·dx_r·(sumi[r] − 2^shift·Σ sc·bsums_r) for rows r < NX of
 * block b: sc the block's 16 scales as int16, d its f32 scale, sumi[r] the
 * lane sums Σ q·y·sc of the unbiased quants, xr the activation rows. shift is
 * a constant at every call, so the shift stays an immediate. */
static ALWAYS_INLINE void kbias_step(__m256i sc, const __m256i *sumi, float d, const lrun_block_q8_K *const *xr,
                                     int64_t b, int shift, const int NX, __m256 *acc)
{
    UNROLL
    for (int r = 0; r < NX; ++r) {
        const __m256i corr = _mm256_madd_epi16(sc, _mm256_loadu_si256((const __m256i *)xr[r][b].bsums));
        const __m256i s = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32(corr, shift));
        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * xr[r][b].d), _mm256_cvtepi32_ps(s), acc[r]);
    }
}

#endif
