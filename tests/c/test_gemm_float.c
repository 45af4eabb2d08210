/* test_gemm_float.c — the float weights' multi-row kernels (lrun_gemm_fn:
 * several weight rows against the same activation rows in one pass) give
 * exactly the one-row dot kernels' bits, on awkward shapes, at every host
 * kernel level this machine has; and lrun_cpu_matmul with m > 1 (which
 * takes them) gives per element the one-row kernel's bits.
 *
 * The reference is a scalar model of the AVX2 float dot written here from
 * its definition (docs/cpu-kernels.md): per 16 elements two 8-lane f32 FMA
 * chains, then AVX's horizontal sum of their lane-wise sum, then the k mod
 * 16 tail, a multiply and an add per element in order. The one-row kernels
 * are checked against it too, so the model cannot drift from them. */
#include "check.h"
#include "cpu/cpu_matmul.h"
#include "quant/quant_dot.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd_bits(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
/* ~ U(-1, 1) scaled over a few decades, so sums cancel and round often */
static float rnd(void)
{
    const float u = (float)(rnd_bits() >> 40) / 8388608.0f - 1.0f;
    static const float scale[4] = {1.0f, 1e-3f, 30.0f, 0.25f};
    return u * scale[rnd_bits() % 4];
}

static const lrun_dtype types[] = {LRUN_DTYPE_F32, LRUN_DTYPE_F16, LRUN_DTYPE_BF16};
static const int64_t ks[] = {1, 15, 16, 17, 100, 2048};
static const int64_t ns[] = {1, 2, 5, 9, 13};
static const int64_t ms[] = {1, 2, 3, 5, 7, 64};

static float weight_f32(lrun_dtype t, const uint8_t *row, int64_t j)
{
    uint16_t h;
    float f;
    if (t == LRUN_DTYPE_F32) {
        memcpy(&f, row + 4 * j, 4);
        return f;
    }
    memcpy(&h, row + 2 * j, 2);
    return t == LRUN_DTYPE_F16 ? lrun_f16_to_f32(h) : lrun_bf16_to_f32(h);
}

