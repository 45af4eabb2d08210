/* test_stream_gpu.c — an AS_PLACED CUDA engine (runtime/cuda/engine_cuda_offload.c)
 * against the fully resident one.
 *
 * Random-weight models (untied head) in bf16 and q8_0. Per placement (every
 * layer streamed with k = 1, 2, 3; only the FFN streamed; embedding and head
 * off the device; everything off the device; pinned, host and mmap sources;
 * a multi-chunk prompt; a static cache) the logits of a prompt and of greedy
 * decode steps must equal the resident engine's to the bit, and the stats
 * must account for exactly the streamed bytes and units of each step. Host
 * compute runs the matmul on the CPU (its own arithmetic), so there the
 * logits are compared within a tolerance (with numerics EXACT they are
 * bit-identical: test_stream_exact_gpu.c); a prompt long enough to stream
 * the host-computed matrices to the device (engine_cuda_host_stream.c) gets
 * the resident run's bits again. An op's host products in one trip give
 * the bits of one trip each. A budget without room for the
 * slots fails at init with the structured OOM. Skipped without a GPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"
#include "stream_fixture.h"

enum { L = 4, D = 256, H = 8, HK = 4, F = 512, V = 1000, CTX = 512, NP = 20, ND = 8 };

static const char *gen_model(lrun_dtype wdt, char *path, size_t cap)
{
    static int n;
    snprintf(path, cap, "/tmp/lrun_test_stream_gpu_%d_%d.gguf", (int)getpid(), ++n);
    const lrun_model_gen_spec spec = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V,
                                      .n_ctx = CTX, .weight_dtype = wdt, .embd_dtype = wdt, .rope_freq_base = 10000.0,
                                      .rms_eps = 1e-5, .seed = 91 + (uint64_t)n};
    if (lrun_model_generate(path, &spec) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    return path;
}

// ---------------------------------------------------------------- placements

static int is_ffn(lrun_role r) { return r == LRUN_ROLE_FFN_GATE || r == LRUN_ROLE_FFN_UP || r == LRUN_ROLE_FFN_DOWN; }

static where layers_mmap(lrun_role r, int l) { return (void)l, is_matrix(r) ? MMAP : DEV; }
static where ffn_host(lrun_role r, int l) { return (void)l, is_ffn(r) ? HOST : DEV; }
/* every other layer half streamed: layers 0 and 2 keep attention, stream the FFN */
static where mixed(lrun_role r, int l) { return is_ffn(r) && l % 2 == 0 ? PIN : is_matrix(r) && l == 3 ? MMAP : DEV; }

/* Moves every tensor where place says; returns the bytes one step streams
 * (*host: bytes its host matmuls read), or -1 on failure. */
static double apply(lrun_model *m, placement_fn place, double *host)
{
    double streamed = 0;
    *host = 0;
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        const lrun_role r = lrun_tensor_role(t);
        const where w = place(r, lrun_tensor_layer(t));
        if (!place_tensor(m, t, w)) return -1;
        if (w.tier == LRUN_TIER_DEVICE || r == LRUN_ROLE_EMBEDDING) continue;
        if (!is_matrix(r) && r != LRUN_ROLE_LM_HEAD) continue; /* norms are uploaded once */
        if (w.host_compute) *host += (double)lrun_tensor_bytes(t);
        else streamed += (double)lrun_tensor_bytes(t);
    }
    return streamed;
}

// ---------------------------------------------------------------- runs

struct run {
    float *logits;      /* (NP + ND, V) prompt rows, then one per decode step */
    int32_t gen[ND];    /* greedy tokens */
    lrun_engine_stats decode; /* the ND decode steps */
};

static lrun_engine *engine(lrun_model *m, lrun_weight_mode mode, int k, int64_t n_batch, lrun_cache_kind kind)
{
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = 256, .n_batch_max = n_batch, .cache_kind = kind,
                               .weight_mode = mode, .prefetch_layers = k};
    lrun_engine *e = NULL;
    if (m && lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# engine: %s\n", lrun_last_error());
    return e;
}

/* The prompt (every row's logits), then ND greedy steps (the stats: theirs alone). */
static int run(lrun_engine *e, const int32_t *prompt, struct run *out)
{
    if (!prompt_then_greedy(e, NP, ND, V, prompt, out->logits, out->gen, 1)) return 0;
    lrun_engine_get_stats(e, &out->decode);
    return 1;
}

