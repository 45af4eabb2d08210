/* engine.c — the CPU forward pass of a llama model over a batch of sequences.
 *
 * One step takes tokens of many sequences; they are processed in chunks of
 * n_batch_max tokens, every matmul covering all tokens of the chunk at once
 * (m = n_tok); forward_cpu.c runs a chunk through the architecture's op
 * table (arch/arch.h). For llama, per layer:
 *
 *   xn = rms_norm(x) * attn_norm
 *   q, k, v = xn Wqᵀ, xn Wkᵀ, xn Wvᵀ          (+ biases when the file has them)
 *   rope(q, k) at each token's position; k, v appended to its sequence's cache
 *   a = attention(q, cache of the token's sequence, positions <= its own)
 *   x += a Woᵀ
 *   xn = rms_norm(x) * ffn_norm
 *   x += (silu(xn Wgᵀ) * (xn Wuᵀ)) Wdᵀ
 *
 * then output_norm and the LM head for the rows whose logits are wanted.
 * All scratch is taken once, at init, on the model's device; a step only
 * grows KV caches, and grows them all before computing anything, so a
 * failing step leaves every sequence as it was. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "cpu/cpu_matmul.h"
#include "cpu/cpu_ops.h"
#include "cpu/engine_cpu_internal.h"
#include "core/device.h"
#include "cuda/engine_cuda.h"
#include "core/error.h"
#include "kv/kv_blocks.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "step_tokens.h"
#include "residency/weight_stream.h"

#define DEFAULT_BATCH 512

// ---------------------------------------------------------------- init

/* Scratch buffers start on a cache line. */
static int carve(char **cursor, size_t *total, size_t n_bytes, void **out)
{
    return lrun_carve(cursor, total, n_bytes, 64, out);
}

/* data: where the weight's bytes are read this time (a streaming slot or its own). */
static lrun_matvec part(const struct lrun_tensor *w, const void *data, const float *x, float *y)
{
    return (lrun_matvec){w->dtype, data, w->row_bytes, w->ne[1], w->ne[0], x, y};
}

/* The products decode fuses into one parallel region each: q, k, v and gate, up.
 * W NULL: the weights' own bytes (sizing only). */
static void fused_parts(const lrun_engine *e, int64_t l, const lrun_weight_view *W, lrun_matvec qkv[3],
                        lrun_matvec gu[2])
{
    const struct lrun_model_layer *L = &e->model->layers[l];
    qkv[0] = part(L->wq, W ? W->data[LRUN_WS_Q] : L->wq->data, e->xn, e->q);
    qkv[1] = part(L->wk, W ? W->data[LRUN_WS_K] : L->wk->data, e->xn, e->k);
    qkv[2] = part(L->wv, W ? W->data[LRUN_WS_V] : L->wv->data, e->xn, e->v);
    gu[0] = part(L->w_gate, W ? W->data[LRUN_WS_GATE] : L->w_gate->data, e->xn, e->gate);
    gu[1] = part(L->w_up, W ? W->data[LRUN_WS_UP] : L->w_up->data, e->xn, e->up);
}

/* Lays out (or, with base NULL, only sizes) the scratch block for nth threads. */
static int layout_scratch(lrun_engine *e, int nth, void *base, size_t *total)
{
    const lrun_model *m = e->model;
    const size_t B = (size_t)e->n_batch_max, f = sizeof(float);
    char *c = base;
    size_t work = lrun_cpu_matmul_work_bytes(m->output->dtype, e->n_batch_max, e->n_embd);
    for (int64_t l = 0; l < m->info.n_layer; l++) {
        const struct lrun_model_layer *L = &m->layers[l];
        const struct lrun_tensor *ws[] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            const size_t w = lrun_cpu_matmul_work_bytes(ws[i]->dtype, e->n_batch_max, ws[i]->ne[0]);
            if (w > work) work = w;
        }
    }
    size_t mv_work = 0;
    for (int64_t l = 0; l < m->info.n_layer; l++) {
        lrun_matvec qkv[3], gu[2];
        fused_parts(e, l, NULL, qkv, gu);
        const size_t a = lrun_cpu_matvec_work_bytes(qkv, 3), b = lrun_cpu_matvec_work_bytes(gu, 2);
        mv_work = a > mv_work ? a : mv_work;
        mv_work = b > mv_work ? b : mv_work;
    }
    *total = 0;
    size_t sz;
    return lrun_size_mul(B * f, (size_t)e->n_embd, &sz) && carve(&c, total, sz, (void **)&e->x) &&
           carve(&c, total, sz, (void **)&e->xn) && carve(&c, total, sz, (void **)&e->tmp) &&
           lrun_size_mul(B * f, (size_t)e->q_dim, &sz) && carve(&c, total, sz, (void **)&e->q) &&
           carve(&c, total, sz, (void **)&e->attn) && lrun_size_mul(B * f, (size_t)e->kv_dim, &sz) &&
           carve(&c, total, sz, (void **)&e->k) && carve(&c, total, sz, (void **)&e->v) &&
           lrun_size_mul(B * f, (size_t)e->n_ff, &sz) && carve(&c, total, sz, (void **)&e->gate) &&
           carve(&c, total, sz, (void **)&e->up) && lrun_size_mul(B * f, (size_t)m->info.n_rot, &sz) &&
           carve(&c, total, sz, (void **)&e->cs) && lrun_size_mul((size_t)nth * f, (size_t)e->n_scores, &sz) &&
           carve(&c, total, sz, (void **)&e->scores) && lrun_size_mul(lrun_model_vector_floats(m), f, &sz) &&
           carve(&c, total, sz, (void **)&e->vectors) && carve(&c, total, work > 0 ? work : 64, &e->mm_work) &&
           carve(&c, total, mv_work > 0 ? mv_work : 64, &e->mv_work);
}

