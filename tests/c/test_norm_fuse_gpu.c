/* test_norm_fuse_gpu.c — the decode norm folded into what reads it
 * (docs/gpu.md "Fused norm"), against the two launches it replaces:
 *
 *   lrun_k_gemv_norm_multi       vs lrun_k_rms_norm then lrun_k_gemv_multi, every GEMV dtype, m = 1..8,
 *                                k = 4096 and odd widths (the plain kernel's f16 k 1001, a padded stride),
 *                                all five epilogues (3 parts stored, added, SwiGLU, GeGLU f32 and table);
 *   lrun_k_rms_norm_quantize_q8  vs lrun_k_rms_norm then lrun_k_quantize_q8 (Q8_0): xn, the int8 codes
 *                                and the scales bit for bit, m = 1..8, k 4096, 576, 32.
 *
 * Tolerance of the GEMV (error/terms, as test_kernels_gpu's nmse_terms:
 * Σ(two-launch − fused)² / Σ_outputs Σ_c (w_c·xn_c)²): both sides round
 * in f32 — the two-launch side each xn_c = (x_c·s)·g_c, the fused side
 * x_c·g_c and then s times the sum; s itself differs by the order of Σx²
 * (~1e-7 relative). Per term that is a few 2^-24 relative, so error/terms
 * is ~1e-13; 1e-10 leaves room and still catches a wrong s (a 1e-5 error of
 * s alone reads ~1e-10 at k 4096 only if every term agrees in sign, and a
 * missing or doubled norm weight reads ~1). GeGLU's f16 table: an f16
 * rounding a last-bit difference of g flips moves one value by 2^-11 of
 * it, so there plain NMSE <= 1e-6 (as test_kernels_gpu).
 *
 *   build/tests/test_norm_fuse_gpu           the tests (one SKIP line without a GPU)
 *   build/tests/test_norm_fuse_gpu --bench   µs per decode sublayer input, 7B shapes (bf16 QKV and
 *                                            gate/up; Q8_0 norm+quantize), two launches against one */
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

static const float EPS = 1e-5f;
#define MAX_M 8 /* the decode GEMV's rows (lrun_k_gemv: 1 ≤ m ≤ 8) */

// ---------------------------------------------------------------- data

static uint64_t rng = 0x2545f4914f6cdd1dull;
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

static size_t row_bytes(lrun_dtype t, int64_t k)
{
    size_t b = 0;
    lrun_dtype_row_bytes(t, k, &b);
    return b;
}

/* n rows of k random elements of t, stride bytes apart; their f32 values into *wf */
static uint8_t *random_rows(lrun_dtype t, int64_t n, int64_t k, size_t stride, uint64_t seed, float **wf)
{
    uint8_t *w = malloc((size_t)n * stride);
    *wf = malloc((size_t)(n * k) * sizeof **wf);
    memset(w, 0xa5, (size_t)n * stride);
    for (int64_t r = 0; r < n; r++) {
        if (lrun_random_fill(t, w + (size_t)r * stride, r * k, k, 1.0f, seed) != LRUN_OK) {
            printf("Bail out! random_fill: %s\n", lrun_last_error());
            exit(1);
        }
        lrun_dequantize_row(t, w + (size_t)r * stride, *wf + r * k, k);
    }
    return w;
}

/* mag (m, n) = Σ_c (w_c·xn_c)² of each output, xn the CPU's norm of x */
static void terms(const float *wf, const float *xn, int64_t n, int64_t k, int64_t m, double *mag)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t r = 0; r < n; r++) {
            double s2 = 0.0;
            for (int64_t c = 0; c < k; c++) {
                const double t = (double)wf[r * k + c] * xn[i * k + c];
                s2 += t * t;
            }
            mag[i * n + r] = s2;
        }
}

static double err_terms(const float *ref, const float *got, const double *mag, int64_t n)
{
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)ref[i] - (double)got[i];
        num += d * d;
        den += mag[i];
    }
    return den > 0.0 ? num / den : num;
}

