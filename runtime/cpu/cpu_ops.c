/* cpu_ops.c — element-wise and attention ops of the CPU forward pass (f32 compute).
 *
 * The ops follow llama.cpp's x86 CPU arithmetic to the bit (docs/numerics.md):
 * the same exp (ggml_v_expf), the same accumulation orders in the norms, the
 * softmax and the attention dots, the same FMAs. The hot loops have
 * AVX2/F16C/FMA paths, taken when the build targets them (-march=native);
 * the scalar paths compute exactly the same bits. */
#include "core/bits.h"
#include "cpu/cpu_ops.h"

#include <math.h>
#include <string.h>

#include "core/error.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

#include <stdatomic.h>

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#define LRUN_OPS_AVX2 1
#include <immintrin.h>
#endif

// ---------------------------------------------------------------- reductions and exp

/* AVX's horizontal sum of 8 lanes (ggml's hsum_float_8, tinyBLAS's hsum):
 * t[i] = a[i+4] + a[i], then (t0 + t2) + (t1 + t3). */
static inline float hsum8_ref(const float a[8])
{
    const float t0 = a[4] + a[0], t1 = a[5] + a[1], t2 = a[6] + a[2], t3 = a[7] + a[3];
    return (t0 + t2) + (t1 + t3);
}

/* ggml_vec_dot_f32's reduction of its 4 accumulators of 8 lanes:
 * a0 += a2, a1 += a3, a0 += a1 lane-wise, t[i] = a0[i] + a0[i+4], (t0 + t1) + (t2 + t3). */
static inline float reduce4x8_ref(float a[4][8])
{
    float t[4];
    for (int l = 0; l < 8; l++) {
        a[0][l] += a[2][l];
        a[1][l] += a[3][l];
        a[0][l] += a[1][l];
    }
    for (int i = 0; i < 4; i++) t[i] = a[0][i] + a[0][i + 4];
    return (t[0] + t[1]) + (t[2] + t[3]);
}

/* ggml_v_expf (its AVX2+FMA form) on one float: e^x as 2^n · (1 + j) with n =
 * round(x / ln2) found by the 1.5·2^23 shift, a degree-5 polynomial j, and
 * two scalings where 2^n leaves the normal range. x = -inf gives 0. */
static inline float v_expf1(float x)
{
    const float r = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    const uint32_t e = f32_bits(z) << 23;
    const float k = bits_f32(e + f32_bits(1.0f));
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                         u, 0x1.ffffecp-1f * b);
    if (!(fabsf(n) > 126.0f)) return fmaf(j, k, k);
    const uint32_t g = n <= 0.0f ? 0x82000000u : 0u;
    const float s1 = bits_f32(g + 0x7f000000u), s2 = bits_f32(e - g);
    return fabsf(n) > 192.0f ? s1 * s1 : fmaf(s2, j, s2) * s1;
}

#ifdef LRUN_OPS_AVX2
static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* v_expf1 on 8 lanes (ggml_v_expf itself). */
static inline __m256 v_expf8(__m256 x)
{
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0f))));
    const __m256 an = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256 c = _mm256_cmp_ps(an, _mm256_set1_ps(126.0f), _CMP_GT_OQ);
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    const __m256 normal = _mm256_fmadd_ps(j, k, k);
    if (!_mm256_movemask_ps(c)) return normal;
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32((int)0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256 d = _mm256_cmp_ps(an, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    const __m256 scaled = _mm256_blendv_ps(normal, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1), c);
    return _mm256_blendv_ps(scaled, _mm256_mul_ps(s1, s1), d);
}
#endif

// ---------------------------------------------------------------- f16 rows

void lrun_cpu_f16_from_f32(uint16_t *dst, const float *src, int64_t n)
{
    int64_t i = 0;
#ifdef LRUN_OPS_AVX2
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) dst[i] = lrun_f32_to_f16(src[i]);
}

void lrun_cpu_f32_from_f16(float *dst, const uint16_t *src, int64_t n)
{
    int64_t i = 0;
#ifdef LRUN_OPS_AVX2
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++) dst[i] = lrun_f16_to_f32(src[i]);
}

// ---------------------------------------------------------------- norms and activations

void lrun_cpu_rms_norm(float *y, const float *x, const float *w, int64_t n, float eps)
{
    /* ggml: f32 squares summed in order into a double, the mean and the
     * scale in f32, then (x·scale)·w, two roundings */
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

void lrun_cpu_swiglu(float *g, const float *u, int64_t n)
{
    /* ggml_vec_swiglu_f32: groups of 8 through v_expf, the rest through expf */
    const int64_t n8 = n - n % 8;
    int64_t i = 0;
#ifdef LRUN_OPS_AVX2
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i < n8; i += 8) {
        __m256 a = _mm256_loadu_ps(g + i);
        __m256 e = v_expf8(_mm256_sub_ps(_mm256_setzero_ps(), a));
        __m256 s = _mm256_div_ps(a, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
#endif
    for (; i < n8; i++) g[i] = (g[i] / (1.0f + v_expf1(0.0f - g[i]))) * u[i];
    for (; i < n; i++) g[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
}

void lrun_cpu_scale(float *y, float s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] *= s;
}

/* ggml_gelu_f32, the value ggml's table holds for an f16 input (before its rounding to f16). */
static float gelu_tanh(float x)
{
    const float coef_a = 0.044715f, sqrt_2_over_pi = 0.79788456080286535587989211986876f;
    return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + coef_a * x * x)));
}

