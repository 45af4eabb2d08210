/* expert_cache.c — slots, LRU and LFU replacement and counts of the expert cache (see expert_cache.h). */
#include "residency/expert_cache.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

lrun_status lrun_expert_cache_init(lrun_expert_cache *c, int64_t n_slots, int64_t n_layer, int64_t n_expert)
{
    memset(c, 0, sizeof *c);
    if (n_slots < 1 || n_layer < 1 || n_expert < 1 || n_expert > INT64_MAX / n_layer)
        return lrun_fail(LRUN_E_ARG, "expert cache: %lld slots for %lld blocks of %lld experts (each must be >= 1)",
                         (long long)n_slots, (long long)n_layer, (long long)n_expert);
    const size_t experts = (size_t)(n_layer * n_expert);
    c->slot_of = malloc(experts * sizeof *c->slot_of);
    c->key = malloc((size_t)n_slots * sizeof *c->key);
    c->last_use = calloc((size_t)n_slots, sizeof *c->last_use);
    c->hits = calloc((size_t)n_layer, sizeof *c->hits);
    c->misses = calloc((size_t)n_layer, sizeof *c->misses);
    c->prefetches = calloc((size_t)n_layer, sizeof *c->prefetches);
    c->freq = calloc(experts, sizeof *c->freq);
    c->host_computed = calloc((size_t)n_layer, sizeof *c->host_computed);
    c->admitted = calloc((size_t)n_layer, sizeof *c->admitted);
    c->bytes_copied_layer = calloc((size_t)n_layer, sizeof *c->bytes_copied_layer);
    if (!c->slot_of || !c->key || !c->last_use || !c->hits || !c->misses || !c->prefetches || !c->freq ||
        !c->host_computed || !c->admitted || !c->bytes_copied_layer) {
        lrun_expert_cache_free(c);
        return lrun_fail_oom(experts * 12 + (size_t)n_slots * 16, 0, "expert cache: tables for %lld slots",
                             (long long)n_slots);
    }
    for (size_t i = 0; i < experts; i++) c->slot_of[i] = -1;
    for (int64_t s = 0; s < n_slots; s++) c->key[s] = -1;
    c->n_slots = n_slots, c->n_layer = n_layer, c->n_expert = n_expert;
    c->policy = LRUN_EXPERT_CACHE_LRU;
    /* each expert acquired ~4 times a period when uniform: a count is a few periods' history */
    c->age_period = experts * 4 > 64 ? (uint64_t)experts * 4 : 64;
    return LRUN_OK;
}

void lrun_expert_cache_free(lrun_expert_cache *c)
{
    free(c->slot_of);
    free(c->key);
    free(c->last_use);
    free(c->hits);
    free(c->misses);
    free(c->prefetches);
    free(c->freq);
    free(c->host_computed);
    free(c->admitted);
    free(c->bytes_copied_layer);
    memset(c, 0, sizeof *c);
}

void lrun_expert_cache_set_policy(lrun_expert_cache *c, lrun_expert_cache_policy policy) { c->policy = policy; }

void lrun_expert_cache_settle(lrun_expert_cache *c) { c->settled = c->tick; }

/* Whether slot a is a better victim than slot b (both held, both settled). */
static int before(const lrun_expert_cache *c, int64_t a, int64_t b)
{
    if (c->policy == LRUN_EXPERT_CACHE_LFU) {
        const uint32_t fa = c->freq[c->key[a]], fb = c->freq[c->key[b]];
        if (fa != fb) return fa < fb;
    }
    return c->last_use[a] < c->last_use[b];
}

/* The free slot of the lowest index, else the best settled victim, else
 * (every slot used since the settle) the least recently used one. */
static int64_t victim(const lrun_expert_cache *c)
{
    int64_t v = -1, oldest = 0;
    for (int64_t s = 0; s < c->n_slots; s++) {
        if (c->key[s] < 0) return s;
        if (c->last_use[s] < c->last_use[oldest]) oldest = s;
        if (c->last_use[s] <= c->settled && (v < 0 || before(c, s, v))) v = s;
    }
    return v >= 0 ? v : oldest;
}

/* One more acquire of key k in the counts, halving them all each period. */
static void count_use(lrun_expert_cache *c, int64_t k)
{
    if (c->freq[k] < UINT32_MAX) c->freq[k]++;
    if (++c->since_age < c->age_period) return;
    c->since_age = 0;
    const int64_t n = c->n_layer * c->n_expert;
    for (int64_t i = 0; i < n; i++) c->freq[i] >>= 1;
}

