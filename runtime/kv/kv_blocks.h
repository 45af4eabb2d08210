/* kv_blocks.h — the paged store of the exact KV caches (dynamic, static,
 * offloaded, offloaded_static): fixed blocks of LRUN_KV_BLOCK positions with
 * reference counts, and per sequence a block table. Copying a sequence
 * shares its blocks (no bytes move); a sequence about to write into a
 * partly filled block it shares first copies that block (copy on write).
 *
 * A block holds every layer of its positions:
 *
 *   layer l at l·2·LRUN_KV_BLOCK·kv_dim elements:
 *     keys   (LRUN_KV_BLOCK, n_head_kv, head_dim)
 *     values (n_head_kv, head_dim, LRUN_KV_BLOCK)   transposed, as in kv_cache.h
 *
 * Blocks are zeroed when they are taken, so values past a sequence's length
 * are zero or, in a block shared with a longer sequence, that sequence's
 * finite values: attention multiplies them by p = 0 either way. Memory is
 * the device's for resident kinds and pinned host memory for offloaded ones;
 * static kinds take every block at init and keep their memory in the pool. */
#ifndef LRUN_KV_BLOCKS_H
#define LRUN_KV_BLOCKS_H

#include "kv/kv_cache.h"

/* Positions per block: a multiple of LRUN_KV_PAD, small enough that a copy
 * on write costs little, large enough that per-block overheads vanish. */
#define LRUN_KV_BLOCK 64

typedef struct lrun_kv_pool {
    size_t block_bytes;
    int64_t n_ids;        /* block ids: n_seq · blocks per sequence, enough for any sharing */
    void **mem;           /* (n_ids) block memory, NULL while not allocated */
    int32_t *ref;         /* (n_ids) references; 0: free */
    int32_t *free_ids;    /* (n_ids) stack of ids with ref 0 */
    int64_t n_free;
    int64_t n_mem;        /* blocks with memory now */
    /* reorder's new tables, built aside (sources may be destinations too); taken
     * here once so a beam step allocates nothing */
    int32_t *re_ids;      /* (n_ids) */
    int64_t *re_nb, *re_len; /* (n_seq) */
} lrun_kv_pool;

/* Bytes of one block (every layer's keys and values), and the blocks a
 * sequence of n_ctx_max positions takes: what the pool allocates, and what
 * lrun_kv_cache_size counts. */
size_t lrun_kv_block_bytes(const lrun_kv_cache *kv);
int64_t lrun_kv_blocks_per_seq(const lrun_kv_cache *kv);

lrun_status lrun_kv_pool_init(lrun_kv_cache *kv);
void lrun_kv_pool_free(lrun_kv_cache *kv);
/* Device bytes of the blocks (0 for an offloaded store). */
size_t lrun_kv_pool_device_bytes(const lrun_kv_cache *kv);

/* Byte offsets of a layer's keys and values inside a block. */
size_t lrun_kv_block_k_off(const lrun_kv_cache *kv, int64_t layer);
size_t lrun_kv_block_v_off(const lrun_kv_cache *kv, int64_t layer);

/* Room for n_pos positions in rec: new blocks, and a private copy of a
 * shared, partly filled last block it will write into. On failure rec is as
 * it was. Returns bytes copied by copy on write in *copied. */
lrun_status lrun_kv_paged_reserve(lrun_kv_cache *kv, lrun_kv_seq *rec, int64_t seq, int64_t n_pos, size_t *copied);
void lrun_kv_paged_truncate(lrun_kv_cache *kv, lrun_kv_seq *rec, int64_t len);
void lrun_kv_paged_release(lrun_kv_cache *kv, lrun_kv_seq *rec);
/* dst shares src's blocks (dst's own are released first); no bytes move. */
void lrun_kv_paged_share(lrun_kv_cache *kv, lrun_kv_seq *dst, const lrun_kv_seq *src);
/* Sequences [0, n) take the block tables of src_of_dst (sharing). */
lrun_status lrun_kv_paged_reorder(lrun_kv_cache *kv, const int64_t *src_of_dst, int64_t n);

/* Slot traffic of the offloaded kinds (kv_cache.h's store entry points). */
size_t lrun_kv_paged_load(const lrun_kv_cache *kv, const lrun_kv_seq *rec, int64_t layer, int64_t lo, void *k, void *v,
                          int64_t cap);
size_t lrun_kv_paged_write_back(const lrun_kv_cache *kv, const lrun_kv_seq *rec, int64_t layer, int64_t lo,
                                int64_t hi, const void *k, const void *v, int64_t cap);

#endif
