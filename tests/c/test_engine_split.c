/* test_engine_split.c — the layer split (runtime/engine_split.c) on the CPU:
 * the blocks in parts of consecutive blocks, each its own engine, the
 * residual stream handed on, against one engine over the same model:
 *   - logits bit-identical over a prompt in several chunks (n_batch_max
 *     smaller than the prompt), then decode steps, for a dense llama, a
 *     gemma2 (sandwich norms, alternating windows, soft-capping) and a
 *     mixture of experts (qwen3moe), split 1 | L-1, L/2 | L/2 and in three;
 *   - two sequences in one step, a sequence copy and a truncate: the same
 *     logits as one engine doing the same;
 *   - the parts' KV caches add up to one engine's (each holds its blocks);
 *   - expert selections counted per block add up to one engine's;
 *   - weights off the device (split_place_fixture.h: streamed from host,
 *     pinned and the file, computed on the host, MoE experts on the host,
 *     packed in place and streamed): the split over the same placement
 *     gives one engine's bits, counts the same host-computed bytes, and
 *     each part's slots hold only its blocks' units (lrun_engine_size_placement
 *     says what init takes, part by part);
 *   - a step that fails in a later part leaves every sequence as it was;
 *   - bad splits are LRUN_E_ARG naming the option, and the range fields
 *     are refused from callers. */
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
#define N_EMBD 64 /* split_write_model's */
#define PROMPT 13 /* in three chunks of N_BATCH */
#define N_BATCH 5

static char path[256];

/* Q8_0 matrices, an f32 embedding tied to the head. */
static int write_model(const char *arch, int64_t n_expert)
{
    return split_write_model(path, arch, N_LAYER, n_expert, N_VOCAB, LRUN_DTYPE_Q8_0, LRUN_DTYPE_F32, 1, 11);
}

static lrun_engine *engine(lrun_model *m, int64_t n_split, const int64_t *layers)
{
    const lrun_engine_opts o = split_opts(N_BATCH, n_split, layers);
    lrun_engine *e = NULL;
    if (lrun_engine_init(&e, m, &o) != LRUN_OK)
        printf("# engine (%lld parts): %s\n", (long long)n_split, lrun_last_error());
    return e;
}

static void check_split(const char *arch, int64_t n_expert)
{
    char name[200], prefix[120];
    snprintf(path, sizeof path, "/tmp/lrun_test_engine_split_%d_%s.gguf", (int)getpid(), arch);
    if (!write_model(arch, n_expert)) {
        CHECK("model written", 0);
        return;
    }
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    snprintf(name, sizeof name, "%s: loads", arch);
    CHECK(name, m != NULL);
    if (!m) return;
    float *ref = malloc(sizeof(float) * SPLIT_ROWS * N_VOCAB), *got = malloc(sizeof(float) * SPLIT_ROWS * N_VOCAB);
    lrun_engine *one = engine(m, 0, NULL);
    split_check_one(one, ref, PROMPT, N_VOCAB, arch, "one engine");
    lrun_engine_stats s1;
    lrun_engine_get_stats(one, &s1);
    int64_t counts1[SPLIT_COUNTS] = {0}, tokens1[N_LAYER] = {0};
    if (n_expert) lrun_engine_expert_counts(one, counts1, tokens1);

    lrun_host_stats h0;
    lrun_model_host_stats(m, &h0);
    for (int i = 0; i < SPLIT_N_CASES; i++) {
        const split_parts *p = &split_cases[i];
        snprintf(prefix, sizeof prefix, "%s, split %s", arch, p->what);
        lrun_engine *e = engine(m, p->n, p->layers);
        lrun_host_stats h;
        lrun_model_host_stats(m, &h);
        snprintf(name, sizeof name, "%s: the host account holds its hand-over rows (2 x 5 x %d floats) as scratch",
                 prefix, N_EMBD);
        CHECK(name, h.scratch >= h0.scratch + 2 * N_BATCH * N_EMBD * sizeof(float));
        {
            const lrun_engine_opts o = split_opts(N_BATCH, p->n, p->layers);
            lrun_engine_needs need;
            memset(&need, 0, sizeof need);
            snprintf(name, sizeof name, "%s: the estimate's scratch is what its parts and rows hold (%zu)", prefix,
                     h.scratch - h0.scratch);
            CHECK(name,
                  lrun_engine_estimate(&need, m, &o) == LRUN_OK && need.scratch_bytes == h.scratch - h0.scratch);
        }
        split_check_same(e, 1, ref, got, PROMPT, N_VOCAB, prefix,
                         "one engine's (prefill in chunks, fork, decode, truncate)");
        lrun_engine_stats s;
        lrun_engine_get_stats(e, &s);
        snprintf(name, sizeof name, "%s: the parts' KV caches add up to one engine's", prefix);
        CHECK(name, e && s.kv_bytes == s1.kv_bytes && s.kv_bytes > 0);
        if (n_expert) split_check_experts(e, counts1, tokens1, prefix);
        lrun_engine_free(e);
        lrun_host_stats h1;
        lrun_model_host_stats(m, &h1);
        snprintf(name, sizeof name, "%s: freeing it gives all its host scratch back", prefix);
        CHECK(name, h1.scratch == h0.scratch);
        /* a host budget one byte short of what the split held: its last charge, the rows, is refused by name */
        lrun_model_set_host_budget(m, h.held - 1);
        e = engine(m, p->n, p->layers);
        snprintf(name, sizeof name, "%s: a host budget 1 byte short refuses the hand-over rows", prefix);
        CHECK(name, !e && strstr(lrun_last_error(), "hand-over rows"));
        lrun_engine_free(e);
        lrun_model_set_host_budget(m, 0);
    }
    lrun_engine_free(one);
    free(ref);
    free(got);
    lrun_model_free(m);
    unlink(path);
}

