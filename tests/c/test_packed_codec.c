/* test_packed_codec.c — the packed codec gives back every bit: adversarial
 * values, odd sizes, any row range alone, every tensor of generated bf16
 * and f16 models; and corrupted packed bytes fail cleanly, never crash. */
#include "check.h"
#include "core/threadpool.h"
#include "lrun.h"
#include "packed/codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static lrun_threadpool *pool;

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* Packs and unpacks src; 1 when every bit comes back (serially and with the pool). */
static int round_trip(int dtype, const uint16_t *src, uint64_t n, size_t *packed_bytes)
{
    size_t cap = lrun_packed_bound(dtype, n), got = 0, got2 = 0;
    uint8_t *p = malloc(cap), *p2 = malloc(cap);
    uint16_t *back = malloc((n ? n : 1) * 2);
    int ok = p && p2 && back && lrun_packed_encode(p, cap, &got, dtype, src, n, NULL) == LRUN_OK &&
             lrun_packed_encode(p2, cap, &got2, dtype, src, n, pool) == LRUN_OK && got == got2 && !memcmp(p, p2, got);
    ok = ok && lrun_packed_decode(back, dtype, n, p, got, "t", pool) == LRUN_OK && !memcmp(back, src, n * 2);
    if (!ok) printf("# round trip of %llu: %s\n", (unsigned long long)n, lrun_last_error());
    if (packed_bytes) *packed_bytes = got;
    free(p);
    free(p2);
    free(back);
    return ok;
}

static void adversarial(int dtype, const char *name)
{
    char label[96];
    uint16_t *all = malloc(65536 * 2);
    for (uint32_t i = 0; i < 65536; i++) all[i] = (uint16_t)i; /* NaN payloads, ±0, ±inf, subnormals, every exponent */
    snprintf(label, sizeof label, "%s: all 65536 bit patterns", name);
    CHECK(label, round_trip(dtype, all, 65536, NULL));
    for (uint32_t i = 0; i < 65536; i++) all[i] = (uint16_t)(rnd() >> 7);
    snprintf(label, sizeof label, "%s: random bits", name);
    CHECK(label, round_trip(dtype, all, 65536, NULL));
    const uint16_t special[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc1, 0xffff, 0x0001, 0x8001, 0x7c00, 0x7e01};
    snprintf(label, sizeof label, "%s: zeros, infinities, NaN payloads, subnormals", name);
    CHECK(label, round_trip(dtype, special, sizeof special / 2, NULL));
    for (int i = 0; i < 5000; i++) all[i] = 0x3f80;
    snprintf(label, sizeof label, "%s: all-equal tensor", name);
    CHECK(label, round_trip(dtype, all, 5000, NULL));
    const uint64_t sizes[] = {0, 1, 2, 3, 7, 1023, 1024, 1025, 3000, 4097};
    int ok = 1;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (uint64_t i = 0; i < sizes[s]; i++) all[i] = (uint16_t)(0x3c00 + (rnd() % 4096) - 2048);
        ok &= round_trip(dtype, all, sizes[s], NULL);
    }
    snprintf(label, sizeof label, "%s: tiny sizes and sizes not whole blocks", name);
    CHECK(label, ok);
    free(all);
}

/* Any range decodes alone and equals the same slice of the whole. */
static void ranges(void)
{
    const uint64_t n = 5000;
    uint16_t *src = malloc(n * 2), *got = malloc(n * 2);
    for (uint64_t i = 0; i < n; i++) src[i] = (uint16_t)(rnd() % 3 ? 0x3c00 + rnd() % 2048 : rnd());
    size_t cap = lrun_packed_bound(LRUN_DTYPE_BF16, n), bytes;
    uint8_t *p = malloc(cap);
    lrun_packed_layout lay;
    int ok = lrun_packed_encode(p, cap, &bytes, LRUN_DTYPE_BF16, src, n, NULL) == LRUN_OK &&
             lrun_packed_validate(&lay, p, bytes, "ranges") == LRUN_OK;
    for (int k = 0; ok && k < 200; k++) {
        uint64_t a = rnd() % n, c = rnd() % (n - a + 1);
        lrun_packed_decode_range(got, p, &lay, a, c);
        ok = !memcmp(got, src + a, c * 2);
    }
    CHECK("any element range decodes alone", ok);
    free(src);
    free(got);
    free(p);
}

