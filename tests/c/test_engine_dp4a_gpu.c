/* test_engine_dp4a_gpu.c — the CUDA engine with LRUN_CUDA_GEMV_DP4A=1 (and
 * =q2_k / =q3_k, the list form, for those types), with LRUN_CUDA_GEMV_STAGE=1
 * (the staged GEMV, kernels/gemv_stage.cu, for its six types; =q4_0 the
 * list form) and with its per-type default (the dp4a GEMV, kernels/gemv_dp4a.cu) against the CPU engine, on
 * random-weight models of every type the kernel takes. The CPU quantizes
 * matmul activations to 8 bits as llama.cpp does, and so does the dp4a
 * kernel, so its decode logits should sit closer to the CPU's than the
 * default kernel's (f32 activations, test_engine_gpu's 5e-2): both
 * printed, the dp4a run checked at test_engine_gpu's tolerance and against
 * the default run's agreement. LRUN_CUDA_GEMV_SPLIT=1 (Q8_0, Q4_0: the
 * split-row GEMV, kernels/gemv_split.cu, and its prefill dequantization)
 * is checked the same way, and that the engine split the block matrices
 * (not the tied embedding) and gave the model GGUF's bytes back at its
 * free (each one moved to the host equals the file's bytes); so is the
 * default for Q8_0 and Q4_0 (the same split, x quantized once per input,
 * kernels/gemv_split_q8x.cu), and LRUN_CUDA_GEMV_Q8X=0 (no split). The
 * "older GEMV" and dp4a runs set LRUN_CUDA_GEMV_Q8X=0, so they still run
 * their kernels on GGUF's layout. Skipped (TAP SKIP) where no GPU is visible. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/tensor.h"
#include "fixtures.h"
#include "lrun.h"
#include "model/model.h" /* the model's tensors: which ones an engine split */

enum { L = 2, D = 256, H = 8, HK = 4, F = 768, V = 1000, CTX = 256, NP = 24, ND = 8 };

/* max |a-b| / max |a| over n values */
static double rel_diff(const float *a, const float *b, int64_t n)
{
    double d = 0, s = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        s = fmax(s, fabs((double)a[i]));
    }
    return d / s;
}

static lrun_engine *engine(lrun_model *m)
{
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = CTX, .n_batch_max = 64,
                                .cache_kind = LRUN_CACHE_KIND_DYNAMIC};
    lrun_engine *e = NULL;
    if (m && lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# engine: %s\n", lrun_last_error());
    return e;
}

/* one token of sequence 0 (or the prompt), the last row's logits */
static int step(lrun_engine *e, const int32_t *tok, int64_t n, float *logits)
{
    int32_t s[NP];
    int8_t w[NP];
    for (int64_t i = 0; i < n; i++) s[i] = 0, w[i] = i == n - 1;
    int64_t n_out = 0;
    const lrun_status st = lrun_engine_step(e, n, tok, s, w, logits, 1, &n_out);
    if (st != LRUN_OK) printf("# step: %s\n", lrun_last_error());
    return st == LRUN_OK && n_out == 1;
}

/* What LRUN_CUDA_GEMV_SPLIT=1 did to the CUDA engine's model: tensors split
 * while the engine lived, the tied embedding among them (it must not be),
 * and whether each split tensor, after the engine's free, moved to the host
 * holds its file's bytes. */
struct split_seen {
    int64_t n_split, embd_split;
    int restored;
};

/* worst decode rel of the CUDA engine (made with LRUN_CUDA_GEMV_DP4A = dp4a,
 * LRUN_CUDA_GEMV_STAGE = stage, LRUN_CUDA_GEMV_SPLIT = split and
 * LRUN_CUDA_GEMV_Q8X = q8x; NULL: unset) against the CPU's; seen (may be
 * NULL) what the split did */
