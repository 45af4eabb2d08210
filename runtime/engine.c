/* engine.c — the public engine (lrun.h lrun_engine_*): a facade over a backend.
 *
 * Every call checks its arguments here, once, for every backend, and then
 * goes through the backend's table (backend.h). The facade keeps only what
 * the checks need: the backend's sizes and the per-step token counts. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core/device.h"
#include "core/format_bytes.h"
#include "core/error.h"
#include "core/mapguard.h"
#include "cuda/engine_cuda.h" /* the CUDA engine's staging sizes (header only, no CUDA) */
#include "cpu/moe_route.h"
#include "model/model.h"
#include "model/model_guard.h"
#include "residency/placement.h"
#include "residency/expert_cache.h"
#include "step_tokens.h"

struct lrun_engine {
    const lrun_backend_iface *iface;
    void *ctx;                    /* the backend's engine */
    int64_t n_vocab, n_seq_max, n_ctx_max;
    int64_t *seq_count;           /* (n_seq_max) tokens of each sequence in the step being checked */
    const lrun_model *model;      /* whose file a step may find truncated (model/model_guard.h) */
};

// ---------------------------------------------------------------- options

/* One set of limits for every backend, so that options one device accepts
 * no other refuses, and a plan made for one is valid on another. They are
 * the CUDA backend's, the tighter: its kernels index sequences and batch rows
 * in grid dimensions of at most 65535 and keep positions in int32 tables
 * (2^30 leaves room for position + length arithmetic). The CPU engine allowed
 * 2^20 sequences and 2^40 positions, more than any cache can hold. */
#define LIMIT_SEQ ((int64_t)1 << 16)
#define LIMIT_BATCH ((int64_t)1 << 16)
#define LIMIT_CTX ((int64_t)1 << 30)

/* LRUN_E_ARG naming the first option out of its range; who is the caller. */
static lrun_status check_opts(const lrun_engine_opts *o, const char *who)
{
    if (o->n_seq_max < 0 || o->n_ctx_max < 0 || o->n_batch_max < 0 || o->n_threads < 0)
        return lrun_fail(LRUN_E_ARG, "%s: n_seq_max %lld, n_ctx_max %lld, n_batch_max %lld and n_threads %d must "
                         "not be negative", who, (long long)o->n_seq_max, (long long)o->n_ctx_max,
                         (long long)o->n_batch_max, o->n_threads);
    if (o->n_seq_max > LIMIT_SEQ)
        return lrun_fail(LRUN_E_ARG, "%s: n_seq_max %lld is too large (at most 65536)", who, (long long)o->n_seq_max);
    if (o->n_batch_max > LIMIT_BATCH)
        return lrun_fail(LRUN_E_ARG, "%s: n_batch_max %lld is too large (at most 65536)", who,
                         (long long)o->n_batch_max);
    if (o->n_ctx_max > LIMIT_CTX)
        return lrun_fail(LRUN_E_ARG, "%s: n_ctx_max %lld is too large (at most 2^30)", who, (long long)o->n_ctx_max);
    if (o->cache_kind < LRUN_CACHE_KIND_DYNAMIC || o->cache_kind > LRUN_CACHE_KIND_QUANTIZED)
        return lrun_fail(LRUN_E_ARG, "%s: unknown cache kind %d", who, (int)o->cache_kind);
    if (o->kv_dtype != LRUN_KV_DTYPE_DEFAULT && o->kv_dtype != LRUN_KV_DTYPE_F16 && o->kv_dtype != LRUN_KV_DTYPE_F32)
        return lrun_fail(LRUN_E_ARG, "%s: kv_dtype %d is not one of LRUN_KV_DTYPE_DEFAULT, _F16, _F32", who,
                         (int)o->kv_dtype);
    if (o->weight_mode != LRUN_WEIGHT_MODE_ALL_DEVICE && o->weight_mode != LRUN_WEIGHT_MODE_AS_PLACED)
        return lrun_fail(LRUN_E_ARG, "%s: weight_mode %d is not LRUN_WEIGHT_MODE_ALL_DEVICE or _AS_PLACED", who,
                         (int)o->weight_mode);
    if (o->prefetch_layers < 0 || o->prefetch_layers > 64)
        return lrun_fail(LRUN_E_ARG, "%s: prefetch_layers %d is not in [0, 64] (0 = the default)", who,
                         o->prefetch_layers);
    if (o->numerics != LRUN_NUMERICS_DEFAULT && o->numerics != LRUN_NUMERICS_EXACT)
        return lrun_fail(LRUN_E_ARG, "%s: numerics %d is not LRUN_NUMERICS_DEFAULT or _EXACT", who, (int)o->numerics);
    if (o->expert_cache_slots < -1)
        return lrun_fail(LRUN_E_ARG, "%s: expert_cache_slots %lld (expected -1 = auto, 0 = off, or a slot count)", who,
                         (long long)o->expert_cache_slots);
    const lrun_expert_cache_replace r = o->expert_cache_policy;
    if (r != LRUN_EXPERT_CACHE_REPLACE_DEFAULT && r != LRUN_EXPERT_CACHE_REPLACE_LRU &&
        r != LRUN_EXPERT_CACHE_REPLACE_LFU)
        return lrun_fail(LRUN_E_ARG, "%s: expert_cache_policy %d is not LRUN_EXPERT_CACHE_REPLACE_DEFAULT, _LRU or _LFU",
                         who, (int)r);
    if (o->expert_cache_mode != LRUN_EXPERT_CACHE_MODE_COPY && o->expert_cache_mode != LRUN_EXPERT_CACHE_MODE_HYBRID)
        return lrun_fail(LRUN_E_ARG, "%s: expert_cache_mode %d is not LRUN_EXPERT_CACHE_MODE_COPY or _HYBRID", who,
                         (int)o->expert_cache_mode);
    if ((int)o->moe_prefill_stream < LRUN_MOE_PREFILL_STREAM_DEFAULT ||
        (int)o->moe_prefill_stream > LRUN_MOE_PREFILL_STREAM_AUTO)
        return lrun_fail(LRUN_E_ARG, "%s: moe_prefill_stream %d is not LRUN_MOE_PREFILL_STREAM_DEFAULT, _OFF, _ON or _AUTO",
                         who, (int)o->moe_prefill_stream);
    if (o->moe_prefill_stream_tokens < 0)
        return lrun_fail(LRUN_E_ARG, "%s: moe_prefill_stream_tokens %lld (expected 0 = the default, or a token count)",
                         who, (long long)o->moe_prefill_stream_tokens);
    return LRUN_OK;
}