/* Corrupted bytes: validation fails or passes, decoding never reads outside. */
static void corrupted(void)
{
    const uint64_t n = 2100;
    uint16_t *src = malloc(n * 2), *out = malloc(n * 2);
    for (uint64_t i = 0; i < n; i++) src[i] = (uint16_t)(rnd() % 4 ? 0x3c00 + rnd() % 512 : rnd());
    size_t cap = lrun_packed_bound(LRUN_DTYPE_F16, n), bytes;
    uint8_t *p = malloc(cap), *q = malloc(cap);
    lrun_packed_encode(p, cap, &bytes, LRUN_DTYPE_F16, src, n, NULL);
    int failed = 0;
    for (int k = 0; k < 3000; k++) {
        size_t len = k % 10 == 0 ? rnd() % (bytes + 1) : bytes; /* truncations too */
        uint8_t *c = malloc(len ? len : 1);
        memcpy(c, p, len);
        for (int f = 0; f < 1 + k % 3; f++)
            if (len) c[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
        failed += lrun_packed_decode(out, LRUN_DTYPE_F16, n, c, len, "fuzz", NULL) != LRUN_OK;
        free(c);
    }
    printf("# %d of 3000 corrupted tensors rejected\n", failed);
    /* flips in the sign/mantissa bytes are valid values, so only some are caught */
    CHECK("corrupted packed tensors never crash, many are rejected", failed > 300);
    memcpy(q, p, bytes);
    q[0] ^= 1;
    CHECK("bad magic is rejected", lrun_packed_decode(out, LRUN_DTYPE_F16, n, q, bytes, "t", NULL) == LRUN_E_FORMAT);
    memcpy(q, p, bytes);
    q[16 + 1] = q[16]; /* book1[1] = book1[0] */
    CHECK("repeated codebook exponent is rejected", lrun_packed_decode(out, LRUN_DTYPE_F16, n, q, bytes, "t", NULL) == LRUN_E_FORMAT);
    CHECK("a wrong expected count is rejected", lrun_packed_decode(out, LRUN_DTYPE_F16, n - 1, p, bytes, "t", NULL) == LRUN_E_FORMAT);
    CHECK("a wrong expected dtype is rejected", lrun_packed_decode(out, LRUN_DTYPE_BF16, n, p, bytes, "t", NULL) == LRUN_E_FORMAT);
    CHECK("one byte more is rejected", lrun_packed_decode(out, LRUN_DTYPE_F16, n, p, bytes + 1, "t", NULL) == LRUN_E_FORMAT);
    free(src);
    free(out);
    free(p);
    free(q);
}

/* Every bf16/f16 tensor of a generated model comes back bit for bit. */
static void generated(lrun_dtype dtype, const char *name)
{
    char path[64], label[96];
    snprintf(path, sizeof path, "/tmp/lrun_test_packed_%d_%s.gguf", (int)getpid(), name);
    lrun_model_gen_spec s = {.n_layer = 2, .n_embd = 64, .n_head = 4, .n_head_kv = 2, .n_ff = 160, .n_vocab = 300,
                             .n_ctx = 64, .weight_dtype = dtype, .embd_dtype = dtype, .rope_freq_base = 10000,
                             .rms_eps = 1e-5, .seed = 7, .n_threads = 1};
    lrun_gguf *g = NULL;
    int ok = lrun_model_generate(path, &s) == LRUN_OK && lrun_gguf_open(&g, path) == LRUN_OK, n_packed = 0;
    size_t plain = 0, packed = 0;
    for (int64_t t = 0; ok && t < lrun_gguf_tensor_count(g); t++) {
        if (lrun_gguf_tensor_dtype(g, t) != dtype) continue;
        size_t bytes = lrun_gguf_tensor_bytes(g, t), pb = 0;
        ok = round_trip(dtype, lrun_gguf_tensor_data(g, t), bytes / 2, &pb);
        plain += bytes;
        packed += pb;
        n_packed++;
    }
    printf("# %s model: %d tensors, ratio %.4f\n", name, n_packed, plain ? (double)packed / (double)plain : 0.0);
    snprintf(label, sizeof label, "every %s tensor of a generated model round-trips", name);
    CHECK(label, ok && n_packed == 2 * 7 + 2);
    if (g) lrun_gguf_close(g);
    unlink(path);
}

int main(void)
{
    if (lrun_threadpool_init(&pool, 3) != LRUN_OK) return 1;
    adversarial(LRUN_DTYPE_BF16, "bf16");
    adversarial(LRUN_DTYPE_F16, "f16");
    ranges();
    corrupted();
    generated(LRUN_DTYPE_BF16, "bf16");
    generated(LRUN_DTYPE_F16, "f16");
    lrun_threadpool_free(pool);
    return CHECK_DONE();
}
