/* engine_cuda_kv.c — the KV cache of the CUDA engine, in all five kinds
 * (docs/kv-cache.md "On the GPU").
 *
 * Every form keeps one layout: per (layer, keys|values) a plane of n_seq
 * sequences of cap positions, sequence s's position p at element
 * (s·cap + p)·kv_dim. The step table's row offsets and bases are therefore
 * the same whatever the kind, and a kernel that writes or reads the cache
 * needs only the plane pointers of its layer:
 *
 *   DYNAMIC, STATIC   the store is device memory; attention reads it in place
 *                     (STATIC: cap = n_ctx_max at init, decode in CUDA graphs)
 *   OFFLOADED(_STATIC) the store is pinned host memory with the same planes;
 *                     two device slots hold a layer each. A side stream fills
 *                     layer l+2 into a slot as soon as layer l has finished with
 *                     it (a staging ring, residency/ring.h: a PASS per chunk,
 *                     QUEUED with ahead = 2); the chunk's new rows go back to
 *                     the host store from a kernel writing through the pinned
 *                     mapping
 *   QUANTIZED         the store is device records of int8/int4 codes with per
 *                     group (scale, min) floats, plus a ring of the last
 *                     `residual` positions exact; slots are filled by
 *                     dequantizing on the side stream, and new rows are
 *                     quantized (and kept exact in the ring) as they are written.
 *                     Decode chunks (n <= GEMV_MAX_ROWS) skip the slots: their
 *                     new rows go to codes and ring first, and the attention
 *                     reads codes and ring itself (lrun_k_attention_quant)
 *
 * so device KV memory of the offloaded kinds is two layers' worth. A layer
 * split's part (engine_split.c) holds the layers of its own blocks only:
 * every count here is lrun_cuda_blocks, and the three per-layer entries
 * take the model's block and subtract layer_first. Staged
 * steps run eagerly (no CUDA graph): their copies follow the sequences'
 * lengths, which change every step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/format_bytes.h"
#include "cuda/engine_cuda_internal.h"
#include "kernels.h"
#include "residency/ring.h"

#define QUANT_DEFAULT_BITS 8
#define QUANT_DEFAULT_GROUP 64
#define QUANT_DEFAULT_RESIDUAL 128 /* HF QuantizedCacheConfig.residual_length */
/* The ring holds residual + GEMV_MAX_ROWS rows, so that during a decode
 * chunk the last `residual` positions before it and its own new ones are all
 * in it: the fused attention reads them there, and the slot path still
 * reads [q_lo, stored) as before. */
#define QUANT_RING_EXTRA GEMV_MAX_ROWS

// ---------------------------------------------------------------- sizes

static size_t row_bytes(const lrun_cuda_engine *e) { return (size_t)e->kv_dim * e->kv_esize; }

/* Bytes one position takes in the store: an element row, or a quantized record. */
static size_t store_pos_bytes(const lrun_cuda_engine *e)
{
    return e->kv.quantized ? e->kv.q.pos_bytes : row_bytes(e);
}

/* Bytes of planes planes of (n_seq, cap) positions of pos_bytes each. */
static int planes_size(const lrun_cuda_engine *e, int64_t planes, int64_t cap, size_t pos_bytes, size_t *out)
{
    size_t n;
    return lrun_size_mul((size_t)planes, (size_t)e->n_seq_max, &n) && lrun_size_mul(n, (size_t)cap, &n) &&
           lrun_size_mul(n, pos_bytes, out);
}

size_t lrun_cuda_kv_plane_bytes(const lrun_cuda_engine *e)
{
    return (size_t)e->n_seq_max * (size_t)e->kv.cap * row_bytes(e);
}

/* The device bytes a cache of cap positions per sequence takes: the store
 * when it is on the device, the two slots when staged, the ring. */
static int device_size(const lrun_cuda_engine *e, int64_t cap, size_t *out)
{
    size_t store = 0, slots = 0, ring = 0;
    const struct cuda_kv *kv = &e->kv;
    if (!kv->on_host && !planes_size(e, 2 * lrun_cuda_blocks(e), cap, store_pos_bytes(e), &store)) return 0;
    if (kv->staged && !planes_size(e, 4, cap, row_bytes(e), &slots)) return 0;
    if (kv->quantized && !planes_size(e, 2 * lrun_cuda_blocks(e), kv->q.ring_rows, row_bytes(e), &ring)) return 0;
    return lrun_size_add(store, slots, out) && lrun_size_add(*out, ring, out);
}

