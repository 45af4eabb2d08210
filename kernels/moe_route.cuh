/* moe_route.cuh — a mixture of experts' routing on the device
 * (lrun_k_moe_route): each token's softmax over its router logits, its top-k
 * experts and their normalised weights, with the CPU's bits
 * (lrun_moe_route in runtime/cpu/moe_cpu.c, llama.cpp's build_moe_ffn):
 *   p  = softmax(logits)   max; e = v_expf(l - max) per group of 8 (ggml's
 *                          AVX2 exp), each group's hsum8 added into a double
 *                          in group order, p = e · (float)(1 / sum);
 *   E  = the k largest p   descending, equal values by the lower index first;
 *   w  = p[E_s] / max(Σ_s p[E_s] in double, 2^-14)   a f32 divide.
 * One warp per token; every float operation written with a rounding
 * intrinsic so nvcc cannot contract it. n_expert must be a multiple of 8
 * (the CPU's tail uses libm's expf, which the device does not reproduce). */
#ifndef LRUN_KERNELS_MOE_ROUTE_CUH
#define LRUN_KERNELS_MOE_ROUTE_CUH

#include "common.cuh"

/* tokens (warps) per block */
#define LRUN_K_MOE_ROUTE_WARPS 4

#endif
