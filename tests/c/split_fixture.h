/* split_fixture.h — what the layer-split tests share (test_engine_split.c on
 * the CPU, test_engine_split_gpu.c on cuda:0): the model they write, the
 * splits of its six blocks, the script one engine and each split run, and
 * the checks that compare them. Header-only like check.h; each test keeps
 * its device, seeds, prompt length and batch size, and its own checks.
 *
 * The script, from an empty cache: a prompt of n_prompt tokens in sequence 0
 * (its last row), a fork of sequence 0 into 1, four decode steps of both
 * sequences (two rows each), sequence 1 truncated back to 9 positions, then
 * three tokens in sequence 1 (all three rows): SPLIT_ROWS logits rows. */
#ifndef LRUN_TEST_SPLIT_FIXTURE_H
#define LRUN_TEST_SPLIT_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lrun.h"

#define SPLIT_N_LAYER 6                  /* the blocks every split below divides */
#define SPLIT_ROWS (1 + 8 + 3)           /* the script's logits rows */
#define SPLIT_PROMPT_MAX 64              /* the longest prompt the script takes */
#define SPLIT_COUNTS (SPLIT_N_LAYER * 4) /* expert counts of a 4-expert model: (layer, expert) */

// ---------------------------------------------------------------- the model and the splits

/* A model of n_layer blocks (n_embd 64, 4 heads over 2 KV heads, n_ff 96,
 * 128 positions) of arch (gemma2: alternating windows of 4 positions),
 * n_expert experts (0: dense; else 2 used), matrices in weight, the
 * embedding in embd, tied or not to the head. 1 when written; else 0 after a
 * TAP comment. */
static inline int split_write_model(const char *path, const char *arch, int64_t n_layer, int64_t n_expert,
                                    int64_t n_vocab, lrun_dtype weight, lrun_dtype embd, int tied, uint64_t seed)
{
    lrun_model_gen_spec s;
    memset(&s, 0, sizeof s);
    s.n_layer = n_layer;
    s.n_embd = 64;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_ff = 96;
    s.n_vocab = n_vocab;
    s.n_ctx = 128;
    s.weight_dtype = weight;
    s.embd_dtype = embd;
    s.tied_embeddings = tied;
    s.rope_freq_base = 10000;
    s.rms_eps = 1e-5;
    s.seed = seed;
    s.n_threads = 1;
    s.arch = arch;
    s.sliding_window = strcmp(arch, "gemma2") == 0 ? 4 : 0;
    s.n_expert = n_expert;
    s.n_expert_used = n_expert ? 2 : 0;
    const lrun_status st = lrun_model_generate(path, &s);
    if (st != LRUN_OK) printf("# generate %s: %s\n", arch, lrun_last_error());
    return st == LRUN_OK;
}

/* One split: n parts of layers[i] consecutive blocks; what names it in checks. */
typedef struct split_parts {
    const char *what;
    int64_t n;
    const int64_t *layers;
} split_parts;

static const int64_t split_1_5[2] = {1, SPLIT_N_LAYER - 1}, split_3_3[2] = {SPLIT_N_LAYER / 2, SPLIT_N_LAYER / 2},
                     split_2_1_3[3] = {2, 1, 3};

/* The splits every comparison runs: the first part one block, halves, three parts. */
static const split_parts split_cases[] = {{"1 | 5", 2, split_1_5},
                                          {"3 | 3", 2, split_3_3},
                                          {"2 | 1 | 3", 3, split_2_1_3}};

#define SPLIT_N_CASES ((int)(sizeof split_cases / sizeof split_cases[0]))

/* The script's options: two sequences of 64 positions, batches of n_batch
 * (the prompt in chunks), n_split parts of layers (0, NULL: one engine). */
static inline lrun_engine_opts split_opts(int64_t n_batch, int64_t n_split, const int64_t *layers)
{
    lrun_engine_opts o;
    memset(&o, 0, sizeof o);
    o.n_seq_max = 2;
    o.n_ctx_max = 64;
    o.n_batch_max = n_batch;
    o.n_split = n_split;
    o.split_layers = layers;
    return o;
}

/* An AS_PLACED engine's options (k = 1: the streaming cycle turns every block). */
static inline lrun_engine_opts split_placed_opts(int64_t n_batch, int64_t n_split, const int64_t *layers)
{
    lrun_engine_opts o = split_opts(n_batch, n_split, layers);
    o.weight_mode = LRUN_WEIGHT_MODE_AS_PLACED;
    o.prefetch_layers = 1;
    return o;
}

