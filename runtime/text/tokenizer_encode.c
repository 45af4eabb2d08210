/* tokenizer_encode.c — text → ids and id → bytes.
 *
 * Encoding first cuts the text at special-token texts (llama.cpp's
 * tokenizer_st_partition): the special tokens are tried longest first, each
 * splitting every still-plain fragment at all its occurrences. With
 * parse_special off, control and unknown tokens are not matched, but
 * user-defined ones still are (as in HF tokenizers and llama.cpp). The plain
 * fragments then go to the model's tokenizer (bpe.c / spm.c).
 */
#include "text/vocab.h"

#include "core/error.h"
#include "text/bpe.h"
#include "text/hf.h"
#include "text/pieces.h"
#include "text/spm.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- special-token partition */

/* A fragment: a special token, or bytes [off, off+len) of the text still to tokenize. */
typedef struct fragment {
    int32_t token; /* -1 for plain text */
    size_t off;
    size_t len;
} fragment;

typedef struct fragments {
    fragment *v; /* (n) in text order */
    int64_t n, cap;
} fragments;

static lrun_status frag_push(fragments *f, int32_t token, size_t off, size_t len)
{
    if (f->n == f->cap) {
        int64_t cap = f->cap ? f->cap * 2 : 16;
        fragment *v = realloc(f->v, (size_t)cap * sizeof *v);
        if (v == NULL) return lrun_fail_oom((size_t)cap * sizeof *v, 0, "tokenizer: fragments: out of memory");
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (fragment){token, off, len};
    return LRUN_OK;
}

static lrun_status partition(const lrun_tokenizer *tok, const char *text, size_t len, int parse_special, fragments *out)
{
    fragments cur = {0}, next = {0};
    lrun_status st = LRUN_OK;
    if (len > 0 && (st = frag_push(&cur, -1, 0, len)) != LRUN_OK) goto done;
    for (int64_t s = 0; s < tok->n_specials && cur.n > 0; ++s) {
        int32_t id = tok->specials[s];
        uint8_t type = tok->type[id];
        if (!parse_special && (type == LRUN_TOKEN_TYPE_CONTROL || type == LRUN_TOKEN_TYPE_UNKNOWN)) continue;
        const char *stext = lrun_pieces_text(&tok->pieces, id);
        size_t slen = tok->pieces.len[id];
        /* Rebuild the list only when this token occurs somewhere. */
        int64_t first = -1;
        for (int64_t i = 0; i < cur.n && first < 0; ++i) {
            if (cur.v[i].token < 0 && cur.v[i].len >= slen && memmem(text + cur.v[i].off, cur.v[i].len, stext, slen))
                first = i;
        }
        if (first < 0) continue;
        next.n = 0;
        for (int64_t i = 0; i < cur.n; ++i) {
            fragment f = cur.v[i];
            if (i < first || f.token >= 0) {
                if ((st = frag_push(&next, f.token, f.off, f.len)) != LRUN_OK) goto done;
                continue;
            }
            size_t pos = f.off, end = f.off + f.len;
            for (;;) {
                const char *m = end - pos >= slen ? memmem(text + pos, end - pos, stext, slen) : NULL;
                if (m == NULL) break;
                size_t at = (size_t)(m - text);
                if (at > pos && (st = frag_push(&next, -1, pos, at - pos)) != LRUN_OK) goto done;
                if ((st = frag_push(&next, id, at, slen)) != LRUN_OK) goto done;
                pos = at + slen;
            }
            if (pos < end && (st = frag_push(&next, -1, pos, end - pos)) != LRUN_OK) goto done;
        }
        fragments t = cur;
        cur = next;
        next = t;
    }
    *out = cur;
    cur.v = NULL;
done:
    free(cur.v);
    free(next.v);
    return st;
}

/* ---------------------------------------------------------------- encode */

lrun_status lrun_tokenizer_encode(const lrun_tokenizer *tok, const char *text, size_t len, int add_special,
                                  int parse_special, int32_t *ids, int64_t cap, int64_t *n_out)
{
    if (tok == NULL || n_out == NULL) return lrun_fail(LRUN_E_ARG, "tokenizer: encode: tokenizer or n_out is NULL");
    if (text == NULL && len > 0) return lrun_fail(LRUN_E_ARG, "tokenizer: encode: text is NULL");
    if (cap < 0 || (ids == NULL && cap > 0)) return lrun_fail(LRUN_E_ARG, "tokenizer: encode: cap %lld without ids", (long long)cap);
    *n_out = 0;
    fragments frags = {0};
    lrun_ids out = {0};
    lrun_status st;
    if (tok->hf != NULL) { /* tokenizer.json: HF's pipeline end to end */
        if ((st = lrun_hf_encode(tok, text, len, add_special, parse_special, &out)) != LRUN_OK) goto done;
        goto copy;
    }
    if ((st = partition(tok, text, len, parse_special, &frags)) != LRUN_OK) return st;

    if (add_special && tok->add_bos && tok->bos >= 0 && (st = lrun_ids_push(&out, tok->bos)) != LRUN_OK) goto done;
    int prev_special = 1; /* SentencePiece: a fragment at the start or after a special gets the "▁" prefix */
    for (int64_t i = 0; i < frags.n; ++i) {
        const fragment *f = &frags.v[i];
        if (f->token >= 0) {
            st = lrun_ids_push(&out, f->token);
            prev_special = 1;
        } else if (tok->kind == LRUN_TOK_KIND_BPE) {
            st = lrun_bpe_encode(tok, text + f->off, f->len, &out);
        } else {
            st = lrun_spm_encode(tok, text + f->off, f->len, tok->add_space_prefix && prev_special, &out);
            prev_special = 0;
        }
        if (st != LRUN_OK) goto done;
    }
    if (add_special && tok->add_eos && tok->eos >= 0 && (st = lrun_ids_push(&out, tok->eos)) != LRUN_OK) goto done;

copy:
    if (cap > 0 && out.n > 0) memcpy(ids, out.v, (size_t)(out.n < cap ? out.n : cap) * sizeof *ids);
    *n_out = out.n;
done:
    free(frags.v);
    lrun_ids_free(&out);
    return st;
}

/* ---------------------------------------------------------------- decode */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Copies n bytes of src into buf (at most cap) and reports n. */
static lrun_status put(const char *src, size_t n, char *buf, size_t cap, size_t *n_out)
{
    if (buf != NULL && cap > 0) memcpy(buf, src, n < cap ? n : cap);
    *n_out = n;
    return LRUN_OK;
}

lrun_status lrun_tokenizer_decode_token(const lrun_tokenizer *tok, int32_t id, int render_special, char *buf, size_t cap,
                                        size_t *n_out)
{
    if (tok == NULL || n_out == NULL) return lrun_fail(LRUN_E_ARG, "tokenizer: decode: tokenizer or n_out is NULL");
    *n_out = 0;
    if (buf == NULL && cap > 0) return lrun_fail(LRUN_E_ARG, "tokenizer: decode: cap %zu without buf", cap);
    if (id < 0 || id >= tok->n_vocab)
        return lrun_fail(LRUN_E_ARG, "tokenizer: decode: token %d is outside the vocabulary of %lld", (int)id,
                         (long long)tok->n_vocab);
    if (tok->hf != NULL) {
        hf_buf b = {0};
        lrun_status st = lrun_hf_decode_piece(tok, id, render_special, &b);
        if (st == LRUN_OK) st = put(b.v, b.n, buf, cap, n_out);
        free(b.v);
        return st;
    }
    const char *text = lrun_pieces_text(&tok->pieces, id);
    size_t len = tok->pieces.len[id];
    switch ((lrun_token_type)tok->type[id]) {
    case LRUN_TOKEN_TYPE_CONTROL:
    case LRUN_TOKEN_TYPE_UNKNOWN:
        return put(text, render_special ? len : 0, buf, cap, n_out);
    case LRUN_TOKEN_TYPE_USER_DEFINED:
        return put(text, len, buf, cap, n_out);
    case LRUN_TOKEN_TYPE_NORMAL:
        break;
    case LRUN_TOKEN_TYPE_BYTE:
        if (tok->kind == LRUN_TOK_KIND_SPM && len == 6 && memcmp(text, "<0x", 3) == 0 && text[5] == '>' &&
            hex_digit(text[3]) >= 0 && hex_digit(text[4]) >= 0) {
            char b = (char)(hex_digit(text[3]) * 16 + hex_digit(text[4]));
            return put(&b, 1, buf, cap, n_out);
        }
        return put(text, 0, buf, cap, n_out);
    default: /* unused, undefined: nothing, like llama.cpp */
        return put(text, 0, buf, cap, n_out);
    }

    /* A normal token: undo the byte mapping (BPE) or the ▁ escape (SPM). Both only shrink. */
    char small[256], *tmp = len <= sizeof small ? small : malloc(len);
    if (tmp == NULL) return lrun_fail_oom(len, 0, "tokenizer: decode: out of memory");
    size_t n = 0;
    if (tok->kind == LRUN_TOK_KIND_BPE) {
        n = lrun_bpe_unmap(tok, text, len, tmp);
    } else {
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && memcmp(text + i, "\xE2\x96\x81", 3) == 0) {
                tmp[n++] = ' ';
                i += 3;
            } else {
                tmp[n++] = text[i++];
            }
        }
    }
    lrun_status st = put(tmp, n, buf, cap, n_out);
    if (tmp != small) free(tmp);
    return st;
}