/* A layer split's options: parts of at least one block that add up to the
 * model's, on a backend that runs parts; the range fields are the split's
 * own (set for its parts, never by callers). */
static lrun_status check_split(const lrun_engine_opts *o, const lrun_model *model, const lrun_backend_iface *b,
                               const char *who)
{
    if (o->layer_first != 0 || o->layer_count != 0)
        return lrun_fail(LRUN_E_ARG, "%s: layer_first %lld and layer_count %lld are set by a layer split for its "
                         "parts; ask for a split with n_split and split_layers", who, (long long)o->layer_first,
                         (long long)o->layer_count);
    const int64_t n_layer = model->info.n_layer;
    if (o->n_split < 0 || o->n_split > n_layer)
        return lrun_fail(LRUN_E_ARG, "%s: n_split %lld is not in [0, %lld] (the model's blocks)", who,
                         (long long)o->n_split, (long long)n_layer);
    if (o->n_split <= 1) return LRUN_OK;
    if (!o->split_layers) return lrun_fail(LRUN_E_ARG, "%s: n_split %lld without split_layers", who, (long long)o->n_split);
    int64_t sum = 0;
    for (int64_t i = 0; i < o->n_split; i++) {
        if (o->split_layers[i] < 1 || o->split_layers[i] > n_layer)
            return lrun_fail(LRUN_E_ARG, "%s: split_layers[%lld] = %lld: every part holds 1 to %lld blocks", who,
                             (long long)i, (long long)o->split_layers[i], (long long)n_layer);
        sum += o->split_layers[i];
    }
    if (sum != n_layer)
        return lrun_fail(LRUN_E_ARG, "%s: split_layers add up to %lld blocks; the model has %lld", who, (long long)sum,
                         (long long)n_layer);
    if (!b->runs_parts)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: the %s backend does not run a layer split's parts yet "
                         "(docs/multigpu.md)", who, b->name);
    return LRUN_OK;
}