void lrun_cpu_geglu(float *g, const float *u, int64_t n)
{
    /* the table lookup computed in place: the same f16 in, the same f16 out */
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i];
        if (x <= -10.0f) g[i] = 0.0f;
        else if (x >= 10.0f) g[i] = x * u[i];
        else g[i] = lrun_f16_to_f32(lrun_f32_to_f16(gelu_tanh(lrun_f16_to_f32(lrun_f32_to_f16(x))))) * u[i];
    }
}

void lrun_cpu_softcap(float *x, int64_t n, float cap)
{
    const float inv = 1.0f / cap;
    for (int64_t i = 0; i < n; i++) x[i] = tanhf(x[i] * inv) * cap;
}

/* e = exp(x - mx) in place, returns their sum: ggml_vec_soft_max_f32's
 * groups of 8 through v_expf, each group's hsum8 added into a double, the
 * rest through expf. */
static double softmax_exp(float *x, int64_t n, float mx)
{
    const int64_t n8 = n - n % 8;
    double sum = 0.0;
    int64_t i = 0;
#ifdef LRUN_OPS_AVX2
    const __m256 vmx = _mm256_set1_ps(mx);
    for (; i < n8; i += 8) {
        __m256 e = v_expf8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        _mm256_storeu_ps(x + i, e);
        sum += (double)hsum8(e);
    }
#endif
    for (; i < n8; i += 8) {
        for (int l = 0; l < 8; l++) x[i + l] = v_expf1(x[i + l] - mx);
        sum += (double)hsum8_ref(x + i);
    }
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += (double)x[i];
    }
    return sum;
}

