/* matmul_bench.c — throughput of lrun_cpu_matmul on SmolLM2-135M's shapes,
 * next to the machine's plain memory bandwidth. Not part of `make test`:
 *
 *   make && cc -O2 -march=native -std=c11 -D_GNU_SOURCE -pthread -Iruntime \
 *      tests/bench/matmul_bench.c -o build/matmul_bench build/liblrun.a -lcjson -lm -ldl
 *   build/matmul_bench [seconds per figure, default 0.5]
 *
 * Every figure is the best single run over the time given, so that other
 * processes on a shared machine count little.
 *
 * m = 1 (decode): GB/s of weight bytes streamed. The matrix is replicated
 * over LRUN_BENCH_POOL_MB (default 256 MiB) and the copies are cycled, so
 * the weights come from DRAM, as in a whole decode step, not from cache.
 * m = 64 (prefill): GFLOP/s (2·m·n·k per product), one matrix (cache-resident,
 * as each weight is reused 64 times anyway).
 * With LRUN_MODEL set: also every matmul of one decode step of that GGUF.
 * With LRUN_BENCH_TYPES=1: instead, every CPU quant type (the K-quants need
 * k a multiple of 256) at k=1536 n=1536, m = 1 and 64, to compare types.
 * With LRUN_BENCH_ISA=1: instead, the host kernel levels side by side (AVX2
 * against AVX-512, lrun_cpu_isa_set between runs of the same matrices,
 * alternating so that load affects both alike): the types with AVX-512
 * kernels at k=n=4096 for m = 1 (GB/s from DRAM) and k=n=2048 for m = 64
 * (GFLOP/s), 1 and 2 threads (LRUN_BENCH_THREADS=1,16: others), each line
 * with the load average; first the kernels alone in cache (ns per 32
 * elements and activation row, 1 and 4 rows per call); LRUN_BENCH_ISA=kernels:
 * that in-cache table only; LRUN_BENCH_ISA=float: the matmuls of the float
 * types (F32, F16, BF16) only, whose levels differ in the multi-row kernel
 * of m > 1 (docs/cpu-kernels.md). */
#include "cpu/cpu_matmul.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

#include <immintrin.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------- memory bandwidth

typedef struct {
    const uint8_t *buf;
    size_t bytes;
    _Atomic long sink;
} read_ctx;

/* Each thread sums its share of the buffer with 256-bit loads. */
static void read_task(void *p, int ith, int nth)
{
    read_ctx *c = p;
    size_t per = c->bytes / (size_t)nth / 128 * 128, off = per * (size_t)ith;
    __m256i acc = _mm256_setzero_si256(), acc2 = _mm256_setzero_si256();
    for (size_t i = off; i < off + per; i += 128) {
        acc = _mm256_add_epi64(acc, _mm256_load_si256((const __m256i *)(c->buf + i)));
        acc2 = _mm256_add_epi64(acc2, _mm256_load_si256((const __m256i *)(c->buf + i + 32)));
        acc = _mm256_add_epi64(acc, _mm256_load_si256((const __m256i *)(c->buf + i + 64)));
        acc2 = _mm256_add_epi64(acc2, _mm256_load_si256((const __m256i *)(c->buf + i + 96)));
    }
    acc = _mm256_add_epi64(acc, acc2);
    atomic_fetch_add(&c->sink, (long)_mm256_extract_epi64(acc, 0));
}

typedef struct {
    uint8_t *dst;
    const uint8_t *src;
    size_t bytes;
} copy_ctx;

static void copy_task(void *p, int ith, int nth)
{
    copy_ctx *c = p;
    size_t per = c->bytes / (size_t)nth, off = per * (size_t)ith;
    memcpy(c->dst + off, c->src + off, per);
}

/* Best of many 32 MiB passes, each over a different slice of 512 MiB (far
 * larger than any cache), so a pass is short enough to dodge other
 * processes and still comes from DRAM. */
