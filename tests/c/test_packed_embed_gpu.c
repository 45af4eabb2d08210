/* test_packed_embed_gpu.c — a packed embedding table on the device, its rows
 * gathered by token id (lrun_k_packed_embed, kernels/packed_gemv.cu; the
 * engine's LRUN_PACKED_EMBED_GATHER=1, runtime/cuda/engine_cuda_packed.c)
 * against the table decoded whole into the packed scratch then lrun_k_embed
 * (the path before it), bit for bit; docs/packed.md "The embedding table".
 *
 * Kernel: bf16 and f16 tables, and bf16 tables packed PEX2
 * (lrun_k_pex2_embed; trained-like; exponents over 40 values, tier
 * 3 everywhere), rows of 256, 576 and 4104 (rows that start inside a codec
 * block and straddle two), 1 and 37 tokens with repeats, first and last
 * rows, a negative id (zeros, as lrun_k_embed gives); an id past the table
 * gives zeros too; the argument checks.
 * Engine: a bf16 and an f16 model (rows of 576) packed, every weight on the
 * device, with a STATIC cache (decode steps replayed from CUDA graphs) and
 * without: logits of a 20-token prompt (one prefill chunk) and 8 greedy
 * decode steps (n = 1) with the gather equal those without it and those of
 * the plain GGUF; a tied head (the table is the head: the scratch keeps
 * it); with the head plain, the gather's scratch no longer holds the table.
 *
 * `test_packed_embed_gpu --bench` also times one step's embedding on a
 * 7B-shaped table (32000 x 4096 bf16, trained-like): decoded whole, then
 * lrun_k_embed, against the gather, for n = 1 and a 512-token chunk.
 * One TAP SKIP line where no GPU is visible. */
#include "check.h"
#include "fixtures.h"
#include "lrun.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "kernels.h"
#include "gpu_fixture.h"
#include "core/threadpool.h"
#include "model/random_fill.h"
#include "packed/codec.h"
#include "quant/quant.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* A table of rows x k: plain values, packed bytes and layout on the host. */
typedef struct table {
    int dtype;
    int64_t rows, k;
    uint16_t *plain;
    uint8_t *packed;
    size_t bytes;
    lrun_packed_layout lay;
} table;

/* The trained-like fill over a pool's threads, each a run of whole 256-value blocks. */
struct fill {
    int dtype;
    uint16_t *dst;
    int64_t n; /* a multiple of 256 */
    uint64_t seed;
    int failed;
};

static void fill_task(void *ctx, int ith, int nth)
{
    struct fill *f = ctx;
    const int64_t blocks = f->n / 256, b0 = blocks * ith / nth, b1 = blocks * (ith + 1) / nth;
    if (b1 > b0 && lrun_random_fill_trained((lrun_dtype)f->dtype, f->dst + b0 * 256, b0 * 256, (b1 - b0) * 256, 0.02f,
                                            f->seed) != LRUN_OK)
        f->failed = 1;
}

/* kind 0: trained-like; 1: exponents over 40 values. pool may be NULL. */
/* 1: table_make packs bf16 tables PEX2 (kernels/packed_pex2.cu), else PEX1. */
static int g_pex2;