/* Converts a vector tensor to f32 at *cursor; returns where it went. */
static lrun_status load_vector(const struct lrun_tensor *t, float **cursor, const float **out)
{
    *out = NULL;
    if (!t) return LRUN_OK;
    const void *bytes = lrun_tensor_host_data(t);
    if (!bytes) return lrun_fail(LRUN_E_UNSUPPORTED, "engine: '%s' has no host-addressable bytes", t->name);
    lrun_status st = lrun_dtype_to_f32(t->dtype, bytes, *cursor, t->ne[0]);
    if (st != LRUN_OK) return lrun_fail_context(st, "engine: converting '%s'", t->name);
    *out = *cursor;
    *cursor += t->ne[0];
    return LRUN_OK;
}

static lrun_status load_vectors(lrun_engine *e)
{
    const lrun_model *m = e->model;
    float *c = e->vectors;
    lrun_status st = load_vector(m->output_norm, &c, &e->output_norm);
    if (st == LRUN_OK) st = load_vector(m->rope_freqs, &c, &e->rope.freq_factors);
    for (int64_t l = 0; st == LRUN_OK && l < m->info.n_layer; l++) {
        const struct lrun_model_layer *L = &m->layers[l];
        struct engine_layer *E = &e->layers[l];
        if ((st = load_vector(L->attn_norm, &c, &E->attn_norm)) != LRUN_OK) break;
        if ((st = load_vector(L->ffn_norm, &c, &E->ffn_norm)) != LRUN_OK) break;
        if ((st = load_vector(L->bq, &c, &E->bq)) != LRUN_OK) break;
        if ((st = load_vector(L->bk, &c, &E->bk)) != LRUN_OK) break;
        if ((st = load_vector(L->bv, &c, &E->bv)) != LRUN_OK) break;
        st = load_vector(L->bo, &c, &E->bo);
    }
    return st;
}

/* The sizes init and lrun_engine_estimate derive from the model and options. */
static void set_dims(lrun_engine *e, lrun_model *model, const lrun_engine_opts *opts)
{
    const lrun_model_info *in = &model->info;
    e->model = model;
    e->device = model->device;
    e->n_seq_max = opts->n_seq_max ? opts->n_seq_max : 1;
    e->n_ctx_max = opts->n_ctx_max ? opts->n_ctx_max : in->n_ctx_train;
    e->n_batch_max = opts->n_batch_max ? opts->n_batch_max : DEFAULT_BATCH;
    e->n_scores = (e->n_ctx_max + 31) / 32 * 32 + in->head_dim;
    e->n_embd = in->n_embd;
    e->q_dim = in->n_head * in->head_dim;
    e->kv_dim = in->n_head_kv * in->head_dim;
    e->n_ff = in->n_ff;
    e->n_vocab = in->n_vocab;
    e->rope = (lrun_rope){in->n_rot, in->rope_style, in->rope_freq_base, model->rope_freq_scale, NULL};
}

/* Measured defaults (docs/residency.md, docs/streaming.md): on the CPU two
 * blocks in flight hide the copy thread's jitter; on an H100 one unit
 * already keeps the copy engine busy at batch 1, and every further slot is a
 * layer that can no longer stay resident. */
