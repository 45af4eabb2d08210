/* moe_cpu.c — a mixture of experts on the CPU: the router (MOE_ROUTE) and
 * the routed experts (MOE_FFN_ADD), in llama.cpp's arithmetic
 * (build_moe_ffn with softmax gating and norm_w, as its llama/Mixtral and
 * qwen3moe graphs call it):
 *
 *   logits = xn · Wrᵀ                    (n_tok, n_expert), f32, the matmul of any other weight
 *   p      = softmax(logits)             lrun_cpu_softmax (ggml_soft_max's order)
 *   E      = the n_used largest p        in descending order; equal values by the lower index first
 *   w_s    = p[E_s] / max(sum_s p[E_s], 2^-14)   the sum in double as ggml_vec_sum_f32, then a f32 divide
 *   o_s    = w_s · (swiglu(xn G_eᵀ, xn U_eᵀ) D_eᵀ)   per slot s, e = E_s
 *   out    = ((o_0 + o_1) + o_2) + …     ggml_add of the slots in slot order
 *
 * Prefill groups the chunk's (token, slot) pairs by expert, so each chosen
 * expert's three matrices are read once per chunk: its rows of xn are
 * gathered, multiplied with the expert's slices of the stacked tensors
 * (slice e of {k, n, n_expert} is rows [e·n, (e+1)·n), contiguous, so any
 * dtype the CPU multiplies works), and the outputs scattered to the
 * pairs' slots. The matmul kernel computes each output row alone in the
 * same order whatever the row count (cpu_matmul.c), so grouping changes no
 * bit, and every product is the one llama.cpp's mul_mat_id computes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/cpu_matmul.h"
#include "cpu/engine_cpu_internal.h"
#include "cpu/moe_route.h"
#include "residency/weights.h"

/* ggml's clamp of the chosen probabilities' sum: the smallest normal f16 */
#define MOE_MIN_WEIGHT_SUM 6.103515625e-5f

/* Bytes of each expert's slice of a stacked tensor t ({k, n, n_expert}). */
static size_t slice_bytes(const struct lrun_tensor *t) { return (size_t)t->ne[1] * t->row_bytes; }

void lrun_cpu_moe_route(cpu_engine *e, const lrun_weights *W, int64_t layer, int64_t n, const lrun_arch_op *op)
{
    const lrun_weight_ref r = lrun_weights_get(W, layer, op->w[0]);
    lrun_cpu_matmul(e->pool, r.w->dtype, r.data, r.w->row_bytes, r.w->ne[1], r.w->ne[0], e->xn, n, e->router,
                    e->mm_work);
    const float *bias = op->w[1] != LRUN_ARCH_TENSOR_NONE ? e->layers[layer].vec[op->w[1]] : NULL;
    const int64_t n_exp = e->model->info.n_expert;
    for (int64_t i = 0; bias && i < n; i++) lrun_cpu_add(e->router + i * n_exp, bias, n_exp); /* gpt-oss: ggml_add */
}

void lrun_moe_route(float *p, int64_t n_exp, int64_t k, int32_t *ids, float *w)
{
    lrun_cpu_softmax(p, n_exp);
    for (int64_t s = 0; s < k; s++) { /* the s-th largest, lower index first among equals */
        int32_t best = -1;
        for (int64_t x = 0; x < n_exp; x++) {
            int taken = 0;
            for (int64_t t = 0; t < s && !taken; t++) taken = ids[t] == x;
            if (!taken && (best < 0 || p[x] > p[best])) best = (int32_t)x;
        }
        ids[s] = best;
        w[s] = p[best];
    }
    double sum = 0.0;
    for (int64_t s = 0; s < k; s++) sum += (double)w[s];
    float fsum = (float)sum;
    if (fsum < MOE_MIN_WEIGHT_SUM) fsum = MOE_MIN_WEIGHT_SUM;
    for (int64_t s = 0; s < k; s++) w[s] = w[s] / fsum;
}

void lrun_moe_route_oai(float *l, int64_t n_exp, int64_t k, int32_t *ids, float *w)
{
    for (int64_t s = 0; s < k; s++) { /* the s-th largest logit, lower index first among equals */
        int32_t best = -1;
        for (int64_t x = 0; x < n_exp; x++) {
            int taken = 0;
            for (int64_t t = 0; t < s && !taken; t++) taken = ids[t] == x;
            if (!taken && (best < 0 || l[x] > l[best])) best = (int32_t)x;
        }
        ids[s] = best;
        w[s] = l[best];
    }
    lrun_cpu_softmax(w, k); /* ggml_soft_max of the chosen logits */
}

