/* engine_cpu.c — the CPU backend: the forward pass of a llama model over a
 * batch of sequences, behind the backend table (backend.h: lrun_cpu_backend).
 * The facade (engine.c) has checked the options and a step's arguments
 * before any function here runs.
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

#include "backend.h"
#include "core/checked.h"
#include "cpu/cpu_matmul.h"
#include "cpu/cpu_ops.h"
#include "cpu/engine_cpu_internal.h"
#include "core/device.h"
#include "core/error.h"
#include "core/host_account.h"
#include "kv/kv_blocks.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "step_tokens.h"
#include "residency/placement.h"
#include "residency/weight_ring.h"

#define DEFAULT_BATCH 512

// ---------------------------------------------------------------- init

/* Scratch buffers start on a cache line. */
static int carve(char **cursor, size_t *total, size_t n_bytes, void **out)
{
    return lrun_carve(cursor, total, n_bytes, 64, out);
}

/* data: where the weight's bytes are read this time (a staging slot or its own). */
static lrun_matvec part(const struct lrun_tensor *w, const void *data, const float *x, float *y)
{
    return (lrun_matvec){w->dtype, data, w->row_bytes, w->ne[1], w->ne[0], x, y};
}

/* Work bytes of the products decode fuses into one parallel region: the
 * weights of each multi-weight MATMUL or MATMUL_SWIGLU op of block l
 * (llama: q, k, v and gate, up), as forward_cpu.c runs them. */
static size_t fused_work(const cpu_engine *e, int64_t l)
{
    const lrun_arch *a = e->model->arch;
    const struct lrun_model_layer *L = &e->model->layers[l];
    size_t best = 0;
    for (int i = 0; i < a->n_ops; i++) {
        const lrun_arch_op *op = &a->ops[i];
        const int n_w = lrun_arch_op_n_w(op);
        if ((op->kind != LRUN_ARCH_OP_MATMUL && op->kind != LRUN_ARCH_OP_MATMUL_SWIGLU) || n_w < 2) continue;
        lrun_matvec parts[LRUN_ARCH_OP_MAX_W];
        for (int j = 0; j < n_w; j++) parts[j] = part(L->t[op->w[j]], L->t[op->w[j]]->data, e->xn, NULL);
        const size_t w = lrun_cpu_matvec_work_bytes(parts, n_w);
        if (w > best) best = w;
    }
    return best;
}

/* The mixture of experts' scratch (moe_cpu.c), after the rest; nothing for a dense model. */
static int layout_moe(cpu_engine *e, char **c, size_t *total)
{
    const lrun_model_info *in = &e->model->info;
    if (in->n_expert == 0) return 1;
    const size_t B = (size_t)e->n_batch_max, k = (size_t)in->n_expert_used, E = (size_t)in->n_expert;
    const size_t f = sizeof(float), bd = B * (size_t)e->n_embd * f;
    size_t slots;
    return lrun_size_mul(bd, k, &slots) && carve(c, total, B * E * f, (void **)&e->router) &&
           carve(c, total, bd, (void **)&e->moe_x) && carve(c, total, bd, (void **)&e->moe_y) &&
           carve(c, total, slots, (void **)&e->moe_slot) && carve(c, total, B * k * f, (void **)&e->moe_w) &&
           carve(c, total, B * k * sizeof(int32_t), (void **)&e->moe_ids) &&
           carve(c, total, B * k * sizeof(int32_t), (void **)&e->moe_pairs) &&
           carve(c, total, (E + 1) * sizeof(int64_t), (void **)&e->moe_first) &&
           carve(c, total, E * sizeof(int64_t), (void **)&e->moe_fill);
}

