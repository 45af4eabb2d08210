/* engine_cuda_moe_exact.c — a mixture of experts on the CUDA engine's exact
 * path: the CPU engine's bits (runtime/cpu/moe_cpu.c, docs/moe.md "Exact
 * numerics on CUDA"), every op one the CPU's order fixes:
 *
 *   logits = xn · Wrᵀ           float router: lrun_k_moe_router_exact (the CPU's
 *                               AVX2 float dot); Q4_0/Q4_1/Q8_0: the q8dot product
 *   routing                     on the host, lrun_moe_route itself (engine_cuda_moe.c)
 *   per expert with pairs       its tokens' xn rows gathered (exact copies), then
 *                               gate|up = q8dot(quantize_q8(rows)), SwiGLU exact
 *                               (quantized for down), down = q8dot into its rows of Y
 *   x += Σ_s Y[pos_s] · w_s     lrun_k_moe_combine_exact: products, slot order, residual
 *
 * A host-computed expert (experts_on_host) runs lrun_cpu_matmul on its
 * slice through lrun_cuda_exact_matmul, the CPU engine's own product; a
 * cached one reads the expert cache's device copy of the same bytes. Either
 * way each output row is the one the CPU computes, whatever rows share the
 * call (cpu_matmul.c: rows are independent), so grouping by expert changes
 * no bit. It is what numerics = "exact" does for a mixture of experts since
 * tests/moe_exact_gpu_spec.lua passed on the H200 (sessions 7 and 8). */
#include <stdlib.h>
#include <string.h>

#include "cuda/engine_cuda_moe_exact.h"
#include "kernels.h"
#include "residency/weights.h"

struct cuda_moe_exact {
    void *d_base;      /* device block: Y, tok, pos, w */
    size_t d_bytes;
    float *Y;          /* (B·k, n_embd) each grouped pair's down projection */
    int32_t *tok;      /* (B·k) each grouped pair's token */
    int32_t *pos;      /* (B·k) by token·k + slot: the pair's row of Y */
    float *w;          /* (B·k) by token·k + slot: its weight */
    void *h_base;      /* pinned: h_tok, h_pos, h_w (B·k each) */
    size_t h_bytes;
    int32_t *h_tok, *h_pos;
    float *h_w;
    size_t table;      /* bytes of each (B·k) table, 256-rounded */
};

static size_t round256(size_t b) { return (b + 255) / 256 * 256; }

static int q8dot_dtype(lrun_dtype t) { return t == LRUN_DTYPE_Q4_0 || t == LRUN_DTYPE_Q4_1 || t == LRUN_DTYPE_Q8_0; }
static int float_dtype(lrun_dtype t) { return t == LRUN_DTYPE_F32 || t == LRUN_DTYPE_F16 || t == LRUN_DTYPE_BF16; }

/* Why block l's router (op MOE_ROUTE) cannot be exact, or NULL. */
static const char *router_refusal(const lrun_cuda_engine *e, const struct lrun_model_layer *L, const lrun_arch_op *op)
{
    const struct lrun_tensor *r = L->t[op->w[0]];
    if (op->w[1] != LRUN_ARCH_TENSOR_NONE && L->t[op->w[1]])
        return "exact numerics on CUDA: a router bias (gpt-oss) has no exact variant";
    if (!r || !(q8dot_dtype(r->dtype) || (float_dtype(r->dtype) && e->n_embd % 16 == 0)))
        return "exact numerics on CUDA: the router (ffn_gate_inp) must be F32/F16/BF16 (width a multiple of 16) "
               "or Q4_0/Q4_1/Q8_0";
    return NULL;
}

/* Why block l's experts (op MOE_FFN_ADD) cannot be exact, or NULL. */
static const char *experts_refusal(const lrun_cuda_engine *e, const struct lrun_model_layer *L, const lrun_arch_op *op)
{
    const struct lrun_tensor *g = L->t[op->w[0]], *u = L->t[op->w[1]], *d = L->t[op->w[2]];
    if (!g || !u || !d) return "exact numerics on CUDA: a block lacks an expert tensor";
    if (!q8dot_dtype(g->dtype) || !q8dot_dtype(d->dtype) || g->dtype != u->dtype)
        return "exact numerics on CUDA: expert tensors must be Q4_0/Q4_1/Q8_0 (gate and up alike)";
    if (g->packed || u->packed || d->packed)
        return "exact numerics on CUDA: packed expert tensors have no exact variant";
    /* the CPU's SwiGLU strides by n_ff: the experts must be that wide */
    if (g->ne[1] != e->n_ff || u->ne[1] != e->n_ff || d->ne[0] != e->n_ff || d->ne[1] != e->n_embd)
        return "exact numerics on CUDA: expert widths must equal the model's feed-forward length";
    return NULL;
}

const char *lrun_cuda_moe_exact_refusal(const lrun_cuda_engine *e)
{
    const lrun_model *m = e->model;
    if (!lrun_arch_has_experts(m->arch)) return NULL;
    if (m->arch->moe_oai) return "exact numerics on CUDA: gpt-oss's experts have no exact variant";
    if (m->info.n_expert_used <= 0 || m->info.n_expert_used > m->info.n_expert)
        return "exact numerics on CUDA: the model's expert counts are inconsistent";
    for (int64_t l = 0; l < m->info.n_layer; l++)
        for (int i = 0; i < m->arch->n_ops; i++) {
            const lrun_arch_op *op = &m->arch->ops[i];
            const char *why = op->kind == LRUN_ARCH_OP_MOE_ROUTE     ? router_refusal(e, &m->layers[l], op)
                              : op->kind == LRUN_ARCH_OP_MOE_FFN_ADD ? experts_refusal(e, &m->layers[l], op)
                                                                      : NULL;
            if (why) return why;
        }
    return NULL;
}

