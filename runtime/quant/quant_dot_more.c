/* quant_dot_more.c — dot products of the Q5_0, Q5_1, IQ4_NL (with Q8_0/Q8_1
 * activations) and Q2_K, Q3_K, Q5_K, IQ4_XS (with Q8_K) weights, in
 * llama.cpp's arithmetic: scalar kernels, then AVX2 ones.
 *
 * The 32-element types keep the lane form of quant_dot.c (lane l = the exact
 * integer sum of the products of elements 4l..4l+3; per block acc[l] =
 * fma(dw·dx, lane, acc[l]); the result AVX's hsum of the 8 lanes), which is
 * what llama.cpp's x86 kernels compute (ggml_vec_dot_q5_0_q8_0 and q5_1_q8_1
 * as Q4_0/Q4_1; iq4_nl_q8_0 with two accumulators, even and odd blocks), so
 * scalar and AVX2 give the same bits. The 256-element types sum each
 * super-block exactly in integers (quants × activation quants × sub-block
 * scales; Q2_K's and Q5_K's mins and Q3_K's −4 through Q8_K's bsums) and add
 * one float product per super-block (scalar) or per lane (AVX2), as
 * llama.cpp's kernels do in their own orders: a difference of f32 rounding
 * (tests/llamacpp_quants_spec.lua bounds what it does to a model). */
#include "quant/quant_dot.h"
#include "quant/quant_dot_nx.h"

#include <math.h>
#include <string.h>

#define ROW(x, r, stride) ((const void *)((const char *)(x) + (size_t)(r) * (stride)))

// ---------------------------------------------------------------- 32-element blocks

/* AVX's horizontal sum of 8 lanes (quant_dot.c's hsum8_ref). */
static inline float hsum8_ref(const float a[8])
{
    const float t0 = a[4] + a[0], t1 = a[5] + a[1], t2 = a[6] + a[2], t3 = a[7] + a[3];
    return (t0 + t2) + (t1 + t3);
}