/* The CPU's own check after a placement: split 3 | 3 with only the first
 * part's blocks off the device (a dense model's host_experts placement:
 * block 0 streamed), the second part has no slots, the first part's are
 * one engine's (its units only). */
static void check_placed_block0(lrun_model *m, const char *arch, int64_t n_expert, const split_place_case *c,
                                const lrun_engine_stats *s1)
{
    if (c->fn != split_host_experts || n_expert != 0) return;
    char name[200];
    const lrun_engine_opts o = split_placed_opts(N_BATCH, 2, split_3_3);
    lrun_engine *e = NULL;
    (void)lrun_engine_init(&e, m, &o);
    lrun_engine_stats s;
    memset(&s, 0, sizeof s);
    if (e) lrun_engine_get_stats(e, &s);
    snprintf(name, sizeof name, "%s: block 0 streamed, split 3 | 3: the parts' slots are one engine's (%zu)", arch,
             s1->slot_bytes);
    CHECK(name, e && s.slot_bytes == s1->slot_bytes && s1->slot_bytes > 0);
    lrun_engine_free(e);
}

/* The placements of split_place_fixture.h on the CPU, with its sizing per part. */
static const split_placed_env placed_env = {
    .device = "cpu",
    .stem = "lrun_test_engine_split",
    .seed = 17,
    .n_vocab = N_VOCAB,
    .n_prompt = PROMPT,
    .n_batch = N_BATCH,
    .placed = "placed",
    .one = "one engine",
    .parts_alone = 1,
    .extra = check_placed_block0,
};

/* Bad splits and range fields refused by name, sizing a part refused out
 * of range, and a step refused as a whole in a split (split_fixture.h's
 * split_check_refused_step: the facade's and the split's common promise,
 * a refused step changes no sequence in any part). */
static void check_errors(void)
{
    snprintf(path, sizeof path, "/tmp/lrun_test_engine_split_%d_err.gguf", (int)getpid());
    if (!write_model("llama", 0)) return;
    lrun_model *m = fixture_load(path, "cpu", 0, 1, -1);
    CHECK("errors: loads", m != NULL);
    if (!m) return;
    lrun_engine_opts o;
    lrun_engine *e = NULL;
    const int64_t zero[2] = {0, N_LAYER}, ok_split[2] = {2, N_LAYER - 2};

    split_check_bad_splits(m);
    memset(&o, 0, sizeof o);
    o.n_split = N_LAYER + 1;
    o.split_layers = zero;
    CHECK("more parts than blocks is LRUN_E_ARG", lrun_engine_init(&e, m, &o) == LRUN_E_ARG);
    memset(&o, 0, sizeof o);
    o.layer_first = 2;
    CHECK("layer_first from a caller is LRUN_E_ARG (the split's own)",
          lrun_engine_init(&e, m, &o) == LRUN_E_ARG && strstr(lrun_last_error(), "layer_first"));

    {
        lrun_placement_size ps;
        memset(&o, 0, sizeof o);
        CHECK("sizing a part of no split is LRUN_E_ARG",
              lrun_engine_size_placement_part(&ps, m, &o, 0, NULL, NULL, NULL) == LRUN_E_ARG &&
                  strstr(lrun_last_error(), "no layer split"));
        o.n_split = 2;
        o.split_layers = ok_split;
        CHECK("sizing part 2 of 2 is LRUN_E_ARG naming the range",
              lrun_engine_size_placement_part(&ps, m, &o, 2, NULL, NULL, NULL) == LRUN_E_ARG &&
                  strstr(lrun_last_error(), "part 2 is not in [0, 2)"));
    }

    split_check_refused_step(m, N_VOCAB);
    lrun_engine_free(e);
    lrun_model_free(m);
    unlink(path);
}

int main(void)
{
    check_split("llama", 0);
    check_split("gemma2", 0);
    check_split("qwen3moe", 4);
    split_check_placed(&placed_env, "llama", 0);
    split_check_placed(&placed_env, "qwen3moe", 4);
    check_errors();
    return CHECK_DONE();
}
