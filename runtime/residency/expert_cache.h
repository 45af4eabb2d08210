/* expert_cache.h — the bookkeeping of a cache of experts in device memory
 * (docs/moe.md "The expert cache"): a fixed number of slots, each holding
 * one expert (its gate, up and down slices) of one block; least recently
 * used replacement; hits, misses and bytes copied per block. Backend-free
 * (the CUDA engine does the copies into the slots, engine_cuda_moe.c), so
 * tests/c/test_expert_cache.c checks the replacement order on any machine.
 *
 * Uses are numbered by a tick the cache keeps; the victim of a miss is the
 * free slot of the lowest index, else the slot whose last use is oldest.
 * A slot acquired in this chunk must not be evicted before its expert has
 * run: the engine runs each expert right after acquiring its slot, and
 * ordering on the device (events) keeps a copy from overwriting a slot
 * whose previous expert has not finished. */
#ifndef LRUN_EXPERT_CACHE_H
#define LRUN_EXPERT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "lrun.h"

typedef struct lrun_expert_cache {
    int64_t n_slots, n_layer, n_expert;
    int64_t *slot_of;     /* (n_layer, n_expert) the slot holding expert x of block l, or -1 */
    int64_t *key;         /* (n_slots) l·n_expert + x held, or -1 when free */
    uint64_t *last_use;   /* (n_slots) the tick of its last acquire */
    uint64_t tick;        /* acquires so far */
    int64_t *hits;        /* (n_layer) acquires that found their expert */
    int64_t *misses;      /* (n_layer) acquires that had to copy it */
    int64_t *prefetches;  /* (n_layer) slots taken ahead of use (lrun_expert_cache_prefetch) */
    uint64_t bytes_copied;/* into slots, all blocks */
} lrun_expert_cache;

/* An empty cache of n_slots (>= 1) slots for n_layer blocks of n_expert experts. */
lrun_status lrun_expert_cache_init(lrun_expert_cache *c, int64_t n_slots, int64_t n_layer, int64_t n_expert);
void lrun_expert_cache_free(lrun_expert_cache *c);
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
/* Whether expert x of block layer is in a slot (no use counted). */
int lrun_expert_cache_holds(const lrun_expert_cache *c, int64_t layer, int64_t x);
void lrun_expert_cache_copied(lrun_expert_cache *c, uint64_t bytes);
/* Zeroes hits, misses, prefetches and bytes; the slots keep their experts. */
void lrun_expert_cache_reset_stats(lrun_expert_cache *c);

#endif
