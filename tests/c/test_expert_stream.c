/* test_expert_stream.c — the schedule of streamed prefill experts
 * (runtime/residency/expert_stream.c): which experts of a chunk stream for
 * a token threshold, their groups, the staging buffer each group fills
 * (alternating, so a group's copies overlap the previous group's products),
 * and the copies of a group (runs of consecutive experts, one copy per
 * projection each); and that a whole schedule copies every selected expert
 * exactly once into a place no other expert of its group takes. */
#include "check.h"
#include "residency/expert_stream.h"

#include <string.h>

#define E 16

/* first[] from per-expert token counts. */
static void offsets(const int64_t *tok, int64_t *first)
{
    first[0] = 0;
    for (int x = 0; x < E; x++) first[x + 1] = first[x] + tok[x];
}

/* What a walk did, in order (lrun_expert_stream_walk_group's callbacks). */
struct walk_log {
    int32_t order[64]; /* experts run, held or streamed */
    int64_t n, waits, group, waited_group, bad;
};
static int log_held(void *ctx, int64_t x)
{
    struct walk_log *w = ctx;
    if (w->n < 64) w->order[w->n++] = (int32_t)x;
    return 0;
}
static int log_wait(void *ctx)
{
    struct walk_log *w = ctx;
    w->waits++;
    w->waited_group = w->group + 1; /* 1-based: 0 is "none yet" */
    return 0;
}
static int log_streamed(void *ctx, int64_t i, int64_t x)
{
    struct walk_log *w = ctx;
    (void)i;
    if (w->waited_group != w->group + 1) w->bad++; /* streamed before its group's copies landed */
    return log_held(ctx, x);
}
static const lrun_expert_stream_walk walk_log_cb = {log_held, log_wait, log_streamed};

