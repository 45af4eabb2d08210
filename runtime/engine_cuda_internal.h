/* engine_cuda_internal.h — the state of the CUDA engine, shared by its files:
 *   engine_cuda.c          init, free, the KV cache and sequences;
 *   engine_cuda_forward.c  the kernels of one chunk, layer by layer;
 *   engine_cuda_step.c     steps: the token table, CUDA graphs, logits;
 *   engine_cuda_offload.c  AS_PLACED weights off the device: streaming, host compute.
 * Only built with CUDA. */
#ifndef LRUN_ENGINE_CUDA_INTERNAL_H
#define LRUN_ENGINE_CUDA_INTERNAL_H

#include <cuda_runtime_api.h>

#include "device.h"
#include "engine_cuda.h"
#include "error.h"
#include "model.h"
#include "tensor.h"

#define DEFAULT_BATCH 512
/* lrun_k_gemv takes at most this many activation rows (kernels.h). */
#define GEMV_MAX_ROWS 8
/* LM-head rows per pass: bounds the device logits buffer to this many rows. */
#define LOGIT_ROWS 64
/* A DYNAMIC cache starts with this many positions per sequence, then doubles. */
#define KV_MIN_CAP 256

/* Device pointers of one block's f32 vectors (NULL when the file has none). */
struct cuda_layer {
    const float *attn_norm, *ffn_norm; /* (n_embd) */
    const float *bq, *bk, *bv, *bo;    /* (q_dim), (kv_dim), (kv_dim), (n_embd) */
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

struct lrun_cuda_engine {
    lrun_model *model;
    lrun_device *device;
    void *stream;                 /* cudaStream_t: the device's compute stream */
    void *cublas;                 /* bound to stream */
    int64_t n_seq_max, n_ctx_max, n_batch_max;
    int64_t n_layer, n_embd, q_dim, kv_dim, n_ff, n_vocab;
    float eps;                    /* rms_norm epsilon */
    float attn_scale;             /* 1/sqrt(head_dim) */
    lrun_cache_kind cache_kind;
    lrun_dtype kv_dtype;          /* F16 or F32 */
    size_t kv_esize;              /* bytes per cache element */

    /* KV cache: planes (n_layer, 2) of (n_seq_max, kv_cap, kv_dim) elements */
    void *kv;
    int64_t kv_cap;               /* positions per sequence allocated */
    size_t kv_bytes;
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
    int64_t *seq_count, *seq_done;/* (n_seq_max) tokens per sequence in this step; placed so far */

    /* kernels launched as programmatic dependents (lrun_k_set_pdl), set
     * for this thread at each enqueue */
    int pdl_enabled;

    /* CUDA graphs of decode steps, by token count */
    int graphs_enabled;
    int want_exact;               /* numerics EXACT was asked for (or LRUN_CUDA_EXACT=1 for benchmarks) */
    int graph_seen[LRUN_CUDA_GRAPH_MAX_TOKENS + 1];          /* eager runs of that shape so far */
    cudaGraphExec_t graph_exec[LRUN_CUDA_GRAPH_MAX_TOKENS + 1];
    lrun_cuda_engine_stats stats;
    struct cuda_offload *offload; /* AS_PLACED weights off the device, or NULL (engine_cuda_offload.h) */
    struct cuda_exact *exact;     /* the exact path's state when the model takes it (engine_cuda_exact.c), or NULL */
};

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

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* The cuBLAS slot dtype for a weight: bf16 stays bf16 (no conversion), the
 * rest go through f16, whose 10-bit mantissa keeps more of the activations. */
static inline lrun_dtype slot_dtype(lrun_dtype w) { return w == LRUN_DTYPE_BF16 ? LRUN_DTYPE_BF16 : LRUN_DTYPE_F16; }

static inline size_t plane_bytes(const lrun_cuda_engine *e)
{
    return (size_t)e->n_seq_max * (size_t)e->kv_cap * (size_t)e->kv_dim * e->kv_esize;
}

/* Grows a DYNAMIC cache so every sequence has room for need positions (engine_cuda.c). */
lrun_status lrun_cuda_kv_reserve(lrun_cuda_engine *e, int64_t need);
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
 * step table of seq's n tokens is filled, seq_done counting this chunk);
 * enqueue_chunk and lm_head replace the float path's. */
int lrun_cuda_exact_eligible(const lrun_cuda_engine *e);
lrun_status lrun_cuda_exact_init(lrun_cuda_engine *e);
/* Device bytes of the exact path's own scratch: what a made engine holds, or
 * for the sizes of one not yet made (estimate), what it would take. */
size_t lrun_cuda_exact_scratch_bytes(const lrun_cuda_engine *e);
void lrun_cuda_exact_free(lrun_cuda_engine *e);
lrun_status lrun_cuda_exact_table(lrun_cuda_engine *e, const int32_t *seq, int64_t n);
lrun_status lrun_cuda_exact_enqueue_chunk(lrun_cuda_engine *e, int64_t n, int64_t n_want, int identity,
                                          int64_t max_kv);
lrun_status lrun_cuda_exact_lm_head(lrun_cuda_engine *e, int64_t r0, int64_t rows);

#endif
