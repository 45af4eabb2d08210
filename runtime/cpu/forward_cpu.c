/* forward_cpu.c — one chunk of tokens through the model on the CPU: the
 * architecture's op table (arch/arch.h) run with the CPU's ops.
 *
 * Every matmul covers all n tokens of the chunk at once (m = n); a one-token
 * chunk (decode) runs the products of one op that share an input in one
 * parallel region (lrun_cpu_matvec_multi). A projection's residual add is
 * fused with the norm that follows it (the next op, or the next block's
 * first), so the rows are read once. All compute is f32 in llama.cpp's
 * order of operations (docs/numerics.md): the same float operations in the
 * same order as llama.cpp, to the bit. Weights come from residency/weights.h. */
#include <math.h>
#include <string.h>

#include "cpu/cpu_matmul.h"
#include "cpu/cpu_matmul_packed.h"
#include "cpu/engine_cpu_internal.h"
#include "residency/weights.h"

// ---------------------------------------------------------------- row passes

/* One parallel pass over chunk rows; each field is used by some passes. */
struct rows_ctx {
    cpu_engine *e;
    int64_t layer;
    const float *norm;     /* (n_embd) weight of the norm to apply */
    const float *bias;     /* (n_embd) added with the residual, or NULL */
    const float *add;      /* (n, n_embd) added to x first, or NULL */
    const float *post;     /* (n_embd) the norm of add's rows before the add (gemma2's sandwich), or NULL */
    const int64_t *rows;   /* row map for the output norm, or NULL */
    float *y[3];           /* bias rows: the outputs (widths w[i]) */
    const float *b[3];     /*            their biases, NULL when absent */
    int64_t w[3];
};

/* x[i] += add[i] (+ bias); xn[i] = rms_norm(x[i]) * norm. Fuses the residual
 * add with the next norm so the rows are read once. */
static void residual_norm_rows(void *ctx, int64_t first, int64_t last)
{
    const struct rows_ctx *c = ctx;
    const cpu_engine *e = c->e;
    const int64_t d = e->n_embd;
    const float eps = (float)e->model->info.rms_eps;
    for (int64_t i = first; i < last; i++) {
        const int64_t src = c->rows ? c->rows[i] : i;
        float *x = e->x + src * d;
        if (c->post) lrun_cpu_rms_norm((float *)c->add + src * d, c->add + src * d, c->post, d, eps); /* e->tmp */
        if (c->add) lrun_cpu_add(x, c->add + src * d, d);
        if (c->bias) lrun_cpu_add(x, c->bias, d);
        if (c->norm) lrun_cpu_rms_norm(e->xn + i * d, x, c->norm, d, eps);
    }
}

/* y_j[i] += b_j for the biases present. */
static void bias_rows(void *ctx, int64_t first, int64_t last)
{
    const struct rows_ctx *c = ctx;
    for (int64_t i = first; i < last; i++)
        for (int j = 0; j < 3; j++)
            if (c->b[j]) lrun_cpu_add(c->y[j] + i * c->w[j], c->b[j], c->w[j]);
}

/* Each head_dim-long head of y_j[i] normed in place: rms_norm · b_j. */
static void head_norm_rows(void *ctx, int64_t first, int64_t last)
{
    const struct rows_ctx *c = ctx;
    const lrun_model_info *in = &c->e->model->info;
    const int64_t hd = in->head_dim;
    const float eps = (float)in->rms_eps;
    for (int64_t i = first; i < last; i++)
        for (int j = 0; j < 3; j++)
            for (int64_t h = 0; c->b[j] && h < c->w[j] / hd; h++) {
                float *y = c->y[j] + i * c->w[j] + h * hd;
                lrun_cpu_rms_norm(y, y, c->b[j], hd, eps); /* reads each x[i] before writing y[i] */
            }
}