int lrun_engine_default_prefetch(lrun_device_kind kind) { return kind == LRUN_DEVICE_KIND_CUDA ? 1 : 2; }

lrun_status lrun_engine_estimate(lrun_engine_needs *out, lrun_model *model, const lrun_engine_opts *opts)
{
    static const lrun_engine_opts defaults = {.n_seq_max = 1};
    if (!out) return lrun_fail(LRUN_E_ARG, "engine estimate: out is NULL");
    memset(out, 0, sizeof *out);
    if (!model) return lrun_fail(LRUN_E_ARG, "engine estimate: model is NULL");
    if (!opts) opts = &defaults;
    if (opts->prefetch_layers < 0 || opts->prefetch_layers > 64)
        return lrun_fail(LRUN_E_ARG, "engine estimate: prefetch_layers %d is not in [0, 64]", opts->prefetch_layers);
    if (opts->n_seq_max < 0 || opts->n_ctx_max < 0 || opts->n_batch_max < 0 || opts->n_threads < 0)
        return lrun_fail(LRUN_E_ARG, "engine estimate: n_seq_max %lld, n_ctx_max %lld, n_batch_max %lld and "
                         "n_threads %d must not be negative", (long long)opts->n_seq_max,
                         (long long)opts->n_ctx_max, (long long)opts->n_batch_max, opts->n_threads);
    const lrun_device_kind kind = lrun_device_kind_of(model->device);
    out->prefetch_layers = opts->prefetch_layers ? opts->prefetch_layers : lrun_engine_default_prefetch(kind);
    if (kind == LRUN_DEVICE_KIND_CUDA) return lrun_cuda_engine_estimate(model, opts, out);
    if (opts->n_seq_max > ((int64_t)1 << 20) || opts->n_batch_max > ((int64_t)1 << 20) ||
        opts->n_ctx_max > ((int64_t)1 << 40))
        return lrun_fail(LRUN_E_ARG, "engine estimate: n_seq_max, n_batch_max or n_ctx_max too large");
    lrun_engine e;
    memset(&e, 0, sizeof e);
    set_dims(&e, model, opts);
    const int nth = opts->n_threads > 0 ? opts->n_threads : lrun_threadpool_size(model->pool);
    size_t per = 0;
    if (!layout_scratch(&e, nth, NULL, &out->scratch_bytes) ||
        !lrun_size_mul((size_t)(2 * model->info.n_layer) * (size_t)e.n_seq_max, (size_t)e.kv_dim, &per) ||
        !lrun_size_mul(per, opts->kv_dtype == LRUN_KV_DTYPE_F32 ? 4 : 2, &out->kv_bytes_per_position))
        return lrun_fail(LRUN_E_OOM, "engine estimate: scratch or KV cache size overflows size_t");
    /* the paged cache (kv_blocks.h) takes blocks of LRUN_KV_BLOCK positions and copies nothing
     * when it grows; the planner's doubling-with-copy model over-reserves, which is safe */
    out->kv_min_positions = LRUN_KV_BLOCK;
    out->kv_cap_align = LRUN_KV_BLOCK;
    out->slot_align = lrun_weight_stream_slot_align();
    out->head_in_ring = 0;
    return LRUN_OK;
}