lrun_status lrun_cuda_kv_setup(lrun_cuda_engine *e, const lrun_engine_opts *opts)
{
    struct cuda_kv *kv = &e->kv;
    const lrun_cache_kind k = opts->cache_kind;
    kv->on_host = k == LRUN_CACHE_KIND_OFFLOADED || k == LRUN_CACHE_KIND_OFFLOADED_STATIC;
    kv->quantized = k == LRUN_CACHE_KIND_QUANTIZED;
    kv->staged = kv->on_host || kv->quantized;
    kv->preallocated = k == LRUN_CACHE_KIND_STATIC || k == LRUN_CACHE_KIND_OFFLOADED_STATIC;
    if (!kv->quantized) return LRUN_OK;
    const int64_t head_dim = e->model->info.head_dim;
    const int bits = opts->kv_quant_bits ? opts->kv_quant_bits : QUANT_DEFAULT_BITS;
    const int64_t group = opts->kv_quant_group ? opts->kv_quant_group
                                               : (head_dim < QUANT_DEFAULT_GROUP ? head_dim : QUANT_DEFAULT_GROUP);
    const int64_t residual = opts->kv_residual_len ? opts->kv_residual_len : QUANT_DEFAULT_RESIDUAL;
    if (bits != 8 && bits != 4)
        return lrun_fail(LRUN_E_ARG, "quantized KV cache: kv_quant_bits must be 8 or 4, got %d", bits);
    if (group <= 0 || group % 2 || head_dim % group)
        return lrun_fail(LRUN_E_ARG, "quantized KV cache: kv_quant_group %lld must be even and divide head_dim %lld",
                         (long long)group, (long long)head_dim);
    if (residual <= 0 || residual > ((int64_t)1 << 30))
        return lrun_fail(LRUN_E_ARG, "quantized KV cache: kv_residual_len %lld must be in [1, 2^30]",
                         (long long)residual);
    const size_t codes = bits == 8 ? (size_t)e->kv_dim : (size_t)e->kv_dim / 2;
    kv->q = (lrun_k_kv_quant){.bits = bits, .group = group, .kv_dim = e->kv_dim, .residual = residual,
                              .ring_rows = residual + QUANT_RING_EXTRA,
                              .pos_bytes = codes + (size_t)(e->kv_dim / group) * 2 * sizeof(float),
                              .kv_dtype = e->kv_dtype};
    /* LRUN_CUDA_QUANT_FUSED=0 keeps decode on the slot path (comparisons,
     * benchmarks); shapes the fused kernel does not take always are */
    const char *env = getenv("LRUN_CUDA_QUANT_FUSED");
    kv->fused = !(env && strcmp(env, "0") == 0) && lrun_k_attention_quant_supported(&kv->q, head_dim);
    return LRUN_OK;
}

size_t lrun_cuda_kv_bytes_per_position(const lrun_cuda_engine *e)
{
    size_t per = 0, ring = 0;
    if (!device_size(e, 1, &per)) return SIZE_MAX;
    if (e->kv.quantized && !planes_size(e, 2 * lrun_cuda_blocks(e), e->kv.q.ring_rows, row_bytes(e), &ring)) return SIZE_MAX;
    return per - ring; /* the ring is fixed: lrun_cuda_kv_fixed_bytes */
}

size_t lrun_cuda_kv_fixed_bytes(const lrun_cuda_engine *e)
{
    size_t ring = 0;
    if (e->kv.quantized && !planes_size(e, 2 * lrun_cuda_blocks(e), e->kv.q.ring_rows, row_bytes(e), &ring)) return SIZE_MAX;
    return ring;
}

int lrun_cuda_kv_init_bytes(const lrun_cuda_engine *e, size_t *out)
{
    *out = 0;
    return !e->kv.preallocated || device_size(e, e->n_ctx_max, out);
}

/* The quantized cache's fill table on the device: 3 int32 per sequence. */
static size_t fill_table_bytes(const lrun_cuda_engine *e)
{
    return e->kv.quantized ? 3 * (size_t)e->n_seq_max * sizeof(int32_t) : 0;
}

/* The capacity a cache of cap positions per sequence grows to for need:
 * doubling from KV_MIN_CAP, at most n_ctx_max. */
static int64_t grown_cap(const lrun_cuda_engine *e, int64_t cap, int64_t need)
{
    cap = cap > 0 ? cap : min64(KV_MIN_CAP, e->n_ctx_max);
    while (cap < need) cap *= 2;
    return min64(cap, e->n_ctx_max);
}

// ---------------------------------------------------------------- memory
/* The store is one block per layer (its keys plane, then its values plane),
 * so a growth copies one layer at a time and holds at most one layer twice,
 * rather than the whole cache twice. */

static int layer_size(const lrun_cuda_engine *e, int64_t cap, size_t *out)
{
    return planes_size(e, 2, cap, store_pos_bytes(e), out);
}

int lrun_cuda_kv_size(const lrun_cuda_engine *e, size_t *init_bytes, size_t *max_bytes)
{
    const struct cuda_kv *kv = &e->kv;
    const size_t fill = fill_table_bytes(e);
    if (!lrun_cuda_kv_init_bytes(e, init_bytes) || !lrun_size_add(*init_bytes, fill, init_bytes)) return 0;
    if (kv->preallocated) {
        *max_bytes = *init_bytes;
        return 1;
    }
    /* the last growth, from prev to n_ctx_max: every layer grown, the last
     * one's old block and the old slots still held (lrun_cuda_kv_reserve) */
    int64_t prev = 0, cap = grown_cap(e, 0, 1);
    while (cap < e->n_ctx_max) {
        prev = cap;
        cap = grown_cap(e, cap, cap + 1);
    }
    size_t all, old_layer = 0, old_slots = 0;
    if (!device_size(e, cap, &all) || !lrun_size_add(all, fill, &all)) return 0;
    if (prev > 0 && !kv->on_host && !layer_size(e, prev, &old_layer)) return 0;
    if (prev > 0 && kv->staged && !planes_size(e, 4, prev, row_bytes(e), &old_slots)) return 0;
    return lrun_size_add(all, old_layer, max_bytes) && lrun_size_add(*max_bytes, old_slots, max_bytes);
}