/* The backend of the model's device, after the options are checked. */
static lrun_status resolve(const lrun_backend_iface **out, lrun_model *model, const lrun_engine_opts *opts,
                           const char *who)
{
    *out = NULL;
    if (!model) return lrun_fail(LRUN_E_ARG, "%s: model is NULL", who);
    lrun_status st = check_opts(opts, who);
    if (st != LRUN_OK) return st;
    const lrun_device_kind kind = lrun_device_kind_of(model->device);
    *out = lrun_backend_for(kind);
    if (!*out) return lrun_fail(LRUN_E_DEVICE, "%s: no engine backend for device %s in this build", who,
                                lrun_device_name(model->device));
    if ((st = check_split(opts, model, *out, who)) != LRUN_OK) {
        *out = NULL;
        return st;
    }
    if (opts->n_split > 1) *out = &lrun_split_backend;
    return LRUN_OK;
}

/* Measured defaults (docs/residency.md, docs/streaming.md): on the CPU two
 * blocks in flight hide the fill thread's jitter; on an H100 one unit
 * already keeps the copy engine busy at batch 1, and every further slot is a
 * layer that can no longer stay resident. */
int lrun_engine_default_prefetch(lrun_device_kind kind) { return kind == LRUN_DEVICE_KIND_CUDA ? 1 : 2; }

lrun_status lrun_engine_host_staging_bytes(size_t *out, const lrun_model *model, lrun_device_kind kind,
                                           const lrun_engine_opts *opts)
{
    if (!out || !model) return lrun_fail(LRUN_E_ARG, "engine host staging: %s is NULL", out ? "model" : "out");
    *out = 0;
    const int64_t n_batch = opts ? opts->n_batch_max : 0;
    if (n_batch < 0) return lrun_fail(LRUN_E_ARG, "engine host staging: n_batch_max %lld is negative", (long long)n_batch);
    if (kind != LRUN_DEVICE_KIND_CUDA) return LRUN_OK; /* the cpu engine stages nothing: its logits are host memory */
    *out = lrun_cuda_engine_staging_bytes(n_batch ? n_batch : LRUN_CUDA_DEFAULT_BATCH, lrun_model_get_info(model)->n_vocab);
    return LRUN_OK;
}

/* opts with its defaults resolved where every backend takes the same one. */
static lrun_engine_opts with_defaults(const lrun_engine_opts *opts, const lrun_model *model)
{
    lrun_engine_opts o = opts ? *opts : (lrun_engine_opts){.n_seq_max = 1, .cache_kind = LRUN_CACHE_KIND_DYNAMIC};
    if (o.prefetch_layers == 0 && model) o.prefetch_layers = lrun_engine_default_prefetch(lrun_device_kind_of(model->device));
    return o;
}

lrun_status lrun_engine_estimate(lrun_engine_needs *out, lrun_model *model, const lrun_engine_opts *opts)
{
    if (!out) return lrun_fail(LRUN_E_ARG, "engine estimate: out is NULL");
    memset(out, 0, sizeof *out);
    const lrun_engine_opts o = with_defaults(opts, model);
    const lrun_backend_iface *b;
    lrun_status st = resolve(&b, model, &o, "engine estimate");
    if (st == LRUN_OK) st = b->estimate(out, model, &o);
    out->prefetch_layers = o.prefetch_layers;
    return st;
}

lrun_status lrun_engine_size_placement(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                       const lrun_tier *tiers, const int8_t *host_compute)
{
    return lrun_engine_size_placement_packed(out, model, opts, tiers, host_compute, NULL);
}

lrun_status lrun_engine_size_placement_packed(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                              const lrun_tier *tiers, const int8_t *host_compute, const int8_t *packed)
{
    if (!out) return lrun_fail(LRUN_E_ARG, "engine size: out is NULL");
    memset(out, 0, sizeof *out);
    const lrun_engine_opts o = with_defaults(opts, model);
    const lrun_backend_iface *b;
    lrun_status st = resolve(&b, model, &o, "engine size");
    if (st == LRUN_OK) st = lrun_placement_check(model, tiers);
    const lrun_placement p = {model, tiers, host_compute, packed};
    if (st == LRUN_OK) st = b->size_placement(out, model, &o, &p);
    if (st == LRUN_OK) st = lrun_placement_total(out, &p);
    if (st != LRUN_OK) {
        memset(out, 0, sizeof *out);
        return st;
    }
    out->prefetch_layers = o.prefetch_layers;
    return LRUN_OK;
}

