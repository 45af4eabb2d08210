/* test_cpu_ops.c — each CPU op of the forward pass against a naive
 * double-precision reference written here from the op's definition. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cpu/cpu_matmul.h"
#include "cpu/cpu_ops.h"
#include "quant/quant.h"
#include "core/tensor.h"
#include "core/threadpool.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(float lo, float hi)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((rng_state >> 40) / 16777216.0);
}

/* max |a - b| / (|b| + floor) over n */
static double max_rel(const float *a, const double *b, int64_t n, double floor)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - b[i]) / (fabs(b[i]) + floor);
        if (e > worst || isnan(e)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

// ---------------------------------------------------------------- norms and activations

static void test_rms_norm(void)
{
    enum { N = 576 };
    float x[N], w[N], y[N];
    double ref[N];
    for (int i = 0; i < N; i++) x[i] = frand(-3, 3), w[i] = frand(0.5f, 1.5f);
    x[7] = 200.0f; /* one outlier: the sum of squares must not lose the rest */
    double ss = 0;
    for (int i = 0; i < N; i++) ss += (double)x[i] * x[i];
    const double eps = 1e-5, s = 1.0 / sqrt(ss / N + eps);
    for (int i = 0; i < N; i++) ref[i] = x[i] * s * w[i];
    lrun_cpu_rms_norm(y, x, w, N, (float)eps);
    CHECK("rms_norm matches the double reference (rel 1e-5)", max_rel(y, ref, N, 1e-6) < 1e-5);
    memcpy(y, x, sizeof y);
    lrun_cpu_rms_norm(y, y, w, N, (float)eps);
    CHECK("rms_norm works in place", max_rel(y, ref, N, 1e-6) < 1e-5);
}

static void test_swiglu(void)
{
    enum { N = 1003 }; /* not a multiple of 8: the scalar tail runs too */
    float g[N], u[N];
    double ref[N];
    for (int i = 0; i < N; i++) g[i] = frand(-30, 30), u[i] = frand(-2, 2);
    g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = -87.5f, g[4] = 88.5f;
    for (int i = 0; i < N; i++) ref[i] = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    lrun_cpu_swiglu(g, u, N);
    CHECK("swiglu matches silu(g)*u in double (rel 2e-6)", max_rel(g, ref, N, 1e-30) < 2e-6);
}

static void test_softmax(void)
{
    enum { N = 77 };
    float x[N];
    double ref[N], mx = -INFINITY, sum = 0;
    for (int i = 0; i < N; i++) x[i] = frand(-40, 40);
    x[5] = 1000.0f; /* max subtraction keeps it finite */
    x[6] = 999.0f;
    for (int i = 0; i < N; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < N; i++) sum += exp(x[i] - mx);
    for (int i = 0; i < N; i++) ref[i] = exp(x[i] - mx) / sum;
    lrun_cpu_softmax(x, N);
    double total = 0;
    for (int i = 0; i < N; i++) total += x[i];
    CHECK("softmax matches the double reference (abs 1e-7)", max_rel(x, ref, N, 1.0) < 1e-7);
    CHECK_NEAR("softmax sums to 1", total, 1.0, 1e-6);
}

/* gpt-oss's attention sinks: the sink joins the max and the denominator only. */
static void test_softmax_sink(void)
{
    enum { N = 45 };
    float x[N], a[N], b[N];
    for (int i = 0; i < N; i++) x[i] = frand(-8, 8);
    memcpy(a, x, sizeof x), memcpy(b, x, sizeof x);
    lrun_cpu_softmax(a, N);
    lrun_cpu_softmax_sink(b, N, -INFINITY);
    CHECK("softmax with a sink of -inf: softmax's bits", memcmp(a, b, sizeof a) == 0);
    for (int k = 0; k < 2; k++) {
        const float sink = k ? 20.0f : 1.5f; /* below the max, and above it (the max is the sink's) */
        double ref[N], mx = sink, sum = 0, total = 0;
        for (int i = 0; i < N; i++) mx = x[i] > mx ? x[i] : mx;
        for (int i = 0; i < N; i++) sum += exp(x[i] - mx);
        sum += exp(sink - mx);
        for (int i = 0; i < N; i++) ref[i] = exp(x[i] - mx) / sum;
        memcpy(b, x, sizeof x);
        lrun_cpu_softmax_sink(b, N, sink);
        for (int i = 0; i < N; i++) total += b[i];
        CHECK(k ? "softmax with a sink above the max: the double reference (abs 1e-7)"
                : "softmax with a sink: the double reference (abs 1e-7)",
              max_rel(b, ref, N, 1.0) < 1e-7);
        CHECK_NEAR("softmax with a sink sums to 1 - its share", total, 1.0 - exp(sink - mx) / sum, 1e-6);
    }
}

/* YaRN as llama.cpp sets it up for gpt-oss-20b: factor 32, original context
 * 4096, base 150000, 64 rotated dims: correction dims 8 and 18 (floor and
 * ceil of 8.09 and 17.4), cos/sin times 1 + 0.1 ln 32, the fast pairs at the
 * unscaled angle, the slow ones at 1/32 of it. */
static void test_rope_yarn(void)
{
    lrun_rope r = {64, LRUN_ROPE_STYLE_HALF, 150000.0, 1.0 / 32, NULL, 0, {0, 0}, 0};
    lrun_rope_yarn_init(&r, 4096);
    CHECK("yarn: correction dims 8 and 18", r.yarn_corr[0] == 8.0f && r.yarn_corr[1] == 18.0f);
    CHECK_NEAR("yarn: attn_factor about 1 (llama.cpp's cancellation)", r.yarn_attn_factor, 1.0, 1e-6);
    float cs[64];
    lrun_cpu_rope_cos_sin(&r, 0, cs);
    const double mscale = 1.0 + 0.1 * log(32.0);
    CHECK_NEAR("yarn: cos at position 0 is the magnitude scale", cs[0], mscale, 1e-6);
    lrun_cpu_rope_cos_sin(&r, 100, cs);
    const double th0 = 100.0, th31 = 100.0 * pow(150000.0, -62.0 / 64) / 32; /* pair 0 extrapolated, 31 interpolated */
    CHECK_NEAR("yarn: pair 0 at the unscaled angle", cs[1], sin(th0) * mscale, 1e-4);
    CHECK_NEAR("yarn: pair 31 at 1/32 of the angle", cs[63], sin(th31) * mscale, 1e-5);
}

// ---------------------------------------------------------------- f16 rows

static void test_f16(void)
{
    enum { N = 203 };
    float x[N], back[N];
    uint16_t h[N];
    for (int i = 0; i < N; i++) x[i] = frand(-70000, 70000) * (i % 3 == 0 ? 1e-6f : 1.0f);
    x[0] = 0.0f, x[1] = 65504.0f, x[2] = 1e-7f, x[3] = 0.33325195f;
    lrun_cpu_f16_from_f32(h, x, N);
    int same = 1;
    for (int i = 0; i < N; i++) same &= h[i] == lrun_f32_to_f16(x[i]);
    CHECK("f16 row conversion rounds like the scalar converter", same);
    lrun_cpu_f32_from_f16(back, h, N);
    same = 1;
    for (int i = 0; i < N; i++) same &= back[i] == lrun_f16_to_f32(h[i]);
    CHECK("f16 row widening equals the scalar converter", same);
}

// ---------------------------------------------------------------- embedding

static void test_embedding(void)
{
    enum { D = 64, V = 5 };
    float table[V * D], row[D];
    for (int i = 0; i < V * D; i++) table[i] = frand(-1, 1);
    const lrun_dtype types[] = {LRUN_DTYPE_F32, LRUN_DTYPE_F16, LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_1};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        struct lrun_tensor t;
        memset(&t, 0, sizeof t);
        const int64_t dims[2] = {D, V};
        CHECK("tensor shape", lrun_tensor_set_shape(&t, "token_embd.weight", types[ti], 2, dims) == LRUN_OK);
        void *bytes = malloc(t.nbytes);
        for (int r = 0; r < V; r++) lrun_quantize_row(types[ti], table + r * D, (char *)bytes + r * t.row_bytes, D);
        t.data = bytes;
        t.file_data = bytes;
        t.tier = LRUN_TIER_HOST;
        /* reference: the row decoded by the dtype's own codec; and close to the f32 row */
        float want[D];
        lrun_dequantize_row(types[ti], (char *)bytes + 3 * t.row_bytes, want, D);
        char name[96];
        snprintf(name, sizeof name, "embedding row 3 of a %s table decodes like its codec", lrun_dtype_name(types[ti]));
        CHECK("embedding row 3", lrun_cpu_embedding_row(&t, 3, row) == LRUN_OK);
        CHECK(name, memcmp(row, want, sizeof row) == 0);
        double err = 0;
        for (int i = 0; i < D; i++) err = fmax(err, fabs(row[i] - table[3 * D + i]));
        CHECK("embedding row is the stored row (quantization error only)", err < 0.1);
        CHECK("embedding row out of range is LRUN_E_ARG", lrun_cpu_embedding_row(&t, V, row) == LRUN_E_ARG);
        free(bytes);
    }
}

