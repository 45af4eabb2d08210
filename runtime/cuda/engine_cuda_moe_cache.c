/* engine_cuda_moe_cache.c — the expert cache on CUDA (see engine_cuda_moe_cache.h).
 *
 * Device memory: three arrays of n_slots slices, one per projection (gate,
 * up, down), slot s of projection i at base[i] + s · stride[i], stride the
 * largest cached block's slice, 256-aligned. So a block's cached experts are
 * a stacked tensor of their own, indexed by slot: the device-routed kernels
 * (lrun_k_moe_gemv) read them with the slot numbers as expert ids, and the
 * per-expert products read a slot as a slice.
 *
 * Copies run on a copy stream of their own: a miss makes the copy stream
 * wait for the slot's done event (its previous expert's kernels), copies the
 * three slices from the host tensors, records ready; compute waits for
 * ready before it reads the slot and records done after. Replacement is
 * residency/expert_cache.c's, LFU or LRU by the engine's option; a chunk's
 * slots are settled once its kernels are queued (lrun_cuda_moe_cache_release
 * after the chunk), so a chunk never evicts its own experts. */
#include <stdlib.h>
#include <string.h>

#include "core/threadpool.h"
#include "cuda/engine_cuda_moe_cache.h"
#include "cuda/engine_cuda_offload.h"
#include "residency/expert_admit.h"

/* Hybrid: pinned buffers a pageable expert is copied through (by the host,
 * then by DMA into its slot). A pageable cudaMemcpyAsync would make the host
 * wait for the copy stream (and the slot's last reader), which the decode
 * step must never do; with none free an admission waits for a later step. */
#define HYBRID_STAGES 4
/* Most admissions a block and step (LRUN_CUDA_MOE_HYBRID_CAP, default 1). */
#define HYBRID_CAP_MAX 8

struct cuda_moe_cache {
    lrun_expert_cache book;  /* slots, replacement, hits, misses, bytes */
    uint8_t *covers;         /* (n_layer) 1: the block's experts are cached */
    void *mem;               /* one device block: the three slot arrays */
    size_t mem_bytes;
    char *base[3];           /* gate, up, down slot arrays (device) */
    size_t stride[3];        /* bytes between slots of each */
    cudaStream_t copy;       /* the cache's copy stream */
    cudaEvent_t *ready;      /* (n_slots) the slot's last copy done */
    cudaEvent_t *done;       /* (n_slots) the kernels that last read it queued before this */
    int64_t k;               /* experts per token */
    int32_t *prev;           /* (n_layer, k) token 0's experts in each cached block's last decode chunk */
    uint8_t *prev_ok;        /* (n_layer) 1: prev holds that block's */
    int prefetch;            /* prefetch the next cached block's likely experts (LRUN_CUDA_MOE_PREFETCH=0: no) */
    /* hybrid (e->expert_cache_hybrid): misses on the host, admitted in the background */
    int hybrid;
    lrun_expert_admit admit; /* pending copies, the admission rule and cap */
    int8_t *src_pinned;      /* (n_layer) 1: the block's host tensors are page-locked, 0: pageable, -1: not asked */
    char *stage;             /* (HYBRID_STAGES, slot_bytes) pinned: pageable experts on their way to a slot */
    size_t slot_bytes;       /* stride[0] + stride[1] + stride[2] */
    cudaEvent_t stage_done[HYBRID_STAGES]; /* the last copy out of each staging buffer */
};

static size_t round256(size_t b) { return (b + 255) / 256 * 256; }

/* The block's three expert tensors when all are host-computed, else 0. */
static int host_experts(const lrun_cuda_engine *e, int64_t l, const struct lrun_tensor *t[3])
{
    const lrun_arch *a = e->model->arch;
    for (int i = 0; i < a->n_ops; i++) {
        if (a->ops[i].kind != LRUN_ARCH_OP_MOE_FFN_ADD) continue;
        for (int j = 0; j < 3; j++) {
            t[j] = e->model->layers[l].t[a->ops[i].w[j]];
            if (!t[j] || !lrun_cuda_offload_on_host(e, t[j]) || t[j]->packed) return 0;
        }
        return 1;
    }
    return 0;
}

