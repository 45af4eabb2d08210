/* pretokenizer.c — splitting text into words before byte-level BPE.
 *
 * tokenizer.ggml.pre names a list of regexes, applied one after the other as
 * llama.cpp's unicode_regex_split does: each regex splits every current word
 * into its matches *and* the text between them ("isolated" splitting), so the
 * words always cover the text exactly. The regexes are llama.cpp's (which are
 * HF tokenizer.json's, sometimes adapted), run with PCRE2 in UTF + UCP mode.
 *
 * Two deliberate rewrites keep PCRE2 in step with llama.cpp:
 *   - \s is spelled out as the Unicode White_Space set that llama.cpp uses
 *     (PCRE2 10.42's \s also takes U+180E, no longer White_Space);
 *   - the input is made valid UTF-8 first (bpe.c runs utf8.c's
 *     lrun_utf8_sanitize before splitting): an invalid byte becomes U+FFFD,
 *     exactly what llama.cpp's decoder substitutes, and PCRE2 then never
 *     sees invalid UTF-8.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pretokenizer.h"

#include "core/error.h"
#include "text/utf8.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- the regexes */

/* Unicode White_Space, the set llama.cpp's unicode_cpt_flags calls whitespace. */
#define WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define RE_S "[" WS "]"
#define RE_NOT_S "[^" WS "]"
#define RE_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
#define RE_GPT2 \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|" RE_S "+(?!" RE_NOT_S ")|" RE_S "+"

/* Llama 3 (contractions case-insensitive, as llama.cpp adapts them); digits in runs of 1 to DIGITS. */
#define RE_LLAMA3_WITH(DIGITS) \
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" DIGITS "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|" \
    RE_S "*[\\r\\n]+|" RE_S "+(?!" RE_NOT_S ")|" RE_S "+"

/* Upper-then-lower letter runs without \p{Lu}/\p{Ll}: llama.cpp's adaptation for tekken / gpt-4o. */
#define RE_UPPER "((?=[\\p{L}])([^a-z]))"
#define RE_LOWER "((?=[\\p{L}])([^A-Z]))"

