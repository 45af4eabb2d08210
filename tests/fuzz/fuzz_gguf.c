/* fuzz_gguf.c — libFuzzer target: the GGUF reader, and the tokenizer built
 * from a file's metadata (lrun_gguf_open, every key, value, array element and
 * tensor info, then lrun_tokenizer_init_gguf and one encode/decode).
 *
 * The reader maps a path, so each input is written to a file under /dev/shm
 * (one per process) first. A finding is a crash, a sanitizer report, a leak
 * or a timeout (-timeout); a clean error status is the expected answer to
 * a bad file. */
#include "lrun.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char path[64];

static void touch_kv(const lrun_gguf *g, int64_t kv, volatile uint64_t *sink)
{
    const char *key = lrun_gguf_key(g, kv);
    if (key) *sink += (uint64_t)strlen(key);
    if (key && lrun_gguf_find_key(g, key) != kv) __builtin_trap(); /* the index finds what it holds */
    int64_t i64;
    double f64;
    int b;
    const char *s;
    size_t len;
    if (lrun_gguf_get_i64(g, kv, &i64) == LRUN_OK) *sink += (uint64_t)i64;
    if (lrun_gguf_get_f64(g, kv, &f64) == LRUN_OK) *sink += (uint64_t)(f64 == f64);
    if (lrun_gguf_get_bool(g, kv, &b) == LRUN_OK) *sink += (uint64_t)b;
    if (lrun_gguf_get_str(g, kv, &s, &len) == LRUN_OK && len) *sink += (uint8_t)s[0] + (uint8_t)s[len - 1];
    lrun_gguf_type et;
    int64_t count;
    if (lrun_gguf_get_arr(g, kv, &et, &count) != LRUN_OK) return;
    for (int64_t i = 0; i < count && i < 4096; i++) {
        if (lrun_gguf_get_arr_i64(g, kv, i, &i64) == LRUN_OK) *sink += (uint64_t)i64;
        if (lrun_gguf_get_arr_f64(g, kv, i, &f64) == LRUN_OK) *sink += (uint64_t)(f64 == f64);
        if (lrun_gguf_get_arr_str(g, kv, i, &s, &len) == LRUN_OK && len) *sink += (uint8_t)s[len - 1];
    }
    /* out of range: an error, never a read */
    if (lrun_gguf_get_arr_i64(g, kv, count, &i64) == LRUN_OK) __builtin_trap();
}

static void touch_tensor(const lrun_gguf *g, int64_t t, volatile uint64_t *sink)
{
    const char *name = lrun_gguf_tensor_name(g, t);
    if (name && lrun_gguf_find_tensor(g, name) != t) __builtin_trap();
    *sink += (uint64_t)lrun_gguf_tensor_dtype(g, t) + (uint64_t)lrun_gguf_tensor_ndim(g, t);
    for (int a = 0; a < 4; a++) *sink += (uint64_t)lrun_gguf_tensor_dim(g, t, a);
    size_t bytes = lrun_gguf_tensor_bytes(g, t);
    const uint8_t *data = lrun_gguf_tensor_data(g, t);
    if (data && bytes) *sink += data[0] + data[bytes - 1]; /* the reader promised these bytes are mapped */
}

static void tokenize_once(const lrun_gguf *g, volatile uint64_t *sink)
{
    lrun_tokenizer *tok = NULL;
    if (lrun_tokenizer_init_gguf(&tok, g) != LRUN_OK) return;
    static const char text[] = "Hello, world! 123 <|im_end|> \xe4\xbd\xa0\xe5\xa5\xbd \xff";
    int32_t ids[128];
    int64_t n = 0;
    if (lrun_tokenizer_encode(tok, text, sizeof text - 1, 1, 1, ids, 128, &n) == LRUN_OK) {
        char buf[64];
        size_t len;
        for (int64_t i = 0; i < n && i < 128; i++)
            if (lrun_tokenizer_decode_token(tok, ids[i], 1, buf, sizeof buf, &len) == LRUN_OK) *sink += len;
    }
    lrun_tokenizer_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) snprintf(path, sizeof path, "/dev/shm/lrun-fuzz-gguf-%d.gguf", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    lrun_gguf *g = NULL;
    if (lrun_gguf_open(&g, path) == LRUN_OK) {
        volatile uint64_t sink = lrun_gguf_version(g) + lrun_gguf_alignment(g) + lrun_gguf_data_offset(g);
        for (int64_t kv = 0; kv < lrun_gguf_kv_count(g); kv++) touch_kv(g, kv, &sink);
        for (int64_t t = 0; t < lrun_gguf_tensor_count(g); t++) touch_tensor(g, t, &sink);
        tokenize_once(g, &sink);
        lrun_gguf_close(g);
    }
    unlink(path);
    return 0;
}
