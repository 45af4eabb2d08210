/* hf_decode.c — ids → text through a tokenizer.json's decoders (hf.h).
 *
 * As HF's Tokenizer::decode (tokenizers 0.23): the tokens' texts, added
 * tokens included (special ones dropped when specials are not rendered), go
 * through the decoder list as one list of strings (each decoder maps a list
 * to a list, as decode_chain does) and are then joined. So "strip the first
 * space" decoders (Metaspace, Strip after Fuse) act at the start of the text.
 */
#include "text/hf.h"

#include "core/error.h"
#include "text/bpe.h"

#include <stdlib.h>
#include <string.h>

/* A list of strings (one per token until a decoder fuses them). */
typedef struct strs {
    hf_buf *v;  /* (n) */
    int64_t n, cap;
} strs;

static lrun_status strs_push(strs *l, const char *s, size_t n)
{
    if (l->n == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 16;
        hf_buf *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (v == NULL) return lrun_fail_oom((size_t)cap * sizeof *v, 0, "tokenizer: decode: out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n] = (hf_buf){0};
    ++l->n;
    return hf_buf_put(&l->v[l->n - 1], s, n);
}

static void strs_clear(strs *l)
{
    for (int64_t i = 0; i < l->n; ++i) free(l->v[i].v);
    l->n = 0;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* "<0xNN>" → its byte value, else -1. */
static int byte_token(const hf_buf *t)
{
    if (t->n != 6 || memcmp(t->v, "<0x", 3) != 0 || t->v[5] != '>' || hexv(t->v[3]) < 0 || hexv(t->v[4]) < 0) return -1;
    return hexv(t->v[3]) * 16 + hexv(t->v[4]);
}

static int valid_utf8(const char *s, size_t n)
{
    char *clean = NULL;
    size_t len = 0;
    if (lrun_utf8_sanitize(s, n, &clean, &len) != LRUN_OK) return 0;
    free(clean);
    return len == n; /* every replaced byte grows to three */
}

/* Appends s[0, n) to out with each maximal invalid UTF-8 subpart replaced by
 * one U+FFFD, as Rust's String::from_utf8_lossy (HF's ByteLevel decoder). */
static lrun_status put_lossy(hf_buf *out, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    lrun_status st = LRUN_OK;
    size_t done = 0, i = 0;
    while (i < n && st == LRUN_OK) {
        unsigned char c = u[i];
        size_t need = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 9;
        unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        size_t k = 1;
        if (need != 9) {
            for (; k <= need && i + k < n; ++k) {
                unsigned b = u[i + k];
                if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) break;
            }
        }
        if (need != 9 && k == need + 1) {
            i += k;
            continue;
        }
        if ((st = hf_buf_put(out, s + done, i - done)) == LRUN_OK) st = hf_buf_put(out, "\xEF\xBF\xBD", 3);
        i += k;
        done = i;
    }
    if (st != LRUN_OK) return st;
    return hf_buf_put(out, s + done, n - done);
}

/* ---------------------------------------------------------------- one decoder */

/* Applies dec to in (which it empties) giving out. mid: a streamed piece in
 * the middle of a text, where the first-token rules do not apply. */
static lrun_status apply(const lrun_tokenizer *tok, const hf_dec *dec, int mid, strs *in, strs *out)
{
    lrun_status st = LRUN_OK;
    hf_buf acc = {0};
    out->n = 0;
    switch (dec->kind) {
    case HF_DEC_BYTELEVEL: /* one string: each token's bytes, or its own text when a char is not a byte char */
    case HF_DEC_FUSE:
        for (int64_t i = 0; i < in->n && st == LRUN_OK; ++i) {
            const hf_buf *t = &in->v[i];
            if (dec->kind == HF_DEC_BYTELEVEL) {
                size_t start = acc.n, k = 0, l;
                int all = 1;
                if ((st = hf_buf_put(&acc, NULL, t->n)) != LRUN_OK) break;
                acc.n = start;
                for (; k < t->n && all; k += l) {
                    uint32_t cp = lrun_hf_cpt(t->v + k, t->n - k, &l);
                    all = cp < 0x144 && tok->cpt_byte[cp] >= 0;
                    if (all) acc.v[acc.n++] = (char)tok->cpt_byte[cp];
                }
                if (!all) {
                    acc.n = start;
                    st = hf_buf_put(&acc, t->v, t->n);
                }
            } else {
                st = hf_buf_put(&acc, t->v, t->n);
            }
        }
        if (st == LRUN_OK && dec->kind == HF_DEC_BYTELEVEL && !mid) { /* a whole text: invalid UTF-8 → U+FFFD */
            hf_buf fixed = {0};
            if ((st = put_lossy(&fixed, acc.v ? acc.v : "", acc.n)) == LRUN_OK) st = strs_push(out, fixed.v ? fixed.v : "", fixed.n);
            free(fixed.v);
            break;
        }
        if (st == LRUN_OK) st = strs_push(out, acc.v ? acc.v : "", acc.n);
        break;
    case HF_DEC_METASPACE:
        for (int64_t i = 0; i < in->n && st == LRUN_OK; ++i) {
            const hf_buf *t = &in->v[i];
            int drop = i == 0 && !mid && dec->prepend != HF_PREPEND_NEVER;
            acc.n = 0;
            for (size_t k = 0; k < t->n && st == LRUN_OK;) {
                if (dec->a_len > 0 && k + dec->a_len <= t->n && memcmp(t->v + k, dec->a, dec->a_len) == 0) {
                    if (!drop) st = hf_buf_put(&acc, " ", 1);
                    k += dec->a_len;
                } else {
                    st = hf_buf_put(&acc, t->v + k, 1);
                    ++k;
                }
            }
            if (st == LRUN_OK) st = strs_push(out, acc.v ? acc.v : "", acc.n);
        }
        break;
    case HF_DEC_REPLACE:
        for (int64_t i = 0; i < in->n && st == LRUN_OK; ++i) {
            const hf_buf *t = &in->v[i];
            acc.n = 0;
            for (size_t k = 0; k < t->n && st == LRUN_OK;) {
                if (dec->a_len > 0 && k + dec->a_len <= t->n && memcmp(t->v + k, dec->a, dec->a_len) == 0) {
                    st = hf_buf_put(&acc, dec->b, dec->b_len);
                    k += dec->a_len;
                } else {
                    st = hf_buf_put(&acc, t->v + k, 1);
                    ++k;
                }
            }
            if (st == LRUN_OK) st = strs_push(out, acc.v ? acc.v : "", acc.n);
        }
        break;
    case HF_DEC_BYTEFALLBACK:
        for (int64_t i = 0; i <= in->n && st == LRUN_OK; ++i) {
            int b = i < in->n ? byte_token(&in->v[i]) : -1;
            if (b >= 0) {
                char c = (char)b;
                st = hf_buf_put(&acc, &c, 1);
                continue;
            }
            if (acc.n > 0) { /* flush the pending bytes: as text when valid UTF-8, else one U+FFFD each */
                if (valid_utf8(acc.v, acc.n)) {
                    st = strs_push(out, acc.v, acc.n);
                } else {
                    for (size_t k = 0; k < acc.n && st == LRUN_OK; ++k) st = strs_push(out, "\xEF\xBF\xBD", 3);
                }
                acc.n = 0;
            }
            if (i < in->n && st == LRUN_OK) st = strs_push(out, in->v[i].v, in->v[i].n);
        }
        break;
    case HF_DEC_STRIP:
        for (int64_t i = 0; i < in->n && st == LRUN_OK; ++i) {
            const hf_buf *t = &in->v[i];
            size_t a = 0, b = t->n;
            for (int k = 0; !mid && k < dec->start && dec->a_len > 0 && b - a >= dec->a_len &&
                            memcmp(t->v + a, dec->a, dec->a_len) == 0; ++k)
                a += dec->a_len;
            for (int k = 0; !mid && k < dec->stop && dec->a_len > 0 && b - a >= dec->a_len &&
                            memcmp(t->v + b - dec->a_len, dec->a, dec->a_len) == 0; ++k)
                b -= dec->a_len;
            st = strs_push(out, t->v + a, b - a);
        }
        break;
    }
    free(acc.v);
    strs_clear(in);
    return st;
}

/* Runs a chunk of token texts through the decoders and appends the result. */
static lrun_status flush(const lrun_tokenizer *tok, int mid, strs *chunk, strs *tmp, hf_buf *out)
{
    const lrun_hf *hf = tok->hf;
    lrun_status st = LRUN_OK;
    if (chunk->n == 0) return LRUN_OK;
    for (int i = 0; i < hf->n_dec && st == LRUN_OK; ++i) {
        st = apply(tok, &hf->dec[i], mid, chunk, tmp);
        strs t = *chunk;
        *chunk = *tmp;
        *tmp = t;
    }
    for (int64_t i = 0; i < chunk->n && st == LRUN_OK; ++i) {
        if (hf->n_dec == 0 && i > 0 && (st = hf_buf_put(out, " ", 1)) != LRUN_OK) break; /* no decoder: joined by spaces */
        st = hf_buf_put(out, chunk->v[i].v, chunk->v[i].n);
    }
    strs_clear(chunk);
    return st;
}

/* ---------------------------------------------------------------- entries */

static lrun_status decode_ids(const lrun_tokenizer *tok, const int32_t *ids, int64_t n, int render_special, int mid,
                              hf_buf *out)
{
    strs chunk = {0}, tmp = {0};
    lrun_status st = LRUN_OK;
    if (hf_buf_put(out, NULL, 0) != LRUN_OK) return lrun_fail_oom(0, 0, "tokenizer: decode: out of memory");
    for (int64_t i = 0; i < n && st == LRUN_OK; ++i) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_vocab) {
            st = lrun_fail(LRUN_E_ARG, "tokenizer: decode: ids[%lld] = %d is outside the vocabulary of %lld", (long long)i,
                           (int)id, (long long)tok->n_vocab);
            break;
        }
        int32_t at = tok->hf->added_at[id];
        if (at > 0) { /* a normalized added token decodes as its normalized text, as HF's id_to_token */
            const hf_added *t = &tok->hf->added[at - 1];
            /* HF skips a special token by that text, so one the normalizer changed is never skipped */
            int same = t->match_len == t->len && memcmp(t->match, t->content, t->len) == 0;
            if (!render_special && t->special && same) continue;
            st = strs_push(&chunk, t->match, t->match_len);
        } else {
            st = strs_push(&chunk, lrun_pieces_text(&tok->pieces, id), tok->pieces.len[id]);
        }
    }
    if (st == LRUN_OK) st = flush(tok, mid, &chunk, &tmp, out);
    strs_clear(&chunk);
    strs_clear(&tmp);
    free(chunk.v);
    free(tmp.v);
    return st;
}

lrun_status lrun_hf_decode(const lrun_tokenizer *tok, const int32_t *ids, int64_t n, int render_special, hf_buf *out)
{
    return decode_ids(tok, ids, n, render_special, 0, out);
}

lrun_status lrun_hf_decode_piece(const lrun_tokenizer *tok, int32_t id, int render_special, hf_buf *out)
{
    return decode_ids(tok, &id, 1, render_special, 1, out);
}
