/* test_expert_cache.c — the expert cache's bookkeeping (runtime/residency/expert_cache.c):
 * free slots first, least recently used replacement, hits and misses per
 * block, bytes copied, the reset, and refusals of bad arguments; least
 * frequently used replacement with aging, the settle that keeps a chunk's
 * slots, and the two policies' hit rates on synthetic routing streams
 * (Zipf-skewed, as real routers choose, and uniform, as random ones do),
 * which picked LFU as the default (docs/moe.md "Replacement"). */
#include "check.h"
#include "residency/expert_cache.h"
#include "routing_stream.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The hit rate of a cache of slots under policy over tokens decode steps:
 * each step, in each block, SIM_K distinct experts drawn by Zipf exponent s
 * (0: uniform), their ranks permuted per block, acquired, then settled as
 * the engine does after each block's chunk. */
static double sim_hit_rate(lrun_expert_cache_policy policy, double s, int64_t slots, int tokens)
{
    routing_stream z;
    routing_stream_init(&z, s);
    lrun_expert_cache c;
    if (lrun_expert_cache_init(&c, slots, SIM_LAYERS, SIM_EXPERTS) != LRUN_OK) return -1;
    lrun_expert_cache_set_policy(&c, policy);
    int64_t hits = 0, uses = 0;
    for (int t = 0; t < tokens; t++)
        for (int l = 0; l < SIM_LAYERS; l++) {
            int32_t chosen[SIM_K] = {0};
            routing_stream_draw(&z, l, chosen);
            for (int j = 0; j < SIM_K; j++) {
                int64_t slot;
                hits += lrun_expert_cache_acquire(&c, l, chosen[j], &slot) == 1;
                uses++;
            }
            lrun_expert_cache_settle(&c);
        }
    lrun_expert_cache_free(&c);
    return (double)hits / (double)uses;
}

static void policies(void)
{
    lrun_expert_cache c;
    int64_t s = -1;
    /* LFU: the expert of fewest acquires goes, not the oldest */
    CHECK("3 slots, 1 block of 8, LFU", lrun_expert_cache_init(&c, 3, 1, 8) == LRUN_OK);
    lrun_expert_cache_set_policy(&c, LRUN_EXPERT_CACHE_LFU);
    for (int r = 0; r < 3; r++) lrun_expert_cache_acquire(&c, 0, 0, &s); /* expert 0: 3 uses, oldest */
    lrun_expert_cache_acquire(&c, 0, 1, &s);
    lrun_expert_cache_acquire(&c, 0, 1, &s); /* expert 1: 2 uses */
    lrun_expert_cache_acquire(&c, 0, 2, &s); /* expert 2: 1 use, newest */
    lrun_expert_cache_settle(&c);
    CHECK("LFU: (0, 3) evicts the least used (0, 2), not the oldest (0, 0)",
          lrun_expert_cache_acquire(&c, 0, 3, &s) == 0 && s == 2 && !lrun_expert_cache_holds(&c, 0, 2) &&
              lrun_expert_cache_holds(&c, 0, 0));
    CHECK("LFU: (0, 4) before a settle evicts among the settled: (0, 1)",
          lrun_expert_cache_acquire(&c, 0, 4, &s) == 0 && s == 1 && !lrun_expert_cache_holds(&c, 0, 1) &&
              lrun_expert_cache_holds(&c, 0, 3));
    CHECK("LFU: every slot but (0, 0) unsettled: (0, 5) evicts (0, 0)",
          lrun_expert_cache_acquire(&c, 0, 5, &s) == 0 && s == 0 && lrun_expert_cache_holds(&c, 0, 3) &&
              lrun_expert_cache_holds(&c, 0, 4));
    CHECK("LFU: all unsettled: (0, 6) evicts the oldest, (0, 3)",
          lrun_expert_cache_acquire(&c, 0, 6, &s) == 0 && s == 2 && !lrun_expert_cache_holds(&c, 0, 3));
    lrun_expert_cache_free(&c);

    /* aging: counts halve every age_period acquires, so old popularity fades */
    CHECK("2 slots, 1 block of 4, LFU", lrun_expert_cache_init(&c, 2, 1, 4) == LRUN_OK);
    lrun_expert_cache_set_policy(&c, LRUN_EXPERT_CACHE_LFU);
    CHECK("the period is at least 64 acquires", c.age_period == 64);
    for (int r = 0; r < 40; r++) lrun_expert_cache_acquire(&c, 0, 0, &s);
    CHECK("40 acquires counted", c.freq[0] == 40);
    for (int r = 0; r < 24; r++) lrun_expert_cache_acquire(&c, 0, 1, &s);
    CHECK("the 64th acquire halves the counts", c.freq[0] == 20 && c.freq[1] == 12 && c.since_age == 0);
    lrun_expert_cache_free(&c);

    /* the measurement behind the default: LFU ahead on skewed routing, equal on uniform */
    const int64_t slots = SIM_LAYERS * SIM_EXPERTS / 4;
    const double zl = sim_hit_rate(LRUN_EXPERT_CACHE_LRU, 1.0, slots, 3000),
                 zf = sim_hit_rate(LRUN_EXPERT_CACHE_LFU, 1.0, slots, 3000),
                 ul = sim_hit_rate(LRUN_EXPERT_CACHE_LRU, 0.0, slots, 3000),
                 uf = sim_hit_rate(LRUN_EXPERT_CACHE_LFU, 0.0, slots, 3000);
    printf("# %lld slots for %d blocks of %d experts, top-%d, 3000 steps: Zipf(1) LRU %.3f LFU %.3f; "
           "uniform LRU %.3f LFU %.3f\n",
           (long long)slots, SIM_LAYERS, SIM_EXPERTS, SIM_K, zl, zf, ul, uf);
    CHECK("Zipf(1): LFU's hit rate beats LRU's by 0.05 or more", zf >= zl + 0.05);
    CHECK("uniform: LFU and LRU within 0.02 of each other", fabs(uf - ul) <= 0.02);
    CHECK("uniform: both near the slot fraction 0.25", fabs(ul - 0.25) <= 0.03 && fabs(uf - 0.25) <= 0.03);
}

