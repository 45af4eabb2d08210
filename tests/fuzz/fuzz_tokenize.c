/* fuzz_tokenize.c — libFuzzer target: tokenization of arbitrary bytes and
 * detokenization of arbitrary ids. The vocabulary is the byte-level BPE one
 * the model generator writes (lrun_model_generate: 256 byte tokens, the
 * specials, merges up to 1024 entries), built once per process; set
 * LRUN_FUZZ_GGUF to a model file to fuzz its tokenizer instead.
 *
 * The first input byte picks the mode: even, encode the rest (its bits 1
 * and 2 are add_special and parse_special) and decode every id back,
 * checking that plain text round-trips; odd, decode the rest read as int32
 * ids (negative and out-of-range ones included: each an error status). */
#include "lrun.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static lrun_gguf *gguf;
static lrun_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char path[64];
    const char *given = getenv("LRUN_FUZZ_GGUF");
    if (!given) {
        snprintf(path, sizeof path, "/dev/shm/lrun-fuzz-vocab-%d.gguf", (int)getpid());
        const lrun_model_gen_spec s = {.n_layer = 1, .n_embd = 32, .n_head = 2, .n_head_kv = 2, .n_ff = 64,
                                       .n_vocab = 1024, .n_ctx = 64, .weight_dtype = LRUN_DTYPE_F32,
                                       .embd_dtype = LRUN_DTYPE_F32, .tied_embeddings = 1,
                                       .rope_freq_base = 10000, .rms_eps = 1e-5, .seed = 16, .n_threads = 1};
        if (lrun_model_generate(path, &s) != LRUN_OK) {
            fprintf(stderr, "fuzz_tokenize: %s\n", lrun_last_error());
            abort();
        }
    }
    if (lrun_gguf_open(&gguf, given ? given : path) != LRUN_OK ||
        lrun_tokenizer_init_gguf(&tok, gguf) != LRUN_OK) {
        fprintf(stderr, "fuzz_tokenize: %s\n", lrun_last_error());
        abort();
    }
    if (!given) unlink(path); /* the mapping stays valid */
    return 0;
}

static void decode_ids(const int32_t *ids, int64_t n, char *out, size_t cap, size_t *len)
{
    char piece[256];
    size_t m;
    *len = 0;
    for (int64_t i = 0; i < n; i++) {
        lrun_status st = lrun_tokenizer_decode_token(tok, ids[i], 0, piece, sizeof piece, &m);
        int64_t vocab = lrun_tokenizer_vocab_size(tok);
        if ((ids[i] < 0 || ids[i] >= vocab) != (st != LRUN_OK)) __builtin_trap(); /* error iff out of range */
        if (st != LRUN_OK) continue;
        if (m <= sizeof piece && *len + m <= cap) memcpy(out + *len, piece, m);
        *len += m;
    }
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!len || i + len > n || (len == 2 && c < 0xc2)) return 0;
        uint32_t cp = len == 1 ? c : c & (0x7f >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    const uint8_t mode = data[0];
    data++, size--;
    if (mode & 1) {
        int64_t n = (int64_t)(size / 4);
        int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
        memcpy(ids, data, (size_t)n * 4);
        size_t len;
        char *out = malloc((size_t)n * 256 + 1);
        decode_ids(ids, n, out, (size_t)n * 256, &len);
        free(out);
        free(ids);
        return 0;
    }
    const int add_special = (mode >> 1) & 1, parse_special = (mode >> 2) & 1;
    int64_t n = 0;
    int32_t small[8];
    /* first with too small a buffer: the full count comes back */
    if (lrun_tokenizer_encode(tok, (const char *)data, size, add_special, parse_special, small, 8, &n) != LRUN_OK)
        return 0;
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    int64_t n2 = 0;
    if (lrun_tokenizer_encode(tok, (const char *)data, size, add_special, parse_special, ids, n, &n2) != LRUN_OK ||
        n2 != n)
        __builtin_trap(); /* the same text encodes the same way */
    char *out = malloc(size + 1);
    size_t len;
    decode_ids(ids, n, out, size, &len);
    /* byte-level BPE, no specials added or parsed: valid UTF-8 decodes back to
     * the same bytes (invalid sequences become U+FFFD, as in llama.cpp) */
    if (!add_special && !parse_special && !getenv("LRUN_FUZZ_GGUF") && valid_utf8(data, size) &&
        (len != size || memcmp(out, data, size) != 0))
        __builtin_trap();
    free(out);
    free(ids);
    return 0;
}
