/* split_place_fixture.h — the placements a layer split is checked under with
 * weights off its device (test_engine_split.c on the CPU,
 * test_engine_split_gpu.c on cuda:0): one engine and the split over the
 * same placement must give the same bits. Header-only like check.h; the
 * model, splits and script are split_fixture.h's.
 *
 * The model is bf16 (packable, docs/packed.md) with an untied head, so
 * the embedding (the first part's) and the head (the last part's) are
 * placed apart. Each placement says, by role and block, where a matrix
 * goes; norms, biases and routers stay on the device. */
#ifndef LRUN_TEST_SPLIT_PLACE_FIXTURE_H
#define LRUN_TEST_SPLIT_PLACE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"
#include "role_fixture.h"
#include "split_fixture.h"

/* Where one tensor goes: its tier, whether its matmul runs on the host, packed or plain. */
typedef struct split_where {
    lrun_tier tier;
    int host_compute;
    int packed;
} split_where;

typedef split_where (*split_place_fn)(lrun_role role, int layer);

static const split_where SPLIT_DEV = {LRUN_TIER_DEVICE, 0, 0};

static inline int split_is_expert(lrun_role r)
{
    return r == LRUN_ROLE_FFN_GATE_EXPS || r == LRUN_ROLE_FFN_UP_EXPS || r == LRUN_ROLE_FFN_DOWN_EXPS;
}

/* Streamed: blocks 1, 2 and 4 from host memory, block 5 from the file, the
 * head from pinned memory, the embedding's rows from host memory; so with
 * 3 | 3 both parts stream, with 1 | 5 the first part streams nothing. */
static inline split_where split_streamed(lrun_role r, int l)
{
    if (r == LRUN_ROLE_LM_HEAD) return (split_where){LRUN_TIER_PINNED, 0, 0};
    if (r == LRUN_ROLE_EMBEDDING) return (split_where){LRUN_TIER_HOST, 0, 0};
    if (!fixture_is_block_matrix(r) && !split_is_expert(r)) return SPLIT_DEV;
    if (l == 1 || l == 2 || l == 4) return (split_where){LRUN_TIER_HOST, 0, 0};
    if (l == 5) return (split_where){LRUN_TIER_MMAP, 0, 0};
    return SPLIT_DEV;
}

/* Host compute: blocks 0 and 3 multiplied on the host where they are,
 * block 5 streamed from pinned memory, the head multiplied on the host. */
static inline split_where split_host_compute(lrun_role r, int l)
{
    if (r == LRUN_ROLE_LM_HEAD) return (split_where){LRUN_TIER_HOST, 1, 0};
    if (!fixture_is_block_matrix(r) && !split_is_expert(r)) return SPLIT_DEV;
    if (l == 0 || l == 3) return (split_where){LRUN_TIER_HOST, 1, 0};
    if (l == 5) return (split_where){LRUN_TIER_PINNED, 0, 0};
    return SPLIT_DEV;
}

/* A mixture of experts' experts on the host (n_cpu_moe's placement): the
 * stacked expert tensors of blocks 2-5 computed on the host, block 0's
 * attention matrices streamed; a dense model gets only the streaming. */
static inline split_where split_host_experts(lrun_role r, int l)
{
    if (split_is_expert(r)) return l >= 2 ? (split_where){LRUN_TIER_HOST, 1, 0} : SPLIT_DEV;
    if (fixture_is_block_matrix(r) && l == 0) return (split_where){LRUN_TIER_HOST, 0, 0};
    return SPLIT_DEV;
}

/* Packed: every block matrix packed; even blocks on the device (decoded in
 * place, or by the fused decode-GEMV on CUDA), odd blocks streamed from host
 * memory (decoded into the slot), the head packed and multiplied on the host,
 * the embedding packed on the device; experts stay plain on the device. */
