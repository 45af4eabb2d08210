/* kv_offload.c — two device slots and the copy thread that fills them ahead
 * of compute (kv_offload.h). On the CPU device the slots are budget-counted
 * device memory and the store is pinned host memory, so the traffic, the
 * budget and the OOMs are those a GPU would see. */
#include "kv/kv_offload.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/error.h"

static int64_t pad_up(int64_t n) { return (n + LRUN_KV_PAD - 1) / LRUN_KV_PAD * LRUN_KV_PAD; }

struct lrun_kv_stage {
    lrun_kv_cache *kv;
    void *slot[2];          /* layer l computes in slot[l % 2] */
    size_t slot_bytes;      /* bytes of each */
    int fixed;              /* static kinds: never regrown */

    /* the chunk: its sequences in order of first token */
    int64_t n_cs;
    int64_t *cs_seq;        /* (n_seq) */
    int64_t *cs_lo, *cs_hi; /* (n_seq) the chunk writes positions [lo, hi) */
    int64_t *cs_cap;        /* (n_seq) pad_up(hi): positions of the sequence in a slot */
    size_t *cs_off;         /* (n_seq) byte offset of its keys in a slot */
    int64_t *seq_cs;        /* (n_seq) index into cs_*, or -1 */

    /* the copy thread: loads layer `want` into slot[want % 2] */
    pthread_t thread;
    int has_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t want;           /* -1: nothing asked */
    int64_t loaded[2];      /* layer slot i holds for this chunk, -1: none */
    int stop;
};

/* Fills slot[layer % 2] with layer for every chunk sequence; returns bytes moved. */
static size_t load_layer(lrun_kv_stage *g, int64_t layer)
{
    lrun_kv_cache *kv = g->kv;
    size_t moved = 0;
    char *base = g->slot[layer % 2];
    for (int64_t i = 0; i < g->n_cs; i++) {
        char *k = base + g->cs_off[i];
        char *v = k + (size_t)(g->cs_cap[i] * kv->kv_dim) * kv->elem_bytes;
        moved += lrun_kv_store_load(kv, g->cs_seq[i], layer, g->cs_lo[i], k, v, g->cs_cap[i]);
    }
    return moved;
}

static void *copy_thread(void *arg)
{
    lrun_kv_stage *g = arg;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (g->want < 0 && !g->stop) pthread_cond_wait(&g->cv, &g->mu);
        if (g->stop) break;
        const int64_t layer = g->want;
        pthread_mutex_unlock(&g->mu);
        const size_t moved = load_layer(g, layer);
        pthread_mutex_lock(&g->mu);
        g->kv->bytes_moved += moved; /* the main thread reads it under mu or after joining */
        g->loaded[layer % 2] = layer;
        g->want = -1;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

// ---------------------------------------------------------------- lifecycle

lrun_status lrun_kv_stage_init(lrun_kv_stage **out, lrun_kv_cache *kv, size_t fixed_bytes)
{
    *out = NULL;
    lrun_kv_stage *g = calloc(1, sizeof *g);
    const size_t n = (size_t)kv->n_seq;
    if (g) {
        g->cs_seq = malloc(n * sizeof *g->cs_seq);
        g->cs_lo = malloc(n * sizeof *g->cs_lo);
        g->cs_hi = malloc(n * sizeof *g->cs_hi);
        g->cs_cap = malloc(n * sizeof *g->cs_cap);
        g->cs_off = malloc(n * sizeof *g->cs_off);
        g->seq_cs = malloc(n * sizeof *g->seq_cs);
    }
    if (!g || !g->cs_seq || !g->cs_lo || !g->cs_hi || !g->cs_cap || !g->cs_off || !g->seq_cs) {
        lrun_kv_stage_free(g);
        return lrun_fail_oom(sizeof *g + n * 48, 0, "KV cache: slot bookkeeping for %zu sequences", n);
    }
    g->kv = kv;
    g->want = -1;
    g->loaded[0] = g->loaded[1] = -1;
    for (size_t i = 0; i < n; i++) g->seq_cs[i] = -1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    /* without a thread, layer_begin loads in the calling thread: slower, same bytes */
    g->has_thread = pthread_create(&g->thread, NULL, copy_thread, g) == 0;
    if (fixed_bytes > 0) {
        lrun_status st = lrun_kv_stage_reserve(g, fixed_bytes);
        if (st != LRUN_OK) {
            lrun_kv_stage_free(g);
            return st;
        }
        g->fixed = 1;
    }
    *out = g;
    return LRUN_OK;
}

void lrun_kv_stage_free(lrun_kv_stage *g)
{
    if (!g) return;
    if (g->has_thread) {
        pthread_mutex_lock(&g->mu);
        g->stop = 1;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        pthread_join(g->thread, NULL);
    }
    if (g->kv) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
    }
    for (int i = 0; i < 2; i++)
        if (g->slot[i]) lrun_device_release(g->kv->device, g->slot[i], g->slot_bytes);
    free(g->cs_seq);
    free(g->cs_lo);
    free(g->cs_hi);
    free(g->cs_cap);
    free(g->cs_off);
    free(g->seq_cs);
    free(g);
}

