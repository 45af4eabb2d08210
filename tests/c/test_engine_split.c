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
#include "split_place_fixture.h"

#define N_LAYER 6
#define N_VOCAB 300
#define N_EMBD 64
#define PROMPT 13

static char path[256];

static int write_model(const char *arch, int64_t n_expert)
{
    lrun_model_gen_spec s;
    memset(&s, 0, sizeof s);
    s.n_layer = N_LAYER;
    s.n_embd = N_EMBD;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_ff = 96;
    s.n_vocab = N_VOCAB;
    s.n_ctx = 128;
    s.weight_dtype = LRUN_DTYPE_Q8_0;
    s.embd_dtype = LRUN_DTYPE_F32;
    s.tied_embeddings = 1;
    s.rope_freq_base = 10000;
    s.rms_eps = 1e-5;
    s.seed = 11;
    s.n_threads = 1;
    s.arch = arch;
    s.sliding_window = strcmp(arch, "gemma2") == 0 ? 4 : 0;
    s.n_expert = n_expert;
    s.n_expert_used = n_expert ? 2 : 0;
    const lrun_status st = lrun_model_generate(path, &s);
    if (st != LRUN_OK) printf("# generate %s: %s\n", arch, lrun_last_error());
    return st == LRUN_OK;
}

static lrun_engine *engine(lrun_model *m, int64_t n_split, const int64_t *layers, int64_t n_seq)
{
    lrun_engine_opts o;
    memset(&o, 0, sizeof o);
    o.n_seq_max = n_seq;
    o.n_ctx_max = 64;
    o.n_batch_max = 5; /* the 13-token prompt in three chunks */
    o.n_split = n_split;
    o.split_layers = layers;
    lrun_engine *e = NULL;
    if (lrun_engine_init(&e, m, &o) != LRUN_OK)
        printf("# engine (%lld parts): %s\n", (long long)n_split, lrun_last_error());
    return e;
}

/* The script both engines run: writes every logits row, in order, to out (rows counted in *rows). */
static int run_script(lrun_engine *e, float *out, int64_t *rows)
{
    int32_t tok[PROMPT], seq[PROMPT];
    int64_t n_out = 0, r = 0;
    for (int i = 0; i < PROMPT; i++) tok[i] = (int32_t)((i * 37 + 5) % N_VOCAB), seq[i] = 0;
    int ok = lrun_engine_step(e, PROMPT, tok, seq, NULL, out, 1, &n_out) == LRUN_OK && n_out == 1;
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
    r += n_out;
    *rows = r;
    return ok;
}

