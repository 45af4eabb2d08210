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
#include "cuda/engine_cuda_moe_exact.h"
#include "cuda/engine_cuda_offload.h"
#include "kernels.h"
#include "residency/weights.h"

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
    size_t h_bytes;        /* of h_base */
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
    /* gemma's soft-caps and GeGLU go through tanhf, whose bits CUDA does not share with glibc; its
     * post-norms, embedding scale and per-block windows have no exact variant either: the fast path */
    if (m->arch->embd_scale || m->arch->swa_pattern || m->arch->rope_base_local > 0 || m->attn_softcap > 0 ||
        m->final_softcap > 0)
        return 0;
    for (int i = 0; i < m->arch->n_ops; i++)
        if (m->arch->ops[i].kind == LRUN_ARCH_OP_MATMUL_GEGLU || m->arch->ops[i].kind == LRUN_ARCH_OP_MATMUL_NORM_ADD)
            return 0;
    if (lrun_cuda_moe_exact_refusal(e)) return 0; /* experts: engine_cuda_moe_exact.c says what it takes */
    /* every matrix of the architecture's matmul ops (a MATMUL_ADD's second weight is its bias) */
    for (int64_t l = 0; l < in->n_layer; l++)
        for (int i = 0; i < m->arch->n_ops; i++) {
            const lrun_arch_op *op = &m->arch->ops[i];
            const int n_mat = op->kind == LRUN_ARCH_OP_MATMUL || op->kind == LRUN_ARCH_OP_MATMUL_SWIGLU
                                  ? lrun_arch_op_n_w(op)
                                  : op->kind == LRUN_ARCH_OP_MATMUL_ADD;
            for (int j = 0; j < n_mat; j++) {
                const struct lrun_tensor *t = m->layers[l].t[op->w[j]];
                if (!t || !exact_weight(t)) return 0;
            }
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
    x->h_bytes = c + d;
    TRY(lrun_oom_phase(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, x->h_bytes,
                                              "exact-path staging", &x->h_base),
                       "scratch"));
    x->h_cs = x->h_base;
    x->h_valid = (int32_t *)((char *)x->h_base + c);
    const struct lrun_tensor *rf = lrun_model_rope_factors(e->model, e->n_ctx_max);
    if (rf) {
        const int64_t n = rf->ne[0];
        x->h_freq = malloc((size_t)n * sizeof *x->h_freq);
        if (!x->h_freq) return lrun_fail_oom((size_t)n * sizeof *x->h_freq, 0, "engine: RoPE factors");
        TRY(lrun_tensor_read_f32(rf, 0, n, x->h_freq));
    }
    x->rope = (lrun_rope){in->n_rot, in->rope_style, in->rope_freq_base, e->model->rope_freq_scale, x->h_freq,
                          0, {0, 0}, 0}; /* no YaRN: the engine refuses it (engine_cuda.c) */
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
    lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, x->h_base, x->h_bytes);
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

// ---------------------------------------------------------------- op variants

/* The exact variants of the ops engine_cuda_forward.c runs when e->exact is
 * set (engine_cuda_internal.h lists them). Weights come as weights.h refs:
 * on_host products run lrun_cpu_matmul through the offload code. */

static lrun_dtype partner_of(lrun_dtype w) { return w == LRUN_DTYPE_Q4_1 ? LRUN_DTYPE_Q8_1 : LRUN_DTYPE_Q8_0; }

/* The partner the producer of a matmul input quantizes for, so the matmul
 * need not: that of the weights computed on the device when they share dtype
 * and width (one input, one quantization, one launch), else LRUN_DTYPE_F32
 * (none: each weight quantizes for itself, and host-computed weights take
 * the f32 input to the CPU, which quantizes it the same way). */
lrun_dtype lrun_cuda_exact_partner(const lrun_weight_ref *w, int n_w)
{
    const struct lrun_tensor *first = NULL;
    for (int i = 0; i < n_w; i++) {
        if (w[i].on_host) continue;
        if (!first) first = w[i].w;
        else if (w[i].w->dtype != first->dtype || w[i].w->ne[0] != first->ne[0]) return LRUN_DTYPE_F32;
    }
    return first ? partner_of(first->dtype) : LRUN_DTYPE_F32;
}

/* y_i (m, n_i) = src · W_iᵀ for n_w weights of one input. Host-computed
 * weights take src (f32) to lrun_cpu_matmul. When the weights share a
 * partner, src is quantized for it into the exact scratch once, here unless
 * its producer did (quantized), and the device weights share one launch;
 * otherwise src is quantized here, per weight. */