// ---------------------------------------------------------------- RoPE

/* The definitions (REFERENCE.md): theta_i = pos * base^(-2i/n_rot);
 * ADJACENT rotates (2i, 2i+1), HALF rotates (i, i + n_rot/2). */
static void rope_reference(double *y, const float *x, int64_t n_head, int64_t head_dim, int64_t n_rot,
                           lrun_rope_style style, double base, double scale, const float *ff, int64_t pos)
{
    for (int64_t h = 0; h < n_head; h++) {
        const float *xh = x + h * head_dim;
        double *yh = y + h * head_dim;
        for (int64_t d = 0; d < head_dim; d++) yh[d] = xh[d];
        for (int64_t i = 0; i < n_rot / 2; i++) {
            double theta = pos * scale * pow(base, -2.0 * i / n_rot);
            if (ff) theta /= ff[i];
            const int64_t a = style == LRUN_ROPE_STYLE_ADJACENT ? 2 * i : i;
            const int64_t b = style == LRUN_ROPE_STYLE_ADJACENT ? 2 * i + 1 : i + n_rot / 2;
            yh[a] = xh[a] * cos(theta) - xh[b] * sin(theta);
            yh[b] = xh[a] * sin(theta) + xh[b] * cos(theta);
        }
    }
}

static void test_rope(void)
{
    enum { H = 3, HD = 64 };
    float x[H * HD], y[H * HD], cs[HD], ff[HD / 2];
    double ref[H * HD];
    for (int i = 0; i < HD / 2; i++) ff[i] = frand(1, 8);
    const int64_t positions[] = {0, 1, 17, 1000, 8191};
    const int64_t rots[] = {HD, 32};
    for (int style = 0; style < 2; style++)
        for (size_t ri = 0; ri < 2; ri++)
            for (size_t pi = 0; pi < sizeof positions / sizeof positions[0]; pi++)
                for (int with_ff = 0; with_ff < 2; with_ff++) {
                    for (int i = 0; i < H * HD; i++) x[i] = frand(-2, 2);
                    const lrun_rope r = {rots[ri], (lrun_rope_style)style, 10000.0, with_ff ? 0.5 : 1.0,
                                         with_ff ? ff : NULL, 0, {0, 0}, 0};
                    rope_reference(ref, x, H, HD, r.n_rot, r.style, r.freq_base, r.freq_scale, r.freq_factors,
                                   positions[pi]);
                    memcpy(y, x, sizeof y);
                    lrun_cpu_rope_cos_sin(&r, positions[pi], cs);
                    lrun_cpu_rope_apply(&r, cs, y, H, HD);
                    double err = 0;
                    for (int i = 0; i < H * HD; i++) err = fmax(err, fabs(y[i] - ref[i]));
                    /* theta is iterated in f32, as llama.cpp does (theta_{i+1} = theta_i · theta_scale):
                     * its error grows to about pos · (i + 1) · 2^-23 radians by pair i, times |x| ≤ 2 */
                    const double tol = 2e-6 + 2.0 * (double)positions[pi] * (double)(r.n_rot / 2 + 1) * 0x1p-23;
                    char name[160];
                    snprintf(name, sizeof name, "rope %s n_rot %lld pos %lld%s matches its definition (abs %.1e)",
                             style ? "half" : "adjacent", (long long)r.n_rot, (long long)positions[pi],
                             with_ff ? " with freq factors and scale" : "", tol);
                    CHECK(name, err < tol);
                }
    /* the two styles differ (a mix-up would pass every check above only by luck) */
    for (int i = 0; i < HD; i++) x[i] = frand(-1, 1);
    float a[HD], b[HD];
    memcpy(a, x, sizeof a), memcpy(b, x, sizeof b);
    const lrun_rope ra = {HD, LRUN_ROPE_STYLE_ADJACENT, 10000.0, 1.0, NULL, 0, {0, 0}, 0},
                    rb = {HD, LRUN_ROPE_STYLE_HALF, 10000.0, 1.0, NULL, 0, {0, 0}, 0};
    lrun_cpu_rope_cos_sin(&ra, 5, cs);
    lrun_cpu_rope_apply(&ra, cs, a, 1, HD);
    lrun_cpu_rope_apply(&rb, cs, b, 1, HD);
    CHECK("adjacent and half rotations differ", memcmp(a, b, sizeof a) != 0);
}