static void check_split(const char *arch, int64_t n_expert)
{
    char name[200];
    snprintf(path, sizeof path, "/tmp/lrun_test_engine_split_%d_%s.gguf", (int)getpid(), arch);
    if (!write_model(arch, n_expert)) {
        CHECK("model written", 0);
        return;
    }
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    snprintf(name, sizeof name, "%s: loads", arch);
    CHECK(name, m != NULL);
    if (!m) return;
    enum { ROWS = 1 + 8 + 3 };
    float *ref = malloc(sizeof(float) * ROWS * N_VOCAB), *got = malloc(sizeof(float) * ROWS * N_VOCAB);
    int64_t ref_rows = 0, got_rows = 0;
    lrun_engine *one = engine(m, 0, NULL, 2);
    snprintf(name, sizeof name, "%s: one engine runs the script", arch);
    CHECK(name, one && run_script(one, ref, &ref_rows) && ref_rows == ROWS);
    lrun_engine_stats s1;
    lrun_engine_get_stats(one, &s1);
    int64_t counts1[N_LAYER * 4] = {0}, tokens1[N_LAYER] = {0};
    if (n_expert) lrun_engine_expert_counts(one, counts1, tokens1);

    static const int64_t split_a[2] = {1, N_LAYER - 1}, split_b[2] = {N_LAYER / 2, N_LAYER / 2},
                         split_c[3] = {2, 1, 3};
    const struct {
        const char *what;
        int64_t n;
        const int64_t *layers;
    } splits[] = {{"1 | 5", 2, split_a}, {"3 | 3", 2, split_b}, {"2 | 1 | 3", 3, split_c}};
    lrun_host_stats h0;
    lrun_model_host_stats(m, &h0);
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        lrun_engine *e = engine(m, splits[i].n, splits[i].layers, 2);
        lrun_host_stats h;
        lrun_model_host_stats(m, &h);
        snprintf(name, sizeof name,
                 "%s, split %s: the host account holds its hand-over rows (2 x 5 x %d floats) "
                 "as scratch",
                 arch, splits[i].what, N_EMBD);
        CHECK(name, h.scratch >= h0.scratch + 2 * 5 * N_EMBD * sizeof(float));
        {
            lrun_engine_opts o;
            memset(&o, 0, sizeof o);
            o.n_seq_max = 2;
            o.n_ctx_max = 64;
            o.n_batch_max = 5;
            o.n_split = splits[i].n;
            o.split_layers = splits[i].layers;
            lrun_engine_needs need;
            memset(&need, 0, sizeof need);
            snprintf(name, sizeof name, "%s, split %s: the estimate's scratch is what its parts and rows hold (%zu)",
                     arch, splits[i].what, h.scratch - h0.scratch);
            CHECK(name,
                  lrun_engine_estimate(&need, m, &o) == LRUN_OK && need.scratch_bytes == h.scratch - h0.scratch);
        }
        snprintf(name, sizeof name, "%s, split %s: runs the script", arch, splits[i].what);
        memset(got, 0, sizeof(float) * ROWS * N_VOCAB);
        CHECK(name, e && run_script(e, got, &got_rows) && got_rows == ROWS);
        snprintf(name, sizeof name,
                 "%s, split %s: every logit bit-identical to one engine's (prefill in chunks, "
                 "fork, decode, truncate)",
                 arch, splits[i].what);
        CHECK(name, memcmp(ref, got, sizeof(float) * ROWS * N_VOCAB) == 0);
        lrun_engine_stats s;
        lrun_engine_get_stats(e, &s);
        snprintf(name, sizeof name, "%s, split %s: the parts' KV caches add up to one engine's", arch,
                 splits[i].what);
        CHECK(name, e && s.kv_bytes == s1.kv_bytes && s.kv_bytes > 0);
        if (n_expert) {
            int64_t counts[N_LAYER * 4] = {0}, tokens[N_LAYER] = {0};
            lrun_engine_expert_counts(e, counts, tokens);
            snprintf(name, sizeof name, "%s, split %s: expert selections per block as one engine counts them", arch,
                     splits[i].what);
            CHECK(name, memcmp(counts, counts1, sizeof counts) == 0 && memcmp(tokens, tokens1, sizeof tokens) == 0 &&
                            tokens1[N_LAYER - 1] > 0);
        }
        lrun_engine_free(e);
        lrun_host_stats h1;
        lrun_model_host_stats(m, &h1);
        snprintf(name, sizeof name, "%s, split %s: freeing it gives all its host scratch back", arch, splits[i].what);
        CHECK(name, h1.scratch == h0.scratch);
        /* a host budget one byte short of what the split held: its last charge, the rows, is refused by name */
        lrun_model_set_host_budget(m, h.held - 1);
        e = engine(m, splits[i].n, splits[i].layers, 2);
        snprintf(name, sizeof name, "%s, split %s: a host budget 1 byte short refuses the hand-over rows", arch,
                 splits[i].what);
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

static lrun_engine_opts placed_opts(int64_t n_split, const int64_t *layers)
{
    lrun_engine_opts o;
    memset(&o, 0, sizeof o);
    o.n_seq_max = 2;
    o.n_ctx_max = 64;
    o.n_batch_max = 5;
    o.n_split = n_split;
    o.split_layers = layers;
    o.weight_mode = LRUN_WEIGHT_MODE_AS_PLACED;
    o.prefetch_layers = 1;
    return o;
}

/* One placement of split_place_fixture.h on a fresh model: one AS_PLACED
 * engine against the splits, over the same script. */
static void check_placed_case(const char *arch, int64_t n_expert, const split_place_case *c)
{
    char name[300];
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    if (!m || !split_place(m, c->fn)) {
        snprintf(name, sizeof name, "%s, %s: placed", arch, c->what);
        CHECK(name, 0);
        lrun_model_free(m);
        return;
    }
    enum { ROWS = 1 + 8 + 3 };
    float *ref = calloc(ROWS * N_VOCAB, sizeof(float)), *got = calloc(ROWS * N_VOCAB, sizeof(float));
    int64_t ref_rows = 0, got_rows = 0;
    lrun_engine_opts o = placed_opts(0, NULL);
    lrun_engine *one = NULL;
    if (lrun_engine_init(&one, m, &o) != LRUN_OK) printf("# one engine: %s\n", lrun_last_error());
    snprintf(name, sizeof name, "%s, %s: one engine runs the script", arch, c->what);
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
        const lrun_status st = lrun_engine_init(&e, m, &o);
        if (st != LRUN_OK) printf("# split %s: %s\n", splits[i].what, lrun_last_error());
        snprintf(name, sizeof name, "%s, %s, split %s: runs the script", arch, c->what, splits[i].what);
        memset(got, 0, sizeof(float) * ROWS * N_VOCAB);
        CHECK(name, e && run_script(e, got, &got_rows) && got_rows == ROWS);
        snprintf(name, sizeof name, "%s, %s, split %s: every logit bit-identical to one engine's", arch, c->what,
                 splits[i].what);
        CHECK(name, memcmp(ref, got, sizeof(float) * ROWS * N_VOCAB) == 0);
        lrun_engine_stats s;
        memset(&s, 0, sizeof s);
        if (e) lrun_engine_get_stats(e, &s);
        snprintf(name, sizeof name, "%s, %s, split %s: the same host-computed bytes as one engine (%llu)", arch,
                 c->what, splits[i].what, (unsigned long long)s1.host_compute_bytes);
        CHECK(name, s.host_compute_bytes == s1.host_compute_bytes);
        snprintf(name, sizeof name, "%s, %s, split %s: its sizing is the slots its parts took (%zu)", arch, c->what,
                 splits[i].what, s.slot_bytes);
        CHECK(name, sst == LRUN_OK && size.slot_bytes == s.slot_bytes);
        /* each part sized alone (what the planner fits into its device's room): the split's sizes add up */
        size_t slots = 0, weights = 0, kv = 0;
        int parts_ok = 1;
        for (int64_t part = 0; part < splits[i].n; part++) {
            lrun_placement_size ps;
            parts_ok = parts_ok && lrun_engine_size_placement_part(&ps, m, &o, part, NULL, NULL, NULL) == LRUN_OK;
            slots += ps.slot_bytes, weights += ps.weight_bytes, kv += ps.kv_max_bytes;
        }
        snprintf(name, sizeof name, "%s, %s, split %s: its parts sized alone add up to it (slots, weights, KV)", arch,
                 c->what, splits[i].what);
        CHECK(name, parts_ok && slots == size.slot_bytes && weights == size.weight_bytes && kv == size.kv_max_bytes);
        lrun_engine_free(e);
    }
    /* split 3 | 3 with only the first part's blocks off the device: the second
     * part has no slots, the first part's are one engine's (its units only) */
    if (c->fn == split_host_experts && n_expert == 0) {
        o = placed_opts(2, split_b);
        lrun_engine *e = NULL;
        (void)lrun_engine_init(&e, m, &o);
        lrun_engine_stats s;
        memset(&s, 0, sizeof s);
        if (e) lrun_engine_get_stats(e, &s);
        snprintf(name, sizeof name, "%s: block 0 streamed, split 3 | 3: the parts' slots are one engine's (%zu)",
                 arch, s1.slot_bytes);
        CHECK(name, e && s.slot_bytes == s1.slot_bytes && s1.slot_bytes > 0);
        lrun_engine_free(e);
    }
    free(ref);
    free(got);
    lrun_model_free(m);
}

