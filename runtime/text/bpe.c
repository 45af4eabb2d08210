/* bpe.c — byte-level BPE (tokenizer.ggml.model = "gpt2").
 *
 * A word from the pre-tokenizer becomes one symbol per byte, each the
 * printable character GPT-2's byte↔unicode table maps that byte to. Then,
 * until nothing merges: take the adjacent pair with the lowest merge rank
 * (ties: leftmost) and join it. The pairs wait in a binary heap and symbols
 * form a linked list, so a word of n bytes costs O(n log n), not O(n²);
 * pairs that went stale (a neighbour merged first) are skipped when popped,
 * as in llama.cpp's llm_tokenizer_bpe_session.
 */
#include "text/bpe.h"

#include "core/checked.h"
#include "core/error.h"
#include "text/pretokenizer.h"
#include "text/utf8.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- byte ↔ unicode */

/* Code point standing for byte b: printable Latin-1 bytes stand for
 * themselves, the other 68 take U+0100 upward in byte order. */
static uint32_t byte_to_cpt(uint8_t b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    uint32_t n = 0; /* how many unprintable bytes come before b */
    for (uint32_t c = 0; c < b; ++c) {
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE)) ++n;
    }
    return 256 + n;
}

size_t lrun_bpe_byte_to_utf8(uint8_t b, char out[2])
{
    uint32_t cp = byte_to_cpt(b); /* < 0x144, so one or two UTF-8 bytes */
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

size_t lrun_bpe_unmap(const struct lrun_tokenizer *tok, const char *text, size_t len, char *out)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, o = 0;
    while (i < len) {
        size_t n = lrun_utf8_len(s[i]);
        if (n > len - i) n = len - i;
        uint32_t cp = 0x110000;
        if (n == 1 && s[i] < 0x80) cp = s[i];
        else if (n == 2 && (s[i + 1] & 0xC0) == 0x80) cp = ((uint32_t)(s[i] & 0x1F) << 6) | (s[i + 1] & 0x3F);
        if (cp < 0x144 && tok->cpt_byte[cp] >= 0) {
            out[o++] = (char)tok->cpt_byte[cp];
        } else { /* not a byte character: pass it through unchanged */
            memcpy(out + o, s + i, n);
            o += n;
        }
        i += n;
    }
    return o;
}

/* ---------------------------------------------------------------- merges */


int lrun_bpe_merge_find(const struct lrun_tokenizer *tok, int32_t left, int32_t right, int32_t *rank, int32_t *result)
{
    if (left < 0 || right < 0 || tok->merge_cap == 0) return 0;
    uint64_t key = lrun_bpe_merge_key(left, right);
    size_t mask = tok->merge_cap - 1;
    for (size_t i = lrun_bpe_merge_hash(key) & mask;; i = (i + 1) & mask) {
        const lrun_merge_slot *s = &tok->merges[i];
        if (s->key == 0) return 0;
        if (s->key == key) {
            *rank = s->rank;
            *result = s->result;
            return 1;
        }
    }
}

