/* split_place_fixture.h — the placements a layer split is checked under with
 * weights off its device (test_engine_split.c on the CPU,
 * test_engine_split_gpu.c on cuda:0): one engine and the split over the
 * same placement must give the same bits. Header-only like check.h.
 *
 * The model is bf16 (packable, docs/packed.md) with an untied head, so
 * the embedding (the first part's) and the head (the last part's) are
 * placed apart. Each placement says, by role and block, where a matrix
 * goes; norms, biases and routers stay on the device. */
#ifndef LRUN_TEST_SPLIT_PLACE_FIXTURE_H
#define LRUN_TEST_SPLIT_PLACE_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "lrun.h"
#include "role_fixture.h"

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
    lrun_model_gen_spec s;
    memset(&s, 0, sizeof s);
    s.n_layer = n_layer;
    s.n_embd = 64;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_ff = 96;
    s.n_vocab = n_vocab;
    s.n_ctx = 128;
    s.weight_dtype = LRUN_DTYPE_BF16;
    s.embd_dtype = LRUN_DTYPE_BF16;
    s.tied_embeddings = 0;
    s.rope_freq_base = 10000;
    s.rms_eps = 1e-5;
    s.seed = seed;
    s.n_threads = 1;
    s.arch = arch;
    s.n_expert = n_expert;
    s.n_expert_used = n_expert ? 2 : 0;
    const lrun_status st = lrun_model_generate(path, &s);
    if (st != LRUN_OK) printf("# generate %s: %s\n", arch, lrun_last_error());
    return st == LRUN_OK;
}

#endif