// ---------------------------------------------------------------- llama.cpp's order

/* The arithmetic of llama.cpp's x86 CPU ops, transcribed here from
 * docs/numerics.md (plain loops, fmaf where it fuses), so that the
 * library's SIMD code is held to the same bits. */

static float ref_hsum8(const float a[8])
{
    const float t0 = a[4] + a[0], t1 = a[5] + a[1], t2 = a[6] + a[2], t3 = a[7] + a[3];
    return (t0 + t2) + (t1 + t3);
}

static float ref_v_expf(float x)
{
    union { float f; uint32_t u; } z, k, s1, s2, one = {1.0f};
    z.f = fmaf(x, 0x1.715476p+0f, 0x1.8p23f);
    const float n = z.f - 0x1.8p23f;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    const uint32_t e = z.u << 23;
    k.u = e + one.u;
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u,
                         0x1.ffffecp-1f * b);
    if (!(fabsf(n) > 126.0f)) return fmaf(j, k.f, k.f);
    const uint32_t g = n <= 0.0f ? 0x82000000u : 0u;
    s1.u = g + 0x7f000000u;
    s2.u = e - g;
    return fabsf(n) > 192.0f ? s1.f * s1.f : fmaf(s2.f, j, s2.f) * s1.f;
}

/* ggml_vec_dot_f32: 4 accumulators of 8 lanes over whole 32s, the rest in double. */
static float ref_dot_f32(const float *x, const float *y, int64_t n)
{
    float a[4][8] = {{0}}, t[4];
    const int64_t np = n / 32 * 32;
    for (int64_t i = 0; i < np; i += 32)
        for (int r = 0; r < 4; r++)
            for (int l = 0; l < 8; l++) a[r][l] = fmaf(x[i + 8 * r + l], y[i + 8 * r + l], a[r][l]);
    for (int l = 0; l < 8; l++) a[0][l] = (a[0][l] + a[2][l]) + (a[1][l] + a[3][l]);
    for (int i = 0; i < 4; i++) t[i] = a[0][i] + a[0][i + 4];
    double s = (t[0] + t[1]) + (t[2] + t[3]);
    for (int64_t i = np; i < n; i++) s += (double)(x[i] * y[i]);
    return (float)s;
}