static inline split_where split_packed(lrun_role r, int l)
{
    if (r == LRUN_ROLE_LM_HEAD) return (split_where){LRUN_TIER_HOST, 1, 1};
    if (r == LRUN_ROLE_EMBEDDING) return (split_where){LRUN_TIER_DEVICE, 0, 1};
    if (!fixture_is_block_matrix(r)) return SPLIT_DEV; /* stacked experts (3-D) do not pack */
    return l % 2 == 0 ? (split_where){LRUN_TIER_DEVICE, 0, 1} : (split_where){LRUN_TIER_HOST, 0, 1};
}

typedef struct split_place_case {
    const char *what;
    split_place_fn fn;
} split_place_case;

static const split_place_case split_place_cases[] = {
    {"streamed (host, file, pinned head, host embedding rows)", split_streamed},
    {"host compute (blocks 0 and 3, the head)", split_host_compute},
    {"MoE experts on the host (blocks 2-5)", split_host_experts},
    {"packed (in place, streamed, host-computed head)", split_packed},
};

/* Places every tensor of m as fn says; 0 on failure (the reason as a TAP comment). */
static inline int split_place(lrun_model *m, split_place_fn fn)
{
    lrun_device *d = lrun_model_device(m);
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        const split_where w = fn(lrun_tensor_role(t), lrun_tensor_layer(t));
        if (lrun_tensor_move_form(t, w.tier == LRUN_TIER_DEVICE ? d : NULL, w.tier, w.packed) != LRUN_OK) {
            printf("# place %s: %s\n", lrun_tensor_name(t), lrun_last_error());
            return 0;
        }
        lrun_tensor_set_host_compute(t, w.host_compute);
    }
    return 1;
}

/* The placed tests' model: arch with n_layer blocks (n_expert 0: dense), bf16, head untied. */
static inline int split_place_model(const char *path, const char *arch, int64_t n_layer, int64_t n_expert,
                                    int64_t n_vocab, uint64_t seed)
{
    return split_write_model(path, arch, n_layer, n_expert, n_vocab, LRUN_DTYPE_BF16, LRUN_DTYPE_BF16, 0, seed);
}

// ---------------------------------------------------------------- one engine against the splits, placed

/* How a test runs the placed comparisons: its device, model, sizes and
 * names, and the checks only it makes. */
typedef struct split_placed_env {
    const char *device; /* where the model loads: "cpu", "cuda:0" */
    const char *stem;   /* the model file: /tmp/<stem>_<pid>_placed_<arch>.gguf */
    uint64_t seed;      /* the model's weights */
    int64_t n_vocab;    /* the model's vocabulary */
    int64_t n_prompt;   /* the script's prompt, in chunks of n_batch */
    int64_t n_batch;
    const char *placed; /* the check a failed placement fails: "placed", "placed on cuda:0" */
    const char *one;    /* the reference in check names: "one engine", "one CUDA engine" */
    int parts_alone;    /* 1: each part sized alone (lrun_engine_size_placement_part) adds up to the split */
    /* more checks on the placed model m after the splits (NULL: none); one: the one engine's stats */
    void (*extra)(lrun_model *m, const char *arch, int64_t n_expert, const split_place_case *c,
                  const lrun_engine_stats *one);
} split_placed_env;

/* Each part of o's split sized alone (what the planner fits into its
 * device's room): slots, weights and KV add up to size, the split's. */
static inline void split_check_parts_alone(lrun_model *m, const lrun_engine_opts *o, const lrun_placement_size *size,
                                           const char *prefix)
{
    char name[320];
    size_t slots = 0, weights = 0, kv = 0;
    int parts_ok = 1;
    for (int64_t part = 0; part < o->n_split; part++) {
        lrun_placement_size ps;
        memset(&ps, 0, sizeof ps);
        parts_ok = parts_ok && lrun_engine_size_placement_part(&ps, m, o, part, NULL, NULL, NULL) == LRUN_OK;
        slots += ps.slot_bytes, weights += ps.weight_bytes, kv += ps.kv_max_bytes;
    }
    snprintf(name, sizeof name, "%s: its parts sized alone add up to it (slots, weights, KV)", prefix);
    CHECK(name, parts_ok && slots == size->slot_bytes && weights == size->weight_bytes && kv == size->kv_max_bytes);
}

