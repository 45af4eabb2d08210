/* test_engine.c — the CPU forward pass on tiny random llama models
 * (lrun_model_generate), against a straightforward reference forward written
 * here (weights read back as f32, double accumulation), and against itself:
 * prefill vs token by token, batched vs alone, cache copies and truncation,
 * OOM of the KV cache under a device budget, static vs dynamic caches, f16
 * vs f32 caches, thread counts. With LRUN_MODEL set, the real model against
 * llama.cpp itself (tests/golden/smollm2_greedy.json): the same first-step
 * log-probs and the same greedy continuations, token for token. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"
#include "quant/quant.h"

enum { L = 2, D = 64, H = 4, HK = 2, HD = D / H, F = 96, V = 300, CTX = 128 };

static char paths[4][128];

// ---------------------------------------------------------------- models

static const char *gen_model(int slot, lrun_dtype wdt, lrun_dtype edt, int tied)
{
    snprintf(paths[slot], sizeof paths[slot], "/tmp/lrun_test_engine_%d_%d.gguf", (int)getpid(), slot);
    const lrun_model_gen_spec spec = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V,
                                      .n_ctx = CTX, .weight_dtype = wdt, .embd_dtype = edt, .tied_embeddings = tied,
                                      .rope_freq_base = 10000.0, .rms_eps = 1e-5, .seed = 1234 + (uint64_t)slot,
                                      .n_threads = 1};
    lrun_status st = lrun_model_generate(paths[slot], &spec);
    if (st != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    return paths[slot];
}

static lrun_engine *engine_kv(lrun_model *m, int64_t n_seq, int64_t n_batch, lrun_cache_kind kind, int threads,
                              lrun_kv_dtype kv)
{
    const lrun_engine_opts o = {.n_seq_max = n_seq, .n_ctx_max = 64, .n_batch_max = n_batch, .cache_kind = kind,
                               .n_threads = threads, .kv_dtype = kv};
    lrun_engine *e = NULL;
    if (m && lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# engine: %s\n", lrun_last_error());
    return e;
}

static lrun_engine *engine(lrun_model *m, int64_t n_seq, int64_t n_batch, lrun_cache_kind kind)
{
    return engine_kv(m, n_seq, n_batch, kind, 0, LRUN_KV_DTYPE_DEFAULT);
}

// ---------------------------------------------------------------- reference forward

/* Weights as f32 (dequantized), laid out (out, in) like the file's rows. */
typedef struct ref_model {
    float *emb, *out, *out_norm;
    float *attn_norm[L], *wq[L], *wk[L], *wv[L], *wo[L], *ffn_norm[L], *wg[L], *wu[L], *wd[L];
    double eps, base;
    int half; /* RoPE style: pairs (i, i+HD/2) instead of (2i, 2i+1) */
} ref_model;

static float *read_all(lrun_model *m, const char *name)
{
    lrun_tensor *t = lrun_model_find_tensor(m, name);
    if (!t) return NULL;
    float *buf = malloc((size_t)lrun_tensor_nelements(t) * sizeof *buf);
    if (lrun_tensor_read_f32(t, 0, lrun_tensor_nelements(t), buf) != LRUN_OK) printf("# read %s failed\n", name);
    return buf;
}

static void ref_init(ref_model *r, lrun_model *m)
{
    char name[64];
    const lrun_model_info *in = lrun_model_get_info(m);
    r->emb = read_all(m, "token_embd.weight");
    r->out = in->tied_embeddings ? r->emb : read_all(m, "output.weight");
    r->out_norm = read_all(m, "output_norm.weight");
    r->eps = in->rms_eps;
    r->base = in->rope_freq_base;
    r->half = in->rope_style == LRUN_ROPE_STYLE_HALF;
#define W(field, suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), r->field[l] = read_all(m, name))
    for (int l = 0; l < L; l++) {
        W(attn_norm, "attn_norm.weight"), W(wq, "attn_q.weight"), W(wk, "attn_k.weight"), W(wv, "attn_v.weight");
        W(wo, "attn_output.weight"), W(ffn_norm, "ffn_norm.weight"), W(wg, "ffn_gate.weight");
        W(wu, "ffn_up.weight"), W(wd, "ffn_down.weight");
    }
#undef W
}

static void ref_free(ref_model *r)
{
    if (r->out != r->emb) free(r->out);
    free(r->emb), free(r->out_norm);
    for (int l = 0; l < L; l++)
        free(r->attn_norm[l]), free(r->wq[l]), free(r->wk[l]), free(r->wv[l]), free(r->wo[l]), free(r->ffn_norm[l]),
            free(r->wg[l]), free(r->wu[l]), free(r->wd[l]);
}

/* y (n_out) = W (n_out, n_in) x */
static void ref_matvec(double *y, const float *w, const double *x, int n_out, int n_in)
{
    for (int o = 0; o < n_out; o++) {
        double s = 0;
        for (int i = 0; i < n_in; i++) s += (double)w[o * n_in + i] * x[i];
        y[o] = s;
    }
}

static void ref_norm(double *y, const double *x, const float *w, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const double s = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * s * w[i];
}

