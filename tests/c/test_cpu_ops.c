/* test_cpu_ops.c — each CPU op of the forward pass against a naive
 * double-precision reference written here from the op's definition. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cpu_matmul.h"
#include "cpu_ops.h"
#include "quant.h"
#include "tensor.h"
#include "threadpool.h"

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
                                         with_ff ? ff : NULL};
                    rope_reference(ref, x, H, HD, r.n_rot, r.style, r.freq_base, r.freq_scale, r.freq_factors,
                                   positions[pi]);
                    memcpy(y, x, sizeof y);
                    lrun_cpu_rope_cos_sin(&r, positions[pi], cs);
                    lrun_cpu_rope_apply(&r, cs, y, H, HD);
                    double err = 0;
                    for (int i = 0; i < H * HD; i++) err = fmax(err, fabs(y[i] - ref[i]));
                    char name[128];
                    snprintf(name, sizeof name, "rope %s n_rot %lld pos %lld%s matches its definition (abs 2e-6)",
                             style ? "half" : "adjacent", (long long)r.n_rot, (long long)positions[pi],
                             with_ff ? " with freq factors and scale" : "");
                    CHECK(name, err < 2e-6);
                }
    /* the two styles differ (a mix-up would pass every check above only by luck) */
    for (int i = 0; i < HD; i++) x[i] = frand(-1, 1);
    float a[HD], b[HD];
    memcpy(a, x, sizeof a), memcpy(b, x, sizeof b);
    const lrun_rope ra = {HD, LRUN_ROPE_STYLE_ADJACENT, 10000.0, 1.0, NULL}, rb = {HD, LRUN_ROPE_STYLE_HALF, 10000.0, 1.0, NULL};
    lrun_cpu_rope_cos_sin(&ra, 5, cs);
    lrun_cpu_rope_apply(&ra, cs, a, 1, HD);
    lrun_cpu_rope_apply(&rb, cs, b, 1, HD);
    CHECK("adjacent and half rotations differ", memcmp(a, b, sizeof a) != 0);
}

// ---------------------------------------------------------------- attention

/* out = softmax(scale * K q) V over n_pos rows, K and V in f16 (rounded here). */
static void attention_reference(double *out, const float *q, const uint16_t *k, const uint16_t *v, int64_t stride,
                                int64_t n_pos, int64_t hd, double scale)
{
    double *s = malloc((size_t)n_pos * sizeof *s), mx = -INFINITY, sum = 0;
    for (int64_t t = 0; t < n_pos; t++) {
        double d = 0;
        for (int64_t i = 0; i < hd; i++) d += (double)q[i] * lrun_f16_to_f32(k[t * stride + i]);
        s[t] = d * scale;
        mx = s[t] > mx ? s[t] : mx;
    }
    for (int64_t t = 0; t < n_pos; t++) sum += (s[t] = exp(s[t] - mx));
    for (int64_t i = 0; i < hd; i++) {
        double acc = 0;
        for (int64_t t = 0; t < n_pos; t++) acc += s[t] / sum * lrun_f16_to_f32(v[t * stride + i]);
        out[i] = acc;
    }
    free(s);
}

static void test_attention(void)
{
    enum { NH = 6, NKV = 2, HD = 40, CAP = 50, NT = 4 }; /* HD 40: the 8-wide loops and their tails */
    const int64_t kvd = NKV * HD;
    uint16_t *kc[2], *vc[2];
    float *tmp = malloc(CAP * kvd * sizeof *tmp);
    for (int s = 0; s < 2; s++) {
        kc[s] = malloc(CAP * kvd * sizeof(uint16_t));
        vc[s] = malloc(CAP * kvd * sizeof(uint16_t));
        for (int i = 0; i < CAP * kvd; i++) tmp[i] = frand(-2, 2);
        lrun_cpu_f16_from_f32(kc[s], tmp, CAP * kvd);
        for (int i = 0; i < CAP * kvd; i++) tmp[i] = frand(-2, 2);
        lrun_cpu_f16_from_f32(vc[s], tmp, CAP * kvd);
    }
    float q[NT * NH * HD], out[NT * NH * HD];
    for (int i = 0; i < NT * NH * HD; i++) q[i] = frand(-1.5f, 1.5f);
    const uint16_t *kp[NT] = {kc[0], kc[1], kc[0], kc[1]}, *vp[NT] = {vc[0], vc[1], vc[0], vc[1]};
    const int64_t npos[NT] = {1, 7, 33, CAP};
    lrun_threadpool *pool;
    CHECK("thread pool", lrun_threadpool_init(&pool, 2) == LRUN_OK);
    float *scores = malloc(2 * CAP * sizeof *scores);
    const float scale = 1.0f / sqrtf((float)HD);
    const lrun_attention_batch b = {NT, NH, NKV, HD, scale, q, out, kp, vp, npos, scores, CAP};
    lrun_cpu_attention(pool, &b);
    double worst = 0;
    for (int t = 0; t < NT; t++)
        for (int h = 0; h < NH; h++) {
            double ref[HD];
            const int hk = h / (NH / NKV);
            attention_reference(ref, q + (t * NH + h) * HD, kp[t] + hk * HD, vp[t] + hk * HD, kvd, npos[t], HD, scale);
            worst = fmax(worst, max_rel(out + (t * NH + h) * HD, ref, HD, 1e-2));
        }
    CHECK("GQA attention over a batch matches the double reference (rel 1e-5)", worst < 1e-5);

    /* one head through the single-head entry point: a one-position cache returns v */
    double ref1[HD];
    float o1[HD];
    lrun_cpu_attention_head(o1, q, kc[0], vc[0], kvd, 1, HD, scale, scores);
    for (int i = 0; i < HD; i++) ref1[i] = lrun_f16_to_f32(vc[0][i]);
    CHECK("attention over one position is that position's value", max_rel(o1, ref1, HD, 1e-3) < 1e-6);

    /* a head size that is not a multiple of 8 takes the scalar path */
    enum { HD2 = 12, NP2 = 9 };
    double ref2[HD2];
    float o2[HD2];
    lrun_cpu_attention_head(o2, q, kc[1], vc[1], kvd, NP2, HD2, 0.3f, scores);
    attention_reference(ref2, q, kc[1], vc[1], kvd, NP2, HD2, 0.3);
    CHECK("attention with head size 12 matches the reference (rel 1e-5)", max_rel(o2, ref2, HD2, 1e-2) < 1e-5);

    lrun_threadpool_free(pool);
    free(scores), free(tmp);
    for (int s = 0; s < 2; s++) free(kc[s]), free(vc[s]);
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
    test_attention();
    test_matvec_multi();
    test_parallel_for();
    return CHECK_DONE();
}