static lrun_status make_events(lrun_cuda_engine *e, cudaEvent_t **out, int64_t n)
{
    *out = calloc((size_t)n, sizeof **out);
    if (!*out) return lrun_fail_oom((size_t)n * sizeof **out, 0, "expert cache: events for %lld slots", (long long)n);
    for (int64_t i = 0; i < n; i++)
        TRY(cuda_check(cudaEventCreateWithFlags(&(*out)[i], cudaEventDisableTiming), "expert cache: an event",
                       e->device));
    return LRUN_OK;
}

/* Slots: the option, or (-1) half the free budget's worth; at most one per host expert. */
static int64_t slot_count(const lrun_cuda_engine *e, size_t slot_bytes, int64_t host_experts)
{
    int64_t n = e->expert_cache_slots;
    if (n < 0) n = (int64_t)(lrun_device_free_bytes(e->device) / 2 / slot_bytes);
    return n < host_experts ? n : host_experts;
}

static lrun_status cache_init(lrun_cuda_engine *e, struct cuda_moe_cache *c)
{
    const int64_t L = e->n_layer, E = e->model->info.n_expert;
    c->k = e->model->info.n_expert_used;
    c->covers = calloc((size_t)L, 1);
    c->prev_ok = calloc((size_t)L, 1);
    c->prev = calloc((size_t)(L * c->k), sizeof *c->prev);
    if (!c->covers || !c->prev_ok || !c->prev)
        return lrun_fail_oom((size_t)(L * c->k) * 4, 0, "expert cache: %lld blocks", (long long)L);
    const char *pf = getenv("LRUN_CUDA_MOE_PREFETCH");
    c->prefetch = !(pf && strcmp(pf, "0") == 0);
    int64_t n_host = 0;
    for (int64_t l = e->layer_first; l < e->layer_end; l++) { /* a split's part: its own blocks' experts */
        const struct lrun_tensor *t[3];
        if (!host_experts(e, l, t)) continue;
        c->covers[l] = 1;
        n_host += E;
        for (int i = 0; i < 3; i++) {
            const size_t b = round256((size_t)t[i]->ne[1] * t[i]->row_bytes);
            if (b > c->stride[i]) c->stride[i] = b;
        }
    }
    const size_t slot_bytes = c->stride[0] + c->stride[1] + c->stride[2];
    const int64_t n = slot_count(e, slot_bytes, n_host);
    if (n < 1)
        return lrun_fail_oom(slot_bytes, lrun_device_free_bytes(e->device),
                             "engine on %s: the expert cache has room for no slot of %zu bytes", e->device->name,
                             slot_bytes);
    TRY(lrun_expert_cache_init(&c->book, n, L, E));
    lrun_expert_cache_set_policy(&c->book, e->expert_cache_lru ? LRUN_EXPERT_CACHE_LRU : LRUN_EXPERT_CACHE_LFU);
    c->mem_bytes = slot_bytes * (size_t)n;
    TRY(lrun_oom_phase(lrun_device_alloc(e->device, c->mem_bytes, "expert cache", &c->mem), "expert cache"));
    c->base[0] = c->mem;
    c->base[1] = c->base[0] + c->stride[0] * (size_t)n;
    c->base[2] = c->base[1] + c->stride[1] * (size_t)n;
    TRY(cuda_check(cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking), "expert cache: the copy stream",
                   e->device));
    TRY(make_events(e, &c->ready, n));
    TRY(make_events(e, &c->done, n));
    if (!e->expert_cache_hybrid) return LRUN_OK;
    /* hybrid: no prefetch (a prefetched slot would make the next block's GPU wait for PCIe) */
    c->hybrid = 1;
    c->prefetch = 0;
    const char *cv = getenv("LRUN_CUDA_MOE_HYBRID_CAP");
    int64_t cap = cv ? strtoll(cv, NULL, 10) : 1;
    if (cap < 1 || cap > HYBRID_CAP_MAX) cap = 1;
    TRY(lrun_expert_admit_init(&c->admit, &c->book, cap));
    c->src_pinned = malloc((size_t)L);
    if (!c->src_pinned) return lrun_fail_oom((size_t)L, 0, "expert cache: %lld blocks", (long long)L);
    memset(c->src_pinned, -1, (size_t)L);
    c->slot_bytes = slot_bytes;
    TRY(lrun_oom_phase(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_EXPERTS, LRUN_TIER_PINNED,
                                              HYBRID_STAGES * slot_bytes, "expert cache staging", (void **)&c->stage),
                       "expert cache"));
    for (int i = 0; i < HYBRID_STAGES; i++)
        TRY(cuda_check(cudaEventCreateWithFlags(&c->stage_done[i], cudaEventDisableTiming),
                       "expert cache: a staging event", e->device));
    return LRUN_OK;
}