static double nmse(const float *ref, const float *got, int64_t n)
{
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)ref[i] - (double)got[i];
        num += d * d, den += (double)ref[i] * ref[i];
    }
    return den > 0.0 ? num / den : num;
}

// ---------------------------------------------------------------- argument checks (no GPU needed)

#define FAKE ((void *)(uintptr_t)0x10000) /* never dereferenced: each call fails first */

static int fails_naming(lrun_status got, const char *what)
{
    return got == LRUN_E_ARG && strstr(lrun_last_error(), what) != NULL;
}

static void test_arguments(void)
{
    float *x = FAKE;
    lrun_k_gemv_part part = {FAKE, 64, 4, x};
    CHECK("gemv_norm_multi: a NULL norm weight is LRUN_E_ARG naming norm_w",
          fails_naming(lrun_k_gemv_norm_multi(LRUN_DTYPE_F16, &part, 1, 32, x, NULL, EPS, 1, LRUN_K_GEMV_STORE, FAKE),
                       "norm_w"));
    CHECK("gemv_norm_multi: a negative eps is LRUN_E_ARG naming eps",
          fails_naming(lrun_k_gemv_norm_multi(LRUN_DTYPE_F16, &part, 1, 32, x, x, -1.0f, 1, LRUN_K_GEMV_STORE, FAKE),
                       "eps"));
    CHECK("gemv_norm_multi: the DP4A flag is LRUN_E_ARG (its kernel folds no norm)",
          fails_naming(lrun_k_gemv_norm_multi(LRUN_DTYPE_Q4_0, &part, 1, 32, x, x, EPS, 1,
                                              LRUN_K_GEMV_STORE | LRUN_K_GEMV_DP4A, FAKE),
                       "DP4A"));
    CHECK("rms_norm_quantize_q8: n not a multiple of 32 is LRUN_E_ARG naming the shape",
          fails_naming(lrun_k_rms_norm_quantize_q8(x, x, x, 1, 48, EPS, FAKE, x, FAKE), "multiple of 32"));
    CHECK("rms_norm_quantize_q8: NULL qs is LRUN_E_ARG naming qs",
          fails_naming(lrun_k_rms_norm_quantize_q8(x, x, x, 1, 64, EPS, NULL, x, FAKE), "qs"));
}

// ---------------------------------------------------------------- the GEMV with the norm

/* One dtype and width: parts of 33, 7 and 7 rows (stride pad bytes past
 * the row), an up weight of 33 rows for the pairs; for m = 1..8 each mode
 * through both routes. */
