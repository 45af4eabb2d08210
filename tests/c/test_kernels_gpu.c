/* test_kernels_gpu.c — every CUDA kernel (kernels/<op>.cu) against its CPU twin,
 * after llama.cpp's test-backend-ops: random inputs, odd shapes, and the
 * normalized mean squared error NMSE = Σ(ref − gpu)² / Σ ref² printed in
 * each TAP line, within a per-op tolerance:
 *   exact     dequantize, embed (f32 bits), kv_store, add, argmax, top-k
 *   1e-7      GEMV (the same dequantized weights, f32 sums in another order),
 *             RMSNorm, RoPE, SwiGLU, attention
 *   5e-4      GEMM through cuBLAS (x and W rounded to f16/bf16)
 * The argument checks run everywhere (they fail before touching the GPU);
 * the rest is one TAP SKIP line where no GPU is visible.
 *
 *   build/tests/test_kernels_gpu           the tests
 *   build/tests/test_kernels_gpu --bench   GB/s of the decode GEMVs (m = 1), without and with PDL,
 *                                          and of decode attention at n_kv 4096, 16384, 32768
 *   build/tests/test_kernels_gpu --sweep   the same for every GEMV shape variant */
#include "check.h"
#include "cpu/cpu_ops.h"
#include "cuda/cuda_backend.h"
#include "core/device.h"
#include "quant/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "kernels.h"
#include "gpu_fixture.h"

// ---------------------------------------------------------------- device memory and data

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(float lo, float hi) /* U(lo, hi) */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static float *frandv(int64_t n, float lo, float hi)
{
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = frand(lo, hi);
    return v;
}

static double nmse(const float *ref, const float *got, int64_t n)
{
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)ref[i] - (double)got[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0.0 ? num / den : num;
}

/* n rows of k random elements of t, stride bytes apart (stride >= the row's
 * bytes; the gap is left as garbage the kernels must not read). */
static uint8_t *random_rows(lrun_dtype t, int64_t n, int64_t k, size_t stride, uint64_t seed)
{
    uint8_t *w = malloc((size_t)n * stride);
    memset(w, 0xa5, (size_t)n * stride);
    for (int64_t r = 0; r < n; r++)
        if (lrun_random_fill(t, w + (size_t)r * stride, r * k, k, 1.0f, seed) != LRUN_OK) {
            printf("Bail out! random_fill: %s\n", lrun_last_error());
            exit(1);
        }
    return w;
}

static float *dequant_rows(lrun_dtype t, const uint8_t *w, int64_t n, int64_t k, size_t stride)
{
    float *f = malloc((size_t)(n * k) * sizeof *f);
    for (int64_t r = 0; r < n; r++) lrun_dequantize_row(t, w + (size_t)r * stride, f + r * k, k);
    return f;
}

static size_t row_bytes(lrun_dtype t, int64_t k)
{
    size_t b = 0;
    lrun_dtype_row_bytes(t, k, &b);
    return b;
}

static const lrun_dtype weight_types[] = {LRUN_DTYPE_F32,    LRUN_DTYPE_F16,   LRUN_DTYPE_BF16, LRUN_DTYPE_Q4_0,
                                          LRUN_DTYPE_Q4_1,   LRUN_DTYPE_Q8_0,  LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q6_K,
                                          LRUN_DTYPE_Q5_0,   LRUN_DTYPE_Q5_1,  LRUN_DTYPE_Q2_K, LRUN_DTYPE_Q3_K,
                                          LRUN_DTYPE_Q5_K,   LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_IQ4_XS,
                                          LRUN_DTYPE_MXFP4};
#define N_WEIGHT_TYPES ((int)(sizeof weight_types / sizeof weight_types[0]))

static int is_float_type(lrun_dtype t)
{
    return t == LRUN_DTYPE_F32 || t == LRUN_DTYPE_F16 || t == LRUN_DTYPE_BF16;
}

// ---------------------------------------------------------------- argument checks (no GPU needed)

#define FAKE ((void *)(uintptr_t)0x10000) /* never dereferenced: each call fails first */

static int fails_with(lrun_status got, lrun_status want, const char *a, const char *b)
{
    if (got != want) return 0;
    const char *msg = lrun_last_error();
    return strstr(msg, a) && (!b || strstr(msg, b));
}

static void test_arguments(void)
{
    float *x = FAKE, *y = FAKE;
    CHECK("copy_mapped: NULL source is LRUN_E_ARG naming the op",
          fails_with(lrun_k_copy_mapped(y, NULL, 4, FAKE), LRUN_E_ARG, "lrun_k_copy_mapped", "src"));
    CHECK("copy_mapped: n 0 is LRUN_E_ARG",
          fails_with(lrun_k_copy_mapped(y, x, 0, FAKE), LRUN_E_ARG, "lrun_k_copy_mapped", "n 0"));
    CHECK("gemv: NULL weight is LRUN_E_ARG naming the op",
          fails_with(lrun_k_gemv(LRUN_DTYPE_Q4_0, NULL, 18 * 8, 4, 256, x, 1, y, FAKE), LRUN_E_ARG, "lrun_k_gemv",
                     "weight"));
    CHECK("gemv: k not a multiple of the block is LRUN_E_ARG",
          fails_with(lrun_k_gemv(LRUN_DTYPE_Q4_K, FAKE, 144, 4, 48, x, 1, y, FAKE), LRUN_E_ARG, "lrun_k_gemv", "48"));
    CHECK("gemv: m = 9 is LRUN_E_ARG",
          fails_with(lrun_k_gemv(LRUN_DTYPE_F16, FAKE, 64, 4, 32, x, 9, y, FAKE), LRUN_E_ARG, "lrun_k_gemv", "m 9"));
    CHECK("gemv: row_bytes too small is LRUN_E_ARG",
          fails_with(lrun_k_gemv(LRUN_DTYPE_Q8_0, FAKE, 33, 4, 32, x, 1, y, FAKE), LRUN_E_ARG, "row_bytes", NULL));
    CHECK("gemv: misaligned Q4_K stride is LRUN_E_ARG",
          fails_with(lrun_k_gemv(LRUN_DTYPE_Q4_K, FAKE, 146, 4, 256, x, 1, y, FAKE), LRUN_E_ARG, "aligned",
                     NULL) ||
              fails_with(lrun_k_gemv(LRUN_DTYPE_Q4_K, FAKE, 146, 4, 256, x, 1, y, FAKE), LRUN_E_ARG, "boundaries",
                         NULL));
    CHECK("gemv: Q8_K weights are LRUN_E_UNSUPPORTED",
          fails_with(lrun_k_gemv(LRUN_DTYPE_Q8_K, FAKE, 292, 4, 256, x, 1, y, FAKE), LRUN_E_UNSUPPORTED, "q8_K",
                     NULL) ||
              lrun_k_gemv(LRUN_DTYPE_Q8_K, FAKE, 292, 4, 256, x, 1, y, FAKE) == LRUN_E_UNSUPPORTED);
    CHECK("gemv: NULL stream is LRUN_E_ARG",
          fails_with(lrun_k_gemv(LRUN_DTYPE_F16, FAKE, 64, 4, 32, x, 1, y, NULL), LRUN_E_ARG, "stream", NULL));
    CHECK("gemv: n*row_bytes overflow is LRUN_E_ARG",
          fails_with(lrun_k_gemv(LRUN_DTYPE_F16, FAKE, (size_t)1 << 40, (int64_t)1 << 40, 32, x, 1, y, FAKE),
                     LRUN_E_ARG, "overflow", NULL));
    CHECK("dequantize: dst dtype q4_0 is LRUN_E_ARG",
          fails_with(lrun_k_dequantize(LRUN_DTYPE_Q4_0, FAKE, 18, 1, 32, LRUN_DTYPE_Q4_0, FAKE, FAKE), LRUN_E_ARG,
                     "lrun_k_dequantize", "dst_dtype"));
    CHECK("gemm: NULL cuBLAS handle is LRUN_E_ARG",
          fails_with(lrun_k_gemm(NULL, LRUN_DTYPE_F16, FAKE, 64, 4, 32, x, 3, y, LRUN_DTYPE_F16, NULL, FAKE, FAKE),
                     LRUN_E_ARG, "lrun_k_gemm", "cuBLAS"));
    CHECK("gemm: quantized W without w_slot is LRUN_E_ARG",
          fails_with(lrun_k_gemm(FAKE, LRUN_DTYPE_Q8_0, FAKE, 34, 4, 32, x, 3, y, LRUN_DTYPE_F16, NULL, FAKE, FAKE),
                     LRUN_E_ARG, "w_slot", NULL));
    CHECK("embed: NULL tokens is LRUN_E_ARG",
          fails_with(lrun_k_embed(LRUN_DTYPE_Q8_0, FAKE, 34, 32, NULL, 3, y, FAKE), LRUN_E_ARG, "lrun_k_embed",
                     "tokens"));
    CHECK("rms_norm: n = 0 is LRUN_E_ARG",
          fails_with(lrun_k_rms_norm(x, x, y, 1, 0, 1e-5f, FAKE), LRUN_E_ARG, "lrun_k_rms_norm", NULL));
    CHECK("rope: odd n_rot is LRUN_E_ARG",
          fails_with(lrun_k_rope(y, FAKE, 1, 2, 64, 63, 10000.0f, 1.0f, NULL, 0, FAKE), LRUN_E_ARG, "n_rot", NULL));
    CHECK("rope: unknown style is LRUN_E_ARG",
          fails_with(lrun_k_rope(y, FAKE, 1, 2, 64, 64, 10000.0f, 1.0f, NULL, 7, FAKE), LRUN_E_ARG, "style", NULL));
    CHECK("swiglu: NULL up is LRUN_E_ARG",
          fails_with(lrun_k_swiglu(x, NULL, y, 8, FAKE), LRUN_E_ARG, "lrun_k_swiglu", "up"));
    CHECK("add_bias: n_rows 0 is LRUN_E_ARG",
          fails_with(lrun_k_add_bias(y, x, 0, 8, FAKE), LRUN_E_ARG, "lrun_k_add_bias", NULL));
    CHECK("kv_store: bf16 cache is LRUN_E_ARG",
          fails_with(lrun_k_kv_store(LRUN_DTYPE_BF16, FAKE, FAKE, FAKE, x, x, 1, 8, FAKE), LRUN_E_ARG, "kv_dtype",
                     NULL));
    CHECK("attention: n_head not a multiple of n_head_kv is LRUN_E_ARG",
          fails_with(lrun_k_attention(LRUN_DTYPE_F16, x, FAKE, FAKE, FAKE, FAKE, FAKE, 1, 6, 4, 64, 10, 0.125f, y,
                                      FAKE, FAKE),
                     LRUN_E_ARG, "lrun_k_attention", "n_head_kv"));
    CHECK("attention: a split shape without work is LRUN_E_ARG",
          fails_with(lrun_k_attention(LRUN_DTYPE_F16, x, FAKE, FAKE, FAKE, FAKE, FAKE, 1, 8, 2, 64, 4096, 0.125f, y,
                                      NULL, FAKE),
                     LRUN_E_ARG, "work", NULL));
    CHECK("attention: head_dim 1024 is LRUN_E_UNSUPPORTED",
          lrun_k_attention(LRUN_DTYPE_F16, x, FAKE, FAKE, FAKE, FAKE, FAKE, 1, 8, 2, 1024, 10, 0.125f, y, FAKE,
                           FAKE) == LRUN_E_UNSUPPORTED);
    CHECK("attention work: decode of a long cache needs partials, a short one none",
          lrun_k_attention_work_bytes(1, 32, 128, 4096) >= (size_t)32 * 2 * 130 * 4 &&
              lrun_k_attention_work_bytes(1, 32, 128, 24) == 0);
    CHECK("attention work: covers every smaller batch",
          lrun_k_attention_work_bytes(64, 32, 128, 4096) >= lrun_k_attention_work_bytes(1, 32, 128, 4096));
    CHECK("argmax: NULL out is LRUN_E_ARG",
          fails_with(lrun_k_argmax(x, 1, 10, NULL, FAKE), LRUN_E_ARG, "lrun_k_argmax", "out"));
    CHECK("topk: k = 257 is LRUN_E_ARG",
          fails_with(lrun_k_topk(x, 1, 1000, 257, y, FAKE, FAKE), LRUN_E_ARG, "lrun_k_topk", "257"));
    CHECK("topk: k > n_vocab is LRUN_E_ARG",
          fails_with(lrun_k_topk(x, 1, 5, 6, y, FAKE, FAKE), LRUN_E_ARG, "lrun_k_topk", NULL));
}

