/* page_cache.h — how much of a load is already in the page cache, and
 * whether a load should leave its pages there.
 *
 * Why: a load from the page cache (warm) is memcpy-bound and gains from
 * more reader threads and smaller pieces; a load from the disk (cold) is
 * bound by the disk's queue and gains from fewer, larger requests
 * (tests/bench/hf_load_bench.py --sweep, docs/benchmarks.md). And a model
 * that fits the machine's memory loads warm the second time only when the
 * first load left its pages in the cache, as llama.cpp's mmap and
 * transformers do; one larger than that would only push other files out. */
#ifndef LRUN_PAGE_CACHE_H
#define LRUN_PAGE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "residency/loader.h"

/* The share (0 to 1) of the ranges' file bytes whose pages are in the page
 * cache now, from mincore(2) over a read-only mapping of each file that is
 * never touched (so nothing is read and no page counts in the process's
 * RSS); -1 when it cannot be told (a file that cannot be opened or mapped,
 * or no bytes). Ranges must be valid for their files (lrun_loader_read
 * checks them). */
double lrun_page_cache_fraction(const char *const *paths, int n_files, const lrun_load_range *ranges, int64_t n);

/* Whether a load of file_bytes should keep the pages it read in the cache
 * (1) or drop them behind the reader (0): keep when no host budget governs
 * the model (budgeted = 0) and the bytes are at most half of what the host
 * can still give (available, lrun_host_memory_available; a memory cgroup's
 * room when one limits the process), so a second load is warm and nothing
 * else is pushed out; 0 when available is unknown (0). */
int lrun_page_cache_keep(size_t file_bytes, size_t available, int budgeted);

/* Whether the load of file_bytes drops its pages behind the reader
 * (lrun_loader_opts.drop_cache): LRUN_LOAD_KEEP_CACHE=1 keeps them, =0 drops
 * them, else lrun_page_cache_keep with the host's available memory now. */
int lrun_page_cache_drop(size_t file_bytes, int budgeted);

#endif