/* One placement c on a fresh model at path: one AS_PLACED engine against
 * the splits, over the same script; the same bits, the same host-computed
 * bytes, and a sizing (lrun_engine_size_placement) that is the slots the
 * parts took. */
static inline void split_check_placed_case(const split_placed_env *env, const char *path, const char *arch,
                                           int64_t n_expert, const split_place_case *c)
{
    char name[320], prefix[240], bits[64];
    lrun_model *m = fixture_load(path, env->device, 0, 2, -1);
    if (!m || !split_place(m, c->fn)) {
        snprintf(name, sizeof name, "%s, %s: %s", arch, c->what, env->placed);
        CHECK(name, 0);
        lrun_model_free(m);
        return;
    }
    const size_t n = (size_t)SPLIT_ROWS * (size_t)env->n_vocab;
    float *ref = calloc(n, sizeof(float)), *got = calloc(n, sizeof(float));
    if (!ref || !got) {
        snprintf(name, sizeof name, "%s, %s: logits buffers", arch, c->what);
        CHECK(name, 0);
        free(ref);
        free(got);
        lrun_model_free(m);
        return;
    }
    lrun_engine_opts o = split_placed_opts(env->n_batch, 0, NULL);
    lrun_engine *one = NULL;
    if (lrun_engine_init(&one, m, &o) != LRUN_OK) printf("# one engine: %s\n", lrun_last_error());
    snprintf(prefix, sizeof prefix, "%s, %s", arch, c->what);
    split_check_one(one, ref, env->n_prompt, env->n_vocab, prefix, env->one);
    lrun_engine_stats s1;
    memset(&s1, 0, sizeof s1);
    if (one) lrun_engine_get_stats(one, &s1);
    lrun_engine_free(one);

    snprintf(bits, sizeof bits, "%s's", env->one);
    for (int i = 0; i < SPLIT_N_CASES; i++) {
        const split_parts *p = &split_cases[i];
        o = split_placed_opts(env->n_batch, p->n, p->layers);
        lrun_placement_size size;
        memset(&size, 0, sizeof size);
        const lrun_status sst = lrun_engine_size_placement(&size, m, &o, NULL, NULL);
        lrun_engine *e = NULL;
        if (lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# split %s: %s\n", p->what, lrun_last_error());
        snprintf(prefix, sizeof prefix, "%s, %s, split %s", arch, c->what, p->what);
        split_check_same(e, 1, ref, got, env->n_prompt, env->n_vocab, prefix, bits);
        lrun_engine_stats s;
        memset(&s, 0, sizeof s);
        if (e) lrun_engine_get_stats(e, &s);
        snprintf(name, sizeof name, "%s: the same host-computed bytes as one engine (%llu)", prefix,
                 (unsigned long long)s1.host_compute_bytes);
        CHECK(name, s.host_compute_bytes == s1.host_compute_bytes);
        snprintf(name, sizeof name, "%s: its sizing is the slots its parts took (%zu)", prefix, s.slot_bytes);
        CHECK(name, sst == LRUN_OK && size.slot_bytes == s.slot_bytes);
        if (env->parts_alone) split_check_parts_alone(m, &o, &size, prefix);
        lrun_engine_free(e);
    }
    if (env->extra) env->extra(m, arch, n_expert, c, &s1);
    free(ref);
    free(got);
    lrun_model_free(m);
}

/* Every placement of split_place_cases on arch's placed model (written
 * with env's seed, removed after). */
static inline void split_check_placed(const split_placed_env *env, const char *arch, int64_t n_expert)
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/%s_%d_placed_%s.gguf", env->stem, (int)getpid(), arch);
    if (!split_place_model(path, arch, SPLIT_N_LAYER, n_expert, env->n_vocab, env->seed)) {
        CHECK("placed model written", 0);
        return;
    }
    for (size_t i = 0; i < sizeof split_place_cases / sizeof split_place_cases[0]; i++)
        split_check_placed_case(env, path, arch, n_expert, &split_place_cases[i]);
    unlink(path);
}

#endif
