/* test_model_gen.c — lrun_random_fill and the random-model generator.
 *
 * The fill: chunks made separately equal one fill of the whole; the same
 * seed gives the same values in every dtype; values are uniform in range.
 * The generator: a tiny model in every weight dtype, read back with lrun's
 * reader (names, shapes, types, metadata, value ranges after dequantization),
 * the same bytes whatever the thread count, bad specs refused with no file
 * left; and two readers nobody here wrote: the `gguf` Python package (same
 * tensors, same dequantized sums) and llama.cpp through `xllamacpp` (loads
 * the model and tokenizes with its merges). Each is a SKIP when missing.
 */
#include "arch/arch.h"
#include "check.h"
#include "lrun.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];
static char path[128];

static const lrun_dtype all_dtypes[] = {LRUN_DTYPE_F32,  LRUN_DTYPE_F16,  LRUN_DTYPE_BF16,   LRUN_DTYPE_Q4_0,
                                        LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_K,   LRUN_DTYPE_Q6_K,
                                        LRUN_DTYPE_Q5_0, LRUN_DTYPE_Q5_1, LRUN_DTYPE_Q2_K,   LRUN_DTYPE_Q3_K,
                                        LRUN_DTYPE_Q5_K, LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_IQ4_XS};
enum { N_DTYPES = sizeof all_dtypes / sizeof all_dtypes[0] };

static size_t bytes_of(lrun_dtype d, int64_t n)
{
    size_t b = 0;
    lrun_dtype_row_bytes(d, n, &b);
    return b;
}

// ---------------------------------------------------------------- random fill

static void test_fill(void)
{
    enum { N = 4096, SPLIT = 1024 };
    char name[128];
    for (int k = 0; k < N_DTYPES; k++) {
        lrun_dtype d = all_dtypes[k];
        size_t nb = bytes_of(d, N), head = bytes_of(d, SPLIT);
        uint8_t *whole = malloc(nb), *parts = malloc(nb);
        lrun_status st = lrun_random_fill(d, whole, 0, N, 0.5f, 42);
        if (st == LRUN_OK) st = lrun_random_fill(d, parts + head, SPLIT, N - SPLIT, 0.5f, 42);
        if (st == LRUN_OK) st = lrun_random_fill(d, parts, 0, SPLIT, 0.5f, 42);
        snprintf(name, sizeof name, "fill %s: two chunks equal one fill", lrun_dtype_name(d));
        CHECK(name, st == LRUN_OK && memcmp(whole, parts, nb) == 0);
        free(whole);
        free(parts);
    }
    CHECK("fill refuses a first that is not whole blocks",
          lrun_random_fill(LRUN_DTYPE_Q8_0, (uint8_t[34]){0}, 16, 32, 1.0f, 1) == LRUN_E_ARG);
    CHECK("fill refuses an activation-only dtype",
          lrun_random_fill(LRUN_DTYPE_Q8_K, (uint8_t[292]){0}, 0, 256, 1.0f, 1) == LRUN_E_ARG);

    /* f32 (block size 1): any split, even inside one 4-value group */
    float a[11], b[11];
    lrun_random_fill(LRUN_DTYPE_F32, a, 0, 11, 1.0f, 7);
    lrun_random_fill(LRUN_DTYPE_F32, b, 0, 3, 1.0f, 7);
    lrun_random_fill(LRUN_DTYPE_F32, b + 3, 3, 8, 1.0f, 7);
    CHECK("fill f32: split at element 3 equals one fill", memcmp(a, b, sizeof a) == 0);

    /* range and moments of U(-s, s): mean 0, std s/sqrt(3) */
    enum { M = 1 << 16 };
    float *x = malloc(M * sizeof *x);
    uint16_t *h = malloc(M * sizeof *h);
    float *y = malloc(M * sizeof *y);
    const float s = 0.25f;
    lrun_random_fill(LRUN_DTYPE_F32, x, 0, M, s, 3);
    double sum = 0, sq = 0, lo = 1, hi = -1;
    for (int i = 0; i < M; i++) {
        sum += x[i];
        sq += (double)x[i] * x[i];
        lo = fmin(lo, x[i]);
        hi = fmax(hi, x[i]);
    }
    double mean = sum / M, sd = sqrt(sq / M - mean * mean);
    CHECK("fill values lie in (-scale, scale)", lo > -s && hi < s);
    CHECK("fill values reach both ends", lo < -0.99 * s && hi > 0.99 * s);
    CHECK_NEAR("fill mean is 0", mean, 0.0, 0.01 * s);
    CHECK_NEAR("fill std is scale/sqrt(3)", sd, s / sqrt(3.0), 0.01 * s);
    lrun_random_fill(LRUN_DTYPE_F32, y, 0, M, s, 4);
    CHECK("another seed, other values", memcmp(x, y, M * sizeof *x) != 0);
    /* one seed, one model: bf16 is the f32 values rounded */
    lrun_random_fill(LRUN_DTYPE_BF16, h, 0, M, s, 3);
    lrun_dtype_to_f32(LRUN_DTYPE_BF16, h, y, M);
    double err = 0;
    for (int i = 0; i < M; i++) err = fmax(err, fabs(y[i] - x[i]) / fabs(x[i]));
    CHECK("bf16 fill is the f32 fill rounded (relative error <= 2^-8)", err <= 1.0 / 256);
    free(x);
    free(h);
    free(y);
}