// ---------------------------------------------------------------- dequantize and embed

static void test_dequantize(void)
{
    static const lrun_dtype dsts[] = {LRUN_DTYPE_F32, LRUN_DTYPE_F16, LRUN_DTYPE_BF16};
    static const int64_t rows[] = {1, 7, 33};
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const lrun_dtype t = weight_types[ti];
        for (int ki = 0; ki < (is_float_type(t) ? 3 : 1); ki++) {
            const int64_t k = ki == 0 ? 768 : (ki == 1 ? 7 : 33);
            for (int ri = 0; ri < 3; ri++) {
                dreset();
                const int64_t n = rows[ri];
                const size_t stride = row_bytes(t, k) + (ri == 1 ? 32 : 0); /* a padded stride once */
                uint8_t *w = random_rows(t, n, k, stride, 11 + ti);
                float *ref = dequant_rows(t, w, n, k, stride);
                void *dw = dcopy(w, (size_t)n * stride);
                void *dd = dbuf((size_t)(n * k) * 4);
                uint8_t *got = malloc((size_t)(n * k) * 4);
                int ok = 1;
                long bad = 0;
                for (int di = 0; di < 3; di++) {
                    ok &= ran(lrun_k_dequantize(t, dw, stride, n, k, dsts[di], dd, stream));
                    down(got, dd, (size_t)(n * k) * (di == 0 ? 4 : 2));
                    for (int64_t i = 0; i < n * k; i++) {
                        if (di == 0) bad += memcmp(&ref[i], got + 4 * i, 4) != 0;
                        else {
                            uint16_t want = di == 1 ? lrun_f32_to_f16(ref[i]) : lrun_f32_to_bf16(ref[i]);
                            bad += memcmp(&want, got + 2 * i, 2) != 0;
                        }
                    }
                }
                char name[160];
                snprintf(name, sizeof name, "dequantize %s %lldx%lld%s -> f32/f16/bf16: exact (%ld differ)",
                         lrun_dtype_name(t), (long long)n, (long long)k, ri == 1 ? " (padded stride)" : "", bad);
                CHECK(name, ok && bad == 0);
                free(w), free(ref), free(got);
            }
        }
    }
}

static void test_embed(void)
{
    static const int64_t n_toks[] = {1, 5, 17};
    const int64_t n_vocab = 33;
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const lrun_dtype t = weight_types[ti];
        const int64_t n_embd = is_float_type(t) ? 7 + 761 * (ti & 1) : 768; /* odd widths for float types */
        dreset();
        const size_t stride = row_bytes(t, n_embd);
        uint8_t *table = random_rows(t, n_vocab, n_embd, stride, 21 + ti);
        float *ref = dequant_rows(t, table, n_vocab, n_embd, stride);
        void *dt = dcopy(table, (size_t)n_vocab * stride);
        for (int ni = 0; ni < 3; ni++) {
            const int64_t n_tok = n_toks[ni];
            int32_t tok[17] = {0};
            for (int64_t i = 0; i < n_tok; i++) tok[i] = (int32_t)(frand(0.0f, 1.0f) * (float)n_vocab) % 33;
            tok[0] = 32;
            if (n_tok > 1) tok[n_tok - 1] = 0;
            int32_t *dtok = dcopy(tok, sizeof tok);
            float *dout = dbuf((size_t)(n_tok * n_embd) * 4);
            float *got = malloc((size_t)(n_tok * n_embd) * 4);
            int ok = ran(lrun_k_embed(t, dt, stride, n_embd, dtok, n_tok, dout, stream));
            down(got, dout, (size_t)(n_tok * n_embd) * 4);
            long bad = 0;
            for (int64_t i = 0; i < n_tok; i++)
                bad += memcmp(got + i * n_embd, ref + tok[i] * n_embd, (size_t)n_embd * 4) != 0;
            char name[160];
            snprintf(name, sizeof name, "embed %s n_embd %lld, %lld tokens: exact (%ld rows differ)",
                     lrun_dtype_name(t), (long long)n_embd, (long long)n_tok, bad);
            CHECK(name, ok && bad == 0);
            free(got);
        }
        free(table), free(ref);
    }
}

// ---------------------------------------------------------------- GEMV and GEMM

/* y (m, n) = x (m, k) · wfᵀ in double, wf the dequantized weights; mag
 * (m, n), when not NULL, = Σ_c (w_c·x_c)² of each output. */
static void matmul_ref(const float *wf, const float *x, int64_t n, int64_t k, int64_t m, float *y, double *mag)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t r = 0; r < n; r++) {
            double s = 0.0, s2 = 0.0;
            const float *wr = wf + r * k, *xr = x + i * k;
            for (int64_t c = 0; c < k; c++) {
                const double t = (double)wr[c] * xr[c];
                s += t, s2 += t * t;
            }
            y[i * n + r] = (float)s;
            if (mag) mag[i * n + r] = s2;
        }
}

/* The error of a product normalized by the size of its terms: Σ(ref − got)²
 * / Σ mag, mag from matmul_ref. For random zero-mean x this is the NMSE in
 * expectation (E[ref²] = Σ E[(w·x)²]), but it does not blow up where one
 * output happens to cancel to near zero: rounding errors scale with the
 * terms, not with their sum. (A single-row weight at m = 1 is one output:
 * the Q4_K n = 1 case has ref −0.0033 against terms of size 9.2, so its
 * plain NMSE read 3.6e-7 for a 2e-6 absolute error, 153 for bf16 rounding.) */
static double nmse_terms(const float *ref, const float *got, const double *mag, int64_t n)
{
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)ref[i] - (double)got[i];
        num += d * d;
        den += mag[i];
    }
    return den > 0.0 ? num / den : num;
}

/* GEMV for m = 1..8 and GEMM for a few m and both slots, on one weight. */
static void test_matmul_case(lrun_dtype t, int64_t n, int64_t k, size_t pad, int x_misaligned, int do_gemm)
{
    dreset();
    const size_t stride = row_bytes(t, k) + pad;
    uint8_t *w = random_rows(t, n, k, stride, 31 + (uint64_t)t);
    float *wf = dequant_rows(t, w, n, k, stride);
    const int64_t max_m = 40;
    float *x = frandv(max_m * k, -1.0f, 1.0f);
    float *ref = malloc((size_t)(max_m * n) * 4), *got = malloc((size_t)(max_m * n) * 4);
    double *mag = malloc((size_t)(max_m * n) * sizeof *mag);
    void *dw = dcopy(w, (size_t)n * stride);
    float *dx = dbuf((size_t)(max_m * k) * 4 + 16);
    if (x_misaligned) dx += 1; /* 4 bytes past a 256-byte boundary: the scalar x loads */
    up(dx, x, (size_t)(max_m * k) * 4);
    float *dy = dbuf((size_t)(max_m * n) * 4);
    char name[200];

    double worst = 0.0;
    int ok = 1;
    /* row i of y depends only on row i of x: the first m rows of the
     * reference for all 40 rows are the reference for m rows */
    matmul_ref(wf, x, n, k, do_gemm ? max_m : 8, ref, mag);
    for (int64_t m = 1; m <= 8; m++) {
        ok &= ran(lrun_k_gemv(t, dw, stride, n, k, dx, m, dy, stream));
        down(got, dy, (size_t)(m * n) * 4);
        const double e = nmse_terms(ref, got, mag, m * n);
        worst = e > worst ? e : worst;
    }
    snprintf(name, sizeof name, "gemv %s n %lld k %lld%s%s, m 1..8: error/terms %.2e <= 1e-7", lrun_dtype_name(t),
             (long long)n, (long long)k, pad ? " (padded stride)" : "", x_misaligned ? " (x unaligned)" : "", worst);
    CHECK(name, ok && worst <= 1e-7);

    if (do_gemm) {
        static const int64_t ms[] = {1, 5, 17, 40};
        void *w_slot = dbuf((size_t)(n * k) * 2), *x_slot = dbuf((size_t)(max_m * k) * 2);
        for (int si = 0; si < 2; si++) {
            const lrun_dtype slot = si == 0 ? LRUN_DTYPE_F16 : LRUN_DTYPE_BF16;
            worst = 0.0;
            ok = 1;
            for (int mi = 0; mi < 4; mi++) {
                const int64_t m = ms[mi];
                ok &= ran(lrun_k_gemm(lrun_cuda_cublas(dev), t, dw, stride, n, k, dx, m, dy, slot, w_slot, x_slot,
                                      stream));
                down(got, dy, (size_t)(m * n) * 4);
                const double e = nmse_terms(ref, got, mag, m * n);
                worst = e > worst ? e : worst;
            }
            snprintf(name, sizeof name, "gemm %s n %lld k %lld%s, %s slot, m 1/5/17/40: error/terms %.2e <= 5e-4",
                     lrun_dtype_name(t), (long long)n, (long long)k, pad ? " (padded stride)" : "",
                     lrun_dtype_name(slot), worst);
            CHECK(name, ok && worst <= 5e-4);
        }
    }
    free(w), free(wf), free(x), free(ref), free(got), free(mag);
}

