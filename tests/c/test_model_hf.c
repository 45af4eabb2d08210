/* test_model_hf.c — Hugging Face directories (model/model_hf.c): the random
 * generator writes the same llama as a GGUF and as an HF directory (one file,
 * and shards); both load, with the same hyper-parameters, and give the same
 * logits (within f32 tolerance: q/k rows are permuted between the two, so
 * sums run in another order) and the same greedy tokens on the CPU. Also the
 * directory's failures: a missing config, an unknown model_type, a missing
 * tensor, a weight of the wrong shape. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"

enum { L = 2, D = 64, H = 4, HK = 2, F = 96, V = 300, CTX = 64, N = 6, GEN = 8 };

static char dir[256];

static lrun_model_gen_spec spec(lrun_dtype w, int tied)
{
    return (lrun_model_gen_spec){.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V,
                                 .n_ctx = CTX, .weight_dtype = w, .embd_dtype = w, .tied_embeddings = tied,
                                 .rope_freq_base = 10000.0, .rms_eps = 1e-5, .seed = 99, .n_threads = 1};
}

/* The same, of architecture arch (head_dim 0: n_embd / n_head), llama3 RoPE factor, sliding window. */
static lrun_model_gen_spec spec_arch(const char *arch, int64_t head_dim, double llama3, int64_t swa)
{
    lrun_model_gen_spec s = spec(LRUN_DTYPE_F32, 1);
    s.arch = arch, s.head_dim = head_dim, s.rope_llama3_factor = llama3, s.sliding_window = swa;
    return s;
}

/* Prefill of tok then GEN greedy steps: the prefill's last logits and the tokens. */
static int run(lrun_model *m, const int32_t *tok, float *logits, int32_t *out)
{
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = CTX, .n_batch_max = N, .n_threads = 1};
    lrun_engine *e = NULL;
    if (!m || lrun_engine_init(&e, m, &o) != LRUN_OK) {
        printf("# engine: %s\n", lrun_last_error());
        return 0;
    }
    int32_t seq[N] = {0};
    int64_t n_out = 0;
    static float row[V];
    int ok = lrun_engine_step(e, N, tok, seq, NULL, logits, 1, &n_out) == LRUN_OK && n_out == 1;
    const float *last = logits;
    for (int g = 0; ok && g < GEN; g++) {
        int32_t best = 0;
        for (int v = 1; v < V; v++)
            if (last[v] > last[best]) best = v;
        out[g] = best;
        ok = lrun_engine_step(e, 1, &best, seq, NULL, row, 1, &n_out) == LRUN_OK;
        last = row;
    }
    lrun_engine_free(e);
    return ok;
}

