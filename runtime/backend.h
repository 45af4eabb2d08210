/* backend.h — what an engine backend implements, and how the facade finds one.
 *
 * An lrun_engine (lrun.h) is a facade over a backend, as in ggml-backend: a
 * table of functions plus the backend's own context. The facade (engine.c)
 * checks the options and a step's arguments once, with one set of limits for
 * every backend, then calls through the table; it never knows which backend
 * it holds. A backend is chosen from the model's device kind through the
 * registry (backend.c), the one file that names every backend: a CPU-only
 * build has no CUDA entry at all.
 *
 *   lrun_engine_init(model, opts)
 *     └─ engine.c: check opts, resolve defaults ─► registry: backend of the device kind
 *          └─ iface->init(&ctx, model, opts) ─► cpu/engine_cpu.c | cuda/engine_cuda*.c
 *   lrun_engine_step(...)
 *     └─ engine.c: lrun_step_check ─► iface->step(ctx, &step)
 *
 * The device layer has a table of its own (core/device.h: lrun_device_iface),
 * found through the same registry. */
#ifndef LRUN_BACKEND_H
#define LRUN_BACKEND_H

#include "lrun.h"

struct lrun_placement; /* residency/placement.h */

/* One step's arguments, already checked by the facade (lrun_step_check):
 * every id in range, no sequence past n_ctx_max, logits large enough. */
typedef struct lrun_step_args {
    int64_t n_tokens;           /* >= 1 */
    const int32_t *tokens;      /* (n_tokens) ids in [0, n_vocab) */
    const int32_t *seq;         /* (n_tokens) sequence of each token, in [0, n_seq_max) */
    const int8_t *want_logits;  /* (n_tokens) or NULL: the last token of each sequence */
    float *logits;              /* (n_want, n_vocab) */
    const int64_t *seq_count;   /* (n_seq_max) tokens of each sequence in this step */
    int64_t n_want;             /* logits rows the step writes */
    int64_t need;               /* the longest sequence after the step, positions */
    /* A layer split's part (lrun_engine_opts.layer_first/layer_count; engine_split.c), host memory: */
    const float *hidden_in;     /* (n_tokens, n_embd) the residual stream entering its first block, when
                                 * that is not block 0 (tokens then only name the rows) */
    float *hidden_out;          /* (n_tokens, n_embd) the residual stream leaving its last block, when that
                                 * is not the model's last (no logits are written) */
} lrun_step_args;

/* An engine backend. ctx is what init made. Options reach init and estimate
 * checked and never NULL; sequence ids reaching seq_len are in range. */
typedef struct lrun_backend_iface {
    const char *name; /* "cpu", "cuda" */
    /* Fills out (all but prefetch_layers, which the facade sets) without allocating. */
    lrun_status (*estimate)(lrun_engine_needs *out, lrun_model *model, const lrun_engine_opts *opts);
    /* Sizes placement p (residency/placement.h) with init's own layout code, without allocating:
     * fills scratch, slots, embedding rows, the KV cache and pool slack; the facade adds the
     * weights and the totals (lrun_placement_total). */
    lrun_status (*size_placement)(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                  const struct lrun_placement *p);
    lrun_status (*init)(void **ctx, lrun_model *model, const lrun_engine_opts *opts);
    void (*free)(void *ctx);
    int64_t (*n_seq_max)(const void *ctx);
    int64_t (*n_ctx_max)(const void *ctx);
    int64_t (*n_vocab)(const void *ctx);
    int64_t (*seq_len)(const void *ctx, int64_t seq);
    lrun_status (*seq_truncate)(void *ctx, int64_t seq, int64_t len);
    lrun_status (*seq_copy)(void *ctx, int64_t dst, int64_t src);
    lrun_status (*seq_reorder)(void *ctx, const int64_t *src_of_dst, int64_t n);
    /* NULL when the backend has no random fill (LRUN_E_UNSUPPORTED) */
    lrun_status (*seq_fill_random)(void *ctx, int64_t seq, int64_t n_pos, uint64_t seed);
    /* Runs a checked step; writes args->n_want rows. On failure no sequence changes. */
    lrun_status (*step)(void *ctx, const lrun_step_args *args);
    /* Fills every field the backend has; out arrives zeroed. */
    void (*get_stats)(const void *ctx, lrun_engine_stats *out);
    void (*reset_stats)(void *ctx);
    /* The expert selections counted since init or reset_stats (moe_route.h); NULL entry or a table with
     * no counts: none (a dense model). reset_stats clears them. */
    const struct lrun_moe_counts *(*moe_counts)(const void *ctx);
    /* The expert cache's bookkeeping (residency/expert_cache.h); NULL entry or result: no cache. */
    const struct lrun_expert_cache *(*expert_cache)(const void *ctx);
    /* Adds each block's host-computed bytes since init or reset_stats to out[0..n_layer) (its share of
     * host_compute_bytes); NULL entry: none counted per block. */
    void (*host_layer_bytes)(const void *ctx, uint64_t *out);
    /* 1: init takes a layer range (opts->layer_first/layer_count) and step the hidden rows, so the
     * backend can run a layer split's parts (engine_split.c) */
    int runs_parts;
} lrun_backend_iface;

/* The backends this build has, each a peer; declared here so the registry can
 * name them (backend.c). */
extern const lrun_backend_iface lrun_cpu_backend;
/* The layer split (engine_split.c): parts of another backend, chained; the facade picks it when
 * opts->n_split > 1. */
extern const lrun_backend_iface lrun_split_backend;
/* Part `part` of the split opts asks for, sized alone for placement pl (its engine's
 * size_placement, its blocks' weights: lrun_engine_size_placement_part). */
struct lrun_placement;
lrun_status lrun_split_size_part(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                 int64_t part, const struct lrun_placement *pl);
#ifdef LRUN_WITH_CUDA
extern const lrun_backend_iface lrun_cuda_backend;
#endif

/* The engine backend for a device kind, or NULL when this build has none. */
const lrun_backend_iface *lrun_backend_for(lrun_device_kind kind);

#endif
