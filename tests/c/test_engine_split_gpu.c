/* test_engine_split_gpu.c — the layer split (runtime/engine_split.c) on one
 * GPU: each part a CUDA engine for its blocks (layer_first/layer_count),
 * the residual stream handed from part to part through the host, against
 * one CUDA engine over the same model on the same device (cuda:0,cuda:0 in
 * Lua's words):
 *   - logits bit-identical over a prompt in three chunks (cuBLAS for the
 *     16-token chunks, the GEMVs for the rest), a fork, decode steps of two
 *     sequences and a truncate, for a dense llama and a mixture of experts
 *     (qwen3moe), split 1 | 5, 3 | 3 and 2 | 1 | 3; with the default
 *     numerics on a DYNAMIC cache, a STATIC one (decode in CUDA graphs, a
 *     part's graph holding no head), the OFFLOADED and QUANTIZED caches
 *     (staged, layer by layer), and exact numerics;
 *   - the parts' KV caches add up to one engine's, and so does the estimate
 *     of KV bytes per position, but for the staged kinds' two device slots,
 *     which every part has (offloaded: n_parts times one engine's);
 *   - expert selections counted per block add up to one engine's;
 *   - weights off the device (split_place_fixture.h, AS_PLACED): blocks
 *     streamed into each part's own slots from host memory, pinned memory
 *     and the file, matrices and the head multiplied on the host, MoE
 *     experts on the host (the host expert pass), packed weights on the
 *     device (fused decode-GEMV) and streamed (decoded into the slot): the
 *     split gives one CUDA engine's bits for the same placement, counts
 *     the same host-computed bytes, and its sizing
 *     (lrun_engine_size_placement) is the slots its parts took; a model
 *     whose weights are all still in the file streams every block;
 *   - bad splits are LRUN_E_ARG naming the option.
 * Skipped (TAP SKIP) where no GPU is visible. Run: build/tests/test_engine_split_gpu
 * (make test-gpu runs it with the other *_gpu tests). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"
#include "split_place_fixture.h"

#define N_LAYER 6
#define N_VOCAB 300
#define PROMPT 40
#define ROWS (1 + 8 + 3)

static char path[256];

static int write_model(const char *arch, int64_t n_expert)
{
    lrun_model_gen_spec s;
    memset(&s, 0, sizeof s);
    s.n_layer = N_LAYER;
    s.n_embd = 64;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_ff = 96;
    s.n_vocab = N_VOCAB;
    s.n_ctx = 128;
    s.weight_dtype = LRUN_DTYPE_Q8_0;
    s.embd_dtype = LRUN_DTYPE_Q8_0; /* a Q8_0 head (tied): exact numerics on CUDA need one */
    s.tied_embeddings = 1;
    s.rope_freq_base = 10000;
    s.rms_eps = 1e-5;
    s.seed = 13;
    s.n_threads = 1;
    s.arch = arch;
    s.n_expert = n_expert;
    s.n_expert_used = n_expert ? 2 : 0;
    const lrun_status st = lrun_model_generate(path, &s);
    if (st != LRUN_OK) printf("# generate %s: %s\n", arch, lrun_last_error());
    return st == LRUN_OK;
}

/* One engine's configuration. */
typedef struct config {
    const char *what;
    lrun_cache_kind kind;
    lrun_numerics numerics;
} config;

static lrun_engine_opts opts_of(const config *c, int64_t n_split, const int64_t *layers)
{
    lrun_engine_opts o;
    memset(&o, 0, sizeof o);
    o.n_seq_max = 2;
    o.n_ctx_max = 64;
    o.n_batch_max = 16; /* the 40-token prompt in chunks of 16, 16 and 8 */
    o.cache_kind = c->kind;
    o.numerics = c->numerics;
    o.n_split = n_split;
    o.split_layers = layers;
    return o;
}

static lrun_engine *engine(lrun_model *m, const config *c, int64_t n_split, const int64_t *layers)
{
    const lrun_engine_opts o = opts_of(c, n_split, layers);
    lrun_engine *e = NULL;
    if (lrun_engine_init(&e, m, &o) != LRUN_OK)
        printf("# engine (%s, %lld parts): %s\n", c->what, (long long)n_split, lrun_last_error());
    return e;
}