/* RoPE at each token's position, and k, v appended to its cache. */
static void rope_store_rows(void *ctx, int64_t first, int64_t last)
{
    const struct rows_ctx *c = ctx;
    cpu_engine *e = c->e;
    const lrun_model_info *in = &e->model->info;
    for (int64_t i = first; i < last; i++) {
        float *q = e->q + i * e->q_dim, *k = e->k + i * e->kv_dim, *v = e->v + i * e->kv_dim;
        const int local = e->model->arch->rope_base_local > 0 && lrun_model_layer_is_local(e->model, c->layer);
        const lrun_rope *rope = local ? &e->rope_local : &e->rope;
        const float *cs = (local ? e->cs_local : e->cs) + i * in->n_rot;
        lrun_cpu_rope_apply(rope, cs, q, in->n_head, in->head_dim);
        lrun_cpu_rope_apply(rope, cs, k, in->n_head_kv, in->head_dim);
        const int64_t s = e->tok_seq[i], pos = e->tok_pos[i];
        const size_t eb = e->kv.elem_bytes;
        const lrun_kv_view w = lrun_kv_cache_view(&e->kv, s, c->layer - e->layer_first);
        char *kd, *vd; /* where position pos goes: its block's row and column, or the slot's */
        int64_t vstride;
        if (w.blocks) {
            char *b = w.blocks[pos / w.block_pos];
            const int64_t j = pos % w.block_pos;
            kd = b + w.k_off + (size_t)(j * e->kv_dim) * eb;
            vd = b + w.v_off + (size_t)j * eb;
            vstride = w.block_pos;
        } else {
            kd = (char *)w.k + (size_t)(pos * e->kv_dim) * eb;
            vd = (char *)w.v + (size_t)pos * eb;
            vstride = w.cap;
        }
        lrun_cpu_kv_store(kd, e->kv.dtype, 1, k, e->kv_dim);
        lrun_cpu_kv_store(vd, e->kv.dtype, vstride, v, e->kv_dim); /* a column of the transposed values */
        e->tok_k[i] = w.k;
        e->tok_v[i] = w.v;
        e->tok_vstride[i] = w.cap;
        e->tok_blocks[i] = (const void *const *)w.blocks;
    }
}

static void swiglu_rows(void *ctx, int64_t first, int64_t last)
{
    const cpu_engine *e = ((const struct rows_ctx *)ctx)->e;
    /* row by row, as ggml: where n_ff is not a multiple of 8 each row has its own tail */
    for (int64_t i = first; i < last; i++) lrun_cpu_swiglu(e->gate + i * e->n_ff, e->up + i * e->n_ff, e->n_ff);
}

/* torch's gelu(x, approximate="tanh") in f32, as transformers computes an HF
 * gemma's gelu_pytorch_tanh: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
static void geglu_f32(float *g, const float *u, int64_t n)
{
    const float beta = 0.79788456080286535587989211986876f, kappa = 0.044715f;
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i], inner = beta * (x + kappa * x * x * x);
        g[i] = 0.5f * x * (1.0f + tanhf(inner)) * u[i];
    }
}

static void geglu_rows(void *ctx, int64_t first, int64_t last)
{
    const cpu_engine *e = ((const struct rows_ctx *)ctx)->e;
    const int f32 = e->model->gelu_f32; /* an HF gemma: transformers' GELU; a GGUF: llama.cpp's f16 table */
    for (int64_t i = first; i < last; i++)
        (f32 ? geglu_f32 : lrun_cpu_geglu)(e->gate + i * e->n_ff, e->up + i * e->n_ff, e->n_ff);
}

/* Chunk row passes cost little per row: below this many rows a dispatch to
 * the pool costs more than it saves. */
#define ROWS_PARALLEL 4

// ---------------------------------------------------------------- the CPU's ops

/* One chunk's run: the engine, its n tokens, where weights come from. */
struct run {
    cpu_engine *e;
    int64_t n;
    int64_t layer;
    const lrun_weights *W;
};

