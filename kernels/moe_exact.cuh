/* moe_exact.cuh — a mixture of experts' two exact ops beyond the dense exact
 * path's (lrun_k_moe_router_exact, lrun_k_moe_combine_exact in kernels.h;
 * docs/moe.md "Exact numerics on CUDA"):
 *
 *   router  y = x · Wᵀ for float weights (F32, F16, BF16), each output the
 *           CPU's dot_float_nx (AVX2): 16 accumulators, element i into
 *           accumulator i mod 16 by fma over the row in order, then
 *           hsum8(acc[0..7] + acc[8..15]). Here half a warp owns an output,
 *           lane j accumulator j, and the tree runs as shuffles down by 8,
 *           4, 2, 1 (the hsum8 order: lanes j + j+8, then j + j+4, then the
 *           movehl and movehdup adds). k a multiple of 16 (the CPU's tail
 *           adds serially; the launcher refuses it).
 *   combine x[i] += ((Y[pos_0]·w_0 + Y[pos_1]·w_1) + …) in slot order, each
 *           product and sum rounded alone: the CPU's scatter_group, sum_slots
 *           and residual add.
 *
 * Every float operation is written with a rounding intrinsic so nvcc cannot
 * contract it into an FMA the CPU does not make. */
#ifndef LRUN_KERNELS_MOE_EXACT_CUH
#define LRUN_KERNELS_MOE_EXACT_CUH

#include "common.cuh"

/* router outputs (half warps) per thread block */
#define LRUN_K_MOE_ROUTER_ROWS 8

#endif