lrun_status lrun_engine_size_placement_part(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                            int64_t part, const lrun_tier *tiers, const int8_t *host_compute,
                                            const int8_t *packed)
{
    if (!out) return lrun_fail(LRUN_E_ARG, "engine size part: out is NULL");
    memset(out, 0, sizeof *out);
    const lrun_engine_opts o = with_defaults(opts, model);
    const lrun_backend_iface *b;
    lrun_status st = resolve(&b, model, &o, "engine size part");
    if (st == LRUN_OK && b != &lrun_split_backend)
        st = lrun_fail(LRUN_E_ARG, "engine size part: opts ask for no layer split (n_split %lld)",
                       (long long)o.n_split);
    if (st == LRUN_OK && (part < 0 || part >= o.n_split))
        st = lrun_fail(LRUN_E_ARG, "engine size part: part %lld is not in [0, %lld)", (long long)part,
                       (long long)o.n_split);
    if (st == LRUN_OK) st = lrun_placement_check(model, tiers);
    const lrun_placement p = {model, tiers, host_compute, packed};
    if (st == LRUN_OK) st = lrun_split_size_part(out, model, &o, part, &p);
    if (st != LRUN_OK) {
        memset(out, 0, sizeof *out);
        return st;
    }
    out->prefetch_layers = o.prefetch_layers;
    return LRUN_OK;
}

// ---------------------------------------------------------------- lifetime

/* Refuses an engine whose KV cache and scratch alone (what init surely
 * allocates; sized by the backend's own layout) exceed the device's free
 * bytes, before anything is allocated: a static cache of 10^9 positions on
 * the CPU is an ordinary OOM naming the sizes, never the kernel's OOM killer
 * (issue 16). Where the sizing itself fails, init reports its own error. */
static lrun_status check_init_fits(const lrun_backend_iface *b, lrun_model *model, const lrun_engine_opts *o)
{
    lrun_placement_size ps;
    memset(&ps, 0, sizeof ps);
    const lrun_placement p = {model, NULL, NULL, NULL};
    if (b->size_placement(&ps, model, o, &p) != LRUN_OK) return LRUN_OK;
    const size_t free_b = lrun_device_free_bytes(model->device);
    const size_t need = ps.kv_init_bytes + ps.scratch_bytes;
    if (need >= ps.kv_init_bytes && need <= free_b) return LRUN_OK;
    char kv[32], sc[32], fr[32];
    const int kv_big = ps.kv_init_bytes > free_b || ps.kv_init_bytes >= ps.scratch_bytes;
    return lrun_oom_phase(lrun_fail_oom(need, free_b, "out of memory on %s: engine init needs a %s KV cache "
                                        "(%lld positions x %lld sequences) and %s of scratch, %s free",
                                        lrun_device_name(model->device),
                                        lrun_format_bytes(ps.kv_init_bytes, kv, sizeof kv),
                                        (long long)(o->n_ctx_max ? o->n_ctx_max : model->info.n_ctx_train),
                                        (long long)o->n_seq_max, lrun_format_bytes(ps.scratch_bytes, sc, sizeof sc),
                                        lrun_format_bytes(free_b, fr, sizeof fr)),
                          kv_big ? "cache" : "scratch");
}

lrun_status lrun_engine_init(lrun_engine **out, lrun_model *model, const lrun_engine_opts *opts)
{
    if (!out) return lrun_fail(LRUN_E_ARG, "engine: out is NULL");
    *out = NULL;
    const lrun_engine_opts o = with_defaults(opts, model);
    const lrun_backend_iface *b;
    lrun_status st = resolve(&b, model, &o, "engine");
    if (st == LRUN_OK) st = check_init_fits(b, model, &o);
    if (st != LRUN_OK) return st;
    lrun_engine *e = calloc(1, sizeof *e);
    if (!e) return lrun_fail_oom(sizeof *e, 0, "engine: record");
    e->iface = b;
    e->model = model;
    lrun_mapguard_enter(); /* init and the prefault read the file mapping: a truncated file is an error */
    /* FP8 weights not widened yet get their bytes now, but for a cuda engine that moves every
     * weight itself: that widens them straight onto the GPU (model/model_fp8.h) */
    const int moves_all = model->device->kind == LRUN_DEVICE_KIND_CUDA && o.weight_mode == LRUN_WEIGHT_MODE_ALL_DEVICE;
    st = moves_all ? LRUN_OK : lrun_model_settle_weights(model);
    if (st == LRUN_OK) st = b->init(&e->ctx, model, &o);
    if (st != LRUN_OK) {
        lrun_mapguard_leave();
        free(e);
        return st;
    }
    lrun_model_prefault(model); /* what init left in the file (the weights it moved are read already) */
    lrun_mapguard_leave();
    if ((st = lrun_model_check_file(model, "engine")) != LRUN_OK) {
        lrun_engine_free(e);
        return st;
    }
    e->n_vocab = b->n_vocab(e->ctx);
    e->n_seq_max = b->n_seq_max(e->ctx);
    e->n_ctx_max = b->n_ctx_max(e->ctx);
    e->seq_count = calloc((size_t)e->n_seq_max, sizeof *e->seq_count);
    if (!e->seq_count) {
        const int64_t n_seq = e->n_seq_max; /* read before the record is freed */
        lrun_engine_free(e);
        return lrun_fail_oom((size_t)n_seq * sizeof(int64_t), 0, "engine: counts of %lld sequences", (long long)n_seq);
    }
    *out = e;
    return LRUN_OK;
}

