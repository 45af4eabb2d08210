/* engine_split.c — a layer split (lrun_engine_opts.n_split, split_layers;
 * docs/multigpu.md): the model's blocks in parts of consecutive blocks,
 * each run by an engine of the device's backend made for its range, the
 * residual stream handed from one part to the next. Behind the backend
 * table like any backend (backend.h: lrun_split_backend); the facade picks
 * it for n_split > 1 once the options are checked.
 *
 * A step runs chunk by chunk (the parts' n_batch_max tokens):
 *
 *   tokens ─► part 0: embedding, blocks [0, a)  ─► hidden (n, n_embd)
 *             part 1: blocks [a, b)              ─► hidden
 *             …
 *             part P-1: blocks [z, n_layer), output norm, head ─► logits
 *
 * Each part keeps the KV cache of its own blocks only, so sequence lengths
 * move together: every part runs every chunk. The parts compute what one
 * engine would, in the same order (a part's first block norms its input
 * itself, with the same function the previous block's fused residual add
 * would have called), so the logits are bit-identical to one engine's.
 *
 * Failure: a step that fails in any part of any chunk truncates every part
 * back to the lengths the step began with, so nothing changes, as with one
 * engine. A sequence copy or reorder that fails in a later part, after
 * earlier parts made it, leaves the parts out of step; the engine then
 * refuses every later call, naming that (a copy fails only for memory).
 *
 * A part is its backend's engine with a block range, so weights placed off
 * the device (AS_PLACED) work in a split as in one engine: each part
 * streams its own blocks' weights into its own slots, computes host-placed
 * ones on the host and reads packed ones as its backend does; the
 * embedding is the first part's, the head the last's. lrun_split_size_part
 * sizes one part alone, for the planner per device (lua/lrun/split_plan.lua).
 *
 * Today the parts share the model's device (cpu,cpu; one GPU in two
 * parts); parts on other devices, with the rows crossing between them, are
 * the next step (docs/multigpu.md). */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core/checked.h"
#include "core/device.h"
#include "core/error.h"
#include "cpu/moe_route.h"
#include "model/model.h"
#include "residency/placement.h"

#define SPLIT_BATCH 512 /* tokens per chunk when n_batch_max is 0: the CPU engine's default */

typedef struct split_part {
    void *ctx;            /* the part's engine (the device backend's) */
    int64_t first, count; /* its blocks: [first, first + count) */
} split_part;

typedef struct split_engine {
    const lrun_backend_iface *b; /* the parts' backend */
    lrun_model *model;
    int64_t n_parts;
    split_part *parts;       /* (n_parts), in block order */
    int64_t n_embd, n_batch; /* n_batch: tokens per chunk, every part's n_batch_max */
    int64_t n_seq_max;
    float *hidden[2];       /* (n_batch, n_embd) each: the rows one part hands the next, alternating;
                             * hidden[0] is the base of both (handover_bytes, host_account scratch) */
    int64_t *len0;          /* (n_seq_max) sequence lengths when the step began, for the rollback */
    int64_t *left;          /* (n_seq_max) the step's tokens of each sequence not yet run */
    int64_t *chunk_count;   /* (n_seq_max) tokens of each sequence in the chunk */
    int8_t *want;           /* (n_batch) the chunk's rows whose logits are wanted */
    lrun_moe_counts counts; /* the parts' selections, summed when asked (each counts its own blocks) */
    int broken;             /* 1: a sequence copy or reorder failed part-way; every call refuses */
} split_engine;

// ---------------------------------------------------------------- options of a part

/* opts for part i: its block range, the split's own fields cleared, the chunk size fixed. */
static lrun_engine_opts part_opts(const lrun_engine_opts *o, int64_t first, int64_t count)
{
    lrun_engine_opts p = *o;
    p.n_split = 0;
    p.split_layers = NULL;
    p.layer_first = first;
    p.layer_count = count;
    p.n_batch_max = o->n_batch_max ? o->n_batch_max : SPLIT_BATCH;
    return p;
}

/* Bytes of the two hand-over buffers of (n_batch, n_embd) floats. They are host
 * memory, pinned where the device has pinned memory (a CUDA part's copies in and
 * out are then DMA), charged to the model's host account as scratch; so a CPU
 * split's estimate counts them (its scratch is host memory), a CUDA one's not
 * (its scratch is the device's). 0 when the product overflows. */
