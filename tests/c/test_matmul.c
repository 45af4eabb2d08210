/* test_matmul.c — lrun_cpu_matmul against a naive float reference, for every
 * weight dtype, decode (m = 1) and prefill shapes, odd n, several thread
 * counts; the bits must not depend on the thread count nor on m. */
#include "check.h"
#include "cpu/cpu_matmul.h"
#include "quant/quant_dot.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static float rnd(void) /* ~ U(-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(rng_state >> 40) / 8388608.0f - 1.0f;
}

static const lrun_dtype types[] = {LRUN_DTYPE_F32,  LRUN_DTYPE_F16,  LRUN_DTYPE_BF16, LRUN_DTYPE_Q4_0,
                                   LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q6_K};
static const int64_t ms[] = {1, 3, 7, 64};
static const int threads[] = {1, 2, 3, 4};

static void test_type(lrun_dtype t, lrun_threadpool **pools)
{
    const int64_t n = 37 + 16 * 3; /* odd, and more than one chunk per thread */
    const int64_t be = lrun_dtype_block_elems(t);
    const int64_t k = be == 1 ? 200 : be == 32 ? 32 * 9 : 256 * 2;
    const int64_t mmax = 64;
    size_t row_bytes;
    lrun_dtype_row_bytes(t, k, &row_bytes);

    float *wf = malloc(sizeof(float) * (size_t)(n * k)), *wd = malloc(sizeof(float) * (size_t)(n * k));
    uint8_t *w = malloc(row_bytes * (size_t)n);
    float *x = malloc(sizeof(float) * (size_t)(mmax * k));
    float *y = malloc(sizeof(float) * (size_t)(mmax * n)), *y1 = malloc(sizeof(float) * (size_t)(mmax * n));
    size_t work_bytes = lrun_cpu_matmul_work_bytes(t, mmax, k);
    void *work = malloc(work_bytes ? work_bytes : 1);
    for (int64_t i = 0; i < n * k; ++i) wf[i] = rnd() * (1.0f + (float)(i % 7));
    for (int64_t i = 0; i < mmax * k; ++i) x[i] = rnd();
    for (int64_t i = 0; i < n; ++i) {
        lrun_quantize_row(t, wf + i * k, w + (size_t)i * row_bytes, k);
        lrun_dequantize_row(t, w + (size_t)i * row_bytes, wd + i * k, k);
    }

    /* expected work size: m rows of the partner type */
    size_t prow = 0;
    lrun_dtype p = lrun_dot_partner(t);
    int is_float = p == LRUN_DTYPE_F32;
    if (!is_float) lrun_dtype_row_bytes(p, k, &prow);
    char msg[160];
    snprintf(msg, sizeof msg, "%s: work bytes are m rows of %s", lrun_dtype_name(t), lrun_dtype_name(p));
    CHECK(msg, work_bytes == (size_t)mmax * prow);

    /* the m = 64 result, one thread: every smaller m must give the same bits for its rows */
    lrun_cpu_matmul(pools[0], t, w, row_bytes, n, k, x, mmax, y1, work);

    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; ++mi) {
        int64_t m = ms[mi];
        double worst = 0.0;
        int same_bits = 1;
        for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ++ti) {
            for (int64_t i = 0; i < m * n; ++i) y[i] = NAN;
            lrun_cpu_matmul(pools[ti], t, w, row_bytes, n, k, x, m, y, work);
            for (int64_t r = 0; r < m; ++r)
                for (int64_t i = 0; i < n; ++i) {
                    /* naive reference: dequantized weights times the float activations;
                     * the activations' own 8-bit rounding is the tolerance */
                    double ref = 0.0, mag = 0.0;
                    for (int64_t j = 0; j < k; ++j) {
                        ref += (double)wd[i * k + j] * x[r * k + j];
                        mag += fabs((double)wd[i * k + j] * x[r * k + j]);
                    }
                    double err = fabs(y[r * n + i] - ref) / (mag + 1e-30);
                    worst = isnan(y[r * n + i]) ? INFINITY : fmax(worst, err);
                    same_bits &= memcmp(&y[r * n + i], &y1[r * n + i], sizeof(float)) == 0;
                }
        }
        double tol = is_float ? 1e-5 : 5e-3;
        snprintf(msg, sizeof msg, "%s m=%lld n=%lld k=%lld: matches the float reference (worst rel %.2g) on 1-4 threads",
                 lrun_dtype_name(t), (long long)m, (long long)n, (long long)k, worst);
        CHECK(msg, worst < tol);
        snprintf(msg, sizeof msg, "%s m=%lld: identical bits for 1, 2, 3, 4 threads and for m=64", lrun_dtype_name(t),
                 (long long)m);
        CHECK(msg, same_bits);
    }

    /* exactly the dot kernel on the converted activations */
    lrun_cpu_matmul(pools[1], t, w, row_bytes, n, k, x, 3, y, work);
    int exact = 1;
    for (int64_t r = 0; r < 3; ++r) {
        const void *xr = is_float ? (const void *)(x + r * k) : (const void *)((uint8_t *)work + r * prow);
        for (int64_t i = 0; i < n; ++i) {
            float d = lrun_vec_dot(t, k, w + (size_t)i * row_bytes, xr);
            exact &= memcmp(&d, &y[r * n + i], sizeof d) == 0;
        }
    }
    snprintf(msg, sizeof msg, "%s: each output is lrun_vec_dot of its rows", lrun_dtype_name(t));
    CHECK(msg, exact);

    free(wf);
    free(wd);
    free(w);
    free(x);
    free(y);
    free(y1);
    free(work);
}