void lrun_engine_free(lrun_engine *engine)
{
    if (!engine) return;
    if (engine->ctx) engine->iface->free(engine->ctx);
    free(engine->seq_count);
    free(engine);
}

// ---------------------------------------------------------------- sequences

int64_t lrun_engine_n_seq_max(const lrun_engine *engine) { return engine->n_seq_max; }
int64_t lrun_engine_n_ctx_max(const lrun_engine *engine) { return engine->n_ctx_max; }

int64_t lrun_engine_seq_len(const lrun_engine *engine, int64_t seq)
{
    return seq >= 0 && seq < engine->n_seq_max ? engine->iface->seq_len(engine->ctx, seq) : -1;
}

lrun_status lrun_engine_seq_truncate(lrun_engine *engine, int64_t seq, int64_t len)
{
    if (!engine) return lrun_fail(LRUN_E_ARG, "engine truncate: engine is NULL");
    return engine->iface->seq_truncate(engine->ctx, seq, len);
}

lrun_status lrun_engine_seq_copy(lrun_engine *engine, int64_t dst, int64_t src)
{
    if (!engine) return lrun_fail(LRUN_E_ARG, "engine copy: engine is NULL");
    return engine->iface->seq_copy(engine->ctx, dst, src);
}

lrun_status lrun_engine_seq_reorder(lrun_engine *engine, const int64_t *src_of_dst, int64_t n)
{
    if (!engine) return lrun_fail(LRUN_E_ARG, "engine reorder: engine is NULL");
    return engine->iface->seq_reorder(engine->ctx, src_of_dst, n);
}

lrun_status lrun_engine_seq_fill_random(lrun_engine *engine, int64_t seq, int64_t n_pos, uint64_t seed)
{
    if (!engine) return lrun_fail(LRUN_E_ARG, "engine fill: engine is NULL");
    if (!engine->iface->seq_fill_random)
        return lrun_fail(LRUN_E_UNSUPPORTED, "engine fill: random contexts are for the long-context benchmarks of "
                         "the CUDA engine; on %s run a prompt", engine->iface->name);
    return engine->iface->seq_fill_random(engine->ctx, seq, n_pos, seed);
}

// ---------------------------------------------------------------- steps

static int64_t seq_len_of(const void *engine, int64_t seq)
{
    const lrun_engine *e = engine;
    return e->iface->seq_len(e->ctx, seq);
}

lrun_status lrun_engine_step(lrun_engine *engine, int64_t n_tokens, const int32_t *tokens,
                             const int32_t *seq, const int8_t *want_logits,
                             float *logits, int64_t logits_rows_cap, int64_t *n_out)
{
    lrun_engine *e = engine;
    if (n_out) *n_out = 0;
    if (!e) return lrun_fail(LRUN_E_ARG, "engine step: engine is NULL");
    lrun_step_args a = {n_tokens, tokens, seq, want_logits, logits, e->seq_count, 0, 0, NULL, NULL};
    const lrun_step_shape shape = {e->n_vocab, e->n_seq_max, e->n_ctx_max, e, seq_len_of};
    lrun_status st = lrun_step_check(&shape, n_tokens, tokens, seq, want_logits, logits, logits_rows_cap,
                                     e->seq_count, &a.n_want, &a.need);
    if (st != LRUN_OK || n_tokens == 0) return st;
    /* A model file truncated in use: the weights read past its end are
     * zeros (core/mapguard.h), so the step, and every later one, fails. */
    if ((st = lrun_model_check_file(e->model, "engine step")) != LRUN_OK) return st;
    lrun_mapguard_enter();
    st = e->iface->step(e->ctx, &a);
    lrun_mapguard_leave();
    const lrun_status io = lrun_model_check_file(e->model, "engine step");
    if (io != LRUN_OK) st = io;
    if (st == LRUN_OK && n_out) *n_out = a.n_want;
    return st;
}

