/* swiglu_exact.cuh — SwiGLU with ggml's v_expf (lrun_k_swiglu_exact in
 * kernels.h; docs/numerics.md §8-9). Element-wise, grid-stride. */
#ifndef LRUN_KERNELS_SWIGLU_EXACT_CUH
#define LRUN_KERNELS_SWIGLU_EXACT_CUH

#include "exact_math.cuh"

#endif
