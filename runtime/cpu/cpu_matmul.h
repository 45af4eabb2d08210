/* cpu_matmul.h — multithreaded matrix products on weights of any supported dtype. */
#ifndef LRUN_CPU_MATMUL_H
#define LRUN_CPU_MATMUL_H

#include "lrun.h"
#include "core/threadpool.h"

/* Bytes of work memory lrun_cpu_matmul needs for m activation rows of k elements. */
size_t lrun_cpu_matmul_work_bytes(lrun_dtype weight_dtype, int64_t m, int64_t k);

/* y (m, n) = x (m, k) · Wᵀ, where w holds n rows of k elements of weight_dtype,
 * each row_bytes apart. work holds lrun_cpu_matmul_work_bytes bytes (activations
 * converted to the dot partner type). Never allocates. */
void lrun_cpu_matmul(lrun_threadpool *pool, lrun_dtype weight_dtype, const void *w, size_t row_bytes,
                     int64_t n, int64_t k, const float *x, int64_t m, float *y, void *work);

#endif