static lrun_status layer_alloc(lrun_cuda_engine *e, size_t bytes, void **out)
{
    const struct cuda_kv *kv = &e->kv;
    return lrun_oom_phase(kv->on_host ? lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_KV, LRUN_TIER_PINNED,
                                                               bytes, "offloaded KV cache", out)
                                      : lrun_device_alloc(e->device, bytes,
                                                          kv->quantized ? "quantized KV cache (codes)" : "KV cache",
                                                          out),
                          "cache");
}

static void layer_release(lrun_cuda_engine *e, void *p, size_t bytes)
{
    if (!p) return;
    if (e->kv.on_host) lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_KV, LRUN_TIER_PINNED, p, bytes);
    else lrun_device_release(e->device, p, bytes);
}

static lrun_status device_part(lrun_cuda_engine *e, size_t bytes, const char *what, void **out)
{
    return lrun_oom_phase(lrun_device_alloc(e->device, bytes, what, out), "cache");
}

/* Positions [0, n_pos) of every sequence of one layer, from a block of
 * src_cap positions per sequence to one of dst_cap: one strided copy, waited
 * for (the old block is released next). */
static lrun_status layer_copy(lrun_cuda_engine *e, void *dst, int64_t dst_cap, const void *src, int64_t src_cap,
                              int64_t n_pos)
{
    const size_t pb = store_pos_bytes(e);
    TRY(cuda_check(cudaMemcpy2DAsync(dst, (size_t)dst_cap * pb, src, (size_t)src_cap * pb, (size_t)n_pos * pb,
                                     2 * (size_t)e->n_seq_max, cudaMemcpyDefault, (cudaStream_t)e->stream),
                   "KV cache growth", e->device));
    return cuda_check(cudaStreamSynchronize((cudaStream_t)e->stream), "KV cache growth", e->device);
}

static void release_all(lrun_cuda_engine *e)
{
    struct cuda_kv *kv = &e->kv;
    for (int64_t l = 0; kv->layers && l < lrun_cuda_blocks(e); l++) {
        layer_release(e, kv->layers[l], kv->layer_bytes);
        kv->layers[l] = NULL;
    }
    if (kv->ring) lrun_device_release(e->device, kv->ring, kv->ring_bytes);
    if (kv->slots) lrun_device_release(e->device, kv->slots, kv->slot_bytes);
    kv->ring = kv->slots = NULL;
    kv->layer_bytes = kv->ring_bytes = kv->slot_bytes = 0;
    kv->cap = 0;
}

static lrun_status stage_ring_init(lrun_cuda_engine *e);

static lrun_status events_init(lrun_cuda_engine *e)
{
    struct cuda_kv *kv = &e->kv;
    kv->phys = malloc((size_t)e->n_seq_max * sizeof *kv->phys);
    kv->q_lo = calloc((size_t)e->n_seq_max, sizeof *kv->q_lo);
    kv->layers = calloc((size_t)lrun_cuda_blocks(e), sizeof *kv->layers);
    if (!kv->phys || !kv->q_lo || !kv->layers) return lrun_fail_oom(0, 0, "engine: KV cache bookkeeping");
    for (int64_t s = 0; s < e->n_seq_max; s++) kv->phys[s] = s;
    if (!kv->staged) return LRUN_OK;
    TRY(cuda_check(cudaStreamCreateWithFlags(&kv->side, cudaStreamNonBlocking), "KV cache side stream", e->device));
    cudaEvent_t *ev[5] = {&kv->begin, &kv->ready[0], &kv->ready[1], &kv->done[0], &kv->done[1]};
    for (int i = 0; i < 5; i++)
        TRY(cuda_check(cudaEventCreateWithFlags(ev[i], cudaEventDisableTiming), "KV cache events", e->device));
    TRY(stage_ring_init(e));
    kv->stored = calloc((size_t)e->n_seq_max, sizeof *kv->stored);
    kv->chunk_end = calloc((size_t)e->n_seq_max, sizeof *kv->chunk_end);
    if (!kv->stored || !kv->chunk_end) return lrun_fail_oom(0, 0, "engine: KV cache bookkeeping");
    if (kv->quantized) {
        const size_t b = fill_table_bytes(e);
        TRY(lrun_oom_phase(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_KV, LRUN_TIER_PINNED, b,
                                                  "KV fill table", (void **)&kv->h_fill),
                           "cache"));
        TRY(device_part(e, b, "KV fill table", (void **)&kv->d_fill));
    }
    return LRUN_OK;
}

/* The parts besides the layers: slots (staged) and the ring (quantized, once). */
static lrun_status side_parts_alloc(lrun_cuda_engine *e, int64_t cap, void **slots, size_t *slot_bytes, void **ring,
                                    size_t *ring_bytes)
{
    const struct cuda_kv *kv = &e->kv;
    *slots = *ring = NULL;
    *slot_bytes = *ring_bytes = 0;
    if (kv->staged && !planes_size(e, 4, cap, row_bytes(e), slot_bytes)) return LRUN_E_OOM;
    if (kv->quantized && !kv->ring && !planes_size(e, 2 * lrun_cuda_blocks(e), kv->q.ring_rows, row_bytes(e), ring_bytes))
        return LRUN_E_OOM;
    lrun_status st = *slot_bytes ? device_part(e, *slot_bytes, "KV cache slots", slots) : LRUN_OK;
    if (st == LRUN_OK && *ring_bytes) st = device_part(e, *ring_bytes, "quantized KV cache (recent positions)", ring);
    if (st != LRUN_OK && *slots) lrun_device_release(e->device, *slots, *slot_bytes), *slots = NULL;
    return st;
}