static double rel_diff(const float *a, const float *b, int64_t n)
{
    double d = 0, s = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        s = fmax(s, fabs((double)a[i]));
    }
    return d / s;
}

struct placement_case {
    const char *name;
    placement_fn place;
    int k;              /* prefetch_layers; 0 = default */
    int64_t n_batch;    /* < NP splits the prompt into chunks */
    int n_units;        /* streamed units per step (layers with streamed matrices + the head) */
    double tol;         /* 0: bit-identical; else max rel difference (host compute) */
};

static void test_placement(const char *path, const char *dtype, const int32_t *prompt, const struct run *ref,
                           const struct placement_case *c, lrun_cache_kind kind)
{
    char msg[256];
    const char *kname = kind == LRUN_CACHE_KIND_STATIC ? ", static cache" : "";
    lrun_model *m = fixture_load(path, "cuda:0", 0, 0, -1);
    double host = 0;
    const double streamed = m ? apply(m, c->place, &host) : -1;
    lrun_engine *e = streamed >= 0 ? engine(m, LRUN_WEIGHT_MODE_AS_PLACED, c->k, c->n_batch, kind) : NULL;
    struct run r = {.logits = calloc((size_t)(NP + ND) * V, sizeof(float))};
    snprintf(msg, sizeof msg, "%s %s%s: AS_PLACED engine made", dtype, c->name, kname);
    CHECK(msg, e != NULL);
    if (!e) goto done;

    lrun_engine_stats s0;
    lrun_engine_get_stats(e, &s0);
    const size_t dev_bytes = lrun_model_tier_bytes(m, LRUN_TIER_DEVICE);
    snprintf(msg, sizeof msg, "%s %s%s: weights stay where placed (%zu device bytes), slots %zu bytes", dtype,
             c->name, kname, dev_bytes, s0.slot_bytes);
    CHECK(msg, s0.weight_device_bytes == dev_bytes && (c->n_units == 0) == (s0.slot_bytes == 0));

    const int ran = run(e, prompt, &r);
    snprintf(msg, sizeof msg, "%s %s%s: prompt and %d greedy steps ran", dtype, c->name, kname, ND);
    CHECK(msg, ran);
    if (!ran) goto done;
    const size_t n = (size_t)(NP + ND) * V;
    if (c->tol == 0) {
        snprintf(msg, sizeof msg, "%s %s%s: logits and greedy tokens bit-identical to the resident run", dtype,
                 c->name, kname);
        CHECK(msg, memcmp(r.logits, ref->logits, n * sizeof(float)) == 0 &&
                       memcmp(r.gen, ref->gen, sizeof r.gen) == 0);
    } else {
        /* teacher-forced along the resident run's tokens would need a second
         * pass; the greedy tokens are compared, and printed when they part */
        const double d = rel_diff(ref->logits, r.logits, (int64_t)NP * V);
        int same = 0;
        while (same < ND && r.gen[same] == ref->gen[same]) same++;
        printf("# %s %s: prompt rel diff %.2e, greedy agrees on %d of %d\n", dtype, c->name, d, same, ND);
        snprintf(msg, sizeof msg, "%s %s%s: prompt logits within %.0e of the resident run (host matmuls)", dtype,
                 c->name, kname, c->tol);
        CHECK(msg, d <= c->tol);
    }
    const lrun_engine_stats *st = &r.decode;
    /* decode embeds one token a step: its row crosses when the table is off the device */
    double expect = streamed * ND;
    lrun_tensor *te = lrun_model_find_tensor(m, "token_embd.weight");
    if (lrun_tensor_tier(te) != LRUN_TIER_DEVICE)
        expect += (double)ND * (double)lrun_tensor_bytes(te) / (double)lrun_tensor_dim(te, 1);
    snprintf(msg, sizeof msg, "%s %s%s: %d decode steps streamed %.0f bytes (%llu), %lld hits + %lld misses = %d "
             "units each, copy %.2f ms, stall %.2f ms", dtype, c->name, kname, ND, expect,
             (unsigned long long)st->bytes_streamed, (long long)st->prefetch_hits, (long long)st->prefetch_misses,
             c->n_units, st->copy_seconds * 1e3, st->stall_seconds * 1e3);
    CHECK(msg, (double)st->bytes_streamed == expect && st->prefetch_hits + st->prefetch_misses == (int64_t)ND * c->n_units &&
                   st->steps == ND && (c->n_units == 0 || st->copy_seconds > 0) && st->stall_seconds >= 0);
    snprintf(msg, sizeof msg, "%s %s%s: host matmuls read %.0f bytes per step", dtype, c->name, kname, host);
    CHECK(msg, (double)st->host_compute_bytes == host * ND);
done:
    free(r.logits);
    lrun_engine_free(e);
    lrun_model_free(m);
}

