/* test_stream_exact_gpu.c — the CUDA engine's exact path (numerics EXACT,
 * runtime/cuda/engine_cuda_exact.c) with weights placed off the device
 * (AS_PLACED, runtime/cuda/engine_cuda_offload.c), against the resident exact
 * run and the CPU engine, to the bit.
 *
 * Streamed weights are the same bytes read from a slot, and a host-computed
 * matrix runs the CPU engine's own matmul on the f32 input the GPU would
 * have quantized, so, unlike the float path (test_stream_gpu.c), host
 * compute is bit-identical here too. Random-weight Q8_0 and Q4_1 models
 * (untied head in the same dtype); placements: every layer streamed with
 * k = 1, layers 1-2 and the head computed on the host, some matrices of every
 * layer on the host beside device ones (one shared quantization for the
 * rest), embedding and head off the device (streamed; and host embedding
 * with a host-computed head), everything from mmap. Each runs a 20-token
 * prompt (every row's logits) and 8 greedy steps with batch 64 (one chunk)
 * and batch 8 (prompt in chunks, the decode orders), DYNAMIC cache, and one
 * placement on a STATIC cache (the resident run replays graphs). Skipped
 * (TAP SKIP) where no GPU is visible. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"
#include "stream_fixture.h"

enum { L = 4, D = 256, H = 8, HK = 4, F = 512, V = 1000, CTX = 256, NP = 20, ND = 8 };

// ---------------------------------------------------------------- placements

/* Q and up on the host, K, V and gate on the device (one launch, one
 * quantization for the two), Wo host, down streamed */
static where host_beside_device(lrun_role r, int l)
{
    (void)l;
    if (r == LRUN_ROLE_ATTN_Q || r == LRUN_ROLE_FFN_UP || r == LRUN_ROLE_ATTN_OUTPUT) return HOST_CPU;
    return r == LRUN_ROLE_FFN_DOWN ? HOST : DEV;
}
static where embd_host_head_cpu(lrun_role r, int l)
{
    return (void)l, r == LRUN_ROLE_EMBEDDING ? HOST : r == LRUN_ROLE_LM_HEAD ? HOST_CPU : DEV;
}

/* Moves every tensor where place says; 0 on failure. */
static int apply(lrun_model *m, placement_fn place)
{
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        if (!place_tensor(m, t, place(lrun_tensor_role(t), lrun_tensor_layer(t)))) return 0;
    }
    return 1;
}

// ---------------------------------------------------------------- runs

struct run {
    float *logits;            /* (NP + ND, V) prompt rows, then one per decode step */
    int32_t gen[ND];          /* greedy tokens */
    lrun_engine_stats stats;  /* the whole run */
};