lrun_status lrun_bpe_load_merges(struct lrun_tokenizer *tok, const lrun_gguf *gguf)
{
    const char *key = "tokenizer.ggml.merges";
    int64_t kv = lrun_gguf_find_key(gguf, key), count = 0;
    lrun_gguf_type et;
    if (kv < 0) return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s is missing (needed by a gpt2 tokenizer)", key);
    if (lrun_gguf_get_arr(gguf, kv, &et, &count) != LRUN_OK || et != LRUN_GGUF_TYPE_STRING)
        return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s is not an array of strings", key);
    if (count > INT32_MAX / 4) return lrun_fail(LRUN_E_FORMAT, "tokenizer: %s has %lld entries, too many", key, (long long)count);

    size_t cap = 1024;
    while (cap < (size_t)count * 2) cap *= 2;
    tok->merges = calloc(cap, sizeof *tok->merges);
    if (tok->merges == NULL) return lrun_fail_oom(cap * sizeof *tok->merges, 0, "tokenizer: merges: out of memory");
    tok->merge_cap = cap;

    char *joined = NULL; /* left+right of one merge, outside the piece table (which may move) */
    size_t joined_cap = 0;
    lrun_status st = LRUN_OK;
    for (int64_t i = 0; i < count; ++i) {
        const char *s;
        size_t len;
        if (lrun_gguf_get_arr_str(gguf, kv, i, &s, &len) != LRUN_OK) {
            st = lrun_fail(LRUN_E_FORMAT, "tokenizer: %s[%lld] cannot be read", key, (long long)i);
            break;
        }
        /* "a b": the separator is the first space after the first byte (a may itself begin with a space). */
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (sp == NULL || sp + 1 == s + len) {
            st = lrun_fail(LRUN_E_FORMAT, "tokenizer: %s[%lld] = \"%.*s\" is not two pieces separated by a space", key,
                           (long long)i, (int)(len > 64 ? 64 : len), s);
            break;
        }
        size_t la = (size_t)(sp - s), lb = len - la - 1;
        if (len > joined_cap) {
            char *j = realloc(joined, len);
            if (j == NULL) {
                st = lrun_fail_oom(len, 0, "tokenizer: merges: out of memory");
                break;
            }
            joined = j;
            joined_cap = len;
        }
        memcpy(joined, s, la);
        memcpy(joined + la, sp + 1, lb);
        int64_t a, b, r;
        if ((st = lrun_pieces_intern(&tok->pieces, s, la, &a)) != LRUN_OK) break;
        if ((st = lrun_pieces_intern(&tok->pieces, sp + 1, lb, &b)) != LRUN_OK) break;
        if ((st = lrun_pieces_intern(&tok->pieces, joined, la + lb, &r)) != LRUN_OK) break;
        if (r > INT32_MAX) {
            st = lrun_fail(LRUN_E_FORMAT, "tokenizer: %s: too many distinct pieces", key);
            break;
        }
        uint64_t k = lrun_bpe_merge_key((int32_t)a, (int32_t)b);
        size_t mask = cap - 1;
        for (size_t h = lrun_bpe_merge_hash(k) & mask;; h = (h + 1) & mask) {
            lrun_merge_slot *slot = &tok->merges[h];
            if (slot->key == k) break; /* a repeated pair keeps its first (lowest) rank, as llama.cpp's emplace */
            if (slot->key == 0) {
                slot->key = k;
                slot->rank = (int32_t)i;
                slot->result = (int32_t)r;
                break;
            }
        }
    }
    free(joined);
    if (st != LRUN_OK) return st;
    tok->n_merges = count;
    for (int i = 0; i < 0x144; ++i) tok->cpt_byte[i] = -1;
    for (int b = 0; b < 256; ++b) tok->cpt_byte[byte_to_cpt((uint8_t)b)] = (int16_t)b;
    for (int b = 0; b < 256; ++b) {
        char u[2];
        size_t n = lrun_bpe_byte_to_utf8((uint8_t)b, u);
        tok->byte_piece[b] = (int32_t)lrun_pieces_find(&tok->pieces, u, n);
    }
    return LRUN_OK;
}

/* ---------------------------------------------------------------- merging one word */

typedef struct symbol {
    int32_t piece;  /* piece id of the symbol's text, -1 when no piece has it */
    int32_t prev;   /* index of the previous live symbol, -1 at the start */
    int32_t next;   /* index of the next live symbol, -1 at the end */
    uint32_t start; /* first byte in the word (original bytes) */
    uint32_t len;   /* bytes; 0 once merged into its left neighbour */
} symbol;

typedef struct bigram {
    int32_t rank;   /* lower merges first */
    int32_t left;   /* symbol index; ties go to the leftmost */
    int32_t right;
    int32_t lp, rp; /* pieces when queued: a pair is stale once either changed */
    int32_t result;
} bigram;

typedef struct bpe_work {
    symbol *sym;  /* (cap_sym) */
    size_t cap_sym;
    bigram *heap; /* (cap_heap) binary min-heap on (rank, left) */
    size_t n_heap, cap_heap;
} bpe_work;