/* Large m·k takes the parallel conversion path; rows split mid-row must convert the same. */
static void test_parallel_convert(lrun_threadpool **pools)
{
    const int64_t n = 48, k = 4096, m = 5;
    size_t row_bytes;
    lrun_dtype_row_bytes(LRUN_DTYPE_Q4_1, k, &row_bytes);
    uint8_t *w = malloc(row_bytes * (size_t)n);
    float *wf = malloc(sizeof(float) * (size_t)k), *x = malloc(sizeof(float) * (size_t)(m * k));
    float *y[4];
    size_t wb = lrun_cpu_matmul_work_bytes(LRUN_DTYPE_Q4_1, m, k);
    void *work = malloc(wb);
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < k; ++j) wf[j] = rnd();
        lrun_quantize_row(LRUN_DTYPE_Q4_1, wf, w + (size_t)i * row_bytes, k);
    }
    for (int64_t i = 0; i < m * k; ++i) x[i] = rnd();
    int same = 1;
    for (int ti = 0; ti < 4; ++ti) {
        y[ti] = malloc(sizeof(float) * (size_t)(m * n));
        lrun_cpu_matmul(pools[ti], LRUN_DTYPE_Q4_1, w, row_bytes, n, k, x, m, y[ti], work);
        same &= memcmp(y[ti], y[0], sizeof(float) * (size_t)(m * n)) == 0;
    }
    CHECK("q4_1 m=5 k=4096 (parallel activation conversion): identical bits on 1-4 threads", same);
    for (int ti = 0; ti < 4; ++ti) free(y[ti]);
    free(w);
    free(wf);
    free(x);
    free(work);
}

int main(void)
{
    lrun_threadpool *pools[4] = {NULL};
    for (int i = 0; i < 4; ++i) lrun_threadpool_init(&pools[i], threads[i]);
    CHECK("pools of 1-4 threads", pools[0] && pools[1] && pools[2] && pools[3]);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; ++i) test_type(types[i], pools);
    test_parallel_convert(pools);

    /* a NULL pool runs on the caller alone */
    float w[32], x[32], y = 0.0f;
    for (int i = 0; i < 32; ++i) w[i] = x[i] = (float)i;
    lrun_cpu_matmul(NULL, LRUN_DTYPE_F32, w, sizeof w, 1, 32, x, 1, &y, NULL);
    CHECK("NULL pool, f32: the sum of squares 0..31", y == 10416.0f);
    float y2[2] = {1.0f, 1.0f};
    lrun_cpu_matmul(pools[1], LRUN_DTYPE_Q8_0, w, 0, 2, 0, x, 1, y2, NULL);
    CHECK("k = 0: empty sums are zero", y2[0] == 0.0f && y2[1] == 0.0f);
    for (int i = 0; i < 4; ++i) lrun_threadpool_free(pools[i]);
    return CHECK_DONE();
}
