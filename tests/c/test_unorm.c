/* test_unorm.c — runtime/text/unorm.c against Python's unicodedata on every
 * code point: tests/golden/unicode_norm.txt (from
 * tests/golden/make_unicode_tables.py) lists each code point that NFC, NFD,
 * NFKC, NFKD or lowercase changes with the expected results, plus combining
 * sequences; every other code point must map to itself in every form. */
#include "check.h"

#include "text/unorm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GOLDEN "tests/golden/unicode_norm.txt"

static size_t enc(uint32_t cp, char *b)
{
    if (cp < 0x80) return b[0] = (char)cp, 1;
    if (cp < 0x800) return b[0] = (char)(0xC0 | (cp >> 6)), b[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (char)(0xF0 | (cp >> 18));
    b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* "41.301" → UTF-8 into b (NUL-terminated); "-" is empty; returns the first code point. */
static uint32_t parse(const char *f, char *b)
{
    size_t n = 0;
    uint32_t first = 0;
    int k = 0;
    if (strcmp(f, "-") != 0) {
        for (const char *p = f; *p;) {
            char *e;
            uint32_t cp = (uint32_t)strtoul(p, &e, 16);
            if (k++ == 0) first = cp;
            n += enc(cp, b + n);
            p = *e == '.' ? e + 1 : e;
        }
    }
    b[n] = 0;
    return first;
}

/* Runs form (4 = lowercase) on s; 1 when the result is want. */
static int same(int form, const char *s, const char *want)
{
    char *out = NULL;
    size_t n = 0, cap = 0;
    lrun_status st = form == 4 ? lrun_ulower(s, strlen(s), &out, &n, &cap)
                               : lrun_unorm((lrun_uform)form, s, strlen(s), &out, &n, &cap);
    int ok = st == LRUN_OK && n == strlen(want) && (n == 0 || memcmp(out, want, n) == 0);
    free(out);
    return ok;
}

static uint8_t listed[0x110000]; /* 1 where the golden lists the code point alone */

int main(void)
{
    static const int forms[5] = {LRUN_NFC, LRUN_NFD, LRUN_NFKC, LRUN_NFKD, 4};
    static const char *const names[5] = {"NFC", "NFD", "NFKC", "NFKD", "lowercase"};
    FILE *f = fopen(GOLDEN, "r");
    CHECK("golden opens", f != NULL);
    if (f == NULL) return CHECK_DONE();
    char line[4096], fld[6][1024], in[1024], want[1024];
    long lines = 0, bad[5] = {0};
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        if (sscanf(line, "%1023s %1023s %1023s %1023s %1023s %1023s", fld[0], fld[1], fld[2], fld[3], fld[4], fld[5]) != 6)
            continue;
        ++lines;
        uint32_t cp = parse(fld[0], in);
        if (strchr(fld[0], '.') == NULL) listed[cp] = 1;
        for (int k = 0; k < 5; ++k) {
            if (strcmp(fld[k + 1], "=") == 0) strcpy(want, in);
            else parse(fld[k + 1], want);
            if (!same(forms[k], in, want) && bad[k]++ < 5) printf("# %s of %s: wrong\n", names[k], fld[0]);
        }
    }
    fclose(f);
    CHECK("golden has the changed code points and sequences", lines > 5000);
    for (int k = 0; k < 5; ++k) {
        char name[64];
        snprintf(name, sizeof name, "%s of every listed code point and sequence", names[k]);
        CHECK(name, bad[k] == 0);
    }
    long moved = 0;
    for (uint32_t cp = 0; cp < 0x110000; ++cp) {
        if (listed[cp] || (cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0xAC00 && cp < 0xAC00 + 11172)) continue;
        char s[8];
        s[enc(cp, s)] = 0;
        for (int k = 0; k < 5; ++k)
            if (!same(forms[k], s, s) && moved++ < 5) printf("# %s of U+%04X: not itself\n", names[k], cp);
    }
    CHECK("every other code point is unchanged in every form", moved == 0);
    CHECK("tables carry their Unicode version", strchr(lrun_unorm_version(), '.') != NULL);

    /* ASCII speed: the fast path (one pass, no decoding) against a plain copy */
    size_t len = 1 << 22;
    char *text = malloc(len), *out = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < len; ++i) text[i] = (char)(' ' + (i * 7) % 95);
    clock_t t0 = clock();
    lrun_status st = lrun_unorm(LRUN_NFC, text, len, &out, &n, &cap);
    double dt = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK("NFC of 4 MiB ASCII is the text", st == LRUN_OK && n == len && memcmp(out, text, len) == 0);
    printf("# NFC of 4 MiB ASCII: %.1f ms (%.0f MB/s)\n", dt * 1e3, len / 1e6 / (dt > 0 ? dt : 1e-9));
    free(out);
    free(text);
    return CHECK_DONE();
}
