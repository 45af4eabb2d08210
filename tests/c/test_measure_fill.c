/* test_measure_fill.c — the host measurements' synthetic weights
 * (lrun_measure_fill): every 16-bit word a normal f16 and bf16 number, no
 * two pages alike (a zeroed or constant weight read at cache speed in a VM,
 * session 19), and the same bytes for the same seed. */
#include "check.h"
#include "cpu/measure.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int normal_f16(uint16_t w)
{
    const unsigned e = (w >> 10) & 0x1f;
    return e != 0 && e != 0x1f;
}

static int normal_bf16(uint16_t w)
{
    const unsigned e = (w >> 7) & 0xff;
    return e != 0 && e != 0xff;
}

int main(void)
{
    const size_t page = 4096, n_pages = 256, bytes = page * n_pages + 5; /* a tail shorter than a word */
    unsigned char *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) return 1;
    lrun_measure_fill(a, bytes, 1);
    lrun_measure_fill(b, bytes, 1);
    CHECK("the same seed fills the same bytes", memcmp(a, b, bytes) == 0);
    lrun_measure_fill(b, bytes, 2);
    CHECK("another seed fills other bytes", memcmp(a, b, bytes) != 0);

    int all_normal = 1;
    for (size_t i = 0; i + 2 <= bytes - 5; i += 2) {
        uint16_t w;
        memcpy(&w, a + i, 2);
        if (!normal_f16(w) || !normal_bf16(w)) all_normal = 0;
    }
    CHECK("every 16-bit word is a normal f16 and bf16 number", all_normal);
    int tail = 1;
    for (size_t i = bytes - 5; i < bytes; i++) tail &= a[i] == 0x38;
    CHECK("the tail bytes are written too", tail);

    int pages_differ = 1;
    for (size_t p = 1; p < n_pages; p++)
        if (memcmp(a, a + p * page, page) == 0) pages_differ = 0;
    CHECK("no page is the first page's copy", pages_differ);
    int not_zero = 0;
    for (size_t i = 0; i < bytes; i++) not_zero |= a[i];
    CHECK("not zeros", not_zero != 0);

    memcpy(b, a, bytes);
    lrun_measure_fill(b, 0, 7);
    lrun_measure_fill(b + 8, 3, 7); /* a tail alone */
    CHECK("zero bytes write nothing; three write three",
          memcmp(b, a, 8) == 0 && b[8] == 0x38 && b[10] == 0x38 && memcmp(b + 11, a + 11, bytes - 11) == 0);
    free(a);
    free(b);
    return CHECK_DONE();
}
