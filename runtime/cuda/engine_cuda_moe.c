/* engine_cuda_moe.c — a mixture of experts on CUDA (docs/moe.md): every
 * expert where the placement put it (resident, streamed with its block, or
 * host-computed slice by slice), fast numerics.
 *
 *   MOE_ROUTE    router logits (n, n_expert) = xn · Wrᵀ on the device (the
 *                GEMV/cuBLAS matmul of any weight);
 *   MOE_FFN_ADD  two ways:
 *     device-routed (decode-sized chunks, n <= GEMV_MAX_ROWS, whose block's
 *                experts are all on the device): lrun_k_moe_route picks
 *                each token's experts and weights on the device with the
 *                CPU's bits; lrun_k_moe_gemv multiplies gate and up (SwiGLU
 *                in its epilogue), then down, reading each pair's expert
 *                from the device-side ids; lrun_k_moe_combine adds the
 *                weighted slots into the residual stream. No host round
 *                trip and no stream sync: decode steps of a model whose
 *                experts are all on the device keep their CUDA graphs.
 *     host-routed (prefill chunks, and blocks with experts off the device):
 *                the logits come to the host (one stream sync), where
 *                lrun_moe_route picks each token's experts and weights as
 *                the CPU does (the same bits as the device routing); the
 *                (token, slot) pairs are grouped by expert; per expert with
 *                pairs, its xn rows are gathered on the device, gate and up
 *                multiplied by the expert's slices of the stacked tensors
 *                (the existing GEMV for <= 8 rows, cuBLAS beyond: a grouped
 *                GEMM, one per expert), SwiGLU, down; each output row is
 *                added times its weight into tmp (cublasSaxpy), and tmp into
 *                the residual stream.
 *
 * The two ways multiply in different orders, so their logits agree to
 * rounding, not to the bit. The exact path (e->exact, numerics = "exact")
 * routes every chunk on the host and runs each
 * expert where it is through engine_cuda_moe_exact.c: the CPU's bits. Expert selections are counted on the host
 * (host-routed) and on the device (device-routed, u64 atomics), and added
 * when m:stats() reads them. */
#include <cublas_v2.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "cpu/moe_route.h"
#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_moe_cache.h"
#include "cuda/engine_cuda_moe_exact.h"
#include "cuda/engine_cuda_moe_host.h"
#include "cuda/engine_cuda_moe_stream.h"
#include "cuda/engine_cuda_offload.h"
#include "kernels.h"

/* LRUN_CUDA_MOE_DEVICE_ROUTE=0 routes every chunk on the host (to compare the two ways). */
static int getenv_device_route(void)
{
    const char *v = getenv("LRUN_CUDA_MOE_DEVICE_ROUTE");
    return !(v && strcmp(v, "0") == 0);
}

struct cuda_moe {
    float *d_router;    /* (B, n_expert) device: the router's logits */
    float *d_x;         /* (B, n_embd) device: one expert's gathered rows of xn */
    float *d_y;         /* (B, n_embd) device: its outputs */
    size_t d_bytes;     /* of the one device block the three are carved from */
    float *h_router;    /* (B, n_expert) pinned: the logits, then probabilities */
    size_t h_router_bytes, h_sid_bytes; /* of h_router and h_sid (h_sw with it) */
    int32_t *ids;       /* (B, k) each token's experts */
    float *w;           /* (B, k) and weights */
    int32_t *pairs;     /* (B·k) token·k + slot, grouped by expert */
    int64_t *first;     /* (n_expert + 1) where each expert's pairs start */
    int64_t *fill;      /* (n_expert) cursors while grouping */
    lrun_moe_counts counts; /* selections per block and expert, for m:stats().experts: host-routed chunks */
    /* device routing (decode-sized chunks): Bd = min(B, GEMV_MAX_ROWS) tokens */
    int device_route;   /* the model's shape fits lrun_k_moe_route (n_expert % 8 == 0, limits) */
    int32_t *d_ids;     /* (Bd, k) device: each token's experts */
    float *d_w;         /* (Bd, k) device: and weights */
    float *d_act;       /* (Bd·k, n_ff) device: each pair's SwiGLU(gate, up) */
    float *d_out;       /* (Bd·k, n_embd) device: each pair's down projection */
    unsigned long long *d_counts; /* (n_layer, n_expert + 1) device: selections, then tokens, of device-routed chunks */
    unsigned long long *h_counts; /* (n_layer, n_expert + 1) host: their copy when the stats are read */
    lrun_moe_counts merged;       /* counts + the device's, what lrun_cuda_moe_counts returns */
    struct cuda_moe_cache *cache; /* host experts copied to device slots (engine_cuda_moe_cache.c), or NULL */
    int32_t *h_sid;     /* (Bd, k) pinned: a cached block's pairs' slots, for the device-id kernels */
    float *h_sw;        /* (Bd, k) pinned: and their weights */
    int32_t *h_xid;     /* (Bd, k) pinned, gpt-oss only: and their experts (whose biases they add), else NULL */
    int32_t *d_xid;     /* (Bd, k) device, gpt-oss only: h_xid's copy */
    int64_t *slot_of;   /* (n_expert) a cached block's chunk: each chosen expert's slot (hybrid: -1 a miss) */
    int32_t *missed;    /* (n_expert) hybrid: the chunk's chosen experts that no ready slot held */
    int32_t *hpairs;    /* (Bd·k) hybrid: their pairs, grouped by expert, for the host pass */
    int64_t *hfirst;    /* (n_expert + 1) hybrid: where each expert's pairs start in hpairs (none for a hit) */
    /* moe_prefill_stream not off: host-routed chunks run each expert through
     * lrun_cuda_moe_expert_rows (one gather and one weighted scatter launch
     * instead of a copy and a cublasSaxpy per token), from the pair tables */
    int fast_rows;
    int32_t *h_tok;     /* (B·k) pinned: each pair's token, pairs grouped by expert (fast_rows) */
    float *h_pw;        /* (B·k) pinned: and its weight */
    int32_t *d_tok;     /* (B·k) device: h_tok's copy */
    float *d_pw;        /* (B·k) device: h_pw's copy */
    size_t pair_bytes;  /* of each of the four */
    struct cuda_moe_stream *stream; /* prefill chunks' host experts streamed (engine_cuda_moe_stream.c), or NULL */
    struct cuda_moe_exact *exact;   /* the exact path's products and sum (engine_cuda_moe_exact.c), or NULL */
    struct cuda_moe_host *host;     /* host experts' decode chunks in one pass (engine_cuda_moe_host.c), or NULL */
};

