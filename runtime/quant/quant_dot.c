/* quant_dot.c — dot products of weight rows with activation rows: the float
 * types and the 32-element block types (Q4_0·Q8_0, Q4_1·Q8_1, Q8_0·Q8_0).
 * The K-quants are in quant_dot_k.c.
 *
 * Integer block dots follow ggml's idea: keep both sides as 8-bit integers,
 * multiply-add them with maddubs (u8 × s8 → s16 pairs) and madd (→ s32), and
 * apply the two block scales once per block, with llama.cpp's x86 arithmetic
 * to the bit (docs/numerics.md). Each kernel takes up to LRUN_DOT_MAX_ROWS
 * activation rows so that a weight block is unpacked once and used for all
 * of them (prefill). */
#include "quant/quant_dot.h"
#include "quant/quant_dot_nx.h"

#include <math.h>
#include <string.h>
#if defined(LRUN_HAVE_AVX2)
#include <immintrin.h>
#endif

/* Cores that split 256-bit operations into two 128-bit µops (AMD Zen 1,
 * -march=native gives __znver1__) take the 128-bit kernels for the 32-element
 * block types; LRUN_SPLIT_256=0/1 on the command line overrides. */
#if !defined(LRUN_SPLIT_256) && defined(__znver1__)
#define LRUN_SPLIT_256 1
#endif
#if defined(LRUN_SPLIT_256) && !LRUN_SPLIT_256
#undef LRUN_SPLIT_256
#endif

#define ALWAYS_INLINE inline __attribute__((always_inline))
/* Loops over the NX rows (and the few blocks of a step) must be unrolled so
 * their accumulators live in registers. */
#define UNROLL _Pragma("GCC unroll 8")

// ---------------------------------------------------------------- scalar reference kernels

static float dot1_f32(int64_t k, const float *w, const float *x)
{
    float s = 0.0f;
    for (int64_t i = 0; i < k; ++i) s += w[i] * x[i];
    return s;
}

static float dot1_f16(int64_t k, const uint16_t *w, const float *x)
{
    float s = 0.0f;
    for (int64_t i = 0; i < k; ++i) s += lrun_f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot1_bf16(int64_t k, const uint16_t *w, const float *x)
{
    float s = 0.0f;
    for (int64_t i = 0; i < k; ++i) s += lrun_bf16_to_f32(w[i]) * x[i];
    return s;
}

/* The 32-element block types follow llama.cpp's x86 kernels exactly
 * (ggml_vec_dot_q4_0_q8_0, q4_1_q8_1, q8_0_q8_0; docs/numerics.md §4-5),
 * so that a forward pass reproduces its bits: 8 lanes, lane l holding the
 * exact integer sum of the 4 products of elements 4l..4l+3; per block
 * acc[l] = fma(dd, lane[l], acc[l]) with dd = dw·dx an f32 product; for
 * Q4_1 the min term summs = fma(mw, s, summs); the result hsum8(acc)
 * (+ summs). Every lane is its own chain over the blocks in order, so
 * vector widths and row grouping change nothing, and the SIMD kernels
 * below give these bits exactly. */

/* AVX's horizontal sum of 8 lanes: t[i] = a[i+4] + a[i], then (t0 + t2) + (t1 + t3). */
static inline float hsum8_ref(const float a[8])
{
    const float t0 = a[4] + a[0], t1 = a[5] + a[1], t2 = a[6] + a[2], t3 = a[7] + a[3];
    return (t0 + t2) + (t1 + t3);
}

/* Element e of a Q4 block (0..15): low nibbles are 0..15, high nibbles 16..31. */
static inline int nib(const uint8_t *qs, int e) { return e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4; }

static float dot1_q4_0(int64_t k, const lrun_block_q4_0 *w, const lrun_block_q8_0 *x)
{
    float acc[8] = {0};
    for (int64_t b = 0; b < k / LRUN_QK4_0; ++b) {
        const float dd = lrun_f16_to_f32(w[b].d) * lrun_f16_to_f32(x[b].d);
        for (int l = 0; l < 8; ++l) {
            int lane = 0;
            for (int e = 4 * l; e < 4 * l + 4; ++e) lane += (nib(w[b].qs, e) - 8) * x[b].qs[e];
            acc[l] = fmaf(dd, (float)lane, acc[l]);
        }
    }
    return hsum8_ref(acc);
}

/* Σ (q·dw + mw)·(qx·dx) = dw·dx·Σ q·qx + mw·(dx·Σ qx), the last factor being Q8_1's s. */
static float dot1_q4_1(int64_t k, const lrun_block_q4_1 *w, const lrun_block_q8_1 *x)
{
    float acc[8] = {0}, summs = 0.0f;
    for (int64_t b = 0; b < k / LRUN_QK4_1; ++b) {
        summs = fmaf(lrun_f16_to_f32(w[b].m), x[b].s, summs);
        const float dd = lrun_f16_to_f32(w[b].d) * x[b].d;
        for (int l = 0; l < 8; ++l) {
            int lane = 0;
            for (int e = 4 * l; e < 4 * l + 4; ++e) lane += nib(w[b].qs, e) * x[b].qs[e];
            acc[l] = fmaf(dd, (float)lane, acc[l]);
        }
    }
    return hsum8_ref(acc) + summs;
}

static float dot1_q8_0(int64_t k, const lrun_block_q8_0 *w, const lrun_block_q8_0 *x)
{
    float acc[8] = {0};
    for (int64_t b = 0; b < k / LRUN_QK8_0; ++b) {
        const float dd = lrun_f16_to_f32(w[b].d) * lrun_f16_to_f32(x[b].d);
        for (int l = 0; l < 8; ++l) {
            int lane = 0;
            for (int e = 4 * l; e < 4 * l + 4; ++e) lane += w[b].qs[e] * x[b].qs[e];
            acc[l] = fmaf(dd, (float)lane, acc[l]);
        }
    }
    return hsum8_ref(acc);
}

#define ROW(x, r, stride) ((const void *)((const char *)(x) + (size_t)(r) * (stride)))

static void dot_f32_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_f32(k, w, ROW(x, r, xs));
}
static void dot_f16_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_f16(k, w, ROW(x, r, xs));
}
static void dot_bf16_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_bf16(k, w, ROW(x, r, xs));
}
static void dot_q4_0_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_q4_0(k, w, ROW(x, r, xs));
}
static void dot_q4_1_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_q4_1(k, w, ROW(x, r, xs));
}
static void dot_q8_0_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_q8_0(k, w, ROW(x, r, xs));
}