static float *buf(const cpu_engine *e, lrun_arch_buf b)
{
    float *const bufs[LRUN_ARCH_BUF_COUNT] = {e->x, e->xn, e->q, e->k, e->v, e->attn, e->gate, e->up, e->router};
    return bufs[b];
}

static int64_t buf_width(const cpu_engine *e, lrun_arch_buf b)
{
    switch (lrun_arch_buf_dim(b)) {
    case LRUN_ARCH_DIM_Q: return e->q_dim;
    case LRUN_ARCH_DIM_KV: return e->kv_dim;
    case LRUN_ARCH_DIM_FF: return e->n_ff;
    default: return e->n_embd;
    }
}

/* The f32 copy init made of a block vector (norms, biases), or NULL when absent. */
static const float *vector(const cpu_engine *e, int64_t l, lrun_arch_tensor id)
{
    return id >= 0 && id < LRUN_ARCH_TENSOR_BLOCK_COUNT ? e->layers[l].vec[id] : NULL;
}

void lrun_cpu_weight_matmul(cpu_engine *e, const lrun_weight_ref *w, const float *x, int64_t m, float *y)
{
    const struct lrun_tensor *t = w->w;
    if (w->packed) lrun_cpu_matmul_packed(e->pool, w->data, &t->pk, t->ne[1], t->ne[0], x, m, y, e->pk_work);
    else lrun_cpu_matmul(e->pool, t->dtype, w->data, t->row_bytes, t->ne[1], t->ne[0], x, m, y, e->mm_work);
}

static void matmul(cpu_engine *e, lrun_weight_ref w, const float *x, int64_t m, float *y)
{
    lrun_cpu_weight_matmul(e, &w, x, m, y);
}

/* out[i] = in · w[i]ᵀ for the op's weights; decode runs several in one region. */
static void op_matmul(struct run *r, const lrun_arch_op *op, int n_w)
{
    cpu_engine *e = r->e;
    const float *x = buf(e, op->in);
    if (r->n == 1 && n_w > 1) {
        lrun_matvec parts[LRUN_ARCH_OP_MAX_W];
        int any_packed = 0; /* then each weight takes its own product */
        for (int i = 0; i < n_w; i++) {
            const lrun_weight_ref w = lrun_weights_get(r->W, r->layer, op->w[i]);
            any_packed |= w.packed;
            parts[i] = (lrun_matvec){w.w->dtype, w.data, w.w->row_bytes, w.w->ne[1], w.w->ne[0], x, buf(e, op->out[i])};
        }
        if (!any_packed) {
            lrun_cpu_matvec_multi(e->pool, parts, n_w, e->mv_work);
            return;
        }
    }
    for (int i = 0; i < n_w; i++) matmul(e, lrun_weights_get(r->W, r->layer, op->w[i]), x, r->n, buf(e, op->out[i]));
}

/* out[i] += b[i] for the biases the file has. */
static void op_bias(struct run *r, const lrun_arch_op *op, int n_w)
{
    struct rows_ctx rc = {.e = r->e, .layer = r->layer};
    int any = 0;
    for (int i = 0; i < n_w; i++) {
        rc.b[i] = vector(r->e, r->layer, op->w[i]);
        rc.y[i] = buf(r->e, op->out[i]);
        rc.w[i] = buf_width(r->e, op->out[i]);
        any |= rc.b[i] != NULL;
    }
    if (any) lrun_cpu_parallel_for(r->e->pool, r->n, ROWS_PARALLEL * 4, bias_rows, &rc);
}

/* out[i] = rms_norm(each head of out[i]) * w[i], as llama.cpp's qwen3 does
 * (ggml_rms_norm over head_dim rows, then the weight). */
static void op_head_norm(struct run *r, const lrun_arch_op *op, int n_w)
{
    struct rows_ctx rc = {.e = r->e, .layer = r->layer};
    for (int i = 0; i < n_w; i++) {
        rc.b[i] = vector(r->e, r->layer, op->w[i]);
        rc.y[i] = buf(r->e, op->out[i]);
        rc.w[i] = buf_width(r->e, op->out[i]);
    }
    lrun_cpu_parallel_for(r->e->pool, r->n, ROWS_PARALLEL, head_norm_rows, &rc);
}