static int table_make_mt(table *t, int dtype, int64_t rows, int64_t k, int kind, struct lrun_threadpool *pool)
{
    memset(t, 0, sizeof *t);
    t->dtype = dtype, t->rows = rows, t->k = k;
    const int64_t n = rows * k, whole = (n + 255) / 256 * 256;
    const int pex2 = g_pex2 && dtype == LRUN_DTYPE_BF16;
    const size_t cap = pex2 ? lrun_pex2_bound((uint64_t)n) : lrun_packed_bound(dtype, (uint64_t)n);
    t->plain = malloc((size_t)whole * 2);
    t->packed = malloc(cap);
    if (!t->plain || !t->packed) return 0;
    if (kind == 0) {
        struct fill f = {dtype, t->plain, whole, 11 + (uint64_t)k, 0};
        if (pool) lrun_threadpool_run(pool, fill_task, &f);
        else fill_task(&f, 0, 1);
        if (f.failed) return 0;
    } else
        for (int64_t i = 0; i < n; i++) {
            const uint32_t r = rnd(), e = dtype == LRUN_DTYPE_BF16 ? 100 + r % 40 : 1 + r % 30;
            t->plain[i] = dtype == LRUN_DTYPE_BF16 ? (uint16_t)(((r >> 8) & 0x807f) | (e << 7))
                                                   : (uint16_t)(((r >> 8) & 0x83ff) | (e << 10));
        }
    const lrun_status enc = pex2 ? lrun_pex2_encode(t->packed, cap, &t->bytes, t->plain, (uint64_t)n, pool)
                                 : lrun_packed_encode(t->packed, cap, &t->bytes, dtype, t->plain, (uint64_t)n, pool);
    return enc == LRUN_OK && lrun_packed_validate_mt(&t->lay, t->packed, t->bytes, "test table", pool) == LRUN_OK;
}

static int table_make(table *t, int dtype, int64_t rows, int64_t k, int kind)
{
    return table_make_mt(t, dtype, rows, k, kind, NULL);
}

static void table_free(table *t)
{
    free(t->plain), free(t->packed);
    memset(t, 0, sizeof *t);
}

// ---------------------------------------------------------------- the kernel

/* The gather of n_tok ids against the whole decode + lrun_k_embed (ids >= 0
 * there: lrun_k_embed reads any id it is given) and against the CPU's rows;
 * an id past the table separately (zeros). */
static int kernel_case(const table *t, const int32_t *ids, int64_t n_tok)
{
    dreset();
    /* room for at least 2 tokens: the past-the-table check below gathers 2 */
    const int64_t room = n_tok < 2 ? 2 : n_tok;
    const size_t out_bytes = (size_t)(n_tok * t->k) * 4, room_bytes = (size_t)(room * t->k) * 4;
    void *d_packed = dcopy(t->packed, t->bytes);
    uint16_t *d_plain = dbuf((size_t)(t->rows * t->k) * 2);
    int32_t *d_ids = dbuf((size_t)room * 4);
    up(d_ids, ids, (size_t)n_tok * 4);
    float *d_a = dbuf(room_bytes), *d_b = dbuf(room_bytes);
    float *a = malloc(room_bytes), *b = malloc(room_bytes);
    int ok = a && b;
    /* whole: the engine's path without the gather */
    ok = ok && ran(lrun_k_packed_decode(d_plain, d_packed, &t->lay, 0, t->lay.n, stream)) &&
         ran(lrun_k_embed((lrun_dtype)t->dtype, d_plain, (size_t)t->k * 2, t->k, d_ids, n_tok, d_a, stream)) &&
         ran(lrun_k_packed_embed(d_packed, &t->lay, t->k, d_ids, n_tok, d_b, stream));
    if (ok) down(a, d_a, out_bytes), down(b, d_b, out_bytes);
    ok = ok && !memcmp(a, b, out_bytes);
    for (int64_t i = 0; ok && i < n_tok; i++) /* and the CPU's conversion of the plain rows */
        for (int64_t c = 0; c < t->k; c++) {
            const int32_t id = ids[i];
            const uint16_t h = id >= 0 ? t->plain[(int64_t)id * t->k + c] : 0;
            const float want = id < 0 ? 0.0f : t->dtype == LRUN_DTYPE_BF16 ? lrun_bf16_to_f32(h) : lrun_f16_to_f32(h);
            ok &= !memcmp(&b[i * t->k + c], &want, 4);
        }
    /* an id past the table: zeros, nothing read */
    const int32_t past[2] = {(int32_t)t->rows, 0};
    up(d_ids, past, sizeof past);
    ok = ok && ran(lrun_k_packed_embed(d_packed, &t->lay, t->k, d_ids, 2, d_b, stream));
    if (ok) down(b, d_b, (size_t)(2 * t->k) * 4);
    const float zero = 0.0f;
    for (int64_t c = 0; ok && c < t->k; c++) ok &= !memcmp(&b[c], &zero, 4);
    for (int64_t c = 0; ok && c < t->k; c++) {
        const uint16_t h = t->plain[c];
        const float want = t->dtype == LRUN_DTYPE_BF16 ? lrun_bf16_to_f32(h) : lrun_f16_to_f32(h);
        ok &= !memcmp(&b[t->k + c], &want, 4);
    }
    free(a), free(b);
    return ok;
}

