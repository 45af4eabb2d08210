/* test_expert_admit.c — the hybrid expert cache's admission rules
 * (runtime/residency/expert_admit.c): free slots admit unconditionally, a
 * full cache only when the miss's LFU count beats the victim's, the cap per
 * block and step, pending copies that are misses until ready() says done,
 * victims that are never pending or used in the current step, bad arguments;
 * and on synthetic routing streams (as test_expert_cache.c's) the hit rate
 * against plain LFU, which copies every miss before computing it, and the
 * admissions a block and token: the "no thrash on uniform routing" rule. */
#include "check.h"
#include "residency/expert_admit.h"
#include "routing_stream.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ready(): slots listed done by the test (a fake copy stream). */
static uint8_t done_slots[64];
static int fake_ready(void *ctx, int64_t s)
{
    (void)ctx;
    return done_slots[s];
}

static void rules(void)
{
    lrun_expert_cache c;
    lrun_expert_admit a;
    int64_t s = -1, xs[4], slots[4];
    CHECK("3 slots, 1 block of 8, LFU", lrun_expert_cache_init(&c, 3, 1, 8) == LRUN_OK);
    lrun_expert_cache_set_policy(&c, LRUN_EXPERT_CACHE_LFU);
    CHECK("cap 0 is refused", lrun_expert_admit_init(&a, &c, 0) == LRUN_E_ARG);
    CHECK("cap 2", lrun_expert_admit_init(&a, &c, 2) == LRUN_OK);
    memset(done_slots, 0, sizeof done_slots);
    /* step 1: experts 1, 2, 3 miss (empty cache); free slots admit, 2 of 3 (the cap) */
    const int32_t m1[3] = {1, 2, 3};
    for (int i = 0; i < 3; i++) lrun_expert_admit_lookup(&a, &c, 0, m1[i], fake_ready, NULL, &s);
    CHECK("an empty cache: 3 misses, host-computed", c.misses[0] == 3 && c.host_computed[0] == 3 && c.hits[0] == 0);
    CHECK("free slots admit without a count test, at most the cap",
          lrun_expert_admit_choose(&a, &c, 0, m1, 3, 8, xs, slots) == 2 && xs[0] == 1 && slots[0] == 0 &&
              xs[1] == 2 && slots[1] == 1 && c.admitted[0] == 2);
    CHECK("max below the cap wins", lrun_expert_admit_choose(&a, &c, 0, m1, 3, 0, xs, slots) == 0);
    lrun_expert_cache_settle(&c);
    /* step 2: expert 1's copy is not done: still a miss; expert 2's is: a hit */
    done_slots[1] = 1;
    CHECK("a pending slot is a miss", lrun_expert_admit_lookup(&a, &c, 0, 1, fake_ready, NULL, &s) == 0 && s == -1);
    CHECK("a completed copy is a hit", lrun_expert_admit_lookup(&a, &c, 0, 2, fake_ready, NULL, &s) == 1 && s == 1);
    CHECK("a held expert is not admitted twice",
          lrun_expert_admit_choose(&a, &c, 0, (const int32_t[]){1}, 1, 8, xs, slots) == 0);
    done_slots[0] = 1;
    lrun_expert_admit_poll(&a, fake_ready, NULL);
    CHECK("poll clears completed copies", a.n_pending == 0 && !a.pending[0] && !a.pending[1]);
    /* step 3: 3 misses into the last free slot */
    lrun_expert_admit_lookup(&a, &c, 0, 3, fake_ready, NULL, &s);
    CHECK("the last free slot admits",
          lrun_expert_admit_choose(&a, &c, 0, (const int32_t[]){3}, 1, 8, xs, slots) == 1 && slots[0] == 2);
    /* slot 0: expert 1, 2 uses, settled; slot 1: expert 2, a hit of this step; slot 2: pending */
    CHECK("neither this step's hit nor a pending slot is a victim: slot 0", lrun_expert_admit_victim(&a, &c) == 0);
    lrun_expert_cache_settle(&c);
    CHECK("after the settle, of two slots at 2 uses the older goes: slot 0", lrun_expert_admit_victim(&a, &c) == 0);
    /* a full cache: expert 5 with 1 use does not beat the victim's 2; with 6 uses (> 2·2 + 1) it does */
    lrun_expert_admit_lookup(&a, &c, 0, 5, fake_ready, NULL, &s);
    CHECK("a miss of count 1 does not beat a victim of 2",
          lrun_expert_admit_choose(&a, &c, 0, (const int32_t[]){5}, 1, 8, xs, slots) == 0);
    for (int r = 0; r < 5; r++) lrun_expert_admit_lookup(&a, &c, 0, 5, fake_ready, NULL, &s);
    lrun_expert_cache_settle(&c);
    CHECK("a miss of count 6 beats a victim of 2 (6 > 2·2 + 1)",
          lrun_expert_admit_choose(&a, &c, 0, (const int32_t[]){5}, 1, 8, xs, slots) == 1 && slots[0] == 0 &&
              !lrun_expert_cache_holds(&c, 0, 1) && lrun_expert_cache_holds(&c, 0, 5));
    CHECK("beats: 5 vs 2 no, 6 vs 2 yes, 2 vs 0 yes, 1 vs 0 no",
          !lrun_expert_admit_beats(5, 2) && lrun_expert_admit_beats(6, 2) && lrun_expert_admit_beats(2, 0) &&
              !lrun_expert_admit_beats(1, 0));
    CHECK("bad arguments are -1", lrun_expert_admit_lookup(&a, &c, 1, 0, fake_ready, NULL, &s) == -1 &&
                                      lrun_expert_admit_lookup(&a, &c, 0, 8, fake_ready, NULL, &s) == -1 &&
                                      lrun_expert_admit_choose(&a, &c, 2, NULL, 0, 1, xs, slots) == -1);
    lrun_expert_cache_reset_stats(&c);
    CHECK("reset zeroes host_computed and admitted", c.host_computed[0] == 0 && c.admitted[0] == 0);
    lrun_expert_admit_free(&a);
    lrun_expert_cache_free(&c);
}

