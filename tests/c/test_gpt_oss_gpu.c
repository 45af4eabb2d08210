/* test_gpt_oss_gpu.c — gpt-oss (runtime/arch/gpt_oss.c) on the CUDA engine
 * against the CPU engine: a tiny random gpt-oss like tests/arch_models.lua's
 * gpt_oss_f32 and gpt_oss_q8_0 (2 blocks, 4 query heads of 64, 2 KV heads,
 * biased q/k/v/o, attention sinks, a window of 8 on block 0, YaRN 32, 8
 * MXFP4 experts of width 64, top 4, with biases and swiglu_oai).
 *
 * Per model: the prompt's logits (every row: the cuBLAS path, host routing)
 * and 12 teacher-forced decode steps (the GEMV path, device routing) within
 * the tolerance, 8 greedy tokens equal to the CPU's; the same with the
 * experts host-computed, the experts streamed, every matrix streamed; the
 * streamed runs bit-identical to the resident one; a STATIC cache's decode
 * steps replayed from CUDA graphs as its eager ones (within 1e-5, as
 * test_engine_gpu's test_graphs).
 * Each failure prints the worst row and column and both values.
 *
 * The CPU multiplies MXFP4 experts with 8-bit activations (llama.cpp's
 * numerics), the GPU in f32: hence the quantized tolerance for both. Every
 * check is skipped where no GPU is visible. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"
#include "stream_fixture.h"

enum { V = 512, NP = 40, ND = 12, NG = 8 };
static const double TOL = 5e-2; /* max |Δlogit| / max |logit|, as test_engine_gpu's q8_0 */

static const char *gen(char *path, size_t cap, lrun_dtype dt, int n)
{
    snprintf(path, cap, "/tmp/lrun_test_gpt_oss_gpu_%d_%d.gguf", (int)getpid(), n);
    const lrun_model_gen_spec s = {.n_layer = 2, .n_embd = 128, .n_head = 4, .n_head_kv = 2, .n_ff = 64, .n_vocab = V,
                                   .n_ctx = 4096, .weight_dtype = dt, .embd_dtype = dt, .tied_embeddings = 0,
                                   .rope_freq_base = 150000, .rms_eps = 1e-5, .seed = 2030, .n_threads = 2,
                                   .arch = "gpt-oss", .head_dim = 64, .sliding_window = 8, .n_expert = 8,
                                   .n_expert_used = 4, .expert_dtype = LRUN_DTYPE_MXFP4, .rope_yarn_factor = 32};
    if (lrun_model_generate(path, &s) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    return path;
}

static lrun_engine *engine(lrun_model *m, lrun_weight_mode mode, lrun_cache_kind kind)
{
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = 256, .n_batch_max = 64, .cache_kind = kind,
                               .weight_mode = mode, .prefetch_layers = 1};
    lrun_engine *e = NULL;
    if (m && lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# engine: %s\n", lrun_last_error());
    return e;
}

/* One run: the prompt's rows, then ND teacher-forced steps, then NG greedy tokens after the prompt. */
struct run {
    float *logits; /* (NP + ND, V) */
    int32_t greedy[NG];
    int ok;
};

static int step(lrun_engine *e, const int32_t *tok, int64_t n, int all, float *out)
{
    int32_t seq[NP];
    int8_t want[NP];
    for (int64_t i = 0; i < n; i++) seq[i] = 0, want[i] = all || i == n - 1;
    int64_t n_out = 0;
    const lrun_status st = lrun_engine_step(e, n, tok, seq, want, out, n, &n_out);
    if (st != LRUN_OK) printf("# step of %lld tokens: %s\n", (long long)n, lrun_last_error());
    return st == LRUN_OK && n_out == (all ? n : 1);
}

static struct run run(lrun_engine *e, const int32_t *tok)
{
    struct run r = {calloc((size_t)(NP + ND) * V, sizeof(float)), {0}, e != NULL};
    r.ok = r.ok && step(e, tok, NP, 1, r.logits);
    for (int i = 0; r.ok && i < ND; i++) r.ok = step(e, tok + NP + i, 1, 1, r.logits + (int64_t)(NP + i) * V);
    /* greedy from the prompt again: a fresh sequence */
    float *l = malloc(V * sizeof *l);
    r.ok = r.ok && lrun_engine_seq_truncate(e, 0, 0) == LRUN_OK && step(e, tok, NP, 0, l);
    for (int i = 0; r.ok && i < NG; i++) {
        r.greedy[i] = (int32_t)lrun_logits_argmax(l, V);
        if (i + 1 < NG) r.ok = step(e, &r.greedy[i], 1, 0, l);
    }
    free(l);
    return r;
}

/* max |a-b| / max |a| over rows [r0, r1), printing the worst element. */
static double compare(const char *what, const float *a, const float *b, int r0, int r1)
{
    double d = 0, s = 1e-30;
    int64_t at = (int64_t)r0 * V;
    for (int64_t i = (int64_t)r0 * V; i < (int64_t)r1 * V; i++) {
        const double x = fabs((double)a[i] - (double)b[i]);
        if (x > d) d = x, at = i;
        s = fabs(a[i]) > s ? fabs(a[i]) : s;
    }
    printf("# %s: rel %.3g; worst at row %lld token %lld: reference %.6g, cuda %.6g\n", what, d / s, (long long)(at / V),
           (long long)(at % V), (double)a[at], (double)b[at]);
    return d / s;
}

static int same_greedy(const char *what, const int32_t *a, const int32_t *b)
{
    int same = memcmp(a, b, NG * sizeof *a) == 0;
    if (!same) {
        printf("# %s greedy: cpu", what);
        for (int i = 0; i < NG; i++) printf(" %d", a[i]);
        printf("; cuda");
        for (int i = 0; i < NG; i++) printf(" %d", b[i]);
        printf("\n");
    }
    return same;
}

static int is_expert(lrun_role r)
{
    return r == LRUN_ROLE_FFN_GATE_EXPS || r == LRUN_ROLE_FFN_UP_EXPS || r == LRUN_ROLE_FFN_DOWN_EXPS;
}
static where experts_host_cpu(lrun_role r, int l) { return (void)l, is_expert(r) ? HOST_CPU : DEV; }
static where experts_pinned(lrun_role r, int l) { return (void)l, is_expert(r) ? PIN : DEV; }
static where all_pinned(lrun_role r, int l) { return (void)l, is_matrix(r) || is_expert(r) ? PIN : DEV; }

/* Moves every tensor of m where place says; 0 on failure (printed). */
static int apply_placement(lrun_model *m, placement_fn place)
{
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        if (!place_tensor(m, t, place(lrun_tensor_role(t), lrun_tensor_layer(t)))) return 0;
    }
    return 1;
}

