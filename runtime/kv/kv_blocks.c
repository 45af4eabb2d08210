/* kv_blocks.c — blocks, reference counts and block tables of the exact KV
 * caches (kv_blocks.h). */
#include "kv/kv_blocks.h"

#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/device.h"
#include "core/error.h"

static int64_t blocks_for(int64_t n_pos) { return (n_pos + LRUN_KV_BLOCK - 1) / LRUN_KV_BLOCK; }

// ---------------------------------------------------------------- the pool

int64_t lrun_kv_blocks_per_seq(const lrun_kv_cache *kv) { return blocks_for(kv->n_ctx_max); }

size_t lrun_kv_block_bytes(const lrun_kv_cache *kv)
{
    return 2 * (size_t)kv->n_layer * LRUN_KV_BLOCK * (size_t)kv->kv_dim * kv->elem_bytes;
}

static lrun_status mem_alloc(lrun_kv_cache *kv, void **out)
{
    const size_t bytes = kv->pool->block_bytes;
    if (kv->store_on_device) return lrun_device_alloc(kv->device, bytes, "KV cache block", out);
    return lrun_device_host_alloc(kv->device, LRUN_HOST_CATEGORY_KV, LRUN_TIER_PINNED, bytes, "offloaded KV cache block",
                                  out);
}

static void mem_release(lrun_kv_cache *kv, void *p)
{
    if (kv->store_on_device) lrun_device_release(kv->device, p, kv->pool->block_bytes);
    else lrun_device_host_release(kv->device, LRUN_HOST_CATEGORY_KV, LRUN_TIER_PINNED, p, kv->pool->block_bytes);
}

size_t lrun_kv_block_k_off(const lrun_kv_cache *kv, int64_t layer)
{
    return (size_t)(2 * layer) * LRUN_KV_BLOCK * (size_t)kv->kv_dim * kv->elem_bytes;
}

size_t lrun_kv_block_v_off(const lrun_kv_cache *kv, int64_t layer)
{
    return (size_t)(2 * layer + 1) * LRUN_KV_BLOCK * (size_t)kv->kv_dim * kv->elem_bytes;
}

/* Zeroes the values of every layer of a block (keys are only read where stored). */
static void zero_block_values(const lrun_kv_cache *kv, void *mem)
{
    const size_t n = LRUN_KV_BLOCK * (size_t)kv->kv_dim * kv->elem_bytes;
    for (int64_t l = 0; l < kv->n_layer; l++) memset((char *)mem + lrun_kv_block_v_off(kv, l), 0, n);
}

/* A free block, zeroed, with one reference. */
static lrun_status block_take(lrun_kv_cache *kv, int32_t *out)
{
    lrun_kv_pool *p = kv->pool;
    if (p->n_free == 0) /* cannot happen: n_ids covers every sequence at full length */
        return lrun_fail(LRUN_E_INTERNAL, "KV cache: no free block id of %lld", (long long)p->n_ids);
    const int32_t id = p->free_ids[p->n_free - 1];
    if (!p->mem[id]) {
        lrun_status st = mem_alloc(kv, &p->mem[id]);
        if (st != LRUN_OK) return st;
        p->n_mem++;
    }
    p->n_free--;
    p->ref[id] = 1;
    zero_block_values(kv, p->mem[id]);
    *out = id;
    return LRUN_OK;
}

static void block_drop(lrun_kv_cache *kv, int32_t id)
{
    lrun_kv_pool *p = kv->pool;
    if (--p->ref[id] > 0) return;
    if (!kv->preallocated) { /* a static cache keeps its blocks' memory */
        mem_release(kv, p->mem[id]);
        p->mem[id] = NULL;
        p->n_mem--;
    }
    p->free_ids[p->n_free++] = id;
}

lrun_status lrun_kv_pool_init(lrun_kv_cache *kv)
{
    lrun_kv_pool *p = calloc(1, sizeof *p);
    kv->pool = p;
    const int64_t per_seq = lrun_kv_blocks_per_seq(kv);
    size_t n;
    if (!p || !lrun_size_mul((size_t)per_seq, (size_t)kv->n_seq, &n) || n > INT32_MAX)
        return lrun_fail_oom(sizeof *p, 0, "KV cache: block pool of %lld sequences x %lld blocks", (long long)kv->n_seq,
                             (long long)per_seq);
    p->n_ids = (int64_t)n;
    p->block_bytes = lrun_kv_block_bytes(kv);
    p->mem = calloc(n, sizeof *p->mem);
    p->ref = calloc(n, sizeof *p->ref);
    p->free_ids = malloc(n * sizeof *p->free_ids);
    p->re_ids = malloc(n * sizeof *p->re_ids);
    p->re_nb = malloc((size_t)kv->n_seq * sizeof *p->re_nb);
    p->re_len = malloc((size_t)kv->n_seq * sizeof *p->re_len);
    for (int64_t s = 0; s < kv->n_seq; s++) {
        kv->seqs[s].bid = malloc((size_t)per_seq * sizeof *kv->seqs[s].bid);
        kv->seqs[s].blk = malloc((size_t)per_seq * sizeof *kv->seqs[s].blk);
        if (!kv->seqs[s].bid || !kv->seqs[s].blk) p->n_ids = 0;
    }
    if (!p->mem || !p->ref || !p->free_ids || !p->re_ids || !p->re_nb || !p->re_len || p->n_ids == 0)
        return lrun_fail_oom(n * 16, 0, "KV cache: block tables of %zu blocks", n);
    for (int64_t i = 0; i < p->n_ids; i++) p->free_ids[i] = (int32_t)(p->n_ids - 1 - i); /* id 0 on top */
    p->n_free = p->n_ids;
    for (int64_t i = 0; kv->preallocated && i < p->n_ids; i++) {
        lrun_status st = mem_alloc(kv, &p->mem[i]);
        if (st != LRUN_OK) return st;
        p->n_mem++;
    }
    return LRUN_OK;
}

