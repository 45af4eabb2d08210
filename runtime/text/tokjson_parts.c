/* tokjson_parts.c — the normalizer, pre_tokenizer, decoder and
 * post_processor objects of a tokenizer.json, into the lists of hf.h.
 *
 * Each object is {"type": T, …fields}; a Sequence holds a list of them
 * (normalizers / pretokenizers / decoders / processors) and is flattened.
 * An unknown type or a field of the wrong type fails with the file, the
 * field path ("pre_tokenizer.pretokenizers[1].pattern.Regex") and what was
 * expected. The fixed patterns below are HF's own, in PCRE2 syntax.
 */
#include "text/hf.h"

#include "core/error.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ByteLevel's regex (HF byte_level.rs), the GPT-2 one. */
#define RE_BYTELEVEL "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
/* Punctuation: ASCII punctuation (which includes symbols such as $+<=>^`|~) or Unicode P*. */
#define RE_PUNCT "[\\p{P}!-/:-@\\[-`{-~]"
/* Unicode White_Space (HF's char::is_whitespace). */
#define RE_WS "[\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}]"

/* ---------------------------------------------------------------- JSON helpers */

static lrun_status bad(const hf_ctx *c, const char *field, const char *key, const char *what)
{
    return lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: %s%s%s %s", c->path, field, key ? "." : "", key ? key : "", what);
}

static lrun_status get_str(const hf_ctx *c, const cJSON *o, const char *field, const char *key, int required,
                           const char **s)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *s = NULL;
    if (v == NULL || cJSON_IsNull(v)) return required ? bad(c, field, key, "is missing") : LRUN_OK;
    if (!cJSON_IsString(v)) return bad(c, field, key, "is not a string");
    *s = v->valuestring;
    return LRUN_OK;
}

static lrun_status get_bool(const hf_ctx *c, const cJSON *o, const char *field, const char *key, int def, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = def;
    if (v == NULL || cJSON_IsNull(v)) return LRUN_OK;
    if (!cJSON_IsBool(v)) return bad(c, field, key, "is not a boolean");
    *out = cJSON_IsTrue(v);
    return LRUN_OK;
}

static lrun_status get_int(const hf_ctx *c, const cJSON *o, const char *field, const char *key, int def, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = def;
    if (v == NULL || cJSON_IsNull(v)) return LRUN_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6 || v->valuedouble != (double)(int)v->valuedouble)
        return bad(c, field, key, "is not a small non-negative integer");
    *out = (int)v->valuedouble;
    return LRUN_OK;
}

/* The "type" of a part, and the list of a Sequence (items under list_key). */
static lrun_status get_type(const hf_ctx *c, const cJSON *o, const char *field, const char **type)
{
    if (!cJSON_IsObject(o)) return bad(c, field, NULL, "is not an object");
    return get_str(c, o, field, "type", 1, type);
}

/* {"String": s} or {"Regex": r}: a compiled pattern. */
static lrun_status get_pattern(hf_ctx *c, const cJSON *o, const char *field, pcre2_code **re, const char **literal)
{
    char sub[160];
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const cJSON *s = p ? cJSON_GetObjectItemCaseSensitive(p, "String") : NULL;
    const cJSON *r = p ? cJSON_GetObjectItemCaseSensitive(p, "Regex") : NULL;
    *re = NULL;
    if (literal) *literal = NULL;
    if (!cJSON_IsObject(p)) return bad(c, field, "pattern", "is not an object {\"String\": …} or {\"Regex\": …}");
    if (cJSON_IsString(s)) {
        if (literal) {
            *literal = s->valuestring;
            return LRUN_OK;
        }
        snprintf(sub, sizeof sub, "%s.pattern.String", field);
        return lrun_hf_compile(c, sub, s->valuestring, strlen(s->valuestring), 1, re);
    }
    if (cJSON_IsString(r)) {
        snprintf(sub, sizeof sub, "%s.pattern.Regex", field);
        return lrun_hf_compile(c, sub, r->valuestring, strlen(r->valuestring), 0, re);
    }
    return bad(c, field, "pattern", "has neither a String nor a Regex string");
}

static lrun_status owned(hf_ctx *c, const char *s, char **out, size_t *len)
{
    *len = strlen(s);
    return lrun_hf_strdup(c->hf, s, *len, out);
}

