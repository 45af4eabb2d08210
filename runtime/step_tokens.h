/* step_tokens.h — checks of one engine step's tokens, shared by the CPU and CUDA engines. */
#ifndef LRUN_STEP_TOKENS_H
#define LRUN_STEP_TOKENS_H

#include "lrun.h"

/* What a step is checked against: the engine's sizes and how many positions
 * its sequence s holds now (len_of(engine, s)). */
typedef struct lrun_step_shape {
    int64_t n_vocab, n_seq_max, n_ctx_max;
    const void *engine;
    int64_t (*len_of)(const void *engine, int64_t seq);
} lrun_step_shape;

/* The arguments of lrun_engine_step (lrun.h), for both engines: the arrays
 * are there, every token id is in [0, n_vocab) and every sequence id in
 * [0, n_seq_max), no sequence grows past n_ctx_max, and logits holds the
 * wanted rows. Fills seq_count (n_seq_max: the tokens of each sequence),
 * *n_want (rows marked in want_logits, or with want_logits NULL one per
 * sequence in the step) and *need (the longest sequence after the step).
 * LRUN_E_ARG naming the first bad argument. */
lrun_status lrun_step_check(const lrun_step_shape *shape, int64_t n_tokens, const int32_t *tokens,
                            const int32_t *seq, const int8_t *want_logits, const float *logits,
                            int64_t logits_rows_cap, int64_t *seq_count, int64_t *n_want, int64_t *need);

/* Checks a beam reordering's arguments (lrun_engine_seq_reorder): 0 <= n <=
 * n_seq, a source array when n > 0, every source in [0, n_seq). LRUN_E_ARG
 * naming the first bad one. */
lrun_status lrun_reorder_check(const int64_t *src_of_dst, int64_t n, int64_t n_seq);

#endif