/* Every layer at cap, for a cache that holds nothing (init, or growth from empty). */
static lrun_status layers_alloc_empty(lrun_cuda_engine *e, int64_t cap, size_t bytes)
{
    struct cuda_kv *kv = &e->kv;
    for (int64_t l = 0; l < lrun_cuda_blocks(e); l++) {
        lrun_status st = layer_alloc(e, bytes, &kv->layers[l]);
        if (st != LRUN_OK) {
            for (int64_t j = 0; j < l; j++) layer_release(e, kv->layers[j], bytes), kv->layers[j] = NULL;
            return st;
        }
    }
    kv->cap = cap;
    kv->layer_bytes = bytes;
    return LRUN_OK;
}

lrun_status lrun_cuda_kv_init(lrun_cuda_engine *e)
{
    TRY(events_init(e));
    struct cuda_kv *kv = &e->kv;
    if (!kv->preallocated) return LRUN_OK;
    size_t bytes;
    if (!layer_size(e, e->n_ctx_max, &bytes))
        return lrun_fail_oom(SIZE_MAX, 0, "engine: a KV cache of %lld positions overflows size_t",
                             (long long)e->n_ctx_max);
    TRY(side_parts_alloc(e, e->n_ctx_max, &kv->slots, &kv->slot_bytes, &kv->ring, &kv->ring_bytes));
    return layers_alloc_empty(e, e->n_ctx_max, bytes);
}

void lrun_cuda_kv_free(lrun_cuda_engine *e)
{
    struct cuda_kv *kv = &e->kv;
    release_all(e);
    cudaEvent_t ev[5] = {kv->begin, kv->ready[0], kv->ready[1], kv->done[0], kv->done[1]};
    for (int i = 0; i < 5; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    if (kv->side) cudaStreamDestroy(kv->side);
    lrun_ring_free(kv->stage_ring);
    if (kv->h_fill)
        lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_KV, LRUN_TIER_PINNED, kv->h_fill, fill_table_bytes(e));
    if (kv->d_fill) lrun_device_release(e->device, kv->d_fill, fill_table_bytes(e));
    free(kv->stored);
    free(kv->chunk_end);
    free(kv->q_lo);
    free(kv->phys);
    free(kv->layers);
    memset(kv, 0, sizeof *kv);
}

size_t lrun_cuda_kv_device_bytes(const lrun_cuda_engine *e)
{
    const struct cuda_kv *kv = &e->kv;
    return (kv->on_host ? 0 : (size_t)lrun_cuda_blocks(e) * kv->layer_bytes) + kv->ring_bytes + kv->slot_bytes;
}

/* Moves layers [0, n_done) back from cap new_cap to the old capacity after
 * a growth failed at layer n_done; 0 when a block could not be had, and the
 * cache must then be emptied. */
static int layers_roll_back(lrun_cuda_engine *e, int64_t n_done, int64_t new_cap, size_t new_bytes, int64_t len)
{
    struct cuda_kv *kv = &e->kv;
    for (int64_t l = 0; l < n_done; l++) {
        void *old;
        if (layer_alloc(e, kv->layer_bytes, &old) != LRUN_OK) return 0;
        if (layer_copy(e, old, kv->cap, kv->layers[l], new_cap, len) != LRUN_OK) {
            layer_release(e, old, kv->layer_bytes);
            return 0;
        }
        layer_release(e, kv->layers[l], new_bytes);
        kv->layers[l] = old;
    }
    return 1;
}

/* Grows a cache that is not preallocated so every sequence has room for
 * need positions: doubles the capacity, then per layer takes a new block,
 * copies what is stored and releases the old one. Before anything moves it
 * checks that the walk fits the device budget (it holds at most one layer
 * twice), so an OOM changes nothing; were a block refused anyway (the
 * device itself out of memory), the layers already grown move back. */
