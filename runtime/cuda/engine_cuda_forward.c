/* engine_cuda_forward.c — the kernels of one chunk on the compute stream:
 * embedding, every layer (norm, QKV, RoPE and cache store, attention, output
 * projection, SwiGLU feed-forward, residual adds), the final norm and the LM
 * head. engine_cuda_step.c fills the token table and runs this eagerly or
 * inside a CUDA graph. */
#include <string.h>

#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_offload.h"
#include "kernels.h"

// ---------------------------------------------------------------- forward

/* y (m, n) = x (m, k) · Wᵀ: the fused dequant-GEMV for few rows, cuBLAS beyond. */
static lrun_status matmul(lrun_cuda_engine *e, const struct lrun_tensor *w, const float *x, int64_t m, float *y)
{
    if (lrun_cuda_offload_on_host(e, w)) return lrun_cuda_offload_host_matmul(e, w, x, m, y);
    if (m <= GEMV_MAX_ROWS)
        return lrun_k_gemv(w->dtype, w->data, w->row_bytes, w->ne[1], w->ne[0], x, m, y, e->stream);
    return lrun_k_gemm(e->cublas, w->dtype, w->data, w->row_bytes, w->ne[1], w->ne[0], x, m, y, slot_dtype(w->dtype),
                       e->w_slot, e->x_slot, e->stream);
}

/* Products of one x with several weights of one dtype in one GEMV launch
 * (decode: m <= GEMV_MAX_ROWS): Q, K and V stored; gate and up through
 * SwiGLU into y[0]; or one weight added into y[0] (the residual stream).
 * fusable says whether weights can share a launch (one dtype and width;
 * and on the device; otherwise the caller takes matmul per weight). */
static int fusable(const lrun_cuda_engine *e, const struct lrun_tensor *const *w, int n_w)
{
    for (int i = 0; i < n_w; i++)
        if (w[i]->dtype != w[0]->dtype || w[i]->ne[0] != w[0]->ne[0] || lrun_cuda_offload_on_host(e, w[i])) return 0;
    return 1;
}

static lrun_status gemv_fused(lrun_cuda_engine *e, const struct lrun_tensor *const *w, float *const *y, int n_w,
                              const float *x, int64_t m, int mode)
{
    lrun_k_gemv_part parts[LRUN_K_GEMV_MAX_PARTS];
    for (int i = 0; i < n_w; i++) {
        parts[i].w = w[i]->data;
        parts[i].row_bytes = w[i]->row_bytes;
        parts[i].n = w[i]->ne[1];
        parts[i].y = y[i];
    }
    return lrun_k_gemv_multi(w[0]->dtype, parts, n_w, w[0]->ne[0], x, m, mode, e->stream);
}

/* Every layer over the n tokens of the table already on the device. max_kv
 * bounds n_kv over the chunk (the cache capacity when captured in a graph). */
