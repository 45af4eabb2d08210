/* engine_cuda.h — the CUDA backend: the forward pass of a llama model on a
 * CUDA device, behind the backend table (backend.h: lrun_cuda_backend).
 *
 * The facade (engine.c) checks the options and a step's arguments, then
 * calls through the table; the contract is the one lrun.h states for
 * lrun_engine_*. Compiled only when CUDA=1. What the CUDA engine holds on
 * the device:
 *
 *   weights     every tensor of the model, moved to the DEVICE tier at init
 *               (lrun_tensor_move; LRUN_E_OOM names what did not fit); with
 *               LRUN_WEIGHT_MODE_AS_PLACED only those a policy put there, the
 *               rest streamed through slots or computed on the host
 *               (engine_cuda_offload.h);
 *   KV cache    planes (n_layer, 2, n_seq, cap, n_head_kv*head_dim) in f16
 *               (default) or f32, in one of five kinds (engine_cuda_kv.c):
 *               STATIC takes cap = n_ctx_max at init, DYNAMIC doubles cap for
 *               all sequences together when one needs it; OFFLOADED(_STATIC)
 *               keep the planes in pinned host memory and two layers on the
 *               device; QUANTIZED keeps int8/int4 codes and a ring of recent
 *               positions exact on the device, dequantized into two slots;
 *   scratch     one pool block carved into the step's activations, taken once;
 *   staging     pinned host memory for the per-step token table and the logits.
 *
 * With a STATIC cache, a decode step (at most LRUN_CUDA_GRAPH_MAX_TOKENS
 * tokens, logits for all of them) is captured into a CUDA graph the second
 * time its shape is seen and replayed afterwards: the kernels read positions,
 * cache offsets and lengths from device memory, so one graph serves every
 * position. LRUN_CUDA_GRAPHS=0 in the environment (read at init) turns graphs
 * off, for measurement. lrun_engine_stats reports graphs, PDL and the exact
 * path (graphs_enabled, graph_captures, graph_launches, pdl_enabled, exact). */
#ifndef LRUN_ENGINE_CUDA_H
#define LRUN_ENGINE_CUDA_H

#include "backend.h"

#define LRUN_CUDA_GRAPH_MAX_TOKENS 8
/* The engine's pinned staging, sized here so that lrun_engine_host_staging_bytes
 * (engine.c, built without CUDA too) and init take it from one place. */
#define LRUN_CUDA_DEFAULT_BATCH 512     /* n_batch_max = 0 */
#define LRUN_CUDA_LOGIT_ROWS 64         /* LM-head rows per pass: the logits buffers hold this many */
#define LRUN_CUDA_TABLE_TOKEN_BYTES 28  /* the step table per token: row_off, kv_base (int64), tokens, pos, n_kv (int32) */

/* Fewest tokens per run of one sequence, on average over a chunk, for which
 * the engine takes the tensor-core prefill attention (lrun_k_attention_flash):
 * LRUN_CUDA_FATTN_MIN_TOKENS, or LRUN_CUDA_FATTN_MIN=N; LRUN_CUDA_FATTN=1
 * gives 1 (every chunk), LRUN_CUDA_FATTN=0 gives 0 (never). Read when an
 * engine is made, and by the planner's prefill measurement (measure_attention.c). */
int64_t lrun_cuda_fattn_min_tokens(void);

/* Pinned bytes of the step table (n_batch tokens) and the logits' host copy
 * (LRUN_CUDA_LOGIT_ROWS, n_vocab) f32: what init takes as "engine staging". */
static inline size_t lrun_cuda_engine_staging_bytes(int64_t n_batch, int64_t n_vocab)
{
    return (size_t)n_batch * LRUN_CUDA_TABLE_TOKEN_BYTES + (size_t)LRUN_CUDA_LOGIT_ROWS * (size_t)n_vocab * sizeof(float);
}

typedef struct lrun_cuda_engine lrun_cuda_engine;

/* The table's entries (backend.h), ctx a lrun_cuda_engine: init, free,
 * estimate and sequences in engine_cuda.c; steps, the random fill and stats
 * in engine_cuda_step.c. */
lrun_status lrun_cuda_engine_estimate(lrun_engine_needs *out, lrun_model *model, const lrun_engine_opts *opts);
lrun_status lrun_cuda_engine_init(void **out, lrun_model *model, const lrun_engine_opts *opts);
struct lrun_placement;
lrun_status lrun_cuda_engine_size_placement(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                            const struct lrun_placement *p);
void lrun_cuda_engine_free(void *ctx);
int64_t lrun_cuda_engine_n_seq_max(const void *ctx);
int64_t lrun_cuda_engine_n_ctx_max(const void *ctx);
int64_t lrun_cuda_engine_n_vocab(const void *ctx);
int64_t lrun_cuda_engine_seq_len(const void *ctx, int64_t seq);
lrun_status lrun_cuda_engine_seq_truncate(void *ctx, int64_t seq, int64_t len);
lrun_status lrun_cuda_engine_seq_copy(void *ctx, int64_t dst, int64_t src);
lrun_status lrun_cuda_engine_seq_reorder(void *ctx, const int64_t *src_of_dst, int64_t n);
lrun_status lrun_cuda_engine_seq_fill_random(void *ctx, int64_t seq, int64_t n_pos, uint64_t seed);
lrun_status lrun_cuda_engine_step(void *ctx, const lrun_step_args *args);
void lrun_cuda_engine_get_stats(const void *ctx, lrun_engine_stats *out);
void lrun_cuda_engine_reset_stats(void *ctx);
const struct lrun_moe_counts *lrun_cuda_engine_moe_counts(const void *ctx);
const struct lrun_expert_cache *lrun_cuda_engine_expert_cache(const void *ctx);
/* Adds each block's host-computed bytes to out[0..n_layer). */
void lrun_cuda_engine_host_layer_bytes(const void *ctx, uint64_t *out);

#endif
