/* fp8_lazy_fixture.h — an FP8 checkpoint for the lazy-widening tests
 * (test_model_fp8_lazy.c on the CPU, test_model_fp8_lazy_gpu.c on cuda:0):
 * a generated f32 HF directory whose *_proj.weight matrices
 * tests/fp8_hf_dir.py rewrites as F8_E4M3 with per-row scales (numpy), and
 * the helpers both tests use. Header-only like check.h (which it includes:
 * fx_begin prints TAP lines). */
#ifndef LRUN_TEST_FP8_LAZY_FIXTURE_H
#define LRUN_TEST_FP8_LAZY_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lrun.h"

/* A shape whose projections hold ~9.4 MB as bf16 (2 blocks of 4.7 MB), far
 * above one 1 MiB loader chunk, so the saved bf16 copy stands out. */
enum { FX_L = 2, FX_D = 512, FX_H = 8, FX_HK = 4, FX_F = 1024, FX_V = 300 };
#define FX_CHUNK ((size_t)1 << 20) /* bytes: LRUN_LOAD_CHUNK_MB=1, one reader thread */

/* bf16 bytes of the FP8 projections (q, k, v, o, gate, up, down per block). */
static inline size_t fx_fp8_bf16_bytes(void)
{
    const size_t kv = (size_t)FX_D / FX_H * FX_HK;
    return (size_t)FX_L * 2 * ((size_t)FX_D * FX_D * 2 + (size_t)FX_D * kv * 2 + (size_t)FX_D * FX_F * 3);
}

/* dir/f32 and dir/fp8 made under a fresh temporary dir; 0 with a reason in
 * why when numpy (or python3) is missing, -1 on another failure. */
static inline int fx_make(char *dir, size_t cap, char *fp8, size_t fp8_cap, const char **why)
{
    *why = "";
    if (system("python3 -c 'import numpy' 2>/dev/null") != 0) {
        *why = "python3 with numpy writes the FP8 directory (tests/fp8_hf_dir.py)";
        return 0;
    }
    snprintf(dir, cap, "%s/lrun_fp8lazy_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) return -1;
    char src[320], cmd[1024];
    snprintf(src, sizeof src, "%s/f32", dir);
    snprintf(fp8, fp8_cap, "%s/fp8", dir);
    const lrun_model_gen_spec s = {.n_layer = FX_L, .n_embd = FX_D, .n_head = FX_H, .n_head_kv = FX_HK, .n_ff = FX_F,
                                   .n_vocab = FX_V, .n_ctx = 64, .weight_dtype = LRUN_DTYPE_F32,
                                   .embd_dtype = LRUN_DTYPE_F32, .tied_embeddings = 1, .rope_freq_base = 10000,
                                   .rms_eps = 1e-5, .seed = 11, .n_threads = 1};
    if (lrun_model_generate_hf(src, &s, 1) != LRUN_OK) return -1;
    snprintf(cmd, sizeof cmd, "python3 tests/fp8_hf_dir.py '%s' '%s'", src, fp8);
    return system(cmd) == 0 ? 1 : -1;
}

static inline void fx_remove(const char *dir)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (dir[0] && system(cmd) != 0) printf("# could not remove %s\n", dir);
}

/* A test's start: fx_make, then one TAP line: a SKIP naming why (returns 0:
 * the test ends there) or the check that the directory was made (1 made, -1
 * not: the checks that follow fail on NULL models). */
static inline int fx_begin(char *dir, size_t cap, char *fp8, size_t fp8_cap)
{
    const char *why;
    const int made = fx_make(dir, cap, fp8, fp8_cap, &why);
    if (made == 0) {
        printf("ok %d - # SKIP %s\n", ++check_count, why);
        return 0;
    }
    CHECK("an FP8 directory (per-row scales) from a generated f32 one", made == 1);
    return made;
}

/* A test's end: the environment fx_load set back to the default, the directory removed. */
static inline void fx_end(const char *dir)
{
    unsetenv("LRUN_FP8_LAZY");
    fx_remove(dir);
}

/* The model at path on device, FP8 weights lazy (1), widened at load (0) or
 * the device's default (-1: LRUN_FP8_LAZY unset), read by one thread in
 * 1 MiB chunks (so staging is 3 MiB at most). */
static inline lrun_model *fx_load(const char *path, const char *device, int lazy)
{
    if (lazy < 0) unsetenv("LRUN_FP8_LAZY");
    else setenv("LRUN_FP8_LAZY", lazy ? "1" : "0", 1);
    setenv("LRUN_LOAD_THREADS", "1", 1);
    setenv("LRUN_LOAD_CHUNK_MB", "1", 1);
    const lrun_load_opts o = {.device = device, .n_threads = 1, .rope_style = -1};
    lrun_model *m = NULL;
    if (lrun_model_load(&m, path, &o) != LRUN_OK) printf("# load %s: %s\n", path, lrun_last_error());
    return m;
}

/* Every tensor of m to tier (all or nothing). */
static inline lrun_status fx_move_all(lrun_model *m, lrun_tier tier)
{
    const int64_t n = lrun_model_tensor_count(m);
    int64_t *index = malloc((size_t)n * sizeof *index);
    lrun_tier *to = malloc((size_t)n * sizeof *to);
    lrun_status st = index && to ? LRUN_OK : LRUN_E_OOM;
    for (int64_t i = 0; st == LRUN_OK && i < n; i++) index[i] = i, to[i] = tier;
    if (st == LRUN_OK) st = lrun_model_move_tensors(m, n, index, to);
    if (st != LRUN_OK) printf("# move: %s\n", lrun_last_error());
    free(index);
    free(to);
    return st;
}

/* 1 when every tensor of a and b reads back as the same floats, bit for bit. */
static inline int fx_same_weights(lrun_model *a, lrun_model *b)
{
    const int64_t n = lrun_model_tensor_count(a);
    int same = n == lrun_model_tensor_count(b);
    for (int64_t i = 0; same && i < n; i++) {
        lrun_tensor *x = lrun_model_tensor(a, i), *y = lrun_model_tensor(b, i);
        const int64_t k = lrun_tensor_nelements(x);
        float *p = malloc((size_t)k * sizeof *p), *q = malloc((size_t)k * sizeof *q);
        same = p && q && k == lrun_tensor_nelements(y) && lrun_tensor_dtype(x) == lrun_tensor_dtype(y) &&
               lrun_tensor_read_f32(x, 0, k, p) == LRUN_OK && lrun_tensor_read_f32(y, 0, k, q) == LRUN_OK &&
               memcmp(p, q, (size_t)k * sizeof *p) == 0;
        if (!same) printf("# tensor %s differs (%s)\n", lrun_tensor_name(x), lrun_last_error());
        free(p);
        free(q);
    }
    return same;
}

/* The logits of one 4-token step of an engine on m (n_vocab floats into out). */
static inline int fx_logits(lrun_model *m, float *out)
{
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = 16, .n_batch_max = 4, .n_threads = 1};
    static const int32_t tok[4] = {256, 1, 2, 3}, seq[4] = {0};
    lrun_engine *e = NULL;
    int64_t n_out = 0;
    lrun_status st = lrun_engine_init(&e, m, &o);
    if (st == LRUN_OK) st = lrun_engine_step(e, 4, tok, seq, NULL, out, 1, &n_out);
    if (st != LRUN_OK) printf("# engine: %s\n", lrun_last_error());
    lrun_engine_free(e);
    return st == LRUN_OK;
}

#endif
