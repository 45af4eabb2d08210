/* kv_cache.c — the KV cache of every kind behind one interface, and the step
 * protocol that hands attention a view of it (kv_cache.h). The paged store of
 * the exact kinds is kv_blocks.c, the quantized store kv_quant.c, the device
 * slots kv_stage.c. */
#include "kv/kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/device.h"
#include "core/error.h"
#include "kv/kv_blocks.h"
#include "step_tokens.h"
#include "kv/kv_stage.h"
#include "kv/kv_quant.h"

static int64_t pad_up(int64_t n) { return (n + LRUN_KV_PAD - 1) / LRUN_KV_PAD * LRUN_KV_PAD; }

static int is_staged(lrun_cache_kind kind) { return kind != LRUN_CACHE_KIND_DYNAMIC && kind != LRUN_CACHE_KIND_STATIC; }

// ---------------------------------------------------------------- records of any kind

static int is_paged(lrun_cache_kind kind) { return kind != LRUN_CACHE_KIND_QUANTIZED; }

static void rec_release(lrun_kv_cache *kv, lrun_kv_seq *rec)
{
    if (!is_paged(kv->kind)) {
        lrun_kv_quant_release(kv, rec);
        memset(rec, 0, sizeof *rec);
    } else if (kv->pool) {
        lrun_kv_paged_release(kv, rec);
    }
}

/* Room for n_pos positions in rec; src: the record rec will copy, or NULL. */
static lrun_status rec_reserve(lrun_kv_cache *kv, lrun_kv_seq *rec, int64_t seq, int64_t n_pos, const lrun_kv_seq *src)
{
    if (n_pos > kv->n_ctx_max)
        return lrun_fail(LRUN_E_ARG, "KV cache: sequence %lld would hold %lld positions, more than n_ctx_max %lld",
                         (long long)seq, (long long)n_pos, (long long)kv->n_ctx_max);
    if (!is_paged(kv->kind))
        return lrun_oom_phase(lrun_kv_quant_reserve(kv, rec, seq, n_pos, src ? src->q_lo : 0), "cache");
    size_t copied = 0;
    lrun_status st = lrun_kv_paged_reserve(kv, rec, seq, n_pos, &copied);
    kv->bytes_copied += copied;
    return st;
}

/* Quantized records: dst (reserved for src->len) takes src's positions;
 * returns the bytes copied. */
static size_t rec_copy(lrun_kv_cache *kv, lrun_kv_seq *dst, const lrun_kv_seq *src)
{
    const size_t moved = lrun_kv_quant_copy(kv, dst, src);
    dst->len = src->len;
    return moved;
}

// ---------------------------------------------------------------- lifecycle

/* Bytes of a slot holding n_pos positions of one sequence, one layer: keys and values. */
static int slot_seq_bytes(const lrun_kv_cache *kv, int64_t n_pos, size_t *out)
{
    return lrun_size_mul(2 * (size_t)pad_up(n_pos), (size_t)kv->kv_dim * kv->elem_bytes, out);
}

/* OFFLOADED_STATIC's slots, each one layer of every sequence at full length; 0 for other kinds. */
static int fixed_slot_bytes(const lrun_kv_cache *kv, size_t *out)
{
    *out = 0;
    if (kv->kind != LRUN_CACHE_KIND_OFFLOADED_STATIC) return 1;
    return slot_seq_bytes(kv, kv->n_ctx_max, out) && lrun_size_mul(*out, (size_t)kv->n_seq, out);
}