/* swiglu_oai (ggml_compute_forward_swiglu_oai_f32, alpha 1.702, limit 7):
 * g (n) = min(g, 7) / (1 + expf(1.702 · -min(g, 7))) · (clamp(u, -7, 7) + 1). */
static void swiglu_oai(float *g, const float *u, int64_t n)
{
    const float alpha = 1.702f, limit = 7.0f;
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i] < limit ? g[i] : limit; /* std::min(g, limit) */
        const float y = u[i] < -limit ? -limit : limit < u[i] ? limit : u[i]; /* std::clamp */
        const float out_glu = x / (1.0f + expf(alpha * (-x)));
        g[i] = out_glu * (y + 1.0f);
    }
}

lrun_status lrun_moe_counts_init(lrun_moe_counts *c, int64_t n_layer, int64_t n_expert)
{
    memset(c, 0, sizeof *c);
    if (n_expert <= 0 || n_layer <= 0) return LRUN_OK;
    c->counts = calloc((size_t)(n_layer * n_expert), sizeof *c->counts);
    c->tokens = calloc((size_t)n_layer, sizeof *c->tokens);
    if (!c->counts || !c->tokens) {
        lrun_moe_counts_free(c);
        return lrun_fail_oom((size_t)(n_layer * (n_expert + 1)) * sizeof(int64_t), 0,
                             "engine: expert statistics for %lld blocks", (long long)n_layer);
    }
    c->n_layer = n_layer;
    c->n_expert = n_expert;
    return LRUN_OK;
}

void lrun_moe_counts_free(lrun_moe_counts *c)
{
    free(c->counts);
    free(c->tokens);
    memset(c, 0, sizeof *c);
}

void lrun_moe_counts_reset(lrun_moe_counts *c)
{
    if (!c->counts) return;
    memset(c->counts, 0, (size_t)(c->n_layer * c->n_expert) * sizeof *c->counts);
    memset(c->tokens, 0, (size_t)c->n_layer * sizeof *c->tokens);
}

void lrun_moe_counts_add(lrun_moe_counts *c, int64_t layer, const int64_t *first, int64_t n)
{
    if (!c->counts || layer < 0 || layer >= c->n_layer) return;
    int64_t *row = c->counts + layer * c->n_expert;
    for (int64_t x = 0; x < c->n_expert; x++) row[x] += first[x + 1] - first[x];
    c->tokens[layer] += n;
}

/* Token i's chosen experts and weights from its router logits (in place: the probabilities). */
static void route_token(cpu_engine *e, int64_t i)
{
    const int64_t n_exp = e->model->info.n_expert, k = e->model->info.n_expert_used;
    (e->model->arch->moe_oai ? lrun_moe_route_oai : lrun_moe_route)(e->router + i * n_exp, n_exp, k,
                                                                    e->moe_ids + i * k, e->moe_w + i * k);
}

static void route_rows(void *ctx, int64_t first, int64_t last)
{
    for (int64_t i = first; i < last; i++) route_token(ctx, i);
}

/* The (token, slot) pairs of each expert, grouped: moe_pairs[moe_first[x] .. moe_first[x+1]) are
 * expert x's, each token·k + slot, in token order. */
static void group_pairs(cpu_engine *e, int64_t n)
{
    const int64_t n_exp = e->model->info.n_expert, k = e->model->info.n_expert_used;
    memset(e->moe_first, 0, (size_t)(n_exp + 1) * sizeof *e->moe_first);
    for (int64_t j = 0; j < n * k; j++) e->moe_first[e->moe_ids[j] + 1]++;
    for (int64_t x = 0; x < n_exp; x++) e->moe_first[x + 1] += e->moe_first[x];
    for (int64_t x = 0; x < n_exp; x++) e->moe_fill[x] = e->moe_first[x];
    for (int64_t j = 0; j < n * k; j++) e->moe_pairs[e->moe_fill[e->moe_ids[j]]++] = (int32_t)j;
}

struct expert_ctx {
    cpu_engine *e;
    const int32_t *pairs;   /* (cnt) token·k + slot */
    int64_t cnt;
    const float *bias_gate, *bias_up; /* (n_ff) the expert's biases (gpt-oss), or NULL */
    const float *bias_down;           /* (n_embd) */
};

static void swiglu_group(void *ctx, int64_t first, int64_t last)
{
    const struct expert_ctx *c = ctx;
    const cpu_engine *e = c->e;
    const int64_t f = e->n_ff;
    if (c->bias_gate) /* gpt-oss: each product plus the expert's bias (ggml_add_id), then swiglu_oai */
        for (int64_t j = first; j < last; j++) {
            lrun_cpu_add(e->up + j * f, c->bias_up, f);
            lrun_cpu_add(e->gate + j * f, c->bias_gate, f);
            swiglu_oai(e->gate + j * f, e->up + j * f, f);
        }
    else
        for (int64_t j = first; j < last; j++) lrun_cpu_swiglu(e->gate + j * f, e->up + j * f, f);
}