/* The victim slot, given to key k (the slot's previous expert forgotten). */
static int64_t take(lrun_expert_cache *c, int64_t k)
{
    const int64_t s = victim(c);
    if (c->key[s] >= 0) c->slot_of[c->key[s]] = -1;
    c->key[s] = k;
    c->slot_of[k] = s;
    return s;
}

int lrun_expert_cache_acquire(lrun_expert_cache *c, int64_t layer, int64_t x, int64_t *slot)
{
    if (!c->slot_of || layer < 0 || layer >= c->n_layer || x < 0 || x >= c->n_expert) return -1;
    const int64_t k = layer * c->n_expert + x;
    int64_t s = c->slot_of[k];
    const int hit = s >= 0;
    count_use(c, k);
    if (hit) c->hits[layer]++;
    else {
        s = take(c, k);
        c->misses[layer]++;
    }
    c->last_use[s] = ++c->tick;
    *slot = s;
    return hit;
}

int lrun_expert_cache_prefetch(lrun_expert_cache *c, int64_t layer, int64_t x, int64_t *slot)
{
    if (!c->slot_of || layer < 0 || layer >= c->n_layer || x < 0 || x >= c->n_expert) return -1;
    const int64_t k = layer * c->n_expert + x;
    if (c->slot_of[k] >= 0) {
        *slot = c->slot_of[k];
        return 0;
    }
    const int64_t s = take(c, k);
    c->prefetches[layer]++;
    c->last_use[s] = ++c->tick;
    *slot = s;
    return 1;
}

int lrun_expert_cache_touch(lrun_expert_cache *c, int64_t layer, int64_t x, int found)
{
    if (!c->slot_of || layer < 0 || layer >= c->n_layer || x < 0 || x >= c->n_expert) return -1;
    const int64_t k = layer * c->n_expert + x, s = c->slot_of[k];
    count_use(c, k);
    ++c->tick;
    if (found && s >= 0) {
        c->last_use[s] = c->tick;
        c->hits[layer]++;
        return 1;
    }
    c->misses[layer]++;
    c->host_computed[layer]++;
    return 0;
}

int lrun_expert_cache_assign(lrun_expert_cache *c, int64_t s, int64_t layer, int64_t x)
{
    if (!c->slot_of || s < 0 || s >= c->n_slots || layer < 0 || layer >= c->n_layer || x < 0 || x >= c->n_expert)
        return -1;
    const int64_t k = layer * c->n_expert + x;
    if (c->slot_of[k] >= 0) c->key[c->slot_of[k]] = -1; /* never held twice */
    if (c->key[s] >= 0) c->slot_of[c->key[s]] = -1;
    c->key[s] = k;
    c->slot_of[k] = s;
    c->last_use[s] = ++c->tick;
    c->admitted[layer]++;
    return 0;
}

int lrun_expert_cache_holds(const lrun_expert_cache *c, int64_t layer, int64_t x)
{
    return c->slot_of && layer >= 0 && layer < c->n_layer && x >= 0 && x < c->n_expert &&
           c->slot_of[layer * c->n_expert + x] >= 0;
}

void lrun_expert_cache_copied(lrun_expert_cache *c, int64_t layer, uint64_t bytes)
{
    c->bytes_copied += bytes;
    if (c->bytes_copied_layer && layer >= 0 && layer < c->n_layer) c->bytes_copied_layer[layer] += bytes;
}

void lrun_expert_cache_reset_stats(lrun_expert_cache *c)
{
    if (!c->hits) return;
    memset(c->hits, 0, (size_t)c->n_layer * sizeof *c->hits);
    memset(c->misses, 0, (size_t)c->n_layer * sizeof *c->misses);
    memset(c->prefetches, 0, (size_t)c->n_layer * sizeof *c->prefetches);
    memset(c->host_computed, 0, (size_t)c->n_layer * sizeof *c->host_computed);
    memset(c->admitted, 0, (size_t)c->n_layer * sizeof *c->admitted);
    memset(c->bytes_copied_layer, 0, (size_t)c->n_layer * sizeof *c->bytes_copied_layer);
    c->bytes_copied = 0;
}
