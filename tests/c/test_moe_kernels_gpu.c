/* test_moe_kernels_gpu.c — the mixture-of-experts kernels (kernels/moe_route.cu,
 * kernels/moe_gemv.cu) against their CPU twins:
 *   lrun_k_moe_route    bit for bit against lrun_moe_route (runtime/cpu/moe_cpu.c):
 *                       the same experts in the same order and the same weight bits,
 *                       over random rows, rows with ties, and wide logits (the
 *                       exp's scaled range); and the device's selection counts;
 *   lrun_k_moe_gemv     each pair's expert product against the dequantized weights
 *                       times x in double, NMSE <= 1e-7 as test_kernels_gpu's GEMV
 *                       (the SwiGLU pair with the CPU's formula), every weight dtype;
 *   lrun_k_moe_combine  bit for bit against the CPU's slot products and sums;
 *   lrun_k_moe_scatter_add  one expert's weighted rows added into scattered
 *                       token rows, bit for bit against the host's fmaf (the
 *                       streamed prefill's sum, engine_cuda_moe_stream.c).
 * The argument checks run everywhere; the rest is one TAP SKIP line where no
 * GPU is visible. (A file of its own, not test_kernels_gpu.c: that one is past
 * the house's file size, and the MoE kernels come and go together.) */
#include "check.h"
#include "core/device.h"
#include "cpu/moe_route.h"
#include "cuda/cuda_backend.h"
#include "quant/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "kernels.h"
#include "moe_gpu_fixture.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(float lo, float hi) /* U(lo, hi) */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

// ---------------------------------------------------------------- argument checks (no GPU needed)

static int fails_with(lrun_status got, lrun_status want, const char *a)
{
    return got == want && strstr(lrun_last_error(), a) != NULL;
}

static void test_arguments(void)
{
    CHECK("moe_route: n_expert 12 (not a multiple of 8) is LRUN_E_ARG",
          fails_with(lrun_k_moe_route(FAKE, 1, 12, 2, FAKE, FAKE, NULL, FAKE), LRUN_E_ARG, "lrun_k_moe_route"));
    CHECK("moe_route: k 33 is LRUN_E_ARG",
          fails_with(lrun_k_moe_route(FAKE, 1, 64, 33, FAKE, FAKE, NULL, FAKE), LRUN_E_ARG, "33"));
    CHECK("moe_route: NULL ids is LRUN_E_ARG",
          fails_with(lrun_k_moe_route(FAKE, 1, 64, 2, NULL, FAKE, NULL, FAKE), LRUN_E_ARG, "ids"));
    CHECK("moe_gemv: a Q8_1 weight is unsupported",
          lrun_k_moe_gemv(LRUN_DTYPE_Q8_1, FAKE, NULL, 36, 36 * 4, 4, 32, FAKE, FAKE, 1, 1, FAKE, FAKE) != LRUN_OK);
    CHECK("moe_gemv: expert_bytes below n rows is LRUN_E_ARG",
          fails_with(lrun_k_moe_gemv(LRUN_DTYPE_Q8_0, FAKE, NULL, 34, 34, 4, 32, FAKE, FAKE, 1, 1, FAKE, FAKE),
                     LRUN_E_ARG, "expert_bytes"));
    CHECK("moe_gemv_supported: f16 rows off 16 bytes are not", !lrun_k_moe_gemv_supported(LRUN_DTYPE_F16, FAKE, 24, 48, 12));
    CHECK("moe_combine: k 0 is LRUN_E_ARG",
          fails_with(lrun_k_moe_combine(FAKE, FAKE, 1, 0, 8, FAKE, FAKE), LRUN_E_ARG, "lrun_k_moe_combine"));
    CHECK("moe_scatter_add: cnt 0 is LRUN_E_ARG",
          fails_with(lrun_k_moe_scatter_add(FAKE, FAKE, FAKE, 0, 8, FAKE, FAKE), LRUN_E_ARG, "lrun_k_moe_scatter_add"));
    CHECK("moe_scatter_add: NULL tok is LRUN_E_ARG",
          fails_with(lrun_k_moe_scatter_add(FAKE, NULL, FAKE, 1, 8, FAKE, FAKE), LRUN_E_ARG, "tok"));
}

