/* test_model_gen_hf_gpt_oss.c — gpt-oss Hugging Face directories written by
 * the generator (model/model_gen_hf_gpt_oss.c) and read back
 * (model/model_hf_gpt_oss.c). The same random gpt-oss (seed, shape) as a
 * GGUF and as a directory, the experts unquantized (f32, bf16) or MXFP4:
 * the directory's stacked expert tensors and biases hold the GGUF's values
 * (the writer's transposes and nibble reordering are the reader's inverse),
 * and its logits are the GGUF's: bit for bit with unquantized experts; with
 * MXFP4 ones within a tolerance, because a GGUF's MXFP4 experts multiply
 * q8_0-quantized activations (llama.cpp's arithmetic) and an HF
 * directory's f32 ones (transformers'). Sharded directories split gate's
 * and up's tensors apart in the list; the writer pairs them anyway. An
 * expert dtype a checkpoint cannot hold is refused before anything is
 * written. tests/gen_hf_gpt_oss_spec.lua checks the directory against
 * transformers itself. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"

/* a window of 4 on block 0 and 2, crossed by the prompt */
enum { L = 3, D = 64, H = 4, HK = 2, HD = 32, F = 64, V = 300, E = 8, K = 2, N_TOK = 12 };

/* MXFP4 experts: the GGUF's activations are q8_0 (blocks of 32, 8 bits), the directory's f32; seen 0.01 on
 * logits of about 2 */
#define TOL_MXFP4 0.05

static char dir[256];

static lrun_model_gen_spec spec(lrun_dtype w, lrun_dtype experts)
{
    const lrun_model_gen_spec s = {.arch = "gpt-oss",
                                   .n_layer = L,
                                   .n_embd = D,
                                   .n_head = H,
                                   .n_head_kv = HK,
                                   .head_dim = HD,
                                   .n_ff = F,
                                   .n_vocab = V,
                                   .n_ctx = 256,
                                   .weight_dtype = w,
                                   .embd_dtype = w,
                                   .tied_embeddings = 0,
                                   .rope_freq_base = 150000,
                                   .rms_eps = 1e-5,
                                   .seed = 23,
                                   .n_threads = 1,
                                   .sliding_window = 4,
                                   .n_expert = E,
                                   .n_expert_used = K,
                                   .router_skew = 1.0,
                                   .expert_dtype = experts,
                                   .rope_yarn_factor = 32};
    return s;
}

/* The last token's logits (V) of a prompt longer than the window; 0 when the model does not load or run. */
static int logits_of(const char *path, float *out)
{
    static const int32_t tok[N_TOK] = {256, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100};
    return fixture_last_logits(path, "cpu", tok, N_TOK, 32, out);
}

static double max_diff(const float *a, const float *b) { return fixture_max_abs_diff(a, b, V); }

/* 1 when every expert tensor and bias of the directory holds the GGUF's values
 * (as f32: MXFP4 codes and scales, or the floats), in the GGUF's dtype. The
 * directory loads on 3 threads: the MXFP4 repack splits its rows over them. */
static int experts_as_gguf(const char *hf, const char *gguf)
{
    lrun_model *a = fixture_load(gguf, "cpu", 0, 1, -1), *b = fixture_load(hf, "cpu", 0, 3, -1);
    int ok = a && b;
    static const char *const proj[3] = {"gate", "up", "down"}, *const kind[2] = {"weight", "bias"};
    float *x = malloc((size_t)(D * F * E) * sizeof *x), *y = malloc((size_t)(D * F * E) * sizeof *y);
    ok = ok && x && y;
    for (int l = 0; ok && l < L; l++)
        for (int p = 0; ok && p < 3; p++)
            for (int k = 0; ok && k < 2; k++) {
                char name[64];
                snprintf(name, sizeof name, "blk.%d.ffn_%s_exps.%s", l, proj[p], kind[k]);
                lrun_tensor *ta = lrun_model_find_tensor(a, name), *tb = lrun_model_find_tensor(b, name);
                const int64_t n = ta ? lrun_tensor_nelements(ta) : 0;
                ok = ta && tb && n == lrun_tensor_nelements(tb) && n <= D * F * E &&
                     lrun_tensor_dtype(ta) == lrun_tensor_dtype(tb) && lrun_tensor_read_f32(ta, 0, n, x) == LRUN_OK &&
                     lrun_tensor_read_f32(tb, 0, n, y) == LRUN_OK && memcmp(x, y, (size_t)n * sizeof *x) == 0;
                if (!ok) printf("# %s: %s differs from the GGUF's\n", hf, name);
            }
    free(x), free(y);
    lrun_model_free(a), lrun_model_free(b);
    return ok;
}

