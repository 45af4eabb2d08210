/* spm.c — SentencePiece BPE (tokenizer.ggml.model = "llama").
 *
 * Spaces become "▁" (U+2581), with one more "▁" in front when the fragment
 * starts the text or follows a special token and add_space_prefix is on.
 * The text starts as one symbol per UTF-8 character; then, until nothing
 * merges: join the adjacent pair whose concatenation is a vocabulary entry
 * with the highest score (ties: leftmost). A final symbol that is not a token
 * is spelled with byte tokens <0xNN>. Same heap-and-linked-list scheme as
 * bpe.c, following llama.cpp's llm_tokenizer_spm_session.
 */
#include "text/spm.h"

#include "core/error.h"
#include "text/utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- byte fallback */

void lrun_spm_init_bytes(struct lrun_tokenizer *tok)
{
    for (int b = 0; b < 256; ++b) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int64_t id = lrun_pieces_find(&tok->pieces, name, 6);
        if (id < 0 || id >= tok->n_vocab) { /* llama.cpp tries the byte itself next */
            char c = (char)b;
            id = lrun_pieces_find(&tok->pieces, &c, 1);
        }
        if (id < 0 || id >= tok->n_vocab) id = tok->unk; /* lrun: unk rather than an exception; -1 drops the byte */
        tok->byte_token[b] = (int32_t)id;
    }
}

/* ---------------------------------------------------------------- merging */

typedef struct symbol {
    int32_t prev, next; /* live neighbours, -1 at the ends */
    uint32_t start;     /* first byte in the escaped text */
    uint32_t len;       /* bytes; 0 once merged into its left neighbour */
} symbol;

typedef struct bigram {
    float score;        /* higher merges first */
    int32_t left;       /* ties go to the leftmost */
    int32_t right;
    uint32_t size;      /* bytes of left+right when queued; a different sum means stale */
} bigram;

typedef struct spm_work {
    const struct lrun_tokenizer *tok;
    const char *text;
    symbol *sym;
    bigram *heap;
    size_t n_heap, cap_heap;
} spm_work;

static int bigram_before(const bigram *a, const bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static lrun_status heap_push(spm_work *w, bigram g)
{
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 256;
        bigram *h = realloc(w->heap, cap * sizeof *h);
        if (h == NULL) return lrun_fail_oom(cap * sizeof *h, 0, "tokenizer: spm: out of memory");
        w->heap = h;
        w->cap_heap = cap;
    }
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bigram_before(&g, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = g;
    return LRUN_OK;
}

static bigram heap_pop(spm_work *w)
{
    bigram top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_before(&w->heap[c + 1], &w->heap[c])) ++c;
        if (!bigram_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static lrun_status try_pair(spm_work *w, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return LRUN_OK;
    const symbol *l = &w->sym[left], *r = &w->sym[right];
    uint32_t size = l->len + r->len; /* the two are adjacent in the text */
    int64_t id = lrun_pieces_find(&w->tok->pieces, w->text + l->start, size);
    if (id < 0 || id >= w->tok->n_vocab) return LRUN_OK;
    return heap_push(w, (bigram){w->tok->score[id], left, right, size});
}

static lrun_status emit_symbol(const spm_work *w, const symbol *s, lrun_ids *out)
{
    const struct lrun_tokenizer *tok = w->tok;
    int64_t id = lrun_pieces_find(&tok->pieces, w->text + s->start, s->len);
    if (id >= 0 && id < tok->n_vocab) return lrun_ids_push(out, (int32_t)id);
    for (uint32_t i = 0; i < s->len; ++i) {
        int32_t b = tok->byte_token[(unsigned char)w->text[s->start + i]];
        if (b < 0) continue;
        lrun_status st = lrun_ids_push(out, b);
        if (st != LRUN_OK) return st;
    }
    return LRUN_OK;
}

/* ---------------------------------------------------------------- a fragment */

lrun_status lrun_spm_encode(const struct lrun_tokenizer *tok, const char *text, size_t len, int prefix_space,
                            lrun_ids *out)
{
    static const char sp[3] = {'\xE2', '\x96', '\x81'}; /* ▁ */
    size_t n_spaces = prefix_space ? 1 : 0;
    for (size_t i = 0; i < len; ++i) n_spaces += text[i] == ' ';
    if (len > (size_t)INT32_MAX / 4) return lrun_fail(LRUN_E_ARG, "tokenizer: text of %zu bytes is too long", len);
    size_t n = len + 2 * n_spaces; /* each space grows by 2 bytes; the prefix adds 3 */
    if (prefix_space) n += 1;
    if (n == 0) return LRUN_OK;

    spm_work w = {tok, NULL, NULL, NULL, 0, 0};
    char *esc = malloc(n);
    w.sym = malloc(n * sizeof *w.sym);
    lrun_status st = LRUN_OK;
    if (esc == NULL || w.sym == NULL) {
        st = lrun_fail_oom(n * (1 + sizeof *w.sym), 0, "tokenizer: spm: out of memory");
        goto done;
    }
    size_t o = 0;
    if (prefix_space) {
        memcpy(esc, sp, 3);
        o = 3;
    }
    for (size_t i = 0; i < len; ++i) {
        if (text[i] == ' ') {
            memcpy(esc + o, sp, 3);
            o += 3;
        } else {
            esc[o++] = text[i];
        }
    }
    w.text = esc;

    /* One symbol per UTF-8 character (a broken sequence is cut at the end of the text). */
    int32_t n_sym = 0;
    for (size_t i = 0; i < n;) {
        size_t l = lrun_utf8_len((unsigned char)esc[i]);
        if (l > n - i) l = n - i;
        w.sym[n_sym] = (symbol){n_sym - 1, -1, (uint32_t)i, (uint32_t)l};
        if (n_sym > 0) w.sym[n_sym - 1].next = n_sym;
        ++n_sym;
        i += l;
    }
    for (int32_t i = 1; i < n_sym; ++i) {
        if ((st = try_pair(&w, i - 1, i)) != LRUN_OK) goto done;
    }
    while (w.n_heap > 0) {
        bigram g = heap_pop(&w);
        symbol *l = &w.sym[g.left], *r = &w.sym[g.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != g.size) continue;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) w.sym[r->next].prev = g.left;
        if ((st = try_pair(&w, l->prev, g.left)) != LRUN_OK) goto done;
        if ((st = try_pair(&w, g.left, l->next)) != LRUN_OK) goto done;
    }
    for (int32_t i = 0; i >= 0; i = w.sym[i].next) {
        if ((st = emit_symbol(&w, &w.sym[i], out)) != LRUN_OK) goto done;
    }
done:
    free(w.heap);
    free(w.sym);
    free(esc);
    return st;
}