static void bandwidth(lrun_threadpool *pool, double secs)
{
    const size_t bytes = (size_t)512 << 20, slice = (size_t)32 << 20;
    uint8_t *a = aligned_alloc(64, bytes), *b = aligned_alloc(64, bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best_r = 1e30, best_c = 1e30;
    size_t off = 0;
    for (double t_end = now_s() + secs; now_s() < t_end; off = (off + slice) % bytes) {
        read_ctx rc = {.buf = a + off, .bytes = slice};
        copy_ctx cc = {.dst = b + off, .src = a + (off + bytes / 2) % bytes, .bytes = slice};
        double t0 = now_s();
        lrun_threadpool_run(pool, read_task, &rc);
        double t1 = now_s();
        lrun_threadpool_run(pool, copy_task, &cc);
        double t2 = now_s();
        best_r = t1 - t0 < best_r ? t1 - t0 : best_r;
        best_c = t2 - t1 < best_c ? t2 - t1 : best_c;
    }
    printf("| memory read (AVX2 loads), %d thr | %.1f GB/s | |\n", lrun_threadpool_size(pool), slice / best_r / 1e9);
    printf("| memcpy (read + write), %d thr | %.1f GB/s | |\n", lrun_threadpool_size(pool), 2.0 * slice / best_c / 1e9);
    free(a);
    free(b);
}

// ---------------------------------------------------------------- matmul

/* The operands of one product, y (m, n) = W (n, k) @ x (m, k), in weight
 * type t: at m = 1 the matrix replicated over pool_bytes (so that cycling
 * the copies streams it from DRAM, as a decode step does), every copy paged
 * in by one product each. */
typedef struct {
    uint8_t *w;       /* (copies, n, row_bytes) */
    size_t row_bytes; /* bytes of one weight row */
    size_t mat_bytes; /* bytes of one copy */
    int copies;
    float *x, *y;     /* (m, k), (m, n) */
    void *work;       /* lrun_cpu_matmul's work area */
} bench_operands;

static void bench_operands_init(bench_operands *o, lrun_threadpool *pool, lrun_dtype t, int64_t k, int64_t n,
                                int64_t m, size_t pool_bytes)
{
    lrun_dtype_row_bytes(t, k, &o->row_bytes);
    o->mat_bytes = o->row_bytes * (size_t)n;
    o->copies = m == 1 ? (int)((pool_bytes + o->mat_bytes - 1) / o->mat_bytes) : 1;
    o->w = aligned_alloc(64, o->mat_bytes * (size_t)o->copies);
    float *row = malloc(sizeof(float) * (size_t)k);
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < k; ++j) row[j] = (float)((i * 31 + j * 17) % 97) / 97.0f - 0.5f;
        lrun_quantize_row(t, row, o->w + (size_t)i * o->row_bytes, k);
    }
    free(row);
    for (int c = 1; c < o->copies; ++c) memcpy(o->w + (size_t)c * o->mat_bytes, o->w, o->mat_bytes);
    o->x = malloc(sizeof(float) * (size_t)(m * k));
    o->y = malloc(sizeof(float) * (size_t)(m * n));
    for (int64_t i = 0; i < m * k; ++i) o->x[i] = (float)(i % 13) / 13.0f - 0.5f;
    o->work = malloc(lrun_cpu_matmul_work_bytes(t, m, k) + 1);
    for (int c = 0; c < o->copies; ++c) /* warm-up: page in every copy */
        lrun_cpu_matmul(pool, t, o->w + (size_t)c * o->mat_bytes, o->row_bytes, n, k, o->x, m, o->y, o->work);
}

static void bench_operands_free(bench_operands *o)
{
    free(o->w);
    free(o->x);
    free(o->y);
    free(o->work);
}