/* Checks the shape and fills kv's fields; allocates nothing (init and lrun_kv_cache_size). */
static lrun_status setup(lrun_kv_cache *kv, lrun_device *device, lrun_cache_kind kind, lrun_dtype dtype,
                         int64_t n_layer, int64_t n_head_kv, int64_t head_dim, int64_t n_seq, int64_t n_ctx_max,
                         const lrun_kv_quant_opts *quant)
{
    memset(kv, 0, sizeof *kv);
    if (n_layer <= 0 || n_head_kv <= 0 || head_dim <= 0 || n_seq <= 0 || n_ctx_max <= 0)
        return lrun_fail(LRUN_E_ARG, "KV cache: sizes must be positive (layers %lld, kv heads %lld, head dim "
                         "%lld, sequences %lld, positions %lld)", (long long)n_layer, (long long)n_head_kv,
                         (long long)head_dim, (long long)n_seq, (long long)n_ctx_max);
    if ((int)kind < LRUN_CACHE_KIND_DYNAMIC || (int)kind > LRUN_CACHE_KIND_QUANTIZED)
        return lrun_fail(LRUN_E_ARG, "KV cache: unknown cache kind %d (valid: %s)", (int)kind,
                         "dynamic, static, offloaded, offloaded_static, quantized");
    if (dtype != LRUN_DTYPE_F16 && dtype != LRUN_DTYPE_F32)
        return lrun_fail(LRUN_E_ARG, "KV cache: element type %s is not f16 or f32", lrun_dtype_name(dtype));
    kv->device = device;
    kv->kind = kind;
    kv->dtype = dtype;
    kv->elem_bytes = dtype == LRUN_DTYPE_F16 ? 2 : 4;
    kv->n_layer = n_layer;
    kv->n_head_kv = n_head_kv;
    kv->head_dim = head_dim;
    kv->kv_dim = n_head_kv * head_dim;
    kv->n_seq = n_seq;
    kv->n_ctx_max = n_ctx_max;
    kv->store_on_device = kind != LRUN_CACHE_KIND_OFFLOADED && kind != LRUN_CACHE_KIND_OFFLOADED_STATIC;
    kv->preallocated = kind == LRUN_CACHE_KIND_STATIC || kind == LRUN_CACHE_KIND_OFFLOADED_STATIC;
    if (kind == LRUN_CACHE_KIND_QUANTIZED) {
        lrun_kv_quant_opts dflt = {0, 0, 0};
        return lrun_kv_quant_setup(kv, quant ? quant : &dflt);
    }
    return LRUN_OK;
}

// ---- the stage's calls into the store (kv_stage.h knows the cache only through these)

static size_t stage_load(void *kv, int64_t seq, int64_t layer, int64_t lo, void *k, void *v, int64_t cap)
{
    return lrun_kv_store_load(kv, seq, layer, lo, k, v, cap);
}

static size_t stage_write_back(void *kv, int64_t seq, int64_t layer, int64_t lo, int64_t hi, const void *k,
                               const void *v, int64_t cap)
{
    return lrun_kv_store_write_back(kv, seq, layer, lo, hi, k, v, cap);
}

static void stage_chunk_done(void *kv, int64_t seq, int64_t hi) { lrun_kv_store_chunk_done(kv, seq, hi); }

static lrun_status stage_init(lrun_kv_cache *kv, size_t fixed_bytes)
{
    const lrun_kv_stage_opts o = {.device = kv->device, .n_layer = kv->n_layer, .n_seq = kv->n_seq,
                                  .kv_dim = kv->kv_dim, .elem_bytes = kv->elem_bytes, .pad = LRUN_KV_PAD,
                                  .fixed_bytes = fixed_bytes, .bytes_moved = &kv->bytes_moved,
                                  .load = stage_load, .write_back = stage_write_back,
                                  .chunk_done = stage_chunk_done, .owner = kv};
    return lrun_kv_stage_init(&kv->stage, &o);
}