lrun_status lrun_cuda_moe_cache_init(lrun_cuda_engine *e, struct cuda_moe_cache **out)
{
    *out = NULL;
    if (e->expert_cache_slots == 0 || !e->offload) return LRUN_OK;
    int any = 0;
    for (int64_t l = e->layer_first; l < e->layer_end && !any; l++) {
        const struct lrun_tensor *t[3];
        any = host_experts(e, l, t);
    }
    if (!any) return LRUN_OK;
    struct cuda_moe_cache *c = calloc(1, sizeof *c);
    if (!c) return lrun_fail_oom(sizeof *c, 0, "engine: expert cache record");
    const lrun_status st = cache_init(e, c);
    if (st != LRUN_OK) {
        lrun_cuda_moe_cache_free(e, c);
        return st;
    }
    *out = c;
    return LRUN_OK;
}

void lrun_cuda_moe_cache_free(lrun_cuda_engine *e, struct cuda_moe_cache *c)
{
    if (!c) return;
    if (c->copy) cudaStreamSynchronize(c->copy);
    for (int i = 0; i < HYBRID_STAGES; i++)
        if (c->stage_done[i]) cudaEventDestroy(c->stage_done[i]);
    if (c->stage)
        lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_EXPERTS, LRUN_TIER_PINNED, c->stage,
                                 HYBRID_STAGES * c->slot_bytes);
    lrun_expert_admit_free(&c->admit);
    free(c->src_pinned);
    for (int64_t i = 0; i < c->book.n_slots; i++) {
        if (c->ready && c->ready[i]) cudaEventDestroy(c->ready[i]);
        if (c->done && c->done[i]) cudaEventDestroy(c->done[i]);
    }
    free(c->ready);
    free(c->done);
    if (c->copy) cudaStreamDestroy(c->copy);
    if (c->mem) lrun_device_release(e->device, c->mem, c->mem_bytes);
    lrun_expert_cache_free(&c->book);
    free(c->covers);
    free(c->prev);
    free(c->prev_ok);
    free(c);
}

int lrun_cuda_moe_cache_covers(const struct cuda_moe_cache *c, int64_t layer)
{
    return c && layer >= 0 && layer < c->book.n_layer && c->covers[layer];
}

int64_t lrun_cuda_moe_cache_slots(const struct cuda_moe_cache *c) { return c ? c->book.n_slots : 0; }

const void *lrun_cuda_moe_cache_data(const struct cuda_moe_cache *c, int i, int64_t slot)
{
    return c->base[i] + (size_t)slot * c->stride[i];
}

size_t lrun_cuda_moe_cache_stride(const struct cuda_moe_cache *c, int i) { return c->stride[i]; }

lrun_expert_cache *lrun_cuda_moe_cache_book(struct cuda_moe_cache *c) { return c ? &c->book : NULL; }

/* Expert x of the stacked host tensors t into slot s on the copy stream, once the slot's last reader ran. */
static lrun_status copy_in(lrun_cuda_engine *e, struct cuda_moe_cache *c, const struct lrun_tensor *const t[3],
                           int64_t x, int64_t s)
{
    TRY(cuda_check(cudaStreamWaitEvent(c->copy, c->done[s], 0), "expert cache: waiting for a slot", e->device));
    for (int i = 0; i < 3; i++) {
        const size_t bytes = (size_t)t[i]->ne[1] * t[i]->row_bytes;
        const char *src = (const char *)t[i]->data + (size_t)x * bytes; /* the host tensor */
        TRY(cuda_check(cudaMemcpyAsync(c->base[i] + (size_t)s * c->stride[i], src, bytes, cudaMemcpyHostToDevice,
                                       c->copy),
                       "expert cache: copying an expert in", e->device));
        lrun_expert_cache_copied(&c->book, t[i]->layer, bytes);
    }
    return cuda_check(cudaEventRecord(c->ready[s], c->copy), "expert cache: recording a copy", e->device);
}

