/* engine_cuda_moe_stream.c — prefill over host experts, streamed (see
 * engine_cuda_moe_stream.h and docs/moe.md "Prefill: streaming host
 * experts").
 *
 * A prefill chunk of many tokens touches most of a block's experts; each
 * host expert's products on the CPU cost its tokens' flops there, while a
 * copy of its three slices costs bytes / PCIe and its products on the GPU
 * next to nothing. So the chunk's streamed experts (residency/expert_stream.h
 * chooses them and cuts them into groups) are copied into two device
 * staging buffers in turn, on a copy stream of this file's own:
 *
 *   copy stream     wait done[b] · copies of group g into buffer b · ready[b]
 *   compute stream  wait ready[b] · group g's experts (lrun_cuda_moe_expert_rows) · done[b]
 *
 * with b = g % 2: group g+1's copies run while group g computes, and a
 * buffer is refilled only once the products that read it have run. The
 * host issues group g+1's copies after it queued group g's products, so
 * when the bytes pass through the pinned bounce buffers (below) its memcpy
 * runs while the GPU computes.
 *
 * Sources: a pinned expert tensor (LRUN_TIER_PINNED) goes straight by DMA,
 * one copy per run of consecutive experts and projection. Host or mmap
 * memory is pageable: a DMA from it is staged by the driver at a fraction of
 * the link rate (7.6 GB/s measured on the H100 machine, docs/residency.md),
 * so its bytes are first copied by the model's threads into one of two pinned
 * bounce buffers laid out as the device buffers, then sent with one DMA per
 * projection; the host waits for that buffer's previous DMA before it
 * writes it. Experts of the disk tier or packed are not streamed.
 *
 * Experts already in the expert cache's slots (a cached or hybrid block,
 * engine_cuda_moe_cache.c) are not streamed: they run from their slots, the
 * compute stream waiting for the slot's last copy and recording its done
 * event after (so a decode step's later copy into that slot waits for these
 * products). They run just before the streamed expert above them, so that
 * with every expert streamed or held the products add in ascending expert
 * order: the resident block's bits. The slots are only read: no use is
 * counted, nothing admitted or evicted. On by default since it passed the
 * GPU specs (session 16; its first run had added some held experts twice);
 * LRUN_CUDA_MOE_PREFILL_SLOTS=0 streams slot-held experts too, as before.
 *
 * Staging memory: both device buffers from the device pool at init, each
 * of group_max experts (8, LRUN_CUDA_MOE_STREAM_GROUP, fewer when half the
 * free device memory does not hold both), per projection group_max
 * places of the largest covered block's slice, 256-aligned: when a slice is
 * a multiple of 256 bytes (Q4_K 2048x768: 884736) a run of consecutive
 * experts is contiguous in the stacked tensor and in the buffer alike. */
#include "cuda/engine_cuda_moe_stream.h"

#include <stdlib.h>
#include <string.h>

#include "core/threadpool.h"
#include "cuda/engine_cuda_moe_cache.h"
#include "cuda/engine_cuda_offload.h"
#include "residency/expert_stream.h"

#define NB LRUN_EXPERT_STREAM_BUFFERS
#define DEFAULT_GROUP 8
#define DEFAULT_TOKENS 16

struct cuda_moe_stream {
    lrun_moe_prefill_stream mode; /* ON or AUTO */
    int64_t *min_tokens;          /* (n_layer) AUTO: an expert of block l streams from min_tokens[l] tokens */
    int64_t group_max;            /* experts per group = places per projection in a buffer */
    uint8_t *covers;              /* (n_layer) 1: the block's prefill streams its experts */
    size_t stride[3];             /* bytes per place of gate, up, down: the largest slice, 256-aligned */
    size_t off[3];                /* byte offset of each projection's places in a buffer */
    size_t buf_bytes;             /* one buffer: group_max · (stride[0] + stride[1] + stride[2]) */
    char *dev;                    /* (NB, buf_bytes) device staging */
    char *pin;                    /* (NB, buf_bytes) pinned bounce for pageable sources, or NULL */
    cudaStream_t copy;            /* this file's copy stream */
    cudaEvent_t ready[NB];        /* buffer b's last copies landed (and its bounce is free again) */
    cudaEvent_t done[NB];         /* the products that last read buffer b were queued before this */
    int32_t *sel;                 /* (n_expert) the chunk's streamed experts, ascending */
    int from_slots;               /* 1: experts in the expert cache's slots run from there (not streamed) */
    int64_t *held;                /* (n_expert) a cached block's chunk: each expert's slot, or -1 */
    int32_t *hsel;                /* (n_expert) the held experts run before one streamed expert */
    lrun_expert_run *runs;        /* (group_max) a group's copies */
    lrun_threadpool *pool;        /* the model's threads: the bounce memcpy */
};

