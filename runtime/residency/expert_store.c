/* expert_store.c — the CPU engine's disk-tier experts, read per chosen
 * expert into slots of host memory (expert_store.h).
 *
 * A slot holds one expert of one block: each stored projection's slice in
 * an aligned region (O_DIRECT reads whole blocks: the slice lands `lead`
 * bytes in). where[] maps (block, expert) to its slot. The slots form a
 * list from the least to the most recently used (empty ones first): a
 * fetch moves each slot it uses to the end and a miss takes the first, in
 * constant time (a host budget's room may be thousands of slots, and every
 * block of every token fetches). A fetch of at most n_slots experts never
 * takes a slot it used itself: those are behind the ones it did not.
 *
 * The store has a disk reader of its own: the weight ring's serves its fill
 * thread, one read at a time, while the store reads on compute's. */
#include "residency/expert_store.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tensor.h"
#include "model/model.h"
#include "residency/disk_reader.h"
#include "residency/placement.h"

#define PROJ 3 /* gate, up, down */

static const lrun_arch_tensor proj_id[PROJ] = {LRUN_ARCH_TENSOR_GATE_EXPS, LRUN_ARCH_TENSOR_UP_EXPS,
                                               LRUN_ARCH_TENSOR_DOWN_EXPS};

struct store_block {
    int disk_id[PROJ];   /* the reader's id of each stored projection, -1: not stored */
    size_t slice[PROJ];  /* bytes of one expert's slice */
    size_t offset[PROJ]; /* where its region starts in a slot */
};

struct lrun_expert_store {
    const lrun_model *model;
    int64_t first, end, n_expert;
    struct store_block *blocks; /* (end - first) */
    lrun_disk_reader *disk;
    char *memory;
    size_t slot_bytes;
    int64_t n_slots;
    int64_t *key;    /* (n_slots) layer · n_expert + expert, -1: empty */
    int64_t *prev, *next; /* (n_slots) the use list, -1 at its ends */
    int64_t oldest, newest;
    size_t *lead;    /* (n_slots · PROJ) where each slice starts in its region */
    int64_t *where;  /* ((end - first) · n_expert) the slot of each expert, -1: none */
    lrun_disk_range *ranges; /* (n_slots · PROJ) one fetch's reads */
    int64_t *read_slot;      /* (n_slots) the slot each missed expert goes to */
    uint64_t hits, misses;
};

int lrun_expert_store_takes(const lrun_placement *p, lrun_arch_tensor id, const struct lrun_tensor *t)
{
    return t && lrun_arch_is_expert_tensor(id) && t->ne[2] > 1 && lrun_placement_tier(p, t) == LRUN_TIER_DISK &&
           lrun_placement_streamed(p, t) && !lrun_placement_packed(p, t) && !t->file_packed;
}

int64_t lrun_expert_store_default_slots(const lrun_model *model)
{
    const char *env = getenv("LRUN_EXPERT_STORE_SLOTS");
    const long long asked = env ? atoll(env) : 0;
    const int64_t all = model->info.n_layer * model->info.n_expert;
    int64_t n = asked > 0 ? (int64_t)asked : 2 * model->info.n_expert_used;
    if (asked <= 0 && n < 16) n = 16;
    return n < all ? n : all > 0 ? all : 1;
}

/* One block's stored projections and their regions in a slot; returns the slot's bytes for it. */
static size_t block_layout(const lrun_model *model, const lrun_placement *p, int64_t layer, struct store_block *b)
{
    size_t off = 0;
    for (int i = 0; i < PROJ; i++) {
        const struct lrun_tensor *t = lrun_model_arch_tensor(model, layer, proj_id[i]);
        b->disk_id[i] = -1;
        b->slice[i] = b->offset[i] = 0;
        if (!lrun_expert_store_takes(p, proj_id[i], t)) continue;
        b->slice[i] = (size_t)t->ne[1] * t->row_bytes;
        b->offset[i] = off;
        off += lrun_disk_region(b->slice[i]);
    }
    return off;
}

size_t lrun_expert_store_slot_bytes(const lrun_model *model, const lrun_placement *p, int64_t first, int64_t end)
{
    size_t most = 0;
    for (int64_t l = first; l < end; l++) {
        struct store_block b;
        const size_t need = block_layout(model, p, l, &b);
        if (need > most) most = need;
    }
    return most;
}

