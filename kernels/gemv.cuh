/* gemv.cuh — y (m, n) = x (m, k) · Wᵀ for 1 ≤ m ≤ 8, dequantization fused
 * into the product (lrun_k_gemv in kernels.h).
 *
 * Launch shape: blocks of LRUN_K_GEMV_THREADS threads; each warp owns R
 * consecutive rows of W and walks their units (dequantize.cuh) with its 32
 * lanes side by side, U units per lane per step. Every lane first issues the
 * loads of its U x R units (for f16/bf16: 16-byte, no-L1-allocate loads), then
 * dequantizes them in registers and multiplies with the m rows of x (f32,
 * read through L1, shared by the R rows), accumulating in f32; a warp
 * shuffle reduction ends each row. Decode is bound by HBM bandwidth, so the
 * point is many bytes in flight per SM: R*U*(unit bytes) per lane.
 *
 * Rows that are not whole 16-byte units (f16/bf16/f32 with k % 8 != 0, or an
 * unaligned base or stride) take a plain kernel: one warp per row, one
 * element per lane per step. */
#ifndef LRUN_KERNELS_GEMV_CUH
#define LRUN_KERNELS_GEMV_CUH

#include "dequantize.cuh"

#define LRUN_K_GEMV_THREADS 128
#define LRUN_K_GEMV_MAX_M 8

/* Rows per warp (R) and units per lane per step (U) for weight dtype T and m
 * rows of x: R amortizes each x load over R rows; U*R independent loads
 * per lane keep HBM busy; R*M accumulators and U*R raw units must fit in
 * registers without spilling. */
template <int T, int M> struct lrun_k_gemv_shape {
    static constexpr bool wide = T == LRUN_DTYPE_Q6_K || T == LRUN_DTYPE_F32; /* large raw units */
    static constexpr int R = M <= 2 ? (wide ? 2 : 4) : 2;
    static constexpr int U = (M <= 2 && !wide) || T == LRUN_DTYPE_F16 || T == LRUN_DTYPE_BF16 ? 4 : 2;
};

#endif
