/* tokenizer.c — the lrun_tokenizer_* API: loading a vocabulary from GGUF,
 * special tokens, encode dispatch and decoding.
 *
 * Behaviour follows llama.cpp's llama-vocab.cpp (the reference the golden
 * tests compare against, id for id); where lrun differs on purpose it says
 * so here and in docs/tokenizer.md.
 */
#include "text/vocab.h"

#include "core/checked.h"
#include "core/error.h"
#include "core/mapguard.h"
#include "text/bpe.h"
#include "text/hf.h"
#include "text/pieces.h"
#include "text/pretokenizer.h"
#include "text/spm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- reading metadata */

/* The string value of key; LRUN_E_FORMAT when present with another type. *s = NULL when absent. */
static lrun_status read_str(const lrun_gguf *g, const char *key, const char **s, size_t *len)
{
    *s = NULL;
    *len = 0;
    int64_t kv = lrun_gguf_find_key(g, key);
    if (kv < 0) return LRUN_OK;
    if (lrun_gguf_kv_type(g, kv) != LRUN_GGUF_TYPE_STRING || lrun_gguf_get_str(g, kv, s, len) != LRUN_OK)
        return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s is not a string", key);
    return LRUN_OK;
}

/* A boolean key; *out untouched when absent. */
static lrun_status read_bool(const lrun_gguf *g, const char *key, int *out)
{
    int64_t kv = lrun_gguf_find_key(g, key);
    if (kv < 0) return LRUN_OK;
    if (lrun_gguf_get_bool(g, kv, out) != LRUN_OK) return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s is not a boolean", key);
    return LRUN_OK;
}

/* A token id key, range-checked against the vocabulary; *out untouched when
 * absent. strict: an id outside the vocabulary is LRUN_E_FORMAT (hostile
 * files, REFERENCE.md); otherwise it is ignored, as llama.cpp does. */
static lrun_status read_id(const lrun_gguf *g, const char *key, int64_t n_vocab, int strict, int32_t *out)
{
    int64_t kv = lrun_gguf_find_key(g, key), v;
    if (kv < 0) return LRUN_OK;
    if (lrun_gguf_get_i64(g, kv, &v) != LRUN_OK) return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s is not an integer", key);
    if (v < 0 || v >= n_vocab) {
        if (!strict) return LRUN_OK;
        return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s = %lld is outside the vocabulary of %lld tokens", key,
                         (long long)v, (long long)n_vocab);
    }
    *out = (int32_t)v;
    return LRUN_OK;
}

/* An array key: its index, checked to hold count elements of a numeric type; -1 when absent. */
static lrun_status find_numeric_array(const lrun_gguf *g, const char *key, int64_t count, int want_float, int64_t *kv_out)
{
    int64_t kv = lrun_gguf_find_key(g, key), n = 0;
    lrun_gguf_type et;
    *kv_out = kv;
    if (kv < 0) return LRUN_OK;
    if (lrun_gguf_get_arr(g, kv, &et, &n) != LRUN_OK) return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s is not an array", key);
    int ok = want_float ? (et == LRUN_GGUF_TYPE_F32 || et == LRUN_GGUF_TYPE_F64)
                        : (et <= LRUN_GGUF_TYPE_I32 || et == LRUN_GGUF_TYPE_U64 || et == LRUN_GGUF_TYPE_I64);
    if (!ok)
        return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s has elements of type %d, expected %s", key, (int)et,
                         want_float ? "floats" : "integers");
    if (n != count)
        return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s has %lld entries but tokenizer.ggml.tokens has %lld", key,
                         (long long)n, (long long)count);
    return LRUN_OK;
}

/* ---------------------------------------------------------------- vocabulary */

