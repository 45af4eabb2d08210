/* copy_load.c — the copy engine kept busy while something else is measured (copy_load.h). */
#include "core/copy_load.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/device.h"
#include "core/error.h"

struct lrun_copy_load {
    lrun_device *device;
    void *src, *dst, *stream;
    size_t bytes;
    pthread_t thread;
    atomic_int stop;
    lrun_status status; /* the first copy error; read after the join */
    double copied, seconds;
};

/* One copy at a time, each waited for, so stop waits for at most one. */
static void *copy_loop(void *arg)
{
    lrun_copy_load *l = arg;
    const lrun_device_iface *io = l->device->iface;
    const double t0 = lrun_now_seconds();
    while (!atomic_load(&l->stop)) {
        lrun_status st = io->memcpy_async(l->device, l->dst, l->src, l->bytes, LRUN_COPY_HOST_TO_DEVICE, l->stream);
        if (st == LRUN_OK) st = io->stream_sync(l->device, l->stream);
        if (st != LRUN_OK) {
            l->status = st;
            break;
        }
        l->copied += (double)l->bytes;
    }
    l->seconds = lrun_now_seconds() - t0;
    return NULL;
}

static void load_free(lrun_copy_load *l)
{
    if (l->stream) l->device->iface->stream_destroy(l->device, l->stream);
    if (l->dst) lrun_device_release(l->device, l->dst, l->bytes);
    if (l->src) lrun_host_release(LRUN_TIER_PINNED, l->src);
    /* the buffer's arena would otherwise stay reserved and take small blocks later */
    l->device->iface->trim(l->device);
    free(l);
}

lrun_status lrun_copy_load_start(lrun_device *device, size_t bytes, lrun_copy_load **out)
{
    if (!out) return lrun_fail(LRUN_E_ARG, "copy load: out is NULL");
    *out = NULL;
    if (!device || bytes == 0) return lrun_fail(LRUN_E_ARG, "copy load: %s", device ? "0 bytes" : "device is NULL");
    const lrun_device_iface *io = device->iface;
    if (!io->memcpy_async || !io->stream_create)
        return lrun_fail(LRUN_E_UNSUPPORTED, "copy load: %s has no asynchronous copies", device->name);
    lrun_copy_load *l = calloc(1, sizeof *l);
    if (!l) return lrun_fail_oom(sizeof *l, 0, "copy load: its record");
    l->device = device;
    l->bytes = bytes;
    lrun_status st = lrun_host_alloc(LRUN_TIER_PINNED, bytes, "copy load source", &l->src);
    if (st == LRUN_OK) {
        memset(l->src, 1, bytes); /* every page touched before the loop reads it */
        st = lrun_device_alloc(device, bytes, "copy load destination", &l->dst);
    }
    if (st == LRUN_OK) st = io->stream_create(device, &l->stream);
    if (st == LRUN_OK && pthread_create(&l->thread, NULL, copy_loop, l) != 0)
        st = lrun_fail(LRUN_E_INTERNAL, "copy load: no thread for the copies");
    if (st != LRUN_OK) {
        load_free(l);
        return lrun_fail_context(st, "copy load on %s", device->name);
    }
    *out = l;
    return LRUN_OK;
}

lrun_status lrun_copy_load_stop(lrun_copy_load *l, double *bytes_per_s)
{
    if (bytes_per_s) *bytes_per_s = 0;
    if (!l) return LRUN_OK;
    atomic_store(&l->stop, 1);
    pthread_join(l->thread, NULL);
    const lrun_status st = l->status;
    if (bytes_per_s && l->seconds > 0) *bytes_per_s = l->copied / l->seconds;
    lrun_device *device = l->device;
    load_free(l);
    /* the copy thread's own error text stays with that thread: said again here */
    return st == LRUN_OK ? LRUN_OK : lrun_fail(st, "copy load on %s: a copy to the device failed", device->name);
}