// ---------------------------------------------------------------- the generator

static lrun_model_gen_spec tiny(lrun_dtype d)
{
    /* K-quant rows are 256 elements: the tiny model widens for them */
    int k = lrun_dtype_block_elems(d) == 256;
    return (lrun_model_gen_spec){.n_layer = 2, .n_embd = k ? 256 : 64, .n_head = 4, .n_head_kv = 2,
                                 .n_ff = k ? 512 : 128, .n_vocab = 1000, .n_ctx = 256, .weight_dtype = d,
                                 .embd_dtype = d, .tied_embeddings = 1, .rope_freq_base = 10000, .rms_eps = 1e-5,
                                 .seed = 1, .n_threads = 2, .progress = 0};
}

static int64_t get_int(const lrun_gguf *g, const char *key)
{
    int64_t v = -1;
    lrun_gguf_get_i64(g, lrun_gguf_find_key(g, key), &v);
    return v;
}

static int str_is(const lrun_gguf *g, const char *key, const char *want)
{
    const char *s;
    size_t n;
    return lrun_gguf_get_str(g, lrun_gguf_find_key(g, key), &s, &n) == LRUN_OK && n == strlen(want) &&
           memcmp(s, want, n) == 0;
}

/* Checks the generated file at path against its spec. */
static void check_model(const lrun_model_gen_spec *sp)
{
    char name[160];
    const char *dn = lrun_dtype_name(sp->weight_dtype);
    lrun_gguf *g = NULL;
    lrun_status st = lrun_gguf_open(&g, path);
    snprintf(name, sizeof name, "%s model: lrun's reader opens it", dn);
    CHECK(name, st == LRUN_OK);
    if (st != LRUN_OK) {
        printf("#   %s\n", lrun_last_error());
        return;
    }
    const int64_t hd = sp->n_embd / sp->n_head, kv = hd * sp->n_head_kv;
    snprintf(name, sizeof name, "%s model: metadata", dn);
    CHECK(name, str_is(g, "general.architecture", "llama") && get_int(g, "llama.block_count") == sp->n_layer &&
                    get_int(g, "llama.embedding_length") == sp->n_embd &&
                    get_int(g, "llama.feed_forward_length") == sp->n_ff &&
                    get_int(g, "llama.attention.head_count") == sp->n_head &&
                    get_int(g, "llama.attention.head_count_kv") == sp->n_head_kv &&
                    get_int(g, "llama.rope.dimension_count") == hd && get_int(g, "llama.context_length") == sp->n_ctx &&
                    str_is(g, "tokenizer.ggml.model", "gpt2") && get_int(g, "tokenizer.ggml.bos_token_id") == 256);
    lrun_gguf_type et;
    int64_t n_tok = 0, n_merge = 0, n_type = 0;
    lrun_gguf_get_arr(g, lrun_gguf_find_key(g, "tokenizer.ggml.tokens"), &et, &n_tok);
    lrun_gguf_get_arr(g, lrun_gguf_find_key(g, "tokenizer.ggml.merges"), &et, &n_merge);
    lrun_gguf_get_arr(g, lrun_gguf_find_key(g, "tokenizer.ggml.token_type"), &et, &n_type);
    int64_t t256 = 0;
    lrun_gguf_get_arr_i64(g, lrun_gguf_find_key(g, "tokenizer.ggml.token_type"), 256, &t256);
    const char *s;
    size_t n;
    lrun_gguf_get_arr_str(g, lrun_gguf_find_key(g, "tokenizer.ggml.tokens"), 32, &s, &n);
    int space_ok = n == 2 && memcmp(s, "\xc4\xa0", 2) == 0; /* byte 0x20 is Ġ */
    snprintf(name, sizeof name, "%s model: vocabulary (%lld tokens, byte tokens, specials, merges)", dn,
             (long long)sp->n_vocab);
    CHECK(name, n_tok == sp->n_vocab && n_type == sp->n_vocab && n_merge == sp->n_vocab - 259 && t256 == 3 && space_ok);

    /* every tensor: name, shape, type, values in range */
    int64_t want_tensors = 9 * sp->n_layer + 2 + (sp->tied_embeddings ? 0 : 1);
    snprintf(name, sizeof name, "%s model: %lld tensors", dn, (long long)want_tensors);
    CHECK(name, lrun_gguf_tensor_count(g) == want_tensors);
    int shapes_ok = 1, ranges_ok = 1;
    for (int64_t i = -1; i <= sp->n_layer; i++) {
        const struct { const char *what; int64_t ne0, ne1; lrun_dtype d; } blk[] = {
            {"attn_norm", sp->n_embd, 0, LRUN_DTYPE_F32},   {"attn_q", sp->n_embd, sp->n_embd, sp->weight_dtype},
            {"attn_k", sp->n_embd, kv, sp->weight_dtype},     {"attn_v", sp->n_embd, kv, sp->weight_dtype},
            {"attn_output", sp->n_embd, sp->n_embd, sp->weight_dtype}, {"ffn_norm", sp->n_embd, 0, LRUN_DTYPE_F32},
            {"ffn_gate", sp->n_embd, sp->n_ff, sp->weight_dtype}, {"ffn_up", sp->n_embd, sp->n_ff, sp->weight_dtype},
            {"ffn_down", sp->n_ff, sp->n_embd, sp->weight_dtype}};
        const struct { const char *what; int64_t ne0, ne1; lrun_dtype d; } top[] = {
            {"token_embd.weight", sp->n_embd, sp->n_vocab, sp->embd_dtype},
            {"output_norm.weight", sp->n_embd, 0, LRUN_DTYPE_F32},
            {"output.weight", sp->n_embd, sp->n_vocab, sp->embd_dtype}};
        int count = i < 0 ? (sp->tied_embeddings ? 2 : 3) : i < sp->n_layer ? 9 : 0;
        for (int j = 0; j < count; j++) {
            char tn[64];
            int64_t ne0 = i < 0 ? top[j].ne0 : blk[j].ne0, ne1 = i < 0 ? top[j].ne1 : blk[j].ne1;
            lrun_dtype d = i < 0 ? top[j].d : blk[j].d;
            if (i < 0) snprintf(tn, sizeof tn, "%s", top[j].what);
            else snprintf(tn, sizeof tn, "blk.%lld.%s.weight", (long long)i, blk[j].what);
            int64_t t = lrun_gguf_find_tensor(g, tn);
            int ok = t >= 0 && lrun_gguf_tensor_dtype(g, t) == d && lrun_gguf_tensor_ndim(g, t) == (ne1 ? 2 : 1) &&
                     lrun_gguf_tensor_dim(g, t, 0) == ne0 && lrun_gguf_tensor_dim(g, t, 1) == (ne1 ? ne1 : 1);
            if (!ok) {
                printf("#   %s: missing or wrong shape/type\n", tn);
                shapes_ok = 0;
                continue;
            }
            int64_t ne = ne0 * (ne1 ? ne1 : 1);
            float *v = malloc((size_t)ne * sizeof *v);
            lrun_dtype_to_f32(d, lrun_gguf_tensor_data(g, t), v, ne);
            /* norms 1 ± 0.02; weights within 1/sqrt(fan_in), plus the
             * quantizers' overshoot (K-quant scales are 6-bit; Q2_K's 4-bit
             * scales and mins, and its 4 levels, overshoot and spread more) */
            const int q2 = d == LRUN_DTYPE_Q2_K;
            double centre = ne1 ? 0.0 : 1.0, lim = ne1 ? 1.0 / sqrt((double)ne0) * (q2 ? 1.2 : 1.08) : 0.0201;
            double sum = 0, sq = 0;
            for (int64_t e = 0; e < ne; e++) {
                if (!(fabs(v[e] - centre) <= lim)) ok = 0;
                sum += v[e] - centre;
                sq += (v[e] - centre) * (v[e] - centre);
            }
            double sd = sqrt(sq / (double)ne), want_sd = (ne1 ? 1.0 / sqrt((double)ne0) : 0.02) / sqrt(3.0);
            /* spread checks catch a fill that writes zeros or constants */
            if (ne >= 4096 && fabs(sd - want_sd) > (q2 ? 0.15 : 0.1) * want_sd) ok = 0;
            if (!ok) {
                printf("#   %s: values out of range or spread %g (want %g)\n", tn, sd, want_sd);
                ranges_ok = 0;
            }
            free(v);
        }
    }
    snprintf(name, sizeof name, "%s model: every tensor has its name, shape and type", dn);
    CHECK(name, shapes_ok);
    snprintf(name, sizeof name, "%s model: values dequantize into range with the expected spread", dn);
    CHECK(name, ranges_ok);
    lrun_gguf_close(g);
}

