/* vocab.h — what the tokenizer's files share (not part of the API).
 *
 * Data flow of lrun_tokenizer_encode:
 *   text ─► special-token partition (tokenizer.c: control/user-defined texts
 *           matched first, longest token first, as llama.cpp does)
 *        ─► each plain-text fragment:
 *             gpt2  : invalid UTF-8 → U+FFFD, PCRE2 pre-tokenizer (pretokenizer.c),
 *                     byte→unicode mapping, lowest-rank merges (tokenizer_bpe.c)
 *             llama : " " → "▁" (+ a leading "▁"), highest-score merges,
 *                     <0xNN> byte fallback (tokenizer_spm.c)
 *        ─► ids.
 *
 * Every string the tokenizer knows (token texts, and for BPE the halves and
 * results of merges that are not tokens themselves) is a "piece": an id into
 * one table of NUL-terminated strings; ids below n_vocab are token ids.
 */
#ifndef LRUN_TEXT_VOCAB_H
#define LRUN_TEXT_VOCAB_H

#include "core/error.h"
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

/* ---------------------------------------------------------------- pre-tokenizer (pretokenizer.c) */

typedef struct lrun_pretokenizer lrun_pretokenizer;

/* A piece of text: bytes [start, start+len) of the fragment. */
typedef struct lrun_span {
    size_t start;
    size_t len;
} lrun_span;

typedef struct lrun_spans {
    lrun_span *v;  /* (n) */
    int64_t n;
    int64_t cap;
} lrun_spans;

lrun_status lrun_spans_push(lrun_spans *s, size_t start, size_t len);
void lrun_spans_free(lrun_spans *s);

/* What a tokenizer.ggml.pre value implies besides its regexes (llama.cpp's load()). */
typedef struct lrun_pre_info {
    const char *kind;     /* canonical name of the regex set: "gpt2", "llama3", "default", … */
    int ignore_merges;    /* 1: a word that is a whole token is emitted without merging */
    int add_bos;          /* default of add_bos before tokenizer.ggml.add_bos_token: 1, 0, or -1 = keep */
    int no_bos;           /* 1: the pre-tokenizer has no BOS (chatglm) */
} lrun_pre_info;

/* Builds the pre-tokenizer named by pre (len bytes; NULL = the key is absent,
 * which like an unknown name gets llama.cpp's "default" regexes). The PCRE2
 * patterns are compiled (and JIT-compiled where available) here, once. */
lrun_status lrun_pretokenizer_init(lrun_pretokenizer **out, const char *pre, size_t len, lrun_pre_info *info);
void lrun_pretokenizer_free(lrun_pretokenizer *pre);
/* Splits text (len bytes of valid UTF-8) into words, appended to out in order;
 * the words cover the text exactly. */
lrun_status lrun_pretokenizer_split(const lrun_pretokenizer *pre, const char *text, size_t len, lrun_spans *out);

/* Copies src to a new buffer in which every byte that does not begin a valid
 * UTF-8 sequence (bad lead, bad or missing continuation, overlong, surrogate,
 * > U+10FFFF) is replaced by U+FFFD, as llama.cpp's unicode_cpts_from_utf8
 * does; the result is valid UTF-8. */
lrun_status lrun_utf8_sanitize(const char *src, size_t len, char **dst, size_t *dst_len);
/* Bytes of the UTF-8 sequence that lead byte c announces (1 for stray bytes), as llama.cpp's unicode_len_utf8. */
static inline size_t lrun_utf8_len(unsigned char c)
{
    static const unsigned char lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

/* ---------------------------------------------------------------- the tokenizer */

typedef enum lrun_tok_kind {
    LRUN_TOK_KIND_BPE = 0,  /* tokenizer.ggml.model = "gpt2" */
    LRUN_TOK_KIND_SPM = 1   /* tokenizer.ggml.model = "llama" */
} lrun_tok_kind;

/* A merge: (left piece, right piece) → rank and the merged piece. */
typedef struct lrun_merge_slot {
    uint64_t key;     /* (left << 32 | right) + 1; 0 = empty */
    int32_t rank;     /* index in tokenizer.ggml.merges */
    int32_t result;   /* piece id of left+right */
} lrun_merge_slot;

struct lrun_tokenizer {
    lrun_tok_kind kind;
    int64_t n_vocab;
    lrun_pieces pieces;        /* ids < n_vocab are the tokens, then merge-only strings */
    uint8_t *type;             /* (n_vocab) lrun_token_type, after llama.cpp's overrides */
    float *score;              /* (n_vocab) SentencePiece scores (0 when absent) */

    /* byte-level BPE */
    lrun_pretokenizer *pre;
    lrun_pre_info pre_info;
    lrun_merge_slot *merges;   /* (merge_cap) open addressing */
    size_t merge_cap;          /* a power of two */
    int64_t n_merges;
    int32_t byte_piece[256];   /* piece id of each byte's mapped character, -1 when absent */
    int16_t cpt_byte[0x144];   /* byte a mapped code point stands for, -1 when none (decoding) */

    /* SentencePiece */
    int add_space_prefix;
    int32_t byte_token[256];   /* token for a fallback byte: <0xNN>, else the byte itself, else unk; -1 = none */

    /* specials */
    int32_t bos, eos, unk, eot, eom; /* -1 when none */
    int add_bos, add_eos;
    int32_t *eog;              /* (n_eog) end-of-generation ids, ascending */
    int64_t n_eog;
    int32_t *specials;         /* (n_specials) control/user-defined/unknown ids, longest text first */
    int64_t n_specials;
};

/* Merge lookup: rank and result piece of (left, right), or 0 when they do not merge. */
int lrun_bpe_merge_find(const struct lrun_tokenizer *tok, int32_t left, int32_t right, int32_t *rank, int32_t *result);
/* Reads tokenizer.ggml.merges into tok->merges (tokens already loaded). */
lrun_status lrun_bpe_load_merges(struct lrun_tokenizer *tok, const lrun_gguf *gguf);
/* Tokenizes one plain-text fragment (no specials inside) with byte-level BPE. */
lrun_status lrun_bpe_encode(const struct lrun_tokenizer *tok, const char *text, size_t len, lrun_ids *out);
/* UTF-8 of the byte-level character that stands for byte b (1 or 2 bytes); returns its length. */
size_t lrun_bpe_byte_to_utf8(uint8_t b, char out[2]);
/* Writes the raw bytes a byte-level token text stands for; a character
 * outside the byte map is copied through as its own UTF-8. Returns the bytes
 * written to out, never more than len. */
size_t lrun_bpe_unmap(const struct lrun_tokenizer *tok, const char *text, size_t len, char *out);

/* Tokenizes one plain-text fragment with SentencePiece BPE; prefix_space
 * prepends "▁" (the caller decides, per llama.cpp's is_prev_special rule). */
lrun_status lrun_spm_encode(const struct lrun_tokenizer *tok, const char *text, size_t len, int prefix_space,
                            lrun_ids *out);
/* Fills tok->byte_token from the vocabulary. */
void lrun_spm_init_bytes(struct lrun_tokenizer *tok);

#endif
