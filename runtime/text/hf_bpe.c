/* hf_bpe.c — the BPE model of a tokenizer.json, over one pre-tokenized word.
 *
 * As HF's BPE::merge_word: one symbol per character (its vocabulary id; a
 * character outside the vocabulary becomes its <0xNN> byte tokens when
 * byte_fallback and they all exist, else unk, consecutive unks fused when
 * fuse_unk, else nothing). Then, until nothing merges: the adjacent pair of
 * ids with the lowest merge rank (ties: leftmost) becomes the merge's id.
 * Merges are keyed by ids (tok->merges, the table bpe.c reads), so a stale
 * pair is recognised by the ids it was queued with. ignore_merges: a word
 * that is a token is that token.
 */
#include "text/hf.h"

#include "core/error.h"
#include "text/bpe.h"

#include <stdlib.h>
#include <string.h>

typedef struct symbol {
    int32_t id;         /* token id */
    int32_t prev, next; /* live neighbours, -1 at the ends */
    uint32_t len;       /* bytes of the word it covers; 0 once merged into its left neighbour */
} symbol;

typedef struct bigram {
    int32_t rank;       /* lower merges first */
    int32_t pos;        /* left symbol; ties go to the leftmost */
    int32_t result;     /* id the pair becomes */
} bigram;

typedef struct work {
    symbol *sym;        /* (n_sym) */
    int32_t n_sym;
    bigram *heap;       /* (n_heap) binary min-heap on (rank, pos) */
    size_t n_heap, cap_heap;
} work;

static int before(const bigram *a, const bigram *b) { return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos); }

static lrun_status heap_push(work *w, bigram g)
{
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 64;
        bigram *h = realloc(w->heap, cap * sizeof *h);
        if (h == NULL) return lrun_fail_oom(cap * sizeof *h, 0, "tokenizer: bpe: out of memory");
        w->heap = h;
        w->cap_heap = cap;
    }
    size_t i = w->n_heap++;
    while (i > 0 && before(&g, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = g;
    return LRUN_OK;
}

static bigram heap_pop(work *w)
{
    bigram top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(&w->heap[c + 1], &w->heap[c])) ++c;
        if (!before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static lrun_status try_pair(const struct lrun_tokenizer *tok, work *w, int32_t left)
{
    if (left < 0 || w->sym[left].next < 0) return LRUN_OK;
    bigram g = {0, left, 0};
    if (!lrun_bpe_merge_find(tok, w->sym[left].id, w->sym[w->sym[left].next].id, &g.rank, &g.result)) return LRUN_OK;
    return heap_push(w, g);
}

static void sym_push(work *w, int32_t id, uint32_t len)
{
    int32_t i = w->n_sym++;
    w->sym[i] = (symbol){id, i - 1, -1, len};
    if (i > 0) w->sym[i - 1].next = i;
}

/* The initial symbols: one per character, with byte fallback and unk. */
static void initial_symbols(const struct lrun_tokenizer *tok, const char *word, size_t len, work *w)
{
    const lrun_hf *hf = tok->hf;
    for (size_t i = 0; i < len;) {
        size_t l = lrun_utf8_len((unsigned char)word[i]);
        if (l > len - i) l = len - i;
        int64_t id = lrun_pieces_find(&tok->pieces, word + i, l);
        if (id >= 0 && id < tok->n_vocab) {
            sym_push(w, (int32_t)id, (uint32_t)l);
        } else {
            int all = hf->byte_fallback;
            for (size_t k = 0; all && k < l; ++k) all = hf->byte_id[(unsigned char)word[i + k]] >= 0;
            if (all) {
                for (size_t k = 0; k < l; ++k) sym_push(w, hf->byte_id[(unsigned char)word[i + k]], 1);
            } else if (hf->unk >= 0) {
                if (hf->fuse_unk && w->n_sym > 0 && w->sym[w->n_sym - 1].id == hf->unk)
                    w->sym[w->n_sym - 1].len += (uint32_t)l;
                else
                    sym_push(w, hf->unk, (uint32_t)l);
            }
        }
        i += l;
    }
}

lrun_status lrun_hf_bpe_word(const struct lrun_tokenizer *tok, const char *word, size_t len, lrun_ids *out)
{
    lrun_status st = LRUN_OK;
    if (len == 0) return LRUN_OK;
    if (len > INT32_MAX / 8) return lrun_fail(LRUN_E_ARG, "tokenizer: a word of %zu bytes is too long", len);
    if (tok->hf->ignore_merges) {
        int64_t id = lrun_pieces_find(&tok->pieces, word, len);
        if (id >= 0 && id < tok->n_vocab) return lrun_ids_push(out, (int32_t)id);
    }
    work w = {0};
    w.sym = malloc(len * sizeof *w.sym); /* at most one symbol per byte (byte fallback) */
    if (w.sym == NULL) return lrun_fail_oom(len * sizeof *w.sym, 0, "tokenizer: bpe: out of memory");
    initial_symbols(tok, word, len, &w);
    for (int32_t i = 0; i + 1 < w.n_sym && st == LRUN_OK; ++i) st = try_pair(tok, &w, i);
    while (st == LRUN_OK && w.n_heap > 0) {
        bigram g = heap_pop(&w);
        symbol *l = &w.sym[g.pos];
        if (l->len == 0 || l->next < 0) continue;
        symbol *r = &w.sym[l->next];
        int32_t rank, result;
        if (!lrun_bpe_merge_find(tok, l->id, r->id, &rank, &result) || result != g.result) continue;
        l->id = result;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) w.sym[r->next].prev = g.pos;
        if ((st = try_pair(tok, &w, l->prev)) == LRUN_OK) st = try_pair(tok, &w, g.pos);
    }
    for (int32_t i = w.n_sym > 0 ? 0 : -1; i >= 0 && st == LRUN_OK; i = w.sym[i].next) st = lrun_ids_push(out, w.sym[i].id);
    free(w.sym);
    free(w.heap);
    return st;
}