/* The device block's parts: Y (B·k, n_embd), then three (B·k) tables. */
static size_t exact_layout(const lrun_cuda_engine *e, size_t *y, size_t *table)
{
    const size_t Bk = (size_t)e->n_batch_max * (size_t)e->model->info.n_expert_used;
    *y = round256(Bk * (size_t)e->n_embd * sizeof(float));
    *table = round256(Bk * 4);
    return *y + 3 * *table;
}

size_t lrun_cuda_moe_exact_bytes(const lrun_cuda_engine *e)
{
    size_t y, t;
    if (e->model->info.n_expert == 0 || !(e->exact || lrun_cuda_exact_eligible(e))) return 0;
    return exact_layout(e, &y, &t);
}

lrun_status lrun_cuda_moe_exact_init(lrun_cuda_engine *e, struct cuda_moe_exact **out)
{
    *out = NULL;
    if (!e->exact || e->model->info.n_expert == 0) return LRUN_OK;
    struct cuda_moe_exact *x = calloc(1, sizeof *x);
    if (!x) return lrun_fail_oom(sizeof *x, 0, "engine: exact expert record");
    *out = x;
    size_t y;
    x->d_bytes = exact_layout(e, &y, &x->table);
    TRY(lrun_oom_phase(lrun_device_alloc(e->device, x->d_bytes, "exact expert scratch", &x->d_base), "scratch"));
    char *p = x->d_base;
    x->Y = (float *)p;
    x->tok = (int32_t *)(p + y);
    x->pos = (int32_t *)(p + y + x->table);
    x->w = (float *)(p + y + 2 * x->table);
    x->h_bytes = 3 * x->table;
    TRY(lrun_oom_phase(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, x->h_bytes,
                                              "exact expert pair tables", &x->h_base),
                       "scratch"));
    x->h_tok = x->h_base;
    x->h_pos = (int32_t *)((char *)x->h_base + x->table);
    x->h_w = (float *)((char *)x->h_base + 2 * x->table);
    return LRUN_OK;
}

void lrun_cuda_moe_exact_free(lrun_cuda_engine *e, struct cuda_moe_exact *x)
{
    if (!x) return;
    if (x->d_base) lrun_device_release(e->device, x->d_base, x->d_bytes);
    if (x->h_base)
        lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, x->h_base, x->h_bytes);
    free(x);
}

lrun_status lrun_cuda_moe_exact_router(lrun_cuda_engine *e, const lrun_weight_ref *r, int64_t n, float *logits)
{
    const struct lrun_tensor *t = r->w;
    if (r->on_host || q8dot_dtype(t->dtype)) return lrun_cuda_exact_matmul(e, r, &logits, 1, e->xn, n, 0);
    return lrun_k_moe_router_exact(t->dtype, r->data, t->row_bytes, t->ne[1], t->ne[0], e->xn, n, logits,
                                   e->stream);
}

lrun_status lrun_cuda_moe_exact_pairs(lrun_cuda_engine *e, struct cuda_moe_exact *x, const int32_t *pairs,
                                      const float *w, int64_t n, int64_t k)
{
    cudaStream_t s = (cudaStream_t)e->stream;
    const size_t bytes = (size_t)(n * k) * 4;
    /* the host routed after a stream sync: the last chunk's copies out of these tables are done */
    for (int64_t r = 0; r < n * k; r++) {
        x->h_tok[r] = pairs[r] / (int32_t)k;
        x->h_pos[pairs[r]] = (int32_t)r;
    }
    memcpy(x->h_w, w, bytes);
    TRY(cuda_check(cudaMemcpyAsync(x->tok, x->h_tok, bytes, cudaMemcpyHostToDevice, s), "expert pair tokens",
                   e->device));
    TRY(cuda_check(cudaMemcpyAsync(x->pos, x->h_pos, bytes, cudaMemcpyHostToDevice, s), "expert pair rows",
                   e->device));
    return cuda_check(cudaMemcpyAsync(x->w, x->h_w, bytes, cudaMemcpyHostToDevice, s), "expert pair weights",
                      e->device);
}

lrun_status lrun_cuda_moe_exact_expert(lrun_cuda_engine *e, struct cuda_moe_exact *x, const lrun_weight_ref s[3],
                                       float *rows, int64_t at, int64_t cnt)
{
    const int64_t d = e->n_embd;
    for (int i = 0; i < 3; i++)
        if (s[i].w->packed)
            return lrun_fail(LRUN_E_UNSUPPORTED, "engine on %s: exact numerics: expert tensor %s is packed",
                             e->device->name, s[i].w->name);
    TRY(lrun_k_embed(LRUN_DTYPE_F32, e->xn, (size_t)d * sizeof(float), d, x->tok + at, cnt, rows, e->stream));
    float *const gu[2] = {e->gate, e->up};
    TRY(lrun_cuda_exact_matmul(e, s, gu, 2, rows, cnt, 0));
    int quantized;
    TRY(lrun_cuda_exact_swiglu(e, &s[2], 1, cnt, &quantized));
    float *out = x->Y + at * d;
    return lrun_cuda_exact_matmul(e, &s[2], &out, 1, e->gate, cnt, quantized);
}

lrun_status lrun_cuda_moe_exact_combine(lrun_cuda_engine *e, struct cuda_moe_exact *x, int64_t n, int64_t k)
{
    return lrun_k_moe_combine_exact(x->Y, x->pos, x->w, n, k, e->n_embd, e->x, e->stream);
}