// ---------------------------------------------------------------- routing

/* rows of n_exp logits: kind 0 random in [-4, 4), 1 rounded to eighths (ties), 2 wide [-120, 120).
 * oai: gpt-oss's routing (lrun_k_moe_route_oai against lrun_moe_route_oai): the same ids, the weights
 * within 1e-6 (the CPU's softmax of 8 or more takes its vector exp, the device expf). */
static void route_case(int64_t n_exp, int64_t k, int kind, int oai)
{
    const int64_t rows = 37;
    dreset();
    float *l = malloc((size_t)(rows * n_exp) * 4), *ref_w = malloc((size_t)(rows * k) * 4);
    float *got_w = malloc((size_t)(rows * k) * 4), *p = malloc((size_t)n_exp * 4);
    int32_t *ref_ids = malloc((size_t)(rows * k) * 4), *got_ids = malloc((size_t)(rows * k) * 4);
    unsigned long long *cnt = calloc((size_t)n_exp + 1, 8);
    int64_t *want = calloc((size_t)n_exp, 8);
    for (int64_t i = 0; i < rows * n_exp; i++) {
        const float v = kind == 2 ? frand(-120.0f, 120.0f) : frand(-4.0f, 4.0f);
        l[i] = kind == 1 ? roundf(v * 8.0f) / 8.0f + 0.0f : v;
    }
    for (int64_t r = 0; r < rows; r++) {
        memcpy(p, l + r * n_exp, (size_t)n_exp * 4);
        (oai ? lrun_moe_route_oai : lrun_moe_route)(p, n_exp, k, ref_ids + r * k, ref_w + r * k);
        for (int64_t s = 0; s < k; s++) want[ref_ids[r * k + s]]++;
    }
    float *dl = dcopy(l, (size_t)(rows * n_exp) * 4), *dw = dbuf((size_t)(rows * k) * 4);
    int32_t *di = dbuf((size_t)(rows * k) * 4);
    unsigned long long *dc = dcopy(cnt, ((size_t)n_exp + 1) * 8);
    const int ok = ran((oai ? lrun_k_moe_route_oai : lrun_k_moe_route)(dl, rows, n_exp, k, di, dw, dc, stream));
    down(got_ids, di, (size_t)(rows * k) * 4), down(got_w, dw, (size_t)(rows * k) * 4);
    down(cnt, dc, ((size_t)n_exp + 1) * 8);
    long bad_id = 0, bad_w = 0, bad_cnt = cnt[n_exp] != (unsigned long long)rows;
    for (int64_t j = 0; j < rows * k; j++) {
        if (got_ids[j] != ref_ids[j]) {
            if (bad_id++ == 0)
                printf("# row %lld slot %lld: expert %d on the device, %d on the CPU\n", (long long)(j / k),
                       (long long)(j % k), got_ids[j], ref_ids[j]);
        } else if (oai ? fabsf(got_w[j] - ref_w[j]) > 1e-6f * fabsf(ref_w[j]) + 1e-7f : bits(got_w[j]) != bits(ref_w[j])) {
            if (bad_w++ == 0)
                printf("# row %lld slot %lld: weight %.9g (0x%08x) on the device, %.9g (0x%08x) on the CPU\n",
                       (long long)(j / k), (long long)(j % k), got_w[j], bits(got_w[j]), ref_w[j], bits(ref_w[j]));
        }
    }
    for (int64_t x = 0; x < n_exp; x++) bad_cnt += cnt[x] != (unsigned long long)want[x];
    static const char *kinds[] = {"random", "with ties", "wide"};
    char name[256];
    snprintf(name, sizeof name, "moe_route%s %lld experts top-%lld, %s logits: the CPU's ids (%ld differ) and weight %s "
             "(%ld differ), counts (%ld differ)", oai ? "_oai" : "", (long long)n_exp, (long long)k, kinds[kind], bad_id,
             oai ? "values within 1e-6" : "bits", bad_w, bad_cnt);
    CHECK(name, ok && bad_id == 0 && bad_w == 0 && bad_cnt == 0);
    free(l), free(ref_w), free(got_w), free(p), free(ref_ids), free(got_ids), free(cnt), free(want);
}

