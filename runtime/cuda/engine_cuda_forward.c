/* engine_cuda_forward.c — one chunk on the compute stream: the embedding,
 * the architecture's op table (arch/arch.h) for every block, the final norm
 * and the LM head. engine_cuda_step.c fills the token table and runs this
 * eagerly or inside a CUDA graph.
 *
 * Each op picks its kernels: the exact variants (engine_cuda_exact.c, when
 * e->exact: the CPU engine's bits) or the fast ones here, where
 * decode-sized chunks (n <= GEMV_MAX_ROWS) take the fused GEMVs: the
 * weights of one MATMUL in one launch, SwiGLU in the gate/up epilogue and
 * the residual add in the projection's epilogue, and a norm whose output
 * only the next product reads is folded into that product (its GEMV, or
 * the quantization of its q8 x; docs/gpu.md "Fused norm"). The exact
 * variants fuse a projection's residual add with the norm after it (and
 * that norm with the quantization of the next weights' input). Weights
 * come from residency/weights.h; the KV cache from engine_cuda_kv.c. */
#include <math.h>
#include <string.h>

#include "cuda/engine_cuda_host_stream.h"
#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_offload.h"
#include "cuda/engine_cuda_packed.h"
#include "cuda/engine_cuda_split.h"
#include "cuda/op_profile.h"
#include "kernels.h"

/* One chunk's run through a block. */
struct run {
    lrun_cuda_engine *e;
    int64_t n, max_kv;     /* tokens; bound on n_kv over the chunk (the cache capacity in a graph) */
    int64_t layer;
    const lrun_weights *W;
    char *kc, *vc;         /* the layer's key and value planes (a staged cache's slot) */
    int normed;            /* the block's next norm op was done by the op before (fused) */
    int quantized;         /* exact: the next matmul's input is already quantized for it */
    const lrun_arch_op *norm; /* fast decode: a NORM op of this block left to the product after it
                               * (lrun_arch_norm_folds), not yet run; NULL when none */
};

static float *buf(const lrun_cuda_engine *e, lrun_arch_buf b)
{
    float *const bufs[LRUN_ARCH_BUF_COUNT] = {e->x, e->xn, e->q, e->k, e->v, e->attn, e->gate, e->up};
    return bufs[b];
}

static int64_t buf_width(const lrun_cuda_engine *e, lrun_arch_buf b)
{
    switch (lrun_arch_buf_dim(b)) {
    case LRUN_ARCH_DIM_Q: return e->q_dim;
    case LRUN_ARCH_DIM_KV: return e->kv_dim;
    case LRUN_ARCH_DIM_FF: return e->n_ff;
    default: return e->n_embd;
    }
}

/* The device f32 copy of a block vector (norms, biases), or NULL when absent. */
static const float *vector(const lrun_cuda_engine *e, int64_t l, lrun_arch_tensor id)
{
    return id >= 0 && id < LRUN_ARCH_TENSOR_BLOCK_COUNT ? e->layers[l].vec[id] : NULL;
}

/* The refs of op's weights for this block (n of them). */
static void refs(const struct run *r, const lrun_arch_op *op, int n, lrun_weight_ref *out)
{
    for (int i = 0; i < n; i++) out[i] = lrun_weights_get(r->W, r->layer, op->w[i]);
}

// ---------------------------------------------------------------- fast matmuls

/* The input of a product: x, or when norm_w is set a norm's input, the
 * product then of rms_norm(x)·norm_w (the GEMV folds the norm in). */
struct gemv_in {
    const float *x;
    const float *norm_w; /* (n_embd) or NULL */
};

/* The decode GEMV of parts of weight t0's dtype (t0 the first): Q8_0/Q4_0
 * take the q8 x path (engine_cuda_split.h: x quantized once per input),
 * the others their dtype's kernel choice; a folded norm
 * (lrun_k_gemv_norm_takes said yes) the same kernel with the norm. */
static lrun_status gemv(lrun_cuda_engine *e, const struct lrun_tensor *t0, const lrun_k_gemv_part *parts, int n,
                        struct gemv_in in, int64_t m, int mode)
{
    if (in.norm_w)
        return lrun_k_gemv_norm_multi(t0->dtype, parts, n, t0->ne[0], in.x, in.norm_w, e->eps, m, mode, e->stream);
    if (lrun_cuda_q8x_takes(e, t0)) return lrun_cuda_q8x_gemv(e, t0, parts, n, in.x, m, mode);
    return lrun_k_gemv_multi(t0->dtype, parts, n, t0->ne[0], in.x, m, mode | lrun_cuda_gemv_flags(e, t0->dtype),
                             e->stream);
}

static lrun_status matmul_in(lrun_cuda_engine *e, lrun_weight_ref w, struct gemv_in in, int64_t m, float *y);

/* A host-computed weight's product: on the host, or for a chunk of many
 * rows on the device from a staging buffer (engine_cuda_host_stream.h). */
