/* disk_fixture.h — what the disk-tier tests share (test_disk_tier{,_gpu}.c,
 * test_disk_packed{,_gpu}.c): an engine over placed weights, a prompt then
 * greedy steps, the matrices' placement, the model's path beside the test
 * program. Header-only like check.h; each test keeps its own sizes. */
#ifndef LRUN_TEST_DISK_FIXTURE_H
#define LRUN_TEST_DISK_FIXTURE_H

#include <libgen.h>
#include <stdio.h>
#include <unistd.h>

#include "lrun.h"
#include "role_fixture.h"

/* One sequence of n_ctx positions, batches of n_batch; k layers prefetched. */
static inline lrun_engine *disk_engine(lrun_model *m, lrun_weight_mode mode, int k, int64_t n_ctx, int64_t n_batch)
{
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = n_ctx, .n_batch_max = n_batch, .weight_mode = mode,
                                .prefetch_layers = k};
    lrun_engine *e = NULL;
    if (lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# engine: %s\n", lrun_last_error());
    return e;
}

/* The prompt (n_prompt tokens, its last row's logits), then n_steps greedy
 * steps: logits holds (n_steps + 1, n_vocab). 0 after a TAP comment. */
static inline int disk_run(lrun_engine *e, int n_prompt, const int32_t *prompt, int n_steps, int64_t n_vocab,
                           float *logits)
{
    int32_t seq[64] = {0}; /* n_prompt <= 64: sequence 0 */
    int64_t n_out = 0;
    if (n_prompt > 64 || lrun_engine_step(e, n_prompt, prompt, seq, NULL, logits, 1, &n_out) != LRUN_OK ||
        n_out != 1) {
        printf("# prompt: %s\n", lrun_last_error());
        return 0;
    }
    for (int s = 0; s < n_steps; s++) {
        int32_t tok = lrun_logits_argmax(logits + (size_t)s * n_vocab, n_vocab);
        if (lrun_engine_step(e, 1, &tok, seq, NULL, logits + (size_t)(s + 1) * n_vocab, 1, &n_out) != LRUN_OK) {
            printf("# step: %s\n", lrun_last_error());
            return 0;
        }
    }
    return 1;
}

static inline int disk_is_matrix(lrun_role r) { return fixture_is_block_matrix(r); }

/* Matrices to tier_of[layer], the head to tier_of[n_layer], the rest on
 * the device, each in its file's form; host_compute 0 turns the host
 * compute off on every tensor (-1 leaves it). *plain, *stored: the
 * streamed weights' plain and stored (packed) bytes. */
static inline void disk_place(lrun_model *m, const lrun_tier *tier_of, int n_layer, int host_compute, size_t *plain,
                              size_t *stored)
{
    *plain = *stored = 0;
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        const lrun_role r = lrun_tensor_role(t);
        lrun_tier tier = LRUN_TIER_DEVICE;
        if (disk_is_matrix(r)) tier = tier_of[lrun_tensor_layer(t)];
        if (r == LRUN_ROLE_LM_HEAD) tier = tier_of[n_layer];
        if (host_compute == 0) lrun_tensor_set_host_compute(t, 0);
        if (lrun_tensor_move(t, lrun_model_device(m), tier) != LRUN_OK) printf("# move: %s\n", lrun_last_error());
        if (tier == LRUN_TIER_DEVICE) continue;
        *plain += lrun_tensor_bytes(t);
        *stored += lrun_tensor_stored_bytes(t);
    }
}

/* out = <the test program's directory>/<stem>_<pid>.gguf: the build
 * directory, a real disk, unlike a tmpfs /tmp. */
static inline void disk_path_beside(char *out, size_t cap, const char *argv0, const char *stem)
{
    char self[200];
    snprintf(self, sizeof self, "%s", argv0 ? argv0 : "./x");
    snprintf(out, cap, "%s/%s_%d.gguf", dirname(self), stem, (int)getpid());
}

#endif
