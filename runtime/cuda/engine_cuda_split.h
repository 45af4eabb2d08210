/* engine_cuda_split.h — split-row Q8_0/Q4_0 weights in the CUDA engine
 * (LRUN_CUDA_GEMV_SPLIT=1, fast numerics; off by default until timed on a
 * GPU: docs/gpu.md "q8_0 / q4_0 decode GEMV study").
 *
 * At init the engine rewrites, in place on the device, the Q8_0/Q4_0
 * matrices it multiplies into the split-row layout of
 * runtime/quant/quant_split.h (lrun_k_split_rows) and marks them
 * (lrun_tensor.split); decode GEMVs of marked weights take gemv_split.cu
 * (LRUN_K_GEMV_SPLIT), prefill dequantizes them with
 * lrun_k_dequantize_split into the cuBLAS slot (the same f16 values as the
 * GGUF rows give). At free it rewrites them back, so the model, which
 * outlives the engine, holds GGUF's bytes again. Only weights no other
 * reader sees are split: device-resident, unpacked, 2-D, a block's matrix
 * or an untied LM head (never the embedding table), on an engine with no
 * offloaded weights, no mixture of experts and fast numerics; a weight
 * another engine already split is left to it. */
#ifndef LRUN_ENGINE_CUDA_SPLIT_H
#define LRUN_ENGINE_CUDA_SPLIT_H

#include "cuda/engine_cuda_internal.h"

/* Splits the eligible weights when e->gemv.split is set (else nothing). */
lrun_status lrun_cuda_split_init(lrun_cuda_engine *e);
/* Joins back what lrun_cuda_split_init split (the stream is synchronized). */
void lrun_cuda_split_free(lrun_cuda_engine *e);

#endif