static lrun_status host_product(lrun_cuda_engine *e, lrun_weight_ref w, struct gemv_in in, int64_t m, float *y)
{
    if (!lrun_cuda_host_stream_takes(e->host_stream, w.w, m))
        return lrun_cuda_offload_host_matmul(e, w.w, in.x, m, y);
    TRY(lrun_cuda_host_stream_take(e, e->host_stream, w.w, &w.data));
    /* the staging holds the plain weight (a packed one decoded there): a view of it, as a streamed slot's */
    struct lrun_tensor view = *w.w;
    view.tier = LRUN_TIER_DEVICE;
    view.host_compute = 0;
    view.packed = 0;
    w.w = &view;
    w.on_host = 0;
    TRY(matmul_in(e, w, in, m, y));
    return lrun_cuda_host_stream_done(e, e->host_stream);
}

/* y (m, n) = x (m, k) · Wᵀ: the fused dequant-GEMV for few rows, cuBLAS
 * beyond; with a folded norm (in.norm_w, take_norm said yes) the GEMV. */
static lrun_status matmul_in(lrun_cuda_engine *e, lrun_weight_ref w, struct gemv_in in, int64_t m, float *y)
{
    const struct lrun_tensor *t = w.w;
    const float *x = in.x;
    if (in.norm_w && (w.on_host || t->packed || m > GEMV_MAX_ROWS))
        return lrun_fail(LRUN_E_INTERNAL, "engine on %s: a folded norm reached a product without a GEMV",
                         e->device->name);
    if (w.on_host) return host_product(e, w, in, m, y);
    if (t->packed) return lrun_cuda_packed_matmul(e, t, w.data, x, m, y); /* mode 3: engine_cuda_packed.h */
    if (m <= GEMV_MAX_ROWS) {
        const lrun_k_gemv_part part = {w.data, t->row_bytes, t->ne[1], y};
        return gemv(e, t, &part, 1, in, m, LRUN_K_GEMV_STORE);
    }
    if (t->split) { /* split rows (engine_cuda_split.h): f16 in the slot, then cuBLAS on it in place */
        TRY(lrun_k_dequantize_split(t->dtype, w.data, t->row_bytes, t->ne[1], t->ne[0], e->w_slot, e->stream));
        return lrun_k_gemm(e->cublas, LRUN_DTYPE_F16, e->w_slot, (size_t)t->ne[0] * 2, t->ne[1], t->ne[0], x, m, y,
                           LRUN_DTYPE_F16, e->w_slot, e->x_slot, e->stream);
    }
    return lrun_k_gemm(e->cublas, t->dtype, w.data, t->row_bytes, t->ne[1], t->ne[0], x, m, y, slot_dtype(t->dtype),
                       e->w_slot, e->x_slot, e->stream);
}

static lrun_status matmul(lrun_cuda_engine *e, lrun_weight_ref w, const float *x, int64_t m, float *y)
{
    const struct gemv_in in = {x, NULL};
    return matmul_in(e, w, in, m, y);
}

/* 1 when w's product runs on the CPU (not staged to the device by the host stream). */
static int host_side(const lrun_cuda_engine *e, lrun_weight_ref w, int64_t m)
{
    return w.on_host && !lrun_cuda_host_stream_takes(e->host_stream, w.w, m);
}

/* y[i] = in · w[i]ᵀ, one product per weight (they share no launch). With
 * products on the host in a decode chunk: the input goes down once, the
 * device's products are enqueued behind that copy and run while the host
 * multiplies (it waits for the copy, not for them), and the host's go up
 * after (lrun_cuda_offload_host_begin/finish); one trip per weight, each
 * after the device's work before it, with LRUN_CUDA_HOST_GROUP=0. */
static lrun_status products(lrun_cuda_engine *e, const lrun_weight_ref *w, float *const *y, int n_w,
                            struct gemv_in in, int64_t m)
{
    const struct lrun_tensor *ht[LRUN_ARCH_OP_MAX_W];
    float *hy[LRUN_ARCH_OP_MAX_W];
    int on_host[LRUN_ARCH_OP_MAX_W], n_host = 0;
    for (int i = 0; i < n_w; i++) {
        on_host[i] = host_side(e, w[i], m);
        if (on_host[i]) ht[n_host] = w[i].w, hy[n_host++] = y[i];
    }
    if (n_host == 0 || in.norm_w || !lrun_cuda_offload_host_group_fits(e, ht, n_host, m)) {
        for (int i = 0; i < n_w; i++) TRY(matmul_in(e, w[i], in, m, y[i]));
        return LRUN_OK;
    }
    TRY(lrun_cuda_offload_host_begin(e, in.x, m, ht[0]->ne[0]));
    for (int i = 0; i < n_w; i++)
        if (!on_host[i]) TRY(matmul_in(e, w[i], in, m, y[i]));
    return lrun_cuda_offload_host_finish(e, ht, hy, n_host, m);
}

/* Products of one x with several weights of one dtype in one GEMV launch
 * (decode: m <= GEMV_MAX_ROWS): Q, K and V stored; gate and up through
 * SwiGLU into y[0]; or one weight added into y[0] (the residual stream).
 * fusable says whether weights can share a launch (one dtype and width;
 * and on the device; otherwise the caller takes matmul per weight). */
