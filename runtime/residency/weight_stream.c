/* weight_stream.c — the copy thread and slots of weight_stream.h.
 *
 * Ordering: units form a cycle (the streamed blocks in order, then the head
 * when it is streamed). The copy thread fills them in that cycle, forever,
 * as slots come free; compute acquires them in the same cycle. Fill number
 * s goes to ring slot (number of block fills before s) mod R, or to the head
 * slot, so both sides know which slot holds a unit without searching, and
 * a slot is refilled only after compute released its previous unit. Because
 * the copy thread runs ahead across steps, the first k blocks of the next
 * token are copied while the caller samples. */
#include "residency/weight_stream.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/checked.h"
#include "core/device.h"
#include "core/error.h"
#include "model/model.h"
#include "residency/placement.h"

#define SLOT_ALIGN ((size_t)64)

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_IN_USE };

struct slot {
    char *base;               /* device bytes, unit_bytes long */
    enum slot_state state;
    int64_t seq;              /* fill number of the unit it holds */
};

struct unit {
    int64_t layer;                                 /* block index, n_layer for the head */
    const struct lrun_tensor *mats[LRUN_WS_N_MATS]; /* streamed matrices, NULL for the others */
    size_t offset[LRUN_WS_N_MATS];                 /* where each goes in the slot */
    size_t bytes;                                  /* bytes copied per fill */
};

struct lrun_weight_stream {
    lrun_device *device;
    const lrun_model *model;
    int64_t n_units;            /* block units, then the head unit if any */
    struct unit *units;         /* (n_units) */
    int64_t *unit_of_layer;     /* (n_layer + 1) index into units, -1 when nothing is streamed */
    int64_t n_ring;             /* ring slots: prefetch + 1, at most the number of block units */
    struct slot *ring;          /* (n_ring) */
    struct slot head;           /* base NULL when the head is not streamed */
    void *memory;               /* the one device allocation all slots are carved from */
    size_t memory_bytes;

    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t slot_free;   /* compute → copy thread */
    pthread_cond_t slot_ready;  /* copy thread → compute */
    int stop;
    int64_t fill_seq, fill_ring; /* copy thread: next fill number, next ring slot (mod n_ring) */
    int64_t use_seq, use_ring;   /* compute: the same for acquires */

    /* counters (under mu) */
    uint64_t bytes_streamed, host_compute_bytes;
    double copy_seconds, stall_seconds;
    int64_t hits, misses;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void layer_mats(const lrun_model *m, int64_t l, const struct lrun_tensor *out[LRUN_WS_N_MATS])
{
    const struct lrun_model_layer *L = &m->layers[l];
    out[LRUN_WS_Q] = L->wq;
    out[LRUN_WS_K] = L->wk;
    out[LRUN_WS_V] = L->wv;
    out[LRUN_WS_O] = L->wo;
    out[LRUN_WS_GATE] = L->w_gate;
    out[LRUN_WS_UP] = L->w_up;
    out[LRUN_WS_DOWN] = L->w_down;
}

static int is_host_computed(const struct lrun_tensor *t) { return t->tier != LRUN_TIER_DEVICE && t->host_compute; }

// ---------------------------------------------------------------- the copy thread

static struct slot *fill_slot(lrun_weight_stream *ws, const struct unit *u, int64_t ring_index)
{
    return u->layer == ws->model->info.n_layer ? &ws->head : &ws->ring[ring_index % ws->n_ring];
}

static void *copy_main(void *arg)
{
    lrun_weight_stream *ws = arg;
    pthread_mutex_lock(&ws->mu);
    while (!ws->stop) {
        const struct unit *u = &ws->units[ws->fill_seq % ws->n_units];
        struct slot *s = fill_slot(ws, u, ws->fill_ring);
        if (s->state != SLOT_FREE) {
            pthread_cond_wait(&ws->slot_free, &ws->mu);
            continue;
        }
        s->state = SLOT_FILLING;
        s->seq = ws->fill_seq;
        pthread_mutex_unlock(&ws->mu);

        const double t0 = now_seconds();
        /* host-addressable on cpu: a plain copy (the CUDA engine streams with
         * cudaMemcpyAsync on its copy stream instead) */
        for (int i = 0; i < LRUN_WS_N_MATS; i++) {
            const struct lrun_tensor *t = u->mats[i];
            if (t) memcpy(s->base + u->offset[i], t->data, t->nbytes);
        }
        const double dt = now_seconds() - t0;

        pthread_mutex_lock(&ws->mu);
        ws->copy_seconds += dt;
        s->state = SLOT_READY;
        if (u->layer != ws->model->info.n_layer) ws->fill_ring++;
        ws->fill_seq++;
        pthread_cond_broadcast(&ws->slot_ready);
    }
    pthread_mutex_unlock(&ws->mu);
    return NULL;
}

// ---------------------------------------------------------------- init

/* Lays out the streamed matrices of a unit (placement p, NULL: the tensors'
 * own); 0 when nothing is streamed, SIZE_MAX on overflow. */
static size_t plan_unit(struct unit *u, const lrun_placement *p, int64_t layer,
                        const struct lrun_tensor *mats[LRUN_WS_N_MATS], int n)
{
    memset(u, 0, sizeof *u);
    u->layer = layer;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!mats[i] || !lrun_placement_streamed(p, mats[i])) continue;
        u->mats[i] = mats[i];
        u->offset[i] = off;
        size_t end;
        if (!lrun_size_align_up(off + mats[i]->nbytes, SLOT_ALIGN, &end)) return SIZE_MAX;
        off = end;
    }
    u->bytes = 0;
    for (int i = 0; i < n; i++)
        if (u->mats[i]) u->bytes += u->mats[i]->nbytes;
    return off;
}