static double decode_rel(const char *path, const char *dp4a, const char *stage, const char *split, const char *q8x,
                         int *ok, struct split_seen *seen)
{
    if (dp4a) setenv("LRUN_CUDA_GEMV_DP4A", dp4a, 1);
    else unsetenv("LRUN_CUDA_GEMV_DP4A");
    if (stage) setenv("LRUN_CUDA_GEMV_STAGE", stage, 1);
    else unsetenv("LRUN_CUDA_GEMV_STAGE");
    if (split) setenv("LRUN_CUDA_GEMV_SPLIT", split, 1);
    else unsetenv("LRUN_CUDA_GEMV_SPLIT");
    if (q8x) setenv("LRUN_CUDA_GEMV_Q8X", q8x, 1);
    else unsetenv("LRUN_CUDA_GEMV_Q8X");
    lrun_model *mc = fixture_load(path, "cpu", 0, 0, -1), *mg = fixture_load(path, "cuda:0", 0, 0, -1);
    lrun_engine *ec = engine(mc), *eg = engine(mg); /* the variable is read here */
    unsetenv("LRUN_CUDA_GEMV_DP4A");
    unsetenv("LRUN_CUDA_GEMV_STAGE");
    unsetenv("LRUN_CUDA_GEMV_SPLIT");
    unsetenv("LRUN_CUDA_GEMV_Q8X");
    int32_t tok[NP + ND];
    uint32_t seed = 7;
    for (int i = 0; i < NP + ND; i++) seed = seed * 1664525u + 1013904223u, tok[i] = (int32_t)(seed >> 8) % V;
    float *lc = malloc(V * sizeof *lc), *lg = malloc(V * sizeof *lg);
    *ok = ec && eg && lc && lg && step(ec, tok, NP, lc) && step(eg, tok, NP, lg);
    double worst = 0.0;
    for (int i = 0; *ok && i < ND; i++) {
        *ok = step(ec, tok + NP + i, 1, lc) && step(eg, tok + NP + i, 1, lg);
        worst = fmax(worst, rel_diff(lc, lg, V));
    }
    int8_t *was_split = mg ? calloc((size_t)mg->n_tensors + 1, 1) : NULL;
    if (seen && mg && was_split) {
        *seen = (struct split_seen){0, 0, 1};
        for (int64_t i = 0; i < mg->n_tensors; i++) {
            was_split[i] = (int8_t)mg->tensors[i].split;
            seen->n_split += was_split[i];
            seen->embd_split += was_split[i] && mg->tensors[i].role == LRUN_ROLE_EMBEDDING;
        }
    }
    free(lc), free(lg);
    lrun_engine_free(ec), lrun_engine_free(eg);
    if (seen && mg && was_split)
        for (int64_t i = 0; i < mg->n_tensors; i++) {
            lrun_tensor *t = &mg->tensors[i];
            if (!was_split[i]) continue;
            const int back = !t->split && t->file_data && lrun_tensor_move(t, NULL, LRUN_TIER_HOST) == LRUN_OK &&
                             memcmp(t->data, t->file_data, t->nbytes) == 0;
            if (!back) printf("# %s: not restored (%s)\n", t->name, lrun_last_error());
            seen->restored &= back;
        }
    free(was_split);
    lrun_model_free(mc), lrun_model_free(mg);
    return worst;
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - dp4a engine tests # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    static const lrun_dtype types[] = {LRUN_DTYPE_Q8_0,   LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1,
                                       LRUN_DTYPE_Q5_0,   LRUN_DTYPE_Q5_1, LRUN_DTYPE_IQ4_NL,
                                       LRUN_DTYPE_IQ4_XS, LRUN_DTYPE_Q2_K, LRUN_DTYPE_Q3_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char path[128], msg[200];
        snprintf(path, sizeof path, "/tmp/lrun_test_engine_dp4a_%d_%zu.gguf", (int)getpid(), i);
        const lrun_model_gen_spec spec = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F,
                                          .n_vocab = V, .n_ctx = CTX, .weight_dtype = types[i],
                                          .embd_dtype = LRUN_DTYPE_Q8_0, .tied_embeddings = 1,
                                          .rope_freq_base = 10000.0, .rms_eps = 1e-5, .seed = 91 + i};
        const char *name = lrun_dtype_name(types[i]);
        if (lrun_model_generate(path, &spec) != LRUN_OK) {
            printf("# generate: %s\n", lrun_last_error());
            snprintf(msg, sizeof msg, "%s: model generated", name);
            CHECK(msg, 0);
            continue;
        }
        int ok_def = 0, ok_dp4a = 0, ok_auto = 0;
        /* "0": the older kernel (GGUF layout); "1": dp4a for every type; unset: the engine's
         * per-type default (Q8_0, Q4_0: split rows, x quantized once per input) */
        struct split_seen seen_auto = {0, 0, 0};
        const double def = decode_rel(path, "0", NULL, NULL, "0", &ok_def, NULL),
                     dp = decode_rel(path, "1", NULL, NULL, "0", &ok_dp4a, NULL);
        const double au = decode_rel(path, NULL, NULL, NULL, NULL, &ok_auto, &seen_auto);
        printf("# %s decode vs CPU, worst rel over %d steps: older GEMV %.3g, dp4a GEMV %.3g, default %.3g\n", name,
               ND, def, dp, au);
        snprintf(msg, sizeof msg, "%s: LRUN_CUDA_GEMV_DP4A=1 decode logits match the CPU (rel %.2g <= 5e-2)", name,
                 dp);
        CHECK(msg, ok_def && ok_dp4a && dp <= 5e-2);
        snprintf(msg, sizeof msg, "%s: the default GEMV choice matches the CPU (rel %.2g <= 5e-2)", name, au);
        CHECK(msg, ok_auto && au <= 5e-2);
        if (types[i] == LRUN_DTYPE_Q2_K || types[i] == LRUN_DTYPE_Q3_K) { /* the list form: this type only */
            int ok_list = 0;
            const double li = decode_rel(path, name, NULL, NULL, NULL, &ok_list, NULL);
            snprintf(msg, sizeof msg, "%s: LRUN_CUDA_GEMV_DP4A=%s decode logits match the CPU (rel %.2g <= 5e-2)",
                     name, name, li);
            CHECK(msg, ok_list && li <= 5e-2);
        }
        if (i < 6) { /* the staged kernel's types: all six, then the list form */
            int ok_st = 0;
            const char *list = types[i] == LRUN_DTYPE_Q4_0 ? "q4_0" : "1";
            const double st = decode_rel(path, NULL, list, NULL, "0", &ok_st, NULL);
            printf("# %s decode vs CPU, LRUN_CUDA_GEMV_STAGE=%s: worst rel %.3g (dp4a %.3g)\n", name, list, st, dp);
            snprintf(msg, sizeof msg, "%s: LRUN_CUDA_GEMV_STAGE=%s decode logits match the CPU (rel %.2g <= 5e-2)",
                     name, list, st);
            CHECK(msg, ok_st && st <= 5e-2);
        }
        if (i < 2) { /* Q8_0, Q4_0: the split-row GEMV */
            int ok_sp = 0;
            struct split_seen seen = {0, 0, 0};
            const double sp = decode_rel(path, NULL, NULL, "1", NULL, &ok_sp, &seen);
            printf("# %s decode vs CPU, LRUN_CUDA_GEMV_SPLIT=1: worst rel %.3g (dp4a %.3g); %lld tensors split\n",
                   name, sp, dp, (long long)seen.n_split);
            snprintf(msg, sizeof msg, "%s: LRUN_CUDA_GEMV_SPLIT=1 decode logits match the CPU (rel %.2g <= 5e-2)",
                     name, sp);
            CHECK(msg, ok_sp && sp <= 5e-2);
            snprintf(msg, sizeof msg,
                     "%s: the split engine split the %d block matrices, not the tied embedding "
                     "(%lld, %lld)",
                     name, 7 * L, (long long)seen.n_split, (long long)seen.embd_split);
            CHECK(msg, seen.n_split == 7 * L && seen.embd_split == 0);
            snprintf(msg, sizeof msg, "%s: after the split engine's free every split tensor holds its file's bytes",
                     name);
            CHECK(msg, seen.restored);
            /* the default: the same split, x quantized once per input (gemv_split_q8x.cu) */
            snprintf(msg, sizeof msg,
                     "%s: by default the engine splits the %d block matrices, not the tied embedding (%lld, %lld), "
                     "and gives the file's bytes back",
                     name, 7 * L, (long long)seen_auto.n_split, (long long)seen_auto.embd_split);
            CHECK(msg, seen_auto.n_split == 7 * L && seen_auto.embd_split == 0 && seen_auto.restored);
            int ok_off = 0;
            struct split_seen seen_off = {0, 0, 0};
            const double off = decode_rel(path, NULL, NULL, NULL, "0", &ok_off, &seen_off);
            printf("# %s decode vs CPU, LRUN_CUDA_GEMV_Q8X=0: worst rel %.3g (default %.3g)\n", name, off, au);
            snprintf(msg, sizeof msg,
                     "%s: LRUN_CUDA_GEMV_Q8X=0 splits nothing (%lld) and its logits match the CPU (rel %.2g <= 5e-2)",
                     name, (long long)seen_off.n_split, off);
            CHECK(msg, ok_off && seen_off.n_split == 0 && off <= 5e-2);
        }
        unlink(path);
    }
    return CHECK_DONE();
}
