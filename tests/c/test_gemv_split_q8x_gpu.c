/* test_gemv_split_q8x_gpu.c — the split-row GEMV with x quantized once
 * (kernels/gemv_split_q8x.cu, lrun_k_gemv_q8x after
 * lrun_k_quantize_q8), the engine's default for Q8_0/Q4_0 decode:
 *   - against an f64 CPU reference with the q8-rounded x (lrun_dequantize_row
 *     rows, x rounded by lrun_quantize_activations, which lrun_k_quantize_q8
 *     matches byte for byte): error over Σ|terms| <= 1e-6, on odd shapes (k a
 *     multiple of 32 but not of 256; n not a multiple of the 8 rows a block),
 *     padded strides, STORE and ADD, SWIGLU, m = 3 and m = 8 rows of x;
 *   - against gemv_split.cu (LRUN_K_GEMV_SPLIT, x quantized in the kernel by
 *     the same rule, the same operations per lane): the same bits; and the
 *     same kernel on GGUF's rows (split 0, the engine's streamed weights):
 *     the same bits;
 *   - against the GGUF kernel with f32 x (what the engine ran before): the
 *     difference over Σ|terms| within 2e-2, the bound x's rounding allows
 *     here (relative to max |y| it is printed; the prototype measured ~6e-3
 *     against f64 with x on the 7B shapes);
 *   - the shared input: three weights in one launch from one quantized x
 *     give the bits of three separate quantize + GEMV calls;
 *   - captured into a CUDA graph (quantize and GEMV) and replayed: the bits
 *     of the eager calls;
 *   - the arguments it must refuse, each with an error naming why.
 *
 *   build/tests/test_gemv_split_q8x_gpu    the tests (one SKIP line without a GPU) */
#include "check.h"
#include "core/device.h"
#include "cuda/cuda_backend.h"
#include "model/random_fill.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"
#include "quant/quant_split.h"

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
#include <cuda_runtime_api.h>

#include "kernels.h"

#include "gemv_q8_ref.h" /* gemv_ref_rows, gemv_ref_q8, gemv_ref_stride, gemv_ref_split */
#include "gpu_fixture.h" /* dev, stream, the bump arena, up/down/dcopy, ran */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(float lo, float hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

/* m rows of x (m, k) quantized on the device: xq (m, k), xd (m, k/32) */
struct qx {
    int8_t *xq;
    float *xd;
};
static struct qx quantize(const float *dx, int64_t m, int64_t k, int *ok)
{
    struct qx q = {dbuf((size_t)(m * k)), dbuf((size_t)(m * k / 32) * 4)};
    *ok &= ran(lrun_k_quantize_q8(LRUN_DTYPE_Q8_0, dx, m, k, q.xq, q.xd, NULL, stream));
    return q;
}

/* worst |y − ref| / (terms + add) over n: NaN (a row never written) is infinite */
static double worst_of(const float *y, const double *ref, const double *terms, int64_t n, double base, double worst)
{
    for (int64_t r = 0; r < n; r++) {
        const double want = ref[r] + base * (1.0 + (double)r);
        const double e = fabs(y[r] - want) / (terms[r] + base * (1.0 + (double)r) + 1e-30);
        worst = isnan(e) ? INFINITY : (e > worst ? e : worst);
    }
    return worst;
}

static const lrun_dtype types[] = {LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_0};

// ---------------------------------------------------------------- one weight

/* STORE and ADD against the f64 reference; STORE against gemv_split.cu
 * (bits) and the GGUF kernel with f32 x (1e-2 of max |y|) */
