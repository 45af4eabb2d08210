/* engine_cuda_exact.c — the CUDA engine's exact path: for models whose
 * matmul weights are all Q4_0, Q4_1 or Q8_0, every op computes to the bit
 * what the CPU engine (engine.c) computes, which is llama.cpp's x86 CPU
 * arithmetic (docs/numerics.md, "On the GPU"):
 *
 *   x = embed(tokens); xn = rms_norm_exact(x) * attn_norm, quantized (one launch)
 *   per layer: q, k, v = q8dot(xn's quants, Wq|Wk|Wv)   one launch (+ biases)
 *              rope from the host's cos/sin table; k, v stored
 *              a = attention_exact(q, cache)       the CPU's orders for the step size
 *              tmp = q8dot(quantize_q8(a), Wo)
 *              x += tmp (+ bo); xn = rms_norm_exact(x) * ffn_norm, quantized (one launch)
 *              g = swiglu_exact(q8dot(xn's quants, Wg|Wu)), quantized (one launch)
 *              tmp = q8dot(g's quants, Wd)
 *              x += tmp; xn = rms_norm_exact(x) * next attn_norm, quantized (one launch)
 *   logits = q8dot(quantize_q8(rms_norm_exact(x[wanted]) * output_norm), Whead)
 * Each matmul input is quantized once, by the kernel that produces it.
 *
 * engine_cuda.c selects this path at init (lrun_cuda_exact_init) and the
 * step and forward files call in here when e->exact is set; the token table,
 * the cache and graphs are the float path's. Per chunk this file adds one
 * table of its own: the RoPE (cos, sin) pairs of each token, made on the host
 * by lrun_cpu_rope_cos_sin (glibc's cosf/sinf are not redone on the GPU),
 * and each token's count of stored positions (the CPU's attention reads the
 * padding positions, attention_exact.cu). The path is opt-in
 * (lrun_engine_opts.numerics = LRUN_NUMERICS_EXACT): it is about half as fast
 * as the float path.
 *
 * With weights placed off the device (AS_PLACED, engine_cuda_offload.h) it
 * takes the float path's hooks: streamed matrices are read from their slot
 * (the same bytes, so the same bits), the embedding rows are gathered on the
 * host into the same lrun_k_embed, and a host-computed matrix runs
 * lrun_cpu_matmul on the f32 input the GPU would have quantized: that is the
 * CPU engine's own matmul, so the result is still the CPU engine's to the bit. */
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_ops.h"
#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_offload.h"
#include "kernels.h"

struct cuda_exact {
    lrun_rope rope;        /* the CPU engine's RoPE parameters; freq_factors is h_freq */
    float *h_freq;         /* (n_rot/2) host f32, or NULL */
    void *d_base;          /* device block: xq, xd, xs, cs, n_valid */
    size_t d_bytes;
    int8_t *xq;            /* (B, max_k) activation quants */
    float *xd, *xs;        /* (B, max_k/32) their d and (Q8_1) s */
    float *cs;             /* (B, n_rot) */
    int32_t *n_valid;      /* (B) stored positions of the token's sequence during its chunk */
    void *h_base;          /* pinned: h_cs (B, n_rot), h_valid (B) */
    float *h_cs;
    int32_t *h_valid;
    int64_t max_k;
};

static int exact_weight(const struct lrun_tensor *t)
{
    return t->dtype == LRUN_DTYPE_Q4_0 || t->dtype == LRUN_DTYPE_Q4_1 || t->dtype == LRUN_DTYPE_Q8_0;
}

/* Embedding tables whose rows lrun_k_embed converts exactly as the CPU does. */
static int exact_embedding(const struct lrun_tensor *t)
{
    return exact_weight(t) || t->dtype == LRUN_DTYPE_F32 || t->dtype == LRUN_DTYPE_F16 || t->dtype == LRUN_DTYPE_BF16;
}

