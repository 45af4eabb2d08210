/* page_cache.c — the page cache's share of a load, and whether to keep it
 * (see page_cache.h). */
#define _DEFAULT_SOURCE /* mincore */
#include "residency/page_cache.h"

#include "core/device.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Resident bytes of file fd (size bytes) inside the ranges of that file,
 * added to *cached; 0 when the file cannot be mapped or probed. */
static int probe_file(int fd, size_t size, int file, const lrun_load_range *ranges, int64_t n, size_t page,
                      uint64_t *cached)
{
    if (size == 0) return 1;
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return 0;
    const size_t pages = (size + page - 1) / page;
    unsigned char *vec = malloc(pages);
    const int ok = vec && mincore(map, size, vec) == 0;
    for (int64_t i = 0; ok && i < n; i++) {
        const lrun_load_range *r = &ranges[i];
        if (r->file != file || r->bytes == 0 || r->offset >= size) continue;
        const uint64_t end = r->bytes < size - r->offset ? r->offset + r->bytes : size;
        for (uint64_t p = r->offset / page; p * page < end; p++) {
            if (!(vec[p] & 1)) continue;
            const uint64_t lo = p * page > r->offset ? p * page : r->offset;
            const uint64_t hi = (p + 1) * page < end ? (p + 1) * page : end;
            *cached += hi - lo;
        }
    }
    free(vec);
    munmap(map, size);
    return ok;
}

double lrun_page_cache_fraction(const char *const *paths, int n_files, const lrun_load_range *ranges, int64_t n)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) page = 4096;
    uint64_t total = 0, cached = 0;
    for (int64_t i = 0; i < n; i++) total += ranges[i].bytes;
    if (total == 0 || !paths) return -1;
    for (int f = 0; f < n_files; f++) {
        int used = 0;
        for (int64_t i = 0; i < n && !used; i++) used = ranges[i].file == f && ranges[i].bytes > 0;
        if (!used) continue;
        const int fd = paths[f] ? open(paths[f], O_RDONLY | O_CLOEXEC) : -1;
        struct stat sb;
        const int ok = fd >= 0 && fstat(fd, &sb) == 0 && sb.st_size >= 0 &&
                       probe_file(fd, (size_t)sb.st_size, f, ranges, n, (size_t)page, &cached);
        if (fd >= 0) close(fd);
        if (!ok) return -1;
    }
    return (double)cached / (double)total;
}

int lrun_page_cache_keep(size_t file_bytes, size_t available, int budgeted)
{
    return !budgeted && available > 0 && file_bytes <= available / 2;
}

int lrun_page_cache_drop(size_t file_bytes, int budgeted)
{
    const char *keep = getenv("LRUN_LOAD_KEEP_CACHE");
    if (keep && strcmp(keep, "1") == 0) return 0;
    if (keep && strcmp(keep, "0") == 0) return 1;
    return !lrun_page_cache_keep(file_bytes, lrun_host_memory_available(), budgeted);
}
