/* quant_dot_k.c — dot products of the K-quant weights (Q4_K, Q6_K) with Q8_K
 * activations (256-element super-blocks).
 *
 * Everything inside a super-block stays integer: the quants multiply in
 * maddubs/madd, the sub-block scales multiply the int32 partial sums, and the
 * constant parts (Q4_K's mins, Q6_K's −32 offset) are taken out with Q8_K's
 * per-16 sums (bsums). One float multiply-add per super-block and row. */
#include "quant/quant_dot.h"
#include "quant/quant_dot_nx.h"
#include "quant/quant_k_scales.h"

#include <string.h>
#if defined(LRUN_HAVE_AVX2)
#include <immintrin.h>
#endif

#define ALWAYS_INLINE inline __attribute__((always_inline))
/* Loops over the NX rows (and the few blocks of a step) must be unrolled so
 * their accumulators live in registers. */
#define UNROLL _Pragma("GCC unroll 8")
#define ROW(x, r, stride) ((const void *)((const char *)(x) + (size_t)(r) * (stride)))

// ---------------------------------------------------------------- scalar

static float dot1_q4_K(int64_t k, const lrun_block_q4_K *w, const lrun_block_q8_K *x)
{
    float s = 0.0f;
    for (int64_t b = 0; b < k / LRUN_QK_K; ++b) {
        uint8_t sc[8], m[8];
        q4_K_unpack_scales(w[b].scales, sc, m);
        int sumi = 0, summ = 0;
        UNROLL
        for (int c = 0; c < 4; ++c) {
            const uint8_t *q = w[b].qs + 32 * c;
            const int8_t *y = x[b].qs + 64 * c;
            int lo = 0, hi = 0;
            for (int l = 0; l < 32; ++l) {
                lo += (q[l] & 0xF) * y[l];
                hi += (q[l] >> 4) * y[l + 32];
            }
            sumi += sc[2 * c] * lo + sc[2 * c + 1] * hi;
        }
        for (int j = 0; j < 8; ++j) summ += m[j] * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
        float dy = x[b].d;
        s += lrun_f16_to_f32(w[b].d) * dy * (float)sumi - lrun_f16_to_f32(w[b].dmin) * dy * (float)summ;
    }
    return s;
}

static float dot1_q6_K(int64_t k, const lrun_block_q6_K *w, const lrun_block_q8_K *x)
{
    float s = 0.0f;
    for (int64_t b = 0; b < k / LRUN_QK_K; ++b) {
        int sumi = 0;
        UNROLL
        for (int h = 0; h < 2; ++h) {
            const uint8_t *ql = w[b].ql + 64 * h, *qh = w[b].qh + 32 * h;
            const int8_t *sc = w[b].scales + 8 * h, *y = x[b].qs + 128 * h;
            int part[8] = {0}; /* per 16-element sub-block */
            for (int l = 0; l < 32; ++l) {
                int is = l / 16;
                part[is] += (((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32) * y[l];
                part[is + 2] += (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32) * y[l + 32];
                part[is + 4] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * y[l + 64];
                part[is + 6] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * y[l + 96];
            }
            for (int j = 0; j < 8; ++j) sumi += sc[j] * part[j];
        }
        s += lrun_f16_to_f32(w[b].d) * x[b].d * (float)sumi;
    }
    return s;
}

void lrun_dot_q4_K_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_q4_K(k, w, ROW(x, r, xs));
}

void lrun_dot_q6_K_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_q6_K(k, w, ROW(x, r, xs));
}

// ---------------------------------------------------------------- AVX2

#if defined(LRUN_HAVE_AVX2)

#include "quant/quant_dot_avx2.h"

#include <stddef.h>

/* The lane sums of quant_dot_walk_k456.h's walks. Per 32-byte chunk c of
 * qs: low nibbles (sub-block 2c) against y[64c ..], high ones (2c+1)
 * against the next 32, maddubs (q ≤ 15, Q5_K's ≤ 31: no saturation) then
 * madd with the sub-block's scale. Q5_K's fifth bits: bit 2c of qh[l] for
 * the low nibbles of chunk c, bit 2c+1 for the high ones. */