/* What the slots must hold for a placement. */
struct slot_layout {
    size_t ring_bytes;      /* one ring slot: the largest block unit */
    size_t head_bytes;      /* the head slot, 0 when the head is not streamed */
    int64_t n_block_units;  /* blocks that stream anything */
    int64_t n_units;        /* those and the head */
    int64_t n_ring;         /* ring slots: k + 1, at most n_block_units */
    size_t total;           /* n_ring x ring_bytes + head_bytes */
};

/* The units of model under placement p and the slots they need, for init
 * (units and unit_of_layer: (n_layer + 1) records to fill) and for sizing
 * (both NULL): one layout, so a size is what init then takes. */
static lrun_status layout_slots(const lrun_model *model, const lrun_placement *p, int prefetch_layers,
                                struct unit *units, int64_t *unit_of_layer, struct slot_layout *out)
{
    memset(out, 0, sizeof *out);
    const int64_t n_layer = model->info.n_layer;
    for (int64_t l = 0; l <= n_layer; l++) {
        const struct lrun_tensor *mats[LRUN_WS_N_MATS] = {0};
        int n = 1;
        if (l < n_layer) {
            layer_mats(model, l, mats);
            n = LRUN_WS_N_MATS;
        } else {
            mats[0] = model->output;
        }
        struct unit scratch;
        const size_t need = plan_unit(units ? &units[out->n_units] : &scratch, p, l, mats, n);
        if (need == SIZE_MAX)
            return lrun_fail(LRUN_E_OOM, "engine: the streamed weights of layer %lld overflow size_t", (long long)l);
        if (need == 0) {
            if (unit_of_layer) unit_of_layer[l] = -1;
            continue;
        }
        if (unit_of_layer) unit_of_layer[l] = out->n_units;
        out->n_units++;
        if (l < n_layer) {
            out->n_block_units++;
            if (need > out->ring_bytes) out->ring_bytes = need;
        } else {
            out->head_bytes = need;
        }
    }
    const int k = prefetch_layers ? prefetch_layers : lrun_engine_default_prefetch(LRUN_DEVICE_KIND_CPU);
    out->n_ring = out->n_block_units < k + 1 ? out->n_block_units : k + 1;
    if (!lrun_size_mul(out->ring_bytes, (size_t)out->n_ring, &out->total) ||
        !lrun_size_add(out->total, out->head_bytes, &out->total))
        return lrun_fail(LRUN_E_OOM, "engine: weight stream slots overflow size_t");
    return LRUN_OK;
}

static lrun_status check_prefetch(int prefetch_layers)
{
    if (prefetch_layers < 0 || prefetch_layers > 64)
        return lrun_fail(LRUN_E_ARG, "engine: prefetch_layers %d must be in [0, 64] (0 = the default, %d)",
                         prefetch_layers, lrun_engine_default_prefetch(LRUN_DEVICE_KIND_CPU));
    return LRUN_OK;
}