static void test_kernel(void)
{
    static const int64_t shapes[][2] = {{1000, 256}, {517, 576}, {300, 4104}, {64, 8}};
    char label[256];
    for (int ty = 0; ty < 3; ty++) { /* bf16, f16 (PEX1), bf16 PEX2 (lrun_k_pex2_embed) */
        const int dt = ty == 1 ? LRUN_DTYPE_F16 : LRUN_DTYPE_BF16;
        g_pex2 = ty == 2;
        for (int s = 0; s < 4; s++)
            for (int kind = 0; kind < 2; kind++) {
                table t;
                const int64_t rows = shapes[s][0], k = shapes[s][1];
                int ok = table_make(&t, dt, rows, k, kind);
                int32_t ids[37];
                for (int i = 0; i < 37; i++) ids[i] = (int32_t)(rnd() % (uint32_t)rows);
                ids[0] = (int32_t)(rows - 1), ids[1] = 0, ids[5] = ids[2], ids[9] = -1, ids[36] = (int32_t)(rows - 1);
                const int32_t one = (int32_t)(rows / 2);
                ok = ok && kernel_case(&t, &one, 1) && kernel_case(&t, ids, 37);
                snprintf(label, sizeof label,
                         "lrun_k_packed_embed %s%s %lld x %lld (%s): 1 and 37 tokens equal decode-whole + "
                         "lrun_k_embed and the CPU, bit for bit; ids outside the table give zeros",
                         g_pex2 ? "PEX2 " : "", lrun_dtype_name((lrun_dtype)dt), (long long)rows, (long long)k,
                         kind ? "exponents over 40 values" : "trained-like");
                CHECK(label, ok);
                table_free(&t);
            }
    }
    g_pex2 = 0;
    /* the argument checks */
    table t;
    int ok = table_make(&t, LRUN_DTYPE_BF16, 10, 100, 0); /* k = 100: not a multiple of 8 */
    dreset();
    void *d_packed = ok ? dcopy(t.packed, t.bytes) : NULL;
    int32_t *d_ids = dbuf(64);
    float *d_out = dbuf(4096);
    ok = ok && lrun_k_packed_embed(d_packed, &t.lay, 100, d_ids, 1, d_out, stream) == LRUN_E_UNSUPPORTED &&
         lrun_k_packed_embed(d_packed, &t.lay, 7, d_ids, 1, d_out, stream) == LRUN_E_ARG &&
         lrun_k_packed_embed(d_packed, &t.lay, 100, d_ids, 0, d_out, stream) != LRUN_OK &&
         lrun_k_packed_embed(d_packed, NULL, 100, d_ids, 1, d_out, stream) == LRUN_E_ARG;
    table_free(&t);
    ok = ok && table_make(&t, LRUN_DTYPE_BF16, 10, 64, 0);
    d_packed = ok ? dcopy(t.packed, t.bytes) : NULL;
    ok = ok && lrun_k_packed_embed(d_packed, &t.lay, 64, d_ids, 1, d_out + 1, stream) == LRUN_E_ARG &&
         lrun_k_packed_embed((uint8_t *)d_packed + 8, &t.lay, 64, d_ids, 1, d_out, stream) == LRUN_E_ARG &&
         lrun_k_packed_embed(d_packed, &t.lay, 64, NULL, 1, d_out, stream) == LRUN_E_ARG &&
         lrun_k_packed_embed(d_packed, &t.lay, 64, d_ids, 1, d_out, NULL) == LRUN_E_ARG;
    table_free(&t);
    CHECK("lrun_k_packed_embed refuses k not a multiple of 8 (UNSUPPORTED), a k that does not divide the table, "
          "no tokens, NULLs, unaligned out or table",
          ok);
}