/* tinyBLAS: lane l chains over l, l+8, ... (n a multiple of 8); hsum8. */
static float ref_chain8(const float *x, const float *y, int64_t n)
{
    float a[8] = {0};
    for (int64_t i = 0; i < n; i += 8)
        for (int l = 0; l < 8; l++) a[l] = fmaf(x[i + l], y[i + l], a[l]);
    return ref_hsum8(a);
}

/* Softmax of w (n a multiple of 8, -inf allowed): v_expf, hsum8 per group into a double. */
static void ref_softmax8(float *w, int64_t n)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = w[i] > mx ? w[i] : mx;
    double sum = 0;
    for (int64_t i = 0; i < n; i += 8) {
        for (int l = 0; l < 8; l++) w[i + l] = ref_v_expf(w[i + l] - mx);
        sum += ref_hsum8(w + i);
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) w[i] *= inv;
}

static float ref_f16(float x) { return lrun_f16_to_f32(lrun_f32_to_f16(x)); }

/* One head: k rows (n_pos, hd) and vt (hd, n_pad) as f32 (zero past n_pos).
 * With an f16 cache llama.cpp rounds q and p to f16 too, and a step of >= 2
 * tokens takes tinyBLAS for K q as well (head dim a multiple of 8). */
static void ref_attention(float *out, const float *q, const float *k, const float *vt, int64_t n_pos, int64_t hd,
                          float scale, int chain8, int f16)
{
    const int64_t n_pad = (n_pos + 31) / 32 * 32;
    float *p = calloc((size_t)n_pad, sizeof *p), q16[64];
    for (int64_t i = 0; i < hd; i++) q16[i] = f16 ? ref_f16(q[i]) : q[i];
    const int64_t n8 = (n_pos + 7) / 8 * 8;
    const int kq8 = f16 && chain8 && hd % 8 == 0;
    for (int64_t j = 0; j < n8; j++)
        p[j] = j >= n_pos ? -INFINITY : (kq8 ? ref_chain8(k + j * hd, q16, hd) : ref_dot_f32(k + j * hd, q16, hd)) * scale;
    ref_softmax8(p, n8);
    for (int64_t j = 0; f16 && j < n_pos; j++) p[j] = ref_f16(p[j]);
    for (int64_t d = 0; d < hd; d++)
        out[d] = chain8 ? ref_chain8(vt + d * n_pad, p, n_pad) : ref_dot_f32(vt + d * n_pad, p, n_pad);
    free(p);
}