lrun_status lrun_weight_stream_size(const lrun_model *model, const lrun_placement *p, int prefetch_layers,
                                    size_t *slot_bytes)
{
    *slot_bytes = 0;
    lrun_status st = check_prefetch(prefetch_layers);
    struct slot_layout L;
    if (st == LRUN_OK) st = layout_slots(model, p, prefetch_layers, NULL, NULL, &L);
    if (st == LRUN_OK) *slot_bytes = L.total;
    return st;
}

lrun_status lrun_weight_stream_init(lrun_weight_stream **out, lrun_model *model, int prefetch_layers)
{
    *out = NULL;
    lrun_status st = check_prefetch(prefetch_layers);
    if (st != LRUN_OK) return st;
    const int64_t n_layer = model->info.n_layer;
    lrun_weight_stream *ws = calloc(1, sizeof *ws);
    if (!ws) return lrun_fail_oom(sizeof *ws, 0, "engine: weight stream record");
    ws->device = model->device;
    ws->model = model;
    pthread_mutex_init(&ws->mu, NULL);
    pthread_cond_init(&ws->slot_free, NULL);
    pthread_cond_init(&ws->slot_ready, NULL);
    ws->units = calloc((size_t)n_layer + 1, sizeof *ws->units);
    ws->unit_of_layer = malloc(((size_t)n_layer + 1) * sizeof *ws->unit_of_layer);
    if (!ws->units || !ws->unit_of_layer) {
        lrun_weight_stream_free(ws);
        return lrun_fail_oom(0, 0, "engine: weight stream units for %lld layers", (long long)n_layer);
    }

    // ---- units and slot sizes
    struct slot_layout L;
    st = layout_slots(model, NULL, prefetch_layers, ws->units, ws->unit_of_layer, &L);
    if (st != LRUN_OK) {
        lrun_weight_stream_free(ws);
        return st;
    }
    ws->n_units = L.n_units;
    if (ws->n_units == 0) {
        *out = ws; /* nothing to stream: host-compute counting only */
        return LRUN_OK;
    }

    // ---- slots: one allocation from the device budget
    const int k = prefetch_layers ? prefetch_layers : lrun_engine_default_prefetch(LRUN_DEVICE_KIND_CPU);
    ws->n_ring = L.n_ring;
    ws->ring = calloc(ws->n_ring ? (size_t)ws->n_ring : 1, sizeof *ws->ring);
    if (!ws->ring) {
        lrun_weight_stream_free(ws);
        return lrun_fail_oom(0, 0, "engine: weight stream slot records");
    }
    char what[96];
    snprintf(what, sizeof what, "weight streaming slots (%lld x ring, k = %d, + head)", (long long)ws->n_ring, k);
    st = lrun_oom_phase(lrun_device_alloc(ws->device, L.total, what, &ws->memory), "weights");
    if (st != LRUN_OK) {
        lrun_weight_stream_free(ws);
        return st;
    }
    ws->memory_bytes = L.total;
    for (int64_t i = 0; i < ws->n_ring; i++) ws->ring[i].base = (char *)ws->memory + (size_t)i * L.ring_bytes;
    if (L.head_bytes) ws->head.base = (char *)ws->memory + (size_t)ws->n_ring * L.ring_bytes;

    if (pthread_create(&ws->thread, NULL, copy_main, ws) != 0) {
        lrun_weight_stream_free(ws);
        return lrun_fail(LRUN_E_INTERNAL, "engine: cannot start the weight copy thread");
    }
    ws->thread_started = 1;
    *out = ws;
    return LRUN_OK;
}

void lrun_weight_stream_free(lrun_weight_stream *ws)
{
    if (!ws) return;
    if (ws->thread_started) {
        pthread_mutex_lock(&ws->mu);
        ws->stop = 1;
        pthread_cond_broadcast(&ws->slot_free);
        pthread_mutex_unlock(&ws->mu);
        pthread_join(ws->thread, NULL);
    }
    pthread_cond_destroy(&ws->slot_ready);
    pthread_cond_destroy(&ws->slot_free);
    pthread_mutex_destroy(&ws->mu);
    if (ws->memory) lrun_device_release(ws->device, ws->memory, ws->memory_bytes);
    free(ws->ring);
    free(ws->units);
    free(ws->unit_of_layer);
    free(ws);
}

// ---------------------------------------------------------------- compute side

