/* engine_cuda_internal.h — the state of the CUDA engine, shared by its files:
 *   engine_cuda.c          init, free and sequences;
 *   engine_cuda_kv.c       the KV cache of every kind: store, slots, growth;
 *   engine_cuda_forward.c  one chunk: the architecture's op table, each op's kernels (fast or exact);
 *   engine_cuda_step.c     steps: the token table, CUDA graphs, logits;
 *   engine_cuda_offload.c  AS_PLACED weights off the device: streaming, host compute;
 *   engine_cuda_packed.c   packed weights on the device: decode, then the plain product.
 * Only built with CUDA. */
#ifndef LRUN_ENGINE_CUDA_INTERNAL_H
#define LRUN_ENGINE_CUDA_INTERNAL_H

#include <cuda_runtime_api.h>

#include "core/device.h"
#include "cuda/engine_cuda.h"
#include "cuda/gemv_choice.h"
#include "core/error.h"
#include "kernels.h"
#include "model/model.h"
#include "core/tensor.h"
#include "residency/weights.h"

#define DEFAULT_BATCH LRUN_CUDA_DEFAULT_BATCH
/* Fewest tokens per run of one sequence, on average over a chunk, for which
 * the engine takes the tensor-core prefill attention: below it a block's 64
 * query rows are mostly masked and the old kernel's (token, head) blocks
 * fill the GPU better. A first guess until test_attention_flash_gpu --bench
 * measures the crossover on the H100 (docs/cuda-kernels.md). */
#define LRUN_CUDA_FATTN_MIN_TOKENS 64
/* lrun_k_gemv takes at most this many activation rows (kernels.h). */
#define GEMV_MAX_ROWS 8
/* LM-head rows per pass: bounds the device logits buffer to this many rows. */
#define LOGIT_ROWS LRUN_CUDA_LOGIT_ROWS
/* A DYNAMIC cache starts with this many positions per sequence, then doubles. */
#define KV_MIN_CAP 256

/* Device pointers of one block's f32 vectors (NULL when the file has none). */
struct cuda_layer {
    /* by lrun_arch_tensor, for the block vectors of lrun_arch_block_vectors:
     * attn_norm (n_embd), bq (q_dim), q_norm (head_dim) …; NULL when absent */
    const float *vec[LRUN_ARCH_TENSOR_BLOCK_COUNT];
};

/* The table of one chunk: the same layout in pinned host memory and on the
 * device, so one copy moves it. B = n_batch_max entries per array. */
struct step_table {
    int64_t *row_off;  /* (B) element offset of the token's K/V row in a layer's plane */
    int64_t *kv_base;  /* (B) element offset of its sequence's position 0 in that plane */
    int32_t *tokens;   /* (B) token ids */
    int32_t *pos;      /* (B) positions */
    int32_t *n_kv;     /* (B) positions the token attends to: pos + 1 */
};

/* The KV cache (engine_cuda_kv.c). Every form has per (layer, keys|values) a
 * plane of (n_seq_max, cap) positions: sequence s's position p at position
 * index s·cap + p (s the physical sequence, phys), so the step table's
 * offsets serve every kind. */