static lrun_status forward_layers(lrun_cuda_engine *e, int64_t n, int64_t max_kv)
{
    const lrun_model *m = e->model;
    const lrun_model_info *in = &m->info;
    const struct step_table *t = &e->d_table;
    void *s = e->stream;
    const struct lrun_tensor *te = m->tok_embd;
    if (e->offload && lrun_cuda_offload_embeds_on_host(e)) TRY(lrun_cuda_offload_embed(e, n));
    else TRY(lrun_k_embed(te->dtype, te->data, te->row_bytes, e->n_embd, t->tokens, n, e->x, s));
    const float base = (float)in->rope_freq_base, fscale = (float)m->rope_freq_scale;
    /* decode-sized chunks take the fused GEMVs: Q, K and V in one launch,
     * SwiGLU and the residual adds in the GEMV epilogues */
    const int gemv = n <= GEMV_MAX_ROWS;
    for (int64_t l = 0; l < e->n_layer; l++) {
        const struct lrun_model_layer *L = &m->layers[l];
        if (e->offload) TRY(lrun_cuda_offload_layer_begin(e, l, &L)); /* streamed weights in their slot */
        const struct cuda_layer *E = &e->layers[l];
        char *kc, *vc;
        TRY(lrun_cuda_kv_layer(e, l, &kc, &vc)); /* a staged cache's slot: engine_cuda_kv.c */

        // attention
        TRY(lrun_k_rms_norm(e->x, E->attn_norm, e->xn, n, e->n_embd, e->eps, s));
        const struct lrun_tensor *qkv[3] = {L->wq, L->wk, L->wv};
        float *qkv_out[3] = {e->q, e->k, e->v};
        if (gemv && fusable(e, qkv, 3)) {
            TRY(gemv_fused(e, qkv, qkv_out, 3, e->xn, n, LRUN_K_GEMV_STORE));
        } else {
            for (int i = 0; i < 3; i++) TRY(matmul(e, qkv[i], e->xn, n, qkv_out[i]));
        }
        if (E->bq) TRY(lrun_k_add_bias(e->q, E->bq, n, e->q_dim, s));
        if (E->bk) TRY(lrun_k_add_bias(e->k, E->bk, n, e->kv_dim, s));
        if (E->bv) TRY(lrun_k_add_bias(e->v, E->bv, n, e->kv_dim, s));
        if (in->head_dim % 2 == 0) {
            TRY(lrun_k_rope_kv_store(e->q, e->k, e->v, t->pos, n, in->n_head, in->n_head_kv, in->head_dim,
                                     in->n_rot, base, fscale, e->freq_factors, in->rope_style, e->kv_dtype, kc, vc,
                                     t->row_off, s));
        } else {
            TRY(lrun_k_rope(e->q, t->pos, n, in->n_head, in->head_dim, in->n_rot, base, fscale, e->freq_factors,
                            in->rope_style, s));
            TRY(lrun_k_rope(e->k, t->pos, n, in->n_head_kv, in->head_dim, in->n_rot, base, fscale,
                            e->freq_factors, in->rope_style, s));
            TRY(lrun_k_kv_store(e->kv_dtype, kc, vc, t->row_off, e->k, e->v, n, e->kv_dim, s));
        }
        if (lrun_cuda_kv_fused(e)) /* quantized decode: codes and ring, no slot (engine_cuda_kv.c) */
            TRY(lrun_cuda_kv_fused_attention(e, l, n, max_kv));
        else
            TRY(lrun_k_attention(e->kv_dtype, e->q, kc, vc, t->kv_base, t->kv_base, t->n_kv, n, in->n_head,
                                 in->n_head_kv, in->head_dim, max_kv, e->attn_scale, e->attn, e->attn_work, s));
        TRY(lrun_cuda_kv_layer_end(e, l, n));
        const struct lrun_tensor *wo[1] = {L->wo};
        if (gemv && fusable(e, wo, 1)) { /* x += a·Woᵀ in the GEMV's epilogue, then + bo */
            TRY(gemv_fused(e, wo, &e->x, 1, e->attn, n, LRUN_K_GEMV_ADD));
            if (E->bo) TRY(lrun_k_add_bias(e->x, E->bo, n, e->n_embd, s));
        } else {
            TRY(matmul(e, L->wo, e->attn, n, e->tmp));
            if (E->bo) TRY(lrun_k_add_bias(e->tmp, E->bo, n, e->n_embd, s));
            TRY(lrun_k_add(e->x, e->tmp, n * e->n_embd, s));
        }

        // feed-forward
        TRY(lrun_k_rms_norm(e->x, E->ffn_norm, e->xn, n, e->n_embd, e->eps, s));
        const struct lrun_tensor *gu[2] = {L->w_gate, L->w_up};
        float *gu_out[2] = {e->gate, e->up};
        if (gemv && fusable(e, gu, 2)) {
            TRY(gemv_fused(e, gu, gu_out, 2, e->xn, n, LRUN_K_GEMV_SWIGLU));
        } else {
            TRY(matmul(e, L->w_gate, e->xn, n, e->gate));
            TRY(matmul(e, L->w_up, e->xn, n, e->up));
            TRY(lrun_k_swiglu(e->gate, e->up, e->gate, n * e->n_ff, s));
        }
        const struct lrun_tensor *wd[1] = {L->w_down};
        if (gemv && fusable(e, wd, 1)) {
            TRY(gemv_fused(e, wd, &e->x, 1, e->gate, n, LRUN_K_GEMV_ADD));
        } else {
            TRY(matmul(e, L->w_down, e->gate, n, e->tmp));
            TRY(lrun_k_add(e->x, e->tmp, n * e->n_embd, s));
        }
        if (e->offload) TRY(lrun_cuda_offload_layer_end(e, l));
    }
    return LRUN_OK;
}

