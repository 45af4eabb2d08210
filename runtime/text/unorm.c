/* unorm.c — Unicode normalization forms (UAX #15) and the lowercase mapping
 * over UTF-8, for the tokenizer.json normalizers.
 *
 * A run of characters that are stable in the form (canonical combining class
 * 0, unchanged by the form, never the second of a composition: the quick
 * check) is copied as it is; ASCII is always stable. Around anything else, a
 * segment from the last stable character (it may compose with what follows)
 * to the next one is decomposed (full decompositions from the tables; Hangul
 * algorithmically), put in canonical order (a stable sort by combining class
 * of each run of non-starters) and, for NFC/NFKC, composed (primary
 * composites, a character blocked by one of equal or higher class between
 * it and its starter; Hangul LV and LVT algorithmically).
 */
#include "text/unorm.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

#define U_GET(tab, cp) (lrun_u_##tab##_2[(size_t)lrun_u_##tab##_1[(cp) >> 7] * 128u + ((cp)&127u)])

enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7, L_COUNT = 19, V_COUNT = 21, T_COUNT = 28,
       N_COUNT = V_COUNT * T_COUNT, S_COUNT = L_COUNT * N_COUNT };

const char *lrun_unorm_version(void)
{
    return lrun_u_version;
}

/* One character of valid UTF-8 at s (n > 0 bytes left); *len gets its length. */
static uint32_t cpt(const unsigned char *s, size_t n, size_t *len)
{
    unsigned char c = s[0];
    size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (l > n) l = n; /* not reached on valid text; stays in bounds on any */
    uint32_t cp = l == 1 ? c : (uint32_t)c & (0x7Fu >> l);
    for (size_t i = 1; i < l; ++i) cp = (cp << 6) | (s[i] & 0x3Fu);
    *len = l;
    return cp > 0x10FFFF ? 0xFFFD : cp;
}

static lrun_status put(char **out, size_t *n, size_t *cap, const void *src, size_t len)
{
    if (*n + len + 1 > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *n + len + 1) c *= 2;
        char *p = realloc(*out, c);
        if (p == NULL) return lrun_fail_oom(c, 0, "tokenizer: normalize: out of memory (%zu bytes)", c);
        *out = p;
        *cap = c;
    }
    if (len > 0) memcpy(*out + *n, src, len);
    *n += len;
    (*out)[*n] = 0;
    return LRUN_OK;
}

static lrun_status put_cp(char **out, size_t *n, size_t *cap, uint32_t cp)
{
    unsigned char b[4];
    size_t l;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        l = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        l = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        l = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (unsigned char)(0x80 | (cp & 0x3F));
        l = 4;
    }
    return put(out, n, cap, b, l);
}

/* Code points of a segment being normalized. */
typedef struct cps {
    uint32_t *v; /* (n) */
    size_t n, cap;
} cps;

static lrun_status cps_push(cps *c, uint32_t cp)
{
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 64;
        uint32_t *p = realloc(c->v, nc * sizeof *p);
        if (p == NULL) return lrun_fail_oom(nc * sizeof *p, 0, "tokenizer: normalize: out of memory");
        c->v = p;
        c->cap = nc;
    }
    c->v[c->n++] = cp;
    return LRUN_OK;
}

static lrun_status decompose(uint32_t cp, int compat, cps *c)
{
    lrun_status st;
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE, t = s % T_COUNT;
        if ((st = cps_push(c, L_BASE + s / N_COUNT)) != LRUN_OK) return st;
        if ((st = cps_push(c, V_BASE + (s % N_COUNT) / T_COUNT)) != LRUN_OK) return st;
        return t ? cps_push(c, T_BASE + t) : LRUN_OK;
    }
    uint16_t at = compat ? U_GET(compat, cp) : U_GET(canon, cp);
    if (at == 0) return cps_push(c, cp);
    for (uint32_t i = 1; i <= lrun_u_pool[at]; ++i)
        if ((st = cps_push(c, lrun_u_pool[at + i])) != LRUN_OK) return st;
    return LRUN_OK;
}

