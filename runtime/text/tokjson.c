/* tokjson.c — loading a Hugging Face tokenizer.json (and optionally its
 * tokenizer_config.json) into an lrun_tokenizer; encode and decode then run
 * the HF pipeline of hf.h.
 *
 * tokenizer.json, the parts lrun reads:
 *   {"added_tokens": [{"id", "content", "single_word", "lstrip", "rstrip",
 *                      "normalized", "special"}, …],
 *    "normalizer": {…} | null, "pre_tokenizer": {…} | null,
 *    "post_processor": {…} | null, "decoder": {…} | null,
 *    "model": {"type": "BPE", "vocab": {text: id, …},
 *              "merges": ["a b", …] | [["a", "b"], …], "unk_token", "byte_fallback",
 *              "fuse_unk", "ignore_merges", "dropout", "continuing_subword_prefix",
 *              "end_of_word_suffix"}}
 * Token ids: every vocab and added id, 0 ≤ id < n_vocab = largest + 1; ids
 * no entry names are holes (type unused). Checked: ids are integers, not
 * shared by two vocab texts, not far beyond the entry count; merges name
 * tokens of the vocabulary and so does their concatenation (as HF requires).
 *
 * Speed: the file (10–20 MB for 150k tokens) is read in one go and parsed by
 * cJSON; tokens go once into the interned piece table and merges into an
 * open-addressing table of id pairs. tests/c/test_tokjson.c times a 150k one.
 */
#include "text/hf.h"
#include "text/tokjson.h"

#include "core/error.h"
#include "text/bpe.h"
#include "text/vocab.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- owned strings, regexes */

lrun_status lrun_hf_strdup(lrun_hf *hf, const char *s, size_t len, char **out)
{
    if (hf->n_strings == hf->cap_strings) {
        int64_t cap = hf->cap_strings ? hf->cap_strings * 2 : 32;
        char **v = realloc(hf->strings, (size_t)cap * sizeof *v);
        if (v == NULL) return lrun_fail_oom(0, 0, "tokenizer: out of memory");
        hf->strings = v;
        hf->cap_strings = cap;
    }
    char *p = malloc(len + 1);
    if (p == NULL) return lrun_fail_oom(len + 1, 0, "tokenizer: out of memory");
    memcpy(p, s, len);
    p[len] = '\0';
    hf->strings[hf->n_strings++] = p;
    *out = p;
    return LRUN_OK;
}

lrun_status lrun_hf_compile(const hf_ctx *c, const char *field, const char *pattern, size_t len, int literal,
                            pcre2_code **out)
{
    int err = 0;
    PCRE2_SIZE off = 0;
    *out = pcre2_compile((PCRE2_SPTR)pattern, len, literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (*out == NULL) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(err, msg, sizeof msg);
        return lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: %s: the regex does not compile at offset %zu: %s", c->path, field,
                         (size_t)off, (const char *)msg);
    }
    (void)pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* an optimisation only */
    return LRUN_OK;
}

void lrun_hf_free(lrun_hf *hf)
{
    if (hf == NULL) return;
    for (int i = 0; i < hf->n_norm; ++i) pcre2_code_free(hf->norm[i].re);
    for (int i = 0; i < hf->n_pre; ++i) pcre2_code_free(hf->pre[i].re);
    for (int64_t i = 0; i < hf->n_strings; ++i) free(hf->strings[i]);
    pcre2_code_free(hf->re_word);
    free(hf->strings);
    free(hf->added);
    free(hf->norm);
    free(hf->pre);
    free(hf->dec);
    free(hf->prefix);
    free(hf->suffix);
    free(hf->added_at);
    free(hf->order[0]);
    free(hf->order[1]);
    free(hf);
}

/* ---------------------------------------------------------------- files */

/* JSON text (len bytes, not necessarily NUL-terminated) into *out, an object; name is
 * what errors call it (a file's path, or a GGUF key and its file). */
static lrun_status parse_json(const char *name, const char *text, size_t len, cJSON **out)
{
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (*out == NULL) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s is not valid JSON (near byte %zu)", name, at);
    }
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s: the top level is not an object", name);
    }
    return LRUN_OK;
}

