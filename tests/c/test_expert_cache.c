/* test_expert_cache.c — the expert cache's bookkeeping (runtime/residency/expert_cache.c):
 * free slots first, least recently used replacement, hits and misses per
 * block, bytes copied, the reset, and refusals of bad arguments. */
#include "check.h"
#include "residency/expert_cache.h"

#include <string.h>

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
    lrun_expert_cache_copied(&c, 1000);
    lrun_expert_cache_copied(&c, 24);
    CHECK("bytes copied add up", c.bytes_copied == 1024);
    CHECK("a bad block is -1", lrun_expert_cache_acquire(&c, 2, 0, &s) == -1);
    CHECK("a bad expert is -1", lrun_expert_cache_acquire(&c, 0, 8, &s) == -1);
    lrun_expert_cache_reset_stats(&c);
    CHECK("reset: counts zero, slots kept",
          c.hits[0] == 0 && c.misses[1] == 0 && c.bytes_copied == 0 && lrun_expert_cache_holds(&c, 0, 5));
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
    return CHECK_DONE();
}