// ---------------------------------------------------------------- the engine

enum { L = 2, D = 576, H = 9, HK = 3, F = 1024, V = 4000, NP = 20, ND = 8 };

static void gen_model(lrun_dtype wdt, int tied, const char *gguf, const char *lrpk)
{
    lrun_model_gen_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.n_layer = L, spec.n_embd = D, spec.n_head = H, spec.n_head_kv = HK, spec.n_ff = F, spec.n_vocab = V;
    spec.n_ctx = 512, spec.weight_dtype = wdt, spec.embd_dtype = wdt, spec.rope_freq_base = 10000.0;
    spec.rms_eps = 1e-5, spec.seed = 5, spec.trained_stats = 1, spec.tied_embeddings = tied;
    if (lrun_model_generate(gguf, &spec) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    if (lrun_pack(gguf, lrpk, NULL, NULL) != LRUN_OK) printf("# pack: %s\n", lrun_last_error());
}

/* Every tensor on the device in its form; the head plain when plain_head. */
static int place(lrun_model *m, int plain_head)
{
    lrun_device *dev = lrun_model_device(m);
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        const int packed = lrun_tensor_packed(t) && !(plain_head && lrun_tensor_role(t) == LRUN_ROLE_LM_HEAD);
        if (lrun_tensor_move_form(t, dev, LRUN_TIER_DEVICE, packed) != LRUN_OK) {
            printf("# move %s: %s\n", lrun_tensor_name(t), lrun_last_error());
            return 0;
        }
    }
    return 1;
}

struct run {
    float logits[(NP + ND) * V];
    lrun_engine_stats stats;
};

/* A prompt of NP tokens (one chunk), then ND greedy steps of one token. */
static int run(lrun_model *m, int gather, lrun_cache_kind kind, struct run *out)
{
    setenv("LRUN_PACKED_EMBED_GATHER", gather ? "1" : "0", 1);
    const lrun_engine_opts o = {.n_seq_max = 1,
                                .n_ctx_max = 128,
                                .n_batch_max = 32,
                                .cache_kind = kind,
                                .weight_mode = LRUN_WEIGHT_MODE_AS_PLACED};
    lrun_engine *e = NULL;
    if (lrun_engine_init(&e, m, &o) != LRUN_OK) {
        printf("# engine: %s\n", lrun_last_error());
        unsetenv("LRUN_PACKED_EMBED_GATHER");
        return 0;
    }
    unsetenv("LRUN_PACKED_EMBED_GATHER");
    int32_t prompt[NP], seq[NP] = {0};
    for (int i = 0; i < NP; i++) prompt[i] = (int32_t)((i * 337 + 11) % V);
    prompt[3] = V - 1, prompt[4] = 0, prompt[7] = prompt[2];
    int8_t want[NP];
    memset(want, 1, sizeof want);
    int64_t n_out = 0;
    int ok = lrun_engine_step(e, NP, prompt, seq, want, out->logits, NP, &n_out) == LRUN_OK;
    const float *last = out->logits + (NP - 1) * V;
    for (int i = 0; ok && i < ND; i++) {
        int32_t tok = lrun_logits_argmax(last, V);
        if (i == 2) tok = V - 1; /* the last row of the table too */
        float *row = out->logits + (NP + i) * V;
        ok = lrun_engine_step(e, 1, &tok, seq, NULL, row, 1, &n_out) == LRUN_OK;
        last = row;
    }
    if (!ok) printf("# step: %s\n", lrun_last_error());
    lrun_engine_get_stats(e, &out->stats);
    lrun_engine_free(e);
    return ok;
}