/* Layers 1 and 2 computed on the host (from host or pinned memory), the rest resident. */
static where mid_host(lrun_role r, int l) { return is_matrix(r) && (l == 1 || l == 2) ? HOST_CPU : DEV; }
static where mid_host_pinned(lrun_role r, int l) { return is_matrix(r) && (l == 1 || l == 2) ? PIN_CPU : DEV; }

/* A prompt of NP >= LRUN_CUDA_HOST_STREAM_ROWS rows multiplies the
 * host-computed matrices on the device from staging buffers
 * (engine_cuda_host_stream.c): the prompt's logits are the resident run's
 * bits, each such matrix crosses once, and the decode steps (one row) still
 * compute them on the host. */
static void test_host_stream(const char *path, const char *dtype, const int32_t *prompt, const struct run *ref,
                             placement_fn place, const char *tier, double host_tol)
{
    char msg[256];
    setenv("LRUN_CUDA_HOST_STREAM_ROWS", "16", 1);
    lrun_model *m = fixture_load(path, "cuda:0", 0, 0, -1);
    double host = 0;
    const int placed = m && apply(m, place, &host) >= 0;
    lrun_engine *e = placed ? engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1, 64, LRUN_CACHE_KIND_DYNAMIC) : NULL;
    unsetenv("LRUN_CUDA_HOST_STREAM_ROWS");
    float *logits = calloc((size_t)(NP + ND) * V, sizeof(float));
    int32_t gen[ND];
    snprintf(msg, sizeof msg, "%s host stream (%s): engine made", dtype, tier);
    CHECK(msg, e != NULL);
    const int ran = e && prompt_then_greedy(e, NP, ND, V, prompt, logits, gen, 0);
    snprintf(msg, sizeof msg, "%s host stream (%s): prompt and %d greedy steps ran", dtype, tier, ND);
    CHECK(msg, ran);
    if (ran) {
        lrun_engine_stats st;
        lrun_engine_get_stats(e, &st);
        snprintf(msg, sizeof msg, "%s host stream (%s): prompt logits bit-identical to the resident run", dtype,
                 tier);
        CHECK(msg, memcmp(logits, ref->logits, (size_t)NP * V * sizeof(float)) == 0);
        int same = 0;
        while (same < ND && gen[same] == ref->gen[same]) same++;
        const double d = rel_diff(ref->logits + (size_t)NP * V, logits + (size_t)NP * V, (int64_t)ND * V);
        printf("# %s host stream (%s): decode rel diff %.2e, greedy agrees on %d of %d\n", dtype, tier, d, same, ND);
        snprintf(msg, sizeof msg, "%s host stream (%s): decode logits within %.0e (host products)", dtype, tier,
                 host_tol);
        CHECK(msg, same == ND ? d <= host_tol : 1);
        snprintf(msg, sizeof msg,
                 "%s host stream (%s): the prompt copied the %.0f host-computed bytes once (%llu in "
                 "%lld products), the %d decode steps read them on the host (%llu)",
                 dtype, tier, host, (unsigned long long)st.host_stream_bytes, (long long)st.host_stream_products, ND,
                 (unsigned long long)st.host_compute_bytes);
        CHECK(msg, (double)st.host_stream_bytes == host && st.host_stream_products == 2 * 7 &&
                       (double)st.host_compute_bytes == host * ND);
    }
    free(logits);
    lrun_engine_free(e);
    lrun_model_free(m);
}

/* In every block q and gate computed on the host, k streamed from pinned
 * memory, the rest resident: each decode product op mixes host, streamed
 * and resident weights. */