static lrun_status read_json(const char *path, cJSON **out)
{
    FILE *f = fopen(path, "rb");
    *out = NULL;
    if (f == NULL) return lrun_fail(LRUN_E_IO, "tokenizer: cannot open %s", path);
    char *buf = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || size > (1L << 30) || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return lrun_fail(LRUN_E_IO, "tokenizer: %s: cannot find its size or it is over 1 GiB", path);
    }
    buf = malloc((size_t)size + 1);
    if (buf == NULL) {
        fclose(f);
        return lrun_fail_oom((size_t)size + 1, 0, "tokenizer: %s: out of memory", path);
    }
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        free(buf);
        return lrun_fail(LRUN_E_IO, "tokenizer: %s: short read (%zu of %ld bytes)", path, got, size);
    }
    buf[size] = '\0';
    lrun_status st = parse_json(path, buf, (size_t)size, out);
    free(buf);
    return st;
}

static lrun_status fail_field(const hf_ctx *c, const char *field, const char *what)
{
    return lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: %s %s", c->path, field, what);
}

/* A JSON number that is an integer id in [0, limit). */
static int as_id(const cJSON *v, int64_t limit, int64_t *id)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d < (double)limit) || d != (double)(int64_t)d) return 0;
    *id = (int64_t)d;
    return 1;
}

/* ---------------------------------------------------------------- vocabulary */

typedef struct entry {
    const char *text;  /* points into the JSON tree */
    size_t len;
    int from_vocab;
} entry;

static lrun_status check_model_options(const hf_ctx *c, const cJSON *model)
{
    static const char *const empty_keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && !cJSON_IsNull(type)) {
        if (!cJSON_IsString(type)) return fail_field(c, "model.type", "is not a string");
        if (strcmp(type->valuestring, "BPE") != 0)
            return lrun_fail(LRUN_E_UNSUPPORTED, "tokenizer.json %s: model.type = \"%.40s\" is not supported (BPE)", c->path,
                             type->valuestring);
    }
    for (int i = 0; i < 2; ++i) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, empty_keys[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && v->valuestring[0] == '\0'))
            return lrun_fail(LRUN_E_UNSUPPORTED, "tokenizer.json %s: model.%s is not supported (only null)", c->path, empty_keys[i]);
    }
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return lrun_fail(LRUN_E_UNSUPPORTED, "tokenizer.json %s: model.dropout is not supported (only null)", c->path);
    static const char *const bools[] = {"byte_fallback", "fuse_unk", "ignore_merges"};
    int *dst[3] = {&c->hf->byte_fallback, &c->hf->fuse_unk, &c->hf->ignore_merges};
    for (int i = 0; i < 3; ++i) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, bools[i]);
        *dst[i] = 0;
        if (v == NULL || cJSON_IsNull(v)) continue;
        if (!cJSON_IsBool(v)) return lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: model.%s is not a boolean", c->path, bools[i]);
        *dst[i] = cJSON_IsTrue(v);
    }
    return LRUN_OK;
}

