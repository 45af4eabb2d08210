/* gemm.cuh — y (m, n) = x (m, k) · Wᵀ for any m through cuBLAS (lrun_k_gemm
 * in kernels.h): W is dequantized into an f16/bf16 slot (dequantize.cu)
 * unless it already is the slot dtype, x is rounded into an f16/bf16 slot
 * (lrun_k_f32_to_slot below), then one cublasGemmEx with f32 accumulation
 * and f32 output.
 *
 * Row-major to cuBLAS's column-major: a row-major (rows, cols) matrix is the
 * column-major (cols, rows) matrix with the same leading dimension, so
 *   Y (m, n) = X (m, k) · Wᵀ   is   Yᶜ (n, m) = Wᶜᵀ · Xᶜ
 * with Wᶜ = W read as (k, n), lda = row stride of W in elements, Xᶜ (k, m)
 * ldb = k, Yᶜ (n, m) ldc = n: cublasGemmEx(OP_T, OP_N, n, m, k, …). */
#ifndef LRUN_KERNELS_GEMM_CUH
#define LRUN_KERNELS_GEMM_CUH

#include "common.cuh"

#define LRUN_K_CONVERT_THREADS 256

#endif