void lrun_cpu_softmax(float *x, int64_t n)
{
    /* ggml_vec_soft_max_f32 and its caller: every e times (float)(1/sum) */
    if (n <= 0) return;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    const float inv = (float)(1.0 / softmax_exp(x, n, mx));
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void lrun_cpu_softmax_sink(float *x, int64_t n, float sink)
{
    /* ggml_compute_forward_soft_max_f32 with sinks: the sink joins the max,
     * and expf(sink - max) the double sum after the row's */
    if (n <= 0) return;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    mx = mx > sink ? mx : sink;
    double sum = softmax_exp(x, n, mx);
    sum += (double)expf(sink - mx);
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void lrun_cpu_add(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

// ---------------------------------------------------------------- embedding

lrun_status lrun_cpu_embedding_row(const struct lrun_tensor *table, int64_t row, float *dst)
{
    if (row < 0 || row >= table->ne[1])
        return lrun_fail(LRUN_E_ARG, "embedding: row %lld out of range [0, %lld) of '%s'", (long long)row,
                         (long long)table->ne[1], table->name);
    const void *bytes = lrun_tensor_host_data(table);
    if (!bytes) return lrun_fail(LRUN_E_ARG, "embedding: '%s' has no host-addressable bytes", table->name);
    if (table->packed) { /* the row's elements decoded a block at a time (docs/packed.md) */
        uint16_t vals[LRUN_PACKED_BLOCK];
        const int64_t n = table->ne[0];
        for (int64_t i = 0; i < n; i += LRUN_PACKED_BLOCK) {
            const int64_t k = n - i < LRUN_PACKED_BLOCK ? n - i : LRUN_PACKED_BLOCK;
            lrun_packed_decode_range(vals, bytes, &table->pk, (uint64_t)(row * n + i), (uint64_t)k);
            const lrun_status st = lrun_dtype_to_f32(table->dtype, vals, dst + i, k);
            if (st != LRUN_OK) return st;
        }
        return LRUN_OK;
    }
    return lrun_dtype_to_f32(table->dtype, (const char *)bytes + (size_t)row * table->row_bytes, dst, table->ne[0]);
}

// ---------------------------------------------------------------- RoPE

/* ggml_rope_yarn_corr_dim: the dim whose wavelength makes n_rot_beta turns over n_ctx_orig positions. */
static float yarn_corr_dim(int n_dims, int n_ctx_orig, float beta, float base)
{
    return (float)n_dims * logf((float)n_ctx_orig / (beta * 2 * (float)M_PI)) / (2 * logf(base));
}

void lrun_rope_yarn_init(lrun_rope *rope, int64_t n_ctx_orig)
{
    lrun_rope_yarn_init_ex(rope, n_ctx_orig, 32.0, 1.0, 1);
}

void lrun_rope_yarn_init_ex(lrun_rope *rope, int64_t n_ctx_orig, double beta_fast, double beta_slow, int truncate)
{
    const int n_dims = (int)rope->n_rot, orig = (int)n_ctx_orig;
    const float base = (float)rope->freq_base, factor = 1.0f / (float)rope->freq_scale;
    float start = yarn_corr_dim(n_dims, orig, (float)beta_fast, base);
    float end = yarn_corr_dim(n_dims, orig, (float)beta_slow, base);
    if (truncate) start = floorf(start), end = ceilf(end);
    rope->yarn_corr[0] = start > 0 ? start : 0;
    rope->yarn_corr[1] = (float)(n_dims - 1) < end ? (float)(n_dims - 1) : end;
    rope->yarn_ext = 1.0f;
    /* llama_context: get_mscale(factor, 1) times 1 / (1 + 0.1 ln factor), in libllama's unfused f32 */
    float af = factor <= 1.0f ? 1.0f : 0.1f * 1.0f * logf(factor) + 1.0f;
    af *= 1.0f / (1.0f + 0.1f * logf(factor));
    rope->yarn_attn_factor = af;
}

/* ggml's rope_yarn_ramp: 1 below the low correction dim, 0 above the high one. */
static float yarn_ramp(float low, float high, int64_t i0)
{
    const float y = ((float)(i0 / 2) - low) / fmaxf(0.001f, high - low);
    return 1.0f - fminf(1.0f, fmaxf(0.0f, y));
}

/* ggml's rope_yarn for pair i at unscaled angle theta_extrap, as GCC
 * contracts it in llama.cpp's x86 build: the interpolated and extrapolated
 * angles mixed by the ramp (the first product fused), cos and sin times
 * attn_factor · (1 + 0.1 ln(1/freq_scale)). */
static void yarn_cos_sin(const lrun_rope *rope, float theta_extrap, float freq_scale, int64_t i, float *c, float *s)
{
    const float theta_interp = freq_scale * theta_extrap;
    const float ramp_mix = yarn_ramp(rope->yarn_corr[0], rope->yarn_corr[1], 2 * i) * rope->yarn_ext;
    const float theta = fmaf(theta_interp, 1.0f - ramp_mix, theta_extrap * ramp_mix);
    const float mscale = rope->yarn_attn_factor * fmaf(0.1f, logf(1.0f / freq_scale), 1.0f);
    *c = cosf(theta) * mscale;
    *s = sinf(theta) * mscale;
}

void lrun_cpu_rope_cos_sin(const lrun_rope *rope, int64_t pos, float *cs)
{
    /* ggml_rope_cache_init: theta in f32, multiplied by theta_scale after each
     * use (not pos·base^(-2i/n) afresh), and glibc's cosf/sinf */
    const int64_t half = rope->n_rot / 2;
    const float theta_scale = powf((float)rope->freq_base, -2.0f / (float)rope->n_rot);
    const float freq_scale = (float)rope->freq_scale;
    float theta = (float)pos;
    for (int64_t i = 0; i < half; i++) {
        const float ff = rope->freq_factors ? rope->freq_factors[i] : 1.0f;
        if (rope->yarn_ext != 0.0f) {
            yarn_cos_sin(rope, theta / ff, freq_scale, i, &cs[2 * i], &cs[2 * i + 1]);
        } else {
            const float t = freq_scale * (theta / ff);
            cs[2 * i] = cosf(t);
            cs[2 * i + 1] = sinf(t);
        }
        theta *= theta_scale;
    }
}

void lrun_cpu_rope_apply(const lrun_rope *rope, const float *cs, float *x, int64_t n_head, int64_t head_dim)
{
    /* ggml's rotate_pairs as GCC compiles it: a·c - b·s and a·s + b·c with the
     * second product rounded and the first fused (fmaf) */
    const int64_t half = rope->n_rot / 2;
    for (int64_t h = 0; h < n_head; h++) {
        float *xh = x + h * head_dim;
        if (rope->style == LRUN_ROPE_STYLE_ADJACENT) {
            for (int64_t i = 0; i < half; i++) {
                const float c = cs[2 * i], s = cs[2 * i + 1], a = xh[2 * i], b = xh[2 * i + 1];
                xh[2 * i] = fmaf(a, c, -(b * s));
                xh[2 * i + 1] = fmaf(a, s, b * c);
            }
        } else {
            for (int64_t i = 0; i < half; i++) {
                const float c = cs[2 * i], s = cs[2 * i + 1], a = xh[i], b = xh[i + half];
                xh[i] = fmaf(a, c, -(b * s));
                xh[i + half] = fmaf(a, s, b * c);
            }
        }
    }
}

// ---------------------------------------------------------------- attention

/* llama.cpp's attention without flash attention, on an f32 cache (docs/numerics.md §7):
 *   kq[j]  = ggml_vec_dot_f32(head_dim, k_j, q)   (4 accumulators of 8 lanes)
 *   w[j]   = kq[j] · scale, softmax as lrun_cpu_softmax over w padded with -inf
 *   out[d] = Σ_j p[j] · v[j][d] over the positions padded with zeros (as
 *            llama.cpp's masked, cleared cells), in one of two orders:
 *            ggml_vec_dot_f32 for a one-token step, tinyBLAS's 8-lane chain
 *            for a step of ≥ 2 tokens. Zero terms change neither, so the sums
 *            stop at the positions rounded up to 8.
 * With an f16 cache, q and p are rounded to f16 as llama.cpp converts them.
 * V is stored transposed, so each out[d] is a dot over contiguous positions. */

/* Scratch is sized for positions rounded up to this multiple (the KV cache's
 * LRUN_KV_PAD, up to which its values are readable). */
#define PAD 32

static inline float load1(const void *p, int64_t i, int f16)
{
#ifdef LRUN_OPS_AVX2
    if (f16) return _cvtsh_ss(((const uint16_t *)p)[i]);
#endif
    return f16 ? lrun_f16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* ggml_vec_dot_f32(n, x, y) without SIMD: the 4x8 accumulators over the
 * first n & ~31 elements, the rest added in double. x in the cache dtype. */
static float dot4x8_ref(const void *x, const float *y, int64_t n, int f16)
{
    float a[4][8] = {{0}};
    const int64_t np = n & ~(int64_t)31;
    for (int64_t i = 0; i < np; i += 32)
        for (int r = 0; r < 4; r++)
            for (int l = 0; l < 8; l++) a[r][l] = fmaf(load1(x, i + 8 * r + l, f16), y[i + 8 * r + l], a[r][l]);
    double s = (double)reduce4x8_ref(a);
    for (int64_t i = np; i < n; i++) s += (double)(load1(x, i, f16) * y[i]);
    return (float)s;
}

#ifdef LRUN_OPS_AVX2
static inline __m256 load8(const void *p, int64_t i, int f16)
{
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)))
               : _mm256_loadu_ps((const float *)p + i);
}

/* ggml_vec_dot_f32's accumulators over x (cache dtype) · y for the first n
 * (a multiple of 8) elements, reduced to t[i] = a0[i] + a0[i+4]: the last
 * step, (t0 + t1) + (t2 + t3), is left to the caller so four rows can share it.
 * Groups of 8 past the last whole 32 go to accumulators 0, 1, 2 in turn:
 * the same as zero padding to a multiple of 32. */
static inline __m128 dot4x8_partial(const void *x, const float *y, int64_t n, int f16)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const int64_t np = n & ~(int64_t)31;
    for (int64_t i = 0; i < np; i += 32) {
        a0 = _mm256_fmadd_ps(load8(x, i, f16), _mm256_loadu_ps(y + i), a0);
        a1 = _mm256_fmadd_ps(load8(x, i + 8, f16), _mm256_loadu_ps(y + i + 8), a1);
        a2 = _mm256_fmadd_ps(load8(x, i + 16, f16), _mm256_loadu_ps(y + i + 16), a2);
        a3 = _mm256_fmadd_ps(load8(x, i + 24, f16), _mm256_loadu_ps(y + i + 24), a3);
    }
    if (np + 8 <= n) a0 = _mm256_fmadd_ps(load8(x, np, f16), _mm256_loadu_ps(y + np), a0);
    if (np + 16 <= n) a1 = _mm256_fmadd_ps(load8(x, np + 8, f16), _mm256_loadu_ps(y + np + 8), a1);
    if (np + 24 <= n) a2 = _mm256_fmadd_ps(load8(x, np + 16, f16), _mm256_loadu_ps(y + np + 16), a2);
    a0 = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
    return _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
}