int lrun_cuda_exact_eligible(const lrun_cuda_engine *e)
{
    if (!e->want_exact) return 0;
    const lrun_model *m = e->model;
    const lrun_model_info *in = &m->info;
    if (!exact_weight(m->output) || !exact_embedding(m->tok_embd)) return 0;
    for (int64_t l = 0; l < in->n_layer; l++) {
        const struct lrun_model_layer *L = &m->layers[l];
        const struct lrun_tensor *ws[] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            if (!exact_weight(ws[i])) return 0;
    }
    /* SwiGLU rows of whole groups of 8 (the CPU's expf tail is glibc's), the
     * norm's squares in one block's shared memory, the scores of the longest
     * context in shared memory */
    int optin = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, e->device->cuda_ordinal) !=
        cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return e->n_ff % 8 == 0 && e->n_embd <= 12288 && in->n_rot % 2 == 0 &&
           lrun_k_attention_exact_smem(in->head_dim, e->n_ctx_max) <= (size_t)optin;
}

/* The widest matmul input: n_embd, n_ff or q_dim elements. */
static int64_t exact_max_k(const lrun_cuda_engine *e)
{
    int64_t k = e->n_embd > e->n_ff ? e->n_embd : e->n_ff;
    return e->q_dim > k ? e->q_dim : k;
}

/* The device block's parts, in bytes: a (B, max_k) quants, b (B, max_k/32)
 * scales (twice: d and s), c (B, n_rot) RoPE pairs, d (B) counts; each at a
 * 256-byte offset, so the kernels' vector loads stay aligned. Returns the total. */
static size_t exact_layout(const lrun_cuda_engine *e, size_t *a, size_t *b, size_t *c, size_t *d)
{
    const size_t B = (size_t)e->n_batch_max, nr = (size_t)e->model->info.n_rot, K = (size_t)exact_max_k(e);
    *a = (B * K + 255) & ~(size_t)255;
    *b = (B * (K / 32) * 4 + 255) & ~(size_t)255;
    *c = (B * nr * 4 + 255) & ~(size_t)255;
    *d = B * 4;
    return *a + 2 * *b + *c + *d;
}

size_t lrun_cuda_exact_scratch_bytes(const lrun_cuda_engine *e)
{
    size_t a, b, c, d;
    if (e->exact) return e->exact->d_bytes;
    return lrun_cuda_exact_eligible(e) ? exact_layout(e, &a, &b, &c, &d) : 0;
}

static lrun_status exact_alloc(lrun_cuda_engine *e, struct cuda_exact *x)
{
    const lrun_model_info *in = &e->model->info;
    size_t a, b, c, d;
    x->max_k = exact_max_k(e);
    x->d_bytes = exact_layout(e, &a, &b, &c, &d);
    TRY(lrun_oom_phase(lrun_device_alloc(e->device, x->d_bytes, "exact-path scratch", &x->d_base), "scratch"));
    char *p = x->d_base;
    x->xq = (int8_t *)p;
    x->xd = (float *)(p + a);
    x->xs = (float *)(p + a + b);
    x->cs = (float *)(p + a + 2 * b);
    x->n_valid = (int32_t *)(p + a + 2 * b + c);
    TRY(lrun_oom_phase(lrun_host_alloc(LRUN_TIER_PINNED, c + d, "exact-path staging", &x->h_base), "scratch"));
    x->h_cs = x->h_base;
    x->h_valid = (int32_t *)((char *)x->h_base + c);
    if (e->model->rope_freqs) {
        const int64_t n = e->model->rope_freqs->ne[0];
        x->h_freq = malloc((size_t)n * sizeof *x->h_freq);
        if (!x->h_freq) return lrun_fail_oom((size_t)n * sizeof *x->h_freq, 0, "engine: RoPE factors");
        TRY(lrun_tensor_read_f32(e->model->rope_freqs, 0, n, x->h_freq));
    }
    x->rope = (lrun_rope){in->n_rot, in->rope_style, in->rope_freq_base, e->model->rope_freq_scale, x->h_freq};
    return LRUN_OK;
}

