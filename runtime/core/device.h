/* device.h — the compute device inside the core: byte budgets, the
 * allocation entry points every tier goes through, and the table of
 * functions each kind of device implements.
 *
 * device.c and stream.c keep the budget and the records, and reach the
 * memory and queues of a device only through its table (lrun_device_iface):
 * the CPU's is here in core (device_cpu.c), the CUDA one in cuda/
 * (cuda_backend.c), and the registry (backend.c) says which kinds this
 * build has. Nothing in core names CUDA. */
#ifndef LRUN_DEVICE_H
#define LRUN_DEVICE_H

#include "lrun.h"
#include "core/host_account.h"

/* Copy directions, for a table's memcpy. */
typedef enum lrun_copy_kind {
    LRUN_COPY_HOST_TO_DEVICE = 0,
    LRUN_COPY_DEVICE_TO_HOST = 1,
    LRUN_COPY_DEVICE_TO_DEVICE = 2
} lrun_copy_kind;

/* What a kind of device implements. Budget accounting is not its job
 * (device.c keeps the budget); queue handles are opaque (a cudaStream_t or
 * cudaEvent_t on cuda). Queue entries are NULL on a device whose work runs
 * in the calling thread as it is issued (cpu): its streams are always
 * drained and its events complete once recorded. */
typedef struct lrun_device_iface {
    const char *name;                                   /* "cpu", "cuda" */
    int (*device_count)(void);                          /* devices of this kind visible now */
    /* sets device->capacity (budget_bytes, or what the device has) and device->backend */
    lrun_status (*open)(lrun_device *device, size_t budget_bytes);
    void (*close)(lrun_device *device);
    size_t (*total_memory)(const lrun_device *device);  /* physical memory, bytes, for display */
    lrun_status (*alloc)(lrun_device *device, size_t bytes, const char *what, void **out);
    void (*release)(lrun_device *device, void *ptr);
    void (*trim)(lrun_device *device);                  /* gives idle pool arenas back */
    lrun_status (*memset)(lrun_device *device, void *dst, int value, size_t bytes);
    /* copies in order after the work queued on the compute stream, and waits */
    lrun_status (*memcpy)(lrun_device *device, void *dst, const void *src, size_t bytes, lrun_copy_kind kind);
    /* queues a copy on stream (a handle from stream_create) and returns; NULL on a device whose
     * work runs as issued. The loader's staging (residency/loader.c) uses it to overlap reads
     * with copies. */
    lrun_status (*memcpy_async)(lrun_device *device, void *dst, const void *src, size_t bytes,
                                lrun_copy_kind kind, void *stream);
    /* page-locked host memory for the pinned tier; NULL: pinned is plain host memory */
    lrun_status (*host_alloc)(size_t bytes, void **out);
    void (*host_free)(void *ptr);
    void *(*compute_stream)(const lrun_device *device); /* the queue a NULL lrun_stream means */
    lrun_status (*stream_create)(lrun_device *device, void **out);
    void (*stream_destroy)(lrun_device *device, void *stream);
    lrun_status (*stream_sync)(lrun_device *device, void *stream);
    lrun_status (*event_create)(lrun_device *device, void **out);
    void (*event_destroy)(lrun_device *device, void *event);
    lrun_status (*event_record)(lrun_device *device, void *event, void *stream);
    lrun_status (*stream_wait_event)(lrun_device *device, void *stream, void *event);
    lrun_status (*event_sync)(lrun_device *device, void *event);
} lrun_device_iface;

/* The CPU's table (device_cpu.c). */
extern const lrun_device_iface lrun_cpu_device_iface;

/* The registry (backend.c): the table of a device kind, NULL when this build
 * has none; and the table whose host_alloc backs the pinned tier (a kind with
 * devices present that pins memory), or NULL. */
const lrun_device_iface *lrun_device_iface_for(lrun_device_kind kind);
const lrun_device_iface *lrun_device_pinned_iface(void);

struct lrun_device {
    const lrun_device_iface *iface; /* what this kind of device implements */
    lrun_device_kind kind;
    char name[16];         /* "cpu", "cuda:0" */
    int cuda_ordinal;      /* -1 on cpu */
    size_t capacity;       /* bytes lrun may hold on the device (SIZE_MAX: no cap) */
    size_t budget;         /* the cap the user asked for, bytes; 0 = none */
    size_t used;           /* bytes held now */
    size_t peak;           /* high-water mark of used */
    void *backend;         /* the table's own state (cuda: pool, compute stream); NULL on cpu */
    lrun_host_account *host_account; /* the owning model's (host_account.h); NULL: none. A cpu
                                      * device's memory and every lrun_device_host_alloc charge it */
};

/* Device memory, counted against the budget. LRUN_E_OOM (with requested and
 * free recorded) when the budget or the device cannot give bytes. what names
 * the purpose for the error message ("KV cache", "blk.3.ffn_up.weight"). */
lrun_status lrun_device_alloc(lrun_device *device, size_t bytes, const char *what, void **out);
void lrun_device_release(lrun_device *device, void *ptr, size_t bytes);
/* On a cpu device (its memory is host memory) the bytes are also charged to
 * device->host_account, in the category lrun_host_category_of(what) names:
 * past the host budget (or the host's available memory) LRUN_E_OOM. */
/* Bytes that can still be allocated under the budget. */
size_t lrun_device_free_bytes(const lrun_device *device);

/* Host memory of a host tier (pinned through lrun_device_pinned_iface when
 * there is one, else plain), 64-byte aligned. A request larger than the host
 * has available is LRUN_E_OOM before any allocation. */
lrun_status lrun_host_alloc(lrun_tier tier, size_t bytes, const char *what, void **out);
void lrun_host_release(lrun_tier tier, void *ptr);
/* The same, charged to device->host_account (device may be NULL: no
 * account) in category c before it is made; the release gives back bytes
 * (what was asked) of c. Every host buffer of a model or an engine goes
 * through these; lrun_host_alloc alone is for buffers of no model
 * (measurements). */
lrun_status lrun_device_host_alloc(lrun_device *device, lrun_host_category c, lrun_tier tier, size_t bytes,
                                   const char *what, void **out);
void lrun_device_host_release(lrun_device *device, lrun_host_category c, lrun_tier tier, void *ptr, size_t bytes);

/* Copies between any two tiers' memory (device may be NULL for host-only copies). */
lrun_status lrun_copy_bytes(lrun_device *device, void *dst, lrun_tier dst_tier, const void *src,
                            lrun_tier src_tier, size_t bytes);

/* The queue handle behind a stream (NULL on cpu), for kernel launches, and its device. */
void *lrun_stream_handle(const lrun_stream *stream);
lrun_device *lrun_stream_device(const lrun_stream *stream);

#endif