static void test_matmul(void)
{
    static const int64_t ns[] = {1, 7, 33, 4097};
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++)
        for (int ni = 0; ni < 4; ni++) test_matmul_case(weight_types[ti], ns[ni], 768, 0, 0, ni != 1);
    /* strides, alignment and widths off the fast path */
    test_matmul_case(LRUN_DTYPE_BF16, 33, 768, 16, 0, 1);  /* aligned padding: 16-byte loads, lda > k */
    test_matmul_case(LRUN_DTYPE_F16, 33, 768, 2, 0, 1);    /* unaligned stride: the plain kernel */
    test_matmul_case(LRUN_DTYPE_BF16, 33, 770, 0, 0, 1);   /* k % 8 != 0 */
    test_matmul_case(LRUN_DTYPE_F32, 7, 35, 0, 0, 1);
    test_matmul_case(LRUN_DTYPE_Q4_0, 33, 768, 0, 1, 0);   /* x not 16-byte aligned */
    test_matmul_case(LRUN_DTYPE_BF16, 33, 768, 0, 1, 0);
    test_matmul_case(LRUN_DTYPE_Q6_K, 7, 768, 210, 0, 1);  /* padded K-quant rows */
    test_matmul_case(LRUN_DTYPE_Q4_K, 5, 4096, 0, 0, 1);   /* a 7B-wide row */
    test_matmul_case(LRUN_DTYPE_Q3_K, 7, 768, 110, 0, 1);  /* 2-aligned K-quant rows, padded */
    test_matmul_case(LRUN_DTYPE_Q5_0, 7, 768, 22, 0, 1);   /* 2-aligned 32-element rows, padded */
    test_matmul_case(LRUN_DTYPE_Q5_K, 5, 4096, 0, 0, 1);
    /* the K-quant slice kernel of m = 1 (gemv_kq.cu): x unaligned, 16-byte
     * padded rows (its 16-byte loads), and 8-byte padding (the unit kernel) */
    test_matmul_case(LRUN_DTYPE_Q4_K, 33, 768, 0, 1, 0);
    test_matmul_case(LRUN_DTYPE_Q5_K, 7, 768, 16, 0, 0);
    test_matmul_case(LRUN_DTYPE_Q4_K, 7, 768, 8, 0, 0);
    test_matmul_case(LRUN_DTYPE_Q6_K, 33, 11008, 0, 0, 0); /* several slices per thread */
}

/* lrun_k_gemv_multi: Q/K/V-like parts (n 33, 7, 7) stored, one part added
 * into y, a gate/up pair through SwiGLU, for m = 1, 2, 5, 8. pad: extra
 * bytes per row (2 sends f16 to the plain kernel). */
static void test_gemv_fused_case(lrun_dtype t, size_t pad)
{
    dreset();
    const int64_t k = 768, ns[3] = {33, 7, 7}, max_m = 8;
    const size_t stride = row_bytes(t, k) + pad;
    float *x = frandv(max_m * k, -1.0f, 1.0f), *dx = dcopy(x, (size_t)(max_m * k) * 4);
    uint8_t *w[3];
    float *wf[3], *ref[3], *got = malloc((size_t)(max_m * 33) * 4);
    double *mag[3];
    void *dw[3];
    float *dy[3];
    lrun_k_gemv_part parts[3];
    for (int p = 0; p < 3; p++) {
        w[p] = random_rows(t, ns[p], k, stride, 71 + (uint64_t)(10 * p) + (uint64_t)t);
        wf[p] = dequant_rows(t, w[p], ns[p], k, stride);
        ref[p] = malloc((size_t)(max_m * ns[p]) * 4);
        mag[p] = malloc((size_t)(max_m * ns[p]) * sizeof(double));
        matmul_ref(wf[p], x, ns[p], k, max_m, ref[p], mag[p]);
        dw[p] = dcopy(w[p], (size_t)ns[p] * stride);
        dy[p] = dbuf((size_t)(max_m * 33) * 4);
        parts[p] = (lrun_k_gemv_part){dw[p], stride, ns[p], dy[p]};
    }
    /* up: a second 33-row weight for the swiglu pair */
    uint8_t *wu = random_rows(t, 33, k, stride, 99 + (uint64_t)t);
    float *wuf = dequant_rows(t, wu, 33, k, stride), *refu = malloc((size_t)(max_m * 33) * 4);
    double *magu = malloc((size_t)(max_m * 33) * sizeof(double));
    matmul_ref(wuf, x, 33, k, max_m, refu, magu);
    void *dwu = dcopy(wu, (size_t)33 * stride);
    float *y0 = frandv(max_m * 33, -5.0f, 5.0f), *want = malloc((size_t)(max_m * 33) * 4);
    double *wmag = malloc((size_t)(max_m * 33) * sizeof(double));

    static const int64_t ms[] = {1, 2, 5, 8};
    double worst[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
    int ok = 1;
    for (int mi = 0; mi < 4; mi++) {
        const int64_t m = ms[mi];
        /* Q, K, V */
        ok &= ran(lrun_k_gemv_multi(t, parts, 3, k, dx, m, LRUN_K_GEMV_STORE, stream));
        for (int p = 0; p < 3; p++) {
            down(got, dy[p], (size_t)(m * ns[p]) * 4);
            const double e = nmse_terms(ref[p], got, mag[p], m * ns[p]);
            worst[0] = e > worst[0] ? e : worst[0];
        }
        /* y0 + x·W0ᵀ */
        up(dy[0], y0, (size_t)(m * 33) * 4);
        ok &= ran(lrun_k_gemv_multi(t, parts, 1, k, dx, m, LRUN_K_GEMV_ADD, stream));
        down(got, dy[0], (size_t)(m * 33) * 4);
        for (int64_t i = 0; i < m * 33; i++) want[i] = y0[i] + ref[0][i];
        double e = nmse_terms(want, got, mag[0], m * 33);
        worst[1] = e > worst[1] ? e : worst[1];
        /* silu(x·W0ᵀ)·(x·Wuᵀ): the error of g and u carried through (|d silu·u| <= ~1.1|u| + |silu|) */
        lrun_k_gemv_part pair[2] = {parts[0], {dwu, stride, 33, NULL}};
        ok &= ran(lrun_k_gemv_multi(t, pair, 2, k, dx, m, LRUN_K_GEMV_SWIGLU, stream));
        down(got, dy[0], (size_t)(m * 33) * 4);
        for (int64_t i = 0; i < m * 33; i++) {
            const double g = ref[0][i], u = refu[i], sg = g / (1.0 + exp(-g));
            want[i] = (float)(sg * u);
            wmag[i] = 1.21 * u * u * mag[0][i] + sg * sg * magu[i];
        }
        e = nmse_terms(want, got, wmag, m * 33);
        worst[2] = e > worst[2] ? e : worst[2];
        /* gemma's GeGLU in f32 (an HF directory): |d gelu| <= ~1.13 */
        ok &= ran(lrun_k_gemv_multi(t, pair, 2, k, dx, m, LRUN_K_GEMV_GEGLU_F32, stream));
        down(got, dy[0], (size_t)(m * 33) * 4);
        for (int64_t i = 0; i < m * 33; i++) {
            const double g = ref[0][i], u = refu[i];
            const double gg = 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
            want[i] = (float)(gg * u);
            wmag[i] = 1.3 * u * u * mag[0][i] + gg * gg * magu[i];
        }
        e = nmse_terms(want, got, wmag, m * 33);
        worst[3] = e > worst[3] ? e : worst[3];
        /* and through llama.cpp's f16 table (a GGUF): lrun_cpu_geglu of the reference products; an f16
         * rounding that a last-bit difference of g flips moves one value by 2^-11 of it */
        ok &= ran(lrun_k_gemv_multi(t, pair, 2, k, dx, m, LRUN_K_GEMV_GEGLU, stream));
        down(got, dy[0], (size_t)(m * 33) * 4);
        memcpy(want, ref[0], (size_t)(m * 33) * 4);
        lrun_cpu_geglu(want, refu, m * 33);
        e = nmse(want, got, m * 33);
        worst[4] = e > worst[4] ? e : worst[4];
    }
    static const char *what[5] = {"3 weights (33, 7, 7 rows) stored", "added into y", "gate/up through swiglu",
                                  "gate/up through geglu (f32)", "gate/up through geglu (f16 table; nmse)"};
    for (int c = 0; c < 5; c++) {
        const double tol = c == 4 ? 1e-6 : 1e-7;
        char name[200];
        snprintf(name, sizeof name, "gemv_multi %s%s k 768, %s, m 1/2/5/8: error/terms %.2e <= %.0e",
                 lrun_dtype_name(t), pad ? " (padded stride)" : "", what[c], worst[c], tol);
        CHECK(name, ok && worst[c] <= tol);
    }
    for (int p = 0; p < 3; p++) free(w[p]), free(wf[p]), free(ref[p]), free(mag[p]);
    free(x), free(got), free(wu), free(wuf), free(refu), free(magu), free(y0), free(want), free(wmag);
}

static void test_gemv_fused(void)
{
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) test_gemv_fused_case(weight_types[ti], 0);
    test_gemv_fused_case(LRUN_DTYPE_F16, 2); /* the plain kernel's epilogues */
    float *x = FAKE;
    lrun_k_gemv_part parts[2] = {{FAKE, 64, 4, x}, {FAKE, 64, 5, x}};
    CHECK("gemv_multi: swiglu with unequal rows is LRUN_E_ARG",
          fails_with(lrun_k_gemv_multi(LRUN_DTYPE_F16, parts, 2, 32, x, 1, LRUN_K_GEMV_SWIGLU, FAKE), LRUN_E_ARG,
                     "swiglu", NULL));
    CHECK("gemv_multi: 4 weights is LRUN_E_ARG",
          fails_with(lrun_k_gemv_multi(LRUN_DTYPE_F16, parts, 4, 32, x, 1, LRUN_K_GEMV_STORE, FAKE), LRUN_E_ARG,
                     "weights", NULL));
}

// ---------------------------------------------------------------- norms and element-wise ops

static void test_rms_norm(void)
{
    static const int64_t rows[] = {1, 5, 17}, ns[] = {7, 576, 4097};
    for (int ri = 0; ri < 3; ri++)
        for (int ni = 0; ni < 3; ni++) {
            dreset();
            const int64_t r = rows[ri], n = ns[ni];
            float *x = frandv(r * n, -2.0f, 2.0f), *w = frandv(n, 0.5f, 1.5f);
            float *ref = malloc((size_t)(r * n) * 4), *got = malloc((size_t)(r * n) * 4);
            for (int64_t i = 0; i < r; i++) lrun_cpu_rms_norm(ref + i * n, x + i * n, w, n, 1e-5f);
            float *dx = dcopy(x, (size_t)(r * n) * 4), *dw = dcopy(w, (size_t)n * 4), *dy = dbuf((size_t)(r * n) * 4);
            int ok = ran(lrun_k_rms_norm(dx, dw, dy, r, n, 1e-5f, stream));
            down(got, dy, (size_t)(r * n) * 4);
            double e = nmse(ref, got, r * n);
            ok &= ran(lrun_k_rms_norm(dx, dw, dx, r, n, 1e-5f, stream)); /* in place */
            down(got, dx, (size_t)(r * n) * 4);
            const double e2 = nmse(ref, got, r * n);
            e = e2 > e ? e2 : e;
            char name[128];
            snprintf(name, sizeof name, "rms_norm %lldx%lld (and in place): nmse %.2e <= 1e-7", (long long)r,
                     (long long)n, e);
            CHECK(name, ok && e <= 1e-7);
            free(x), free(w), free(ref), free(got);
        }
}