static void test_route(void)
{
    static const int64_t shapes[][2] = {{8, 2}, {8, 8}, {64, 6}, {128, 8}, {256, 8}, {512, 32}, {16, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int kind = 0; kind < 3; kind++) route_case(shapes[i][0], shapes[i][1], kind, 0);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) route_case(shapes[i][0], shapes[i][1], 0, 1);
    route_case(32, 4, 1, 1); /* gpt-oss-20b's shape, with ties */
    route_case(128, 4, 2, 1); /* gpt-oss-120b's, wide logits */
}

// ---------------------------------------------------------------- expert products

static const lrun_dtype types[] = {LRUN_DTYPE_F32,  LRUN_DTYPE_F16,  LRUN_DTYPE_BF16, LRUN_DTYPE_Q4_0,
                                   LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q6_K,
                                   LRUN_DTYPE_Q5_0, LRUN_DTYPE_Q5_1, LRUN_DTYPE_Q2_K, LRUN_DTYPE_Q3_K,
                                   LRUN_DTYPE_Q5_K, LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_IQ4_XS, LRUN_DTYPE_MXFP4};

/* E experts of n rows of k elements of t, stacked; random values */
static uint8_t *experts(lrun_dtype t, int64_t E, int64_t n, int64_t k, size_t rb, uint64_t seed)
{
    uint8_t *w = malloc((size_t)(E * n) * rb);
    for (int64_t r = 0; r < E * n; r++)
        if (lrun_random_fill(t, w + (size_t)r * rb, r * k, k, 1.0f, seed) != LRUN_OK) {
            printf("Bail out! random_fill: %s\n", lrun_last_error());
            exit(1);
        }
    return w;
}

/* row r of expert e times x, in double */
static double ref_dot(lrun_dtype t, const uint8_t *w, size_t rb, int64_t n, int64_t e, int64_t r, int64_t k,
                      const float *x, float *tmp)
{
    lrun_dequantize_row(t, w + (size_t)(e * n + r) * rb, tmp, k);
    double s = 0.0;
    for (int64_t c = 0; c < k; c++) s += (double)tmp[c] * x[c];
    return s;
}

/* swiglu_oai in double (moe_cpu.c's formula) */
static double swiglu_oai_ref(double g, double u)
{
    const double x = g < 7.0 ? g : 7.0, y = u < -7.0 ? -7.0 : u > 7.0 ? 7.0 : u;
    return x / (1.0 + exp(-1.702 * x)) * (y + 1.0);
}

/* mode 0: W·x; 1: SwiGLU of W and U; 2: gpt-oss's (lrun_k_moe_gemv_oai) swiglu_oai of W·x + bw and
 * U·x + bu, the biases by bias_ids (an expert cache's slots standing for other experts); 3: W·x + bw. */
