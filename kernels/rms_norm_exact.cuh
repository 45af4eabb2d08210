/* rms_norm_exact.cuh — RMSNorm with the CPU's exact order
 * (lrun_k_rms_norm_exact in kernels.h; docs/numerics.md §2). Launch shape:
 * one block per row, grid-stride over rows; the block squares the row into
 * shared memory and one thread adds the squares in order into a double (the
 * order is the recipe: double addition does not reassociate). */
#ifndef LRUN_KERNELS_RMS_NORM_EXACT_CUH
#define LRUN_KERNELS_RMS_NORM_EXACT_CUH

#include "exact_math.cuh"

#define LRUN_K_RMSX_THREADS 256
/* Widest row: its squares, as doubles, in 96 KiB of shared memory (above
 * 48 KiB the launcher opts in, which every sm_80+ device allows). */
#define LRUN_K_RMSX_MAX_N 12288

#endif