static size_t round256(size_t b) { return (b + 255) / 256 * 256; }

lrun_moe_prefill_stream lrun_cuda_moe_stream_mode(const lrun_cuda_engine *e)
{
    if (e->moe_prefill_stream != LRUN_MOE_PREFILL_STREAM_DEFAULT) return e->moe_prefill_stream;
    const char *v = getenv("LRUN_CUDA_MOE_PREFILL_STREAM");
    if (v && strcmp(v, "on") == 0) return LRUN_MOE_PREFILL_STREAM_ON;
    if (v && strcmp(v, "off") == 0) return LRUN_MOE_PREFILL_STREAM_OFF;
    /* auto by default: on the H200 (session 7) its specs passed and a 4096-token chunk over host
     * experts ran 19275 tok/s against 1276 computed on the host (docs/moe.md) */
    return LRUN_MOE_PREFILL_STREAM_AUTO;
}

/* The block's three expert tensors when all are host-computed, plain and in memory (not the disk tier). */
static int streamable(const lrun_cuda_engine *e, int64_t l, const struct lrun_tensor *t[3])
{
    const lrun_arch *a = e->model->arch;
    for (int i = 0; i < a->n_ops; i++) {
        if (a->ops[i].kind != LRUN_ARCH_OP_MOE_FFN_ADD) continue;
        for (int j = 0; j < 3; j++) {
            t[j] = e->model->layers[l].t[a->ops[i].w[j]];
            if (!t[j] || !lrun_cuda_offload_on_host(e, t[j]) || t[j]->packed || t[j]->tier == LRUN_TIER_DISK ||
                !t[j]->data)
                return 0;
        }
        return 1;
    }
    return 0;
}

/* Experts per group: the option's or 8, at most n_expert, fewer until both
 * buffers take at most half the free memory (the planner kept their bytes
 * out of the expert cache's room: lrun.expert_plan.stream_staging_bytes). */
static int64_t group_size(const lrun_cuda_engine *e, size_t slot_bytes, int64_t n_expert)
{
    const char *v = getenv("LRUN_CUDA_MOE_STREAM_GROUP");
    int64_t g = v && atoll(v) > 0 ? atoll(v) : DEFAULT_GROUP;
    if (g > n_expert) g = n_expert;
    const size_t room = lrun_device_free_bytes(e->device) / 2;
    while (g > 0 && (size_t)g * slot_bytes * NB > room) g--;
    return g;
}

/* Strides and covered blocks; 0 when no block streams. */
static int plan_blocks(lrun_cuda_engine *e, struct cuda_moe_stream *s, int *any_pageable)
{
    int any = 0;
    for (int64_t l = e->layer_first; l < e->layer_end; l++) { /* a split's part: its own blocks */
        const struct lrun_tensor *t[3];
        if (!streamable(e, l, t)) continue;
        s->covers[l] = 1;
        any = 1;
        for (int i = 0; i < 3; i++) {
            const size_t b = round256((size_t)t[i]->ne[1] * t[i]->row_bytes);
            if (b > s->stride[i]) s->stride[i] = b;
            *any_pageable |= t[i]->tier != LRUN_TIER_PINNED;
        }
    }
    return any;
}