static void check_placed(const char *arch, int64_t n_expert)
{
    snprintf(path, sizeof path, "/tmp/lrun_test_engine_split_%d_placed_%s.gguf", (int)getpid(), arch);
    if (!split_place_model(path, arch, N_LAYER, n_expert, N_VOCAB, 17)) {
        CHECK("placed model written", 0);
        return;
    }
    for (size_t i = 0; i < sizeof split_place_cases / sizeof split_place_cases[0]; i++)
        check_placed_case(arch, n_expert, &split_place_cases[i]);
    unlink(path);
}

/* A step that cannot fit the cache in the second part (n_ctx_max reached)
 * would be refused by the facade first; so the failure is made in the
 * first chunk's later part through the cache's size: a static cache of 16
 * positions, then a step of 20 tokens, refused as a whole. What this checks
 * is the facade's and the split's common promise: a refused step changes no
 * sequence in any part. */
static void check_errors(void)
{
    snprintf(path, sizeof path, "/tmp/lrun_test_engine_split_%d_err.gguf", (int)getpid());
    if (!write_model("llama", 0)) return;
    lrun_model *m = fixture_load(path, "cpu", 0, 1, -1);
    CHECK("errors: loads", m != NULL);
    if (!m) return;
    lrun_engine_opts o;
    lrun_engine *e = NULL;
    const int64_t short_split[2] = {2, 2}, zero[2] = {0, N_LAYER}, ok_split[2] = {2, N_LAYER - 2};

    memset(&o, 0, sizeof o);
    o.n_split = 2;
    CHECK("n_split without split_layers is LRUN_E_ARG", lrun_engine_init(&e, m, &o) == LRUN_E_ARG && !e);
    o.split_layers = short_split;
    CHECK("parts adding up to fewer blocks are LRUN_E_ARG naming the sum",
          lrun_engine_init(&e, m, &o) == LRUN_E_ARG && strstr(lrun_last_error(), "add up to 4 blocks"));
    o.split_layers = zero;
    CHECK("an empty part is LRUN_E_ARG naming it",
          lrun_engine_init(&e, m, &o) == LRUN_E_ARG && strstr(lrun_last_error(), "split_layers[0]"));
    o.n_split = N_LAYER + 1;
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

    /* a step the static cache cannot hold: refused, nothing changes in either part */
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
    check_split("llama", 0);
    check_split("gemma2", 0);
    check_split("qwen3moe", 4);
    check_placed("llama", 0);
    check_placed("qwen3moe", 4);
    check_errors();
    return CHECK_DONE();
}