lrun_status lrun_cuda_moe_cache_acquire(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t layer,
                                        const lrun_weight_ref g[3], int64_t x, int64_t *slot)
{
    const int hit = lrun_expert_cache_acquire(&c->book, layer, x, slot);
    if (hit < 0)
        return lrun_fail(LRUN_E_INTERNAL, "engine on %s: expert cache asked for expert %lld of block %lld",
                         e->device->name, (long long)x, (long long)layer);
    const int64_t s = *slot;
    if (!hit) {
        const struct lrun_tensor *const t[3] = {g[0].w, g[1].w, g[2].w};
        TRY(copy_in(e, c, t, x, s));
    }
    return cuda_check(cudaStreamWaitEvent((cudaStream_t)e->stream, c->ready[s], 0), "expert cache: waiting for a copy",
                      e->device);
}

int64_t lrun_cuda_moe_cache_find(const struct cuda_moe_cache *c, int64_t layer, int64_t x)
{
    const lrun_expert_cache *b = &c->book;
    if (layer < 0 || layer >= b->n_layer || x < 0 || x >= b->n_expert) return -1;
    return b->slot_of[layer * b->n_expert + x];
}

lrun_status lrun_cuda_moe_cache_read(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t slot)
{
    return cuda_check(cudaStreamWaitEvent((cudaStream_t)e->stream, c->ready[slot], 0),
                      "expert cache: waiting for a slot's copy", e->device);
}

/* The next cached block after layer (the first one, for the next step, after the last). */
static int64_t next_covered(const struct cuda_moe_cache *c, int64_t layer)
{
    const int64_t L = c->book.n_layer;
    for (int64_t d = 1; d <= L; d++)
        if (c->covers[(layer + d) % L]) return (layer + d) % L;
    return layer;
}

void lrun_cuda_moe_cache_settle(struct cuda_moe_cache *c) { lrun_expert_cache_settle(&c->book); }

lrun_status lrun_cuda_moe_cache_decoded(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t layer,
                                        const int32_t *ids)
{
    memcpy(c->prev + layer * c->k, ids, (size_t)c->k * sizeof *ids);
    c->prev_ok[layer] = 1;
    const int64_t next = next_covered(c, layer);
    /* too few slots for two blocks' choices: a prefetch would evict what the next acquires need */
    if (!c->prefetch || next == layer || !c->prev_ok[next] || c->book.n_slots < 2 * c->k) return LRUN_OK;
    const struct lrun_tensor *t[3];
    if (!host_experts(e, next, t)) return LRUN_OK;
    for (int64_t j = 0; j < c->k; j++) {
        int64_t s;
        const int took = lrun_expert_cache_prefetch(&c->book, next, c->prev[next * c->k + j], &s);
        if (took < 0)
            return lrun_fail(LRUN_E_INTERNAL, "engine on %s: expert cache prefetch of expert %d of block %lld",
                             e->device->name, c->prev[next * c->k + j], (long long)next);
        if (took) TRY(copy_in(e, c, t, c->prev[next * c->k + j], s));
    }
    return LRUN_OK;
}

lrun_status lrun_cuda_moe_cache_release(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t slot)
{
    return cuda_check(cudaEventRecord(c->done[slot], (cudaStream_t)e->stream), "expert cache: releasing a slot",
                      e->device);
}

/* ---------------------------------------------------------------- hybrid */

int lrun_cuda_moe_cache_hybrid(const struct cuda_moe_cache *c) { return c && c->hybrid; }

/* Whether event ev has completed, without waiting. cudaErrorNotReady is
 * cleared from the runtime's last error (as PyTorch's stream query does), so
 * the next launch's check (cudaGetLastError) does not report it; launches are
 * checked as they are made, so no other error is pending here. */
static int event_done(cudaEvent_t ev)
{
    const cudaError_t r = cudaEventQuery(ev);
    if (r == cudaErrorNotReady) (void)cudaGetLastError();
    return r == cudaSuccess;
}

/* Whether the last copy into slot s has completed (expert_admit's ready(): never waits). */
static int slot_ready(void *ctx, int64_t s)
{
    const struct cuda_moe_cache *c = ctx;
    return event_done(c->ready[s]);
}