/* Collects vocab and added-token texts by id into *entries (n_vocab of them). */
static lrun_status collect_entries(hf_ctx *c, const cJSON *vocab, const cJSON *added, entry **entries, int64_t *n_vocab)
{
    int64_t n_entries = cJSON_GetArraySize(vocab) + (added ? cJSON_GetArraySize(added) : 0);
    int64_t limit = n_entries + 1024, top = -1, id; /* holes allowed, but not a hostile 2^31 */
    entry *e = calloc((size_t)limit, sizeof *e);
    char field[96];
    if (e == NULL) return lrun_fail_oom((size_t)limit * sizeof *e, 0, "tokenizer: vocabulary: out of memory");
    for (const cJSON *it = vocab->child; it; it = it->next) {
        if (!as_id(it, limit, &id)) {
            free(e);
            return lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: model.vocab[\"%.40s\"] is not an integer id in [0, %lld)",
                             c->path, it->string ? it->string : "", (long long)limit);
        }
        if (e[id].text != NULL) {
            lrun_status st = lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: model.vocab: id %lld is given to both \"%.40s\" and \"%.40s\"",
                                       c->path, (long long)id, e[id].text, it->string ? it->string : "");
            free(e);
            return st;
        }
        e[id] = (entry){it->string ? it->string : "", it->string ? strlen(it->string) : 0, 1};
        top = id > top ? id : top;
    }
    int i = 0;
    for (const cJSON *it = added ? added->child : NULL; it; it = it->next, ++i) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        snprintf(field, sizeof field, "added_tokens[%d]", i);
        if (!as_id(cJSON_GetObjectItemCaseSensitive(it, "id"), limit, &id) || !cJSON_IsString(content)) {
            free(e);
            return lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: %s needs an integer \"id\" in [0, %lld) and a string \"content\"",
                             c->path, field, (long long)limit);
        }
        e[id] = (entry){content->valuestring, strlen(content->valuestring), 0};
        top = id > top ? id : top;
    }
    if (top < 0) {
        free(e);
        return fail_field(c, "model.vocab", "is empty");
    }
    *entries = e;
    *n_vocab = top + 1;
    return LRUN_OK;
}

static lrun_status load_vocab(hf_ctx *c, const cJSON *model, const cJSON *added)
{
    lrun_tokenizer *tok = c->tok;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    entry *e = NULL;
    int64_t n = 0, id;
    lrun_status st;
    if (!cJSON_IsObject(vocab)) return fail_field(c, "model.vocab", "is missing or not an object");
    if (added != NULL && !cJSON_IsArray(added)) return fail_field(c, "added_tokens", "is not an array");
    if ((st = collect_entries(c, vocab, added, &e, &n)) != LRUN_OK) return st;
    tok->n_vocab = n;
    tok->type = malloc((size_t)n);
    tok->score = calloc((size_t)n, sizeof *tok->score);
    c->hf->added_at = calloc((size_t)n, sizeof *c->hf->added_at);
    if (tok->type == NULL || tok->score == NULL || c->hf->added_at == NULL) {
        free(e);
        return lrun_fail_oom((size_t)n * 6, 0, "tokenizer: vocabulary: out of memory");
    }
    for (int64_t i = 0; i < n && st == LRUN_OK; ++i) {
        tok->type[i] = e[i].text ? LRUN_TOKEN_TYPE_NORMAL : LRUN_TOKEN_TYPE_UNUSED;
        st = lrun_pieces_add(&tok->pieces, e[i].text ? e[i].text : "", e[i].len, &id);
    }
    free(e);
    return st;
}

/* ---------------------------------------------------------------- merges */


/* The token id of a merge half, or a message naming it. */
static lrun_status merge_part(const hf_ctx *c, int64_t i, const char *s, size_t len, int32_t *id)
{
    int64_t v = lrun_pieces_find(&c->tok->pieces, s, len);
    if (v < 0 || v >= c->tok->n_vocab)
        return lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: model.merges[%lld]: \"%.*s\" is not in the vocabulary", c->path,
                         (long long)i, (int)(len > 40 ? 40 : len), s);
    *id = (int32_t)v;
    return LRUN_OK;
}