/* Lays out (or, with base NULL, only sizes) the scratch block for nth threads. */
static int layout_scratch(cpu_engine *e, int nth, void *base, size_t *total)
{
    const lrun_model *m = e->model;
    const size_t B = (size_t)e->n_batch_max, f = sizeof(float);
    char *c = base;
    size_t work = lrun_cpu_matmul_work_bytes(m->output->dtype, e->n_batch_max, e->n_embd);
    /* every matrix of the engine's blocks the description names (a split's part: its own) */
    for (int64_t l = e->layer_first; l < e->layer_end; l++)
        for (int id = 0; id < LRUN_ARCH_TENSOR_BLOCK_COUNT; id++) {
            const struct lrun_tensor *t = m->layers[l].t[id];
            if (!t || !lrun_arch_is_matrix(m->arch, (lrun_arch_tensor)id)) continue;
            const size_t w = lrun_cpu_matmul_work_bytes(t->dtype, e->n_batch_max, t->ne[0]);
            if (w > work) work = w;
        }
    size_t mv_work = 0;
    for (int64_t l = e->layer_first; l < e->layer_end; l++) {
        const size_t w = fused_work(e, l);
        mv_work = w > mv_work ? w : mv_work;
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
           carve(&c, total, sz, (void **)&e->cs) && carve(&c, total, sz, (void **)&e->cs_local) &&
           lrun_size_mul((size_t)nth * f, (size_t)e->n_scores, &sz) && carve(&c, total, sz, (void **)&e->scores) &&
           lrun_size_mul(lrun_model_vector_floats(m), f, &sz) && carve(&c, total, sz, (void **)&e->vectors) &&
           carve(&c, total, work > 0 ? work : 64, &e->mm_work) &&
           carve(&c, total, mv_work > 0 ? mv_work : 64, &e->mv_work) && layout_moe(e, &c, total);
}

/* Converts a vector tensor to f32 at *cursor; returns where it went. */
static lrun_status load_vector(const struct lrun_tensor *t, float **cursor, const float **out)
{
    *out = NULL;
    if (!t) return LRUN_OK;
    const void *bytes = lrun_tensor_host_data(t);
    if (!bytes) return lrun_fail(LRUN_E_UNSUPPORTED, "engine: '%s' has no host-addressable bytes", t->name);
    if (t->packed) return lrun_fail(LRUN_E_UNSUPPORTED, "engine: '%s' is packed; only matrices may be", t->name);
    const int64_t n = t->ne[0] * t->ne[1] * t->ne[2]; /* the experts' biases are {n, n_expert} */
    lrun_status st = lrun_dtype_to_f32(t->dtype, bytes, *cursor, n);
    if (st != LRUN_OK) return lrun_fail_context(st, "engine: converting '%s'", t->name);
    *out = *cursor;
    *cursor += n;
    return LRUN_OK;
}

static lrun_status load_vectors(cpu_engine *e)
{
    const lrun_model *m = e->model;
    float *c = e->vectors;
    lrun_status st = load_vector(m->output_norm, &c, &e->output_norm);
    if (st == LRUN_OK) st = load_vector(lrun_model_rope_factors(m, e->n_ctx_max), &c, &e->rope.freq_factors);
    for (int64_t l = 0; st == LRUN_OK && l < m->info.n_layer; l++) {
        const struct lrun_model_layer *L = &m->layers[l];
        struct engine_layer *E = &e->layers[l];
        for (int i = 0; st == LRUN_OK && i < LRUN_ARCH_N_BLOCK_VECTORS; i++) {
            const lrun_arch_tensor id = lrun_arch_block_vectors[i];
            st = load_vector(L->t[id], &c, &E->vec[id]);
        }
    }
    return st;
}

/* The blocks an engine computes, and holds the KV cache of: all of them, or
 * a layer split's part (opts->layer_count, set by engine_split.c). */
static int64_t blocks_of(const lrun_model *model, const lrun_engine_opts *opts)
{
    return opts->layer_count ? opts->layer_count : model->info.n_layer;
}

/* The weight ring's blocks: the engine's range (and the head when it ends at the model's end). */
static lrun_weight_blocks ring_blocks(const lrun_model *model, const lrun_engine_opts *opts)
{
    return (lrun_weight_blocks){opts->layer_first, opts->layer_first + blocks_of(model, opts)};
}

/* The sizes init and cpu_estimate derive from the model and options. */
static void set_dims(cpu_engine *e, lrun_model *model, const lrun_engine_opts *opts)
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
    e->layer_first = opts->layer_first;
    e->layer_end = opts->layer_first + blocks_of(model, opts);
    e->rope = (lrun_rope){in->n_rot, in->rope_style, in->rope_freq_base, model->rope_freq_scale, NULL, 0, {0, 0}, 0};
    if (model->rope_yarn)
        lrun_rope_yarn_init_ex(&e->rope, model->n_ctx_orig, model->rope_yarn_beta_fast, model->rope_yarn_beta_slow,
                               model->rope_yarn_truncate);
    /* gemma3's windowed blocks: their own base, no linear scaling (llama.cpp's rope_freq_*_train_swa) */
    e->rope_local = (lrun_rope){in->n_rot, in->rope_style, model->arch->rope_base_local, 1.0, NULL, 0, {0, 0}, 0};
}