struct cuda_kv {
    int on_host;          /* OFFLOADED(_STATIC): the store is pinned host memory */
    int quantized;        /* QUANTIZED: the store is records of codes (q), plus the ring */
    int staged;           /* either: attention reads two device slots, a layer each */
    int preallocated;     /* STATIC, OFFLOADED_STATIC: cap = n_ctx_max from init on */
    int64_t cap;          /* positions per sequence */
    void **layers;        /* (n_layer) the store, a block per layer: (2, n_seq_max, cap) rows of kv_dim
                           * elements (device, or pinned host when on_host), or quantized records */
    void *ring;           /* QUANTIZED: (n_layer, 2, n_seq_max, q.ring_rows) exact rows, position p at row
                           * p % ring_rows: the last `residual` positions and a decode chunk's new ones */
    void *slots;          /* staged: 2 x (2, n_seq_max, cap) rows on the device */
    size_t layer_bytes, ring_bytes, slot_bytes;
    lrun_k_kv_quant q;    /* QUANTIZED: bits, group, residual, ring rows, record bytes */
    int fused;            /* QUANTIZED: decode chunks read codes in lrun_k_attention_quant (unless
                           * LRUN_CUDA_QUANT_FUSED=0 or the shape needs the slot path) */
    int fused_chunk;      /* this chunk does: no slot fills, rows stored before attention */
    int64_t *phys;        /* (n_seq_max) the physical sequence (plane row) of each sequence: beam
                           * reordering remaps these rather than moving positions */
    int64_t *q_lo;        /* (n_seq_max, by physical sequence) QUANTIZED: positions below are read from codes */
    int64_t *stored;      /* staged (n_seq_max, by physical sequence): positions in the store when the chunk began */
    int64_t *chunk_end;   /* staged (n_seq_max, by physical sequence): positions stored once the chunk is */
    int32_t *h_fill, *d_fill; /* QUANTIZED: (3, n_seq_max) stored, q_lo and chunk_end, pinned / device */
    int64_t fill_len;     /* the chunk's longest stored sequence */
    int fill_dense;       /* offloaded: one copy of fill_len rows for every sequence */
    uint64_t fill_bytes;  /* bytes one layer's fill moves */
    cudaStream_t side;    /* staged: slot fills */
    cudaEvent_t begin, ready[2], done[2]; /* chunk start; slot filled; slot's layer finished */
    struct lrun_ring *stage_ring; /* staged: the order of slot fills and uses (residency/ring.h, QUEUED) */
    uint64_t bytes_moved; /* between the store and the slots, both ways */
    uint64_t bytes_copied;/* by seq_copy */
};

struct lrun_cuda_engine {
    lrun_model *model;
    lrun_device *device;
    void *stream;                 /* cudaStream_t: the device's compute stream */
    void *cublas;                 /* bound to stream */
    int64_t n_seq_max, n_ctx_max, n_batch_max;
    int64_t n_layer, n_embd, q_dim, kv_dim, n_ff, n_vocab; /* n_layer: the model's blocks */
    int64_t layer_first, layer_end; /* the blocks [first, end) this engine computes and holds the KV cache
                                     * of: all of them, or a layer split's part (engine_split.c) */
    float eps;                    /* rms_norm epsilon */
    float attn_scale;             /* 1/sqrt(head_dim) */
    lrun_k_yarn yarn;             /* YaRN's RoPE parameters (gpt-oss); mscale 0: none */
    lrun_cache_kind cache_kind;
    lrun_dtype kv_dtype;          /* F16 or F32 */
    size_t kv_esize;              /* bytes per cache element */

    struct cuda_kv kv;            /* the KV cache (engine_cuda_kv.c) */
    uint64_t kv_moved_base, kv_copied_base; /* kv.bytes_moved, bytes_copied at the last stats reset */
    int64_t *seq_len;             /* (n_seq_max) positions stored */

    /* device scratch: one block, carved below; B = n_batch_max */
    void *scratch;
    size_t scratch_bytes;
    float *x, *xn, *tmp;          /* (B, n_embd) residual, normed input, sublayer output */
    float *q, *attn;              /* (B, q_dim) */
    float *k, *v;                 /* (B, kv_dim) */
    float *gate, *up;             /* (B, n_ff) */
    float *logits;                /* (LOGIT_ROWS, n_vocab) */
    float *vectors;               /* norms, biases and RoPE factors in f32, pointed to below */
    void *attn_work;              /* lrun_k_attention_work_bytes for (B, n_ctx_max) */
    void *w_slot;                 /* a weight dequantized for cuBLAS, or NULL when no gemm needs one */
    void *x_slot;                 /* (B, max k) activations converted for cuBLAS, or NULL */
    void *packed_scratch;         /* (packed_scratch_bytes) a DEVICE-tier packed weight decoded for the
                                   * product that reads it (engine_cuda_packed.c), or NULL when none */
    size_t packed_scratch_bytes;
    int packed_embed_gather;      /* 1: a packed table on the device gives only the chunk's rows, decoded
                                   * by token id into x (lrun_cuda_packed_embed; LRUN_PACKED_EMBED_GATHER) */
    void *d_table_base;
    struct step_table d_table;
    struct cuda_layer *layers;    /* (n_layer), host array of device pointers */
    const float *output_norm;     /* (n_embd), device */
    const float *freq_factors;    /* (n_rot/2), device, or NULL */

