/* ring.c — the fill thread, slots and waits of ring.h.
 *
 * Two counters walk the same order: the fill side's (fill_seq, fill_ring)
 * and compute's (use_seq, use_ring); *_ring counts the fills that went to
 * rotating slots, so slot = *_ring mod n_ring for any unit but own_unit.
 * A slot goes FREE → FILLING → READY (fill) → IN_USE (acquire) → FREE
 * (release); the mutex guards states, counters and stats, never a copy.
 *
 * QUEUED rings keep the same counters but no states: a fill is only issued
 * into the device's queue, so "ready" and "free" are the owner's events,
 * and the calling thread issues fill q once compute acquires it (a cold
 * start) or releases unit q-k-1 … in the owner's words, the schedule of
 * engine_cuda_offload.c:
 *
 *   acquire(c)   issue fills up to c · on_acquire(slot of c)
 *   release(c)   release hook(slot of c) · issue fills up to c + ahead
 *   issue q      before_refill(slot) when it held a unit · fill(q)
 *
 * and, for the CUDA KV cache (engine_cuda_kv.c), a PASS begun per chunk
 * that issues fills 0 and 1 at once, with ahead = n_ring = 2. */
#include "residency/ring.h"
#include "core/clock.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_IN_USE };

struct slot {
    void *base;            /* the owner's memory */
    enum slot_state state;
    int64_t seq;           /* fill number of the unit it holds */
    size_t bytes;          /* that fill's bytes */
};

struct lrun_ring {
    lrun_ring_opts o;
    struct slot *slots;    /* (n_ring + 1) the rotating slots, then the own slot */

    pthread_t thread;
    int has_thread;
    lrun_ring_driver driver;     /* FILL_THREAD only while the thread runs */
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* any state change, both directions */
    int stop;
    int64_t fill_seq, fill_ring; /* fill side: next fill number, rotating fills so far */
    int64_t use_seq, use_ring;   /* compute: the same for acquires */
    int64_t fill_end;            /* fills stop before this number (PASS: end of the pass) */

    lrun_status failed;          /* a fill's error, LRUN_OK when none */
    int64_t failed_seq;          /* its fill number */
    char failed_msg[512];        /* lrun_last_error() of the failing fill */

    lrun_ring_stats stats;
};

static struct slot *slot_for(lrun_ring *r, int64_t seq, int64_t ring_count)
{
    const int64_t unit = seq % r->o.n_units;
    return unit == r->o.own_unit ? &r->slots[r->o.n_ring] : &r->slots[ring_count % r->o.n_ring];
}

/* Fills the next unit into s (marked FILLING, mu held on entry and exit). */
static void fill_one(lrun_ring *r, struct slot *s)
{
    const int64_t seq = r->fill_seq, unit = seq % r->o.n_units;
    s->state = SLOT_FILLING;
    s->seq = seq;
    pthread_mutex_unlock(&r->mu);
    const double t0 = lrun_now_seconds();
    size_t bytes = 0;
    const lrun_status st = r->o.fill(r->o.owner, unit, (int)(s - r->slots), s->base, &bytes);
    const double dt = lrun_now_seconds() - t0;
    pthread_mutex_lock(&r->mu);
    r->stats.fill_seconds += dt;
    s->bytes = bytes;
    s->state = SLOT_READY;
    if (st != LRUN_OK && r->failed == LRUN_OK) {
        r->failed = st;
        r->failed_seq = seq;
        const char *m = lrun_last_error();
        snprintf(r->failed_msg, sizeof r->failed_msg, "%s", m ? m : "");
    }
    if (unit != r->o.own_unit) r->fill_ring++;
    r->fill_seq++;
    pthread_cond_broadcast(&r->cv);
}

