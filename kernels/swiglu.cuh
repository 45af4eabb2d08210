/* swiglu.cuh — out (n) = silu(gate) * up (lrun_k_swiglu): one element per
 * thread, grid-stride in 64-bit. */
#ifndef LRUN_KERNELS_SWIGLU_CUH
#define LRUN_KERNELS_SWIGLU_CUH

#include "common.cuh"

#define LRUN_K_SWIGLU_THREADS 256

#endif