/* Grows a list of n items of size sz by one zeroed item. */
static lrun_status grow(void **v, int *n, size_t sz, const char *what)
{
    if (*n >= 64) return lrun_fail(LRUN_E_FORMAT, "tokenizer.json: more than 64 %s", what);
    char *p = realloc(*v, (size_t)(*n + 1) * sz);
    if (p == NULL) return lrun_fail_oom((size_t)(*n + 1) * sz, 0, "tokenizer: out of memory");
    memset(p + (size_t)*n * sz, 0, sz);
    *v = p;
    ++*n;
    return LRUN_OK;
}

/* Calls parse on each item of o[key] (an array), naming them field.key[i]. */
static lrun_status each(hf_ctx *c, const cJSON *o, const char *field, const char *key,
                        lrun_status (*parse)(hf_ctx *, const cJSON *, const char *))
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, key);
    char sub[160];
    lrun_status st;
    int i = 0;
    if (!cJSON_IsArray(list)) return bad(c, field, key, "is not an array");
    for (const cJSON *it = list->child; it; it = it->next, ++i) {
        snprintf(sub, sizeof sub, "%s.%s[%d]", field, key, i);
        if ((st = parse(c, it, sub)) != LRUN_OK) return st;
    }
    return LRUN_OK;
}

/* ---------------------------------------------------------------- normalizers */

lrun_status lrun_hf_parse_normalizer(hf_ctx *c, const cJSON *o, const char *field)
{
    lrun_hf *hf = c->hf;
    const char *type, *s;
    lrun_status st;
    if (o == NULL || cJSON_IsNull(o)) return LRUN_OK;
    if ((st = get_type(c, o, field, &type)) != LRUN_OK) return st;
    if (strcmp(type, "Sequence") == 0) return each(c, o, field, "normalizers", lrun_hf_parse_normalizer);
    if ((st = grow((void **)&hf->norm, &hf->n_norm, sizeof *hf->norm, "normalizers")) != LRUN_OK) return st;
    hf_norm *n = &hf->norm[hf->n_norm - 1];
    if (strcmp(type, "Prepend") == 0) {
        n->kind = HF_NORM_PREPEND;
        if ((st = get_str(c, o, field, "prepend", 1, &s)) != LRUN_OK) return st;
        return owned(c, s, &n->a, &n->a_len);
    }
    if (strcmp(type, "Replace") == 0) {
        n->kind = HF_NORM_REPLACE;
        const char *lit;
        if ((st = get_pattern(c, o, field, &n->re, &lit)) != LRUN_OK) return st;
        if (lit && (st = owned(c, lit, &n->a, &n->a_len)) != LRUN_OK) return st;
        if ((st = get_str(c, o, field, "content", 1, &s)) != LRUN_OK) return st;
        return owned(c, s, &n->b, &n->b_len);
    }
    static const char *const forms[] = {"NFC", "NFD", "NFKC", "NFKD"};
    static const hf_norm_kind kinds[] = {HF_NORM_NFC, HF_NORM_NFD, HF_NORM_NFKC, HF_NORM_NFKD};
    for (int i = 0; i < 4; ++i) {
        if (strcmp(type, forms[i]) == 0) {
            n->kind = kinds[i];
            return LRUN_OK;
        }
    }
    if (strcmp(type, "Lowercase") == 0) {
        n->kind = HF_NORM_LOWERCASE;
        return LRUN_OK;
    }
    if (strcmp(type, "Strip") == 0) {
        n->kind = HF_NORM_STRIP;
        if ((st = get_bool(c, o, field, "strip_left", 1, &n->left)) != LRUN_OK) return st;
        return get_bool(c, o, field, "strip_right", 1, &n->right);
    }
    return lrun_fail(LRUN_E_UNSUPPORTED,
                     "tokenizer.json %s: %s.type = \"%.40s\" is not supported (Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip)",
                     c->path, field, type);
}

/* ---------------------------------------------------------------- pre-tokenizers */