static void test_generate(void)
{
    char name[160];
    for (int k = 0; k < N_DTYPES; k++) {
        lrun_model_gen_spec sp = tiny(all_dtypes[k]);
        if (all_dtypes[k] == LRUN_DTYPE_Q4_0) { /* one untied model, with a separate embedding type */
            sp.tied_embeddings = 0;
            sp.embd_dtype = LRUN_DTYPE_Q8_0;
        }
        lrun_status st = lrun_model_generate(path, &sp);
        snprintf(name, sizeof name, "generate a tiny %s model", lrun_dtype_name(all_dtypes[k]));
        CHECK(name, st == LRUN_OK);
        if (st != LRUN_OK) printf("#   %s\n", lrun_last_error());
        else check_model(&sp);
    }
}

/* A Q4_K_M-like recipe: attn_v and ffn_down of llama.cpp's use_more_bits
 * layers (n_layer 8: 0, 3, 6, 7) and output.weight in Q6_K, the rest Q4_K. */
static void test_mix(void)
{
    lrun_model_gen_spec sp = tiny(LRUN_DTYPE_Q4_K);
    sp.n_layer = 8;
    sp.tied_embeddings = 0;
    sp.mix_dtype = LRUN_DTYPE_Q6_K;
    lrun_status st = lrun_model_generate(path, &sp);
    lrun_gguf *g = NULL;
    int ok = st == LRUN_OK && lrun_gguf_open(&g, path) == LRUN_OK;
    for (int i = 0; ok && i < 8; i++) {
        static const char *what[] = {"attn_q", "attn_v", "ffn_down", "ffn_up"};
        const int more = i == 0 || i == 3 || i == 6 || i == 7;
        for (int j = 0; j < 4; j++) {
            char tn[64];
            snprintf(tn, sizeof tn, "blk.%d.%s.weight", i, what[j]);
            const lrun_dtype want = more && (j == 1 || j == 2) ? LRUN_DTYPE_Q6_K : LRUN_DTYPE_Q4_K;
            ok &= lrun_gguf_tensor_dtype(g, lrun_gguf_find_tensor(g, tn)) == want;
        }
    }
    ok = ok && lrun_gguf_tensor_dtype(g, lrun_gguf_find_tensor(g, "output.weight")) == LRUN_DTYPE_Q6_K &&
         lrun_gguf_tensor_dtype(g, lrun_gguf_find_tensor(g, "token_embd.weight")) == LRUN_DTYPE_Q4_K &&
         get_int(g, "general.file_type") == 15;
    if (g) lrun_gguf_close(g);
    CHECK("mix_dtype Q6_K over Q4_K: attn_v/ffn_down of layers 0, 3, 6, 7 and output in Q6_K, file type Q4_K_M", ok);
    sp.mix_dtype = LRUN_DTYPE_Q8_K;
    CHECK("mix_dtype: an activation-only type is refused naming the field",
          lrun_model_generate(path, &sp) == LRUN_E_ARG && strstr(lrun_last_error(), "spec.mix_dtype") != NULL);
}