lrun_status lrun_engine_init(lrun_engine **out, lrun_model *model, const lrun_engine_opts *opts)
{
    static const lrun_engine_opts defaults = {.n_seq_max = 1, .cache_kind = LRUN_CACHE_KIND_DYNAMIC};
    if (opts && opts->weight_mode != LRUN_WEIGHT_MODE_ALL_DEVICE && opts->weight_mode != LRUN_WEIGHT_MODE_AS_PLACED)
        return lrun_fail(LRUN_E_ARG, "engine: weight_mode %d is not LRUN_WEIGHT_MODE_ALL_DEVICE or _AS_PLACED",
                         (int)opts->weight_mode);
    if (opts && (opts->prefetch_layers < 0 || opts->prefetch_layers > 64))
        return lrun_fail(LRUN_E_ARG, "engine: prefetch_layers %d must be in [0, 64] (0 = the default)",
                         opts->prefetch_layers);
    *out = NULL;
    if (!model) return lrun_fail(LRUN_E_ARG, "engine: model is NULL");
    if (!opts) opts = &defaults;
    const lrun_model_info *in = &model->info;
    if (lrun_device_kind_of(model->device) == LRUN_DEVICE_KIND_CUDA) {
        lrun_engine *e = calloc(1, sizeof *e);
        if (!e) return lrun_fail_oom(sizeof *e, 0, "engine: record");
        lrun_status st = lrun_cuda_engine_init(&e->cuda, model, opts);
        if (st != LRUN_OK) free(e);
        else *out = e;
        return st;
    }
    if (opts->n_seq_max < 0 || opts->n_ctx_max < 0 || opts->n_batch_max < 0 || opts->n_threads < 0)
        return lrun_fail(LRUN_E_ARG, "engine: n_seq_max %lld, n_ctx_max %lld, n_batch_max %lld and n_threads %d "
                         "must not be negative", (long long)opts->n_seq_max, (long long)opts->n_ctx_max,
                         (long long)opts->n_batch_max, opts->n_threads);
    if (opts->n_seq_max > ((int64_t)1 << 20) || opts->n_batch_max > ((int64_t)1 << 20))
        return lrun_fail(LRUN_E_ARG, "engine: n_seq_max %lld or n_batch_max %lld above 2^20",
                         (long long)opts->n_seq_max, (long long)opts->n_batch_max);
    if (opts->numerics != LRUN_NUMERICS_DEFAULT && opts->numerics != LRUN_NUMERICS_EXACT)
        return lrun_fail(LRUN_E_ARG, "engine: numerics %d is not LRUN_NUMERICS_DEFAULT or _EXACT", (int)opts->numerics);
    if (opts->kv_dtype != LRUN_KV_DTYPE_DEFAULT && opts->kv_dtype != LRUN_KV_DTYPE_F16 &&
        opts->kv_dtype != LRUN_KV_DTYPE_F32)
        return lrun_fail(LRUN_E_ARG, "engine: kv_dtype %d is not one of LRUN_KV_DTYPE_DEFAULT, _F16, _F32",
                         (int)opts->kv_dtype);
    if (opts->n_ctx_max > ((int64_t)1 << 40))
        return lrun_fail(LRUN_E_ARG, "engine: n_ctx_max %lld above 2^40", (long long)opts->n_ctx_max);

    lrun_engine *e = calloc(1, sizeof *e);
    if (!e) return lrun_fail_oom(sizeof *e, 0, "engine: record");
    set_dims(e, model, opts);

    lrun_status st = LRUN_OK;
    e->pool = model->pool;
    if (opts->n_threads > 0 && opts->n_threads != lrun_threadpool_size(model->pool)) {
        st = lrun_threadpool_init(&e->own_pool, opts->n_threads);
        e->pool = e->own_pool;
    }
    const size_t B = (size_t)e->n_batch_max;
    if (st == LRUN_OK) {
        e->layers = calloc((size_t)in->n_layer, sizeof *e->layers);
        e->tok_seq = malloc(B * sizeof *e->tok_seq);
        e->tok_pos = malloc(B * sizeof *e->tok_pos);
        e->tok_npos = malloc(B * sizeof *e->tok_npos);
        e->tok_k = malloc(B * sizeof *e->tok_k);
        e->tok_v = malloc(B * sizeof *e->tok_v);
        e->tok_blocks = malloc(B * sizeof *e->tok_blocks);
        e->tok_vstride = malloc(B * sizeof *e->tok_vstride);
        e->out_rows = malloc(B * sizeof *e->out_rows);
        e->seq_count = calloc((size_t)e->n_seq_max, sizeof *e->seq_count);
        e->seq_done = calloc((size_t)e->n_seq_max, sizeof *e->seq_done);
        if (!e->layers || !e->tok_seq || !e->tok_pos || !e->tok_npos || !e->tok_k || !e->tok_v || !e->tok_blocks || !e->tok_vstride ||
            !e->out_rows || !e->seq_count || !e->seq_done)
            st = lrun_fail_oom(0, 0, "engine: bookkeeping for %zu tokens", B);
    }
    const int nth = e->pool ? lrun_threadpool_size(e->pool) : 1;
    if (st == LRUN_OK && !layout_scratch(e, nth, NULL, &e->scratch_bytes))
        st = lrun_fail(LRUN_E_OOM, "engine: scratch for %zu tokens overflows size_t", B);
    if (st == LRUN_OK)
        st = lrun_oom_phase(lrun_device_alloc(e->device, e->scratch_bytes, "engine scratch", &e->scratch), "scratch");
    if (st == LRUN_OK) {
        layout_scratch(e, nth, e->scratch, &e->scratch_bytes);
        st = load_vectors(e);
    }
    if (st == LRUN_OK) {
        const lrun_kv_quant_opts q = {opts->kv_quant_bits, opts->kv_quant_group, opts->kv_residual_len};
        st = lrun_kv_cache_init(&e->kv, e->device, opts->cache_kind,
                                opts->kv_dtype == LRUN_KV_DTYPE_F32 ? LRUN_DTYPE_F32 : LRUN_DTYPE_F16, in->n_layer,
                                in->n_head_kv, in->head_dim, e->n_seq_max, e->n_ctx_max, &q);
    }
    /* on cpu every tier is host-addressable, so ALL_DEVICE reads weights where they are */
    if (st == LRUN_OK && opts->weight_mode == LRUN_WEIGHT_MODE_AS_PLACED)
        st = lrun_weight_stream_init(&e->ws, model, opts->prefetch_layers);
    if (st != LRUN_OK) {
        lrun_engine_free(e);
        return st;
    }
    *out = e;
    return LRUN_OK;
}

