/* pool.h — the device pool allocator: few large arenas, sub-allocated.
 *
 * Plain C over opaque base addresses: the allocator never touches the
 * arenas' bytes, so they may be memory the CPU cannot read. On a GPU the
 * arenas come from cudaMalloc (cuda/cuda_backend.c), in tests from host
 * memory. Allocating on a device goes through a pool so that nothing calls
 * cudaMalloc/cudaFree per layer per token. */
#ifndef LRUN_POOL_H
#define LRUN_POOL_H

#include "lrun.h"

// ---------------------------------------------------------------- the pool

/* Arena reservations go through these, so the allocator never sees CUDA. */
typedef lrun_status (*lrun_pool_reserve_fn)(void *ctx, size_t bytes, void **base);
typedef void (*lrun_pool_unreserve_fn)(void *ctx, void *base);

typedef struct lrun_pool_arena lrun_pool_arena;

/* First-fit free list over a few large arenas, reserved lazily. Two kinds
 * of arena, never mixed:
 *   - shared arenas (arena_bytes) hold small blocks, first fit in address
 *     order; a released block merges with free neighbours;
 *   - a large block (own_arena_bytes or more) has an arena of exactly its
 *     size to itself. Released, the arena is idle: an equal request takes
 *     it again, any other one leaves it alone, and when a request finds no
 *     room every idle arena is given back (trim) first.
 * So a large block never lands in a hole that a smaller block left, and
 * every byte of the limit is reservable by one large block except the free
 * room inside shared arenas still in use (lrun_pool_stranded): what the
 * budget says is free is what the pool can give, less that bound
 * (docs/residency.md "Fragmentation"). The exceptions: under a limit of
 * at most one shared arena every block is shared (one arena holds all);
 * when no arena of its own fits, a large block takes a free run of a shared
 * arena (the budget's last bytes). Not thread-safe by itself
 * (its owner holds a lock around it). */
typedef struct lrun_pool {
    size_t limit;            /* most bytes all arenas may reserve together */
    size_t arena_bytes;      /* size of a fresh shared arena, bytes */
    size_t own_arena_bytes;  /* a request of at least this many bytes gets an arena of exactly its size
                              * when no free block holds it, so large blocks never strand a shared
                              * arena's tail (lrun_pool_init: arena_bytes) */
    size_t align;            /* block alignment and size granule, bytes; a power of two */
    size_t reserved;         /* bytes reserved in arenas now */
    size_t in_use;           /* bytes handed out now, rounded to align */
    size_t n_reserve_calls;  /* arenas reserved so far (a pool should need few) */
    lrun_pool_reserve_fn reserve;
    lrun_pool_unreserve_fn unreserve;
    void *ctx;
    lrun_pool_arena *arenas; /* singly linked, oldest first */
} lrun_pool;

void lrun_pool_init(lrun_pool *pool, size_t limit, size_t arena_bytes, size_t align,
                    lrun_pool_reserve_fn reserve, lrun_pool_unreserve_fn unreserve, void *ctx);
/* Gives back every arena. Blocks still allocated are lost with them. */
void lrun_pool_destroy(lrun_pool *pool);
/* A block of at least bytes (0 counts as one granule), align-aligned.
 * LRUN_E_OOM when neither a free block nor a new arena within limit fits it. */
lrun_status lrun_pool_alloc(lrun_pool *pool, size_t bytes, const char *what, void **out);
/* LRUN_E_ARG when ptr is not the start of a block in use (a double free). */
lrun_status lrun_pool_release(lrun_pool *pool, void *ptr);
/* Gives back arenas with nothing allocated in them. */
void lrun_pool_trim(lrun_pool *pool);
/* The largest single block one allocation could get, bytes: the room for a
 * new arena once idle arenas are given back, or a shared arena's free run. */
size_t lrun_pool_largest_free(const lrun_pool *pool);
/* Free bytes inside arenas that hold blocks (shared arenas' holes and
 * tails): reserved, so no large block can have them. */
size_t lrun_pool_stranded(const lrun_pool *pool);
/* Free blocks across all arenas: 1 per arena when nothing is fragmented. */
size_t lrun_pool_free_block_count(const lrun_pool *pool);
size_t lrun_pool_arena_count(const lrun_pool *pool);

#endif
