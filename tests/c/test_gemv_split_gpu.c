/* test_gemv_split_gpu.c — Q8_0/Q4_0 weights in the split-row layout on the
 * GPU (kernels/gemv_split.cu): lrun_k_split_rows in place against the
 * host's lrun_quant_split_rows and back, bit for bit (padding untouched);
 * lrun_k_dequantize_split against lrun_k_dequantize of the same GGUF rows,
 * bit for bit (its 16-byte and its 2-byte path; k up to 4128; its host
 * replay is test_dequant_split_emu); and the decode GEMV under
 * LRUN_K_GEMV_SPLIT against the CPU:
 * y must be the dot of lrun_dequantize_row's rows with x rounded by
 * lrun_quantize_activations (the kernel quantizes x the same way), within
 * f32 summation order (error over Σ|terms| <= 1e-6), on odd shapes (n 1 to
 * 4099: more row groups than the persistent grid has blocks; k 256 to
 * 11008), padded strides, an unaligned x, the modes STORE, ADD and SWIGLU,
 * three parts in one launch, m = 3 rows of x; and the weights it must
 * refuse. The layout's host side is tested by test_quant_split (make test).
 *
 *   build/tests/test_gemv_split_gpu    the tests (one SKIP line without a GPU) */
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
#include "kernels.h"