lrun_status lrun_cuda_moe_cache_lookup(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t layer, int64_t x,
                                       int64_t *slot)
{
    if (lrun_expert_admit_lookup(&c->admit, &c->book, layer, x, slot_ready, c, slot) < 0)
        return lrun_fail(LRUN_E_INTERNAL, "engine on %s: hybrid expert cache asked for expert %lld of block %lld",
                         e->device->name, (long long)x, (long long)layer);
    return LRUN_OK;
}

/* Whether block layer's host expert tensors are page-locked (asked once a block). */
static int src_pinned(struct cuda_moe_cache *c, int64_t layer, const lrun_weight_ref g[3])
{
    if (c->src_pinned[layer] < 0) {
        int pinned = 1;
        for (int i = 0; i < 3; i++) {
            struct cudaPointerAttributes a;
            if (cudaPointerGetAttributes(&a, g[i].data) != cudaSuccess || a.type != cudaMemoryTypeHost) pinned = 0;
        }
        cudaGetLastError(); /* an unregistered pointer's answer is not an error of the engine */
        c->src_pinned[layer] = (int8_t)pinned;
    }
    return c->src_pinned[layer];
}

/* Expert x of block layer (its host tensors g) into slot s on the copy stream,
 * after the slot's last reader: directly from page-locked tensors, else
 * copied by the host's threads into staging buffer b first (on the decode
 * thread's time: about a slot's bytes at the host's copy rate, once an
 * admission). */
static lrun_status admit_copy(lrun_cuda_engine *e, struct cuda_moe_cache *c, const lrun_weight_ref g[3], int64_t x,
                              int64_t s, int b)
{
    TRY(cuda_check(cudaStreamWaitEvent(c->copy, c->done[s], 0), "expert cache: waiting for a slot", e->device));
    char *stage = b >= 0 ? c->stage + (size_t)b * c->slot_bytes : NULL;
    lrun_cuda_host_compute hc;
    struct lrun_threadpool *pool = lrun_cuda_offload_host_compute(e, &hc) ? hc.pool : NULL;
    for (int i = 0; i < 3; i++) {
        const size_t bytes = (size_t)g[i].w->ne[1] * g[i].w->row_bytes;
        const char *src = (const char *)g[i].data + (size_t)x * bytes;
        if (stage) {
            if (pool) lrun_threadpool_memcpy(pool, stage, src, bytes);
            else memcpy(stage, src, bytes);
            src = stage;
            stage += c->stride[i];
        }
        TRY(cuda_check(cudaMemcpyAsync(c->base[i] + (size_t)s * c->stride[i], src, bytes, cudaMemcpyHostToDevice,
                                       c->copy),
                       "expert cache: admitting an expert", e->device));
        lrun_expert_cache_copied(&c->book, g[i].w->layer, bytes);
    }
    if (b >= 0)
        TRY(cuda_check(cudaEventRecord(c->stage_done[b], c->copy), "expert cache: recording a staging copy",
                       e->device));
    return cuda_check(cudaEventRecord(c->ready[s], c->copy), "expert cache: recording an admission", e->device);
}

lrun_status lrun_cuda_moe_cache_admit(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t layer,
                                      const lrun_weight_ref g[3], const int32_t *missed, int64_t n_missed)
{
    if (n_missed == 0) return LRUN_OK;
    lrun_expert_admit_poll(&c->admit, slot_ready, c); /* completed copies may be victims again */
    const int pinned = src_pinned(c, layer, g);
    int free_b[HYBRID_STAGES], n_free = 0;
    if (!pinned)
        for (int i = 0; i < HYBRID_STAGES; i++)
            if (event_done(c->stage_done[i])) free_b[n_free++] = i;
    int64_t xs[HYBRID_CAP_MAX], slots[HYBRID_CAP_MAX];
    const int64_t n = lrun_expert_admit_choose(&c->admit, &c->book, layer, missed, n_missed,
                                               pinned ? HYBRID_CAP_MAX : n_free, xs, slots);
    if (n < 0)
        return lrun_fail(LRUN_E_INTERNAL, "engine on %s: hybrid expert cache admission in block %lld",
                         e->device->name, (long long)layer);
    for (int64_t i = 0; i < n; i++) TRY(admit_copy(e, c, g, xs[i], slots[i], pinned ? -1 : free_b[i]));
    return LRUN_OK;
}
