/* engine_cuda_packed.h — packed weights (docs/packed.md) in the CUDA engine.
 *
 * Where a packed weight lives decides how it is computed:
 *
 *   streamed (pinned/host/mmap, mode 2)  its packed bytes cross into a device
 *       staging buffer and lrun_k_packed_decode writes the plain weight into
 *       its slot, both on the copy stream, k units ahead (engine_cuda_offload.c);
 *       compute then reads a plain slot, as for any streamed weight;
 *   host compute                          decoded into host memory per product
 *       (engine_cuda_offload.c, lrun_cuda_offload_host_matmul);
 *   DEVICE tier (mode 3)                  the two functions below.
 *
 * Mode 3: the forward (engine_cuda_forward.c) calls lrun_cuda_packed_gemv
 * where a plain model runs lrun_k_gemv_multi (decode, m <= GEMV_MAX_ROWS:
 * Q/K/V stored, gate/up through SwiGLU, one weight added into the
 * residual), and lrun_cuda_packed_matmul where it runs lrun_k_gemv/lrun_k_gemm
 * alone. Batch-1 products of packed weights run the fused decode+GEMV
 * (lrun_k_packed_gemv_multi: decoded on chip, never written to global
 * memory), which keeps lrun_k_gemv_multi's arithmetic, so the logits are
 * bit-identical to the plain model's. Mixed parts, the GeGLU modes, shapes
 * the fused kernel refuses (LRUN_E_UNSUPPORTED) and prefill decode each
 * weight whole into its part of the engine's packed scratch on the compute
 * stream and run the plain kernel on it (the decode is bit-exact too).
 * The fused kernel is on by default (LRUN_PACKED_FUSED=0 turns it off;
 * docs/packed.md, "Mode 3 kernels"). */
#ifndef LRUN_ENGINE_CUDA_PACKED_H
#define LRUN_ENGINE_CUDA_PACKED_H

#include "cuda/engine_cuda_internal.h"

struct lrun_placement;

/* Bytes of the packed scratch: the most plain bytes one op decodes at once
 * (an op's packed matrices, each 256-aligned; the head; the embedding
 * table, unless its rows are gathered: lrun_cuda_packed_embed_gather_on),
 * for the weights compute reads packed on the device (placement p, NULL:
 * the tensors' own; all_device: every weight, as an ALL_DEVICE engine
 * moves them all there). Only e's blocks count (a layer split's part: the
 * head in the last part, the table in the first); e needs its dims set
 * (model, layer range). 0 when there are none. */
/* LRUN_E_UNSUPPORTED naming the first tensor of e's part held packed in a
 * codec the CUDA kernels do not read (they read PEX1 and PEX2; a layout
 * with any other codec was never validated): checked at engine init, so
 * such a model fails at load, never in a kernel. */
lrun_status lrun_cuda_packed_codec_check(const lrun_cuda_engine *e);

size_t lrun_cuda_packed_scratch_bytes(const lrun_cuda_engine *e, const struct lrun_placement *p, int all_device);

/* 1 when a packed embedding table on the device gives only the chunk's rows
 * (lrun_k_packed_embed, decoded by token id straight into x) rather than
 * being decoded whole into the packed scratch: LRUN_PACKED_EMBED_GATHER=1
 * (=0 off), read at each call; off by default until the kernel has run on a
 * GPU (docs/packed.md "The embedding table"). */
int lrun_cuda_packed_embed_gather_on(void);

/* x (n, n_embd) f32 = the rows of the chunk's tokens (d_table.tokens) of the
 * embedding table te, packed on the device: gathered by token id
 * (e->packed_embed_gather, rows of a multiple of 8) or decoded whole into
 * the packed scratch, then lrun_k_embed. Bit-identical either way. */
lrun_status lrun_cuda_packed_embed(lrun_cuda_engine *e, const struct lrun_tensor *te, int64_t n);

/* The GEMV of n_w weights sharing x (m <= GEMV_MAX_ROWS rows), any of them
 * packed on the device: as lrun_k_gemv_multi(dtype, parts, n_w, k, x, m, mode),
 * or with norm_w not NULL as lrun_k_gemv_norm_multi (a decode norm folded
 * in, e->eps; the weights decoded into the scratch first, so the bits are
 * the plain model's in the same placement). */
lrun_status lrun_cuda_packed_gemv(lrun_cuda_engine *e, const lrun_weight_ref *w, float *const *y, int n_w,
                                  const float *x, const float *norm_w, int64_t m, int mode);

/* y (m, n) = x (m, k) · Wᵀ for w packed in device memory at packed: as
 * lrun_k_gemv (m <= GEMV_MAX_ROWS) or lrun_k_gemm on the plain weight. */
lrun_status lrun_cuda_packed_matmul(lrun_cuda_engine *e, const struct lrun_tensor *w, const void *packed,
                                    const float *x, int64_t m, float *y);

/* The plain bytes of w (packed on the device) decoded into the packed
 * scratch at byte offset off, on the compute stream; valid until the next
 * decode there (the embedding table too, when its rows are not gathered). */
lrun_status lrun_cuda_packed_decode_scratch(lrun_cuda_engine *e, const struct lrun_tensor *w, const void *packed,
                                            size_t off, const void **plain);

/* The decode kernel's speed on device (plain bytes per second), for
 * lrun_model_measure_packed_decode (runtime/packed/measure_decode.c). */
lrun_status lrun_cuda_measure_packed_decode(lrun_device *device, const void *packed, const lrun_packed_layout *lay,
                                            double *bytes_per_s);

#endif