static void gemv_case(lrun_dtype t, int64_t k, size_t pad)
{
    dreset();
    const int64_t ns[3] = {33, 7, 7}, max_m = MAX_M;
    const size_t stride = row_bytes(t, k) + pad;
    /* x of a residual stream: not normed, a few large values */
    float *x = frandv(max_m * k, -3.0f, 3.0f), *g = frandv(k, 0.2f, 2.0f), *xn = malloc((size_t)(max_m * k) * 4);
    for (int64_t i = 0; i < max_m; i++) lrun_cpu_rms_norm(xn + i * k, x + i * k, g, k, EPS);
    float *dx = dcopy(x, (size_t)(max_m * k) * 4), *dg = dcopy(g, (size_t)k * 4);
    float *dxn = dbuf((size_t)(max_m * k) * 4);
    uint8_t *w[4];
    float *wf[4];
    double *mag[4];
    lrun_k_gemv_part two[4], one[4]; /* two launches' y, and the fused one's */
    for (int p = 0; p < 4; p++) {
        const int64_t n = p < 3 ? ns[p] : 33; /* part 3: up */
        w[p] = random_rows(t, n, k, stride, 501 + (uint64_t)(17 * p) + (uint64_t)t, &wf[p]);
        mag[p] = malloc((size_t)(max_m * n) * sizeof(double));
        terms(wf[p], xn, n, k, max_m, mag[p]);
        void *dw = dcopy(w[p], (size_t)n * stride);
        two[p] = (lrun_k_gemv_part){dw, stride, n, dbuf((size_t)(max_m * n) * 4)};
        one[p] = (lrun_k_gemv_part){dw, stride, n, dbuf((size_t)(max_m * n) * 4)};
    }
    float *y0 = frandv(max_m * 33, -5.0f, 5.0f), *a = malloc((size_t)(max_m * 33) * 4),
          *b = malloc((size_t)(max_m * 33) * 4);
    double *pmag = malloc((size_t)(max_m * 33) * sizeof(double));
    double worst[5] = {0};
    int ok = 1;
    for (int64_t m = 1; m <= max_m; m++) {
        ok &= ran(lrun_k_rms_norm(dx, dg, dxn, m, k, EPS, stream));
        /* STORE: Q, K, V */
        ok &= ran(lrun_k_gemv_multi(t, two, 3, k, dxn, m, LRUN_K_GEMV_STORE, stream));
        ok &= ran(lrun_k_gemv_norm_multi(t, one, 3, k, dx, dg, EPS, m, LRUN_K_GEMV_STORE, stream));
        for (int p = 0; p < 3; p++) {
            down(a, two[p].y, (size_t)(m * ns[p]) * 4);
            down(b, one[p].y, (size_t)(m * ns[p]) * 4);
            const double e = err_terms(a, b, mag[p], m * ns[p]);
            worst[0] = e > worst[0] ? e : worst[0];
        }
        /* ADD: y0 + product */
        up(two[0].y, y0, (size_t)(m * 33) * 4);
        up(one[0].y, y0, (size_t)(m * 33) * 4);
        ok &= ran(lrun_k_gemv_multi(t, two, 1, k, dxn, m, LRUN_K_GEMV_ADD, stream));
        ok &= ran(lrun_k_gemv_norm_multi(t, one, 1, k, dx, dg, EPS, m, LRUN_K_GEMV_ADD, stream));
        down(a, two[0].y, (size_t)(m * 33) * 4);
        down(b, one[0].y, (size_t)(m * 33) * 4);
        double e = err_terms(a, b, mag[0], m * 33);
        worst[1] = e > worst[1] ? e : worst[1];
        /* the pairs: gate (part 0) and up (part 3); the products' errors carried through the
         * activation (|d silu·u| <= ~1.1|u| + |silu|, GELU's <= ~1.13): the gate's and up's terms
         * weighted by the sizes of the other factor, from the two-launch products */
        static const int pair_modes[3] = {LRUN_K_GEMV_SWIGLU, LRUN_K_GEMV_GEGLU_F32, LRUN_K_GEMV_GEGLU};
        lrun_k_gemv_part pt[2] = {two[0], {two[3].w, stride, 33, NULL}},
                         po[2] = {one[0], {one[3].w, stride, 33, NULL}};
        float *gg = malloc((size_t)(m * 33) * 4), *uu = malloc((size_t)(m * 33) * 4);
        ok &= ran(lrun_k_gemv_multi(t, two, 1, k, dxn, m, LRUN_K_GEMV_STORE, stream));
        down(gg, two[0].y, (size_t)(m * 33) * 4);
        ok &= ran(lrun_k_gemv_multi(t, &two[3], 1, k, dxn, m, LRUN_K_GEMV_STORE, stream));
        down(uu, two[3].y, (size_t)(m * 33) * 4);
        for (int64_t i = 0; i < m * 33; i++) {
            const double sg = gg[i] / (1.0 + exp(-(double)gg[i]));
            pmag[i] = 1.3 * uu[i] * uu[i] * mag[0][i] + (1.0 + sg * sg) * mag[3][i];
        }
        for (int c = 0; c < 3; c++) {
            ok &= ran(lrun_k_gemv_multi(t, pt, 2, k, dxn, m, pair_modes[c], stream));
            ok &= ran(lrun_k_gemv_norm_multi(t, po, 2, k, dx, dg, EPS, m, pair_modes[c], stream));
            down(a, two[0].y, (size_t)(m * 33) * 4);
            down(b, one[0].y, (size_t)(m * 33) * 4);
            e = c == 2 ? nmse(a, b, m * 33) : err_terms(a, b, pmag, m * 33);
            worst[2 + c] = e > worst[2 + c] ? e : worst[2 + c];
        }
        free(gg), free(uu);
    }
    static const char *what[5] = {"3 weights (33, 7, 7 rows) stored", "added into y", "gate/up through swiglu",
                                  "gate/up through geglu (f32)", "gate/up through geglu (f16 table; nmse)"};
    for (int c = 0; c < 5; c++) {
        const double tol = c == 4 ? 1e-6 : 1e-10;
        char name[240];
        snprintf(name, sizeof name, "gemv_norm_multi %s k %lld%s, %s, m 1..8: against rms_norm + gemv %.2e <= %.0e",
                 lrun_dtype_name(t), (long long)k, pad ? " (padded stride)" : "", what[c], worst[c], tol);
        CHECK(name, ok && worst[c] <= tol);
    }
    for (int p = 0; p < 4; p++) free(w[p]), free(wf[p]), free(mag[p]);
    free(x), free(g), free(xn), free(y0), free(a), free(b), free(pmag);
}