static lrun_status stream_init(lrun_cuda_engine *e, struct cuda_moe_stream *s)
{
    const int64_t E = e->model->info.n_expert;
    s->covers = calloc((size_t)e->n_layer, 1);
    s->sel = malloc((size_t)E * sizeof *s->sel);
    s->min_tokens = malloc((size_t)e->n_layer * sizeof *s->min_tokens);
    s->held = malloc((size_t)E * sizeof *s->held);
    s->hsel = malloc((size_t)E * sizeof *s->hsel);
    if (!s->covers || !s->sel || !s->min_tokens || !s->held || !s->hsel)
        return lrun_fail_oom((size_t)E * 16, 0, "expert streaming: tables of %lld experts", (long long)E);
    /* on unless LRUN_CUDA_MOE_PREFILL_SLOTS=0 (then slot-held experts stream too): docs/moe.md */
    const char *fs = getenv("LRUN_CUDA_MOE_PREFILL_SLOTS");
    s->from_slots = !(fs && strcmp(fs, "0") == 0);
    const int64_t all = e->moe_prefill_stream_tokens > 0 ? e->moe_prefill_stream_tokens : DEFAULT_TOKENS;
    const int64_t *per = e->moe_prefill_stream_block_tokens; /* the caller's, valid during init: copied */
    for (int64_t l = 0; l < e->n_layer; l++) s->min_tokens[l] = per && per[l] > 0 ? per[l] : all;
    int pageable = 0;
    if (!plan_blocks(e, s, &pageable)) return LRUN_OK;
    const size_t slot = s->stride[0] + s->stride[1] + s->stride[2];
    s->group_max = group_size(e, slot, E);
    if (s->group_max < 1) {
        memset(s->covers, 0, (size_t)e->n_layer); /* no room: the host computes them, as with OFF */
        return LRUN_OK;
    }
    s->off[1] = (size_t)s->group_max * s->stride[0];
    s->off[2] = s->off[1] + (size_t)s->group_max * s->stride[1];
    s->buf_bytes = (size_t)s->group_max * slot;
    s->runs = malloc((size_t)s->group_max * sizeof *s->runs);
    if (!s->runs) return lrun_fail_oom((size_t)s->group_max * sizeof *s->runs, 0, "expert streaming: copy records");
    TRY(lrun_oom_phase(lrun_device_alloc(e->device, NB * s->buf_bytes, "expert prefill staging", (void **)&s->dev),
                       "expert staging"));
    if (pageable)
        TRY(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SLOTS, LRUN_TIER_PINNED, NB * s->buf_bytes,
                                   "expert prefill bounce", (void **)&s->pin));
    TRY(cuda_check(cudaStreamCreateWithFlags(&s->copy, cudaStreamNonBlocking), "expert streaming: the copy stream",
                   e->device));
    for (int b = 0; b < NB; b++) {
        TRY(cuda_check(cudaEventCreateWithFlags(&s->ready[b], cudaEventDisableTiming), "expert streaming: an event",
                       e->device));
        TRY(cuda_check(cudaEventCreateWithFlags(&s->done[b], cudaEventDisableTiming), "expert streaming: an event",
                       e->device));
    }
    s->pool = lrun_model_threadpool(e->model);
    return LRUN_OK;
}

lrun_status lrun_cuda_moe_stream_init(lrun_cuda_engine *e, struct cuda_moe_stream **out)
{
    *out = NULL;
    const lrun_moe_prefill_stream mode = lrun_cuda_moe_stream_mode(e);
    if (mode == LRUN_MOE_PREFILL_STREAM_OFF || !e->offload || e->model->info.n_expert == 0) return LRUN_OK;
    struct cuda_moe_stream *s = calloc(1, sizeof *s);
    if (!s) return lrun_fail_oom(sizeof *s, 0, "engine: expert streaming record");
    s->mode = mode;
    const lrun_status st = stream_init(e, s);
    if (st != LRUN_OK || !s->dev) {
        lrun_cuda_moe_stream_free(e, s);
        return st;
    }
    *out = s;
    return LRUN_OK;
}

void lrun_cuda_moe_stream_free(lrun_cuda_engine *e, struct cuda_moe_stream *s)
{
    if (!s) return;
    if (s->copy) {
        (void)cudaStreamSynchronize(s->copy);
        cudaStreamDestroy(s->copy);
    }
    for (int b = 0; b < NB; b++) {
        if (s->ready[b]) cudaEventDestroy(s->ready[b]);
        if (s->done[b]) cudaEventDestroy(s->done[b]);
    }
    (void)cudaGetLastError();
    if (s->dev) lrun_device_release(e->device, s->dev, NB * s->buf_bytes);
    lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SLOTS, LRUN_TIER_PINNED, s->pin, NB * s->buf_bytes);
    free(s->covers);
    free(s->min_tokens);
    free(s->sel);
    free(s->held);
    free(s->hsel);
    free(s->runs);
    free(s);
}

int lrun_cuda_moe_stream_covers(const struct cuda_moe_stream *s, int64_t layer)
{
    return s && s->dev && layer >= 0 && s->covers[layer];
}

/* Place `place` of projection p in buffer b of base (the device buffers or the bounce). */
static char *place_at(const struct cuda_moe_stream *s, char *base, int b, int p, int64_t place)
{
    return base + (size_t)b * s->buf_bytes + s->off[p] + (size_t)place * s->stride[p];
}

