/* rope_exact.cuh — RoPE from the host's cos/sin table, then the K and V
 * rows stored in the cache (lrun_k_rope_store_exact in kernels.h;
 * docs/numerics.md §6). Launch shape: one block per token, grid-stride. */
#ifndef LRUN_KERNELS_ROPE_EXACT_CUH
#define LRUN_KERNELS_ROPE_EXACT_CUH

#include "exact_math.cuh"

#define LRUN_K_ROPEX_THREADS 128

#endif