/* (t0 + t1) + (t2 + t3) of four rows' t at once: lanes of the result are rows A..D. */
static inline __m128 finish4(__m128 ta, __m128 tb, __m128 tc, __m128 td)
{
    return _mm_hadd_ps(_mm_hadd_ps(ta, tb), _mm_hadd_ps(tc, td));
}

#endif

#ifdef LRUN_OPS_AVX2
/* out[r] = tinyBLAS's chain of x_r · y over n (a multiple of 8) for the four
 * rows x_r = x + r·row bytes: one 8-lane FMA chain each, then hsum8 of each,
 * (t0 + t2) + (t1 + t3) with t = hi + lo, down the transposed columns. */
static inline __m128 chain8_rows4(const char *x, size_t row, const float *y, int64_t n, int f16)
{
    const char *x0 = x, *x1 = x0 + row, *x2 = x1 + row, *x3 = x2 + row;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < n; i += 8) {
        const __m256 yv = _mm256_loadu_ps(y + i);
        a0 = _mm256_fmadd_ps(load8(x0, i, f16), yv, a0);
        a1 = _mm256_fmadd_ps(load8(x1, i, f16), yv, a1);
        a2 = _mm256_fmadd_ps(load8(x2, i, f16), yv, a2);
        a3 = _mm256_fmadd_ps(load8(x3, i, f16), yv, a3);
    }
    __m128 t0 = _mm_add_ps(_mm256_extractf128_ps(a0, 1), _mm256_castps256_ps128(a0));
    __m128 t1 = _mm_add_ps(_mm256_extractf128_ps(a1, 1), _mm256_castps256_ps128(a1));
    __m128 t2 = _mm_add_ps(_mm256_extractf128_ps(a2, 1), _mm256_castps256_ps128(a2));
    __m128 t3 = _mm_add_ps(_mm256_extractf128_ps(a3, 1), _mm256_castps256_ps128(a3));
    _MM_TRANSPOSE4_PS(t0, t1, t2, t3);
    return _mm_add_ps(_mm_add_ps(t0, t2), _mm_add_ps(t1, t3));
}
#endif

/* tinyBLAS's chain of x · y over n (a multiple of 8) without SIMD. */
static float chain8_ref(const void *x, const float *y, int64_t n, int f16)
{
    float a[8] = {0};
    for (int64_t i = 0; i < n; i += 8)
        for (int l = 0; l < 8; l++) a[l] = fmaf(load1(x, i + l, f16), y[i + l], a[l]);
    return hsum8_ref(a);
}

/* scores[j] = scale · tinyBLAS's chain of k_j · q (head_dim a multiple of 8). */
static void attention_scores_chain8(float *scores, const float *q, const void *k, int64_t k_stride, int64_t n_pos,
                                    int64_t head_dim, float scale, int f16)
{
    const size_t eb = f16 ? 2 : 4, row = (size_t)k_stride * eb;
    int64_t j = 0;
#ifdef LRUN_OPS_AVX2
    for (; j + 4 <= n_pos; j += 4)
        _mm_storeu_ps(scores + j,
                      _mm_mul_ps(chain8_rows4((const char *)k + (size_t)j * row, row, q, head_dim, f16),
                                 _mm_set1_ps(scale)));
    for (; j < n_pos; j++) {
        const char *x = (const char *)k + (size_t)j * row;
        __m256 a = _mm256_setzero_ps();
        for (int64_t i = 0; i < head_dim; i += 8) a = _mm256_fmadd_ps(load8(x, i, f16), _mm256_loadu_ps(q + i), a);
        scores[j] = hsum8(a) * scale;
    }
#endif
    for (; j < n_pos; j++) scores[j] = chain8_ref((const char *)k + (size_t)j * row, q, head_dim, f16) * scale;
}