lrun_status lrun_cuda_exact_init(lrun_cuda_engine *e)
{
    e->exact = NULL;
    if (!lrun_cuda_exact_eligible(e)) return LRUN_OK;
    struct cuda_exact *x = calloc(1, sizeof *x);
    if (!x) return lrun_fail_oom(sizeof *x, 0, "engine: exact-path record");
    e->exact = x;
    lrun_status st = exact_alloc(e, x);
    if (st != LRUN_OK) {
        lrun_cuda_exact_free(e);
        return lrun_fail_context(st, "engine on %s: exact path", e->device->name);
    }
    return LRUN_OK;
}

void lrun_cuda_exact_free(lrun_cuda_engine *e)
{
    struct cuda_exact *x = e->exact;
    if (!x) return;
    if (x->d_base) lrun_device_release(e->device, x->d_base, x->d_bytes);
    lrun_host_release(LRUN_TIER_PINNED, x->h_base);
    free(x->h_freq);
    free(x);
    e->exact = NULL;
}

lrun_status lrun_cuda_exact_table(lrun_cuda_engine *e, const int32_t *seq, int64_t n)
{
    struct cuda_exact *x = e->exact;
    const int64_t nr = x->rope.n_rot;
    for (int64_t i = 0; i < n; i++) {
        lrun_cpu_rope_cos_sin(&x->rope, e->h_table.pos[i], x->h_cs + i * nr);
        /* the chunk's tokens of this sequence are all stored before attention */
        x->h_valid[i] = (int32_t)(e->seq_len[seq[i]] + e->seq_done[seq[i]]);
    }
    cudaStream_t s = (cudaStream_t)e->stream;
    if (nr > 0)
        TRY(cuda_check(cudaMemcpyAsync(x->cs, x->h_cs, (size_t)(n * nr) * sizeof(float), cudaMemcpyHostToDevice, s),
                       "sending the RoPE table", e->device));
    return cuda_check(cudaMemcpyAsync(x->n_valid, x->h_valid, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, s),
                      "sending the stored-position counts", e->device);
}

// ---------------------------------------------------------------- forward

static lrun_dtype partner_of(lrun_dtype w) { return w == LRUN_DTYPE_Q4_1 ? LRUN_DTYPE_Q8_1 : LRUN_DTYPE_Q8_0; }

/* The partner the producer of a matmul input quantizes for, so the matmul
 * need not: that of the weights computed on the device when they share dtype
 * and width (one input, one quantization, one launch), else LRUN_DTYPE_F32
 * (none: each weight quantizes for itself, and host-computed weights take
 * the f32 input to the CPU, which quantizes it the same way). */
static lrun_dtype shared_partner(const lrun_cuda_engine *e, const struct lrun_tensor *const *w, int n_w)
{
    const struct lrun_tensor *first = NULL;
    for (int i = 0; i < n_w; i++) {
        if (lrun_cuda_offload_on_host(e, w[i])) continue;
        if (!first) first = w[i];
        else if (w[i]->dtype != first->dtype || w[i]->ne[0] != first->ne[0]) return LRUN_DTYPE_F32;
    }
    return first ? partner_of(first->dtype) : LRUN_DTYPE_F32;
}

/* y_i (m, n_i) = src · W_iᵀ for n_w weights of one input. Host-computed
 * weights take src (f32) to lrun_cpu_matmul. When shared_partner(e, w) is a
 * partner, src must already be quantized for it into the exact scratch (by
 * the kernel that produced src) and the device weights share one launch;
 * otherwise src is quantized here, per weight. */