static const lrun_dtype gemv_types[] = {LRUN_DTYPE_F32,  LRUN_DTYPE_F16,    LRUN_DTYPE_BF16,   LRUN_DTYPE_Q4_0,
                                        LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q8_0,   LRUN_DTYPE_Q4_K,   LRUN_DTYPE_Q6_K,
                                        LRUN_DTYPE_Q5_0, LRUN_DTYPE_Q5_1,   LRUN_DTYPE_Q2_K,   LRUN_DTYPE_Q3_K,
                                        LRUN_DTYPE_Q5_K, LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_IQ4_XS, LRUN_DTYPE_MXFP4};

static void test_gemv_norm(void)
{
    for (size_t i = 0; i < sizeof gemv_types / sizeof gemv_types[0]; i++) gemv_case(gemv_types[i], 4096, 0);
    gemv_case(LRUN_DTYPE_BF16, 768, 0); /* a small model's width */
    gemv_case(LRUN_DTYPE_Q4_K, 768, 0);
    gemv_case(LRUN_DTYPE_F16, 1001, 0); /* k % 8 != 0: the plain kernel */
    gemv_case(LRUN_DTYPE_F32, 576, 4);  /* a stride off 16 bytes: the plain kernel */
    gemv_case(LRUN_DTYPE_Q8_0, 576, 0);
}

// ---------------------------------------------------------------- the norm with the q8 quantization