/* The 32 values of a Q5 block: q (0..31) minus off. */
static inline void q5_vals(const uint8_t qs[16], const uint8_t qh[4], int off, int v[32])
{
    const uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
    for (int j = 0; j < 16; ++j) {
        v[j] = ((qs[j] & 0xF) | (int)((h >> j) & 1) << 4) - off;
        v[j + 16] = ((qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4) - off;
    }
}

/* acc[l] = fma(dd, Σ of the 4 products of lane l, acc[l]). */
static inline void lanes_fma(float acc[8], float dd, const int v[32], const int8_t *y)
{
    for (int l = 0; l < 8; ++l) {
        int lane = 0;
        for (int e = 4 * l; e < 4 * l + 4; ++e) lane += v[e] * y[e];
        acc[l] = fmaf(dd, (float)lane, acc[l]);
    }
}

static float dot1_q5_0(int64_t k, const lrun_block_q5_0 *w, const lrun_block_q8_0 *x)
{
    float acc[8] = {0};
    for (int64_t b = 0; b < k / 32; ++b) {
        int v[32];
        q5_vals(w[b].qs, w[b].qh, 16, v);
        lanes_fma(acc, lrun_f16_to_f32(w[b].d) * lrun_f16_to_f32(x[b].d), v, x[b].qs);
    }
    return hsum8_ref(acc);
}

/* Σ (q·dw + mw)·(qx·dx) = dw·dx·Σ q·qx + mw·s, s being Q8_1's dx·Σ qx. */
static float dot1_q5_1(int64_t k, const lrun_block_q5_1 *w, const lrun_block_q8_1 *x)
{
    float acc[8] = {0}, summs = 0.0f;
    for (int64_t b = 0; b < k / 32; ++b) {
        int v[32];
        summs = fmaf(lrun_f16_to_f32(w[b].m), x[b].s, summs);
        q5_vals(w[b].qs, w[b].qh, 0, v);
        lanes_fma(acc, lrun_f16_to_f32(w[b].d) * x[b].d, v, x[b].qs);
    }
    return hsum8_ref(acc) + summs;
}

static float dot1_iq4_nl(int64_t k, const lrun_block_iq4_nl *w, const lrun_block_q8_0 *x)
{
    float acc[2][8] = {{0}};
    for (int64_t b = 0; b < k / 32; ++b) {
        int v[32];
        for (int j = 0; j < 16; ++j) {
            v[j] = lrun_kvalues_iq4nl[w[b].qs[j] & 0xF];
            v[j + 16] = lrun_kvalues_iq4nl[w[b].qs[j] >> 4];
        }
        lanes_fma(acc[b & 1], lrun_f16_to_f32(x[b].d) * lrun_f16_to_f32(w[b].d), v, x[b].qs);
    }
    float sum[8];
    for (int l = 0; l < 8; ++l) sum[l] = acc[0][l] + acc[1][l];
    return hsum8_ref(sum);
}

// ---------------------------------------------------------------- 256-element blocks

static float dot1_q2_K(int64_t k, const lrun_block_q2_K *w, const lrun_block_q8_K *x)
{
    float s = 0.0f;
    for (int64_t b = 0; b < k / LRUN_QK_K; ++b) {
        const uint8_t *qs = w[b].qs;
        int sumi = 0, summ = 0;
        for (int j = 0; j < 16; ++j) {
            int part = 0;
            for (int e = 16 * j; e < 16 * j + 16; ++e)
                part += ((qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3) * x[b].qs[e];
            sumi += (w[b].scales[j] & 0xF) * part;
            summ += (w[b].scales[j] >> 4) * x[b].bsums[j];
        }
        const float dall = x[b].d * lrun_f16_to_f32(w[b].d), dmin = x[b].d * lrun_f16_to_f32(w[b].dmin);
        s += dall * (float)sumi - dmin * (float)summ;
    }
    return s;
}

static float dot1_q3_K(int64_t k, const lrun_block_q3_K *w, const lrun_block_q8_K *x)
{
    float s = 0.0f;
    for (int64_t b = 0; b < k / LRUN_QK_K; ++b) {
        const uint8_t *qs = w[b].qs, *hm = w[b].hmask;
        int sumi = 0;
        for (int j = 0; j < 16; ++j) {
            int part = 0;
            for (int e = 16 * j; e < 16 * j + 16; ++e) {
                const int q = ((qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3) -
                              (((hm[e & 31] >> (e / 32)) & 1) ? 0 : 4);
                part += q * x[b].qs[e];
            }
            sumi += lrun_q3_K_scale(w[b].scales, j) * part;
        }
        s += lrun_f16_to_f32(w[b].d) * x[b].d * (float)sumi;
    }
    return s;
}

static float dot1_q5_K(int64_t k, const lrun_block_q5_K *w, const lrun_block_q8_K *x)
{
    float s = 0.0f;
    for (int64_t b = 0; b < k / LRUN_QK_K; ++b) {
        int sumi = 0, summ = 0;
        for (int c = 0; c < 4; ++c) {
            int sc0, m0, sc1, m1;
            lrun_k4_scale_min(w[b].scales, 2 * c, &sc0, &m0);
            lrun_k4_scale_min(w[b].scales, 2 * c + 1, &sc1, &m1);
            const uint8_t *ql = w[b].qs + 32 * c, *qh = w[b].qh;
            const int8_t *y = x[b].qs + 64 * c;
            int lo = 0, hi = 0;
            for (int l = 0; l < 32; ++l) {
                lo += ((ql[l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4)) * y[l];
                hi += ((ql[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4)) * y[l + 32];
            }
            sumi += sc0 * lo + sc1 * hi;
            summ += m0 * (x[b].bsums[4 * c] + x[b].bsums[4 * c + 1]) + m1 * (x[b].bsums[4 * c + 2] + x[b].bsums[4 * c + 3]);
        }
        const float dy = x[b].d;
        s += lrun_f16_to_f32(w[b].d) * dy * (float)sumi - lrun_f16_to_f32(w[b].dmin) * dy * (float)summ;
    }
    return s;
}

static float dot1_iq4_xs(int64_t k, const lrun_block_iq4_xs *w, const lrun_block_q8_K *x)
{
    float s = 0.0f;
    for (int64_t b = 0; b < k / LRUN_QK_K; ++b) {
        int sumi = 0;
        for (int j = 0; j < 8; ++j) {
            const uint8_t *qs = w[b].qs + 16 * j;
            const int8_t *y = x[b].qs + 32 * j;
            int part = 0;
            for (int l = 0; l < 16; ++l)
                part += lrun_kvalues_iq4nl[qs[l] & 0xF] * y[l] + lrun_kvalues_iq4nl[qs[l] >> 4] * y[l + 16];
            sumi += lrun_iq4_xs_scale(&w[b], j) * part;
        }
        s += lrun_f16_to_f32(w[b].d) * x[b].d * (float)sumi;
    }
    return s;
}

// ---------------------------------------------------------------- row kernels

void lrun_dot_q5_0_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_q5_0(k, w, ROW(x, r, xs));
}

void lrun_dot_q5_1_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_q5_1(k, w, ROW(x, r, xs));
}

void lrun_dot_iq4_nl_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_iq4_nl(k, w, ROW(x, r, xs));
}

void lrun_dot_q2_K_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_q2_K(k, w, ROW(x, r, xs));
}

void lrun_dot_q3_K_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_q3_K(k, w, ROW(x, r, xs));
}

