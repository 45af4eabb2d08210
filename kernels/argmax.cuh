/* argmax.cuh — index of the largest logit per row (lrun_k_argmax): one block
 * of LRUN_K_ARGMAX_THREADS threads per row, grid-stride over rows; each
 * thread scans a strided slice, then a (value, index) reduction in which the
 * lower index wins ties. */
#ifndef LRUN_KERNELS_ARGMAX_CUH
#define LRUN_KERNELS_ARGMAX_CUH

#include "common.cuh"

#define LRUN_K_ARGMAX_THREADS 1024

#endif