static void gemv_case(lrun_dtype t, int mode)
{
    const int swiglu = mode == 1 || mode == 2, oai = mode >= 2;
    const int64_t E = 6, n = 40, k = 512, n_tok = 3, k_used = 2, P = n_tok * k_used;
    size_t rb = 0;
    lrun_dtype_row_bytes(t, k, &rb);
    dreset();
    uint8_t *w = experts(t, E, n, k, rb, 5), *u = swiglu ? experts(t, E, n, k, rb, 9) : NULL;
    float *x = malloc((size_t)(n_tok * k) * 4), *got = malloc((size_t)(P * n) * 4), *tmp = malloc((size_t)k * 4);
    double *ref = malloc((size_t)(P * n) * 8);
    int32_t ids[6] = {4, 1, 0, 4, 5, 2}; /* token 0: 4, 1; token 1: 0, 4; token 2: 5, 2 */
    const int32_t bias_ids[6] = {7, 3, 0, 7, 1, 6}; /* gpt-oss's cached chunk: slot ids[p] holds expert bias_ids[p] */
    float *bw = malloc((size_t)(8 * n) * 4), *bu = malloc((size_t)(8 * n) * 4); /* 8 experts' bias rows */
    for (int64_t i = 0; i < 8 * n; i++) bw[i] = frand(-3.0f, 3.0f), bu[i] = frand(-3.0f, 3.0f);
    for (int64_t i = 0; i < n_tok * k; i++) x[i] = frand(-1.0f, 1.0f);
    for (int64_t p = 0; p < P; p++)
        for (int64_t r = 0; r < n; r++) {
            const float *xr = x + (p / k_used) * k;
            double g = ref_dot(t, w, rb, n, ids[p], r, k, xr, tmp);
            if (oai) g += bw[bias_ids[p] * n + r];
            if (!swiglu) ref[p * n + r] = g;
            else if (!oai) ref[p * n + r] = g / (1.0 + exp(-g)) * ref_dot(t, u, rb, n, ids[p], r, k, xr, tmp);
            else ref[p * n + r] = swiglu_oai_ref(g, ref_dot(t, u, rb, n, ids[p], r, k, xr, tmp) + bu[bias_ids[p] * n + r]);
        }
    const size_t eb = (size_t)n * rb;
    const void *dw = dcopy(w, (size_t)E * eb), *du = swiglu ? dcopy(u, (size_t)E * eb) : NULL;
    const float *dx = dcopy(x, (size_t)(n_tok * k) * 4);
    const int32_t *di = dcopy(ids, sizeof ids);
    float *dy = dbuf((size_t)(P * n) * 4);
    const float *dbw = dcopy(bw, (size_t)(8 * n) * 4), *dbu = dcopy(bu, (size_t)(8 * n) * 4);
    const int32_t *dbi = dcopy(bias_ids, sizeof bias_ids);
    const int ok = ran(oai ? lrun_k_moe_gemv_oai(t, dw, du, dbw, swiglu ? dbu : NULL, dbi, rb, eb, n, k, di, dx,
                                                 k_used, P, dy, stream)
                           : lrun_k_moe_gemv(t, dw, du, rb, eb, n, k, di, dx, k_used, P, dy, stream));
    down(got, dy, (size_t)(P * n) * 4);
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < P * n; i++) num += (ref[i] - got[i]) * (ref[i] - got[i]), den += ref[i] * ref[i];
    const double e = den > 0 ? num / den : num;
    char name[256];
    static const char *const what[] = {"", " swiglu", " oai: biases by expert id, swiglu_oai", " oai: bias"};
    snprintf(name, sizeof name, "moe_gemv %s%s, 6 pairs over 6 experts of 40x512: NMSE %.3g <= 1e-7",
             lrun_dtype_name(t), what[mode], e);
    CHECK(name, ok && e <= 1e-7);
    free(w), free(u), free(x), free(got), free(tmp), free(ref), free(bw), free(bu);
}

static void test_gemv(void)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        gemv_case(types[i], 0);
        gemv_case(types[i], 1);
    }
    /* gpt-oss's experts: MXFP4 as released, and a float type */
    gemv_case(LRUN_DTYPE_MXFP4, 2);
    gemv_case(LRUN_DTYPE_MXFP4, 3);
    gemv_case(LRUN_DTYPE_BF16, 2);
}