void lrun_engine_free(lrun_engine *engine)
{
    if (!engine) return;
    lrun_cuda_engine_free(engine->cuda);
    lrun_weight_stream_free(engine->ws); /* stops the copy thread before its slots go */
    lrun_kv_cache_free(&engine->kv);
    if (engine->scratch) lrun_device_release(engine->device, engine->scratch, engine->scratch_bytes);
    if (engine->own_pool) lrun_threadpool_free(engine->own_pool);
    free(engine->layers);
    free(engine->tok_seq);
    free(engine->tok_pos);
    free(engine->tok_npos);
    free(engine->tok_k);
    free(engine->tok_v);
    free(engine->tok_blocks);
    free(engine->tok_vstride);
    free(engine->out_rows);
    free(engine->seq_count);
    free(engine->seq_done);
    free(engine);
}

// ---------------------------------------------------------------- sequences

int64_t lrun_engine_n_seq_max(const lrun_engine *engine)
{
    return engine->cuda ? lrun_cuda_engine_n_seq_max(engine->cuda) : engine->n_seq_max;
}

int64_t lrun_engine_n_ctx_max(const lrun_engine *engine)
{
    return engine->cuda ? lrun_cuda_engine_n_ctx_max(engine->cuda) : engine->n_ctx_max;
}

int64_t lrun_engine_seq_len(const lrun_engine *engine, int64_t seq)
{
    if (engine->cuda) return lrun_cuda_engine_seq_len(engine->cuda, seq);
    return seq >= 0 && seq < engine->n_seq_max ? engine->kv.seqs[seq].len : -1;
}

lrun_status lrun_engine_seq_truncate(lrun_engine *engine, int64_t seq, int64_t len)
{
    if (engine->cuda) return lrun_cuda_engine_seq_truncate(engine->cuda, seq, len);
    return lrun_kv_cache_truncate(&engine->kv, seq, len);
}

lrun_status lrun_engine_seq_copy(lrun_engine *engine, int64_t dst, int64_t src)
{
    if (engine->cuda) return lrun_cuda_engine_seq_copy(engine->cuda, dst, src);
    return lrun_kv_cache_copy(&engine->kv, dst, src);
}

lrun_status lrun_engine_seq_reorder(lrun_engine *engine, const int64_t *src_of_dst, int64_t n)
{
    if (engine->cuda) return lrun_cuda_engine_seq_reorder(engine->cuda, src_of_dst, n);
    return lrun_kv_cache_reorder(&engine->kv, src_of_dst, n);
}

lrun_status lrun_engine_seq_fill_random(lrun_engine *engine, int64_t seq, int64_t n_pos, uint64_t seed)
{
    if (!engine) return lrun_fail(LRUN_E_ARG, "engine fill: engine is NULL");
    if (engine->cuda) return lrun_cuda_engine_seq_fill_random(engine->cuda, seq, n_pos, seed);
    return lrun_fail(LRUN_E_UNSUPPORTED, "engine fill: random contexts are for the CUDA engine's long-context "
                     "benchmarks; on the CPU run a prompt");
}

lrun_cuda_engine *lrun_engine_cuda(lrun_engine *engine) { return engine ? engine->cuda : NULL; }

static int64_t seq_len_of(const void *engine, int64_t seq)
{
    return ((const lrun_engine *)engine)->kv.seqs[seq].len;
}