lrun_status lrun_cuda_kv_reserve(lrun_cuda_engine *e, int64_t need)
{
    struct cuda_kv *kv = &e->kv;
    if (need <= kv->cap) return LRUN_OK;
    const int64_t cap = grown_cap(e, kv->cap, need);
    size_t new_bytes, slot_bytes = 0, ring_bytes = 0, walk = 0;
    if (!layer_size(e, cap, &new_bytes) || (kv->staged && !planes_size(e, 4, cap, row_bytes(e), &slot_bytes)) ||
        (kv->quantized && !kv->ring && !planes_size(e, 2 * lrun_cuda_blocks(e), kv->q.ring_rows, row_bytes(e), &ring_bytes)))
        return lrun_fail_oom(SIZE_MAX, lrun_device_free_bytes(e->device), "KV cache: %lld positions per sequence "
                             "overflow size_t", (long long)cap);
    /* device bytes the walk adds at its highest: every layer grown but the
     * last, whose old and new blocks are both held, and the new slots */
    const size_t grow = kv->on_host ? 0 : (size_t)lrun_cuda_blocks(e) * (new_bytes - kv->layer_bytes) + kv->layer_bytes;
    const size_t free_b = lrun_device_free_bytes(e->device);
    if (!lrun_size_add(grow, slot_bytes, &walk) || !lrun_size_add(walk, ring_bytes, &walk) || walk > free_b) {
        char a[32], b[32];
        return lrun_oom_phase(lrun_fail_oom(walk, free_b, "out of memory on %s: growing the KV cache to %lld "
                                            "positions per sequence needs %s more, %s free", e->device->name,
                                            (long long)cap, lrun_format_bytes(walk, a, sizeof a),
                                            lrun_format_bytes(free_b, b, sizeof b)),
                              "cache");
    }
    void *slots, *ring;
    lrun_status st = side_parts_alloc(e, cap, &slots, &slot_bytes, &ring, &ring_bytes);
    if (st != LRUN_OK) return lrun_fail_context(st, "KV cache: growing to %lld positions per sequence", (long long)cap);
    int64_t len = 0;
    for (int64_t s = 0; s < e->n_seq_max; s++) len = e->seq_len[s] > len ? e->seq_len[s] : len;
    if (!kv->layers[0]) {
        st = layers_alloc_empty(e, cap, new_bytes);
    } else {
        int64_t l = 0;
        for (; l < lrun_cuda_blocks(e) && st == LRUN_OK; l++) {
            void *grown;
            st = layer_alloc(e, new_bytes, &grown);
            if (st == LRUN_OK && len > 0) st = layer_copy(e, grown, cap, kv->layers[l], kv->cap, len);
            if (st != LRUN_OK) {
                layer_release(e, grown, new_bytes);
                break;
            }
            layer_release(e, kv->layers[l], kv->layer_bytes);
            kv->layers[l] = grown;
        }
        if (st != LRUN_OK && !layers_roll_back(e, l, cap, new_bytes, len)) {
            /* neither size can be had for every layer: what is stored is lost, said plainly */
            char msg[512];
            snprintf(msg, sizeof msg, "%s", lrun_last_error());
            for (int64_t j = 0; j < l; j++) layer_release(e, kv->layers[j], new_bytes), kv->layers[j] = NULL;
            release_all(e);
            memset(e->seq_len, 0, (size_t)e->n_seq_max * sizeof *e->seq_len);
            if (slots) lrun_device_release(e->device, slots, slot_bytes);
            if (ring) lrun_device_release(e->device, ring, ring_bytes);
            return lrun_fail(st, "KV cache: growing failed at layer %lld and the old size could not be restored, "
                             "so every sequence was emptied: %s", (long long)l, msg);
        }
        if (st == LRUN_OK) kv->cap = cap, kv->layer_bytes = new_bytes;
    }
    if (st != LRUN_OK) {
        if (slots) lrun_device_release(e->device, slots, slot_bytes);
        if (ring) lrun_device_release(e->device, ring, ring_bytes);
        return lrun_fail_context(st, "KV cache: growing to %lld positions per sequence", (long long)cap);
    }
    if (kv->slots) lrun_device_release(e->device, kv->slots, kv->slot_bytes); /* contents not kept */
    kv->slots = slots, kv->slot_bytes = slot_bytes;
    if (ring) kv->ring = ring, kv->ring_bytes = ring_bytes;
    return LRUN_OK;
}

// ---------------------------------------------------------------- a chunk, layer by layer

/* Device pointers of layer l's planes in the store (keys; values follow a plane later). */
static char *store_keys(const lrun_cuda_engine *e, int64_t l) { return e->kv.layers[l]; }

static size_t ring_plane_bytes(const lrun_cuda_engine *e)
{
    return (size_t)e->n_seq_max * (size_t)e->kv.q.ring_rows * row_bytes(e);
}

static size_t codes_plane_bytes(const lrun_cuda_engine *e)
{
    return (size_t)e->n_seq_max * (size_t)e->kv.cap * e->kv.q.pos_bytes;
}

static char *ring_keys(const lrun_cuda_engine *e, int64_t l)
{
    return (char *)e->kv.ring + (size_t)(2 * l) * ring_plane_bytes(e);
}

static char *slot_keys(const lrun_cuda_engine *e, int64_t l)
{
    return (char *)e->kv.slots + (size_t)(l % 2) * 2 * lrun_cuda_kv_plane_bytes(e);
}

/* On the side stream: layer l's stored positions into its slot. */
static lrun_status fill_slot(lrun_cuda_engine *e, int64_t l)
{
    struct cuda_kv *kv = &e->kv;
    const size_t row = row_bytes(e), plane = lrun_cuda_kv_plane_bytes(e), pitch = (size_t)kv->cap * row;
    char *dst = slot_keys(e, l);
    if (kv->fill_len > 0 && kv->quantized) {
        kv->q.cap = kv->cap;
        const size_t codes_plane = codes_plane_bytes(e), ring_plane = ring_plane_bytes(e);
        const char *codes = store_keys(e, l), *ring = ring_keys(e, l);
        TRY(lrun_k_kv_dequant_fill(&kv->q, dst, dst + plane, codes, codes + codes_plane, ring, ring + ring_plane,
                                   kv->d_fill, kv->d_fill + e->n_seq_max, e->n_seq_max, kv->fill_len, kv->side));
        kv->bytes_moved += kv->fill_bytes;
    } else if (kv->fill_len > 0) {
        const char *src = store_keys(e, l);
        if (kv->fill_dense) { /* one copy: every sequence's rows up to the longest, keys and values */
            TRY(cuda_check(cudaMemcpy2DAsync(dst, pitch, src, pitch, (size_t)kv->fill_len * row,
                                             2 * (size_t)e->n_seq_max, cudaMemcpyHostToDevice, kv->side),
                           "loading an offloaded KV layer", e->device));
        } else {
            for (int64_t s = 0; s < e->n_seq_max; s++)
                if (kv->stored[s] > 0)
                    TRY(cuda_check(cudaMemcpy2DAsync(dst + (size_t)s * pitch, plane, src + (size_t)s * pitch, plane,
                                                     (size_t)kv->stored[s] * row, 2, cudaMemcpyHostToDevice, kv->side),
                                   "loading an offloaded KV layer", e->device));
        }
        kv->bytes_moved += kv->fill_bytes;
    }
    return cuda_check(cudaEventRecord(kv->ready[l % 2], kv->side), "KV slot event", e->device);
}