/* The next fill's slot when it may start now, else NULL (mu held). */
static struct slot *next_fill(lrun_ring *r)
{
    if (r->stop || r->failed != LRUN_OK || r->fill_seq >= r->fill_end) return NULL;
    struct slot *s = slot_for(r, r->fill_seq, r->fill_ring);
    return s->state == SLOT_FREE ? s : NULL;
}

static void *fill_main(void *arg)
{
    lrun_ring *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct slot *s = next_fill(r);
        if (s) fill_one(r, s);
        else pthread_cond_wait(&r->cv, &r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

// ---------------------------------------------------------------- lifecycle

lrun_status lrun_ring_init(lrun_ring **out, const lrun_ring_opts *opts)
{
    *out = NULL;
    if (!opts || opts->n_units < 1 || opts->n_ring < 1 || !opts->fill)
        return lrun_fail(LRUN_E_ARG, "ring: needs n_units >= 1, n_ring >= 1 and a fill callback");
    lrun_ring *r = calloc(1, sizeof *r);
    if (r) r->slots = calloc((size_t)opts->n_ring + 1, sizeof *r->slots);
    if (!r || !r->slots) {
        if (r) free(r);
        return lrun_fail_oom(sizeof *r + ((size_t)opts->n_ring + 1) * sizeof *r->slots, 0,
                             "ring: records for %d slots", opts->n_ring);
    }
    r->o = *opts;
    r->o.ring_slots = NULL; /* the owner's array need not outlive init */
    for (int i = 0; i < opts->n_ring; i++) r->slots[i].base = opts->ring_slots ? opts->ring_slots[i] : NULL;
    r->slots[opts->n_ring].base = opts->own_slot;
    for (int i = 0; i <= opts->n_ring; i++) r->slots[i].seq = -1; /* holds no unit yet */
    r->fill_end = opts->order == LRUN_RING_ORDER_CYCLIC ? INT64_MAX : 0;
    r->driver = opts->driver;
    if (r->driver == LRUN_RING_FILL_QUEUED) r->o.own_unit = -1;
    if (r->o.ahead <= 0) r->o.ahead = r->o.n_ring - 1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (r->driver == LRUN_RING_FILL_THREAD) {
        r->has_thread = pthread_create(&r->thread, NULL, fill_main, r) == 0;
        if (!r->has_thread) r->driver = LRUN_RING_FILL_INLINE;
    }
    *out = r;
    return LRUN_OK;
}

void lrun_ring_free(lrun_ring *r)
{
    if (!r) return;
    if (r->has_thread) {
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->slots);
    free(r);
}

/* No fill runs or will start until fill_end moves again (mu held). */
static void quiesce(lrun_ring *r)
{
    if (r->fill_end > r->fill_seq) r->fill_end = r->fill_seq;
    for (;;) {
        int filling = 0;
        for (int i = 0; i <= r->o.n_ring; i++) filling |= r->slots[i].state == SLOT_FILLING;
        if (!filling) return;
        pthread_cond_wait(&r->cv, &r->mu);
    }
}

static lrun_status issue_next(lrun_ring *r);

lrun_status lrun_ring_begin(lrun_ring *r)
{
    pthread_mutex_lock(&r->mu);
    quiesce(r);
    for (int i = 0; i <= r->o.n_ring; i++) {
        r->slots[i].state = SLOT_FREE;
        r->slots[i].seq = -1;
    }
    r->fill_seq = r->fill_ring = r->use_seq = r->use_ring = 0;
    r->failed = LRUN_OK;
    r->fill_end = r->o.order == LRUN_RING_ORDER_CYCLIC ? INT64_MAX : r->o.n_units;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->driver != LRUN_RING_FILL_QUEUED || r->o.order != LRUN_RING_ORDER_PASS) return LRUN_OK;
    while (r->fill_seq < r->o.ahead && r->fill_seq < r->fill_end) {
        const lrun_status st = issue_next(r);
        if (st != LRUN_OK) return st;
    }
    return LRUN_OK;
}

void lrun_ring_end(lrun_ring *r)
{
    pthread_mutex_lock(&r->mu);
    quiesce(r);
    pthread_mutex_unlock(&r->mu);
}

void lrun_ring_set_slot(lrun_ring *r, int i, void *base)
{
    pthread_mutex_lock(&r->mu);
    quiesce(r);
    r->slots[i].base = base;
    pthread_mutex_unlock(&r->mu);
}

// ---------------------------------------------------------------- QUEUED: issued on the calling thread

/* Issues the next fill of the order into its slot (no lock: one thread). */
static lrun_status issue_next(lrun_ring *r)
{
    const int s = (int)(r->fill_seq % r->o.n_ring);
    struct slot *sl = &r->slots[s];
    if (sl->seq >= 0) {
        /* the slot's last reader has run (and the owner read its events) */
        const lrun_status st = r->o.before_refill ? r->o.before_refill(r->o.owner, s) : LRUN_OK;
        if (st != LRUN_OK) return st;
    }
    size_t bytes = 0;
    const lrun_status st = r->o.fill(r->o.owner, r->fill_seq % r->o.n_units, s, sl->base, &bytes);
    if (st != LRUN_OK) return st;
    sl->seq = r->fill_seq;
    sl->bytes = bytes;
    r->fill_seq++;
    return LRUN_OK;
}

static lrun_status queued_acquire(lrun_ring *r, void **slot, size_t *bytes)
{
    if (r->use_seq >= r->fill_end) return lrun_fail(LRUN_E_INTERNAL, "ring: a unit acquired past the end of its pass");
    while (r->fill_seq <= r->use_seq) {
        const lrun_status st = issue_next(r);
        if (st != LRUN_OK) return st;
    }
    const int s = (int)(r->use_seq % r->o.n_ring);
    if (r->o.on_acquire) {
        const lrun_status st = r->o.on_acquire(r->o.owner, s);
        if (st != LRUN_OK) return st;
    }
    r->stats.bytes_filled += r->slots[s].bytes;
    if (bytes) *bytes = r->slots[s].bytes;
    *slot = r->slots[s].base;
    return LRUN_OK;
}

static lrun_status queued_release(lrun_ring *r, int64_t unit, size_t *bytes)
{
    const int s = (int)(r->use_seq % r->o.n_ring);
    size_t moved = 0;
    if (r->o.release) {
        const lrun_status st = r->o.release(r->o.owner, unit, s, r->slots[s].base, &moved);
        if (st != LRUN_OK) return st;
    }
    if (bytes) *bytes = moved;
    const int64_t last = r->use_seq + r->o.ahead; /* the released unit + ahead */
    r->use_seq++;
    r->use_ring++;
    while (r->fill_seq <= last && r->fill_seq < r->fill_end) {
        const lrun_status st = issue_next(r);
        if (st != LRUN_OK) return st;
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- compute side

lrun_status lrun_ring_acquire(lrun_ring *r, int64_t unit, void **slot, size_t *bytes)
{
    *slot = NULL;
    if (bytes) *bytes = 0;
    if (r->driver == LRUN_RING_FILL_QUEUED) {
        if (unit != r->use_seq % r->o.n_units)
            return lrun_fail(LRUN_E_INTERNAL, "ring: unit %lld acquired out of order (expected %lld)",
                             (long long)unit, (long long)(r->use_seq % r->o.n_units));
        return queued_acquire(r, slot, bytes);
    }
    pthread_mutex_lock(&r->mu);
    /* the order is fixed: compute's next unit must be this one */
    if (unit != r->use_seq % r->o.n_units) {
        const long long want = (long long)(r->use_seq % r->o.n_units);
        pthread_mutex_unlock(&r->mu);
        return lrun_fail(LRUN_E_INTERNAL, "ring: unit %lld acquired out of order (expected %lld)", (long long)unit,
                         want);
    }
    struct slot *s = slot_for(r, r->use_seq, r->use_ring);
    const int ready = s->state == SLOT_READY && s->seq == r->use_seq;
    if (ready) {
        r->stats.hits++;
    } else {
        r->stats.misses++;
        const double t0 = lrun_now_seconds();
        /* the fills before this one are in the slots or done; without a
         * thread, this one runs here */
        if (r->driver == LRUN_RING_FILL_INLINE && r->fill_seq == r->use_seq && r->failed == LRUN_OK) {
            if (r->fill_end <= r->fill_seq) r->fill_end = r->fill_seq + 1;
            if (s->state == SLOT_FREE) fill_one(r, s);
        }
        while (!(s->state == SLOT_READY && s->seq == r->use_seq) &&
               !(r->failed != LRUN_OK && r->failed_seq <= r->use_seq))
            pthread_cond_wait(&r->cv, &r->mu);
        r->stats.stall_seconds += lrun_now_seconds() - t0;
    }
    if (r->failed != LRUN_OK && r->failed_seq <= r->use_seq) {
        const lrun_status st = r->failed;
        char msg[sizeof r->failed_msg];
        memcpy(msg, r->failed_msg, sizeof msg);
        pthread_mutex_unlock(&r->mu);
        return lrun_fail(st, "%s", msg);
    }
    s->state = SLOT_IN_USE;
    r->stats.bytes_filled += s->bytes;
    if (bytes) *bytes = s->bytes;
    *slot = s->base;
    pthread_mutex_unlock(&r->mu);
    return LRUN_OK;
}

lrun_status lrun_ring_release(lrun_ring *r, int64_t unit, size_t *bytes)
{
    if (bytes) *bytes = 0;
    if (r->driver == LRUN_RING_FILL_QUEUED) {
        if (unit != r->use_seq % r->o.n_units || r->fill_seq <= r->use_seq)
            return lrun_fail(LRUN_E_INTERNAL, "ring: unit %lld released without being acquired", (long long)unit);
        return queued_release(r, unit, bytes);
    }
    pthread_mutex_lock(&r->mu);
    struct slot *s = slot_for(r, r->use_seq, r->use_ring);
    const int held = s->state == SLOT_IN_USE && r->use_seq % r->o.n_units == unit;
    pthread_mutex_unlock(&r->mu);
    if (!held) return lrun_fail(LRUN_E_INTERNAL, "ring: unit %lld released without being acquired", (long long)unit);

    /* the slot is IN_USE: no fill touches it, so the release hook runs unlocked */
    size_t wb = 0;
    const lrun_status st = r->o.release ? r->o.release(r->o.owner, unit, (int)(s - r->slots), s->base, &wb) : LRUN_OK;

    pthread_mutex_lock(&r->mu);
    r->stats.bytes_written_back += wb;
    s->state = SLOT_FREE;
    if (unit != r->o.own_unit) r->use_ring++;
    r->use_seq++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (bytes) *bytes = wb;
    return st;
}

// ---------------------------------------------------------------- statistics

void lrun_ring_stats_get(lrun_ring *r, lrun_ring_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}

void lrun_ring_stats_reset(lrun_ring *r)
{
    pthread_mutex_lock(&r->mu);
    /* the fills in flight, and those the fill thread can start now, finish first: their bytes (and a disk
     * reader's reads under them) belong to the steps before the reset, not after (a prefetch still reading
     * when a caller reset its stats counted into the next ones: test_disk_tier under ASan) */
    for (;;) {
        int busy = 0;
        for (int i = 0; i <= r->o.n_ring; i++) busy |= r->slots[i].state == SLOT_FILLING;
        if (!busy && r->driver == LRUN_RING_FILL_THREAD) busy = next_fill(r) != NULL;
        if (!busy) break;
        pthread_cond_wait(&r->cv, &r->mu);
    }
    memset(&r->stats, 0, sizeof r->stats);
    pthread_mutex_unlock(&r->mu);
}