static ALWAYS_INLINE void q45_K_sums(int is5, const void *blk, const uint8_t sc[8], const lrun_block_q8_K *const *xr,
                                     int64_t b, const int NX, __m256i *sumi)
{
    const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const uint8_t *qs = (const uint8_t *)blk + (is5 ? offsetof(lrun_block_q5_K, qs) : offsetof(lrun_block_q4_K, qs));
    const __m256i qh = is5 ? _mm256_loadu_si256((const __m256i *)((const lrun_block_q5_K *)blk)->qh)
                           : _mm256_setzero_si256();
    UNROLL
    for (int r = 0; r < NX; ++r) sumi[r] = _mm256_setzero_si256();
    UNROLL
    for (int c = 0; c < 4; ++c) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
        if (is5) {
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
        }
        const __m256i slo = _mm256_set1_epi16(sc[2 * c]), shi = _mm256_set1_epi16(sc[2 * c + 1]);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const int8_t *y = xr[r][b].qs + 64 * c;
            const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)y));
            const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 32)));
            sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(plo, slo));
            sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(phi, shi));
        }
    }
}

/* Q6_K: per half h, 64 bytes of ql and 32 of qh make four 32-element chunks
 * q[0..3] (q ≤ 63: maddubs cannot saturate), each 16 elements with their
 * own scale. */
static ALWAYS_INLINE void q6_K_sums(const lrun_block_q6_K *wb, __m256i sc, const lrun_block_q8_K *const *xr, int64_t b,
                                    const int NX, __m256i *sumi)
{
    (void)sc; /* AVX2 broadcasts each chunk's two scales from wb->scales, as before the walks were shared */
    const __m256i low4 = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
    UNROLL
    for (int r = 0; r < NX; ++r) sumi[r] = _mm256_setzero_si256();
    UNROLL
    for (int h = 0; h < 2; ++h) {
        const uint8_t *ql = wb->ql + 64 * h, *qh = wb->qh + 32 * h;
        const __m256i qla = _mm256_loadu_si256((const __m256i *)ql);
        const __m256i qlb = _mm256_loadu_si256((const __m256i *)(ql + 32));
        const __m256i qhv = _mm256_loadu_si256((const __m256i *)qh);
        __m256i q[4];
        q[0] = _mm256_or_si256(_mm256_and_si256(qla, low4), _mm256_and_si256(_mm256_slli_epi16(qhv, 4), bits45));
        q[1] = _mm256_or_si256(_mm256_and_si256(qlb, low4), _mm256_and_si256(_mm256_slli_epi16(qhv, 2), bits45));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qla, 4), low4), _mm256_and_si256(qhv, bits45));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qlb, 4), low4),
                               _mm256_and_si256(_mm256_srli_epi16(qhv, 2), bits45));
        UNROLL
        for (int c = 0; c < 4; ++c) {
            /* scales of elements 32c..32c+15 and 32c+16..32c+31 of this half */
            const int j = 8 * h + 2 * c;
            const __m256i s = _mm256_setr_m128i(_mm_set1_epi16(wb->scales[j]), _mm_set1_epi16(wb->scales[j + 1]));
            UNROLL
            for (int r = 0; r < NX; ++r) {
                const int8_t *y = xr[r][b].qs + 128 * h + 32 * c;
                const __m256i p = _mm256_maddubs_epi16(q[c], _mm256_loadu_si256((const __m256i *)y));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, s));
            }
        }
    }
}

#include "quant/quant_dot_walk_k456.h"

DOT_NX_FN(lrun_dot_q4_K_avx2, dot_q4_K_nx)
DOT_NX_FN(lrun_dot_q5_K_avx2, dot_q5_K_nx)
DOT_NX_FN(lrun_dot_q6_K_avx2, dot_q6_K_nx)

/* The 128-bit form of the Q4_K kernel for cores that split 256-bit
 * operations (LRUN_SPLIT_256, quant_dot.c): the two 16-element halves of a
 * 32-element sub-block share its scale, so their 16-bit pair sums add
 * (≤ 2·2·15·127) before the one madd that applies the scale. */
