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

/* s = 1 / sqrt(mean(x²) + eps) of row xr (n values) on a block of
 * LRUN_K_RMS_THREADS threads: each sums every LRUN_K_RMS_THREADS-th square
 * in f32, the block reduction adds the partial sums, s is taken in double.
 * One definition for rms_norm.cu and rms_norm_quantize_q8.cu, whose y must
 * be the same bits. */
__device__ __forceinline__ float lrun_k_rms_scale(const float *xr, int64_t n, float eps, float *scratch)
{
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += LRUN_K_RMS_THREADS) ss = fmaf(xr[i], xr[i], ss);
    ss = lrun_k_block_reduce<LRUN_K_RMS_THREADS, 0>(ss, scratch);
    return (float)(1.0 / sqrt((double)ss / (double)n + (double)eps));
}

#endif
