/* attention_exact.cuh — attention in the CPU's exact orders
 * (lrun_k_attention_exact in kernels.h; docs/numerics.md §7). Launch shape:
 * one block of LRUN_K_ATTNX_THREADS threads per (token, query head),
 * grid-stride; the scores of the head live in dynamic shared memory
 * (positions rounded up to 32, plus head_dim floats of q). */
#ifndef LRUN_KERNELS_ATTENTION_EXACT_CUH
#define LRUN_KERNELS_ATTENTION_EXACT_CUH

#include "exact_math.cuh"

#define LRUN_K_ATTNX_THREADS 128

#endif