static void both_ways(const char *what, lrun_dtype w, lrun_dtype experts, int shards, double tol)
{
    char gguf[320], hf[320], name[200];
    snprintf(gguf, sizeof gguf, "%s/%s.gguf", dir, what);
    snprintf(hf, sizeof hf, "%s/%s", dir, what);
    const lrun_model_gen_spec s = spec(w, experts);
    snprintf(name, sizeof name, "%s: the GGUF and the HF directory (%d shards) of the same weights are written", what,
             shards);
    const int made = lrun_model_generate(gguf, &s) == LRUN_OK && lrun_model_generate_hf(hf, &s, shards) == LRUN_OK;
    CHECK(name, made);
    if (!made) {
        printf("# %s\n", lrun_last_error());
        return;
    }
    snprintf(name, sizeof name, "%s: the directory's experts and their biases hold the GGUF's values", what);
    CHECK(name, experts_as_gguf(hf, gguf));
    static float a[V], b[V];
    const int ran = logits_of(gguf, a) && logits_of(hf, b);
    snprintf(name, sizeof name, "%s: the directory's logits are the GGUF's (max |diff| %.3g, tolerance %g)", what,
             ran ? max_diff(a, b) : -1.0, tol);
    CHECK(name, ran && max_diff(a, b) <= tol);
}

/* What a checkpoint cannot hold is refused before anything is written. */
static void refusals(void)
{
    char r[320];
    snprintf(r, sizeof r, "%s/refused", dir);
    const lrun_model_gen_spec q8 = spec(LRUN_DTYPE_F32, LRUN_DTYPE_Q8_0);
    CHECK("q8_0 experts are refused (a gpt-oss checkpoint holds f32/f16/bf16 or MXFP4), leaving no directory",
          lrun_model_generate_hf(r, &q8, 1) == LRUN_E_ARG && strstr(lrun_last_error(), "q8_0") &&
              access(r, F_OK) != 0);
    const lrun_model_gen_spec q4 = spec(LRUN_DTYPE_Q4_0, LRUN_DTYPE_MXFP4);
    CHECK("MXFP4 experts beside q4_0 attention are refused, leaving no directory",
          lrun_model_generate_hf(r, &q4, 1) == LRUN_E_ARG && strstr(lrun_last_error(), "q4_0") &&
              access(r, F_OK) != 0);
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s/lrun_gen_oss_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        printf("not ok 1 - mkdtemp\n1..1\n");
        return 1;
    }
    both_ways("f32", LRUN_DTYPE_F32, LRUN_DTYPE_F32, 1, 0.0);
    both_ways("bf16-sharded", LRUN_DTYPE_BF16, LRUN_DTYPE_F32, 4, 0.0);
    both_ways("mxfp4", LRUN_DTYPE_F32, LRUN_DTYPE_MXFP4, 1, TOL_MXFP4);
    both_ways("mxfp4-bf16-sharded", LRUN_DTYPE_BF16, LRUN_DTYPE_MXFP4, 5, TOL_MXFP4);
    refusals();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return CHECK_DONE();
}
