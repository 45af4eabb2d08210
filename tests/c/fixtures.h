/* fixtures.h — helpers the C tests share, header-only like check.h. */
#ifndef LRUN_TEST_FIXTURES_H
#define LRUN_TEST_FIXTURES_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "lrun.h"

/* The model at path on device ("cpu", "cuda:0"), under budget bytes (0: no
 * cap), with n_threads CPU threads (0: all cores) and rope_style (-1: from
 * the file); NULL after a TAP comment naming the error. */
static inline lrun_model *fixture_load(const char *path, const char *device, size_t budget, int n_threads,
                                       int rope_style)
{
    const lrun_load_opts o = {.device = device,
                              .device_budget = budget,
                              .n_threads = n_threads,
                              .rope_style = rope_style};
    lrun_model *m = NULL;
    if (lrun_model_load(&m, path, &o) != LRUN_OK) printf("# load %s on %s: %s\n", path, device, lrun_last_error());
    return m;
}

/* The parsed JSON file at path (a golden under tests/golden/), or NULL when
 * it cannot be read or parsed; the caller frees it with cJSON_Delete. */
static inline cJSON *fixture_read_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (!text) {
        fclose(f);
        return NULL;
    }
    const size_t got = fread(text, 1, (size_t)len, f);
    fclose(f);
    text[got] = '\0';
    cJSON *root = cJSON_Parse(text);
    free(text);
    return root;
}

/* The last row's logits (out: the model's n_vocab floats) after one step of
 * the n prompt tokens from an empty cache, in a one-thread engine of n_ctx
 * positions on device; 0 after a TAP comment naming the error. */
static inline int fixture_last_logits(const char *path, const char *device, const int32_t *tokens, int64_t n,
                                      int64_t n_ctx, float *out)
{
    lrun_model *m = fixture_load(path, device, 0, 1, -1);
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = n_ctx, .n_batch_max = n, .n_threads = 1};
    lrun_engine *e = NULL;
    int32_t *seq = calloc((size_t)(n > 0 ? n : 1), sizeof *seq);
    int64_t n_out = 0;
    const int ok = m && seq && lrun_engine_init(&e, m, &o) == LRUN_OK &&
                   lrun_engine_step(e, n, tokens, seq, NULL, out, 1, &n_out) == LRUN_OK && n_out == 1;
    if (m && !ok) printf("# %s: %s\n", path, lrun_last_error());
    free(seq);
    lrun_engine_free(e);
    lrun_model_free(m);
    return ok;
}

/* The largest |a[i] - b[i]| over n floats. */
static inline double fixture_max_abs_diff(const float *a, const float *b, int64_t n)
{
    double w = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        if (d > w) w = d;
        if (-d > w) w = -d;
    }
    return w;
}

/* The end of a CPU-against-GPU comparison: both engines, then the models
 * they ran on (engines first: an engine holds its model); NULLs are fine. */
static inline void fixture_free_pair(lrun_engine *ec, lrun_engine *eg, lrun_model *mc, lrun_model *mg)
{
    lrun_engine_free(ec);
    lrun_engine_free(eg);
    lrun_model_free(mc);
    lrun_model_free(mg);
}

#endif