static float max_diff(const float *a, const float *b, int n)
{
    float m = 0;
    for (int i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

static void compare_spec(const char *what, const lrun_model_gen_spec s, int shards)
{
    char gguf[320], hf[320], name[160];
    snprintf(gguf, sizeof gguf, "%s/%s.gguf", dir, what);
    snprintf(hf, sizeof hf, "%s/%s", dir, what);
    snprintf(name, sizeof name, "%s: generated as GGUF and as an HF directory", what);
    const int made = lrun_model_generate(gguf, &s) == LRUN_OK && lrun_model_generate_hf(hf, &s, shards) == LRUN_OK;
    CHECK(name, made);
    if (!made) {
        printf("# %s\n", lrun_last_error());
        return;
    }
    lrun_model *a = fixture_load(gguf, "cpu", 0, 1, -1), *b = fixture_load(hf, "cpu", 0, 1, -1);
    snprintf(name, sizeof name, "%s: both load", what);
    CHECK(name, a && b);
    if (a && b) {
        const lrun_model_info *ia = lrun_model_get_info(a), *ib = lrun_model_get_info(b);
        snprintf(name, sizeof name, "%s: same hyper-parameters; HF rotates half-split pairs", what);
        CHECK(name, ia->n_embd == ib->n_embd && ia->n_layer == ib->n_layer && ia->n_head_kv == ib->n_head_kv &&
              ia->n_vocab == ib->n_vocab && ia->n_ff == ib->n_ff && ia->n_rot == ib->n_rot &&
              ia->n_ctx_train == ib->n_ctx_train && ia->rms_eps == ib->rms_eps &&
              ia->tied_embeddings == ib->tied_embeddings && ia->weight_bytes == ib->weight_bytes &&
              ib->rope_style == LRUN_ROPE_STYLE_HALF && strcmp(ib->arch, ia->arch) == 0 &&
              ia->head_dim == ib->head_dim &&
              (lrun_model_find_tensor(a, "rope_freqs.weight") != NULL) ==
                  (lrun_model_find_tensor(b, "rope_freqs.weight") != NULL));
        snprintf(name, sizeof name, "%s: weights stay in the mapping (mmap tier)", what);
        CHECK(name, lrun_model_tier_bytes(b, LRUN_TIER_MMAP) == ib->weight_bytes);
        static const int32_t tok[N] = {256, 72, 101, 108, 108, 111};
        static float la[V], lb[V];
        int32_t ga[GEN], gb[GEN];
        const int ok = run(a, tok, la, ga) && run(b, tok, lb, gb);
        const float d = ok ? max_diff(la, lb, V) : 1e9f;
        snprintf(name, sizeof name, "%s: prefill logits agree (max |diff| %.2g)", what, d);
        CHECK(name, ok && d < 1e-4f);
        snprintf(name, sizeof name, "%s: the same %d greedy tokens", what, GEN);
        CHECK(name, ok && memcmp(ga, gb, sizeof ga) == 0);
        /* the control: the directory with adjacent RoPE pairs computes something else */
        lrun_model *c = fixture_load(hf, "cpu", 0, 1, LRUN_ROPE_STYLE_ADJACENT);
        static float lc[V];
        int32_t gc[GEN];
        snprintf(name, sizeof name, "%s: adjacent RoPE on HF layout differs (the layouts matter)", what);
        CHECK(name, c && run(c, tok, lc, gc) && max_diff(la, lc, V) > 1e-3f);
        lrun_model_free(c);
        if (ia->rope_style == LRUN_ROPE_STYLE_ADJACENT) {
            /* llama3 factors: the GGUF's tensor, computed at load from config.json for HF */
            lrun_tensor *fa = lrun_model_find_tensor(a, "rope_freqs.weight"), *fb = lrun_model_find_tensor(b, "rope_freqs.weight");
            float va[64] = {0}, vb[64] = {0};
            const int64_t nf = fa ? lrun_tensor_nelements(fa) : 0;
            if (fa && fb && nf <= 64) lrun_tensor_read_f32(fa, 0, nf, va), lrun_tensor_read_f32(fb, 0, nf, vb);
            snprintf(name, sizeof name, "%s: the same RoPE factors (or none)", what);
            CHECK(name, (!fa && !fb) || (fa && fb && nf == lrun_tensor_nelements(fb) && memcmp(va, vb, sizeof va) == 0));
        }
    }
    lrun_model_free(a);
    lrun_model_free(b);
}

static void compare(const char *what, lrun_dtype w, int tied, int shards) { compare_spec(what, spec(w, tied), shards); }

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f) fputs(text, f), fclose(f);
}

static int load_fails(const char *path, lrun_status want, const char *needle)
{
    lrun_model *m = NULL;
    const lrun_load_opts o = {.device = "cpu", .n_threads = 1, .rope_style = -1};
    const lrun_status st = lrun_model_load(&m, path, &o);
    lrun_model_free(m);
    const int ok = st == want && strstr(lrun_last_error(), needle);
    if (!ok) printf("# %s: status %d: %s\n", path, (int)st, lrun_last_error());
    return ok;
}

/* rope_scaling llama3 becomes rope_freqs: factor 1 for the fastest pair, factor for the slowest. */
static void test_llama3(const char *d)
{
    char cmd[900];
    snprintf(cmd, sizeof cmd, "sed -i 's/\"rope_theta\"/\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, "
             "\"low_freq_factor\": 1, \"high_freq_factor\": 4, \"original_max_position_embeddings\": 32}, "
             "\"rope_theta\"/' '%s/config.json'", d);
    CHECK("(edit config: llama3 rope_scaling)", system(cmd) == 0);
    lrun_model *m = fixture_load(d, "cpu", 0, 1, -1);
    lrun_tensor *t = m ? lrun_model_find_tensor(m, "rope_freqs.weight") : NULL;
    float f[8] = {0};
    const int ok = t && lrun_tensor_nelements(t) == 8 && lrun_tensor_read_f32(t, 0, 8, f) == LRUN_OK;
    CHECK("llama3 rope_scaling: 8 RoPE factors, 1 (short wavelengths) up to 8 (long)", ok && f[0] == 1.0f &&
          f[7] == 8.0f && f[3] > 1.0f && f[3] <= 8.0f);
    lrun_model_free(m);
    snprintf(cmd, sizeof cmd, "sed -i 's/\"rope_scaling\": {[^}]*}, //' '%s/config.json'", d);
    CHECK("(edit config back)", system(cmd) == 0);
}

