/* hf_pre.c — HF tokenizers' normalizers and pre-tokenizers over one fragment.
 *
 * Every pre-tokenizer is HF's NormalizedString::split: a pattern gives the
 * matches and the gaps between them (a list covering the text), `invert`
 * swaps which is which, then the behaviour keeps, drops or glues the match
 * pieces (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous);
 * empty pieces vanish. Digits, Punctuation, Whitespace and WhitespaceSplit
 * are such splits with a fixed regex (tokjson.c builds them); ByteLevel and
 * Metaspace also rewrite the text, into the arena the words point into.
 */
#include "text/hf.h"

#include "core/error.h"
#include "text/bpe.h"
#include "text/unorm.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- small helpers */

lrun_status hf_buf_put(hf_buf *b, const char *s, size_t len)
{
    if (len > SIZE_MAX / 2 - b->n) return lrun_fail(LRUN_E_ARG, "tokenizer: text too long");
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1) cap *= 2;
        char *v = realloc(b->v, cap);
        if (v == NULL) return lrun_fail_oom(cap, 0, "tokenizer: out of memory");
        b->v = v;
        b->cap = cap;
    }
    if (len && s != NULL) memcpy(b->v + b->n, s, len);
    b->n += len;
    b->v[b->n] = '\0';
    return LRUN_OK;
}

int lrun_hf_is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

uint32_t lrun_hf_cpt(const char *s, size_t n, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t l = lrun_utf8_len(u[0]);
    if (l > n) l = n;
    *len = l;
    switch (l) {
    case 2: return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    case 3: return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    case 4: return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    default: return u[0];
    }
}

static lrun_status match_failed(int rc)
{
    PCRE2_UCHAR msg[128];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return lrun_fail(LRUN_E_INTERNAL, "tokenizer: regex match failed: %s", (const char *)msg);
}

/* Next match of re in s[0, len) at or after offset: 1 and [*ms, *me), or 0. */
static int next_match(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t len, size_t offset, size_t *ms,
                      size_t *me, lrun_status *st)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)s, len, offset, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) rc = pcre2_match(re, (PCRE2_SPTR)s, len, offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        *st = match_failed(rc);
        return 0;
    }
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

/* ---------------------------------------------------------------- normalizers */