static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static void test_determinism_and_errors(void)
{
    char other[160];
    snprintf(other, sizeof other, "%s/other.gguf", dir);
    lrun_model_gen_spec sp = tiny(LRUN_DTYPE_Q8_0);
    sp.n_threads = 1;
    lrun_status st = lrun_model_generate(path, &sp);
    sp.n_threads = 3;
    if (st == LRUN_OK) st = lrun_model_generate(other, &sp);
    CHECK("1 thread and 3 threads write the same bytes", st == LRUN_OK && same_file(path, other));
    sp.seed = 2;
    lrun_model_generate(other, &sp);
    CHECK("another seed writes other bytes", !same_file(path, other));
    unlink(other);

    sp = tiny(LRUN_DTYPE_BF16);
    sp.n_head = 3;
    st = lrun_model_generate(other, &sp);
    CHECK("n_embd not a multiple of n_head: arg error naming the field",
          st == LRUN_E_ARG && strstr(lrun_last_error(), "spec.n_embd") != NULL);
    CHECK("a refused spec leaves no file", access(other, F_OK) != 0);
    sp = tiny(LRUN_DTYPE_BF16);
    sp.n_vocab = 100;
    CHECK("n_vocab below 259 is refused", lrun_model_generate(other, &sp) == LRUN_E_ARG &&
                                             strstr(lrun_last_error(), "spec.n_vocab") != NULL);
    sp = tiny(LRUN_DTYPE_BF16);
    sp.weight_dtype = LRUN_DTYPE_Q4_K; /* rows of 64 are not whole q4_K blocks */
    st = lrun_model_generate(other, &sp);
    CHECK("q4_K at width 64: arg error naming the tensor",
          st == LRUN_E_ARG && strstr(lrun_last_error(), "blk.0.attn_q.weight") != NULL);
    CHECK("... and no file is left", access(other, F_OK) != 0);
    sp = tiny(LRUN_DTYPE_BF16);
    CHECK("an unwritable path is an io error", lrun_model_generate("/nonexistent-dir/m.gguf", &sp) == LRUN_E_IO);
}

