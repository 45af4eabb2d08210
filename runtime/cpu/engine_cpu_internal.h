/* engine_cpu_internal.h — the CPU engine's state, shared by its files:
 *   engine_cpu.c    init, free, sequences, steps and stats;
 *   forward_cpu.c   one chunk through the architecture's op table. */
#ifndef LRUN_ENGINE_CPU_INTERNAL_H
#define LRUN_ENGINE_CPU_INTERNAL_H

#include "cpu/cpu_ops.h"
#include "cpu/moe_route.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "residency/weight_ring.h"

/* Norm weights, biases and RoPE frequency factors are converted to f32 once,
 * at init, into engine memory: a residency move of those tiny tensors later
 * cannot leave the engine pointing at released bytes. */
struct engine_layer {
    /* by lrun_arch_tensor, for the block vectors of lrun_arch_block_vectors:
     * attn_norm (n_embd), bq (q_dim), q_norm (head_dim) …; NULL when absent */
    const float *vec[LRUN_ARCH_TENSOR_BLOCK_COUNT];
};

typedef struct cpu_engine cpu_engine;

struct cpu_engine {
    lrun_model *model;
    lrun_device *device;
    lrun_threadpool *pool;        /* the model's, or own_pool */
    lrun_threadpool *own_pool;    /* when opts asked for another thread count */
    int64_t n_seq_max, n_ctx_max, n_batch_max;
    int64_t n_scores;             /* scratch per thread: n_ctx_max rounded up to 32 (the attention pads), + head_dim */
    int64_t n_embd, q_dim, kv_dim, n_ff, n_vocab;
    int64_t layer_first, layer_end; /* the blocks [first, end) this engine computes: all, or a layer split's
                                     * part (its KV cache holds only these, block l at l - first) */
    lrun_kv_cache kv;
    lrun_rope rope;
    lrun_rope rope_local;         /* the windowed blocks' RoPE where the description has its own base (gemma3) */
    struct engine_layer *layers;  /* (n_layer) */
    const float *output_norm;     /* (n_embd) */

    /* device scratch: one allocation, carved below; B = n_batch_max */
    void *scratch;
    size_t scratch_bytes;
    float *x;        /* (B, n_embd) residual stream */
    float *xn;       /* (B, n_embd) normed input of a sublayer */
    float *q;        /* (B, q_dim) */
    float *k, *v;    /* (B, kv_dim) */
    float *attn;     /* (B, q_dim) attention output */
    float *tmp;      /* (B, n_embd) sublayer output before the residual add */
    float *gate;     /* (B, n_ff) */
    float *up;       /* (B, n_ff) */
    float *cs;       /* (B, n_rot) cos/sin pairs per token */
    float *cs_local; /* (B, n_rot) the same at rope_local (gemma3's windowed blocks) */
    float *scores;   /* (n_threads, n_scores) attention scratch */
    float *vectors;  /* norms and biases in f32, pointed to by layers */
    void *mm_work;   /* lrun_cpu_matmul work for B rows */
    void *pk_work;   /* lrun_cpu_matmul_packed's decode tiles (lrun_weight_ring_packed_work), or NULL */
    void *mv_work;   /* lrun_cpu_matvec_multi work for the fused decode products */
    /* a mixture of experts (moe_cpu.c), carved only when the model has experts; k = n_expert_used */
    float *router;     /* (B, n_expert) router logits, then probabilities */
    float *moe_x;      /* (B, n_embd) the rows of xn routed to one expert, gathered */
    float *moe_y;      /* (B, n_embd) that expert's outputs */
    float *moe_slot;   /* (B, k, n_embd) each token's weighted expert outputs, by slot */
    float *moe_w;      /* (B, k) each token's expert weights */
    int32_t *moe_ids;  /* (B, k) each token's experts, by descending probability */
    int32_t *moe_pairs; /* (B·k) token·k + slot, grouped by expert */
    int64_t *moe_first; /* (n_expert + 1) where each expert's pairs start in moe_pairs */
    int64_t *moe_fill;  /* (n_expert) fill cursors while grouping */
    lrun_moe_counts moe_counts; /* selections per block and expert, for m:stats().experts */
    lrun_engine_stats stats;
    lrun_weight_ring *wr;         /* AS_PLACED: slots and fill thread for off-device weights; else NULL */
    int prefetch_layers;          /* k of wr; 0 without it */
    uint64_t kv_moved_base, kv_copied_base; /* the cache's counters at the last stats reset */

    /* host bookkeeping, sized at init */
    int64_t *tok_seq;          /* (B) sequence of each token of the chunk */
    int64_t *tok_pos;          /* (B) position of each token */
    int64_t *tok_npos;         /* (B) positions each token attends to: pos + 1 */
    const void **tok_k;        /* (B) the token's sequence cache, keys of the current layer */
    const void **tok_v;        /* (B) values (transposed) */
    const void *const **tok_blocks; /* (B) the token's block table, when the cache is paged */
    int64_t *tok_vstride;      /* (B) the cap of the token's sequence: elements between value dims */
    int64_t *out_rows;         /* (B) chunk rows whose logits are wanted */
    int64_t *seq_done;         /* (n_seq_max) of those, already placed */
};

/* Runs n tokens (tok_seq/tok_pos filled) through the engine's blocks; writes
 * the logits of the n_want rows listed in out_rows to logits (forward_cpu.c).
 * A layer split's part starts from hidden_in (n, n_embd) instead of the
 * tokens' embeddings when its first block is not 0, and ends by writing the
 * residual stream to hidden_out (n, n_embd) instead of logits when its last
 * block is not the model's. Fails only when a weight's staging fill does (a
 * disk-tier read); the caller then restarts the weight ring
 * (lrun_weight_ring_restart). */
lrun_status lrun_cpu_forward_chunk(cpu_engine *e, const int32_t *tokens, const float *hidden_in, int64_t n,
                                   int64_t n_want, float *logits, float *hidden_out);

struct lrun_weights;
struct lrun_weight_ref;
/* y (m, n) = x (m, k) · Wᵀ, W read where the weight source says: a packed
 * weight read in place is decoded a tile at a time as it is multiplied
 * (lrun_cpu_matmul_packed), the same bits as its plain product (forward_cpu.c). */
void lrun_cpu_weight_matmul(cpu_engine *e, const struct lrun_weight_ref *w, const float *x, int64_t m, float *y);

/* MOE_ROUTE: router = xn · w[0]ᵀ for the n tokens of the chunk (moe_cpu.c). */
void lrun_cpu_moe_route(cpu_engine *e, const struct lrun_weights *W, int64_t layer, int64_t n,
                        const lrun_arch_op *op);
/* MOE_FFN_ADD without the add: tmp (n, n_embd) = the routed experts' weighted
 * sum for each token, from the router's logits (moe_cpu.c). A block whose
 * experts are in the disk tier reads the chosen ones first (expert_store.h):
 * LRUN_E_IO when that read fails. */
lrun_status lrun_cpu_moe_ffn(cpu_engine *e, const struct lrun_weights *W, int64_t layer, int64_t n,
                             const lrun_arch_op *op);

#endif
