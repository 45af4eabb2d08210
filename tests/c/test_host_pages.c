/* test_host_pages.c — host buffers (core/host_pages.h): small ones on whole
 * cache lines, large ones 2 MiB-aligned and advised onto huge pages (how
 * many the kernel gave, from /proc/self/smaps, is printed, not checked: it
 * depends on the machine's THP setting and free memory), LRUN_HOST_HUGEPAGES=0
 * keeping them on small pages; every buffer writable to its last byte, and
 * lrun_host_alloc (the host and pinned tiers without a GPU) taking the same way. */
#include "check.h"
#include "core/device.h"
#include "core/host_pages.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MiB ((size_t)1 << 20)

/* kB of AnonHugePages in the mapping that holds p, or -1 when smaps cannot say. */
static long huge_kb(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    int in = 0;
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && strchr(line, ' ') &&
            line[strspn(line, "0123456789abcdef")] == '-') {
            in = (uintptr_t)p >= a && (uintptr_t)p < b;
            continue;
        }
        if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) break;
    }
    fclose(f);
    return kb;
}

static int filled(unsigned char *p, size_t n)
{
    memset(p, 0x5a, n);
    return p[0] == 0x5a && p[n / 2] == 0x5a && p[n - 1] == 0x5a;
}

int main(void)
{
    void *p = NULL;
    CHECK("a small buffer: allocated", lrun_host_memalign(&p, 4096) == 0 && p != NULL);
    CHECK("a small buffer: on a 64-byte line, writable", p && (uintptr_t)p % LRUN_HOST_ALIGN == 0 && filled(p, 4096));
    free(p);

    const size_t big = 64 * MiB + 4096;
    CHECK("a 64 MiB buffer: allocated", lrun_host_memalign(&p, big) == 0 && p != NULL);
    CHECK("a 64 MiB buffer: 2 MiB-aligned, writable to its last byte",
          p && (uintptr_t)p % (2 * MiB) == 0 && filled(p, big));
    printf("# a 64 MiB buffer: %ld kB on huge pages (THP: the machine's setting)\n", p ? huge_kb(p) : -1L);
    free(p);

    setenv("LRUN_HOST_HUGEPAGES", "0", 1);
    CHECK("LRUN_HOST_HUGEPAGES=0: allocated", lrun_host_memalign(&p, big) == 0 && p != NULL);
    CHECK("LRUN_HOST_HUGEPAGES=0: on a 64-byte line, writable",
          p && (uintptr_t)p % LRUN_HOST_ALIGN == 0 && filled(p, big));
    free(p);
    unsetenv("LRUN_HOST_HUGEPAGES");

    CHECK("lrun_host_alloc (host tier, 40 MiB): 2 MiB-aligned",
          lrun_host_alloc(LRUN_TIER_HOST, 40 * MiB, "a test buffer", &p) == LRUN_OK && p &&
              (uintptr_t)p % (2 * MiB) == 0 && filled(p, 40 * MiB));
    lrun_host_release(LRUN_TIER_HOST, p);
    return CHECK_DONE();
}
