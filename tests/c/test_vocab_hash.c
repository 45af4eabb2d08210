/* test_vocab_hash.c — a crafted vocabulary cannot make the tokenizer's
 * piece index quadratic (issue 16: a 1.1 MB vocabulary took 11 s to load).
 *
 * The pieces all fall into slot 0 of the old, unkeyed FNV-1a index (the low
 * bits of their hash are zero for its capacity). Instead of timing the load,
 * the test counts the slots the index looked at (lrun_pieces.probes): about
 * one per piece with the keyed hash, n²/2 with the old one. */
#include "check.h"
#include "text/pieces.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { N = 3000 };

/* The index's old hash. */
static uint64_t old_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; ++i) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

int main(void)
{
    /* the index's capacity for N pieces: from 1024, doubled while under 2N */
    size_t cap = 1024;
    while (cap < 2 * (size_t)N) cap *= 2;
    lrun_pieces p = {0};
    char text[32];
    int added = 0, len = 0;
    lrun_status st = LRUN_OK;
    for (uint64_t i = 0; st == LRUN_OK && added < N; i++) {
        len = snprintf(text, sizeof text, "t%llx", (unsigned long long)i);
        if ((old_hash(text, (size_t)len) & (cap - 1)) != 0) continue;
        int64_t id;
        st = lrun_pieces_add(&p, text, (size_t)len, &id);
        added++;
    }
    CHECK("a vocabulary of pieces colliding under the old hash is indexed", st == LRUN_OK && added == N);
    printf("# %d colliding pieces: %llu probes (a single cluster would take about %d)\n", N,
           (unsigned long long)p.probes, N * (N + 1) / 2);
    CHECK("indexing looks at a few slots per piece, not n²/2", p.probes <= 8 * (uint64_t)N);
    CHECK("every piece is found", lrun_pieces_find(&p, text, (size_t)len) == N - 1 && lrun_pieces_find(&p, "none", 4) < 0);
    lrun_pieces_free(&p);
    return CHECK_DONE();
}
