/* packed_host_bench.c — the host's batch-1 product of a packed bf16 weight
 * (lrun_cpu_matmul_packed: decoded a tile of rows at a time in each
 * thread's cache before the tile's product) against the plain product
 * (lrun_cpu_matmul) and the way host compute ran before (the whole weight
 * decoded into a buffer over the pool, then the plain product), over copies
 * of one trained-like weight (synthetic: lrun_random_fill_trained) laid
 * across 1 GiB so that they come from DRAM, at each host kernel level the
 * CPU has and at 1 and every thread. The limit: DRAM's read rate measured
 * in the same run (a pass summing the same span), over the plain bytes for
 * the plain product and over the packed bytes for the packed one. Every
 * figure is plain bytes per second, the best of 5. Not part of `make test`:
 *
 *   make && tests/bench/packed_bench.sh --host [rows cols]
 */
#include "core/clock.h"
#include "core/threadpool.h"
#include "cpu/cpu_matmul.h"
#include "cpu/cpu_matmul_packed.h"
#include "model/random_fill.h"
#include "packed/codec.h"
#include "packed/codec_pex2.h"
#include "quant/quant_dot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPAN ((size_t)1 << 30)

/* DRAM's read rate over the pool: each thread sums its share of the span. */
struct sum_task {
    const uint64_t *p;
    size_t n;
    uint64_t out[256];
};
static void sum_run(void *c, int ith, int nth)
{
    struct sum_task *t = c;
    const size_t a = t->n * (size_t)ith / (size_t)nth, b = t->n * (size_t)(ith + 1) / (size_t)nth;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = a; i + 4 <= b; i += 4) s0 += t->p[i], s1 += t->p[i + 1], s2 += t->p[i + 2], s3 += t->p[i + 3];
    t->out[ith % 256] = s0 + s1 + s2 + s3;
}

static double dram_rate(lrun_threadpool *pool, const void *buf, size_t bytes)
{
    struct sum_task t = {.p = buf, .n = bytes / 8};
    double best = 0;
    for (int r = 0; r < 5; r++) {
        const double t0 = lrun_now_seconds();
        lrun_threadpool_run(pool, sum_run, &t);
        const double dt = lrun_now_seconds() - t0;
        if (dt > 0 && (double)bytes / dt > best) best = (double)bytes / dt;
    }
    return best;
}

enum { PLAIN, PACKED, DECODE_THEN };

/* One product per copy (stride bytes apart, copies of them) in the way asked; plain bytes per second, best of 5. */
static double rate(int how, lrun_threadpool *pool, const char *all, size_t copies, size_t stride,
                   const lrun_packed_layout *lay, int64_t rows, int64_t k, const float *x, float *y, void *work,
                   uint16_t *decoded)
{
    double best = 0;
    for (int r = 0; r < 5; r++) {
        const double t0 = lrun_now_seconds();
        for (size_t c = 0; c < copies; c++) {
            const char *w = all + c * stride;
            if (how == PACKED) lrun_cpu_matmul_packed(pool, w, lay, rows, k, x, 1, y, work);
            else if (how == PLAIN) lrun_cpu_matmul(pool, LRUN_DTYPE_BF16, w, (size_t)k * 2, rows, k, x, 1, y, NULL);
            else {
                lrun_packed_decode_range_mt(decoded, w, lay, 0, (uint64_t)(rows * k), pool);
                lrun_cpu_matmul(pool, LRUN_DTYPE_BF16, decoded, (size_t)k * 2, rows, k, x, 1, y, NULL);
            }
        }
        const double dt = lrun_now_seconds() - t0;
        const double plain = (double)copies * (double)rows * (double)k * 2;
        if (r > 0 && dt > 0 && plain / dt > best) best = plain / dt;
    }
    return best;
}

