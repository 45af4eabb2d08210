/* pool.c — a first-fit sub-allocator over a few large arenas (pool.h). */
#include "core/pool.h"

#include "core/checked.h"
#include "core/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- the pool

/* One block of an arena, free or handed out. Host-side bookkeeping: the
 * arena itself may be device memory the CPU cannot touch. */
typedef struct pool_block {
    size_t offset;            /* from the arena base, bytes */
    size_t size;              /* bytes, a multiple of the pool's align */
    int used;
    struct pool_block *prev;  /* neighbours in address order */
    struct pool_block *next;
} pool_block;

struct lrun_pool_arena {
    uintptr_t base;           /* start address (device or host), align-aligned */
    size_t bytes;             /* size of the arena */
    size_t in_use;            /* bytes of used blocks */
    int own;                  /* 1: reserved for one large block, exactly its size, and never shared
                               * (a hole in it could only be filled by a smaller block, which would
                               * strand the rest); 0: a shared arena of small blocks */
    pool_block *first;        /* lowest address */
    lrun_pool_arena *next;
};

void lrun_pool_init(lrun_pool *pool, size_t limit, size_t arena_bytes, size_t align,
                    lrun_pool_reserve_fn reserve, lrun_pool_unreserve_fn unreserve, void *ctx)
{
    memset(pool, 0, sizeof *pool);
    pool->limit = limit;
    pool->align = align;
    /* An arena smaller than a granule could never hold a block. */
    pool->arena_bytes = arena_bytes < align ? align : arena_bytes & ~(align - 1);
    pool->own_arena_bytes = pool->arena_bytes;
    pool->reserve = reserve;
    pool->unreserve = unreserve;
    pool->ctx = ctx;
}

static void arena_free(lrun_pool *pool, lrun_pool_arena *a)
{
    pool_block *b = a->first;
    while (b) {
        pool_block *n = b->next;
        free(b);
        b = n;
    }
    pool->unreserve(pool->ctx, (void *)a->base);
    pool->reserved -= a->bytes;
    free(a);
}

void lrun_pool_destroy(lrun_pool *pool)
{
    while (pool->arenas) {
        lrun_pool_arena *a = pool->arenas;
        pool->arenas = a->next;
        pool->in_use -= a->in_use;
        arena_free(pool, a);
    }
}

void lrun_pool_trim(lrun_pool *pool)
{
    lrun_pool_arena **link = &pool->arenas;
    while (*link) {
        lrun_pool_arena *a = *link;
        if (a->in_use == 0) {
            *link = a->next;
            arena_free(pool, a);
        } else {
            link = &a->next;
        }
    }
}

/* Carves need bytes from the front of free block b (need <= b->size). */
static lrun_status block_take(lrun_pool *pool, lrun_pool_arena *a, pool_block *b, size_t need)
{
    if (b->size > need) {
        pool_block *rest = malloc(sizeof *rest);
        if (!rest) return lrun_fail_oom(sizeof *rest, 0, "pool: host memory for block bookkeeping");
        rest->offset = b->offset + need;
        rest->size = b->size - need;
        rest->used = 0;
        rest->prev = b;
        rest->next = b->next;
        if (b->next) b->next->prev = rest;
        b->next = rest;
        b->size = need;
    }
    b->used = 1;
    a->in_use += need;
    pool->in_use += need;
    return LRUN_OK;
}

/* Where a request may go: a large one into an idle arena of its own size,
 * a small one into shared arenas; the last resort (a large request when
 * no arena of its own can be had) any free block of a shared arena. */
typedef enum { FIT_OWN, FIT_SHARED } fit_mode;

/* A request of need bytes is large from own_arena_bytes on (or beyond a
 * shared arena); none is under a limit of at most one shared arena, which
 * is then one arena holding every block, as placement assumes (its slack is
 * then the rounding and a released KV layer's hole, cuda/engine_cuda.c). */
static int is_large(const lrun_pool *pool, size_t need)
{
    return pool->limit > pool->arena_bytes && (need >= pool->own_arena_bytes || need > pool->arena_bytes);
}

static lrun_status first_fit(lrun_pool *pool, size_t need, fit_mode mode, void **out, int *found)
{
    *found = 0;
    for (lrun_pool_arena *a = pool->arenas; a; a = a->next) {
        if (a->own != (mode == FIT_OWN) || a->bytes - a->in_use < need) continue;
        /* an own arena takes exactly its size: a larger idle one is trimmed and reserved anew instead */
        if (mode == FIT_OWN && (a->in_use || a->bytes != need)) continue;
        for (pool_block *b = a->first; b; b = b->next) {
            if (b->used || b->size < need) continue;
            lrun_status st = block_take(pool, a, b, need);
            if (st != LRUN_OK) return st;
            *out = (void *)(a->base + b->offset);
            *found = 1;
            return LRUN_OK;
        }
    }
    return LRUN_OK;
}