static void op_rope_store(struct run *r)
{
    /* an offloaded layer is in its device slot from here */
    lrun_kv_cache_layer_begin(&r->e->kv, r->layer - r->e->layer_first);
    struct rows_ctx rc = {.e = r->e, .layer = r->layer};
    lrun_cpu_parallel_for(r->e->pool, r->n, ROWS_PARALLEL * 4, rope_store_rows, &rc);
}

static void op_attention(struct run *r, const lrun_arch_op *op)
{
    cpu_engine *e = r->e;
    const lrun_model_info *in = &e->model->info;
    /* the scale as llama.cpp computes it; chunks of >= 2 tokens take its prompt order of p·V */
    /* the layer's block offsets */
    const lrun_kv_view w0 = lrun_kv_cache_view(&e->kv, e->tok_seq[0], r->layer - e->layer_first);
    const int big = e->model->arch->big_attn_scale_layers; /* gemma2 27B: llama.cpp's n_embd/n_head */
    const double qpas = e->model->query_pre_attn_scalar; /* an HF gemma's config */
    float scale = 1.0f / sqrtf(qpas > 0 ? (float)qpas
                                        : (float)(big && in->n_layer == big ? in->n_embd / in->n_head : in->head_dim));
    const double af = e->model->rope_attn_factor; /* LongRoPE scales cos and sin: q·k by its square */
    if (af != 1.0) scale *= (float)(af * af);
    const lrun_attention_batch ab = {r->n, in->n_head, in->n_head_kv, in->head_dim, scale, e->kv.dtype, r->n >= 2, e->q, e->attn,
                                     e->tok_k, e->tok_v, e->tok_vstride, e->tok_npos, e->scores, e->n_scores,
                                     w0.blocks ? e->tok_blocks : NULL, w0.block_pos, w0.k_off, w0.v_off,
                                     lrun_model_layer_swa(e->model, r->layer), (float)e->model->attn_softcap,
                                     vector(e, r->layer, op->w[0])}; /* gpt-oss's sinks, or NULL */
    lrun_cpu_attention(e->pool, &ab);
    lrun_kv_cache_layer_end(&e->kv, r->layer - e->layer_first); /* new entries back to an offloaded store */
}

/* x += in · w[0]ᵀ (+ w[1]); then, fused, xn = rms_norm(x) * next_norm when
 * a norm follows (NULL: none). */
static void op_matmul_add(struct run *r, const lrun_arch_op *op, const float *next_norm)
{
    cpu_engine *e = r->e;
    matmul(e, lrun_weights_get(r->W, r->layer, op->w[0]), buf(e, op->in), r->n, e->tmp);
    const float *bias = op->w[1] != LRUN_ARCH_TENSOR_NONE ? vector(e, r->layer, op->w[1]) : NULL;
    struct rows_ctx rc = {.e = e, .layer = r->layer, .norm = next_norm, .bias = bias, .add = e->tmp};
    lrun_cpu_parallel_for(e->pool, r->n, ROWS_PARALLEL, residual_norm_rows, &rc);
}

/* x += rms_norm(in · w[0]ᵀ) * w[1]; then the next norm fused, as op_matmul_add. */
static void op_matmul_norm_add(struct run *r, const lrun_arch_op *op, const float *next_norm)
{
    cpu_engine *e = r->e;
    matmul(e, lrun_weights_get(r->W, r->layer, op->w[0]), buf(e, op->in), r->n, e->tmp);
    struct rows_ctx rc = {.e = e, .layer = r->layer, .norm = next_norm, .add = e->tmp,
                          .post = vector(e, r->layer, op->w[1])};
    lrun_cpu_parallel_for(e->pool, r->n, ROWS_PARALLEL, residual_norm_rows, &rc);
}

