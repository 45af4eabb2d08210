/* kv_cache.c — per-sequence f16 or f32 KV storage, dynamic (doubling) or static. */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "device.h"
#include "error.h"

/* A dynamic cache starts this small; doubling makes the copies amortised O(1).
 * A multiple of LRUN_KV_PAD, as every cap is. */
#define KV_MIN_CAP LRUN_KV_MIN_CAP

static int64_t pad_up(int64_t n) { return (n + LRUN_KV_PAD - 1) / LRUN_KV_PAD * LRUN_KV_PAD; }

// ---------------------------------------------------------------- sizes

static int seq_bytes(const lrun_kv_cache *kv, int64_t cap, size_t *out)
{
    size_t n;
    return lrun_size_mul((size_t)kv->n_layer * 2, (size_t)cap, &n) &&
           lrun_size_mul(n, (size_t)(kv->n_head_kv * kv->head_dim), &n) && lrun_size_mul(n, kv->elem_bytes, out);
}

/* Copies the first len positions of every layer of src (src_cap positions)
 * into dst (dst_cap positions): key rows in one piece per layer, each
 * transposed value dim on its own. len may reach into the zero padding. */
static void copy_positions(const lrun_kv_cache *kv, char *dst, int64_t dst_cap, const char *src, int64_t src_cap,
                           int64_t len)
{
    const int64_t kv_dim = kv->n_head_kv * kv->head_dim;
    const size_t eb = kv->elem_bytes, layer_dst = (size_t)(dst_cap * kv_dim) * eb,
                 layer_src = (size_t)(src_cap * kv_dim) * eb;
    for (int64_t l = 0; l < kv->n_layer; l++) {
        const char *sk = src + (size_t)(2 * l) * layer_src, *sv = sk + layer_src;
        char *dk = dst + (size_t)(2 * l) * layer_dst, *dv = dk + layer_dst;
        memcpy(dk, sk, (size_t)(len * kv_dim) * eb);
        for (int64_t c = 0; c < kv_dim; c++)
            memcpy(dv + (size_t)(c * dst_cap) * eb, sv + (size_t)(c * src_cap) * eb, (size_t)len * eb);
    }
}

/* Moves seq's storage to cap positions, keeping its len positions. */
static lrun_status seq_realloc(lrun_kv_cache *kv, int64_t seq, int64_t cap)
{
    lrun_kv_seq *s = &kv->seqs[seq];
    size_t bytes;
    if (!seq_bytes(kv, cap, &bytes))
        return lrun_fail(LRUN_E_OOM, "KV cache: %lld positions of sequence %lld overflow size_t", (long long)cap,
                         (long long)seq);
    void *mem;
    lrun_status st = lrun_device_alloc(kv->device, bytes, "KV cache", &mem);
    if (st != LRUN_OK)
        return lrun_fail_context(st, "KV cache: sequence %lld, %lld positions", (long long)seq, (long long)cap);
    if (s->data && s->len > 0) copy_positions(kv, mem, cap, s->data, s->cap, pad_up(s->len)); /* with the zeros */
    if (s->data) lrun_device_release(kv->device, s->data, s->bytes);
    s->data = mem;
    s->cap = cap;
    s->bytes = bytes;
    return LRUN_OK;
}

/* Zeroes positions [from, to) of every value dim of every layer of seq. */
static void zero_values(const lrun_kv_cache *kv, const lrun_kv_seq *s, int64_t from, int64_t to)
{
    if (!s->data || from >= to) return;
    const int64_t kv_dim = kv->n_head_kv * kv->head_dim;
    const size_t eb = kv->elem_bytes, layer = (size_t)(s->cap * kv_dim) * eb;
    for (int64_t l = 0; l < kv->n_layer; l++) {
        char *v = (char *)s->data + (size_t)(2 * l + 1) * layer;
        for (int64_t c = 0; c < kv_dim; c++) memset(v + (size_t)(c * s->cap + from) * eb, 0, (size_t)(to - from) * eb);
    }
}

// ---------------------------------------------------------------- lifecycle

