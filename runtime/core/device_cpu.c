/* device_cpu.c — the CPU's device table (device.h): device memory is 64-byte
 * aligned host memory, counted against the budget by device.c, so placement,
 * OOM and fallbacks behave on a laptop as on a GPU. Work runs in the calling
 * thread, so the table has no queues. */
#include "core/device.h"

#include "core/checked.h"
#include "core/error.h"
#include "core/host_pages.h"

#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cpu_count(void) { return 1; }

/* Physical memory in bytes (sysconf), 0 when unknown. */
static size_t physical_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
}

/* lrun_host_memory_available (MemAvailable, or the memory cgroup's room
 * when smaller) is core/host_account.c's. */

/* Without a budget the CPU device holds what the machine has free when it
 * opens (MemAvailable, or the memory cgroup's room), never "16 EiB": a request past it is an ordinary OOM
 * from the budget, before any allocation, not the kernel's OOM killer. */
static lrun_status cpu_open(lrun_device *device, size_t budget_bytes)
{
    size_t avail = lrun_host_memory_available();
    device->capacity = budget_bytes ? budget_bytes : avail ? avail : SIZE_MAX;
    return LRUN_OK;
}

static void cpu_close(lrun_device *device) { (void)device; }

static size_t cpu_total_memory(const lrun_device *device)
{
    (void)device;
    return physical_bytes();
}

/* Whole 64-byte lines, so vector loops may read a row's tail safely. */
static lrun_status cpu_alloc(lrun_device *device, size_t bytes, const char *what, void **out)
{
    size_t rounded;
    if (!lrun_size_align_up(bytes ? bytes : 1, LRUN_HOST_ALIGN, &rounded))
        return lrun_fail_oom(bytes, 0, "%s on %s: the size overflows", what, device->name);
    int err = lrun_host_memalign(out, rounded);
    if (err != 0) {
        *out = NULL;
        return lrun_fail_oom(bytes, 0, "%s on %s: %s", what, device->name, strerror(err));
    }
    return LRUN_OK;
}

static void cpu_release(lrun_device *device, void *ptr)
{
    (void)device;
    free(ptr);
}

static void cpu_trim(lrun_device *device) { (void)device; }

static lrun_status cpu_memset(lrun_device *device, void *dst, int value, size_t bytes)
{
    (void)device;
    memset(dst, value, bytes);
    return LRUN_OK;
}

static lrun_status cpu_memcpy(lrun_device *device, void *dst, const void *src, size_t bytes, lrun_copy_kind kind)
{
    (void)device, (void)kind;
    memmove(dst, src, bytes);
    return LRUN_OK;
}

const lrun_device_iface lrun_cpu_device_iface = {
    .name = "cpu",
    .device_count = cpu_count,
    .open = cpu_open,
    .close = cpu_close,
    .total_memory = cpu_total_memory,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .trim = cpu_trim,
    .memset = cpu_memset,
    .memcpy = cpu_memcpy,
    /* pinned memory, streams and events: none (NULL) */
};
