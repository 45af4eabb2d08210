/* test_engine_exact_gpu.c — the CUDA engine's exact path against the CPU
 * engine, to the bit (docs/numerics.md, "On the GPU").
 *
 * Random-weight Q4_0, Q4_1 and Q8_0 models (head size 40, so the score dots
 * have a double tail, and odd vocabulary): a three-sequence prompt step in
 * chunks of 16 tokens with every row's logits, multi-sequence decode steps,
 * one-token steps (CUDA graphs on a STATIC cache), a short prefill
 * continuation, truncation and a sequence copy; f16 and f32 caches, DYNAMIC
 * and STATIC caches. Every step's logits must be memcmp-equal; the first
 * difference is printed. With LRUN_MODEL (the default SmolLM2 Q4_1 model),
 * every case of tests/golden/smollm2_greedy.json (f32 cache) and
 * smollm2_greedy_f16.json (f16 cache): bit-identical logits at every step of
 * a 32-token greedy run (up to the case's end of generation), and the greedy
 * ids equal to the CPU's and to llama.cpp's own (the golden ids). Skipped
 * (TAP SKIP) where no GPU is visible. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"

enum { L = 2, D = 160, H = 4, HK = 2, F = 224, V = 997, CTX = 256, BATCH = 16, NSEQ = 3 };

// ---------------------------------------------------------------- helpers

static lrun_engine *engine(lrun_model *m, int64_t n_ctx, int64_t n_batch, lrun_cache_kind kind, lrun_kv_dtype kv)
{
    const lrun_engine_opts o = {.numerics = LRUN_NUMERICS_EXACT, .n_seq_max = NSEQ, .n_ctx_max = n_ctx, .n_batch_max = n_batch, .cache_kind = kind,
                               .n_threads = 2, .kv_dtype = kv};
    lrun_engine *e = NULL;
    if (m && lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# engine: %s\n", lrun_last_error());
    return e;
}

/* 1 when the n_rows rows of n_vocab logits are the same bits; else prints the first difference. */
static int same_bits(const char *what, const float *cpu, const float *gpu, int64_t n_rows, int64_t n_vocab)
{
    if (memcmp(cpu, gpu, (size_t)(n_rows * n_vocab) * sizeof *cpu) == 0) return 1;
    int64_t i = 0, n_diff = 0;
    while (memcmp(&cpu[i], &gpu[i], sizeof *cpu) == 0) i++;
    for (int64_t j = 0; j < n_rows * n_vocab; j++) n_diff += memcmp(&cpu[j], &gpu[j], sizeof *cpu) != 0;
    printf("# %s: first difference at row %lld, logit %lld: CPU %a, CUDA %a (%lld of %lld differ)\n", what,
           (long long)(i / n_vocab), (long long)(i % n_vocab), (double)cpu[i], (double)gpu[i], (long long)n_diff,
           (long long)(n_rows * n_vocab));
    return 0;
}

/* One step on both engines; 1 when both succeed with the same rows and bits. */
static int step_both(lrun_engine *ec, lrun_engine *eg, int64_t n, const int32_t *tok, const int32_t *seq,
                     const int8_t *want, float *lc, float *lg, int64_t cap, const char *what)
{
    int64_t oc = -1, og = -2;
    if (lrun_engine_step(ec, n, tok, seq, want, lc, cap, &oc) != LRUN_OK) printf("# CPU step: %s\n", lrun_last_error());
    if (lrun_engine_step(eg, n, tok, seq, want, lg, cap, &og) != LRUN_OK) printf("# CUDA step: %s\n", lrun_last_error());
    return oc == og && oc >= 0 && same_bits(what, lc, lg, oc, V);
}

static void make_tokens(int32_t *tok, int64_t n, int32_t vocab, uint32_t *seed)
{
    for (int64_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        tok[i] = (int32_t)((*seed >> 8) % (uint32_t)vocab);
    }
}

// ---------------------------------------------------------------- random models