static void test_rope(void)
{
    static const int64_t toks[] = {1, 5, 17};
    const int64_t n_head = 3, head_dim = 64;
    for (int style = 0; style < 2; style++)
        for (int ti = 0; ti < 3; ti++)
            for (int variant = 0; variant < 3; variant++) {
                dreset();
                const int64_t n_tok = toks[ti], n = n_tok * n_head * head_dim;
                const int64_t n_rot = variant == 1 ? 32 : 64;
                const float freq_scale = variant == 2 ? 0.25f : 1.0f;
                float *ff = variant == 2 ? frandv(n_rot / 2, 1.0f, 4.0f) : NULL;
                float *x = frandv(n, -1.0f, 1.0f), *ref = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
                int32_t pos[17] = {0};
                for (int64_t i = 0; i < n_tok; i++) pos[i] = (int32_t)frand(0.0f, 5000.0f);
                memcpy(ref, x, (size_t)n * 4);
                lrun_rope rope = {n_rot, (lrun_rope_style)style, 10000.0, freq_scale, ff, 0, {0, 0}, 0};
                float cs[64];
                for (int64_t i = 0; i < n_tok; i++) {
                    lrun_cpu_rope_cos_sin(&rope, pos[i], cs);
                    lrun_cpu_rope_apply(&rope, cs, ref + i * n_head * head_dim, n_head, head_dim);
                }
                float *dx = dcopy(x, (size_t)n * 4);
                int32_t *dpos = dcopy(pos, sizeof pos);
                float *dff = ff ? dcopy(ff, (size_t)(n_rot / 2) * 4) : NULL;
                int ok = ran(lrun_k_rope(dx, dpos, n_tok, n_head, head_dim, n_rot, 10000.0f, freq_scale, dff, style,
                                         stream));
                down(got, dx, (size_t)n * 4);
                const double e = nmse(ref, got, n);
                char name[160];
                snprintf(name, sizeof name, "rope %s %lld tokens, n_rot %lld, freq_scale %g%s: nmse %.2e <= 1e-7",
                         style ? "half" : "adjacent", (long long)n_tok, (long long)n_rot, (double)freq_scale,
                         ff ? ", freq_factors" : "", e);
                CHECK(name, ok && e <= 1e-7);
                free(ff), free(x), free(ref), free(got);
            }
}

static void test_elementwise(void)
{
    static const int64_t ns[] = {1, 7, 4097, 100003};
    for (int ni = 0; ni < 4; ni++) {
        dreset();
        const int64_t n = ns[ni];
        float *g = frandv(n, -8.0f, 8.0f), *u = frandv(n, -2.0f, 2.0f);
        float *ref = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
        float *dg = dcopy(g, (size_t)n * 4), *du = dcopy(u, (size_t)n * 4), *dout = dbuf((size_t)n * 4);
        memcpy(ref, g, (size_t)n * 4);
        lrun_cpu_swiglu(ref, u, n);
        int ok = ran(lrun_k_swiglu(dg, du, dout, n, stream));
        down(got, dout, (size_t)n * 4);
        double e = nmse(ref, got, n);
        char name[128];
        snprintf(name, sizeof name, "swiglu n %lld: nmse %.2e <= 1e-7", (long long)n, e);
        CHECK(name, ok && e <= 1e-7);

        memcpy(ref, g, (size_t)n * 4);
        lrun_cpu_add(ref, u, n);
        ok = ran(lrun_k_add(dg, du, n, stream));
        down(got, dg, (size_t)n * 4);
        snprintf(name, sizeof name, "add n %lld: exact", (long long)n);
        CHECK(name, ok && memcmp(ref, got, (size_t)n * 4) == 0);

        /* gemma: GeGLU through llama.cpp's f16 table; g is in [-8, 8], so two entries past the table's
         * -10 / 10 cut-offs (0 below, the identity above) */
        g[0] = -12.0f, g[n - 1] = 11.0f;
        up(dg, g, (size_t)n * 4);
        memcpy(ref, g, (size_t)n * 4);
        lrun_cpu_geglu(ref, u, n);
        ok = ran(lrun_k_geglu(dg, du, dout, n, 1, stream));
        down(got, dout, (size_t)n * 4);
        e = nmse(ref, got, n);
        snprintf(name, sizeof name, "geglu (f16 table) n %lld: nmse %.2e <= 1e-7", (long long)n, e);
        CHECK(name, ok && e <= 1e-7);
        for (int64_t i = 0; i < n; i++) { /* transformers' f32 tanh GELU, in double */
            const double x = g[i];
            ref[i] = (float)(0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) * u[i]);
        }
        ok = ran(lrun_k_geglu(dg, du, dout, n, 0, stream));
        down(got, dout, (size_t)n * 4);
        e = nmse(ref, got, n);
        snprintf(name, sizeof name, "geglu (f32) n %lld: nmse %.2e <= 1e-10", (long long)n, e);
        CHECK(name, ok && e <= 1e-10);

        memcpy(ref, g, (size_t)n * 4);
        lrun_cpu_scale(ref, 8.0f, n);
        ok = ran(lrun_k_scale(dg, 8.0f, n, stream));
        down(got, dg, (size_t)n * 4);
        snprintf(name, sizeof name, "scale n %lld: exact", (long long)n);
        CHECK(name, ok && memcmp(ref, got, (size_t)n * 4) == 0);
        memcpy(ref, got, (size_t)n * 4);
        lrun_cpu_softcap(ref, n, 30.0f);
        ok = ran(lrun_k_softcap(dg, n, 30.0f, stream));
        down(got, dg, (size_t)n * 4);
        e = nmse(ref, got, n);
        snprintf(name, sizeof name, "softcap 30 n %lld: nmse %.2e <= 1e-10", (long long)n, e);
        CHECK(name, ok && e <= 1e-10);
        free(g), free(u), free(ref), free(got);
    }
    { /* a host product going up: the kernel reads pinned host memory through its mapping */
        dreset();
        const int64_t n = 11008;
        float *h = NULL, *src = frandv(n, -4.0f, 4.0f), *got = malloc((size_t)n * 4), *dy = dbuf((size_t)n * 4);
        const int have = lrun_cuda_host_alloc((size_t)n * 4, (void **)&h) == LRUN_OK;
        if (have) memcpy(h, src, (size_t)n * 4);
        const int ok = have && ran(lrun_k_copy_mapped(dy, h, n, stream));
        if (ok) down(got, dy, (size_t)n * 4);
        CHECK("copy_mapped n 11008 from pinned host memory: exact", ok && memcmp(src, got, (size_t)n * 4) == 0);
        if (have) lrun_cuda_host_free(h);
        free(src), free(got);
    }
    dreset();
    const int64_t rows = 5, n = 7;
    float *y = frandv(rows * n, -1.0f, 1.0f), *b = frandv(n, -1.0f, 1.0f), got[35], ref[35];
    for (int64_t i = 0; i < rows * n; i++) ref[i] = y[i] + b[i % n];
    float *dy = dcopy(y, sizeof ref), *db = dcopy(b, (size_t)n * 4);
    int ok = ran(lrun_k_add_bias(dy, db, rows, n, stream));
    down(got, dy, sizeof got);
    CHECK("add_bias 5x7: exact", ok && memcmp(ref, got, sizeof got) == 0);
    free(y), free(b);
}

// ---------------------------------------------------------------- KV cache and attention

static void test_kv_store(void)
{
    const int64_t n_tok = 5, kv_dim = 96, cap = 64;
    const int64_t at[5] = {3, 60, 0, 17, 42};
    for (int f16 = 0; f16 < 2; f16++) {
        dreset();
        const size_t es = f16 ? 2 : 4, bytes = (size_t)(cap * kv_dim) * es;
        float *k = frandv(n_tok * kv_dim, -3.0f, 3.0f), *v = frandv(n_tok * kv_dim, -3.0f, 3.0f);
        uint8_t *want_k = calloc(1, bytes), *want_v = calloc(1, bytes), *got_k = malloc(bytes), *got_v = malloc(bytes);
        int64_t off[5];
        for (int64_t i = 0; i < n_tok; i++) {
            off[i] = at[i] * kv_dim;
            for (int64_t j = 0; j < kv_dim; j++) {
                const float a = k[i * kv_dim + j], b = v[i * kv_dim + j];
                if (f16) {
                    ((uint16_t *)want_k)[off[i] + j] = lrun_f32_to_f16(a);
                    ((uint16_t *)want_v)[off[i] + j] = lrun_f32_to_f16(b);
                } else {
                    ((float *)want_k)[off[i] + j] = a;
                    ((float *)want_v)[off[i] + j] = b;
                }
            }
        }
        memset(got_k, 0, bytes); /* the caches start zeroed: rows not written must stay so */
        void *dk = dcopy(got_k, bytes), *dv = dcopy(got_k, bytes);
        int64_t *doff = dcopy(off, sizeof off);
        float *dkk = dcopy(k, (size_t)(n_tok * kv_dim) * 4), *dvv = dcopy(v, (size_t)(n_tok * kv_dim) * 4);
        int ok = ran(lrun_k_kv_store(f16 ? LRUN_DTYPE_F16 : LRUN_DTYPE_F32, dk, dv, doff, dkk, dvv, n_tok, kv_dim,
                                     stream));
        down(got_k, dk, bytes), down(got_v, dv, bytes);
        CHECK(f16 ? "kv_store f16, 5 scattered rows: exact" : "kv_store f32, 5 scattered rows: exact",
              ok && !memcmp(got_k, want_k, bytes) && !memcmp(got_v, want_v, bytes));
        free(k), free(v), free(want_k), free(want_v), free(got_k), free(got_v);
    }
}

/* lrun_k_rope_kv_store against lrun_k_rope (q, k) + lrun_k_kv_store: the
 * same bits in q, in k and in both caches. */
static void test_rope_kv_store(void)
{
    const int64_t n_tok = 5, n_head = 4, n_head_kv = 2, head_dim = 64, cap = 64, kv_dim = n_head_kv * head_dim;
    const int64_t at[5] = {3, 60, 0, 17, 42};
    for (int f16 = 0; f16 < 2; f16++)
        for (int style = 0; style < 2; style++)
            for (int partial = 0; partial < 2; partial++) {
                dreset();
                const int64_t n_rot = partial ? 32 : 64, nq = n_tok * n_head * head_dim, nk = n_tok * kv_dim;
                const size_t bytes = (size_t)(cap * kv_dim) * (f16 ? 2 : 4);
                const lrun_dtype kt = f16 ? LRUN_DTYPE_F16 : LRUN_DTYPE_F32;
                float *q = frandv(nq, -1.0f, 1.0f), *k = frandv(nk, -1.0f, 1.0f), *v = frandv(nk, -1.0f, 1.0f);
                float *ff = partial ? frandv(n_rot / 2, 1.0f, 4.0f) : NULL;
                int32_t pos[5];
                int64_t off[5];
                for (int i = 0; i < 5; i++) pos[i] = (int32_t)frand(0.0f, 5000.0f), off[i] = at[i] * kv_dim;
                uint8_t *zero = calloc(1, bytes), *a = malloc(bytes), *b = malloc(bytes);
                float *ga = malloc((size_t)nq * 4), *gb = malloc((size_t)nq * 4);
                int32_t *dpos = dcopy(pos, sizeof pos);
                int64_t *doff = dcopy(off, sizeof off);
                float *dff = ff ? dcopy(ff, (size_t)(n_rot / 2) * 4) : NULL, *dv = dcopy(v, (size_t)nk * 4);
                float *q1 = dcopy(q, (size_t)nq * 4), *k1 = dcopy(k, (size_t)nk * 4);
                float *q2 = dcopy(q, (size_t)nq * 4), *k2 = dcopy(k, (size_t)nk * 4);
                void *ck1 = dcopy(zero, bytes), *cv1 = dcopy(zero, bytes), *ck2 = dcopy(zero, bytes),
                     *cv2 = dcopy(zero, bytes);
                int ok = ran(lrun_k_rope(q1, dpos, n_tok, n_head, head_dim, n_rot, 10000.0f, 0.5f, dff, style, stream));
                ok &= ran(lrun_k_rope(k1, dpos, n_tok, n_head_kv, head_dim, n_rot, 10000.0f, 0.5f, dff, style, stream));
                ok &= ran(lrun_k_kv_store(kt, ck1, cv1, doff, k1, dv, n_tok, kv_dim, stream));
                ok &= ran(lrun_k_rope_kv_store(q2, k2, dv, dpos, n_tok, n_head, n_head_kv, head_dim, n_rot, 10000.0f,
                                               0.5f, dff, style, kt, ck2, cv2, doff, stream));
                long bad = 0;
                down(ga, q1, (size_t)nq * 4), down(gb, q2, (size_t)nq * 4);
                bad += memcmp(ga, gb, (size_t)nq * 4) != 0;
                down(ga, k1, (size_t)nk * 4), down(gb, k2, (size_t)nk * 4);
                bad += memcmp(ga, gb, (size_t)nk * 4) != 0;
                down(a, ck1, bytes), down(b, ck2, bytes);
                bad += memcmp(a, b, bytes) != 0;
                down(a, cv1, bytes), down(b, cv2, bytes);
                bad += memcmp(a, b, bytes) != 0;
                char name[200];
                snprintf(name, sizeof name, "rope_kv_store %s cache, %s, n_rot %lld: q, k and caches as rope+kv_store "
                         "(%ld of 4 differ)", f16 ? "f16" : "f32", style ? "half" : "adjacent", (long long)n_rot, bad);
                CHECK(name, ok && bad == 0);
                free(q), free(k), free(v), free(ff), free(zero), free(a), free(b), free(ga), free(gb);
            }
}