/* Run r's slices of projection p (slice bytes each) from src into base's places; one copy when the places are as dense as the tensor. */
static lrun_status copy_run(lrun_cuda_engine *e, struct cuda_moe_stream *s, char *base, int b, int p,
                            const lrun_expert_run *r, const char *src, size_t slice)
{
    const int dense = s->stride[p] == slice;
    for (int32_t j = 0; j < r->len; j += dense ? r->len : 1) {
        const size_t bytes = dense ? (size_t)r->len * slice : slice;
        char *dst = place_at(s, base, b, p, r->slot0 + j);
        const char *from = src + (size_t)(r->x0 + j) * slice;
        if (base == s->pin) {
            lrun_threadpool_memcpy(s->pool, dst, from, bytes);
        } else {
            TRY(cuda_check(cudaMemcpyAsync(dst, from, bytes, cudaMemcpyHostToDevice, s->copy),
                           "streaming a pinned expert", e->device));
        }
    }
    return LRUN_OK;
}

/* Group gi's copies into buffer gi % 2, once the products that last read it ran. */
static lrun_status issue(lrun_cuda_engine *e, struct cuda_moe_stream *s, const lrun_weight_ref g[3], int64_t gi,
                         int64_t ns)
{
    const int b = lrun_expert_stream_buffer(gi);
    const int64_t a = gi * s->group_max, end = a + s->group_max < ns ? a + s->group_max : ns;
    const int64_t nr = lrun_expert_stream_runs(s->sel, a, end, s->runs);
    TRY(cuda_check(cudaStreamWaitEvent(s->copy, s->done[b], 0), "expert streaming: waiting for a buffer", e->device));
    int bounced = 0;
    for (int p = 0; p < 3; p++) {
        const struct lrun_tensor *t = g[p].w;
        const size_t slice = (size_t)t->ne[1] * t->row_bytes;
        const int pinned = t->tier == LRUN_TIER_PINNED;
        if (!pinned && !bounced) { /* the bounce buffer's last DMA has finished before it is written */
            TRY(cuda_check(cudaEventSynchronize(s->ready[b]), "expert streaming: waiting for a bounce buffer",
                           e->device));
            bounced = 1;
        }
        for (int64_t i = 0; i < nr; i++)
            TRY(copy_run(e, s, pinned ? s->dev : s->pin, b, p, &s->runs[i], g[p].data, slice));
        if (!pinned)
            TRY(cuda_check(cudaMemcpyAsync(place_at(s, s->dev, b, p, 0), place_at(s, s->pin, b, p, 0),
                                           (size_t)(end - a) * s->stride[p], cudaMemcpyHostToDevice, s->copy),
                           "streaming bounced experts", e->device));
        e->stats.prefill_stream_bytes += (uint64_t)(end - a) * slice;
    }
    e->stats.prefill_stream_experts += end - a;
    return cuda_check(cudaEventRecord(s->ready[b], s->copy), "expert streaming: recording copies", e->device);
}

/* What a group's walk (residency/expert_stream.h) runs, on the compute stream. */
struct walk_ctx {
    lrun_cuda_engine *e;
    struct cuda_moe_stream *s;
    struct cuda_moe_cache *c;
    const lrun_weight_ref *g;
    int64_t layer, a;
    int b;
    const int64_t *first, *held;
    lrun_status st; /* the first failure (the walk stops at it) */
};

/* A held expert from its slot: the compute stream waits for the slot's last
 * copy, runs the products, and releases the slot (its done event) so no
 * later copy overwrites it first. */
static int walk_held(void *ctx, int64_t x)
{
    struct walk_ctx *w = ctx;
    lrun_cuda_engine *e = w->e;
    const int64_t slot = w->held[x];
    const void *const data[3] = {lrun_cuda_moe_cache_data(w->c, 0, slot), lrun_cuda_moe_cache_data(w->c, 1, slot),
                                 lrun_cuda_moe_cache_data(w->c, 2, slot)};
    if ((w->st = lrun_cuda_moe_cache_read(e, w->c, slot)) != LRUN_OK ||
        (w->st = lrun_cuda_moe_expert_rows(e, w->g, w->layer, x, w->first[x], w->first[x + 1] - w->first[x], data)) !=
            LRUN_OK ||
        (w->st = lrun_cuda_moe_cache_release(e, w->c, slot)) != LRUN_OK)
        return 1;
    for (int p = 0; p < 3; p++) e->stats.prefill_slot_bytes += (uint64_t)w->g[p].w->ne[1] * w->g[p].w->row_bytes;
    e->stats.prefill_slot_experts++;
    return 0;
}