/* The script both engines run: writes every logits row, in order, to out (rows counted in *rows). */
static int run_script(lrun_engine *e, float *out, int64_t *rows)
{
    int32_t tok[PROMPT], seq[PROMPT];
    int64_t n_out = 0, r = 0;
    for (int i = 0; i < PROMPT; i++) tok[i] = (int32_t)((i * 37 + 5) % N_VOCAB), seq[i] = 0;
    int ok = lrun_engine_step(e, PROMPT, tok, seq, NULL, out, 1, &n_out) == LRUN_OK && n_out == 1;
    if (!ok) printf("# prompt step: %s\n", lrun_last_error());
    r += n_out;
    ok = ok && lrun_engine_seq_copy(e, 1, 0) == LRUN_OK; /* a fork */
    for (int t = 0; ok && t < 4; t++) {                  /* decode both, one token each per step */
        const int32_t two[2] = {(int32_t)(7 + t * 3), (int32_t)(100 + t)}, sq[2] = {0, 1};
        ok = lrun_engine_step(e, 2, two, sq, NULL, out + r * N_VOCAB, 2, &n_out) == LRUN_OK && n_out == 2;
        r += n_out;
    }
    ok = ok && lrun_engine_seq_truncate(e, 1, 9) == LRUN_OK; /* back into the prompt */
    const int32_t again[3] = {42, 43, 44}, sq1[3] = {1, 1, 1};
    const int8_t all[3] = {1, 1, 1};
    ok = ok && lrun_engine_step(e, 3, again, sq1, all, out + r * N_VOCAB, 3, &n_out) == LRUN_OK && n_out == 3;
    if (!ok) printf("# script: %s\n", lrun_last_error());
    r += n_out;
    *rows = r;
    return ok;
}

/* 1 when the rows are the same bits; else prints the first difference. */
static int same_bits(const float *want, const float *got, int64_t n)
{
    if (memcmp(want, got, (size_t)n * sizeof *want) == 0) return 1;
    int64_t i = 0, n_diff = 0;
    while (memcmp(&want[i], &got[i], sizeof *want) == 0) i++;
    for (int64_t j = 0; j < n; j++) n_diff += memcmp(&want[j], &got[j], sizeof *want) != 0;
    printf("# first difference at row %lld, logit %lld: one engine %a, split %a (%lld of %lld differ)\n",
           (long long)(i / N_VOCAB), (long long)(i % N_VOCAB), (double)want[i], (double)got[i], (long long)n_diff,
           (long long)n);
    return 0;
}