int main(void)
{
    lrun_expert_cache c;
    CHECK("0 slots is refused", lrun_expert_cache_init(&c, 0, 2, 8) == LRUN_E_ARG);
    CHECK("3 slots for 2 blocks of 8 experts", lrun_expert_cache_init(&c, 3, 2, 8) == LRUN_OK);
    int64_t s = -1;
    CHECK("(0, 5) misses into slot 0", lrun_expert_cache_acquire(&c, 0, 5, &s) == 0 && s == 0);
    CHECK("(1, 5) misses into slot 1 (another block)", lrun_expert_cache_acquire(&c, 1, 5, &s) == 0 && s == 1);
    CHECK("(0, 2) misses into slot 2", lrun_expert_cache_acquire(&c, 0, 2, &s) == 0 && s == 2);
    CHECK("(0, 5) hits slot 0", lrun_expert_cache_acquire(&c, 0, 5, &s) == 1 && s == 0);
    /* uses: (1,5) oldest, then (0,2), then (0,5) */
    CHECK("(0, 7) evicts the least recently used (1, 5) from slot 1",
          lrun_expert_cache_acquire(&c, 0, 7, &s) == 0 && s == 1 && !lrun_expert_cache_holds(&c, 1, 5));
    CHECK("(0, 2) still held", lrun_expert_cache_holds(&c, 0, 2));
    CHECK("(1, 5) again evicts (0, 2) from slot 2", lrun_expert_cache_acquire(&c, 1, 5, &s) == 0 && s == 2 &&
                                                     !lrun_expert_cache_holds(&c, 0, 2));
    CHECK("(0, 5) hits slot 0 again", lrun_expert_cache_acquire(&c, 0, 5, &s) == 1 && s == 0);
    CHECK("(0, 7) hits slot 1", lrun_expert_cache_acquire(&c, 0, 7, &s) == 1 && s == 1);
    CHECK("block 0: 3 hits, 3 misses", c.hits[0] == 3 && c.misses[0] == 3);
    CHECK("block 1: 0 hits, 2 misses", c.hits[1] == 0 && c.misses[1] == 2);
    lrun_expert_cache_copied(&c, 0, 1000);
    lrun_expert_cache_copied(&c, 1, 24);
    lrun_expert_cache_copied(&c, 1, 8);
    lrun_expert_cache_copied(&c, 5, 2); /* no such block: the total only */
    CHECK("bytes copied add up", c.bytes_copied == 1034);
    CHECK("bytes copied per block", c.bytes_copied_layer[0] == 1000 && c.bytes_copied_layer[1] == 32);
    CHECK("a bad block is -1", lrun_expert_cache_acquire(&c, 2, 0, &s) == -1);
    CHECK("a bad expert is -1", lrun_expert_cache_acquire(&c, 0, 8, &s) == -1);
    lrun_expert_cache_reset_stats(&c);
    CHECK("reset: counts zero, slots kept", c.hits[0] == 0 && c.misses[1] == 0 && c.bytes_copied == 0 &&
                                                c.bytes_copied_layer[0] == 0 && lrun_expert_cache_holds(&c, 0, 5));
    lrun_expert_cache_free(&c);

    /* prefetch: a slot taken ahead of use, then the use is a hit */
    CHECK("2 slots, 2 blocks of 4", lrun_expert_cache_init(&c, 2, 2, 4) == LRUN_OK);
    CHECK("(0, 1) misses into slot 0", lrun_expert_cache_acquire(&c, 0, 1, &s) == 0 && s == 0);
    CHECK("prefetch (1, 3) takes slot 1", lrun_expert_cache_prefetch(&c, 1, 3, &s) == 1 && s == 1);
    CHECK("prefetch (1, 3) again: already held", lrun_expert_cache_prefetch(&c, 1, 3, &s) == 0 && s == 1);
    CHECK("(1, 3) then hits", lrun_expert_cache_acquire(&c, 1, 3, &s) == 1 && s == 1);
    CHECK("prefetch (1, 2) evicts the least recently used (0, 1)",
          lrun_expert_cache_prefetch(&c, 1, 2, &s) == 1 && s == 0 && !lrun_expert_cache_holds(&c, 0, 1));
    CHECK("counts: block 1 2 prefetches, 1 hit, 0 misses", c.prefetches[1] == 2 && c.hits[1] == 1 && c.misses[1] == 0);
    CHECK("a bad prefetch is -1", lrun_expert_cache_prefetch(&c, 0, 4, &s) == -1);
    lrun_expert_cache_reset_stats(&c);
    CHECK("reset zeroes prefetches", c.prefetches[1] == 0);
    lrun_expert_cache_free(&c);

    /* a cycle over one more expert than slots misses every time (LRU's worst case) */
    CHECK("2 slots, 1 block of 4", lrun_expert_cache_init(&c, 2, 1, 4) == LRUN_OK);
    int misses = 0;
    for (int r = 0; r < 4; r++)
        for (int x = 0; x < 3; x++) misses += lrun_expert_cache_acquire(&c, 0, x, &s) == 0;
    CHECK("a cycle of 3 over 2 slots: 12 misses of 12", misses == 12 && c.misses[0] == 12 && c.hits[0] == 0);
    lrun_expert_cache_free(&c);
    policies();
    return CHECK_DONE();
}