static lrun_status load_merges(hf_ctx *c, const cJSON *model)
{
    lrun_tokenizer *tok = c->tok;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (merges == NULL || cJSON_IsNull(merges)) return LRUN_OK;
    if (!cJSON_IsArray(merges)) return fail_field(c, "model.merges", "is not an array");
    int64_t count = cJSON_GetArraySize(merges), i = 0;
    size_t cap = 1024;
    while (cap < (size_t)count * 2) cap *= 2;
    tok->merges = calloc(cap, sizeof *tok->merges);
    if (tok->merges == NULL) return lrun_fail_oom(cap * sizeof *tok->merges, 0, "tokenizer: merges: out of memory");
    tok->merge_cap = cap;
    hf_buf joined = {0};
    lrun_status st = LRUN_OK;
    for (const cJSON *it = merges->child; it && st == LRUN_OK; it = it->next, ++i) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(it)) { /* "a b" */
            const char *sp = strchr(it->valuestring, ' ');
            if (sp == NULL || strchr(sp + 1, ' ') != NULL) {
                st = lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: model.merges[%lld] = \"%.40s\" is not two tokens separated by one space",
                               c->path, (long long)i, it->valuestring);
                break;
            }
            a = it->valuestring, la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) { /* ["a", "b"] */
            a = it->child->valuestring, la = strlen(a), b = it->child->next->valuestring, lb = strlen(b);
        } else {
            st = lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: model.merges[%lld] is neither \"a b\" nor [\"a\", \"b\"]", c->path,
                           (long long)i);
            break;
        }
        int32_t ia = -1, ib = -1, ir = -1;
        joined.n = 0;
        if ((st = merge_part(c, i, a, la, &ia)) != LRUN_OK || (st = merge_part(c, i, b, lb, &ib)) != LRUN_OK) break;
        if ((st = hf_buf_put(&joined, a, la)) != LRUN_OK || (st = hf_buf_put(&joined, b, lb)) != LRUN_OK) break;
        if ((st = merge_part(c, i, joined.v, joined.n, &ir)) != LRUN_OK) break;
        uint64_t k = lrun_bpe_merge_key(ia, ib);
        for (size_t h = lrun_bpe_merge_hash(k) & (cap - 1);; h = (h + 1) & (cap - 1)) {
            lrun_merge_slot *slot = &tok->merges[h];
            if (slot->key == 0 || slot->key == k) { /* a repeated pair: the later rank, as HF's map collect */
                *slot = (lrun_merge_slot){k, (int32_t)i, ir};
                break;
            }
        }
    }
    free(joined.v);
    tok->n_merges = i;
    return st;
}

/* ---------------------------------------------------------------- added tokens */

static int cmp_longest(const void *x, const void *y, void *ctx)
{
    const hf_added *a = (const hf_added *)ctx + *(const int32_t *)x, *b = (const hf_added *)ctx + *(const int32_t *)y;
    if (a->match_len != b->match_len) return a->match_len > b->match_len ? -1 : 1;
    return (*(const int32_t *)x > *(const int32_t *)y) - (*(const int32_t *)x < *(const int32_t *)y);
}

static lrun_status load_added(hf_ctx *c, const cJSON *added)
{
    lrun_hf *hf = c->hf;
    lrun_tokenizer *tok = c->tok;
    int64_t n = added ? cJSON_GetArraySize(added) : 0, i = 0;
    char field[64];
    lrun_status st = LRUN_OK;
    if (n == 0) return LRUN_OK;
    hf->added = calloc((size_t)n, sizeof *hf->added);
    hf->order[0] = malloc((size_t)n * sizeof *hf->order[0]);
    hf->order[1] = malloc((size_t)n * sizeof *hf->order[1]);
    if (hf->added == NULL || hf->order[0] == NULL || hf->order[1] == NULL)
        return lrun_fail_oom((size_t)n * sizeof *hf->added, 0, "tokenizer: added tokens: out of memory");
    hf_buf norm = {0};
    for (const cJSON *it = added->child; it && st == LRUN_OK; it = it->next, ++i) {
        hf_added *t = &hf->added[i];
        static const char *const flags[] = {"special", "lstrip", "rstrip", "normalized", "single_word"};
        uint8_t *dst[5] = {&t->special, &t->lstrip, &t->rstrip, &t->normalized, &t->single_word};
        snprintf(field, sizeof field, "added_tokens[%lld]", (long long)i);
        for (int f = 0; f < 5; ++f) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, flags[f]);
            if (v != NULL && !cJSON_IsBool(v)) {
                st = lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: %s.%s is not a boolean", c->path, field, flags[f]);
                break;
            }
            *dst[f] = cJSON_IsTrue(v);
        }
        if (st != LRUN_OK) break;
        t->id = (int32_t)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble; /* checked by collect_entries */
        t->content = lrun_pieces_text(&tok->pieces, t->id);
        t->len = tok->pieces.len[t->id];
        t->match = t->content;
        t->match_len = t->len;
        hf->added_at[t->id] = (int32_t)i + 1;
        tok->type[t->id] = t->special ? LRUN_TOKEN_TYPE_CONTROL : LRUN_TOKEN_TYPE_USER_DEFINED;
        if (t->normalized) { /* searched as the normalizer writes it */
            char *m;
            if ((st = lrun_hf_normalize(hf, t->content, t->len, &norm)) != LRUN_OK) break;
            if ((st = lrun_hf_strdup(hf, norm.v ? norm.v : "", norm.n, &m)) != LRUN_OK) break;
            t->match = m;
            t->match_len = norm.n;
        }
        if (t->match_len == 0) continue;
        int k = t->normalized ? 1 : 0;
        hf->order[k][hf->n_order[k]++] = (int32_t)i;
        hf->first_byte[k][(unsigned char)t->match[0]] = 1;
    }
    free(norm.v);
    hf->n_added = i;
    for (int k = 0; k < 2 && st == LRUN_OK; ++k)
        qsort_r(hf->order[k], (size_t)hf->n_order[k], sizeof *hf->order[k], cmp_longest, hf->added);
    return st;
}

