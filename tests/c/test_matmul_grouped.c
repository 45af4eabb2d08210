/* test_matmul_grouped.c — lrun_cpu_matmul_grouped equals lrun_cpu_matmul called per
 * part, bit for bit: several dtypes, 1-9 parts of 1-8 rows, a prefill part of many
 * rows, parts of no rows, 1, 2, 3 and 5 threads. lrun_cpu_matmul_grouped_float_x on
 * MXFP4 (an HF gpt-oss's experts) equals the f64 product of the dequantized weights
 * with the f32 activations as they are, within f32 rounding, on every pool alike. */
#include "check.h"
#include "cpu/cpu_matmul.h"
#include "cpu/cpu_matmul_grouped.h"
#include "quant/quant_dot.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float rnd(void) /* ~ U(-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(rng_state >> 40) / 8388608.0f - 1.0f;
}

static const lrun_dtype types[] = {LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q6_K, LRUN_DTYPE_F32,
                                   LRUN_DTYPE_BF16, LRUN_DTYPE_Q4_0};
static const int threads[] = {1, 2, 3, 5};
#define N_POOLS 4
#define MAX_PARTS 9
#define BIG_M 70 /* a prefill part: more than one x tile of 64 rows */

/* Each part its own weight matrix (as experts are); rows per part 1-8, one part
 * BIG_M rows and one empty when big. */
static int check_group(lrun_dtype t, lrun_threadpool **pools, int n_parts, int big)
{
    const int64_t n = 16 * 5 + 3; /* odd, not a multiple of the chunk */
    const int64_t be = lrun_dtype_block_elems(t);
    const int64_t k = be == 1 ? 96 : be == 32 ? 32 * 5 : 256 * 2;
    size_t row_bytes;
    lrun_dtype_row_bytes(t, k, &row_bytes);
    lrun_cpu_mm_part parts[MAX_PARTS];
    float *ref[MAX_PARTS];
    float *wf = malloc(sizeof(float) * (size_t)k);
    int64_t mmax = 1;
    for (int i = 0; i < n_parts; i++) {
        int64_t m = 1 + (i * 5 + n_parts) % 8;
        if (big && i == 0) m = BIG_M;
        if (big && i == n_parts - 1 && n_parts > 2) m = 0;
        mmax = m > mmax ? m : mmax;
        uint8_t *w = malloc(row_bytes * (size_t)n);
        for (int64_t r = 0; r < n; r++) {
            for (int64_t j = 0; j < k; j++) wf[j] = rnd() * (1.0f + (float)(r % 5));
            lrun_quantize_row(t, wf, w + (size_t)r * row_bytes, k);
        }
        float *x = malloc(sizeof(float) * (size_t)((m ? m : 1) * k));
        for (int64_t j = 0; j < m * k; j++) x[j] = rnd();
        parts[i] = (lrun_cpu_mm_part){.w = w, .x = x, .m = m, .y = malloc(sizeof(float) * (size_t)((m ? m : 1) * n))};
        ref[i] = malloc(sizeof(float) * (size_t)((m ? m : 1) * n));
    }
    size_t wb = lrun_cpu_matmul_grouped_work_bytes(t, k, parts, n_parts), one = lrun_cpu_matmul_work_bytes(t, mmax, k);
    void *work = malloc(wb ? wb : 1), *work1 = malloc(one ? one : 1);
    for (int i = 0; i < n_parts; i++)
        lrun_cpu_matmul(pools[0], t, parts[i].w, row_bytes, n, k, parts[i].x, parts[i].m, ref[i], work1);
    int same = 1;
    for (int pi = 0; pi < N_POOLS; pi++) {
        for (int i = 0; i < n_parts; i++)
            for (int64_t j = 0; j < parts[i].m * n; j++) parts[i].y[j] = NAN;
        lrun_cpu_matmul_grouped(pools[pi], t, row_bytes, n, k, parts, n_parts, work);
        for (int i = 0; i < n_parts; i++)
            same &= memcmp(parts[i].y, ref[i], sizeof(float) * (size_t)(parts[i].m * n)) == 0;
    }
    for (int i = 0; i < n_parts; i++) {
        free((void *)parts[i].w);
        free((void *)parts[i].x);
        free(parts[i].y);
        free(ref[i]);
    }
    free(wf);
    free(work);
    free(work1);
    return same;
}

/* Many rows over many parts takes the parallel conversion; blocks split across
 * parts and rows must convert as lrun_cpu_matmul converts each part. */