static size_t round256(size_t b) { return (b + 255) / 256 * 256; }

/* Bytes of each expert's slice of a stacked tensor t ({k, n, n_expert}). */
static size_t slice_bytes(const struct lrun_tensor *t) { return (size_t)t->ne[1] * t->row_bytes; }

/* Whether a block's three expert tensors (gate, up, down) can take the
 * device-routed way: on the device, plain (not packed), a dtype and
 * alignment lrun_k_moe_gemv reads, gate and up alike. */
static int experts_on_device(const lrun_weight_ref g[3])
{
    for (int i = 0; i < 3; i++) {
        const struct lrun_tensor *t = g[i].w;
        if (!t || !g[i].data || g[i].on_host || t->packed ||
            !lrun_k_moe_gemv_supported(t->dtype, g[i].data, t->row_bytes, slice_bytes(t), t->ne[0]))
            return 0;
    }
    return g[0].w->dtype == g[1].w->dtype && g[0].w->row_bytes == g[1].w->row_bytes &&
           g[0].w->ne[1] == g[1].w->ne[1] && g[2].w->ne[0] == g[0].w->ne[1];
}

/* Whether every block's experts (of the engine's range) take the device-routed way for decode, so
 * decode steps have no host work and may be captured in CUDA graphs. */
static int all_device_routed(const lrun_cuda_engine *e)
{
    const lrun_arch *a = e->model->arch;
    if (!e->moe->device_route || e->offload) return 0;
    for (int i = 0; i < a->n_ops; i++) {
        if (a->ops[i].kind != LRUN_ARCH_OP_MOE_FFN_ADD) continue;
        for (int64_t l = e->layer_first; l < e->layer_end; l++) { /* a split's part: the blocks it runs */
            lrun_weight_ref g[3];
            for (int j = 0; j < 3; j++) {
                const struct lrun_tensor *t = e->model->layers[l].t[a->ops[i].w[j]];
                g[j] = (lrun_weight_ref){t, t ? t->data : NULL, 0, 0};
            }
            if (!experts_on_device(g) || g[0].w->ne[1] > e->n_ff) return 0;
        }
    }
    return 1;
}

/* The one device block of the routing state below, bytes (0 for a dense
 * model): what init allocates, and what the engine's sizing counts as
 * scratch (lrun_cuda_engine_size_placement), from the same arithmetic. */
size_t lrun_cuda_moe_scratch_bytes(const lrun_cuda_engine *e)
{
    const lrun_model_info *in = &e->model->info;
    if (in->n_expert == 0) return 0;
    const size_t B = (size_t)e->n_batch_max, E = (size_t)in->n_expert, k = (size_t)in->n_expert_used;
    const size_t Bd = B < GEMV_MAX_ROWS ? B : GEMV_MAX_ROWS, L = (size_t)in->n_layer;
    /* router logits (B, E); gathered rows and their outputs (B, n_embd) x2; the
     * device-routed pairs' ids and weights (Bd·k) x2, activations (Bd·k, n_ff),
     * outputs (Bd·k, n_embd); the selection counts (L, E + 1) */
    return round256(B * E * sizeof(float)) + 2 * round256(B * (size_t)e->n_embd * 4) + 2 * round256(Bd * k * 4) +
           round256(Bd * k * (size_t)e->n_ff * 4) + round256(Bd * k * (size_t)e->n_embd * 4) +
           round256(L * (E + 1) * 8) +
           /* with prefill streaming possible, the pairs' token ids and weights (B·k) x2 */
           (lrun_cuda_moe_stream_mode(e) != LRUN_MOE_PREFILL_STREAM_OFF ? 2 * round256(B * k * 4) : 0) +
           /* gpt-oss: a cached decode chunk's expert ids, beside its slots */
           (e->model->arch->moe_oai ? round256(Bd * k * 4) : 0) +
           lrun_cuda_moe_exact_bytes(e); /* the exact path's own block, allocated apart */
}

