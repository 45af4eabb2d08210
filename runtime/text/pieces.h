/* pieces.h — the text layer's bottom: growable id lists and interned strings
 * ("pieces"), implemented in pieces.c. Not part of the API.
 *
 * Every string the tokenizer knows (token texts, and for BPE the halves and
 * results of merges that are not tokens themselves) is a "piece": an id into
 * one table of NUL-terminated strings; ids below n_vocab are token ids.
 */
#ifndef LRUN_TEXT_PIECES_H
#define LRUN_TEXT_PIECES_H

#include "lrun.h"

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- growable id list */

typedef struct lrun_ids {
    int32_t *v;   /* (n) ids */
    int64_t n;
    int64_t cap;
} lrun_ids;

lrun_status lrun_ids_push(lrun_ids *ids, int32_t id);
void lrun_ids_free(lrun_ids *ids);

/* ---------------------------------------------------------------- pieces: interned strings */

typedef struct lrun_pieces {
    char *bytes;        /* (bytes_len) every piece's text followed by a NUL */
    size_t bytes_len;
    size_t bytes_cap;
    size_t *off;        /* (n) start of piece i in bytes */
    uint32_t *len;      /* (n) bytes of piece i, without the NUL */
    int64_t n;
    int64_t cap;
    uint32_t *slots;    /* (slot_cap) open-addressing table of piece id + 1; 0 = empty */
    size_t slot_cap;    /* a power of two, at least twice n */
    uint64_t probes;    /* slots looked at while indexing pieces (tests bound it: text/pieces.c) */
} lrun_pieces;

/* Id of the piece with these bytes, or -1. */
int64_t lrun_pieces_find(const lrun_pieces *p, const char *s, size_t len);
/* Appends a piece (duplicates allowed: the table then maps the text to the
 * newest id, as llama.cpp's token_to_id does); *id gets its id. s must not
 * point into the table itself (the table may move). */
lrun_status lrun_pieces_add(lrun_pieces *p, const char *s, size_t len, int64_t *id);
/* The id of the piece with these bytes, adding it when absent. */
lrun_status lrun_pieces_intern(lrun_pieces *p, const char *s, size_t len, int64_t *id);
static inline const char *lrun_pieces_text(const lrun_pieces *p, int64_t id) { return p->bytes + p->off[id]; }
void lrun_pieces_free(lrun_pieces *p);

#endif