static int check_parallel_convert(lrun_threadpool **pools)
{
    const lrun_dtype t = LRUN_DTYPE_Q4_K;
    const int64_t n = 40, k = 2048, n_parts = 8;
    size_t row_bytes;
    lrun_dtype_row_bytes(t, k, &row_bytes);
    uint8_t *w = malloc(row_bytes * (size_t)n);
    float *wf = malloc(sizeof(float) * (size_t)k);
    for (int64_t r = 0; r < n; r++) {
        for (int64_t j = 0; j < k; j++) wf[j] = rnd();
        lrun_quantize_row(t, wf, w + (size_t)r * row_bytes, k);
    }
    lrun_cpu_mm_part parts[8];
    float *ref[8];
    for (int i = 0; i < n_parts; i++) { /* the same weight for all parts: gate slices of one expert, say */
        const int64_t m = 3 + i % 3;
        float *x = malloc(sizeof(float) * (size_t)(m * k));
        for (int64_t j = 0; j < m * k; j++) x[j] = rnd();
        parts[i] = (lrun_cpu_mm_part){.w = w, .x = x, .m = m, .y = malloc(sizeof(float) * (size_t)(m * n))};
        ref[i] = malloc(sizeof(float) * (size_t)(m * n));
    }
    size_t wb = lrun_cpu_matmul_grouped_work_bytes(t, k, parts, (int)n_parts);
    void *work = malloc(wb);
    int same = 1;
    for (int i = 0; i < n_parts; i++)
        lrun_cpu_matmul(pools[0], t, w, row_bytes, n, k, parts[i].x, parts[i].m, ref[i], work);
    for (int pi = 0; pi < N_POOLS; pi++) {
        lrun_cpu_matmul_grouped(pools[pi], t, row_bytes, n, k, parts, (int)n_parts, work);
        for (int i = 0; i < n_parts; i++)
            same &= memcmp(parts[i].y, ref[i], sizeof(float) * (size_t)(parts[i].m * n)) == 0;
    }
    for (int i = 0; i < n_parts; i++) {
        free((void *)parts[i].x);
        free(parts[i].y);
        free(ref[i]);
    }
    free(w);
    free(wf);
    free(work);
    return same;
}

/* MXFP4 with f32 activations: y = x · dequant(W)ᵀ, as transformers computes the
 * dequantized experts; the Q8_0 path (llama.cpp's) rounds x and misses by ~1e-3. */
static int check_mxfp4_float_x(lrun_threadpool **pools, double *worst_out, double *q8_out)
{
    const lrun_dtype t = LRUN_DTYPE_MXFP4;
    const int64_t n = 37, k = 32 * 6, n_parts = 11; /* more parts than one job's table */
    size_t row_bytes;
    lrun_dtype_row_bytes(t, k, &row_bytes);
    float *wf = malloc(sizeof(float) * (size_t)k), *deq = malloc(sizeof(float) * (size_t)(n * k));
    uint8_t *w = malloc(row_bytes * (size_t)n);
    for (int64_t r = 0; r < n; r++) {
        for (int64_t j = 0; j < k; j++) wf[j] = rnd() * (1.0f + (float)(r % 7));
        lrun_quantize_row(t, wf, w + (size_t)r * row_bytes, k);
        lrun_dequant_mxfp4(w + (size_t)r * row_bytes, deq + r * k, k / 32);
    }
    lrun_cpu_mm_part parts[11];
    for (int i = 0; i < n_parts; i++) {
        const int64_t m = 1 + i % 4;
        float *x = malloc(sizeof(float) * (size_t)(m * k));
        for (int64_t j = 0; j < m * k; j++) x[j] = rnd();
        parts[i] = (lrun_cpu_mm_part){.w = w, .x = x, .m = m, .y = malloc(sizeof(float) * (size_t)(m * n))};
    }
    float *first = malloc(sizeof(float) * (size_t)(4 * n) * (size_t)n_parts);
    double worst = 0, q8 = 0;
    int same = 1;
    for (int pi = 0; pi < N_POOLS; pi++) {
        lrun_cpu_matmul_grouped_float_x(pools[pi], t, row_bytes, n, k, parts, (int)n_parts);
        for (int i = 0; i < n_parts; i++)
            for (int64_t a = 0; a < parts[i].m; a++)
                for (int64_t r = 0; r < n; r++) {
                    double ref = 0, mag = 0;
                    for (int64_t j = 0; j < k; j++) {
                        ref += (double)parts[i].x[a * k + j] * deq[r * k + j];
                        mag += fabs((double)parts[i].x[a * k + j] * deq[r * k + j]);
                    }
                    const double err = fabs(parts[i].y[a * n + r] - ref) / (mag > 0 ? mag : 1);
                    worst = err > worst ? err : worst;
                    float *f = first + ((size_t)i * 4 + (size_t)a) * (size_t)n + (size_t)r;
                    if (pi == 0) *f = parts[i].y[a * n + r];
                    else same &= memcmp(f, &parts[i].y[a * n + r], sizeof *f) == 0;
                }
    }
    /* the same weights through the Q8_0 path, to show the test tells them apart */
    void *work = malloc(lrun_cpu_matmul_work_bytes(t, 4, k));
    for (int i = 0; i < n_parts; i++) {
        float *yq = malloc(sizeof(float) * (size_t)(parts[i].m * n));
        lrun_cpu_matmul(pools[0], t, w, row_bytes, n, k, parts[i].x, parts[i].m, yq, work);
        for (int64_t j = 0; j < parts[i].m * n; j++) {
            const double d = fabs((double)yq[j] - first[((size_t)i * 4) * (size_t)n + (size_t)j]);
            q8 = d > q8 ? d : q8;
        }
        free(yq);
        free((void *)parts[i].x);
        free(parts[i].y);
    }
    free(work);
    free(first);
    free(w);
    free(wf);
    free(deq);
    *worst_out = worst;
    *q8_out = q8;
    return same;
}