static where split_ops(lrun_role r, int l)
{
    (void)l;
    return r == LRUN_ROLE_ATTN_Q || r == LRUN_ROLE_FFN_GATE ? HOST_CPU : r == LRUN_ROLE_ATTN_K ? PIN : DEV;
}

/* One prompt (chunks of 8: decode-sized, on the host) and ND greedy steps
 * under split_ops, with LRUN_CUDA_HOST_GROUP=group; 0 when it did not run. */
static int run_split_ops(const char *path, const int32_t *prompt, const char *group, struct run *out, double *host)
{
    setenv("LRUN_CUDA_HOST_GROUP", group, 1);
    lrun_model *m = fixture_load(path, "cuda:0", 0, 0, -1);
    lrun_engine *e = m && apply(m, split_ops, host) >= 0
                         ? engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1, 8, LRUN_CACHE_KIND_DYNAMIC)
                         : NULL;
    unsetenv("LRUN_CUDA_HOST_GROUP");
    const int ok = e && run(e, prompt, out);
    lrun_engine_free(e);
    lrun_model_free(m);
    return ok;
}

/* An op's host products in one trip (engine_cuda_offload.h host_begin /
 * host_finish, the default), the device's enqueued beside them, against one
 * trip per weight (LRUN_CUDA_HOST_GROUP=0): the same CPU arithmetic on the
 * same inputs, so the same bits, prompt and decode; within host_tol of the
 * resident run; and the same host-computed bytes. */
static void test_host_group(const char *path, const char *dtype, const int32_t *prompt, const struct run *ref8,
                            double host_tol)
{
    char msg[256];
    const size_t n = (size_t)(NP + ND) * V;
    struct run g = {.logits = calloc(n, sizeof(float))}, one = {.logits = calloc(n, sizeof(float))};
    double host_g = 0, host_one = 0;
    const int ran =
        run_split_ops(path, prompt, "1", &g, &host_g) && run_split_ops(path, prompt, "0", &one, &host_one);
    snprintf(msg, sizeof msg, "%s host products grouped and one by one: both ran", dtype);
    CHECK(msg, ran);
    if (ran) {
        snprintf(msg, sizeof msg, "%s host products grouped: logits and greedy tokens bit-identical to one trip each",
                 dtype);
        CHECK(msg, memcmp(g.logits, one.logits, n * sizeof(float)) == 0 && memcmp(g.gen, one.gen, sizeof g.gen) == 0);
        const double d = rel_diff(ref8->logits, g.logits, (int64_t)NP * V);
        printf("# %s host products grouped: prompt rel diff %.2e to the resident run\n", dtype, d);
        snprintf(msg, sizeof msg, "%s host products grouped: prompt logits within %.0e of the resident run", dtype,
                 host_tol);
        CHECK(msg, d <= host_tol);
        snprintf(msg, sizeof msg,
                 "%s host products grouped: %d steps read %.0f host bytes each (%llu, one by one %llu)", dtype, ND,
                 host_g, (unsigned long long)g.decode.host_compute_bytes,
                 (unsigned long long)one.decode.host_compute_bytes);
        CHECK(msg, host_g > 0 && (double)g.decode.host_compute_bytes == host_g * ND &&
                       g.decode.host_compute_bytes == one.decode.host_compute_bytes);
    }
    free(g.logits);
    free(one.logits);
}

/* The resident reference: every weight moved to the device at init. */
static int reference(const char *path, const int32_t *prompt, int64_t n_batch, lrun_cache_kind kind, struct run *ref)
{
    lrun_model *m = fixture_load(path, "cuda:0", 0, 0, -1);
    lrun_engine *e = engine(m, LRUN_WEIGHT_MODE_ALL_DEVICE, 0, n_batch, kind);
    const int ok = e && run(e, prompt, ref);
    lrun_engine_free(e);
    lrun_model_free(m);
    return ok;
}