static lrun_status arena_add(lrun_pool *pool, size_t bytes, int own)
{
    lrun_pool_arena *a = calloc(1, sizeof *a);
    pool_block *b = calloc(1, sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        return lrun_fail_oom(sizeof *a + sizeof *b, 0, "pool: host memory for arena bookkeeping");
    }
    void *base = NULL;
    lrun_status st = pool->reserve(pool->ctx, bytes, &base);
    if (st != LRUN_OK) {
        free(a);
        free(b);
        return st;
    }
    if ((uintptr_t)base & (pool->align - 1)) {
        pool->unreserve(pool->ctx, base);
        free(a);
        free(b);
        return lrun_fail(LRUN_E_INTERNAL, "pool: an arena came back at %p, not %zu-byte aligned", base,
                         pool->align);
    }
    a->base = (uintptr_t)base;
    a->bytes = bytes;
    a->own = own;
    b->size = bytes;
    a->first = b;
    /* Oldest first, so first fit fills the holes of old arenas before the
     * fresh one: fewer arenas stay pinned by a few small blocks. */
    lrun_pool_arena **link = &pool->arenas;
    while (*link) link = &(*link)->next;
    *link = a;
    pool->reserved += bytes;
    pool->n_reserve_calls++;
    return LRUN_OK;
}

/* Size of the arena to reserve for a request of need bytes; 0 when the limit
 * leaves no room for it. */
static size_t arena_size_for(const lrun_pool *pool, size_t need)
{
    size_t room = pool->limit - pool->reserved;
    size_t want = is_large(pool, need) ? need : pool->arena_bytes;
    if (want > room) want = room & ~(pool->align - 1);
    return want >= need ? want : 0;
}

lrun_status lrun_pool_alloc(lrun_pool *pool, size_t bytes, const char *what, void **out)
{
    size_t need;
    if (!lrun_size_align_up(bytes ? bytes : 1, pool->align, &need))
        return lrun_fail_oom(bytes, lrun_pool_largest_free(pool), "pool: %s: %zu bytes is too large",
                             what, bytes);
    const int large = is_large(pool, need);
    const fit_mode mode = large ? FIT_OWN : FIT_SHARED;
    int found;
    lrun_status st = first_fit(pool, need, mode, out, &found);
    if (st != LRUN_OK || found) return st;

    size_t size = arena_size_for(pool, need);
    if (size == 0) {
        /* Idle arenas (a released large block's, an emptied shared one) are
         * in the way of one that fits the request: they go back first. */
        lrun_pool_trim(pool);
        size = arena_size_for(pool, need);
    }
    if (size == 0 && large) {
        /* No room for an arena of its own (a capacity of about one shared
         * arena, or the budget's last bytes): a free run of a shared arena. */
        st = first_fit(pool, need, FIT_SHARED, out, &found);
        if (st != LRUN_OK || found) return st;
    }
    if (size == 0)
        return lrun_fail_oom(bytes, lrun_pool_largest_free(pool),
                             "pool: no free block of %zu bytes for %s (largest free %zu bytes; "
                             "%zu of %zu bytes reserved, %zu in use)",
                             need, what, lrun_pool_largest_free(pool), pool->reserved, pool->limit,
                             pool->in_use);
    st = arena_add(pool, size, large);
    if (st == LRUN_E_OOM && pool->arenas) {
        /* The device refused: hand back idle arenas and try once more. */
        lrun_pool_trim(pool);
        size = arena_size_for(pool, need);
        st = size ? arena_add(pool, size, large) : st;
    }
    if (st != LRUN_OK) return lrun_fail_context(st, "pool: %s", what);
    return first_fit(pool, need, mode, out, &found);
}

lrun_status lrun_pool_release(lrun_pool *pool, void *ptr)
{
    uintptr_t p = (uintptr_t)ptr;
    for (lrun_pool_arena *a = pool->arenas; a; a = a->next) {
        if (p < a->base || p >= a->base + a->bytes) continue;
        for (pool_block *b = a->first; b; b = b->next) {
            if (a->base + b->offset != p) continue;
            if (!b->used) break;
            b->used = 0;
            a->in_use -= b->size;
            pool->in_use -= b->size;
            /* Coalesce with free neighbours so the arena heals. */
            pool_block *n = b->next;
            if (n && !n->used) {
                b->size += n->size;
                b->next = n->next;
                if (n->next) n->next->prev = b;
                free(n);
            }
            pool_block *q = b->prev;
            if (q && !q->used) {
                q->size += b->size;
                q->next = b->next;
                if (b->next) b->next->prev = q;
                free(b);
            }
            return LRUN_OK;
        }
        break;
    }
    return lrun_fail(LRUN_E_ARG, "pool: release of %p: not a block in use (double free or foreign pointer)",
                     ptr);
}

size_t lrun_pool_largest_free(const lrun_pool *pool)
{
    /* the room for a new arena once idle arenas are given back (as an allocation does) */
    size_t room = pool->limit - pool->reserved;
    for (const lrun_pool_arena *a = pool->arenas; a; a = a->next)
        if (a->in_use == 0) room += a->bytes;
    size_t best = room & ~(pool->align - 1);
    for (const lrun_pool_arena *a = pool->arenas; a; a = a->next)
        for (const pool_block *b = a->first; b; b = b->next)
            if (!b->used && b->size > best) best = b->size;
    return best;
}

size_t lrun_pool_stranded(const lrun_pool *pool)
{
    size_t n = 0;
    for (const lrun_pool_arena *a = pool->arenas; a; a = a->next)
        if (a->in_use) n += a->bytes - a->in_use;
    return n;
}

size_t lrun_pool_free_block_count(const lrun_pool *pool)
{
    size_t n = 0;
    for (const lrun_pool_arena *a = pool->arenas; a; a = a->next)
        for (const pool_block *b = a->first; b; b = b->next) n += !b->used;
    return n;
}

size_t lrun_pool_arena_count(const lrun_pool *pool)
{
    size_t n = 0;
    for (const lrun_pool_arena *a = pool->arenas; a; a = a->next) n++;
    return n;
}
