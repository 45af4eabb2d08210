/* step_tokens.c — checks of one engine step's tokens. */
#include "step_tokens.h"

#include <string.h>

#include "error.h"

lrun_status lrun_step_tokens_check(int64_t n_tokens, const int32_t *tokens, const int32_t *seq,
                                   const int8_t *want_logits, int64_t n_vocab, int64_t n_seq_max,
                                   int64_t *seq_count, int64_t *n_want)
{
    memset(seq_count, 0, (size_t)n_seq_max * sizeof *seq_count);
    *n_want = 0;
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