/* The AVX2 float dot's arithmetic, one element at a time. */
static float model_dot(lrun_dtype t, int64_t k, const uint8_t *w, const float *x)
{
    float acc[2][8] = {{0}};
    int64_t i = 0;
    for (; i + 16 <= k; i += 16)
        for (int h = 0; h < 2; ++h)
            for (int l = 0; l < 8; ++l)
                acc[h][l] = fmaf(weight_f32(t, w, i + 8 * h + l), x[i + 8 * h + l], acc[h][l]);
    float v[8];
    for (int l = 0; l < 8; ++l) v[l] = acc[0][l] + acc[1][l];
    /* hsum8: t[i] = v[i] + v[i+4], then (t0 + t2) + (t1 + t3) */
    const float t0 = v[0] + v[4], t1 = v[1] + v[5], t2 = v[2] + v[6], t3 = v[3] + v[7];
    float s = (t0 + t2) + (t1 + t3);
    for (; i < k; ++i) {
        const float p = weight_f32(t, w, i) * x[i];
        s += p;
    }
    return s;
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Every multi-row kernel against the one-row kernel of its level and the
 * model, on a weight block with a row stride larger than a row (so rows are
 * not adjacent) and an output with ldy > nw (a block of a larger y). */
static void test_kernels(lrun_dtype t)
{
    lrun_gemm_fn gemms[4];
    const char *gnames[4];
    lrun_dot_fn dots[8];
    const char *dnames[8];
    const int ng = lrun_gemm_kernels(t, gemms, gnames, 4), nd = lrun_dot_kernels(t, dots, dnames, 8);
    char msg[200];
    if (ng == 0) {
        printf("ok %d - %s: multi-row kernels # SKIP this build has none (no AVX2)\n", ++check_count,
               lrun_dtype_name(t));
        return;
    }
    for (int g = 0; g < ng && g < 4; ++g) {
        lrun_dot_fn one = NULL;
        for (int d = 0; d < nd && d < 8; ++d)
            if (strcmp(dnames[d], "avx2") == 0) one = dots[d]; /* both levels' float dots are AVX2's */
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ++ki) {
            const int64_t k = ks[ki];
            const size_t ebytes = lrun_dtype_block_bytes(t), row_bytes = (size_t)k * ebytes;
            const size_t ws = row_bytes + 3 * ebytes; /* rows apart by more than a row */
            const int64_t nmax = 13, mmax = 64, ldy = nmax + 3;
            uint8_t *w = malloc(ws * (size_t)nmax);
            float *x = malloc(sizeof(float) * (size_t)(mmax * k)), *xrow = malloc(sizeof(float) * (size_t)k);
            float *y = malloc(sizeof(float) * (size_t)(mmax * ldy));
            for (int64_t i = 0; i < nmax; ++i) {
                for (int64_t j = 0; j < k; ++j) xrow[j] = rnd();
                lrun_quantize_row(t, xrow, w + (size_t)i * ws, k);
            }
            for (int64_t i = 0; i < mmax * k; ++i) x[i] = rnd();
            int ok_one = 1, ok_model = 1, untouched = 1;
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni)
                for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; ++mi) {
                    const int64_t n = ns[ni], m = ms[mi];
                    for (int64_t i = 0; i < mmax * ldy; ++i) y[i] = NAN;
                    gemms[g](k, w, ws, n, x, sizeof(float) * (size_t)k, m, y, ldy);
                    for (int64_t r = 0; r < mmax; ++r)
                        for (int64_t j = 0; j < ldy; ++j) {
                            const float got = y[r * ldy + j];
                            if (r >= m || j >= n) {
                                untouched &= isnan(got); /* nothing outside the block is written */
                                continue;
                            }
                            float want = NAN;
                            if (one) one(k, w + (size_t)j * ws, x + r * k, 0, 1, &want);
                            ok_one &= one != NULL && same_bits(got, want);
                            ok_model &= same_bits(got, model_dot(t, k, w + (size_t)j * ws, x + r * k));
                        }
                }
            snprintf(msg, sizeof msg, "%s %s k=%lld, n 1..13, m 1..64: the one-row avx2 kernel's bits",
                     lrun_dtype_name(t), gnames[g], (long long)k);
            CHECK(msg, ok_one);
            snprintf(msg, sizeof msg, "%s %s k=%lld: the scalar model's bits", lrun_dtype_name(t), gnames[g],
                     (long long)k);
            CHECK(msg, ok_model);
            snprintf(msg, sizeof msg, "%s %s k=%lld: writes only its nx × nw block of y", lrun_dtype_name(t),
                     gnames[g], (long long)k);
            CHECK(msg, untouched);
            free(w);
            free(x);
            free(xrow);
            free(y);
        }
    }
    /* the one-row kernel itself against the model, 1..4 rows per call */
    int ok = 1;
    lrun_dot_fn one = NULL;
    for (int d = 0; d < nd && d < 8; ++d)
        if (strcmp(dnames[d], "avx2") == 0) one = dots[d];
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0] && one; ++ki) {
        const int64_t k = ks[ki];
        uint8_t *w = malloc((size_t)k * 4);
        float *x = malloc(sizeof(float) * (size_t)(4 * k)), out[4];
        for (int64_t j = 0; j < 4 * k; ++j) x[j] = rnd();
        lrun_quantize_row(t, x + k, w, k);
        for (int nx = 1; nx <= 4; ++nx) {
            one(k, w, x, sizeof(float) * (size_t)k, nx, out);
            for (int r = 0; r < nx; ++r) ok &= same_bits(out[r], model_dot(t, k, w, x + r * k));
        }
        free(w);
        free(x);
    }
    snprintf(msg, sizeof msg, "%s: the one-row avx2 kernel gives the scalar model's bits (k = 1..2048, 1-4 rows)",
             lrun_dtype_name(t));
    CHECK(msg, one != NULL && ok);
}