/* One attention case: n_tok tokens; token i reads n_kv[i] positions of
 * sequence seq[i] (each sequence has its own region of cap positions, the
 * first starting `pad` elements into the cache: pad 1 makes k_base and
 * v_base odd, which the 16-byte vector path must leave to the scalar one). */
static int64_t attn_swa; /* the sliding window of the cases run next (lrun_k_attention_window); 0: none */
static float attn_cap;   /* the soft-cap of the cases run next (lrun_k_attention_softcap); 0: none */
static const float *attn_sinks; /* (n_head) gpt-oss's sink logits of the cases run next (lrun_k_attention_sinks), or NULL */

static void attention_case_at(const char *what, int f16, int64_t n_tok, const int32_t *n_kv, const int *seq, int n_seq,
                              int64_t cap, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t max_kv,
                              int64_t pad)
{
    dreset();
    const int64_t row = n_head_kv * head_dim, cache_n = pad + n_seq * cap * row, qn = n_tok * n_head * head_dim;
    const size_t es = f16 ? 2 : 4;
    float *kf = frandv(cache_n, -1.0f, 1.0f), *vf = frandv(cache_n, -1.0f, 1.0f), *q = frandv(qn, -3.0f, 3.0f);
    uint16_t *kh = malloc((size_t)cache_n * 2), *vh = malloc((size_t)cache_n * 2);
    for (int64_t i = 0; i < cache_n; i++) {
        kh[i] = lrun_f32_to_f16(kf[i]), vh[i] = lrun_f32_to_f16(vf[i]);
        if (f16) kf[i] = lrun_f16_to_f32(kh[i]), vf[i] = lrun_f16_to_f32(vh[i]);
    }
    float *ref = malloc((size_t)qn * 4), *got = malloc((size_t)qn * 4);
    double *scores = malloc((size_t)cap * sizeof *scores);
    const float scale = 1.0f / sqrtf((float)head_dim);
    int64_t base[64];
    for (int64_t i = 0; i < n_tok; i++) {
        base[i] = pad + seq[i] * cap * row;
        for (int64_t h = 0; h < n_head; h++) {
            /* softmax(scale * K q) · V in double over the cache's own values
             * (f16-rounded for an f16 cache): the CPU twin's attention now
             * reads a transposed V (runtime/cpu/cpu_ops.h), a layout kernels.h
             * does not share, so the reference is written out here */
            const int64_t hk = h / (n_head / n_head_kv), o = (i * n_head + h) * head_dim;
            const int64_t lo = attn_swa > 0 && n_kv[i] > attn_swa ? n_kv[i] - attn_swa : 0; /* the window */
            double mx = -1e300, sum = 0.0;
            for (int64_t t = lo; t < n_kv[i]; t++) {
                double s = 0.0;
                for (int64_t d = 0; d < head_dim; d++) s += (double)q[o + d] * kf[base[i] + t * row + hk * head_dim + d];
                scores[t] = s * scale;
                if (attn_cap > 0) scores[t] = attn_cap * tanh(scores[t] / attn_cap); /* gemma2's soft-cap */
                mx = scores[t] > mx ? scores[t] : mx;
            }
            if (attn_sinks && attn_sinks[h] > mx) mx = attn_sinks[h]; /* the sink joins the max ... */
            for (int64_t t = lo; t < n_kv[i]; t++) sum += (scores[t] = exp(scores[t] - mx));
            if (attn_sinks && n_kv[i] > lo) sum += exp(attn_sinks[h] - mx); /* ... and the denominator only */
            for (int64_t d = 0; d < head_dim; d++) {
                double a = 0.0;
                for (int64_t t = lo; t < n_kv[i]; t++) a += scores[t] * vf[base[i] + t * row + hk * head_dim + d];
                ref[o + d] = (float)(a / sum);
            }
        }
    }
    void *dk = dbuf((size_t)cache_n * es), *dv = dbuf((size_t)cache_n * es);
    up(dk, f16 ? (void *)kh : (void *)kf, (size_t)cache_n * es);
    up(dv, f16 ? (void *)vh : (void *)vf, (size_t)cache_n * es);
    float *dq = dcopy(q, (size_t)qn * 4), *dout = dbuf((size_t)qn * 4);
    int64_t *dbase = dcopy(base, (size_t)n_tok * 8);
    int32_t *dnkv = dcopy(n_kv, (size_t)n_tok * 4);
    const size_t wb = lrun_k_attention_work_bytes(n_tok, n_head, head_dim, max_kv);
    void *work = wb ? dbuf(wb) : NULL;
    float *dsinks = attn_sinks ? dcopy(attn_sinks, (size_t)n_head * 4) : NULL;
    int ok = ran(dsinks ? lrun_k_attention_sinks(f16 ? LRUN_DTYPE_F16 : LRUN_DTYPE_F32, dq, dk, dv, dbase, dbase, dnkv,
                                                 n_tok, n_head, n_head_kv, head_dim, max_kv, scale, attn_swa, dsinks,
                                                 dout, work, stream)
                 : attn_cap > 0 ? lrun_k_attention_softcap(f16 ? LRUN_DTYPE_F16 : LRUN_DTYPE_F32, dq, dk, dv, dbase,
                                                          dbase, dnkv, n_tok, n_head, n_head_kv, head_dim, max_kv,
                                                          scale, attn_swa, attn_cap, dout, work, stream)
                 : attn_swa ? lrun_k_attention_window(f16 ? LRUN_DTYPE_F16 : LRUN_DTYPE_F32, dq, dk, dv, dbase, dbase,
                                                    dnkv, n_tok, n_head, n_head_kv, head_dim, max_kv, scale, attn_swa,
                                                    dout, work, stream)
                          : lrun_k_attention(f16 ? LRUN_DTYPE_F16 : LRUN_DTYPE_F32, dq, dk, dv, dbase, dbase, dnkv,
                                             n_tok, n_head, n_head_kv, head_dim, max_kv, scale, dout, work, stream));
    down(got, dout, (size_t)qn * 4);
    const double e = nmse(ref, got, qn);
    char name[300];
    int64_t worst_i = 0; /* the element furthest off, so a failure names where */
    for (int64_t i = 0; i < qn; i++)
        if (fabsf(ref[i] - got[i]) > fabsf(ref[worst_i] - got[worst_i])) worst_i = i;
    if (e > 1e-7)
        printf("# worst element %lld (token %lld, head %lld, dim %lld): want %.7g, got %.7g\n", (long long)worst_i,
               (long long)(worst_i / (n_head * head_dim)), (long long)(worst_i / head_dim % n_head),
               (long long)(worst_i % head_dim), (double)ref[worst_i], (double)got[worst_i]);
    snprintf(name, sizeof name, "attention %s %s%s%s%s: heads %lld/%lld, head_dim %lld, max_kv %lld, work %zu B: nmse "
             "%.2e <= 1e-7", f16 ? "f16" : "f32", what, attn_swa ? " (sliding window 100)" : "",
             attn_cap > 0 ? " (soft-cap 2)" : "", attn_sinks ? " (sinks)" : "", (long long)n_head,
             (long long)n_head_kv, (long long)head_dim, (long long)max_kv, wb, e);
    CHECK(name, ok && e <= 1e-7);
    free(kf), free(vf), free(q), free(kh), free(vh), free(ref), free(got), free(scores);
}

static void attention_case(const char *what, int f16, int64_t n_tok, const int32_t *n_kv, const int *seq, int n_seq,
                           int64_t cap, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t max_kv)
{
    attention_case_at(what, f16, n_tok, n_kv, seq, n_seq, cap, n_head, n_head_kv, head_dim, max_kv, 0);
}

