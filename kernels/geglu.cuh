/* geglu.cuh — out (n) = gelu_tanh(gate) * up (lrun_k_geglu, gemma2/3's
 * feed-forward): one element per thread, grid-stride in 64-bit. */
#ifndef LRUN_KERNELS_GEGLU_CUH
#define LRUN_KERNELS_GEGLU_CUH

#include "common.cuh"

#define LRUN_K_GEGLU_THREADS 256

#endif