void lrun_kv_pool_free(lrun_kv_cache *kv)
{
    lrun_kv_pool *p = kv->pool;
    if (!p) return;
    for (int64_t i = 0; p->mem && i < p->n_ids; i++)
        if (p->mem[i]) mem_release(kv, p->mem[i]);
    for (int64_t s = 0; kv->seqs && s < kv->n_seq; s++) {
        free(kv->seqs[s].bid);
        free(kv->seqs[s].blk);
        kv->seqs[s].bid = NULL;
        kv->seqs[s].blk = NULL;
    }
    free(p->mem);
    free(p->ref);
    free(p->free_ids);
    free(p->re_ids);
    free(p->re_nb);
    free(p->re_len);
    free(p);
    kv->pool = NULL;
}

size_t lrun_kv_pool_device_bytes(const lrun_kv_cache *kv)
{
    return kv->pool && kv->store_on_device ? (size_t)kv->pool->n_mem * kv->pool->block_bytes : 0;
}

// ---------------------------------------------------------------- block tables

static void set_block(lrun_kv_cache *kv, lrun_kv_seq *rec, int64_t b, int32_t id)
{
    rec->bid[b] = id;
    rec->blk[b] = kv->pool->mem[id];
}

lrun_status lrun_kv_paged_reserve(lrun_kv_cache *kv, lrun_kv_seq *rec, int64_t seq, int64_t n_pos, size_t *copied)
{
    *copied = 0;
    lrun_kv_pool *p = kv->pool;
    const int64_t need = blocks_for(n_pos);
    /* blocks the step will write into that another sequence shares are copied
     * first: at most the partly filled block len falls in, since sharing
     * stops at a sequence's length */
    const int64_t first = rec->len / LRUN_KV_BLOCK, last = need < rec->nb ? need : rec->nb;
    int64_t n_cow = 0;
    for (int64_t b = first; n_pos > rec->len && b < last; b++) n_cow += p->ref[rec->bid[b]] > 1;
    const int64_t n_new = (need > rec->nb ? need - rec->nb : 0) + n_cow;
    if (n_new == 0) return LRUN_OK;
    int32_t taken[n_new];
    for (int64_t i = 0; i < n_new; i++) {
        lrun_status st = block_take(kv, &taken[i]);
        if (st != LRUN_OK) {
            while (i-- > 0) block_drop(kv, taken[i]);
            return lrun_fail_context(lrun_oom_phase(st, "cache"), "KV cache: sequence %lld, %lld positions",
                                     (long long)seq, (long long)n_pos);
        }
    }
    int64_t i = 0;
    for (int64_t b = first; n_cow > 0 && b < last; b++) {
        if (p->ref[rec->bid[b]] <= 1) continue;
        const int32_t old = rec->bid[b], id = taken[i++];
        memcpy(p->mem[id], p->mem[old], p->block_bytes);
        *copied += p->block_bytes;
        block_drop(kv, old);
        set_block(kv, rec, b, id);
    }
    for (; i < n_new; i++) set_block(kv, rec, rec->nb++, taken[i]);
    rec->cap = rec->nb * LRUN_KV_BLOCK;
    return LRUN_OK;
}

void lrun_kv_paged_truncate(lrun_kv_cache *kv, lrun_kv_seq *rec, int64_t len)
{
    const int64_t keep = blocks_for(len);
    while (rec->nb > keep) block_drop(kv, rec->bid[--rec->nb]);
    /* a block of its own goes back to zeros past len; a shared one keeps the
     * other sequence's finite values, which attention weighs by 0 */
    const int64_t from = len % LRUN_KV_BLOCK, to = rec->len < keep * LRUN_KV_BLOCK ? rec->len - (keep - 1) * LRUN_KV_BLOCK
                                                                                     : LRUN_KV_BLOCK;
    if (from > 0 && to > from && kv->pool->ref[rec->bid[keep - 1]] == 1) {
        const size_t eb = kv->elem_bytes;
        char *mem = rec->blk[keep - 1];
        for (int64_t l = 0; l < kv->n_layer; l++)
            for (int64_t c = 0; c < kv->kv_dim; c++)
                memset(mem + lrun_kv_block_v_off(kv, l) + (size_t)(c * LRUN_KV_BLOCK + from) * eb, 0,
                       (size_t)(to - from) * eb);
    }
    rec->len = len;
    rec->cap = rec->nb * LRUN_KV_BLOCK;
}