// ---------------------------------------------------------------- the script

/* Runs the script (this header's opening) on e, every logits row in order
 * into out (SPLIT_ROWS, n_vocab), the rows written in *rows; 0 after a TAP
 * comment when a step fails. */
static inline int split_run_script(lrun_engine *e, int64_t n_prompt, int64_t n_vocab, float *out, int64_t *rows)
{
    int32_t tok[SPLIT_PROMPT_MAX], seq[SPLIT_PROMPT_MAX];
    int64_t n_out = 0, r = 0;
    *rows = 0;
    if (n_prompt > SPLIT_PROMPT_MAX) {
        printf("# script: a prompt of %lld tokens, more than %d\n", (long long)n_prompt, SPLIT_PROMPT_MAX);
        return 0;
    }
    for (int i = 0; i < n_prompt; i++) tok[i] = (int32_t)((i * 37 + 5) % n_vocab), seq[i] = 0;
    int ok = lrun_engine_step(e, n_prompt, tok, seq, NULL, out, 1, &n_out) == LRUN_OK && n_out == 1;
    if (!ok) printf("# prompt step: %s\n", lrun_last_error());
    r += n_out;
    ok = ok && lrun_engine_seq_copy(e, 1, 0) == LRUN_OK; /* a fork */
    for (int t = 0; ok && t < 4; t++) {                  /* decode both, one token each per step */
        const int32_t two[2] = {(int32_t)(7 + t * 3), (int32_t)(100 + t)}, sq[2] = {0, 1};
        ok = lrun_engine_step(e, 2, two, sq, NULL, out + r * n_vocab, 2, &n_out) == LRUN_OK && n_out == 2;
        r += n_out;
    }
    ok = ok && lrun_engine_seq_truncate(e, 1, 9) == LRUN_OK; /* back into the prompt */
    const int32_t again[3] = {42, 43, 44}, sq1[3] = {1, 1, 1};
    const int8_t all[3] = {1, 1, 1};
    ok = ok && lrun_engine_step(e, 3, again, sq1, all, out + r * n_vocab, 3, &n_out) == LRUN_OK && n_out == 3;
    if (!ok) printf("# script: %s\n", lrun_last_error());
    r += n_out;
    *rows = r;
    return ok;
}

/* 1 when the n floats are the same bits; else 0 after a TAP comment naming
 * the first difference (row and logit of rows of n_vocab). */
static inline int split_same_bits(const float *want, const float *got, int64_t n, int64_t n_vocab)
{
    if (memcmp(want, got, (size_t)n * sizeof *want) == 0) return 1;
    int64_t i = 0, n_diff = 0;
    while (memcmp(&want[i], &got[i], sizeof *want) == 0) i++;
    for (int64_t j = 0; j < n; j++) n_diff += memcmp(&want[j], &got[j], sizeof *want) != 0;
    printf("# first difference at row %lld, logit %lld: one engine %a, split %a (%lld of %lld differ)\n",
           (long long)(i / n_vocab), (long long)(i % n_vocab), (double)want[i], (double)got[i], (long long)n_diff,
           (long long)n);
    return 0;
}

// ---------------------------------------------------------------- the comparisons

/* The reference: one engine (NULL when its init failed) runs the script into
 * ref. Check "<prefix>: <one> runs the script". */
static inline void split_check_one(lrun_engine *one, float *ref, int64_t n_prompt, int64_t n_vocab,
                                   const char *prefix, const char *one_what)
{
    char name[320];
    int64_t rows = 0;
    snprintf(name, sizeof name, "%s: %s runs the script", prefix, one_what);
    CHECK(name, one && split_run_script(one, n_prompt, n_vocab, ref, &rows) && rows == SPLIT_ROWS);
}

/* A split e (NULL when its init failed) runs the script into got (cleared
 * first) against ref, which one engine wrote when ref_ok (0: fails). Checks
 * "<prefix>: runs the script" and "<prefix>: every logit bit-identical to
 * <bits_what>". */