// ---------------------------------------------------------------- AVX2 helpers

#if defined(LRUN_HAVE_AVX2)

#include "quant/quant_dot_avx2.h"
#include "quant/quant_dot_walk.h"

// ---------------------------------------------------------------- AVX2: float weights

/* The walk is quant_dot_walk_float.h's (the AVX-512 level shares it). The
 * multi-row form takes FLOAT_GEMM_TW weight rows against FLOAT_GEMM_TX
 * activation rows: 2 × 3 keeps its 12 accumulators, 2 weight vectors and
 * one activation vector in AVX2's 16 ymm registers. */
#include "quant/quant_dot_walk_float.h"

#ifndef FLOAT_GEMM_TW
#define FLOAT_GEMM_TW 2
#endif
#ifndef FLOAT_GEMM_TX
#define FLOAT_GEMM_TX 3
#endif

static DOT_NX_FN_KIND(dot_f32_avx2, dot_float_nx, 0)
static DOT_NX_FN_KIND(dot_f16_avx2, dot_float_nx, 1)
static DOT_NX_FN_KIND(dot_bf16_avx2, dot_float_nx, 2)

#define FLOAT_GEMM_FN(name, kind)                                                                            \
    static void name(int64_t k, const void *w, size_t ws, int64_t nw, const void *x, size_t xs, int64_t nx,  \
                     float *y, int64_t ldy)                                                                  \
    {                                                                                                        \
        dot_float_gemm(kind, k, w, ws, nw, x, xs, nx, y, ldy, FLOAT_GEMM_TW, FLOAT_GEMM_TX);                 \
    }
FLOAT_GEMM_FN(gemm_f32_avx2, 0)
FLOAT_GEMM_FN(gemm_f16_avx2, 1)
FLOAT_GEMM_FN(gemm_bf16_avx2, 2)

// ---------------------------------------------------------------- AVX2: 32-element blocks