static lrun_status load_tokens(lrun_tokenizer *tok, const lrun_gguf *g)
{
    const char *key = "tokenizer.ggml.tokens";
    int64_t kv = lrun_gguf_find_key(g, key), n = 0;
    lrun_gguf_type et;
    lrun_status st;
    if (kv < 0) return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s is missing", key);
    if (lrun_gguf_get_arr(g, kv, &et, &n) != LRUN_OK || et != LRUN_GGUF_TYPE_STRING)
        return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s is not an array of strings", key);
    if (n < 1 || n > INT32_MAX / 4) return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s has %lld entries", key, (long long)n);
    tok->n_vocab = n;
    tok->type = malloc((size_t)n);
    tok->score = calloc((size_t)n, sizeof *tok->score);
    if (tok->type == NULL || tok->score == NULL) return lrun_fail_oom((size_t)n * 5, 0, "tokenizer: vocabulary: out of memory");
    for (int64_t i = 0; i < n; ++i) {
        const char *s;
        size_t len;
        int64_t id;
        char empty[32];
        if (lrun_gguf_get_arr_str(g, kv, i, &s, &len) != LRUN_OK)
            return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s[%lld] cannot be read", key, (long long)i);
        if (len == 0) { /* llama.cpp renames empty entries so every token has a text */
            len = (size_t)snprintf(empty, sizeof empty, "[EMPTY_%lld]", (long long)i);
            s = empty;
        }
        if ((st = lrun_pieces_add(&tok->pieces, s, len, &id)) != LRUN_OK) return st;
        tok->type[i] = LRUN_TOKEN_TYPE_NORMAL;
    }

    int64_t tkv;
    if ((st = find_numeric_array(g, "tokenizer.ggml.token_type", n, 0, &tkv)) != LRUN_OK) return st;
    for (int64_t i = 0; tkv >= 0 && i < n; ++i) {
        int64_t t;
        if (lrun_gguf_get_arr_i64(g, tkv, i, &t) != LRUN_OK)
            return lrun_fail(LRUN_E_FORMAT, "tokenizer: tokenizer.ggml.token_type[%lld] cannot be read", (long long)i);
        tok->type[i] = (uint8_t)(t >= LRUN_TOKEN_TYPE_NORMAL && t <= LRUN_TOKEN_TYPE_BYTE ? t : LRUN_TOKEN_TYPE_UNDEFINED);
    }
    int64_t skv;
    if ((st = find_numeric_array(g, "tokenizer.ggml.scores", n, 1, &skv)) != LRUN_OK) return st;
    for (int64_t i = 0; skv >= 0 && i < n; ++i) {
        double v;
        if (lrun_gguf_get_arr_f64(g, skv, i, &v) != LRUN_OK)
            return lrun_fail(LRUN_E_FORMAT, "tokenizer: tokenizer.ggml.scores[%lld] cannot be read", (long long)i);
        tok->score[i] = (float)v;
    }
    return LRUN_OK;
}

/* ---------------------------------------------------------------- special tokens */

/* Texts llama.cpp recognises when the file names no id (llama_vocab::impl::load). */
static const char *const eot_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                        "<|end_of_text|>", "<EOT>", "_<EOT>", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                        "<end_of_utterance>", NULL};
static const char *const eom_texts[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_texts[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>",
                                            "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>", NULL};
static const char *const fim_suf_texts[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>",
                                            "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>", NULL};
static const char *const fim_mid_texts[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>",
                                            "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>", NULL};
static const char *const fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL};
static const char *const fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};
/* Texts that end generation wherever they are. */
static const char *const eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>",
                                        "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>",
                                        "<end_of_utterance>", NULL};

static int32_t find_text(const lrun_tokenizer *tok, const char *text)
{
    int64_t id = lrun_pieces_find(&tok->pieces, text, strlen(text));
    return id >= 0 && id < tok->n_vocab ? (int32_t)id : -1;
}

/* When *id is unset, the first listed text in the vocabulary becomes it; the
 * token is made a control token (llama.cpp overrides a mis-typed one). */
