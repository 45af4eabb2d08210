/* rms_norm.cuh — y (n_rows, n) = x / sqrt(mean(x²) + eps) * w (lrun_k_rms_norm).
 * Launch shape: one block of LRUN_K_RMS_THREADS threads per row, grid-stride
 * over rows; each thread sums the squares of a strided slice in f32, a block
 * reduction gives the mean. */
#ifndef LRUN_KERNELS_RMS_NORM_CUH
#define LRUN_KERNELS_RMS_NORM_CUH

#include "common.cuh"

#define LRUN_K_RMS_THREADS 256

#endif