static void test_llamacpp_order(void)
{
    /* exp: -inf is 0, large negatives underflow to 0, 0 is 1; the vector op matches the transcription */
    enum { N = 1000 };
    static float x[N], y[N], u[N], want[N];
    for (int i = 0; i < N; i++) x[i] = frand(-100, 100), u[i] = frand(-2, 2);
    x[0] = -INFINITY, x[1] = 0.0f, x[2] = -87.5f, x[3] = 88.0f, x[4] = -150.0f, x[5] = -104.0f;
    for (int i = 0; i < N; i++) y[i] = x[i];
    lrun_cpu_softmax(y, 8); /* the first group: -inf among finite values */
    CHECK("softmax: -inf gives exactly 0", y[0] == 0.0f && y[1] > 0.0f);
    for (int i = 0; i < N; i++) y[i] = x[i];
    const int64_t n8 = N / 8 * 8;
    for (int i = 0; i < n8; i++) want[i] = (y[i] / (1.0f + ref_v_expf(0.0f - y[i]))) * u[i];
    for (int i = (int)n8; i < N; i++) want[i] = (y[i] / (1.0f + expf(-y[i]))) * u[i];
    lrun_cpu_swiglu(y, u, N);
    CHECK("swiglu: llama.cpp's bits (v_expf per group of 8, expf for the rest)", memcmp(y, want, sizeof y) == 0);

    for (int i = 0; i < N; i++) y[i] = want[i] = frand(-30, 30);
    ref_softmax8(want, n8);
    lrun_cpu_softmax(y, n8);
    CHECK("softmax: llama.cpp's bits", memcmp(y, want, (size_t)n8 * sizeof *y) == 0);

    float w[576], r[576], rr[576];
    for (int i = 0; i < 576; i++) x[i] = frand(-3, 3), w[i] = frand(0.5f, 1.5f);
    x[100] = 900.0f;
    double sum = 0;
    for (int i = 0; i < 576; i++) sum += (double)(x[i] * x[i]);
    const float scale = 1.0f / sqrtf((float)(sum / 576.0) + 1e-5f);
    for (int i = 0; i < 576; i++) rr[i] = (x[i] * scale) * w[i];
    lrun_cpu_rms_norm(r, x, w, 576, 1e-5f);
    CHECK("rms_norm: llama.cpp's bits", memcmp(r, rr, sizeof r) == 0);

    /* RoPE: theta iterated in f32, the rotation's fused products */
    const lrun_rope rope = {64, LRUN_ROPE_STYLE_ADJACENT, 100000.0, 1.0, NULL, 0, {0, 0}, 0};
    float cs[64], xr[64], xw[64];
    for (int i = 0; i < 64; i++) xr[i] = xw[i] = frand(-5, 5);
    lrun_cpu_rope_cos_sin(&rope, 37, cs);
    lrun_cpu_rope_apply(&rope, cs, xr, 1, 64);
    const float ts = powf(100000.0f, -2.0f / 64);
    float theta = 37.0f;
    int ok = 1;
    for (int i = 0; i < 32; i++) {
        const float c = cosf(theta), s = sinf(theta), a0 = xw[2 * i], a1 = xw[2 * i + 1];
        ok &= xr[2 * i] == fmaf(a0, c, -(a1 * s)) && xr[2 * i + 1] == fmaf(a0, s, a1 * c);
        theta *= ts;
    }
    CHECK("rope: llama.cpp's bits (f32 theta recurrence, cosf/sinf, fmaf)", ok);
}

// ---------------------------------------------------------------- attention

/* out = softmax(scale * K q) V over n_pos rows, in double. k (n_pos, stride), vt (hd, vstride). */
static void attention_reference(double *out, const float *q, const float *k, int64_t stride, const float *vt,
                                int64_t vstride, int64_t n_pos, int64_t hd, double scale)
{
    double *s = malloc((size_t)n_pos * sizeof *s), mx = -INFINITY, sum = 0;
    for (int64_t t = 0; t < n_pos; t++) {
        double d = 0;
        for (int64_t i = 0; i < hd; i++) d += (double)q[i] * k[t * stride + i];
        s[t] = d * scale;
        mx = s[t] > mx ? s[t] : mx;
    }
    for (int64_t t = 0; t < n_pos; t++) sum += (s[t] = exp(s[t] - mx));
    for (int64_t i = 0; i < hd; i++) {
        double acc = 0;
        for (int64_t t = 0; t < n_pos; t++) acc += s[t] / sum * vt[i * vstride + t];
        out[i] = acc;
    }
    free(s);
}