lrun_status lrun_cuda_moe_init(lrun_cuda_engine *e)
{
    const lrun_model_info *in = &e->model->info;
    if (in->n_expert == 0) return LRUN_OK;
    struct cuda_moe *m = calloc(1, sizeof *m);
    if (!m) return lrun_fail_oom(sizeof *m, 0, "engine: mixture-of-experts record");
    e->moe = m;
    const size_t B = (size_t)e->n_batch_max, E = (size_t)in->n_expert, k = (size_t)in->n_expert_used;
    const size_t Bd = B < GEMV_MAX_ROWS ? B : GEMV_MAX_ROWS, L = (size_t)in->n_layer;
    const size_t router = round256(B * E * sizeof(float)), rows = round256(B * (size_t)e->n_embd * 4);
    const size_t ids = round256(Bd * k * 4), act = round256(Bd * k * (size_t)e->n_ff * 4),
                 out = round256(Bd * k * (size_t)e->n_embd * 4), cnt = round256(L * (E + 1) * 8);
    m->fast_rows = lrun_cuda_moe_stream_mode(e) != LRUN_MOE_PREFILL_STREAM_OFF;
    m->pair_bytes = round256(B * k * 4);
    m->d_bytes = lrun_cuda_moe_scratch_bytes(e) - lrun_cuda_moe_exact_bytes(e);
    TRY(lrun_oom_phase(lrun_device_alloc(e->device, m->d_bytes, "mixture-of-experts scratch", (void **)&m->d_router),
                       "scratch"));
    char *at = (char *)m->d_router + router;
    m->d_x = (float *)at, at += rows;
    m->d_y = (float *)at, at += rows;
    m->d_ids = (int32_t *)at, at += ids;
    m->d_w = (float *)at, at += ids;
    m->d_act = (float *)at, at += act;
    m->d_out = (float *)at, at += out;
    m->d_counts = (unsigned long long *)at, at += cnt;
    if (e->model->arch->moe_oai) m->d_xid = (int32_t *)at, at += ids;
    if (m->fast_rows) {
        m->d_tok = (int32_t *)at, at += m->pair_bytes;
        m->d_pw = (float *)at;
        TRY(lrun_oom_phase(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED,
                                                  2 * m->pair_bytes, "expert pair tables", (void **)&m->h_tok),
                           "scratch"));
        m->h_pw = (float *)((char *)m->h_tok + m->pair_bytes);
    }
    TRY(cuda_check(cudaMemsetAsync(m->d_counts, 0, L * (E + 1) * 8, (cudaStream_t)e->stream),
                   "clearing the expert counts", e->device));
    m->device_route = E % 8 == 0 && E <= LRUN_K_MOE_MAX_EXPERTS && k <= LRUN_K_MOE_MAX_K && getenv_device_route();
    m->h_router_bytes = B * E * sizeof(float);
    TRY(lrun_oom_phase(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, m->h_router_bytes,
                                              "router logits", (void **)&m->h_router),
                       "scratch"));
    m->ids = malloc(B * k * sizeof *m->ids);
    m->w = malloc(B * k * sizeof *m->w);
    m->pairs = malloc(B * k * sizeof *m->pairs);
    m->first = malloc((E + 1) * sizeof *m->first);
    m->fill = malloc(E * sizeof *m->fill);
    m->h_counts = malloc(L * (E + 1) * sizeof *m->h_counts);
    m->slot_of = malloc(E * sizeof *m->slot_of);
    m->missed = malloc(E * sizeof *m->missed);
    m->hpairs = malloc(Bd * k * sizeof *m->hpairs);
    m->hfirst = malloc((E + 1) * sizeof *m->hfirst);
    m->h_sid_bytes = (e->model->arch->moe_oai ? 3 : 2) * Bd * k * 4;
    TRY(lrun_oom_phase(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, m->h_sid_bytes,
                                              "expert slot ids", (void **)&m->h_sid),
                       "scratch"));
    m->h_sw = (float *)(m->h_sid + Bd * k);
    if (e->model->arch->moe_oai) m->h_xid = m->h_sid + 2 * Bd * k;
    if (!m->ids || !m->w || !m->pairs || !m->first || !m->fill || !m->h_counts || !m->slot_of || !m->missed ||
        !m->hpairs || !m->hfirst)
        return lrun_fail_oom(0, 0, "engine: routing tables for %zu tokens", B);
    TRY(lrun_moe_counts_init(&m->counts, in->n_layer, in->n_expert));
    TRY(lrun_moe_counts_init(&m->merged, in->n_layer, in->n_expert));
    /* host routing is host work between the block's launches: such steps run eagerly (the exact path's too) */
    if (!all_device_routed(e) || e->exact) e->graphs_enabled = 0;
    TRY(lrun_cuda_moe_exact_init(e, &m->exact));
    TRY(lrun_cuda_moe_cache_init(e, &m->cache));
    TRY(lrun_cuda_moe_host_init(e, &m->host));
    return lrun_cuda_moe_stream_init(e, &m->stream);
}

void lrun_cuda_moe_free(lrun_cuda_engine *e)
{
    struct cuda_moe *m = e->moe;
    if (!m) return;
    if (m->d_router) lrun_device_release(e->device, m->d_router, m->d_bytes);
    lrun_cuda_moe_cache_free(e, m->cache);
    lrun_cuda_moe_stream_free(e, m->stream);
    lrun_cuda_moe_exact_free(e, m->exact);
    lrun_cuda_moe_host_free(m->host);
    lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, m->h_tok, 2 * m->pair_bytes);
    lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, m->h_router, m->h_router_bytes);
    lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, m->h_sid, m->h_sid_bytes);
    free(m->slot_of);
    free(m->missed);
    free(m->hpairs);
    free(m->hfirst);
    free(m->ids);
    free(m->w);
    free(m->pairs);
    free(m->first);
    free(m->fill);
    free(m->h_counts);
    lrun_moe_counts_free(&m->counts);
    lrun_moe_counts_free(&m->merged);
    free(m);
    e->moe = NULL;
}

const lrun_expert_cache *lrun_cuda_moe_cache_counts(const lrun_cuda_engine *e)
{
    return e->moe ? lrun_cuda_moe_cache_book(e->moe->cache) : NULL;
}

/* The host-routed counts plus the device-routed ones (waits for the stream);
 * the host ones alone if the device's cannot be read. */