/* The walks are quant_dot_walk.h's, over quant_dot_avx2.h's lane helpers. */
static DOT_NX_FN(dot_q4_1_avx2, dot_q4_1_nx)
static DOT_NX_FN_KIND(dot_q4_0_avx2, dot_q8x_nx, 1)
static DOT_NX_FN_KIND(dot_q8_0_avx2, dot_q8x_nx, 0)

// ---------------------------------------------------------------- AVX2, 128-bit form

/* The same lanes on 128-bit vectors: lanes 0-3 (elements 0..15) and 4-7
 * (16..31) of a block are two accumulators, lo and hi, and the final sum
 * hsum8(hi:lo) is the 256-bit one. On Zen 1 every 256-bit operation is two
 * 128-bit µops, so this form saves the 256-bit nibble unpacking there. */

/* hsum8 of the 8 lanes lo (0..3), hi (4..7). */
static ALWAYS_INLINE float hsum8_128(__m128 lo, __m128 hi)
{
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Σ u·s over 16 byte pairs (u unsigned ≤ 128, s signed), as 4 float lanes of 4 products each. */
static ALWAYS_INLINE __m128 dot_us8_128(__m128i u, __m128i s)
{
    return _mm_cvtepi32_ps(_mm_madd_epi16(_mm_maddubs_epi16(u, s), _mm_set1_epi16(1)));
}

/* For one or two rows: each row's (d, s) pair multiplies the weight's
 * (d, m) in one instruction, lane 0 giving dd = dw·dx, and lane 1 of an FMA
 * with them carrying the min term's chain summs = fma(mw, s, summs). */
static ALWAYS_INLINE void q4_1_block_128_pr(const lrun_block_q4_1 *wb, const lrun_block_q8_1 *const *xb, int64_t b,
                                         const int NX, __m128 *lo, __m128 *hi, __m128 *macc)
{
    uint32_t dm;
    memcpy(&dm, wb, 4);
    __m128 wdm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dm));
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m128i t = _mm_loadu_si128((const __m128i *)wb->qs);
    __m128i q0 = _mm_and_si128(t, m4), q1 = _mm_and_si128(_mm_srli_epi16(t, 4), m4); /* elements 0-15, 16-31 */
    UNROLL
    for (int r = 0; r < NX; ++r) {
        const lrun_block_q8_1 *y = &xb[r][b];
        __m128 ds = _mm_castpd_ps(_mm_load_sd((const double *)&y->d));
        __m128 dd = _mm_broadcastss_ps(_mm_mul_ss(wdm, ds));
        lo[r] = _mm_fmadd_ps(dd, dot_us8_128(q0, _mm_loadu_si128((const __m128i *)y->qs)), lo[r]);
        hi[r] = _mm_fmadd_ps(dd, dot_us8_128(q1, _mm_loadu_si128((const __m128i *)(y->qs + 16))), hi[r]);
        macc[r] = _mm_fmadd_ps(wdm, ds, macc[r]);
    }
}

static ALWAYS_INLINE void dot_q4_1_nx_128_pr(int64_t k, const lrun_block_q4_1 *w, const void *x, size_t xs, const int NX,
                                          float *out)
{
    const int64_t nb = k / LRUN_QK4_1;
    const lrun_block_q8_1 *xr[LRUN_DOT_MAX_ROWS];
    __m128 lo[LRUN_DOT_MAX_ROWS], hi[LRUN_DOT_MAX_ROWS], macc[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        lo[r] = hi[r] = macc[r] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b) q4_1_block_128_pr(&w[b], xr, b, NX, lo, hi, macc);
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8_128(lo[r], hi[r]) + _mm_cvtss_f32(_mm_movehdup_ps(macc[r]));
}

/* Lane r of v broadcast to all 4 (r a constant once unrolled). */
static ALWAYS_INLINE __m128 lane_bcast(__m128 v, int r)
{
    switch (r) {
    case 0: return _mm_shuffle_ps(v, v, 0x00);
    case 1: return _mm_shuffle_ps(v, v, 0x55);
    case 2: return _mm_shuffle_ps(v, v, 0xAA);
    default: return _mm_shuffle_ps(v, v, 0xFF);
    }
}

/* For three or four rows, where per-row (d, s) registers would spill: the rows' (d, s) pairs are
 * gathered into D = (d_0..d_3) and S = (s_0..s_3): one multiply gives every
 * row's dd = dw·d_r, one FMA advances every row's min-term chain (lane r:
 * summs_r = fma(mw, s_r, summs_r)), and few registers stay live. */