/* A cache of one sequence as the engine keeps it: keys (cap, nkv, hd), values
 * transposed (nkv, hd, cap), cap a multiple of 32, values past len zero;
 * kf/vf hold the same numbers in f32 (rounded through f16 when dtype is f16). */
struct test_cache {
    int64_t cap, len, nkv, hd;
    lrun_dtype dtype;
    void *k, *v;
    float *kf, *vf;
};

static void cache_fill(struct test_cache *c, lrun_dtype dtype, int64_t len, int64_t nkv, int64_t hd)
{
    c->cap = (len + 31) / 32 * 32, c->len = len, c->nkv = nkv, c->hd = hd, c->dtype = dtype;
    const int64_t kvd = nkv * hd, n = c->cap * kvd;
    const size_t eb = dtype == LRUN_DTYPE_F16 ? 2 : 4;
    c->k = calloc((size_t)n, eb), c->v = calloc((size_t)n, eb);
    c->kf = calloc((size_t)n, sizeof(float)), c->vf = calloc((size_t)n, sizeof(float));
    float row[1024];
    for (int64_t t = 0; t < len; t++) {
        for (int64_t i = 0; i < kvd; i++) row[i] = frand(-2, 2);
        lrun_cpu_kv_store((char *)c->k + (size_t)(t * kvd) * eb, dtype, 1, row, kvd);
        for (int64_t i = 0; i < kvd; i++) row[i] = frand(-2, 2);
        lrun_cpu_kv_store((char *)c->v + (size_t)t * eb, dtype, c->cap, row, kvd);
    }
    if (dtype == LRUN_DTYPE_F16) {
        lrun_cpu_f32_from_f16(c->kf, c->k, n);
        lrun_cpu_f32_from_f16(c->vf, c->v, n);
    } else {
        memcpy(c->kf, c->k, (size_t)n * sizeof(float));
        memcpy(c->vf, c->v, (size_t)n * sizeof(float));
    }
}

static void cache_free(struct test_cache *c) { free(c->k), free(c->v), free(c->kf), free(c->vf); }

