/* quant_dot_walk.h — the block walks of the 32-element dot kernels (Q4_0,
 * Q8_0, Q4_1, Q5_0, Q5_1, IQ4_NL), written once for every x86 level.
 *
 * A walk is what decides a result's bits: per activation row one
 * accumulator of 8 lanes, lane l a chain of FMAs over the blocks in order,
 * acc[l] = fma(dw·dx, lane_l, acc[l]) with lane_l the exact integer sum of
 * the 4 products of elements 4l..4l+3, then hsum8 (plus Q4_1's and Q5_1's
 * min term, IQ4_NL's even/odd accumulators): llama.cpp's x86 arithmetic
 * (docs/numerics.md §4-5). How an ISA forms lane_l does not change it, as
 * an integer sum is exact however it is formed. So the file that includes
 * this header (quant_dot.c and quant_dot_more.c for AVX2,
 * quant_dot_avx512.c for AVX-512/VNNI, inside its target pragma) first
 * defines, as static ALWAYS_INLINE functions, its forms of:
 *
 *   float   hsum8(__m256 v)                      AVX's 8-lane sum: (t0 + t2) + (t1 + t3), t_i = v_i + v_i+4
 *   __m256i nibbles32(const uint8_t *qs)         the 32 nibbles of qs[16] in element order, as bytes
 *   __m256  lanes_us(__m256i u, __m256i s)       lane l = Σ u_e·s_e, e = 4l..4l+3 (u ≤ 128 unsigned, s signed),
 *                                                as floats (exact: |Σ| < 2^24)
 *   __m256i q5_quants(const uint8_t *qs, const uint8_t *qh)   Q5's quants 0..31: nibble | bit e of qh as 16
 *
 * and the macros ALWAYS_INLINE, UNROLL and ROW. Each walk takes its row
 * count NX as an argument; DOT_NX_FN (quant_dot_nx.h) instantiates it per
 * NX. The super-block types have their walks in quant_dot_walk_k.h. */
#ifndef LRUN_QUANT_DOT_WALK_H
#define LRUN_QUANT_DOT_WALK_H

#include "quant/quant_dot.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* Signed × signed: |w| (unsigned) times x carrying w's sign. The pairs stay
 * in int16 for every block type here (|w| ≤ 128 and sign(x, w) an int8,
 * −(−128) wrapping to −128 in both levels alike). */
static ALWAYS_INLINE __m256 lanes_ss(__m256i w, __m256i x)
{
    return lanes_us(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

// ---------------------------------------------------------------- Q4_0, Q8_0 · Q8_0

/* A block's weights as signed bytes in element order; *dw = its f16 scale (bits). */
static ALWAYS_INLINE __m256i q8x_weights(int is_q4, const void *w, int64_t b, uint32_t *dw)
{
    if (is_q4) {
        const lrun_block_q4_0 *wb = (const lrun_block_q4_0 *)w + b;
        *dw = wb->d;
        return _mm256_sub_epi8(nibbles32(wb->qs), _mm256_set1_epi8(8));
    }
    const lrun_block_q8_0 *wb = (const lrun_block_q8_0 *)w + b;
    *dw = wb->d;
    return _mm256_loadu_si256((const __m256i *)wb->qs);
}

/* Each row on its own 256-bit lanes; the independent chains of the NX rows
 * (and of consecutive weight rows in flight) hide the FMA latency. */
static ALWAYS_INLINE void dot_q8x_nx(int is_q4, int64_t k, const void *w, const void *x, size_t xs, const int NX,
                                     float *out)
{
    const int64_t nb = k / 32;
    const lrun_block_q8_0 *xr[LRUN_DOT_MAX_ROWS];
    __m256 acc[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b) {
        uint32_t dw;
        const __m256i q = q8x_weights(is_q4, w, b, &dw);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const lrun_block_q8_0 *y = &xr[r][b];
            __m256 p = lanes_ss(q, _mm256_loadu_si256((const __m256i *)y->qs));
            /* both f16 scales in one conversion, then dw·dx in lane 0 */
            __m128 ds = _mm_cvtph_ps(_mm_cvtsi32_si128((int)(dw | (uint32_t)y->d << 16)));
            __m128 scale = _mm_mul_ss(ds, _mm_movehdup_ps(ds));
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(scale), p, acc[r]);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8(acc[r]);
}

// ---------------------------------------------------------------- Q4_1 · Q8_1

/* The weight's (d, m) halves convert in one instruction; lane 0 of their
 * product with the activation's adjacent (d, s) floats is dd = dw·dx, and
 * lane 1 of an FMA with them is the min term's chain summs = fma(mw, s,
 * summs) (lane 0 of macc unused). */
static ALWAYS_INLINE void dot_q4_1_nx(int64_t k, const lrun_block_q4_1 *w, const void *x, size_t xs, const int NX,
                                      float *out)
{
    const int64_t nb = k / LRUN_QK4_1;
    const lrun_block_q8_1 *xr[LRUN_DOT_MAX_ROWS];
    __m256 acc[LRUN_DOT_MAX_ROWS];
    __m128 macc[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r] = _mm256_setzero_ps();
        macc[r] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b) {
        uint32_t dm;
        memcpy(&dm, &w[b], 4);
        const __m128 wdm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dm));
        const __m256i q = nibbles32(w[b].qs);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const lrun_block_q8_1 *y = &xr[r][b];
            __m128 ds = _mm_castpd_ps(_mm_load_sd((const double *)&y->d));
            __m256 p = lanes_us(q, _mm256_loadu_si256((const __m256i *)y->qs));
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_mul_ss(wdm, ds)), p, acc[r]);
            macc[r] = _mm_fmadd_ps(wdm, ds, macc[r]);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8(acc[r]) + _mm_cvtss_f32(_mm_movehdup_ps(macc[r]));
}