static size_t handover_bytes(int64_t n_batch, int64_t n_embd)
{
    size_t b = 0;
    return lrun_size_mul((size_t)n_batch, (size_t)n_embd, &b) && lrun_size_mul(b, 2 * sizeof(float), &b) ? b : 0;
}

static const lrun_backend_iface *parts_backend(const lrun_model *model)
{
    return lrun_backend_for(lrun_device_kind_of(model->device));
}

static lrun_status split_estimate(lrun_engine_needs *out, lrun_model *model, const lrun_engine_opts *opts)
{
    const lrun_backend_iface *b = parts_backend(model);
    memset(out, 0, sizeof *out);
    int64_t first = 0;
    for (int64_t i = 0; i < opts->n_split; first += opts->split_layers[i++]) {
        lrun_engine_needs n;
        memset(&n, 0, sizeof n);
        const lrun_engine_opts p = part_opts(opts, first, opts->split_layers[i]);
        const lrun_status st = b->estimate(&n, model, &p);
        if (st != LRUN_OK) return st;
        out->scratch_bytes += n.scratch_bytes; /* each part has a scratch of its own */
        out->kv_bytes_per_position += n.kv_bytes_per_position;
    }
    if (lrun_device_kind_of(model->device) == LRUN_DEVICE_KIND_CPU)
        out->scratch_bytes += handover_bytes(opts->n_batch_max ? opts->n_batch_max : SPLIT_BATCH, model->info.n_embd);
    return LRUN_OK;
}

/* Each part's sizing, added up: its scratch, its blocks' KV cache, its slots. */
static lrun_status split_size_placement(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                        const struct lrun_placement *pl)
{
    const lrun_backend_iface *b = parts_backend(model);
    memset(out, 0, sizeof *out);
    int64_t first = 0;
    for (int64_t i = 0; i < opts->n_split; first += opts->split_layers[i++]) {
        lrun_placement_size s;
        memset(&s, 0, sizeof s);
        const lrun_engine_opts p = part_opts(opts, first, opts->split_layers[i]);
        const lrun_status st = b->size_placement(&s, model, &p, pl);
        if (st != LRUN_OK) return st;
        out->slot_bytes += s.slot_bytes;
        out->embd_rows_bytes += s.embd_rows_bytes;
        out->scratch_bytes += s.scratch_bytes;
        out->kv_init_bytes += s.kv_init_bytes;
        out->kv_max_bytes += s.kv_max_bytes;
        out->pool_slack_bytes += s.pool_slack_bytes;
    }
    return LRUN_OK;
}

lrun_status lrun_split_size_part(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                 int64_t part, const struct lrun_placement *pl)
{
    memset(out, 0, sizeof *out);
    int64_t first = 0;
    for (int64_t i = 0; i < part; i++) first += opts->split_layers[i];
    const lrun_engine_opts p = part_opts(opts, first, opts->split_layers[part]);
    const lrun_status st = parts_backend(model)->size_placement(out, model, &p, pl);
    return st == LRUN_OK ? lrun_placement_total_blocks(out, pl, first, first + opts->split_layers[part]) : st;
}

// ---------------------------------------------------------------- lifetime

static void split_free(void *ctx)
{
    split_engine *s = ctx;
    if (!s) return;
    for (int64_t i = 0; s->parts && i < s->n_parts; i++)
        if (s->parts[i].ctx) s->b->free(s->parts[i].ctx);
    free(s->parts);
    if (s->hidden[0])
        lrun_device_host_release(s->model->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, s->hidden[0],
                                 handover_bytes(s->n_batch, s->n_embd));
    free(s->len0);
    free(s->left);
    free(s->chunk_count);
    free(s->want);
    lrun_moe_counts_free(&s->counts);
    free(s);
}