/* Canonical ordering: a stable insertion sort of each run of non-starters by class. */
static void reorder(cps *c)
{
    for (size_t i = 1; i < c->n; ++i) {
        uint32_t x = c->v[i];
        uint8_t cx = U_GET(ccc, x);
        if (cx == 0) continue;
        size_t j = i;
        while (j > 0 && U_GET(ccc, c->v[j - 1]) > cx) {
            c->v[j] = c->v[j - 1];
            --j;
        }
        c->v[j] = x;
    }
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    int lo = 0, hi = lrun_u_n_comp - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const uint32_t *e = lrun_u_comp[mid];
        if (e[0] == a && e[1] == b) return e[2];
        if (e[0] < a || (e[0] == a && e[1] < b)) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

static void compose(cps *c)
{
    size_t k = 0;
    long st = -1; /* index of the last starter in v[0, k) */
    for (size_t i = 0; i < c->n; ++i) {
        uint32_t x = c->v[i];
        uint8_t cx = U_GET(ccc, x);
        if (st >= 0) {
            size_t prev = k - 1;
            int open = prev == (size_t)st || (U_GET(ccc, c->v[prev]) != 0 && U_GET(ccc, c->v[prev]) < cx);
            uint32_t y = open ? compose_pair(c->v[st], x) : 0;
            if (y) {
                c->v[st] = y;
                continue;
            }
        }
        if (cx == 0) st = (long)k;
        c->v[k++] = x;
    }
    c->n = k;
}

static lrun_status segment(lrun_uform form, const unsigned char *s, size_t len, cps *c, char **out, size_t *n,
                           size_t *cap)
{
    lrun_status st = LRUN_OK;
    c->n = 0;
    for (size_t i = 0, l; i < len && st == LRUN_OK; i += l)
        st = decompose(cpt(s + i, len - i, &l), form == LRUN_NFKD || form == LRUN_NFKC, c);
    if (st != LRUN_OK) return st;
    reorder(c);
    if (form == LRUN_NFC || form == LRUN_NFKC) compose(c);
    for (size_t i = 0; i < c->n && st == LRUN_OK; ++i) st = put_cp(out, n, cap, c->v[i]);
    return st;
}

static int stable(lrun_uform form, uint32_t cp)
{
    return !((U_GET(flags, cp) >> form) & 1u);
}

lrun_status lrun_unorm(lrun_uform form, const char *text, size_t len, char **out, size_t *n, size_t *cap)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t copied = 0, start = 0, i = 0, l;
    cps c = {0};
    lrun_status st = LRUN_OK;
    while (i < len && st == LRUN_OK) {
        if (s[i] < 0x80) {
            start = i++;
            continue;
        }
        if (stable(form, cpt(s + i, len - i, &l))) {
            start = i;
            i += l;
            continue;
        }
        size_t j = i + l;
        while (j < len && !stable(form, cpt(s + j, len - j, &l))) j += l;
        if (start < copied) start = copied;
        if ((st = put(out, n, cap, s + copied, start - copied)) != LRUN_OK) break;
        st = segment(form, s + start, j - start, &c, out, n, cap);
        copied = start = i = j;
    }
    free(c.v);
    if (st != LRUN_OK) return st;
    return put(out, n, cap, s + copied, len - copied);
}

lrun_status lrun_ulower(const char *text, size_t len, char **out, size_t *n, size_t *cap)
{
    const unsigned char *s = (const unsigned char *)text;
    lrun_status st = put(out, n, cap, NULL, 0);
    for (size_t i = 0, l; i < len && st == LRUN_OK; i += l) {
        if (s[i] < 0x80) { /* ASCII run */
            size_t j = i, base = *n;
            while (j < len && s[j] < 0x80) ++j;
            l = j - i;
            if ((st = put(out, n, cap, s + i, l)) != LRUN_OK) break;
            for (size_t k = base; k < *n; ++k)
                if ((*out)[k] >= 'A' && (*out)[k] <= 'Z') (*out)[k] = (char)((*out)[k] + 32);
            continue;
        }
        uint32_t cp = cpt(s + i, len - i, &l);
        uint16_t at = U_GET(lower, cp);
        if (at == 0) {
            st = put(out, n, cap, s + i, l);
            continue;
        }
        for (uint32_t k = 1; k <= lrun_u_pool[at] && st == LRUN_OK; ++k) st = put_cp(out, n, cap, lrun_u_pool[at + k]);
    }
    return st;
}
