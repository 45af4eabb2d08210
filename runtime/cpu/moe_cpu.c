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
#include "cpu/cpu_matmul_grouped.h"
#include "cpu/cpu_matmul_packed.h"
#include "cpu/engine_cpu_internal.h"
#include "cpu/moe_route.h"
#include "residency/expert_store.h"
#include "residency/weights.h"

/* ggml's clamp of the chosen probabilities' sum: the smallest normal f16 */
#define MOE_MIN_WEIGHT_SUM 6.103515625e-5f
/* Most chosen experts one grouped product takes (its parts table is on the stack). */
#define MOE_GROUP_MAX 64

/* Bytes of each expert's slice of a stacked tensor t ({k, n, n_expert}). */
static size_t slice_bytes(const struct lrun_tensor *t) { return (size_t)t->ne[1] * t->row_bytes; }

void lrun_cpu_moe_route(cpu_engine *e, const lrun_weights *W, int64_t layer, int64_t n, const lrun_arch_op *op)
{
    const lrun_weight_ref r = lrun_weights_get(W, layer, op->w[0]);
    lrun_cpu_weight_matmul(e, &r, e->xn, n, e->router);
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

/* A run of experts whose gathered rows are moe_x's rows 0 .. rows-1: row j is pair
 * moe_pairs[first + j], its expert moe_ids[that pair]. */
struct group_ctx {
    cpu_engine *e;
    int64_t layer;
    const int32_t *pairs; /* (rows) token·k + slot, grouped by expert */
};

/* The expert's bias vector of tensor id (gpt-oss), or NULL. */
static const float *expert_bias(const struct group_ctx *c, int id, int32_t x, int64_t len)
{
    const float *b = c->e->layers[c->layer].vec[id];
    return b ? b + (int64_t)x * len : NULL;
}

static void swiglu_group(void *ctx, int64_t first, int64_t last)
{
    const struct group_ctx *c = ctx;
    const cpu_engine *e = c->e;
    const int64_t f = e->n_ff;
    for (int64_t j = first; j < last; j++) {
        const int32_t x = e->moe_ids[c->pairs[j]];
        const float *bg = expert_bias(c, LRUN_ARCH_TENSOR_GATE_EXPS_B, x, f);
        if (bg) { /* gpt-oss: each product plus the expert's bias (ggml_add_id), then swiglu_oai */
            lrun_cpu_add(e->up + j * f, expert_bias(c, LRUN_ARCH_TENSOR_UP_EXPS_B, x, f), f);
            lrun_cpu_add(e->gate + j * f, bg, f);
            swiglu_oai(e->gate + j * f, e->up + j * f, f);
        } else
            lrun_cpu_swiglu(e->gate + j * f, e->up + j * f, f);
    }
}

/* slot (token·k + s) = w · the expert's output row j (ggml_mul: f32 products) */
static void scatter_group(void *ctx, int64_t first, int64_t last)
{
    const struct group_ctx *c = ctx;
    const cpu_engine *e = c->e;
    const int64_t d = e->n_embd;
    for (int64_t j = first; j < last; j++) {
        const int32_t pair = c->pairs[j];
        const float w = e->moe_w[pair], *y = e->moe_y + j * d;
        const float *bd = expert_bias(c, LRUN_ARCH_TENSOR_DOWN_EXPS_B, e->moe_ids[pair], d);
        float *o = e->moe_slot + (int64_t)pair * d;
        if (bd) /* gpt-oss: (y + b) · w, ggml_add_id then ggml_mul */
            for (int64_t t = 0; t < d; t++) o[t] = (y[t] + bd[t]) * w;
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

/* Experts [x0, x1) over their gathered pairs (at most n_batch_max rows, so the
 * scratch of one chunk holds them): gate, up, SwiGLU, down, weighted into the
 * slots. Each product is one grouped job over all these experts (llama.cpp's
 * mul_mat_id), gate and up together when alike, bit-identical to a matmul per
 * expert: 4 fork/joins per run (gate+up, SwiGLU, down, scatter). */
/* slices: NULL, or (3 per chosen expert of the run, in id order) where the
 * expert store put each one's gate, up and down (expert_store.h). */
static void run_experts(cpu_engine *e, int64_t layer, const lrun_weight_ref g[3], int64_t x0, int64_t x1,
                        const void *const *slices)
{
    const int64_t d = e->n_embd, k = e->model->info.n_expert_used;
    const int64_t base = e->moe_first[x0], rows = e->moe_first[x1] - base;
    const int32_t *pairs = e->moe_pairs + base;
    for (int64_t j = 0; j < rows; j++) memcpy(e->moe_x + j * d, e->xn + (pairs[j] / k) * d, (size_t)d * sizeof(float));
    lrun_cpu_mm_part parts[2 * MOE_GROUP_MAX];
    float *const ins[3] = {e->moe_x, e->moe_x, e->gate}, *const outs[3] = {e->gate, e->up, e->moe_y};
    struct group_ctx c = {e, layer, pairs};
    /* gate and up in one job when they are alike and their converted rows
     * (twice the gathered rows) fit the matmul work */
    const struct lrun_tensor *tg = g[0].w, *tu = g[1].w;
    const int fuse = tg->dtype == tu->dtype && tg->row_bytes == tu->row_bytes && tg->ne[0] == tu->ne[0] &&
                     tg->ne[1] == tu->ne[1] && 2 * rows <= e->n_batch_max && !g[0].packed && !g[1].packed;
    int np = 0;
    for (int i = 0; i < 3; i++) {
        const struct lrun_tensor *t = g[i].w;
        int64_t chosen = 0; /* the run's chosen experts so far */
        for (int64_t x = x0; x < x1; x++) {
            const int64_t at = e->moe_first[x] - base, cnt = e->moe_first[x + 1] - e->moe_first[x];
            if (cnt == 0) continue;
            /* this expert's projection i where the store read it */
            const void *stored = slices ? slices[3 * chosen++ + i] : NULL;
            lrun_weight_ring_note_slice(e->wr, t, slice_bytes(t));
            if (g[i].packed) { /* a packed stack: the expert's rows decoded as they are multiplied, no other expert's */
                lrun_cpu_matmul_packed_rows(e->pool, g[i].data, &t->pk, x * t->ne[1], t->ne[1], t->ne[0],
                                            ins[i] + at * t->ne[0], cnt, outs[i] + at * t->ne[1], e->pk_work);
                continue;
            }
            parts[np++] =
                (lrun_cpu_mm_part){.w = stored ? stored : (const char *)g[i].data + (size_t)x * slice_bytes(t),
                                   .x = ins[i] + at * t->ne[0],
                                   .m = cnt,
                                   .y = outs[i] + at * t->ne[1]};
        }
        if (i == 0 && fuse) continue; /* up's parts join gate's */
        if (np > 0 && e->model->mxfp4_float_x &&
            t->dtype == LRUN_DTYPE_MXFP4) /* an HF gpt-oss: transformers' f32 x */
            lrun_cpu_matmul_grouped_float_x(e->pool, t->dtype, t->row_bytes, t->ne[1], t->ne[0], parts, np);
        else if (np > 0) /* none: a packed stack's products are done above */
            lrun_cpu_matmul_grouped(e->pool, t->dtype, t->row_bytes, t->ne[1], t->ne[0], parts, np, e->mm_work);
        np = 0;
        if (i == 1) lrun_cpu_parallel_for(e->pool, rows, 4, swiglu_group, &c);
    }
    lrun_cpu_parallel_for(e->pool, rows, 4, scatter_group, &c);
}

lrun_status lrun_cpu_moe_ffn(cpu_engine *e, const lrun_weights *W, int64_t layer, int64_t n, const lrun_arch_op *op)
{
    lrun_cpu_parallel_for(e->pool, n, 4, route_rows, e);
    group_pairs(e, n);
    lrun_moe_counts_add(&e->moe_counts, layer, e->moe_first, n);
    lrun_weight_ref g[3];
    for (int i = 0; i < 3; i++) g[i] = lrun_weights_get(W, layer, op->w[i]);
    /* experts in the disk tier: a run takes at most the store's slots, read before it computes */
    lrun_expert_store *store = lrun_weight_ring_expert_store(e->wr);
    if (!lrun_expert_store_has(store, layer)) store = NULL;
    const int64_t most =
        store && lrun_expert_store_slots(store) < MOE_GROUP_MAX ? lrun_expert_store_slots(store) : MOE_GROUP_MAX;
    /* runs of experts of at most n_batch_max rows and `most` chosen experts;
     * one expert has at most n ≤ n_batch_max rows, so every run takes one */
    const int64_t n_exp = e->model->info.n_expert;
    for (int64_t x0 = 0; x0 < n_exp;) {
        int64_t x1 = x0, used = 0;
        int32_t ids[MOE_GROUP_MAX];
        while (x1 < n_exp && used < most && e->moe_first[x1 + 1] - e->moe_first[x0] <= e->n_batch_max) {
            if (e->moe_first[x1 + 1] > e->moe_first[x1]) ids[used++] = (int32_t)x1;
            x1++;
        }
        const void *slices[3 * MOE_GROUP_MAX];
        if (store && used) {
            const lrun_status st = lrun_expert_store_fetch(store, layer, ids, used, slices);
            if (st != LRUN_OK) return st;
        }
        if (used) run_experts(e, layer, g, x0, x1, store ? slices : NULL);
        x0 = x1;
    }
    lrun_cpu_parallel_for(e->pool, n, 4, sum_slots, e);
    return LRUN_OK;
}