    /* pinned host staging */
    void *h_table_base;
    struct step_table h_table;
    size_t table_bytes;
    float *h_logits;              /* (LOGIT_ROWS, n_vocab) */

    /* host bookkeeping */
    int64_t *out_rows;            /* (B) chunk rows whose logits are wanted */
    int64_t *seq_done;            /* (n_seq_max) tokens of each sequence placed so far in this step */

    /* kernels launched as programmatic dependents (lrun_k_set_pdl), set
     * for this thread at each enqueue */
    int pdl_enabled;

    /* prefill attention on tensor cores (lrun_k_attention_flash) for chunks
     * whose runs of one sequence average fattn_min tokens or more; 0: never
     * (lrun_cuda_fattn_min_tokens: LRUN_CUDA_FATTN, LRUN_CUDA_FATTN_MIN) */
    int64_t fattn_min;
    int64_t chunk_runs; /* runs of consecutive tokens of one sequence in the chunk being run */

    /* CUDA graphs of decode steps, by token count */
    int graphs_enabled;
    int want_exact;               /* numerics EXACT was asked for (or LRUN_CUDA_EXACT=1 for benchmarks) */
    lrun_cuda_gemv_choice gemv;   /* the decode GEMV kernel per dtype (gemv_choice.h) */
    struct lrun_tensor **split_t; /* (n_split) the weights this engine split (engine_cuda_split.h) */
    int64_t n_split;
    struct {              /* Q8_0/Q4_0 decode: x quantized once per input (gemv.q8x) */
        void *base;       /* device block from the pool: xq, then xd; NULL when unused */
        size_t bytes;     /* of base */
        int8_t *xq;       /* (GEMV_MAX_ROWS, max_k) int8 */
        float *xd;        /* (GEMV_MAX_ROWS, max_k/32) their scales */
        int64_t max_k;    /* the widest decode GEMV input (n_embd, q_dim, n_ff) */
        const float *src; /* the input xq holds now (m rows of k), or NULL: valid within one op */
        int64_t m, k;
    } q8x;
    int graph_seen[LRUN_CUDA_GRAPH_MAX_TOKENS + 1];          /* eager runs of that shape so far */
    cudaGraphExec_t graph_exec[LRUN_CUDA_GRAPH_MAX_TOKENS + 1];
    lrun_engine_stats stats;      /* what get_stats adds to: counters, weight and slot bytes */
    uint64_t *host_layer_bytes;   /* (n_layer) stats.host_compute_bytes of each block's products */
    struct cuda_offload *offload; /* AS_PLACED weights off the device, or NULL (engine_cuda_offload.h) */
    struct cuda_exact *exact;     /* the exact path's state when the model takes it (engine_cuda_exact.c), or NULL */
    struct cuda_moe *moe;         /* a mixture of experts' routing state (engine_cuda_moe.c), or NULL when dense */
    struct lrun_cuda_op_profile *prof; /* LRUN_CUDA_PROFILE=1: op-by-op event brackets (op_profile.h), else NULL */
    int64_t expert_cache_slots;   /* opts: host experts cached in this many device slots; -1 auto; 0 off */
    int expert_cache_lru;         /* opts: 1 LRU replacement, 0 LFU (the default) */
    int expert_cache_hybrid;      /* opts: misses computed on the host, admitted in the background (expert_admit.h) */
    lrun_moe_prefill_stream moe_prefill_stream; /* opts: prefill chunks stream host experts (engine_cuda_moe_stream.c) */
    int64_t moe_prefill_stream_tokens;           /* opts: AUTO's tokens per expert from which it streams; 0 = 16 */
    const int64_t *moe_prefill_stream_block_tokens; /* opts: (n_layer) per block, or NULL; valid during init only */
    int64_t host_stream_rows; /* opts: chunks of this many rows stream host-computed matrices; 0 default */
    struct cuda_host_stream *host_stream; /* their staging (engine_cuda_host_stream.c), or NULL */
};