// ---- the staging ring's hooks: slot s holds layer l with s = l % 2 (a pass per chunk)

static lrun_status stage_fill(void *owner, int64_t l, int s, void *slot, size_t *bytes)
{
    lrun_cuda_engine *e = owner;
    const uint64_t before = e->kv.bytes_moved;
    (void)s, (void)slot; /* the slots move when they grow: slot_keys finds them */
    const lrun_status st = fill_slot(e, l);
    *bytes = (size_t)(e->kv.bytes_moved - before);
    return st;
}

/* compute reads the slot after its fill */
static lrun_status stage_on_acquire(void *owner, int s)
{
    lrun_cuda_engine *e = owner;
    return cuda_check(cudaStreamWaitEvent((cudaStream_t)e->stream, e->kv.ready[s], 0), "KV slot wait", e->device);
}

/* the layer's compute (and its write-back) is queued: done[s] marks its end */
static lrun_status stage_release(void *owner, int64_t l, int s, void *slot, size_t *bytes)
{
    lrun_cuda_engine *e = owner;
    (void)l, (void)slot, (void)bytes;
    return cuda_check(cudaEventRecord(e->kv.done[s], (cudaStream_t)e->stream), "KV slot event", e->device);
}

/* the refill waits, on the side stream, for the layer that used the slot */
static lrun_status stage_before_refill(void *owner, int s)
{
    lrun_cuda_engine *e = owner;
    return cuda_check(cudaStreamWaitEvent(e->kv.side, e->kv.done[s], 0), "KV slot wait", e->device);
}

static lrun_status stage_ring_init(lrun_cuda_engine *e)
{
    const lrun_ring_opts o = {.n_units = lrun_cuda_blocks(e), .n_ring = 2, .own_unit = -1, .order = LRUN_RING_ORDER_PASS,
                              .driver = LRUN_RING_FILL_QUEUED, .ahead = 2, .fill = stage_fill,
                              .release = stage_release, .on_acquire = stage_on_acquire,
                              .before_refill = stage_before_refill, .owner = e};
    return lrun_ring_init(&e->kv.stage_ring, &o);
}

lrun_status lrun_cuda_kv_chunk_begin(lrun_cuda_engine *e, int load, int64_t n_tok)
{
    struct cuda_kv *kv = &e->kv;
    if (!kv->staged) return LRUN_OK;
    /* the exact path keeps the slots: its attention reads a slot in its own orders; so does a
     * sliding window, a soft-cap or attention sinks (the fused quantized attention has none of them) */
    kv->fused_chunk = kv->fused && load && n_tok <= GEMV_MAX_ROWS && !e->exact && e->model->n_swa == 0 &&
                      e->model->attn_softcap == 0 &&
                      !lrun_arch_tensor_find(e->model->arch, LRUN_ARCH_TENSOR_ATTN_SINKS);
    /* what the chunk's layers load: each sequence's stored positions (none when fused) */
    int64_t total = 0, longest = 0;
    for (int64_t s = 0; s < e->n_seq_max; s++) {
        const int64_t n = load && !kv->fused_chunk ? kv->stored[s] : 0;
        total += n;
        longest = n > longest ? n : longest;
    }
    kv->fill_len = longest;
    /* one dense copy unless it would move a third more than the rows stored */
    kv->fill_dense = 3 * (longest * e->n_seq_max) <= 4 * total;
    kv->fill_bytes = (uint64_t)(kv->fill_dense ? longest * e->n_seq_max : total) * 2 * row_bytes(e);
    if (kv->quantized && (longest > 0 || kv->fused_chunk)) {
        kv->fill_bytes = 0;
        for (int64_t s = 0; s < e->n_seq_max; s++) {
            /* stored and q_lo are by physical sequence, as the fill and fused kernels read them */
            const int64_t n = kv->stored[s], lo = n - kv->q.residual > kv->q_lo[s] ? n - kv->q.residual : kv->q_lo[s];
            kv->q_lo[s] = lo; /* the ring holds [lo, n) */
            kv->h_fill[s] = (int32_t)n;
            kv->h_fill[e->n_seq_max + s] = (int32_t)lo;
            if (!kv->fused_chunk)
                kv->fill_bytes += 2 * ((uint64_t)lo * kv->q.pos_bytes + (uint64_t)(n - lo) * row_bytes(e));
        }
    }
    if (kv->fused_chunk) { /* no slot is filled: the table goes on the compute stream, no side-stream handshakes */
        for (int64_t s = 0; s < e->n_seq_max; s++) kv->h_fill[2 * e->n_seq_max + s] = (int32_t)kv->chunk_end[s];
        return cuda_check(cudaMemcpyAsync(kv->d_fill, kv->h_fill, 3 * (size_t)e->n_seq_max * sizeof(int32_t),
                                          cudaMemcpyHostToDevice, (cudaStream_t)e->stream),
                          "KV fill table", e->device);
    }
    /* the side stream starts after everything the compute stream has queued:
     * the previous chunk's write-backs and its last use of both slots */
    TRY(cuda_check(cudaEventRecord(kv->begin, (cudaStream_t)e->stream), "KV chunk event", e->device));
    TRY(cuda_check(cudaStreamWaitEvent(kv->side, kv->begin, 0), "KV chunk wait", e->device));
    if (kv->quantized) { /* the chunk's ends too: the ring writes read them */
        for (int64_t s = 0; s < e->n_seq_max; s++) kv->h_fill[2 * e->n_seq_max + s] = (int32_t)kv->chunk_end[s];
        TRY(cuda_check(cudaMemcpyAsync(kv->d_fill, kv->h_fill, 3 * (size_t)e->n_seq_max * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, kv->side),
                       "KV fill table", e->device));
    }
    return lrun_ring_begin(kv->stage_ring); /* fills layers 0 and 1 */
}