static ALWAYS_INLINE void q4_1_block_128(const lrun_block_q4_1 *wb, const lrun_block_q8_1 *const *xb, int64_t b,
                                         const int NX, __m128 *lo, __m128 *hi, __m128 *summs)
{
    uint32_t dm;
    memcpy(&dm, wb, 4);
    const __m128 wdm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dm));
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m128i t = _mm_loadu_si128((const __m128i *)wb->qs);
    __m128i q0 = _mm_and_si128(t, m4), q1 = _mm_and_si128(_mm_srli_epi16(t, 4), m4); /* elements 0-15, 16-31 */
    __m128 a01 = _mm_castpd_ps(_mm_load_sd((const double *)&xb[0][b].d)), a23 = a01;
    if (NX > 1) a01 = _mm_loadh_pi(a01, (const __m64 *)&xb[1][b].d);
    if (NX > 2) a23 = _mm_castpd_ps(_mm_load_sd((const double *)&xb[2][b].d));
    if (NX > 3) a23 = _mm_loadh_pi(a23, (const __m64 *)&xb[3][b].d);
    const __m128 D = _mm_shuffle_ps(a01, a23, _MM_SHUFFLE(2, 0, 2, 0)), S = _mm_shuffle_ps(a01, a23, _MM_SHUFFLE(3, 1, 3, 1));
    *summs = _mm_fmadd_ps(_mm_shuffle_ps(wdm, wdm, 0x55), S, *summs);
    const __m128 DD = _mm_mul_ps(_mm_broadcastss_ps(wdm), D);
    UNROLL
    for (int r = 0; r < NX; ++r) {
        const lrun_block_q8_1 *y = &xb[r][b];
        const __m128 dd = lane_bcast(DD, r);
        lo[r] = _mm_fmadd_ps(dd, dot_us8_128(q0, _mm_loadu_si128((const __m128i *)y->qs)), lo[r]);
        hi[r] = _mm_fmadd_ps(dd, dot_us8_128(q1, _mm_loadu_si128((const __m128i *)(y->qs + 16))), hi[r]);
    }
}

static ALWAYS_INLINE void dot_q4_1_nx_128(int64_t k, const lrun_block_q4_1 *w, const void *x, size_t xs, const int NX,
                                          float *out)
{
    const int64_t nb = k / LRUN_QK4_1;
    const lrun_block_q8_1 *xr[LRUN_DOT_MAX_ROWS];
    __m128 lo[LRUN_DOT_MAX_ROWS], hi[LRUN_DOT_MAX_ROWS], summs = _mm_setzero_ps();
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        lo[r] = hi[r] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b) q4_1_block_128(&w[b], xr, b, NX, lo, hi, &summs);
    float sm[4];
    _mm_storeu_ps(sm, summs);
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8_128(lo[r], hi[r]) + sm[r];
}

static ALWAYS_INLINE void q8x_block_128(int is_q4, const void *w, const lrun_block_q8_0 *const *xb, int64_t b,
                                        const int NX, __m128 *lo, __m128 *hi)
{
    __m128i q0, q1; /* elements 0-15, 16-31 */
    uint32_t dw; /* the weight's f16 scale, bits */
    if (is_q4) {
        const lrun_block_q4_0 *wb = (const lrun_block_q4_0 *)w + b;
        const __m128i m4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
        __m128i t = _mm_loadu_si128((const __m128i *)wb->qs);
        q0 = _mm_sub_epi8(_mm_and_si128(t, m4), eight);
        q1 = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(t, 4), m4), eight);
        dw = wb->d;
    } else {
        const lrun_block_q8_0 *wb = (const lrun_block_q8_0 *)w + b;
        q0 = _mm_loadu_si128((const __m128i *)wb->qs);
        q1 = _mm_loadu_si128((const __m128i *)(wb->qs + 16));
        dw = wb->d;
    }
    __m128i a0 = _mm_sign_epi8(q0, q0), a1 = _mm_sign_epi8(q1, q1);
    UNROLL
    for (int r = 0; r < NX; ++r) {
        const lrun_block_q8_0 *y = &xb[r][b];
        __m128 p0 = dot_us8_128(a0, _mm_sign_epi8(_mm_loadu_si128((const __m128i *)y->qs), q0));
        __m128 p1 = dot_us8_128(a1, _mm_sign_epi8(_mm_loadu_si128((const __m128i *)(y->qs + 16)), q1));
        /* both f16 scales in one conversion, then dw·dx in lane 0 */
        __m128 ds = _mm_cvtph_ps(_mm_cvtsi32_si128((int)(dw | (uint32_t)y->d << 16)));
        __m128 dd = _mm_broadcastss_ps(_mm_mul_ss(ds, _mm_movehdup_ps(ds)));
        lo[r] = _mm_fmadd_ps(dd, p0, lo[r]);
        hi[r] = _mm_fmadd_ps(dd, p1, hi[r]);
    }
}