static void test_random(const char *path, const char *name, lrun_kv_dtype kv, lrun_cache_kind kind)
{
    char label[128], msg[256];
    snprintf(label, sizeof label, "%s, %s cache, %s", name, kv == LRUN_KV_DTYPE_F32 ? "f32" : "f16",
             kind == LRUN_CACHE_KIND_STATIC ? "STATIC (graphs)" : "DYNAMIC");
    lrun_model *mc = fixture_load(path, "cpu", 0, 2, -1), *mg = fixture_load(path, "cuda:0", 0, 2, -1);
    lrun_engine *ec = engine(mc, CTX, BATCH, LRUN_CACHE_KIND_DYNAMIC, kv);
    lrun_engine *eg = engine(mg, CTX, BATCH, kind, kv);
    lrun_engine_stats cs = {0};
    if (eg) lrun_engine_get_stats(eg, &cs);
    snprintf(msg, sizeof msg, "%s: the CUDA engine takes the exact path", label);
    CHECK(msg, ec && eg && cs.exact == 1);
    if (!ec || !eg || !cs.exact) goto done;

    enum { MAXT = 64 };
    float *lc = malloc((size_t)MAXT * V * sizeof *lc), *lg = malloc((size_t)MAXT * V * sizeof *lg);
    int32_t tok[MAXT], seq[MAXT];
    int8_t want[MAXT];
    uint32_t seed = 12345;
    int ok = 1;

    // ---- prompts of 21, 9 and 14 tokens in one step: chunks of 16, every row wanted
    const int lens[NSEQ] = {21, 9, 14};
    int64_t n = 0;
    for (int s = 0; s < NSEQ; s++)
        for (int i = 0; i < lens[s]; i++) seq[n] = s, want[n] = 1, n++;
    make_tokens(tok, n, V, &seed);
    ok = step_both(ec, eg, n, tok, seq, want, lc, lg, MAXT, "prompt step");
    snprintf(msg, sizeof msg, "%s: a 3-sequence prompt step of 44 tokens in chunks of 16, every row bit-identical", label);
    CHECK(msg, ok);

    // ---- decode steps of one token per sequence (chunks of 3: the prompt orders)
    int good = 1;
    for (int r = 0; r < 4; r++) {
        for (int s = 0; s < NSEQ; s++) seq[s] = s;
        make_tokens(tok, NSEQ, V, &seed);
        good &= step_both(ec, eg, NSEQ, tok, seq, NULL, lc, lg, MAXT, "3-sequence decode");
    }
    snprintf(msg, sizeof msg, "%s: 4 decode steps of 3 sequences, bit-identical", label);
    CHECK(msg, good);

    // ---- one-token steps (the decode orders; replayed from a graph on a STATIC cache)
    good = 1;
    for (int r = 0; r < 6; r++) {
        seq[0] = 0;
        make_tokens(tok, 1, V, &seed);
        good &= step_both(ec, eg, 1, tok, seq, NULL, lc, lg, MAXT, "one-token decode");
    }
    snprintf(msg, sizeof msg, "%s: 6 one-token decode steps, bit-identical", label);
    CHECK(msg, good);
    if (kind == LRUN_CACHE_KIND_STATIC) {
        lrun_engine_get_stats(eg, &cs);
        snprintf(msg, sizeof msg, "%s: decode steps were replayed from CUDA graphs (%lld launches)", label,
                 (long long)cs.graph_launches);
        CHECK(msg, cs.graph_launches > 0);
    }

    // ---- a prefill continuation of 5 tokens, every row
    for (int i = 0; i < 5; i++) seq[i] = 1, want[i] = 1;
    make_tokens(tok, 5, V, &seed);
    snprintf(msg, sizeof msg, "%s: a 5-token continuation of sequence 1, bit-identical", label);
    CHECK(msg, step_both(ec, eg, 5, tok, seq, want, lc, lg, MAXT, "continuation"));

    // ---- truncation and copy: the padding positions the sums read change
    ok = lrun_engine_seq_truncate(ec, 2, 10) == LRUN_OK && lrun_engine_seq_truncate(eg, 2, 10) == LRUN_OK;
    good = ok;
    for (int r = 0; ok && r < 3; r++) {
        seq[0] = 2;
        make_tokens(tok, 1, V, &seed);
        good &= step_both(ec, eg, 1, tok, seq, NULL, lc, lg, MAXT, "after truncation");
    }
    ok = lrun_engine_seq_copy(ec, 2, 0) == LRUN_OK && lrun_engine_seq_copy(eg, 2, 0) == LRUN_OK;
    for (int i = 0; ok && i < 3; i++) seq[i] = 2, want[i] = 1;
    make_tokens(tok, 3, V, &seed);
    good &= ok && step_both(ec, eg, 3, tok, seq, want, lc, lg, MAXT, "after copy");
    snprintf(msg, sizeof msg, "%s: steps after a truncation and a sequence copy, bit-identical", label);
    CHECK(msg, good);
    free(lc);
    free(lg);
done:
    fixture_free_pair(ec, eg, mc, mg);
}