static void ref_rope(double *x, int n_head, int pos, double base, int half)
{
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < HD / 2; i++) {
            const double th = pos * pow(base, -2.0 * i / HD);
            const int a = half ? i : 2 * i, b = half ? i + HD / 2 : 2 * i + 1;
            const double xa = x[h * HD + a], xb = x[h * HD + b];
            x[h * HD + a] = xa * cos(th) - xb * sin(th);
            x[h * HD + b] = xa * sin(th) + xb * cos(th);
        }
}

/* The default KV cache holds f16, so the reference rounds k and v the same
 * way, and q and p, which meet them in f16 dots (as in llama.cpp). */
static double f16_round(double x) { return lrun_f16_to_f32(lrun_f32_to_f16((float)x)); }

/* logits (n, V) of every position of one sequence. */
static void ref_forward(const ref_model *r, const int32_t *tok, int n, float *logits)
{
    double(*x)[D] = malloc(sizeof(double[D]) * n), (*kc)[L][HK * HD] = malloc(sizeof(double[L][HK * HD]) * n),
    (*vc)[L][HK * HD] = malloc(sizeof(double[L][HK * HD]) * n);
    double xn[D], q[H * HD], att[H * HD], tmp[D], g[F], u[F], s[CTX];
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < D; i++) x[t][i] = r->emb[tok[t] * D + i];
        for (int l = 0; l < L; l++) {
            ref_norm(xn, x[t], r->attn_norm[l], D, r->eps);
            ref_matvec(q, r->wq[l], xn, H * HD, D);
            ref_matvec(kc[t][l], r->wk[l], xn, HK * HD, D);
            ref_matvec(vc[t][l], r->wv[l], xn, HK * HD, D);
            ref_rope(q, H, t, r->base, r->half);
            ref_rope(kc[t][l], HK, t, r->base, r->half);
            for (int i = 0; i < HK * HD; i++) kc[t][l][i] = f16_round(kc[t][l][i]), vc[t][l][i] = f16_round(vc[t][l][i]);
            for (int i = 0; i < H * HD; i++) q[i] = f16_round(q[i]); /* so is q for its dots with the keys */
            for (int h = 0; h < H; h++) {
                const int hk = h / (H / HK);
                double mx = -INFINITY, sum = 0;
                for (int p = 0; p <= t; p++) {
                    double d = 0;
                    for (int i = 0; i < HD; i++) d += q[h * HD + i] * kc[p][l][hk * HD + i];
                    s[p] = d / sqrt((double)HD);
                    mx = fmax(mx, s[p]);
                }
                for (int p = 0; p <= t; p++) sum += (s[p] = exp(s[p] - mx));
                for (int p = 0; p <= t; p++) s[p] = f16_round(s[p] / sum); /* and p for its dots with the values */
                for (int i = 0; i < HD; i++) {
                    double a = 0;
                    for (int p = 0; p <= t; p++) a += s[p] * vc[p][l][hk * HD + i];
                    att[h * HD + i] = a;
                }
            }
            ref_matvec(tmp, r->wo[l], att, D, H * HD);
            for (int i = 0; i < D; i++) x[t][i] += tmp[i];
            ref_norm(xn, x[t], r->ffn_norm[l], D, r->eps);
            ref_matvec(g, r->wg[l], xn, F, D);
            ref_matvec(u, r->wu[l], xn, F, D);
            for (int i = 0; i < F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_matvec(tmp, r->wd[l], g, D, F);
            for (int i = 0; i < D; i++) x[t][i] += tmp[i];
        }
        double lg[V];
        ref_norm(xn, x[t], r->out_norm, D, r->eps);
        ref_matvec(lg, r->out, xn, V, D);
        for (int i = 0; i < V; i++) logits[t * V + i] = (float)lg[i];
    }
    free(x), free(kc), free(vc);
}

// ---------------------------------------------------------------- helpers

static double max_abs(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i])) + (isnan(a[i]) || isnan(b[i]) ? INFINITY : 0);
    return m;
}

