/* fuzz_hfdir.c — libFuzzer target for Hugging Face model directories: the
 * JSON files a downloaded directory brings (config.json through
 * runtime/model/model_hf.c, tokenizer.json and tokenizer_config.json through
 * runtime/text/tokjson*.c and hf_*.c) read by lrun_model_load on the CPU, one
 * thread, a 64 MiB budget. Any input must load or fail with a status, never
 * crash, hang or leak.
 *
 * The input is config.json, tokenizer.json and tokenizer_config.json
 * separated by NUL bytes (a missing or empty part: no such file). The
 * weights are fixed: model.safetensors of a tiny generated llama (the spec
 * below, the same as tests/fuzz/make_seeds.lua's, whose seeds are that
 * model's own three files), so a config that matches them reaches the
 * weights and the tokenizer; a loaded model encodes and decodes a text. */
#include "lrun.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static void put(const char *name, const uint8_t *data, size_t size)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (size == 0) {
        unlink(path);
        return;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, size, f);
    fclose(f);
}

static void use(lrun_model *m)
{
    const lrun_tokenizer *tok = lrun_model_tokenizer(m);
    if (!tok) return;
    static const char text[] = "Hello <s> wörld 2026!\n";
    int32_t ids[64];
    int64_t n = 0;
    if (lrun_tokenizer_encode(tok, text, sizeof text - 1, 1, 1, ids, 64, &n) != LRUN_OK || n > 64) return;
    char out[512];
    size_t len = 0;
    (void)lrun_tokenizer_decode(tok, ids, n, 0, out, sizeof out, &len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/dev/shm/lrun-fuzz-hf-%d", (int)getpid());
        const lrun_model_gen_spec spec = {.n_layer = 1, .n_embd = 8, .n_head = 2, .n_head_kv = 1, .n_ff = 16,
                                          .n_vocab = 300, .n_ctx = 32, .weight_dtype = LRUN_DTYPE_F32,
                                          .embd_dtype = LRUN_DTYPE_F32, .tied_embeddings = 1,
                                          .rope_freq_base = 10000, .rms_eps = 1e-5, .seed = 1, .n_threads = 1};
        if (lrun_model_generate_hf(dir, &spec, 1) != LRUN_OK) abort();
        char path[128];
        snprintf(path, sizeof path, "%s/generation_config.json", dir);
        unlink(path); /* fixed, not fuzzed: absent */
    }
    static const char *const names[3] = {"config.json", "tokenizer.json", "tokenizer_config.json"};
    size_t at = 0;
    for (int part = 0; part < 3; part++) {
        const uint8_t *end = at < size ? memchr(data + at, 0, size - at) : NULL;
        const size_t n = at >= size ? 0 : end ? (size_t)(end - (data + at)) : size - at;
        put(names[part], data + at, n);
        at += n + 1;
    }
    const lrun_load_opts o = {.device = "cpu", .device_budget = (size_t)64 << 20, .n_threads = 1, .rope_style = -1};
    lrun_model *m = NULL;
    if (lrun_model_load(&m, dir, &o) == LRUN_OK) {
        use(m);
        lrun_model_free(m);
    }
    return 0;
}