// ---------------------------------------------------------------- stats

void lrun_engine_get_stats(const lrun_engine *engine, lrun_engine_stats *out)
{
    memset(out, 0, sizeof *out);
    if (engine) engine->iface->get_stats(engine->ctx, out);
}

void lrun_engine_reset_stats(lrun_engine *engine)
{
    if (engine) engine->iface->reset_stats(engine->ctx);
}

lrun_status lrun_engine_expert_cache_counts(const lrun_engine *engine, int64_t *hits, int64_t *misses,
                                            int64_t *prefetches, uint64_t *bytes_copied, int64_t *slots)
{
    if (!engine) return lrun_fail(LRUN_E_ARG, "lrun_engine_expert_cache_counts: engine is NULL");
    const lrun_expert_cache *c = engine->iface->expert_cache ? engine->iface->expert_cache(engine->ctx) : NULL;
    if (slots) *slots = c ? c->n_slots : 0;
    if (!c) return LRUN_OK;
    if (hits) memcpy(hits, c->hits, (size_t)c->n_layer * sizeof *hits);
    if (misses) memcpy(misses, c->misses, (size_t)c->n_layer * sizeof *misses);
    if (prefetches) memcpy(prefetches, c->prefetches, (size_t)c->n_layer * sizeof *prefetches);
    if (bytes_copied) *bytes_copied = c->bytes_copied;
    return LRUN_OK;
}

lrun_status lrun_engine_expert_cache_hybrid_counts(const lrun_engine *engine, int64_t *host_computed,
                                                   int64_t *admitted)
{
    if (!engine) return lrun_fail(LRUN_E_ARG, "lrun_engine_expert_cache_hybrid_counts: engine is NULL");
    const lrun_expert_cache *c = engine->iface->expert_cache ? engine->iface->expert_cache(engine->ctx) : NULL;
    if (!c) return LRUN_OK;
    if (host_computed) memcpy(host_computed, c->host_computed, (size_t)c->n_layer * sizeof *host_computed);
    if (admitted) memcpy(admitted, c->admitted, (size_t)c->n_layer * sizeof *admitted);
    return LRUN_OK;
}

lrun_status lrun_engine_expert_cache_layer_bytes(const lrun_engine *engine, uint64_t *bytes_copied)
{
    if (!engine || !bytes_copied)
        return lrun_fail(LRUN_E_ARG, "lrun_engine_expert_cache_layer_bytes: %s is NULL",
                         engine ? "bytes_copied" : "engine");
    const lrun_expert_cache *c = engine->iface->expert_cache ? engine->iface->expert_cache(engine->ctx) : NULL;
    if (c) memcpy(bytes_copied, c->bytes_copied_layer, (size_t)c->n_layer * sizeof *bytes_copied);
    return LRUN_OK;
}

lrun_status lrun_engine_host_compute_layer_bytes(const lrun_engine *engine, uint64_t *bytes)
{
    if (!engine || !bytes)
        return lrun_fail(LRUN_E_ARG, "lrun_engine_host_compute_layer_bytes: %s is NULL", engine ? "bytes" : "engine");
    memset(bytes, 0, (size_t)engine->model->info.n_layer * sizeof *bytes);
    if (engine->iface->host_layer_bytes) engine->iface->host_layer_bytes(engine->ctx, bytes);
    return LRUN_OK;
}

lrun_status lrun_engine_expert_counts(const lrun_engine *engine, int64_t *counts, int64_t *tokens)
{
    if (!engine) return lrun_fail(LRUN_E_ARG, "lrun_engine_expert_counts: engine is NULL");
    const lrun_moe_counts *c = engine->iface->moe_counts ? engine->iface->moe_counts(engine->ctx) : NULL;
    if (!c || !c->counts) return LRUN_OK;
    if (counts) memcpy(counts, c->counts, (size_t)(c->n_layer * c->n_expert) * sizeof *counts);
    if (tokens) memcpy(tokens, c->tokens, (size_t)c->n_layer * sizeof *tokens);
    return LRUN_OK;
}
