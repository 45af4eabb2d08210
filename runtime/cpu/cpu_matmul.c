/* cpu_matmul.c — y (m, n) = x (m, k) · Wᵀ on the CPU threads, W in any weight dtype.
 *
 * 1. x is converted to W's dot partner type (Q8_0, Q8_1, Q8_K; float types
 *    use x as it is) into the caller's work buffer, in parallel when large.
 * 2. The n rows of W are handed out in chunks from an atomic counter, so a
 *    thread that starts late or runs on a slower core simply takes fewer.
 *    Each output element is computed by exactly one thread with the same
 *    kernel and the same order of operations, whichever thread that is, so
 *    results do not depend on the number of threads.
 * 3. Within a chunk, m == 1 (decode) streams each weight row once; m > 1
 *    (prefill) passes each weight row over tiles of x, LRUN_DOT_MAX_ROWS
 *    activation rows per kernel call, so a weight block is unpacked once per
 *    four activation rows and stays in L1 while the tile is in L2. Float
 *    weights take a multi-row kernel (lrun_gemm_fn) instead: a few weight
 *    rows against a few activation rows per pass, so each activation vector
 *    read from L2 feeds several FMAs; each output's arithmetic is the dot
 *    kernel's, so the bits are the same. */
#include "cpu/cpu_matmul.h"

#include "core/checked.h"
#include "quant/quant_dot.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* Below this many activation elements the caller converts x alone: cheaper
 * than a second dispatch. */
#define PARALLEL_CONVERT_MIN 16384

// ---------------------------------------------------------------- sizes

int lrun_cpu_matmul_takes_float_x(lrun_dtype t)
{
    return t == LRUN_DTYPE_F32 || t == LRUN_DTYPE_F16 || t == LRUN_DTYPE_BF16;
}

size_t lrun_cpu_matmul_partner_row_bytes(lrun_dtype weight_dtype, int64_t k)
{
    lrun_dtype p = lrun_dot_partner(weight_dtype);
    return (size_t)(k / lrun_dtype_block_elems(p)) * lrun_dtype_block_bytes(p);
}

size_t lrun_cpu_matmul_work_bytes(lrun_dtype weight_dtype, int64_t m, int64_t k)
{
    size_t bytes;
    if (lrun_cpu_matmul_takes_float_x(weight_dtype) || m <= 0 || k <= 0) return 0;
    /* SIZE_MAX on overflow: no allocation of it can succeed */
    return lrun_size_mul((size_t)m, lrun_cpu_matmul_partner_row_bytes(weight_dtype, k), &bytes) ? bytes : SIZE_MAX;
}

// ---------------------------------------------------------------- step 1: convert x

typedef struct {
    lrun_dtype partner;
    const float *x; /* (m, k) */
    int64_t m, k;
    int64_t qk;     /* elements per partner block */
    uint8_t *xq;    /* (m, row_bytes) partner rows */
    size_t row_bytes;
} convert_task;

/* Thread ith converts blocks [u0, u1) of the m·(k/qk) blocks of x, in row order. */
static void convert_run(void *p, int ith, int nth)
{
    const convert_task *t = p;
    int64_t per_row = t->k / t->qk, total = t->m * per_row;
    int64_t u0 = total * ith / nth, u1 = total * (ith + 1) / nth;
    size_t block_bytes = t->row_bytes / (size_t)per_row;
    while (u0 < u1) {
        int64_t row = u0 / per_row, b = u0 % per_row;
        int64_t nb = per_row - b < u1 - u0 ? per_row - b : u1 - u0;
        lrun_quantize_activations(t->partner, t->x + row * t->k + b * t->qk,
                                  t->xq + (size_t)row * t->row_bytes + (size_t)b * block_bytes, nb * t->qk);
        u0 += nb;
    }
}

// ---------------------------------------------------------------- step 2 and 3: rows of W

typedef struct {
    lrun_dot_fn dot;
    lrun_gemm_fn gemm; /* NULL: dot only */
    lrun_gemm_fn gemv; /* m == 1's multi-row kernel (lrun_gemv_kernel), NULL: dot */
    const uint8_t *w;  /* n rows, row_bytes apart */
    size_t row_bytes;
    int64_t n, k, m;
    const uint8_t *xq; /* m partner rows, xq_stride bytes apart */
    size_t xq_stride;
    float *y;          /* (m, n) */
    int64_t chunk;     /* rows of W taken at a time */
    _Alignas(64) _Atomic int64_t next; /* first row of W not yet taken */
} matmul_task;