static void test_dtype(lrun_dtype dt, double host_tol)
{
    char path[128], msg[160];
    gen_model(dt, path, sizeof path);
    const char *name = lrun_dtype_name(dt);
    int32_t prompt[NP];
    uint32_t seed = 17u + (uint32_t)dt;
    for (int i = 0; i < NP; i++) {
        seed = seed * 1664525u + 1013904223u;
        prompt[i] = (int32_t)((seed >> 8) % V);
    }
    const struct placement_case cases[] = {
        {"every layer streamed from pinned, k=1", layers_pinned, 1, 64, L, 0},
        {"every layer streamed from pinned, k=2", layers_pinned, 2, 64, L, 0},
        {"every layer streamed from mmap, k=3", layers_mmap, 3, 64, L, 0},
        {"only the FFN streamed, from host memory", ffn_host, 0, 64, L, 0},
        {"embedding and head off the device (pinned)", embd_head_pinned, 1, 64, 1, 0},
        {"everything from mmap, prompt in chunks of 8", all_mmap, 2, 8, L + 1, 0},
        {"mixed: FFN of even layers pinned, layer 3 mmap", mixed, 1, 64, 3, 0},
        {"layers 1-2 and the head computed on the host", host_layers, 1, 64, L - 2, host_tol},
    };
    /* chunks of at most 8 tokens take the GEMV path, longer ones cuBLAS: each
     * placement is compared with the resident run of its own batch size */
    struct run ref = {.logits = calloc((size_t)(NP + ND) * V, sizeof(float))};
    struct run ref8 = {.logits = calloc((size_t)(NP + ND) * V, sizeof(float))};
    snprintf(msg, sizeof msg, "%s: resident references ran (batch 64 and 8)", name);
    CHECK(msg, reference(path, prompt, 64, LRUN_CACHE_KIND_DYNAMIC, &ref) &&
                   reference(path, prompt, 8, LRUN_CACHE_KIND_DYNAMIC, &ref8));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        test_placement(path, name, prompt, cases[i].n_batch == 8 ? &ref8 : &ref, &cases[i], LRUN_CACHE_KIND_DYNAMIC);
    test_host_stream(path, name, prompt, &ref, mid_host, "host memory, through the staging", host_tol);
    test_host_stream(path, name, prompt, &ref, mid_host_pinned, "pinned memory, by DMA", host_tol);
    test_host_group(path, name, prompt, &ref8, host_tol);
    free(ref8.logits);
    /* a static cache: the resident engine replays CUDA graphs, the streaming one runs eagerly */
    snprintf(msg, sizeof msg, "%s: resident reference ran (static cache)", name);
    CHECK(msg, reference(path, prompt, 64, LRUN_CACHE_KIND_STATIC, &ref));
    test_placement(path, name, prompt, &ref, &cases[0], LRUN_CACHE_KIND_STATIC);
    free(ref.logits);
    unlink(path);
}

/* Slots that do not fit the budget: the structured OOM at init, nothing moved. */
static void test_oom(void)
{
    char path[128];
    gen_model(LRUN_DTYPE_BF16, path, sizeof path);
    lrun_model *m = fixture_load(path, "cuda:0", (size_t)1 << 20, 0, -1);
    double host;
    lrun_engine *e = NULL;
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = 64, .n_batch_max = 8,
                                .weight_mode = LRUN_WEIGHT_MODE_AS_PLACED, .prefetch_layers = 2};
    const lrun_status st = m && apply(m, all_mmap, &host) >= 0 ? lrun_engine_init(&e, m, &o) : LRUN_E_INTERNAL;
    const char *err = lrun_last_error();
    printf("# %s\n", err);
    CHECK("a 1 MiB budget: AS_PLACED init is LRUN_E_OOM naming the streaming slots",
          st == LRUN_E_OOM && e == NULL && strstr(err, "streaming slots") != NULL &&
              lrun_last_oom_requested() > lrun_last_oom_free());
    CHECK("nothing was left on the device", m && lrun_model_tier_bytes(m, LRUN_TIER_DEVICE) == 0);
    lrun_engine_free(e);
    lrun_model_free(m);
    unlink(path);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - streaming engine tests # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    /* host matmuls run the CPU engine's arithmetic, not the GPU's (measured
     * on the H100: bf16 3.5e-3, q8_0 9e-3, whose CPU path quantizes the
     * activations to 8 bits as llama.cpp does); greedy tokens agreed */
    test_dtype(LRUN_DTYPE_BF16, 1e-2);
    test_dtype(LRUN_DTYPE_Q8_0, 5e-2);
    test_oom();
    return CHECK_DONE();
}
