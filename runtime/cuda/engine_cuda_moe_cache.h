/* engine_cuda_moe_cache.h — the expert cache of the CUDA engine
 * (engine_cuda_moe_cache.c, docs/moe.md "The expert cache"): host-computed
 * experts copied on demand into device slots instead of computed on the
 * CPU. Internal to runtime/cuda/. */
#ifndef LRUN_ENGINE_CUDA_MOE_CACHE_H
#define LRUN_ENGINE_CUDA_MOE_CACHE_H

#include "cuda/engine_cuda_internal.h"
#include "residency/expert_cache.h"

struct cuda_moe_cache;

/* A cache of e->expert_cache_slots slots (-1: as many as half the device's
 * free budget holds, at most one per host expert) for the blocks whose
 * expert tensors are all host-computed; *out NULL when the option is 0 or
 * no block has host experts. */
lrun_status lrun_cuda_moe_cache_init(lrun_cuda_engine *e, struct cuda_moe_cache **out);
void lrun_cuda_moe_cache_free(lrun_cuda_engine *e, struct cuda_moe_cache *c);
/* Whether block layer's experts run from the cache (instead of on the host). */
int lrun_cuda_moe_cache_covers(const struct cuda_moe_cache *c, int64_t layer);
int64_t lrun_cuda_moe_cache_slots(const struct cuda_moe_cache *c);
/* The slot of expert x of block layer (g: its gate, up, down stacked
 * tensors on the host): a miss copies the three slices in on the copy
 * stream once the slot's previous expert has run; the compute stream then
 * waits for the copy. Every acquired slot is released (after the kernels
 * that read it are queued) before the chunk ends. */
lrun_status lrun_cuda_moe_cache_acquire(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t layer,
                                        const lrun_weight_ref g[3], int64_t x, int64_t *slot);
lrun_status lrun_cuda_moe_cache_release(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t slot);
/* ---- a prefill chunk's experts that are already in slots (engine_cuda_moe_stream.c) */

/* The slot holding expert x of block layer, or -1. Counts no use and moves
 * nothing: a prompt neither admits nor evicts (no churn from one long chunk
 * touching every expert), and LFU's counts stay the decode steps'. */
int64_t lrun_cuda_moe_cache_find(const struct cuda_moe_cache *c, int64_t layer, int64_t x);
/* The compute stream waits for slot's last copy (a decode step's admission
 * or miss may still be in flight) before a product reads it;
 * lrun_cuda_moe_cache_release after the products are queued, so a later copy
 * into the slot waits for them. */
lrun_status lrun_cuda_moe_cache_read(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t slot);
/* The chunk's slots are all released: replacement may take them again (lrun_expert_cache_settle). */
void lrun_cuda_moe_cache_settle(struct cuda_moe_cache *c);
/* After a decode chunk of cached block layer: remembers token 0's experts
 * (ids, k of them) and prefetches the next cached block's experts of its
 * last decode chunk (the previous token's choices there), on the copy
 * stream, when the cache has at least 2k slots (LRUN_CUDA_MOE_PREFETCH=0:
 * never). */
lrun_status lrun_cuda_moe_cache_decoded(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t layer,
                                        const int32_t *ids);
/* Slot s's copy of projection i (0 gate, 1 up, 2 down); the stride between slots of projection i. */
const void *lrun_cuda_moe_cache_data(const struct cuda_moe_cache *c, int i, int64_t slot);
size_t lrun_cuda_moe_cache_stride(const struct cuda_moe_cache *c, int i);
/* ---- hybrid (e->expert_cache_hybrid; residency/expert_admit.h): hits from slots, misses on the host */

/* Whether the cache runs hybrid: a decode chunk's misses computed on the host, admitted in the background. */
int lrun_cuda_moe_cache_hybrid(const struct cuda_moe_cache *c);
/* One chosen expert x of block layer: *slot its slot when it is a hit (held
 * and its copy complete, asked with cudaEventQuery: never waits), else -1
 * (a miss, for the host). Counted for LFU and in the stats. */
lrun_status lrun_cuda_moe_cache_lookup(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t layer, int64_t x,
                                       int64_t *slot);
/* After the host computed block layer's n_missed misses (missed: their
 * expert ids, distinct): admits the ones whose counts beat their victims'
 * (at most the cap a block and step, and as many as free staging buffers),
 * their copies queued on the copy stream; nothing waits for them. */
lrun_status lrun_cuda_moe_cache_admit(lrun_cuda_engine *e, struct cuda_moe_cache *c, int64_t layer,
                                      const lrun_weight_ref g[3], const int32_t *missed, int64_t n_missed);
/* Hits, misses and bytes copied (reset with the engine's stats). */
lrun_expert_cache *lrun_cuda_moe_cache_book(struct cuda_moe_cache *c);

#endif