/* scores[j] = scale · ggml_vec_dot_f32(head_dim, k_j, q) for j < n_pos. */
static void attention_scores(float *scores, const float *q, const void *k, int64_t k_stride, int64_t n_pos,
                             int64_t head_dim, float scale, int f16)
{
    const size_t eb = f16 ? 2 : 4, row = (size_t)k_stride * eb;
    const char *kb = k;
    int64_t j = 0;
#ifdef LRUN_OPS_AVX2
    const int64_t np = head_dim & ~(int64_t)31;
    if (np == head_dim)
        for (; j + 4 <= n_pos; j += 4) {
            const char *kj = kb + (size_t)j * row;
            const __m128 r = finish4(dot4x8_partial(kj, q, np, f16), dot4x8_partial(kj + row, q, np, f16),
                                     dot4x8_partial(kj + 2 * row, q, np, f16),
                                     dot4x8_partial(kj + 3 * row, q, np, f16));
            _mm_storeu_ps(scores + j, _mm_mul_ps(r, _mm_set1_ps(scale)));
        }
    for (; j < n_pos; j++) {
        const char *kj = kb + (size_t)j * row;
        const __m128 t = dot4x8_partial(kj, q, np, f16);
        double s = (double)_mm_cvtss_f32(finish4(t, t, t, t));
        for (int64_t i = np; i < head_dim; i++) s += (double)(load1(kj, i, f16) * q[i]);
        scores[j] = (float)s * scale;
    }
#endif
    for (; j < n_pos; j++) scores[j] = dot4x8_ref(kb + (size_t)j * row, q, head_dim, f16) * scale;
}

#ifdef LRUN_OPS_AVX2
/* dot4x8_partial's accumulators, carried across segments: a[0..3] += x·y
 * over n positions (a multiple of 8); only a last segment has groups past its
 * last whole 32, so segments of whole 32s sum as one contiguous row. */
static inline void dot4x8_acc(__m256 a[4], const void *x, const float *y, int64_t n, int f16)
{
    const int64_t np = n & ~(int64_t)31;
    for (int64_t i = 0; i < np; i += 32) {
        a[0] = _mm256_fmadd_ps(load8(x, i, f16), _mm256_loadu_ps(y + i), a[0]);
        a[1] = _mm256_fmadd_ps(load8(x, i + 8, f16), _mm256_loadu_ps(y + i + 8), a[1]);
        a[2] = _mm256_fmadd_ps(load8(x, i + 16, f16), _mm256_loadu_ps(y + i + 16), a[2]);
        a[3] = _mm256_fmadd_ps(load8(x, i + 24, f16), _mm256_loadu_ps(y + i + 24), a[3]);
    }
    if (np + 8 <= n) a[0] = _mm256_fmadd_ps(load8(x, np, f16), _mm256_loadu_ps(y + np), a[0]);
    if (np + 16 <= n) a[1] = _mm256_fmadd_ps(load8(x, np + 8, f16), _mm256_loadu_ps(y + np + 8), a[1]);
    if (np + 24 <= n) a[2] = _mm256_fmadd_ps(load8(x, np + 16, f16), _mm256_loadu_ps(y + np + 16), a[2]);
}