static int fusable(const lrun_weight_ref *w, int n_w)
{
    for (int i = 0; i < n_w; i++)
        if (w[i].w->dtype != w[0].w->dtype || w[i].w->ne[0] != w[0].w->ne[0] || w[i].on_host ||
            w[i].w->split != w[0].w->split)
            return 0;
    return 1;
}

static int packed(const lrun_weight_ref *w, int n_w)
{
    for (int i = 0; i < n_w; i++)
        if (w[i].w->packed) return 1;
    return 0;
}

static lrun_status gemv_fused(lrun_cuda_engine *e, const lrun_weight_ref *w, float *const *y, int n_w,
                              struct gemv_in in, int64_t m, int mode)
{
    if (packed(w, n_w)) /* packed on the device (mode 3): engine_cuda_packed.h */
        return lrun_cuda_packed_gemv(e, w, y, n_w, in.x, in.norm_w, m, mode);
    lrun_k_gemv_part parts[LRUN_K_GEMV_MAX_PARTS];
    for (int i = 0; i < n_w; i++) {
        parts[i].w = w[i].data;
        parts[i].row_bytes = w[i].w->row_bytes;
        parts[i].n = w[i].w->ne[1];
        parts[i].y = y[i];
    }
    return gemv(e, w[0].w, parts, n_w, in, m, mode);
}

// ---------------------------------------------------------------- ops

/* The weights of the op after op i of the block (the next block's first op
 * after the last), for an op that prepares its output for them; *n_next 0
 * when it is no matmul, or in the next part of a layer split. */
static void peek_next(const struct run *r, int i, lrun_weight_ref *next, int *n_next)
{
    const lrun_arch *a = r->e->model->arch;
    int64_t l = r->layer;
    if (++i == a->n_ops) i = 0, l++;
    *n_next = 0;
    if (l >= r->e->layer_end) return;
    const lrun_arch_op *op = &a->ops[i];
    if (op->kind != LRUN_ARCH_OP_MATMUL && op->kind != LRUN_ARCH_OP_MATMUL_SWIGLU && op->kind != LRUN_ARCH_OP_MATMUL_ADD)
        return;
    *n_next = op->kind == LRUN_ARCH_OP_MATMUL_ADD ? 1 : lrun_arch_op_n_w(op);
    for (int j = 0; j < *n_next; j++) next[j] = lrun_weights_peek(r->W, l, op->w[j]);
}

/* The norm op after op i (the next block's first after the last), or NULL;
 * in a layer split, *l_norm may be the next part's block. */
static const lrun_arch_op *norm_after(const struct run *r, int i, int64_t *l_norm)
{
    const lrun_arch *a = r->e->model->arch;
    *l_norm = r->layer;
    if (++i == a->n_ops) i = 0, ++*l_norm;
    if (*l_norm >= r->e->n_layer || a->ops[i].kind != LRUN_ARCH_OP_NORM) return NULL;
    return &a->ops[i];
}

/* 1 when NORM op i is left to the product after it: fast numerics, a
 * decode chunk, LRUN_CUDA_NORM_FUSE=1 (opt-in), and the op table lets it
 * (lrun_arch_norm_folds: that product alone reads the norm's output). The
 * product's take_norm then runs it, folded where its kernel can. */
static int norm_folds(const struct run *r, int i)
{
    const lrun_cuda_engine *e = r->e;
    return !e->exact && e->gemv.norm_fuse && r->n <= GEMV_MAX_ROWS && lrun_arch_norm_folds(e->model->arch, i);
}

/* out[0] = rms_norm(in) * w; exact: with the quantization for the next op's weights. */
static lrun_status op_norm(struct run *r, const lrun_arch_op *op, int i)
{
    lrun_cuda_engine *e = r->e;
    const float *w = vector(e, r->layer, op->w[0]);
    if (e->exact) {
        lrun_weight_ref next[LRUN_ARCH_OP_MAX_W];
        int n_next;
        peek_next(r, i, next, &n_next);
        return lrun_cuda_exact_add_norm(e, NULL, NULL, w, next, n_next, r->n, &r->quantized);
    }
    return lrun_k_rms_norm(buf(e, op->in), w, buf(e, op->out[0]), r->n, e->n_embd, e->eps, e->stream);
}

/* 1 when the decode GEMVs of w (m rows; one launch when fused, else one
 * per weight through matmul_in) can each fold a norm. */
static int gemvs_fold(const lrun_cuda_engine *e, const lrun_weight_ref *w, int n_w, int fused, int64_t m)
{
    for (int i = 0; i < (fused ? 1 : n_w); i++) { /* fused: one dtype, on the device (fusable) */
        const struct lrun_tensor *t = w[i].w;
        if (lrun_cuda_q8x_takes(e, t) || !lrun_k_gemv_norm_takes(t->dtype, m, lrun_cuda_gemv_flags(e, t->dtype)))
            return 0;
        if (!fused && (w[i].on_host || t->packed)) return 0;
    }
    return 1;
}