lrun_status lrun_kv_stage_reserve(lrun_kv_stage *g, size_t bytes)
{
    if (bytes <= g->slot_bytes) return LRUN_OK;
    if (g->fixed)
        return lrun_fail(LRUN_E_INTERNAL, "KV cache: a step needs %zu bytes of slot, the static slots hold %zu", bytes,
                         g->slot_bytes);
    /* both new slots first, so a failure leaves the old ones in place */
    void *a, *b;
    lrun_status st = lrun_device_alloc(g->kv->device, bytes, "KV cache slot (layer computed)", &a);
    if (st != LRUN_OK) return st;
    st = lrun_device_alloc(g->kv->device, bytes, "KV cache slot (layer prefetched)", &b);
    if (st != LRUN_OK) {
        lrun_device_release(g->kv->device, a, bytes);
        return st;
    }
    for (int i = 0; i < 2; i++)
        if (g->slot[i]) lrun_device_release(g->kv->device, g->slot[i], g->slot_bytes);
    g->slot[0] = a;
    g->slot[1] = b;
    g->slot_bytes = bytes;
    return LRUN_OK;
}

size_t lrun_kv_stage_bytes(const lrun_kv_stage *g) { return g->slot[0] ? 2 * g->slot_bytes : 0; }

// ---------------------------------------------------------------- a chunk

static void request(lrun_kv_stage *g, int64_t layer)
{
    if (!g->has_thread) return; /* loaded on demand in layer_begin */
    pthread_mutex_lock(&g->mu);
    g->want = layer;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void lrun_kv_stage_chunk_begin(lrun_kv_stage *g, int64_t n, const int64_t *tok_seq, const int64_t *tok_pos)
{
    g->n_cs = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t s = tok_seq[i];
        if (g->seq_cs[s] < 0) {
            g->seq_cs[s] = g->n_cs;
            g->cs_seq[g->n_cs] = s;
            g->cs_lo[g->n_cs] = tok_pos[i];
            g->cs_hi[g->n_cs] = tok_pos[i] + 1;
            g->n_cs++;
        } else {
            g->cs_hi[g->seq_cs[s]] = tok_pos[i] + 1;
        }
    }
    size_t off = 0;
    for (int64_t i = 0; i < g->n_cs; i++) {
        g->cs_cap[i] = pad_up(g->cs_hi[i]);
        g->cs_off[i] = off;
        off += 2 * (size_t)(g->cs_cap[i] * g->kv->kv_dim) * g->kv->elem_bytes;
    }
    g->loaded[0] = g->loaded[1] = -1;
    request(g, 0);
}

void lrun_kv_stage_layer_begin(lrun_kv_stage *g, int64_t layer)
{
    if (!g->has_thread) {
        g->kv->bytes_moved += load_layer(g, layer);
        return;
    }
    pthread_mutex_lock(&g->mu);
    while (g->loaded[layer % 2] != layer) pthread_cond_wait(&g->cv, &g->mu);
    /* slot (layer+1) % 2 held layer-1, written back in its layer_end */
    if (layer + 1 < g->kv->n_layer) {
        g->want = layer + 1;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
}

lrun_kv_view lrun_kv_stage_view(const lrun_kv_stage *g, int64_t seq, int64_t layer)
{
    const int64_t i = g->seq_cs[seq];
    char *k = (char *)g->slot[layer % 2] + g->cs_off[i];
    return (lrun_kv_view){.k = k, .v = k + (size_t)(g->cs_cap[i] * g->kv->kv_dim) * g->kv->elem_bytes,
                          .cap = g->cs_cap[i]};
}

void lrun_kv_stage_layer_end(lrun_kv_stage *g, int64_t layer)
{
    size_t moved = 0;
    for (int64_t i = 0; i < g->n_cs; i++) {
        const lrun_kv_view w = lrun_kv_stage_view(g, g->cs_seq[i], layer);
        moved += lrun_kv_store_write_back(g->kv, g->cs_seq[i], layer, g->cs_lo[i], g->cs_hi[i], w.k, w.v, w.cap);
    }
    pthread_mutex_lock(&g->mu);
    g->kv->bytes_moved += moved;
    pthread_mutex_unlock(&g->mu);
}

void lrun_kv_stage_chunk_end(lrun_kv_stage *g)
{
    for (int64_t i = 0; i < g->n_cs; i++) {
        lrun_kv_store_chunk_done(g->kv, g->cs_seq[i], g->cs_hi[i]);
        g->seq_cs[g->cs_seq[i]] = -1;
    }
    g->n_cs = 0;
}