/* x += the routed experts' weighted sum (moe_cpu.c); then the next norm fused, as op_matmul_add.
 * Fails only when a disk-tier expert's read does (the file changed). */
static lrun_status op_moe_ffn_add(struct run *r, const lrun_arch_op *op, const float *next_norm)
{
    cpu_engine *e = r->e;
    const lrun_status st = lrun_cpu_moe_ffn(e, r->W, r->layer, r->n, op);
    if (st != LRUN_OK) return st;
    struct rows_ctx rc = {.e = e, .layer = r->layer, .norm = next_norm, .add = e->tmp};
    lrun_cpu_parallel_for(e->pool, r->n, ROWS_PARALLEL, residual_norm_rows, &rc);
    return LRUN_OK;
}

static void op_norm(struct run *r, const lrun_arch_op *op)
{
    struct rows_ctx rc = {.e = r->e, .layer = r->layer, .norm = vector(r->e, r->layer, op->w[0])};
    lrun_cpu_parallel_for(r->e->pool, r->n, ROWS_PARALLEL, residual_norm_rows, &rc);
}

static void op_matmul_swiglu(struct run *r, const lrun_arch_op *op)
{
    op_matmul(r, op, 2);
    struct rows_ctx rc = {.e = r->e, .layer = r->layer};
    lrun_cpu_parallel_for(r->e->pool, r->n, ROWS_PARALLEL, swiglu_rows, &rc);
}

static void op_matmul_geglu(struct run *r, const lrun_arch_op *op)
{
    op_matmul(r, op, 2);
    struct rows_ctx rc = {.e = r->e, .layer = r->layer};
    lrun_cpu_parallel_for(r->e->pool, r->n, ROWS_PARALLEL, geglu_rows, &rc);
}

// ---------------------------------------------------------------- the interpreter

/* The norm op after op i of block l (the next block's first when i is the
 * last and that block is this engine's), whose weight a projection's
 * residual add takes; NULL when none. */
static const float *norm_after(const cpu_engine *e, int64_t l, int i)
{
    const lrun_arch *a = e->model->arch;
    if (i + 1 < a->n_ops) return a->ops[i + 1].kind == LRUN_ARCH_OP_NORM ? vector(e, l, a->ops[i + 1].w[0]) : NULL;
    if (l + 1 < e->layer_end && a->ops[0].kind == LRUN_ARCH_OP_NORM) return vector(e, l + 1, a->ops[0].w[0]);
    return NULL;
}

/* Block l's ops. *normed: the block's first op (a norm) was already done by
 * the previous block's last; set for the next block the same way. */
static lrun_status run_block(struct run *r, int *normed)
{
    const lrun_arch *a = r->e->model->arch;
    for (int i = 0; i < a->n_ops; i++) {
        const lrun_arch_op *op = &a->ops[i];
        const int n_w = lrun_arch_op_n_w(op);
        switch (op->kind) {
        case LRUN_ARCH_OP_NORM:
            if (!*normed) op_norm(r, op);
            *normed = 0;
            break;
        case LRUN_ARCH_OP_MATMUL: op_matmul(r, op, n_w); break;
        case LRUN_ARCH_OP_BIAS: op_bias(r, op, n_w); break;
        case LRUN_ARCH_OP_HEAD_NORM: op_head_norm(r, op, n_w); break;
        case LRUN_ARCH_OP_ROPE_STORE: op_rope_store(r); break;
        case LRUN_ARCH_OP_ATTENTION: op_attention(r, op); break;
        case LRUN_ARCH_OP_MATMUL_ADD: {
            const float *next = norm_after(r->e, r->layer, i);
            op_matmul_add(r, op, next);
            *normed = next != NULL; /* the following norm is done */
            break;
        }
        case LRUN_ARCH_OP_MATMUL_NORM_ADD: {
            const float *next = norm_after(r->e, r->layer, i);
            op_matmul_norm_add(r, op, next);
            *normed = next != NULL;
            break;
        }
        case LRUN_ARCH_OP_MATMUL_SWIGLU: op_matmul_swiglu(r, op); break;
        case LRUN_ARCH_OP_MATMUL_GEGLU: op_matmul_geglu(r, op); break;
        case LRUN_ARCH_OP_MOE_ROUTE: lrun_cpu_moe_route(r->e, r->W, r->layer, r->n, op); break;
        case LRUN_ARCH_OP_MOE_FFN_ADD: {
            const float *next = norm_after(r->e, r->layer, i);
            const lrun_status st = op_moe_ffn_add(r, op, next);
            if (st != LRUN_OK) return st;
            *normed = next != NULL;
            break;
        }
        default: break;
        }
    }
    return LRUN_OK;
}