static lrun_status parse_behavior(const hf_ctx *c, const cJSON *o, const char *field, hf_behavior def, hf_behavior *out)
{
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    const char *s;
    lrun_status st = get_str(c, o, field, "behavior", 0, &s);
    *out = def;
    if (st != LRUN_OK || s == NULL) return st;
    for (int i = 0; i < 5; ++i) {
        if (strcmp(s, names[i]) == 0) {
            *out = (hf_behavior)i;
            return LRUN_OK;
        }
    }
    return bad(c, field, "behavior", "is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

static lrun_status parse_prepend_scheme(const hf_ctx *c, const cJSON *o, const char *field, hf_prepend *out)
{
    const char *s;
    int legacy;
    lrun_status st = get_str(c, o, field, "prepend_scheme", 0, &s);
    if (st != LRUN_OK) return st;
    if (s == NULL) { /* files before tokenizers 0.14: add_prefix_space */
        if ((st = get_bool(c, o, field, "add_prefix_space", 1, &legacy)) != LRUN_OK) return st;
        *out = legacy ? HF_PREPEND_ALWAYS : HF_PREPEND_NEVER;
        return LRUN_OK;
    }
    if (strcmp(s, "always") == 0) *out = HF_PREPEND_ALWAYS;
    else if (strcmp(s, "first") == 0) *out = HF_PREPEND_FIRST;
    else if (strcmp(s, "never") == 0) *out = HF_PREPEND_NEVER;
    else return bad(c, field, "prepend_scheme", "is not one of always, first, never");
    return LRUN_OK;
}

static lrun_status get_replacement(const hf_ctx *c, const cJSON *o, const char *field, char *rep, size_t *len)
{
    const char *s;
    lrun_status st = get_str(c, o, field, "replacement", 0, &s);
    if (st != LRUN_OK) return st;
    if (s == NULL) s = "\xE2\x96\x81";
    size_t l = strlen(s), cl = lrun_utf8_len((unsigned char)s[0]);
    if (l == 0 || l != cl || l > 4) return bad(c, field, "replacement", "is not one character");
    memcpy(rep, s, l);
    rep[l] = '\0';
    *len = l;
    return LRUN_OK;
}

lrun_status lrun_hf_parse_pre_tokenizer(hf_ctx *c, const cJSON *o, const char *field)
{
    lrun_hf *hf = c->hf;
    const char *type;
    lrun_status st;
    if (o == NULL || cJSON_IsNull(o)) return LRUN_OK;
    if ((st = get_type(c, o, field, &type)) != LRUN_OK) return st;
    if (strcmp(type, "Sequence") == 0) return each(c, o, field, "pretokenizers", lrun_hf_parse_pre_tokenizer);
    if ((st = grow((void **)&hf->pre, &hf->n_pre, sizeof *hf->pre, "pre-tokenizers")) != LRUN_OK) return st;
    hf_pre *p = &hf->pre[hf->n_pre - 1];
    p->kind = HF_PRE_SPLIT;
    if (strcmp(type, "Split") == 0) {
        if ((st = get_pattern(c, o, field, &p->re, NULL)) != LRUN_OK) return st;
        if ((st = parse_behavior(c, o, field, HF_SPLIT_ISOLATED, &p->behavior)) != LRUN_OK) return st;
        return get_bool(c, o, field, "invert", 0, &p->invert);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        int use_regex;
        p->kind = HF_PRE_BYTELEVEL;
        p->behavior = HF_SPLIT_ISOLATED;
        if ((st = get_bool(c, o, field, "add_prefix_space", 1, &p->add_prefix_space)) != LRUN_OK) return st;
        if ((st = get_bool(c, o, field, "use_regex", 1, &use_regex)) != LRUN_OK) return st;
        return use_regex ? lrun_hf_compile(c, field, RE_BYTELEVEL, strlen(RE_BYTELEVEL), 0, &p->re) : LRUN_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        p->kind = HF_PRE_METASPACE;
        p->behavior = HF_SPLIT_MERGED_NEXT;
        if ((st = get_replacement(c, o, field, p->rep, &p->rep_len)) != LRUN_OK) return st;
        if ((st = parse_prepend_scheme(c, o, field, &p->prepend)) != LRUN_OK) return st;
        if ((st = get_bool(c, o, field, "split", 1, &p->split)) != LRUN_OK) return st;
        return p->split ? lrun_hf_compile(c, field, p->rep, p->rep_len, 1, &p->re) : LRUN_OK;
    }
    if (strcmp(type, "Digits") == 0) {
        int individual;
        if ((st = get_bool(c, o, field, "individual_digits", 0, &individual)) != LRUN_OK) return st;
        p->behavior = individual ? HF_SPLIT_ISOLATED : HF_SPLIT_CONTIGUOUS;
        return lrun_hf_compile(c, field, "\\p{N}", 5, 0, &p->re);
    }
    if (strcmp(type, "Punctuation") == 0) {
        if ((st = parse_behavior(c, o, field, HF_SPLIT_ISOLATED, &p->behavior)) != LRUN_OK) return st;
        return lrun_hf_compile(c, field, RE_PUNCT, strlen(RE_PUNCT), 0, &p->re);
    }
    if (strcmp(type, "Whitespace") == 0) { /* keeps the matches of \w+|[^\w\s]+ */
        p->behavior = HF_SPLIT_REMOVED;
        p->invert = 1;
        return lrun_hf_compile(c, field, "\\w+|[^\\w\\s]+", 13, 0, &p->re);
    }
    if (strcmp(type, "WhitespaceSplit") == 0) {
        p->behavior = HF_SPLIT_REMOVED;
        return lrun_hf_compile(c, field, RE_WS, strlen(RE_WS), 0, &p->re);
    }
    return lrun_fail(LRUN_E_UNSUPPORTED,
                     "tokenizer.json %s: %s.type = \"%.40s\" is not supported (Sequence, Split, ByteLevel, Metaspace, "
                     "Digits, Punctuation, Whitespace, WhitespaceSplit)",
                     c->path, field, type);
}

/* ---------------------------------------------------------------- decoders */

lrun_status lrun_hf_parse_decoder(hf_ctx *c, const cJSON *o, const char *field)
{
    lrun_hf *hf = c->hf;
    const char *type, *s;
    lrun_status st;
    if (o == NULL || cJSON_IsNull(o)) return LRUN_OK;
    if ((st = get_type(c, o, field, &type)) != LRUN_OK) return st;
    if (strcmp(type, "Sequence") == 0) return each(c, o, field, "decoders", lrun_hf_parse_decoder);
    if ((st = grow((void **)&hf->dec, &hf->n_dec, sizeof *hf->dec, "decoders")) != LRUN_OK) return st;
    hf_dec *d = &hf->dec[hf->n_dec - 1];
    if (strcmp(type, "ByteLevel") == 0) {
        d->kind = HF_DEC_BYTELEVEL;
        return LRUN_OK;
    }
    if (strcmp(type, "ByteFallback") == 0) {
        d->kind = HF_DEC_BYTEFALLBACK;
        return LRUN_OK;
    }
    if (strcmp(type, "Fuse") == 0) {
        d->kind = HF_DEC_FUSE;
        return LRUN_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        char rep[8];
        d->kind = HF_DEC_METASPACE;
        if ((st = get_replacement(c, o, field, rep, &d->a_len)) != LRUN_OK) return st;
        if ((st = parse_prepend_scheme(c, o, field, &d->prepend)) != LRUN_OK) return st;
        return lrun_hf_strdup(hf, rep, d->a_len, &d->a);
    }
    if (strcmp(type, "Replace") == 0) {
        pcre2_code *unused = NULL;
        d->kind = HF_DEC_REPLACE;
        if ((st = get_pattern(c, o, field, &unused, &s)) != LRUN_OK) return st;
        if (s == NULL) {
            pcre2_code_free(unused);
            return lrun_fail(LRUN_E_UNSUPPORTED, "tokenizer.json %s: %s.pattern: only String patterns are supported in decoders",
                             c->path, field);
        }
        if ((st = owned(c, s, &d->a, &d->a_len)) != LRUN_OK) return st;
        if ((st = get_str(c, o, field, "content", 1, &s)) != LRUN_OK) return st;
        return owned(c, s, &d->b, &d->b_len);
    }
    if (strcmp(type, "Strip") == 0) {
        d->kind = HF_DEC_STRIP;
        if ((st = get_str(c, o, field, "content", 1, &s)) != LRUN_OK) return st;
        if (s[0] == '\0' || strlen(s) != lrun_utf8_len((unsigned char)s[0])) return bad(c, field, "content", "is not one character");
        if ((st = owned(c, s, &d->a, &d->a_len)) != LRUN_OK) return st;
        if ((st = get_int(c, o, field, "start", 0, &d->start)) != LRUN_OK) return st;
        return get_int(c, o, field, "stop", 0, &d->stop);
    }
    return lrun_fail(LRUN_E_UNSUPPORTED,
                     "tokenizer.json %s: %s.type = \"%.40s\" is not supported (Sequence, ByteLevel, Metaspace, Replace, "
                     "ByteFallback, Fuse, Strip)",
                     c->path, field, type);
}

/* ---------------------------------------------------------------- post-processors */

static lrun_status push_id(const hf_ctx *c, const char *field, double v, int32_t **ids, int64_t *n)
{
    if (v < 0 || v >= (double)c->tok->n_vocab || v != (double)(int64_t)v)
        return lrun_fail(LRUN_E_FORMAT, "tokenizer.json %s: %s: id %g is outside the vocabulary of %lld", c->path, field, v,
                         (long long)c->tok->n_vocab);
    int32_t *p = realloc(*ids, (size_t)(*n + 1) * sizeof *p);
    if (p == NULL) return lrun_fail_oom(0, 0, "tokenizer: out of memory");
    p[(*n)++] = (int32_t)v;
    *ids = p;
    return LRUN_OK;
}

/* TemplateProcessing "single": the special tokens' ids before and after $A. */
static lrun_status parse_template(hf_ctx *c, const cJSON *o, const char *field)
{
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    int after = 0, i = 0;
    char sub[160];
    lrun_status st;
    if (!cJSON_IsArray(single)) return bad(c, field, "single", "is not an array");
    for (const cJSON *it = single->child; it; it = it->next, ++i) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        snprintf(sub, sizeof sub, "%s.single[%d]", field, i);
        if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
            after = 1;
            continue;
        }
        const cJSON *name = sp ? cJSON_GetObjectItemCaseSensitive(sp, "id") : NULL;
        if (!cJSON_IsString(name)) return bad(c, sub, NULL, "is neither {\"Sequence\": …} nor {\"SpecialToken\": {\"id\": …}}");
        const cJSON *def = cJSON_GetObjectItemCaseSensitive(specials, name->valuestring);
        const cJSON *ids = def ? cJSON_GetObjectItemCaseSensitive(def, "ids") : NULL;
        if (!cJSON_IsArray(ids)) {
            snprintf(sub, sizeof sub, "%s.special_tokens[\"%.40s\"].ids", field, name->valuestring);
            return bad(c, sub, NULL, "is missing or not an array");
        }
        for (const cJSON *id = ids->child; id; id = id->next) {
            if (!cJSON_IsNumber(id)) return bad(c, sub, NULL, "names a special token whose ids are not numbers");
            if (after) st = push_id(c, sub, id->valuedouble, &c->hf->suffix, &c->hf->n_suffix);
            else st = push_id(c, sub, id->valuedouble, &c->hf->prefix, &c->hf->n_prefix);
            if (st != LRUN_OK) return st;
        }
    }
    return LRUN_OK;
}

