/* quantize_q8.cuh — matmul activations to Q8_0 / Q8_1 with llama.cpp's x86
 * rule (lrun_k_quantize_q8 in kernels.h; docs/numerics.md §3). Launch shape:
 * one warp per block of 32 elements, 8 warps per thread block, grid-stride. */
#ifndef LRUN_KERNELS_QUANTIZE_Q8_CUH
#define LRUN_KERNELS_QUANTIZE_Q8_CUH

#include "exact_math.cuh"

#define LRUN_K_Q8_WARPS 8

#endif
