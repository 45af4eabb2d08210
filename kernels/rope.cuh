/* rope.cuh — rotary position embedding in place (lrun_k_rope): one thread per
 * rotated pair (token, head, i), grid-stride in 64-bit. */
#ifndef LRUN_KERNELS_ROPE_CUH
#define LRUN_KERNELS_ROPE_CUH

#include "common.cuh"

#define LRUN_K_ROPE_THREADS 256

#endif
