/* utf8.h — the text layer's bottom: spans of a text and UTF-8 helpers,
 * implemented in utf8.c. Not part of the API. */
#ifndef LRUN_TEXT_UTF8_H
#define LRUN_TEXT_UTF8_H

#include "lrun.h"

#include <stddef.h>
#include <stdint.h>

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

#endif