static void bench_matmul(lrun_threadpool *pool, lrun_dtype t, int64_t k, int64_t n, int64_t m, double secs,
                         size_t pool_bytes)
{
    bench_operands o;
    bench_operands_init(&o, pool, t, k, n, m, pool_bytes);
    const size_t mat_bytes = o.mat_bytes;

    /* the best single product: other processes on a shared machine only
     * ever make one slower */
    int c = 0;
    double per = 1e30;
    for (double t_end = now_s() + secs; now_s() < t_end;) {
        double t0 = now_s();
        lrun_cpu_matmul(pool, t, o.w + (size_t)c * mat_bytes, o.row_bytes, n, k, o.x, m, o.y, o.work);
        double t1 = now_s();
        per = t1 - t0 < per ? t1 - t0 : per;
        c = c + 1 == o.copies ? 0 : c + 1;
    }
    if (m == 1)
        printf("| %s k=%lld n=%lld m=1, %d thr | %.1f GB/s | %.1f us |\n", lrun_dtype_name(t), (long long)k,
               (long long)n, lrun_threadpool_size(pool), mat_bytes / per / 1e9, per * 1e6);
    else
        printf("| %s k=%lld n=%lld m=%lld, %d thr | %.1f GFLOP/s | %.1f us |\n", lrun_dtype_name(t), (long long)k,
               (long long)n, (long long)m, lrun_threadpool_size(pool), 2.0 * m * n * k / per / 1e9, per * 1e6);
    bench_operands_free(&o);
}

// ---------------------------------------------------------------- a whole decode step

/* Every 2-D tensor of a GGUF model (the weights of a llama decode step, the
 * tied embedding as the output) through lrun_cpu_matmul with m rows: the best
 * step over the time given. */
static void bench_model(lrun_threadpool *pool, const char *path, int64_t m, double secs)
{
    lrun_gguf *g;
    if (lrun_gguf_open(&g, path) != LRUN_OK) {
        printf("| %s: %s | | |\n", path, lrun_last_error());
        return;
    }
    const int64_t nt = lrun_gguf_tensor_count(g);
    int64_t kmax = 1, nmax = 1;
    size_t work_bytes = 1, weight_bytes = 0;
    for (int64_t t = 0; t < nt; ++t) {
        if (lrun_gguf_tensor_ndim(g, t) != 2) continue;
        int64_t k = lrun_gguf_tensor_dim(g, t, 0), n = lrun_gguf_tensor_dim(g, t, 1);
        size_t wb = lrun_cpu_matmul_work_bytes(lrun_gguf_tensor_dtype(g, t), m, k);
        kmax = k > kmax ? k : kmax;
        nmax = n > nmax ? n : nmax;
        work_bytes = wb > work_bytes ? wb : work_bytes;
        weight_bytes += lrun_gguf_tensor_bytes(g, t);
    }
    float *x = malloc(sizeof(float) * (size_t)(m * kmax)), *y = malloc(sizeof(float) * (size_t)(m * nmax));
    void *work = malloc(work_bytes);
    for (int64_t i = 0; i < m * kmax; ++i) x[i] = (float)(i % 7) * 0.1f - 0.3f;
    double best = 1e30;
    for (double t_end = now_s() + secs; now_s() < t_end || best == 1e30;) {
        double t0 = now_s();
        for (int64_t t = 0; t < nt; ++t) {
            if (lrun_gguf_tensor_ndim(g, t) != 2) continue;
            lrun_dtype dt = lrun_gguf_tensor_dtype(g, t);
            int64_t k = lrun_gguf_tensor_dim(g, t, 0), n = lrun_gguf_tensor_dim(g, t, 1);
            size_t rb;
            lrun_dtype_row_bytes(dt, k, &rb);
            lrun_cpu_matmul(pool, dt, lrun_gguf_tensor_data(g, t), rb, n, k, x, m, y, work);
        }
        double dt = now_s() - t0;
        best = dt < best ? dt : best;
    }
    printf("| all matmuls of one step of %s (%.1f MB), m=%lld, %d thr | %.1f steps/s | %.2f ms |\n",
           strrchr(path, '/') ? strrchr(path, '/') + 1 : path, weight_bytes / 1e6, (long long)m,
           lrun_threadpool_size(pool), 1.0 / best, best * 1e3);
    free(x);
    free(y);
    free(work);
    lrun_gguf_close(g);
}