lrun_status lrun_engine_step(lrun_engine *engine, int64_t n_tokens, const int32_t *tokens,
                             const int32_t *seq, const int8_t *want_logits,
                             float *logits, int64_t logits_rows_cap, int64_t *n_out)
{
    lrun_engine *e = engine;
    if (e && e->cuda)
        return lrun_cuda_engine_step(e->cuda, n_tokens, tokens, seq, want_logits, logits, logits_rows_cap, n_out);
    if (n_out) *n_out = 0;
    if (!e) return lrun_fail(LRUN_E_ARG, "engine step: engine is NULL");

    // ---- validate, count tokens per sequence and wanted rows
    int64_t n_want, need;
    const lrun_step_shape shape = {e->n_vocab, e->n_seq_max, e->n_ctx_max, e, seq_len_of};
    lrun_status st = lrun_step_check(&shape, n_tokens, tokens, seq, want_logits, logits, logits_rows_cap,
                                     e->seq_count, &n_want, &need);
    if (st != LRUN_OK) return st;

    // ---- grow every cache first, so a failure changes nothing
    st = lrun_kv_cache_step_begin(&e->kv, e->seq_count);
    if (st != LRUN_OK) return lrun_fail_context(st, "engine step");

    // ---- chunks of n_batch_max tokens, in token order
    memset(e->seq_done, 0, (size_t)e->n_seq_max * sizeof *e->seq_done);
    int64_t rows_out = 0;
    for (int64_t c0 = 0; c0 < n_tokens; c0 += e->n_batch_max) {
        const int64_t n = n_tokens - c0 < e->n_batch_max ? n_tokens - c0 : e->n_batch_max;
        int64_t want = 0;
        for (int64_t i = 0; i < n; i++) {
            const int64_t s = seq[c0 + i];
            e->tok_seq[i] = s;
            e->tok_pos[i] = e->kv.seqs[s].len + e->seq_done[s]++;
            const int wanted = want_logits ? want_logits[c0 + i] != 0 : e->seq_done[s] == e->seq_count[s];
            if (wanted) e->out_rows[want++] = i;
        }
        lrun_kv_cache_chunk_begin(&e->kv, n, e->tok_seq, e->tok_pos);
        lrun_cpu_forward_chunk(e, tokens + c0, n, want, want ? logits + rows_out * e->n_vocab : NULL);
        lrun_kv_cache_chunk_end(&e->kv);
        rows_out += want;
        e->stats.steps++;
    }
    lrun_kv_cache_step_end(&e->kv, e->seq_count);
    if (n_out) *n_out = rows_out;
    return LRUN_OK;
}

void lrun_engine_get_stats(const lrun_engine *engine, lrun_engine_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!engine) return;
    if (engine->cuda) {
        lrun_cuda_engine_stats c;
        lrun_cuda_engine_get_stats(engine->cuda, &c);
        out->steps = c.steps;
        out->weight_device_bytes = c.weight_bytes;
        out->kv_bytes = c.kv_bytes;
        out->kv_bytes_moved = c.kv_bytes_moved;
        out->kv_bytes_copied = c.kv_bytes_copied;
        out->scratch_bytes = c.scratch_bytes;
        out->bytes_streamed = c.bytes_streamed;
        out->copy_seconds = c.copy_seconds;
        out->stall_seconds = c.stall_seconds;
        out->prefetch_hits = c.prefetch_hits;
        out->prefetch_misses = c.prefetch_misses;
        out->host_compute_bytes = c.host_compute_bytes;
        out->slot_bytes = c.slot_bytes;
        return;
    }
    *out = engine->stats;
    out->weight_device_bytes = lrun_model_tier_bytes(engine->model, LRUN_TIER_DEVICE);
    out->kv_bytes = lrun_kv_cache_device_bytes(&engine->kv);
    out->kv_bytes_moved = engine->kv.bytes_moved - engine->kv_moved_base;
    out->kv_bytes_copied = engine->kv.bytes_copied - engine->kv_copied_base;
    out->scratch_bytes = engine->scratch_bytes;
    lrun_weight_stream_add_stats(engine->ws, out);
}

void lrun_engine_reset_stats(lrun_engine *engine)
{
    if (!engine) return;
    if (engine->cuda) lrun_cuda_engine_reset_stats(engine->cuda);
    else {
        memset(&engine->stats, 0, sizeof engine->stats);
        lrun_weight_stream_reset_stats(engine->ws);
        engine->kv_moved_base = engine->kv.bytes_moved;
        engine->kv_copied_base = engine->kv.bytes_copied;
    }
}