lrun_status lrun_cpu_forward_chunk(cpu_engine *e, const int32_t *tokens, const float *hidden_in, int64_t n,
                                   int64_t n_want, float *logits, float *hidden_out)
{
    const lrun_model *m = e->model;
    const lrun_model_info *in = &m->info;
    lrun_weights_cpu src;
    const lrun_weights W = lrun_weights_cpu_init(&src, e->wr, m);

    /* embeddings (a split's later part: the previous part's rows); validated ids cannot fail here */
    if (e->layer_first > 0) memcpy(e->x, hidden_in, (size_t)(n * e->n_embd) * sizeof(float));
    else
        for (int64_t i = 0; i < n; i++) {
            (void)lrun_cpu_embedding_row(m->tok_embd, tokens[i], e->x + i * e->n_embd);
            if (m->arch->embd_scale) /* gemma: ggml_scale by sqrtf(n_embd) */
                lrun_cpu_scale(e->x + i * e->n_embd, sqrtf((float)e->n_embd), e->n_embd);
        }
    /* rotary tables */
    for (int64_t i = 0; i < n; i++) {
        lrun_cpu_rope_cos_sin(&e->rope, e->tok_pos[i], e->cs + i * in->n_rot);
        if (m->arch->rope_base_local > 0) lrun_cpu_rope_cos_sin(&e->rope_local, e->tok_pos[i], e->cs_local + i * in->n_rot);
        e->tok_npos[i] = e->tok_pos[i] + 1;
    }
    if (e->layer_first == 0) lrun_weight_ring_note_rows(e->wr, n); /* only the part that gathers them */

    int normed = 0;
    for (int64_t l = e->layer_first; l < e->layer_end; l++) {
        struct run r = {e, n, l, &W};
        /* this layer's weights: staged into a slot, or where they live; a fill
         * fails only when its source does (a disk read: the file changed) */
        lrun_status st = lrun_weights_begin(&W, l);
        if (st != LRUN_OK) return st;
        st = run_block(&r, &normed);
        if (st == LRUN_OK) st = lrun_weights_end(&W, l);
        if (st != LRUN_OK) return st;
    }
    if (e->layer_end < in->n_layer) { /* a split's part before the last: the rows go on, not logits */
        memcpy(hidden_out, e->x, (size_t)(n * e->n_embd) * sizeof(float));
        return LRUN_OK;
    }
    if (n_want == 0) return lrun_weights_skip(&W, in->n_layer); /* the head's turn in the staging cycle */

    // output: norm the wanted rows into xn[0..n_want), then the LM head
    const lrun_status st = lrun_weights_begin(&W, in->n_layer);
    if (st != LRUN_OK) return st;
    struct rows_ctx rc = {.e = e, .norm = e->output_norm, .rows = e->out_rows};
    lrun_cpu_parallel_for(e->pool, n_want, ROWS_PARALLEL, residual_norm_rows, &rc);
    matmul(e, lrun_weights_get(&W, in->n_layer, LRUN_ARCH_TENSOR_OUTPUT), e->xn, n_want, logits);
    if (m->final_softcap > 0) lrun_cpu_softcap(logits, n_want * in->n_vocab, (float)m->final_softcap);
    return lrun_weights_end(&W, in->n_layer);
}