/* slot (token·k + s) = w · the expert's output row j (ggml_mul: f32 products) */
static void scatter_group(void *ctx, int64_t first, int64_t last)
{
    const struct expert_ctx *c = ctx;
    const cpu_engine *e = c->e;
    const int64_t d = e->n_embd;
    for (int64_t j = first; j < last; j++) {
        const int32_t pair = c->pairs[j];
        const float w = e->moe_w[pair], *y = e->moe_y + j * d;
        float *o = e->moe_slot + (int64_t)pair * d;
        if (c->bias_down) /* gpt-oss: (y + b) · w, ggml_add_id then ggml_mul */
            for (int64_t t = 0; t < d; t++) o[t] = (y[t] + c->bias_down[t]) * w;
        else
            for (int64_t t = 0; t < d; t++) o[t] = y[t] * w;
    }
}

/* tmp[i] = slot 0 + slot 1 + … of token i, in slot order */
static void sum_slots(void *ctx, int64_t first, int64_t last)
{
    const cpu_engine *e = ctx;
    const int64_t d = e->n_embd, k = e->model->info.n_expert_used;
    for (int64_t i = first; i < last; i++) {
        float *out = e->tmp + i * d;
        memcpy(out, e->moe_slot + i * k * d, (size_t)d * sizeof *out);
        for (int64_t s = 1; s < k; s++) lrun_cpu_add(out, e->moe_slot + (i * k + s) * d, d);
    }
}

/* Expert x over its gathered pairs: gate, up, SwiGLU, down, weighted into the slots. */
static void run_expert(cpu_engine *e, int64_t layer, const lrun_weight_ref g[3], int64_t x, const int32_t *pairs,
                       int64_t cnt)
{
    const int64_t d = e->n_embd, k = e->model->info.n_expert_used;
    for (int64_t j = 0; j < cnt; j++) memcpy(e->moe_x + j * d, e->xn + (pairs[j] / k) * d, (size_t)d * sizeof(float));
    float *const outs[2] = {e->gate, e->up};
    for (int i = 0; i < 3; i++) lrun_weight_ring_note_slice(e->wr, g[i].w, slice_bytes(g[i].w));
    for (int i = 0; i < 2; i++) {
        const struct lrun_tensor *t = g[i].w;
        lrun_cpu_matmul(e->pool, t->dtype, (const char *)g[i].data + (size_t)x * slice_bytes(t), t->row_bytes, t->ne[1],
                        t->ne[0], e->moe_x, cnt, outs[i], e->mm_work);
    }
    const float *const *vec = e->layers[layer].vec; /* the experts' biases, NULL but for gpt-oss */
    const float *bg = vec[LRUN_ARCH_TENSOR_GATE_EXPS_B], *bu = vec[LRUN_ARCH_TENSOR_UP_EXPS_B];
    const float *bd = vec[LRUN_ARCH_TENSOR_DOWN_EXPS_B];
    struct expert_ctx c = {e, pairs, cnt, bg ? bg + x * e->n_ff : NULL, bu ? bu + x * e->n_ff : NULL,
                           bd ? bd + x * d : NULL};
    lrun_cpu_parallel_for(e->pool, cnt, 4, swiglu_group, &c);
    const struct lrun_tensor *t = g[2].w;
    lrun_cpu_matmul(e->pool, t->dtype, (const char *)g[2].data + (size_t)x * slice_bytes(t), t->row_bytes, t->ne[1],
                    t->ne[0], e->gate, cnt, e->moe_y, e->mm_work);
    lrun_cpu_parallel_for(e->pool, cnt, 4, scatter_group, &c);
}

void lrun_cpu_moe_ffn(cpu_engine *e, const lrun_weights *W, int64_t layer, int64_t n, const lrun_arch_op *op)
{
    lrun_cpu_parallel_for(e->pool, n, 4, route_rows, e);
    group_pairs(e, n);
    lrun_moe_counts_add(&e->moe_counts, layer, e->moe_first, n);
    lrun_weight_ref g[3];
    for (int i = 0; i < 3; i++) g[i] = lrun_weights_get(W, layer, op->w[i]);
    for (int64_t x = 0; x < e->model->info.n_expert; x++) {
        const int64_t cnt = e->moe_first[x + 1] - e->moe_first[x];
        if (cnt > 0) run_expert(e, layer, g, x, e->moe_pairs + e->moe_first[x], cnt);
    }
    lrun_cpu_parallel_for(e->pool, n, 4, sum_slots, e);
}