/* Counts bytes of weights multiplied on the host for block layer (stats.host_compute_bytes, and the
 * block's share when layer is one: the head's are no block's). */
static inline void lrun_cuda_count_host_bytes(lrun_cuda_engine *e, int64_t layer, uint64_t bytes)
{
    e->stats.host_compute_bytes += bytes;
    if (layer >= 0 && layer < e->model->info.n_layer) e->host_layer_bytes[layer] += bytes;
}

#define TRY(call)                                   \
    do {                                            \
        lrun_status try_st_ = (call);               \
        if (try_st_ != LRUN_OK) return try_st_;     \
    } while (0)

static inline lrun_status cuda_check(cudaError_t err, const char *what, const lrun_device *d)
{
    if (err == cudaSuccess) return LRUN_OK;
    (void)cudaGetLastError();
    return lrun_fail(err == cudaErrorMemoryAllocation ? LRUN_E_OOM : LRUN_E_DEVICE, "engine on %s: %s: %s (%s)",
                     d->name, what, cudaGetErrorString(err), cudaGetErrorName(err));
}

/* Makes the engine's device the thread's current one: every entry point that makes CUDA calls
 * starts with it, so engines on different devices (a layer split's parts) can be driven from
 * one thread in turn. */
static inline lrun_status lrun_cuda_engine_current(const lrun_cuda_engine *e)
{
    return cuda_check(cudaSetDevice(e->device->cuda_ordinal), "cudaSetDevice", e->device);
}

/* Programmatic dependent launch for this engine's kernels: the exact path
 * launches ordinarily; PDL is kept off while weights stream or the KV cache
 * is staged, so no kernel's early start can run ahead of the side-stream
 * event it waits for. */
