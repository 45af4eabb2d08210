/* test_page_cache.c — the page cache's share of a load and the keep rule
 * (residency/page_cache.c), and the loader's warm defaults:
 *   - a file just written and read is all in the cache: the share of its
 *     ranges is 1, counted in bytes at odd offsets; once dropped
 *     (POSIX_FADV_DONTNEED) it is near 0, and reading half of it again
 *     brings exactly that half back (skipped where the filesystem keeps
 *     pages through the advice: tmpfs);
 *   - a missing file or no bytes is -1 (unknown), never a guess;
 *   - the keep rule: kept when the bytes are at most half of what the host
 *     can give and no host budget governs; LRUN_LOAD_KEEP_CACHE overrides;
 *   - lrun_loader_read takes the warm pair (LRUN_LOADER_WARM_CHUNK, up to
 *     LRUN_LOADER_WARM_THREADS) for cached ranges and the cold defaults
 *     otherwise, says which in its stats, and an explicit chunk or thread
 *     count is used as given. */
#define _DEFAULT_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "check.h"
#include "residency/loader.h"
#include "residency/page_cache.h"

#define TMPFS_MAGIC_ 0x01021994

static char path[256];
enum { SIZE = 8 << 20 };

static void drop(void)
{
    const int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        (void)fdatasync(fd);
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* Reads len bytes at off, with no readahead past them (POSIX_FADV_RANDOM). */
static void read_bytes(off_t off, size_t len)
{
    const int fd = open(path, O_RDONLY);
    if (fd >= 0) (void)posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    char *buf = malloc(len);
    if (fd >= 0 && buf) (void)!pread(fd, buf, len, off);
    free(buf);
    if (fd >= 0) close(fd);
}

static void test_fraction(void)
{
    unsigned char *bytes = malloc(SIZE);
    for (int i = 0; i < SIZE; i++) bytes[i] = (unsigned char)(i * 7);
    FILE *f = fopen(path, "wb");
    const int wrote = f && fwrite(bytes, 1, SIZE, f) == SIZE;
    if (f) fclose(f);
    free(bytes);
    CHECK("a test file is written", wrote);
    read_bytes(0, SIZE);
    const char *paths[1] = {path};
    /* the whole file as two ranges, and one range inside a page */
    lrun_load_range r[3] = {{.offset = 0, .bytes = SIZE / 2 + 123},
                            {.offset = SIZE / 2 + 123, .bytes = SIZE / 2 - 123},
                            {.offset = 5, .bytes = 10}};
    CHECK_NEAR("a file just read is all in the cache", lrun_page_cache_fraction(paths, 1, r, 2), 1.0, 1e-12);
    CHECK_NEAR("a range inside one page counts its bytes", lrun_page_cache_fraction(paths, 1, r + 2, 1), 1.0, 1e-12);

    struct statfs sf;
    if (statfs(path, &sf) == 0 && (unsigned long)sf.f_type == TMPFS_MAGIC_) {
        printf("ok %d - dropped pages leave the cache # SKIP tmpfs keeps them\n", ++check_count);
        printf("ok %d - half read again is half in the cache # SKIP tmpfs\n", ++check_count);
    } else {
        drop();
        const double after = lrun_page_cache_fraction(paths, 1, r, 2);
        printf("# after POSIX_FADV_DONTNEED: %.3f in the cache\n", after);
        CHECK("dropped pages leave the cache", after >= 0 && after < 0.1);
        read_bytes(0, SIZE / 2);
        /* the first range is the half read plus 123 bytes of the page after it */
        lrun_load_range half = {.offset = 0, .bytes = SIZE / 2};
        CHECK_NEAR("half read again is half in the cache", lrun_page_cache_fraction(paths, 1, &half, 1), 1.0, 1e-12);
        const double whole = lrun_page_cache_fraction(paths, 1, r, 2);
        printf("# the whole file after reading its first half: %.4f in the cache\n", whole);
        CHECK("... and the whole file about half", fabs(whole - 0.5) < 0.05);
    }

    const char *missing[1] = {"/nonexistent/lrun_page_cache"};
    CHECK("a missing file is unknown (-1)", lrun_page_cache_fraction(missing, 1, r, 2) == -1);
    lrun_load_range none = {.offset = 0, .bytes = 0};
    CHECK("no bytes is unknown (-1)", lrun_page_cache_fraction(paths, 1, &none, 1) == -1);
    lrun_load_range past = {.offset = (uint64_t)SIZE * 4, .bytes = 100};
    CHECK("a range past the file's end counts nothing", lrun_page_cache_fraction(paths, 1, &past, 1) == 0);
}

static void test_keep_rule(void)
{
    const size_t gib = (size_t)1 << 30;
    CHECK("13 GB of files, 100 GiB available, no budget: kept", lrun_page_cache_keep(13 * gib, 100 * gib, 0));
    CHECK("... with a host budget: dropped", !lrun_page_cache_keep(13 * gib, 100 * gib, 1));
    CHECK("more than half of what is available: dropped", !lrun_page_cache_keep(13 * gib, 25 * gib, 0));
    CHECK("exactly half: kept", lrun_page_cache_keep(13 * gib, 26 * gib, 0));
    CHECK("available unknown (0): dropped", !lrun_page_cache_keep(1, 0, 0));
    setenv("LRUN_LOAD_KEEP_CACHE", "1", 1);
    CHECK("LRUN_LOAD_KEEP_CACHE=1 keeps, whatever the size", lrun_page_cache_drop(SIZE_MAX, 1) == 0);
    setenv("LRUN_LOAD_KEEP_CACHE", "0", 1);
    CHECK("LRUN_LOAD_KEEP_CACHE=0 drops, whatever the size", lrun_page_cache_drop(1, 0) == 1);
    unsetenv("LRUN_LOAD_KEEP_CACHE");
    CHECK("unset: a 1-byte load without a budget is kept", lrun_page_cache_drop(1, 0) == 0);
    CHECK("unset: a load larger than the address space is dropped", lrun_page_cache_drop(SIZE_MAX, 0) == 1);
}

static void test_loader_defaults(void)
{
    unsetenv("LRUN_LOAD_THREADS");
    unsetenv("LRUN_LOAD_CHUNK_MB");
    const char *paths[1] = {path};
    unsigned char *dst = malloc(SIZE);
    lrun_load_range r = {.offset = 0, .bytes = SIZE, .dst = dst};
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    read_bytes(0, SIZE);
    lrun_loader_stats s;
    lrun_loader_opts o = {0};
    CHECK("warm: reads", lrun_loader_read(paths, 1, &r, 1, &o, &s) == LRUN_OK);
    CHECK("warm: the stats say warm and all cached", s.warm == 1 && s.cached > 0.99);
    CHECK("warm: the warm chunk", s.chunk_bytes == LRUN_LOADER_WARM_CHUNK);
    const int pieces = (int)((SIZE + LRUN_LOADER_WARM_CHUNK - 1) / LRUN_LOADER_WARM_CHUNK);
    int want = cores > 0 && cores < LRUN_LOADER_WARM_THREADS ? (int)cores : LRUN_LOADER_WARM_THREADS;
    if (want > pieces) want = pieces;
    CHECK("warm: the warm thread count (cores, pieces permitting)", s.n_threads == want);

    struct statfs sf;
    if (statfs(path, &sf) == 0 && (unsigned long)sf.f_type == TMPFS_MAGIC_) {
        printf("ok %d - cold: the cold defaults # SKIP tmpfs keeps pages\n", ++check_count);
    } else {
        drop();
        CHECK("cold: reads", lrun_loader_read(paths, 1, &r, 1, &o, &s) == LRUN_OK);
        CHECK("cold: the cold defaults", s.warm == 0 && s.cached < 0.1 && s.chunk_bytes == LRUN_LOADER_CHUNK_DEFAULT);
    }
    read_bytes(0, SIZE);
    o.chunk_bytes = 1 << 20;
    o.n_threads = 1;
    CHECK("asked: reads", lrun_loader_read(paths, 1, &r, 1, &o, &s) == LRUN_OK);
    CHECK("asked: the chunk and threads as given, not the warm pair (still reported warm)",
          s.chunk_bytes == (1 << 20) && s.n_threads == 1 && s.warm == 1);
    free(dst);
}

int main(void)
{
    snprintf(path, sizeof path, "%s/lrun_test_page_cache_%d.bin", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    test_fraction();
    test_keep_rule();
    test_loader_defaults();
    unlink(path);
    return CHECK_DONE();
}
