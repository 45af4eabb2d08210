/* disk_packed_fixture.h — what the packed-on-disk tests share
 * (test_disk_packed.c on the CPU, test_disk_packed_gpu.c on cuda:0): a
 * plain bf16 model and its packed file beside the test program, the
 * resident run of the plain model, then the packed file's matrices and head
 * on the disk tier, read packed and decoded in their slots: bit-identical
 * logits at k = 1 and 2, beside packed matrices in another tier and in the
 * file mapped, and with the reads cut into small requests over threads.
 * Header-only like check.h; each test keeps its sizes, device, the tier
 * beside, the request sizes and its own byte-count checks (the CPU engine
 * streams once a chunk, the CUDA engine once a pass). */
#ifndef LRUN_TEST_DISK_PACKED_FIXTURE_H
#define LRUN_TEST_DISK_PACKED_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "disk_fixture.h"
#include "fixtures.h"
#include "lrun.h"

#define DISK_PACKED_BATCH 4      /* the prompt's chunks */
#define DISK_PACKED_MAX_LAYER 16 /* the most blocks a placement here spells out */

/* The plain model's sizes; the rest is this header's: bf16 matrices and
 * embedding, untied head, rope base 10000, eps 1e-5, seed 93. */
typedef struct disk_packed_sizes {
    int64_t n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, n_ctx; /* n_ctx: also the engines' positions */
} disk_packed_sizes;

typedef struct disk_packed_env disk_packed_env;

/* A test's byte counts after a run at k layers prefetched over the all-disk
 * placement (s: the engine's stats; plain, stored: the streamed weights'
 * plain and packed bytes, one pass over them): prints them as a TAP comment,
 * 1 when the packed bytes were streamed and read, and fewer than the plain. */
typedef int (*disk_packed_bytes_fn)(const disk_packed_env *env, const lrun_engine_stats *s, int k, size_t plain,
                                    size_t stored);

/* One test's device, model, run and what differs between its checks. */
struct disk_packed_env {
    const char *device;      /* "cpu", "cuda:0" */
    int n_threads;           /* the models' CPU threads (0: all cores) */
    const char *stem;        /* the files: <the test program's directory>/<stem>_<pid>.gguf, and .packed */
    disk_packed_sizes model; /* the plain model */
    int gen_threads;         /* the generator's fill threads (0: all cores) */
    int n_prompt;            /* the prompt (in chunks of DISK_PACKED_BATCH), then n_steps greedy steps */
    const int32_t *prompt;
    int n_steps;
    lrun_tier beside;        /* the mixed placement's block 1 (block 2 in the file mapped, the rest on disk) */
    const char *beside_name; /* ... as its check names it: "host", "pinned" */
    int request_kib;         /* the small requests: LRUN_DISK_REQUEST in KiB */
    int request_threads;     /* ... over LRUN_DISK_THREADS threads */
    disk_packed_bytes_fn bytes_ok;
    int check_planner; /* 1: also the planner's slot bytes (lrun_engine_size_placement) are what init took */
    int codec;         /* lrun_pack_codec of the packed file (0: PEX1) */
};

/* The plain model's generator spec. */
static inline lrun_model_gen_spec disk_packed_spec(const disk_packed_env *env)
{
    const disk_packed_sizes *z = &env->model;
    lrun_model_gen_spec s;
    memset(&s, 0, sizeof s);
    s.n_layer = z->n_layer;
    s.n_embd = z->n_embd;
    s.n_head = z->n_head;
    s.n_head_kv = z->n_head_kv;
    s.n_ff = z->n_ff;
    s.n_vocab = z->n_vocab;
    s.n_ctx = z->n_ctx;
    s.weight_dtype = LRUN_DTYPE_BF16;
    s.embd_dtype = LRUN_DTYPE_BF16;
    s.rope_freq_base = 10000.0;
    s.rms_eps = 1e-5;
    s.seed = 93;
    s.n_threads = env->gen_threads;
    return s;
}

/* One sequence of model.n_ctx positions in batches of DISK_PACKED_BATCH, k layers prefetched. */
static inline lrun_engine *disk_packed_engine(const disk_packed_env *env, lrun_model *m, lrun_weight_mode mode, int k)
{
    return disk_engine(m, mode, k, env->model.n_ctx, DISK_PACKED_BATCH);
}

/* The prompt, then the greedy steps: logits holds (n_steps + 1, n_vocab). 0 after a TAP comment. */
static inline int disk_packed_run(const disk_packed_env *env, lrun_engine *e, float *logits)
{
    return disk_run(e, env->n_prompt, env->prompt, env->n_steps, env->model.n_vocab, logits);
}

/* e ran the env's script into got, the same bits as ref (n floats). */
static inline int disk_packed_same(const disk_packed_env *env, lrun_engine *e, const float *ref, float *got, size_t n)
{
    return e && disk_packed_run(env, e, got) && memcmp(ref, got, n * sizeof *got) == 0;
}

/* The packed file's matrices on the disk tier against ref, the resident
 * plain run's logits. */
