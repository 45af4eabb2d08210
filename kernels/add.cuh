/* add.cuh — residual adds (lrun_k_add) and bias broadcast (lrun_k_add_bias):
 * one element per thread, grid-stride in 64-bit. */
#ifndef LRUN_KERNELS_ADD_CUH
#define LRUN_KERNELS_ADD_CUH

#include "common.cuh"

#define LRUN_K_ADD_THREADS 256

#endif