/* The facade (engine.c) has checked opts and resolved prefetch_layers. */
static lrun_status cpu_estimate(lrun_engine_needs *out, lrun_model *model, const lrun_engine_opts *opts)
{
    cpu_engine e;
    memset(&e, 0, sizeof e);
    set_dims(&e, model, opts);
    const int nth = opts->n_threads > 0 ? opts->n_threads : lrun_threadpool_size(model->pool);
    size_t per = 0;
    if (!layout_scratch(&e, nth, NULL, &out->scratch_bytes) ||
        !lrun_size_mul((size_t)(2 * blocks_of(model, opts)) * (size_t)e.n_seq_max, (size_t)e.kv_dim, &per) ||
        !lrun_size_mul(per, opts->kv_dtype == LRUN_KV_DTYPE_F32 ? 4 : 2, &out->kv_bytes_per_position))
        return lrun_fail(LRUN_E_OOM, "engine estimate: scratch or KV cache size overflows size_t");
    return LRUN_OK;
}

/* The KV cache's bytes at init and at its highest (every sequence at
 * n_ctx_max), by the cache's own sizing; the shape defaults are init's. */
static lrun_status kv_sizes(const lrun_model *model, const lrun_engine_opts *opts, size_t *init_bytes,
                            size_t *max_bytes)
{
    const lrun_model_info *in = &model->info;
    const lrun_kv_quant_opts q = {opts->kv_quant_bits, opts->kv_quant_group, opts->kv_residual_len};
    return lrun_kv_cache_size(opts->cache_kind, opts->kv_dtype == LRUN_KV_DTYPE_F32 ? LRUN_DTYPE_F32 : LRUN_DTYPE_F16,
                              blocks_of(model, opts), in->n_head_kv, in->head_dim,
                              opts->n_seq_max ? opts->n_seq_max : 1,
                              opts->n_ctx_max ? opts->n_ctx_max : in->n_ctx_train, &q, init_bytes, max_bytes);
}

/* The table's size_placement: the estimate's scratch, weight_ring.c's
 * slot layout and the KV cache's own sizing, for the proposed tiers. The
 * shape defaults are init's: 1 sequence, n_ctx_train positions. */
static lrun_status cpu_size_placement(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                      const struct lrun_placement *p)
{
    lrun_engine_needs needs;
    memset(&needs, 0, sizeof needs);
    lrun_status st = cpu_estimate(&needs, model, opts);
    out->scratch_bytes = needs.scratch_bytes;
    if (st == LRUN_OK)
        st = lrun_weight_ring_size(model, p, ring_blocks(model, opts), opts->prefetch_layers,
                                   opts->n_threads > 0 ? opts->n_threads : lrun_threadpool_size(model->pool),
                                   &out->slot_bytes);
    if (st == LRUN_OK) st = kv_sizes(model, opts, &out->kv_init_bytes, &out->kv_max_bytes);
    return st;
}

static void cpu_free(void *ctx);

static int any_packed(const lrun_model *model)
{
    for (int64_t i = 0; i < model->n_tensors; i++)
        if (model->tensors[i].packed) return 1;
    return 0;
}

/* What the disk tier's expert store may take beyond its least (weight_ring.h):
 * under a host budget, three quarters of the room it leaves once the KV
 * cache has grown to n_ctx_max, so that the experts a step reads are more
 * often still in a slot (docs/moe.md "Experts from the disk"); 0 without a
 * budget (the store's default slots). The model has one engine at a time
 * (lua/lrun/model.lua frees the last before making the next). */
