/* kv_offload.h — the device slots of the staged KV caches (OFFLOADED,
 * OFFLOADED_STATIC, QUANTIZED): two device buffers, each one layer of the
 * sequences of the current chunk in the store layout of kv_cache.h. While
 * compute runs layer l in slot l % 2, a copy thread fills slot (l+1) % 2 with
 * layer l+1 from the store (a copy from pinned memory, or a dequantization);
 * after layer l's attention its new entries are written back to the store.
 * The slots are the only device memory of an offloaded cache: at most two
 * layers' worth of the chunk's sequences. */
#ifndef LRUN_KV_OFFLOAD_H
#define LRUN_KV_OFFLOAD_H

#include "kv/kv_cache.h"

/* fixed_bytes > 0: both slots of that size now (static kinds); 0: they grow. */
lrun_status lrun_kv_stage_init(lrun_kv_stage **out, lrun_kv_cache *kv, size_t fixed_bytes);
void lrun_kv_stage_free(lrun_kv_stage *stage);
/* Both slots hold at least bytes (growing them; on failure they are as they were). */
lrun_status lrun_kv_stage_reserve(lrun_kv_stage *stage, size_t bytes);
/* Device bytes of both slots. */
size_t lrun_kv_stage_bytes(const lrun_kv_stage *stage);

void lrun_kv_stage_chunk_begin(lrun_kv_stage *stage, int64_t n, const int64_t *tok_seq, const int64_t *tok_pos);
void lrun_kv_stage_layer_begin(lrun_kv_stage *stage, int64_t layer);
lrun_kv_view lrun_kv_stage_view(const lrun_kv_stage *stage, int64_t seq, int64_t layer);
void lrun_kv_stage_layer_end(lrun_kv_stage *stage, int64_t layer);
void lrun_kv_stage_chunk_end(lrun_kv_stage *stage);

#endif
