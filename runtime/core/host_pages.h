/* host_pages.h — host buffers for weights and work memory: whole cache
 * lines, and for large ones transparent huge pages.
 *
 * A weight the host multiplies is read whole every token (tens of MB to
 * GB a step); on 4 KiB pages that stream walks the page tables every 4 KiB.
 * A buffer of LRUN_HOST_HUGE_MIN bytes or more is aligned to 2 MiB and
 * advised MADV_HUGEPAGE, so where transparent huge pages are "madvise"
 * (Debian's and Ubuntu's default) the kernel backs it with 2 MiB pages;
 * with "always" that happens anyway, with "never" not at all. Physical use
 * is unchanged: a tail short of 2 MiB stays on small pages.
 * LRUN_HOST_HUGEPAGES=0 (read at each allocation) leaves every buffer on
 * small pages, to compare. */
#ifndef LRUN_CORE_HOST_PAGES_H
#define LRUN_CORE_HOST_PAGES_H

#include <stddef.h>

/* Host allocations are aligned for AVX-512 loads and whole cache lines. */
#define LRUN_HOST_ALIGN ((size_t)64)
/* From this size a buffer goes on huge pages. */
#define LRUN_HOST_HUGE_MIN ((size_t)32 << 20)

/* *out = bytes (> 0, a multiple of LRUN_HOST_ALIGN) of host memory, freed
 * with free(); 0, or posix_memalign's error (*out NULL). */
int lrun_host_memalign(void **out, size_t bytes);

#endif