static void q8_case(int64_t k)
{
    dreset();
    const int64_t max_m = MAX_M;
    float *x = frandv(max_m * k, -3.0f, 3.0f), *g = frandv(k, 0.2f, 2.0f);
    x[0] = 0.0f; /* an all-zero block below: d 0, codes 0 */
    for (int64_t c = 0; c < 32 && k >= 64; c++) x[k + 32 + c] = 0.0f;
    float *dx = dcopy(x, (size_t)(max_m * k) * 4), *dg = dcopy(g, (size_t)k * 4);
    float *xa = dbuf((size_t)(max_m * k) * 4), *xb = dbuf((size_t)(max_m * k) * 4);
    const int64_t nb = max_m * k / 32;
    int8_t *qa = dbuf((size_t)(max_m * k)), *qb = dbuf((size_t)(max_m * k));
    float *da = dbuf((size_t)nb * 4), *db = dbuf((size_t)nb * 4);
    float *ha = malloc((size_t)(max_m * k) * 4), *hb = malloc((size_t)(max_m * k) * 4);
    int ok = 1, same = 1;
    for (int64_t m = 1; m <= max_m; m++) {
        ok &= ran(lrun_k_rms_norm(dx, dg, xa, m, k, EPS, stream));
        ok &= ran(lrun_k_quantize_q8(LRUN_DTYPE_Q8_0, xa, m, k, qa, da, NULL, stream));
        ok &= ran(lrun_k_rms_norm_quantize_q8(dx, dg, xb, m, k, EPS, qb, db, stream));
        const size_t sizes[3] = {(size_t)(m * k) * 4, (size_t)(m * k), (size_t)(m * k / 32) * 4};
        const void *da_[3] = {xa, qa, da}, *db_[3] = {xb, qb, db};
        for (int c = 0; c < 3; c++) {
            down(ha, da_[c], sizes[c]);
            down(hb, db_[c], sizes[c]);
            same &= memcmp(ha, hb, sizes[c]) == 0;
        }
    }
    /* and in place (y = x), as rms_norm allows */
    float *xc = dcopy(x, (size_t)(max_m * k) * 4);
    ok &= ran(lrun_k_rms_norm_quantize_q8(xc, dg, xc, max_m, k, EPS, qb, db, stream));
    ok &= ran(lrun_k_rms_norm(dx, dg, xa, max_m, k, EPS, stream));
    down(ha, xa, (size_t)(max_m * k) * 4);
    down(hb, xc, (size_t)(max_m * k) * 4);
    same &= memcmp(ha, hb, (size_t)(max_m * k) * 4) == 0;
    char name[200];
    snprintf(name, sizeof name,
             "rms_norm_quantize_q8 k %lld, m 1..8 (and in place): xn, codes and scales are rms_norm then "
             "quantize_q8's, bit for bit",
             (long long)k);
    CHECK(name, ok && same);
    free(x), free(g), free(ha), free(hb);
}

static void test_norm_quantize(void)
{
    q8_case(4096);
    q8_case(576);
    q8_case(32);
}

// ---------------------------------------------------------------- bench

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The bench's buffers: a 7B llama sublayer input (k 4096) and bf16 QKV
 * (3 × 4096 rows) and gate/up (2 × 11008) weights, m = 1. */
static struct {
    int64_t k;
    float *x, *g, *xn;
    lrun_k_gemv_part qkv[3], gu[2];
    int8_t *qs;
    float *qd;
} B;

enum bench_step { QKV_TWO, QKV_ONE, GU_TWO, GU_ONE, Q8_TWO, Q8_ONE };

static lrun_status bench_run(enum bench_step s)
{
    const int64_t k = B.k;
    lrun_status st;
    switch (s) {
    case QKV_TWO:
        if ((st = lrun_k_rms_norm(B.x, B.g, B.xn, 1, k, EPS, stream)) != LRUN_OK) return st;
        return lrun_k_gemv_multi(LRUN_DTYPE_BF16, B.qkv, 3, k, B.xn, 1, LRUN_K_GEMV_STORE, stream);
    case QKV_ONE: return lrun_k_gemv_norm_multi(LRUN_DTYPE_BF16, B.qkv, 3, k, B.x, B.g, EPS, 1, 0, stream);
    case GU_TWO:
        if ((st = lrun_k_rms_norm(B.x, B.g, B.xn, 1, k, EPS, stream)) != LRUN_OK) return st;
        return lrun_k_gemv_multi(LRUN_DTYPE_BF16, B.gu, 2, k, B.xn, 1, LRUN_K_GEMV_SWIGLU, stream);
    case GU_ONE:
        return lrun_k_gemv_norm_multi(LRUN_DTYPE_BF16, B.gu, 2, k, B.x, B.g, EPS, 1, LRUN_K_GEMV_SWIGLU, stream);
    case Q8_TWO:
        if ((st = lrun_k_rms_norm(B.x, B.g, B.xn, 1, k, EPS, stream)) != LRUN_OK) return st;
        return lrun_k_quantize_q8(LRUN_DTYPE_Q8_0, B.xn, 1, k, B.qs, B.qd, NULL, stream);
    default: return lrun_k_rms_norm_quantize_q8(B.x, B.g, B.xn, 1, k, EPS, B.qs, B.qd, stream);
    }
}