static size_t store_room(lrun_model *model, const lrun_engine_opts *opts)
{
    size_t room = lrun_host_account_room(&model->host), kv_init = 0, kv_max = 0;
    if (room == SIZE_MAX || model->info.n_expert <= 0 || kv_sizes(model, opts, &kv_init, &kv_max) != LRUN_OK)
        return 0;
    const size_t growth = kv_max > kv_init ? kv_max - kv_init : 0;
    return room > growth ? (room - growth) / 4 * 3 : 0;
}

static lrun_status cpu_init(void **out, lrun_model *model, const lrun_engine_opts *opts)
{
    const lrun_model_info *in = &model->info;
    cpu_engine *e = calloc(1, sizeof *e);
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
        e->seq_done = calloc((size_t)e->n_seq_max, sizeof *e->seq_done);
        if (!e->layers || !e->tok_seq || !e->tok_pos || !e->tok_npos || !e->tok_k || !e->tok_v || !e->tok_blocks || !e->tok_vstride ||
            !e->out_rows || !e->seq_done)
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
                                opts->kv_dtype == LRUN_KV_DTYPE_F32 ? LRUN_DTYPE_F32 : LRUN_DTYPE_F16,
                                blocks_of(model, opts), in->n_head_kv, in->head_dim, e->n_seq_max,
                                e->n_ctx_max, &q);
    }
    /* on cpu every tier is host-addressable, so ALL_DEVICE reads weights where
     * they are; packed ones are decoded (weight_ring.c), staged or not. A
     * split's part has a ring of its own blocks (and the head in the last). */
    const int as_placed = opts->weight_mode == LRUN_WEIGHT_MODE_AS_PLACED;
    if (st == LRUN_OK && (as_placed || any_packed(model)))
        st = lrun_weight_ring_init(&e->wr, model, ring_blocks(model, opts), opts->prefetch_layers,
                                   store_room(model, opts), as_placed, e->pool);
    if (st == LRUN_OK && as_placed) e->prefetch_layers = opts->prefetch_layers;
    if (st == LRUN_OK) e->pk_work = lrun_weight_ring_packed_work(e->wr);
    if (st == LRUN_OK) st = lrun_moe_counts_init(&e->moe_counts, in->n_layer, in->n_expert);
    if (st != LRUN_OK) {
        cpu_free(e);
        return st;
    }
    *out = e;
    return LRUN_OK;
}

static void cpu_free(void *ctx)
{
    cpu_engine *engine = ctx;
    lrun_weight_ring_free(engine->wr); /* stops the fill thread before its slots go */
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
    free(engine->seq_done);
    lrun_moe_counts_free(&engine->moe_counts);
    free(engine);
}

// ---------------------------------------------------------------- sequences

static int64_t cpu_n_seq_max(const void *ctx) { return ((const cpu_engine *)ctx)->n_seq_max; }
static int64_t cpu_n_ctx_max(const void *ctx) { return ((const cpu_engine *)ctx)->n_ctx_max; }
static int64_t cpu_n_vocab(const void *ctx) { return ((const cpu_engine *)ctx)->n_vocab; }
static int64_t cpu_seq_len(const void *ctx, int64_t seq) { return ((const cpu_engine *)ctx)->kv.seqs[seq].len; }

static lrun_status cpu_seq_truncate(void *ctx, int64_t seq, int64_t len)
{
    return lrun_kv_cache_truncate(&((cpu_engine *)ctx)->kv, seq, len);
}

static lrun_status cpu_seq_copy(void *ctx, int64_t dst, int64_t src)
{
    return lrun_kv_cache_copy(&((cpu_engine *)ctx)->kv, dst, src);
}

static lrun_status cpu_seq_reorder(void *ctx, const int64_t *src_of_dst, int64_t n)
{
    return lrun_kv_cache_reorder(&((cpu_engine *)ctx)->kv, src_of_dst, n);
}