lrun_status lrun_kv_cache_init(lrun_kv_cache *kv, lrun_device *device, lrun_cache_kind kind, lrun_dtype dtype,
                               int64_t n_layer, int64_t n_head_kv, int64_t head_dim, int64_t n_seq,
                               int64_t n_ctx_max)
{
    memset(kv, 0, sizeof *kv);
    if (n_layer <= 0 || n_head_kv <= 0 || head_dim <= 0 || n_seq <= 0 || n_ctx_max <= 0)
        return lrun_fail(LRUN_E_ARG, "KV cache: sizes must be positive (layers %lld, kv heads %lld, head dim "
                         "%lld, sequences %lld, positions %lld)", (long long)n_layer, (long long)n_head_kv,
                         (long long)head_dim, (long long)n_seq, (long long)n_ctx_max);
    if (kind != LRUN_CACHE_KIND_DYNAMIC && kind != LRUN_CACHE_KIND_STATIC)
        return lrun_fail(LRUN_E_ARG, "KV cache: unknown cache kind %d", (int)kind);
    if (dtype != LRUN_DTYPE_F16 && dtype != LRUN_DTYPE_F32)
        return lrun_fail(LRUN_E_ARG, "KV cache: element type %s is not f16 or f32", lrun_dtype_name(dtype));
    kv->device = device;
    kv->kind = kind;
    kv->dtype = dtype;
    kv->elem_bytes = dtype == LRUN_DTYPE_F16 ? 2 : 4;
    kv->n_layer = n_layer;
    kv->n_head_kv = n_head_kv;
    kv->head_dim = head_dim;
    kv->n_seq = n_seq;
    kv->n_ctx_max = n_ctx_max;
    kv->seqs = calloc((size_t)n_seq, sizeof *kv->seqs);
    if (!kv->seqs) return lrun_fail_oom((size_t)n_seq * sizeof *kv->seqs, 0, "KV cache: %lld sequence records",
                                        (long long)n_seq);
    if (kind == LRUN_CACHE_KIND_STATIC) {
        for (int64_t s = 0; s < n_seq; s++) {
            lrun_status st = seq_realloc(kv, s, pad_up(n_ctx_max));
            if (st != LRUN_OK) {
                lrun_kv_cache_free(kv);
                return st;
            }
        }
    }
    return LRUN_OK;
}

void lrun_kv_cache_free(lrun_kv_cache *kv)
{
    if (!kv->seqs) return;
    for (int64_t s = 0; s < kv->n_seq; s++)
        if (kv->seqs[s].data) lrun_device_release(kv->device, kv->seqs[s].data, kv->seqs[s].bytes);
    free(kv->seqs);
    kv->seqs = NULL;
}

// ---------------------------------------------------------------- growth

lrun_status lrun_kv_cache_reserve(lrun_kv_cache *kv, int64_t seq, int64_t n_pos)
{
    if (seq < 0 || seq >= kv->n_seq)
        return lrun_fail(LRUN_E_ARG, "KV cache: sequence %lld out of range [0, %lld)", (long long)seq,
                         (long long)kv->n_seq);
    if (n_pos > kv->n_ctx_max)
        return lrun_fail(LRUN_E_ARG, "KV cache: sequence %lld would hold %lld positions, more than n_ctx_max %lld",
                         (long long)seq, (long long)n_pos, (long long)kv->n_ctx_max);
    lrun_kv_seq *s = &kv->seqs[seq];
    if (n_pos > s->cap) {
        int64_t cap = s->cap > 0 ? s->cap : KV_MIN_CAP;
        while (cap < n_pos) cap *= 2;
        if (cap > pad_up(kv->n_ctx_max)) cap = pad_up(kv->n_ctx_max);
        lrun_status st = seq_realloc(kv, seq, cap);
        if (st != LRUN_OK) return st;
    }
    /* the padding groups the new positions enter start as zeros */
    zero_values(kv, s, pad_up(s->len), pad_up(n_pos));
    return LRUN_OK;
}

lrun_status lrun_kv_cache_truncate(lrun_kv_cache *kv, int64_t seq, int64_t len)
{
    if (seq < 0 || seq >= kv->n_seq)
        return lrun_fail(LRUN_E_ARG, "KV cache: sequence %lld out of range [0, %lld)", (long long)seq,
                         (long long)kv->n_seq);
    lrun_kv_seq *s = &kv->seqs[seq];
    if (len < 0 || len > s->len)
        return lrun_fail(LRUN_E_ARG, "KV cache: cannot truncate sequence %lld of %lld positions to %lld",
                         (long long)seq, (long long)s->len, (long long)len);
    zero_values(kv, s, len, pad_up(s->len)); /* the forgotten values become padding */
    s->len = len;
    if (len == 0 && kv->kind == LRUN_CACHE_KIND_DYNAMIC && s->data) {
        lrun_device_release(kv->device, s->data, s->bytes);
        s->data = NULL;
        s->cap = 0;
        s->bytes = 0;
    }
    return LRUN_OK;
}

lrun_status lrun_kv_cache_copy(lrun_kv_cache *kv, int64_t dst, int64_t src)
{
    if (src < 0 || src >= kv->n_seq || dst < 0 || dst >= kv->n_seq)
        return lrun_fail(LRUN_E_ARG, "KV cache: copy %lld -> %lld: sequences are [0, %lld)", (long long)src,
                         (long long)dst, (long long)kv->n_seq);
    if (src == dst) return LRUN_OK;
    const lrun_kv_seq *s = &kv->seqs[src];
    lrun_kv_seq *d = &kv->seqs[dst];
    if (s->len == 0) return lrun_kv_cache_truncate(kv, dst, 0);
    lrun_status st = lrun_kv_cache_reserve(kv, dst, s->len);
    if (st != LRUN_OK) return st;
    copy_positions(kv, d->data, d->cap, s->data, s->cap, pad_up(s->len)); /* with the zeros */
    d->len = s->len;
    return LRUN_OK;
}