static void detect(lrun_tokenizer *tok, const char *const *texts, int32_t *id)
{
    if (*id >= 0) return;
    for (int i = 0; texts[i]; ++i) {
        int32_t t = find_text(tok, texts[i]);
        if (t >= 0) {
            *id = t;
            tok->type[t] = LRUN_TOKEN_TYPE_CONTROL;
            return;
        }
    }
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* One end-of-generation id (for GGUF here, for tokenizer.json in tokjson.c). */
lrun_status lrun_vocab_add_eog(lrun_tokenizer *tok, int32_t id)
{
    if (id < 0) return LRUN_OK;
    for (int64_t i = 0; i < tok->n_eog; ++i) {
        if (tok->eog[i] == id) return LRUN_OK;
    }
    int32_t *v = realloc(tok->eog, (size_t)(tok->n_eog + 1) * sizeof *v);
    if (v == NULL) return lrun_fail_oom(0, 0, "tokenizer: eog ids: out of memory");
    tok->eog = v;
    tok->eog[tok->n_eog++] = id;
    return LRUN_OK;
}

static lrun_status load_specials(lrun_tokenizer *tok, const lrun_gguf *g)
{
    const int64_t n = tok->n_vocab;
    lrun_status st;
    int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
    /* The ids the runtime acts on are checked strictly; the FIM ids only feed
     * the end-of-generation set, and like llama.cpp an out-of-range one is ignored. */
    if ((st = read_id(g, "tokenizer.ggml.bos_token_id", n, 1, &tok->bos)) != LRUN_OK) return st;
    if ((st = read_id(g, "tokenizer.ggml.eos_token_id", n, 1, &tok->eos)) != LRUN_OK) return st;
    if ((st = read_id(g, "tokenizer.ggml.unknown_token_id", n, 1, &tok->unk)) != LRUN_OK) return st;
    if ((st = read_id(g, "tokenizer.ggml.eot_token_id", n, 1, &tok->eot)) != LRUN_OK) return st;
    if ((st = read_id(g, "tokenizer.ggml.eom_token_id", n, 1, &tok->eom)) != LRUN_OK) return st;
    static const struct { const char *key; int which; } fim_keys[] = {
        {"tokenizer.ggml.fim_pre_token_id", 0}, {"tokenizer.ggml.fim_suf_token_id", 1},
        {"tokenizer.ggml.fim_mid_token_id", 2}, {"tokenizer.ggml.fim_pad_token_id", 3},
        {"tokenizer.ggml.fim_rep_token_id", 4}, {"tokenizer.ggml.fim_sep_token_id", 5},
        {"tokenizer.ggml.prefix_token_id", 0},  {"tokenizer.ggml.suffix_token_id", 1},
        {"tokenizer.ggml.middle_token_id", 2},
    };
    int32_t *fim[6] = {&fim_pre, &fim_suf, &fim_mid, &fim_pad, &fim_rep, &fim_sep};
    for (size_t i = 0; i < sizeof fim_keys / sizeof fim_keys[0]; ++i) {
        if ((st = read_id(g, fim_keys[i].key, n, 0, fim[fim_keys[i].which])) != LRUN_OK) return st;
    }
    if ((st = read_bool(g, "tokenizer.ggml.add_bos_token", &tok->add_bos)) != LRUN_OK) return st;
    if ((st = read_bool(g, "tokenizer.ggml.add_eos_token", &tok->add_eos)) != LRUN_OK) return st;

    detect(tok, eot_texts, &tok->eot);
    detect(tok, eom_texts, &tok->eom);
    detect(tok, fim_pre_texts, &fim_pre);
    detect(tok, fim_suf_texts, &fim_suf);
    detect(tok, fim_mid_texts, &fim_mid);
    detect(tok, fim_pad_texts, &fim_pad);
    detect(tok, fim_rep_texts, &fim_rep);
    detect(tok, fim_sep_texts, &fim_sep);

    if ((st = lrun_vocab_add_eog(tok, fim_pad)) != LRUN_OK || (st = lrun_vocab_add_eog(tok, fim_rep)) != LRUN_OK ||
        (st = lrun_vocab_add_eog(tok, fim_sep)) != LRUN_OK)
        return st;
    for (int i = 0; eog_texts[i]; ++i) {
        int32_t t = find_text(tok, eog_texts[i]);
        if (t < 0) continue;
        tok->type[t] = LRUN_TOKEN_TYPE_CONTROL;
        if ((st = lrun_vocab_add_eog(tok, t)) != LRUN_OK) return st;
    }
    /* gpt-oss: these are always rendered (llama.cpp's override). */
    static const char *const rendered[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};
    for (size_t i = 0; i < sizeof rendered / sizeof rendered[0]; ++i) {
        int32_t t = find_text(tok, rendered[i]);
        if (t >= 0) tok->type[t] = LRUN_TOKEN_TYPE_USER_DEFINED;
    }
    if ((st = lrun_vocab_add_eog(tok, tok->eos)) != LRUN_OK || (st = lrun_vocab_add_eog(tok, tok->eot)) != LRUN_OK ||
        (st = lrun_vocab_add_eog(tok, tok->eom)) != LRUN_OK)
        return st;
    /* o200k_harmony: with <|return|> and <|call|> present, <|end|> is not an end of generation. */
    int32_t ret = find_text(tok, "<|return|>"), call = find_text(tok, "<|call|>"), end = find_text(tok, "<|end|>");
    if (ret >= 0 && call >= 0 && end >= 0) {
        for (int64_t i = 0; i < tok->n_eog; ++i) {
            if (tok->eog[i] == end) tok->eog[i] = tok->eog[--tok->n_eog];
        }
        tok->type[end] = LRUN_TOKEN_TYPE_USER_DEFINED;
    }
    if (tok->n_eog > 0) qsort(tok->eog, (size_t)tok->n_eog, sizeof *tok->eog, cmp_i32);
    return LRUN_OK;
}

/* The tokens matched before pre-tokenization, longest text first (ties: lower id). */
typedef struct special_key {
    uint32_t len;
    int32_t id;
} special_key;

static int cmp_special(const void *a, const void *b)
{
    const special_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static lrun_status build_specials(lrun_tokenizer *tok)
{
    int64_t n = 0;
    for (int64_t i = 0; i < tok->n_vocab; ++i) {
        uint8_t t = tok->type[i];
        n += t == LRUN_TOKEN_TYPE_CONTROL || t == LRUN_TOKEN_TYPE_USER_DEFINED || t == LRUN_TOKEN_TYPE_UNKNOWN;
    }
    if (n == 0) return LRUN_OK;
    special_key *keys = malloc((size_t)n * sizeof *keys);
    tok->specials = malloc((size_t)n * sizeof *tok->specials);
    if (keys == NULL || tok->specials == NULL) {
        free(keys);
        return lrun_fail_oom((size_t)n * 12, 0, "tokenizer: special tokens: out of memory");
    }
    int64_t k = 0;
    for (int64_t i = 0; i < tok->n_vocab; ++i) {
        uint8_t t = tok->type[i];
        if (t == LRUN_TOKEN_TYPE_CONTROL || t == LRUN_TOKEN_TYPE_USER_DEFINED || t == LRUN_TOKEN_TYPE_UNKNOWN)
            keys[k++] = (special_key){tok->pieces.len[i], (int32_t)i};
    }
    qsort(keys, (size_t)n, sizeof *keys, cmp_special);
    for (int64_t i = 0; i < n; ++i) tok->specials[i] = keys[i].id;
    tok->n_specials = n;
    free(keys);
    return LRUN_OK;
}

/* ---------------------------------------------------------------- init / free */

static lrun_status init_gguf(lrun_tokenizer **out, const lrun_gguf *gguf)
{
    const char *model, *pre;
    size_t model_len, pre_len;
    lrun_status st;
    *out = NULL;
    if (gguf == NULL) return lrun_fail(LRUN_E_ARG, "tokenizer: gguf is NULL");
    lrun_tokenizer *tok = calloc(1, sizeof *tok);
    if (tok == NULL) return lrun_fail_oom(sizeof *tok, 0, "tokenizer: out of memory");
    tok->bos = tok->eos = tok->unk = tok->eot = tok->eom = -1;

    if ((st = read_str(gguf, "tokenizer.ggml.model", &model, &model_len)) != LRUN_OK) goto fail;
    if (model == NULL) {
        st = lrun_fail(LRUN_E_FORMAT, "tokenizer: tokenizer.ggml.model is missing");
        goto fail;
    }
    if (model_len == 4 && memcmp(model, "gpt2", 4) == 0) {
        tok->kind = LRUN_TOK_KIND_BPE;
    } else if (model_len == 5 && memcmp(model, "llama", 5) == 0) {
        tok->kind = LRUN_TOK_KIND_SPM;
    } else {
        st = lrun_fail(LRUN_E_UNSUPPORTED, "tokenizer: tokenizer.ggml.model = \"%.*s\" is not supported (gpt2, llama)",
                       (int)(model_len > 64 ? 64 : model_len), model);
        goto fail;
    }
    if ((st = load_tokens(tok, gguf)) != LRUN_OK) goto fail;

    if (tok->kind == LRUN_TOK_KIND_BPE) {
        if ((st = read_str(gguf, "tokenizer.ggml.pre", &pre, &pre_len)) != LRUN_OK) goto fail;
        if ((st = lrun_pretokenizer_init(&tok->pre, pre, pre_len, &tok->pre_info)) != LRUN_OK) goto fail;
        if ((st = lrun_bpe_load_merges(tok, gguf)) != LRUN_OK) goto fail;
        /* llama.cpp's BPE default ids (11) are a GPT-2 leftover; lrun says "none" instead. */
        tok->add_bos = tok->pre_info.add_bos == 1;
        tok->add_eos = 0;
    } else {
        /* SentencePiece defaults: <unk>=0, <s>=1, </s>=2 where the vocabulary has them. */
        tok->unk = 0;
        tok->bos = 1 < tok->n_vocab ? 1 : -1;
        tok->eos = 2 < tok->n_vocab ? 2 : -1;
        tok->add_bos = 1;
        tok->add_eos = 0;
        tok->add_space_prefix = 1;
        if ((st = read_bool(gguf, "tokenizer.ggml.add_space_prefix", &tok->add_space_prefix)) != LRUN_OK) goto fail;
    }
    if ((st = load_specials(tok, gguf)) != LRUN_OK) goto fail;
    if (tok->kind == LRUN_TOK_KIND_BPE && tok->pre_info.no_bos && lrun_gguf_find_key(gguf, "tokenizer.ggml.bos_token_id") < 0)
        tok->bos = -1;
    if ((st = build_specials(tok)) != LRUN_OK) goto fail;
    if (tok->kind == LRUN_TOK_KIND_SPM) lrun_spm_init_bytes(tok);
    *out = tok;
    return LRUN_OK;
fail:
    lrun_tokenizer_free(tok);
    return st;
}

/* The vocabulary's arrays are read from the GGUF's mapping: a file
 * truncated meanwhile is an error, not SIGBUS (core/mapguard.h). */
lrun_status lrun_tokenizer_init_gguf(lrun_tokenizer **out, const lrun_gguf *gguf)
{
    const unsigned long g0 = lrun_mapguard_begin();
    lrun_status st = init_gguf(out, gguf);
    st = lrun_mapguard_end(g0, st, "tokenizer: reading the GGUF's vocabulary");
    if (st != LRUN_OK && *out) {
        lrun_tokenizer_free(*out);
        *out = NULL;
    }
    return st;
}

void lrun_tokenizer_free(lrun_tokenizer *tok)
{
    if (tok == NULL) return;
    lrun_pieces_free(&tok->pieces);
    lrun_pretokenizer_free(tok->pre);
    lrun_hf_free(tok->hf);
    free(tok->type);
    free(tok->score);
    free(tok->merges);
    free(tok->eog);
    free(tok->specials);
    free(tok);
}

/* ---------------------------------------------------------------- accessors */

int64_t lrun_tokenizer_vocab_size(const lrun_tokenizer *tok) { return tok->n_vocab; }
int32_t lrun_tokenizer_bos(const lrun_tokenizer *tok) { return tok->bos; }
int32_t lrun_tokenizer_eos(const lrun_tokenizer *tok) { return tok->eos; }
int64_t lrun_tokenizer_eog_count(const lrun_tokenizer *tok) { return tok->n_eog; }
int32_t lrun_tokenizer_eog(const lrun_tokenizer *tok, int64_t i) { return i >= 0 && i < tok->n_eog ? tok->eog[i] : -1; }
int lrun_tokenizer_add_bos(const lrun_tokenizer *tok) { return tok->add_bos; }

lrun_token_type lrun_tokenizer_token_type(const lrun_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_vocab ? (lrun_token_type)tok->type[id] : LRUN_TOKEN_TYPE_UNDEFINED;
}

const char *lrun_tokenizer_token_text(const lrun_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_vocab ? lrun_pieces_text(&tok->pieces, id) : NULL;
}

int32_t lrun_tokenizer_find(const lrun_tokenizer *tok, const char *text, size_t len)
{
    if (text == NULL) return -1;
    int64_t id = lrun_pieces_find(&tok->pieces, text, len);
    return id >= 0 && id < tok->n_vocab ? (int32_t)id : -1;
}
