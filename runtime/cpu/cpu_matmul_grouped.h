/* cpu_matmul_grouped.h — several independent matrix products in one thread-pool job. */
#ifndef LRUN_CPU_MATMUL_GROUPED_H
#define LRUN_CPU_MATMUL_GROUPED_H

#include "lrun.h"
#include "core/threadpool.h"

/* One product of a group: y (m, n) = x (m, k) · Wᵀ. */
typedef struct {
    const void *w;  /* n rows of k elements, the group's row_bytes apart */
    const float *x; /* (m, k) activations */
    int64_t m;      /* activation rows, ≥ 0 */
    float *y;       /* (m, n) output */
} lrun_cpu_mm_part;

/* Bytes of work memory lrun_cpu_matmul_grouped needs for these parts (the sum of
 * lrun_cpu_matmul_work_bytes over them); SIZE_MAX on overflow. */
size_t lrun_cpu_matmul_grouped_work_bytes(lrun_dtype weight_dtype, int64_t k, const lrun_cpu_mm_part *parts,
                                          int n_parts);

/* Every part's product, all weights of one dtype and shape (n, k): the
 * activations converted once per part, then the (part, row chunk) items shared
 * by all threads of one job. Bit-identical to lrun_cpu_matmul per part. Never
 * allocates. */
void lrun_cpu_matmul_grouped(lrun_threadpool *pool, lrun_dtype weight_dtype, size_t row_bytes, int64_t n, int64_t k,
                             const lrun_cpu_mm_part *parts, int n_parts, void *work);

/* The same products with the activations as they are (f32), for a weight type
 * whose products otherwise convert them to a partner type: MXFP4 (its f32
 * kernel lrun_dot_mxfp4_f32_kernel; an HF gpt-oss's experts, as transformers computes
 * them dequantized). The float types go to lrun_cpu_matmul_grouped (the same
 * bits); any other type does nothing. Needs no work memory. */
void lrun_cpu_matmul_grouped_float_x(lrun_threadpool *pool, lrun_dtype weight_dtype, size_t row_bytes, int64_t n,
                                     int64_t k, const lrun_cpu_mm_part *parts, int n_parts);

#endif