void lrun_dot_q5_K_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_q5_K(k, w, ROW(x, r, xs));
}

void lrun_dot_iq4_xs_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_iq4_xs(k, w, ROW(x, r, xs));
}

// ---------------------------------------------------------------- AVX2

/* The same results as the scalar kernels above: bit for bit for the
 * 32-element types (the lanes are the vector's lanes, each an exact integer
 * sum before its FMA), to f32 rounding for the super-block types (8 lanes of
 * partial sums per super-block, added at the end). */
#if defined(LRUN_HAVE_AVX2)
#include <immintrin.h>

#define ALWAYS_INLINE inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")
#include "quant/quant_dot_avx2.h"
#include "quant/quant_dot_walk.h" /* Q5_0, Q5_1, IQ4_NL */

/* Q2_K and Q3_K share their layout: 32-byte group n of qs holds elements
 * 128n + 32j + l (l < 32) in bits 2j, whose 16-element sub-blocks are 8n+2j
 * and 8n+2j+1. s16 has the 16 sub-block scales as int16. */
static ALWAYS_INLINE __m256i pair_scales(const int16_t *s16, int sub)
{
    return _mm256_setr_m128i(_mm_set1_epi16(s16[sub]), _mm_set1_epi16(s16[sub + 1]));
}

/* Q2_K's lane sums (quant_dot_walk_k.h): per 32-byte group n and bit pair
 * j, maddubs (q ≤ 3) then madd with the pair's scales. */
static ALWAYS_INLINE void q2_K_sums(const lrun_block_q2_K *wb, __m256i sc, const lrun_block_q8_K *const *xr,
                                    int64_t b, const int NX, __m256i *sumi)
{
    const __m256i three = _mm256_set1_epi8(3);
    int16_t s16[16];
    _mm256_storeu_si256((__m256i *)s16, sc);
    UNROLL
    for (int r = 0; r < NX; ++r) sumi[r] = _mm256_setzero_si256();
    UNROLL
    for (int n = 0; n < 2; ++n) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(wb->qs + 32 * n));
        UNROLL
        for (int j = 0; j < 4; ++j) {
            const __m256i v = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), three);
            const __m256i s = pair_scales(s16, 8 * n + 2 * j);
            UNROLL
            for (int r = 0; r < NX; ++r) {
                const __m256i y = _mm256_loadu_si256((const __m256i *)(xr[r][b].qs + 128 * n + 32 * j));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(v, y), s));
            }
        }
    }
}

/* pair_scales from registers: half holds the 8 int16 scales of group n in
 * both 128-bit halves; the result is scale 2j in the low half, 2j + 1 in the
 * high half (the values pair_scales(s16, 8n + 2j) loads). */