int main(void)
{
    /* tokens per expert of a 16-expert block */
    const int64_t tok[E] = {5, 0, 1, 7, 7, 2, 0, 9, 9, 9, 1, 0, 0, 3, 4, 8};
    int64_t first[E + 1];
    offsets(tok, first);
    int32_t sel[E];
    const int64_t all = lrun_expert_stream_select(first, E, 0, NULL, sel);
    CHECK("threshold 0: every touched expert (12)", all == 12 && sel[0] == 0 && sel[1] == 2 && sel[11] == 15);
    CHECK("threshold 1 = threshold 0", lrun_expert_stream_select(first, E, 1, NULL, sel) == 12);
    const int64_t big = lrun_expert_stream_select(first, E, 5, NULL, sel);
    CHECK("threshold 5: experts 0 3 4 7 8 9 15", big == 7 && sel[0] == 0 && sel[1] == 3 && sel[2] == 4 &&
                                                  sel[3] == 7 && sel[4] == 8 && sel[5] == 9 && sel[6] == 15);
    CHECK("threshold 10: none", lrun_expert_stream_select(first, E, 10, NULL, sel) == 0);

    /* experts 1 (no tokens), 3, 8 and 13 in cache slots: never streamed, whatever their tokens */
    int64_t held[E];
    for (int x = 0; x < E; x++) held[x] = -1;
    held[1] = 4, held[3] = 5, held[8] = 0, held[13] = 2;
    const int64_t unheld = lrun_expert_stream_select(first, E, 0, held, sel);
    CHECK("held: 12 touched less 3 held = 9 streamed", unheld == 9 && sel[0] == 0 && sel[1] == 2 && sel[2] == 4);
    CHECK("held, threshold 5: experts 0 4 7 9 15", lrun_expert_stream_select(first, E, 5, held, sel) == 5 &&
                                                       sel[0] == 0 && sel[1] == 4 && sel[2] == 7 && sel[3] == 9 &&
                                                       sel[4] == 15);
    int32_t h[E];
    CHECK("held below expert 8: 3 (1 has no tokens)",
          lrun_expert_stream_held(first, held, 0, 8, h) == 1 && h[0] == 3);
    CHECK("held in [8, 16): 8 13", lrun_expert_stream_held(first, held, 8, E, h) == 2 && h[0] == 8 && h[1] == 13);
    CHECK("no cache: nothing held", lrun_expert_stream_held(first, NULL, 0, E, h) == 0);
    /* the engine's order (engine_cuda_moe_stream.c walks each group with lrun_expert_stream_walk_group, then
     * runs the held ones after the last): every touched expert exactly once, ascending (the resident block's
     * order), each group's streamed experts after its wait, for groups of 1 to 5 and a cache holding the
     * first touched expert (below the first group's first streamed one) or not */
    for (int first_held = 0; first_held < 2; first_held++) {
        held[0] = first_held ? 7 : -1;
        const int64_t ns = lrun_expert_stream_select(first, E, 0, held, sel);
        for (int64_t gmax = 1; gmax <= 5; gmax++) {
            struct walk_log w = {0};
            int64_t from = 0;
            int ok = 1;
            for (int64_t gi = 0; ok && gi < lrun_expert_stream_groups(ns, gmax); gi++) {
                const int64_t ga = gi * gmax, end = ga + gmax < ns ? ga + gmax : ns;
                w.group = gi;
                ok = lrun_expert_stream_walk_group(first, held, sel, ga, end, &from, h, &walk_log_cb, &w) == 0;
            }
            const int64_t nh = lrun_expert_stream_held(first, held, from, E, h);
            for (int64_t j = 0; j < nh; j++) walk_log_cb.held(&w, h[j]);
            int asc = ok && w.n == 12 && w.bad == 0;
            for (int64_t i = 1; i < w.n && asc; i++) asc = w.order[i] > w.order[i - 1] && tok[w.order[i]] > 0;
            char name[160];
            snprintf(name, sizeof name,
                     "walk, groups of %lld%s: the 12 touched experts once each, ascending, a "
                     "group's streamed ones after its wait",
                     (long long)gmax, first_held ? ", expert 0 held" : "");
            CHECK(name, asc && w.waits == lrun_expert_stream_groups(ns, gmax));
        }
    }
    held[0] = -1;

    CHECK("groups: 0 experts, 0 groups", lrun_expert_stream_groups(0, 4) == 0);
    CHECK("groups: 7 of at most 3 is 3 groups", lrun_expert_stream_groups(7, 3) == 3);
    CHECK("groups: 8 of at most 4 is 2 groups", lrun_expert_stream_groups(8, 4) == 2);
    CHECK("groups: group_max 0 counts as 1", lrun_expert_stream_groups(5, 0) == 5);
    CHECK("buffers alternate 0 1 0 1", lrun_expert_stream_buffer(0) == 0 && lrun_expert_stream_buffer(1) == 1 &&
                                           lrun_expert_stream_buffer(2) == 0 && lrun_expert_stream_buffer(7) == 1);

    /* experts 0 3 4 7 8 9 15 in groups of 4: {0 3 4 7} {8 9 15} */
    (void)lrun_expert_stream_select(first, E, 5, NULL, sel);
    lrun_expert_run r[4];
    int64_t nr = lrun_expert_stream_runs(sel, 0, 4, r);
    CHECK("group 0: runs {0}, {3 4}, {7}", nr == 3 && r[0].x0 == 0 && r[0].len == 1 && r[0].slot0 == 0 &&
                                              r[1].x0 == 3 && r[1].len == 2 && r[1].slot0 == 1 && r[2].x0 == 7 &&
                                              r[2].len == 1 && r[2].slot0 == 3);
    nr = lrun_expert_stream_runs(sel, 4, 7, r);
    CHECK("group 1: runs {8 9}, {15}, slots from 0", nr == 2 && r[0].x0 == 8 && r[0].len == 2 && r[0].slot0 == 0 &&
                                                        r[1].x0 == 15 && r[1].len == 1 && r[1].slot0 == 2);
    const int32_t dense[5] = {3, 4, 5, 6, 7};
    nr = lrun_expert_stream_runs(dense, 0, 5, r);
    CHECK("consecutive experts: one run (one copy per projection)", nr == 1 && r[0].x0 == 3 && r[0].len == 5);
    CHECK("an empty range: no runs", lrun_expert_stream_runs(dense, 2, 2, r) == 0);

    /* every schedule: each selected expert copied once, places distinct within a group, in [0, G) */
    int ok = 1;
    for (int64_t g_max = 1; g_max <= 9; g_max++) {
        for (int64_t thr = 0; thr <= 10; thr++) {
            const int64_t n = lrun_expert_stream_select(first, E, thr, NULL, sel);
            int seen[E] = {0};
            const int64_t ng = lrun_expert_stream_groups(n, g_max);
            for (int64_t g = 0; g < ng; g++) {
                const int64_t a = g * g_max, b = a + g_max < n ? a + g_max : n;
                lrun_expert_run runs[E];
                const int64_t k = lrun_expert_stream_runs(sel, a, b, runs);
                int place[E] = {0};
                for (int64_t i = 0; i < k; i++)
                    for (int32_t j = 0; j < runs[i].len; j++) {
                        const int32_t x = runs[i].x0 + j, s = runs[i].slot0 + j;
                        ok &= s >= 0 && s < g_max && !place[s] && tok[x] >= (thr < 1 ? 1 : thr);
                        place[s] = 1;
                        seen[x]++;
                    }
            }
            for (int x = 0; x < E; x++) ok &= seen[x] == (tok[x] >= (thr < 1 ? 1 : thr));
        }
    }
    CHECK("every schedule copies each selected expert once, to a free place of its group", ok);
    return CHECK_DONE();
}