/* ---------------------------------------------------------------- tokenizer_config.json */

/* bos_token / eos_token: "text", {"content": "text"} or null; the id when it is a token. */
static lrun_status config_token(const char *path, const lrun_tokenizer *tok, const cJSON *cfg, const char *key, int32_t *id)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (v == NULL || cJSON_IsNull(v)) return LRUN_OK;
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v)) return lrun_fail(LRUN_E_FORMAT, "tokenizer_config.json %s: %s is not a string or {\"content\": …}", path, key);
    int64_t t = lrun_pieces_find(&tok->pieces, v->valuestring, strlen(v->valuestring));
    if (t < 0 || t >= tok->n_vocab)
        return lrun_fail(LRUN_E_FORMAT, "tokenizer_config.json %s: %s = \"%.40s\" is not a token of tokenizer.json", path, key,
                         v->valuestring);
    *id = (int32_t)t;
    return LRUN_OK;
}

/* chat_template: a string, or a list of {"name", "template"} (the "default" one, else the first). */
static lrun_status config_template(const char *path, lrun_hf *hf, const cJSON *cfg)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"), *pick = NULL;
    if (v == NULL || cJSON_IsNull(v)) return LRUN_OK;
    if (cJSON_IsArray(v)) {
        for (const cJSON *it = v->child; it; it = it->next) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
            if (pick == NULL || (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0))
                pick = cJSON_GetObjectItemCaseSensitive(it, "template");
        }
        v = pick;
    }
    if (!cJSON_IsString(v))
        return lrun_fail(LRUN_E_FORMAT, "tokenizer_config.json %s: chat_template is not a string or a list of {name, template}", path);
    return lrun_hf_strdup(hf, v->valuestring, strlen(v->valuestring), &hf->chat_template);
}

/* add_bos_token / add_eos_token change the post-processor the way
 * transformers' LlamaTokenizerFast.update_post_processor does. */
static lrun_status config_add(const char *path, lrun_tokenizer *tok, const cJSON *cfg, const char *key, int bos)
{
    lrun_hf *hf = tok->hf;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    int32_t id = bos ? tok->bos : tok->eos;
    int32_t **ids = bos ? &hf->prefix : &hf->suffix;
    int64_t *n = bos ? &hf->n_prefix : &hf->n_suffix;
    if (v == NULL || cJSON_IsNull(v)) return LRUN_OK;
    if (!cJSON_IsBool(v)) return lrun_fail(LRUN_E_FORMAT, "tokenizer_config.json %s: %s is not a boolean", path, key);
    if (id < 0) return LRUN_OK;
    int has = *n > 0 && (*ids)[bos ? 0 : *n - 1] == id;
    if (cJSON_IsTrue(v) && !has) {
        int32_t *p = realloc(*ids, (size_t)(*n + 1) * sizeof *p);
        if (p == NULL) return lrun_fail_oom(0, 0, "tokenizer: out of memory");
        if (bos) memmove(p + 1, p, (size_t)*n * sizeof *p);
        p[bos ? 0 : *n] = id;
        *ids = p;
        ++*n;
    } else if (!cJSON_IsTrue(v) && has) {
        if (bos) memmove(*ids, *ids + 1, (size_t)(*n - 1) * sizeof **ids);
        --*n;
    }
    return LRUN_OK;
}

