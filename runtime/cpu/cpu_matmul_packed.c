/* cpu_matmul_packed.c — the product of a packed weight, decoded a tile of
 * rows at a time into the thread's own cache-sized buffer (see the header).
 *
 * The weight rows are handed out from an atomic counter in chunks, as
 * lrun_cpu_matmul does; within a chunk, a thread decodes a tile of rows
 * (LRUN_CPU_PACKED_TILE_BYTES of plain bytes at most) with the codec's range
 * decode, then runs lrun_cpu_matmul_rows over the tile. An output row's bits
 * depend only on its weight row and x (the kernels' contract), so tiling
 * changes nothing: the result is lrun_cpu_matmul's on the decoded weight. */
#include "cpu/cpu_matmul_packed.h"

#include "core/checked.h"
#include "cpu/cpu_matmul.h"
#include "quant/quant_dot.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#define TILE_ALIGN 64

/* Rows of a tile: as many whole rows as the tile bytes hold, at least one. */
static int64_t tile_rows(int64_t k)
{
    const int64_t rows = LRUN_CPU_PACKED_TILE_BYTES / (k * 2);
    return rows > 0 ? rows : 1;
}

/* The bytes between two threads' tiles: LRUN_CPU_PACKED_TILE_BYTES, or one
 * row where a row is longer, 64-byte aligned; SIZE_MAX on overflow. It
 * never falls as k grows, so work sized for the longest row of several
 * weights holds every one's tiles (a shorter row's tile of whole rows may
 * fill more of LRUN_CPU_PACKED_TILE_BYTES than a longer one's). */
static size_t tile_bytes(int64_t k)
{
    const size_t row = (size_t)k * 2;
    if ((uint64_t)k > SIZE_MAX / 2 - TILE_ALIGN) return SIZE_MAX;
    const size_t b = row > LRUN_CPU_PACKED_TILE_BYTES ? row : LRUN_CPU_PACKED_TILE_BYTES;
    return (b + TILE_ALIGN - 1) / TILE_ALIGN * TILE_ALIGN;
}

size_t lrun_cpu_matmul_packed_work_bytes(int64_t k, int n_threads)
{
    if (k <= 0) return 0;
    const size_t one = tile_bytes(k);
    size_t all;
    if (one == SIZE_MAX || !lrun_size_mul(one, (size_t)(n_threads > 0 ? n_threads : 1), &all)) return SIZE_MAX;
    return all;
}

typedef struct {
    lrun_dot_fn dot;
    lrun_gemm_fn gemm; /* the m > 1 multi-row kernel, NULL: dot */
    lrun_gemm_fn gemv; /* m == 1's, NULL: dot */
    const void *src;
    const lrun_packed_layout *pk;
    int64_t row0, n, k, m; /* rows [row0, row0 + n) of the packed tensor */
    const float *x;      /* (m, k) */
    float *y;            /* (m, n) */
    uint8_t *work;       /* a tile per ith */
    size_t tile;         /* bytes apart */
    int64_t chunk, rows; /* rows taken at a time; rows decoded at a time */
    int in_registers;    /* m = 1 of a PEX2 weight at the avx512 level: lrun_pex2_gemv_avx512, no tile */
    _Alignas(64) _Atomic int64_t next;
} packed_task;

static void packed_run(void *p, int ith, int nth)
{
    (void)nth;
    packed_task *t = p;
    uint16_t *tile = (uint16_t *)(t->work + (size_t)ith * t->tile);
    const size_t row_bytes = (size_t)t->k * 2;
    for (;;) {
        const int64_t c0 = atomic_fetch_add_explicit(&t->next, t->chunk, memory_order_relaxed);
        if (c0 >= t->n) break;
        const int64_t c1 = c0 + t->chunk < t->n ? c0 + t->chunk : t->n;
#if defined(LRUN_HAVE_AVX512)
        if (t->in_registers) {
            lrun_pex2_gemv_avx512(t->src, &t->pk->pex2, t->k, t->row0 + c0, c1 - c0, t->x, t->y + c0);
            continue;
        }
#endif
        for (int64_t i0 = c0; i0 < c1; i0 += t->rows) {
            const int64_t i1 = i0 + t->rows < c1 ? i0 + t->rows : c1;
            lrun_packed_decode_range(tile, t->src, t->pk, (uint64_t)(t->row0 + i0) * (uint64_t)t->k,
                                     (uint64_t)(i1 - i0) * (uint64_t)t->k);
            /* the tile's rows are rows i0.. of y: y + i0 keeps n as its row stride */
            lrun_cpu_matmul_rows(t->dot, t->m == 1 ? t->gemv : t->gemm, tile, row_bytes, t->n, t->k, t->x,
                                 (size_t)t->k * sizeof(float), t->m, t->y + i0, 0, i1 - i0);
        }
    }
}

void lrun_cpu_matmul_packed(lrun_threadpool *pool, const void *src, const lrun_packed_layout *pk, int64_t n,
                            int64_t k, const float *x, int64_t m, float *y, void *work)
{
    lrun_cpu_matmul_packed_rows(pool, src, pk, 0, n, k, x, m, y, work);
}

void lrun_cpu_matmul_packed_rows(lrun_threadpool *pool, const void *src, const lrun_packed_layout *pk, int64_t row0,
                                 int64_t n, int64_t k, const float *x, int64_t m, float *y, void *work)
{
    const lrun_dtype dtype = (lrun_dtype)pk->dtype;
    const lrun_dot_fn dot = lrun_dot_kernel(dtype);
    if (!dot || m <= 0 || n <= 0) return;
    if (k <= 0) {
        memset(y, 0, sizeof(float) * (size_t)(m * n));
        return;
    }
    const int nth = lrun_threadpool_size(pool);
    packed_task t = {
        .dot = dot,
        .gemm = lrun_gemm_kernel(dtype),
        .gemv = lrun_gemv_kernel(dtype),
        .src = src,
        .pk = pk,
        .row0 = row0,
        .n = n,
        .k = k,
        .m = m,
        .x = x,
        .y = y,
        .work = work,
        .tile = tile_bytes(k),
        .chunk = lrun_cpu_matmul_chunk_rows(n, nth),
        .rows = tile_rows(k),
    };
#if defined(LRUN_HAVE_AVX512)
    t.in_registers = m == 1 && pk->codec == LRUN_PACKED_CODEC_PEX2 && lrun_pex2_gemv_fits(k) &&
                     lrun_cpu_isa_get() == LRUN_CPU_ISA_AVX512 && lrun_pex2_avx512_supported();
#endif
    atomic_init(&t.next, 0);
    if (nth <= 1) packed_run(&t, 0, 1);
    else lrun_threadpool_run(pool, packed_run, &t);
}
