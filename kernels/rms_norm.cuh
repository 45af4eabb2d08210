/* rms_norm.cuh — y (n_rows, n) = x / sqrt(mean(x²) + eps) * w (lrun_k_rms_norm).
 * Launch shape: one block of LRUN_K_RMS_THREADS threads per row, grid-stride
 * over rows; each thread sums the squares of a strided slice in f32, a block
 * reduction gives the mean. */
#ifndef LRUN_KERNELS_RMS_NORM_CUH
#define LRUN_KERNELS_RMS_NORM_CUH

#include "common.cuh"

/* 1024: a decode row (4096 wide) is 4 elements a thread, one round of loads;
 * the norm sits between two GEMVs of every layer, so its latency counts */
#define LRUN_K_RMS_THREADS 1024

#endif