lrun_status lrun_kv_cache_init(lrun_kv_cache *kv, lrun_device *device, lrun_cache_kind kind, lrun_dtype dtype,
                               int64_t n_layer, int64_t n_head_kv, int64_t head_dim, int64_t n_seq,
                               int64_t n_ctx_max, const lrun_kv_quant_opts *quant)
{
    lrun_status st = setup(kv, device, kind, dtype, n_layer, n_head_kv, head_dim, n_seq, n_ctx_max, quant);
    if (st != LRUN_OK) return st;
    kv->seqs = calloc((size_t)n_seq, sizeof *kv->seqs);
    if (!kv->seqs) return lrun_fail_oom((size_t)n_seq * sizeof *kv->seqs, 0, "KV cache: %lld sequence records",
                                        (long long)n_seq);
    st = is_paged(kind) ? lrun_oom_phase(lrun_kv_pool_init(kv), "cache") : LRUN_OK;
    if (st == LRUN_OK && is_staged(kind)) {
        size_t fixed = 0;
        if (!fixed_slot_bytes(kv, &fixed))
            st = lrun_fail(LRUN_E_OOM, "KV cache: slots for %lld sequences overflow size_t", (long long)n_seq);
        if (st == LRUN_OK) st = lrun_oom_phase(stage_init(kv, fixed), "cache");
    }
    if (st != LRUN_OK) lrun_kv_cache_free(kv);
    return st;
}

/* Device bytes of the staged kinds' two slots once every sequence steps at
 * n_pos positions, and the two they replace when they grew there from one
 * padding step below (both are held while the slots are regrown). */
static int slots_at(const lrun_kv_cache *kv, int64_t n_pos, size_t *now, size_t *before)
{
    *now = *before = 0;
    if (!is_staged(kv->kind)) return 1;
    size_t a, b = 0;
    if (kv->kind == LRUN_CACHE_KIND_OFFLOADED_STATIC) return fixed_slot_bytes(kv, &a) && lrun_size_mul(a, 2, now);
    const int64_t below = pad_up(n_pos) - LRUN_KV_PAD;
    if (!slot_seq_bytes(kv, n_pos, &a) || !lrun_size_mul(a, 2 * (size_t)kv->n_seq, now)) return 0;
    return below <= 0 || (slot_seq_bytes(kv, below, &b) && lrun_size_mul(b, 2 * (size_t)kv->n_seq, before));
}

/* Device bytes of the store at n_ctx_max positions in every sequence, and
 * what its last growth held besides (quantized: the old codes of one
 * sequence while they are copied; exact stores take blocks, copying none). */
static int store_at_max(const lrun_kv_cache *kv, size_t *now, size_t *extra)
{
    *now = *extra = 0;
    if (is_paged(kv->kind)) {
        if (!kv->store_on_device) return 1;
        return lrun_size_mul(lrun_kv_block_bytes(kv), (size_t)lrun_kv_blocks_per_seq(kv), now) &&
               lrun_size_mul(*now, (size_t)kv->n_seq, now);
    }
    size_t ring, codes = 0;
    const int64_t cap = lrun_kv_quant_code_cap(kv, 0, kv->n_ctx_max, 0);
    if (!lrun_kv_quant_ring_bytes(kv, &ring) || (cap > 0 && !lrun_kv_quant_codes_bytes(kv, cap, &codes)) ||
        !lrun_size_add(ring, codes, now) || !lrun_size_mul(*now, (size_t)kv->n_seq, now))
        return 0;
    const int64_t before = lrun_kv_quant_code_cap_before(kv, cap);
    return before == 0 || lrun_kv_quant_codes_bytes(kv, before, extra);
}

lrun_status lrun_kv_cache_size(lrun_cache_kind kind, lrun_dtype dtype, int64_t n_layer, int64_t n_head_kv,
                               int64_t head_dim, int64_t n_seq, int64_t n_ctx_max, const lrun_kv_quant_opts *quant,
                               size_t *init_bytes, size_t *max_bytes)
{
    *init_bytes = *max_bytes = 0;
    lrun_kv_cache kv;
    lrun_status st = setup(&kv, NULL, kind, dtype, n_layer, n_head_kv, head_dim, n_seq, n_ctx_max, quant);
    if (st != LRUN_OK) return st;
    /* a step grows the stores first (the old slots still held), then the
     * slots (old and new held): the two transients do not overlap */
    size_t store, grow, slots, old_slots, sum;
    if (!store_at_max(&kv, &store, &grow) || !slots_at(&kv, n_ctx_max, &slots, &old_slots) ||
        !lrun_size_add(store, old_slots, &sum) || !lrun_size_add(sum, grow > slots ? grow : slots, max_bytes))
        return lrun_fail(LRUN_E_OOM, "KV cache: %lld sequences of %lld positions overflow size_t", (long long)n_seq,
                         (long long)n_ctx_max);
    /* init takes what static kinds preallocate: every block (static), the slots (offloaded_static) */
    if (kind == LRUN_CACHE_KIND_STATIC) *init_bytes = store;
    if (kind == LRUN_CACHE_KIND_OFFLOADED_STATIC) *init_bytes = slots;
    return LRUN_OK;
}