lrun_status lrun_tokenizer_decode(const lrun_tokenizer *tok, const int32_t *ids, int64_t n, int render_special, char *buf,
                                  size_t cap, size_t *n_out)
{
    if (tok == NULL || n_out == NULL) return lrun_fail(LRUN_E_ARG, "tokenizer: decode: tokenizer or n_out is NULL");
    *n_out = 0;
    if ((ids == NULL && n > 0) || n < 0) return lrun_fail(LRUN_E_ARG, "tokenizer: decode: %lld ids without an array", (long long)n);
    if (buf == NULL && cap > 0) return lrun_fail(LRUN_E_ARG, "tokenizer: decode: cap %zu without buf", cap);
    hf_buf out = {0};
    lrun_status st = hf_buf_put(&out, NULL, 0); /* never a NULL buffer, even for no ids */
    if (st != LRUN_OK) {
    } else if (tok->hf != NULL) {
        st = lrun_hf_decode(tok, ids, n, render_special, &out);
    } else { /* GGUF: the pieces one after the other */
        for (int64_t i = 0; i < n && st == LRUN_OK; ++i) {
            size_t need = 0;
            if ((st = lrun_tokenizer_decode_token(tok, ids[i], render_special, NULL, 0, &need)) != LRUN_OK) break;
            if ((st = hf_buf_put(&out, NULL, need)) != LRUN_OK) break;
            st = lrun_tokenizer_decode_token(tok, ids[i], render_special, out.v + out.n - need, need, &need);
        }
    }
    if (st == LRUN_OK) st = put(out.v, out.n, buf, cap, n_out);
    free(out.v);
    return st;
}