static void test_engine(lrun_dtype dt, const char *dname, int tied)
{
    static struct run plain, whole, gath;
    char gguf[112], lrpk[128], label[224];
    snprintf(gguf, sizeof gguf, "/tmp/lrun_test_packed_embed_gpu_%d_%s_%d.gguf", (int)getpid(), dname, tied);
    snprintf(lrpk, sizeof lrpk, "%s.lrpk", gguf);
    gen_model(dt, tied, gguf, lrpk);
    lrun_model *mp = fixture_load(gguf, "cuda", 0, 0, -1), *mk = fixture_load(lrpk, "cuda", 0, 0, -1);
    int ok = mp && mk && place(mp, 0) && place(mk, 0);
    for (int c = 0; c < 2; c++) {
        const lrun_cache_kind kind = c ? LRUN_CACHE_KIND_STATIC : LRUN_CACHE_KIND_DYNAMIC;
        const int r = ok && run(mp, 0, kind, &plain) && run(mk, 0, kind, &whole) && run(mk, 1, kind, &gath);
        const int graphs = !c || gath.stats.graph_launches > 0;
        snprintf(label, sizeof label,
                 "%s%s, %s cache: logits with the embedding gathered = decoded whole = plain GGUF, bit for bit "
                 "(a %d-token chunk, %d steps of n = 1%s)",
                 dname, tied ? " tied" : "", c ? "STATIC" : "dynamic", NP, ND, c ? ", replayed from graphs" : "");
        CHECK(label, r && graphs && !memcmp(gath.logits, whole.logits, sizeof gath.logits) &&
                         !memcmp(gath.logits, plain.logits, sizeof gath.logits));
        if (r && c)
            printf("# %s%s: graph launches %lld of %lld steps\n", dname, tied ? " tied" : "",
                   (long long)gath.stats.graph_launches, (long long)gath.stats.steps);
        if (r && tied) {
            snprintf(label, sizeof label, "%s tied: the scratch keeps the table for the head (%zu = %zu bytes)",
                     dname, gath.stats.scratch_bytes, whole.stats.scratch_bytes);
            CHECK(label, gath.stats.scratch_bytes == whole.stats.scratch_bytes);
        }
    }
    lrun_model_free(mk);
    mk = NULL;
    if (!tied) { /* the head plain: no packed weight as large as the table is left */
        mk = fixture_load(lrpk, "cuda", 0, 0, -1);
        const int r = mk && place(mk, 1) && run(mk, 0, LRUN_CACHE_KIND_STATIC, &whole) &&
                      run(mk, 1, LRUN_CACHE_KIND_STATIC, &gath);
        const size_t table_bytes = (size_t)V * D * 2, ffn = (size_t)2 * F * D * 2;
        snprintf(label, sizeof label,
                 "%s, head plain: the gather's scratch is %zu bytes, not %zu (no room for the %zu-byte table); "
                 "logits still the same",
                 dname, r ? gath.stats.scratch_bytes : 0, r ? whole.stats.scratch_bytes : 0, table_bytes);
        CHECK(label, r && gath.stats.scratch_bytes < whole.stats.scratch_bytes &&
                         whole.stats.scratch_bytes - gath.stats.scratch_bytes + 4096 >= table_bytes - ffn &&
                         !memcmp(gath.logits, whole.logits, sizeof gath.logits) &&
                         !memcmp(gath.logits, plain.logits, sizeof gath.logits));
    }
    lrun_model_free(mp);
    lrun_model_free(mk);
    unlink(gguf);
    unlink(lrpk);
}