const lrun_moe_counts *lrun_cuda_moe_counts(const lrun_cuda_engine *e)
{
    struct cuda_moe *m = e->moe;
    if (!m) return NULL;
    const lrun_moe_counts *c = &m->counts;
    const int64_t L = c->n_layer, E = c->n_expert;
    if (!c->counts || !m->merged.counts) return c;
    const size_t bytes = (size_t)(L * (E + 1)) * sizeof *m->h_counts;
    if (cudaStreamSynchronize((cudaStream_t)e->stream) != cudaSuccess ||
        cudaMemcpy(m->h_counts, m->d_counts, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
        (void)cudaGetLastError();
        return c;
    }
    for (int64_t l = 0; l < L; l++) {
        const unsigned long long *d = m->h_counts + l * (E + 1);
        for (int64_t x = 0; x < E; x++) m->merged.counts[l * E + x] = c->counts[l * E + x] + (int64_t)d[x];
        m->merged.tokens[l] = c->tokens[l] + (int64_t)d[E];
    }
    return &m->merged;
}

void lrun_cuda_moe_reset_counts(lrun_cuda_engine *e)
{
    struct cuda_moe *m = e->moe;
    if (!m) return;
    lrun_moe_counts_reset(&m->counts);
    lrun_moe_counts_reset(&m->merged);
    if (m->cache) lrun_expert_cache_reset_stats(lrun_cuda_moe_cache_book(m->cache));
    if (cudaMemsetAsync(m->d_counts, 0, (size_t)(m->counts.n_layer * (m->counts.n_expert + 1)) * 8,
                        (cudaStream_t)e->stream) != cudaSuccess)
        (void)cudaGetLastError(); /* a later launch reports a broken device */
}

/* y (rows, n) = x (rows, k) · Wᵀ for w (a whole matrix, or one expert's slice as a view). */
static lrun_status moe_matmul(lrun_cuda_engine *e, const struct lrun_tensor *t, const void *data, int on_host,
                              const float *x, int64_t rows, float *y)
{
    if (on_host) return lrun_cuda_offload_host_matmul(e, t, x, rows, y);
    if (rows <= GEMV_MAX_ROWS) return lrun_k_gemv(t->dtype, data, t->row_bytes, t->ne[1], t->ne[0], x, rows, y, e->stream);
    return lrun_k_gemm(e->cublas, t->dtype, data, t->row_bytes, t->ne[1], t->ne[0], x, rows, y, slot_dtype(t->dtype),
                       e->w_slot, e->x_slot, e->stream);
}

lrun_status lrun_cuda_moe_route(lrun_cuda_engine *e, const lrun_weights *W, int64_t layer, int64_t n,
                                const lrun_arch_op *op)
{
    const lrun_weight_ref r = lrun_weights_get(W, layer, op->w[0]);
    if (e->exact) return lrun_cuda_moe_exact_router(e, &r, n, e->moe->d_router);
    TRY(moe_matmul(e, r.w, r.data, r.on_host, e->xn, n, e->moe->d_router));
    /* gpt-oss's router bias (the exact path refuses it: engine_cuda_moe_exact.c) */
    const float *bias = op->w[1] != LRUN_ARCH_TENSOR_NONE ? e->layers[layer].vec[op->w[1]] : NULL;
    return bias ? lrun_k_add_bias(e->moe->d_router, bias, n, e->model->info.n_expert, e->stream) : LRUN_OK;
}

/* Expert x's bias row of block tensor id (gpt-oss: {len, n_expert}), or NULL when the block has none. */
static const float *expert_bias(const lrun_cuda_engine *e, int64_t layer, lrun_arch_tensor id, int64_t x, int64_t len)
{
    const float *b = e->layers[layer].vec[id];
    return b ? b + x * len : NULL;
}

/* gpt-oss's gate of cnt rows of expert x: gate and up plus the expert's
 * biases, then swiglu_oai into gate (moe_cpu.c's order); else SwiGLU. */
static lrun_status expert_gate(lrun_cuda_engine *e, int64_t layer, int64_t x, int64_t cnt)
{
    const int64_t f = e->n_ff;
    if (!e->model->arch->moe_oai) return lrun_k_swiglu(e->gate, e->up, e->gate, cnt * f, e->stream);
    TRY(lrun_k_add_bias(e->up, expert_bias(e, layer, LRUN_ARCH_TENSOR_UP_EXPS_B, x, f), cnt, f, e->stream));
    TRY(lrun_k_add_bias(e->gate, expert_bias(e, layer, LRUN_ARCH_TENSOR_GATE_EXPS_B, x, f), cnt, f, e->stream));
    return lrun_k_swiglu_oai(e->gate, e->up, e->gate, cnt * f, e->stream);
}

/* gpt-oss: y (cnt, n_embd), expert x's down projections, plus its down bias. */
static lrun_status expert_down_bias(lrun_cuda_engine *e, int64_t layer, int64_t x, int64_t cnt, float *y)
{
    const float *b = expert_bias(e, layer, LRUN_ARCH_TENSOR_DOWN_EXPS_B, x, e->n_embd);
    return b ? lrun_k_add_bias(y, b, cnt, e->n_embd, e->stream) : LRUN_OK;
}

/* Expert x's slice of a stacked tensor as a 2-D view (its data where this chunk reads it): in
 * the tensor, or (slot not NULL) the expert cache's device copy. */
static struct lrun_tensor slice_view(const lrun_weight_ref *ref, int64_t x, const void *slot, const void **data)
{
    struct lrun_tensor v = *ref->w;
    const size_t bytes = (size_t)v.ne[1] * v.row_bytes;
    v.ne[2] = 1;
    v.ndim = 2;
    v.nbytes = bytes;
    *data = slot ? slot : (const char *)ref->data + (size_t)x * bytes;
    v.data = (void *)*data; /* what a host-computed product reads */
    return v;
}

/* Expert x over its pairs: gather, gate/up, SwiGLU, down, weighted into
 * tmp; slot (3 pointers, or NULL) its copies in the expert cache. */
static lrun_status run_expert(lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t x,
                              const int32_t *pairs, int64_t cnt, const void *const *slot)
{
    struct cuda_moe *m = e->moe;
    cudaStream_t s = (cudaStream_t)e->stream;
    const int64_t d = e->n_embd, k = e->model->info.n_expert_used;
    const size_t row = (size_t)d * sizeof(float);
    for (int64_t j = 0; j < cnt; j++)
        TRY(cuda_check(cudaMemcpyAsync(m->d_x + j * d, e->xn + (pairs[j] / k) * d, row, cudaMemcpyDeviceToDevice, s),
                       "gathering an expert's rows", e->device));
    float *const outs[2] = {e->gate, e->up};
    for (int i = 0; i < 2; i++) {
        const void *data;
        const struct lrun_tensor v = slice_view(&g[i], x, slot ? slot[i] : NULL, &data);
        TRY(moe_matmul(e, &v, data, g[i].on_host && !slot, m->d_x, cnt, outs[i]));
    }
    TRY(expert_gate(e, layer, x, cnt));
    const void *data;
    const struct lrun_tensor v = slice_view(&g[2], x, slot ? slot[2] : NULL, &data);
    TRY(moe_matmul(e, &v, data, g[2].on_host && !slot, e->gate, cnt, m->d_y));
    TRY(expert_down_bias(e, layer, x, cnt, m->d_y));
    for (int64_t j = 0; j < cnt; j++) {
        const float w = m->w[pairs[j]]; /* host pointer mode: read at the call */
        const cublasStatus_t cs = cublasSaxpy((cublasHandle_t)e->cublas, (int)d, &w, m->d_y + j * d, 1,
                                              e->tmp + (pairs[j] / k) * d, 1);
        if (cs != CUBLAS_STATUS_SUCCESS)
            return lrun_fail(LRUN_E_DEVICE, "engine on %s: adding expert %lld's output: %s", e->device->name,
                             (long long)x, cublasGetStatusString(cs));
    }
    return LRUN_OK;
}

lrun_status lrun_cuda_moe_expert_rows(lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t x,
                                      int64_t at, int64_t cnt, const void *const *data)
{
    struct cuda_moe *m = e->moe;
    const int64_t d = e->n_embd;
    TRY(lrun_k_embed(LRUN_DTYPE_F32, e->xn, (size_t)d * sizeof(float), d, m->d_tok + at, cnt, m->d_x, e->stream));
    float *const outs[2] = {e->gate, e->up};
    for (int i = 0; i < 2; i++) {
        const void *w;
        const struct lrun_tensor v = slice_view(&g[i], x, data ? data[i] : NULL, &w);
        TRY(moe_matmul(e, &v, w, g[i].on_host && !data, m->d_x, cnt, outs[i]));
    }
    TRY(expert_gate(e, layer, x, cnt));
    const void *w;
    const struct lrun_tensor v = slice_view(&g[2], x, data ? data[2] : NULL, &w);
    TRY(moe_matmul(e, &v, w, g[2].on_host && !data, e->gate, cnt, m->d_y));
    TRY(expert_down_bias(e, layer, x, cnt, m->d_y));
    return lrun_k_moe_scatter_add(m->d_y, m->d_tok + at, m->d_pw + at, cnt, d, e->tmp, e->stream);
}

/* The chunk's pair tables for lrun_cuda_moe_expert_rows: each grouped pair's
 * token and weight, one copy each (the host routed after a stream sync, so
 * the last chunk's copies out of h_tok and h_pw have finished). */
static lrun_status upload_pairs(lrun_cuda_engine *e, int64_t n)
{
    struct cuda_moe *m = e->moe;
    const int64_t k = e->model->info.n_expert_used;
    cudaStream_t s = (cudaStream_t)e->stream;
    for (int64_t r = 0; r < n * k; r++) m->h_tok[r] = m->pairs[r] / (int32_t)k, m->h_pw[r] = m->w[m->pairs[r]];
    TRY(cuda_check(cudaMemcpyAsync(m->d_tok, m->h_tok, (size_t)(n * k) * 4, cudaMemcpyHostToDevice, s),
                   "expert pair tokens to the device", e->device));
    return cuda_check(cudaMemcpyAsync(m->d_pw, m->h_pw, (size_t)(n * k) * 4, cudaMemcpyHostToDevice, s),
                      "expert pair weights to the device", e->device);
}

/* A host-routed chunk through the pair tables: streamed (a prefill chunk of a
 * block whose experts stream), else every expert where it is, in expert order. */
static lrun_status ffn_rows(lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t n)
{
    struct cuda_moe *m = e->moe;
    const int64_t n_exp = e->model->info.n_expert;
    TRY(upload_pairs(e, n));
    TRY(cuda_check(cudaMemsetAsync(e->tmp, 0, (size_t)(n * e->n_embd) * sizeof(float), (cudaStream_t)e->stream),
                   "clearing the experts' sum", e->device));
    if (n > GEMV_MAX_ROWS && lrun_cuda_moe_stream_covers(m->stream, layer)) {
        TRY(lrun_cuda_moe_stream_run(e, m->stream, g, layer, m->first, n_exp, m->cache));
    } else {
        for (int64_t x = 0; x < n_exp; x++) {
            const int64_t cnt = m->first[x + 1] - m->first[x];
            if (cnt > 0) TRY(lrun_cuda_moe_expert_rows(e, g, layer, x, m->first[x], cnt, NULL));
        }
    }
    return lrun_k_add(e->x, e->tmp, n * e->n_embd, e->stream);
}

/* The (token, slot) pairs grouped by expert, as the CPU groups them. */
static void group_pairs(struct cuda_moe *m, int64_t n, int64_t n_exp, int64_t k)
{
    memset(m->first, 0, (size_t)(n_exp + 1) * sizeof *m->first);
    for (int64_t j = 0; j < n * k; j++) m->first[m->ids[j] + 1]++;
    for (int64_t x = 0; x < n_exp; x++) m->first[x + 1] += m->first[x];
    for (int64_t x = 0; x < n_exp; x++) m->fill[x] = m->first[x];
    for (int64_t j = 0; j < n * k; j++) m->pairs[m->fill[m->ids[j]]++] = (int32_t)j;
}

/* The device-routed way (see the top): route, gate/up with SwiGLU, down, weighted sum into x. */
static lrun_status ffn_device(lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t n)
{
    struct cuda_moe *m = e->moe;
    const int64_t n_exp = e->model->info.n_expert, k = e->model->info.n_expert_used;
    const struct lrun_tensor *gt = g[0].w, *dt = g[2].w;
    if (e->model->arch->moe_oai) { /* gpt-oss: its routing, the experts' biases and swiglu_oai in the epilogues */
        const float *const *vec = e->layers[layer].vec;
        TRY(lrun_k_moe_route_oai(m->d_router, n, n_exp, k, m->d_ids, m->d_w, m->d_counts + layer * (n_exp + 1),
                                 e->stream));
        TRY(lrun_k_moe_gemv_oai(gt->dtype, g[0].data, g[1].data, vec[LRUN_ARCH_TENSOR_GATE_EXPS_B],
                                vec[LRUN_ARCH_TENSOR_UP_EXPS_B], NULL, gt->row_bytes, slice_bytes(gt), gt->ne[1], gt->ne[0],
                                m->d_ids, e->xn, k, n * k, m->d_act, e->stream));
        TRY(lrun_k_moe_gemv_oai(dt->dtype, g[2].data, NULL, vec[LRUN_ARCH_TENSOR_DOWN_EXPS_B], NULL, NULL, dt->row_bytes,
                                slice_bytes(dt), dt->ne[1], dt->ne[0], m->d_ids, m->d_act, 1, n * k, m->d_out,
                                e->stream));
        return lrun_k_moe_combine(m->d_out, m->d_w, n, k, e->n_embd, e->x, e->stream);
    }
    TRY(lrun_k_moe_route(m->d_router, n, n_exp, k, m->d_ids, m->d_w, m->d_counts + layer * (n_exp + 1), e->stream));
    TRY(lrun_k_moe_gemv(gt->dtype, g[0].data, g[1].data, gt->row_bytes, slice_bytes(gt), gt->ne[1], gt->ne[0],
                        m->d_ids, e->xn, k, n * k, m->d_act, e->stream));
    TRY(lrun_k_moe_gemv(dt->dtype, g[2].data, NULL, dt->row_bytes, slice_bytes(dt), dt->ne[1], dt->ne[0], m->d_ids,
                        m->d_act, 1, n * k, m->d_out, e->stream));
    return lrun_k_moe_combine(m->d_out, m->d_w, n, k, e->n_embd, e->x, e->stream);
}

/* A cached block's decode chunk through the device-id kernels, as ffn_device
 * computes a resident one (the same bits): the slots are a stacked tensor
 * of their own, the pairs' slot numbers its expert ids. Every chosen
 * expert must be in a slot at once (the caller checks distinct <= slots),
 * except in a hybrid chunk: a pair whose expert has no slot (slot_of -1,
 * computed on the host) reads slot `other` (a hit's: filled, so its products
 * are finite) with weight 0, adding exactly nothing, so the kernels keep
 * their one launch over the chunk's k pairs a token. */
static lrun_status ffn_cached_batch(lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t n,
                                    int64_t other)
{
    struct cuda_moe *m = e->moe;
    struct cuda_moe_cache *c = m->cache;
    const int64_t k = e->model->info.n_expert_used;
    const struct lrun_tensor *gt = g[0].w, *dt = g[2].w;
    cudaStream_t s = (cudaStream_t)e->stream;
    for (int64_t j = 0; j < n * k; j++) {
        const int64_t slot = m->slot_of[m->ids[j]];
        m->h_sid[j] = (int32_t)(slot >= 0 ? slot : other), m->h_sw[j] = slot >= 0 ? m->w[j] : 0.0f;
    }
    TRY(cuda_check(cudaMemcpyAsync(m->d_ids, m->h_sid, (size_t)(n * k) * 4, cudaMemcpyHostToDevice, s),
                   "expert slots to the device", e->device));
    TRY(cuda_check(cudaMemcpyAsync(m->d_w, m->h_sw, (size_t)(n * k) * 4, cudaMemcpyHostToDevice, s),
                   "expert weights to the device", e->device));
    if (e->model->arch->moe_oai) { /* gpt-oss: the biases are by expert, the slices by slot */
        const float *const *vec = e->layers[layer].vec;
        memcpy(m->h_xid, m->ids, (size_t)(n * k) * sizeof *m->h_xid);
        TRY(cuda_check(cudaMemcpyAsync(m->d_xid, m->h_xid, (size_t)(n * k) * 4, cudaMemcpyHostToDevice, s),
                       "expert ids to the device", e->device));
        TRY(lrun_k_moe_gemv_oai(gt->dtype, lrun_cuda_moe_cache_data(c, 0, 0), lrun_cuda_moe_cache_data(c, 1, 0),
                                vec[LRUN_ARCH_TENSOR_GATE_EXPS_B], vec[LRUN_ARCH_TENSOR_UP_EXPS_B], m->d_xid,
                                gt->row_bytes, lrun_cuda_moe_cache_stride(c, 0), gt->ne[1], gt->ne[0], m->d_ids, e->xn,
                                k, n * k, m->d_act, e->stream));
        TRY(lrun_k_moe_gemv_oai(dt->dtype, lrun_cuda_moe_cache_data(c, 2, 0), NULL, vec[LRUN_ARCH_TENSOR_DOWN_EXPS_B],
                                NULL, m->d_xid, dt->row_bytes, lrun_cuda_moe_cache_stride(c, 2), dt->ne[1], dt->ne[0],
                                m->d_ids, m->d_act, 1, n * k, m->d_out, e->stream));
        return lrun_k_moe_combine(m->d_out, m->d_w, n, k, e->n_embd, e->x, e->stream);
    }
    TRY(lrun_k_moe_gemv(gt->dtype, lrun_cuda_moe_cache_data(c, 0, 0), lrun_cuda_moe_cache_data(c, 1, 0),
                        gt->row_bytes, lrun_cuda_moe_cache_stride(c, 0), gt->ne[1], gt->ne[0], m->d_ids, e->xn, k,
                        n * k, m->d_act, e->stream));
    TRY(lrun_k_moe_gemv(dt->dtype, lrun_cuda_moe_cache_data(c, 2, 0), NULL, dt->row_bytes,
                        lrun_cuda_moe_cache_stride(c, 2), dt->ne[1], dt->ne[0], m->d_ids, m->d_act, 1, n * k,
                        m->d_out, e->stream));
    return lrun_k_moe_combine(m->d_out, m->d_w, n, k, e->n_embd, e->x, e->stream);
}

/* Whether a cached block's chunk of n tokens takes ffn_cached_batch. */
static int cached_batch_ok(const lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t n, int64_t distinct)
{
    const struct cuda_moe *m = e->moe;
    const struct cuda_moe_cache *c = m->cache;
    if (!m->device_route || n > GEMV_MAX_ROWS || distinct > lrun_cuda_moe_cache_slots(c) || g[0].w->ne[1] > e->n_ff)
        return 0;
    if (g[0].w->dtype != g[1].w->dtype || g[0].w->row_bytes != g[1].w->row_bytes) return 0;
    for (int i = 0; i < 3; i++)
        if (!lrun_k_moe_gemv_supported(g[i].w->dtype, lrun_cuda_moe_cache_data(c, i, 0), g[i].w->row_bytes,
                                       lrun_cuda_moe_cache_stride(c, i), g[i].w->ne[0]))
            return 0;
    return 1;
}

/* A cached block (its experts' home is the host): each chosen expert's
 * slot acquired (a miss copies it in), then the device-id kernels for a
 * decode chunk, or expert by expert as a resident block's prefill runs. */
static lrun_status ffn_cached(lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t n)
{
    struct cuda_moe *m = e->moe;
    struct cuda_moe_cache *c = m->cache;
    const int64_t n_exp = e->model->info.n_expert;
    int64_t distinct = 0;
    for (int64_t x = 0; x < n_exp; x++) distinct += m->first[x + 1] > m->first[x];
    if (cached_batch_ok(e, g, n, distinct)) {
        for (int64_t x = 0; x < n_exp; x++)
            if (m->first[x + 1] > m->first[x]) TRY(lrun_cuda_moe_cache_acquire(e, c, layer, g, x, &m->slot_of[x]));
        TRY(ffn_cached_batch(e, g, layer, n, -1));
        for (int64_t x = 0; x < n_exp; x++)
            if (m->first[x + 1] > m->first[x]) TRY(lrun_cuda_moe_cache_release(e, c, m->slot_of[x]));
        lrun_cuda_moe_cache_settle(c);
        return lrun_cuda_moe_cache_decoded(e, c, layer, m->ids);
    }
    if (m->fast_rows) TRY(upload_pairs(e, n)); /* the same kernels as a resident block's chunk */
    TRY(cuda_check(cudaMemsetAsync(e->tmp, 0, (size_t)(n * e->n_embd) * sizeof(float), (cudaStream_t)e->stream),
                   "clearing the experts' sum", e->device));
    for (int64_t x = 0; x < n_exp; x++) {
        const int64_t cnt = m->first[x + 1] - m->first[x];
        if (cnt == 0) continue;
        int64_t slot;
        TRY(lrun_cuda_moe_cache_acquire(e, c, layer, g, x, &slot));
        const void *const data[3] = {lrun_cuda_moe_cache_data(c, 0, slot), lrun_cuda_moe_cache_data(c, 1, slot),
                                     lrun_cuda_moe_cache_data(c, 2, slot)};
        if (m->fast_rows) TRY(lrun_cuda_moe_expert_rows(e, g, layer, x, m->first[x], cnt, data));
        else TRY(run_expert(e, g, layer, x, m->pairs + m->first[x], cnt, data));
        TRY(lrun_cuda_moe_cache_release(e, c, slot));
    }
    lrun_cuda_moe_cache_settle(c);
    return lrun_k_add(e->x, e->tmp, n * e->n_embd, e->stream);
}

/* Whether a chunk of n tokens of block layer has every chosen expert
 * computed by the host pass (lrun_cuda_moe_ffn_add's order of ways: not
 * exact, not a streamed block's prefill, not hybrid, no expert cache). */
static int host_whole(const lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t n)
{
    const struct cuda_moe *m = e->moe;
    return !m->exact && !(m->fast_rows && n > GEMV_MAX_ROWS && lrun_cuda_moe_stream_covers(m->stream, layer)) &&
           !lrun_cuda_moe_cache_covers(m->cache, layer) && lrun_cuda_moe_host_takes(e, m->host, g, n);
}

/* Whether a chunk of n tokens of block layer runs hybrid (ffn_hybrid): a
 * decode chunk of a block the hybrid cache covers, whose misses the host pass
 * takes and whose hits the device-id kernels read. */
static int hybrid_takes(const lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t n)
{
    const struct cuda_moe *m = e->moe;
    return !m->exact && n <= GEMV_MAX_ROWS && lrun_cuda_moe_cache_hybrid(m->cache) &&
           lrun_cuda_moe_cache_covers(m->cache, layer) && lrun_cuda_moe_host_takes(e, m->host, g, n) &&
           cached_batch_ok(e, g, n, 0);
}

/* A hybrid block's decode chunk (docs/moe.md "Hybrid"), xn already on the
 * host (fetched with the router's logits): the chosen experts in a ready slot
 * (hits) queued on the GPU first, through the device-id kernels, their
 * weighted sum added into x; meanwhile the host pass computes the misses,
 * then its sum goes up and is added second (this order always: the same
 * bits run to run). Then the misses whose counts beat their victims' are
 * admitted on the copy stream, ready for a later step; nothing here waits
 * for a copy. */
static lrun_status ffn_hybrid(lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t n)
{
    struct cuda_moe *m = e->moe;
    struct cuda_moe_cache *c = m->cache;
    const int64_t n_exp = e->model->info.n_expert;
    int64_t n_miss = 0, other = -1;
    for (int64_t x = 0; x < n_exp; x++) {
        if (m->first[x + 1] == m->first[x]) continue;
        TRY(lrun_cuda_moe_cache_lookup(e, c, layer, x, &m->slot_of[x]));
        if (m->slot_of[x] >= 0) other = m->slot_of[x];
        else m->missed[n_miss++] = (int32_t)x;
    }
    if (other >= 0) { /* the GPU's share, queued before the host starts */
        TRY(ffn_cached_batch(e, g, layer, n, other));
        for (int64_t x = 0; x < n_exp; x++)
            if (m->first[x + 1] > m->first[x] && m->slot_of[x] >= 0)
                TRY(lrun_cuda_moe_cache_release(e, c, m->slot_of[x]));
    }
    if (n_miss > 0) { /* the host's share: the misses' pairs, grouped by expert as m->pairs */
        int64_t at = 0;
        m->hfirst[0] = 0;
        for (int64_t x = 0; x < n_exp; x++) {
            if (m->first[x + 1] > m->first[x] && m->slot_of[x] < 0)
                for (int64_t j = m->first[x]; j < m->first[x + 1]; j++) m->hpairs[at++] = m->pairs[j];
            m->hfirst[x + 1] = at;
        }
        TRY(lrun_cuda_moe_host_compute(e, m->host, g, n, m->hpairs, m->hfirst, m->w));
        TRY(lrun_k_add(e->x, e->tmp, n * e->n_embd, e->stream));
        TRY(lrun_cuda_moe_cache_admit(e, c, layer, g, m->missed, n_miss));
    }
    lrun_cuda_moe_cache_settle(c);
    return LRUN_OK;
}

/* The exact path's chunk (routed on the host): each expert with pairs, in
 * expert order, from where this chunk reads it (resident, its block's
 * slot, the expert cache's slot, or the host, where the CPU computes it);
 * then the weighted sum into x. */
static lrun_status ffn_exact(lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t layer, int64_t n)
{
    struct cuda_moe *m = e->moe;
    const int64_t n_exp = e->model->info.n_expert, k = e->model->info.n_expert_used;
    const int cached = lrun_cuda_moe_cache_covers(m->cache, layer);
    TRY(lrun_cuda_moe_exact_pairs(e, m->exact, m->pairs, m->w, n, k));
    for (int64_t x = 0; x < n_exp; x++) {
        const int64_t cnt = m->first[x + 1] - m->first[x];
        if (cnt == 0) continue;
        int64_t slot = -1;
        if (cached) TRY(lrun_cuda_moe_cache_acquire(e, m->cache, layer, g, x, &slot));
        struct lrun_tensor v[3];
        lrun_weight_ref s[3];
        for (int i = 0; i < 3; i++) {
            const void *data;
            v[i] = slice_view(&g[i], x, cached ? lrun_cuda_moe_cache_data(m->cache, i, slot) : NULL, &data);
            s[i] = (lrun_weight_ref){&v[i], data, g[i].on_host && !cached, 0};
        }
        TRY(lrun_cuda_moe_exact_expert(e, m->exact, s, m->d_x, m->first[x], cnt));
        if (cached) TRY(lrun_cuda_moe_cache_release(e, m->cache, slot));
    }
    if (cached) lrun_cuda_moe_cache_settle(m->cache);
    return lrun_cuda_moe_exact_combine(e, m->exact, n, k);
}

lrun_status lrun_cuda_moe_ffn_add(lrun_cuda_engine *e, const lrun_weights *W, int64_t layer, int64_t n,
                                  const lrun_arch_op *op)
{
    struct cuda_moe *m = e->moe;
    lrun_weight_ref g[3];
    for (int i = 0; i < 3; i++) g[i] = lrun_weights_get(W, layer, op->w[i]);
    if (!m->exact && m->device_route && n <= GEMV_MAX_ROWS && experts_on_device(g) && g[0].w->ne[1] <= e->n_ff)
        return ffn_device(e, g, layer, n); /* d_act holds n_ff per pair */
    const int64_t n_exp = e->model->info.n_expert, k = e->model->info.n_expert_used;
    cudaStream_t s = (cudaStream_t)e->stream;
    TRY(cuda_check(cudaMemcpyAsync(m->h_router, m->d_router, (size_t)(n * n_exp) * sizeof(float),
                                   cudaMemcpyDeviceToHost, s),
                   "router logits to the host", e->device));
    /* hybrid, and a block whose chosen experts the host pass takes whole: xn comes down with the logits, so
     * the host pass needs no sync of its own (hybrid: after the GPU's share is queued) */
    const int hybrid = hybrid_takes(e, g, layer, n);
    const int host_all = !hybrid && host_whole(e, g, layer, n);
    if (hybrid || host_all) TRY(lrun_cuda_moe_host_fetch(e, n));
    const double t0 = lrun_now_seconds();
    TRY(cuda_check(cudaStreamSynchronize(s), "waiting for the router", e->device));
    if (host_all) e->stats.host_wait_seconds += lrun_now_seconds() - t0; /* the host pass's wait for its rows */
    void (*route)(float *, int64_t, int64_t, int32_t *, float *) = e->model->arch->moe_oai ? lrun_moe_route_oai
                                                                                           : lrun_moe_route;
    for (int64_t i = 0; i < n; i++) route(m->h_router + i * n_exp, n_exp, k, m->ids + i * k, m->w + i * k);
    group_pairs(m, n, n_exp, k);
    lrun_moe_counts_add(&m->counts, layer, m->first, n);
    if (m->exact) return ffn_exact(e, g, layer, n);
    /* a prefill chunk of a streamed block streams, but for a cached block's experts already in slots */
    if (m->fast_rows && n > GEMV_MAX_ROWS && lrun_cuda_moe_stream_covers(m->stream, layer)) return ffn_rows(e, g, layer, n);
    if (hybrid) return ffn_hybrid(e, g, layer, n);
    if (lrun_cuda_moe_cache_covers(m->cache, layer)) return ffn_cached(e, g, layer, n);
    if (host_all) { /* every expert of the block computed on the host, at once */
        TRY(lrun_cuda_moe_host_compute(e, m->host, g, n, m->pairs, m->first, m->w));
        return lrun_k_add(e->x, e->tmp, n * e->n_embd, e->stream);
    }
    if (m->fast_rows) return ffn_rows(e, g, layer, n);
    TRY(cuda_check(cudaMemsetAsync(e->tmp, 0, (size_t)(n * e->n_embd) * sizeof(float), s), "clearing the experts' sum",
                   e->device));
    for (int64_t x = 0; x < n_exp; x++) {
        const int64_t cnt = m->first[x + 1] - m->first[x];
        if (cnt > 0) TRY(run_expert(e, g, layer, x, m->pairs + m->first[x], cnt, NULL));
    }
    return lrun_k_add(e->x, e->tmp, n * e->n_embd, e->stream);
}