#define SIM_WARM 500 /* tokens before the counts are taken: the cache fills from empty */

typedef struct sim_result {
    double hit_rate;   /* after the warm-up */
    double admissions; /* per block and token, after the warm-up */
} sim_result;

/* Copies complete one token after they were queued (a background copy of a
 * few hundred µs against a token of tens of ms). */
static int64_t sim_token, admitted_at[SIM_LAYERS * SIM_EXPERTS];
static int sim_ready(void *ctx, int64_t s)
{
    (void)ctx;
    return admitted_at[s] < sim_token;
}

/* Each token, in each block, SIM_K distinct experts drawn by Zipf exponent s
 * (0: uniform), ranks permuted per block; hybrid: looked up, misses admitted
 * (cap per block and step), settled; plain (hybrid 0): LFU acquires, each
 * miss copied before use. */
static sim_result simulate(int hybrid, double zipf, int64_t slots, int64_t cap, int tokens)
{
    routing_stream z;
    routing_stream_init(&z, zipf);
    lrun_expert_cache c;
    lrun_expert_admit a;
    sim_result r = {-1, -1};
    if (lrun_expert_cache_init(&c, slots, SIM_LAYERS, SIM_EXPERTS) != LRUN_OK) return r;
    lrun_expert_cache_set_policy(&c, LRUN_EXPERT_CACHE_LFU);
    if (lrun_expert_admit_init(&a, &c, cap) != LRUN_OK) return r;
    int64_t hits = 0, uses = 0, admits = 0;
    for (sim_token = 0; sim_token < tokens; sim_token++) {
        if (sim_token == SIM_WARM) {
            hits = uses = 0;
            lrun_expert_cache_reset_stats(&c);
        }
        for (int l = 0; l < SIM_LAYERS; l++) {
            int32_t chosen[SIM_K] = {0}, missed[SIM_K] = {0};
            int n_missed = 0;
            routing_stream_draw(&z, l, chosen);
            for (int j = 0; j < SIM_K; j++) {
                const int32_t x = chosen[j];
                int64_t s;
                const int hit = hybrid ? lrun_expert_admit_lookup(&a, &c, l, x, sim_ready, NULL, &s)
                                       : lrun_expert_cache_acquire(&c, l, x, &s);
                hits += hit == 1, uses++;
                if (hybrid && hit == 0) missed[n_missed++] = x;
            }
            if (hybrid) {
                int64_t xs[SIM_K], ss[SIM_K];
                const int64_t n = lrun_expert_admit_choose(&a, &c, l, missed, n_missed, SIM_K, xs, ss);
                for (int64_t i = 0; i < n; i++) admitted_at[ss[i]] = sim_token;
            }
            lrun_expert_cache_settle(&c);
        }
    }
    for (int l = 0; l < SIM_LAYERS; l++) admits += c.admitted[l];
    r.hit_rate = (double)hits / (double)uses;
    r.admissions = (double)admits / (double)((tokens - SIM_WARM) * SIM_LAYERS);
    lrun_expert_admit_free(&a);
    lrun_expert_cache_free(&c);
    return r;
}

static void streams(void)
{
    const int64_t slots = SIM_LAYERS * SIM_EXPERTS / 4;
    const int tokens = 3000;
    const sim_result zl = simulate(0, 1.0, slots, 1, tokens), zh = simulate(1, 1.0, slots, 1, tokens),
                     zh2 = simulate(1, 1.0, slots, 2, tokens), ul = simulate(0, 0.0, slots, 1, tokens),
                     uh = simulate(1, 0.0, slots, 1, tokens);
    printf("# %lld slots for %d blocks of %d experts, top-%d, %d tokens (after %d of warm-up): "
           "Zipf(1) LFU %.3f, hybrid cap 1 %.3f (%.3f admissions a block and token), cap 2 %.3f (%.3f); "
           "uniform LFU %.3f, hybrid %.3f (%.3f admissions)\n",
           (long long)slots, SIM_LAYERS, SIM_EXPERTS, SIM_K, tokens - SIM_WARM, SIM_WARM, zl.hit_rate, zh.hit_rate,
           zh.admissions, zh2.hit_rate, zh2.admissions, ul.hit_rate, uh.hit_rate, uh.admissions);
    /* plain LFU copies every miss (3 of 4 experts a block and token under uniform routing) */
    CHECK("Zipf(1): hybrid hits at least as often as LFU copying every miss, less 0.02",
          zh.hit_rate >= zl.hit_rate - 0.02);
    CHECK("Zipf(1): admissions settle under 0.05 a block and token", zh.admissions < 0.05);
    CHECK("uniform: hybrid hits near the slot fraction 0.25", fabs(uh.hit_rate - 0.25) <= 0.03);
    CHECK("uniform: no thrash, under 0.1 admissions a block and token", uh.admissions < 0.1);
    CHECK("a cap of 2 changes the steady state by under 0.02", fabs(zh2.hit_rate - zh.hit_rate) < 0.02);
}

int main(void)
{
    rules();
    streams();
    return CHECK_DONE();
}