// ---------------------------------------------------------------- a 7B-shaped table (--bench)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Mean microseconds of `iters` launches of one path for n tokens: path 0
 * decode whole + lrun_k_embed, 1 the gather, 2 lrun_k_embed alone on the
 * plain table (the unpacked model's cost). */
static double time_path(const table *t, void *d_packed, uint16_t *d_plain, const int32_t *d_ids, int64_t n,
                        float *d_x, int path, int iters)
{
    double t0 = 0;
    for (int i = -3; i < iters; i++) {
        if (i == 0) {
            if (lrun_cuda_stream_sync(dev, stream) != LRUN_OK) return -1;
            t0 = now();
        }
        lrun_status st = path == 1   ? lrun_k_packed_embed(d_packed, &t->lay, t->k, d_ids, n, d_x, stream)
                         : path == 0 ? lrun_k_packed_decode(d_plain, d_packed, &t->lay, 0, t->lay.n, stream)
                                     : LRUN_OK;
        if (st == LRUN_OK && path != 1)
            st = lrun_k_embed((lrun_dtype)t->dtype, d_plain, (size_t)t->k * 2, t->k, d_ids, n, d_x, stream);
        if (st != LRUN_OK) {
            printf("# bench: %s\n", lrun_last_error());
            return -1;
        }
    }
    if (lrun_cuda_stream_sync(dev, stream) != LRUN_OK) return -1;
    return (now() - t0) / iters * 1e6;
}

static void bench_7b(void)
{
    table t;
    const double t0 = now();
    struct lrun_threadpool *pool = NULL;
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (lrun_threadpool_init(&pool, cores > 16 ? 16 : cores > 0 ? (int)cores : 1) != LRUN_OK) pool = NULL;
    int ok = table_make_mt(&t, LRUN_DTYPE_BF16, 32000, 4096, 0, pool);
    lrun_threadpool_free(pool);
    printf("# 7B-shaped table 32000 x 4096 bf16: packed %.1f MB of %.1f MB plain (ratio %.4f) in %.1f s\n",
           (double)t.bytes / 1e6, (double)t.lay.n * 2 / 1e6, (double)t.bytes / ((double)t.lay.n * 2), now() - t0);
    dreset();
    void *d_packed = ok ? dcopy(t.packed, t.bytes) : NULL;
    uint16_t *d_plain = dbuf((size_t)t.lay.n * 2);
    int32_t ids[512];
    for (int i = 0; i < 512; i++) ids[i] = (int32_t)(rnd() % 32000);
    int32_t *d_ids = dcopy(ids, sizeof ids);
    float *d_a = dbuf((size_t)512 * 4096 * 4), *d_b = dbuf((size_t)512 * 4096 * 4);
    static const int64_t ns[2] = {1, 512};
    for (int i = 0; ok && i < 2; i++) {
        const double whole = time_path(&t, d_packed, d_plain, d_ids, ns[i], d_a, 0, ns[i] == 1 ? 50 : 20);
        const double gath = time_path(&t, d_packed, d_plain, d_ids, ns[i], d_b, 1, 200);
        const double plain = time_path(&t, d_packed, d_plain, d_ids, ns[i], d_a, 2, 200); /* d_plain: decoded */
        ok = whole > 0 && gath > 0 && plain > 0;
        float *a = malloc((size_t)ns[i] * 4096 * 4), *b = malloc((size_t)ns[i] * 4096 * 4);
        ok = ok && a && b;
        if (ok) down(a, d_a, (size_t)ns[i] * 4096 * 4), down(b, d_b, (size_t)ns[i] * 4096 * 4);
        const int same = ok && !memcmp(a, b, (size_t)ns[i] * 4096 * 4);
        printf("# embedding of %lld token(s): decode whole + lrun_k_embed %.1f us, gather %.1f us (%.0fx less), "
               "plain table lrun_k_embed %.1f us; bit-identical: %s\n",
               (long long)ns[i], whole, gath, gath > 0 ? whole / gath : 0, plain, same ? "yes" : "NO");
        char label[128];
        snprintf(label, sizeof label, "7B-shaped table, %lld token(s): the gather equals decode whole + lrun_k_embed",
                 (long long)ns[i]);
        CHECK(label, same);
        free(a), free(b);
    }
    table_free(&t);
}

int main(int argc, char **argv)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - packed embedding gather # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    const int bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    if (!gpu_fixture_open(bench ? (size_t)1400 << 20 : (size_t)64 << 20)) return 1;
    test_kernel();
    if (bench) bench_7b();
    gpu_fixture_close();
    test_engine(LRUN_DTYPE_BF16, "bf16", 0);
    test_engine(LRUN_DTYPE_F16, "f16", 0);
    test_engine(LRUN_DTYPE_BF16, "bf16", 1);
    return CHECK_DONE();
}
#endif
