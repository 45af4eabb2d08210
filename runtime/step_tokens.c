/* step_tokens.c — checks of one engine step's tokens. */
#include "step_tokens.h"

#include <string.h>

#include "core/error.h"

lrun_status lrun_step_check(const lrun_step_shape *shape, int64_t n_tokens, const int32_t *tokens,
                            const int32_t *seq, const int8_t *want_logits, const float *logits,
                            int64_t logits_rows_cap, int64_t *seq_count, int64_t *n_want, int64_t *need)
{
    const int64_t n_vocab = shape->n_vocab, n_seq_max = shape->n_seq_max;
    *n_want = *need = 0;
    if (n_tokens < 0 || (n_tokens > 0 && (!tokens || !seq)))
        return lrun_fail(LRUN_E_ARG, "engine step: need n_tokens >= 0 (%lld) and tokens and seq arrays",
                         (long long)n_tokens);
    memset(seq_count, 0, (size_t)n_seq_max * sizeof *seq_count);
    for (int64_t i = 0; i < n_tokens; i++) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return lrun_fail(LRUN_E_ARG, "engine step: token %lld is id %d, outside the vocabulary [0, %lld)",
                             (long long)i, tokens[i], (long long)n_vocab);
        if (seq[i] < 0 || seq[i] >= n_seq_max)
            return lrun_fail(LRUN_E_ARG, "engine step: token %lld belongs to sequence %d, outside [0, %lld)",
                             (long long)i, seq[i], (long long)n_seq_max);
        seq_count[seq[i]]++;
        if (want_logits && want_logits[i]) ++*n_want;
    }
    for (int64_t s = 0; s < n_seq_max; s++) {
        if (!seq_count[s]) continue;
        if (!want_logits) ++*n_want;
        const int64_t len = shape->len_of(shape->engine, s) + seq_count[s];
        if (len > shape->n_ctx_max)
            return lrun_fail(LRUN_E_ARG, "engine step: sequence %lld would reach %lld positions, more than n_ctx_max "
                             "%lld", (long long)s, (long long)len, (long long)shape->n_ctx_max);
        *need = len > *need ? len : *need;
    }
    if (*n_want > 0 && (!logits || logits_rows_cap < *n_want))
        return lrun_fail(LRUN_E_ARG, "engine step: %lld logit rows are wanted but the buffer holds %lld",
                         (long long)*n_want, logits ? (long long)logits_rows_cap : 0LL);
    return LRUN_OK;
}

lrun_status lrun_reorder_check(const int64_t *src_of_dst, int64_t n, int64_t n_seq)
{
    if (n < 0 || n > n_seq || (n > 0 && !src_of_dst))
        return lrun_fail(LRUN_E_ARG, "KV cache: reorder of %lld sequences: need 0 <= n <= %lld and a source array",
                         (long long)n, (long long)n_seq);
    for (int64_t d = 0; d < n; d++)
        if (src_of_dst[d] < 0 || src_of_dst[d] >= n_seq)
            return lrun_fail(LRUN_E_ARG, "KV cache: reorder: source %lld of sequence %lld out of range [0, %lld)",
                             (long long)src_of_dst[d], (long long)d, (long long)n_seq);
    return LRUN_OK;
}