static lrun_status load_config(lrun_tokenizer *tok, const char *path, cJSON *cfg)
{
    lrun_status st;
    if ((st = config_token(path, tok, cfg, "bos_token", &tok->bos)) == LRUN_OK &&
        (st = config_token(path, tok, cfg, "eos_token", &tok->eos)) == LRUN_OK &&
        (st = config_template(path, tok->hf, cfg)) == LRUN_OK &&
        (st = config_add(path, tok, cfg, "add_bos_token", 1)) == LRUN_OK)
        st = config_add(path, tok, cfg, "add_eos_token", 0);
    return st;
}

/* ---------------------------------------------------------------- special ids */

/* End-of-generation texts (as tokenizer.c's list for GGUF), "</s>" first for eos. */
static const char *const eog_texts[] = {"</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>",
                                        "<end_of_turn>", "<|eom_id|>", "<EOT>", "<end_of_utterance>", NULL};

static lrun_status finish_specials(hf_ctx *c, const cJSON *model)
{
    lrun_tokenizer *tok = c->tok;
    lrun_hf *hf = c->hf;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    hf->unk = -1;
    if (unk && !cJSON_IsNull(unk)) {
        int64_t id = cJSON_IsString(unk) ? lrun_pieces_find(&tok->pieces, unk->valuestring, strlen(unk->valuestring)) : -1;
        if (id < 0 || id >= tok->n_vocab) return fail_field(c, "model.unk_token", "is not a string naming a token of the vocabulary");
        hf->unk = tok->unk = (int32_t)id;
    }
    for (int b = 0; b < 256; ++b) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int64_t id = lrun_pieces_find(&tok->pieces, name, 6);
        hf->byte_id[b] = id >= 0 && id < tok->n_vocab ? (int32_t)id : -1;
        if (hf->byte_fallback && hf->byte_id[b] >= 0 && !hf->added_at[id]) tok->type[id] = LRUN_TOKEN_TYPE_BYTE;
        tok->byte_token[b] = hf->byte_id[b];
    }
    for (int i = 0; i < 0x144; ++i) tok->cpt_byte[i] = -1;
    for (int b = 0; b < 256; ++b) {
        char u[2];
        size_t n = lrun_bpe_byte_to_utf8((uint8_t)b, u);
        size_t l;
        tok->cpt_byte[lrun_hf_cpt(u, n, &l)] = (int16_t)b;
        tok->byte_piece[b] = (int32_t)lrun_pieces_find(&tok->pieces, u, n);
    }
    /* Defaults from the file alone: BOS = the post-processor's first token; EOS by its usual texts. */
    if (hf->n_prefix > 0) tok->bos = hf->prefix[0];
    for (int i = 0; eog_texts[i] && tok->eos < 0; ++i) {
        int64_t id = lrun_pieces_find(&tok->pieces, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0 && id < tok->n_vocab && hf->added_at[id]) tok->eos = (int32_t)id;
    }
    return LRUN_OK;
}

static lrun_status finish_eog(lrun_tokenizer *tok)
{
    lrun_hf *hf = tok->hf;
    lrun_status st = lrun_vocab_add_eog(tok, tok->eos);
    for (int i = 0; eog_texts[i] && st == LRUN_OK; ++i) {
        int64_t id = lrun_pieces_find(&tok->pieces, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0 && id < tok->n_vocab && hf->added_at[id] && strcmp(eog_texts[i], "</s>") != 0) st = lrun_vocab_add_eog(tok, (int32_t)id);
    }
    tok->add_bos = hf->n_prefix > 0 && tok->bos >= 0 && hf->prefix[0] == tok->bos;
    tok->add_eos = hf->n_suffix > 0 && tok->eos >= 0 && hf->suffix[hf->n_suffix - 1] == tok->eos;
    return st;
}