static void test_attention(void)
{
    /* a sliding window of 100 (Mistral): decode, a batch and a split prefill */
    {
        static const int32_t b5[5] = {1, 31, 300, 4100, 17};
        int sq[40];
        int32_t nk[40];
        for (int i = 0; i < 5; i++) sq[i] = i;
        attn_swa = 100;
        attention_case("batch decode of 5 sequences", 1, 5, b5, sq, 5, 4100, 8, 2, 64, 4100);
        for (int i = 0; i < 17; i++) sq[i] = 0, nk[i] = 4083 + i + 1;
        attention_case("prefill 17 after 4083 (split)", 0, 17, nk, sq, 1, 4100, 8, 2, 64, 4100);
        /* gemma2: the scores soft-capped (a cap of 2, so it bends most of them), with and without the
         * window, vector and scalar (odd base) paths */
        attn_cap = 2.0f;
        attention_case("batch decode of 5 sequences", 1, 5, b5, sq, 5, 4100, 8, 2, 64, 4100);
        attn_swa = 0;
        attention_case("prefill 17 after 4083 (split)", 0, 17, nk, sq, 1, 4100, 8, 2, 64, 4100);
        attention_case_at("decode, odd base (scalar)", 1, 1, b5 + 2, sq, 1, 4100, 8, 2, 64, 4100, 1);
        attn_cap = 0.0f;
        /* gpt-oss: each head's sink logit, some above every score (so it sets the max), with and
         * without the window; split decode (the merge adds it), unsplit prefill, the scalar path */
        static const float sinks[8] = {-2.0f, 0.5f, 6.0f, 1.5f, -0.5f, 9.0f, 0.0f, 3.0f};
        attn_sinks = sinks;
        for (int w = 0; w < 2; w++) {
            attn_swa = w ? 100 : 0;
            attention_case("batch decode of 5 sequences", 1, 5, b5, sq, 5, 4100, 8, 2, 64, 4100);
            attention_case("prefill 17 after 4083 (split)", 0, 17, nk, sq, 1, 4100, 8, 2, 64, 4100);
            for (int i = 0; i < 40; i++) sq[i] = 0, nk[i] = 290 + i + 1;
            attention_case("prefill 40 after 290 (one block per head)", 1, 40, nk, sq, 1, 330, 8, 2, 64, 330);
            attention_case_at("decode, odd base (scalar)", 0, 1, b5 + 2, sq, 1, 4100, 8, 2, 64, 4100, 1);
            for (int i = 0; i < 17; i++) sq[i] = 0, nk[i] = 4083 + i + 1;
        }
        attn_sinks = NULL;
        attn_swa = 0;
    }
    static const int32_t lens[] = {1, 31, 300, 4100};
    int seq[40];
    int32_t nkv[40];
    for (int f16 = 1; f16 >= 0; f16--) {
        for (int li = 0; li < 4; li++) {
            char what[64];
            snprintf(what, sizeof what, "decode n_kv %d", lens[li]);
            seq[0] = 0;
            attention_case(what, f16, 1, &lens[li], seq, 1, lens[li], 8, 2, 64, lens[li]);
        }
        seq[0] = 0;
        nkv[0] = 31;
        attention_case("decode n_kv 31 in a 4100 cache", f16, 1, nkv, seq, 1, 4100, 8, 2, 64, 4100);
        /* a batch of 5 sequences of different lengths */
        const int32_t b5[5] = {1, 31, 300, 4100, 17};
        for (int i = 0; i < 5; i++) seq[i] = i;
        attention_case("batch decode of 5 sequences", f16, 5, b5, seq, 5, 4100, 8, 2, 64, 4100);
        /* causal prefill of 17 tokens after 13 cached: token i sees 13 + i + 1 */
        for (int i = 0; i < 17; i++) seq[i] = 0, nkv[i] = 13 + i + 1;
        attention_case("prefill 17 after 13", f16, 17, nkv, seq, 1, 30, 8, 2, 64, 30);
        for (int i = 0; i < 17; i++) nkv[i] = 4083 + i + 1;
        attention_case("prefill 17 after 4083 (split)", f16, 17, nkv, seq, 1, 4100, 8, 2, 64, 4100);
        for (int i = 0; i < 40; i++) seq[i] = 0, nkv[i] = 290 + i + 1;
        attention_case("prefill 40 after 290 (one block per head)", f16, 40, nkv, seq, 1, 330, 8, 2, 64, 330);
        nkv[0] = 300;
        attention_case("decode head_dim 128", f16, 1, nkv, seq, 1, 300, 4, 4, 128, 300);
        attention_case("decode head_dim 256", f16, 1, nkv, seq, 1, 300, 4, 1, 256, 300);
        attention_case("decode head_dim 80", f16, 1, nkv, seq, 1, 300, 6, 3, 80, 300);
        /* not a multiple of 8 (f16) or 4 (f32) elements: the scalar path */
        attention_case("decode head_dim 42", f16, 1, nkv, seq, 1, 300, 6, 3, 42, 300);
        attention_case_at("decode n_kv 300, k_base/v_base odd", f16, 1, nkv, seq, 1, 300, 4, 4, 128, 300, 1);
        nkv[0] = 4100;
        attention_case_at("decode n_kv 4100, k_base/v_base odd", f16, 1, nkv, seq, 1, 4100, 8, 2, 64, 4100, 1);
    }
    /* 7B decode shapes at long contexts (f16 only: an f32 32768 cache is
     * over the test arena), and one in a longer cache than it reads */
    static const int32_t longs[] = {4096, 32768};
    for (int li = 0; li < 2; li++) {
        char what[64];
        snprintf(what, sizeof what, "decode n_kv %d (7B shape)", longs[li]);
        seq[0] = 0;
        attention_case(what, 1, 1, &longs[li], seq, 1, longs[li], 32, 32, 128, longs[li]);
    }
    nkv[0] = 12345;
    attention_case("decode n_kv 12345 of 16384 (7B shape)", 1, 1, nkv, seq, 1, 16384, 32, 32, 128, 16384);
}

/* One case of lrun_k_attention_quant: random int8/int4 records (codes and
 * a (scale, min) pair per group) and a random ring; token i of sequence
 * seq[i] reads n_kv[i] positions, those below qlo[seq] from the records
 * (dequantized as the slot path would store them: min + q·scale in f32,
 * rounded to the cache dtype), the rest from ring row j % ring_rows. The
 * reference is a double softmax over exactly those values. */
static void attention_quant_case(const char *what, int bits, int f16, int64_t n_tok, const int32_t *n_kv,
                                 const int *seq, int n_seq, const int32_t *qlo, int64_t cap, int64_t n_head,
                                 int64_t n_head_kv, int64_t head_dim, int64_t group, int64_t ring_rows)
{
    dreset();
    const int64_t kv_dim = n_head_kv * head_dim, n_groups = kv_dim / group, qn = n_tok * n_head * head_dim;
    const size_t code_bytes = bits == 8 ? (size_t)kv_dim : (size_t)kv_dim / 2;
    const size_t pos_bytes = code_bytes + (size_t)n_groups * 2 * sizeof(float), es = f16 ? 2 : 4;
    const size_t plane = (size_t)n_seq * (size_t)cap * pos_bytes, ring_n = (size_t)n_seq * ring_rows * kv_dim;
    uint8_t *codes = malloc(2 * plane);
    float *ringf = frandv(2 * (int64_t)ring_n, -1.0f, 1.0f), *q = frandv(qn, -3.0f, 3.0f);
    uint16_t *ringh = malloc(2 * ring_n * 2);
    for (size_t i = 0; i < 2 * ring_n; i++) {
        ringh[i] = lrun_f32_to_f16(ringf[i]);
        if (f16) ringf[i] = lrun_f16_to_f32(ringh[i]);
    }
    for (size_t r = 0; r < 2 * (size_t)n_seq * (size_t)cap; r++) {
        uint8_t *rec = codes + r * pos_bytes;
        for (size_t b = 0; b < code_bytes; b++) rec[b] = (uint8_t)(rand() & 255);
        float *par = (float *)(rec + code_bytes);
        for (int64_t g = 0; g < n_groups; g++) par[2 * g] = frand(0.001f, 0.02f), par[2 * g + 1] = frand(-1.5f, -0.5f);
    }
    /* the value a position holds for the attention: which (0 keys, 1 values), sequence s, position j, element d */
    float *vals = malloc((size_t)2 * n_seq * cap * kv_dim * sizeof(float));
    for (int w = 0; w < 2; w++)
        for (int s = 0; s < n_seq; s++)
            for (int64_t j = 0; j < cap; j++) {
                float *x = vals + (((size_t)w * n_seq + s) * cap + j) * kv_dim;
                const uint8_t *rec = codes + (size_t)w * plane + ((size_t)s * cap + j) * pos_bytes;
                const float *par = (const float *)(rec + code_bytes);
                for (int64_t d = 0; d < kv_dim; d++) {
                    if (j >= qlo[s]) {
                        x[d] = ringf[(size_t)w * ring_n + ((size_t)s * ring_rows + j % ring_rows) * kv_dim + d];
                        continue;
                    }
                    const unsigned c = bits == 8 ? rec[d] : (rec[d / 2] >> (4 * (d % 2))) & 15u;
                    const float prod = (float)c * par[2 * (d / group)], v = par[2 * (d / group) + 1] + prod;
                    x[d] = f16 ? lrun_f16_to_f32(lrun_f32_to_f16(v)) : v;
                }
            }
    float *ref = malloc((size_t)qn * 4), *got = malloc((size_t)qn * 4);
    double *scores = malloc((size_t)cap * sizeof *scores);
    const float scale = 1.0f / sqrtf((float)head_dim);
    int64_t base[8];
    for (int64_t i = 0; i < n_tok; i++) {
        base[i] = seq[i] * cap * kv_dim;
        const float *K = vals + (size_t)seq[i] * cap * kv_dim, *V = vals + ((size_t)n_seq + seq[i]) * cap * kv_dim;
        for (int64_t h = 0; h < n_head; h++) {
            const int64_t hk = h / (n_head / n_head_kv), o = (i * n_head + h) * head_dim;
            const int64_t lo = attn_swa > 0 && n_kv[i] > attn_swa ? n_kv[i] - attn_swa : 0; /* the window */
            double mx = -1e300, sum = 0.0;
            for (int64_t t = lo; t < n_kv[i]; t++) {
                double sc = 0.0;
                for (int64_t d = 0; d < head_dim; d++) sc += (double)q[o + d] * K[t * kv_dim + hk * head_dim + d];
                scores[t] = sc * scale;
                mx = scores[t] > mx ? scores[t] : mx;
            }
            for (int64_t t = 0; t < n_kv[i]; t++) sum += (scores[t] = exp(scores[t] - mx));
            for (int64_t d = 0; d < head_dim; d++) {
                double a = 0.0;
                for (int64_t t = 0; t < n_kv[i]; t++) a += scores[t] * V[t * kv_dim + hk * head_dim + d];
                ref[o + d] = (float)(a / sum);
            }
        }
    }
    const lrun_k_kv_quant qz = {.bits = bits, .group = group, .kv_dim = kv_dim, .cap = cap, .residual = ring_rows,
                                .ring_rows = ring_rows, .pos_bytes = pos_bytes,
                                .kv_dtype = f16 ? LRUN_DTYPE_F16 : LRUN_DTYPE_F32};
    uint8_t *dcodes = dcopy(codes, 2 * plane);
    uint8_t *dring = dcopy(f16 ? (void *)ringh : (void *)ringf, 2 * ring_n * es);
    float *dq = dcopy(q, (size_t)qn * 4), *dout = dbuf((size_t)qn * 4);
    int64_t *dbase = dcopy(base, (size_t)n_tok * 8);
    int32_t *dnkv = dcopy(n_kv, (size_t)n_tok * 4), *dqlo = dcopy(qlo, (size_t)n_seq * 4);
    const size_t wb = lrun_k_attention_work_bytes(n_tok, n_head, head_dim, cap);
    void *work = wb ? dbuf(wb) : NULL;
    int ok = ran(lrun_k_attention_quant(&qz, dq, dcodes, dcodes + plane, dring, dring + ring_n * es, dbase, dnkv, dqlo,
                                        n_tok, n_head, n_head_kv, head_dim, cap, scale, dout, work, stream));
    down(got, dout, (size_t)qn * 4);
    const double e = nmse(ref, got, qn);
    char name[240];
    snprintf(name, sizeof name, "attention_quant int%d %s %s: heads %lld/%lld, head_dim %lld, group %lld, record %zu B: "
             "nmse %.2e <= 1e-7", bits, f16 ? "f16" : "f32", what, (long long)n_head, (long long)n_head_kv,
             (long long)head_dim, (long long)group, pos_bytes, e);
    CHECK(name, ok && e <= 1e-7);
    free(codes), free(ringf), free(q), free(ringh), free(vals), free(ref), free(got), free(scores);
}