void lrun_weight_stream_acquire(lrun_weight_stream *ws, const lrun_model *model, int64_t layer,
                                lrun_weight_view *out)
{
    const struct lrun_tensor *mats[LRUN_WS_N_MATS] = {0};
    const int64_t n_layer = model->info.n_layer;
    if (layer < n_layer) layer_mats(model, layer, mats);
    else mats[0] = model->output;
    for (int i = 0; i < LRUN_WS_N_MATS; i++) out->data[i] = mats[i] ? mats[i]->data : NULL;
    if (!ws) return;

    uint64_t host_bytes = 0;
    for (int i = 0; i < LRUN_WS_N_MATS; i++)
        if (mats[i] && is_host_computed(mats[i])) host_bytes += mats[i]->nbytes;
    const int64_t ui = ws->unit_of_layer[layer];
    pthread_mutex_lock(&ws->mu);
    ws->host_compute_bytes += host_bytes;
    if (ui < 0) {
        pthread_mutex_unlock(&ws->mu);
        return;
    }
    const struct unit *u = &ws->units[ui];
    /* the cycle is fixed: compute's next unit must be this one */
    assert(ws->units[ws->use_seq % ws->n_units].layer == layer);
    struct slot *s = fill_slot(ws, u, ws->use_ring);
    if (s->state == SLOT_READY && s->seq == ws->use_seq) {
        ws->hits++;
    } else {
        ws->misses++;
        const double t0 = now_seconds();
        while (!(s->state == SLOT_READY && s->seq == ws->use_seq)) pthread_cond_wait(&ws->slot_ready, &ws->mu);
        ws->stall_seconds += now_seconds() - t0;
    }
    s->state = SLOT_IN_USE;
    ws->bytes_streamed += u->bytes;
    pthread_mutex_unlock(&ws->mu);
    for (int i = 0; i < LRUN_WS_N_MATS; i++)
        if (u->mats[i]) out->data[i] = s->base + u->offset[i];
}

void lrun_weight_stream_release(lrun_weight_stream *ws, int64_t layer)
{
    if (!ws || ws->unit_of_layer[layer] < 0) return;
    const struct unit *u = &ws->units[ws->unit_of_layer[layer]];
    pthread_mutex_lock(&ws->mu);
    struct slot *s = fill_slot(ws, u, ws->use_ring);
    s->state = SLOT_FREE;
    if (u->layer != ws->model->info.n_layer) ws->use_ring++;
    ws->use_seq++;
    pthread_cond_signal(&ws->slot_free);
    pthread_mutex_unlock(&ws->mu);
}

void lrun_weight_stream_skip(lrun_weight_stream *ws, int64_t layer)
{
    if (!ws || ws->unit_of_layer[layer] < 0) return;
    /* only the head is skipped, and a streamed head has no host-computed part */
    lrun_weight_view unused;
    lrun_weight_stream_acquire(ws, ws->model, layer, &unused);
    lrun_weight_stream_release(ws, layer);
}

void lrun_weight_stream_note_rows(lrun_weight_stream *ws, int64_t n_rows)
{
    const struct lrun_tensor *t = ws ? ws->model->tok_embd : NULL;
    if (!t || t->tier == LRUN_TIER_DEVICE) return;
    pthread_mutex_lock(&ws->mu);
    if (t->host_compute) ws->host_compute_bytes += (uint64_t)n_rows * t->row_bytes;
    else ws->bytes_streamed += (uint64_t)n_rows * t->row_bytes;
    pthread_mutex_unlock(&ws->mu);
}

// ---------------------------------------------------------------- statistics

void lrun_weight_stream_add_stats(lrun_weight_stream *ws, lrun_engine_stats *out)
{
    if (!ws) return;
    pthread_mutex_lock(&ws->mu);
    out->bytes_streamed += ws->bytes_streamed;
    out->copy_seconds += ws->copy_seconds;
    out->stall_seconds += ws->stall_seconds;
    out->prefetch_hits += ws->hits;
    out->prefetch_misses += ws->misses;
    out->host_compute_bytes += ws->host_compute_bytes;
    out->slot_bytes += ws->memory_bytes;
    pthread_mutex_unlock(&ws->mu);
}

void lrun_weight_stream_reset_stats(lrun_weight_stream *ws)
{
    if (!ws) return;
    pthread_mutex_lock(&ws->mu);
    ws->bytes_streamed = ws->host_compute_bytes = 0;
    ws->copy_seconds = ws->stall_seconds = 0;
    ws->hits = ws->misses = 0;
    pthread_mutex_unlock(&ws->mu);
}