static void test_case(lrun_dtype t, int64_t n, int64_t k, size_t pad)
{
    dreset();
    const size_t stride = gemv_ref_stride(t, k, pad), bytes = (size_t)n * stride;
    uint8_t *w = gemv_ref_rows(t, n, k, stride, (uint64_t)(n * 131 + k)), *s = gemv_ref_split(t, w, n, k, stride);
    float *x = malloc((size_t)k * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    float *y_lib = malloc((size_t)n * sizeof *y_lib), *y_gguf = malloc((size_t)n * sizeof *y_gguf);
    for (int64_t i = 0; i < k; i++) x[i] = frand(-1.5f, 1.5f) * (i % 7 == 0 ? 3.0f : 1.0f);
    double *ref = malloc((size_t)n * sizeof *ref), *terms = malloc((size_t)n * sizeof *terms);
    gemv_ref_q8(t, w, n, k, stride, x, ref, terms);
    void *ds = dcopy(s, bytes), *dg = dcopy(w, bytes);
    float *dx = dcopy(x, (size_t)k * 4), *dy = dbuf((size_t)n * 4);
    int ok = 1;
    const struct qx q = quantize(dx, 1, k, &ok);
    const lrun_k_gemv_part part = {ds, stride, n, dy}, gguf = {dg, stride, n, dy};

    for (int64_t r = 0; r < n; r++) y[r] = NAN; /* a row never written fails */
    up(dy, y, (size_t)n * 4);
    ok &= ran(lrun_k_gemv_q8x(t, &part, 1, k, q.xq, q.xd, 1, LRUN_K_GEMV_STORE, 1, stream));
    down(y, dy, (size_t)n * 4);
    double worst = worst_of(y, ref, terms, n, 0.0, 0.0);

    /* GGUF's rows through the same kernel (split 0: the engine's streamed weights) */
    ok &= ran(lrun_k_gemv_q8x(t, &gguf, 1, k, q.xq, q.xd, 1, LRUN_K_GEMV_STORE, 0, stream));
    down(y_lib, dy, (size_t)n * 4);
    const int same_gguf = memcmp(y, y_lib, (size_t)n * 4) == 0;
    ok &= ran(lrun_k_gemv_multi(t, &part, 1, k, dx, 1, LRUN_K_GEMV_STORE | LRUN_K_GEMV_SPLIT, stream));
    down(y_lib, dy, (size_t)n * 4);
    ok &= ran(lrun_k_gemv_multi(t, &gguf, 1, k, dx, 1, LRUN_K_GEMV_STORE, stream));
    down(y_gguf, dy, (size_t)n * 4);
    /* x's rounding moves a term w·x by at most |w|·d/2 (d = amax/127 of its
     * block), so over Σ|terms| at most amax/254 over mean |x|: < 2e-2 for
     * this x (amax <= 4.5, mean |x| ~0.96); random signs keep it far lower */
    double d_gguf = 0.0, d_rel = 0.0, m_gguf = 1e-30;
    for (int64_t r = 0; r < n; r++) {
        d_gguf = fmax(d_gguf, fabs((double)y[r] - y_gguf[r]));
        d_rel = fmax(d_rel, fabs((double)y[r] - y_gguf[r]) / (terms[r] + 1e-30));
        m_gguf = fmax(m_gguf, fabs((double)y_gguf[r]));
    }
    const int same_lib = memcmp(y, y_lib, (size_t)n * 4) == 0;

    float *y0 = malloc((size_t)n * sizeof *y0);
    for (int64_t r = 0; r < n; r++) y0[r] = 1.0f + (float)r;
    up(dy, y0, (size_t)n * 4);
    ok &= ran(lrun_k_gemv_q8x(t, &part, 1, k, q.xq, q.xd, 1, LRUN_K_GEMV_ADD, 1, stream));
    down(y0, dy, (size_t)n * 4);
    worst = worst_of(y0, ref, terms, n, 1.0, worst);

    char name[240];
    snprintf(name, sizeof name, "q8x %s n %lld k %lld%s, store and add: error/terms %.2e <= 1e-6", lrun_dtype_name(t),
             (long long)n, (long long)k, pad ? " (padded stride)" : "", worst);
    CHECK(name, ok && worst <= 1e-6);
    snprintf(name, sizeof name, "q8x %s n %lld k %lld: the bits of gemv_split.cu (x quantized in the kernel)",
             lrun_dtype_name(t), (long long)n, (long long)k);
    CHECK(name, ok && same_lib);
    snprintf(name, sizeof name, "q8x %s n %lld k %lld: GGUF's rows (split 0) give the split rows' bits",
             lrun_dtype_name(t), (long long)n, (long long)k);
    CHECK(name, ok && same_gguf);
    snprintf(name, sizeof name,
             "q8x %s n %lld k %lld vs the GGUF kernel (f32 x): error/terms %.2e <= 2e-2 (%.2e of max|y|)",
             lrun_dtype_name(t), (long long)n, (long long)k, d_rel, d_gguf / m_gguf);
    CHECK(name, ok && d_rel <= 2e-2);
    free(w), free(s), free(x), free(y), free(y_lib), free(y_gguf), free(y0), free(ref), free(terms);
}

// ---------------------------------------------------------------- shared input, pairs, rows

/* Q, K and V of one quantized x in one launch: the bits of three separate
 * quantize + GEMV calls; and graph capture of quantize + launch */
static void test_shared(lrun_dtype t)
{
    dreset();
    const int64_t k = 4128, ns[3] = {260, 36, 68}; /* k = 129 blocks of 32; n not multiples of 8 */
    const size_t stride = gemv_ref_stride(t, k, 0);
    float *x = malloc((size_t)k * sizeof *x);
    for (int64_t i = 0; i < k; i++) x[i] = frand(-2.0f, 2.0f);
    float *dx = dcopy(x, (size_t)k * 4);
    lrun_k_gemv_part one[3], sep[3];
    for (int p = 0; p < 3; p++) {
        uint8_t *w = gemv_ref_rows(t, ns[p], k, stride, (uint64_t)(40 + p)), *s = gemv_ref_split(t, w, ns[p], k, stride);
        void *dw = dcopy(s, (size_t)ns[p] * stride);
        one[p] = (lrun_k_gemv_part){dw, stride, ns[p], dbuf((size_t)ns[p] * 4)};
        sep[p] = (lrun_k_gemv_part){dw, stride, ns[p], dbuf((size_t)ns[p] * 4)};
        free(w), free(s);
    }
    int ok = 1;
    const struct qx q = quantize(dx, 1, k, &ok);
    ok &= ran(lrun_k_gemv_q8x(t, one, 3, k, q.xq, q.xd, 1, LRUN_K_GEMV_STORE, 1, stream));
    for (int p = 0; p < 3; p++) {
        const struct qx qp = quantize(dx, 1, k, &ok); /* each its own quantization */
        ok &= ran(lrun_k_gemv_q8x(t, &sep[p], 1, k, qp.xq, qp.xd, 1, LRUN_K_GEMV_STORE, 1, stream));
    }
    int same = 1;
    float *a = malloc(260 * 4), *b = malloc(260 * 4);
    for (int p = 0; p < 3; p++) {
        down(a, one[p].y, (size_t)ns[p] * 4);
        down(b, sep[p].y, (size_t)ns[p] * 4);
        same &= memcmp(a, b, (size_t)ns[p] * 4) == 0;
    }
    char name[200];
    snprintf(name, sizeof name,
             "q8x %s: 3 weights from one quantized x = 3 separate quantize + GEMV calls, bit for bit",
             lrun_dtype_name(t));
    CHECK(name, ok && same);

    /* the same 3-part call captured with its quantization, replayed twice */
    struct qx qg = {dbuf((size_t)k), dbuf((size_t)(k / 32) * 4)};
    for (int p = 0; p < 3; p++) cudaMemsetAsync(sep[p].y, 0xff, (size_t)ns[p] * 4, (cudaStream_t)stream);
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    int cap = cudaStreamBeginCapture((cudaStream_t)stream, cudaStreamCaptureModeRelaxed) == cudaSuccess;
    const lrun_status q1 = lrun_k_quantize_q8(LRUN_DTYPE_Q8_0, dx, 1, k, qg.xq, qg.xd, NULL, stream);
    const lrun_status g1 = lrun_k_gemv_q8x(t, sep, 3, k, qg.xq, qg.xd, 1, LRUN_K_GEMV_STORE, 1, stream);
    cap &= cudaStreamEndCapture((cudaStream_t)stream, &g) == cudaSuccess && q1 == LRUN_OK && g1 == LRUN_OK;
    cap &= cudaGraphInstantiate(&ge, g, 0) == cudaSuccess;
    for (int rep = 0; cap && rep < 2; rep++) cap &= cudaGraphLaunch(ge, (cudaStream_t)stream) == cudaSuccess;
    cap &= cudaStreamSynchronize((cudaStream_t)stream) == cudaSuccess;
    for (int p = 0; cap && p < 3; p++) {
        down(a, one[p].y, (size_t)ns[p] * 4);
        down(b, sep[p].y, (size_t)ns[p] * 4);
        cap &= memcmp(a, b, (size_t)ns[p] * 4) == 0;
    }
    if (ge) cudaGraphExecDestroy(ge);
    if (g) cudaGraphDestroy(g);
    snprintf(name, sizeof name, "q8x %s: quantize + 3-part GEMV captured in a CUDA graph, replayed: the eager bits",
             lrun_dtype_name(t));
    CHECK(name, cap);
    free(x), free(a), free(b);
}

/* SWIGLU of a gate and an up weight (n 45: not a multiple of the block's rows) */
static void test_swiglu(lrun_dtype t)
{
    dreset();
    enum { N = 45 };
    const int64_t k = 1312; /* 41 blocks of 32 */
    const size_t stride = gemv_ref_stride(t, k, 0);
    uint8_t *wg = gemv_ref_rows(t, N, k, stride, 7), *wu = gemv_ref_rows(t, N, k, stride, 8);
    uint8_t *sg = gemv_ref_split(t, wg, N, k, stride), *su = gemv_ref_split(t, wu, N, k, stride);
    float *x = malloc((size_t)k * sizeof *x), y[N];
    for (int64_t i = 0; i < k; i++) x[i] = frand(-1.0f, 1.0f);
    double g[N], u[N], tg[N], tu[N];
    gemv_ref_q8(t, wg, N, k, stride, x, g, tg);
    gemv_ref_q8(t, wu, N, k, stride, x, u, tu);
    float *dx = dcopy(x, (size_t)k * 4), *dy = dbuf((size_t)N * 4);
    int ok = 1;
    const struct qx q = quantize(dx, 1, k, &ok);
    const lrun_k_gemv_part pair[2] = {{dcopy(sg, (size_t)N * stride), stride, N, dy},
                                      {dcopy(su, (size_t)N * stride), stride, N, NULL}};
    ok &= ran(lrun_k_gemv_q8x(t, pair, 2, k, q.xq, q.xd, 1, LRUN_K_GEMV_SWIGLU, 1, stream));
    down(y, dy, sizeof y);
    double worst = 0.0;
    for (int r = 0; r < N; r++) {
        const double want = g[r] / (1.0 + exp(-g[r])) * u[r];
        const double scale = (tg[r] + 1.0) * (fabs(u[r]) + tu[r] + 1.0); /* the inputs' error bounds, multiplied */
        const double e = fabs(y[r] - want) / scale;
        worst = isnan(e) ? INFINITY : (e > worst ? e : worst);
    }
    char name[160];
    snprintf(name, sizeof name, "q8x %s swiglu n %d k %lld: error/scale %.2e <= 1e-6", lrun_dtype_name(t), N,
             (long long)k, worst);
    CHECK(name, ok && worst <= 1e-6);
    free(wg), free(wu), free(sg), free(su), free(x);
}

/* m rows of x against one weight read once: each row's reference */
static void test_rows(lrun_dtype t, int64_t m)
{
    dreset();
    const int64_t k = 2080, n = 131; /* 65 blocks of 32 */
    const size_t stride = gemv_ref_stride(t, k, 16);
    uint8_t *w = gemv_ref_rows(t, n, k, stride, (uint64_t)(60 + m)), *s = gemv_ref_split(t, w, n, k, stride);
    float *x = malloc((size_t)(m * k) * sizeof *x), *y = malloc((size_t)(m * n) * sizeof *y);
    for (int64_t i = 0; i < m * k; i++) x[i] = frand(-2.0f, 2.0f);
    float *dx = dcopy(x, (size_t)(m * k) * 4), *dy = dbuf((size_t)(m * n) * 4);
    int ok = 1;
    const struct qx q = quantize(dx, m, k, &ok);
    const lrun_k_gemv_part part = {dcopy(s, (size_t)n * stride), stride, n, dy};
    for (int64_t i = 0; i < m * n; i++) y[i] = NAN;
    up(dy, y, (size_t)(m * n) * 4);
    ok &= ran(lrun_k_gemv_q8x(t, &part, 1, k, q.xq, q.xd, m, LRUN_K_GEMV_STORE, 1, stream));
    down(y, dy, (size_t)(m * n) * 4);
    double *ref = malloc((size_t)n * sizeof *ref), *terms = malloc((size_t)n * sizeof *terms), worst = 0.0;
    for (int64_t i = 0; i < m; i++) {
        gemv_ref_q8(t, w, n, k, stride, x + i * k, ref, terms);
        worst = worst_of(y + i * n, ref, terms, n, 0.0, worst);
    }
    char name[160];
    snprintf(name, sizeof name, "q8x %s m %lld n 131 k 2080 (padded stride): error/terms %.2e <= 1e-6",
             lrun_dtype_name(t), (long long)m, worst);
    CHECK(name, ok && worst <= 1e-6);
    free(w), free(s), free(x), free(y), free(ref), free(terms);
}

// ---------------------------------------------------------------- refusals

static void test_refusals(void)
{
    dreset();
    int8_t *xq = dbuf(8 * 4096);
    float *xd = dbuf(8 * 128 * 4), *dy = dbuf(64 * 4);
    void *dw = dbuf(64 * 4352);
    lrun_k_gemv_part part = {dw, 2560, 8, dy};
    CHECK("q8x refuses q4_1",
          lrun_k_gemv_q8x(LRUN_DTYPE_Q4_1, &part, 1, 4096, xq, xd, 1, LRUN_K_GEMV_STORE, 1, stream) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "q4_1") != NULL);
    part.row_bytes = 2304 + 8; /* q4_0 rows on 8-byte boundaries */
    CHECK("q8x refuses rows off 16-byte boundaries",
          lrun_k_gemv_q8x(LRUN_DTYPE_Q4_0, &part, 1, 4096, xq, xd, 1, LRUN_K_GEMV_STORE, 1, stream) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "16-byte") != NULL);
    part.row_bytes = 2304;
    CHECK("q8x refuses an xq off 16-byte boundaries", lrun_k_gemv_q8x(LRUN_DTYPE_Q4_0, &part, 1, 4096, xq + 4, xd, 1,
                                                                      LRUN_K_GEMV_STORE, 1, stream) == LRUN_E_ARG &&
                                                          strstr(lrun_last_error(), "xq") != NULL);
    CHECK("q8x refuses m 9",
          lrun_k_gemv_q8x(LRUN_DTYPE_Q4_0, &part, 1, 4096, xq, xd, 9, LRUN_K_GEMV_STORE, 1, stream) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "m 9") != NULL);
    CHECK("q8x refuses mode flags",
          lrun_k_gemv_q8x(LRUN_DTYPE_Q4_0, &part, 1, 4096, xq, xd, 1, LRUN_K_GEMV_SPLIT, 1, stream) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "mode") != NULL);
    CHECK("q8x refuses k not a multiple of 32",
          lrun_k_gemv_q8x(LRUN_DTYPE_Q8_0, &part, 1, 4080, xq, xd, 1, LRUN_K_GEMV_STORE, 1, stream) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "4080") != NULL);
}

static void tests(void)
{
    /* n: 1 to 4099, none a multiple of the 8 rows a block but 4096-ish; k: 96, 1312, 4128 are not multiples of 256 */
    static const int64_t shapes[][2] = {{1, 256},    {7, 96},    {33, 4096},   {129, 11008},
                                        {300, 2816}, {13, 1312}, {4099, 4096}, {1000, 4128}};
    for (int ti = 0; ti < 2; ti++) {
        const lrun_dtype t = types[ti];
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            test_case(t, shapes[si][0], shapes[si][1], 0);
        test_case(t, 37, 1280, 16); /* padded rows */
        test_shared(t);
        test_swiglu(t);
        test_rows(t, 3);
        test_rows(t, 8);
    }
    test_refusals();
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok %d - # SKIP no GPU\n", ++check_count);
        return CHECK_DONE();
    }
    if (!gpu_fixture_open((size_t)1 << 30)) return 1;
    lrun_k_set_pdl(lrun_k_pdl_supported(dev->cuda_ordinal)); /* as the engine launches them */
    tests();
    gpu_fixture_close();
    return CHECK_DONE();
}
#endif