/* A step the facade has checked (backend.h). */
static lrun_status cpu_step(void *ctx, const lrun_step_args *a)
{
    cpu_engine *e = ctx;
    const int64_t n_tokens = a->n_tokens;
    const int32_t *tokens = a->tokens, *seq = a->seq;
    const int8_t *want_logits = a->want_logits;
    float *logits = a->logits;

    // ---- grow every cache first, so a failure changes nothing
    lrun_status st = lrun_kv_cache_step_begin(&e->kv, a->seq_count);
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
            const int wanted = want_logits ? want_logits[c0 + i] != 0 : e->seq_done[s] == a->seq_count[s];
            if (wanted) e->out_rows[want++] = i;
        }
        lrun_kv_cache_chunk_begin(&e->kv, n, e->tok_seq, e->tok_pos);
        st = lrun_cpu_forward_chunk(e, tokens + c0, a->hidden_in ? a->hidden_in + c0 * e->n_embd : NULL, n, want,
                                    want ? logits + rows_out * e->n_vocab : NULL,
                                    a->hidden_out ? a->hidden_out + c0 * e->n_embd : NULL);
        lrun_kv_cache_chunk_end(&e->kv);
        if (st != LRUN_OK) { /* the lengths stay: the entries written past them are not seen */
            lrun_weight_ring_restart(e->wr);
            return lrun_fail_context(st, "engine step");
        }
        rows_out += want;
        e->stats.steps++;
    }
    lrun_kv_cache_step_end(&e->kv, a->seq_count);
    (void)rows_out; /* == a->n_want: the facade reports it */
    return LRUN_OK;
}

static void cpu_get_stats(const void *ctx, lrun_engine_stats *out)
{
    const cpu_engine *engine = ctx;
    *out = engine->stats;
    out->weight_device_bytes = lrun_model_tier_bytes(engine->model, LRUN_TIER_DEVICE);
    out->kv_bytes = lrun_kv_cache_device_bytes(&engine->kv);
    out->kv_bytes_moved = engine->kv.bytes_moved - engine->kv_moved_base;
    out->kv_bytes_copied = engine->kv.bytes_copied - engine->kv_copied_base;
    out->scratch_bytes = engine->scratch_bytes;
    out->kv_dtype = engine->kv.dtype == LRUN_DTYPE_F32 ? LRUN_KV_DTYPE_F32 : LRUN_KV_DTYPE_F16;
    out->prefetch_layers = engine->prefetch_layers;
    lrun_weight_ring_add_stats(engine->wr, out);
}

static void cpu_reset_stats(void *ctx)
{
    cpu_engine *engine = ctx;
    memset(&engine->stats, 0, sizeof engine->stats);
    lrun_weight_ring_reset_stats(engine->wr);
    engine->kv_moved_base = engine->kv.bytes_moved;
    engine->kv_copied_base = engine->kv.bytes_copied;
    lrun_moe_counts_reset(&engine->moe_counts);
}

static const lrun_moe_counts *cpu_moe_counts(const void *ctx) { return &((const cpu_engine *)ctx)->moe_counts; }

static void cpu_host_layer_bytes(const void *ctx, uint64_t *out)
{
    lrun_weight_ring_add_host_layer_bytes(((const cpu_engine *)ctx)->wr, out);
}

// ---------------------------------------------------------------- the table

/* No random fill: the long-context benchmarks it serves are the CUDA engine's. */
const lrun_backend_iface lrun_cpu_backend = {
    .name = "cpu",
    .estimate = cpu_estimate,
    .size_placement = cpu_size_placement,
    .init = cpu_init,
    .free = cpu_free,
    .n_seq_max = cpu_n_seq_max,
    .n_ctx_max = cpu_n_ctx_max,
    .n_vocab = cpu_n_vocab,
    .seq_len = cpu_seq_len,
    .seq_truncate = cpu_seq_truncate,
    .seq_copy = cpu_seq_copy,
    .seq_reorder = cpu_seq_reorder,
    .seq_fill_random = NULL,
    .step = cpu_step,
    .get_stats = cpu_get_stats,
    .reset_stats = cpu_reset_stats,
    .moe_counts = cpu_moe_counts,
    .host_layer_bytes = cpu_host_layer_bytes,
    .runs_parts = 1,
};