lrun_status lrun_cuda_gather_rows(lrun_cuda_engine *e, int64_t n_want, float *dst)
{
    const size_t row = (size_t)e->n_embd * sizeof(float);
    for (int64_t r = 0; r < n_want; r++)
        TRY(cuda_check(cudaMemcpyAsync(dst + r * e->n_embd, e->x + e->out_rows[r] * e->n_embd, row,
                                       cudaMemcpyDeviceToDevice, (cudaStream_t)e->stream),
                       "gathering output rows", e->device));
    return LRUN_OK;
}

/* xn[0..n_want) = output_norm of the wanted rows of x (rows 0..n_want-1
 * themselves when identity, so no gather is needed). */
static lrun_status output_norm(lrun_cuda_engine *e, int64_t n_want, int identity)
{
    if (!identity) TRY(lrun_cuda_gather_rows(e, n_want, e->xn));
    return lrun_k_rms_norm(identity ? e->x : e->xn, e->output_norm, e->xn, n_want, e->n_embd, e->eps, e->stream);
}

/* logits (rows, n_vocab) on the device = LM head of xn rows [r0, r0+rows). */
lrun_status lrun_cuda_lm_head(lrun_cuda_engine *e, int64_t r0, int64_t rows)
{
    lrun_k_set_pdl(lrun_cuda_pdl_on(e));
    if (e->exact) return lrun_cuda_exact_lm_head(e, r0, rows); /* Q4_0/Q4_1/Q8_0 models: engine_cuda_exact.c */
    const struct lrun_tensor *head = e->offload ? lrun_cuda_offload_head(e) : e->model->output;
    return matmul(e, head, e->xn + r0 * e->n_embd, rows, e->logits);
}

/* All device work of a chunk up to the first block of logits. */
lrun_status lrun_cuda_enqueue_chunk(lrun_cuda_engine *e, int64_t n, int64_t n_want, int identity, int64_t max_kv)
{
    /* this thread's launches, also inside a graph capture; see lrun_cuda_lm_head for when it is off */
    lrun_k_set_pdl(lrun_cuda_pdl_on(e));
    if (e->exact) return lrun_cuda_exact_enqueue_chunk(e, n, n_want, identity, max_kv); /* engine_cuda_exact.c */
    TRY(forward_layers(e, n, max_kv));
    /* a streamed head is met every chunk, wanted or not, to keep the copy cycle */
    if (e->offload) TRY(lrun_cuda_offload_head_begin(e, NULL));
    if (n_want > 0) {
        TRY(output_norm(e, n_want, identity));
        TRY(lrun_cuda_lm_head(e, 0, min64(n_want, LOGIT_ROWS)));
    }
    return e->offload ? lrun_cuda_offload_head_end(e) : LRUN_OK;
}

/* Captures the decode step of n tokens (logits for each) into a graph. On a
 * capture failure graphs are turned off for this engine and the caller runs
 * the step eagerly; the reason stays in lrun_last_error for whoever looks. */