static inline void disk_packed_check(const disk_packed_env *env, const char *packed, const float *ref, float *got,
                                     size_t n)
{
    const int n_layer = (int)env->model.n_layer;
    if (n_layer < 3 || n_layer > DISK_PACKED_MAX_LAYER) {
        CHECK("disk_packed_fixture.h: the model has 3 to 16 blocks", 0);
        return;
    }
    lrun_tier all_disk[DISK_PACKED_MAX_LAYER + 1], mixed[DISK_PACKED_MAX_LAYER + 1]; /* (layer), the head last */
    for (int l = 0; l <= n_layer; l++) all_disk[l] = mixed[l] = LRUN_TIER_DISK;
    mixed[1] = env->beside;
    mixed[2] = LRUN_TIER_MMAP;

    lrun_model *m = fixture_load(packed, env->device, 0, env->n_threads, -1);
    lrun_tensor *q = m ? lrun_model_find_tensor(m, "blk.0.attn_q.weight") : NULL;
    CHECK("the packed file's matrices are packed in the file", q && lrun_tensor_file_packed(q));
    size_t plain, stored;
    disk_place(m, all_disk, n_layer, 0, &plain, &stored);
    CHECK("on disk they stay packed", q && lrun_tensor_packed(q) && stored < plain);
    printf("# streamed per chunk: %zu bytes plain, %zu packed\n", plain, stored);
    for (int k = 1; k <= 2; k++) {
        char name[128];
        lrun_engine *e = disk_packed_engine(env, m, LRUN_WEIGHT_MODE_AS_PLACED, k);
        snprintf(name, sizeof name, "packed on disk, k = %d: logits bit-identical to the resident plain run", k);
        CHECK(name, disk_packed_same(env, e, ref, got, n));
        lrun_engine_stats s;
        memset(&s, 0, sizeof s);
        if (e) lrun_engine_get_stats(e, &s);
        snprintf(name, sizeof name, "k = %d: the packed bytes are streamed and read, fewer than the plain ones", k);
        CHECK(name, env->bytes_ok(env, &s, k, plain, stored));
        if (env->check_planner) {
            lrun_placement_size size;
            const lrun_engine_opts o = {.n_seq_max = 1,
                                        .n_ctx_max = env->model.n_ctx,
                                        .n_batch_max = DISK_PACKED_BATCH,
                                        .prefetch_layers = k};
            snprintf(name, sizeof name, "k = %d: the planner's slot bytes are what init took", k);
            CHECK(name, e && lrun_engine_size_placement(&size, m, &o, NULL, NULL) == LRUN_OK &&
                            size.slot_bytes == s.slot_bytes);
        }
        lrun_engine_free(e);
    }
    char name[128];
    disk_place(m, mixed, n_layer, 0, &plain, &stored);
    lrun_engine *e = disk_packed_engine(env, m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    snprintf(name, sizeof name, "packed on disk beside packed %s and mmap: bit-identical", env->beside_name);
    CHECK(name, disk_packed_same(env, e, ref, got, n));
    lrun_engine_free(e);

    disk_place(m, all_disk, n_layer, 0, &plain, &stored);
    char request[32], threads[32];
    snprintf(request, sizeof request, "%d", env->request_kib * 1024);
    snprintf(threads, sizeof threads, "%d", env->request_threads);
    setenv("LRUN_DISK_REQUEST", request, 1);
    setenv("LRUN_DISK_THREADS", threads, 1);
    e = disk_packed_engine(env, m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    snprintf(name, sizeof name, "packed on disk, %d KiB requests over %d threads: bit-identical", env->request_kib,
             env->request_threads);
    CHECK(name, disk_packed_same(env, e, ref, got, n));
    unsetenv("LRUN_DISK_REQUEST");
    unsetenv("LRUN_DISK_THREADS");
    lrun_engine_free(e);
    lrun_model_free(m);
}

/* The whole test: the plain model and its packed file beside argv0 (the
 * build directory: a real disk, unlike a tmpfs /tmp), the resident run,
 * the packed checks; the files removed after. */
static inline void disk_packed_test(const disk_packed_env *env, const char *argv0)
{
    char gguf[256], packed[300];
    disk_path_beside(gguf, sizeof gguf, argv0, env->stem);
    snprintf(packed, sizeof packed, "%s.packed", gguf);
    const lrun_model_gen_spec spec = disk_packed_spec(env);
    if (lrun_model_generate(gguf, &spec) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    const lrun_pack_opts po = {.codec = env->codec};
    lrun_pack_stats ps = {0};
    CHECK(env->codec == LRUN_PACK_CODEC_PEX2 ? "pack the model (PEX2)" : "pack the model",
          lrun_pack(gguf, packed, &po, &ps) == LRUN_OK && (env->codec != LRUN_PACK_CODEC_PEX2 || ps.n_pex2 > 0));
    const size_t n = (size_t)(env->n_steps + 1) * (size_t)env->model.n_vocab; /* (n_steps + 1, n_vocab) */
    float *ref = calloc(n, sizeof *ref), *got = calloc(n, sizeof *got);
    lrun_model *m = fixture_load(gguf, env->device, 0, env->n_threads, -1);
    lrun_engine *e = ref && got ? disk_packed_engine(env, m, LRUN_WEIGHT_MODE_ALL_DEVICE, 0) : NULL;
    CHECK("resident run of the plain model", e && disk_packed_run(env, e, ref));
    lrun_engine_free(e);
    lrun_model_free(m);
    if (ref && got) disk_packed_check(env, packed, ref, got, n);
    free(ref);
    free(got);
    remove(packed);
    remove(gguf);
}

#endif