static void test_attention_quant(void)
{
    const int seq0[1] = {0};
    for (int bits = 8; bits >= 4; bits -= 4) {
        static const int32_t lens[] = {1, 300, 4096};
        for (int li = 0; li < 3; li++) {
            /* the last 128 positions and the new one from the ring (n_kv 1: only the ring) */
            const int32_t nkv[1] = {lens[li]}, lo[1] = {lens[li] - 1 > 128 ? lens[li] - 1 - 128 : 0};
            char what[80];
            snprintf(what, sizeof what, "decode n_kv %d, ring from %d (GQA)", lens[li], lo[0]);
            attention_quant_case(what, bits, 1, 1, nkv, seq0, 1, lo, lens[li], 32, 8, 128, 64, 136);
        }
        const int32_t n300[1] = {300}, lo0[1] = {300}, lo_all[1] = {0};
        attention_quant_case("decode n_kv 300, all from codes", bits, 1, 1, n300, seq0, 1, lo0, 300, 8, 2, 128, 64,
                             136);
        attention_quant_case("decode n_kv 300, all from the ring", bits, 1, 1, n300, seq0, 1, lo_all, 300, 8, 2, 128,
                             64, 400);
        const int32_t lo171[1] = {171};
        attention_quant_case("decode n_kv 300, ring from 171", bits, 0, 1, n300, seq0, 1, lo171, 300, 8, 2, 128, 64,
                             136);
        attention_quant_case("decode n_kv 300, group 32", bits, 1, 1, n300, seq0, 1, lo171, 300, 8, 2, 128, 32, 136);
        /* SmolLM2's shape: records of 216 (int8) or 120 (int4) bytes, narrower code loads */
        attention_quant_case("decode n_kv 300, head_dim 64, 9/3 heads", bits, 1, 1, n300, seq0, 1, lo171, 300, 9, 3,
                             64, 64, 136);
        /* a decode chunk of 5 tokens in 2 sequences: 3 new positions of one, 2 of the other */
        const int seqs[5] = {0, 0, 0, 1, 1};
        const int32_t nk5[5] = {298, 299, 300, 1000, 1001}, lo2[2] = {170, 872};
        attention_quant_case("chunk of 5 tokens in 2 sequences", bits, 1, 5, nk5, seqs, 2, lo2, 1001, 8, 2, 128, 64,
                             136);
    }
    const lrun_k_kv_quant odd = {.bits = 8, .group = 42, .kv_dim = 84, .cap = 8, .residual = 8, .ring_rows = 8,
                                 .pos_bytes = 84 + 16, .kv_dtype = LRUN_DTYPE_F16};
    CHECK("attention_quant: head_dim 42 is not taken (the slot path's)", !lrun_k_attention_quant_supported(&odd, 42));
}

// ---------------------------------------------------------------- sampling helpers

static void test_argmax(void)
{
    static const int64_t ns[] = {1, 7, 4097, 152064};
    for (int ni = 0; ni < 4; ni++) {
        dreset();
        const int64_t n = ns[ni], rows = 4;
        float *l = frandv(rows * n, -10.0f, 10.0f);
        if (n > 3) {
            l[1 * n + n / 3] = 20.0f, l[1 * n + n - 1] = 20.0f; /* a tie: the first wins */
            l[0 * n + 2] = NAN;                                 /* NaN is never the largest */
        }
        for (int64_t i = 0; i < n; i++) l[2 * n + i] = -INFINITY;
        int32_t want[4], got[4];
        for (int64_t r = 0; r < rows; r++) want[r] = lrun_logits_argmax(l + r * n, n);
        float *dl = dcopy(l, (size_t)(rows * n) * 4);
        int32_t *dout = dbuf(sizeof got);
        int ok = ran(lrun_k_argmax(dl, rows, n, dout, stream));
        down(got, dout, sizeof got);
        char name[128];
        snprintf(name, sizeof name, "argmax 4 rows of %lld (ties, NaN, all -inf): %d %d %d %d", (long long)n, got[0],
                 got[1], got[2], got[3]);
        CHECK(name, ok && !memcmp(want, got, sizeof got));
        free(l);
    }
}

static const float *sort_row;
static int by_value_then_id(const void *a, const void *b)
{
    const int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (sort_row[i] != sort_row[j]) return sort_row[i] > sort_row[j] ? -1 : 1;
    return i < j ? -1 : (i > j);
}

static void test_topk(void)
{
    static const int64_t ns[] = {7, 300, 49152}, ks[] = {1, 5, 40, 256};
    for (int ni = 0; ni < 3; ni++)
        for (int ki = 0; ki < 4; ki++) {
            const int64_t n = ns[ni], k = ks[ki], rows = 2;
            if (k > n) continue;
            dreset();
            float *l = frandv(rows * n, -4.0f, 4.0f);
            for (int64_t i = 0; i < n; i++) l[n + i] = roundf(l[n + i] * 8.0f) / 8.0f + 0.0f; /* many ties */
            int32_t *idx = malloc((size_t)n * 4), *got_ids = malloc((size_t)(rows * k) * 4);
            float *got_v = malloc((size_t)(rows * k) * 4);
            float *dl = dcopy(l, (size_t)(rows * n) * 4), *dv = dbuf((size_t)(rows * k) * 4);
            int32_t *di = dbuf((size_t)(rows * k) * 4);
            int ok = ran(lrun_k_topk(dl, rows, n, k, dv, di, stream));
            down(got_v, dv, (size_t)(rows * k) * 4), down(got_ids, di, (size_t)(rows * k) * 4);
            long bad = 0;
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t i = 0; i < n; i++) idx[i] = (int32_t)i;
                sort_row = l + r * n;
                qsort(idx, (size_t)n, 4, by_value_then_id);
                for (int64_t j = 0; j < k; j++)
                    bad += got_ids[r * k + j] != idx[j] || got_v[r * k + j] != sort_row[idx[j]];
            }
            char name[128];
            snprintf(name, sizeof name, "topk k %lld of %lld (a row with many ties): exact (%ld differ)", (long long)k,
                     (long long)n, bad);
            CHECK(name, ok && bad == 0);
            free(l), free(idx), free(got_ids), free(got_v);
        }
}

// ---------------------------------------------------------------- bandwidth

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------- programmatic dependent launch

/* Six decode layers of a 7B-wide model (bf16 weights, width 4096, f16
 * cache), launched back to back with no sync: RMSNorm, QKV GEMV, RoPE and
 * cache store, attention, Wo GEMV added into x, RMSNorm, gate/up SwiGLU
 * GEMV, down GEMV added into x. Under PDL each kernel starts while the one
 * before it drains and must wait for its results; a kernel that read too
 * early would see the previous layer's activations. x and the caches after
 * the chain must be the same bits with PDL on and off. */
static void pdl_chain(int pdl, float *x_out, uint16_t *ck_out)
{
    enum { D = 4096, FF = 5504, HEADS = 32, HD = 128, LAYERS = 6, CAP = 16 };
    dreset();
    const uint64_t rng_was = rng;
    rng = 0x2545f4914f6cdd1dull; /* the same x and norm weights in every run */
    const int was = lrun_k_pdl_enabled();
    lrun_k_set_pdl(pdl);
    /* the weights are windows of one random buffer, at different offsets */
    const size_t wsz = (size_t)FF * D * 2; /* the largest weight, bf16 */
    uint8_t *w = malloc(wsz + 8192);
    lrun_random_fill(LRUN_DTYPE_BF16, w, 0, (int64_t)FF * D + 4096, 0.02f, 17);
    void *wq = dcopy(w, (size_t)D * D * 2), *wk = dcopy(w + 1000, (size_t)D * D * 2);
    void *wv = dcopy(w + 2000, (size_t)D * D * 2), *wo = dcopy(w + 3000, (size_t)D * D * 2);
    void *wg = dcopy(w, wsz), *wu = dcopy(w + 4000, wsz), *wd = dcopy(w + 6000, wsz);
    free(w);
    float *x = frandv(D, -1.0f, 1.0f), *nw = frandv(D, 0.5f, 1.5f);
    float *dx = dcopy(x, D * 4), *dnw = dcopy(nw, D * 4), *xn = dbuf(D * 4), *q = dbuf(D * 4), *k = dbuf(D * 4);
    float *v = dbuf(D * 4), *att = dbuf(D * 4), *g = dbuf(FF * 4);
    void *work = dbuf(lrun_k_attention_work_bytes(1, HEADS, HD, CAP) + 256);
    uint16_t *zero = calloc((size_t)CAP * D, 2);
    void *ck = dcopy(zero, (size_t)CAP * D * 2), *cv = dcopy(zero, (size_t)CAP * D * 2);
    int32_t pos[LAYERS], nkv[LAYERS];
    int64_t off[LAYERS], base[LAYERS];
    for (int l = 0; l < LAYERS; l++) pos[l] = l, nkv[l] = l + 1, off[l] = (int64_t)l * D, base[l] = 0;
    int32_t *dpos = dcopy(pos, sizeof pos), *dnkv = dcopy(nkv, sizeof nkv);
    int64_t *doff = dcopy(off, sizeof off), *dbase = dcopy(base, sizeof base);
    free(x), free(nw), free(zero);
    lrun_status st = LRUN_OK;
    for (int l = 0; l < LAYERS && st == LRUN_OK; l++) {
        const lrun_k_gemv_part qkv[3] = {{wq, D * 2, D, q}, {wk, D * 2, D, k}, {wv, D * 2, D, v}};
        const lrun_k_gemv_part o[1] = {{wo, D * 2, D, dx}}, gu[2] = {{wg, D * 2, FF, g}, {wu, D * 2, FF, NULL}};
        const lrun_k_gemv_part down[1] = {{wd, FF * 2, D, dx}};
        st = lrun_k_rms_norm(dx, dnw, xn, 1, D, 1e-5f, stream);
        if (st == LRUN_OK) st = lrun_k_gemv_multi(LRUN_DTYPE_BF16, qkv, 3, D, xn, 1, LRUN_K_GEMV_STORE, stream);
        if (st == LRUN_OK)
            st = lrun_k_rope_kv_store(q, k, v, dpos + l, 1, HEADS, HEADS, HD, HD, 10000.0f, 1.0f, NULL,
                                      LRUN_ROPE_STYLE_HALF, LRUN_DTYPE_F16, ck, cv, doff + l, stream);
        if (st == LRUN_OK)
            st = lrun_k_attention(LRUN_DTYPE_F16, q, ck, cv, dbase, dbase, dnkv + l, 1, HEADS, HEADS, HD, CAP,
                                  1.0f / sqrtf((float)HD), att, work, stream);
        if (st == LRUN_OK) st = lrun_k_gemv_multi(LRUN_DTYPE_BF16, o, 1, D, att, 1, LRUN_K_GEMV_ADD, stream);
        if (st == LRUN_OK) st = lrun_k_rms_norm(dx, dnw, xn, 1, D, 1e-5f, stream);
        if (st == LRUN_OK) st = lrun_k_gemv_multi(LRUN_DTYPE_BF16, gu, 2, D, xn, 1, LRUN_K_GEMV_SWIGLU, stream);
        if (st == LRUN_OK) st = lrun_k_gemv_multi(LRUN_DTYPE_BF16, down, 1, FF, g, 1, LRUN_K_GEMV_ADD, stream);
    }
    if (!ran(st)) memset(x_out, 0xff, D * 4);
    else down(x_out, dx, D * 4), down(ck_out, ck, (size_t)CAP * D * 2);
    lrun_k_set_pdl(was);
    rng = rng_was;
}