/* The input of product op (weights w, n_w of them; fused: one GEMV launch
 * for all, r->n <= GEMV_MAX_ROWS and fusable) after a norm left to it
 * (r->norm): the q8 x GEMVs take the norm in their quantization
 * (lrun_cuda_q8x_norm: xn and its q8 blocks, one launch), the GEMVs that
 * can fold it (lrun_k_gemv_norm_takes; in one launch, packed weights too,
 * decoded first, so a packed model keeps the plain model's bits; or one
 * GEMV per weight when their dtypes differ, each folding it) read the
 * norm's input with the norm (xn is never written); anything else
 * (weights computed on the host, split rows without q8x, the m = 1 kernels
 * that fold no norm) gets the norm's own kernel first. Prefill-sized
 * chunks never leave a norm. Without a pending norm: op's input. */
static lrun_status take_norm(struct run *r, const lrun_arch_op *op, const lrun_weight_ref *w, int n_w, int fused,
                             struct gemv_in *in)
{
    lrun_cuda_engine *e = r->e;
    const lrun_arch_op *norm = r->norm;
    in->x = buf(e, op->in), in->norm_w = NULL;
    if (!norm) return LRUN_OK;
    r->norm = NULL;
    const float *x = buf(e, norm->in), *nw = vector(e, r->layer, norm->w[0]);
    float *xn = buf(e, norm->out[0]); /* op's input (lrun_arch_norm_folds) */
    if (fused && lrun_cuda_q8x_takes(e, w[0].w) && !packed(w, n_w)) {
        int done;
        TRY(lrun_cuda_q8x_norm(e, w[0].w, x, nw, xn, r->n, &done));
        if (done) return LRUN_OK; /* the scratch holds xn: the GEMVs below do not quantize */
    } else if (r->n <= GEMV_MAX_ROWS && gemvs_fold(e, w, n_w, fused, r->n)) {
        in->x = x, in->norm_w = nw;
        return LRUN_OK;
    }
    return lrun_k_rms_norm(x, nw, xn, r->n, e->n_embd, e->eps, e->stream);
}

/* out[i] = in · w[i]ᵀ: one launch for decode when the weights allow. */
static lrun_status op_matmul(struct run *r, const lrun_arch_op *op, int n_w)
{
    lrun_cuda_engine *e = r->e;
    lrun_weight_ref w[LRUN_ARCH_OP_MAX_W];
    float *y[LRUN_ARCH_OP_MAX_W];
    refs(r, op, n_w, w);
    for (int i = 0; i < n_w; i++) y[i] = buf(e, op->out[i]);
    if (e->exact) {
        TRY(lrun_cuda_exact_matmul(e, w, y, n_w, buf(e, op->in), r->n, r->quantized));
        r->quantized = 0;
        return LRUN_OK;
    }
    const int fused = r->n <= GEMV_MAX_ROWS && fusable(w, n_w);
    struct gemv_in in;
    TRY(take_norm(r, op, w, n_w, fused, &in));
    if (fused) return gemv_fused(e, w, y, n_w, in, r->n, LRUN_K_GEMV_STORE);
    return products(e, w, y, n_w, in, r->n);
}

/* out[i] += b[i] for the biases the file has (both numerics). */
static lrun_status op_bias(struct run *r, const lrun_arch_op *op, int n_w)
{
    lrun_cuda_engine *e = r->e;
    for (int i = 0; i < n_w; i++) {
        const float *b = vector(e, r->layer, op->w[i]);
        if (b) TRY(lrun_k_add_bias(buf(e, op->out[i]), b, r->n, buf_width(e, op->out[i]), e->stream));
    }
    return LRUN_OK;
}

/* out[i] = rms_norm(each head of out[i]) * w[i], in place. Exact: the CPU's
 * norm (lrun_k_rms_norm_exact, which must not write its input) into attn,
 * free until the attention, then copied back. */
static lrun_status op_head_norm(struct run *r, const lrun_arch_op *op, int n_w)
{
    lrun_cuda_engine *e = r->e;
    const int64_t hd = e->model->info.head_dim;
    for (int i = 0; i < n_w; i++) {
        const float *w = vector(e, r->layer, op->w[i]);
        float *y = buf(e, op->out[i]);
        const int64_t width = buf_width(e, op->out[i]), rows = r->n * (width / hd);
        if (!w) return lrun_fail(LRUN_E_INTERNAL, "engine on %s: head norm %d of block %lld has no weight",
                                 e->device->name, i, (long long)r->layer);
        if (!e->exact) {
            TRY(lrun_k_rms_norm(y, w, y, rows, hd, e->eps, e->stream));
            continue;
        }
        TRY(lrun_k_rms_norm_exact(y, w, e->attn, rows, hd, e->eps, e->stream));
        TRY(cuda_check(cudaMemcpyAsync(y, e->attn, (size_t)(r->n * width) * sizeof(float), cudaMemcpyDeviceToDevice,
                                       (cudaStream_t)e->stream),
                       "head norm", e->device));
    }
    return LRUN_OK;
}

