/* expert_admit.c — admission of host-computed experts into the hybrid cache's
 * slots (see expert_admit.h).
 *
 * Why the admission margin (lrun_expert_admit_beats): LFU counts are noisy.
 * Under uniform routing each (block, expert) is chosen about 4 times an aging
 * period, so a slot holder's count and a just-missed expert's count are both
 * a few units with sampling spread of the same size; the smallest count among
 * many slots is near 0, and "f_miss > f_victim" would admit an expert almost
 * every step, copying at the cap's rate for no hit gained (the experts are
 * interchangeable). Requiring the miss to more than double the victim's count
 * (plus one) asks for a lead that noise rarely gives and skewed popularity
 * gives at once: tests/c/test_expert_admit.c measures both streams (uniform:
 * few admissions a block and token after the warm-up; Zipf: the hit rate
 * close to plain LFU's, which copies every miss). */
#include "residency/expert_admit.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

lrun_status lrun_expert_admit_init(lrun_expert_admit *a, const lrun_expert_cache *c, int64_t cap)
{
    memset(a, 0, sizeof *a);
    if (!c || c->n_slots < 1 || cap < 1)
        return lrun_fail(LRUN_E_ARG, "expert admission: %lld slots, cap %lld (each must be >= 1)",
                         (long long)(c ? c->n_slots : 0), (long long)cap);
    a->pending = calloc((size_t)c->n_slots, 1);
    a->pend_list = malloc((size_t)c->n_slots * sizeof *a->pend_list);
    if (!a->pending || !a->pend_list) {
        lrun_expert_admit_free(a);
        return lrun_fail_oom((size_t)c->n_slots * 9, 0, "expert admission: tables for %lld slots",
                             (long long)c->n_slots);
    }
    a->n_slots = c->n_slots;
    a->cap = cap;
    return LRUN_OK;
}

void lrun_expert_admit_free(lrun_expert_admit *a)
{
    free(a->pending);
    free(a->pend_list);
    memset(a, 0, sizeof *a);
}

/* Drops entry i of the pending list (order does not matter). */
static void unpend(lrun_expert_admit *a, int64_t i)
{
    a->pending[a->pend_list[i]] = 0;
    a->pend_list[i] = a->pend_list[--a->n_pending];
}

void lrun_expert_admit_poll(lrun_expert_admit *a, lrun_expert_admit_ready_fn ready, void *ctx)
{
    for (int64_t i = a->n_pending - 1; i >= 0; i--)
        if (ready(ctx, a->pend_list[i])) unpend(a, i);
}

int lrun_expert_admit_lookup(lrun_expert_admit *a, lrun_expert_cache *c, int64_t layer, int64_t x,
                             lrun_expert_admit_ready_fn ready, void *ctx, int64_t *slot)
{
    *slot = -1;
    if (!a->pending || !c->slot_of || layer < 0 || layer >= c->n_layer || x < 0 || x >= c->n_expert) return -1;
    const int64_t s = c->slot_of[layer * c->n_expert + x];
    if (s >= 0 && a->pending[s] && ready(ctx, s))
        for (int64_t i = 0; i < a->n_pending; i++)
            if (a->pend_list[i] == s) {
                unpend(a, i);
                break;
            }
    const int hit = s >= 0 && !a->pending[s];
    if (lrun_expert_cache_touch(c, layer, x, hit) < 0) return -1;
    if (hit) *slot = s;
    return hit;
}

int lrun_expert_admit_beats(uint32_t f_miss, uint32_t f_victim)
{
    return (uint64_t)f_miss > 2 * (uint64_t)f_victim + 1;
}

int64_t lrun_expert_admit_victim(const lrun_expert_admit *a, const lrun_expert_cache *c)
{
    int64_t v = -1;
    for (int64_t s = 0; s < c->n_slots; s++) {
        if (a->pending[s]) continue;
        if (c->key[s] < 0) return s;
        if (c->last_use[s] > c->settled) continue; /* this chunk's: its kernels may still read it */
        if (v < 0) {
            v = s;
            continue;
        }
        const uint32_t fs = c->freq[c->key[s]], fv = c->freq[c->key[v]];
        if (fs < fv || (fs == fv && c->last_use[s] < c->last_use[v])) v = s;
    }
    return v;
}

int64_t lrun_expert_admit_choose(lrun_expert_admit *a, lrun_expert_cache *c, int64_t layer, const int32_t *missed,
                                 int64_t n_missed, int64_t max, int64_t *xs, int64_t *slots)
{
    if (!a->pending || !c->slot_of || layer < 0 || layer >= c->n_layer || n_missed < 0 || (n_missed > 0 && !missed))
        return -1;
    const int64_t E = c->n_expert, limit = max < a->cap ? max : a->cap;
    const uint32_t *f = c->freq + layer * E;
    int64_t n = 0;
    /* uint8_t taken[] over the misses: a selection, the most frequent untaken one each round (n_missed <= 8 k) */
    uint8_t taken[512] = {0};
    if (n_missed > (int64_t)sizeof taken) n_missed = (int64_t)sizeof taken;
    while (n < limit) {
        int64_t best = -1;
        for (int64_t i = 0; i < n_missed; i++) {
            const int32_t x = missed[i];
            if (taken[i] || x < 0 || x >= E || c->slot_of[layer * E + x] >= 0) continue; /* held: already coming */
            if (best < 0) {
                best = i;
                continue;
            }
            const int32_t b = missed[best];
            const uint32_t fx = f[x], fb = f[b];
            if (fx > fb || (fx == fb && x < b)) best = i;
        }
        if (best < 0) break;
        taken[best] = 1;
        const int64_t v = lrun_expert_admit_victim(a, c);
        if (v < 0) break;
        /* the most frequent miss cannot beat the least frequent slot: no later one will */
        if (c->key[v] >= 0 && !lrun_expert_admit_beats(f[missed[best]], c->freq[c->key[v]])) break;
        lrun_expert_cache_assign(c, v, layer, missed[best]);
        a->pending[v] = 1;
        a->pend_list[a->n_pending++] = v;
        xs[n] = missed[best], slots[n] = v;
        n++;
    }
    return n;
}