int main(void)
{
    lrun_threadpool *pools[N_POOLS] = {NULL};
    for (int i = 0; i < N_POOLS; ++i) lrun_threadpool_init(&pools[i], threads[i]);
    CHECK("pools of 1, 2, 3, 5 threads", pools[0] && pools[1] && pools[2] && pools[3]);
    char msg[160];
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        int decode = 1, prefill = 1;
        for (int np = 1; np <= MAX_PARTS; np++) {
            decode &= check_group(types[ti], pools, np, 0);
            prefill &= check_group(types[ti], pools, np, 1);
        }
        snprintf(msg, sizeof msg, "%s: 1-9 parts of 1-8 rows equal lrun_cpu_matmul per part on 1, 2, 3, 5 threads",
                 lrun_dtype_name(types[ti]));
        CHECK(msg, decode);
        snprintf(msg, sizeof msg, "%s: with a %d-row part and an empty part, equal lrun_cpu_matmul per part",
                 lrun_dtype_name(types[ti]), BIG_M);
        CHECK(msg, prefill);
    }
    CHECK("q4_k 8 parts, k=2048 (parallel conversion): equal lrun_cpu_matmul per part", check_parallel_convert(pools));
    /* work bytes: the sum of each part's lrun_cpu_matmul work */
    lrun_cpu_mm_part p2[2] = {{.m = 3}, {.m = 5}};
    CHECK("work bytes of q8_0 parts of 3 and 5 rows are those of 8 rows",
          lrun_cpu_matmul_grouped_work_bytes(LRUN_DTYPE_Q8_0, 256, p2, 2) ==
              lrun_cpu_matmul_work_bytes(LRUN_DTYPE_Q8_0, 8, 256));
    CHECK("f32 parts need no work", lrun_cpu_matmul_grouped_work_bytes(LRUN_DTYPE_F32, 256, p2, 2) == 0);
    float y2[2] = {1.0f, 1.0f}, x1 = 0.0f;
    lrun_cpu_mm_part pk = {.w = NULL, .x = &x1, .m = 1, .y = y2};
    lrun_cpu_matmul_grouped(pools[1], LRUN_DTYPE_Q8_0, 0, 2, 0, &pk, 1, NULL);
    CHECK("k = 0: empty sums are zero", y2[0] == 0.0f && y2[1] == 0.0f);
    /* the level's kernel (AVX2 here when the CPU has it) against the portable one */
    {
        lrun_block_mxfp4 wb[7];
        float xs[4 * 7 * 32], wf[7 * 32], a[4], b[4]; /* 4 activation rows of 7 blocks each */
        int bits = 1;
        for (int rep = 0; rep < 200; rep++) {
            for (int j = 0; j < 7 * 32; j++) wf[j] = rnd() * (float)(1 + rep % 9);
            for (int j = 0; j < 4 * 7 * 32; j++) xs[j] = rnd() * 3.0f;
            lrun_quantize_row(LRUN_DTYPE_MXFP4, wf, wb, 7 * 32);
            lrun_dot_mxfp4_f32_kernel()(7 * 32, wb, xs, 7 * 32 * sizeof(float), 4, a);
            lrun_dot_mxfp4_f32_scalar(7 * 32, wb, xs, 7 * 32 * sizeof(float), 4, b);
            bits &= memcmp(a, b, sizeof a) == 0;
        }
        snprintf(msg, sizeof msg, "mxfp4 float x: the kernel at level %s gives the scalar one's bits",
                 lrun_cpu_isa_name(lrun_cpu_isa_get()));
        CHECK(msg, bits);
    }
    double worst = 1, q8 = 0;
    CHECK("mxfp4 float x: the same bits on 1, 2, 3, 5 threads", check_mxfp4_float_x(pools, &worst, &q8));
    snprintf(msg, sizeof msg, "mxfp4 float x: within 1e-6 of sum |x w| of the f64 product (worst %.2e)", worst);
    CHECK(msg, worst <= 1e-6);
    snprintf(msg, sizeof msg, "mxfp4 Q8_0 activations differ from float x (max %.2e)", q8);
    CHECK(msg, q8 > 1e-5);
    for (int i = 0; i < N_POOLS; ++i) lrun_threadpool_free(pools[i]);
    return CHECK_DONE();
}