static inline __m128 dot4x8_finish(const __m256 a[4])
{
    const __m256 s = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* chain8_rows4's four chains, carried across segments. */
static inline void chain8_acc4(__m256 a[4], const char *x0, size_t row, const float *y, int64_t n, int f16)
{
    const char *x1 = x0 + row, *x2 = x1 + row, *x3 = x2 + row;
    for (int64_t i = 0; i < n; i += 8) {
        const __m256 yv = _mm256_loadu_ps(y + i);
        a[0] = _mm256_fmadd_ps(load8(x0, i, f16), yv, a[0]);
        a[1] = _mm256_fmadd_ps(load8(x1, i, f16), yv, a[1]);
        a[2] = _mm256_fmadd_ps(load8(x2, i, f16), yv, a[2]);
        a[3] = _mm256_fmadd_ps(load8(x3, i, f16), yv, a[3]);
    }
}

static inline __m128 chain8_finish4(const __m256 a[4])
{
    __m128 t0 = _mm_add_ps(_mm256_extractf128_ps(a[0], 1), _mm256_castps256_ps128(a[0]));
    __m128 t1 = _mm_add_ps(_mm256_extractf128_ps(a[1], 1), _mm256_castps256_ps128(a[1]));
    __m128 t2 = _mm_add_ps(_mm256_extractf128_ps(a[2], 1), _mm256_castps256_ps128(a[2]));
    __m128 t3 = _mm_add_ps(_mm256_extractf128_ps(a[3], 1), _mm256_castps256_ps128(a[3]));
    _MM_TRANSPOSE4_PS(t0, t1, t2, t3);
    return _mm_add_ps(_mm_add_ps(t0, t2), _mm_add_ps(t1, t3));
}
#endif

/* Values in segments: positions [s·seg, (s+1)·seg) of value dim d are at
 * vseg[s] + v_off + d·v_stride elements. seg is a multiple of 32 (or covers
 * all n_pad positions: one contiguous segment). */
typedef struct value_segs {
    const char *const *base;
    size_t off;          /* bytes from a segment's base to dim 0 of the head */
    int64_t seg;         /* positions per segment */
    int64_t v_stride;    /* elements between value dims */
} value_segs;

/* out[d] = Σ_j p[j] · v_d[j] for d < head_dim (v in the cache dtype, finite),
 * over j < n_pad: n_pos rounded up to 8, p zero from n_pos on. llama.cpp's
 * zero padding to its KV view's multiple of 256 adds exact zeros to the
 * sums: stopping at the multiple of 8 gives the same bits. The accumulators
 * run across segments, so a paged cache sums in the contiguous order. */
static void attention_values(float *out, const float *p, const value_segs *vs, int64_t n_pad, int64_t head_dim,
                             int chain8, int f16)
{
    const size_t eb = f16 ? 2 : 4, row = (size_t)vs->v_stride * eb;
    const int64_t seg = vs->seg;
    int64_t d = 0;
#ifdef LRUN_OPS_AVX2
    const size_t span = (size_t)(n_pad < seg ? n_pad : seg) * eb; /* bytes read of each row of a segment */
    for (; d + 4 <= head_dim; d += 4) {
        __m256 a[4][4];
        for (int r = 0; r < 4; r++) a[r][0] = a[r][1] = a[r][2] = a[r][3] = _mm256_setzero_ps();
        __m256 c[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t s0 = 0; s0 < n_pad; s0 += seg) {
            const int64_t m = n_pad - s0 < seg ? n_pad - s0 : seg;
            const char *x0 = vs->base[s0 / seg] + vs->off + (size_t)d * row, *x3 = x0 + 3 * row;
            /* the value dims are separate short streams (rows are cap apart),
             * which the hardware prefetcher picks up late: fetch the next four
             * rows while these four are summed */
            if (d + 8 <= head_dim)
                for (int r = 0; r < 4; r++)
                    for (size_t o = 0; o < span; o += 64) _mm_prefetch(x3 + (size_t)(r + 1) * row + o, _MM_HINT_T0);
            if (chain8) {
                chain8_acc4(c, x0, row, p + s0, m, f16);
            } else {
                for (int r = 0; r < 4; r++) dot4x8_acc(a[r], x0 + (size_t)r * row, p + s0, m, f16);
            }
        }
        if (chain8) _mm_storeu_ps(out + d, chain8_finish4(c));
        else _mm_storeu_ps(out + d, finish4(dot4x8_finish(a[0]), dot4x8_finish(a[1]), dot4x8_finish(a[2]),
                                            dot4x8_finish(a[3])));
    }
#endif
    for (; d < head_dim; d++) {
        /* without SIMD: group g of 8 goes to accumulator g % 4 (4x8) or lane by lane (chain) */
        float a[4][8] = {{0}}, c8[8] = {0};
        for (int64_t s0 = 0; s0 < n_pad; s0 += seg) {
            const int64_t m = n_pad - s0 < seg ? n_pad - s0 : seg;
            const char *x = vs->base[s0 / seg] + vs->off + (size_t)d * row;
            for (int64_t i = 0; i < m; i += 8)
                for (int l = 0; l < 8; l++) {
                    const float t = load1(x, i + l, f16), y = p[s0 + i + l];
                    if (chain8) c8[l] = fmaf(t, y, c8[l]);
                    else a[((s0 + i) / 8) % 4][l] = fmaf(t, y, a[((s0 + i) / 8) % 4][l]);
                }
        }
        out[d] = chain8 ? hsum8_ref(c8) : reduce4x8_ref(a);
    }
}

/* dst (n) = src (n) rounded to f16 and back: what llama.cpp's f16 cache does
 * to the other operand of its dots (q, and the softmax output p). */
static void round_f16(float *dst, const float *src, int64_t n)
{
    int64_t i = 0;
#ifdef LRUN_OPS_AVX2
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT)));
#endif
    for (; i < n; i++) dst[i] = lrun_f16_to_f32(lrun_f32_to_f16(src[i]));
}

/* Keys in segments as values_segs: position j of segment s at
 * kbase[s] + k_off + (j - s·seg)·k_stride elements. */