static void test_failures(void)
{
    char d[320], p[400], cmd[900];
    snprintf(d, sizeof d, "%s/bad", dir);
    const lrun_model_gen_spec s = spec(LRUN_DTYPE_F32, 1);
    if (lrun_model_generate_hf(d, &s, 1) != LRUN_OK) printf("# %s\n", lrun_last_error());
    /* what the HF writer cannot write is refused before it makes anything */
    char r[320];
    snprintf(r, sizeof r, "%s/refused", dir);
    const lrun_model_gen_spec q8 = spec(LRUN_DTYPE_Q8_0, 1);
    CHECK("the HF generator refuses q8_0 weights, leaving no directory",
          lrun_model_generate_hf(r, &q8, 1) == LRUN_E_ARG && strstr(lrun_last_error(), "q8_0") &&
              access(r, F_OK) != 0);
    /* gpt-oss's directories, and the expert dtypes they cannot hold: test_model_gen_hf_gpt_oss.c */
    CHECK("the HF generator refuses 0 shards, leaving no directory",
          lrun_model_generate_hf(r, &s, 0) == LRUN_E_ARG && access(r, F_OK) != 0);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    CHECK("a .safetensors with a config beside it loads", load_fails(p, LRUN_OK, ""));
    test_llama3(d);
    snprintf(cmd, sizeof cmd, "sed -i 's/\"model_type\":[^,]*/\"model_type\": \"gpt_neox\"/' '%s/config.json'", d);
    CHECK("(edit config)", system(cmd) == 0);
    CHECK("an unknown model_type is named", load_fails(d, LRUN_E_UNSUPPORTED, "model_type 'gpt_neox'"));
    snprintf(cmd, sizeof cmd, "sed -i 's/\"gpt_neox\"/\"llama\"/; s/\"hidden_size\":[^,]*/\"hidden_size\": 32/' "
             "'%s/config.json'", d);
    CHECK("(edit config)", system(cmd) == 0);
    CHECK("a weight of the wrong shape is named", load_fails(d, LRUN_E_FORMAT, "has shape"));
    snprintf(cmd, sizeof cmd, "sed -i 's/\"hidden_size\": 32/\"hidden_size\": 1e30/' '%s/config.json'", d);
    CHECK("(edit config)", system(cmd) == 0);
    CHECK("a size past 2^53 is named with its value",
          load_fails(d, LRUN_E_FORMAT, "\"hidden_size\" must be a whole number from 0 to 2^53, got 1e+30"));
    snprintf(p, sizeof p, "%s/config.json", d);
    unlink(p);
    CHECK("a missing config.json is named", load_fails(d, LRUN_E_IO, "config.json"));
    write_file(p, "{\"model_type\": \"llama\", \"hidden_size\": 64}");
    CHECK("a missing key is named", load_fails(d, LRUN_E_FORMAT, "missing key"));
    snprintf(p, sizeof p, "%s/empty", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p);
    CHECK("(mkdir)", system(cmd) == 0);
    CHECK("a directory without weights is named", load_fails(p, LRUN_E_IO, "model.safetensors"));
}

/* The directory's bytes do not depend on how many threads fill the rows
 * (each row is counter-based): one thread against three, trained-like
 * bf16 and sharded. */
static void test_threads(void)
{
    char a[320], b[320], cmd[1600];
    lrun_model_gen_spec s = spec(LRUN_DTYPE_BF16, 0);
    s.trained_stats = 1;
    snprintf(a, sizeof a, "%s/one-thread", dir);
    snprintf(b, sizeof b, "%s/three-threads", dir);
    const int one = lrun_model_generate_hf(a, &s, 2) == LRUN_OK;
    s.n_threads = 3;
    const int three = lrun_model_generate_hf(b, &s, 2) == LRUN_OK;
    snprintf(cmd, sizeof cmd,
             "cmp -s '%s/model-00001-of-00002.safetensors' '%s/model-00001-of-00002.safetensors' && "
             "cmp -s '%s/model-00002-of-00002.safetensors' '%s/model-00002-of-00002.safetensors'",
             a, b, a, b);
    CHECK("the HF generator writes the same bytes with 1 and 3 threads (trained-like bf16, 2 shards)",
          one && three && system(cmd) == 0);
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s/lrun_hf_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        printf("not ok 1 - mkdtemp\n1..1\n");
        return 1;
    }
    compare("f32", LRUN_DTYPE_F32, 1, 1);
    compare("f16-untied", LRUN_DTYPE_F16, 0, 1);
    compare("bf16-sharded", LRUN_DTYPE_BF16, 1, 3);
    compare_spec("llama3-rope", spec_arch("llama", 0, 8.0, 0), 1);
    compare_spec("mistral-swa", spec_arch("llama", 0, 0, 3), 1);
    compare_spec("qwen2", spec_arch("qwen2", 0, 0, 0), 2);
    compare_spec("qwen3", spec_arch("qwen3", 32, 0, 0), 1);
    compare_spec("phi3", spec_arch("phi3", 0, 0, 0), 1);
    test_threads();
    test_failures();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return CHECK_DONE();
}
