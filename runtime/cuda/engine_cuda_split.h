/* engine_cuda_split.h — split-row Q8_0/Q4_0 weights in the CUDA engine
 * (fast numerics on sm_80+ by default; docs/gpu.md "q8_0 / q4_0 decode
 * GEMV study").
 *
 * At init the engine rewrites, in place on the device, the Q8_0/Q4_0
 * matrices it multiplies into the split-row layout of
 * runtime/quant/quant_split.h (lrun_k_split_rows) and marks them
 * (lrun_tensor.split); prefill dequantizes them with
 * lrun_k_dequantize_split into the cuBLAS slot (the same f16 values as the
 * GGUF rows give). At free it rewrites them back, so the model, which
 * outlives the engine, holds GGUF's bytes again. Only weights no other
 * reader sees are split: device-resident, unpacked, 2-D, a block's matrix
 * or an untied LM head (never the embedding table), on an engine with no
 * offloaded weights, no mixture of experts and fast numerics; a weight
 * another engine already split is left to it.
 *
 * Decode GEMVs of split weights (m <= GEMV_MAX_ROWS) go through
 * lrun_cuda_split_gemv: by default (e->gemv.q8x) x is quantized by
 * lrun_k_quantize_q8 into the engine's q8 scratch (from the pool at init,
 * sized for the widest split weight) and read by gemv_split_q8x.cu; the
 * GEMVs of one op share their input (Q, K and V; gate and up), and the
 * scratch remembers which input it holds, so each distinct input is
 * quantized once. Both launches are ordinary stream work, captured into the
 * step's CUDA graph like the rest. Under LRUN_CUDA_GEMV_SPLIT=1 they take
 * gemv_split.cu instead (x quantized inside each launch). Weights an
 * offloading engine streams keep GGUF's layout and kernels: such an engine
 * splits nothing. */
#ifndef LRUN_ENGINE_CUDA_SPLIT_H
#define LRUN_ENGINE_CUDA_SPLIT_H

#include "cuda/engine_cuda_internal.h"

/* Splits the eligible weights when e->gemv.split is set (else nothing), and
 * takes the q8 x scratch from the pool when e->gemv.q8x. Before sm_80 the
 * default (q8x) splits nothing. */
lrun_status lrun_cuda_split_init(lrun_cuda_engine *e);

/* y_p (m, n_p) = x (m, k) · W_pᵀ for split weights of dtype t (parts and
 * mode as lrun_k_gemv_multi, no flags): x quantized into the q8 scratch
 * unless it already holds x's m rows of k (lrun_cuda_split_input_reset
 * forgets that), then gemv_split_q8x.cu; or gemv_split.cu (not q8x). */
lrun_status lrun_cuda_split_gemv(lrun_cuda_engine *e, lrun_dtype t, const lrun_k_gemv_part *parts, int n_parts,
                                 int64_t k, const float *x, int64_t m, int mode);

/* The q8 scratch no longer stands for any input: called before every op
 * (an op's outputs may be the next op's input buffer). */
static inline void lrun_cuda_split_input_reset(lrun_cuda_engine *e) { e->q8x.src = NULL; }
/* Joins back what lrun_cuda_split_init split (the stream is synchronized). */
void lrun_cuda_split_free(lrun_cuda_engine *e);

#endif