/* The documented content rule (docs/gguf.md): tensor `name` holds
 * lrun_random_fill(dtype, 0, nelem, scale, seed ^ FNV-1a-64(name)), scale
 * 1/sqrt(ne[0]) for matrices; norms are f32 1 + fill(scale 0.02). A model of
 * ~180 MB spans three 64 MB buffers, with tensors cut across buffers, so the
 * double-buffered pipeline is checked byte for byte. */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

static void test_content(void)
{
    lrun_model_gen_spec sp = tiny(LRUN_DTYPE_BF16);
    sp.n_embd = 1024;
    sp.n_head = sp.n_head_kv = 8;
    sp.n_ff = 2816;
    sp.n_vocab = 32000;
    sp.tied_embeddings = 0;
    sp.seed = 12345;
    sp.n_threads = 0;
    lrun_status st = lrun_model_generate(path, &sp);
    CHECK("generate a 180 MB bf16 model (three buffers)", st == LRUN_OK);
    lrun_gguf *g = NULL;
    if (st != LRUN_OK || lrun_gguf_open(&g, path) != LRUN_OK) {
        printf("#   %s\n", lrun_last_error());
        return;
    }
    int all = lrun_gguf_tensor_count(g) == 21;
    size_t cap = 0;
    uint8_t *want = NULL;
    for (int64_t t = 0; all && t < lrun_gguf_tensor_count(g); t++) {
        const char *tn = lrun_gguf_tensor_name(g, t);
        lrun_dtype d = lrun_gguf_tensor_dtype(g, t);
        int64_t ne0 = lrun_gguf_tensor_dim(g, t, 0), ne = ne0 * lrun_gguf_tensor_dim(g, t, 1);
        size_t nb = lrun_gguf_tensor_bytes(g, t);
        if (nb > cap) {
            uint8_t *grown = realloc(want, nb);
            if (!grown) { all = 0; break; }
            want = grown;
            cap = nb;
        }
        int norm = lrun_gguf_tensor_ndim(g, t) == 1;
        float scale = norm ? 0.02f : (float)(1.0 / sqrt((double)ne0));
        lrun_random_fill(d, want, 0, ne, scale, sp.seed ^ fnv1a(tn));
        if (norm)
            for (int64_t i = 0; i < ne; i++) ((float *)want)[i] += 1.0f;
        if (memcmp(want, lrun_gguf_tensor_data(g, t), nb) != 0) {
            printf("#   %s differs from its documented content\n", tn);
            all = 0;
        }
    }
    free(want);
    CHECK("every tensor holds exactly its documented random content", all);
    lrun_gguf_close(g);
}

// ---------------------------------------------------------------- independent readers

static int python_has(const char *module)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "python3 -c 'import %s' >/dev/null 2>&1", module);
    return system(cmd) == 0;
}

/* The gguf package lists every tensor (name, type id, dims, sum of the
 * dequantized values); lrun's reader and codecs must agree. */
