/* engine_cuda_moe.c — a mixture of experts on CUDA, first version
 * (docs/moe.md): every expert where the placement put it (resident,
 * streamed with its block, or host-computed slice by slice), fast numerics.
 *
 *   MOE_ROUTE    router logits (n, n_expert) = xn · Wrᵀ on the device (the
 *                GEMV/cuBLAS matmul of any weight);
 *   MOE_FFN_ADD  the logits come to the host (one stream sync), where
 *                lrun_moe_route picks each token's experts and weights as
 *                the CPU does (so both backends route alike up to the
 *                logits' bits); the (token, slot) pairs are grouped by
 *                expert; per expert with pairs, its xn rows are gathered on
 *                the device, gate and up multiplied by the expert's slices of
 *                the stacked tensors (the existing GEMV for ≤ 8 rows, cuBLAS
 *                beyond: a grouped GEMM, one per expert), SwiGLU, down; each
 *                output row is added times its weight into tmp (cublasSaxpy),
 *                and tmp into the residual stream.
 *
 * The host round trip per MoE block makes steps run eagerly (no CUDA
 * graphs); the exact path refuses experts (lrun_cuda_exact_eligible). A
 * device-side top-k and gather, and expert-level placement, are what comes
 * next (docs/moe.md). */
#include <cublas_v2.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/moe_route.h"
#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_offload.h"
#include "kernels.h"

struct cuda_moe {
    float *d_router;    /* (B, n_expert) device: the router's logits */
    float *d_x;         /* (B, n_embd) device: one expert's gathered rows of xn */
    float *d_y;         /* (B, n_embd) device: its outputs */
    size_t d_bytes;     /* of the one device block the three are carved from */
    float *h_router;    /* (B, n_expert) pinned: the logits, then probabilities */
    int32_t *ids;       /* (B, k) each token's experts */
    float *w;           /* (B, k) and weights */
    int32_t *pairs;     /* (B·k) token·k + slot, grouped by expert */
    int64_t *first;     /* (n_expert + 1) where each expert's pairs start */
    int64_t *fill;      /* (n_expert) cursors while grouping */
    lrun_moe_counts counts; /* selections per block and expert, for m:stats().experts */
};

lrun_status lrun_cuda_moe_init(lrun_cuda_engine *e)
{
    const lrun_model_info *in = &e->model->info;
    if (in->n_expert == 0) return LRUN_OK;
    struct cuda_moe *m = calloc(1, sizeof *m);
    if (!m) return lrun_fail_oom(sizeof *m, 0, "engine: mixture-of-experts record");
    e->moe = m;
    const size_t B = (size_t)e->n_batch_max, E = (size_t)in->n_expert, k = (size_t)in->n_expert_used;
    const size_t router = (B * E * sizeof(float) + 255) / 256 * 256, rows = (B * (size_t)e->n_embd * 4 + 255) / 256 * 256;
    m->d_bytes = router + 2 * rows;
    TRY(lrun_oom_phase(lrun_device_alloc(e->device, m->d_bytes, "mixture-of-experts scratch", (void **)&m->d_router),
                       "scratch"));
    m->d_x = (float *)((char *)m->d_router + router);
    m->d_y = (float *)((char *)m->d_x + rows);
    TRY(lrun_oom_phase(lrun_host_alloc(LRUN_TIER_PINNED, B * E * sizeof(float), "router logits", (void **)&m->h_router),
                       "scratch"));
    m->ids = malloc(B * k * sizeof *m->ids);
    m->w = malloc(B * k * sizeof *m->w);
    m->pairs = malloc(B * k * sizeof *m->pairs);
    m->first = malloc((E + 1) * sizeof *m->first);
    m->fill = malloc(E * sizeof *m->fill);
    if (!m->ids || !m->w || !m->pairs || !m->first || !m->fill)
        return lrun_fail_oom(0, 0, "engine: routing tables for %zu tokens", B);
    TRY(lrun_moe_counts_init(&m->counts, in->n_layer, in->n_expert));
    e->graphs_enabled = 0; /* routing is host work between the block's launches: steps run eagerly */
    return LRUN_OK;
}

void lrun_cuda_moe_free(lrun_cuda_engine *e)
{
    struct cuda_moe *m = e->moe;
    if (!m) return;
    if (m->d_router) lrun_device_release(e->device, m->d_router, m->d_bytes);
    lrun_host_release(LRUN_TIER_PINNED, m->h_router);
    free(m->ids);
    free(m->w);
    free(m->pairs);
    free(m->first);
    free(m->fill);
    lrun_moe_counts_free(&m->counts);
    free(m);
    e->moe = NULL;
}

