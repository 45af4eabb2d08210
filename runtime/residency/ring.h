/* ring.h — the staging ring: the one "fill k slots ahead, wait, release"
 * that weights and KV caches use to bring off-device bytes to compute.
 *
 * Words (docs/streaming.md):
 *   unit     what one step of compute needs at once (a block's streamed
 *            matrices, the LM head, one layer of a chunk's KV entries);
 *   slot     device memory one unit is filled into, fixed bytes, taken by
 *            the owner from the device budget once;
 *   ring     the slots units rotate through: n_ring = k + 1, so while
 *            unit u computes in one slot units u+1 … u+k are filled into
 *            the others;
 *   fill     copying a unit's bytes into its slot (the owner's callback),
 *            on the ring's fill thread, k units ahead of compute;
 *   release  compute is done with a unit: its write-back (KV) runs and
 *            the slot may be filled again.
 *
 * Units come in a fixed order: 0, 1, …, n_units-1. A CYCLIC ring repeats
 * that order forever and fills across its end (the weights: the first
 * blocks of the next token are filled while the caller samples). A PASS
 * ring fills one pass per lrun_ring_begin and then idles (the KV cache:
 * a slot's layout belongs to one chunk). Fill number q goes to unit
 * q mod n_units, and to ring slot (ring fills before q) mod n_ring, or to
 * the own slot when the unit is own_unit (the LM head, whose size differs
 * from the blocks'); so both sides know a unit's slot without searching,
 * and a slot is refilled only after compute released its previous unit.
 *
 * The slots' memory is the owner's (its budget, its names in an OOM); the
 * ring keeps the order, who fills when, the waits and the stats. Compute
 * waits on a slot's "ready": a condition variable set by the fill thread
 * on the CPU (weight_ring.c, kv/kv_stage.c); on CUDA (QUEUED,
 * engine_cuda_offload.c) the fills are copies issued into a copy stream
 * and ready/free are the owner's events, recorded by its hooks.
 * docs/streaming.md draws the users side by side. */
#ifndef LRUN_RING_H
#define LRUN_RING_H

#include <stddef.h>
#include <stdint.h>

#include "lrun.h"

typedef struct lrun_ring lrun_ring;

/* Fills unit's bytes into slot (ring slot slot_index, n_ring: the own
 * slot); *bytes = the bytes it moved. THREAD: runs on the fill thread;
 * INLINE: in acquire; QUEUED: on the calling thread, which only issues the
 * copies into the device's queue. Never two at once. A failure (status and
 * lrun_fail's message) reaches compute at that unit's acquire. */
typedef lrun_status (*lrun_ring_fill_fn)(void *owner, int64_t unit, int slot_index, void *slot, size_t *bytes);
/* At release, in the releasing thread, before the slot is filled again:
 * the KV cache writes back what compute changed (*bytes moved); a queued
 * owner marks in its queue that compute is done with the slot. */
typedef lrun_status (*lrun_ring_release_fn)(void *owner, int64_t unit, int slot_index, void *slot, size_t *bytes);
/* QUEUED only: a hook on slot slot_index (see lrun_ring_opts). */
typedef lrun_status (*lrun_ring_slot_fn)(void *owner, int slot_index);

typedef enum lrun_ring_order {
    LRUN_RING_ORDER_CYCLIC, /* 0 … n_units-1, 0 … forever, filled across the end */
    LRUN_RING_ORDER_PASS,   /* one pass of 0 … n_units-1 per lrun_ring_begin */
} lrun_ring_order;

/* Who runs the fills, and what "ready" is. */
typedef enum lrun_ring_driver {
    LRUN_RING_FILL_THREAD,  /* a fill thread, k ahead; ready = a condition variable (cpu) */
    LRUN_RING_FILL_INLINE,  /* in acquire, on the calling thread (no thread could start; tests) */
    LRUN_RING_FILL_QUEUED,  /* issued by the calling thread into a device queue k units ahead of
                             * the unit acquired (at acquire and at release); ready and free are the
                             * owner's events: on_acquire makes compute wait for the fill, the
                             * release hook marks the slot's reader, before_refill waits for it */
} lrun_ring_driver;