static lrun_status op_rope_store(struct run *r)
{
    lrun_cuda_engine *e = r->e;
    if (e->exact) return lrun_cuda_exact_rope_store(e, r->kc, r->vc, r->n);
    const lrun_model *m = e->model;
    const lrun_model_info *in = &m->info;
    const struct step_table *t = &e->d_table;
    /* gemma3's windowed blocks rotate at their own base, without scaling or factors (as the CPU's rope_local) */
    const int local = m->arch->rope_base_local > 0 && lrun_model_layer_is_local(m, r->layer);
    const float base = (float)(local ? m->arch->rope_base_local : in->rope_freq_base);
    const float fscale = local ? 1.0f : (float)m->rope_freq_scale;
    const float *ff = local ? NULL : e->freq_factors;
    void *s = e->stream;
    const int64_t n = r->n;
    if (in->head_dim % 2 == 0) /* YaRN (gpt-oss) when e->yarn.mscale > 0: check_supported keeps it here */
        return lrun_k_rope_kv_store_yarn(e->q, e->k, e->v, t->pos, n, in->n_head, in->n_head_kv, in->head_dim,
                                         in->n_rot, base, fscale, ff, in->rope_style, &e->yarn, e->kv_dtype, r->kc,
                                         r->vc, t->row_off, s);
    TRY(lrun_k_rope(e->q, t->pos, n, in->n_head, in->head_dim, in->n_rot, base, fscale, ff, in->rope_style, s));
    TRY(lrun_k_rope(e->k, t->pos, n, in->n_head_kv, in->head_dim, in->n_rot, base, fscale, ff, in->rope_style, s));
    return lrun_k_kv_store(e->kv_dtype, r->kc, r->vc, t->row_off, e->k, e->v, n, e->kv_dim, s);
}

/* The tensor-core prefill attention for this chunk: an f16 cache and a head
 * size it has, and runs of one sequence long enough to fill its 64-row
 * tiles (fattn_min tokens on average; 1 under LRUN_CUDA_FATTN=1). */
static int flash(const struct run *r)
{
    const lrun_cuda_engine *e = r->e;
    const int64_t runs = e->chunk_runs > 0 ? e->chunk_runs : r->n;
    return e->fattn_min > 0 && lrun_k_attention_flash_supported(e->kv_dtype, e->model->info.head_dim) &&
           r->n >= e->fattn_min * runs;
}

/* attn = attention(q, cache); then a staged cache writes the layer back. */
static lrun_status op_attention(struct run *r, const lrun_arch_op *op)
{
    lrun_cuda_engine *e = r->e;
    const lrun_model_info *in = &e->model->info;
    const struct step_table *t = &e->d_table;
    const int64_t n_swa = lrun_model_layer_swa(e->model, r->layer); /* every block's n_swa but gemma's */
    const float *sinks = vector(e, r->layer, op->w[0]);              /* gpt-oss's, or NULL */
    if (sinks) /* gpt-oss: each head's sink in the softmax (the exact path refuses it: its swa_pattern) */
        TRY(lrun_k_attention_sinks(e->kv_dtype, e->q, r->kc, r->vc, t->kv_base, t->kv_base, t->n_kv, r->n, in->n_head,
                                   in->n_head_kv, in->head_dim, r->max_kv, e->attn_scale, n_swa, sinks, e->attn,
                                   e->attn_work, e->stream));
    else if (e->exact)
        TRY(lrun_cuda_exact_attention(e, r->kc, r->vc, r->n, r->max_kv));
    else if (lrun_cuda_kv_fused(e)) /* quantized decode: codes and ring, no slot (engine_cuda_kv.c) */
        TRY(lrun_cuda_kv_fused_attention(e, r->layer, r->n, r->max_kv));
    else if (e->model->attn_softcap > 0) /* gemma2: scores soft-capped, the window on its blocks */
        TRY(lrun_k_attention_softcap(e->kv_dtype, e->q, r->kc, r->vc, t->kv_base, t->kv_base, t->n_kv, r->n,
                                     in->n_head, in->n_head_kv, in->head_dim, r->max_kv, e->attn_scale, n_swa,
                                     (float)e->model->attn_softcap, e->attn, e->attn_work, e->stream));
    else if (flash(r)) /* a prefill chunk: tensor cores, with the window when there is one */
        TRY(lrun_k_attention_flash(e->q, r->kc, r->vc, t->kv_base, t->kv_base, t->n_kv, r->n, in->n_head,
                                   in->n_head_kv, in->head_dim, r->max_kv, e->attn_scale, n_swa, e->attn, e->stream));
    else if (n_swa > 0) /* a sliding window (Mistral; gemma3's local blocks) */
        TRY(lrun_k_attention_window(e->kv_dtype, e->q, r->kc, r->vc, t->kv_base, t->kv_base, t->n_kv, r->n,
                                    in->n_head, in->n_head_kv, in->head_dim, r->max_kv, e->attn_scale, n_swa,
                                    e->attn, e->attn_work, e->stream));
    else
        TRY(lrun_k_attention(e->kv_dtype, e->q, r->kc, r->vc, t->kv_base, t->kv_base, t->n_kv, r->n, in->n_head,
                             in->n_head_kv, in->head_dim, r->max_kv, e->attn_scale, e->attn, e->attn_work,
                             e->stream));
    r->quantized = 0;
    return lrun_cuda_kv_layer_end(e, r->layer, r->n);
}

/* Exact: tmp = in · wᵀ; x += tmp (+ bias), fused with the norm after when
 * there is one (and its quantization for the weights after that). */