// ---------------------------------------------------------------- the default model

/* Every case of a golden file: the prompt in one step, then greedy decoding
 * on both engines for the case's continuation length (up to its eog_at). */
static void test_golden(const char *model, const char *golden, lrun_kv_dtype kv)
{
    cJSON *root = fixture_read_json(golden);
    cJSON *cases = cJSON_GetObjectItem(root, "cases");
    char msg[300];
    snprintf(msg, sizeof msg, "%s opens and parses (run from the repository root)", golden);
    CHECK(msg, cJSON_IsArray(cases));
    lrun_model *mc = fixture_load(model, "cpu", 0, 2, -1), *mg = fixture_load(model, "cuda:0", 0, 2, -1);
    lrun_engine *ec = engine(mc, 1024, 512, LRUN_CACHE_KIND_DYNAMIC, kv);
    lrun_engine *eg = engine(mg, 1024, 512, LRUN_CACHE_KIND_STATIC, kv);
    lrun_engine_stats cs = {0};
    if (eg) lrun_engine_get_stats(eg, &cs);
    CHECK("default model: the CUDA engine takes the exact path", ec && eg && cs.exact == 1);
    if (!cJSON_IsArray(cases) || !ec || !eg) goto done;
    const int64_t nv = lrun_model_get_info(mc)->n_vocab;
    float *lc = malloc((size_t)nv * sizeof *lc), *lg = malloc((size_t)nv * sizeof *lg);
    cJSON *c;
    cJSON_ArrayForEach(c, cases)
    {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(c, "name"));
        cJSON *prompt = cJSON_GetObjectItem(c, "prompt_ids"), *cont = cJSON_GetObjectItem(c, "continuation_ids");
        cJSON *eog = cJSON_GetObjectItem(c, "eog_at");
        const int np = cJSON_GetArraySize(prompt), nc = cJSON_GetArraySize(cont);
        const int n_cmp = cJSON_IsNumber(eog) ? eog->valueint : nc;
        int32_t *tok = malloc((size_t)(np + nc + 1) * sizeof *tok), *seq = calloc((size_t)(np + nc + 1), sizeof *seq);
        for (int i = 0; i < np; i++) tok[i] = cJSON_GetArrayItem(prompt, i)->valueint;
        int64_t oc = 0, og = 0;
        int ok = lrun_engine_seq_truncate(ec, 0, 0) == LRUN_OK && lrun_engine_seq_truncate(eg, 0, 0) == LRUN_OK &&
                 lrun_engine_step(ec, np, tok, seq, NULL, lc, 1, &oc) == LRUN_OK &&
                 lrun_engine_step(eg, np, tok, seq, NULL, lg, 1, &og) == LRUN_OK && oc == 1 && og == 1;
        char what[200];
        snprintf(what, sizeof what, "'%s' first step", name);
        const int first_same = ok && same_bits(what, lc, lg, 1, nv);
        /* free-running greedy on both; every step's logits compared */
        int steps_same = first_same, ids_cpu = 1, ids_golden = 1, n_run = 0;
        for (int i = 0; ok && i < n_cmp; i++) {
            const int32_t tc = lrun_logits_argmax(lc, nv), tg = lrun_logits_argmax(lg, nv);
            ids_cpu &= tc == tg;
            ids_golden &= tg == cJSON_GetArrayItem(cont, i)->valueint;
            n_run++;
            if (i + 1 == n_cmp) break;
            ok = lrun_engine_step(ec, 1, &tc, seq, NULL, lc, 1, &oc) == LRUN_OK &&
                 lrun_engine_step(eg, 1, &tg, seq, NULL, lg, 1, &og) == LRUN_OK;
            snprintf(what, sizeof what, "'%s' step %d", name, i + 1);
            if (steps_same && !same_bits(what, lc, lg, 1, nv)) steps_same = 0;
        }
        snprintf(msg, sizeof msg, "default model, %s cache, '%s': first-step logits bit-identical (%d prompt tokens)",
                 kv == LRUN_KV_DTYPE_F32 ? "f32" : "f16", name, np);
        CHECK(msg, first_same);
        snprintf(msg, sizeof msg, "default model, %s cache, '%s': %d greedy steps, logits bit-identical at each, the "
                 "same ids as the CPU and as llama.cpp (golden)", kv == LRUN_KV_DTYPE_F32 ? "f32" : "f16", name,
                 n_run);
        CHECK(msg, ok && n_run == n_cmp && steps_same && ids_cpu && ids_golden);
        if (!ids_golden) printf("# '%s': the CUDA greedy ids leave llama.cpp's\n", name);
        free(tok);
        free(seq);
    }
    free(lc);
    free(lg);