/* lrun_cpu_matmul, m > 1, at the level in use (the multi-row kernel where
 * it has one), against one-row kernel calls per element, on 1-3 threads. */
static void test_matmul(lrun_dtype t, lrun_threadpool **pools)
{
    const int64_t k = 100, n = 37, mmax = 70; /* n odd, m past one 64-row x tile */
    size_t row_bytes;
    lrun_dtype_row_bytes(t, k, &row_bytes);
    uint8_t *w = malloc(row_bytes * (size_t)n);
    float *x = malloc(sizeof(float) * (size_t)(mmax * k)), *y = malloc(sizeof(float) * (size_t)(mmax * n));
    for (int64_t i = 0; i < mmax * k; ++i) x[i] = rnd();
    for (int64_t i = 0; i < n; ++i) lrun_quantize_row(t, x + (i % mmax) * k, w + (size_t)i * row_bytes, k);
    for (int64_t i = 0; i < mmax * k; ++i) x[i] = rnd();
    lrun_dot_fn dot = lrun_dot_kernel(t);
    static const int64_t mm[] = {2, 3, 5, 7, 64, 70};
    int ok = 1;
    for (int p = 0; p < 3; ++p)
        for (size_t mi = 0; mi < sizeof mm / sizeof mm[0]; ++mi) {
            const int64_t m = mm[mi];
            lrun_cpu_matmul(pools[p], t, w, row_bytes, n, k, x, m, y, NULL);
            for (int64_t r = 0; r < m; ++r)
                for (int64_t i = 0; i < n; ++i) {
                    float want;
                    dot(k, w + (size_t)i * row_bytes, x + r * k, 0, 1, &want);
                    ok &= same_bits(y[r * n + i], want);
                }
        }
    char msg[160];
    snprintf(msg, sizeof msg, "%s matmul at %s, m = 2..70, 1-3 threads: each element the one-row kernel's bits",
             lrun_dtype_name(t), lrun_cpu_isa_name(lrun_cpu_isa_get()));
    CHECK(msg, ok);
    free(w);
    free(x);
    free(y);
}

int main(void)
{
    lrun_threadpool *pools[3] = {NULL};
    for (int i = 0; i < 3; ++i) lrun_threadpool_init(&pools[i], i + 1);
    CHECK("pools of 1-3 threads", pools[0] && pools[1] && pools[2]);
    printf("# host kernel level in use: %s\n", lrun_cpu_isa_name(lrun_cpu_isa_get()));
    for (size_t i = 0; i < sizeof types / sizeof types[0]; ++i) {
        test_kernels(types[i]);
        test_matmul(types[i], pools);
        const lrun_gemm_fn g = lrun_gemm_kernel(types[i]);
        char msg[120];
        snprintf(msg, sizeof msg, "%s: a multi-row kernel at the avx2 and avx512 levels, none at scalar",
                 lrun_dtype_name(types[i]));
        CHECK(msg, lrun_cpu_isa_get() == LRUN_CPU_ISA_SCALAR ? g == NULL : g != NULL);
    }
    const lrun_cpu_isa level = lrun_cpu_isa_get();
    CHECK("q4_k has no multi-row kernel (its dot loops over rows)", lrun_gemm_kernel(LRUN_DTYPE_Q4_K) == NULL);
    /* the scalar level's matmul, which has no multi-row kernel, is still each element's scalar dot */
    if (lrun_cpu_isa_set(LRUN_CPU_ISA_SCALAR) == LRUN_OK) {
        for (size_t i = 0; i < sizeof types / sizeof types[0]; ++i) test_matmul(types[i], pools);
        lrun_cpu_isa_set(level);
    }
    for (int i = 0; i < 3; ++i) lrun_threadpool_free(pools[i]);
    return CHECK_DONE();
}
