/* kv_stage.h — the device slots of the staged KV caches (OFFLOADED,
 * OFFLOADED_STATIC, QUANTIZED), over the staging ring of
 * residency/ring.h: two slots, each one layer of the sequences of the
 * current chunk in the store layout of kv_cache.h. While compute runs layer
 * l in slot l % 2, the ring's fill thread fills slot (l+1) % 2 with layer
 * l+1 from the store (a copy from pinned memory, or a dequantization); at
 * layer l's release its new entries are written back to the store. The
 * slots are the only device memory of a staged cache: at most two layers'
 * worth of the chunk's sequences.
 *
 * The stage knows the store only through its owner's callbacks (the cache,
 * kv_cache.c), so it does not include kv_cache.h. */
#ifndef LRUN_KV_STAGE_H
#define LRUN_KV_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "lrun.h"
#include "core/device.h"

typedef struct lrun_kv_stage lrun_kv_stage;

/* The cache as the stage sees it: geometry and the store's three calls
 * (kv_cache.h: lrun_kv_store_load, _write_back, _chunk_done). */
typedef struct lrun_kv_stage_opts {
    lrun_device *device;   /* whose budget the slots come from */
    int64_t n_layer, n_seq, kv_dim;
    size_t elem_bytes;     /* 2 or 4 */
    int64_t pad;           /* a sequence's positions in a slot are rounded up to this (LRUN_KV_PAD) */
    size_t fixed_bytes;    /* > 0: both slots of that size now (static kinds); 0: they grow */
    uint64_t *bytes_moved; /* the cache's counter: bytes between store and slots, both ways */
    size_t (*load)(void *owner, int64_t seq, int64_t layer, int64_t lo, void *k, void *v, int64_t cap);
    size_t (*write_back)(void *owner, int64_t seq, int64_t layer, int64_t lo, int64_t hi, const void *k,
                         const void *v, int64_t cap);
    void (*chunk_done)(void *owner, int64_t seq, int64_t hi);
    void *owner;
} lrun_kv_stage_opts;

lrun_status lrun_kv_stage_init(lrun_kv_stage **out, const lrun_kv_stage_opts *opts);
void lrun_kv_stage_free(lrun_kv_stage *stage);
/* Both slots hold at least bytes (growing them; on failure they are as they were). */
lrun_status lrun_kv_stage_reserve(lrun_kv_stage *stage, size_t bytes);
/* Device bytes of both slots. */
size_t lrun_kv_stage_bytes(const lrun_kv_stage *stage);

/* A chunk: begin lays the chunk's sequences out in the slots and starts
 * filling layer 0; layer_begin waits for the layer's fill, layer_end writes
 * its new entries back and releases its slot. The store's fills cannot
 * fail, so neither can these. */
void lrun_kv_stage_chunk_begin(lrun_kv_stage *stage, int64_t n, const int64_t *tok_seq, const int64_t *tok_pos);
void lrun_kv_stage_layer_begin(lrun_kv_stage *stage, int64_t layer);
/* Where seq's keys (cap, kv_dim) and values (kv_dim, cap) of layer are in its slot. */
void lrun_kv_stage_view(const lrun_kv_stage *stage, int64_t seq, int64_t layer, void **k, void **v, int64_t *cap);
void lrun_kv_stage_layer_end(lrun_kv_stage *stage, int64_t layer);
void lrun_kv_stage_chunk_end(lrun_kv_stage *stage);

#endif