lrun_status lrun_cuda_kv_layer(lrun_cuda_engine *e, int64_t l, char **keys, char **values)
{
    l -= e->layer_first; /* the model's block -> this engine's cache layer (a split's part holds its own) */
    if (!e->kv.staged) {
        *keys = store_keys(e, l);
        *values = *keys + lrun_cuda_kv_plane_bytes(e);
        return LRUN_OK;
    }
    *keys = slot_keys(e, l);
    *values = *keys + lrun_cuda_kv_plane_bytes(e);
    if (e->kv.fused_chunk) return LRUN_OK; /* nothing fills the slot: only RoPE writes the new rows there */
    void *slot;
    return lrun_ring_acquire(e->kv.stage_ring, l, &slot, NULL);
}

/* The chunk's n new rows of layer l's slot into codes and ring (chunk_end in d_fill). */
static lrun_status quant_store(lrun_cuda_engine *e, int64_t l, int64_t n)
{
    struct cuda_kv *kv = &e->kv;
    const struct step_table *t = &e->d_table;
    char *slot = slot_keys(e, l), *codes = store_keys(e, l), *ring = ring_keys(e, l);
    kv->q.cap = kv->cap;
    return lrun_k_kv_quant_store(&kv->q, slot, slot + lrun_cuda_kv_plane_bytes(e), t->row_off, t->kv_base, t->pos,
                                 kv->d_fill + 2 * e->n_seq_max, n, codes, codes + codes_plane_bytes(e), ring,
                                 ring + ring_plane_bytes(e), e->stream);
}

lrun_status lrun_cuda_kv_layer_end(lrun_cuda_engine *e, int64_t l, int64_t n)
{
    struct cuda_kv *kv = &e->kv;
    l -= e->layer_first; /* as in lrun_cuda_kv_layer */
    if (!kv->staged) return LRUN_OK;
    const struct step_table *t = &e->d_table;
    const size_t plane = lrun_cuda_kv_plane_bytes(e);
    char *slot = slot_keys(e, l), *store = store_keys(e, l);
    if (kv->quantized && !kv->fused_chunk) { /* the fused path stored them before its attention */
        TRY(quant_store(e, l, n));
    } else if (!kv->quantized) {
        TRY(lrun_k_kv_copy_rows(e->kv_dtype, store, store + plane, slot, slot + plane, t->row_off, n, e->kv_dim,
                                e->stream));
    }
    kv->bytes_moved += (uint64_t)n * 2 * row_bytes(e);
    if (kv->fused_chunk) return LRUN_OK; /* no slot to refill */
    return lrun_ring_release(kv->stage_ring, l, NULL); /* done[l % 2]; fills layer l+2 behind it */
}

lrun_status lrun_cuda_kv_fused_attention(lrun_cuda_engine *e, int64_t l, int64_t n, int64_t max_kv)
{
    const struct cuda_kv *kv = &e->kv;
    const lrun_model_info *in = &e->model->info;
    l -= e->layer_first; /* as in lrun_cuda_kv_layer */
    const char *codes = store_keys(e, l), *ring = ring_keys(e, l);
    TRY(quant_store(e, l, n));
    return lrun_k_attention_quant(&kv->q, e->q, codes, codes + codes_plane_bytes(e), ring, ring + ring_plane_bytes(e),
                                  e->d_table.kv_base, e->d_table.n_kv, kv->d_fill + e->n_seq_max, n, in->n_head,
                                  in->n_head_kv, in->head_dim, max_kv, e->attn_scale, e->attn, e->attn_work,
                                  e->stream);
}

void lrun_cuda_kv_step_end(lrun_cuda_engine *e)
{
    struct cuda_kv *kv = &e->kv;
    if (!kv->quantized) return;
    for (int64_t s = 0; s < e->n_seq_max; s++) {
        int64_t *lo = &kv->q_lo[kv->phys[s]];
        if (e->seq_len[s] - kv->q.residual > *lo) *lo = e->seq_len[s] - kv->q.residual;
    }
}

// ---------------------------------------------------------------- sequences

lrun_status lrun_cuda_kv_truncate(lrun_cuda_engine *e, int64_t seq, int64_t len)
{
    struct cuda_kv *kv = &e->kv;
    if (kv->q_lo[kv->phys[seq]] > len) kv->q_lo[kv->phys[seq]] = len;
    if (kv->preallocated || !kv->layers[0]) return LRUN_OK;
    /* a cache that holds nothing gives its memory back */
    for (int64_t s = 0; s < e->n_seq_max; s++)
        if (e->seq_len[s] > 0) return LRUN_OK;
    TRY(cuda_check(cudaStreamSynchronize((cudaStream_t)e->stream), "KV cache release", e->device));
    if (kv->side) TRY(cuda_check(cudaStreamSynchronize(kv->side), "KV cache release", e->device));
    release_all(e);
    return LRUN_OK;
}