/* RobertaProcessing / BertProcessing: cls $A sep, each given as [text, id]. */
static lrun_status parse_cls_sep(hf_ctx *c, const cJSON *o, const char *field)
{
    const char *keys[2] = {"cls", "sep"};
    for (int k = 0; k < 2; ++k) {
        const cJSON *pair = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
        const cJSON *id = cJSON_IsArray(pair) ? cJSON_GetArrayItem(pair, 1) : NULL;
        if (!cJSON_IsNumber(id)) return bad(c, field, keys[k], "is not a [text, id] pair");
        lrun_status st = k == 0 ? push_id(c, field, id->valuedouble, &c->hf->prefix, &c->hf->n_prefix)
                                : push_id(c, field, id->valuedouble, &c->hf->suffix, &c->hf->n_suffix);
        if (st != LRUN_OK) return st;
    }
    return LRUN_OK;
}

lrun_status lrun_hf_parse_post_processor(hf_ctx *c, const cJSON *o, const char *field)
{
    const char *type;
    lrun_status st;
    if (o == NULL || cJSON_IsNull(o)) return LRUN_OK;
    if ((st = get_type(c, o, field, &type)) != LRUN_OK) return st;
    if (strcmp(type, "Sequence") == 0) return each(c, o, field, "processors", lrun_hf_parse_post_processor);
    if (strcmp(type, "ByteLevel") == 0) return LRUN_OK; /* only moves offsets */
    if (strcmp(type, "TemplateProcessing") == 0) return parse_template(c, o, field);
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) return parse_cls_sep(c, o, field);
    return lrun_fail(LRUN_E_UNSUPPORTED,
                     "tokenizer.json %s: %s.type = \"%.40s\" is not supported (Sequence, ByteLevel, TemplateProcessing, "
                     "RobertaProcessing, BertProcessing)",
                     c->path, field, type);
}