static void test_model(const char *name, const char *path)
{
    char msg[256];
    int32_t tok[NP + ND];
    uint32_t seed = 99;
    for (int i = 0; i < NP + ND; i++) seed = seed * 1664525u + 1013904223u, tok[i] = (int32_t)((seed >> 8) % V);

    lrun_model *mc = fixture_load(path, "cpu", 0, 2, -1), *mg = fixture_load(path, "cuda:0", 0, 0, -1);
    lrun_engine *ec = engine(mc, LRUN_WEIGHT_MODE_ALL_DEVICE, LRUN_CACHE_KIND_DYNAMIC);
    lrun_engine *eg = engine(mg, LRUN_WEIGHT_MODE_ALL_DEVICE, LRUN_CACHE_KIND_DYNAMIC);
    snprintf(msg, sizeof msg, "%s: the CUDA engine takes gpt-oss (sinks, YaRN, biased MXFP4 experts)", name);
    CHECK(msg, eg != NULL);
    struct run cpu = run(ec, tok), res = run(eg, tok);
    lrun_engine_free(eg);
    snprintf(msg, sizeof msg, "%s resident prefill", name);
    double d = res.ok ? compare(msg, cpu.logits, res.logits, 0, NP) : 1e9;
    snprintf(msg, sizeof msg, "%s: resident prefill logits of all %d rows within %.0e of the CPU's", name, NP, TOL);
    CHECK(msg, cpu.ok && res.ok && d <= TOL);
    snprintf(msg, sizeof msg, "%s resident decode", name);
    d = res.ok ? compare(msg, cpu.logits, res.logits, NP, NP + ND) : 1e9;
    snprintf(msg, sizeof msg, "%s: resident decode logits (%d steps) within %.0e of the CPU's", name, ND, TOL);
    CHECK(msg, cpu.ok && res.ok && d <= TOL);
    snprintf(msg, sizeof msg, "%s: resident greedy tokens (%d) equal the CPU's", name, NG);
    CHECK(msg, res.ok && same_greedy(name, cpu.greedy, res.greedy));

    /* a STATIC cache: decode steps captured and replayed as CUDA graphs (experts routed on the
     * device), against the same cache run eagerly (LRUN_CUDA_GRAPHS=0) and against the CPU */
    setenv("LRUN_CUDA_GRAPHS", "0", 1);
    eg = engine(mg, LRUN_WEIGHT_MODE_ALL_DEVICE, LRUN_CACHE_KIND_STATIC);
    unsetenv("LRUN_CUDA_GRAPHS");
    struct run eager = run(eg, tok);
    lrun_engine_free(eg);
    eg = engine(mg, LRUN_WEIGHT_MODE_ALL_DEVICE, LRUN_CACHE_KIND_STATIC);
    struct run st = run(eg, tok);
    lrun_engine_stats gs = {0};
    if (eg) lrun_engine_get_stats(eg, &gs);
    lrun_engine_free(eg);
    snprintf(msg, sizeof msg, "%s graphs vs eager", name);
    d = st.ok && eager.ok ? compare(msg, eager.logits, st.logits, 0, NP + ND) : 1e9;
    printf("# %s: %lld graph captures, %lld chunks replayed\n", name, (long long)gs.graph_captures,
           (long long)gs.graph_launches);
    snprintf(msg, sizeof msg, "%s: a static cache's decode steps replayed from CUDA graphs (%lld) match eager ones "
             "(rel %.2g < 1e-5), the same greedy tokens", name, (long long)gs.graph_launches, d);
    CHECK(msg, gs.graph_launches > 0 && d < 1e-5 && memcmp(st.greedy, eager.greedy, sizeof st.greedy) == 0);
    snprintf(msg, sizeof msg, "%s static", name);
    d = st.ok ? compare(msg, cpu.logits, st.logits, 0, NP + ND) : 1e9;
    snprintf(msg, sizeof msg, "%s: a static cache's logits within %.0e of the CPU's", name, TOL);
    CHECK(msg, d <= TOL);
    free(st.logits);
    free(eager.logits);
    lrun_model_free(mg);

    static const struct {
        const char *name;
        placement_fn place;
        int bitwise; /* the resident run's bits: the same kernels read the slots */
    } placements[] = {
        {"experts host-computed", experts_host_cpu, 0},
        {"experts streamed", experts_pinned, 1},
        {"every matrix streamed", all_pinned, 1},
    };
    for (size_t p = 0; p < sizeof placements / sizeof placements[0]; p++) {
        mg = fixture_load(path, "cuda:0", 0, 0, -1);
        const int placed = mg && apply_placement(mg, placements[p].place);
        eg = placed ? engine(mg, LRUN_WEIGHT_MODE_AS_PLACED, LRUN_CACHE_KIND_DYNAMIC) : NULL;
        snprintf(msg, sizeof msg, "%s, %s: AS_PLACED engine made", name, placements[p].name);
        CHECK(msg, eg != NULL);
        struct run r = run(eg, tok);
        snprintf(msg, sizeof msg, "%s %s", name, placements[p].name);
        d = r.ok ? compare(msg, cpu.logits, r.logits, 0, NP + ND) : 1e9;
        snprintf(msg, sizeof msg, "%s, %s: logits within %.0e of the CPU's, the same greedy tokens", name,
                 placements[p].name, TOL);
        CHECK(msg, r.ok && d <= TOL && same_greedy(name, cpu.greedy, r.greedy));
        if (placements[p].bitwise) {
            snprintf(msg, sizeof msg, "%s, %s: the resident run's logits bit for bit", name, placements[p].name);
            CHECK(msg, r.ok && res.ok && memcmp(r.logits, res.logits, (size_t)(NP + ND) * V * sizeof(float)) == 0);
        }
        free(r.logits);
        lrun_engine_free(eg);
        lrun_model_free(mg);
    }
    free(cpu.logits);
    free(res.logits);
    lrun_engine_free(ec);
    lrun_model_free(mc);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - gpt-oss on CUDA # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    char path[128];
    test_model("gpt-oss f32 attention", gen(path, sizeof path, LRUN_DTYPE_F32, 1));
    unlink(path);
    test_model("gpt-oss q8_0 attention", gen(path, sizeof path, LRUN_DTYPE_Q8_0, 2));
    unlink(path);
    return CHECK_DONE();
}