typedef struct lrun_ring_opts {
    int64_t n_units;                   /* units in the order, >= 1 */
    int n_ring;                        /* rotating slots (k + 1), >= 1 */
    void *const *ring_slots;           /* (n_ring) their memory, or NULL (set later, lrun_ring_set_slot) */
    int64_t own_unit;                  /* the unit with a slot of its own, -1: none (QUEUED: none) */
    void *own_slot;                    /* its memory */
    lrun_ring_order order;
    lrun_ring_driver driver;
    lrun_ring_fill_fn fill;
    lrun_ring_release_fn release;      /* NULL: nothing to do at release */
    lrun_ring_slot_fn on_acquire;      /* QUEUED: compute waits for the slot's fill */
    lrun_ring_slot_fn before_refill;   /* QUEUED: the slot's last reader has run (or will have, in queue order) */
    int ahead;                         /* QUEUED: releasing unit c issues the fills up to c + ahead
                                        * (0 = n_ring - 1: a slot is refilled one unit after its
                                        * release, once the owner saw it free; n_ring: at once, behind
                                        * a wait in the queue); a PASS begin issues fills 0 … ahead-1 */
    void *owner;                       /* passed to every callback */
} lrun_ring_opts;

/* Counters since init or the last reset. */
typedef struct lrun_ring_stats {
    uint64_t bytes_filled;     /* bytes of the fills compute acquired */
    uint64_t bytes_written_back;
    double fill_seconds;       /* time spent in fills */
    double stall_seconds;      /* time compute waited at acquire */
    int64_t hits;              /* acquires whose unit was already filled */
    int64_t misses;            /* acquires that waited */
} lrun_ring_stats;

/* Makes the ring and, for FILL_THREAD, its fill thread (one that cannot
 * start makes the ring INLINE: slower, same bytes); a CYCLIC THREAD ring
 * starts filling at once. On failure nothing is left. */
lrun_status lrun_ring_init(lrun_ring **out, const lrun_ring_opts *opts);
/* Stops the fill thread (after the fill in progress) before returning, so
 * the owner may then free the slots. */
void lrun_ring_free(lrun_ring *ring);

/* Unit `unit`, which must be the next of the order, for compute: waits for
 * its fill (QUEUED: issues it if not yet, then on_acquire), *slot = its
 * slot, *bytes (NULL: not asked) = the fill's bytes.
 * Returns the fill's error if it failed (the ring then fills nothing more
 * until lrun_ring_begin); every successful acquire is followed by a release. */
lrun_status lrun_ring_acquire(lrun_ring *ring, int64_t unit, void **slot, size_t *bytes);
/* Compute is done with unit (the one acquired last): runs the release
 * hook, *bytes (NULL: not asked) = its bytes, and frees the slot for a
 * fill (QUEUED: issues the fills up to k units ahead of the next unit). */
lrun_status lrun_ring_release(lrun_ring *ring, int64_t unit, size_t *bytes);

/* Starts a pass at unit 0 (PASS rings; a CYCLIC ring only after a failed
 * fill or step): waits for the fill in progress, then forgets every slot's
 * unit. A QUEUED ring's owner first drains its queues (or orders them);
 * a QUEUED PASS ring then issues its first fills, whose error it returns. */
lrun_status lrun_ring_begin(lrun_ring *ring);
/* Stops filling: waits for the fill in progress; none starts until the
 * next lrun_ring_begin (a PASS ring's owner, before it rewrites what its
 * fills read). */
void lrun_ring_end(lrun_ring *ring);
/* Slot i of the ring (i == n_ring: the own slot) is now at base; only
 * while no fill runs (before a pass begins, or after it was released). */
void lrun_ring_set_slot(lrun_ring *ring, int i, void *base);

void lrun_ring_stats_get(lrun_ring *ring, lrun_ring_stats *out);
/* Zeroes the stats once no fill is running and (fill thread) none can start: a prefetch in flight
 * counts before the reset. */
void lrun_ring_stats_reset(lrun_ring *ring);

#endif
