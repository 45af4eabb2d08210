/* device.h — the compute device inside the core: byte budgets and the
 * allocation entry points every tier goes through. */
#ifndef LRUN_DEVICE_H
#define LRUN_DEVICE_H

#include "lrun.h"

struct lrun_device {
    lrun_device_kind kind;
    char name[16];         /* "cpu", "cuda:0" */
    int cuda_ordinal;      /* -1 on cpu */
    size_t capacity;       /* bytes lrun may hold on the device (SIZE_MAX: no cap) */
    size_t budget;         /* the cap the user asked for, bytes; 0 = none */
    size_t used;           /* bytes held now */
    size_t peak;           /* high-water mark of used */
    void *backend;         /* cuda_backend state (pool, default stream); NULL on cpu */
};

/* Device memory, counted against the budget. LRUN_E_OOM (with requested and
 * free recorded) when the budget or the device cannot give bytes. what names
 * the purpose for the error message ("KV cache", "blk.3.ffn_up.weight"). */
lrun_status lrun_device_alloc(lrun_device *device, size_t bytes, const char *what, void **out);
void lrun_device_release(lrun_device *device, void *ptr, size_t bytes);
/* Bytes that can still be allocated under the budget. */
size_t lrun_device_free_bytes(const lrun_device *device);

/* Host memory of a host tier (pinned through CUDA when built with it, else
 * plain), 64-byte aligned. */
lrun_status lrun_host_alloc(lrun_tier tier, size_t bytes, const char *what, void **out);
void lrun_host_release(lrun_tier tier, void *ptr);

/* Copies between any two tiers' memory (device may be NULL for host-only copies). */
lrun_status lrun_copy_bytes(lrun_device *device, void *dst, lrun_tier dst_tier, const void *src,
                            lrun_tier src_tier, size_t bytes);

/* "512 B", "3.1 MiB", "4.0 GiB" into buf (cap >= 16); returns buf. */
const char *lrun_format_bytes(size_t bytes, char *buf, size_t cap);

#endif