/* Positions [0, n_pos) of sequence src into dst, in planes planes of
 * (n_seq, cap) positions of pos_bytes: one strided copy. */
static lrun_status copy_seq(lrun_cuda_engine *e, void *base, int64_t planes, int64_t cap, size_t pos_bytes,
                            int64_t n_pos, int64_t dst, int64_t src)
{
    const size_t seq_bytes = (size_t)cap * pos_bytes, pitch = (size_t)e->n_seq_max * seq_bytes;
    char *b = base;
    return cuda_check(cudaMemcpy2DAsync(b + (size_t)dst * seq_bytes, pitch, b + (size_t)src * seq_bytes, pitch,
                                        (size_t)n_pos * pos_bytes, (size_t)planes, cudaMemcpyDefault,
                                        (cudaStream_t)e->stream),
                      "KV cache copy", e->device);
}

/* Copies the store (and ring) of physical sequence src to physical dst, the
 * first n positions, on the compute stream. */
static lrun_status copy_phys(lrun_cuda_engine *e, int64_t dst, int64_t src, int64_t n)
{
    struct cuda_kv *kv = &e->kv;
    if (n > 0) {
        TRY(cuda_check(cudaSetDevice(e->device->cuda_ordinal), "cudaSetDevice", e->device));
        for (int64_t l = 0; l < lrun_cuda_blocks(e); l++)
            TRY(copy_seq(e, kv->layers[l], 2, kv->cap, store_pos_bytes(e), n, dst, src));
        if (kv->quantized) {
            const int64_t rows = n < kv->q.ring_rows ? n : kv->q.ring_rows;
            TRY(copy_seq(e, kv->ring, 2 * lrun_cuda_blocks(e), kv->q.ring_rows, row_bytes(e), rows, dst, src));
        }
        kv->bytes_copied += (uint64_t)n * (uint64_t)(2 * lrun_cuda_blocks(e)) * store_pos_bytes(e);
    }
    kv->q_lo[dst] = kv->q_lo[src];
    return LRUN_OK;
}

lrun_status lrun_cuda_kv_copy(lrun_cuda_engine *e, int64_t dst, int64_t src)
{
    const int64_t *phys = e->kv.phys;
    TRY(copy_phys(e, phys[dst], phys[src], e->seq_len[src]));
    return cuda_check(cudaStreamSynchronize((cudaStream_t)e->stream), "KV cache copy", e->device);
}

/* Beam reordering by index remapping: a destination takes its source's
 * physical sequence when it is the first to take it (and the source is
 * among [0, n), whose contents are given up); only further takers of one
 * source, or takers of a source past n (which keeps its own), are copied,
 * into the physical sequences nobody took. new_len: (n) lengths after. */
lrun_status lrun_cuda_kv_reorder(lrun_cuda_engine *e, const int64_t *src_of_dst, int64_t n, int64_t *new_len)
{
    struct cuda_kv *kv = &e->kv;
    const size_t N = (size_t)e->n_seq_max;
    int64_t *new_phys = malloc(N * sizeof *new_phys);
    char *taken = calloc(N, 1); /* by physical index: claimed by a destination or kept past n */
    if (!new_phys || !taken) {
        free(new_phys);
        free(taken);
        return lrun_fail_oom(2 * N * sizeof *new_phys, 0, "KV cache reorder: bookkeeping");
    }
    for (int64_t s = n; s < e->n_seq_max; s++) taken[kv->phys[s]] = 1, new_phys[s] = kv->phys[s];
    for (int64_t d = 0; d < n; d++) {
        const int64_t src = src_of_dst[d], p = kv->phys[src];
        new_phys[d] = -1;
        if (src < n && !taken[p]) taken[p] = 1, new_phys[d] = p;
    }
    lrun_status st = cuda_check(cudaSetDevice(e->device->cuda_ordinal), "cudaSetDevice", e->device);
    int64_t free_p = 0;
    for (int64_t d = 0; d < n && st == LRUN_OK; d++) {
        if (new_phys[d] >= 0) continue;
        while (taken[free_p]) free_p++; /* as many free as copies: both are n minus the first takers */
        taken[free_p] = 1;
        new_phys[d] = free_p;
        st = copy_phys(e, free_p, kv->phys[src_of_dst[d]], e->seq_len[src_of_dst[d]]);
    }
    if (st == LRUN_OK) st = cuda_check(cudaStreamSynchronize((cudaStream_t)e->stream), "KV cache reorder", e->device);
    if (st != LRUN_OK) /* a device fault: sequences whose rows a copy may have overwritten are emptied, not left wrong */
        for (int64_t s = 0; s < e->n_seq_max; s++)
            for (int64_t d = 0; d < n; d++)
                if (new_phys[d] == kv->phys[s] && kv->phys[src_of_dst[d]] != kv->phys[s]) e->seq_len[s] = 0;
    if (st == LRUN_OK) {
        for (int64_t d = 0; d < n; d++) new_len[d] = e->seq_len[src_of_dst[d]];
        memcpy(kv->phys, new_phys, N * sizeof *new_phys);
    }
    free(new_phys);
    free(taken);
    return st;
}
