/* test_tokjson.c — loading speed of a large tokenizer.json (runtime/text/tokjson.c).
 *
 * Writes a byte-level BPE tokenizer.json of 150,000 tokens and 149,744
 * merges (the size of Qwen2's or Llama-3's vocabulary), times
 * lrun_tokenizer_load_json on it and reports the time, then checks that
 * text survives encode → decode. Ids against HF tokenizers are checked by
 * tests/tokjson_spec.lua; malformed files there too.
 */
#include "check.h"

#include "text/bpe.h"
#include "text/pieces.h"
#include "text/tokjson.h"

#include "lrun.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N_VOCAB 150000

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void put_json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; ++i) {
        if (s[i] == '"' || s[i] == '\\') fputc('\\', f);
        fputc(s[i], f);
    }
    fputc('"', f);
}

/* The vocabulary: the 256 byte characters, then left+right of earlier tokens
 * (each new), so that every merge names tokens and its result. */
static int write_big(const char *path, long *bytes)
{
    lrun_pieces p = {0};
    int32_t (*merge)[2] = malloc(N_VOCAB * sizeof *merge);
    int64_t id;
    uint64_t lcg = 12345;
    int ok = merge != NULL;
    for (int b = 0; b < 256 && ok; ++b) {
        char u[2];
        size_t n = lrun_bpe_byte_to_utf8((uint8_t)b, u);
        ok = lrun_pieces_add(&p, u, n, &id) == LRUN_OK;
    }
    char joined[4096];
    while (ok && p.n < N_VOCAB) {
        lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
        int64_t a = (int64_t)((lcg >> 33) % (uint64_t)(p.n < 20000 ? p.n : 20000));
        int64_t b = (int64_t)((lcg >> 17) % 256);
        size_t la = p.len[a], lb = p.len[b];
        if (la + lb > 64) continue;
        memcpy(joined, lrun_pieces_text(&p, a), la);
        memcpy(joined + la, lrun_pieces_text(&p, b), lb);
        if (lrun_pieces_find(&p, joined, la + lb) >= 0) continue;
        merge[p.n][0] = (int32_t)a;
        merge[p.n][1] = (int32_t)b;
        ok = lrun_pieces_add(&p, joined, la + lb, &id) == LRUN_OK;
    }
    FILE *f = ok ? fopen(path, "w") : NULL;
    if (f != NULL) {
        fprintf(f, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":%d,\"content\":\"<|endoftext|>\",\"single_word\":false,"
                   "\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}],\"normalizer\":null,"
                   "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},"
                   "\"post_processor\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},"
                   "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"byte_fallback\":false,\"vocab\":{",
                N_VOCAB);
        for (int64_t i = 0; i < p.n; ++i) {
            if (i) fputc(',', f);
            put_json_str(f, lrun_pieces_text(&p, i), p.len[i]);
            fprintf(f, ":%lld", (long long)i);
        }
        fputs("},\"merges\":[", f);
        for (int64_t i = 256; i < p.n; ++i) {
            if (i > 256) fputc(',', f);
            fputc('[', f);
            put_json_str(f, lrun_pieces_text(&p, merge[i][0]), p.len[merge[i][0]]);
            fputc(',', f);
            put_json_str(f, lrun_pieces_text(&p, merge[i][1]), p.len[merge[i][1]]);
            fputc(']', f);
        }
        fputs("]}}\n", f);
        *bytes = ftell(f);
        ok = fclose(f) == 0;
    }
    free(merge);
    lrun_pieces_free(&p);
    return f != NULL && ok;
}

static void test_big(void)
{
    char path[] = "/tmp/lrun_tokjson_XXXXXX";
    int fd = mkstemp(path);
    long bytes = 0;
    CHECK("temporary file", fd >= 0);
    if (fd < 0) return;
    close(fd);
    CHECK("a 150k-token tokenizer.json is written", write_big(path, &bytes));
    lrun_tokenizer *tok = NULL;
    double t0 = now_ms();
    lrun_status st = lrun_tokenizer_load_json(&tok, path, NULL);
    double ms = now_ms() - t0;
    printf("# tokenizer.json of %d tokens, %d merges, %.1f MB: loaded in %.0f ms\n", N_VOCAB + 1, N_VOCAB - 256,
           bytes / 1e6, ms);
    CHECK("it loads", st == LRUN_OK && tok != NULL);
    CHECK("in under 5 s even on a loaded machine", ms < 5000);
    if (tok != NULL) {
        CHECK("vocabulary size counts the added token", lrun_tokenizer_vocab_size(tok) == N_VOCAB + 1);
        const char *text = "Hello wörld 123 <|endoftext|> \xF0\x9F\xA6\x99 tabs\t\n end";
        int32_t ids[256];
        int64_t n = 0;
        st = lrun_tokenizer_encode(tok, text, strlen(text), 1, 1, ids, 256, &n);
        CHECK("encodes", st == LRUN_OK && n > 0 && n < (int64_t)strlen(text));
        int found = 0;
        for (int64_t i = 0; i < n; ++i) found |= ids[i] == N_VOCAB;
        CHECK("<|endoftext|> is matched as its id", found);
        char buf[256];
        size_t len = 0;
        st = lrun_tokenizer_decode(tok, ids, n, 1, buf, sizeof buf, &len);
        CHECK("decodes back to the text", st == LRUN_OK && len == strlen(text) && memcmp(buf, text, len) == 0);
        CHECK("no chat template without tokenizer_config.json", lrun_tokenizer_chat_template(tok) == NULL);
        lrun_tokenizer_free(tok);
    }
    remove(path);
}

static void test_args(void)
{
    lrun_tokenizer *tok = (lrun_tokenizer *)1;
    CHECK("NULL path is an argument error", lrun_tokenizer_load_json(&tok, NULL, NULL) == LRUN_E_ARG);
    CHECK("a missing file is an io error", lrun_tokenizer_load_json(&tok, "/nonexistent/tokenizer.json", NULL) == LRUN_E_IO);
    CHECK("and leaves no tokenizer", tok == NULL);
    CHECK("the message names the file", strstr(lrun_last_error(), "/nonexistent/tokenizer.json") != NULL);
}

/* tokenizer.json text held in memory (a packed file's tokenizer.huggingface.json key) */
static void test_text(void)
{
    static const char json[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
                               "\"merges\": [\"a b\"]}}";
    lrun_tokenizer *tok = NULL;
    int32_t ids[8];
    int64_t n = 0;
    int ok = lrun_tokenizer_load_json_text(&tok, "m.lrpk: key tokenizer.huggingface.json", json, sizeof json - 1, NULL,
                                           NULL, 0) == LRUN_OK &&
             lrun_tokenizer_encode(tok, "abab", 4, 0, 0, ids, 8, &n) == LRUN_OK && n == 2 && ids[0] == 2 && ids[1] == 2;
    CHECK("a tokenizer.json held in memory loads and encodes", ok);
    lrun_tokenizer_free(tok);
    tok = NULL;
    const lrun_status st = lrun_tokenizer_load_json_text(&tok, "m.lrpk: key tokenizer.huggingface.json", json, 20, NULL,
                                                         NULL, 0);
    CHECK("cut short, it is a format error naming the file and key",
          st == LRUN_E_FORMAT && !tok && strstr(lrun_last_error(), "m.lrpk: key tokenizer.huggingface.json") != NULL);
}

int main(void)
{
    test_args();
    test_text();
    test_big();
    return CHECK_DONE();
}