static void test_combine(void)
{
    const int64_t n_tok = 5, k = 8, d = 300;
    dreset();
    float *y = malloc((size_t)(n_tok * k * d) * 4), *w = malloc((size_t)(n_tok * k) * 4);
    float *x = malloc((size_t)(n_tok * d) * 4), *ref = malloc((size_t)(n_tok * d) * 4), *got = malloc((size_t)(n_tok * d) * 4);
    for (int64_t i = 0; i < n_tok * k * d; i++) y[i] = frand(-3.0f, 3.0f);
    for (int64_t i = 0; i < n_tok * k; i++) w[i] = frand(0.0f, 0.5f);
    for (int64_t i = 0; i < n_tok * d; i++) x[i] = frand(-1.0f, 1.0f);
    moe_combine_ref(ref, x, y, NULL, w, n_tok, k, d); /* token t's slots are rows t*k.. of y */
    const float *dy = dcopy(y, (size_t)(n_tok * k * d) * 4), *dw = dcopy(w, (size_t)(n_tok * k) * 4);
    float *dx = dcopy(x, (size_t)(n_tok * d) * 4);
    const int ok = ran(lrun_k_moe_combine(dy, dw, n_tok, k, d, dx, stream));
    down(got, dx, (size_t)(n_tok * d) * 4);
    long bad = 0;
    for (int64_t i = 0; i < n_tok * d; i++) bad += bits(got[i]) != bits(ref[i]);
    char name[128];
    snprintf(name, sizeof name, "moe_combine 5 tokens top-8 of width 300: the CPU's bits (%ld differ)", bad);
    CHECK(name, ok && bad == 0);
    free(y), free(w), free(x), free(ref), free(got);
}

/* Two experts' rows scattered in turn into 7 of 11 token rows (distinct per
 * expert, some tokens in both): out[tok] = fmaf(w, y, out[tok]) in launch order. */
static void test_scatter_add(void)
{
    const int64_t n_tok = 11, cnt = 7, d = 257;
    const int32_t tok[2][7] = {{9, 0, 4, 5, 10, 2, 7}, {1, 4, 3, 9, 6, 0, 8}};
    dreset();
    float *y = malloc((size_t)(2 * cnt * d) * 4), *w = malloc((size_t)(2 * cnt) * 4);
    float *out = malloc((size_t)(n_tok * d) * 4), *got = malloc((size_t)(n_tok * d) * 4);
    for (int64_t i = 0; i < 2 * cnt * d; i++) y[i] = frand(-3.0f, 3.0f);
    for (int64_t i = 0; i < 2 * cnt; i++) w[i] = frand(0.0f, 0.5f);
    for (int64_t i = 0; i < n_tok * d; i++) out[i] = frand(-1.0f, 1.0f);
    float *dout = dcopy(out, (size_t)(n_tok * d) * 4);
    int ok = 1;
    for (int x = 0; x < 2; x++) {
        const float *dy = dcopy(y + x * cnt * d, (size_t)(cnt * d) * 4), *dw = dcopy(w + x * cnt, (size_t)cnt * 4);
        const int32_t *dt = dcopy(tok[x], sizeof tok[x]);
        ok &= ran(lrun_k_moe_scatter_add(dy, dt, dw, cnt, d, dout, stream));
        for (int64_t j = 0; j < cnt; j++)
            for (int64_t c = 0; c < d; c++) {
                float *o = &out[tok[x][j] * d + c];
                *o = fmaf(w[x * cnt + j], y[(x * cnt + j) * d + c], *o);
            }
    }
    down(got, dout, (size_t)(n_tok * d) * 4);
    long bad = 0;
    for (int64_t i = 0; i < n_tok * d; i++) bad += bits(got[i]) != bits(out[i]);
    char name[128];
    snprintf(name, sizeof name, "moe_scatter_add 2 experts of 7 tokens, width 257: the host fmaf's bits (%ld differ)", bad);
    CHECK(name, ok && bad == 0);
    free(y), free(w), free(out), free(got);
}

int main(void)
{
    test_arguments();
    const int open = moe_gpu_open((size_t)64 << 20);
    if (open <= 0) return open < 0 ? 1 : CHECK_DONE();
    test_route();
    test_gemv();
    test_combine();
    test_scatter_add();
    gpu_fixture_close();
    return CHECK_DONE();
}
#endif