static int walk_wait(void *ctx)
{
    struct walk_ctx *w = ctx;
    w->st = cuda_check(cudaStreamWaitEvent((cudaStream_t)w->e->stream, w->s->ready[w->b], 0),
                       "expert streaming: waiting for copies", w->e->device);
    return w->st != LRUN_OK;
}

static int walk_streamed(void *ctx, int64_t i, int64_t x)
{
    struct walk_ctx *w = ctx;
    struct cuda_moe_stream *s = w->s;
    const void *const data[3] = {place_at(s, s->dev, w->b, 0, i - w->a), place_at(s, s->dev, w->b, 1, i - w->a),
                                 place_at(s, s->dev, w->b, 2, i - w->a)};
    w->st = lrun_cuda_moe_expert_rows(w->e, w->g, w->layer, x, w->first[x], w->first[x + 1] - w->first[x], data);
    return w->st != LRUN_OK;
}

static const lrun_expert_stream_walk walk_cb = {walk_held, walk_wait, walk_streamed};

/* The held experts in [*from, n_expert) after the last group (or all of them when nothing streams). */
static lrun_status run_held_rest(struct walk_ctx *w, int64_t *from, int64_t n_expert)
{
    const int64_t nh = lrun_expert_stream_held(w->first, w->held, *from, n_expert, w->s->hsel);
    for (int64_t j = 0; j < nh; j++)
        if (walk_held(w, w->s->hsel[j])) return w->st;
    *from = n_expert;
    return LRUN_OK;
}

/* Group gi's experts from buffer gi % 2, after its copies, with the held
 * experts among them (lrun_expert_stream_walk_group: ascending, each once);
 * done[b] after their products. */
static lrun_status compute_group(struct walk_ctx *w, int64_t gi, int64_t ns, int64_t *from)
{
    struct cuda_moe_stream *s = w->s;
    w->b = lrun_expert_stream_buffer(gi);
    w->a = gi * s->group_max;
    const int64_t end = w->a + s->group_max < ns ? w->a + s->group_max : ns;
    w->st = LRUN_OK;
    if (lrun_expert_stream_walk_group(w->first, w->held, s->sel, w->a, end, from, s->hsel, &walk_cb, w)) return w->st;
    return cuda_check(cudaEventRecord(s->done[w->b], (cudaStream_t)w->e->stream),
                      "expert streaming: releasing a buffer", w->e->device);
}

/* A cached block's chunk: each expert's slot (-1: none) in s->held, or NULL
 * when the block has no cache (or with LRUN_CUDA_MOE_PREFILL_SLOTS=0). */
static const int64_t *held_slots(struct cuda_moe_stream *s, const struct cuda_moe_cache *c, int64_t layer,
                                 int64_t n_expert)
{
    if (!s->from_slots || !lrun_cuda_moe_cache_covers(c, layer)) return NULL;
    for (int64_t x = 0; x < n_expert; x++) s->held[x] = lrun_cuda_moe_cache_find(c, layer, x);
    return s->held;
}

lrun_status lrun_cuda_moe_stream_run(lrun_cuda_engine *e, struct cuda_moe_stream *s, const lrun_weight_ref g[3],
                                     int64_t layer, const int64_t *first, int64_t n_expert, struct cuda_moe_cache *c)
{
    const int64_t min_tokens = s->mode == LRUN_MOE_PREFILL_STREAM_ON ? 1 : s->min_tokens[layer];
    const int64_t *held = held_slots(s, c, layer, n_expert);
    const int64_t ns = lrun_expert_stream_select(first, n_expert, min_tokens, held, s->sel);
    const int64_t ng = lrun_expert_stream_groups(ns, s->group_max);
    if (ng > 0) TRY(issue(e, s, g, 0, ns));
    /* the experts left to the host first: each of their products synchronizes
     * the compute stream, while the first group's copies run */
    for (int64_t x = 0, j = 0; x < n_expert; x++) {
        const int64_t cnt = first[x + 1] - first[x];
        if (j < ns && s->sel[j] == x) {
            j++;
            continue;
        }
        if (cnt > 0 && !(held && held[x] >= 0)) TRY(lrun_cuda_moe_expert_rows(e, g, layer, x, first[x], cnt, NULL));
    }
    struct walk_ctx w = {.e = e, .s = s, .c = c, .g = g, .layer = layer, .first = first, .held = held};
    int64_t from = 0;
    for (int64_t gi = 0; gi < ng; gi++) {
        TRY(compute_group(&w, gi, ns, &from));
        if (gi + 1 < ng) TRY(issue(e, s, g, gi + 1, ns));
    }
    return run_held_rest(&w, &from, n_expert);
}