static void attention_head_segs(float *out, const float *q, const char *const *kbase, size_t k_off, int64_t k_stride,
                                const value_segs *vs, lrun_dtype kv_dtype, int64_t n_pos, int64_t n_swa,
                                int64_t head_dim, float scale, float softcap, const float *sink, int chain8,
                                float *scores)
{
    const int f16 = kv_dtype == LRUN_DTYPE_F16;
    const int64_t seg = vs->seg;
    const int64_t n_pad = (n_pos + PAD - 1) / PAD * PAD;
    if (f16) { /* llama.cpp converts q to the cache's f16 before its dots */
        float *q16 = scores + n_pad;
        round_f16(q16, q, head_dim);
        q = q16;
    }
    /* with an f16 cache, a step of >= 2 tokens takes tinyBLAS for K q too
     * (the converted q is contiguous, which llamafile needs); f32 never does */
    /* each score depends on its own key only; segments are whole groups of 4 keys */
    for (int64_t s0 = 0; s0 < n_pos; s0 += seg) {
        const int64_t m = n_pos - s0 < seg ? n_pos - s0 : seg;
        const char *k = kbase[s0 / seg] + k_off;
        if (f16 && chain8 && head_dim % 8 == 0)
            attention_scores_chain8(scores + s0, q, k, k_stride, m, head_dim, scale, f16);
        else attention_scores(scores + s0, q, k, k_stride, m, head_dim, scale, f16);
    }
    if (softcap > 0) lrun_cpu_softcap(scores, n_pos, softcap); /* gemma2: before the mask, as llama.cpp */
    /* the masked positions: -inf scores give e = 0 exactly, as llama.cpp's
     * mask; with a sliding window, also those before the last n_swa (the
     * sums keep every position's place, as llama.cpp's masked cells do) */
    for (int64_t j = 0; n_swa > 0 && j < n_pos - n_swa; j++) scores[j] = -INFINITY;
    const int64_t n8 = (n_pos + 7) / 8 * 8;
    for (int64_t j = n_pos; j < n8; j++) scores[j] = -INFINITY;
    if (sink) lrun_cpu_softmax_sink(scores, n8, *sink); /* gpt-oss: the head's sink in the denominator */
    else lrun_cpu_softmax(scores, n8);
    if (f16) round_f16(scores, scores, n_pos); /* p goes to f16 for the dots with V */
    attention_values(out, scores, vs, n8, head_dim, chain8, f16);
}

void lrun_cpu_attention_head(float *out, const float *q, const void *k, int64_t k_stride, const void *v,
                             int64_t v_stride, lrun_dtype kv_dtype, int64_t n_pos, int64_t head_dim, float scale,
                             int chain8, float *scores)
{
    const char *kb = k, *vb = v;
    const int64_t all = (n_pos + PAD - 1) / PAD * PAD; /* one segment over every position read */
    const value_segs vs = {&vb, 0, all, v_stride};
    attention_head_segs(out, q, &kb, 0, k_stride, &vs, kv_dtype, n_pos, 0, head_dim, scale, 0.0f, NULL, chain8,
                        scores);
}

struct attention_task {
    const lrun_attention_batch *b;
};

static void attention_worker(void *ctx, int ith, int nth)
{
    const lrun_attention_batch *b = ((struct attention_task *)ctx)->b;
    const int64_t group = b->n_head / b->n_head_kv;
    const int64_t kv_dim = b->n_head_kv * b->head_dim;
    const size_t eb = b->kv_dtype == LRUN_DTYPE_F16 ? 2 : 4;
    float *scores = b->scores + (int64_t)ith * b->scores_stride;
    /* several tokens (a causal prefill): tasks interleaved, since later
     * tokens see more positions and interleaving spreads them evenly; fewer
     * tokens than threads (decode): contiguous runs of heads, so the heads of
     * a KV group mostly share a thread and find its keys and values in cache */
    const int64_t n_task = b->n_tok * b->n_head;
    const int spread = b->n_tok >= nth;
    const int64_t first = spread ? ith : n_task * ith / nth, last = spread ? n_task : n_task * (ith + 1) / nth;
    for (int64_t task = first; task < last; task += spread ? nth : 1) {
        const int64_t i = task / b->n_head, h = task % b->n_head, hk = h / group;
        const int64_t off = (i * b->n_head + h) * b->head_dim;
        if (b->blocks) { /* paged: block table of the token's sequence */
            const char *const *base = (const char *const *)b->blocks[i];
            const value_segs vs = {base, b->v_off + (size_t)(hk * b->head_dim * b->block_pos) * eb, b->block_pos,
                                   b->block_pos};
            attention_head_segs(b->out + off, b->q + off, base, b->k_off + (size_t)(hk * b->head_dim) * eb, kv_dim,
                                &vs, b->kv_dtype, b->n_pos[i], b->n_swa, b->head_dim, b->scale, b->softcap,
                                b->sinks ? b->sinks + h : NULL, b->pv_chain8, scores);
            continue;
        }
        const char *k = (const char *)b->k[i] + (size_t)(hk * b->head_dim) * eb;
        const char *v = (const char *)b->v[i] + (size_t)(hk * b->head_dim * b->v_stride[i]) * eb;
        const char *vb = v;
        const int64_t all = (b->n_pos[i] + PAD - 1) / PAD * PAD; /* one segment over every position read */
        const value_segs vs = {&vb, 0, all, b->v_stride[i]};
        attention_head_segs(b->out + off, b->q + off, &k, 0, kv_dim, &vs, b->kv_dtype, b->n_pos[i], b->n_swa,
                            b->head_dim, b->scale, b->softcap, b->sinks ? b->sinks + h : NULL, b->pv_chain8, scores);
    }
}

void lrun_cpu_attention(lrun_threadpool *pool, const lrun_attention_batch *batch)
{
    struct attention_task task = {batch};
    if (!pool || batch->n_tok * batch->n_head == 1) attention_worker(&task, 0, 1);
    else lrun_threadpool_run(pool, attention_worker, &task);
}

// ---------------------------------------------------------------- KV rows