static void test_pdl(void)
{
    enum { D = 4096, CAP = 16 };
    float *xa = malloc(D * 4), *xb = malloc(D * 4);
    uint16_t *ca = malloc((size_t)CAP * D * 2), *cb = malloc((size_t)CAP * D * 2);
    pdl_chain(0, xa, ca);
    int same = 1, finite = 1;
    for (int rep = 0; rep < 3; rep++) { /* a race need not show every time */
        pdl_chain(1, xb, cb);
        same &= !memcmp(xa, xb, D * 4) && !memcmp(ca, cb, (size_t)CAP * D * 2);
    }
    for (int i = 0; i < D; i++) finite &= isfinite(xa[i]) && xa[i] != 0.0f;
    CHECK("pdl: 6 decode layers (bf16, width 4096) chained without syncs: x and cache the same bits with PDL on "
          "(3 runs) and off", same && finite);
    free(xa), free(xb), free(ca), free(cb);
}

/* GB/s of the m = 1 GEMV on decode-sized matrices, against the H100's
 * 3.35 TB/s HBM3. The calls rotate over copies of the matrix totalling at
 * least 160 MB, so that none is still in the 50 MB L2 from its last call:
 * decode reads every weight once per token, from HBM. */
static void bench_type(lrun_dtype t, const char *variant)
{
    static const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}}; /* n, k */
    {
        for (int si = 0; si < 3; si++) {
            dreset();
            const int64_t n = shapes[si][0], k = shapes[si][1];
            const size_t stride = row_bytes(t, k), bytes = (size_t)n * stride;
            const int copies = (int)((160000000 + bytes - 1) / bytes);
            uint8_t *w = malloc(bytes);
            lrun_random_fill(t, w, 0, n * k, 1.0f, 5);
            void *dw[64];
            for (int c = 0; c < copies && c < 64; c++) dw[c] = dcopy(w, bytes);
            float *x = frandv(k, -1.0f, 1.0f), *dx = dcopy(x, (size_t)k * 4), *dy = dbuf((size_t)n * 4);
            free(w), free(x);
            if (!ran(lrun_k_gemv(t, dw[0], stride, n, k, dx, 1, dy, stream))) {
                printf("# bench gemv %s n %lld k %lld: failed\n", lrun_dtype_name(t), (long long)n, (long long)k);
                continue;
            }
            for (int c = 0; c < copies; c++) lrun_k_gemv(t, dw[c], stride, n, k, dx, 1, dy, stream);
            lrun_cuda_stream_sync(dev, stream);
            const int iters = copies * (1 + 400 / copies);
            const double t0 = now_s();
            for (int i = 0; i < iters; i++) lrun_k_gemv(t, dw[i % copies], stride, n, k, dx, 1, dy, stream);
            const int ok = lrun_cuda_stream_sync(dev, stream) == LRUN_OK;
            const double dt = (now_s() - t0) / iters, gbs = (double)bytes / dt / 1e9;
            printf("# bench gemv %-5s n %5lld k %5lld m 1: %8.1f us  %7.1f GB/s  %5.1f%% of 3350 GB/s%s  [%s]\n",
                   lrun_dtype_name(t), (long long)n, (long long)k, dt * 1e6, gbs, gbs / 33.5, ok ? "" : "  FAILED",
                   variant);
        }
    }
}

/* µs per call of the small kernels of a 7B decode layer (one token, width
 * 4096, 32 heads of 128, f16 cache of 1024 positions), launched back to back
 * as the engine launches them: what a decode step spends besides the GEMVs. */
static void bench_decode_ops(void)
{
    enum { D = 4096, HEADS = 32, HD = 128, CAP = 1024, ITERS = 200 };
    dreset();
    float *x = frandv(CAP * D, -1.0f, 1.0f);
    float *dx = dcopy(x, D * 4), *dw = dcopy(x + D, D * 4), *dy = dbuf(D * 4), *q = dcopy(x, D * 4);
    float *k = dcopy(x + D, D * 4), *v = dcopy(x + 2 * D, D * 4), *out = dbuf(D * 4);
    uint16_t *h = malloc((size_t)CAP * D * 2);
    for (int64_t i = 0; i < (int64_t)CAP * D; i++) h[i] = lrun_f32_to_f16(x[i] * 0.5f);
    void *ck = dcopy(h, (size_t)CAP * D * 2), *cv = dcopy(h, (size_t)CAP * D * 2);
    free(h), free(x);
    const int32_t pos = 191;
    const int64_t off = 191 * (int64_t)D, base = 0;
    int32_t *dpos = dcopy(&pos, 4);
    int64_t *doff = dcopy(&off, 8), *dbase = dcopy(&base, 8);
    void *work = dbuf(lrun_k_attention_work_bytes(1, HEADS, HD, CAP) + 256);
    static const int32_t nkv[] = {192, 1000};
    int32_t *dnkv = dcopy(nkv, sizeof nkv);
    for (int op = 0; op < 4; op++) {
        double t0 = 0.0;
        int ok = 1;
        for (int it = -10; it < ITERS && ok; it++) {
            if (it == 0) ok = lrun_cuda_stream_sync(dev, stream) == LRUN_OK, t0 = now_s();
            lrun_status st = LRUN_OK;
            if (op == 0) st = lrun_k_rms_norm(dx, dw, dy, 1, D, 1e-5f, stream);
            if (op == 1)
                st = lrun_k_rope_kv_store(q, k, v, dpos, 1, HEADS, HEADS, HD, HD, 10000.0f, 1.0f, NULL,
                                          LRUN_ROPE_STYLE_HALF, LRUN_DTYPE_F16, ck, cv, doff, stream);
            if (op >= 2)
                st = lrun_k_attention(LRUN_DTYPE_F16, q, ck, cv, dbase, dbase, dnkv + (op - 2), 1, HEADS, HEADS, HD,
                                      CAP, 1.0f / sqrtf((float)HD), out, work, stream);
            ok &= st == LRUN_OK;
        }
        ok &= lrun_cuda_stream_sync(dev, stream) == LRUN_OK;
        static const char *names[] = {"rms_norm 1x4096", "rope_kv_store 1 token, 32+32 heads of 128",
                                      "attention decode, n_kv 192 of 1024", "attention decode, n_kv 1000 of 1024"};
        printf("# bench op %-40s %7.2f us per call%s%s\n", names[op], (now_s() - t0) / ITERS * 1e6,
               lrun_k_pdl_enabled() ? " (PDL)" : "", ok ? "" : "  FAILED");
    }
}

/* The decode attention of a 7B layer at long contexts (one token, 32 heads
 * = 32 KV heads of 128, f16 cache of n_kv positions read whole, max_kv =
 * n_kv): µs per call and the cache's K and V bytes over that time. */
static void bench_attention_long(void)
{
    enum { HEADS = 32, HD = 128, ROW = HEADS * HD, MAXN = 32768, ITERS = 50 };
    dreset();
    const size_t cache_bytes = (size_t)MAXN * ROW * 2;
    uint16_t *h = malloc(cache_bytes);
    for (int64_t i = 0; i < (int64_t)MAXN * ROW; i++)
        h[i] = lrun_f32_to_f16((float)((uint32_t)(i * 2654435761u) >> 22) / 1024.0f - 0.5f);
    void *ck = dcopy(h, cache_bytes), *cv = dcopy(h, cache_bytes);
    free(h);
    float *qh = frandv(ROW, -1.0f, 1.0f);
    float *q = dcopy(qh, ROW * 4), *out = dbuf(ROW * 4);
    free(qh);
    const int64_t base = 0;
    int64_t *dbase = dcopy(&base, 8);
    static const int32_t lens[] = {4096, 16384, 32768};
    int32_t *dnkv = dcopy(lens, sizeof lens);
    void *work = dbuf(lrun_k_attention_work_bytes(1, HEADS, HD, MAXN) + 256);
    for (int li = 0; li < 3; li++) {
        double t0 = 0.0;
        int ok = 1;
        for (int it = -5; it < ITERS && ok; it++) {
            if (it == 0) ok = lrun_cuda_stream_sync(dev, stream) == LRUN_OK, t0 = now_s();
            ok &= lrun_k_attention(LRUN_DTYPE_F16, q, ck, cv, dbase, dbase, dnkv + li, 1, HEADS, HEADS, HD, lens[li],
                                   1.0f / sqrtf((float)HD), out, work, stream) == LRUN_OK;
        }
        ok &= lrun_cuda_stream_sync(dev, stream) == LRUN_OK;
        const double us = (now_s() - t0) / ITERS * 1e6, bytes = 2.0 * lens[li] * ROW * 2;
        printf("# bench attn decode f16 n_kv %5d, 32/32 heads of 128: %8.1f us  %7.1f GB/s%s%s\n", lens[li], us,
               bytes / us * 1e-3,
               lrun_k_pdl_enabled() ? " (PDL)" : "", ok ? "" : "  FAILED");
    }
}

/* The tuned shapes for every benched type; with --sweep also every shape
 * variant of lrun_k_gemv_tune for the types it covers. */
static void bench(int sweep)
{
    static const lrun_dtype types[] = {LRUN_DTYPE_BF16, LRUN_DTYPE_F16, LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_0,
                                       LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q6_K};
    /* the types added later, after the others so those lines keep their order */
    static const lrun_dtype more[] = {LRUN_DTYPE_Q5_0, LRUN_DTYPE_Q5_1, LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_Q2_K,
                                      LRUN_DTYPE_Q3_K, LRUN_DTYPE_Q5_K, LRUN_DTYPE_IQ4_XS};
    /* back-to-back launches as ordinary kernels, then as programmatic
     * dependents (each GEMV's weight loads overlap the previous one's tail) */
    const int pdl = lrun_k_pdl_enabled();
    lrun_k_set_pdl(0);
    for (int ti = 0; ti < 7; ti++) bench_type(types[ti], "default");
    for (int ti = 0; ti < 7; ti++) bench_type(more[ti], "default");
    lrun_k_set_pdl(pdl);
    if (pdl)
        for (int ti = 0; ti < 7; ti++) bench_type(types[ti], "default, PDL");
    bench_decode_ops();
    bench_attention_long();
    if (!sweep) return;
    static const lrun_dtype tuned[] = {LRUN_DTYPE_BF16, LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1,
                                       LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q6_K, LRUN_DTYPE_Q5_K};
    const char *desc;
    for (int v = 1; (desc = lrun_k_gemv_tune(v)) != NULL; v++) {
        char d[64];
        snprintf(d, sizeof d, "%s", desc);
        for (int ti = 0; ti < 7; ti++) bench_type(tuned[ti], d);
    }
    lrun_k_gemv_tune(0);
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    const int bench_mode = argc > 1 && (!strcmp(argv[1], "--bench") || !strcmp(argv[1], "--sweep"));
    if (!bench_mode) test_arguments();
    if (lrun_cuda_device_count() == 0) {
        printf("ok %d - # SKIP no GPU\n", ++check_count);
        return CHECK_DONE();
    }
    if (!gpu_fixture_open((size_t)1 << 30)) return 1;
    /* the kernels run as the engine launches them on this device: as
     * programmatic dependents on sm_90+ (test_pdl compares with PDL off) */
    lrun_k_set_pdl(lrun_k_pdl_supported(dev->cuda_ordinal));
    if (bench_mode) {
        bench(!strcmp(argv[1], "--sweep"));
    } else {
        test_pdl();
        test_dequantize();
        test_embed();
        test_matmul();
        test_gemv_fused();
        test_rms_norm();
        test_rope();
        test_elementwise();
        test_kv_store();
        test_rope_kv_store();
        test_attention();
        test_attention_quant();
        test_argmax();
        test_topk();
    }
    gpu_fixture_close();
    return bench_mode ? 0 : CHECK_DONE();
}
#endif
