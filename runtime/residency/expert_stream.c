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