/* Every quant type on one shape, 1 and 2 threads: the types side by side. */
static int bench_types(double secs, size_t pool_bytes)
{
    static const lrun_dtype types[] = {LRUN_DTYPE_Q4_0,  LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q5_0, LRUN_DTYPE_IQ4_NL,
                                       LRUN_DTYPE_Q2_K,  LRUN_DTYPE_Q3_K, LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q5_K,
                                       LRUN_DTYPE_Q6_K,  LRUN_DTYPE_IQ4_XS};
    for (int nth = 1; nth <= 2; ++nth) {
        lrun_threadpool *pool;
        if (lrun_threadpool_init(&pool, nth) != LRUN_OK) return 1;
        for (int64_t m = 1; m <= 64; m += 63)
            for (size_t i = 0; i < sizeof types / sizeof types[0]; ++i)
                bench_matmul(pool, types[i], 1536, 1536, m, secs, pool_bytes);
        lrun_threadpool_free(pool);
    }
    return 0;
}

// ---------------------------------------------------------------- kernel levels side by side

/* The 1-minute load average, as the figures' context on a shared machine. */
static double loadavg(void)
{
    double l = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1.0;
        fclose(f);
    }
    return l;
}

/* Best time of one product at each level, the levels alternating in rounds. */
static void bench_isa_case(lrun_threadpool *pool, lrun_dtype t, int64_t k, int64_t n, int64_t m, double secs,
                           size_t pool_bytes)
{
    static const lrun_cpu_isa levels[] = {LRUN_CPU_ISA_AVX2, LRUN_CPU_ISA_AVX512};
    bench_operands o;
    bench_operands_init(&o, pool, t, k, n, m, pool_bytes);
    const size_t mat_bytes = o.mat_bytes;
    double best[2] = {1e30, 1e30};
    int c = 0;
    for (int round = 0; round < 4; ++round)
        for (int l = 0; l < 2; ++l) {
            if (lrun_cpu_isa_set(levels[l]) != LRUN_OK) continue;
            for (double t_end = now_s() + secs / 4; now_s() < t_end;) {
                double t0 = now_s();
                lrun_cpu_matmul(pool, t, o.w + (size_t)c * mat_bytes, o.row_bytes, n, k, o.x, m, o.y, o.work);
                double dt = now_s() - t0;
                best[l] = dt < best[l] ? dt : best[l];
                c = c + 1 == o.copies ? 0 : c + 1;
            }
        }
    double fig[2];
    for (int l = 0; l < 2; ++l) fig[l] = m == 1 ? mat_bytes / best[l] / 1e9 : 2.0 * m * n * k / best[l] / 1e9;
    printf("| %s | k=%lld n=%lld m=%lld | %d | %.1f | %.1f | %.2fx | %.2f |\n", lrun_dtype_name(t), (long long)k,
           (long long)n, (long long)m, lrun_threadpool_size(pool), fig[0], best[1] < 1e30 ? fig[1] : 0.0,
           best[1] < 1e30 ? best[0] / best[1] : 0.0, loadavg());
    fflush(stdout);
    bench_operands_free(&o);
}

/* The dot kernels alone, in cache: 16 weight rows of k = 2048 against 1 or
 * 4 activation rows per call, best time of many short runs per level (so
 * that a busy machine only costs attempts): ns per 32 elements and row. */
