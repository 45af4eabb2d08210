/* step_tokens.h — checks of one engine step's tokens, shared by the CPU and CUDA engines. */
#ifndef LRUN_STEP_TOKENS_H
#define LRUN_STEP_TOKENS_H

#include "lrun.h"

/* Checks every token id against n_vocab and every sequence id against
 * n_seq_max, counts the tokens of each sequence into seq_count (n_seq_max,
 * zeroed here) and the rows marked in want_logits (NULL: none counted here)
 * into *n_want. LRUN_E_ARG naming the first bad token. */
lrun_status lrun_step_tokens_check(int64_t n_tokens, const int32_t *tokens, const int32_t *seq,
                                   const int8_t *want_logits, int64_t n_vocab, int64_t n_seq_max,
                                   int64_t *seq_count, int64_t *n_want);

/* Checks a beam reordering's arguments (lrun_engine_seq_reorder): 0 <= n <=
 * n_seq, a source array when n > 0, every source in [0, n_seq). LRUN_E_ARG
 * naming the first bad one. */
lrun_status lrun_reorder_check(const int64_t *src_of_dst, int64_t n, int64_t n_seq);

#endif