const lrun_moe_counts *lrun_cuda_moe_counts(const lrun_cuda_engine *e) { return e->moe ? &e->moe->counts : NULL; }

void lrun_cuda_moe_reset_counts(lrun_cuda_engine *e)
{
    if (e->moe) lrun_moe_counts_reset(&e->moe->counts);
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
    return moe_matmul(e, r.w, r.data, r.on_host, e->xn, n, e->moe->d_router);
}

/* Expert x's slice of a stacked tensor as a 2-D view (its data where this chunk reads it). */
static struct lrun_tensor slice_view(const lrun_weight_ref *ref, int64_t x, const void **data)
{
    struct lrun_tensor v = *ref->w;
    const size_t bytes = (size_t)v.ne[1] * v.row_bytes;
    v.ne[2] = 1;
    v.ndim = 2;
    v.nbytes = bytes;
    *data = (const char *)ref->data + (size_t)x * bytes;
    v.data = (void *)*data; /* what a host-computed product reads */
    return v;
}

/* Expert x over its pairs: gather, gate/up, SwiGLU, down, weighted into tmp. */
static lrun_status run_expert(lrun_cuda_engine *e, const lrun_weight_ref g[3], int64_t x, const int32_t *pairs,
                              int64_t cnt)
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
        const struct lrun_tensor v = slice_view(&g[i], x, &data);
        TRY(moe_matmul(e, &v, data, g[i].on_host, m->d_x, cnt, outs[i]));
    }
    TRY(lrun_k_swiglu(e->gate, e->up, e->gate, cnt * e->n_ff, e->stream));
    const void *data;
    const struct lrun_tensor v = slice_view(&g[2], x, &data);
    TRY(moe_matmul(e, &v, data, g[2].on_host, e->gate, cnt, m->d_y));
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

/* The (token, slot) pairs grouped by expert, as the CPU groups them. */
static void group_pairs(struct cuda_moe *m, int64_t n, int64_t n_exp, int64_t k)
{
    memset(m->first, 0, (size_t)(n_exp + 1) * sizeof *m->first);
    for (int64_t j = 0; j < n * k; j++) m->first[m->ids[j] + 1]++;
    for (int64_t x = 0; x < n_exp; x++) m->first[x + 1] += m->first[x];
    for (int64_t x = 0; x < n_exp; x++) m->fill[x] = m->first[x];
    for (int64_t j = 0; j < n * k; j++) m->pairs[m->fill[m->ids[j]]++] = (int32_t)j;
}

lrun_status lrun_cuda_moe_ffn_add(lrun_cuda_engine *e, const lrun_weights *W, int64_t layer, int64_t n,
                                  const lrun_arch_op *op)
{
    struct cuda_moe *m = e->moe;
    const int64_t n_exp = e->model->info.n_expert, k = e->model->info.n_expert_used;
    cudaStream_t s = (cudaStream_t)e->stream;
    TRY(cuda_check(cudaMemcpyAsync(m->h_router, m->d_router, (size_t)(n * n_exp) * sizeof(float),
                                   cudaMemcpyDeviceToHost, s),
                   "router logits to the host", e->device));
    TRY(cuda_check(cudaStreamSynchronize(s), "waiting for the router", e->device));
    for (int64_t i = 0; i < n; i++) lrun_moe_route(m->h_router + i * n_exp, n_exp, k, m->ids + i * k, m->w + i * k);
    group_pairs(m, n, n_exp, k);
    lrun_moe_counts_add(&m->counts, layer, m->first, n);
    TRY(cuda_check(cudaMemsetAsync(e->tmp, 0, (size_t)(n * e->n_embd) * sizeof(float), s), "clearing the experts' sum",
                   e->device));
    lrun_weight_ref g[3];
    for (int i = 0; i < 3; i++) g[i] = lrun_weights_get(W, layer, op->w[i]);
    for (int64_t x = 0; x < n_exp; x++) {
        const int64_t cnt = m->first[x + 1] - m->first[x];
        if (cnt > 0) TRY(run_expert(e, g, x, m->pairs + m->first[x], cnt));
    }
    return lrun_k_add(e->x, e->tmp, n * e->n_embd, e->stream);
}