static ALWAYS_INLINE void dot_q8x_nx_128(int is_q4, int64_t k, const void *w, const void *x, size_t xs,
                                         const int NX, float *out)
{
    const int64_t nb = k / 32;
    const lrun_block_q8_0 *xr[LRUN_DOT_MAX_ROWS];
    __m128 lo[LRUN_DOT_MAX_ROWS], hi[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        lo[r] = hi[r] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b) q8x_block_128(is_q4, w, xr, b, NX, lo, hi);
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = hsum8_128(lo[r], hi[r]);
}

static void dot_q4_1_avx128(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    switch (nx) {
    case 1: dot_q4_1_nx_128_pr(k, w, x, xs, 1, out); break;
    case 2: dot_q4_1_nx_128_pr(k, w, x, xs, 2, out); break;
    case 3: dot_q4_1_nx_128(k, w, x, xs, 3, out); break;
    default: dot_q4_1_nx_128(k, w, x, xs, 4, out); break;
    }
}
static DOT_NX_FN_KIND(dot_q4_0_avx128, dot_q8x_nx_128, 1)
static DOT_NX_FN_KIND(dot_q8_0_avx128, dot_q8x_nx_128, 0)

#endif /* LRUN_HAVE_AVX2 */

// ---------------------------------------------------------------- dispatch

lrun_dtype lrun_dot_partner(lrun_dtype weight_dtype)
{
    switch (weight_dtype) {
    case LRUN_DTYPE_Q4_0:
    case LRUN_DTYPE_Q5_0:
    case LRUN_DTYPE_IQ4_NL:
    case LRUN_DTYPE_MXFP4:
    case LRUN_DTYPE_Q8_0: return LRUN_DTYPE_Q8_0;
    case LRUN_DTYPE_Q4_1:
    case LRUN_DTYPE_Q5_1: return LRUN_DTYPE_Q8_1;
    case LRUN_DTYPE_Q2_K:
    case LRUN_DTYPE_Q3_K:
    case LRUN_DTYPE_Q4_K:
    case LRUN_DTYPE_Q5_K:
    case LRUN_DTYPE_Q6_K:
    case LRUN_DTYPE_IQ4_XS: return LRUN_DTYPE_Q8_K;
    default: return LRUN_DTYPE_F32;
    }
}

lrun_dot_fn lrun_dot_kernel_scalar(lrun_dtype weight_dtype)
{
    switch (weight_dtype) {
    case LRUN_DTYPE_F32: return dot_f32_scalar;
    case LRUN_DTYPE_F16: return dot_f16_scalar;
    case LRUN_DTYPE_BF16: return dot_bf16_scalar;
    case LRUN_DTYPE_Q4_0: return dot_q4_0_scalar;
    case LRUN_DTYPE_Q4_1: return dot_q4_1_scalar;
    case LRUN_DTYPE_Q8_0: return dot_q8_0_scalar;
    case LRUN_DTYPE_Q4_K: return lrun_dot_q4_K_scalar;
    case LRUN_DTYPE_Q6_K: return lrun_dot_q6_K_scalar;
    case LRUN_DTYPE_Q5_0: return lrun_dot_q5_0_scalar;
    case LRUN_DTYPE_Q5_1: return lrun_dot_q5_1_scalar;
    case LRUN_DTYPE_Q2_K: return lrun_dot_q2_K_scalar;
    case LRUN_DTYPE_Q3_K: return lrun_dot_q3_K_scalar;
    case LRUN_DTYPE_Q5_K: return lrun_dot_q5_K_scalar;
    case LRUN_DTYPE_IQ4_NL: return lrun_dot_iq4_nl_scalar;
    case LRUN_DTYPE_IQ4_XS: return lrun_dot_iq4_xs_scalar;
    case LRUN_DTYPE_MXFP4: return lrun_dot_mxfp4_scalar;
    default: return NULL;
    }
}