void lrun_kv_paged_release(lrun_kv_cache *kv, lrun_kv_seq *rec)
{
    while (rec->nb > 0) block_drop(kv, rec->bid[--rec->nb]);
    rec->len = 0;
    rec->cap = 0;
}

void lrun_kv_paged_share(lrun_kv_cache *kv, lrun_kv_seq *dst, const lrun_kv_seq *src)
{
    const int64_t nb = blocks_for(src->len); /* not src's spare blocks past its length */
    for (int64_t b = 0; b < nb; b++) kv->pool->ref[src->bid[b]]++; /* first, in case dst's blocks are src's */
    lrun_kv_paged_release(kv, dst);
    for (int64_t b = 0; b < nb; b++) set_block(kv, dst, b, src->bid[b]);
    dst->nb = nb;
    dst->len = src->len;
    dst->cap = nb * LRUN_KV_BLOCK;
}

lrun_status lrun_kv_paged_reorder(lrun_kv_cache *kv, const int64_t *src_of_dst, int64_t n)
{
    const int64_t per_seq = lrun_kv_blocks_per_seq(kv);
    /* the new tables, built aside in the pool's scratch (n <= n_seq, checked by the caller) */
    int32_t *ids = kv->pool->re_ids;
    int64_t *nb = kv->pool->re_nb, *len = kv->pool->re_len;
    for (int64_t d = 0; d < n; d++) {
        const lrun_kv_seq *s = &kv->seqs[src_of_dst[d]];
        nb[d] = blocks_for(s->len);
        len[d] = s->len;
        for (int64_t b = 0; b < nb[d]; b++) {
            ids[d * per_seq + b] = s->bid[b];
            kv->pool->ref[s->bid[b]]++;
        }
    }
    for (int64_t d = 0; d < n; d++) {
        lrun_kv_seq *r = &kv->seqs[d];
        lrun_kv_paged_release(kv, r);
        for (int64_t b = 0; b < nb[d]; b++) set_block(kv, r, b, ids[d * per_seq + b]);
        r->nb = nb[d];
        r->len = len[d];
        r->cap = nb[d] * LRUN_KV_BLOCK;
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- slots

size_t lrun_kv_paged_load(const lrun_kv_cache *kv, const lrun_kv_seq *rec, int64_t layer, int64_t lo, void *k, void *v,
                          int64_t cap)
{
    const size_t eb = kv->elem_bytes, k_off = lrun_kv_block_k_off(kv, layer), v_off = lrun_kv_block_v_off(kv, layer);
    for (int64_t p0 = 0; p0 < lo; p0 += LRUN_KV_BLOCK) {
        const char *blk = rec->blk[p0 / LRUN_KV_BLOCK];
        const int64_t m = lo - p0 < LRUN_KV_BLOCK ? lo - p0 : LRUN_KV_BLOCK;
        memcpy((char *)k + (size_t)(p0 * kv->kv_dim) * eb, blk + k_off, (size_t)(m * kv->kv_dim) * eb);
        for (int64_t c = 0; c < kv->kv_dim; c++)
            memcpy((char *)v + (size_t)(c * cap + p0) * eb, blk + v_off + (size_t)(c * LRUN_KV_BLOCK) * eb,
                   (size_t)m * eb);
    }
    for (int64_t c = 0; c < kv->kv_dim; c++) memset((char *)v + (size_t)(c * cap + lo) * eb, 0, (size_t)(cap - lo) * eb);
    return 2 * (size_t)(lo * kv->kv_dim) * eb;
}

size_t lrun_kv_paged_write_back(const lrun_kv_cache *kv, const lrun_kv_seq *rec, int64_t layer, int64_t lo,
                                int64_t hi, const void *k, const void *v, int64_t cap)
{
    const size_t eb = kv->elem_bytes, k_off = lrun_kv_block_k_off(kv, layer), v_off = lrun_kv_block_v_off(kv, layer);
    for (int64_t p0 = lo; p0 < hi;) {
        char *blk = rec->blk[p0 / LRUN_KV_BLOCK];
        const int64_t j = p0 % LRUN_KV_BLOCK, m = hi - p0 < LRUN_KV_BLOCK - j ? hi - p0 : LRUN_KV_BLOCK - j;
        memcpy(blk + k_off + (size_t)(j * kv->kv_dim) * eb, (const char *)k + (size_t)(p0 * kv->kv_dim) * eb,
               (size_t)(m * kv->kv_dim) * eb);
        for (int64_t c = 0; c < kv->kv_dim; c++)
            memcpy(blk + v_off + (size_t)(c * LRUN_KV_BLOCK + j) * eb, (const char *)v + (size_t)(c * cap + p0) * eb,
                   (size_t)m * eb);
        p0 += m;
    }
    return 2 * (size_t)((hi - lo) * kv->kv_dim) * eb;
}
