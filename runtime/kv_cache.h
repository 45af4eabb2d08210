/* kv_cache.h — the KV cache of an engine: per sequence slot, per layer, the
 * keys and values of every stored position, in f16 (llama.cpp's default).
 *
 * Memory comes from the device layer (lrun_device_alloc), so it counts in the
 * device budget and running out is an ordinary LRUN_E_OOM naming "KV cache".
 * One allocation per sequence holds all its layers:
 *
 *   uint16_t *data;  // (n_layer, 2, cap, n_head_kv, head_dim): [l][0] keys, [l][1] values
 *
 * so a position's keys for one layer are n_head_kv*head_dim contiguous halves
 * and consecutive positions are kv_stride = n_head_kv*head_dim apart. */
#ifndef LRUN_KV_CACHE_H
#define LRUN_KV_CACHE_H

#include "lrun.h"

typedef struct lrun_kv_seq {
    uint16_t *data;   /* (n_layer, 2, cap, n_head_kv, head_dim), NULL while cap is 0 */
    int64_t len;      /* positions stored */
    int64_t cap;      /* positions allocated */
    size_t bytes;     /* bytes of data */
} lrun_kv_seq;

typedef struct lrun_kv_cache {
    lrun_device *device;
    lrun_cache_kind kind;
    int64_t n_layer, n_head_kv, head_dim;
    int64_t n_seq;        /* sequence slots */
    int64_t n_ctx_max;    /* positions per sequence, at most */
    lrun_kv_seq *seqs;    /* (n_seq) */
} lrun_kv_cache;

/* STATIC allocates n_ctx_max positions for every slot here; DYNAMIC allocates
 * nothing until a sequence grows. */
lrun_status lrun_kv_cache_init(lrun_kv_cache *kv, lrun_device *device, lrun_cache_kind kind, int64_t n_layer,
                               int64_t n_head_kv, int64_t head_dim, int64_t n_seq, int64_t n_ctx_max);
void lrun_kv_cache_free(lrun_kv_cache *kv);

/* Makes room for n_pos positions in seq (doubling a dynamic cache). On
 * failure the sequence is unchanged. LRUN_E_ARG when n_pos > n_ctx_max. */
lrun_status lrun_kv_cache_reserve(lrun_kv_cache *kv, int64_t seq, int64_t n_pos);

/* Keys / values of one layer of seq: (cap, n_head_kv, head_dim). */
static inline uint16_t *lrun_kv_cache_k(const lrun_kv_cache *kv, int64_t seq, int64_t layer)
{
    const lrun_kv_seq *s = &kv->seqs[seq];
    return s->data + (size_t)(2 * layer) * (size_t)s->cap * (size_t)(kv->n_head_kv * kv->head_dim);
}
static inline uint16_t *lrun_kv_cache_v(const lrun_kv_cache *kv, int64_t seq, int64_t layer)
{
    const lrun_kv_seq *s = &kv->seqs[seq];
    return s->data + (size_t)(2 * layer + 1) * (size_t)s->cap * (size_t)(kv->n_head_kv * kv->head_dim);
}

/* Forgets positions from len on; a dynamic sequence emptied to 0 gives its memory back. */
lrun_status lrun_kv_cache_truncate(lrun_kv_cache *kv, int64_t seq, int64_t len);
/* dst becomes a copy of src (growing dst as needed; on failure dst is unchanged). */
lrun_status lrun_kv_cache_copy(lrun_kv_cache *kv, int64_t dst, int64_t src);

#endif