static ALWAYS_INLINE __m256i q3_K_pair(__m256i half, int j)
{
    const short lo = (short)(((4 * j + 1) << 8) | (4 * j)), hi = (short)(((4 * j + 3) << 8) | (4 * j + 2));
    return _mm256_shuffle_epi8(half, _mm256_setr_m128i(_mm_set1_epi16(lo), _mm_set1_epi16(hi)));
}

/* Bit b (0..7) of every hmask byte, moved to bit 2 (the 4 of q' = q + 4·hbit). */
static ALWAYS_INLINE __m256i q3_K_hbit(__m256i hm, int b)
{
    const __m256i four = _mm256_set1_epi8(4);
    if (b < 2) return _mm256_and_si256(_mm256_slli_epi16(hm, 2 - b), four);
    return _mm256_and_si256(_mm256_srli_epi16(hm, b - 2), four);
}

/* Q3_K's lane sums of q'·y·sc, q' = q + 4·hbit: the scales unpacked with
 * SIMD and picked by shuffles from registers (the scalar unpack through
 * memory cost more than the products). */
static ALWAYS_INLINE void q3_K_sums(const lrun_block_q3_K *wb, __m256i sc, const lrun_block_q8_K *const *xr,
                                    int64_t b, const int NX, __m256i *sumi)
{
    const __m256i three = _mm256_set1_epi8(3);
    const __m256i hm = _mm256_loadu_si256((const __m256i *)wb->hmask);
    UNROLL
    for (int r = 0; r < NX; ++r) sumi[r] = _mm256_setzero_si256();
    UNROLL
    for (int n = 0; n < 2; ++n) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(wb->qs + 32 * n));
        const __m128i sh = n ? _mm256_extracti128_si256(sc, 1) : _mm256_castsi256_si128(sc);
        const __m256i half = _mm256_setr_m128i(sh, sh);
        UNROLL
        for (int j = 0; j < 4; ++j) {
            const __m256i v = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * j), three),
                                              q3_K_hbit(hm, 4 * n + j));
            const __m256i s = q3_K_pair(half, j);
            UNROLL
            for (int r = 0; r < NX; ++r) {
                const __m256i y = _mm256_loadu_si256((const __m256i *)(xr[r][b].qs + 128 * n + 32 * j));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(v, y), s));
            }
        }
    }
}

/* IQ4_XS's lane sums: |value| times y with value's sign (pairs ≤ 2·127·128),
 * its sub-block's 6-bit scale applied with madd. */
static ALWAYS_INLINE void iq4_xs_sums(const lrun_block_iq4_xs *wb, const lrun_block_q8_K *const *xr, int64_t b,
                                      const int NX, __m256i *sumi)
{
    const __m256i table = iq4_table();
    UNROLL
    for (int r = 0; r < NX; ++r) sumi[r] = _mm256_setzero_si256();
    UNROLL
    for (int j = 0; j < 8; ++j) {
        const __m256i v = _mm256_shuffle_epi8(table, nibbles32(wb->qs + 16 * j));
        const __m256i av = _mm256_sign_epi8(v, v), s = _mm256_set1_epi16((int16_t)lrun_iq4_xs_scale(wb, j));
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)(xr[r][b].qs + 32 * j));
            const __m256i p = _mm256_maddubs_epi16(av, _mm256_sign_epi8(y, v));
            sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, s));
        }
    }
}

#include "quant/quant_dot_walk_k.h" /* Q2_K, Q3_K, IQ4_XS */

DOT_NX_FN(lrun_dot_q2_K_avx2, dot_q2_K_nx)

DOT_NX_FN(lrun_dot_q3_K_avx2, dot_q3_K_nx)

DOT_NX_FN(lrun_dot_iq4_xs_avx2, dot_iq4_xs_nx)

DOT_NX_FN(lrun_dot_q5_0_avx2, dot_q5_0_nx)

DOT_NX_FN(lrun_dot_q5_1_avx2, dot_q5_1_nx)

DOT_NX_FN(lrun_dot_iq4_nl_avx2, dot_iq4_nl_nx)


#endif /* LRUN_HAVE_AVX2 */
