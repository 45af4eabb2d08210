/* utf8.c — spans of a text and UTF-8 repair, the text layer's bottom.
 *
 * Repair makes any input valid UTF-8 before the pre-tokenizer sees it: an
 * invalid byte becomes U+FFFD, exactly what llama.cpp's decoder substitutes,
 * so PCRE2 never meets invalid UTF-8.
 */
#include "text/utf8.h"

#include "core/checked.h"
#include "core/error.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- spans */

lrun_status lrun_spans_push(lrun_spans *s, size_t start, size_t len)
{
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 64;
        size_t bytes;
        if (!lrun_size_mul((size_t)cap, sizeof *s->v, &bytes)) return lrun_fail(LRUN_E_OOM, "tokenizer: too many words");
        lrun_span *v = realloc(s->v, bytes);
        if (v == NULL) return lrun_fail_oom(bytes, 0, "tokenizer: words: out of memory");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n].start = start;
    s->v[s->n].len = len;
    s->n++;
    return LRUN_OK;
}

void lrun_spans_free(lrun_spans *s)
{
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

/* ---------------------------------------------------------------- UTF-8 repair */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 when the byte
 * at s does not begin one. Strict (RFC 3629): no overlongs, no surrogates,
 * nothing above U+10FFFF. */
static size_t utf8_valid_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0; /* surrogate */
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;  /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

lrun_status lrun_utf8_sanitize(const char *src, size_t len, char **dst, size_t *dst_len)
{
    /* Worst case every byte becomes the 3-byte U+FFFD. */
    size_t cap;
    if (!lrun_size_mul(len, 3, &cap) || !lrun_size_add(cap, 1, &cap))
        return lrun_fail(LRUN_E_ARG, "tokenizer: text of %zu bytes is too long", len);
    char *out = malloc(cap);
    if (out == NULL) return lrun_fail_oom(cap, 0, "tokenizer: text: out of memory");
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0, o = 0;
    while (i < len) {
        size_t n = utf8_valid_len(s + i, len - i);
        if (n == 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        } else {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        }
    }
    out[o] = '\0';
    *dst = out;
    *dst_len = o;
    return LRUN_OK;
}