static lrun_status exact_matmul_add(struct run *r, int i, lrun_weight_ref w, const float *bias)
{
    lrun_cuda_engine *e = r->e;
    const lrun_arch_op *op = &e->model->arch->ops[i];
    TRY(lrun_cuda_exact_matmul(e, &w, &e->tmp, 1, buf(e, op->in), r->n, r->quantized));
    int64_t l_norm;
    const lrun_arch_op *norm = norm_after(r, i, &l_norm);
    if (norm && l_norm >= e->layer_end) {
        /* the norm is the next part's (a layer split): x in the fused kernel's order, x += tmp
         * then x += bias; that part's first block norms x itself (forward_layers), as here */
        r->quantized = 0;
        TRY(lrun_k_add(e->x, e->tmp, r->n * e->n_embd, e->stream));
        return bias ? lrun_k_add_bias(e->x, bias, r->n, e->n_embd, e->stream) : LRUN_OK;
    }
    if (!norm) {
        r->quantized = 0;
        if (bias) TRY(lrun_k_add_bias(e->tmp, bias, r->n, e->n_embd, e->stream));
        return lrun_k_add(e->x, e->tmp, r->n * e->n_embd, e->stream);
    }
    lrun_weight_ref next[LRUN_ARCH_OP_MAX_W];
    int n_next;
    const struct run at_norm = {e, r->n, r->max_kv, l_norm, r->W, NULL, NULL, 0, 0, NULL};
    peek_next(&at_norm, (int)(norm - e->model->arch->ops), next, &n_next);
    r->normed = 1;
    return lrun_cuda_exact_add_norm(e, e->tmp, bias, vector(e, l_norm, norm->w[0]), next, n_next, r->n,
                                    &r->quantized);
}

/* out[0] += in · w[0]ᵀ (+ w[1]): in the GEMV's epilogue for decode, then the bias. */
static lrun_status op_matmul_add(struct run *r, const lrun_arch_op *op, int i)
{
    lrun_cuda_engine *e = r->e;
    const lrun_weight_ref w = lrun_weights_get(r->W, r->layer, op->w[0]);
    const float *bias = op->w[1] != LRUN_ARCH_TENSOR_NONE ? vector(e, r->layer, op->w[1]) : NULL;
    if (e->exact) return exact_matmul_add(r, i, w, bias);
    float *x = buf(e, op->out[0]);
    const int fused = r->n <= GEMV_MAX_ROWS && fusable(&w, 1);
    struct gemv_in in;
    TRY(take_norm(r, op, &w, 1, fused, &in));
    if (fused) {
        TRY(gemv_fused(e, &w, &x, 1, in, r->n, LRUN_K_GEMV_ADD));
        return bias ? lrun_k_add_bias(x, bias, r->n, e->n_embd, e->stream) : LRUN_OK;
    }
    TRY(matmul_in(e, w, in, r->n, e->tmp));
    if (bias) TRY(lrun_k_add_bias(e->tmp, bias, r->n, e->n_embd, e->stream));
    return lrun_k_add(x, e->tmp, r->n * e->n_embd, e->stream);
}

/* out[0] = silu(in · w[0]ᵀ) * (in · w[1]ᵀ): SwiGLU in the GEMV's epilogue for decode. */
static lrun_status op_matmul_swiglu(struct run *r, const lrun_arch_op *op, int i)
{
    lrun_cuda_engine *e = r->e;
    lrun_weight_ref w[2];
    refs(r, op, 2, w);
    float *y[2] = {buf(e, op->out[0]), buf(e, op->out[1])};
    if (e->exact) {
        TRY(lrun_cuda_exact_matmul(e, w, y, 2, buf(e, op->in), r->n, r->quantized));
        lrun_weight_ref next[LRUN_ARCH_OP_MAX_W];
        int n_next;
        peek_next(r, i, next, &n_next);
        return lrun_cuda_exact_swiglu(e, next, n_next, r->n, &r->quantized);
    }
    const int fused = r->n <= GEMV_MAX_ROWS && fusable(w, 2);
    struct gemv_in in;
    TRY(take_norm(r, op, w, 2, fused, &in));
    if (fused) return gemv_fused(e, w, y, 2, in, r->n, LRUN_K_GEMV_SWIGLU);
    TRY(products(e, w, y, 2, in, r->n));
    return lrun_k_swiglu(y[0], y[1], y[0], r->n * e->n_ff, e->stream);
}

/* out[0] += rms_norm(in · w[0]ᵀ) * w[1] (gemma's post-attention and
 * post-FFN norms): the projection into tmp (the GEMV for decode), normed
 * in place, then added. Fast path only: the exact path refuses gemma
 * (lrun_cuda_exact_eligible). */
