/* hf_encode.c — text → ids through a tokenizer.json pipeline (hf.h).
 *
 * Added tokens are found as HF's AddedVocabulary::find_matches does: the
 * leftmost match, the longest there (aho-corasick LeftmostLongest), scanning
 * on after it; a single_word token needs no word character (\w) touching
 * it, lstrip/rstrip swallow the whitespace beside it; with parse_special off
 * (HF encode_special_tokens) special tokens are found and then left as text.
 * Tokens with normalized=false are cut from the raw text; each remaining
 * fragment is normalized, then tokens with normalized=true are cut from it
 * (their normalized text is what is searched).
 */
#include "text/hf.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

/* A cut: token >= 0, or plain bytes [a, b) of the text searched. */
typedef struct cut {
    int32_t token;
    size_t a, b;
} cut;

typedef struct cuts {
    cut *v;
    int64_t n, cap;
} cuts;

static lrun_status cut_push(cuts *c, int32_t token, size_t a, size_t b)
{
    if (c->n == c->cap) {
        int64_t cap = c->cap ? c->cap * 2 : 16;
        cut *v = realloc(c->v, (size_t)cap * sizeof *v);
        if (v == NULL) return lrun_fail_oom((size_t)cap * sizeof *v, 0, "tokenizer: added tokens: out of memory");
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = (cut){token, a, b};
    return LRUN_OK;
}

/* ---------------------------------------------------------------- finding added tokens */

/* Is the character ending at s[end) (before) or starting at s[start] (after) a word character? */
static int word_char(const lrun_hf *hf, pcre2_match_data *md, const char *s, size_t len, size_t at, int before)
{
    size_t a = at;
    if (before) {
        if (at == 0) return 0;
        a = at - 1;
        while (a > 0 && ((unsigned char)s[a] & 0xC0) == 0x80) --a;
    } else if (at >= len) {
        return 0;
    }
    size_t l;
    lrun_hf_cpt(s + a, len - a, &l);
    return pcre2_match(hf->re_word, (PCRE2_SPTR)(s + a), l, 0, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md, NULL) >= 0;
}

/* The longest token of set k matching at s[pos], or NULL. */
static const hf_added *match_at(const lrun_hf *hf, int k, const char *s, size_t len, size_t pos)
{
    if (!hf->first_byte[k][(unsigned char)s[pos]]) return NULL;
    for (int64_t i = 0; i < hf->n_order[k]; ++i) {
        const hf_added *t = &hf->added[hf->order[k][i]];
        if (t->match_len <= len - pos && memcmp(s + pos, t->match, t->match_len) == 0) return t;
    }
    return NULL;
}

static lrun_status find_added(const lrun_hf *hf, int k, int parse_special, const char *s, size_t len, cuts *out)
{
    lrun_status st = LRUN_OK;
    size_t start_offset = 0;
    out->n = 0;
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (md == NULL) return lrun_fail_oom(0, 0, "tokenizer: out of memory");
    for (size_t pos = 0; pos < len && st == LRUN_OK;) {
        const hf_added *t = match_at(hf, k, s, len, pos);
        if (t == NULL) {
            ++pos;
            continue;
        }
        size_t start = pos, stop = pos + t->match_len;
        pos = stop; /* the search goes on after the match, kept or not */
        if (!parse_special && t->special) continue;
        if (t->single_word && (word_char(hf, md, s, len, start, 1) || word_char(hf, md, s, len, stop, 0))) continue;
        if (t->lstrip) {
            size_t a = start;
            while (a > 0) {
                size_t b = a - 1, l;
                while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) --b;
                if (!lrun_hf_is_space(lrun_hf_cpt(s + b, len - b, &l))) break;
                a = b;
            }
            start = a > start_offset ? a : start_offset;
        }
        if (t->rstrip) {
            size_t l;
            while (stop < len && lrun_hf_is_space(lrun_hf_cpt(s + stop, len - stop, &l))) stop += l;
        }
        if (start_offset < start && (st = cut_push(out, -1, start_offset, start)) != LRUN_OK) break;
        if ((st = cut_push(out, t->id, start, stop)) != LRUN_OK) break;
        start_offset = stop;
    }
    pcre2_match_data_free(md);
    if (st == LRUN_OK && start_offset < len) st = cut_push(out, -1, start_offset, len);
    return st;
}

/* ---------------------------------------------------------------- one fragment */

/* Pre-tokenizes and runs the model over normalized bytes s[0, n). */
static lrun_status encode_plain(const struct lrun_tokenizer *tok, const char *s, size_t n, int first, hf_buf *arena,
                                hf_words *words, lrun_ids *out)
{
    lrun_status st;
    arena->n = 0;
    if ((st = hf_buf_put(arena, s, n)) != LRUN_OK) return st;
    if ((st = lrun_hf_pretokenize(tok->hf, arena, first, words)) != LRUN_OK) return st;
    for (int64_t i = 0; i < words->n && st == LRUN_OK; ++i)
        st = lrun_hf_bpe_word(tok, arena->v + words->v[i].off, words->v[i].len, out);
    return st;
}

lrun_status lrun_hf_encode(const struct lrun_tokenizer *tok, const char *text, size_t len, int add_special,
                           int parse_special, lrun_ids *out)
{
    const lrun_hf *hf = tok->hf;
    cuts raw = {0}, norm = {0};
    hf_buf normalized = {0}, arena = {0};
    hf_words words = {0};
    char *clean = NULL;
    size_t clean_len = 0;
    lrun_status st = LRUN_OK;
    for (int64_t i = 0; add_special && i < hf->n_prefix && st == LRUN_OK; ++i) st = lrun_ids_push(out, hf->prefix[i]);
    /* Rust strings are valid UTF-8: invalid input bytes become U+FFFD first. */
    if (st == LRUN_OK) st = lrun_utf8_sanitize(text, len, &clean, &clean_len);
    if (st == LRUN_OK) st = find_added(hf, 0, parse_special, clean, clean_len, &raw);
    for (int64_t i = 0; i < raw.n && st == LRUN_OK; ++i) {
        const cut *c = &raw.v[i];
        if (c->token >= 0) {
            st = lrun_ids_push(out, c->token);
            continue;
        }
        if ((st = lrun_hf_normalize(hf, clean + c->a, c->b - c->a, &normalized)) != LRUN_OK) break;
        if ((st = find_added(hf, 1, parse_special, normalized.v, normalized.n, &norm)) != LRUN_OK) break;
        for (int64_t k = 0; k < norm.n && st == LRUN_OK; ++k) {
            const cut *d = &norm.v[k];
            if (d->token >= 0) st = lrun_ids_push(out, d->token);
            else st = encode_plain(tok, normalized.v + d->a, d->b - d->a, c->a == 0 && d->a == 0, &arena, &words, out);
        }
    }
    for (int64_t i = 0; add_special && i < hf->n_suffix && st == LRUN_OK; ++i) st = lrun_ids_push(out, hf->suffix[i]);
    free(raw.v);
    free(norm.v);
    free(normalized.v);
    free(arena.v);
    free(words.v);
    free(clean);
    return st;
}
