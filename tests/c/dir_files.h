/* dir_files.h — a test's scratch directory and whole files in and out of
 * it (test_packed_file.c, test_packed_pex2.c): the caller fills `dir`
 * (mkdtemp) before using path_of. */
#ifndef LRUN_TESTS_DIR_FILES_H
#define LRUN_TESTS_DIR_FILES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static char dir[64];

/* dir/name, in one of 8 rotating buffers (a call may hold a few at once) */
static char *path_of(const char *name)
{
    static char buf[8][128];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 128, "%s/%s", dir, name);
    return p;
}

/* the whole file (one byte more allocated), its size in *n; NULL if it does not open */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n + 1);
    if (b && fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) fwrite(b, 1, n, f), fclose(f);
}

#endif
