/* test_copy_load.c — the copy load (core/copy_load.h) on a fake device whose
 * copy engine takes 1 ms a copy and whose waits spin on the CPU, as CUDA's do:
 * every queued batch is waited for, the waits spin for a small share of the
 * run (the thread sleeps through its batches), a failed copy stops the loop
 * with an error naming the load, and everything taken is given back; a
 * measurement beside the load (lrun_copy_load_beside) runs with it copying,
 * and its errors and the load's come back. No GPU:
 * the CUDA side is the same table (cuda_backend.c) and runs in the GPU tests
 * (tests/prefill_predict_gpu_spec.lua). */
#include "check.h"
#include "core/clock.h"
#include "core/copy_load.h"
#include "core/device.h"
#include "core/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COPY_S 1e-3 /* the fake copy engine's time per copy */

/* The fake engine's state: the copy thread alone touches it while a load
 * runs; the test reads it after lrun_copy_load_stop joined that thread. */
static struct {
    double busy_until; /* when the queued copies end */
    double spin_s;     /* seconds the waits spun */
    int copies, records, event_waits, stream_waits, events_live, fail_at;
} fake;

typedef struct {
    double at; /* when the copies before its record end */
} fake_event;

static void spin_until(double t)
{
    const double t0 = lrun_now_seconds();
    while (lrun_now_seconds() < t) {}
    fake.spin_s += lrun_now_seconds() - t0;
}

static lrun_status fake_alloc(lrun_device *d, size_t bytes, const char *what, void **out)
{
    (void)d;
    *out = malloc(bytes);
    return *out ? LRUN_OK : lrun_fail_oom(bytes, 0, "fake device: %s", what);
}

static void fake_release(lrun_device *d, void *p)
{
    (void)d;
    free(p);
}

static void fake_trim(lrun_device *d) { (void)d; }

static lrun_status fake_memcpy_async(lrun_device *d, void *dst, const void *src, size_t bytes, lrun_copy_kind kind,
                                     void *stream)
{
    (void)d, (void)kind, (void)stream;
    if (fake.fail_at && fake.copies + 1 == fake.fail_at) return lrun_fail(LRUN_E_INTERNAL, "fake copy failed");
    fake.copies++;
    const double now = lrun_now_seconds();
    fake.busy_until = (fake.busy_until > now ? fake.busy_until : now) + COPY_S;
    memcpy(dst, src, bytes);
    return LRUN_OK;
}

static lrun_status fake_stream_create(lrun_device *d, void **out)
{
    (void)d;
    *out = &fake; /* any non-NULL handle */
    return LRUN_OK;
}

static void fake_stream_destroy(lrun_device *d, void *s) { (void)d, (void)s; }

static lrun_status fake_stream_sync(lrun_device *d, void *s)
{
    (void)d, (void)s;
    fake.stream_waits++;
    spin_until(fake.busy_until);
    return LRUN_OK;
}

static lrun_status fake_event_create(lrun_device *d, void **out)
{
    (void)d;
    *out = calloc(1, sizeof(fake_event));
    if (!*out) return lrun_fail_oom(sizeof(fake_event), 0, "fake event");
    fake.events_live++;
    return LRUN_OK;
}

static void fake_event_destroy(lrun_device *d, void *e)
{
    (void)d;
    fake.events_live--;
    free(e);
}

static lrun_status fake_event_record(lrun_device *d, void *e, void *s)
{
    (void)d, (void)s;
    fake.records++;
    ((fake_event *)e)->at = fake.busy_until;
    return LRUN_OK;
}

static lrun_status fake_event_sync(lrun_device *d, void *e)
{
    (void)d;
    fake.event_waits++;
    spin_until(((fake_event *)e)->at);
    return LRUN_OK;
}

static const lrun_device_iface fake_iface = {
    .name = "fake",
    .alloc = fake_alloc,
    .release = fake_release,
    .trim = fake_trim,
    .memcpy_async = fake_memcpy_async,
    .stream_create = fake_stream_create,
    .stream_destroy = fake_stream_destroy,
    .stream_sync = fake_stream_sync,
    .event_create = fake_event_create,
    .event_destroy = fake_event_destroy,
    .event_record = fake_event_record,
    .event_sync = fake_event_sync,
};