lrun_status lrun_cuda_exact_matmul(lrun_cuda_engine *e, const lrun_weight_ref *w, float *const *y, int n_w,
                                   const float *src, int64_t m, int quantized)
{
    struct cuda_exact *x = e->exact;
    const lrun_dtype shared = lrun_cuda_exact_partner(w, n_w);
    lrun_k_q8dot_part parts[LRUN_K_Q8DOT_MAX_PARTS];
    const struct lrun_tensor *dev[LRUN_K_Q8DOT_MAX_PARTS];
    int n_dev = 0;
    if (shared != LRUN_DTYPE_F32 && !quantized) {
        int64_t k = 0;
        for (int i = 0; i < n_w && !k; i++)
            if (!w[i].on_host) k = w[i].w->ne[0];
        TRY(lrun_k_quantize_q8(shared, src, m, k, x->xq, x->xd, x->xs, e->stream));
    }
    for (int i = 0; i < n_w; i++) {
        if (w[i].on_host) {
            TRY(lrun_cuda_offload_host_matmul(e, w[i].w, src, m, y[i]));
            continue;
        }
        dev[n_dev] = w[i].w;
        parts[n_dev++] = (lrun_k_q8dot_part){w[i].data, w[i].w->row_bytes, w[i].w->ne[1], y[i]};
    }
    if (n_dev == 0) return LRUN_OK;
    if (shared != LRUN_DTYPE_F32)
        return lrun_k_q8dot(dev[0]->dtype, parts, n_dev, dev[0]->ne[0], x->xq, x->xd, x->xs, m, e->stream);
    for (int i = 0; i < n_dev; i++) {
        TRY(lrun_k_quantize_q8(partner_of(dev[i]->dtype), src, m, dev[i]->ne[0], x->xq, x->xd, x->xs, e->stream));
        TRY(lrun_k_q8dot(dev[i]->dtype, &parts[i], 1, dev[i]->ne[0], x->xq, x->xd, x->xs, m, e->stream));
    }
    return LRUN_OK;
}

/* x += add (+ bias) when add is not NULL; xn = rms_norm_exact(x) * norm,
 * quantized for the next weights (next, n_next) when they share a partner:
 * one launch. Returns through *quantized whether it did. */
lrun_status lrun_cuda_exact_add_norm(lrun_cuda_engine *e, const float *add, const float *bias, const float *norm,
                                     const lrun_weight_ref *next, int n_next, int64_t n, int *quantized)
{
    struct cuda_exact *x = e->exact;
    const lrun_dtype p = lrun_cuda_exact_partner(next, n_next);
    *quantized = p != LRUN_DTYPE_F32;
    return lrun_k_add_rms_norm_exact(e->x, add, bias, norm, e->xn, n, e->n_embd, e->eps, p,
                                     p == LRUN_DTYPE_F32 ? NULL : x->xq, x->xd, x->xs, e->stream);
}

/* gate = silu(gate) * up, as the CPU's SwiGLU, quantized for the next
 * weights when they share a partner (*quantized says whether). */
lrun_status lrun_cuda_exact_swiglu(lrun_cuda_engine *e, const lrun_weight_ref *next, int n_next, int64_t n,
                                   int *quantized)
{
    struct cuda_exact *x = e->exact;
    const lrun_dtype pd = lrun_cuda_exact_partner(next, n_next);
    *quantized = pd != LRUN_DTYPE_F32;
    return lrun_k_swiglu_exact(e->gate, e->up, n, e->n_ff, pd, pd == LRUN_DTYPE_F32 ? NULL : x->xq, x->xd, x->xs,
                               e->stream);
}

/* q, k rotated with the host's cos/sin table; k, v into the cache planes. */
lrun_status lrun_cuda_exact_rope_store(lrun_cuda_engine *e, char *kc, char *vc, int64_t n)
{
    const lrun_model_info *in = &e->model->info;
    return lrun_k_rope_store_exact(e->q, e->k, e->v, e->exact->cs, n, in->n_head, in->n_head_kv, in->head_dim,
                                   in->n_rot, in->rope_style, e->kv_dtype, kc, vc, e->d_table.row_off, e->stream);
}

/* attn = attention of q over the cache planes; chunks of >= 2 tokens take
 * llama.cpp's prompt orders, as the CPU engine. */
lrun_status lrun_cuda_exact_attention(lrun_cuda_engine *e, char *kc, char *vc, int64_t n, int64_t max_kv)
{
    const lrun_model_info *in = &e->model->info;
    const struct step_table *t = &e->d_table;
    if (e->model->n_swa > 0) /* a sliding window (Mistral): the same kernel, masking as the CPU does */
        return lrun_k_attention_exact_window(e->kv_dtype, e->q, kc, vc, t->kv_base, t->n_kv, e->exact->n_valid, n,
                                             in->n_head, in->n_head_kv, in->head_dim, max_kv, e->attn_scale, n >= 2,
                                             e->model->n_swa, e->attn, e->stream);
    return lrun_k_attention_exact(e->kv_dtype, e->q, kc, vc, t->kv_base, t->n_kv, e->exact->n_valid, n, in->n_head,
                                  in->n_head_kv, in->head_dim, max_kv, e->attn_scale, n >= 2, e->attn, e->stream);
}

/* xn[0..n_want) = output_norm of the wanted rows of x (gathered into tmp
 * first unless they are rows 0..n_want-1). */
lrun_status lrun_cuda_exact_output_norm(lrun_cuda_engine *e, int64_t n_want, int identity)
{
    if (!identity) TRY(lrun_cuda_gather_rows(e, n_want, e->tmp));
    return lrun_k_rms_norm_exact(identity ? e->x : e->tmp, e->output_norm, e->xn, n_want, e->n_embd, e->eps,
                                 e->stream);
}
