/* moe_gemv.cuh — the routed experts of a few tokens, driven by the expert
 * ids on the device (lrun_k_moe_gemv, lrun_k_moe_combine): no host round
 * trip between the router and the experts, so a decode step of a MoE model
 * needs no stream sync and can be captured in a CUDA graph.
 *
 * lrun_k_moe_gemv: one warp per output row of one (token, slot) pair (grid
 * x: row blocks, grid y: pairs); the warp's lanes walk the row's units
 * (dequantize.cuh: the CPU twin's dequantization), f32 FMAs, a warp sum.
 * The expert's matrix is the slice ids[pair] of a stacked tensor (expert_bytes
 * apart). lrun_k_moe_combine: each token's slots weighted and summed in slot
 * order (the CPU's ggml_mul then ggml_add chain) and added to the residual. */
#ifndef LRUN_KERNELS_MOE_GEMV_CUH
#define LRUN_KERNELS_MOE_GEMV_CUH

#include "common.cuh"

/* output rows (warps) per block */
#define LRUN_K_MOE_GEMV_WARPS 4
#define LRUN_K_MOE_COMBINE_THREADS 256

#endif
