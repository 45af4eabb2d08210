/* host_pages.c — see host_pages.h. */
#include "core/host_pages.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

static int huge_pages_wanted(void)
{
    const char *v = getenv("LRUN_HOST_HUGEPAGES");
    return !(v && strcmp(v, "0") == 0);
}

int lrun_host_memalign(void **out, size_t bytes)
{
    *out = NULL;
    const int huge = bytes >= LRUN_HOST_HUGE_MIN && huge_pages_wanted();
    const int err = posix_memalign(out, huge ? HUGE_PAGE : LRUN_HOST_ALIGN, bytes);
    if (err != 0) {
        *out = NULL;
        return err;
    }
#ifdef MADV_HUGEPAGE
    /* advice only: a kernel without THP, or with it off, says no and the buffer stays as it is */
    if (huge) (void)madvise(*out, bytes & ~(HUGE_PAGE - 1), MADV_HUGEPAGE);
#endif
    return 0;
}