void lrun_cpu_kv_store(void *dst, lrun_dtype dtype, int64_t stride, const float *src, int64_t n)
{
    if (dtype == LRUN_DTYPE_F32) {
        float *d = dst;
        if (stride == 1) memcpy(d, src, (size_t)n * sizeof *d);
        else
            for (int64_t i = 0; i < n; i++) d[i * stride] = src[i];
        return;
    }
    uint16_t *d = dst;
    if (stride == 1) {
        lrun_cpu_f16_from_f32(d, src, n);
        return;
    }
    uint16_t h[8];
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) { /* convert 8 at a time, scatter */
        lrun_cpu_f16_from_f32(h, src + i, 8);
        for (int l = 0; l < 8; l++) d[(i + l) * stride] = h[l];
    }
    for (; i < n; i++) d[i * stride] = lrun_f32_to_f16(src[i]);
}

// ---------------------------------------------------------------- fused matrix-vector products

static size_t partner_row_bytes(lrun_dtype weight_dtype, int64_t k)
{
    const lrun_dtype p = lrun_dot_partner(weight_dtype);
    if (p == LRUN_DTYPE_F32 || p == LRUN_DTYPE_F16 || p == LRUN_DTYPE_BF16) return 0; /* x is used as it is */
    return (size_t)(k / lrun_dtype_block_elems(p)) * lrun_dtype_block_bytes(p);
}

size_t lrun_cpu_matvec_work_bytes(const lrun_matvec *parts, int n_parts)
{
    size_t total = 0;
    for (int i = 0; i < n_parts; i++) total += (partner_row_bytes(parts[i].dtype, parts[i].k) + 63) & ~(size_t)63;
    return total;
}

struct matvec_task {
    int n_parts;
    struct {
        lrun_dot_fn dot;
        const uint8_t *w;
        size_t row_bytes;
        int64_t first, k;  /* first: index of row 0 in the concatenated row space */
        const void *x;     /* the partner row */
        float *y;
    } part[LRUN_MATVEC_MAX_PARTS];
    int64_t total, chunk;
    _Alignas(64) _Atomic int64_t next; /* first concatenated row not yet taken */
};

static void matvec_worker(void *ctx, int ith, int nth)
{
    (void)ith, (void)nth;
    struct matvec_task *t = ctx;
    for (;;) {
        int64_t i = atomic_fetch_add_explicit(&t->next, t->chunk, memory_order_relaxed);
        if (i >= t->total) break;
        const int64_t end = i + t->chunk < t->total ? i + t->chunk : t->total;
        int p = 0;
        while (p + 1 < t->n_parts && t->part[p + 1].first <= i) p++;
        for (; i < end; i++) {
            while (p + 1 < t->n_parts && t->part[p + 1].first <= i) p++;
            const int64_t r = i - t->part[p].first;
            t->part[p].dot(t->part[p].k, t->part[p].w + (size_t)r * t->part[p].row_bytes, t->part[p].x, 0, 1,
                           &t->part[p].y[r]);
        }
    }
}

void lrun_cpu_matvec_multi(lrun_threadpool *pool, const lrun_matvec *parts, int n_parts, void *work)
{
    struct matvec_task t;
    t.n_parts = n_parts;
    t.total = 0;
    uint8_t *cursor = work;
    for (int i = 0; i < n_parts; i++) {
        const lrun_matvec *mv = &parts[i];
        const lrun_dtype partner = lrun_dot_partner(mv->dtype);
        const size_t xb = partner_row_bytes(mv->dtype, mv->k);
        t.part[i].dot = lrun_dot_kernel(mv->dtype);
        t.part[i].w = mv->w;
        t.part[i].row_bytes = mv->row_bytes;
        t.part[i].first = t.total;
        t.part[i].k = mv->k;
        t.part[i].y = mv->y;
        t.total += mv->n;
        if (xb == 0) {
            t.part[i].x = mv->x;
            continue;
        }
        /* q, k and v (gate and up) read the same x: convert it once */
        int shared = -1;
        for (int j = 0; j < i && shared < 0; j++)
            if (parts[j].x == mv->x && parts[j].k == mv->k && lrun_dot_partner(parts[j].dtype) == partner) shared = j;
        if (shared >= 0) {
            t.part[i].x = t.part[shared].x;
            continue;
        }
        lrun_quantize_activations(partner, mv->x, cursor, mv->k);
        t.part[i].x = cursor;
        cursor += (xb + 63) & ~(size_t)63;
    }
    const int nth = pool ? lrun_threadpool_size(pool) : 1;
    /* about 8 chunks per thread so a late thread takes fewer; multiples of 16
     * rows so that neighbouring chunks of y do not share a cache line */
    int64_t c = (t.total + (int64_t)nth * 8 - 1) / ((int64_t)nth * 8);
    t.chunk = c < 16 ? 16 : (c + 15) / 16 * 16;
    atomic_init(&t.next, 0);
    if (nth <= 1) matvec_worker(&t, 0, 1);
    else lrun_threadpool_run(pool, matvec_worker, &t);
}

// ---------------------------------------------------------------- parallel rows

struct range_task {
    lrun_range_fn fn;
    void *ctx;
    int64_t n;
};

static void range_worker(void *ctx, int ith, int nth)
{
    const struct range_task *t = ctx;
    const int64_t first = t->n * ith / nth, last = t->n * (ith + 1) / nth;
    if (first < last) t->fn(t->ctx, first, last);
}

void lrun_cpu_parallel_for(lrun_threadpool *pool, int64_t n, int64_t min_parallel, lrun_range_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (!pool || n < min_parallel || lrun_threadpool_size(pool) <= 1) {
        fn(ctx, 0, n);
        return;
    }
    struct range_task t = {fn, ctx, n};
    lrun_threadpool_run(pool, range_worker, &t);
}