static const char *const re_gpt2[] = {RE_GPT2};
static const char *const re_llama3[] = {RE_LLAMA3_WITH("{1,3}")};
static const char *const re_qwen2[] = {RE_LLAMA3_WITH("")};
static const char *const re_smollm[] = {"\\p{N}", RE_GPT2};
static const char *const re_default[] = {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"};
static const char *const re_falcon[] = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"};
static const char *const re_deepseek_coder[] = {
    "[\\r\\n]", RE_S "?\\p{L}+", RE_S "?\\p{P}+",
    /* [一-龥ࠀ-一가-퟿]+ — but never whitespace: llama.cpp runs this regex on text whose
     * non-ASCII whitespace was replaced by \v, so U+2028 or U+3000 never match it. */
    "(?:(?!" RE_S ")[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf])+",
    "\\p{N}"};
static const char *const re_tekken[] = {
    "[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER "*" RE_LOWER "+|[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER "+" RE_LOWER "*|\\p{N}| ?[^" WS
    "\\p{L}\\p{N}]+[\\r\\n/]*|" RE_S "*[\\r\\n]+|" RE_S "+(?!" RE_NOT_S ")|" RE_S "+"};
static const char *const re_gpt4o[] = {
    "[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER "*" RE_LOWER "+" RE_CONTRACTIONS "?|[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER "+" RE_LOWER
    "*" RE_CONTRACTIONS "?|\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n/]*|" RE_S "*[\\r\\n]+|" RE_S "+(?!" RE_NOT_S ")|" RE_S "+"};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct pre_def {
    const char *kind;
    const char *const *re;
    int n_re;
    int ignore_merges;
    int add_bos;   /* 1, 0, or -1 = leave the model type's default */
    int no_bos;
} pre_def;

static const pre_def def_default = {"default", re_default, COUNT(re_default), 0, -1, 0};
static const pre_def def_gpt2 = {"gpt2", re_gpt2, COUNT(re_gpt2), 0, -1, 0};
static const pre_def def_llama3 = {"llama3", re_llama3, COUNT(re_llama3), 1, 1, 0};
static const pre_def def_llama3_plain = {"llama3", re_llama3, COUNT(re_llama3), 0, -1, 0};
static const pre_def def_chatglm4 = {"llama3", re_llama3, COUNT(re_llama3), 0, -1, 1};
static const pre_def def_qwen2 = {"qwen2", re_qwen2, COUNT(re_qwen2), 0, -1, 0};
static const pre_def def_smollm = {"smollm", re_smollm, COUNT(re_smollm), 0, -1, 0};
static const pre_def def_falcon = {"falcon", re_falcon, COUNT(re_falcon), 0, -1, 0};
static const pre_def def_deepseek_coder = {"deepseek-coder", re_deepseek_coder, COUNT(re_deepseek_coder), 0, -1, 0};
static const pre_def def_tekken = {"tekken", re_tekken, COUNT(re_tekken), 1, 1, 0};
static const pre_def def_gpt4o = {"gpt-4o", re_gpt4o, COUNT(re_gpt4o), 0, -1, 0};

/* tokenizer.ggml.pre values → regex set, following llama.cpp's llama_vocab::impl::load.
 * Note that "gpt2" is not among them there (the converter writes "gpt-2"):
 * llama.cpp gives it the default regexes, and so does lrun. */
static const struct {
    const char *name;
    const pre_def *def;
} pre_names[] = {
    {"default", &def_default},
    {"gpt-2", &def_gpt2}, {"phi-2", &def_gpt2}, {"jina-es", &def_gpt2}, {"jina-de", &def_gpt2},
    {"gigachat", &def_gpt2}, {"jina-v2-es", &def_gpt2}, {"jina-v2-de", &def_gpt2}, {"a.x-4.0", &def_gpt2},
    {"mellum", &def_gpt2}, {"mpt", &def_gpt2}, {"olmo", &def_gpt2}, {"jais", &def_gpt2},
    {"exaone4", &def_gpt2}, {"trillion", &def_gpt2}, {"granite-docling", &def_gpt2},
    {"jina-v1-en", &def_gpt2}, {"jina-v2-code", &def_gpt2}, {"roberta-bpe", &def_gpt2},
    {"llama3", &def_llama3}, {"llama-v3", &def_llama3}, {"llama-bpe", &def_llama3}, {"falcon3", &def_llama3},
    {"falcon-h1", &def_llama3}, {"pixtral", &def_llama3}, {"midm-2.0", &def_llama3}, {"lfm2", &def_llama3},
    {"dbrx", &def_llama3_plain}, {"smaug-bpe", &def_llama3_plain},
    {"glm4", &def_chatglm4}, {"chatglm-bpe", &def_chatglm4},
    {"qwen2", &def_qwen2}, {"deepseek-r1-qwen", &def_qwen2}, {"kormo", &def_qwen2}, {"stablelm2", &def_qwen2},
    {"megrez", &def_qwen2}, {"hunyuan", &def_qwen2},
    {"smollm", &def_smollm}, {"starcoder", &def_smollm}, {"refact", &def_smollm}, {"command-r", &def_smollm},
    {"codeshell", &def_smollm}, {"exaone", &def_smollm}, {"minerva-7b", &def_smollm},
    {"falcon", &def_falcon},
    {"deepseek-coder", &def_deepseek_coder},
    {"tekken", &def_tekken},
    {"gpt-4o", &def_gpt4o}, {"llama4", &def_gpt4o},
};

struct lrun_pretokenizer {
    const pre_def *def;
    pcre2_code *code[8]; /* (def->n_re) compiled patterns */
};

/* ---------------------------------------------------------------- init / free */

static const pre_def *pre_lookup(const char *pre, size_t len)
{
    if (pre == NULL) return &def_default;
    for (size_t i = 0; i < sizeof pre_names / sizeof pre_names[0]; ++i) {
        if (strlen(pre_names[i].name) == len && memcmp(pre_names[i].name, pre, len) == 0) return pre_names[i].def;
    }
    return &def_default; /* unknown: llama.cpp's fallback ("missing or unrecognized pre-tokenizer type") */
}

lrun_status lrun_pretokenizer_init(lrun_pretokenizer **out, const char *pre, size_t len, lrun_pre_info *info)
{
    *out = NULL;
    lrun_pretokenizer *p = calloc(1, sizeof *p);
    if (p == NULL) return lrun_fail_oom(sizeof *p, 0, "tokenizer: pre-tokenizer: out of memory");
    p->def = pre_lookup(pre, len);
    for (int i = 0; i < p->def->n_re; ++i) {
        int err = 0;
        PCRE2_SIZE err_off = 0;
        p->code[i] = pcre2_compile((PCRE2_SPTR)p->def->re[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &err_off,
                                   NULL);
        if (p->code[i] == NULL) {
            PCRE2_UCHAR msg[128];
            const char *kind = p->def->kind;
            pcre2_get_error_message(err, msg, sizeof msg);
            lrun_pretokenizer_free(p);
            if (err == PCRE2_ERROR_HEAP_FAILED) /* PCRE2's own allocation failed: an ordinary OOM */
                return lrun_fail_oom(0, 0, "tokenizer: pre-tokenizer %s: regex %d: out of memory compiling it (%s)",
                                     kind, i, (const char *)msg);
            return lrun_fail(LRUN_E_INTERNAL, "tokenizer: pre-tokenizer %s: regex %d does not compile at %zu: %s",
                             kind, i, (size_t)err_off, (const char *)msg);
        }
        /* JIT is an optimisation only: where it is unavailable the interpreter runs. */
        (void)pcre2_jit_compile(p->code[i], PCRE2_JIT_COMPLETE);
    }
    info->kind = p->def->kind;
    info->ignore_merges = p->def->ignore_merges;
    info->add_bos = p->def->add_bos;
    info->no_bos = p->def->no_bos;
    *out = p;
    return LRUN_OK;
}

void lrun_pretokenizer_free(lrun_pretokenizer *pre)
{
    if (pre == NULL) return;
    for (int i = 0; i < 8; ++i) pcre2_code_free(pre->code[i]);
    free(pre);
}

/* ---------------------------------------------------------------- splitting */

/* One regex over one word [start, start+len): matches and the gaps between them. */
static lrun_status split_one(const pcre2_code *code, pcre2_match_data *md, const char *text, size_t start, size_t len,
                             lrun_spans *out)
{
    const PCRE2_SPTR subject = (PCRE2_SPTR)(text + start);
    size_t offset = 0, prev_end = 0;
    lrun_status st;
    while (offset <= len) {
        int rc = pcre2_match(code, subject, len, offset, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* a pathological run: the interpreter has a larger budget */
            rc = pcre2_match(code, subject, len, offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(rc, msg, sizeof msg);
            if (rc == PCRE2_ERROR_NOMEMORY)
                return lrun_fail_oom(0, 0, "tokenizer: pre-tokenizer: out of memory matching at byte %zu: %s",
                                     start + offset, (const char *)msg);
            return lrun_fail(LRUN_E_INTERNAL, "tokenizer: pre-tokenizer: match failed at byte %zu: %s", start + offset,
                             (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms > prev_end && (st = lrun_spans_push(out, start + prev_end, ms - prev_end)) != LRUN_OK) return st;
        if (me > ms) {
            if ((st = lrun_spans_push(out, start + ms, me - ms)) != LRUN_OK) return st;
            prev_end = me;
            offset = me;
        } else { /* an empty match: step over one character so the loop advances */
            prev_end = ms;
            if (ms >= len) break;
            offset = ms + lrun_utf8_len((unsigned char)text[start + ms]);
        }
    }
    if (prev_end < len) return lrun_spans_push(out, start + prev_end, len - prev_end);
    return LRUN_OK;
}

lrun_status lrun_pretokenizer_split(const lrun_pretokenizer *pre, const char *text, size_t len, lrun_spans *out)
{
    lrun_spans cur = {0}, next = {0};
    lrun_status st = LRUN_OK;
    pcre2_match_data *md = NULL;
    if (len == 0) return LRUN_OK;
    if ((st = lrun_spans_push(&cur, 0, len)) != LRUN_OK) goto done;
    for (int r = 0; r < pre->def->n_re; ++r) {
        pcre2_match_data_free(md);
        md = pcre2_match_data_create_from_pattern(pre->code[r], NULL);
        if (md == NULL) {
            st = lrun_fail_oom(0, 0, "tokenizer: pre-tokenizer: out of memory");
            goto done;
        }
        next.n = 0;
        for (int64_t i = 0; i < cur.n; ++i) {
            if ((st = split_one(pre->code[r], md, text, cur.v[i].start, cur.v[i].len, &next)) != LRUN_OK) goto done;
        }
        lrun_spans t = cur;
        cur = next;
        next = t;
    }
    for (int64_t i = 0; i < cur.n; ++i) {
        if ((st = lrun_spans_push(out, cur.v[i].start, cur.v[i].len)) != LRUN_OK) goto done;
    }
done:
    pcre2_match_data_free(md);
    lrun_spans_free(&cur);
    lrun_spans_free(&next);
    return st;
}