static void check_config(lrun_model *m, const char *arch, int64_t n_expert, const config *c)
{
    char name[240];
    float *ref = malloc(sizeof(float) * ROWS * N_VOCAB), *got = malloc(sizeof(float) * ROWS * N_VOCAB);
    int64_t ref_rows = 0, got_rows = 0;
    lrun_engine *one = engine(m, c, 0, NULL);
    if (!one && c->numerics == LRUN_NUMERICS_EXACT) { /* the model does not take the exact path: nothing to compare */
        printf("ok %d - %s, %s: one engine refuses exact numerics # SKIP %s\n", ++check_count, arch, c->what,
               lrun_last_error());
        free(ref);
        free(got);
        return;
    }
    snprintf(name, sizeof name, "%s, %s: one engine runs the script", arch, c->what);
    CHECK(name, one && run_script(one, ref, &ref_rows) && ref_rows == ROWS);
    lrun_engine_stats s1;
    memset(&s1, 0, sizeof s1);
    if (one) lrun_engine_get_stats(one, &s1);
    int64_t counts1[N_LAYER * 4] = {0}, tokens1[N_LAYER] = {0};
    if (one && n_expert) lrun_engine_expert_counts(one, counts1, tokens1);
    lrun_engine_needs need1, slots1;
    memset(&need1, 0, sizeof need1);
    memset(&slots1, 0, sizeof slots1);
    const lrun_engine_opts o1 = opts_of(c, 0, NULL);
    lrun_status est1 = lrun_engine_estimate(&need1, m, &o1);
    /* a staged kind's two slots per position: all an offloaded cache keeps on the device */
    const int staged = c->kind == LRUN_CACHE_KIND_OFFLOADED || c->kind == LRUN_CACHE_KIND_QUANTIZED;
    const config offloaded = {"offloaded", LRUN_CACHE_KIND_OFFLOADED, LRUN_NUMERICS_DEFAULT};
    const lrun_engine_opts oo = opts_of(&offloaded, 0, NULL);
    if (est1 == LRUN_OK && staged) est1 = lrun_engine_estimate(&slots1, m, &oo);

    static const int64_t split_a[2] = {1, N_LAYER - 1}, split_b[2] = {N_LAYER / 2, N_LAYER / 2},
                         split_c[3] = {2, 1, 3};
    const struct {
        const char *what;
        int64_t n;
        const int64_t *layers;
    } splits[] = {{"1 | 5", 2, split_a}, {"3 | 3", 2, split_b}, {"2 | 1 | 3", 3, split_c}};
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        lrun_engine *e = engine(m, c, splits[i].n, splits[i].layers);
        snprintf(name, sizeof name, "%s, %s, split %s: runs the script", arch, c->what, splits[i].what);
        memset(got, 0, sizeof(float) * ROWS * N_VOCAB);
        CHECK(name, e && run_script(e, got, &got_rows) && got_rows == ROWS);
        snprintf(name, sizeof name,
                 "%s, %s, split %s: every logit bit-identical to one CUDA engine's (prefill in chunks, fork, "
                 "decode, truncate)",
                 arch, c->what, splits[i].what);
        CHECK(name, e && one && same_bits(ref, got, ROWS * N_VOCAB));
        lrun_engine_stats s;
        memset(&s, 0, sizeof s);
        if (e) lrun_engine_get_stats(e, &s);
        /* device-resident kinds: the blocks' layers add up; offloaded: only slots, a pair per part;
         * quantized: codes and rings add up, and each part has its slots */
        snprintf(name, sizeof name, "%s, %s, split %s: the parts' device KV bytes %llu against one engine's %llu",
                 arch, c->what, splits[i].what, (unsigned long long)s.kv_bytes, (unsigned long long)s1.kv_bytes);
        CHECK(name, e && s1.kv_bytes > 0 &&
                        (c->kind == LRUN_CACHE_KIND_OFFLOADED  ? s.kv_bytes == (size_t)splits[i].n * s1.kv_bytes
                         : c->kind == LRUN_CACHE_KIND_QUANTIZED ? s.kv_bytes > s1.kv_bytes
                                                                : s.kv_bytes == s1.kv_bytes));
        lrun_engine_needs need;
        memset(&need, 0, sizeof need);
        const lrun_engine_opts o = opts_of(c, splits[i].n, splits[i].layers);
        const size_t extra = staged ? (size_t)(splits[i].n - 1) * slots1.kv_bytes_per_position : 0;
        snprintf(name, sizeof name,
                 "%s, %s, split %s: the estimate's KV bytes per position are one engine's (+ %zu of slots)", arch,
                 c->what, splits[i].what, extra);
        CHECK(name, est1 == LRUN_OK && lrun_engine_estimate(&need, m, &o) == LRUN_OK &&
                        need.kv_bytes_per_position == need1.kv_bytes_per_position + extra &&
                        need1.kv_bytes_per_position > 0);
        if (n_expert) {
            int64_t counts[N_LAYER * 4] = {0}, tokens[N_LAYER] = {0};
            if (e) lrun_engine_expert_counts(e, counts, tokens);
            snprintf(name, sizeof name, "%s, %s, split %s: expert selections per block as one engine counts them",
                     arch, c->what, splits[i].what);
            CHECK(name, memcmp(counts, counts1, sizeof counts) == 0 && memcmp(tokens, tokens1, sizeof tokens) == 0 &&
                            tokens1[N_LAYER - 1] > 0);
        }
        lrun_engine_free(e);
    }
    lrun_engine_free(one);
    free(ref);
    free(got);
}

static void check_arch(const char *arch, int64_t n_expert)
{
    static const config configs[] = {
        {"dynamic cache", LRUN_CACHE_KIND_DYNAMIC, LRUN_NUMERICS_DEFAULT},
        {"static cache (decode in CUDA graphs)", LRUN_CACHE_KIND_STATIC, LRUN_NUMERICS_DEFAULT},
        {"offloaded cache", LRUN_CACHE_KIND_OFFLOADED, LRUN_NUMERICS_DEFAULT},
        {"quantized cache", LRUN_CACHE_KIND_QUANTIZED, LRUN_NUMERICS_DEFAULT},
        {"exact numerics", LRUN_CACHE_KIND_DYNAMIC, LRUN_NUMERICS_EXACT},
    };
    char name[200];
    snprintf(path, sizeof path, "/tmp/lrun_test_engine_split_gpu_%d_%s.gguf", (int)getpid(), arch);
    if (!write_model(arch, n_expert)) {
        CHECK("model written", 0);
        return;
    }
    lrun_model *m = fixture_load(path, "cuda:0", 0, 2, -1);
    snprintf(name, sizeof name, "%s: loads on cuda:0", arch);
    CHECK(name, m != NULL);
    if (m)
        for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) check_config(m, arch, n_expert, &configs[i]);
    lrun_model_free(m);
    unlink(path);
}

