/* cpu_matmul_grouped.c — y_i (m_i, n) = x_i (m_i, k) · W_iᵀ for several parts i
 * of one weight dtype and shape, in one thread-pool job (llama.cpp's
 * mul_mat_id does a block's experts the same way).
 *
 * 1. Each part's x is converted to W's dot partner type into its own slice of
 *    the work buffer (float types use x as it is): by the caller alone when
 *    small, else in one job over all parts' blocks.
 * 2. The work is (part, chunk of W rows) items taken from one atomic counter,
 *    so every thread works on every part and none waits at a join between
 *    parts.
 * 3. A chunk is computed exactly as lrun_cpu_matmul computes it (cpu_matmul.c):
 *    m == 1 streams each weight row once, m > 1 tiles x by LRUN_CPU_X_TILE_ROWS and the
 *    kernel by LRUN_DOT_MAX_ROWS (float weights: the multi-row kernel). Each output element has one thread, one kernel
 *    call and one order of operations, so the result is bit-identical to
 *    lrun_cpu_matmul per part, whatever the thread count. */
#include "cpu/cpu_matmul_grouped.h"

#include "core/checked.h"
#include "cpu/cpu_matmul.h"
#include "quant/quant_dot.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* Below this many activation elements over all parts the caller converts x
 * alone: a decode block's 8 experts (8 · 2048) convert in microseconds, less
 * than a second dispatch costs. */
#define PARALLEL_CONVERT_MIN 65536
/* Most parts one call takes: a block's chosen experts, twice (gate and up) for
 * a model of up to 64 chosen experts. */
#define MAX_PARTS 128

// ---------------------------------------------------------------- sizes

size_t lrun_cpu_matmul_grouped_work_bytes(lrun_dtype weight_dtype, int64_t k, const lrun_cpu_mm_part *parts,
                                          int n_parts)
{
    if (lrun_cpu_matmul_takes_float_x(weight_dtype) || k <= 0) return 0;
    size_t total = 0, bytes;
    for (int i = 0; i < n_parts; i++) {
        if (parts[i].m <= 0) continue;
        if (!lrun_size_mul((size_t)parts[i].m, lrun_cpu_matmul_partner_row_bytes(weight_dtype, k), &bytes) ||
            !lrun_size_add(total, bytes, &total))
            return SIZE_MAX; /* no allocation of it can succeed */
    }
    return total;
}

// ---------------------------------------------------------------- step 1: convert x

typedef struct {
    lrun_dtype partner;
    const lrun_cpu_mm_part *parts;
    int n_parts;
    int64_t k, qk;               /* elements per row, per partner block */
    size_t row_bytes;            /* one partner row */
    uint8_t *const *xq;          /* (n_parts) each part's partner rows */
    int64_t total;               /* blocks over all parts */
} convert_task;

/* Thread ith converts blocks [u0, u1) of all parts' blocks, part after part, in row order. */
static void convert_run(void *p, int ith, int nth)
{
    const convert_task *t = p;
    const int64_t per_row = t->k / t->qk;
    const size_t block_bytes = t->row_bytes / (size_t)per_row;
    int64_t u0 = t->total * ith / nth, u1 = t->total * (ith + 1) / nth, base = 0;
    for (int i = 0; i < t->n_parts && u0 < u1; i++) {
        const int64_t m = t->parts[i].m > 0 ? t->parts[i].m : 0, end = base + m * per_row;
        while (u0 < u1 && u0 < end) {
            const int64_t u = u0 - base, row = u / per_row, b = u % per_row;
            const int64_t left = (end < u1 ? end : u1) - u0;
            const int64_t nb = per_row - b < left ? per_row - b : left;
            lrun_quantize_activations(t->partner, t->parts[i].x + row * t->k + b * t->qk,
                                      t->xq[i] + (size_t)row * t->row_bytes + (size_t)b * block_bytes, nb * t->qk);
            u0 += nb;
        }
        base = end;
    }
}

// ---------------------------------------------------------------- step 2 and 3: (part, rows of W)

typedef struct {
    lrun_dot_fn dot;
    lrun_gemm_fn gemm;          /* NULL: dot only */
    lrun_gemm_fn gemv;          /* a one-row part's multi-row kernel (lrun_gemv_kernel), NULL: dot */
    size_t row_bytes;
    int64_t n, k;
    const lrun_cpu_mm_part *parts;
    const uint8_t *const *xq;   /* (n_parts) each part's partner rows (or x), xq_stride bytes apart */
    size_t xq_stride;
    int64_t chunk;              /* rows of W per item */
    int64_t per_part;           /* items per part: ceil(n / chunk) */
    int64_t items;              /* n_parts · per_part */
    _Alignas(64) _Atomic int64_t next; /* first item not yet taken */
} grouped_task;

static void grouped_run(void *p, int ith, int nth)
{
    (void)ith;
    (void)nth;
    grouped_task *t = p;
    for (;;) {
        const int64_t item = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
        if (item >= t->items) break;
        const int part = (int)(item / t->per_part);
        const lrun_cpu_mm_part *pp = &t->parts[part];
        if (pp->m <= 0) continue;
        const int64_t i0 = item % t->per_part * t->chunk, i1 = i0 + t->chunk < t->n ? i0 + t->chunk : t->n;
        lrun_cpu_matmul_rows(t->dot, pp->m == 1 ? t->gemv : t->gemm, pp->w, t->row_bytes, t->n, t->k, t->xq[part],
                             t->xq_stride, pp->m, pp->y, i0, i1);
    }
}

