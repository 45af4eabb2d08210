/* cpu_matmul_packed.h — y = x · Wᵀ on the CPU threads for a packed weight
 * (docs/packed.md), decoded tile by tile into each thread's cache just
 * before its product: the plain weight is never written to memory. */
#ifndef LRUN_CPU_MATMUL_PACKED_H
#define LRUN_CPU_MATMUL_PACKED_H

#include "lrun.h"
#include "core/threadpool.h"
#include "packed/codec.h"

/* Plain bytes of one thread's decode tile at most: well inside a core's L2
 * (1-2 MiB on current x86), beside the activations it is multiplied with. */
#define LRUN_CPU_PACKED_TILE_BYTES (128 * 1024)

/* Bytes of work lrun_cpu_matmul_packed needs for a weight of rows of k
 * elements (bf16 or f16: 2 bytes each) over n_threads threads (one tile
 * each, 64-byte aligned); SIZE_MAX on overflow. */
size_t lrun_cpu_matmul_packed_work_bytes(int64_t k, int n_threads);

/* y (m, n) = x (m, k) · Wᵀ, W the n rows of k elements (bf16 or f16) that
 * the packed tensor src (layout pk, validated) decodes to. Each thread takes
 * rows as lrun_cpu_matmul hands them out, decodes them a tile at a time into
 * its part of work (lrun_cpu_matmul_packed_work_bytes(k, the pool's
 * size) bytes, 64-byte aligned) and multiplies them there with
 * lrun_cpu_matmul_rows: every output has the bits of lrun_cpu_matmul on the
 * decoded weight. Where DRAM bounds the plain product (batch 1, a weight
 * larger than the caches) this reads the packed bytes only, about 0.7 of
 * the plain; the decode costs compute (docs/packed.md "Host compute"). */
void lrun_cpu_matmul_packed(lrun_threadpool *pool, const void *src, const lrun_packed_layout *pk, int64_t n,
                            int64_t k, const float *x, int64_t m, float *y, void *work);

/* The same over rows [row0, row0 + n) of the packed tensor (one expert's
 * slice of a stacked one): y (m, n) holds those rows' outputs. */
void lrun_cpu_matmul_packed_rows(lrun_threadpool *pool, const void *src, const lrun_packed_layout *pk, int64_t row0,
                                 int64_t n, int64_t k, const float *x, int64_t m, float *y, void *work);

#endif