// ---------------------------------------------------------------- Q5_0, Q5_1, IQ4_NL

static ALWAYS_INLINE void dot_q5_0_nx(int64_t k, const lrun_block_q5_0 *w, const void *x, size_t xs, const int NX,
                                      float *out)
{
    const lrun_block_q8_0 *xr[LRUN_DOT_MAX_ROWS];
    __m256 acc[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < k / 32; ++b) {
        const __m256i q = _mm256_sub_epi8(q5_quants(w[b].qs, w[b].qh), _mm256_set1_epi8(16));
        const float dw = _cvtsh_ss(w[b].d);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const __m256 dd = _mm256_set1_ps(dw * _cvtsh_ss(xr[r][b].d));
            acc[r] = _mm256_fmadd_ps(dd, lanes_ss(q, _mm256_loadu_si256((const __m256i *)xr[r][b].qs)), acc[r]);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8(acc[r]);
}

/* Σ (q·dw + mw)·(qx·dx) = dw·dx·Σ q·qx + mw·s, s being Q8_1's dx·Σ qx. */
static ALWAYS_INLINE void dot_q5_1_nx(int64_t k, const lrun_block_q5_1 *w, const void *x, size_t xs, const int NX,
                                      float *out)
{
    const lrun_block_q8_1 *xr[LRUN_DOT_MAX_ROWS];
    __m256 acc[LRUN_DOT_MAX_ROWS];
    float summs[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r] = _mm256_setzero_ps();
        summs[r] = 0.0f;
    }
    for (int64_t b = 0; b < k / 32; ++b) {
        const __m256i q = q5_quants(w[b].qs, w[b].qh);
        const float dw = _cvtsh_ss(w[b].d), mw = _cvtsh_ss(w[b].m);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            summs[r] = fmaf(mw, xr[r][b].s, summs[r]);
            const __m256 dd = _mm256_set1_ps(dw * xr[r][b].d);
            acc[r] = _mm256_fmadd_ps(dd, lanes_us(q, _mm256_loadu_si256((const __m256i *)xr[r][b].qs)), acc[r]);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8(acc[r]) + summs[r];
}

/* The 16 IQ4 values as a 128-bit table for pshufb, in both lanes. */
static ALWAYS_INLINE __m256i iq4_table(void)
{
    const __m128i t = _mm_loadu_si128((const __m128i *)lrun_kvalues_iq4nl);
    return _mm256_set_m128i(t, t);
}

/* llama.cpp's two accumulators, even and odd blocks. */
static ALWAYS_INLINE void dot_iq4_nl_nx(int64_t k, const lrun_block_iq4_nl *w, const void *x, size_t xs, const int NX,
                                        float *out)
{
    const __m256i table = iq4_table();
    const lrun_block_q8_0 *xr[LRUN_DOT_MAX_ROWS];
    __m256 acc[LRUN_DOT_MAX_ROWS][2]; /* even and odd blocks */
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < k / 32; ++b) {
        const __m256i v = _mm256_shuffle_epi8(table, nibbles32(w[b].qs));
        const float dw = _cvtsh_ss(w[b].d);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const __m256 dd = _mm256_set1_ps(_cvtsh_ss(xr[r][b].d) * dw);
            acc[r][b & 1] =
                _mm256_fmadd_ps(dd, lanes_ss(v, _mm256_loadu_si256((const __m256i *)xr[r][b].qs)), acc[r][b & 1]);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8(_mm256_add_ps(acc[r][0], acc[r][1]));
}

#endif