/* The script's options for an AS_PLACED engine (k = 1: the streaming cycle turns every block). */
static lrun_engine_opts placed_opts(int64_t n_split, const int64_t *layers)
{
    const config c = {"placed", LRUN_CACHE_KIND_DYNAMIC, LRUN_NUMERICS_DEFAULT};
    lrun_engine_opts o = opts_of(&c, n_split, layers);
    o.weight_mode = LRUN_WEIGHT_MODE_AS_PLACED;
    o.prefetch_layers = 1;
    return o;
}

/* One placement of split_place_fixture.h on a fresh cuda:0 model: one
 * AS_PLACED CUDA engine against the splits, over the same script. */
static void check_placed_case(const char *arch, const split_place_case *c)
{
    char name[300];
    lrun_model *m = fixture_load(path, "cuda:0", 0, 2, -1);
    if (!m || !split_place(m, c->fn)) {
        snprintf(name, sizeof name, "%s, %s: placed on cuda:0", arch, c->what);
        CHECK(name, 0);
        lrun_model_free(m);
        return;
    }
    float *ref = calloc(ROWS * N_VOCAB, sizeof(float)), *got = calloc(ROWS * N_VOCAB, sizeof(float));
    int64_t ref_rows = 0, got_rows = 0;
    lrun_engine_opts o = placed_opts(0, NULL);
    lrun_engine *one = NULL;
    if (lrun_engine_init(&one, m, &o) != LRUN_OK) printf("# one engine: %s\n", lrun_last_error());
    snprintf(name, sizeof name, "%s, %s: one CUDA engine runs the script", arch, c->what);
    CHECK(name, one && run_script(one, ref, &ref_rows) && ref_rows == ROWS);
    lrun_engine_stats s1;
    memset(&s1, 0, sizeof s1);
    if (one) lrun_engine_get_stats(one, &s1);
    lrun_engine_free(one);
    static const int64_t split_a[2] = {1, N_LAYER - 1}, split_b[2] = {N_LAYER / 2, N_LAYER / 2},
                         split_c[3] = {2, 1, 3};
    const struct {
        const char *what;
        int64_t n;
        const int64_t *layers;
    } splits[] = {{"1 | 5", 2, split_a}, {"3 | 3", 2, split_b}, {"2 | 1 | 3", 3, split_c}};
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        o = placed_opts(splits[i].n, splits[i].layers);
        lrun_placement_size size;
        memset(&size, 0, sizeof size);
        const lrun_status sst = lrun_engine_size_placement(&size, m, &o, NULL, NULL);
        lrun_engine *e = NULL;
        if (lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# split %s: %s\n", splits[i].what, lrun_last_error());
        snprintf(name, sizeof name, "%s, %s, split %s: runs the script", arch, c->what, splits[i].what);
        memset(got, 0, sizeof(float) * ROWS * N_VOCAB);
        CHECK(name, e && run_script(e, got, &got_rows) && got_rows == ROWS);
        snprintf(name, sizeof name, "%s, %s, split %s: every logit bit-identical to one CUDA engine's", arch, c->what,
                 splits[i].what);
        CHECK(name, same_bits(ref, got, ROWS * N_VOCAB));
        lrun_engine_stats s;
        memset(&s, 0, sizeof s);
        if (e) lrun_engine_get_stats(e, &s);
        snprintf(name, sizeof name, "%s, %s, split %s: the same host-computed bytes as one engine (%llu)", arch,
                 c->what, splits[i].what, (unsigned long long)s1.host_compute_bytes);
        CHECK(name, s.host_compute_bytes == s1.host_compute_bytes);
        snprintf(name, sizeof name, "%s, %s, split %s: its sizing is the slots its parts took (%zu)", arch, c->what,
                 splits[i].what, s.slot_bytes);
        CHECK(name, sst == LRUN_OK && size.slot_bytes == s.slot_bytes);
        lrun_engine_free(e);
    }
    free(ref);
    free(got);
    lrun_model_free(m);
}

static void check_placed(const char *arch, int64_t n_expert)
{
    snprintf(path, sizeof path, "/tmp/lrun_test_engine_split_gpu_%d_placed_%s.gguf", (int)getpid(), arch);
    if (!split_place_model(path, arch, N_LAYER, n_expert, N_VOCAB, 19)) {
        CHECK("placed model written", 0);
        return;
    }
    for (size_t i = 0; i < sizeof split_place_cases / sizeof split_place_cases[0]; i++)
        check_placed_case(arch, &split_place_cases[i]);
    unlink(path);
}