done:
    fixture_free_pair(ec, eg, mc, mg);
    cJSON_Delete(root);
}

/* The exact path is opt-in: the default numerics take the fast path, and
 * asking for exact on a model it cannot serve fails at init, saying why. */
static void test_selection(const char *q8_path, const char *f32_path)
{
    lrun_model *m = fixture_load(q8_path, "cuda:0", 0, 2, -1);
    lrun_engine *e = NULL;
    const lrun_engine_opts fast = {.n_seq_max = 1, .n_ctx_max = CTX};
    CHECK("default numerics: an engine is made", m && lrun_engine_init(&e, m, &fast) == LRUN_OK);
    lrun_engine_stats cs = {0};
    if (e) lrun_engine_get_stats(e, &cs);
    CHECK("default numerics take the fast path", e && cs.exact == 0);
    lrun_engine_free(e);
    lrun_model_free(m);

    m = fixture_load(f32_path, "cuda:0", 0, 2, -1);
    e = NULL;
    const lrun_engine_opts exact = {.n_seq_max = 1, .n_ctx_max = CTX, .numerics = LRUN_NUMERICS_EXACT};
    const lrun_status st = m ? lrun_engine_init(&e, m, &exact) : LRUN_E_INTERNAL;
    CHECK("exact numerics on an f32 model: LRUN_E_UNSUPPORTED, no engine",
          st == LRUN_E_UNSUPPORTED && e == NULL && strstr(lrun_last_error(), "exact numerics"));
    lrun_engine_free(e);
    lrun_model_free(m);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - CUDA exact-path tests # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    static const lrun_dtype dtypes[] = {LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q8_0};
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/tmp/lrun_test_engine_exact_gpu_%d_%zu.gguf", (int)getpid(), i);
        const lrun_model_gen_spec spec = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F,
                                          .n_vocab = V, .n_ctx = CTX, .weight_dtype = dtypes[i],
                                          .embd_dtype = LRUN_DTYPE_Q8_0, .tied_embeddings = 1,
                                          .rope_freq_base = 10000.0, .rms_eps = 1e-5, .seed = 500 + i};
        const int made = lrun_model_generate(path, &spec) == LRUN_OK;
        if (!made) printf("# generate: %s\n", lrun_last_error());
        CHECK("a random-weight model is generated", made);
        if (!made) continue;
        const char *name = lrun_dtype_name(dtypes[i]);
        test_random(path, name, LRUN_KV_DTYPE_F16, LRUN_CACHE_KIND_DYNAMIC);
        test_random(path, name, LRUN_KV_DTYPE_F32, LRUN_CACHE_KIND_DYNAMIC);
        test_random(path, name, LRUN_KV_DTYPE_F16, LRUN_CACHE_KIND_STATIC);
        test_random(path, name, LRUN_KV_DTYPE_F32, LRUN_CACHE_KIND_STATIC);
        if (dtypes[i] == LRUN_DTYPE_Q8_0) {
            char f32_path[128];
            snprintf(f32_path, sizeof f32_path, "/tmp/lrun_test_engine_exact_gpu_%d_f32.gguf", (int)getpid());
            lrun_model_gen_spec f = spec;
            f.weight_dtype = f.embd_dtype = LRUN_DTYPE_F32;
            const int f_made = lrun_model_generate(f32_path, &f) == LRUN_OK;
            CHECK("an f32 random-weight model is generated", f_made);
            if (f_made) test_selection(path, f32_path);
            unlink(f32_path);
        }
        unlink(path);
    }
    const char *model = getenv("LRUN_MODEL");
    if (model && access(model, R_OK) == 0) {
        test_golden(model, "tests/golden/smollm2_greedy.json", LRUN_KV_DTYPE_F32);
        test_golden(model, "tests/golden/smollm2_greedy_f16.json", LRUN_KV_DTYPE_F16);
    } else {
        printf("ok %d - default model # SKIP LRUN_MODEL not set\n", ++check_count);
    }
    return CHECK_DONE();
}