void lrun_kv_cache_free(lrun_kv_cache *kv)
{
    if (kv->stage) lrun_kv_stage_free(kv->stage);
    kv->stage = NULL;
    if (!kv->seqs) return;
    for (int64_t s = 0; s < kv->n_seq; s++) rec_release(kv, &kv->seqs[s]);
    lrun_kv_pool_free(kv);
    free(kv->seqs);
    kv->seqs = NULL;
}

size_t lrun_kv_cache_device_bytes(const lrun_kv_cache *kv)
{
    size_t n = (kv->stage ? lrun_kv_stage_bytes(kv->stage) : 0) + lrun_kv_pool_device_bytes(kv);
    if (!is_paged(kv->kind) && kv->seqs)
        for (int64_t s = 0; s < kv->n_seq; s++) n += kv->seqs[s].bytes + kv->seqs[s].ring_bytes;
    return n;
}

// ---------------------------------------------------------------- growth

static lrun_status check_seq(const lrun_kv_cache *kv, int64_t seq, const char *what)
{
    if (seq < 0 || seq >= kv->n_seq)
        return lrun_fail(LRUN_E_ARG, "KV cache: %s: sequence %lld out of range [0, %lld)", what, (long long)seq,
                         (long long)kv->n_seq);
    return LRUN_OK;
}

lrun_status lrun_kv_cache_reserve(lrun_kv_cache *kv, int64_t seq, int64_t n_pos)
{
    lrun_status st = check_seq(kv, seq, "reserve");
    return st != LRUN_OK ? st : rec_reserve(kv, &kv->seqs[seq], seq, n_pos, NULL);
}

// ---------------------------------------------------------------- a step

lrun_status lrun_kv_cache_step_begin(lrun_kv_cache *kv, const int64_t *seq_count)
{
    size_t slot = 0;
    for (int64_t s = 0; s < kv->n_seq; s++) {
        if (!seq_count[s]) continue;
        const int64_t n_pos = kv->seqs[s].len + seq_count[s];
        lrun_status st = rec_reserve(kv, &kv->seqs[s], s, n_pos, NULL);
        if (st != LRUN_OK) return st;
        size_t b = 0;
        (void)slot_seq_bytes(kv, n_pos, &b); /* rec_reserve bounded n_pos by n_ctx_max */
        slot += b;
    }
    return kv->stage ? lrun_oom_phase(lrun_kv_stage_reserve(kv->stage, slot), "cache") : LRUN_OK;
}

void lrun_kv_cache_chunk_begin(lrun_kv_cache *kv, int64_t n, const int64_t *tok_seq, const int64_t *tok_pos)
{
    if (kv->stage) lrun_kv_stage_chunk_begin(kv->stage, n, tok_seq, tok_pos);
}

void lrun_kv_cache_layer_begin(lrun_kv_cache *kv, int64_t layer)
{
    if (kv->stage) lrun_kv_stage_layer_begin(kv->stage, layer);
}

lrun_kv_view lrun_kv_cache_view(const lrun_kv_cache *kv, int64_t seq, int64_t layer)
{
    if (kv->stage) {
        lrun_kv_view w = {0};
        lrun_kv_stage_view(kv->stage, seq, layer, &w.k, &w.v, &w.cap);
        return w;
    }
    return (lrun_kv_view){.blocks = kv->seqs[seq].blk, .block_pos = LRUN_KV_BLOCK,
                          .k_off = lrun_kv_block_k_off(kv, layer), .v_off = lrun_kv_block_v_off(kv, layer)};
}