static inline int lrun_cuda_pdl_on(const lrun_cuda_engine *e)
{
    return e->pdl_enabled && !e->exact && !e->offload && !e->kv.staged;
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* The blocks this engine holds the KV cache of (its range's length). */
static inline int64_t lrun_cuda_blocks(const lrun_cuda_engine *e) { return e->layer_end - e->layer_first; }
/* 1: a layer split's part that does not start at block 0 (it takes hidden_in, not tokens' embeddings) */
static inline int lrun_cuda_takes_rows(const lrun_cuda_engine *e) { return e->layer_first > 0; }
/* 1: a layer split's part that does not end at the last block (it writes hidden_out, not logits) */
static inline int lrun_cuda_gives_rows(const lrun_cuda_engine *e) { return e->layer_end < e->n_layer; }

/* The mode flags of a decode GEMV of dtype t (gemv_choice.h). */
static inline int lrun_cuda_gemv_flags(const lrun_cuda_engine *e, lrun_dtype t)
{
    return lrun_cuda_gemv_choice_flags(&e->gemv, t);
}

/* The cuBLAS slot dtype for a weight: bf16 stays bf16 (no conversion), the
 * rest go through f16, whose 10-bit mantissa keeps more of the activations. */
static inline lrun_dtype slot_dtype(lrun_dtype w) { return w == LRUN_DTYPE_BF16 ? LRUN_DTYPE_BF16 : LRUN_DTYPE_F16; }

/* ---- the KV cache (engine_cuda_kv.c) */
/* Sets the kind's flags and checks and fills the quantized options (before init's sizing). */
lrun_status lrun_cuda_kv_setup(lrun_cuda_engine *e, const lrun_engine_opts *opts);
/* Device bytes per position (all sequences), the fixed part (the quantized ring),
 * and what init takes (the preallocated kinds); for estimate and check_fits. */
size_t lrun_cuda_kv_bytes_per_position(const lrun_cuda_engine *e);
size_t lrun_cuda_kv_fixed_bytes(const lrun_cuda_engine *e);
int lrun_cuda_kv_init_bytes(const lrun_cuda_engine *e, size_t *out);
/* Device bytes the cache takes at init (with the quantized fill table) and
 * at its highest while growing to n_ctx_max, from the sizes init and
 * lrun_cuda_kv_reserve use (lrun_engine_size_placement); 0 on overflow. */
int lrun_cuda_kv_size(const lrun_cuda_engine *e, size_t *init_bytes, size_t *max_bytes);
/* Streams, events, and the preallocated kinds' memory. */
lrun_status lrun_cuda_kv_init(lrun_cuda_engine *e);
void lrun_cuda_kv_free(lrun_cuda_engine *e);
size_t lrun_cuda_kv_device_bytes(const lrun_cuda_engine *e);
/* Bytes of one (layer, keys|values) plane of a slot or a device store. */
size_t lrun_cuda_kv_plane_bytes(const lrun_cuda_engine *e);
/* Grows the cache so every sequence has room for need positions; on failure nothing changes. */
lrun_status lrun_cuda_kv_reserve(lrun_cuda_engine *e, int64_t need);
/* After the chunk's table is on the device (kv.stored and kv.chunk_end set): staged kinds start
 * filling the slots of layers 0 and 1 (load 0: nothing stored is read). A quantized chunk of
 * n <= GEMV_MAX_ROWS tokens that loads takes the fused path instead: nothing is filled. */
lrun_status lrun_cuda_kv_chunk_begin(lrun_cuda_engine *e, int load, int64_t n);
/* Whether this chunk's attention is lrun_cuda_kv_fused_attention's (quantized decode). */
static inline int lrun_cuda_kv_fused(const lrun_cuda_engine *e) { return e->kv.fused_chunk; }
/* The fused path's layer l: the chunk's new rows (in the slot, from RoPE) into codes and
 * ring, then attention of e->q straight from them into e->attn. */
lrun_status lrun_cuda_kv_fused_attention(lrun_cuda_engine *e, int64_t l, int64_t n, int64_t max_kv);
/* Layer l's key and value planes; staged kinds make compute wait for its slot. Here and in
 * kv_layer_end and kv_fused_attention, l is the model's block, in [layer_first, layer_end): the
 * cache holds only those (lrun_cuda_blocks), as its layers 0, 1, ... */
lrun_status lrun_cuda_kv_layer(lrun_cuda_engine *e, int64_t l, char **keys, char **values);
/* After layer l's attention over n tokens: staged kinds write the new rows
 * back (offloaded: to the host; quantized: codes and ring) and refill the slot. */
lrun_status lrun_cuda_kv_layer_end(lrun_cuda_engine *e, int64_t l, int64_t n);
/* After seq_len took the step's tokens. */
void lrun_cuda_kv_step_end(lrun_cuda_engine *e);
lrun_status lrun_cuda_kv_truncate(lrun_cuda_engine *e, int64_t seq, int64_t len);
lrun_status lrun_cuda_kv_copy(lrun_cuda_engine *e, int64_t dst, int64_t src);
/* lrun_engine_seq_reorder's cache half: new_len (n) receives the lengths after. */
lrun_status lrun_cuda_kv_reorder(lrun_cuda_engine *e, const int64_t *src_of_dst, int64_t n, int64_t *new_len);
/* Queues every kernel of a chunk whose table is on the device, up to the
 * first LOGIT_ROWS rows of logits (engine_cuda_forward.c). */
lrun_status lrun_cuda_enqueue_chunk(lrun_cuda_engine *e, int64_t n, int64_t n_want, int identity, int64_t max_kv);
/* Copies the chunk's wanted rows of x (out_rows) to dst rows 0..n_want-1, on the
 * compute stream (engine_cuda_forward.c; the exact path's final norm uses it too). */
lrun_status lrun_cuda_gather_rows(lrun_cuda_engine *e, int64_t n_want, float *dst);
/* logits (rows, n_vocab) on the device = LM head of normed rows [r0, r0+rows). */
lrun_status lrun_cuda_lm_head(lrun_cuda_engine *e, int64_t r0, int64_t rows);

/* The exact path (engine_cuda_exact.c): bit-identical to the CPU engine for
 * models whose matmul weights are all Q4_0/Q4_1/Q8_0. eligible: whether this
 * model and shape take it (LRUN_CUDA_EXACT=0 says no); init sets e->exact
 * when eligible; table fills and sends the chunk's extra table (after the
 * step table of seq's n tokens is filled, seq_done counting this chunk). */
int lrun_cuda_exact_eligible(const lrun_cuda_engine *e);
/* A mixture of experts (engine_cuda_moe.c): init (nothing for a dense model;
 * turns CUDA graphs off), free, and the two ops over the chunk's n tokens. */
lrun_status lrun_cuda_moe_init(lrun_cuda_engine *e);
/* the MoE routing state's device block, bytes; 0 for a dense model (counted as scratch) */
size_t lrun_cuda_moe_scratch_bytes(const lrun_cuda_engine *e);
void lrun_cuda_moe_free(lrun_cuda_engine *e);
/* The expert selections counted where the host routes (NULL when dense); reset with the stats. */
const struct lrun_moe_counts *lrun_cuda_moe_counts(const lrun_cuda_engine *e);
/* The expert cache's hits, misses and bytes (engine_cuda_moe_cache.c), or NULL when the engine has none. */
const struct lrun_expert_cache *lrun_cuda_moe_cache_counts(const lrun_cuda_engine *e);
void lrun_cuda_moe_reset_counts(lrun_cuda_engine *e);
lrun_status lrun_cuda_moe_route(lrun_cuda_engine *e, const lrun_weights *W, int64_t layer, int64_t n,
                                const lrun_arch_op *op);
lrun_status lrun_cuda_moe_ffn_add(lrun_cuda_engine *e, const lrun_weights *W, int64_t layer, int64_t n,
                                  const lrun_arch_op *op);
/* Expert x of block layer (tensors g) over its cnt tokens, by the gathering kernels (engine_cuda_moe.c): the
 * chunk's pair tables from index at (its tokens' rows of xn gathered, its outputs weighted
 * into tmp), its slices at data (3 device pointers) or, data NULL, where the block's tensors
 * are (host-computed ones on the host). The streamed prefill (engine_cuda_moe_stream.c) and,
 * with moe_prefill_stream not off, every host-routed chunk run their experts through it. */
lrun_status lrun_cuda_moe_expert_rows(lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t x,
                                      int64_t at, int64_t cnt, const void *const *data);
lrun_status lrun_cuda_exact_init(lrun_cuda_engine *e);
/* Device bytes of the exact path's own scratch: what a made engine holds, or
 * for the sizes of one not yet made (estimate), what it would take. */
size_t lrun_cuda_exact_scratch_bytes(const lrun_cuda_engine *e);
void lrun_cuda_exact_free(lrun_cuda_engine *e);
lrun_status lrun_cuda_exact_table(lrun_cuda_engine *e, const int32_t *seq, int64_t n);
/* The exact variants of the forward's ops (engine_cuda_forward.c picks them
 * when e->exact is set). partner: what the producer of the input of
 * weights w quantizes for (LRUN_DTYPE_F32: nothing); matmul quantizes src
 * itself unless quantized says its producer did; add_norm (add NULL: the
 * norm alone) and swiglu quantize for the next weights and say whether. */
lrun_dtype lrun_cuda_exact_partner(const lrun_weight_ref *w, int n_w);
lrun_status lrun_cuda_exact_matmul(lrun_cuda_engine *e, const lrun_weight_ref *w, float *const *y, int n_w,
                                   const float *src, int64_t m, int quantized);
lrun_status lrun_cuda_exact_add_norm(lrun_cuda_engine *e, const float *add, const float *bias, const float *norm,
                                     const lrun_weight_ref *next, int n_next, int64_t n, int *quantized);
lrun_status lrun_cuda_exact_swiglu(lrun_cuda_engine *e, const lrun_weight_ref *next, int n_next, int64_t n,
                                   int *quantized);
lrun_status lrun_cuda_exact_rope_store(lrun_cuda_engine *e, char *kc, char *vc, int64_t n);
lrun_status lrun_cuda_exact_attention(lrun_cuda_engine *e, char *kc, char *vc, int64_t n, int64_t max_kv);
lrun_status lrun_cuda_exact_output_norm(lrun_cuda_engine *e, int64_t n_want, int identity);

#endif