int main(int argc, char **argv)
{
    const int64_t rows = argc > 2 ? atoll(argv[1]) : 11008, k = argc > 2 ? atoll(argv[2]) : 4096;
    const size_t plain_bytes = (size_t)(rows * k) * 2;
    uint16_t *plain = malloc(plain_bytes), *decoded = malloc(plain_bytes);
    const size_t cap = lrun_pex2_bound((uint64_t)(rows * k));
    uint8_t *one = malloc(cap);
    char *all = aligned_alloc(64, SPAN + plain_bytes);
    float *x = malloc((size_t)k * sizeof *x), *y = malloc((size_t)rows * sizeof *y);
    lrun_threadpool *every = NULL, *single = NULL;
    if (!plain || !decoded || !one || !all || !x || !y || lrun_threadpool_init(&every, 0) != LRUN_OK ||
        lrun_threadpool_init(&single, 1) != LRUN_OK)
        return 1;
    lrun_random_fill_trained(LRUN_DTYPE_BF16, plain, 0, rows * k, 0.02f, 1);
    for (int64_t i = 0; i < k; i++) x[i] = (float)((i % 7) - 3) * 0.25f;
    size_t size = 0;
    lrun_packed_layout lay;
    if (lrun_pex2_encode(one, cap, &size, plain, (uint64_t)(rows * k), every) != LRUN_OK ||
        lrun_packed_validate(&lay, one, size, "bench") != LRUN_OK)
        return 1;
    const double share = (double)size / (double)plain_bytes;
    const size_t stride = (size + 63) / 64 * 64, n_packed = SPAN / stride, n_plain = SPAN / plain_bytes;
    printf("%lld x %lld bf16 (trained-like, synthetic), PEX2 ratio %.4f; copies across %.0f MiB; plain GB/s\n",
           (long long)rows, (long long)k, share, (double)SPAN / 1048576.0);
    printf("| threads | level | DRAM read | plain | limit | %% | packed (tiles) | limit | %% | packed / plain | "
           "decode then plain | tiles / that |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    const lrun_cpu_isa was = lrun_cpu_isa_get();
    lrun_threadpool *pools[2] = {single, every};
    for (int pi = 0; pi < 2; pi++) {
        lrun_threadpool *pool = pools[pi];
        const int nth = lrun_threadpool_size(pool);
        void *work = aligned_alloc(64, lrun_cpu_matmul_packed_work_bytes(k, nth));
        for (int isa = LRUN_CPU_ISA_AVX2; isa <= LRUN_CPU_ISA_AVX512; isa++) {
            if (lrun_cpu_isa_set((lrun_cpu_isa)isa) != LRUN_OK) continue;
            for (size_t c = 0; c < n_plain; c++) memcpy(all + c * plain_bytes, plain, plain_bytes);
            const double dram = dram_rate(pool, all, n_plain * plain_bytes);
            const double p = rate(PLAIN, pool, all, n_plain, plain_bytes, NULL, rows, k, x, y, NULL, NULL);
            for (size_t c = 0; c < n_packed; c++) memcpy(all + c * stride, one, size);
            const double f = rate(PACKED, pool, all, n_packed, stride, &lay, rows, k, x, y, work, NULL);
            const double d = rate(DECODE_THEN, pool, all, n_packed, stride, &lay, rows, k, x, y, NULL, decoded);
            printf("| %d | %s | %.1f | %.1f | %.1f | %.0f%% | %.1f | %.1f | %.0f%% | %.2f | %.1f | %.2f |\n", nth,
                   isa == LRUN_CPU_ISA_AVX512 ? "avx512" : "avx2", dram / 1e9, p / 1e9, dram / 1e9, 100 * p / dram,
                   f / 1e9, dram / share / 1e9, 100 * f * share / dram, f / p, d / 1e9, f / d);
            fflush(stdout);
        }
        free(work);
    }
    (void)lrun_cpu_isa_set(was);
    lrun_threadpool_free(single);
    lrun_threadpool_free(every);
    free(plain), free(decoded), free(one), free(all), free(x), free(y);
    return 0;
}