int lrun_dot_kernels(lrun_dtype weight_dtype, lrun_dot_fn *fns, const char **names, int max)
{
    int n = 0;
#define ADD(fn, name)                                                                                        \
    do {                                                                                                     \
        if (n < max) {                                                                                       \
            fns[n] = (fn);                                                                                   \
            names[n] = (name);                                                                               \
        }                                                                                                    \
        ++n;                                                                                                 \
    } while (0)
#if defined(LRUN_HAVE_AVX512)
    lrun_dot_fn wide = lrun_dot_kernel_avx512(weight_dtype);
    if (wide && lrun_cpu_isa_supported(LRUN_CPU_ISA_AVX512)) ADD(wide, "avx512");
#endif
#if defined(LRUN_HAVE_AVX2)
    switch (weight_dtype) {
    case LRUN_DTYPE_F32: ADD(dot_f32_avx2, "avx2"); break;
    case LRUN_DTYPE_F16: ADD(dot_f16_avx2, "avx2"); break;
    case LRUN_DTYPE_BF16: ADD(dot_bf16_avx2, "avx2"); break;
    case LRUN_DTYPE_Q4_0:
        ADD(dot_q4_0_avx2, "avx2");
        ADD(dot_q4_0_avx128, "avx2-128");
        break;
    case LRUN_DTYPE_Q4_1:
        ADD(dot_q4_1_avx2, "avx2");
        ADD(dot_q4_1_avx128, "avx2-128");
        break;
    case LRUN_DTYPE_Q8_0:
        ADD(dot_q8_0_avx2, "avx2");
        ADD(dot_q8_0_avx128, "avx2-128");
        break;
    case LRUN_DTYPE_Q4_K:
        ADD(lrun_dot_q4_K_avx2, "avx2");
        ADD(lrun_dot_q4_K_avx128, "avx2-128");
        break;
    case LRUN_DTYPE_Q6_K: ADD(lrun_dot_q6_K_avx2, "avx2"); break;
    case LRUN_DTYPE_Q5_0: ADD(lrun_dot_q5_0_avx2, "avx2"); break;
    case LRUN_DTYPE_Q5_1: ADD(lrun_dot_q5_1_avx2, "avx2"); break;
    case LRUN_DTYPE_IQ4_NL: ADD(lrun_dot_iq4_nl_avx2, "avx2"); break;
    case LRUN_DTYPE_Q5_K: ADD(lrun_dot_q5_K_avx2, "avx2"); break;
    case LRUN_DTYPE_Q2_K: ADD(lrun_dot_q2_K_avx2, "avx2"); break;
    case LRUN_DTYPE_Q3_K: ADD(lrun_dot_q3_K_avx2, "avx2"); break;
    case LRUN_DTYPE_IQ4_XS: ADD(lrun_dot_iq4_xs_avx2, "avx2"); break;
    case LRUN_DTYPE_MXFP4: ADD(lrun_dot_mxfp4_avx2, "avx2"); break;
    default: break;
    }
#endif
    lrun_dot_fn scalar = lrun_dot_kernel_scalar(weight_dtype);
    if (scalar) ADD(scalar, "scalar");
#undef ADD
    return n;
}

