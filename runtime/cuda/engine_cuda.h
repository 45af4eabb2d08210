/* engine_cuda.h — the forward pass of a llama model on a CUDA device.
 *
 * engine.c forwards every lrun_engine_* call here when the model's device is
 * cuda; the contract is the one lrun.h states for lrun_engine_*. What the
 * CUDA engine holds on the device:
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
 * off, for measurement. */
#ifndef LRUN_ENGINE_CUDA_H
#define LRUN_ENGINE_CUDA_H

#include "lrun.h"

#define LRUN_CUDA_GRAPH_MAX_TOKENS 8

typedef struct lrun_cuda_engine lrun_cuda_engine;

lrun_status lrun_cuda_engine_init(lrun_cuda_engine **out, lrun_model *model, const lrun_engine_opts *opts);
/* lrun_engine_estimate's cuda half: fills every field of out but prefetch_layers. */
lrun_status lrun_cuda_engine_estimate(lrun_model *model, const lrun_engine_opts *opts, lrun_engine_needs *out);
/* lrun_engine_size_placement's cuda half: scratch, KV cache, slots and rows
 * for placement p, by init's own layout (the caller adds weights and pool slack). */
struct lrun_placement;
lrun_status lrun_cuda_engine_size_placement(lrun_model *model, const lrun_engine_opts *opts,
                                            const struct lrun_placement *p, lrun_placement_size *out);
void lrun_cuda_engine_free(lrun_cuda_engine *engine);
int64_t lrun_cuda_engine_n_seq_max(const lrun_cuda_engine *engine);
int64_t lrun_cuda_engine_n_ctx_max(const lrun_cuda_engine *engine);
int64_t lrun_cuda_engine_seq_len(const lrun_cuda_engine *engine, int64_t seq);
lrun_status lrun_cuda_engine_seq_truncate(lrun_cuda_engine *engine, int64_t seq, int64_t len);
lrun_status lrun_cuda_engine_seq_copy(lrun_cuda_engine *engine, int64_t dst, int64_t src);
lrun_status lrun_cuda_engine_seq_reorder(lrun_cuda_engine *engine, const int64_t *src_of_dst, int64_t n);
lrun_status lrun_cuda_engine_seq_fill_random(lrun_cuda_engine *engine, int64_t seq, int64_t n_pos, uint64_t seed);
lrun_status lrun_cuda_engine_step(lrun_cuda_engine *engine, int64_t n_tokens, const int32_t *tokens,
                                  const int32_t *seq, const int8_t *want_logits, float *logits,
                                  int64_t logits_rows_cap, int64_t *n_out);

/* What an engine did, for tests and benchmarks. */
typedef struct lrun_cuda_engine_stats {
    int64_t steps;            /* forward chunks run */
    int64_t graph_captures;   /* decode shapes captured into a graph */
    int64_t graph_launches;   /* chunks run by replaying a graph */
    int graphs_enabled;       /* 0 when off (DYNAMIC cache, LRUN_CUDA_GRAPHS=0, or a capture failed) */
    int pdl_enabled;          /* kernels start while their predecessor drains (sm_90+, unless LRUN_CUDA_PDL=0) */
    lrun_dtype kv_dtype;      /* F16 or F32 */
    size_t kv_bytes;          /* device bytes of the KV cache now (an offloaded store is not) */
    uint64_t kv_bytes_moved;  /* staged caches: bytes between the store and the slots */
    uint64_t kv_bytes_copied; /* bytes copied by seq_copy */
    size_t scratch_bytes;     /* device bytes of the step scratch */
    size_t weight_bytes;      /* bytes of the model's tensors on the device */
    /* AS_PLACED streaming and host compute (engine_cuda_offload.h); 0 otherwise */
    uint64_t bytes_streamed;  /* weight bytes copied into slots (and embedding rows) */
    double copy_seconds;      /* device time of the slot copies */
    double stall_seconds;     /* device time compute waited for a copy */
    int64_t prefetch_hits;    /* streamed units already in their slot when compute reached them */
    int64_t prefetch_misses;  /* streamed units compute waited for */
    uint64_t host_compute_bytes; /* weight bytes read by matmuls on the host */
    size_t slot_bytes;        /* device bytes of the streaming slots */
    int prefetch_layers;      /* k: units issued ahead of the one computing */
    int exact;                /* 1: the exact path, bit-identical to the CPU engine (Q4_0/Q4_1/Q8_0 models) */
} lrun_cuda_engine_stats;

void lrun_cuda_engine_get_stats(const lrun_cuda_engine *engine, lrun_cuda_engine_stats *out);
void lrun_cuda_engine_reset_stats(lrun_cuda_engine *engine);

/* The CUDA engine behind an lrun_engine, or NULL for a CPU one (in engine.c). */
lrun_cuda_engine *lrun_engine_cuda(lrun_engine *engine);

#endif