static lrun_device fake_device(const lrun_device_iface *iface)
{
    lrun_device d;
    memset(&d, 0, sizeof d);
    d.iface = iface;
    d.kind = LRUN_DEVICE_KIND_CUDA; /* not the host's memory: the table's alloc */
    strcpy(d.name, "fake:0");
    d.capacity = SIZE_MAX;
    return d;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A measurement for lrun_copy_load_beside: sleeps 30 ms while the load runs, counts its calls, and fails when
 * asked (it reads nothing the copy thread writes). */
struct probe {
    int calls;
    lrun_status answer;
};

static lrun_status probe_measure(void *ctx)
{
    struct probe *p = ctx;
    p->calls++;
    sleep_ms(30);
    return p->answer == LRUN_OK ? LRUN_OK : lrun_fail(p->answer, "probe failed");
}

int main(void)
{
    const size_t bytes = (size_t)1 << 20;

    /* a load of 200 ms: copies back to back, every batch waited for, few of its seconds spinning */
    memset(&fake, 0, sizeof fake);
    lrun_device d = fake_device(&fake_iface);
    lrun_copy_load *load = NULL;
    CHECK("a load starts on a device with asynchronous copies and events",
          lrun_copy_load_start(&d, bytes, &load) == LRUN_OK && load);
    CHECK("its destination is taken from the budget", d.used == bytes);
    const double t0 = lrun_now_seconds();
    sleep_ms(200);
    double rate = 0;
    CHECK("it stops cleanly", lrun_copy_load_stop(load, &rate) == LRUN_OK);
    const double run_s = lrun_now_seconds() - t0;
    printf("# %d copies in %.3f s, %.2f GB/s, waits spun %.1f ms\n", fake.copies, run_s, rate / 1e9,
           fake.spin_s * 1e3);
    CHECK("it copied, and says at what rate", fake.copies >= 8 && rate > 0);
    CHECK("copies go in batches of four, each batch recorded and waited for",
          fake.copies % 4 == 0 && fake.records == fake.copies / 4 && fake.event_waits == fake.records);
    CHECK("the stream is drained once at the end", fake.stream_waits == 1);
    /* the waits of a spinning loop would take the whole run */
    CHECK("the thread sleeps through its batches: the waits spin for under half the run", fake.spin_s < 0.5 * run_s);
    CHECK("both events are destroyed", fake.events_live == 0);
    CHECK("the destination goes back to the budget", d.used == 0);

    /* a copy that fails in the second batch: the error names the load; the batch in flight is still waited for */
    memset(&fake, 0, sizeof fake);
    fake.fail_at = 6;
    load = NULL;
    CHECK("a load with a failing copy starts", lrun_copy_load_start(&d, bytes, &load) == LRUN_OK);
    sleep_ms(20);
    rate = -1;
    const lrun_status st = lrun_copy_load_stop(load, &rate);
    CHECK("stop returns the copy's error", st == LRUN_E_INTERNAL);
    CHECK("the error names the copy load and the device", strstr(lrun_last_error(), "copy load on fake:0") != NULL);
    CHECK("no copy ran after the failure", fake.copies == 5);
    CHECK("the first batch was waited for, the failed one drained with the stream",
          fake.event_waits == 1 && fake.stream_waits == 1);
    CHECK("the rate is the completed batch's", rate > 0);
    CHECK("after the failure, both events are destroyed and the budget is whole",
          fake.events_live == 0 && d.used == 0);

    /* a device without events cannot run a load: refused before anything is taken */
    lrun_device_iface no_events = fake_iface;
    no_events.event_create = NULL;
    lrun_device e = fake_device(&no_events);
    load = (lrun_copy_load *)&e;
    CHECK("a device without events is refused",
          lrun_copy_load_start(&e, bytes, &load) == LRUN_E_UNSUPPORTED && load == NULL && e.used == 0);
    CHECK("stop of no load is a no-op", lrun_copy_load_stop(NULL, &rate) == LRUN_OK && rate == 0);

    /* a measurement beside copies: the load runs around it, and its errors, the load's and the arguments' */
    memset(&fake, 0, sizeof fake);
    struct probe pr = {0, LRUN_OK};
    rate = -1;
    CHECK("beside: the measurement runs with the load copying",
          lrun_copy_load_beside(&d, bytes, "measuring a probe", probe_measure, &pr, &rate) == LRUN_OK &&
              pr.calls == 1 && fake.copies > 0 && rate > 0 && d.used == 0 && fake.events_live == 0);
    pr = (struct probe){0, LRUN_E_INTERNAL};
    CHECK("beside: the measurement's error is returned, the load stopped",
          lrun_copy_load_beside(&d, bytes, "measuring a probe", probe_measure, &pr, NULL) == LRUN_E_INTERNAL &&
              strstr(lrun_last_error(), "probe failed") && d.used == 0);
    memset(&fake, 0, sizeof fake);
    fake.fail_at = 2;
    pr = (struct probe){0, LRUN_OK};
    CHECK("beside: a copy that fails fails the measurement, naming the load",
          lrun_copy_load_beside(&d, bytes, "measuring a probe", probe_measure, &pr, &rate) == LRUN_E_INTERNAL &&
              pr.calls == 1 && strstr(lrun_last_error(), "copy load on fake:0") && d.used == 0);
    pr = (struct probe){0, LRUN_OK};
    rate = -1;
    CHECK("beside: copy bytes outside [1 MiB, 1 GiB] are refused, named, before anything runs",
          lrun_copy_load_beside(&d, 1000, "measuring a probe", probe_measure, &pr, &rate) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "measuring a probe: 1000 copy bytes is outside") && pr.calls == 0 &&
              rate == 0);
    CHECK("beside: a device that cannot run a load is refused with the measurement's name",
          lrun_copy_load_beside(&e, bytes, "measuring a probe", probe_measure, &pr, NULL) == LRUN_E_UNSUPPORTED &&
              strstr(lrun_last_error(), "measuring a probe") && pr.calls == 0);
    return CHECK_DONE();
}