void lrun_expert_store_free(lrun_expert_store *s)
{
    if (!s) return;
    lrun_disk_reader_free(s->disk);
    free(s->blocks);
    free(s->key);
    free(s->prev);
    free(s->next);
    free(s->lead);
    free(s->where);
    free(s->ranges);
    free(s->read_slot);
    free(s);
}

/* Opens the stored projections' files (the reader is made at the first). */
static lrun_status open_files(lrun_expert_store *s)
{
    for (int64_t l = s->first; l < s->end; l++) {
        struct store_block *b = &s->blocks[l - s->first];
        for (int i = 0; i < PROJ; i++) {
            if (!b->slice[i]) continue;
            if (!s->disk) {
                const lrun_status st = lrun_disk_reader_init(&s->disk, 0);
                if (st != LRUN_OK) return st;
            }
            size_t lead;
            const lrun_status st =
                lrun_disk_reader_add(s->disk, lrun_model_arch_tensor(s->model, l, proj_id[i]), &b->disk_id[i], &lead);
            if (st != LRUN_OK) return st;
        }
    }
    return LRUN_OK;
}

lrun_status lrun_expert_store_init(lrun_expert_store **out, const lrun_model *model, int64_t first, int64_t end,
                                   void *memory, size_t slot_bytes, int64_t n_slots)
{
    *out = NULL;
    if (n_slots <= 0 || !memory || !slot_bytes || slot_bytes % LRUN_DISK_ALIGN || first < 0 || end <= first)
        return lrun_fail(LRUN_E_ARG, "expert store: %lld slots of %zu bytes for blocks [%lld, %lld)",
                         (long long)n_slots, slot_bytes, (long long)first, (long long)end);
    lrun_expert_store *s = calloc(1, sizeof *s);
    if (!s) return lrun_fail_oom(sizeof *s, 0, "expert store: record");
    const int64_t n_blocks = end - first, E = model->info.n_expert;
    s->model = model;
    s->first = first;
    s->end = end;
    s->n_expert = E;
    s->memory = memory;
    s->slot_bytes = slot_bytes;
    s->n_slots = n_slots;
    s->blocks = calloc((size_t)n_blocks, sizeof *s->blocks);
    s->key = malloc((size_t)n_slots * sizeof *s->key);
    s->prev = malloc((size_t)n_slots * sizeof *s->prev);
    s->next = malloc((size_t)n_slots * sizeof *s->next);
    s->lead = calloc((size_t)n_slots * PROJ, sizeof *s->lead);
    s->where = malloc((size_t)(n_blocks * E) * sizeof *s->where);
    s->ranges = calloc((size_t)n_slots * PROJ, sizeof *s->ranges);
    s->read_slot = malloc((size_t)n_slots * sizeof *s->read_slot);
    lrun_status st = LRUN_OK;
    if (!s->blocks || !s->key || !s->prev || !s->next || !s->lead || !s->where || !s->ranges || !s->read_slot)
        st = lrun_fail_oom(0, 0, "expert store: records of %lld slots, %lld blocks of %lld experts",
                           (long long)n_slots, (long long)n_blocks, (long long)E);
    if (st == LRUN_OK) {
        for (int64_t i = 0; i < n_slots; i++) {
            s->key[i] = -1;
            s->prev[i] = i - 1;
            s->next[i] = i + 1 < n_slots ? i + 1 : -1;
        }
        s->oldest = 0;
        s->newest = n_slots - 1;
        for (int64_t i = 0; i < n_blocks * E; i++) s->where[i] = -1;
        for (int64_t l = first; l < end; l++)
            if (block_layout(model, NULL, l, &s->blocks[l - first]) > slot_bytes)
                st = lrun_fail(LRUN_E_ARG, "expert store: block %lld's experts need more than a slot's %zu bytes",
                               (long long)l, slot_bytes);
    }
    if (st == LRUN_OK) st = open_files(s);
    if (st != LRUN_OK) {
        lrun_expert_store_free(s);
        return st;
    }
    *out = s;
    return LRUN_OK;
}

int lrun_expert_store_has(const lrun_expert_store *s, int64_t layer)
{
    if (!s || layer < s->first || layer >= s->end) return 0;
    const struct store_block *b = &s->blocks[layer - s->first];
    return b->slice[0] || b->slice[1] || b->slice[2];
}

int64_t lrun_expert_store_slots(const lrun_expert_store *s) { return s ? s->n_slots : 0; }