static void gguf_package_case(lrun_dtype weights, lrun_dtype embd, lrun_dtype mix)
{
    lrun_model_gen_spec sp = tiny(weights);
    sp.tied_embeddings = 0;
    sp.embd_dtype = embd;
    sp.mix_dtype = mix;
    lrun_model_generate(path, &sp);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import sys\nfrom gguf import GGUFReader, dequantize\nr = GGUFReader(sys.argv[1])\n"
             "print(len(r.fields) - 3)\nfor t in r.tensors: print(t.name, int(t.tensor_type), "
             "*([int(x) for x in t.shape] + [1] * (4 - len(t.shape))), "
             "float(dequantize(t.data, t.tensor_type).astype(\"float64\").sum()))' %s",
             path);
    FILE *p = popen(cmd, "r");
    lrun_gguf *g = NULL;
    lrun_gguf_open(&g, path);
    long long n_kv = -1;
    int lines = 0, same = p && g && fscanf(p, "%lld", &n_kv) == 1 && n_kv == lrun_gguf_kv_count(g);
    char tn[128];
    int type;
    long long ne[4];
    double pysum;
    while (same && p && fscanf(p, "%127s %d %lld %lld %lld %lld %lf", tn, &type, &ne[0], &ne[1], &ne[2], &ne[3], &pysum) == 7) {
        int64_t t = lrun_gguf_find_tensor(g, tn), n_el = 1;
        same = t == lines && (int)lrun_gguf_tensor_dtype(g, t) == type;
        for (int d = 0; d < 4; d++) {
            same = same && lrun_gguf_tensor_dim(g, t, d) == ne[d];
            n_el *= ne[d];
        }
        if (!same) break;
        int64_t ne = n_el;
        float *v = malloc((size_t)ne * sizeof *v);
        lrun_dtype_to_f32(lrun_gguf_tensor_dtype(g, t), lrun_gguf_tensor_data(g, t), v, ne);
        double sum = 0;
        for (int64_t e = 0; e < ne; e++) sum += v[e];
        free(v);
        if (fabs(sum - pysum) > 1e-4 * (1 + fabs(pysum))) {
            printf("#   %s: lrun sum %.9g, gguf package %.9g\n", tn, sum, pysum);
            same = 0;
        }
        lines++;
    }
    int rc = p ? pclose(p) : -1;
    char name[200];
    snprintf(name, sizeof name, "gguf Python package: same keys, tensors, types, shapes and dequantized sums "
             "(%s weights, %s embeddings%s%s)", lrun_dtype_name(weights), lrun_dtype_name(embd),
             mix ? ", mix " : "", mix ? lrun_dtype_name(mix) : "");
    CHECK(name, same && rc == 0 && g && lines == lrun_gguf_tensor_count(g));
    lrun_gguf_close(g);
}

static void test_gguf_package(void)
{
    if (!python_has("gguf")) {
        printf("ok %d - gguf Python package reads the generated model # SKIP gguf package not installed\n", ++check_count);
        return;
    }
    gguf_package_case(LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q6_K, LRUN_DTYPE_F32);
    /* the newer types gguf-py decodes (not IQ4_NL/IQ4_XS) */
    gguf_package_case(LRUN_DTYPE_Q5_K, LRUN_DTYPE_Q3_K, LRUN_DTYPE_Q2_K);
    gguf_package_case(LRUN_DTYPE_Q5_0, LRUN_DTYPE_Q5_1, LRUN_DTYPE_F32);
}

/* llama.cpp (through xllamacpp's server, loopback only) loads the model,
 * tokenizes " hello world" with the generated merges and generates. */
static void test_llamacpp(void)
{
    if (!python_has("xllamacpp")) {
        printf("ok %d - llama.cpp loads the generated model # SKIP xllamacpp not installed\n", ++check_count);
        return;
    }
    static const lrun_dtype dts[] = {LRUN_DTYPE_BF16, LRUN_DTYPE_Q4_K};
    for (int k = 0; k < 2; k++) {
        char name[160], cmd[2048];
        lrun_model_gen_spec sp = tiny(dts[k]);
        lrun_model_generate(path, &sp);
        snprintf(cmd, sizeof cmd,
                 "python3 -c 'import json, sys, urllib.request, xllamacpp\n"
                 "p = xllamacpp.CommonParams()\np.model.path = sys.argv[1]\np.n_ctx = 256\np.n_parallel = 1\n"
                 "p.cpuparams.n_threads = 2\np.cpuparams_batch.n_threads = 2\n"
                 "p.hostnames = [\"127.0.0.1\"]\np.port = 0\ns = xllamacpp.Server(p)\n"
                 "def post(path, body):\n"
                 "    req = urllib.request.Request(s.listening_address + path, data=json.dumps(body).encode(), "
                 "headers={\"Content-Type\": \"application/json\"})\n"
                 "    return json.load(urllib.request.urlopen(req, timeout=60))\n"
                 "ids = post(\"/tokenize\", {\"content\": \" hello world\", \"add_special\": False})[\"tokens\"]\n"
                 "r = post(\"/completion\", {\"prompt\": ids, \"n_predict\": 4, \"temperature\": 0, \"return_tokens\": True})\n"
                 "print(len(ids), *ids)\nprint(len(r[\"tokens\"]))' %s 2>/dev/null",
                 path);
        FILE *p = popen(cmd, "r");
        lrun_gguf *g = NULL;
        lrun_gguf_open(&g, path);
        int n_ids = 0, n_gen = -1, ok = p && g && fscanf(p, "%d", &n_ids) == 1 && n_ids > 0 && n_ids < 32;
        char text[256] = "";
        for (int i = 0; ok && i < n_ids; i++) {
            long long id;
            const char *s;
            size_t n;
            ok = fscanf(p, "%lld", &id) == 1 &&
                 lrun_gguf_get_arr_str(g, lrun_gguf_find_key(g, "tokenizer.ggml.tokens"), id, &s, &n) == LRUN_OK &&
                 strlen(text) + n < sizeof text;
            if (ok) strncat(text, s, n);
        }
        if (ok) ok = fscanf(p, "%d", &n_gen) == 1;
        int rc = p ? pclose(p) : -1;
        lrun_gguf_close(g);
        snprintf(name, sizeof name, "llama.cpp loads the %s model, tokenizes with its merges and generates",
                 lrun_dtype_name(dts[k]));
        /* 6 tokens ("Ġh" "el" "lo" "Ġw" "or" "ld"), not 12 single bytes: the merges were used */
        CHECK(name, ok && rc == 0 && n_ids == 6 && strcmp(text, "\xc4\xa0hello\xc4\xa0world") == 0 && n_gen == 4);
        if (!(ok && rc == 0 && n_ids == 6)) printf("#   rc %d, %d ids, text '%s', %d generated\n", rc, n_ids, text, n_gen);
    }
}

