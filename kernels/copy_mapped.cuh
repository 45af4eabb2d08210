/* copy_mapped.cuh — a device buffer filled from pinned host memory by the
 * kernel's own loads (lrun_k_copy_mapped): one element per thread,
 * grid-stride in 64-bit. */
#ifndef LRUN_KERNELS_COPY_MAPPED_CUH
#define LRUN_KERNELS_COPY_MAPPED_CUH

#include "common.cuh"

#define LRUN_K_COPY_MAPPED_THREADS 256

#endif
