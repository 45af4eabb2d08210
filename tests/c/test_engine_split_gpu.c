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
#include "split_fixture.h"
#include "split_place_fixture.h"

#define N_LAYER SPLIT_N_LAYER
#define N_VOCAB 300
#define PROMPT 40 /* in chunks of 16, 16 and 8 */
#define N_BATCH 16

static char path[256];

/* Q8_0 matrices and a Q8_0 embedding tied to the head: exact numerics on CUDA need one. */
static int write_model(const char *arch, int64_t n_expert)
{
    return split_write_model(path, arch, N_LAYER, n_expert, N_VOCAB, LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q8_0, 1, 13);
}

/* One engine's configuration. */
typedef struct config {
    const char *what;
    lrun_cache_kind kind;
    lrun_numerics numerics;
} config;

static lrun_engine_opts opts_of(const config *c, int64_t n_split, const int64_t *layers)
{
    lrun_engine_opts o = split_opts(N_BATCH, n_split, layers);
    o.cache_kind = c->kind;
    o.numerics = c->numerics;
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

static void check_config(lrun_model *m, const char *arch, int64_t n_expert, const config *c)
{
    char name[240], prefix[160];
    float *ref = malloc(sizeof(float) * SPLIT_ROWS * N_VOCAB), *got = malloc(sizeof(float) * SPLIT_ROWS * N_VOCAB);
    lrun_engine *one = engine(m, c, 0, NULL);
    if (!one && c->numerics == LRUN_NUMERICS_EXACT) { /* the model does not take the exact path: nothing to compare */
        printf("ok %d - %s, %s: one engine refuses exact numerics # SKIP %s\n", ++check_count, arch, c->what,
               lrun_last_error());
        free(ref);
        free(got);
        return;
    }
    snprintf(prefix, sizeof prefix, "%s, %s", arch, c->what);
    split_check_one(one, ref, PROMPT, N_VOCAB, prefix, "one engine");
    lrun_engine_stats s1;
    memset(&s1, 0, sizeof s1);
    if (one) lrun_engine_get_stats(one, &s1);
    int64_t counts1[SPLIT_COUNTS] = {0}, tokens1[N_LAYER] = {0};
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

    for (int i = 0; i < SPLIT_N_CASES; i++) {
        const split_parts *p = &split_cases[i];
        lrun_engine *e = engine(m, c, p->n, p->layers);
        snprintf(prefix, sizeof prefix, "%s, %s, split %s", arch, c->what, p->what);
        split_check_same(e, one != NULL, ref, got, PROMPT, N_VOCAB, prefix,
                         "one CUDA engine's (prefill in chunks, fork, decode, truncate)");
        lrun_engine_stats s;
        memset(&s, 0, sizeof s);
        if (e) lrun_engine_get_stats(e, &s);
        /* device-resident kinds: the blocks' layers add up; offloaded: only slots, a pair per part;
         * quantized: codes and rings add up, and each part has its slots */
        snprintf(name, sizeof name, "%s: the parts' device KV bytes %llu against one engine's %llu", prefix,
                 (unsigned long long)s.kv_bytes, (unsigned long long)s1.kv_bytes);
        CHECK(name, e && s1.kv_bytes > 0 &&
                        (c->kind == LRUN_CACHE_KIND_OFFLOADED   ? s.kv_bytes == (size_t)p->n * s1.kv_bytes
                         : c->kind == LRUN_CACHE_KIND_QUANTIZED ? s.kv_bytes > s1.kv_bytes
                                                                : s.kv_bytes == s1.kv_bytes));
        lrun_engine_needs need;
        memset(&need, 0, sizeof need);
        const lrun_engine_opts o = opts_of(c, p->n, p->layers);
        const size_t extra = staged ? (size_t)(p->n - 1) * slots1.kv_bytes_per_position : 0;
        snprintf(name, sizeof name, "%s: the estimate's KV bytes per position are one engine's (+ %zu of slots)",
                 prefix, extra);
        CHECK(name, est1 == LRUN_OK && lrun_engine_estimate(&need, m, &o) == LRUN_OK &&
                        need.kv_bytes_per_position == need1.kv_bytes_per_position + extra &&
                        need1.kv_bytes_per_position > 0);
        if (n_expert) split_check_experts(e, counts1, tokens1, prefix);
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

/* The placements of split_place_fixture.h on cuda:0: one AS_PLACED CUDA engine against the splits. */
static const split_placed_env placed_env = {
    .device = "cuda:0",
    .stem = "lrun_test_engine_split_gpu",
    .seed = 19,
    .n_vocab = N_VOCAB,
    .n_prompt = PROMPT,
    .n_batch = N_BATCH,
    .placed = "placed on cuda:0",
    .one = "one CUDA engine",
    .parts_alone = 0,
    .extra = NULL,
};

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
    const int64_t ok_split[2] = {2, N_LAYER - 2};

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

    split_check_bad_splits(m);
    memset(&o, 0, sizeof o);
    o.layer_first = 2;
    o.layer_count = 2;
    CHECK("layer_first from a caller is LRUN_E_ARG (the split's own)",
          lrun_engine_init(&e, m, &o) == LRUN_E_ARG && strstr(lrun_last_error(), "layer_first"));

    split_check_refused_step(m, N_VOCAB); /* a step past a static cache's size: nothing changes in either part */
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
    split_check_placed(&placed_env, "llama", 0);
    split_check_placed(&placed_env, "qwen3moe", 4);
    return CHECK_DONE();
}