void lrun_kv_cache_layer_end(lrun_kv_cache *kv, int64_t layer)
{
    if (kv->stage) lrun_kv_stage_layer_end(kv->stage, layer);
}

void lrun_kv_cache_chunk_end(lrun_kv_cache *kv)
{
    if (kv->stage) lrun_kv_stage_chunk_end(kv->stage);
}

void lrun_kv_cache_step_end(lrun_kv_cache *kv, const int64_t *seq_count)
{
    for (int64_t s = 0; s < kv->n_seq; s++) kv->seqs[s].len += seq_count[s];
}

// ---------------------------------------------------------------- stores, as slots see them

size_t lrun_kv_store_load(lrun_kv_cache *kv, int64_t seq, int64_t layer, int64_t lo, void *k, void *v, int64_t cap)
{
    const lrun_kv_seq *s = &kv->seqs[seq];
    if (!is_paged(kv->kind)) return lrun_kv_quant_load(kv, s, layer, lo, k, v, cap);
    return lrun_kv_paged_load(kv, s, layer, lo, k, v, cap);
}

size_t lrun_kv_store_write_back(lrun_kv_cache *kv, int64_t seq, int64_t layer, int64_t lo, int64_t hi,
                                const void *k, const void *v, int64_t cap)
{
    const lrun_kv_seq *s = &kv->seqs[seq];
    if (!is_paged(kv->kind)) return lrun_kv_quant_write_back(kv, s, layer, lo, hi, k, v, cap);
    return lrun_kv_paged_write_back(kv, s, layer, lo, hi, k, v, cap);
}

void lrun_kv_store_chunk_done(lrun_kv_cache *kv, int64_t seq, int64_t hi)
{
    if (kv->kind == LRUN_CACHE_KIND_QUANTIZED) lrun_kv_quant_chunk_done(kv, &kv->seqs[seq], hi);
}

// ---------------------------------------------------------------- sequences

lrun_status lrun_kv_cache_truncate(lrun_kv_cache *kv, int64_t seq, int64_t len)
{
    lrun_status st = check_seq(kv, seq, "truncate");
    if (st != LRUN_OK) return st;
    lrun_kv_seq *s = &kv->seqs[seq];
    if (len < 0 || len > s->len)
        return lrun_fail(LRUN_E_ARG, "KV cache: cannot truncate sequence %lld of %lld positions to %lld",
                         (long long)seq, (long long)s->len, (long long)len);
    if (is_paged(kv->kind)) { /* blocks past len go back to the pool */
        lrun_kv_paged_truncate(kv, s, len);
        return LRUN_OK;
    }
    if (s->q_lo > len) s->q_lo = len;
    s->len = len;
    if (len == 0) rec_release(kv, s);
    return LRUN_OK;
}

lrun_status lrun_kv_cache_copy(lrun_kv_cache *kv, int64_t dst, int64_t src)
{
    if (src < 0 || src >= kv->n_seq || dst < 0 || dst >= kv->n_seq)
        return lrun_fail(LRUN_E_ARG, "KV cache: copy %lld -> %lld: sequences are [0, %lld)", (long long)src,
                         (long long)dst, (long long)kv->n_seq);
    if (src == dst) return LRUN_OK;
    const lrun_kv_seq *s = &kv->seqs[src];
    if (is_paged(kv->kind)) { /* shares src's blocks: no bytes move */
        lrun_kv_paged_share(kv, &kv->seqs[dst], s);
        return LRUN_OK;
    }
    if (s->len == 0) return lrun_kv_cache_truncate(kv, dst, 0);
    lrun_status st = rec_reserve(kv, &kv->seqs[dst], dst, s->len, s);
    if (st != LRUN_OK) return st;
    kv->bytes_copied += rec_copy(kv, &kv->seqs[dst], s);
    return LRUN_OK;
}