static void test_attention(void)
{
    /* HD 40: the 4x8 score dot leaves 8 elements to its double tail */
    enum { NH = 6, NKV = 2, NT = 4 };
    const int64_t hds[] = {64, 40, 12};
    const lrun_dtype dts[] = {LRUN_DTYPE_F32, LRUN_DTYPE_F16};
    lrun_threadpool *pool;
    CHECK("thread pool", lrun_threadpool_init(&pool, 2) == LRUN_OK);
    for (size_t hi = 0; hi < 3; hi++)
        for (size_t di = 0; di < 2; di++)
            for (int chain8 = 0; chain8 < 2; chain8++) {
                const int64_t HD = hds[hi], kvd = NKV * HD, CAP = 70;
                struct test_cache c[2];
                cache_fill(&c[0], dts[di], CAP, NKV, HD);
                cache_fill(&c[1], dts[di], 33, NKV, HD);
                float *q = malloc(NT * NH * HD * sizeof *q), *out = malloc(NT * NH * HD * sizeof *out);
                for (int i = 0; i < NT * NH * HD; i++) q[i] = frand(-1.5f, 1.5f);
                const void *kp[NT] = {c[0].k, c[1].k, c[0].k, c[1].k}, *vp[NT] = {c[0].v, c[1].v, c[0].v, c[1].v};
                const struct test_cache *cp[NT] = {&c[0], &c[1], &c[0], &c[1]};
                const int64_t vs[NT] = {c[0].cap, c[1].cap, c[0].cap, c[1].cap}, npos[NT] = {1, 7, 64, 33};
                float *scores = malloc(2 * 160 * sizeof *scores); /* 64 positions padded to 96, and a q row */
                const float scale = 1.0f / sqrtf((float)HD);
                const lrun_attention_batch b = {.n_tok = NT, .n_head = NH, .n_head_kv = NKV, .head_dim = HD,
                                                .scale = scale, .kv_dtype = dts[di], .pv_chain8 = chain8, .q = q,
                                                .out = out, .k = kp, .v = vp, .v_stride = vs, .n_pos = npos,
                                                .scores = scores, .scores_stride = 160};
                /* a sliding window of 5 (Mistral): each token sees its last 5 positions */
                float *outw = malloc(NT * NH * HD * sizeof *outw);
                lrun_attention_batch bw = b;
                bw.out = outw;
                bw.n_swa = 5;
                lrun_cpu_attention(pool, &bw);
                double worst_w = 0;
                for (int t = 0; t < NT; t++)
                    for (int h = 0; h < NH; h++) {
                        const int hk = h / (NH / NKV);
                        const struct test_cache *cc = cp[t];
                        const int64_t first = npos[t] > 5 ? npos[t] - 5 : 0;
                        double ref[64];
                        attention_reference(ref, q + (t * NH + h) * HD, cc->kf + first * kvd + hk * HD, kvd,
                                            cc->vf + hk * HD * cc->cap + first, cc->cap, npos[t] - first, HD, scale);
                        worst_w = fmax(worst_w, max_rel(outw + (t * NH + h) * HD, ref, HD, 1e-2));
                    }
                free(outw);
                char wname[160];
                snprintf(wname, sizeof wname, "sliding window 5, head dim %lld, %s cache, %s order: the double "
                         "reference over the last 5 positions (rel %.1e)", (long long)HD, lrun_dtype_name(dts[di]),
                         chain8 ? "prompt" : "decode", worst_w);
                CHECK(wname, worst_w < (dts[di] == LRUN_DTYPE_F16 ? 3e-2 : 5e-5)); /* a wrong window: O(1) */
                lrun_cpu_attention(pool, &b);
                double worst = 0;
                int exact = 1;
                for (int t = 0; t < NT; t++)
                    for (int h = 0; h < NH; h++) {
                        const int hk = h / (NH / NKV);
                        const struct test_cache *cc = cp[t];
                        double ref[64];
                        const float *qh = q + (t * NH + h) * HD, *o = out + (t * NH + h) * HD;
                        attention_reference(ref, qh, cc->kf + hk * HD, kvd, cc->vf + hk * HD * cc->cap, cc->cap,
                                            npos[t], HD, scale);
                        worst = fmax(worst, max_rel(o, ref, HD, 1e-2));
                        /* llama.cpp's order on the same numbers, as f32 */
                        float kh[96 * 64], vt[64 * 96], want[64];
                        const int64_t n_pad = (npos[t] + 31) / 32 * 32;
                        for (int64_t j = 0; j < npos[t]; j++)
                            for (int64_t i = 0; i < HD; i++) kh[j * HD + i] = cc->kf[j * kvd + hk * HD + i];
                        for (int64_t i = 0; i < HD; i++)
                            for (int64_t j = 0; j < n_pad; j++)
                                vt[i * n_pad + j] = j < npos[t] ? cc->vf[(hk * HD + i) * cc->cap + j] : 0.0f;
                        ref_attention(want, qh, kh, vt, npos[t], HD, scale, chain8, dts[di] == LRUN_DTYPE_F16);
                        exact &= memcmp(o, want, (size_t)HD * sizeof *o) == 0;
                    }
                /* an f16 cache rounds q and p to f16 as well (~5e-4 each), which the
                 * double reference does not: a looser bound there */
                const double tol = dts[di] == LRUN_DTYPE_F16 ? 3e-2 : 1e-5;
                char name[160];
                snprintf(name, sizeof name, "GQA attention, head dim %lld, %s cache, %s order: the double reference "
                         "(rel %.1e < %.0e)", (long long)HD, lrun_dtype_name(dts[di]), chain8 ? "prompt" : "decode",
                         worst, tol);
                CHECK(name, worst < tol);
                snprintf(name, sizeof name, "GQA attention, head dim %lld, %s cache, %s order: llama.cpp's bits",
                         (long long)HD, lrun_dtype_name(dts[di]), chain8 ? "prompt" : "decode");
                CHECK(name, exact);
                if (hi == 0 && di == 0 && chain8 == 0) {
                    /* a one-position cache returns v */
                    float o1[64];
                    lrun_cpu_attention_head(o1, q, c[0].k, kvd, c[0].v, c[0].cap, LRUN_DTYPE_F32, 1, HD, scale, 0,
                                            scores);
                    int same = 1;
                    for (int i = 0; i < HD; i++) same &= o1[i] == c[0].vf[i * c[0].cap];
                    CHECK("attention over one position is that position's value", same);
                }
                free(q), free(out), free(scores);
                cache_free(&c[0]), cache_free(&c[1]);
            }
    lrun_threadpool_free(pool);
}

static void test_kv_store(void)
{
    float src[21], back[21];
    uint16_t h[21 * 3];
    for (int i = 0; i < 21; i++) src[i] = frand(-100, 100);
    memset(h, 0, sizeof h);
    lrun_cpu_kv_store(h, LRUN_DTYPE_F16, 3, src, 21);
    int ok = 1;
    for (int i = 0; i < 21; i++) ok &= h[3 * i] == lrun_f32_to_f16(src[i]) && h[3 * i + 1] == 0;
    CHECK("kv_store: f16 column with a stride", ok);
    lrun_cpu_kv_store(back, LRUN_DTYPE_F32, 1, src, 21);
    CHECK("kv_store: f32 row", memcmp(back, src, sizeof src) == 0);
}