static double max_mag(const float *a, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

static void make_tokens(int32_t *tok, int n, int salt)
{
    for (int i = 0; i < n; i++) tok[i] = (int32_t)((i * 37 + salt * 101 + 3) % V);
}

/* Prefill of n tokens of one sequence in one step, every row wanted. */
static lrun_status prefill_all(lrun_engine *e, int32_t seq_id, const int32_t *tok, int n, float *logits)
{
    int32_t seq[CTX];
    int8_t want[CTX];
    for (int i = 0; i < n; i++) seq[i] = seq_id, want[i] = 1;
    int64_t n_out = -1;
    lrun_status st = lrun_engine_step(e, n, tok, seq, want, logits, n, &n_out);
    return st == LRUN_OK && n_out != n ? LRUN_E_INTERNAL : st;
}

// ---------------------------------------------------------------- (a) against the reference

static void test_reference(const char *path, const char *what, int rope_style, double tol)
{
    enum { N = 12 };
    lrun_model *m = fixture_load(path, "cpu", 0, 2, rope_style);
    lrun_engine *e = engine(m, 1, 512, LRUN_CACHE_KIND_DYNAMIC);
    if (!e) {
        CHECK(what, 0);
        lrun_model_free(m);
        return;
    }
    ref_model r;
    ref_init(&r, m);
    int32_t tok[N];
    make_tokens(tok, N, 1);
    static float got[N * V], want[N * V];
    ref_forward(&r, tok, N, want);
    CHECK("prefill of 12 tokens with every row wanted", prefill_all(e, 0, tok, N, got) == LRUN_OK);
    const double err = max_abs(got, want, N * V), scale = fmax(1.0, max_mag(want, N * V));
    printf("# %s: max |logit - reference| = %.3g (logits up to %.3g)\n", what, err, scale);
    CHECK(what, err <= tol * scale);
    CHECK("seq_len is 12 after the step", lrun_engine_seq_len(e, 0) == N);
    ref_free(&r);
    lrun_engine_free(e);
    lrun_model_free(m);
}

// ---------------------------------------------------------------- (b) prefill vs one by one

static void test_prefill_vs_steps(const char *path, const char *what)
{
    enum { N = 10 };
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *e = engine(m, 1, 512, LRUN_CACHE_KIND_DYNAMIC);
    int32_t tok[N];
    make_tokens(tok, N, 2);
    static float all[N * V], one[N * V];
    int ok = e && prefill_all(e, 0, tok, N, all) == LRUN_OK && lrun_engine_seq_truncate(e, 0, 0) == LRUN_OK;
    for (int i = 0; ok && i < N; i++) {
        const int32_t s = 0;
        int64_t n_out = 0;
        ok = lrun_engine_step(e, 1, &tok[i], &s, NULL, one + i * V, 1, &n_out) == LRUN_OK && n_out == 1;
    }
    CHECK("token-by-token steps run", ok);
    CHECK(what, ok && max_abs(all, one, N * V) <= 1e-4);
    lrun_engine_free(e);
    lrun_model_free(m);
}

// ---------------------------------------------------------------- (c) batch of sequences vs alone

static void test_batch(const char *path)
{
    enum { N0 = 5, N1 = 3, N2 = 8, NT = N0 + N1 + N2 };
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    /* n_batch_max 4: the step is cut into chunks in the middle of sequences */
    lrun_engine *eb = engine(m, 3, 4, LRUN_CACHE_KIND_DYNAMIC), *ea = engine(m, 1, 512, LRUN_CACHE_KIND_DYNAMIC);
    if (!eb || !ea) {
        CHECK("batch engines", 0);
        goto done;
    }
    const int lens[3] = {N0, N1, N2};
    int32_t toks[3][N2], tok[NT], seq[NT];
    int row_of[3][N2];
    for (int s = 0; s < 3; s++) make_tokens(toks[s], lens[s], 10 + s);
    /* interleave: round-robin over the sequences that still have tokens */
    int used[3] = {0}, n = 0;
    while (n < NT)
        for (int s = 0; s < 3; s++)
            if (used[s] < lens[s]) row_of[s][used[s]] = n, tok[n] = toks[s][used[s]++], seq[n++] = s;
    static float got[NT * V], alone[N2 * V];
    int8_t want[NT];
    memset(want, 1, sizeof want);
    int64_t n_out = 0;
    CHECK("one step over 3 interleaved sequences", lrun_engine_step(eb, NT, tok, seq, want, got, NT, &n_out) == LRUN_OK &&
                                                        n_out == NT);
    double err = 0;
    for (int s = 0; s < 3; s++) {
        lrun_engine_seq_truncate(ea, 0, 0);
        if (prefill_all(ea, 0, toks[s], lens[s], alone) != LRUN_OK) err = INFINITY;
        for (int i = 0; i < lens[s]; i++) err = fmax(err, max_abs(got + row_of[s][i] * V, alone + i * V, V));
    }
    CHECK("each sequence of the batch equals it run alone (1e-4)", err <= 1e-4);
    CHECK("lengths 5, 3, 8", lrun_engine_seq_len(eb, 0) == N0 && lrun_engine_seq_len(eb, 1) == N1 &&
                                 lrun_engine_seq_len(eb, 2) == N2);

    /* a decode step of all three with want_logits NULL: one row per sequence, in token order */
    const int32_t next[3] = {7, 8, 9}, nseq[3] = {2, 0, 1};
    static float dec[3 * V], ref1[V];
    CHECK("decode step over 3 sequences", lrun_engine_step(eb, 3, next, nseq, NULL, dec, 3, &n_out) == LRUN_OK && n_out == 3);
    err = 0;
    for (int j = 0; j < 3; j++) {
        const int s = nseq[j];
        int32_t t2[N2 + 1];
        memcpy(t2, toks[s], sizeof(int32_t) * (size_t)lens[s]);
        t2[lens[s]] = next[j];
        static float pre[(N2 + 1) * V];
        lrun_engine_seq_truncate(ea, 0, 0);
        if (prefill_all(ea, 0, t2, lens[s] + 1, pre) != LRUN_OK) err = INFINITY;
        memcpy(ref1, pre + lens[s] * V, sizeof ref1);
        err = fmax(err, max_abs(dec + j * V, ref1, V));
    }
    CHECK("batched decode rows come in token order and equal single runs", err <= 1e-4);
done:
    lrun_engine_free(eb);
    lrun_engine_free(ea);
    lrun_model_free(m);
}

// ---------------------------------------------------------------- (d) copy and truncate

static void test_copy_truncate(const char *path)
{
    enum { N = 9 };
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *e = engine(m, 2, 512, LRUN_CACHE_KIND_DYNAMIC);
    if (!e) {
        CHECK("engine", 0);
        lrun_model_free(m);
        return;
    }
    int32_t tok[N];
    make_tokens(tok, N, 3);
    static float full[N * V], tail[N * V], fork[2 * V];
    CHECK("prefill seq 0", prefill_all(e, 0, tok, N - 1, full) == LRUN_OK);
    CHECK("copy seq 0 to seq 1", lrun_engine_seq_copy(e, 1, 0) == LRUN_OK && lrun_engine_seq_len(e, 1) == N - 1);
    const int32_t two_tok[2] = {tok[N - 1], tok[N - 1]}, two_seq[2] = {0, 1};
    int64_t n_out = 0;
    CHECK("step both", lrun_engine_step(e, 2, two_tok, two_seq, NULL, fork, 2, &n_out) == LRUN_OK && n_out == 2);
    CHECK("a copied sequence continues exactly like its source", max_abs(fork, fork + V, V) == 0.0);

    /* truncate seq 0 to 4 and feed the rest again: same logits as the first time */
    lrun_engine_seq_truncate(e, 0, 0);
    CHECK("prefill all 9", prefill_all(e, 0, tok, N, full) == LRUN_OK);
    CHECK("truncate to 4", lrun_engine_seq_truncate(e, 0, 4) == LRUN_OK && lrun_engine_seq_len(e, 0) == 4);
    CHECK("refeed 5", prefill_all(e, 0, tok + 4, N - 4, tail) == LRUN_OK);
    CHECK("after truncation the sequence recomputes the same logits (1e-4)", max_abs(full + 4 * V, tail, (N - 4) * V) <= 1e-4);
    CHECK("truncate past the end is LRUN_E_ARG", lrun_engine_seq_truncate(e, 0, N + 1) == LRUN_E_ARG);
    CHECK("copy from an out-of-range sequence is LRUN_E_ARG", lrun_engine_seq_copy(e, 0, 2) == LRUN_E_ARG);
    CHECK("seq_len of an out-of-range sequence is -1", lrun_engine_seq_len(e, 5) == -1);
    CHECK("copy an empty sequence empties the destination",
          lrun_engine_seq_truncate(e, 1, 0) == LRUN_OK && lrun_engine_seq_copy(e, 0, 1) == LRUN_OK &&
              lrun_engine_seq_len(e, 0) == 0);
    lrun_engine_free(e);
    lrun_model_free(m);
}

// ---------------------------------------------------------------- (e) KV cache OOM under a budget

static void test_oom(const char *path)
{
    /* 128 positions: more than one block of the paged cache (kv_blocks.h) */
    const lrun_engine_opts o128 = {.n_seq_max = 1, .n_ctx_max = 128, .n_batch_max = 512};
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *e = NULL;
    if (m && lrun_engine_init(&e, m, &o128) != LRUN_OK) e = NULL;
    if (!e) {
        CHECK("engine", 0);
        lrun_model_free(m);
        return;
    }
    const size_t scratch = lrun_device_used(lrun_model_device(m));
    int32_t tok[80];
    make_tokens(tok, 80, 4);
    static float want_logits[80 * V], got[80 * V];
    CHECK("unbudgeted prefill", prefill_all(e, 0, tok, 16, want_logits) == LRUN_OK);
    lrun_engine_free(e);
    lrun_model_free(m);

    /* room for the scratch and 64 positions (one block of the paged cache,
     * kv_blocks.h): the growth past 64 fails */
    const size_t per_pos = (size_t)L * 2 * HK * HD * sizeof(uint16_t);
    m = fixture_load(path, "cpu", scratch + 64 * per_pos + per_pos / 2, 2, -1);
    if (m && lrun_engine_init(&e, m, &o128) != LRUN_OK) e = NULL;
    CHECK("engine fits the budget", e != NULL);
    if (!e) {
        lrun_model_free(m);
        return;
    }
    CHECK("10 tokens fit", prefill_all(e, 0, tok, 10, got) == LRUN_OK);
    lrun_status st = prefill_all(e, 0, tok + 10, 60, got);
    CHECK("70 positions exceed the budget: LRUN_E_OOM", st == LRUN_E_OOM);
    CHECK("the message names the KV cache", strstr(lrun_last_error(), "KV cache") != NULL);
    printf("# %s\n", lrun_last_error());
    CHECK("the OOM records the bytes asked for", lrun_last_oom_requested() > 0);
    CHECK("the failed step changed nothing", lrun_engine_seq_len(e, 0) == 10);
    CHECK("the engine goes on: 6 more tokens fit", prefill_all(e, 0, tok + 10, 6, got) == LRUN_OK);
    CHECK("and give the unbudgeted logits", max_abs(got, want_logits + 10 * V, 6 * V) <= 1e-4);
    CHECK("the device never went past its budget", lrun_device_peak(lrun_model_device(m)) <= lrun_device_capacity(lrun_model_device(m)));
    lrun_engine_free(e);
    CHECK("engine free gives every byte back", lrun_device_used(lrun_model_device(m)) == 0);

    /* a static cache that cannot fit fails at init, cleanly */
    const lrun_engine_opts so = {.n_seq_max = 4, .n_ctx_max = 64, .n_batch_max = 512, .cache_kind = LRUN_CACHE_KIND_STATIC};
    e = NULL;
    CHECK("a static cache over budget fails at init with LRUN_E_OOM", lrun_engine_init(&e, m, &so) == LRUN_E_OOM && e == NULL);
    CHECK("and leaves nothing allocated", lrun_device_used(lrun_model_device(m)) == 0);
    lrun_model_free(m);
}

// ---------------------------------------------------------------- (f) static vs dynamic

static void test_static_dynamic(const char *path)
{
    enum { N = 20 };
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *ed = engine(m, 2, 8, LRUN_CACHE_KIND_DYNAMIC), *es = engine(m, 2, 8, LRUN_CACHE_KIND_STATIC);
    int32_t tok[N];
    make_tokens(tok, N, 5);
    static float a[N * V], b[N * V];
    CHECK("dynamic prefill (grows 16 -> 32 across chunks)", ed && prefill_all(ed, 1, tok, N, a) == LRUN_OK);
    CHECK("static prefill", es && prefill_all(es, 1, tok, N, b) == LRUN_OK);
    CHECK("STATIC and DYNAMIC caches give identical logits", memcmp(a, b, sizeof a) == 0);
    lrun_engine_free(ed);
    lrun_engine_free(es);
    lrun_model_free(m);
}

// ---------------------------------------------------------------- (g) KV element types, threads, chunks

/* Logits of a 20-token prefill (every row) and 3 decode steps. */
static int run_script(lrun_engine *e, float *out)
{
    enum { N = 20 };
    int32_t tok[N + 3], seq[1] = {0};
    make_tokens(tok, N + 3, 7);
    int ok = e && prefill_all(e, 0, tok, N, out) == LRUN_OK;
    for (int i = 0; ok && i < 3; i++) {
        int64_t n_out = 0;
        ok = lrun_engine_step(e, 1, tok + N + i, seq, NULL, out + (N + i) * V, 1, &n_out) == LRUN_OK && n_out == 1;
    }
    return ok;
}

static void test_kv_dtypes(const char *path)
{
    enum { NR = 23 };
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    static float out[2][2][NR * V]; /* [f16, f32][1, 2 threads] */
    const lrun_kv_dtype kvs[2] = {LRUN_KV_DTYPE_F16, LRUN_KV_DTYPE_F32};
    int ok = m != NULL;
    for (int k = 0; k < 2; k++)
        for (int t = 0; t < 2; t++) {
            lrun_engine *e = engine_kv(m, 1, 512, LRUN_CACHE_KIND_DYNAMIC, t + 1, kvs[k]);
            ok &= run_script(e, out[k][t]);
            lrun_engine_free(e);
        }
    CHECK("f16 and f32 caches, 1 and 2 threads: prefill and decode run", ok);
    CHECK("f16 cache: 1 and 2 threads give identical logits", memcmp(out[0][0], out[0][1], sizeof out[0][0]) == 0);
    CHECK("f32 cache: 1 and 2 threads give identical logits", memcmp(out[1][0], out[1][1], sizeof out[1][0]) == 0);
    const double d = max_abs(out[0][0], out[1][0], NR * V), scale = max_mag(out[1][0], NR * V);
    printf("# f16 vs f32 cache: max |logit difference| %.3g (logits up to %.3g)\n", d, scale);
    /* the f16 rounding of k and v (~5e-4 relative) moves some 8-bit activation
     * quants by one step downstream, hence more than 5e-4 of the scale */
    CHECK("f16 and f32 caches differ, by the f16 rounding of k and v (5e-2 of the logit scale)",
          d > 0.0 && d <= 5e-2 * scale);
    lrun_engine *e = engine_kv(m, 1, 512, LRUN_CACHE_KIND_DYNAMIC, 0, LRUN_KV_DTYPE_DEFAULT);
    static float def[NR * V];
    CHECK("the default cache is f16", run_script(e, def) && memcmp(def, out[0][1], sizeof def) == 0);
    lrun_engine_free(e);

    /* the prompt in chunks of 8 against one step of 20: llama.cpp's order of
     * p·V depends on the step size (an 8-lane chain for steps of >= 2 tokens,
     * 4x8 accumulators for one token), so chunking may move the last bits: a
     * tight tolerance, not equality */
    static float chunked[NR * V];
    e = engine_kv(m, 1, 8, LRUN_CACHE_KIND_DYNAMIC, 2, LRUN_KV_DTYPE_F32);
    CHECK("prefill in chunks of 8", run_script(e, chunked));
    CHECK("chunks of 8 equal one step of 20 (1e-4 of the logit scale)",
          max_abs(chunked, out[1][1], NR * V) <= 1e-4 * scale);
    lrun_engine_free(e);

    const lrun_engine_opts bad = {.n_seq_max = 1, .n_ctx_max = 64, .n_batch_max = 512, .kv_dtype = (lrun_kv_dtype)7};
    e = NULL;
    CHECK("an unknown kv_dtype is LRUN_E_ARG, named", lrun_engine_init(&e, m, &bad) == LRUN_E_ARG && e == NULL &&
                                                          strstr(lrun_last_error(), "kv_dtype") != NULL);
    lrun_model_free(m);
}

// ---------------------------------------------------------------- (h) llama.cpp, bit for bit

/* Descending logits; ties in id order. */
static const float *sort_keys;
static int cmp_desc(const void *a, const void *b)
{
    const int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (sort_keys[i] != sort_keys[j]) return sort_keys[i] > sort_keys[j] ? -1 : 1;
    return (i > j) - (i < j);
}

/* What llama.cpp's server reports as a token's logprob (docs/numerics.md §11):
 * logits sorted descending, p = expf(l - l_max), the p summed in f32 in that
 * order, log(p / sum). order is (n) scratch. */
static void server_logprobs(const float *logits, int64_t n, int32_t *order, float *lp)
{
    for (int64_t i = 0; i < n; i++) order[i] = (int32_t)i;
    sort_keys = logits;
    qsort(order, (size_t)n, sizeof *order, cmp_desc);
    const float lmax = logits[order[0]];
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += expf(logits[order[i]] - lmax);
    for (int64_t i = 0; i < n; i++) lp[i] = logf(expf(logits[i] - lmax) / sum);
}

static void test_llamacpp_golden(void)
{
    const char *path = getenv("LRUN_MODEL");
    if (!path || !*path) {
        printf("ok %d - llama.cpp parity # SKIP LRUN_MODEL is not set\n", ++check_count);
        return;
    }
    cJSON *root = fixture_read_json("tests/golden/smollm2_greedy.json");
    cJSON *cases = cJSON_GetObjectItem(root, "cases");
    CHECK("tests/golden/smollm2_greedy.json opens and parses (run from the repository root)", cJSON_IsArray(cases));
    if (!cJSON_IsArray(cases)) {
        cJSON_Delete(root);
        return;
    }
    /* llama.cpp's settings of the golden: 2 threads, f32 KV cache, the prompt in one step */
    const lrun_load_opts lo = {.device = "cpu", .n_threads = 2, .rope_style = -1};
    lrun_model *m = NULL;
    CHECK("the model loads", lrun_model_load(&m, path, &lo) == LRUN_OK);
    if (!m) {
        cJSON_Delete(root);
        return;
    }
    const int64_t nv = lrun_model_get_info(m)->n_vocab;
    const lrun_engine_opts eo = {.n_seq_max = 1, .n_ctx_max = 1024, .n_batch_max = 512, .n_threads = 2,
                                .kv_dtype = LRUN_KV_DTYPE_F32};
    lrun_engine *e = NULL;
    CHECK("an engine with an f32 KV cache", lrun_engine_init(&e, m, &eo) == LRUN_OK);
    float *logits = malloc((size_t)nv * sizeof *logits), *lp = malloc((size_t)nv * sizeof *lp);
    int32_t *order = malloc((size_t)nv * sizeof *order);
    cJSON *c;
    cJSON_ArrayForEach(c, cases)
    {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(c, "name"));
        cJSON *prompt = cJSON_GetObjectItem(c, "prompt_ids"), *cont = cJSON_GetObjectItem(c, "continuation_ids");
        cJSON *top = cJSON_GetObjectItem(c, "first_step_top20"), *eog = cJSON_GetObjectItem(c, "eog_at");
        const int np = cJSON_GetArraySize(prompt), nc = cJSON_GetArraySize(cont);
        const int n_cmp = cJSON_IsNumber(eog) ? eog->valueint : nc;
        int32_t *tok = malloc((size_t)(np + nc) * sizeof *tok), *seq = calloc((size_t)(np + nc), sizeof *seq);
        for (int i = 0; i < np; i++) tok[i] = cJSON_GetArrayItem(prompt, i)->valueint;
        int64_t n_out = 0;
        int ok = e && lrun_engine_seq_truncate(e, 0, 0) == LRUN_OK &&
                 lrun_engine_step(e, np, tok, seq, NULL, logits, 1, &n_out) == LRUN_OK && n_out == 1;
        /* first step: the 20 log-probs llama.cpp reported */
        double worst = 0.0;
        server_logprobs(logits, nv, order, lp);
        cJSON *pr;
        cJSON_ArrayForEach(pr, top)
        {
            const int id = cJSON_GetArrayItem(pr, 0)->valueint;
            const double want = cJSON_GetArrayItem(pr, 1)->valuedouble;
            worst = fmax(worst, fabs((double)lp[id] - want));
        }
        /* greedy: argmax, fed back one token at a time, as llama.cpp decodes */
        int same = ok, first_diff = -1;
        for (int i = 0; ok && i < n_cmp; i++) {
            const int32_t next = lrun_logits_argmax(logits, nv), want = cJSON_GetArrayItem(cont, i)->valueint;
            if (next != want && first_diff < 0) first_diff = i, same = 0;
            tok[np + i] = want; /* teacher-forced, so a difference shows where it is and nothing after */
            if (i + 1 < n_cmp)
                ok = lrun_engine_step(e, 1, tok + np + i, seq, NULL, logits, 1, &n_out) == LRUN_OK && n_out == 1;
        }
        char msg[200];
        /* identical logits give identical log-probs up to the order in which
         * the server's std::sort puts tied logits into its f32 sum (~1e-5) */
        snprintf(msg, sizeof msg, "llama.cpp parity '%s': first-step top-20 log-probs as its server reports them "
                 "(max |diff| %.1e <= 1e-4)", name, worst);
        CHECK(msg, ok && worst <= 1e-4);
        snprintf(msg, sizeof msg, "llama.cpp parity '%s': the greedy continuation, %d tokens, id for id (first "
                 "difference at %d)", name, n_cmp, first_diff);
        CHECK(msg, ok && same);
        free(tok), free(seq);
    }
    free(logits), free(lp), free(order);
    lrun_engine_free(e);
    lrun_model_free(m);
    cJSON_Delete(root);
}