#include "gemv_q8_ref.h" /* gemv_ref_rows, gemv_ref_q8, gemv_ref_stride, gemv_ref_split */
#include "gpu_fixture.h" /* dev, stream, the bump arena, up/down/dcopy, ran */

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(float lo, float hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static const lrun_dtype types[] = {LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_0};

// ---------------------------------------------------------------- the layout

/* GGUF rows up, split in place on the device: the host's split bytes; joined
 * back: the GGUF bytes (the stride's padding untouched both ways). */
static void test_split_rows(lrun_dtype t, int64_t n, int64_t k, size_t pad)
{
    dreset();
    const size_t stride = gemv_ref_stride(t, k, pad), bytes = (size_t)n * stride;
    uint8_t *w = gemv_ref_rows(t, n, k, stride, (uint64_t)(n * 7 + k)), *s = gemv_ref_split(t, w, n, k, stride);
    uint8_t *back = malloc(bytes);
    void *dw = dcopy(w, bytes);
    int ok = ran(lrun_k_split_rows(t, dw, stride, n, k, 0, stream));
    down(back, dw, bytes);
    const int split_same = ok && memcmp(back, s, bytes) == 0;
    ok = ran(lrun_k_split_rows(t, dw, stride, n, k, 1, stream));
    down(back, dw, bytes);
    char name[160];
    snprintf(name, sizeof name,
             "split_rows %s n %lld k %lld pad %zu: split as the host's, joined to GGUF's, bit for bit",
             lrun_dtype_name(t), (long long)n, (long long)k, pad);
    CHECK(name, split_same && ok && memcmp(back, w, bytes) == 0);
    free(w), free(s), free(back);
}

/* the split rows dequantized: lrun_k_dequantize's f16 of the GGUF rows, bit
 * for bit. narrow: rows 2 bytes past a 16-byte stride and dst 2 bytes into
 * its buffer, so the kernel takes its 2-byte path (dequant_split_lane.h's
 * ds_vector_ok), not its 16-byte one. */
static void test_dequantize(lrun_dtype t, int64_t n, int64_t k, size_t pad, int narrow)
{
    dreset();
    const size_t stride = gemv_ref_stride(t, k, pad) + (narrow ? 2 : 0), bytes = (size_t)n * stride,
                 out = (size_t)n * (size_t)k * 2;
    uint8_t *w = gemv_ref_rows(t, n, k, stride, 3), *s = gemv_ref_split(t, w, n, k, stride);
    uint16_t *a = malloc(out), *b = malloc(out);
    void *da = dbuf(out);
    uint8_t *db = (uint8_t *)dbuf(out + 2) + (narrow ? 2 : 0);
    int ok = ran(lrun_k_dequantize(t, dcopy(w, bytes), stride, n, k, LRUN_DTYPE_F16, da, stream)) &&
             ran(lrun_k_dequantize_split(t, dcopy(s, bytes), stride, n, k, db, stream));
    down(a, da, out);
    down(b, db, out);
    char name[160];
    snprintf(name, sizeof name, "dequantize_split %s n %lld k %lld%s: lrun_k_dequantize's f16, bit for bit",
             lrun_dtype_name(t), (long long)n, (long long)k, narrow ? " (2-byte path)" : "");
    CHECK(name, ok && memcmp(a, b, out) == 0);
    free(w), free(s), free(a), free(b);
}

// ---------------------------------------------------------------- the GEMV

/* STORE and ADD of one split weight, x at an offset of xoff floats */
static void test_case(lrun_dtype t, int64_t n, int64_t k, size_t pad, int xoff)
{
    dreset();
    const size_t stride = gemv_ref_stride(t, k, pad);
    uint8_t *w = gemv_ref_rows(t, n, k, stride, (uint64_t)(n * 131 + k)), *s = gemv_ref_split(t, w, n, k, stride);
    float *x = malloc((size_t)(k + 1) * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < k + 1; i++) x[i] = frand(-1.5f, 1.5f);
    double *ref = malloc((size_t)n * sizeof *ref), *terms = malloc((size_t)n * sizeof *terms);
    gemv_ref_q8(t, w, n, k, stride, x + xoff, ref, terms);
    void *dw = dcopy(s, (size_t)n * stride);
    float *dx = dcopy(x, (size_t)(k + 1) * 4), *dy = dbuf((size_t)n * 4);
    const lrun_k_gemv_part part = {dw, stride, n, dy};
    double worst = 0.0;
    for (int64_t r = 0; r < n; r++) y[r] = NAN; /* a row never written fails */
    up(dy, y, (size_t)n * 4);
    int ok = ran(lrun_k_gemv_multi(t, &part, 1, k, dx + xoff, 1, LRUN_K_GEMV_STORE | LRUN_K_GEMV_SPLIT, stream));
    down(y, dy, (size_t)n * 4);
    for (int64_t r = 0; r < n; r++) {
        const double e = fabs(y[r] - ref[r]) / (terms[r] + 1e-30);
        worst = e > worst || isnan(e) ? (isnan(e) ? INFINITY : e) : worst;
    }
    for (int64_t r = 0; r < n; r++) y[r] = 1.0f + (float)r;
    up(dy, y, (size_t)n * 4);
    ok &= ran(lrun_k_gemv_multi(t, &part, 1, k, dx + xoff, 1, LRUN_K_GEMV_ADD | LRUN_K_GEMV_SPLIT, stream));
    down(y, dy, (size_t)n * 4);
    for (int64_t r = 0; r < n; r++) {
        const double e = fabs(y[r] - (1.0 + (double)r + ref[r])) / (terms[r] + 1.0 + (double)r);
        worst = e > worst || isnan(e) ? (isnan(e) ? INFINITY : e) : worst;
    }
    char name[200];
    snprintf(name, sizeof name, "split %s n %lld k %lld%s%s, store and add: error/terms %.2e <= 1e-6",
             lrun_dtype_name(t), (long long)n, (long long)k, pad ? " (padded stride)" : "",
             xoff ? " (x unaligned)" : "", worst);
    CHECK(name, ok && worst <= 1e-6);
    free(w), free(s), free(x), free(y), free(ref), free(terms);
}

/* SWIGLU of a gate and an up weight */
static void test_swiglu(lrun_dtype t)
{
    dreset();
    enum { N = 45 };
    const int64_t k = 768;
    const size_t stride = gemv_ref_stride(t, k, 0);
    uint8_t *wg = gemv_ref_rows(t, N, k, stride, 7), *wu = gemv_ref_rows(t, N, k, stride, 8);
    uint8_t *sg = gemv_ref_split(t, wg, N, k, stride), *su = gemv_ref_split(t, wu, N, k, stride);
    float *x = malloc((size_t)k * sizeof *x), y[N];
    for (int64_t i = 0; i < k; i++) x[i] = frand(-1.0f, 1.0f);
    double g[N], u[N], tg[N], tu[N];
    gemv_ref_q8(t, wg, N, k, stride, x, g, tg);
    gemv_ref_q8(t, wu, N, k, stride, x, u, tu);
    float *dx = dcopy(x, (size_t)k * 4), *dy = dbuf((size_t)N * 4);
    const lrun_k_gemv_part pair[2] = {{dcopy(sg, (size_t)N * stride), stride, N, dy},
                                      {dcopy(su, (size_t)N * stride), stride, N, NULL}};
    const int ok = ran(lrun_k_gemv_multi(t, pair, 2, k, dx, 1, LRUN_K_GEMV_SWIGLU | LRUN_K_GEMV_SPLIT, stream));
    down(y, dy, sizeof y);
    double worst = 0.0;
    for (int r = 0; r < N; r++) {
        const double want = g[r] / (1.0 + exp(-g[r])) * u[r];
        const double scale = (tg[r] + 1.0) * (fabs(u[r]) + tu[r] + 1.0); /* the inputs' error bounds, multiplied */
        const double e = fabs(y[r] - want) / scale;
        worst = e > worst || isnan(e) ? (isnan(e) ? INFINITY : e) : worst;
    }
    char name[160];
    snprintf(name, sizeof name, "split %s swiglu n %d k 768: error/scale %.2e <= 1e-6", lrun_dtype_name(t), N, worst);
    CHECK(name, ok && worst <= 1e-6);
    free(wg), free(wu), free(sg), free(su), free(x);
}

/* three parts in one launch (Q, K, V of different n), and m = 3 rows of x */
static void test_parts_rows(lrun_dtype t)
{
    dreset();
    const int64_t k = 2048, ns[3] = {160, 40, 72}, m = 3;
    const size_t stride = gemv_ref_stride(t, k, 0);
    lrun_k_gemv_part parts[3];
    uint8_t *w[3];
    float *x = malloc((size_t)(m * k) * sizeof *x);
    for (int64_t i = 0; i < m * k; i++) x[i] = frand(-2.0f, 2.0f);
    float *dx = dcopy(x, (size_t)(m * k) * 4);
    for (int p = 0; p < 3; p++) {
        w[p] = gemv_ref_rows(t, ns[p], k, stride, (uint64_t)(20 + p));
        uint8_t *s = gemv_ref_split(t, w[p], ns[p], k, stride);
        parts[p] = (lrun_k_gemv_part){dcopy(s, (size_t)ns[p] * stride), stride, ns[p], dbuf((size_t)(m * ns[p]) * 4)};
        free(s);
    }
    int ok = ran(lrun_k_gemv_multi(t, parts, 3, k, dx, m, LRUN_K_GEMV_STORE | LRUN_K_GEMV_SPLIT, stream));
    double worst = 0.0;
    for (int p = 0; p < 3; p++) {
        float *y = malloc((size_t)(m * ns[p]) * sizeof *y);
        double *ref = malloc((size_t)ns[p] * sizeof *ref), *terms = malloc((size_t)ns[p] * sizeof *terms);
        down(y, parts[p].y, (size_t)(m * ns[p]) * 4);
        for (int64_t i = 0; i < m; i++) {
            gemv_ref_q8(t, w[p], ns[p], k, stride, x + i * k, ref, terms);
            for (int64_t r = 0; r < ns[p]; r++) {
                const double e = fabs(y[i * ns[p] + r] - ref[r]) / (terms[r] + 1e-30);
                worst = e > worst || isnan(e) ? (isnan(e) ? INFINITY : e) : worst;
            }
        }
        free(y), free(ref), free(terms), free(w[p]);
    }
    char name[160];
    snprintf(name, sizeof name, "split %s 3 parts (n 160, 40, 72) k 2048, m 3: error/terms %.2e <= 1e-6",
             lrun_dtype_name(t), worst);
    CHECK(name, ok && worst <= 1e-6);
    free(x);
}

/* weights the split kernel must refuse, with an error naming why */
static void test_refusals(void)
{
    dreset();
    float *dx = dbuf(4096 * 4), *dy = dbuf(64 * 4);
    void *dw = dbuf(64 * 2304 + 64);
    lrun_k_gemv_part part = {dw, 20 * 128, 8, dy}; /* q4_1 rows of 4096 */
    CHECK("split refuses q4_1", lrun_k_gemv_multi(LRUN_DTYPE_Q4_1, &part, 1, 4096, dx, 1,
                                                  LRUN_K_GEMV_STORE | LRUN_K_GEMV_SPLIT, stream) == LRUN_E_ARG &&
                                    strstr(lrun_last_error(), "q4_1") != NULL);
    part.row_bytes = 2304 + 8; /* q4_0 rows on 8-byte boundaries */
    CHECK("split refuses rows off 16-byte boundaries",
          lrun_k_gemv_multi(LRUN_DTYPE_Q4_0, &part, 1, 4096, dx, 1, LRUN_K_GEMV_STORE | LRUN_K_GEMV_SPLIT, stream) ==
                  LRUN_E_ARG &&
              strstr(lrun_last_error(), "16-byte") != NULL);
    CHECK("dequantize_split refuses odd row_bytes",
          lrun_k_dequantize_split(LRUN_DTYPE_Q8_0, dw, 4353, 8, 4096, dx, stream) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "odd") != NULL);
    CHECK("dequantize_split refuses row_bytes below a row",
          lrun_k_dequantize_split(LRUN_DTYPE_Q4_0, dw, 2302, 8, 4096, dx, stream) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "row_bytes 2302") != NULL);
    CHECK("split_rows refuses q4_1", lrun_k_split_rows(LRUN_DTYPE_Q4_1, dw, 2560, 8, 4096, 0, stream) == LRUN_E_ARG);
    CHECK("split_rows refuses k not a multiple of 32",
          lrun_k_split_rows(LRUN_DTYPE_Q8_0, dw, 2176, 8, 2040, 0, stream) == LRUN_E_ARG);
}

static void tests(void)
{
    static const int64_t shapes[][2] = {{1, 256}, {7, 768}, {33, 4096}, {129, 11008}, {300, 2816}, {4099, 4096}};
    for (int ti = 0; ti < 2; ti++) {
        const lrun_dtype t = types[ti];
        test_split_rows(t, 7, 4096, 0);
        test_split_rows(t, 33, 11008, 0);
        test_split_rows(t, 5, 96, 16);
        test_dequantize(t, 19, 4096, 0, 0);
        test_dequantize(t, 9, 96, 16, 0);
        test_dequantize(t, 7, 4128, 0, 0);
        test_dequantize(t, 7, 4128, 0, 1);
        test_dequantize(t, 3, 32, 0, 1);
        for (int si = 0; si < 6; si++) test_case(t, shapes[si][0], shapes[si][1], 0, 0);
        test_case(t, 37, 1280, 16, 1); /* padded rows, x off 4 bytes */
        test_swiglu(t);
        test_parts_rows(t);
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
