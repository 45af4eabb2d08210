/* hf.h — the HF tokenizer.json pipeline (tokenizers' encode and decode),
 * loaded by tokjson.c into the same lrun_tokenizer the GGUF path builds
 * (tok->hf set); run by hf_encode.c, hf_bpe.c and hf_decode.c. Not part of the API.
 *
 * Encode, as HF tokenizers' Tokenizer::encode does it:
 *   text ─► added tokens with normalized=false cut out of the raw text
 *        ─► each remaining fragment: normalizers (hf_norm list)
 *        ─► added tokens with normalized=true cut out of the normalized text
 *        ─► pre-tokenizers (hf_pre list) split each fragment into words
 *        ─► model: BPE on each word (char symbols, merges by rank,
 *           byte_fallback <0xNN>, unk)
 *        ─► post-processor: prefix/suffix ids (TemplateProcessing) when add_special.
 * Decode: the tokens' texts (added ones too, a normalized added token as its
 * normalized text; special ones dropped unless rendered) go through the
 * decoder list (hf_dec) as one list of strings, then are joined.
 */
#ifndef LRUN_TEXT_HF_H
#define LRUN_TEXT_HF_H

#include "text/pieces.h"
#include "text/utf8.h"
#include "text/vocab.h"

#include "lrun.h"

#include <stddef.h>
#include <stdint.h>

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

/* ---------------------------------------------------------------- added tokens */

typedef struct hf_added {
    int32_t id;
    const char *content;  /* NUL-terminated, owned by the pipeline */
    size_t len;
    const char *match;    /* what is searched: content, or content normalized when normalized */
    size_t match_len;
    uint8_t special, lstrip, rstrip, normalized, single_word;
} hf_added;

/* ---------------------------------------------------------------- normalizers */

typedef enum hf_norm_kind {
    HF_NORM_PREPEND = 0,  /* a = text put in front of a non-empty fragment */
    HF_NORM_REPLACE,      /* re (or literal a) → b */
    HF_NORM_NFC,          /* Unicode normalization forms (text/unorm.h) */
    HF_NORM_NFD,
    HF_NORM_NFKC,
    HF_NORM_NFKD,
    HF_NORM_LOWERCASE,    /* char::to_lowercase of each character (text/unorm.h) */
    HF_NORM_STRIP         /* left/right: strip Unicode whitespace */
} hf_norm_kind;

typedef struct hf_norm {
    hf_norm_kind kind;
    char *a, *b;          /* NUL-terminated, owned */
    size_t a_len, b_len;
    pcre2_code *re;       /* HF_NORM_REPLACE with a Regex pattern; NULL = literal a */
    int left, right;      /* HF_NORM_STRIP */
} hf_norm;

/* ---------------------------------------------------------------- pre-tokenizers */

typedef enum hf_behavior {
    HF_SPLIT_REMOVED = 0,
    HF_SPLIT_ISOLATED,
    HF_SPLIT_MERGED_PREV,
    HF_SPLIT_MERGED_NEXT,
    HF_SPLIT_CONTIGUOUS
} hf_behavior;

typedef enum hf_pre_kind {
    HF_PRE_SPLIT = 0,     /* re, behavior, invert (also Digits, Punctuation, Whitespace, WhitespaceSplit) */
    HF_PRE_BYTELEVEL,     /* add_prefix_space, then re (GPT-2) when use_regex, then bytes → chars */
    HF_PRE_METASPACE      /* ' ' → rep, prepend rep by scheme, split before rep when split */
} hf_pre_kind;

typedef enum hf_prepend {
    HF_PREPEND_ALWAYS = 0,
    HF_PREPEND_FIRST,
    HF_PREPEND_NEVER
} hf_prepend;

typedef struct hf_pre {
    hf_pre_kind kind;
    pcre2_code *re;       /* NULL: no regex split (ByteLevel use_regex=false) */
    hf_behavior behavior;
    int invert;
    int add_prefix_space; /* ByteLevel */
    char rep[8];          /* Metaspace replacement, UTF-8, NUL-terminated */
    size_t rep_len;
    hf_prepend prepend;   /* Metaspace */
    int split;            /* Metaspace */
} hf_pre;

/* ---------------------------------------------------------------- decoders */

typedef enum hf_dec_kind {
    HF_DEC_BYTELEVEL = 0, /* chars → bytes (a token with another char stays as it is) */
    HF_DEC_METASPACE,     /* rep → ' ', the first token of a chunk loses one leading ' ' unless prepend never */
    HF_DEC_REPLACE,       /* literal a → b in each token */
    HF_DEC_BYTEFALLBACK,  /* "<0xNN>" tokens → bytes */
    HF_DEC_FUSE,          /* all tokens → one */
    HF_DEC_STRIP          /* each token loses up to start leading / stop trailing `a` characters */
} hf_dec_kind;

typedef struct hf_dec {
    hf_dec_kind kind;
    char *a, *b;          /* NUL-terminated, owned */
    size_t a_len, b_len;
    int start, stop;      /* HF_DEC_STRIP */
    hf_prepend prepend;   /* HF_DEC_METASPACE */
} hf_dec;

