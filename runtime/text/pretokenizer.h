/* pretokenizer.h — splitting text into words before byte-level BPE
 * (pretokenizer.c). Not part of the API. */
#ifndef LRUN_TEXT_PRETOKENIZER_H
#define LRUN_TEXT_PRETOKENIZER_H

#include "text/utf8.h"

#include "lrun.h"

#include <stddef.h>

typedef struct lrun_pretokenizer lrun_pretokenizer;

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

#endif