lrun_dot_fn lrun_dot_kernel(lrun_dtype weight_dtype)
{
    const lrun_cpu_isa isa = lrun_cpu_isa_get();
#if defined(LRUN_HAVE_AVX512)
    if (isa == LRUN_CPU_ISA_AVX512) {
        lrun_dot_fn wide = lrun_dot_kernel_avx512(weight_dtype);
        if (wide) return wide;
    }
#endif
    if (isa == LRUN_CPU_ISA_SCALAR) return lrun_dot_kernel_scalar(weight_dtype);
#if defined(LRUN_HAVE_AVX2)
    switch (weight_dtype) {
    case LRUN_DTYPE_F32: return dot_f32_avx2;
    case LRUN_DTYPE_F16: return dot_f16_avx2;
    case LRUN_DTYPE_BF16: return dot_bf16_avx2;
#if defined(LRUN_SPLIT_256)
    case LRUN_DTYPE_Q4_0: return dot_q4_0_avx128;
    case LRUN_DTYPE_Q4_1: return dot_q4_1_avx128;
    case LRUN_DTYPE_Q8_0: return dot_q8_0_avx128;
    case LRUN_DTYPE_Q4_K: return lrun_dot_q4_K_avx128;
#else
    case LRUN_DTYPE_Q4_0: return dot_q4_0_avx2;
    case LRUN_DTYPE_Q4_1: return dot_q4_1_avx2;
    case LRUN_DTYPE_Q8_0: return dot_q8_0_avx2;
    case LRUN_DTYPE_Q4_K: return lrun_dot_q4_K_avx2;
#endif
    case LRUN_DTYPE_Q6_K: return lrun_dot_q6_K_avx2;
    case LRUN_DTYPE_Q5_0: return lrun_dot_q5_0_avx2;
    case LRUN_DTYPE_Q5_1: return lrun_dot_q5_1_avx2;
    case LRUN_DTYPE_IQ4_NL: return lrun_dot_iq4_nl_avx2;
    case LRUN_DTYPE_Q5_K: return lrun_dot_q5_K_avx2;
    case LRUN_DTYPE_Q2_K: return lrun_dot_q2_K_avx2;
    case LRUN_DTYPE_Q3_K: return lrun_dot_q3_K_avx2;
    case LRUN_DTYPE_IQ4_XS: return lrun_dot_iq4_xs_avx2;
    case LRUN_DTYPE_MXFP4: return lrun_dot_mxfp4_avx2;
    default: return lrun_dot_kernel_scalar(weight_dtype);
    }
#else
    return lrun_dot_kernel_scalar(weight_dtype);
#endif
}

/* The AVX2 multi-row kernel of a float type, or NULL. */
static lrun_gemm_fn gemm_kernel_avx2(lrun_dtype weight_dtype)
{
#if defined(LRUN_HAVE_AVX2)
    switch (weight_dtype) {
    case LRUN_DTYPE_F32: return gemm_f32_avx2;
    case LRUN_DTYPE_F16: return gemm_f16_avx2;
    case LRUN_DTYPE_BF16: return gemm_bf16_avx2;
    default: return NULL;
    }
#else
    (void)weight_dtype;
    return NULL;
#endif
}

lrun_gemm_fn lrun_gemm_kernel(lrun_dtype weight_dtype)
{
    const lrun_cpu_isa isa = lrun_cpu_isa_get();
#if defined(LRUN_HAVE_AVX512)
    if (isa == LRUN_CPU_ISA_AVX512) {
        lrun_gemm_fn wide = lrun_gemm_kernel_avx512(weight_dtype);
        if (wide) return wide;
    }
#endif
    /* the scalar level's float dots sum in another order: no multi-row form */
    return isa == LRUN_CPU_ISA_SCALAR ? NULL : gemm_kernel_avx2(weight_dtype);
}

lrun_gemm_fn lrun_gemv_kernel(lrun_dtype weight_dtype)
{
#if defined(LRUN_HAVE_AVX512)
    if (lrun_cpu_isa_get() == LRUN_CPU_ISA_AVX512) return lrun_gemv_kernel_avx512(weight_dtype);
#endif
    (void)weight_dtype;
    return NULL;
}

int lrun_gemm_kernels(lrun_dtype weight_dtype, lrun_gemm_fn *fns, const char **names, int max)
{
    int n = 0;
#if defined(LRUN_HAVE_AVX512)
    lrun_gemm_fn wide = lrun_gemm_kernel_avx512(weight_dtype);
    if (wide && lrun_cpu_isa_supported(LRUN_CPU_ISA_AVX512)) {
        if (n < max) {
            fns[n] = wide;
            names[n] = "avx512";
        }
        ++n;
    }
#endif
    lrun_gemm_fn avx2 = gemm_kernel_avx2(weight_dtype);
    if (avx2) {
        if (n < max) {
            fns[n] = avx2;
            names[n] = "avx2";
        }
        ++n;
    }
    return n;
}

float lrun_vec_dot(lrun_dtype weight_dtype, int64_t n, const void *w, const void *x)
{
    lrun_dot_fn fn = lrun_dot_kernel(weight_dtype);
    float out = 0.0f;
    if (fn) fn(n, w, x, 0, 1, &out);
    return out;
}