lrun_status lrun_kv_cache_reorder(lrun_kv_cache *kv, const int64_t *src_of_dst, int64_t n)
{
    lrun_status st = lrun_reorder_check(src_of_dst, n, kv->n_seq);
    if (st != LRUN_OK) return st;
    if (is_paged(kv->kind)) return lrun_kv_paged_reorder(kv, src_of_dst, n);
    /* quantized records: mover[d]: the source d takes by moving its record (no bytes), or -1;
     * otherwise d copies into fresh[d], the record of a sequence of [0, n) no
     * destination takes (home[d]), or new storage (home -1). There are as many
     * such records as copies, so a static cache never allocates here.
     * Everything that can fail happens before the first record moves. */
    const size_t m = (size_t)n + 1;
    lrun_kv_seq *fresh = calloc(m, sizeof *fresh), *old = malloc(m * sizeof *old);
    int64_t *mover = malloc(m * sizeof *mover), *home = malloc(m * sizeof *home);
    char *taken = calloc(m, 1);
    st = LRUN_OK;
    if (!fresh || !old || !mover || !home || !taken)
        st = lrun_fail_oom(m * (2 * sizeof *fresh + 2 * sizeof *mover + 1), 0, "KV cache: reorder bookkeeping");
    for (int64_t d = 0; st == LRUN_OK && d < n; d++) {
        const int64_t s = src_of_dst[d];
        mover[d] = s < n && !taken[s] ? s : -1;
        home[d] = -1;
        if (mover[d] >= 0) taken[s] = 1;
    }
    int64_t spare = 0;
    for (int64_t d = 0; st == LRUN_OK && d < n; d++) {
        if (mover[d] >= 0) continue;
        while (spare < n && taken[spare]) spare++;
        if (spare < n) {
            home[d] = spare;
            fresh[d] = kv->seqs[spare];
            taken[spare] = 2;
        }
        st = rec_reserve(kv, &fresh[d], d, kv->seqs[src_of_dst[d]].len, &kv->seqs[src_of_dst[d]]);
    }
    if (st != LRUN_OK) { /* reused records go home (maybe grown, same contents); new ones are released */
        for (int64_t d = 0; fresh && old && mover && home && taken && d < n; d++) {
            if (mover[d] >= 0) continue;
            if (home[d] >= 0) kv->seqs[home[d]] = fresh[d];
            else rec_release(kv, &fresh[d]);
        }
    } else {
        /* copies first, while every source is still where it was; then the moves */
        for (int64_t d = 0; d < n; d++)
            if (mover[d] < 0) kv->bytes_copied += rec_copy(kv, &fresh[d], &kv->seqs[src_of_dst[d]]);
        memcpy(old, kv->seqs, (size_t)n * sizeof *old);
        for (int64_t d = 0; d < n; d++) kv->seqs[d] = mover[d] >= 0 ? old[mover[d]] : fresh[d];
    }
    free(fresh);
    free(old);
    free(mover);
    free(home);
    free(taken);
    return st;
}

// ---------------------------------------------------------------- names

static const char *const kind_names[] = {"dynamic", "static", "offloaded", "offloaded_static", "quantized"};
#define N_KINDS (int)(sizeof kind_names / sizeof kind_names[0])

const char *lrun_cache_kind_name(lrun_cache_kind kind)
{
    return (int)kind >= 0 && (int)kind < N_KINDS ? kind_names[kind] : "unknown";
}

lrun_status lrun_cache_kind_from_name(const char *name, lrun_cache_kind *out)
{
    for (int i = 0; name && i < N_KINDS; i++)
        if (strcmp(name, kind_names[i]) == 0) {
            *out = (lrun_cache_kind)i;
            return LRUN_OK;
        }
    return lrun_fail(LRUN_E_ARG, "cache_implementation \"%s\" is not one of dynamic, static, offloaded, "
                     "offloaded_static, quantized", name ? name : "(null)");
}
