/* copy_load.c — the copy engine kept busy while something else is measured (copy_load.h). */
#include "core/copy_load.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/device.h"
#include "core/error.h"

struct lrun_copy_load {
    lrun_device *device;
    void *src, *dst, *stream;
    void *done[2]; /* events after each of the two batches in flight */
    size_t bytes;
    pthread_t thread;
    atomic_int stop;
    lrun_status status; /* the first copy error; read after the join */
    double copied, seconds;
};

/* Copies go in batches of BATCH, two batches in flight, so the copy engine
 * never idles between them, and the thread sleeps through most of a batch
 * before it waits on the batch's event. CUDA's waits spin on a core (its
 * default schedule with fewer contexts than cores), and a thread spinning
 * beside the host products being measured would take a core from them,
 * which nothing does in the engine's decode: its copies are queued on a
 * stream, and no thread waits on them while the host multiplies. */
enum { BATCH = 4 };

static lrun_status queue_batch(lrun_copy_load *l, void *done)
{
    const lrun_device_iface *io = l->device->iface;
    for (int i = 0; i < BATCH; i++) {
        const lrun_status st =
            io->memcpy_async(l->device, l->dst, l->src, l->bytes, LRUN_COPY_HOST_TO_DEVICE, l->stream);
        if (st != LRUN_OK) return st;
    }
    return io->event_record(l->device, done, l->stream);
}

static void sleep_seconds(double s)
{
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void *copy_loop(void *arg)
{
    lrun_copy_load *l = arg;
    const lrun_device_iface *io = l->device->iface;
    const double t0 = lrun_now_seconds();
    double last = t0, batch_s = 0; /* when the last batch ended; how long one takes, once seen */
    int next = 0, queued = 0;      /* the event the next batch records; batches queued, not waited for */
    for (;;) {
        while (l->status == LRUN_OK && !atomic_load(&l->stop) && queued < 2) {
            l->status = queue_batch(l, l->done[next]);
            if (l->status == LRUN_OK) next ^= 1, queued++;
        }
        if (queued == 0) break;
        /* the oldest batch ends about batch_s after the one before it: sleep until just before */
        sleep_seconds(last + batch_s - lrun_now_seconds() - 2e-4);
        const lrun_status st = io->event_sync(l->device, l->done[(next + queued) % 2]); /* the oldest's */
        queued--;
        if (st != LRUN_OK) {
            if (l->status == LRUN_OK) l->status = st;
            continue; /* the other batch, if any, is still waited for */
        }
        const double now = lrun_now_seconds(); /* a batch done, whatever failed after it was queued */
        batch_s = now - last;
        last = now;
        l->copied += (double)BATCH * (double)l->bytes;
    }
    /* a batch that failed part way queued copies no event covers: none may still run at the free */
    const lrun_status st = io->stream_sync(l->device, l->stream);
    if (l->status == LRUN_OK) l->status = st;
    l->seconds = last - t0;
    return NULL;
}

static void load_free(lrun_copy_load *l)
{
    for (int i = 0; i < 2; i++)
        if (l->done[i]) l->device->iface->event_destroy(l->device, l->done[i]);
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
    if (!io->memcpy_async || !io->stream_create || !io->event_create || !io->event_sync)
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
    for (int i = 0; i < 2 && st == LRUN_OK; i++) st = io->event_create(device, &l->done[i]);
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

lrun_status lrun_copy_load_beside(lrun_device *device, size_t copy_bytes, const char *what,
                                  lrun_status (*measure)(void *ctx), void *ctx, double *copy_bytes_per_s)
{
    if (copy_bytes_per_s) *copy_bytes_per_s = 0;
    if (copy_bytes < ((size_t)1 << 20) || copy_bytes > ((size_t)1 << 30))
        return lrun_fail(LRUN_E_ARG, "%s: %zu copy bytes is outside [1 MiB, 1 GiB]", what, copy_bytes);
    lrun_copy_load *load;
    lrun_status st = lrun_copy_load_start(device, copy_bytes, &load);
    if (st != LRUN_OK) return lrun_fail_context(st, "%s", what);
    st = measure(ctx);
    const lrun_status cst = lrun_copy_load_stop(load, copy_bytes_per_s);
    return st != LRUN_OK ? st : cst;
}