static lrun_status matmul(lrun_cuda_engine *e, const struct lrun_tensor *const *w, float *const *y, int n_w,
                          const float *src, int64_t m)
{
    struct cuda_exact *x = e->exact;
    lrun_k_q8dot_part parts[LRUN_K_Q8DOT_MAX_PARTS];
    const struct lrun_tensor *dev[LRUN_K_Q8DOT_MAX_PARTS];
    int n_dev = 0;
    for (int i = 0; i < n_w; i++) {
        if (lrun_cuda_offload_on_host(e, w[i])) {
            TRY(lrun_cuda_offload_host_matmul(e, w[i], src, m, y[i]));
            continue;
        }
        dev[n_dev] = w[i];
        parts[n_dev++] = (lrun_k_q8dot_part){w[i]->data, w[i]->row_bytes, w[i]->ne[1], y[i]};
    }
    if (n_dev == 0) return LRUN_OK;
    if (shared_partner(e, w, n_w) != LRUN_DTYPE_F32)
        return lrun_k_q8dot(dev[0]->dtype, parts, n_dev, dev[0]->ne[0], x->xq, x->xd, x->xs, m, e->stream);
    for (int i = 0; i < n_dev; i++) {
        TRY(lrun_k_quantize_q8(partner_of(dev[i]->dtype), src, m, dev[i]->ne[0], x->xq, x->xd, x->xs, e->stream));
        TRY(lrun_k_q8dot(dev[i]->dtype, &parts[i], 1, dev[i]->ne[0], x->xq, x->xd, x->xs, m, e->stream));
    }
    return LRUN_OK;
}

/* x += add (+ bias); xn = rms_norm_exact(x) * norm, quantized for the next
 * weights (next_w, n_next) when they share a partner: one launch. */
static lrun_status add_norm(lrun_cuda_engine *e, const float *add, const float *bias, const float *norm,
                            const struct lrun_tensor *const *next_w, int n_next, int64_t n)
{
    struct cuda_exact *x = e->exact;
    const lrun_dtype p = shared_partner(e, next_w, n_next);
    return lrun_k_add_rms_norm_exact(e->x, add, bias, norm, e->xn, n, e->n_embd, e->eps, p,
                                     p == LRUN_DTYPE_F32 ? NULL : x->xq, x->xd, x->xs, e->stream);
}

static lrun_status forward_layers(lrun_cuda_engine *e, int64_t n, int64_t max_kv)
{
    const lrun_model *m = e->model;
    const lrun_model_info *in = &m->info;
    const struct step_table *t = &e->d_table;
    struct cuda_exact *x = e->exact;
    void *s = e->stream;
    const struct lrun_tensor *te = m->tok_embd;
    if (e->offload && lrun_cuda_offload_embeds_on_host(e)) TRY(lrun_cuda_offload_embed(e, n));
    else TRY(lrun_k_embed(te->dtype, te->data, te->row_bytes, e->n_embd, t->tokens, n, e->x, s));
    const struct lrun_tensor *qkv0[3] = {m->layers[0].wq, m->layers[0].wk, m->layers[0].wv};
    TRY(add_norm(e, NULL, NULL, e->layers[0].attn_norm, qkv0, 3, n));
    for (int64_t l = 0; l < e->n_layer; l++) {
        const struct lrun_model_layer *L = &m->layers[l];
        if (e->offload) TRY(lrun_cuda_offload_layer_begin(e, l, &L)); /* streamed weights in their slot */
        const struct cuda_layer *E = &e->layers[l];
        char *kc, *vc;
        TRY(lrun_cuda_kv_layer(e, l, &kc, &vc)); /* a staged cache's slot: engine_cuda_kv.c */

        // attention
        const struct lrun_tensor *qkv[3] = {L->wq, L->wk, L->wv};
        float *qkv_out[3] = {e->q, e->k, e->v};
        TRY(matmul(e, qkv, qkv_out, 3, e->xn, n));
        if (E->bq) TRY(lrun_k_add_bias(e->q, E->bq, n, e->q_dim, s));
        if (E->bk) TRY(lrun_k_add_bias(e->k, E->bk, n, e->kv_dim, s));
        if (E->bv) TRY(lrun_k_add_bias(e->v, E->bv, n, e->kv_dim, s));
        TRY(lrun_k_rope_store_exact(e->q, e->k, e->v, x->cs, n, in->n_head, in->n_head_kv, in->head_dim, in->n_rot,
                                    in->rope_style, e->kv_dtype, kc, vc, t->row_off, s));
        /* chunks of >= 2 tokens take llama.cpp's prompt orders, as engine.c */
        TRY(lrun_k_attention_exact(e->kv_dtype, e->q, kc, vc, t->kv_base, t->n_kv, x->n_valid, n, in->n_head,
                                   in->n_head_kv, in->head_dim, max_kv, e->attn_scale, n >= 2, e->attn, s));
        TRY(lrun_cuda_kv_layer_end(e, l, n));
        const struct lrun_tensor *wo[1] = {L->wo};
        if (shared_partner(e, wo, 1) != LRUN_DTYPE_F32)
            TRY(lrun_k_quantize_q8(partner_of(L->wo->dtype), e->attn, n, e->q_dim, x->xq, x->xd, x->xs, s));
        TRY(matmul(e, wo, &e->tmp, 1, e->attn, n));
        /* x += a·Woᵀ, then + bo (engine.c's order), the norm, the quantization for gate and up */
        const struct lrun_tensor *gu[2] = {L->w_gate, L->w_up};
        TRY(add_norm(e, e->tmp, E->bo, E->ffn_norm, gu, 2, n));

        // feed-forward
        float *gu_out[2] = {e->gate, e->up};
        TRY(matmul(e, gu, gu_out, 2, e->xn, n));
        const struct lrun_tensor *wd[1] = {L->w_down};
        const lrun_dtype pd = shared_partner(e, wd, 1);
        TRY(lrun_k_swiglu_exact(e->gate, e->up, n, e->n_ff, pd, pd == LRUN_DTYPE_F32 ? NULL : x->xq, x->xd, x->xs, s));
        TRY(matmul(e, wd, &e->tmp, 1, e->gate, n));
        if (l + 1 < e->n_layer) {
            const struct lrun_model_layer *N = &m->layers[l + 1];
            const struct lrun_tensor *next[3] = {N->wq, N->wk, N->wv};
            TRY(add_norm(e, e->tmp, NULL, e->layers[l + 1].attn_norm, next, 3, n));
        } else {
            TRY(lrun_k_add(e->x, e->tmp, n * e->n_embd, s));
        }
        if (e->offload) TRY(lrun_cuda_offload_layer_end(e, l));
    }
    return LRUN_OK;
}