// ---------------------------------------------------------------- argument errors

static void test_arguments(const char *path)
{
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *e = engine(m, 2, 512, LRUN_CACHE_KIND_DYNAMIC);
    if (!e) {
        CHECK("engine", 0);
        lrun_model_free(m);
        return;
    }
    static float lg[4 * V];
    int32_t tok[3] = {1, 2, 3}, seq[3] = {0, 0, 1};
    int64_t n_out = 7;
    CHECK("a step of zero tokens is fine", lrun_engine_step(e, 0, NULL, NULL, NULL, NULL, 0, &n_out) == LRUN_OK && n_out == 0);
    tok[1] = V;
    CHECK("a token outside the vocabulary is LRUN_E_ARG", lrun_engine_step(e, 3, tok, seq, NULL, lg, 4, &n_out) == LRUN_E_ARG);
    tok[1] = 2, seq[2] = 2;
    CHECK("a sequence outside [0, n_seq_max) is LRUN_E_ARG", lrun_engine_step(e, 3, tok, seq, NULL, lg, 4, &n_out) == LRUN_E_ARG);
    seq[2] = 1;
    CHECK("a logits buffer too small is LRUN_E_ARG", lrun_engine_step(e, 3, tok, seq, NULL, lg, 1, &n_out) == LRUN_E_ARG);
    CHECK("nothing changed", lrun_engine_seq_len(e, 0) == 0 && lrun_engine_seq_len(e, 1) == 0);
    int32_t many[65], mseq[65] = {0};
    make_tokens(many, 65, 6);
    CHECK("more positions than n_ctx_max is LRUN_E_ARG", lrun_engine_step(e, 65, many, mseq, NULL, lg, 4, &n_out) == LRUN_E_ARG);
    CHECK("no logits wanted: no buffer needed", lrun_engine_step(e, 3, tok, seq, (const int8_t[]){0, 0, 0}, NULL, 0, &n_out) == LRUN_OK &&
                                                     n_out == 0 && lrun_engine_seq_len(e, 0) == 2);
    CHECK("n_ctx_max and n_seq_max", lrun_engine_n_ctx_max(e) == 64 && lrun_engine_n_seq_max(e) == 2);
    /* the CPU backend's table has no random fill: the facade says so */
    CHECK("seq_fill_random on the CPU is LRUN_E_UNSUPPORTED, unchanged",
          lrun_engine_seq_fill_random(e, 0, 4, 1) == LRUN_E_UNSUPPORTED && lrun_engine_seq_len(e, 0) == 2);
    lrun_engine_stats st;
    lrun_engine_get_stats(e, &st);
    CHECK("one stats record: the CUDA backend's fields are 0 on the CPU",
          st.graph_captures == 0 && st.graph_launches == 0 && !st.graphs_enabled && !st.pdl_enabled && !st.exact &&
              st.kv_dtype == LRUN_KV_DTYPE_F16 && st.prefetch_layers == 0 && st.steps == 1);
    /* no expert cache on the CPU: slots 0 and the per-block arrays untouched */
    int64_t slots = 9;
    uint64_t copied[2] = {7, 7};
    CHECK("no expert cache: 0 slots, no block's bytes written",
          lrun_engine_expert_cache_counts(e, NULL, NULL, NULL, NULL, &slots) == LRUN_OK && slots == 0 &&
              lrun_engine_expert_cache_layer_bytes(e, copied) == LRUN_OK && copied[0] == 7 && copied[1] == 7);
    uint64_t host[64];
    memset(host, 0xff, sizeof host);
    CHECK("every weight on the device: no block computed on the host",
          lrun_engine_host_compute_layer_bytes(e, host) == LRUN_OK && host[0] == 0 &&
              lrun_engine_host_compute_layer_bytes(e, NULL) == LRUN_E_ARG &&
              lrun_engine_host_compute_layer_bytes(NULL, host) == LRUN_E_ARG);
    CHECK("lrun_engine_expert_cache_layer_bytes: a NULL array or engine is LRUN_E_ARG",
          lrun_engine_expert_cache_layer_bytes(e, NULL) == LRUN_E_ARG &&
              lrun_engine_expert_cache_layer_bytes(NULL, copied) == LRUN_E_ARG);
    lrun_engine_free(e);
    lrun_model_free(m);
}