/* ---------------------------------------------------------------- the pipeline */

typedef struct lrun_hf {
    hf_added *added;      /* (n_added) in file order */
    int64_t n_added;
    hf_norm *norm;        /* (n_norm) applied in order; Sequence flattened */
    int n_norm;
    hf_pre *pre;          /* (n_pre) applied in order; Sequence flattened */
    int n_pre;
    hf_dec *dec;          /* (n_dec) applied in order; Sequence flattened */
    int n_dec;
    int32_t *prefix, *suffix; /* (n_prefix), (n_suffix): post-processor ids around the text */
    int64_t n_prefix, n_suffix;
    /* model (BPE) */
    int byte_fallback;
    int fuse_unk;
    int ignore_merges;
    int32_t unk;          /* -1 when none */
    int32_t byte_id[256]; /* <0xNN> ids, -1 when absent */
    int32_t *added_at;    /* (n_vocab) index into added + 1 for added-token ids, else 0 */
    pcre2_code *re_word;  /* \w, for single_word added tokens */
    int32_t *order[2];    /* (n_order[k]) indices into added: k = 0 raw-matched, 1 normalized; longest first */
    int64_t n_order[2];
    uint8_t first_byte[2][256]; /* 1 where some token of order[k] starts with that byte */
    char *chat_template;  /* from tokenizer_config.json, NULL when none */
    char **strings;       /* (n_strings) owned texts the fields above point into */
    int64_t n_strings, cap_strings;
} lrun_hf;

void lrun_hf_free(lrun_hf *hf);

/* A growable byte buffer (normalized text, decoded text). */
typedef struct hf_buf {
    char *v;
    size_t n, cap;
} hf_buf;
lrun_status hf_buf_put(hf_buf *b, const char *s, size_t len);

/* Normalizes len bytes of text into out (cleared first). */
lrun_status lrun_hf_normalize(const lrun_hf *hf, const char *text, size_t len, hf_buf *out);
/* BPE of one pre-tokenized word (already byte-level mapped or ▁-escaped). */
lrun_status lrun_hf_bpe_word(const struct lrun_tokenizer *tok, const char *word, size_t len, lrun_ids *out);
/* Text → ids through the whole pipeline (lrun_tokenizer_encode when tok->hf). */
lrun_status lrun_hf_encode(const struct lrun_tokenizer *tok, const char *text, size_t len, int add_special,
                           int parse_special, lrun_ids *out);
/* Decodes ids as HF decode(ids, skip_special_tokens = !render_special) into out. */
lrun_status lrun_hf_decode(const struct lrun_tokenizer *tok, const int32_t *ids, int64_t n, int render_special, hf_buf *out);
/* One token's bytes in the middle of a text (no chunk-start stripping): for streaming. */
lrun_status lrun_hf_decode_piece(const struct lrun_tokenizer *tok, int32_t id, int render_special, hf_buf *out);
/* A word of a pre-tokenized fragment: bytes [off, off+len) of an arena. */
typedef struct hf_word {
    size_t off, len;
    int first;            /* starts at offset 0 of the original text (Metaspace prepend_scheme "first") */
} hf_word;

typedef struct hf_words {
    hf_word *v;           /* (n) in text order */
    int64_t n, cap;
} hf_words;

/* Runs the pre-tokenizers over arena bytes [0, arena->n) (one word, first as
 * given); words get the result, whose text may be appended to the arena. */
lrun_status lrun_hf_pretokenize(const lrun_hf *hf, hf_buf *arena, int first, hf_words *words);
/* Unicode White_Space (HF's char::is_whitespace). */
int lrun_hf_is_space(uint32_t cp);
/* Decodes one UTF-8 character of valid text at s (n bytes left); *len gets its length. */
uint32_t lrun_hf_cpt(const char *s, size_t n, size_t *len);

/* ---------------------------------------------------------------- loading (tokjson.c, tokjson_parts.c) */

struct cJSON;

/* What the loader carries: the file (for messages) and what it fills. */
typedef struct hf_ctx {
    const char *path;     /* tokenizer.json, named in every error */
    struct lrun_tokenizer *tok;
    lrun_hf *hf;
} hf_ctx;

/* A copy of s owned by hf (freed with it). */
lrun_status lrun_hf_strdup(lrun_hf *hf, const char *s, size_t len, char **out);
/* A PCRE2 regex (UTF, UCP, JIT where available) or a literal (HF's String pattern). */
lrun_status lrun_hf_compile(const hf_ctx *c, const char *field, const char *pattern, size_t len, int literal,
                            pcre2_code **out);
/* The parts of a tokenizer.json; node may be JSON null (no such part). field names it in messages. */
lrun_status lrun_hf_parse_normalizer(hf_ctx *c, const struct cJSON *node, const char *field);
lrun_status lrun_hf_parse_pre_tokenizer(hf_ctx *c, const struct cJSON *node, const char *field);
lrun_status lrun_hf_parse_decoder(hf_ctx *c, const struct cJSON *node, const char *field);
lrun_status lrun_hf_parse_post_processor(hf_ctx *c, const struct cJSON *node, const char *field);

#endif
