/* cpu_matmul.h — multithreaded matrix products on weights of any supported dtype. */
#ifndef LRUN_CPU_MATMUL_H
#define LRUN_CPU_MATMUL_H

#include "lrun.h"
#include "core/threadpool.h"
#include "quant/quant_dot.h"

/* Activation rows per x tile for m > 1 (lrun_cpu_matmul and lrun_cpu_matmul_grouped:
 * the tile decides which rows share a kernel call, so both tile alike for the same
 * bits). 64 rows of a Q8 row of k <= 4096 stay well inside a 512 KiB L2. */
#define LRUN_CPU_X_TILE_ROWS 64

/* Whether weights of t multiply x as it is (f32, f16, bf16), not x converted to a
 * dot partner type. */
int lrun_cpu_matmul_takes_float_x(lrun_dtype t);
/* Bytes of one activation row of k elements in the dot partner type of weight_dtype. */
size_t lrun_cpu_matmul_partner_row_bytes(lrun_dtype weight_dtype, int64_t k);

/* Rows [i0, i1) of y (m, n) = xq (m partner rows, xq_stride bytes apart) · Wᵀ
 * through dot (lrun_dot_kernel's kernel of the weight dtype) and gemm
 * (lrun_gemm_kernel's, NULL where the type has none; for m == 1 the
 * caller passes lrun_gemv_kernel's instead): m == 1 streams each weight row
 * once, through gemm (several rows at a time) when given, else dot; m > 1 tiles x by LRUN_CPU_X_TILE_ROWS and
 * passes each tile to gemm with all the rows, or else to dot
 * LRUN_DOT_MAX_ROWS rows at a time. Both give each output the same bits.
 * One thread's share of lrun_cpu_matmul and of lrun_cpu_matmul_grouped:
 * the same call gives both the same bits. */
void lrun_cpu_matmul_rows(lrun_dot_fn dot, lrun_gemm_fn gemm, const void *w, size_t row_bytes, int64_t n, int64_t k,
                          const void *xq, size_t xq_stride, int64_t m, float *y, int64_t i0, int64_t i1);

/* Rows of W a thread takes at a time from lrun_cpu_matmul's counter (of n,
 * over nth threads): about 8 chunks per thread so late threads balance, a
 * multiple of 16 so that chunks of y (m == 1) never share a cache line. */
int64_t lrun_cpu_matmul_chunk_rows(int64_t n, int nth);

/* Bytes of work memory lrun_cpu_matmul needs for m activation rows of k elements. */
size_t lrun_cpu_matmul_work_bytes(lrun_dtype weight_dtype, int64_t m, int64_t k);

/* y (m, n) = x (m, k) · Wᵀ, where w holds n rows of k elements of weight_dtype,
 * each row_bytes apart. work holds lrun_cpu_matmul_work_bytes bytes (activations
 * converted to the dot partner type). Never allocates. */
void lrun_cpu_matmul(lrun_threadpool *pool, lrun_dtype weight_dtype, const void *w, size_t row_bytes,
                     int64_t n, int64_t k, const float *x, int64_t m, float *y, void *work);

#endif