// ---------------------------------------------------------------- fused matrix-vector products

/* The fused decode products must equal lrun_cpu_matmul with m = 1 bit for
 * bit (decode and prefill then agree), whatever the dtypes and sharing. */
static void test_matvec_multi(void)
{
    enum { K = 512, K2 = 256 };
    const lrun_dtype types[4] = {LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q8_0, LRUN_DTYPE_F32, LRUN_DTYPE_Q4_K};
    const int64_t rows[4] = {80, 48, 33, 272}, ks[4] = {K, K, K, K2};
    float x[K], x2[K2], *wf = malloc(sizeof(float) * 272 * K);
    for (int i = 0; i < K; i++) x[i] = frand(-2, 2);
    for (int i = 0; i < K2; i++) x2[i] = frand(-2, 2);
    lrun_matvec parts[4];
    void *w[4];
    float *y[4], *want[4];
    lrun_threadpool *pool;
    CHECK("thread pool", lrun_threadpool_init(&pool, 2) == LRUN_OK);
    for (int p = 0; p < 4; p++) {
        size_t rb;
        lrun_dtype_row_bytes(types[p], ks[p], &rb);
        w[p] = malloc(rb * (size_t)rows[p]);
        for (int64_t r = 0; r < rows[p]; r++) {
            for (int64_t i = 0; i < ks[p]; i++) wf[i] = frand(-1, 1);
            lrun_quantize_row(types[p], wf, (char *)w[p] + r * rb, ks[p]);
        }
        y[p] = malloc(sizeof(float) * (size_t)rows[p]);
        want[p] = malloc(sizeof(float) * (size_t)rows[p]);
        parts[p] = (lrun_matvec){types[p], w[p], rb, rows[p], ks[p], p == 3 ? x2 : x, y[p]};
        void *work = malloc(lrun_cpu_matmul_work_bytes(types[p], 1, ks[p]) + 64);
        lrun_cpu_matmul(pool, types[p], w[p], rb, rows[p], ks[p], parts[p].x, 1, want[p], work);
        free(work);
    }
    void *work = malloc(lrun_cpu_matvec_work_bytes(parts, 4));
    lrun_cpu_matvec_multi(pool, parts, 4, work);
    int same = 1;
    for (int p = 0; p < 4; p++) same &= memcmp(y[p], want[p], sizeof(float) * (size_t)rows[p]) == 0;
    CHECK("fused q4_1, q8_0, f32 and q4_K products equal lrun_cpu_matmul (m = 1) exactly", same);
    for (int p = 0; p < 4; p++) memset(y[p], 0, sizeof(float) * (size_t)rows[p]);
    lrun_cpu_matvec_multi(NULL, parts, 2, work);
    CHECK("and on the calling thread alone", memcmp(y[0], want[0], sizeof(float) * 80) == 0 &&
                                                 memcmp(y[1], want[1], sizeof(float) * 48) == 0 && y[2][0] == 0.0f);
    free(work), free(wf);
    for (int p = 0; p < 4; p++) free(w[p]), free(y[p]), free(want[p]);
    lrun_threadpool_free(pool);
}

// ---------------------------------------------------------------- parallel rows

static void mark_rows(void *ctx, int64_t first, int64_t last)
{
    int *seen = ctx;
    for (int64_t i = first; i < last; i++) seen[i]++;
}

static void test_parallel_for(void)
{
    lrun_threadpool *pool;
    CHECK("thread pool", lrun_threadpool_init(&pool, 2) == LRUN_OK);
    int seen[101] = {0};
    lrun_cpu_parallel_for(pool, 101, 1, mark_rows, seen);
    lrun_cpu_parallel_for(pool, 101, 1000, mark_rows, seen);
    int ok = 1;
    for (int i = 0; i < 101; i++) ok &= seen[i] == 2;
    CHECK("parallel_for visits every row exactly once, pooled or inline", ok);
    lrun_threadpool_free(pool);
}

int main(void)
{
    test_rms_norm();
    test_swiglu();
    test_softmax();
    test_f16();
    test_embedding();
    test_rope();
    test_llamacpp_order();
    test_attention();
    test_kv_store();
    test_matvec_multi();
    test_parallel_for();
    test_softmax_sink(); /* last: the others' random inputs stay as they were */
    test_rope_yarn();
    return CHECK_DONE();
}