static lrun_status split_init(void **out, lrun_model *model, const lrun_engine_opts *opts)
{
    split_engine *s = calloc(1, sizeof *s);
    if (!s) return lrun_fail_oom(sizeof *s, 0, "engine: split record");
    s->b = parts_backend(model);
    s->model = model;
    s->n_parts = opts->n_split;
    s->n_embd = model->info.n_embd;
    s->n_batch = opts->n_batch_max ? opts->n_batch_max : SPLIT_BATCH;
    s->parts = calloc((size_t)s->n_parts, sizeof *s->parts);
    lrun_status st = s->parts ? LRUN_OK : lrun_fail_oom(0, 0, "engine: %lld split parts", (long long)s->n_parts);
    int64_t first = 0;
    for (int64_t i = 0; st == LRUN_OK && i < s->n_parts; first += opts->split_layers[i++]) {
        const lrun_engine_opts p = part_opts(opts, first, opts->split_layers[i]);
        s->parts[i] = (split_part){NULL, first, opts->split_layers[i]};
        st = s->b->init(&s->parts[i].ctx, model, &p);
        if (st != LRUN_OK)
            st = lrun_fail_context(st, "engine: layer split part %lld (blocks %lld-%lld)", (long long)i,
                                   (long long)first, (long long)(first + opts->split_layers[i] - 1));
    }
    if (st == LRUN_OK) {
        s->n_seq_max = s->b->n_seq_max(s->parts[0].ctx);
        const size_t both = handover_bytes(s->n_batch, s->n_embd);
        void *base = NULL;
        st = both ? lrun_device_host_alloc(model->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, both,
                                           "split hand-over rows", &base)
                  : lrun_fail_oom(SIZE_MAX, 0, "engine: split hand-over rows for %lld tokens overflow size_t",
                                  (long long)s->n_batch);
        if (st == LRUN_OK) {
            s->hidden[0] = base;
            s->hidden[1] = s->hidden[0] + (size_t)s->n_batch * (size_t)s->n_embd;
        }
    }
    if (st == LRUN_OK) {
        s->len0 = malloc((size_t)s->n_seq_max * sizeof *s->len0);
        s->left = malloc((size_t)s->n_seq_max * sizeof *s->left);
        s->chunk_count = malloc((size_t)s->n_seq_max * sizeof *s->chunk_count);
        s->want = malloc((size_t)s->n_batch);
        if (!s->len0 || !s->left || !s->chunk_count || !s->want)
            st = lrun_fail_oom(0, 0, "engine: split bookkeeping (%lld sequences)", (long long)s->n_seq_max);
    }
    if (st == LRUN_OK) st = lrun_moe_counts_init(&s->counts, model->info.n_layer, model->info.n_expert);
    if (st != LRUN_OK) {
        split_free(s);
        return st;
    }
    *out = s;
    return LRUN_OK;
}

// ---------------------------------------------------------------- sequences

static int64_t split_n_seq_max(const void *ctx) { return ((const split_engine *)ctx)->n_seq_max; }
static int64_t split_n_ctx_max(const void *ctx)
{
    const split_engine *s = ctx;
    return s->b->n_ctx_max(s->parts[0].ctx);
}
static int64_t split_n_vocab(const void *ctx) { return ((const split_engine *)ctx)->model->info.n_vocab; }
static int64_t split_seq_len(const void *ctx, int64_t seq)
{
    const split_engine *s = ctx;
    return s->b->seq_len(s->parts[0].ctx, seq);
}

static lrun_status refuse_broken(const split_engine *s, const char *what)
{
    (void)s;
    return lrun_fail(LRUN_E_INTERNAL,
                     "engine %s: an earlier sequence copy or reorder failed in a later part of "
                     "the layer split, so its parts hold different caches; free the engine and make another",
                     what);
}

/* Runs op on every part; a failure after the first part changed its cache leaves the parts out of step. */
static lrun_status each_part(split_engine *s, const char *what,
                             lrun_status (*op)(const lrun_backend_iface *, void *, const void *), const void *arg)
{
    if (s->broken) return refuse_broken(s, what);
    for (int64_t i = 0; i < s->n_parts; i++) {
        const lrun_status st = op(s->b, s->parts[i].ctx, arg);
        if (st != LRUN_OK) {
            if (i > 0) s->broken = 1;
            return lrun_fail_context(st, "engine %s: layer split part %lld", what, (long long)i);
        }
    }
    return LRUN_OK;
}

struct seq_args {
    int64_t a, b;         /* truncate: seq, len; copy: dst, src */
    const int64_t *order; /* reorder: src_of_dst */
};