static lrun_engine *engine(lrun_model *m, lrun_weight_mode mode, int k, int64_t n_batch, lrun_cache_kind kind)
{
    const lrun_engine_opts o = {.numerics = LRUN_NUMERICS_EXACT, .n_seq_max = 1, .n_ctx_max = CTX,
                                .n_batch_max = n_batch, .cache_kind = kind, .n_threads = 2, .weight_mode = mode,
                                .prefetch_layers = k};
    lrun_engine *e = NULL;
    if (m && lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# engine: %s\n", lrun_last_error());
    return e;
}

/* The prompt (every row's logits), then ND greedy steps. */
static int run(lrun_engine *e, const int32_t *prompt, struct run *out)
{
    if (!prompt_then_greedy(e, NP, ND, V, prompt, out->logits, out->gen, 0)) return 0;
    lrun_engine_get_stats(e, &out->stats);
    return 1;
}

/* 1 when both runs have the same logit bits and tokens; else prints the first difference. */
static int same_run(const char *what, const struct run *a, const struct run *b)
{
    const int64_t n = (int64_t)(NP + ND) * V;
    if (memcmp(a->logits, b->logits, (size_t)n * sizeof(float)) == 0 && memcmp(a->gen, b->gen, sizeof a->gen) == 0)
        return 1;
    int64_t i = 0;
    while (i < n && memcmp(&a->logits[i], &b->logits[i], sizeof(float)) == 0) i++;
    if (i < n)
        printf("# %s: first difference at row %lld, logit %lld: %a vs %a\n", what, (long long)(i / V),
               (long long)(i % V), (double)a->logits[i], (double)b->logits[i]);
    else
        printf("# %s: same logits, different tokens\n", what);
    return 0;
}

/* The CPU engine's run, or the resident exact CUDA run (every weight moved to the device at init). */
static int reference(const char *path, const char *device, const int32_t *prompt, int64_t n_batch,
                     lrun_cache_kind kind, struct run *out)
{
    lrun_model *m = fixture_load(path, device, 0, 2, -1);
    lrun_engine *e = engine(m, LRUN_WEIGHT_MODE_ALL_DEVICE, 0, n_batch, kind);
    const int ok = e && run(e, prompt, out);
    lrun_engine_free(e);
    lrun_model_free(m);
    return ok;
}

struct placement_case {
    const char *name;
    placement_fn place;
    int k;            /* prefetch_layers; 0 = default */
    int streams;      /* the placement streams bytes */
    int host;         /* a matmul runs on the host */
};

static void test_placement(const char *path, const char *dtype, const int32_t *prompt, int64_t n_batch,
                           lrun_cache_kind kind, const struct run *cpu, const struct run *resident,
                           const struct placement_case *c)
{
    char label[200], msg[320];
    snprintf(label, sizeof label, "%s, %s, batch %lld%s", dtype, c->name, (long long)n_batch,
             kind == LRUN_CACHE_KIND_STATIC ? ", static cache" : "");
    lrun_model *m = fixture_load(path, "cuda:0", 0, 2, -1);
    lrun_engine *e = m && apply(m, c->place) ? engine(m, LRUN_WEIGHT_MODE_AS_PLACED, c->k, n_batch, kind) : NULL;
    lrun_engine_stats cs = {0};
    if (e) lrun_engine_get_stats(e, &cs);
    snprintf(msg, sizeof msg, "%s: AS_PLACED exact engine made, on the exact path", label);
    CHECK(msg, e && cs.exact == 1);
    struct run r = {.logits = calloc((size_t)(NP + ND) * V, sizeof(float))};
    const int ran = e && cs.exact && run(e, prompt, &r);
    snprintf(msg, sizeof msg, "%s: prompt and %d greedy steps ran (streamed %llu bytes, host matmuls read %llu)",
             label, ND, (unsigned long long)r.stats.bytes_streamed, (unsigned long long)r.stats.host_compute_bytes);
    CHECK(msg, ran && (r.stats.bytes_streamed > 0) == c->streams && (r.stats.host_compute_bytes > 0) == c->host);
    if (ran) {
        snprintf(msg, sizeof msg, "%s: logits and greedy tokens bit-identical to the resident exact run", label);
        CHECK(msg, same_run(msg, resident, &r));
        snprintf(msg, sizeof msg, "%s: logits and greedy tokens bit-identical to the CPU engine", label);
        CHECK(msg, same_run(msg, cpu, &r));
    }
    free(r.logits);
    lrun_engine_free(e);
    lrun_model_free(m);
}

static void test_dtype(lrun_dtype dt)
{
    char path[128], msg[200];
    snprintf(path, sizeof path, "/tmp/lrun_test_stream_exact_gpu_%d_%d.gguf", (int)getpid(), (int)dt);
    const lrun_model_gen_spec spec = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V,
                                      .n_ctx = CTX, .weight_dtype = dt, .embd_dtype = dt, .rope_freq_base = 10000.0,
                                      .rms_eps = 1e-5, .seed = 700 + (uint64_t)dt};
    const int made = lrun_model_generate(path, &spec) == LRUN_OK;
    if (!made) printf("# generate: %s\n", lrun_last_error());
    const char *name = lrun_dtype_name(dt);
    snprintf(msg, sizeof msg, "%s: a random-weight model (untied head) is generated", name);
    CHECK(msg, made);
    if (!made) return;
    int32_t prompt[NP];
    uint32_t seed = 29u + (uint32_t)dt;
    for (int i = 0; i < NP; i++) {
        seed = seed * 1664525u + 1013904223u;
        prompt[i] = (int32_t)((seed >> 8) % V);
    }
    const struct placement_case cases[] = {
        {"every layer streamed from pinned, k=1", layers_pinned, 1, 1, 0},
        {"layers 1-2 and the head computed on the host, the rest streamed", host_layers, 1, 1, 1},
        {"Q, Wo and up on the host beside K, V, gate on the device, down streamed", host_beside_device, 2, 1, 1},
        {"embedding and head off the device (pinned, streamed)", embd_head_pinned, 1, 1, 0},
        {"embedding in host memory, head computed on the host", embd_host_head_cpu, 0, 1, 1},
        {"everything from mmap", all_mmap, 2, 1, 0},
    };
    static const int64_t batches[] = {64, 8};
    struct run cpu = {.logits = calloc((size_t)(NP + ND) * V, sizeof(float))};
    struct run res = {.logits = calloc((size_t)(NP + ND) * V, sizeof(float))};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        const int64_t nb = batches[b];
        const int refs = reference(path, "cpu", prompt, nb, LRUN_CACHE_KIND_DYNAMIC, &cpu) &&
                         reference(path, "cuda:0", prompt, nb, LRUN_CACHE_KIND_DYNAMIC, &res);
        snprintf(msg, sizeof msg, "%s, batch %lld: CPU and resident exact CUDA references ran, bit-identical", name,
                 (long long)nb);
        CHECK(msg, refs && same_run(msg, &cpu, &res));
        if (!refs) continue;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            test_placement(path, name, prompt, nb, LRUN_CACHE_KIND_DYNAMIC, &cpu, &res, &cases[i]);
    }
    /* a static cache: the resident engine replays CUDA graphs, the placed one runs eagerly */
    const int refs = reference(path, "cpu", prompt, 64, LRUN_CACHE_KIND_DYNAMIC, &cpu) &&
                     reference(path, "cuda:0", prompt, 64, LRUN_CACHE_KIND_STATIC, &res);
    snprintf(msg, sizeof msg, "%s: resident exact reference ran on a static cache", name);
    CHECK(msg, refs);
    if (refs) test_placement(path, name, prompt, 64, LRUN_CACHE_KIND_STATIC, &cpu, &res, &cases[1]);
    free(cpu.logits);
    free(res.logits);
    unlink(path);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - exact path with placed weights # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    test_dtype(LRUN_DTYPE_Q8_0);
    test_dtype(LRUN_DTYPE_Q4_1);
    return CHECK_DONE();
}