static int bigram_less(const bigram *a, const bigram *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static lrun_status heap_push(bpe_work *w, bigram g)
{
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 256;
        bigram *h = realloc(w->heap, cap * sizeof *h);
        if (h == NULL) return lrun_fail_oom(cap * sizeof *h, 0, "tokenizer: bpe: out of memory");
        w->heap = h;
        w->cap_heap = cap;
    }
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bigram_less(&g, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = g;
    return LRUN_OK;
}

static bigram heap_pop(bpe_work *w)
{
    bigram top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_less(&w->heap[c + 1], &w->heap[c])) ++c;
        if (!bigram_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static lrun_status try_pair(const struct lrun_tokenizer *tok, bpe_work *w, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return LRUN_OK;
    bigram g = {0, left, right, w->sym[left].piece, w->sym[right].piece, 0};
    if (!lrun_bpe_merge_find(tok, g.lp, g.rp, &g.rank, &g.result)) return LRUN_OK;
    return heap_push(w, g);
}

/* Emits the token of one final symbol; a text that is not a token falls back
 * to single-byte tokens of its mapped text where those exist (llama.cpp). */
static lrun_status emit_symbol(const struct lrun_tokenizer *tok, const symbol *s, const unsigned char *word, lrun_ids *out)
{
    if (s->piece >= 0 && s->piece < tok->n_vocab) return lrun_ids_push(out, s->piece);
    for (uint32_t i = 0; i < s->len; ++i) {
        char u[2];
        size_t n = lrun_bpe_byte_to_utf8(word[s->start + i], u);
        for (size_t k = 0; k < n; ++k) {
            int64_t id = lrun_pieces_find(&tok->pieces, u + k, 1);
            if (id >= 0 && id < tok->n_vocab) {
                lrun_status st = lrun_ids_push(out, (int32_t)id);
                if (st != LRUN_OK) return st;
            }
        }
    }
    return LRUN_OK;
}

static lrun_status encode_word(const struct lrun_tokenizer *tok, bpe_work *w, const unsigned char *word, size_t len,
                               char *mapped, lrun_ids *out)
{
    lrun_status st;
    if (len == 0) return LRUN_OK;
    if (tok->pre_info.ignore_merges) {
        size_t m = 0;
        for (size_t i = 0; i < len; ++i) m += lrun_bpe_byte_to_utf8(word[i], mapped + m);
        int64_t id = lrun_pieces_find(&tok->pieces, mapped, m);
        if (id >= 0 && id < tok->n_vocab) return lrun_ids_push(out, (int32_t)id);
    }
    if (len > w->cap_sym) {
        symbol *s = realloc(w->sym, len * sizeof *s);
        if (s == NULL) return lrun_fail_oom(len * sizeof *s, 0, "tokenizer: bpe: out of memory");
        w->sym = s;
        w->cap_sym = len;
    }
    for (size_t i = 0; i < len; ++i) {
        w->sym[i] = (symbol){tok->byte_piece[word[i]], (int32_t)i - 1, i + 1 < len ? (int32_t)i + 1 : -1, (uint32_t)i, 1};
    }
    w->n_heap = 0;
    for (size_t i = 1; i < len; ++i) {
        if ((st = try_pair(tok, w, (int32_t)i - 1, (int32_t)i)) != LRUN_OK) return st;
    }
    while (w->n_heap > 0) {
        bigram g = heap_pop(w);
        symbol *l = &w->sym[g.left], *r = &w->sym[g.right];
        if (l->len == 0 || r->len == 0 || l->next != g.right || l->piece != g.lp || r->piece != g.rp) continue;
        l->piece = g.result;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = g.left;
        if ((st = try_pair(tok, w, l->prev, g.left)) != LRUN_OK) return st;
        if ((st = try_pair(tok, w, g.left, l->next)) != LRUN_OK) return st;
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        if ((st = emit_symbol(tok, &w->sym[i], word, out)) != LRUN_OK) return st;
    }
    return LRUN_OK;
}

/* ---------------------------------------------------------------- a fragment */

lrun_status lrun_bpe_encode(const struct lrun_tokenizer *tok, const char *text, size_t len, lrun_ids *out)
{
    char *clean = NULL, *mapped = NULL;
    size_t clean_len = 0;
    lrun_spans words = {0};
    bpe_work w = {0};
    lrun_status st = lrun_utf8_sanitize(text, len, &clean, &clean_len);
    if (st != LRUN_OK) return st;
    if ((st = lrun_pretokenizer_split(tok->pre, clean, clean_len, &words)) != LRUN_OK) goto done;
    size_t longest = 0;
    for (int64_t i = 0; i < words.n; ++i) longest = words.v[i].len > longest ? words.v[i].len : longest;
    if (longest > INT32_MAX) {
        st = lrun_fail(LRUN_E_ARG, "tokenizer: a word of %zu bytes is too long", longest);
        goto done;
    }
    mapped = malloc(2 * longest + 1); /* a byte maps to at most 2 UTF-8 bytes */
    if (mapped == NULL) {
        st = lrun_fail_oom(2 * longest + 1, 0, "tokenizer: bpe: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < words.n && st == LRUN_OK; ++i) {
        st = encode_word(tok, &w, (const unsigned char *)clean + words.v[i].start, words.v[i].len, mapped, out);
    }
done:
    free(w.sym);
    free(w.heap);
    free(mapped);
    lrun_spans_free(&words);
    free(clean);
    return st;
}
