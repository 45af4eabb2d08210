/* stream_fixture.h — what the AS_PLACED CUDA engine tests share
 * (test_stream_gpu.c on the float path, test_stream_exact_gpu.c on the
 * exact one): a placement (where each tensor goes, by role and layer), the
 * placements both use, moving one tensor where its placement says, and a
 * run of a prompt (every row's logits) then greedy steps. Header-only like
 * check.h; each test keeps its own sizes and its own placements beside
 * these. */
#ifndef LRUN_TEST_STREAM_FIXTURE_H
#define LRUN_TEST_STREAM_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "lrun.h"
#include "role_fixture.h"

// ---------------------------------------------------------------- placements

/* Where one tensor goes: its tier, and whether its matmul runs on the host. */
typedef struct {
    lrun_tier tier;
    int host_compute;
} where;

typedef where (*placement_fn)(lrun_role role, int layer);

static inline int is_matrix(lrun_role r) { return fixture_is_block_matrix(r); }

static const where DEV = {LRUN_TIER_DEVICE, 0}, PIN = {LRUN_TIER_PINNED, 0}, HOST = {LRUN_TIER_HOST, 0},
                   MMAP = {LRUN_TIER_MMAP, 0}, HOST_CPU = {LRUN_TIER_HOST, 1}, PIN_CPU = {LRUN_TIER_PINNED, 1};

static inline where layers_pinned(lrun_role r, int l) { return (void)l, is_matrix(r) ? PIN : DEV; }
/* layers 1 and 2 computed on the host, the others streamed; the head computed on the host from pinned memory */
static inline where host_layers(lrun_role r, int l)
{
    if (!is_matrix(r)) return r == LRUN_ROLE_LM_HEAD ? PIN_CPU : DEV;
    return l == 1 || l == 2 ? HOST_CPU : PIN;
}
static inline where embd_head_pinned(lrun_role r, int l)
{
    return (void)l, r == LRUN_ROLE_EMBEDDING || r == LRUN_ROLE_LM_HEAD ? PIN : DEV;
}
static inline where all_mmap(lrun_role r, int l) { return (void)r, (void)l, MMAP; }

/* Moves t (of m) to w's tier and sets its host compute; 0 on failure, with
 * the reason printed as a TAP comment. */
static inline int place_tensor(lrun_model *m, lrun_tensor *t, where w)
{
    if (lrun_tensor_move(t, w.tier == LRUN_TIER_DEVICE ? lrun_model_device(m) : NULL, w.tier) != LRUN_OK) {
        printf("# move %s: %s\n", lrun_tensor_name(t), lrun_last_error());
        return 0;
    }
    lrun_tensor_set_host_compute(t, w.host_compute);
    return 1;
}

// ---------------------------------------------------------------- runs

/* The np-token prompt (every row's logits, (np, v), into logits), then nd
 * greedy steps (one row each after them; the tokens into gen); the engine's
 * stats reset after the prompt when reset_after_prompt, so that they then
 * count the decode steps alone. 1 when every step ran. */
static inline int prompt_then_greedy(lrun_engine *e, int np, int nd, int64_t v, const int32_t *prompt, float *logits,
                                     int32_t *gen, int reset_after_prompt)
{
    enum { MAX_NP = 64 };
    if (np > MAX_NP) {
        printf("# prompt: %d tokens, at most %d here\n", np, MAX_NP);
        return 0;
    }
    int32_t seq[MAX_NP] = {0};
    int8_t want[MAX_NP];
    memset(want, 1, sizeof want);
    int64_t n_out = 0;
    if (lrun_engine_step(e, np, prompt, seq, want, logits, np, &n_out) != LRUN_OK || n_out != np) {
        printf("# prompt: %s\n", lrun_last_error());
        return 0;
    }
    if (reset_after_prompt) lrun_engine_reset_stats(e);
    const float *last = logits + (np - 1) * v;
    for (int i = 0; i < nd; i++) {
        int32_t tok = lrun_logits_argmax(last, v);
        gen[i] = tok;
        float *row = logits + (np + i) * v;
        if (lrun_engine_step(e, 1, &tok, seq, NULL, row, 1, &n_out) != LRUN_OK || n_out != 1) {
            printf("# decode: %s\n", lrun_last_error());
            return 0;
        }
        last = row;
    }
    return 1;
}

#endif
