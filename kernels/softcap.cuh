/* softcap.cuh — elementwise scaling (lrun_k_scale: gemma's embedding times
 * sqrt(n_embd)) and soft-capping (lrun_k_softcap: gemma2's logits): one
 * element per thread, grid-stride in 64-bit. */
#ifndef LRUN_KERNELS_SOFTCAP_CUH
#define LRUN_KERNELS_SOFTCAP_CUH

#include "common.cuh"

#define LRUN_K_SOFTCAP_THREADS 256

#endif