void lrun_cpu_matmul_rows(lrun_dot_fn dot, lrun_gemm_fn gemm, const void *w, size_t row_bytes, int64_t n, int64_t k,
                          const void *xq, size_t xq_stride, int64_t m, float *y, int64_t i0, int64_t i1)
{
    const uint8_t *wb = w, *xb = xq;
    if (m == 1 && gemm) { /* decode through the type's lrun_gemv_kernel: several rows' chains at once */
        gemm(k, wb + (size_t)i0 * row_bytes, row_bytes, i1 - i0, xb, xq_stride, 1, y + i0, n);
        return;
    }
    if (m == 1) { /* decode: each weight row once against the one activation row */
        for (int64_t i = i0; i < i1; ++i) dot(k, wb + (size_t)i * row_bytes, xb, 0, 1, &y[i]);
        return;
    }
    float out[LRUN_DOT_MAX_ROWS];
    for (int64_t x0 = 0; x0 < m; x0 += LRUN_CPU_X_TILE_ROWS) {
        int64_t x1 = x0 + LRUN_CPU_X_TILE_ROWS < m ? x0 + LRUN_CPU_X_TILE_ROWS : m;
        if (gemm) { /* the chunk's weight rows against the tile, in register tiles */
            gemm(k, wb + (size_t)i0 * row_bytes, row_bytes, i1 - i0, xb + (size_t)x0 * xq_stride, xq_stride, x1 - x0,
                 y + x0 * n + i0, n);
            continue;
        }
        for (int64_t i = i0; i < i1; ++i) {
            const uint8_t *wi = wb + (size_t)i * row_bytes;
            for (int64_t r0 = x0; r0 < x1; r0 += LRUN_DOT_MAX_ROWS) {
                int nx = x1 - r0 < LRUN_DOT_MAX_ROWS ? (int)(x1 - r0) : LRUN_DOT_MAX_ROWS;
                dot(k, wi, xb + (size_t)r0 * xq_stride, xq_stride, nx, out);
                for (int r = 0; r < nx; ++r) y[(r0 + r) * n + i] = out[r];
            }
        }
    }
}

static void matmul_run(void *p, int ith, int nth)
{
    (void)ith;
    (void)nth;
    matmul_task *t = p;
    for (;;) {
        int64_t i0 = atomic_fetch_add_explicit(&t->next, t->chunk, memory_order_relaxed);
        if (i0 >= t->n) break;
        int64_t i1 = i0 + t->chunk < t->n ? i0 + t->chunk : t->n;
        lrun_cpu_matmul_rows(t->dot, t->m == 1 ? t->gemv : t->gemm, t->w, t->row_bytes, t->n, t->k, t->xq,
                             t->xq_stride, t->m, t->y, i0, i1);
    }
}

int64_t lrun_cpu_matmul_chunk_rows(int64_t n, int nth)
{
    if (nth <= 1) return n;
    int64_t c = (n + (int64_t)nth * 8 - 1) / ((int64_t)nth * 8);
    c = (c + 15) / 16 * 16;
    return c < 16 ? 16 : c;
}

// ---------------------------------------------------------------- entry

void lrun_cpu_matmul(lrun_threadpool *pool, lrun_dtype weight_dtype, const void *w, size_t row_bytes, int64_t n,
                     int64_t k, const float *x, int64_t m, float *y, void *work)
{
    lrun_dot_fn dot = lrun_dot_kernel(weight_dtype);
    if (!dot || m <= 0 || n <= 0) return;
    if (k <= 0) { /* empty sums */
        memset(y, 0, sizeof(float) * (size_t)(m * n));
        return;
    }
    int nth = lrun_threadpool_size(pool);
    matmul_task t = {
        .dot = dot,
        .gemm = lrun_gemm_kernel(weight_dtype),
        .gemv = lrun_gemv_kernel(weight_dtype),
        .w = w,
        .row_bytes = row_bytes,
        .n = n,
        .k = k,
        .m = m,
        .y = y,
        .chunk = lrun_cpu_matmul_chunk_rows(n, nth),
    };
    atomic_init(&t.next, 0);
    if (lrun_cpu_matmul_takes_float_x(weight_dtype)) {
        t.xq = (const uint8_t *)x;
        t.xq_stride = (size_t)k * sizeof(float);
    } else {
        convert_task c = {
            .partner = lrun_dot_partner(weight_dtype), .x = x, .m = m, .k = k, .xq = work,
            .row_bytes = lrun_cpu_matmul_partner_row_bytes(weight_dtype, k),
        };
        c.qk = lrun_dtype_block_elems(c.partner);
        if (m * k < PARALLEL_CONVERT_MIN || nth == 1) convert_run(&c, 0, 1);
        else lrun_threadpool_run(pool, convert_run, &c);
        t.xq = work;
        t.xq_stride = c.row_bytes;
    }
    if (nth == 1) matmul_run(&t, 0, 1);
    else lrun_threadpool_run(pool, matmul_run, &t);
}
