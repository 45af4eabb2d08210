/* test_gguf_hash.c — crafted GGUF keys cannot make the reader's name index
 * quadratic (issue 16: a 3.1 MB file of colliding keys took 33 s to open).
 *
 * The file holds N keys that all fall into slot 0 of the old, unkeyed
 * FNV-1a table (the low bits of their hash are zero for its capacity).
 * Instead of timing the open, the test counts the slots the index looked at
 * (formats/gguf_probes.h): about one per name with a keyed hash, N²/2 with
 * the old one. */
#include "check.h"
#include "formats/gguf_probes.h"
#include "lrun.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum { N = 3000 };

/* The reader's old hash. */
static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

int main(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/lrun-test-gguf-hash-%d.gguf", (int)getpid());
    /* the old table's capacity for N + 1 keys: a power of two >= 2(N + 1) */
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)(N + 1)) cap *= 2;

    lrun_gguf_writer *w;
    lrun_status st = lrun_gguf_writer_open(&w, path);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_str(w, "general.architecture", "colliding");
    int written = 0;
    char key[32];
    for (uint64_t i = 0; st == LRUN_OK && written < N; i++) {
        int len = snprintf(key, sizeof key, "k.%llx", (unsigned long long)i);
        if ((fnv1a(key, (size_t)len) & (cap - 1)) != 0) continue;
        st = lrun_gguf_writer_set_u32(w, key, (uint32_t)written++);
    }
    if (st == LRUN_OK) st = lrun_gguf_writer_finish(w);
    lrun_gguf_writer_free(w);
    CHECK("a file of keys colliding under the old hash is written", st == LRUN_OK && written == N);

    lrun_gguf *g = NULL;
    st = lrun_gguf_open(&g, path);
    CHECK("it opens", st == LRUN_OK && g != NULL);
    if (g) {
        size_t probes = lrun_gguf_index_probes(g);
        printf("# %d colliding keys: %zu probes (a single cluster would take %d)\n", N, probes, N * (N + 1) / 2);
        CHECK("indexing looks at a few slots per name, not n²/2", probes <= 8 * (size_t)(N + 1));
        CHECK("every key is found", lrun_gguf_find_key(g, key) >= 0 && lrun_gguf_find_key(g, "k.none") < 0);
        lrun_gguf_close(g);
    }
    unlink(path);
    return CHECK_DONE();
}
