/* expert_stream.c — the schedule of streamed prefill experts (expert_stream.h). */
#include "residency/expert_stream.h"

int64_t lrun_expert_stream_select(const int64_t *first, int64_t n_expert, int64_t min_tokens, const int64_t *held,
                                  int32_t *out)
{
    const int64_t need = min_tokens < 1 ? 1 : min_tokens;
    int64_t n = 0;
    for (int64_t x = 0; x < n_expert; x++)
        if (first[x + 1] - first[x] >= need && !(held && held[x] >= 0)) out[n++] = (int32_t)x;
    return n;
}

int64_t lrun_expert_stream_held(const int64_t *first, const int64_t *held, int64_t from, int64_t to, int32_t *out)
{
    int64_t n = 0;
    for (int64_t x = from < 0 ? 0 : from; held && x < to; x++)
        if (held[x] >= 0 && first[x + 1] > first[x]) out[n++] = (int32_t)x;
    return n;
}

/* The held experts in [*from, to) through cb->held; *from moves to `to`. */
static int held_below(const int64_t *first, const int64_t *held, int64_t *from, int64_t to, int32_t *hsel,
                      const lrun_expert_stream_walk *cb, void *ctx)
{
    const int64_t nh = lrun_expert_stream_held(first, held, *from, to, hsel);
    for (int64_t j = 0; j < nh; j++) {
        const int r = cb->held(ctx, hsel[j]);
        if (r) return r;
    }
    if (to > *from) *from = to;
    return 0;
}

int lrun_expert_stream_walk_group(const int64_t *first, const int64_t *held, const int32_t *sel, int64_t a,
                                  int64_t end, int64_t *from, int32_t *hsel, const lrun_expert_stream_walk *cb,
                                  void *ctx)
{
    int r = a < end ? held_below(first, held, from, sel[a], hsel, cb, ctx) : 0;
    if (!r) r = cb->wait(ctx);
    for (int64_t i = a; !r && i < end; i++) {
        const int64_t x = sel[i];
        r = held_below(first, held, from, x, hsel, cb, ctx);
        if (!r) r = cb->streamed(ctx, i, x);
        if (!r) *from = x + 1;
    }
    return r;
}

int64_t lrun_expert_stream_groups(int64_t n, int64_t group_max)
{
    const int64_t g = group_max < 1 ? 1 : group_max;
    return n <= 0 ? 0 : (n + g - 1) / g;
}

int64_t lrun_expert_stream_runs(const int32_t *experts, int64_t a, int64_t b, lrun_expert_run *runs)
{
    int64_t n = 0;
    for (int64_t i = a; i < b; i++) {
        if (n > 0 && experts[i] == runs[n - 1].x0 + runs[n - 1].len) {
            runs[n - 1].len++;
            continue;
        }
        runs[n++] = (lrun_expert_run){experts[i], 1, (int32_t)(i - a)};
    }
    return n;
}