static lrun_status op_matmul_norm_add(struct run *r, const lrun_arch_op *op)
{
    lrun_cuda_engine *e = r->e;
    const lrun_weight_ref w = lrun_weights_get(r->W, r->layer, op->w[0]);
    const float *post = vector(e, r->layer, op->w[1]);
    if (!post) return lrun_fail(LRUN_E_INTERNAL, "engine on %s: the post-norm of block %lld has no weight",
                                e->device->name, (long long)r->layer);
    TRY(matmul(e, w, buf(e, op->in), r->n, e->tmp));
    TRY(lrun_k_rms_norm(e->tmp, post, e->tmp, r->n, e->n_embd, e->eps, e->stream));
    return lrun_k_add(buf(e, op->out[0]), e->tmp, r->n * e->n_embd, e->stream);
}

/* out[0] = gelu_tanh(in · w[0]ᵀ) * (in · w[1]ᵀ): GeGLU in the GEMV's
 * epilogue for decode, else the GeGLU kernel after the products (fast path
 * only, as above). */
static lrun_status op_matmul_geglu(struct run *r, const lrun_arch_op *op)
{
    lrun_cuda_engine *e = r->e;
    lrun_weight_ref w[2];
    refs(r, op, 2, w);
    float *y[2] = {buf(e, op->out[0]), buf(e, op->out[1])};
    const int table = !e->model->gelu_f32; /* a GGUF's f16-table GELU, an HF directory's f32 one */
    const int fused = r->n <= GEMV_MAX_ROWS && fusable(w, 2);
    struct gemv_in in;
    TRY(take_norm(r, op, w, 2, fused, &in));
    if (fused) return gemv_fused(e, w, y, 2, in, r->n, table ? LRUN_K_GEMV_GEGLU : LRUN_K_GEMV_GEGLU_F32);
    TRY(products(e, w, y, 2, in, r->n));
    return lrun_k_geglu(y[0], y[1], y[0], r->n * e->n_ff, table, e->stream);
}

// ---------------------------------------------------------------- the interpreter

static lrun_status run_block(struct run *r)
{
    const lrun_arch *a = r->e->model->arch;
    for (int i = 0; i < a->n_ops; i++) {
        const lrun_arch_op *op = &a->ops[i];
        const int n_w = lrun_arch_op_n_w(op);
        TRY(lrun_cuda_op_profile_begin(r->e->prof, (int)op->kind, r->n));
        lrun_cuda_split_input_reset(r->e); /* the op before may have written any buffer */
        switch (op->kind) {
        case LRUN_ARCH_OP_NORM:
            if (r->normed) r->normed = 0;            /* exact: the op before ran it */
            else if (norm_folds(r, i)) r->norm = op; /* the next op's take_norm runs it */
            else TRY(op_norm(r, op, i));
            break;
        case LRUN_ARCH_OP_MATMUL: TRY(op_matmul(r, op, n_w)); break;
        case LRUN_ARCH_OP_BIAS: TRY(op_bias(r, op, n_w)); break;
        case LRUN_ARCH_OP_HEAD_NORM: TRY(op_head_norm(r, op, n_w)); break;
        case LRUN_ARCH_OP_ROPE_STORE: TRY(op_rope_store(r)); break;
        case LRUN_ARCH_OP_ATTENTION: TRY(op_attention(r, op)); break;
        case LRUN_ARCH_OP_MATMUL_ADD: TRY(op_matmul_add(r, op, i)); break;
        case LRUN_ARCH_OP_MATMUL_SWIGLU: TRY(op_matmul_swiglu(r, op, i)); break;
        case LRUN_ARCH_OP_MATMUL_GEGLU: TRY(op_matmul_geglu(r, op)); break;
        case LRUN_ARCH_OP_MATMUL_NORM_ADD: TRY(op_matmul_norm_add(r, op)); break;
        /* engine_cuda_moe.c; the next norm runs as its own op */
        case LRUN_ARCH_OP_MOE_ROUTE: TRY(lrun_cuda_moe_route(r->e, r->W, r->layer, r->n, op)); break;
        case LRUN_ARCH_OP_MOE_FFN_ADD: TRY(lrun_cuda_moe_ffn_add(r->e, r->W, r->layer, r->n, op)); break;
        default:
            return lrun_fail(LRUN_E_INTERNAL, "engine on %s: op kind %d has no CUDA implementation", r->e->device->name,
                             (int)op->kind);
        }
        if (r->norm && op->kind != LRUN_ARCH_OP_NORM) /* lrun_arch_norm_folds promised a product here */
            return lrun_fail(LRUN_E_INTERNAL, "engine on %s: op %d of block %lld left the norm before it unrun",
                             r->e->device->name, i, (long long)r->layer);
        TRY(lrun_cuda_op_profile_end(r->e->prof));
    }
    return LRUN_OK;
}

/* x (n, n_embd) = the embeddings of the table's tokens. */
static lrun_status embed(lrun_cuda_engine *e, int64_t n)
{
    const lrun_model *m = e->model;
    const struct lrun_tensor *te = m->tok_embd;
    if (e->offload && lrun_cuda_offload_embeds_on_host(e)) TRY(lrun_cuda_offload_embed(e, n));
    else if (te->packed) TRY(lrun_cuda_packed_embed(e, te, n)); /* a packed table on the device */
    else TRY(lrun_k_embed(te->dtype, te->data, te->row_bytes, e->n_embd, e->d_table.tokens, n, e->x, e->stream));
    if (m->arch->embd_scale) /* gemma: each row times sqrtf(n_embd), as the CPU */
        TRY(lrun_k_scale(e->x, sqrtf((float)e->n_embd), n * e->n_embd, e->stream));
    return LRUN_OK;
}

