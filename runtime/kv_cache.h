/* kv_cache.h — the KV cache of an engine: per sequence slot, per layer, the
 * keys and values of every stored position, in f16 (llama.cpp's default) or
 * f32 (what llama.cpp's f32 cache computes with, bit for bit).
 *
 * Memory comes from the device layer (lrun_device_alloc), so it counts in the
 * device budget and running out is an ordinary LRUN_E_OOM naming "KV cache".
 * One allocation per sequence holds all its layers, each layer's keys then
 * its values, cap·n_head_kv·head_dim elements each:
 *
 *   keys   (cap, n_head_kv, head_dim)   a position's keys contiguous,
 *                                       positions kv_dim = n_head_kv*head_dim apart
 *   values (n_head_kv, head_dim, cap)   transposed, as llama.cpp stores V without
 *                                       flash attention: each value dim's positions
 *                                       contiguous, dims cap apart
 *
 * Attention dots both ways over contiguous memory: q·k_j over a key row, and
 * p·v over the positions of one value dim.
 *
 * The attention reads the values of each dim up to the positions it sees
 * rounded up to LRUN_KV_PAD, as llama.cpp reads its zeroed cache cells (its
 * softmax gives them p = 0): every cap is a multiple of LRUN_KV_PAD, and the
 * values of positions [len, len rounded up to LRUN_KV_PAD) are kept zero
 * (reserve zeroes the groups new positions enter, truncate zeroes what it
 * forgets, copies carry the zeros along). */
#ifndef LRUN_KV_CACHE_H
#define LRUN_KV_CACHE_H

#include "lrun.h"

#define LRUN_KV_PAD 32
/* A dynamic sequence's first capacity, positions; it doubles from there (lrun_engine_estimate). */
#define LRUN_KV_MIN_CAP 32

typedef struct lrun_kv_seq {
    void *data;       /* (n_layer, [keys, values]) as above, NULL while cap is 0 */
    int64_t len;      /* positions stored */
    int64_t cap;      /* positions allocated, a multiple of LRUN_KV_PAD */
    size_t bytes;     /* bytes of data */
} lrun_kv_seq;

typedef struct lrun_kv_cache {
    lrun_device *device;
    lrun_cache_kind kind;
    lrun_dtype dtype;     /* LRUN_DTYPE_F16 or LRUN_DTYPE_F32 */
    size_t elem_bytes;    /* 2 or 4 */
    int64_t n_layer, n_head_kv, head_dim;
    int64_t n_seq;        /* sequence slots */
    int64_t n_ctx_max;    /* positions per sequence, at most */
    lrun_kv_seq *seqs;    /* (n_seq) */
} lrun_kv_cache;

/* STATIC allocates n_ctx_max positions for every slot here; DYNAMIC allocates
 * nothing until a sequence grows. dtype: LRUN_DTYPE_F16 or LRUN_DTYPE_F32. */
lrun_status lrun_kv_cache_init(lrun_kv_cache *kv, lrun_device *device, lrun_cache_kind kind, lrun_dtype dtype,
                               int64_t n_layer, int64_t n_head_kv, int64_t head_dim, int64_t n_seq,
                               int64_t n_ctx_max);
void lrun_kv_cache_free(lrun_kv_cache *kv);

/* Makes room for n_pos positions in seq (doubling a dynamic cache) and zeroes
 * the values of the padding groups positions up to n_pos enter. On failure
 * the sequence is unchanged. LRUN_E_ARG when n_pos > n_ctx_max. */
lrun_status lrun_kv_cache_reserve(lrun_kv_cache *kv, int64_t seq, int64_t n_pos);

/* Keys of one layer of seq: (cap, n_head_kv, head_dim) elements of dtype. */
static inline void *lrun_kv_cache_k(const lrun_kv_cache *kv, int64_t seq, int64_t layer)
{
    const lrun_kv_seq *s = &kv->seqs[seq];
    return (char *)s->data +
           (size_t)(2 * layer) * (size_t)s->cap * (size_t)(kv->n_head_kv * kv->head_dim) * kv->elem_bytes;
}
/* Values of one layer of seq, transposed: (n_head_kv, head_dim, cap) elements of dtype. */
static inline void *lrun_kv_cache_v(const lrun_kv_cache *kv, int64_t seq, int64_t layer)
{
    const lrun_kv_seq *s = &kv->seqs[seq];
    return (char *)s->data +
           (size_t)(2 * layer + 1) * (size_t)s->cap * (size_t)(kv->n_head_kv * kv->head_dim) * kv->elem_bytes;
}

/* Forgets positions from len on; a dynamic sequence emptied to 0 gives its memory back. */
lrun_status lrun_kv_cache_truncate(lrun_kv_cache *kv, int64_t seq, int64_t len);
/* dst becomes a copy of src (growing dst as needed; on failure dst is unchanged). */
lrun_status lrun_kv_cache_copy(lrun_kv_cache *kv, int64_t dst, int64_t src);

#endif
