/* fuzz_model.c — libFuzzer target: a whole GGUF file through lrun_model_load
 * on the CPU (the reader, then the model's checks: architecture, hyper-
 * parameters, tensor roles and shapes, tokenizer), one thread, under a
 * 64 MiB device budget so a hostile size is an error, not an allocation.
 * Seeds and dictionary: the same as fuzz_gguf's (tests/fuzz/make_seeds.lua
 * writes both corpora). */
#include "lrun.h"

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/dev/shm/lrun-fuzz-model-%d.gguf", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    const lrun_load_opts o = {.device = "cpu", .device_budget = (size_t)64 << 20, .n_threads = 1, .rope_style = -1};
    lrun_model *m = NULL;
    if (lrun_model_load(&m, path, &o) == LRUN_OK) {
        const lrun_model_info *in = lrun_model_get_info(m);
        volatile int64_t sink = in->n_vocab + in->n_layer + lrun_model_tensor_count(m);
        (void)sink;
        lrun_model_free(m);
    }
    unlink(path);
    return 0;
}