static void bench_isa_kernels(double secs)
{
    static const lrun_dtype types[] = {LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q5_0,
                                       LRUN_DTYPE_Q5_1, LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_MXFP4, LRUN_DTYPE_Q2_K,
                                       LRUN_DTYPE_Q3_K, LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q5_K, LRUN_DTYPE_Q6_K,
                                       LRUN_DTYPE_IQ4_XS};
    enum { K = 2048, ROWS = 16 };
    static float xf[4 * K], wf[K];
    for (int i = 0; i < 4 * K; ++i) xf[i] = (float)(i % 13) / 13.0f - 0.5f;
    for (int i = 0; i < K; ++i) wf[i] = (float)(i % 7) / 7.0f - 0.4f;
    printf("\n| kernel, in cache | rows per call | avx2 ns | avx512 ns | avx512/avx2 | load |\n"
           "|---|---:|---:|---:|---:|---:|\n");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ++ti) {
        const lrun_dtype t = types[ti], p = lrun_dot_partner(t);
        size_t wb, xb;
        lrun_dtype_row_bytes(t, K, &wb);
        lrun_dtype_row_bytes(p, K, &xb);
        uint8_t *w = malloc(wb * ROWS), *x = malloc(xb * 4);
        for (int r = 0; r < ROWS; ++r) lrun_quantize_row(t, wf, w + (size_t)r * wb, K);
        for (int r = 0; r < 4; ++r) lrun_quantize_activations(p, xf + (size_t)r * K, x + (size_t)r * xb, K);
        lrun_dot_fn fns[8];
        const char *names[8];
        const int nk = lrun_dot_kernels(t, fns, names, 8);
        lrun_dot_fn lv[2] = {NULL, NULL};
        for (int i = 0; i < nk && i < 8; ++i) {
            if (strcmp(names[i], "avx2") == 0) lv[0] = fns[i];
            if (strcmp(names[i], "avx512") == 0) lv[1] = fns[i];
        }
        for (int nx = 1; nx <= 4; nx += 3) {
            double best[2] = {1e30, 1e30};
            for (int round = 0; round < 6; ++round)
                for (int l = 0; l < 2; ++l) {
                    if (!lv[l]) continue;
                    float o[4];
                    for (double t_end = now_s() + secs / 12; now_s() < t_end;) {
                        double t0 = now_s();
                        for (int r = 0; r < ROWS; ++r) lv[l](K, w + (size_t)r * wb, x, xb, nx, o);
                        double dt = now_s() - t0;
                        best[l] = dt < best[l] ? dt : best[l];
                    }
                }
            const double per = ROWS * (K / 32.0) * nx / 1e9;
            printf("| %s·%s | %d | %.3f | %.3f | %.2fx | %.2f |\n", lrun_dtype_name(t), lrun_dtype_name(p), nx,
                   lv[0] ? best[0] / per : 0.0, lv[1] ? best[1] / per : 0.0,
                   lv[0] && lv[1] ? best[0] / best[1] : 0.0, loadavg());
        }
        /* the decode kernel where the type has one (lrun_gemv_kernel, the level in use): all ROWS rows a call */
        const lrun_gemm_fn gv = lrun_gemv_kernel(t);
        if (gv) {
            double best = 1e30;
            float o[ROWS];
            for (double t_end = now_s() + secs / 2; now_s() < t_end;) {
                double t0 = now_s();
                gv(K, w, wb, ROWS, x, xb, 1, o, 1);
                double dt = now_s() - t0;
                best = dt < best ? dt : best;
            }
            printf("| %s·%s, decode kernel (%d weight rows a call, %s) | 1 | | %.3f | | %.2f |\n", lrun_dtype_name(t),
                   lrun_dtype_name(p), ROWS, lrun_cpu_kernels(), best / (ROWS * (K / 32.0) / 1e9), loadavg());
        }
        free(w);
        free(x);
    }
}

