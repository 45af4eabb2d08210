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