static lrun_status do_truncate(const lrun_backend_iface *b, void *ctx, const void *arg)
{
    const struct seq_args *x = arg;
    return b->seq_truncate(ctx, x->a, x->b);
}
static lrun_status do_copy(const lrun_backend_iface *b, void *ctx, const void *arg)
{
    const struct seq_args *x = arg;
    return b->seq_copy(ctx, x->a, x->b);
}
static lrun_status do_reorder(const lrun_backend_iface *b, void *ctx, const void *arg)
{
    const struct seq_args *x = arg;
    return b->seq_reorder(ctx, x->order, x->a);
}

static lrun_status split_seq_truncate(void *ctx, int64_t seq, int64_t len)
{
    const struct seq_args x = {seq, len, NULL};
    return each_part(ctx, "truncate", do_truncate, &x);
}
static lrun_status split_seq_copy(void *ctx, int64_t dst, int64_t src)
{
    const struct seq_args x = {dst, src, NULL};
    return each_part(ctx, "copy", do_copy, &x);
}
static lrun_status split_seq_reorder(void *ctx, const int64_t *src_of_dst, int64_t n)
{
    const struct seq_args x = {n, 0, src_of_dst};
    return each_part(ctx, "reorder", do_reorder, &x);
}

// ---------------------------------------------------------------- steps

/* Every part back to the lengths the step began with (a part that already
 * ran a chunk holds entries past them; truncating forgets those). */
static void roll_back(split_engine *s)
{
    for (int64_t i = 0; i < s->n_parts; i++)
        for (int64_t q = 0; q < s->n_seq_max; q++)
            if (s->b->seq_len(s->parts[i].ctx, q) > s->len0[q])
                (void)s->b->seq_truncate(s->parts[i].ctx, q, s->len0[q]);
}