/* ---------------------------------------------------------------- entry */

static lrun_status load(hf_ctx *c, const cJSON *root)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    lrun_status st;
    if (!cJSON_IsObject(model)) return fail_field(c, "model", "is missing or not an object");
    if (added && cJSON_IsNull(added)) added = NULL;
    if ((st = check_model_options(c, model)) != LRUN_OK) return st;
    if ((st = lrun_hf_parse_normalizer(c, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizer")) != LRUN_OK) return st;
    if ((st = lrun_hf_parse_pre_tokenizer(c, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pre_tokenizer")) != LRUN_OK)
        return st;
    if ((st = lrun_hf_parse_decoder(c, cJSON_GetObjectItemCaseSensitive(root, "decoder"), "decoder")) != LRUN_OK) return st;
    if ((st = load_vocab(c, model, added)) != LRUN_OK) return st;
    if ((st = load_added(c, added)) != LRUN_OK) return st;
    if ((st = load_merges(c, model)) != LRUN_OK) return st;
    if ((st = lrun_hf_parse_post_processor(c, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor")) != LRUN_OK)
        return st;
    if ((st = lrun_hf_compile(c, "(\\w)", "\\w", 2, 0, &c->hf->re_word)) != LRUN_OK) return st;
    return finish_specials(c, model);
}

/* A tokenizer from parsed tokenizer.json (root) and tokenizer_config.json (cfg, or NULL);
 * name and cfg_name are what errors call them. Takes neither tree. */
static lrun_status load_parsed(lrun_tokenizer **out, const char *name, const cJSON *root, const char *cfg_name, cJSON *cfg)
{
    lrun_status st;
    *out = NULL;
    lrun_tokenizer *tok = calloc(1, sizeof *tok);
    lrun_hf *hf = calloc(1, sizeof *hf);
    if (tok == NULL || hf == NULL) {
        free(tok);
        free(hf);
        return lrun_fail_oom(sizeof *tok + sizeof *hf, 0, "tokenizer: out of memory");
    }
    tok->kind = LRUN_TOK_KIND_BPE;
    tok->hf = hf;
    tok->bos = tok->eos = tok->unk = tok->eot = tok->eom = -1;
    hf_ctx c = {name, tok, hf};
    st = load(&c, root);
    if (st == LRUN_OK && cfg != NULL) st = load_config(tok, cfg_name, cfg);
    if (st == LRUN_OK) st = finish_eog(tok);
    if (st != LRUN_OK) {
        lrun_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return LRUN_OK;
}

lrun_status lrun_tokenizer_load_json(lrun_tokenizer **out, const char *path, const char *config_path)
{
    cJSON *root = NULL, *cfg = NULL;
    if (out == NULL || path == NULL) return lrun_fail(LRUN_E_ARG, "tokenizer: load_json: out or path is NULL");
    *out = NULL;
    lrun_status st = read_json(path, &root);
    if (st == LRUN_OK && config_path != NULL) st = read_json(config_path, &cfg);
    if (st == LRUN_OK) st = load_parsed(out, path, root, config_path, cfg);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    return st;
}

lrun_status lrun_tokenizer_load_json_text(lrun_tokenizer **out, const char *name, const char *json, size_t len,
                                          const char *cfg_name, const char *cfg_json, size_t cfg_len)
{
    cJSON *root = NULL, *cfg = NULL;
    if (out == NULL || name == NULL || json == NULL)
        return lrun_fail(LRUN_E_ARG, "tokenizer: load_json_text: out, name or json is NULL");
    *out = NULL;
    lrun_status st = parse_json(name, json, len, &root);
    if (st == LRUN_OK && cfg_json != NULL) st = parse_json(cfg_name ? cfg_name : name, cfg_json, cfg_len, &cfg);
    if (st == LRUN_OK) st = load_parsed(out, name, root, cfg_name ? cfg_name : name, cfg);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    return st;
}

const char *lrun_tokenizer_chat_template(const lrun_tokenizer *tok)
{
    return tok != NULL && tok->hf != NULL ? tok->hf->chat_template : NULL;
}