/* Takes slot i out of the use list. */
static void unlink_slot(lrun_expert_store *s, int64_t i)
{
    if (s->prev[i] >= 0) s->next[s->prev[i]] = s->next[i];
    else s->oldest = s->next[i];
    if (s->next[i] >= 0) s->prev[s->next[i]] = s->prev[i];
    else s->newest = s->prev[i];
}

/* Slot i, just used, to the list's end. */
static void touch(lrun_expert_store *s, int64_t i)
{
    unlink_slot(s, i);
    s->prev[i] = s->newest;
    s->next[i] = -1;
    if (s->newest >= 0) s->next[s->newest] = i;
    else s->oldest = i;
    s->newest = i;
}

/* Slot i, emptied, to the list's front: the next miss takes it. */
static void free_slot(lrun_expert_store *s, int64_t i)
{
    unlink_slot(s, i);
    s->prev[i] = -1;
    s->next[i] = s->oldest;
    if (s->oldest >= 0) s->prev[s->oldest] = i;
    else s->newest = i;
    s->oldest = i;
}

lrun_status lrun_expert_store_fetch(lrun_expert_store *s, int64_t layer, const int32_t *xs, int64_t n,
                                    const void **slices)
{
    if (!lrun_expert_store_has(s, layer) || n < 0 || n > s->n_slots)
        return lrun_fail(LRUN_E_ARG, "expert store: %lld experts of block %lld (%lld slots)", (long long)n,
                         (long long)layer, (long long)lrun_expert_store_slots(s));
    const struct store_block *b = &s->blocks[layer - s->first];
    int64_t *where = s->where + (layer - s->first) * s->n_expert;
    for (int64_t j = 0; j < n; j++) /* all checked before a slot changes hands */
        if (xs[j] < 0 || xs[j] >= s->n_expert)
            return lrun_fail(LRUN_E_ARG, "expert store: expert %d of block %lld (%lld experts)", xs[j],
                             (long long)layer, (long long)s->n_expert);
    int n_ranges = 0;
    int64_t n_read = 0;
    for (int64_t j = 0; j < n; j++) {
        const int32_t x = xs[j];
        int64_t slot = where[x];
        if (slot >= 0) {
            s->hits++;
        } else {
            slot = s->oldest; /* the least recently used, or an empty one */
            if (s->key[slot] >= 0) s->where[s->key[slot] - s->first * s->n_expert] = -1;
            s->key[slot] = layer * s->n_expert + x;
            where[x] = slot;
            s->read_slot[n_read++] = slot;
            s->misses++;
            for (int i = 0; i < PROJ; i++)
                if (b->slice[i])
                    s->ranges[n_ranges++] =
                        (lrun_disk_range){.id = b->disk_id[i],
                                          .at = (size_t)x * b->slice[i],
                                          .len = b->slice[i],
                                          .dst = s->memory + (size_t)slot * s->slot_bytes + b->offset[i]};
        }
        touch(s, slot);
    }
    const lrun_status st = lrun_disk_reader_read_many(s->disk, s->ranges, n_ranges);
    if (st != LRUN_OK) { /* what was being read is in no slot */
        for (int64_t r = 0; r < n_read; r++) {
            const int64_t slot = s->read_slot[r];
            s->where[s->key[slot] - s->first * s->n_expert] = -1;
            s->key[slot] = -1;
            free_slot(s, slot);
        }
        return st;
    }
    for (int64_t r = 0, g = 0; r < n_read; r++)
        for (int i = 0; i < PROJ; i++)
            if (b->slice[i]) s->lead[s->read_slot[r] * PROJ + i] = s->ranges[g++].lead;
    for (int64_t j = 0; j < n; j++) {
        const int64_t slot = where[xs[j]];
        for (int i = 0; i < PROJ; i++)
            slices[PROJ * j + i] =
                b->slice[i] ? s->memory + (size_t)slot * s->slot_bytes + b->offset[i] + s->lead[slot * PROJ + i]
                            : NULL;
    }
    return LRUN_OK;
}

void lrun_expert_store_stats_get(const lrun_expert_store *s, lrun_expert_store_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s) return;
    lrun_disk_stats d;
    lrun_disk_reader_stats(s->disk, &d);
    out->hits = s->hits;
    out->misses = s->misses;
    out->bytes_read = d.bytes_read;
    out->read_seconds = d.read_seconds;
    out->queue_depth = d.queue_depth;
    out->direct = d.direct;
}

void lrun_expert_store_reset_stats(lrun_expert_store *s)
{
    if (!s) return;
    s->hits = s->misses = 0;
    lrun_disk_reader_reset_stats(s->disk);
}
