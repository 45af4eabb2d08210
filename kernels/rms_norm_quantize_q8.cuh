/* rms_norm_quantize_q8.cuh — RMSNorm and the Q8_0 quantization of its
 * output in one launch (lrun_k_rms_norm_quantize_q8 in kernels.h). Launch
 * shape: rms_norm.cuh's (one block of LRUN_K_RMS_THREADS threads per row,
 * grid-stride over rows); in the second pass each warp holds 32
 * consecutive outputs, one q8 block, and quantizes it as quantize_q8.cuh's
 * warps do. */
#ifndef LRUN_KERNELS_RMS_NORM_QUANTIZE_Q8_CUH
#define LRUN_KERNELS_RMS_NORM_QUANTIZE_Q8_CUH

#include "exact_math.cuh"
#include "rms_norm.cuh"

static_assert(LRUN_K_RMS_THREADS % 32 == 0, "a warp's 32 outputs are one q8 block");

#endif