/* The facade's limits (runtime/engine.c), one set for every backend:
 * n_seq_max and n_batch_max at most 2^16, n_ctx_max at most 2^30, checked
 * before any backend sees the options, by init and estimate alike. */
static void test_limits(const char *path)
{
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    if (!m) {
        CHECK("model", 0);
        return;
    }
    static const struct {
        const char *name;
        lrun_engine_opts opts;
    } bad[] = {
        {"n_seq_max 2^16 + 1", {.n_seq_max = ((int64_t)1 << 16) + 1}},
        {"n_batch_max 2^16 + 1", {.n_seq_max = 1, .n_batch_max = ((int64_t)1 << 16) + 1}},
        {"n_ctx_max 2^30 + 1", {.n_seq_max = 1, .n_ctx_max = ((int64_t)1 << 30) + 1}},
        {"a negative n_threads", {.n_seq_max = 1, .n_threads = -1}},
        {"cache kind 9", {.n_seq_max = 1, .cache_kind = (lrun_cache_kind)9}},
        {"prefetch_layers 65", {.n_seq_max = 1, .prefetch_layers = 65}},
        {"numerics 7", {.n_seq_max = 1, .numerics = (lrun_numerics)7}},
        {"weight_mode 3", {.n_seq_max = 1, .weight_mode = (lrun_weight_mode)3}},
        {"expert_cache_mode 2", {.n_seq_max = 1, .expert_cache_mode = (lrun_expert_cache_mode)2}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[96];
        lrun_engine *e = (lrun_engine *)1;
        lrun_engine_needs needs;
        snprintf(name, sizeof name, "%s: LRUN_E_ARG from init and from estimate", bad[i].name);
        CHECK(name, lrun_engine_init(&e, m, &bad[i].opts) == LRUN_E_ARG && e == NULL &&
                        lrun_engine_estimate(&needs, m, &bad[i].opts) == LRUN_E_ARG);
        if (strncmp(bad[i].name, "n_", 2) == 0) { /* a size: the message names that one, not all three */
            char option[32];
            snprintf(option, sizeof option, "%.*s", (int)strcspn(bad[i].name, " "), bad[i].name);
            snprintf(name, sizeof name, "%s: the error names %s alone", bad[i].name, option);
            const char *msg = lrun_last_error();
            int others = 0;
            for (const char *const *o = (const char *const[]){"n_seq_max", "n_batch_max", "n_ctx_max", NULL}; *o; o++)
                others += strcmp(*o, option) != 0 && strstr(msg, *o) != NULL;
            CHECK(name, strstr(msg, option) != NULL && strstr(msg, "is too large") != NULL && others == 0);
        }
    }
    /* at the limits: accepted by the checks (estimate allocates nothing) */
    const lrun_engine_opts edge = {.n_seq_max = (int64_t)1 << 16, .n_batch_max = (int64_t)1 << 16,
                                   .n_ctx_max = (int64_t)1 << 30};
    lrun_engine_needs needs;
    CHECK("n_seq_max and n_batch_max 2^16, n_ctx_max 2^30: estimate accepts them",
          lrun_engine_estimate(&needs, m, &edge) == LRUN_OK && needs.prefetch_layers == 2);
    lrun_model_free(m);
}

int main(void)
{
    const char *f32 = gen_model(0, LRUN_DTYPE_F32, LRUN_DTYPE_F32, 0);
    const char *q41 = gen_model(1, LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q8_0, 1);
    const char *q80 = gen_model(2, LRUN_DTYPE_Q8_0, LRUN_DTYPE_F16, 0);

    test_reference(f32, "f32 weights: logits equal the reference forward (1e-4 of the logit scale)", -1, 1e-4);
    test_reference(f32, "forced half-split RoPE: logits equal the half-split reference", LRUN_ROPE_STYLE_HALF, 1e-4);
    /* quantized weights: the reference uses the same dequantized weights but
     * f32 activations, the engine quantizes activations to 8 bits per block */
    test_reference(q80, "q8_0 weights, f16 embeddings: logits near the reference (3e-2)", -1, 3e-2);
    test_reference(q41, "q4_1 weights, tied q8_0 embeddings: logits near the reference (3e-2)", -1, 3e-2);
    test_prefill_vs_steps(f32, "f32: prefill in one step equals token by token (1e-4)");
    test_prefill_vs_steps(q41, "q4_1: prefill in one step equals token by token (1e-4)");
    test_batch(f32);
    test_batch(q41);
    test_copy_truncate(q41);
    test_oom(f32);
    test_static_dynamic(q41);
    test_kv_dtypes(q41);
    test_arguments(f32);
    test_limits(f32);
    test_llamacpp_golden();

    for (int i = 0; i < 3; i++) remove(paths[i]);
    return CHECK_DONE();
}