/* Replaces every match of re (or of the literal from) in in[0, n) by to, appending to out. */
static lrun_status replace_all(const pcre2_code *re, const char *from, size_t from_len, const char *to, size_t to_len,
                               const char *in, size_t n, hf_buf *out)
{
    lrun_status st = LRUN_OK;
    size_t pos = 0;
    if (re == NULL) {
        while (from_len > 0 && pos < n) {
            const char *m = memmem(in + pos, n - pos, from, from_len);
            if (m == NULL) break;
            if ((st = hf_buf_put(out, in + pos, (size_t)(m - in) - pos)) != LRUN_OK) return st;
            if ((st = hf_buf_put(out, to, to_len)) != LRUN_OK) return st;
            pos = (size_t)(m - in) + from_len;
        }
        return hf_buf_put(out, in + pos, n - pos);
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (md == NULL) return lrun_fail_oom(0, 0, "tokenizer: out of memory");
    size_t offset = 0, ms, me;
    while (offset <= n && next_match(re, md, in, n, offset, &ms, &me, &st)) {
        if ((st = hf_buf_put(out, in + pos, ms - pos)) != LRUN_OK) break;
        if ((st = hf_buf_put(out, to, to_len)) != LRUN_OK) break;
        pos = me;
        if (me > ms) {
            offset = me;
        } else {
            if (ms >= n) break;
            size_t l;
            lrun_hf_cpt(in + ms, n - ms, &l);
            if ((st = hf_buf_put(out, in + ms, l)) != LRUN_OK) break;
            pos = offset = ms + l;
        }
    }
    pcre2_match_data_free(md);
    if (st != LRUN_OK) return st;
    return hf_buf_put(out, in + pos, n - pos);
}

static lrun_status strip(const hf_norm *nm, const char *in, size_t n, hf_buf *out)
{
    size_t a = 0, b = n, l;
    while (nm->left && a < b && lrun_hf_is_space(lrun_hf_cpt(in + a, b - a, &l))) a += l;
    while (nm->right && b > a) {
        size_t k = b - 1;
        while (k > a && ((unsigned char)in[k] & 0xC0) == 0x80) --k;
        if (!lrun_hf_is_space(lrun_hf_cpt(in + k, b - k, &l))) break;
        b = k;
    }
    return hf_buf_put(out, in + a, b - a);
}

lrun_status lrun_hf_normalize(const lrun_hf *hf, const char *text, size_t len, hf_buf *out)
{
    hf_buf tmp = {0};
    lrun_status st = LRUN_OK;
    out->n = 0;
    if ((st = hf_buf_put(out, text, len)) != LRUN_OK) return st;
    for (int i = 0; i < hf->n_norm && st == LRUN_OK; ++i) {
        const hf_norm *nm = &hf->norm[i];
        tmp.n = 0;
        switch (nm->kind) {
        case HF_NORM_PREPEND:
            if (out->n == 0) continue;
            if ((st = hf_buf_put(&tmp, nm->a, nm->a_len)) == LRUN_OK) st = hf_buf_put(&tmp, out->v, out->n);
            break;
        case HF_NORM_REPLACE: st = replace_all(nm->re, nm->a, nm->a_len, nm->b, nm->b_len, out->v, out->n, &tmp); break;
        case HF_NORM_LOWERCASE: st = lrun_ulower(out->v, out->n, &tmp.v, &tmp.n, &tmp.cap); break;
        case HF_NORM_STRIP: st = strip(nm, out->v, out->n, &tmp); break;
        case HF_NORM_NFC: st = lrun_unorm(LRUN_NFC, out->v, out->n, &tmp.v, &tmp.n, &tmp.cap); break;
        case HF_NORM_NFD: st = lrun_unorm(LRUN_NFD, out->v, out->n, &tmp.v, &tmp.n, &tmp.cap); break;
        case HF_NORM_NFKC: st = lrun_unorm(LRUN_NFKC, out->v, out->n, &tmp.v, &tmp.n, &tmp.cap); break;
        case HF_NORM_NFKD: st = lrun_unorm(LRUN_NFKD, out->v, out->n, &tmp.v, &tmp.n, &tmp.cap); break;
        }
        if (st != LRUN_OK) break;
        hf_buf t = *out;
        *out = tmp;
        tmp = t;
    }
    free(tmp.v);
    return st;
}

/* ---------------------------------------------------------------- words */

static lrun_status words_push(hf_words *w, size_t off, size_t len, int first)
{
    if (w->n == w->cap) {
        int64_t cap = w->cap ? w->cap * 2 : 64;
        hf_word *v = realloc(w->v, (size_t)cap * sizeof *v);
        if (v == NULL) return lrun_fail_oom((size_t)cap * sizeof *v, 0, "tokenizer: words: out of memory");
        w->v = v;
        w->cap = cap;
    }
    w->v[w->n++] = (hf_word){off, len, first};
    return LRUN_OK;
}

/* A piece of a split: bytes [a, b) of the word, is_match before the behaviour is applied. */
typedef struct piece {
    size_t a, b;
    int is_match;
} piece;

typedef struct pieces_list {
    piece *v;
    int64_t n, cap;
} pieces_list;

static lrun_status piece_push(pieces_list *p, size_t a, size_t b, int is_match)
{
    if (p->n == p->cap) {
        int64_t cap = p->cap ? p->cap * 2 : 64;
        piece *v = realloc(p->v, (size_t)cap * sizeof *v);
        if (v == NULL) return lrun_fail_oom((size_t)cap * sizeof *v, 0, "tokenizer: split: out of memory");
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = (piece){a, b, is_match};
    return LRUN_OK;
}

/* HF's Pattern::find_matches for a regex: matches and gaps covering s[0, len). */
static lrun_status find_matches(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t len, pieces_list *out)
{
    lrun_status st = LRUN_OK;
    size_t prev = 0, offset = 0, ms, me;
    out->n = 0;
    if (len == 0) return piece_push(out, 0, 0, 0);
    while (offset <= len && next_match(re, md, s, len, offset, &ms, &me, &st)) {
        if (prev != ms && (st = piece_push(out, prev, ms, 0)) != LRUN_OK) return st;
        if ((st = piece_push(out, ms, me, 1)) != LRUN_OK) return st;
        prev = me;
        if (me > ms) {
            offset = me;
        } else {
            if (ms >= len) break;
            size_t l;
            lrun_hf_cpt(s + ms, len - ms, &l);
            offset = ms + l;
        }
    }
    if (st != LRUN_OK) return st;
    if (prev != len) return piece_push(out, prev, len, 0);
    return LRUN_OK;
}

static void reverse(piece *v, int64_t n)
{
    for (int64_t i = 0; i < n / 2; ++i) {
        piece t = v[i];
        v[i] = v[n - 1 - i];
        v[n - 1 - i] = t;
    }
}

/* Applies the behaviour in place: afterwards is_match = 1 marks a piece to drop. */
static void apply_behavior(pieces_list *p, hf_behavior behavior, int invert)
{
    int64_t n = 0;
    int prev = 0;
    if (invert) {
        for (int64_t i = 0; i < p->n; ++i) p->v[i].is_match = !p->v[i].is_match;
    }
    switch (behavior) {
    case HF_SPLIT_REMOVED: return;
    case HF_SPLIT_ISOLATED:
        for (int64_t i = 0; i < p->n; ++i) p->v[i].is_match = 0;
        return;
    case HF_SPLIT_CONTIGUOUS:
        for (int64_t i = 0; i < p->n; ++i) {
            int m = p->v[i].is_match;
            if (m == prev && n > 0) p->v[n - 1].b = p->v[i].b;
            else p->v[n++] = (piece){p->v[i].a, p->v[i].b, 0};
            prev = m;
        }
        break;
    case HF_SPLIT_MERGED_PREV:
        for (int64_t i = 0; i < p->n; ++i) {
            int m = p->v[i].is_match;
            if (m && !prev && n > 0) p->v[n - 1].b = p->v[i].b;
            else p->v[n++] = (piece){p->v[i].a, p->v[i].b, 0};
            prev = m;
        }
        break;
    case HF_SPLIT_MERGED_NEXT: /* the same fold from the right: reverse, fold, reverse back */
        reverse(p->v, p->n);
        for (int64_t i = 0; i < p->n; ++i) {
            int m = p->v[i].is_match;
            if (m && !prev && n > 0) p->v[n - 1].a = p->v[i].a;
            else p->v[n++] = (piece){p->v[i].a, p->v[i].b, 0};
            prev = m;
        }
        reverse(p->v, n);
        break;
    }
    p->n = n;
}

/* One split step over every word. */
static lrun_status split_words(const hf_pre *pre, const hf_buf *arena, const hf_words *in, hf_words *out, pieces_list *pl)
{
    lrun_status st = LRUN_OK;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(pre->re, NULL);
    if (md == NULL) return lrun_fail_oom(0, 0, "tokenizer: out of memory");
    for (int64_t i = 0; i < in->n && st == LRUN_OK; ++i) {
        const hf_word *w = &in->v[i];
        if ((st = find_matches(pre->re, md, arena->v + w->off, w->len, pl)) != LRUN_OK) break;
        apply_behavior(pl, pre->behavior, pre->invert);
        for (int64_t k = 0; k < pl->n && st == LRUN_OK; ++k) {
            const piece *p = &pl->v[k];
            if (p->is_match || p->b == p->a) continue;
            st = words_push(out, w->off + p->a, p->b - p->a, w->first && p->a == 0);
        }
    }
    pcre2_match_data_free(md);
    return st;
}

/* ---------------------------------------------------------------- rewriting steps */

/* ByteLevel: every byte as its printable character (GPT-2's byte↔unicode table). */
static lrun_status byte_level_map(hf_buf *arena, hf_words *words)
{
    lrun_status st = LRUN_OK;
    for (int64_t i = 0; i < words->n && st == LRUN_OK; ++i) {
        hf_word *w = &words->v[i];
        size_t start = arena->n, off = w->off, len = w->len;
        for (size_t k = 0; k < len && st == LRUN_OK; ++k) {
            char u[2];
            size_t n = lrun_bpe_byte_to_utf8((uint8_t)arena->v[off + k], u);
            st = hf_buf_put(arena, u, n);
        }
        w->off = start;
        w->len = arena->n - start;
    }
    return st;
}

static lrun_status prefix_space(hf_buf *arena, hf_words *words)
{
    lrun_status st = LRUN_OK;
    for (int64_t i = 0; i < words->n && st == LRUN_OK; ++i) {
        hf_word *w = &words->v[i];
        if (w->len > 0 && arena->v[w->off] == ' ') continue;
        size_t start = arena->n, off = w->off, len = w->len;
        if ((st = hf_buf_put(arena, " ", 1)) != LRUN_OK) break;
        if ((st = hf_buf_put(arena, NULL, len)) != LRUN_OK) break; /* grow first: the source is in the arena */
        memcpy(arena->v + start + 1, arena->v + off, len);
        w->off = start;
        w->len = len + 1;
    }
    return st;
}

/* Metaspace: ' ' → replacement, then the replacement in front by the prepend scheme. */
static lrun_status metaspace(const hf_pre *pre, hf_buf *arena, hf_words *words)
{
    lrun_status st = LRUN_OK;
    for (int64_t i = 0; i < words->n && st == LRUN_OK; ++i) {
        hf_word *w = &words->v[i];
        size_t start = arena->n, off = w->off, len = w->len;
        int starts = len >= pre->rep_len && memcmp(arena->v + off, pre->rep, pre->rep_len) == 0;
        starts = starts || (len > 0 && arena->v[off] == ' '); /* the space becomes the replacement */
        int prepend = !starts && (pre->prepend == HF_PREPEND_ALWAYS || (pre->prepend == HF_PREPEND_FIRST && w->first));
        if (prepend) st = hf_buf_put(arena, pre->rep, pre->rep_len);
        for (size_t k = 0; k < len && st == LRUN_OK; ++k) {
            char c = arena->v[off + k];
            st = c == ' ' ? hf_buf_put(arena, pre->rep, pre->rep_len) : hf_buf_put(arena, &c, 1);
        }
        w->off = start;
        w->len = arena->n - start;
    }
    return st;
}

/* ---------------------------------------------------------------- the chain */

lrun_status lrun_hf_pretokenize(const lrun_hf *hf, hf_buf *arena, int first, hf_words *words)
{
    hf_words next = {0};
    pieces_list pl = {0};
    lrun_status st = LRUN_OK;
    words->n = 0;
    if (arena->n == 0) return LRUN_OK;
    if ((st = words_push(words, 0, arena->n, first)) != LRUN_OK) return st;
    for (int i = 0; i < hf->n_pre && st == LRUN_OK; ++i) {
        const hf_pre *pre = &hf->pre[i];
        if (pre->kind == HF_PRE_BYTELEVEL && pre->add_prefix_space && (st = prefix_space(arena, words)) != LRUN_OK) break;
        if (pre->kind == HF_PRE_METASPACE && (st = metaspace(pre, arena, words)) != LRUN_OK) break;
        if (pre->re != NULL) {
            next.n = 0;
            if ((st = split_words(pre, arena, words, &next, &pl)) != LRUN_OK) break;
            hf_words t = *words;
            *words = next;
            next = t;
        }
        if (pre->kind == HF_PRE_BYTELEVEL) st = byte_level_map(arena, words);
    }
    free(next.v);
    free(pl.v);
    return st;
}