/* Rows of W per item: about 8 items per thread over all parts so late threads
 * balance, a multiple of 16 so that items of y (m == 1) never share a cache line. */
static int64_t chunk_rows(int64_t n, int n_parts, int nth)
{
    if (nth <= 1) return n;
    const int64_t want = (int64_t)nth * 8;
    int64_t c = ((int64_t)n * n_parts + want - 1) / want;
    c = (c + 15) / 16 * 16;
    if (c < 16) c = 16;
    return c < n ? c : n;
}

/* Every (part, row chunk) item of the products, shared by the pool's threads. */
static void run_items(lrun_threadpool *pool, lrun_dot_fn dot, lrun_gemm_fn gemm, lrun_gemm_fn gemv, size_t row_bytes,
                      int64_t n, int64_t k, const lrun_cpu_mm_part *parts, int n_parts, const uint8_t *const *xq,
                      size_t stride)
{
    const int nth = lrun_threadpool_size(pool);
    grouped_task t = {.dot = dot, .gemm = gemm, .gemv = gemv, .row_bytes = row_bytes, .n = n, .k = k, .parts = parts,
                      .xq = xq, .xq_stride = stride, .chunk = chunk_rows(n, n_parts, nth)};
    t.per_part = (n + t.chunk - 1) / t.chunk;
    t.items = t.per_part * n_parts;
    atomic_init(&t.next, 0);
    if (nth == 1) grouped_run(&t, 0, 1);
    else lrun_threadpool_run(pool, grouped_run, &t);
}

// ---------------------------------------------------------------- entry

void lrun_cpu_matmul_grouped(lrun_threadpool *pool, lrun_dtype weight_dtype, size_t row_bytes, int64_t n, int64_t k,
                             const lrun_cpu_mm_part *parts, int n_parts, void *work)
{
    lrun_dot_fn dot = lrun_dot_kernel(weight_dtype);
    if (!dot || n <= 0 || n_parts <= 0) return;
    if (n_parts > MAX_PARTS) { /* more than one call's table: split, same bits */
        lrun_cpu_matmul_grouped(pool, weight_dtype, row_bytes, n, k, parts, MAX_PARTS, work);
        const size_t used = lrun_cpu_matmul_grouped_work_bytes(weight_dtype, k, parts, MAX_PARTS);
        lrun_cpu_matmul_grouped(pool, weight_dtype, row_bytes, n, k, parts + MAX_PARTS, n_parts - MAX_PARTS,
                                (uint8_t *)work + used);
        return;
    }
    if (k <= 0) { /* empty sums */
        for (int i = 0; i < n_parts; i++)
            if (parts[i].m > 0) memset(parts[i].y, 0, sizeof(float) * (size_t)(parts[i].m * n));
        return;
    }
    const int nth = lrun_threadpool_size(pool);
    uint8_t *xq[MAX_PARTS];
    size_t stride;
    if (lrun_cpu_matmul_takes_float_x(weight_dtype)) {
        for (int i = 0; i < n_parts; i++) xq[i] = (uint8_t *)(uintptr_t)parts[i].x; /* read only */
        stride = (size_t)k * sizeof(float);
    } else {
        convert_task c = {.partner = lrun_dot_partner(weight_dtype), .parts = parts, .n_parts = n_parts, .k = k,
                          .row_bytes = lrun_cpu_matmul_partner_row_bytes(weight_dtype, k), .xq = xq};
        c.qk = lrun_dtype_block_elems(c.partner);
        uint8_t *at = work;
        int64_t elems = 0;
        for (int i = 0; i < n_parts; i++) {
            const int64_t m = parts[i].m > 0 ? parts[i].m : 0;
            xq[i] = at;
            at += (size_t)m * c.row_bytes;
            elems += m * k;
        }
        c.total = elems / c.qk;
        if (elems < PARALLEL_CONVERT_MIN || nth == 1) convert_run(&c, 0, 1);
        else lrun_threadpool_run(pool, convert_run, &c);
        stride = c.row_bytes;
    }
    run_items(pool, dot, lrun_gemm_kernel(weight_dtype), lrun_gemv_kernel(weight_dtype), row_bytes, n, k, parts,
              n_parts, (const uint8_t *const *)xq, stride);
}

void lrun_cpu_matmul_grouped_float_x(lrun_threadpool *pool, lrun_dtype weight_dtype, size_t row_bytes, int64_t n,
                                     int64_t k, const lrun_cpu_mm_part *parts, int n_parts)
{
    if (lrun_cpu_matmul_takes_float_x(weight_dtype)) {
        lrun_cpu_matmul_grouped(pool, weight_dtype, row_bytes, n, k, parts, n_parts, NULL);
        return;
    }
    lrun_dot_fn dot = weight_dtype == LRUN_DTYPE_MXFP4 ? lrun_dot_mxfp4_f32_kernel() : NULL;
    if (!dot || n <= 0 || n_parts <= 0) return;
    if (n_parts > MAX_PARTS) {
        lrun_cpu_matmul_grouped_float_x(pool, weight_dtype, row_bytes, n, k, parts, MAX_PARTS);
        lrun_cpu_matmul_grouped_float_x(pool, weight_dtype, row_bytes, n, k, parts + MAX_PARTS, n_parts - MAX_PARTS);
        return;
    }
    const uint8_t *x[MAX_PARTS];
    for (int i = 0; i < n_parts; i++) x[i] = (const uint8_t *)parts[i].x;
    run_items(pool, dot, NULL, NULL, row_bytes, n, k, parts, n_parts, x, (size_t)k * sizeof(float));
}