/* Options a split refuses by name; a model whose weights are all still in
 * the file (AS_PLACED, nothing moved) streams every block in every part. */
static void check_errors(void)
{
    snprintf(path, sizeof path, "/tmp/lrun_test_engine_split_gpu_%d_err.gguf", (int)getpid());
    if (!write_model("llama", 0)) return;
    lrun_model *m = fixture_load(path, "cuda:0", 0, 1, -1);
    CHECK("errors: loads", m != NULL);
    if (!m) return;
    lrun_engine_opts o;
    lrun_engine *e = NULL;
    const int64_t short_split[2] = {2, 2}, zero[2] = {0, N_LAYER}, ok_split[2] = {2, N_LAYER - 2};

    memset(&o, 0, sizeof o);
    o.n_split = 2;
    o.split_layers = ok_split;
    o.weight_mode = LRUN_WEIGHT_MODE_AS_PLACED; /* nothing was moved: every weight is off the device */
    const lrun_status st = lrun_engine_init(&e, m, &o);
    if (st != LRUN_OK) printf("# got %d: %s\n", (int)st, lrun_last_error());
    {
        int32_t tok[3] = {3, 4, 5}, seq[3] = {0, 0, 0};
        float logits[N_VOCAB];
        int64_t n_out = 0;
        lrun_engine_stats s;
        memset(&s, 0, sizeof s);
        const int ran = e && lrun_engine_step(e, 3, tok, seq, NULL, logits, 1, &n_out) == LRUN_OK && n_out == 1;
        if (e) lrun_engine_get_stats(e, &s);
        CHECK("every weight still in the file: the split streams each part's blocks into its own slots and runs",
              ran && s.bytes_streamed > 0 && s.slot_bytes > 0);
    }
    lrun_engine_free(e);
    e = NULL;

    memset(&o, 0, sizeof o);
    o.n_split = 2;
    CHECK("n_split without split_layers is LRUN_E_ARG", lrun_engine_init(&e, m, &o) == LRUN_E_ARG && !e);
    o.split_layers = short_split;
    CHECK("parts adding up to fewer blocks are LRUN_E_ARG naming the sum",
          lrun_engine_init(&e, m, &o) == LRUN_E_ARG && strstr(lrun_last_error(), "add up to 4 blocks"));
    o.split_layers = zero;
    CHECK("an empty part is LRUN_E_ARG naming it",
          lrun_engine_init(&e, m, &o) == LRUN_E_ARG && strstr(lrun_last_error(), "split_layers[0]"));
    memset(&o, 0, sizeof o);
    o.layer_first = 2;
    o.layer_count = 2;
    CHECK("layer_first from a caller is LRUN_E_ARG (the split's own)",
          lrun_engine_init(&e, m, &o) == LRUN_E_ARG && strstr(lrun_last_error(), "layer_first"));

    /* a step past a static cache's size is refused; nothing changes in either part */
    memset(&o, 0, sizeof o);
    o.n_split = 2;
    o.split_layers = ok_split;
    o.n_ctx_max = 16;
    o.cache_kind = LRUN_CACHE_KIND_STATIC;
    CHECK("errors: a split engine with a static cache", lrun_engine_init(&e, m, &o) == LRUN_OK && e);
    if (e) {
        int32_t tok[10], seq[10];
        for (int i = 0; i < 10; i++) tok[i] = 3 + i, seq[i] = 0;
        float logits[N_VOCAB];
        int64_t n_out = 0;
        CHECK("errors: 10 tokens run", lrun_engine_step(e, 10, tok, seq, NULL, logits, 1, &n_out) == LRUN_OK);
        CHECK("errors: 10 more pass n_ctx_max and are refused",
              lrun_engine_step(e, 10, tok, seq, NULL, logits, 1, &n_out) != LRUN_OK);
        CHECK("errors: ... and the sequence still holds 10 positions", lrun_engine_seq_len(e, 0) == 10);
        CHECK("errors: the next step runs", lrun_engine_step(e, 6, tok, seq, NULL, logits, 1, &n_out) == LRUN_OK &&
                                                lrun_engine_seq_len(e, 0) == 16);
    }
    lrun_engine_free(e);
    lrun_model_free(m);
    unlink(path);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - CUDA layer split tests # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    check_errors(); /* first: its model's weights are still in the file */
    check_arch("llama", 0);
    check_arch("qwen3moe", 4);
    check_placed("llama", 0);
    check_placed("qwen3moe", 4);
    return CHECK_DONE();
}