/* Every architecture: the generator writes what its description requires,
 * under its own key prefix, and lrun loads it back with the description's
 * RoPE pairs; an unknown architecture or an odd head_dim is refused. */
static void test_archs(void)
{
    char name[160];
    for (int i = 0; lrun_arch_known(i); i++) {
        const lrun_arch *a = lrun_arch_known(i);
        lrun_model_gen_spec sp = tiny(LRUN_DTYPE_F16);
        sp.arch = a->name;
        sp.head_dim = 32; /* not n_embd / n_head (16): explicit key_length */
        if (lrun_arch_has_experts(a)) sp.n_expert = 4, sp.n_expert_used = 2; /* qwen3moe */
        lrun_status st = lrun_model_generate(path, &sp);
        lrun_model *m = NULL;
        const lrun_load_opts o = {.device = "cpu", .n_threads = 1, .rope_style = -1};
        if (st == LRUN_OK) st = lrun_model_load(&m, path, &o);
        const lrun_model_info *in = m ? lrun_model_get_info(m) : NULL;
        int tensors = m != NULL;
        for (int j = 0; m && j < a->n_tensors; j++) {
            const lrun_arch_tensor_desc *d = &a->tensors[j];
            char tn[64];
            snprintf(tn, sizeof tn, d->name, 1);
            tensors &= !d->required || lrun_model_find_tensor(m, tn) != NULL;
        }
        snprintf(name, sizeof name, "%s: generated with every required tensor, loads with its own keys and RoPE pairs",
                 a->name);
        CHECK(name, st == LRUN_OK && in && strcmp(in->arch, a->name) == 0 && in->head_dim == 32 &&
                        in->n_rot == 32 && in->rope_style == a->rope_style && tensors);
        if (st != LRUN_OK) printf("#   %s\n", lrun_last_error());
        lrun_model_free(m);
    }
    /* phi3: the fused attn_qkv and ffn_up [gate; up] are split by rows into
     * views of the file's bytes, named as llama's tensors */
    lrun_model_gen_spec p3 = tiny(LRUN_DTYPE_Q8_0);
    p3.arch = "phi3";
    lrun_model *pm = NULL;
    const lrun_load_opts po = {.device = "cpu", .n_threads = 1, .rope_style = -1};
    int pok = lrun_model_generate(path, &p3) == LRUN_OK && lrun_model_load(&pm, path, &po) == LRUN_OK;
    const char *const part[] = {"blk.1.attn_q.weight", "blk.1.attn_k.weight", "blk.1.attn_v.weight",
                                "blk.1.ffn_gate.weight", "blk.1.ffn_up.weight"};
    const int64_t rows[] = {64, 32, 32, 128, 128};
    lrun_tensor *pt[5] = {0};
    for (int i = 0; pok && i < 5; i++) {
        pt[i] = lrun_model_find_tensor(pm, part[i]);
        pok = pt[i] && lrun_tensor_dim(pt[i], 0) == 64 && lrun_tensor_dim(pt[i], 1) == rows[i];
    }
    /* contiguous: each part starts where the one before it ends */
    pok = pok && (const char *)lrun_tensor_host_data(pt[1]) == (const char *)lrun_tensor_host_data(pt[0]) + lrun_tensor_bytes(pt[0]) &&
          (const char *)lrun_tensor_host_data(pt[2]) == (const char *)lrun_tensor_host_data(pt[1]) + lrun_tensor_bytes(pt[1]) &&
          (const char *)lrun_tensor_host_data(pt[4]) == (const char *)lrun_tensor_host_data(pt[3]) + lrun_tensor_bytes(pt[3]);
    CHECK("phi3: attn_qkv and ffn_up are split by rows into q, k, v and gate, up (views of the file's bytes)", pok);
    lrun_model_free(pm);

    /* Llama 3.1's rope_scaling as rope_freqs.weight: the high frequencies
     * unscaled, the low ones divided by the factor, smoothed between (head 64,
     * base 500000: 15 unscaled, 3 smoothed, 14 scaled) */
    lrun_model_gen_spec r3 = tiny(LRUN_DTYPE_F32);
    r3.head_dim = 64;
    r3.rope_freq_base = 500000;
    r3.rope_llama3_factor = 8;
    lrun_model *m = NULL;
    const lrun_load_opts o = {.device = "cpu", .n_threads = 1, .rope_style = -1};
    int ok = lrun_model_generate(path, &r3) == LRUN_OK && lrun_model_load(&m, path, &o) == LRUN_OK;
    lrun_tensor *rf = ok ? lrun_model_find_tensor(m, "rope_freqs.weight") : NULL;
    float f[32] = {0};
    ok = rf && lrun_tensor_nelements(rf) == 32 && lrun_tensor_read_f32(rf, 0, 32, f) == LRUN_OK;
    int ones = 0, eights = 0, mono = 1;
    for (int i = 0; ok && i < 32; i++) {
        ones += f[i] == 1.0f;
        eights += f[i] == 8.0f;
        if (i) mono &= f[i] >= f[i - 1];
    }
    CHECK("rope_llama3_factor writes Llama 3.1's rope_freqs.weight (1 for high, 8 for low frequencies, smooth between)",
          ok && ones == 15 && eights == 14 && mono && f[15] > 1.5f && f[17] < 5.3f);
    lrun_model_free(m);
    r3.rope_llama3_factor = 0.5;
    CHECK("a rope_llama3_factor below 1 is refused", lrun_model_generate(path, &r3) == LRUN_E_ARG);

    /* phi3 LongRoPE: both factor tensors and the keys; refused for an architecture without it */
    lrun_model_gen_spec lr = tiny(LRUN_DTYPE_F32);
    lr.arch = "phi3";
    lr.rope_orig_ctx = 64;
    lrun_gguf *lg = NULL;
    int lrok = lrun_model_generate(path, &lr) == LRUN_OK && lrun_gguf_open(&lg, path) == LRUN_OK &&
               lrun_gguf_find_tensor(lg, "rope_factors_long.weight") >= 0 &&
               lrun_gguf_find_tensor(lg, "rope_factors_short.weight") >= 0 &&
               get_int(lg, "phi3.rope.scaling.original_context_length") == 64 &&
               lrun_gguf_find_key(lg, "phi3.rope.scaling.attn_factor") >= 0;
    lrun_gguf_close(lg);
    lr.arch = "llama";
    lrok = lrok && lrun_model_generate(path, &lr) == LRUN_E_ARG && strstr(lrun_last_error(), "rope_orig_ctx");
    CHECK("spec.rope_orig_ctx writes phi3's LongRoPE factors and keys, and only for phi3", lrok);

    /* Mistral's sliding window: the key only when asked for */
    lrun_model_gen_spec sw = tiny(LRUN_DTYPE_F32);
    sw.sliding_window = 8;
    lrun_gguf *g = NULL;
    int swok = lrun_model_generate(path, &sw) == LRUN_OK && lrun_gguf_open(&g, path) == LRUN_OK &&
               get_int(g, "llama.attention.sliding_window") == 8;
    lrun_gguf_close(g);
    g = NULL;
    sw.sliding_window = 0;
    swok = swok && lrun_model_generate(path, &sw) == LRUN_OK && lrun_gguf_open(&g, path) == LRUN_OK &&
           lrun_gguf_find_key(g, "llama.attention.sliding_window") < 0;
    lrun_gguf_close(g);
    CHECK("spec.sliding_window writes llama.attention.sliding_window, and no key without one", swok);

    lrun_model_gen_spec sp = tiny(LRUN_DTYPE_F32);
    sp.arch = "gpt9";
    CHECK("an unknown spec.arch is refused, naming the known ones",
          lrun_model_generate(path, &sp) == LRUN_E_ARG && strstr(lrun_last_error(), "gpt9") &&
              strstr(lrun_last_error(), "llama"));
    sp.arch = NULL;
    sp.head_dim = 7;
    CHECK("an odd head_dim is refused", lrun_model_generate(path, &sp) == LRUN_E_ARG &&
                                            strstr(lrun_last_error(), "head_dim"));
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s", "/tmp/lrun-test-model-gen-XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 2; }
    snprintf(path, sizeof path, "%s/m.gguf", dir);

    test_fill();
    test_generate();
    test_mix();
    test_determinism_and_errors();
    test_content();
    test_gguf_package();
    test_llamacpp();
    test_archs();

    unlink(path);
    rmdir(dir);
    return CHECK_DONE();
}