static int bench_isa(double secs, size_t pool_bytes)
{
    const int float_only = strcmp(getenv("LRUN_BENCH_ISA"), "float") == 0;
    if (!float_only) bench_isa_kernels(secs);
    if (strcmp(getenv("LRUN_BENCH_ISA"), "kernels") == 0) return 0; /* the in-cache table only */
    /* BF16's one-row kernel is AVX2's at both levels (m = 1: the ratio shows
     * the noise); at m = 64 the levels' multi-row kernels differ (2 × 3 and
     * 4 × 3 rows per pass) */
    static const lrun_dtype all_types[] = {LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q5_0,
                                           LRUN_DTYPE_Q5_1, LRUN_DTYPE_MXFP4, LRUN_DTYPE_Q2_K, LRUN_DTYPE_Q3_K,
                                           LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q5_K, LRUN_DTYPE_Q6_K, LRUN_DTYPE_IQ4_XS,
                                           LRUN_DTYPE_BF16};
    static const lrun_dtype float_types[] = {LRUN_DTYPE_F32, LRUN_DTYPE_F16, LRUN_DTYPE_BF16};
    const lrun_dtype *types = float_only ? float_types : all_types;
    const size_t n_types = float_only ? sizeof float_types / sizeof float_types[0]
                                      : sizeof all_types / sizeof all_types[0];
    printf("\n| type | shape | thr | avx2 | avx512 | avx512/avx2 | load |\n|---|---|---:|---:|---:|---:|---:|\n");
    if (!lrun_cpu_isa_supported(LRUN_CPU_ISA_AVX512)) printf("(this CPU has no AVX-512: the avx512 column is 0)\n");
    /* LRUN_BENCH_THREADS: the thread counts, "1,2" by default ("1,16" on a 16-core host) */
    int counts[8], nc = 0;
    const char *tl = getenv("LRUN_BENCH_THREADS");
    for (const char *c = tl ? tl : "1,2"; *c && nc < 8;) {
        char *end;
        long v = strtol(c, &end, 10);
        if (end == c) break;
        if (v > 0) counts[nc++] = (int)v;
        c = *end == ',' ? end + 1 : end;
    }
    for (int64_t m = 1; m <= 64; m += 63)
        for (int ci = 0; ci < nc; ++ci) {
            const int nth = counts[ci];
            lrun_threadpool *pool;
            if (lrun_threadpool_init(&pool, nth) != LRUN_OK) return 1;
            for (size_t i = 0; i < n_types; ++i)
                bench_isa_case(pool, types[i], m == 1 ? 4096 : 2048, m == 1 ? 4096 : 2048, m, secs, pool_bytes);
            lrun_threadpool_free(pool);
        }
    printf("(m=1: GB/s of weights from DRAM; m=64: GFLOP/s; best product per level, levels alternating)\n");
    return 0;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 0.5;
    const char *mb = getenv("LRUN_BENCH_POOL_MB");
    size_t pool_bytes = (size_t)(mb ? atol(mb) : 256) << 20;
    static const struct { lrun_dtype t; int64_t k, n; } shapes[] = {
        {LRUN_DTYPE_Q4_1, 576, 1536},   /* ffn_gate, ffn_up */
        {LRUN_DTYPE_Q4_1, 1536, 576},   /* ffn_down */
        {LRUN_DTYPE_Q4_1, 576, 576},    /* attn_q, attn_output */
        {LRUN_DTYPE_Q8_0, 576, 49152},  /* token_embd as the tied output */
    };
    printf("| what | throughput | time per product |\n|---|---:|---:|\n");
    if (getenv("LRUN_BENCH_TYPES")) return bench_types(secs, pool_bytes);
    if (getenv("LRUN_BENCH_ISA")) return bench_isa(secs, pool_bytes);
    for (int nth = 1; nth <= 2; ++nth) {
        lrun_threadpool *pool;
        if (lrun_threadpool_init(&pool, nth) != LRUN_OK) return 1;
        bandwidth(pool, secs);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s)
            bench_matmul(pool, shapes[s].t, shapes[s].k, shapes[s].n, 1, secs, pool_bytes);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s)
            if (shapes[s].n < 10000) bench_matmul(pool, shapes[s].t, shapes[s].k, shapes[s].n, 64, secs, pool_bytes);
        bench_matmul(pool, LRUN_DTYPE_Q8_0, 576, 1536, 64, secs, pool_bytes);
        if (getenv("LRUN_MODEL")) bench_model(pool, getenv("LRUN_MODEL"), 1, secs);
        lrun_threadpool_free(pool);
    }
    return 0;
}