/* Every block of the engine's range over the n tokens of the table already
 * on the device. A layer split's later part starts from the previous part's
 * rows, which run_chunk copied into x, instead of the embedding. */
static lrun_status forward_layers(lrun_cuda_engine *e, const lrun_weights *W, int64_t n, int64_t max_kv)
{
    const lrun_model *m = e->model;
    TRY(lrun_cuda_op_profile_begin(e->prof, LRUN_PROF_EMBED, n)); /* a split's later part: its chunk's start */
    if (!lrun_cuda_takes_rows(e)) TRY(embed(e, n));
    TRY(lrun_cuda_op_profile_end(e->prof));
    struct run r = {e, n, max_kv, e->layer_first, W, NULL, NULL, 0, 0, NULL};
    /* exact: the first norm, with its quantization, right after the embedding (a split's later
     * part: the norm the previous part's last residual add left to it, on the same x) */
    if (e->exact && m->arch->ops[0].kind == LRUN_ARCH_OP_NORM) {
        TRY(op_norm(&r, &m->arch->ops[0], 0));
        r.normed = 1;
    }
    for (int64_t l = e->layer_first; l < e->layer_end; l++) {
        r.layer = l;
        TRY(lrun_cuda_op_profile_begin(e->prof, LRUN_PROF_WEIGHTS, n));
        TRY(lrun_weights_begin(W, l)); /* streamed weights in their slot */
        TRY(lrun_cuda_op_profile_end(e->prof));
        TRY(lrun_cuda_op_profile_begin(e->prof, LRUN_PROF_KV, n));
        TRY(lrun_cuda_kv_layer(e, l, &r.kc, &r.vc)); /* a staged cache's slot: engine_cuda_kv.c */
        TRY(lrun_cuda_op_profile_end(e->prof));
        TRY(run_block(&r));
        TRY(lrun_weights_end(W, l));
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- output

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
    if (e->exact) return lrun_cuda_exact_output_norm(e, n_want, identity);
    if (!identity) TRY(lrun_cuda_gather_rows(e, n_want, e->xn));
    return lrun_k_rms_norm(identity ? e->x : e->xn, e->output_norm, e->xn, n_want, e->n_embd, e->eps, e->stream);
}

/* logits (rows, n_vocab) on the device = LM head of xn rows [r0, r0+rows).
 * A streamed head is read from its slot (the chunk's head_begin made
 * compute wait for it; it stays there until the next chunk). */
static lrun_status lm_head(lrun_cuda_engine *e, int64_t r0, int64_t rows)
{
    struct lrun_cuda_weights src;
    const lrun_weights W = lrun_cuda_weights_init(&src, e);
    const lrun_weight_ref head = lrun_weights_get(&W, e->n_layer, LRUN_ARCH_TENSOR_OUTPUT);
    const float *x = e->xn + r0 * e->n_embd;
    if (e->exact) return lrun_cuda_exact_matmul(e, &head, &e->logits, 1, x, rows, 0);
    lrun_cuda_split_input_reset(e); /* xn: the output norm's, not a block's */
    TRY(matmul(e, head, x, rows, e->logits));
    const double cap = e->model->final_softcap; /* gemma2: every logit soft-capped */
    return cap > 0 ? lrun_k_softcap(e->logits, rows * e->n_vocab, (float)cap, e->stream) : LRUN_OK;
}

lrun_status lrun_cuda_lm_head(lrun_cuda_engine *e, int64_t r0, int64_t rows)
{
    lrun_k_set_pdl(lrun_cuda_pdl_on(e));
    return lm_head(e, r0, rows);
}

/* All device work of a chunk up to the first block of logits. */
lrun_status lrun_cuda_enqueue_chunk(lrun_cuda_engine *e, int64_t n, int64_t n_want, int identity, int64_t max_kv)
{
    /* this thread's launches, also inside a graph capture; see lrun_cuda_pdl_on for when it is off */
    lrun_k_set_pdl(lrun_cuda_pdl_on(e));
    struct lrun_cuda_weights src;
    const lrun_weights W = lrun_cuda_weights_init(&src, e);
    TRY(forward_layers(e, &W, n, max_kv));
    if (lrun_cuda_gives_rows(e)) return LRUN_OK; /* a split's part before the last: x goes on, no head */
    /* a streamed head is met every chunk, wanted or not, to keep the copy cycle */
    TRY(lrun_weights_begin(&W, e->n_layer));
    if (n_want > 0) {
        TRY(lrun_cuda_op_profile_begin(e->prof, LRUN_PROF_HEAD, n));
        TRY(output_norm(e, n_want, identity));
        const int64_t rows = min64(n_want, LOGIT_ROWS);
        TRY(e->exact ? lm_head(e, 0, rows) : lrun_cuda_lm_head(e, 0, rows)); /* as the two paths always did */
        TRY(lrun_cuda_op_profile_end(e->prof));
    }
    return lrun_weights_end(&W, e->n_layer);
}