static ALWAYS_INLINE void dot_q4_K_nx_128(int64_t k, const lrun_block_q4_K *w, const void *x, size_t xs, const int NX,
                                          float *out)
{
    const int64_t nb = k / LRUN_QK_K;
    const __m128i low4 = _mm_set1_epi8(0x0F);
    const lrun_block_q8_K *xr[LRUN_DOT_MAX_ROWS];
    __m128 acc[LRUN_DOT_MAX_ROWS], accm[LRUN_DOT_MAX_ROWS]; /* scale part, min part */
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r] = accm[r] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b) {
        uint8_t sc[8], m[8];
        q4_K_unpack_scales(w[b].scales, sc, m);
        float d = _cvtsh_ss(w[b].d), dmin = _cvtsh_ss(w[b].dmin);
        /* mins as int16 [m0 m0 m1 m1 …], each pairing with two 16-sums of bsums */
        __m128i m8 = _mm_loadl_epi64((const __m128i *)m), mm = _mm_unpacklo_epi8(m8, m8);
        __m128i mins_lo = _mm_cvtepu8_epi16(mm), mins_hi = _mm_cvtepu8_epi16(_mm_srli_si128(mm, 8));
        __m128i sumi[LRUN_DOT_MAX_ROWS];
        UNROLL
        for (int r = 0; r < NX; ++r) sumi[r] = _mm_setzero_si128();
        UNROLL
        for (int c = 0; c < 4; ++c) {
            __m128i qa = _mm_loadu_si128((const __m128i *)(w[b].qs + 32 * c));
            __m128i qb = _mm_loadu_si128((const __m128i *)(w[b].qs + 32 * c + 16));
            __m128i lo_a = _mm_and_si128(qa, low4), lo_b = _mm_and_si128(qb, low4);
            __m128i hi_a = _mm_and_si128(_mm_srli_epi16(qa, 4), low4), hi_b = _mm_and_si128(_mm_srli_epi16(qb, 4), low4);
            __m128i slo = _mm_set1_epi16(sc[2 * c]), shi = _mm_set1_epi16(sc[2 * c + 1]);
            UNROLL
            for (int r = 0; r < NX; ++r) {
                const int8_t *y = xr[r][b].qs + 64 * c;
                __m128i plo = _mm_add_epi16(_mm_maddubs_epi16(lo_a, _mm_loadu_si128((const __m128i *)y)),
                                            _mm_maddubs_epi16(lo_b, _mm_loadu_si128((const __m128i *)(y + 16))));
                __m128i phi = _mm_add_epi16(_mm_maddubs_epi16(hi_a, _mm_loadu_si128((const __m128i *)(y + 32))),
                                            _mm_maddubs_epi16(hi_b, _mm_loadu_si128((const __m128i *)(y + 48))));
                sumi[r] = _mm_add_epi32(sumi[r], _mm_madd_epi16(plo, slo));
                sumi[r] = _mm_add_epi32(sumi[r], _mm_madd_epi16(phi, shi));
            }
        }
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const lrun_block_q8_K *xb = &xr[r][b];
            __m128i pm = _mm_add_epi32(_mm_madd_epi16(mins_lo, _mm_loadu_si128((const __m128i *)xb->bsums)),
                                       _mm_madd_epi16(mins_hi, _mm_loadu_si128((const __m128i *)(xb->bsums + 8))));
            acc[r] = _mm_fmadd_ps(_mm_set1_ps(d * xb->d), _mm_cvtepi32_ps(sumi[r]), acc[r]);
            accm[r] = _mm_fmadd_ps(_mm_set1_ps(dmin * xb->d), _mm_cvtepi32_ps(pm), accm[r]);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) {
        __m128 t = _mm_sub_ps(acc[r], accm[r]);
        t = _mm_add_ps(t, _mm_movehl_ps(t, t));
        out[r] = _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
    }
}

DOT_NX_FN(lrun_dot_q4_K_avx128, dot_q4_K_nx_128)

#endif /* LRUN_HAVE_AVX2 */
