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
 * Decode GEMVs (m <= GEMV_MAX_ROWS) of Q8_0/Q4_0 weights go through
 * lrun_cuda_q8x_gemv: by default (e->gemv.q8x) x is quantized by
 * lrun_k_quantize_q8 into the engine's q8 scratch (from the pool at init,
 * sized for the widest input) and read by gemv_split_q8x.cu; the GEMVs of
 * one op share their input (Q, K and V; gate and up), and the scratch
 * remembers which input it holds, so each distinct input is quantized once.
 * Both launches are ordinary stream work, captured into the step's CUDA
 * graph like the rest. Weights an offloading engine streams arrive in a slot
 * in GGUF's layout each step: such an engine splits nothing and runs the
 * same kernel on GGUF's blocks (slower loads, the same bits), so a streamed
 * placement still gives the resident run's logits to the bit. Under
 * LRUN_CUDA_GEMV_SPLIT=1 split weights take gemv_split.cu (x quantized
 * inside each launch) and the rest their dtype's kernel, as before;
 * LRUN_CUDA_GEMV_Q8X=0 (or LRUN_CUDA_GEMV_SPLIT=0) keeps GGUF's layout and
 * kernels throughout. A mixture of experts, exact numerics and devices
 * before sm_80 keep them too. */
#ifndef LRUN_ENGINE_CUDA_SPLIT_H
#define LRUN_ENGINE_CUDA_SPLIT_H

#include "cuda/engine_cuda_internal.h"

/* Settles e->gemv for this engine (q8x off for a mixture of experts, exact
 * numerics or a device before sm_80), takes the q8 x scratch from the pool
 * when q8x stays on, and splits the eligible weights when e->gemv.split is
 * set and the engine neither offloads nor routes experts. */
lrun_status lrun_cuda_split_init(lrun_cuda_engine *e);

/* The device bytes of the q8 x scratch this engine takes at init (0 when it
 * takes none): estimates, check_fits and stats count it as scratch. */
size_t lrun_cuda_q8x_scratch_bytes(const lrun_cuda_engine *e);

/* 1 when weight t's decode GEMV takes lrun_cuda_q8x_gemv: it is split, or
 * Q8_0/Q4_0 under e->gemv.q8x. */
int lrun_cuda_q8x_takes(const lrun_cuda_engine *e, const struct lrun_tensor *t);

/* y_p (m, n_p) = x (m, k) · W_pᵀ for parts of t's dtype, width and layout
 * (t the first; mode as lrun_k_gemv_multi, no flags): under e->gemv.q8x x
 * is quantized into the q8 scratch unless it already holds x's m rows of k
 * (lrun_cuda_split_input_reset forgets that), then gemv_split_q8x.cu on
 * split or GGUF rows; otherwise lrun_k_gemv_multi (gemv_split.cu for split
 * rows, the dtype's choice for the rest). */
lrun_status lrun_cuda_q8x_gemv(lrun_cuda_engine *e, const struct lrun_tensor *t, const lrun_k_gemv_part *parts,
                               int n_parts, const float *x, int64_t m, int mode);

/* xn (m, k) = rms_norm(x)·w (e->eps; k t's width) and its q8 blocks into
 * the scratch in one launch (lrun_k_rms_norm_quantize_q8), the scratch then
 * standing for xn, so the GEMVs of t's op that follow read it without
 * quantizing: a decode norm folded into the next product
 * (engine_cuda_forward.c). *done 0, nothing launched, when t's GEMV would
 * not read the scratch (not q8x, or m or k beyond it): the caller norms
 * otherwise. The bits are lrun_k_rms_norm's then lrun_k_quantize_q8's. */
lrun_status lrun_cuda_q8x_norm(lrun_cuda_engine *e, const struct lrun_tensor *t, const float *x, const float *w,
                               float *xn, int64_t m, int *done);

/* The q8 scratch no longer stands for any input: called before every op
 * (an op's outputs may be the next op's input buffer). */
static inline void lrun_cuda_split_input_reset(lrun_cuda_engine *e) { e->q8x.src = NULL; }
/* Joins back what lrun_cuda_split_init split (the stream is synchronized). */
void lrun_cuda_split_free(lrun_cuda_engine *e);

#endif
