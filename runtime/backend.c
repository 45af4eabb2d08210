/* backend.c — the registry: the one file that names every backend this
 * build has, with its device table (core/device.h) and its engine table
 * (backend.h), by device kind. A CPU-only build has no CUDA entry, and
 * nothing else in the library knows whether CUDA was built. */
#include "backend.h"

#include "core/device.h"

#include <stddef.h>

#ifdef LRUN_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

typedef struct registry_entry {
    lrun_device_kind kind;
    const lrun_device_iface *device;
    const lrun_backend_iface *engine;
} registry_entry;

static const registry_entry registry[] = {
    {LRUN_DEVICE_KIND_CPU, &lrun_cpu_device_iface, &lrun_cpu_backend},
#ifdef LRUN_WITH_CUDA
    {LRUN_DEVICE_KIND_CUDA, &lrun_cuda_device_iface, &lrun_cuda_backend},
#endif
};

#define N_ENTRIES (sizeof registry / sizeof registry[0])

static const registry_entry *entry_for(lrun_device_kind kind)
{
    for (size_t i = 0; i < N_ENTRIES; i++)
        if (registry[i].kind == kind) return &registry[i];
    return NULL;
}

const lrun_device_iface *lrun_device_iface_for(lrun_device_kind kind)
{
    const registry_entry *r = entry_for(kind);
    return r ? r->device : NULL;
}

const lrun_backend_iface *lrun_backend_for(lrun_device_kind kind)
{
    const registry_entry *r = entry_for(kind);
    return r ? r->engine : NULL;
}

/* The first kind that pins host memory and has a device to DMA to. */
const lrun_device_iface *lrun_device_pinned_iface(void)
{
    for (size_t i = 0; i < N_ENTRIES; i++)
        if (registry[i].device->host_alloc && registry[i].device->device_count() > 0) return registry[i].device;
    return NULL;
}

int lrun_built_with_cuda(void) { return lrun_device_iface_for(LRUN_DEVICE_KIND_CUDA) != NULL; }

int lrun_cuda_device_count(void)
{
    const lrun_device_iface *d = lrun_device_iface_for(LRUN_DEVICE_KIND_CUDA);
    return d ? d->device_count() : 0;
}