/* µs per step, n steps after a warm-up, one sync at the end; -1 on failure */
static double time_us(enum bench_step s, int n)
{
    int ok = ran(bench_run(s));
    const double t0 = now_s();
    for (int i = 0; i < n; i++) ok &= bench_run(s) == LRUN_OK;
    ok &= ran(LRUN_OK);
    return ok ? (now_s() - t0) * 1e6 / n : -1.0;
}

static void bench(void)
{
    dreset();
    const int64_t k = 4096, nq = 4096, nf = 11008;
    const int iters = 500;
    const size_t rb = row_bytes(LRUN_DTYPE_BF16, k);
    float *x = frandv(k, -3.0f, 3.0f), *g = frandv(k, 0.2f, 2.0f);
    B.k = k;
    B.x = dcopy(x, (size_t)k * 4), B.g = dcopy(g, (size_t)k * 4), B.xn = dbuf((size_t)k * 4);
    for (int p = 0; p < 3; p++) B.qkv[p] = (lrun_k_gemv_part){dbuf((size_t)nq * rb), rb, nq, dbuf((size_t)nq * 4)};
    for (int p = 0; p < 2; p++) B.gu[p] = (lrun_k_gemv_part){dbuf((size_t)nf * rb), rb, nf, dbuf((size_t)nf * 4)};
    /* zero weights: read as fast as any, and no NaN from garbage bits */
    int ok = 1;
    for (int p = 0; p < 3; p++) ok &= lrun_cuda_memset(dev, (void *)B.qkv[p].w, 0, (size_t)nq * rb) == LRUN_OK;
    for (int p = 0; p < 2; p++) ok &= lrun_cuda_memset(dev, (void *)B.gu[p].w, 0, (size_t)nf * rb) == LRUN_OK;
    B.qs = dbuf((size_t)k), B.qd = dbuf((size_t)k / 32 * 4);
    if (!ok) printf("# memset: %s\n", lrun_last_error());
    printf("# bf16 QKV 3x%lld, k %lld, m 1: rms_norm + gemv %.1f us, folded %.1f us\n", (long long)nq, (long long)k,
           time_us(QKV_TWO, iters), time_us(QKV_ONE, iters));
    printf("# bf16 gate/up 2x%lld swiglu, m 1: rms_norm + gemv %.1f us, folded %.1f us\n", (long long)nf,
           time_us(GU_TWO, iters), time_us(GU_ONE, iters));
    printf("# q8_0 x, k %lld, m 1: rms_norm + quantize_q8 %.1f us, rms_norm_quantize_q8 %.1f us\n", (long long)k,
           time_us(Q8_TWO, iters), time_us(Q8_ONE, iters));
    free(x), free(g);
}

int main(int argc, char **argv)
{
    const int bench_mode = argc > 1 && !strcmp(argv[1], "--bench");
    if (!bench_mode) test_arguments();
    if (lrun_cuda_device_count() == 0) {
        printf("ok %d - # SKIP no GPU\n", ++check_count);
        return CHECK_DONE();
    }
    if (!gpu_fixture_open((size_t)1 << 30)) return 1;
    lrun_k_set_pdl(lrun_k_pdl_supported(dev->cuda_ordinal)); /* as the engine launches them */
    if (bench_mode) {
        bench();
    } else {
        test_gemv_norm();
        test_norm_quantize();
    }
    gpu_fixture_close();
    return bench_mode ? 0 : CHECK_DONE();
}
#endif