static inline void split_check_same(lrun_engine *e, int ref_ok, const float *ref, float *got, int64_t n_prompt,
                                    int64_t n_vocab, const char *prefix, const char *bits_what)
{
    char name[320];
    int64_t rows = 0;
    snprintf(name, sizeof name, "%s: runs the script", prefix);
    memset(got, 0, sizeof(float) * SPLIT_ROWS * (size_t)n_vocab);
    CHECK(name, e && split_run_script(e, n_prompt, n_vocab, got, &rows) && rows == SPLIT_ROWS);
    snprintf(name, sizeof name, "%s: every logit bit-identical to %s", prefix, bits_what);
    CHECK(name, e && ref_ok && split_same_bits(ref, got, SPLIT_ROWS * n_vocab, n_vocab));
}

/* Expert selections per block of e (NULL: none) against one engine's
 * (counts1, tokens1), of which the last block's must be some. Check
 * "<prefix>: expert selections per block as one engine counts them". */
static inline void split_check_experts(lrun_engine *e, const int64_t counts1[SPLIT_COUNTS],
                                       const int64_t tokens1[SPLIT_N_LAYER], const char *prefix)
{
    char name[320];
    int64_t counts[SPLIT_COUNTS] = {0}, tokens[SPLIT_N_LAYER] = {0};
    if (e) lrun_engine_expert_counts(e, counts, tokens);
    snprintf(name, sizeof name, "%s: expert selections per block as one engine counts them", prefix);
    CHECK(name, memcmp(counts, counts1, sizeof counts) == 0 && memcmp(tokens, tokens1, sizeof tokens) == 0 &&
                    tokens1[SPLIT_N_LAYER - 1] > 0);
}

// ---------------------------------------------------------------- the refusals

/* Splits refused by name on m (a model of SPLIT_N_LAYER blocks): no
 * layers, parts adding up to fewer blocks, an empty part. */
static inline void split_check_bad_splits(lrun_model *m)
{
    const int64_t short_split[2] = {2, 2}, zero[2] = {0, SPLIT_N_LAYER};
    lrun_engine *e = NULL;
    lrun_engine_opts o;
    memset(&o, 0, sizeof o);
    o.n_split = 2;
    CHECK("n_split without split_layers is LRUN_E_ARG", lrun_engine_init(&e, m, &o) == LRUN_E_ARG && !e);
    o.split_layers = short_split;
    CHECK("parts adding up to fewer blocks are LRUN_E_ARG naming the sum",
          lrun_engine_init(&e, m, &o) == LRUN_E_ARG && strstr(lrun_last_error(), "add up to 4 blocks"));
    o.split_layers = zero;
    CHECK("an empty part is LRUN_E_ARG naming it",
          lrun_engine_init(&e, m, &o) == LRUN_E_ARG && strstr(lrun_last_error(), "split_layers[0]"));
    lrun_engine_free(e);
}

/* A split 2 | 4 over a static cache of 16 positions: 10 tokens run, 10 more
 * pass n_ctx_max and are refused as a whole, leaving the sequence at 10
 * positions in every part, and 6 more run. A step that cannot fit the cache
 * in a later part would be refused by the facade first; the cache's size is
 * what makes the refusal here. n_vocab: m's. */
static inline void split_check_refused_step(lrun_model *m, int64_t n_vocab)
{
    const int64_t ok_split[2] = {2, SPLIT_N_LAYER - 2};
    lrun_engine *e = NULL;
    lrun_engine_opts o;
    memset(&o, 0, sizeof o);
    o.n_split = 2;
    o.split_layers = ok_split;
    o.n_ctx_max = 16;
    o.cache_kind = LRUN_CACHE_KIND_STATIC;
    CHECK("errors: a split engine with a static cache", lrun_engine_init(&e, m, &o) == LRUN_OK && e);
    float *logits = calloc((size_t)n_vocab, sizeof *logits);
    if (e && logits) {
        int32_t tok[10], seq[10];
        for (int i = 0; i < 10; i++) tok[i] = 3 + i, seq[i] = 0;
        int64_t n_out = 0;
        CHECK("errors: 10 tokens run", lrun_engine_step(e, 10, tok, seq, NULL, logits, 1, &n_out) == LRUN_OK);
        CHECK("errors: 10 more pass n_ctx_max and are refused",
              lrun_engine_step(e, 10, tok, seq, NULL, logits, 1, &n_out) != LRUN_OK);
        CHECK("errors: ... and the sequence still holds 10 positions", lrun_engine_seq_len(e, 0) == 10);
        CHECK("errors: the next step runs", lrun_engine_step(e, 6, tok, seq, NULL, logits, 1, &n_out) == LRUN_OK &&
                                                lrun_engine_seq_len(e, 0) == 16);
    }
    free(logits);
    lrun_engine_free(e);
}

#endif