/* xn[0..n_want) = output_norm of the wanted rows of x (gathered into tmp
 * first unless they are rows 0..n_want-1). */
static lrun_status output_norm(lrun_cuda_engine *e, int64_t n_want, int identity)
{
    if (!identity) TRY(lrun_cuda_gather_rows(e, n_want, e->tmp));
    return lrun_k_rms_norm_exact(identity ? e->x : e->tmp, e->output_norm, e->xn, n_want, e->n_embd, e->eps,
                                 e->stream);
}

lrun_status lrun_cuda_exact_lm_head(lrun_cuda_engine *e, int64_t r0, int64_t rows)
{
    /* a streamed head is read from its slot (lrun_cuda_offload_head_begin made compute wait for it) */
    const struct lrun_tensor *w[1] = {e->offload ? lrun_cuda_offload_head(e) : e->model->output};
    const float *src = e->xn + r0 * e->n_embd;
    struct cuda_exact *x = e->exact;
    if (shared_partner(e, w, 1) != LRUN_DTYPE_F32)
        TRY(lrun_k_quantize_q8(partner_of(w[0]->dtype), src, rows, e->n_embd, x->xq, x->xd, x->xs, e->stream));
    return matmul(e, w, &e->logits, 1, src, rows);
}

lrun_status lrun_cuda_exact_enqueue_chunk(lrun_cuda_engine *e, int64_t n, int64_t n_want, int identity,
                                          int64_t max_kv)
{
    TRY(forward_layers(e, n, max_kv));
    /* a streamed head is met every chunk, wanted or not, to keep the copy cycle */
    if (e->offload) TRY(lrun_cuda_offload_head_begin(e, NULL));
    if (n_want > 0) {
        TRY(output_norm(e, n_want, identity));
        TRY(lrun_cuda_exact_lm_head(e, 0, min64(n_want, LOGIT_ROWS)));
    }
    return e->offload ? lrun_cuda_offload_head_end(e) : LRUN_OK;
}
