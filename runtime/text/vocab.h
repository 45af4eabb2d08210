/* vocab.h — the tokenizer record every stage of text/ reads (loaded by
 * tokenizer.c, read-only afterwards). Not part of the API.
 *
 * Data flow of lrun_tokenizer_encode (tokenizer_encode.c):
 *   text ─► special-token partition (tokenizer_encode.c: control/user-defined
 *           texts matched first, longest token first, as llama.cpp does)
 *        ─► each plain-text fragment:
 *             gpt2  : invalid UTF-8 → U+FFFD (utf8.c), PCRE2 pre-tokenizer
 *                     (pretokenizer.c), byte→unicode mapping, lowest-rank
 *                     merges (bpe.c)
 *             llama : " " → "▁" (+ a leading "▁"), highest-score merges,
 *                     <0xNN> byte fallback (spm.c)
 *        ─► ids.
 * A tokenizer loaded from tokenizer.json (tokjson.c) fills the same record
 * and sets hf: encoding and decoding then follow HF tokenizers (text/hf.h).
 *
 * Layers of text/ (each file includes only headers of its own layer or below):
 *   utf8.h (spans, UTF-8), pieces.h (id lists, interned strings)
 *     ─► pretokenizer.h (regex word split), vocab.h (this record)
 *     ─► bpe.h, spm.h (one fragment → ids; merges and byte tables)
 *     ─► tokenizer.c (loading, accessors: the public lrun_tokenizer_* entry)
 *     ─► tokenizer_encode.c (lrun_tokenizer_encode / decode_token).
 */
#ifndef LRUN_TEXT_VOCAB_H
#define LRUN_TEXT_VOCAB_H

#include "text/pieces.h"
#include "text/pretokenizer.h"

#include "lrun.h"

#include <stddef.h>
#include <stdint.h>

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

    /* tokenizer.json: the HF pipeline (text/hf.h) that encode and decode run; NULL for GGUF */
    struct lrun_hf *hf;
};

/* Adds id (-1: none, nothing added) to tok's end-of-generation ids unless
 * it is there already; LRUN_E_OOM when the list cannot grow
 * (tokenizer.c). */
lrun_status lrun_vocab_add_eog(lrun_tokenizer *tok, int32_t id);

#endif
