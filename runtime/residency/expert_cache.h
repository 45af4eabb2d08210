/* expert_cache.h — the bookkeeping of a cache of experts in device memory
 * (docs/moe.md "The expert cache"): a fixed number of slots, each holding
 * one expert (its gate, up and down slices) of one block; least recently
 * used or least frequently used (with aging) replacement; hits, misses and
 * bytes copied per block. Backend-free
 * (the CUDA engine does the copies into the slots, engine_cuda_moe.c), so
 * tests/c/test_expert_cache.c checks the replacement order on any machine.
 *
 * Uses are numbered by a tick the cache keeps; the victim of a miss is the
 * free slot of the lowest index, else, among the slots not used since the
 * last lrun_expert_cache_settle (a chunk's experts must all be in slots at
 * once when the engine runs them in one kernel), the slot whose last use is
 * oldest (LRU) or whose expert has the fewest recent acquires, the oldest
 * of those on a tie (LFU). When every slot was used since the settle, the
 * oldest is the victim, as LRU picks it. Ordering on the device (events)
 * keeps a copy from overwriting a slot whose previous expert has not
 * finished.
 *
 * LFU counts acquires per (block, expert), every expert's, cached or not,
 * and halves every count each age_period acquires, so the counts follow
 * what the router chooses now (a prompt on another subject moves them
 * within a few periods) rather than since load. Real routers are skewed
 * (a few experts per block take most tokens): there LFU keeps the hot ones
 * through the cold misses that push them out of an LRU cache; on a uniform
 * stream both hit at the slot fraction (test_expert_cache.c measures both;
 * docs/moe.md "Replacement"). */
#ifndef LRUN_EXPERT_CACHE_H
#define LRUN_EXPERT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "lrun.h"

typedef enum lrun_expert_cache_policy {
    LRUN_EXPERT_CACHE_LRU = 0,
    LRUN_EXPERT_CACHE_LFU = 1
} lrun_expert_cache_policy;

typedef struct lrun_expert_cache {
    int64_t n_slots, n_layer, n_expert;
    lrun_expert_cache_policy policy; /* LRU after init; lrun_expert_cache_set_policy */
    int64_t *slot_of;     /* (n_layer, n_expert) the slot holding expert x of block l, or -1 */
    int64_t *key;         /* (n_slots) l·n_expert + x held, or -1 when free */
    uint64_t *last_use;   /* (n_slots) the tick of its last acquire */
    uint64_t tick;        /* acquires and prefetches so far */
    uint64_t settled;     /* the tick of the last settle: slots used after it are not victims while others exist */
    uint32_t *freq;       /* (n_layer, n_expert) acquires of each expert, halved every age_period acquires */
    uint64_t age_period;  /* acquires between halvings: 4 per (block, expert), at least 64 */
    uint64_t since_age;   /* acquires since the last halving */
    int64_t *hits;        /* (n_layer) acquires that found their expert */
    int64_t *misses;      /* (n_layer) acquires that had to copy it */
    int64_t *prefetches;  /* (n_layer) slots taken ahead of use (lrun_expert_cache_prefetch) */
    int64_t *host_computed; /* (n_layer) hybrid (expert_admit.h): chosen experts not in a ready slot, computed on
                             * the host in the step (also counted in misses) */
    int64_t *admitted; /* (n_layer) hybrid: misses copied into a slot after their step (lrun_expert_cache_assign) */
    uint64_t bytes_copied;/* into slots, all blocks */
    uint64_t *bytes_copied_layer; /* (n_layer) the same per block */
} lrun_expert_cache;

/* An empty cache of n_slots (>= 1) slots for n_layer blocks of n_expert experts. */
lrun_status lrun_expert_cache_init(lrun_expert_cache *c, int64_t n_slots, int64_t n_layer, int64_t n_expert);
void lrun_expert_cache_free(lrun_expert_cache *c);
/* Chooses the replacement; the slots keep their experts. */
void lrun_expert_cache_set_policy(lrun_expert_cache *c, lrun_expert_cache_policy policy);
/* The chunk's experts have been released: their slots may be victims again. */
void lrun_expert_cache_settle(lrun_expert_cache *c);
/* The slot of expert x of block layer, made most recently used: 1 when it
 * was there (a hit), 0 when the slot was taken for it (a miss: the caller
 * copies the expert in, bytes counted with lrun_expert_cache_copied; the
 * slot's previous expert, if any, is forgotten), -1 on bad arguments. */
int lrun_expert_cache_acquire(lrun_expert_cache *c, int64_t layer, int64_t x, int64_t *slot);
/* Takes a slot for expert x of block layer ahead of its use (the next
 * block's likely experts): 1 when a slot was taken for it (the caller copies
 * it in; counted in prefetches, its bytes with lrun_expert_cache_copied), 0
 * when it is already held (nothing changes), -1 on bad arguments. The slot
 * becomes most recently used; the block's acquire later counts a hit. */
int lrun_expert_cache_prefetch(lrun_expert_cache *c, int64_t layer, int64_t x, int64_t *slot);
/* One use of expert x of block layer without taking a slot (the hybrid mode,
 * expert_admit.h): counted for LFU; found (1: the caller runs it from
 * c->slot_of's slot, made most recently used, a hit) or not (0: a miss, also
 * counted in host_computed: the caller computes it on the host); -1 on bad
 * arguments. */
int lrun_expert_cache_touch(lrun_expert_cache *c, int64_t layer, int64_t x, int found);
/* Gives slot s to expert x of block layer (its previous expert forgotten),
 * most recently used; counted in admitted. The caller chose s (expert_admit.c)
 * and copies the expert in. -1 on bad arguments, else 0. */
int lrun_expert_cache_assign(lrun_expert_cache *c, int64_t s, int64_t layer, int64_t x);
/* Whether expert x of block layer is in a slot (no use counted). */
int lrun_expert_cache_holds(const lrun_expert_cache *c, int64_t layer, int64_t x);
/* bytes copied into a slot for an expert of block layer (a bad block counts in the total only). */
void lrun_expert_cache_copied(lrun_expert_cache *c, int64_t layer, uint64_t bytes);
/* Zeroes hits, misses, prefetches, host_computed, admitted and bytes; the slots keep their experts. */
void lrun_expert_cache_reset_stats(lrun_expert_cache *c);

#endif
