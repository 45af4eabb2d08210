/* gemv.cuh — y (m, n) = x (m, k) · Wᵀ for 1 ≤ m ≤ 8, dequantization fused
 * into the product (lrun_k_gemv and lrun_k_gemv_multi in kernels.h).
 *
 * Launch shape: blocks of NT threads; a block owns RB consecutive weight rows
 * and its NT threads walk those rows' units (dequantize.cuh) side by side,
 * U units per thread per row per step, so a warp's loads of a row are 32
 * consecutive units and a thread has U*RB loads in flight before it needs
 * any. Each thread multiplies its units with the m rows of x (f32, through
 * L1, one x load shared by the RB rows) into RB*m f32 sums; warp shuffles
 * and one pass through shared memory reduce them per block. Decode is bound
 * by HBM bandwidth, so the point is many bytes in flight per SM and many
 * short blocks (a full H100 holds ~2000 threads per SM: the 4096×4096 bf16
 * matrix of a 7B layer is read in about one wave of loads).
 *
 * Several weights with the same dtype, k and x (Q, K and V; gate and up) go
 * in one launch: the grid is the concatenation of their row blocks. The
 * epilogue stores y, adds into y (the residual stream: no separate add
 * kernel) or, for a gate/up pair, stores silu(gate)·up (each block then owns
 * RB/2 rows of both matrices).
 *
 * Rows that are not whole 16-byte units (f16/bf16/f32 with k % 8 != 0, or an
 * unaligned base or stride) take a plain kernel: one warp per row, one
 * element per lane per step, same epilogues. */
#ifndef LRUN_KERNELS_GEMV_CUH
#define LRUN_KERNELS_GEMV_CUH

#include "dequantize.cuh"

#define LRUN_K_GEMV_MAX_M 8
#define LRUN_K_GEMV_PLAIN_THREADS 128

/* Threads per block (NT), rows per block (RB) and units per thread per row
 * per step (U) for weight dtype T and m rows of x: U*RB loads in flight per
 * thread keep HBM busy; RB amortizes each x load over RB rows; RB*M sums and
 * U*RB raw units must fit in registers without spilling. Tuned on the H100
 * with test_kernels_gpu --bench (docs/cuda-kernels.md). */
template <int T, int M> struct lrun_k_gemv_shape {
    static constexpr bool vec16 = T == LRUN_DTYPE_F16 || T == LRUN_DTYPE_BF16; /* 16-byte units */
    /* large raw units; Q2_K and Q3_K decode 16 values a unit like Q6_K. The
     * newer types (Q5_0/Q5_1/IQ4_NL/MXFP4 small like Q4_0, Q5_K shaped like Q4_K)
     * are placed by analogy, not yet tuned on a GPU. */
    static constexpr bool wide = T == LRUN_DTYPE_Q6_K || T == LRUN_DTYPE_F32 || T == LRUN_DTYPE_Q2_K ||
                                 T == LRUN_DTYPE_Q3_K;
    static constexpr bool small = T == LRUN_DTYPE_Q4_0 || T == LRUN_DTYPE_Q4_1 || T == LRUN_DTYPE_Q8_0 ||
                                  T == LRUN_DTYPE_Q5_0 || T == LRUN_DTYPE_Q5_1 || T == LRUN_DTYPE_IQ4_NL ||
                                  T == LRUN_DTYPE_MXFP4;
    /* (Q4_K units carry their block's scales: 226 registers at RB 8) */
    /* small units: the x loads (32 bytes per 8 weights) outweigh the weights'
     * 4.5–8.5 bytes, so rows per block matter more than loads per thread
     * (H100, m = 1: q4_0 RB 8 U 2 0.9–1.4 TB/s, RB 4 U 4 0.7–0.9, RB 1 U 8 0.3) */
    static constexpr int NT = M <= 2 && !small ? 256 : 128;
    static constexpr int RB = M == 1 && small ? 8 : (M <= 2 && !wide ? 4 : 2);
    static constexpr int U = 2;
};

#endif
