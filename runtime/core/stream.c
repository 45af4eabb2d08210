/* stream.c — ordered queues of work and the events that order one after another.
 *
 * On cpu, work runs in the calling thread as it is issued, so a stream is
 * always drained and an event is complete once recorded. The records still
 * keep state, so misuse is defined the same way on both kinds of device:
 * waiting on or syncing an event that was never recorded is LRUN_E_ARG
 * (on CUDA it would silently succeed and hide a missing record).
 *
 * A NULL stream given to record or wait means the device's default compute
 * stream (on cuda the backend's; on cpu the calling thread). The queues are
 * the device table's (device.h); a table without them is the cpu's. */
#include "core/device.h"
#include "core/error.h"

#include <stdlib.h>

struct lrun_stream {
    lrun_device *device;
    void *handle;   /* cudaStream_t on cuda, NULL on cpu */
};

struct lrun_event {
    lrun_device *device;
    void *handle;   /* cudaEvent_t on cuda, NULL on cpu */
    int recorded;   /* 1 once recorded on some stream */
};

/* 1 when the device queues work (its table has streams), 0 when work runs as issued. */
static int has_queues(const lrun_device *d) { return d->iface->stream_create != NULL; }

// ---------------------------------------------------------------- streams

lrun_status lrun_stream_init(lrun_stream **out, lrun_device *device)
{
    *out = NULL;
    if (!device) return lrun_fail(LRUN_E_ARG, "lrun_stream_init: device is NULL");
    lrun_stream *s = calloc(1, sizeof *s);
    if (!s) return lrun_fail_oom(sizeof *s, 0, "lrun_stream_init on %s: host memory for the handle", device->name);
    s->device = device;
    if (has_queues(device)) {
        lrun_status st = device->iface->stream_create(device, &s->handle);
        if (st != LRUN_OK) {
            free(s);
            return lrun_fail_context(st, "lrun_stream_init on %s", device->name);
        }
    }
    *out = s;
    return LRUN_OK;
}

void lrun_stream_free(lrun_stream *stream)
{
    if (!stream) return;
    if (stream->handle) stream->device->iface->stream_destroy(stream->device, stream->handle);
    free(stream);
}

void *lrun_stream_handle(const lrun_stream *stream) { return stream ? stream->handle : NULL; }
lrun_device *lrun_stream_device(const lrun_stream *stream) { return stream ? stream->device : NULL; }

/* The queue that work "on stream" goes to (the compute stream for NULL). */
static void *queue_of(lrun_device *device, lrun_stream *stream)
{
    return stream ? stream->handle : device->iface->compute_stream(device);
}

lrun_status lrun_stream_sync(lrun_stream *stream)
{
    if (!stream) return lrun_fail(LRUN_E_ARG, "lrun_stream_sync: stream is NULL");
    if (!has_queues(stream->device)) return LRUN_OK;
    lrun_status st = stream->device->iface->stream_sync(stream->device, stream->handle);
    return st == LRUN_OK ? st : lrun_fail_context(st, "lrun_stream_sync on %s", stream->device->name);
}

// ---------------------------------------------------------------- events

lrun_status lrun_event_init(lrun_event **out, lrun_device *device)
{
    *out = NULL;
    if (!device) return lrun_fail(LRUN_E_ARG, "lrun_event_init: device is NULL");
    lrun_event *e = calloc(1, sizeof *e);
    if (!e) return lrun_fail_oom(sizeof *e, 0, "lrun_event_init on %s: host memory for the handle", device->name);
    e->device = device;
    if (has_queues(device)) {
        lrun_status st = device->iface->event_create(device, &e->handle);
        if (st != LRUN_OK) {
            free(e);
            return lrun_fail_context(st, "lrun_event_init on %s", device->name);
        }
    }
    *out = e;
    return LRUN_OK;
}

void lrun_event_free(lrun_event *event)
{
    if (!event) return;
    if (event->handle) event->device->iface->event_destroy(event->device, event->handle);
    free(event);
}

lrun_status lrun_event_record(lrun_event *event, lrun_stream *stream)
{
    if (!event) return lrun_fail(LRUN_E_ARG, "lrun_event_record: event is NULL");
    /* An event marks a point in one device's queue; CUDA forbids recording
     * on another device's stream, and a cpu event cannot mark GPU work. */
    if (stream && stream->device != event->device)
        return lrun_fail(LRUN_E_ARG, "lrun_event_record: event of %s recorded on a stream of %s",
                         event->device->name, stream->device->name);
    if (has_queues(event->device)) {
        lrun_device *d = event->device;
        lrun_status st = d->iface->event_record(d, event->handle, queue_of(d, stream));
        if (st != LRUN_OK) return lrun_fail_context(st, "lrun_event_record on %s", event->device->name);
    }
    event->recorded = 1;
    return LRUN_OK;
}

lrun_status lrun_stream_wait_event(lrun_stream *stream, lrun_event *event)
{
    if (!event) return lrun_fail(LRUN_E_ARG, "lrun_stream_wait_event: event is NULL");
    if (!event->recorded)
        return lrun_fail(LRUN_E_ARG, "lrun_stream_wait_event: the event (of %s) was never recorded",
                         event->device->name);
    lrun_device *sd = stream ? stream->device : event->device;
    /* A cpu event completed when it was recorded: nothing to wait for. */
    if (!has_queues(event->device)) return LRUN_OK;
    lrun_status st;
    if (has_queues(sd)) st = sd->iface->stream_wait_event(sd, queue_of(sd, stream), event->handle);
    else st = event->device->iface->event_sync(event->device, event->handle); /* cpu work runs now: the thread waits */
    return st == LRUN_OK ? st : lrun_fail_context(st, "lrun_stream_wait_event on %s", sd->name);
}

lrun_status lrun_event_sync(lrun_event *event)
{
    if (!event) return lrun_fail(LRUN_E_ARG, "lrun_event_sync: event is NULL");
    if (!event->recorded)
        return lrun_fail(LRUN_E_ARG, "lrun_event_sync: the event (of %s) was never recorded", event->device->name);
    if (!has_queues(event->device)) return LRUN_OK;
    lrun_status st = event->device->iface->event_sync(event->device, event->handle);
    return st == LRUN_OK ? st : lrun_fail_context(st, "lrun_event_sync on %s", event->device->name);
}