/* A step the facade has checked: chunk by chunk, each through every part in order. */
static lrun_status split_step(void *ctx, const lrun_step_args *a)
{
    split_engine *s = ctx;
    if (s->broken) return refuse_broken(s, "step");
    for (int64_t q = 0; q < s->n_seq_max; q++) {
        s->len0[q] = s->b->seq_len(s->parts[0].ctx, q);
        s->left[q] = a->seq_count[q];
    }
    const int64_t n_vocab = s->model->info.n_vocab;
    int64_t rows_out = 0;
    for (int64_t c0 = 0; c0 < a->n_tokens; c0 += s->n_batch) {
        const int64_t n = a->n_tokens - c0 < s->n_batch ? a->n_tokens - c0 : s->n_batch;
        memset(s->chunk_count, 0, (size_t)s->n_seq_max * sizeof *s->chunk_count);
        int64_t want = 0, need = 0;
        for (int64_t i = 0; i < n; i++) {
            const int32_t q = a->seq[c0 + i];
            s->chunk_count[q]++;
            /* wanted as marked, or (no marks) the step's last token of its sequence */
            s->want[i] = (int8_t)(a->want_logits ? a->want_logits[c0 + i] != 0 : --s->left[q] == 0);
            want += s->want[i];
        }
        for (int64_t q = 0; q < s->n_seq_max; q++) {
            const int64_t len = s->b->seq_len(s->parts[0].ctx, q) + s->chunk_count[q];
            if (s->chunk_count[q] && len > need) need = len;
        }
        for (int64_t i = 0; i < s->n_parts; i++) {
            const int last = i == s->n_parts - 1;
            const lrun_step_args pa = {.n_tokens = n,
                                       .tokens = a->tokens + c0,
                                       .seq = a->seq + c0,
                                       .want_logits = s->want,
                                       .logits = last && want ? a->logits + rows_out * n_vocab : NULL,
                                       .seq_count = s->chunk_count,
                                       .n_want = want,
                                       .need = need,
                                       .hidden_in = i > 0 ? s->hidden[(i - 1) & 1] : NULL,
                                       .hidden_out = last ? NULL : s->hidden[i & 1]};
            const lrun_status st = s->b->step(s->parts[i].ctx, &pa);
            if (st != LRUN_OK) {
                roll_back(s);
                return lrun_fail_context(st, "engine step: layer split part %lld (blocks %lld-%lld)", (long long)i,
                                         (long long)s->parts[i].first,
                                         (long long)(s->parts[i].first + s->parts[i].count - 1));
            }
        }
        rows_out += want;
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- stats

/* Each part counts its own blocks under their model-wide indices: the parts' counts add up. */
static void split_host_layer_bytes(const void *ctx, uint64_t *out)
{
    const split_engine *s = ctx;
    if (!s->b->host_layer_bytes) return;
    for (int64_t i = 0; i < s->n_parts; i++) s->b->host_layer_bytes(s->parts[i].ctx, out);
}

/* The parts' counters added up; what describes the engine as a whole (the
 * model's device-resident weights, the cache's element type, the backend's
 * switches) from the first part. */
static void split_get_stats(const void *ctx, lrun_engine_stats *out)
{
    const split_engine *s = ctx;
    s->b->get_stats(s->parts[0].ctx, out);
    for (int64_t i = 1; i < s->n_parts; i++) {
        lrun_engine_stats p;
        memset(&p, 0, sizeof p);
        s->b->get_stats(s->parts[i].ctx, &p);
        out->bytes_streamed += p.bytes_streamed;
        out->kv_bytes_moved += p.kv_bytes_moved;
        out->copy_seconds += p.copy_seconds;
        out->stall_seconds += p.stall_seconds;
        out->prefetch_hits += p.prefetch_hits;
        out->prefetch_misses += p.prefetch_misses;
        out->host_compute_bytes += p.host_compute_bytes;
        out->host_compute_seconds += p.host_compute_seconds;
        out->host_wait_seconds += p.host_wait_seconds;
        out->slot_bytes += p.slot_bytes;
        out->kv_bytes += p.kv_bytes;
        out->scratch_bytes += p.scratch_bytes;
        out->kv_bytes_copied += p.kv_bytes_copied;
        out->disk_bytes_read += p.disk_bytes_read;
        out->disk_read_seconds += p.disk_read_seconds;
        out->disk_stalls += p.disk_stalls;
        out->prefill_stream_bytes += p.prefill_stream_bytes;
        out->prefill_stream_experts += p.prefill_stream_experts;
        out->prefill_slot_bytes += p.prefill_slot_bytes;
        out->prefill_slot_experts += p.prefill_slot_experts;
        out->host_stream_bytes += p.host_stream_bytes;
        out->host_stream_products += p.host_stream_products;
    }
}

static void split_reset_stats(void *ctx)
{
    split_engine *s = ctx;
    for (int64_t i = 0; i < s->n_parts; i++) s->b->reset_stats(s->parts[i].ctx);
}

/* The parts' selection tables added up: each counted only its own blocks. */
static const lrun_moe_counts *split_moe_counts(const void *ctx)
{
    split_engine *s = (split_engine *)ctx; /* the sum is refreshed when asked */
    lrun_moe_counts *c = &s->counts;
    if (!c->counts || !s->b->moe_counts) return NULL;
    lrun_moe_counts_reset(c);
    for (int64_t i = 0; i < s->n_parts; i++) {
        const lrun_moe_counts *p = s->b->moe_counts(s->parts[i].ctx);
        if (!p || !p->counts || p->n_layer != c->n_layer || p->n_expert != c->n_expert) continue;
        for (int64_t j = 0; j < c->n_layer * c->n_expert; j++) c->counts[j] += p->counts[j];
        for (int64_t l = 0; l < c->n_layer; l++) c->tokens[l] += p->tokens[l];
    }
    return c;
}

// ---------------------------------------------------------------- the table

/* No random fill, no expert cache (the CPU's parts have neither). */
const lrun_backend_iface lrun_split_backend = {
    .name = "split",
    .estimate = split_estimate,
    .size_placement = split_size_placement,
    .init = split_init,
    .free = split_free,
    .n_seq_max = split_n_seq_max,
    .n_ctx_max = split_n_ctx_max,
    .n_vocab = split_n_vocab,
    .seq_len = split_seq_len,
    .seq_truncate = split_seq_truncate,
    .seq_copy = split_seq_copy,
    .seq_reorder = split_seq_reorder,
    .seq_fill_random = NULL,
    .step = split_step,
    .get_stats = split_get_stats,
    .reset_stats = split_reset_stats,
    .moe_counts = split_moe_counts,
    .expert_cache = NULL,
    .host_layer_bytes = split_host_layer_bytes,
};
