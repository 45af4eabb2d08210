/* test_ring.c — the staging ring (runtime/residency/ring.h) on its own:
 * fill order and slots, k units ahead and no further, wait and release,
 * the stats, a PASS ring's passes and write-back, an error from the fill
 * callback reaching acquire, a QUEUED ring's hook order (the CUDA weight
 * staging's), and misuse refused. Units are 4 bytes: the
 * fill writes the unit and its fill count into the slot. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "core/error.h"
#include "residency/ring.h"

enum { N_UNITS = 5, MAX_FILLS = 64 };

struct owner {
    pthread_mutex_t mu;
    int64_t order[MAX_FILLS]; /* units in the order they were filled */
    void *where[MAX_FILLS];   /* and the slot each went to */
    int n_fills;
    int64_t fail_unit;        /* fill of this unit fails, -1: none */
    int64_t written[MAX_FILLS];
    int n_written;
};

static lrun_status fill(void *ctx, int64_t unit, int slot_index, void *slot, size_t *bytes)
{
    (void)slot_index;
    struct owner *o = ctx;
    pthread_mutex_lock(&o->mu);
    if (o->n_fills < MAX_FILLS) {
        o->order[o->n_fills] = unit;
        o->where[o->n_fills] = slot;
    }
    o->n_fills++;
    pthread_mutex_unlock(&o->mu);
    if (unit == o->fail_unit) return lrun_fail(LRUN_E_IO, "test fill: unit %lld cannot be read", (long long)unit);
    *(int32_t *)slot = (int32_t)unit;
    *bytes = 100 + (size_t)unit;
    return LRUN_OK;
}

static lrun_status write_back(void *ctx, int64_t unit, int slot_index, void *slot, size_t *bytes)
{
    (void)slot_index;
    struct owner *o = ctx;
    if (o->n_written < MAX_FILLS) o->written[o->n_written++] = unit;
    *bytes = *(int32_t *)slot == (int32_t)unit ? 10 : 0;
    return LRUN_OK;
}

static int fills(struct owner *o)
{
    pthread_mutex_lock(&o->mu);
    const int n = o->n_fills;
    pthread_mutex_unlock(&o->mu);
    return n;
}

/* Waits (up to 2 s) until the fill thread made n fills. */
static int wait_fills(struct owner *o, int n)
{
    for (int i = 0; i < 2000 && fills(o) < n; i++) nanosleep(&(struct timespec){0, 1000000}, NULL);
    return fills(o);
}

static void settle(void) { nanosleep(&(struct timespec){0, 20000000}, NULL); }

static void owner_init(struct owner *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_init(&o->mu, NULL);
    o->fail_unit = -1;
}

/* A CYCLIC ring of 3 slots (k = 2) plus an own slot for the last unit. */
static void test_cyclic(void)
{
    struct owner o;
    owner_init(&o);
    int32_t mem[4];
    void *ring_slots[3] = {&mem[0], &mem[1], &mem[2]};
    const lrun_ring_opts opts = {.n_units = N_UNITS, .n_ring = 3, .ring_slots = ring_slots,
                                 .own_unit = N_UNITS - 1, .own_slot = &mem[3],
                                 .order = LRUN_RING_ORDER_CYCLIC, .fill = fill, .owner = &o};
    lrun_ring *r = NULL;
    CHECK("cyclic: init", lrun_ring_init(&r, &opts) == LRUN_OK && r);

    /* nothing acquired: the thread fills units 0, 1, 2 into the 3 ring slots, then the
     * own-slot unit is not next (3 is), so it stops at k + 1 = 3 fills */
    CHECK("cyclic: fills k+1 units ahead before any acquire", wait_fills(&o, 3) == 3);
    settle();
    CHECK("cyclic: and no more while every slot is full", fills(&o) == 3);
    CHECK("cyclic: in the order 0, 1, 2 into slots 0, 1, 2",
          o.order[0] == 0 && o.order[1] == 1 && o.order[2] == 2 && o.where[0] == ring_slots[0] &&
              o.where[1] == ring_slots[1] && o.where[2] == ring_slots[2]);

    void *slot = NULL;
    size_t bytes = 0;
    CHECK("cyclic: acquire 0 is a hit in slot 0",
          lrun_ring_acquire(r, 0, &slot, &bytes) == LRUN_OK && slot == ring_slots[0] && *(int32_t *)slot == 0 &&
              bytes == 100);
    settle();
    CHECK("cyclic: no fill into a slot in use", fills(&o) == 3);
    CHECK("cyclic: release 0", lrun_ring_release(r, 0, NULL) == LRUN_OK);
    CHECK("cyclic: slot 0 filled with unit 3 after release", wait_fills(&o, 4) >= 4 && o.order[3] == 3 &&
                                                                o.where[3] == ring_slots[0]);
    /* unit 4 owns its slot, which is free: it is filled next without a ring slot */
    CHECK("cyclic: the own unit goes to its own slot", wait_fills(&o, 5) == 5 && o.order[4] == 4 &&
                                                            o.where[4] == &mem[3]);

    /* the rest of the cycle and once more around, checking each unit's slot */
    int ok = 1;
    void *const expect[] = {ring_slots[1], ring_slots[2], ring_slots[0], &mem[3], ring_slots[1], ring_slots[2]};
    for (int i = 0; i < 6; i++) {
        const int64_t u = (1 + i) % N_UNITS;
        ok &= lrun_ring_acquire(r, u, &slot, NULL) == LRUN_OK && slot == expect[i] && *(int32_t *)slot == (int32_t)u;
        ok &= lrun_ring_release(r, u, NULL) == LRUN_OK;
    }
    CHECK("cyclic: units 1…4, 0, 1 from their slots, across the end of the cycle", ok);

    CHECK("cyclic: acquiring out of order is LRUN_E_INTERNAL",
          lrun_ring_acquire(r, 4, &slot, NULL) == LRUN_E_INTERNAL && slot == NULL);
    CHECK("cyclic: releasing what was not acquired is LRUN_E_INTERNAL", lrun_ring_release(r, 2, NULL) ==
                                                                           LRUN_E_INTERNAL);

    lrun_ring_stats s;
    lrun_ring_stats_get(r, &s);
    CHECK("cyclic: 7 acquires counted as hits + misses", s.hits + s.misses == 7);
    CHECK("cyclic: bytes_filled counts the acquired fills",
          s.bytes_filled == 100 + 101 + 102 + 103 + 104 + 100 + 101);
    CHECK("cyclic: times are counted", s.fill_seconds >= 0 && s.stall_seconds >= 0);
    lrun_ring_stats_reset(r);
    lrun_ring_stats_get(r, &s);
    CHECK("cyclic: reset zeroes the stats", s.hits == 0 && s.misses == 0 && s.bytes_filled == 0);
    lrun_ring_free(r);
    pthread_mutex_destroy(&o.mu);
}

/* A PASS ring of 2 slots with write-back, as the KV stage uses it; with and without a thread. */
static void test_pass(int no_thread)
{
    struct owner o;
    owner_init(&o);
    int32_t mem[2];
    void *ring_slots[2] = {&mem[0], &mem[1]};
    const lrun_ring_opts opts = {.n_units = 3, .n_ring = 2, .ring_slots = ring_slots, .own_unit = -1,
                                 .order = LRUN_RING_ORDER_PASS, .driver = no_thread ? LRUN_RING_FILL_INLINE : LRUN_RING_FILL_THREAD, .fill = fill,
                                 .release = write_back, .owner = &o};
    lrun_ring *r = NULL;
    const char *tag = no_thread ? "pass, no thread" : "pass";
    char name[128];
    lrun_status st = lrun_ring_init(&r, &opts);
    snprintf(name, sizeof name, "%s: init", tag);
    CHECK(name, st == LRUN_OK);
    settle();
    snprintf(name, sizeof name, "%s: nothing is filled before a pass begins", tag);
    CHECK(name, fills(&o) == 0);
    int ok = 1;
    uint64_t wb_total = 0;
    for (int pass = 0; pass < 2; pass++) {
        lrun_ring_begin(r);
        for (int64_t u = 0; u < 3; u++) {
            void *slot = NULL;
            size_t wb = 0;
            ok &= lrun_ring_acquire(r, u, &slot, NULL) == LRUN_OK && slot == ring_slots[u % 2];
            ok &= lrun_ring_release(r, u, &wb) == LRUN_OK && wb == 10;
            wb_total += wb;
        }
    }
    settle();
    snprintf(name, sizeof name, "%s: two passes of 3 units, layer l in slot l %% 2", tag);
    CHECK(name, ok);
    snprintf(name, sizeof name, "%s: the ring fills one pass and stops: 6 fills", tag);
    CHECK(name, fills(&o) == 6);
    snprintf(name, sizeof name, "%s: every release wrote back its unit", tag);
    CHECK(name, o.n_written == 6 && o.written[0] == 0 && o.written[2] == 2 && o.written[5] == 2);
    lrun_ring_stats s;
    lrun_ring_stats_get(r, &s);
    snprintf(name, sizeof name, "%s: bytes_written_back", tag);
    CHECK(name, s.bytes_written_back == wb_total && wb_total == 60);
    if (no_thread) {
        snprintf(name, sizeof name, "%s: every acquire filled, so every one is a miss", tag);
        CHECK(name, s.misses == 6 && s.hits == 0);
    }
    /* slots moved between passes (the KV stage grows them) */
    int32_t other[2];
    lrun_ring_set_slot(r, 0, &other[0]);
    lrun_ring_set_slot(r, 1, &other[1]);
    lrun_ring_begin(r);
    void *slot = NULL;
    ok = lrun_ring_acquire(r, 0, &slot, NULL) == LRUN_OK && slot == &other[0] && other[0] == 0;
    ok &= lrun_ring_release(r, 0, NULL) == LRUN_OK;
    /* a pass abandoned after one unit: begin starts over at unit 0 */
    lrun_ring_begin(r);
    ok &= lrun_ring_acquire(r, 0, &slot, NULL) == LRUN_OK && slot == &other[0];
    ok &= lrun_ring_release(r, 0, NULL) == LRUN_OK;
    snprintf(name, sizeof name, "%s: set_slot between passes; begin restarts an unfinished pass", tag);
    CHECK(name, ok);
    lrun_ring_free(r);
    pthread_mutex_destroy(&o.mu);
}

/* A fill that fails: the units before it are served, its acquire returns the error and its message. */
static void test_fill_error(int no_thread)
{
    struct owner o;
    owner_init(&o);
    o.fail_unit = 1;
    int32_t mem[2];
    void *ring_slots[2] = {&mem[0], &mem[1]};
    const lrun_ring_opts opts = {.n_units = 3, .n_ring = 2, .ring_slots = ring_slots, .own_unit = -1,
                                 .order = LRUN_RING_ORDER_PASS, .driver = no_thread ? LRUN_RING_FILL_INLINE : LRUN_RING_FILL_THREAD, .fill = fill,
                                 .owner = &o};
    lrun_ring *r = NULL;
    int ok = lrun_ring_init(&r, &opts) == LRUN_OK;
    lrun_ring_begin(r);
    void *slot = NULL;
    ok &= lrun_ring_acquire(r, 0, &slot, NULL) == LRUN_OK && *(int32_t *)slot == 0;
    ok &= lrun_ring_release(r, 0, NULL) == LRUN_OK;
    const lrun_status st = lrun_ring_acquire(r, 1, &slot, NULL);
    char name[128];
    snprintf(name, sizeof name, "fill error%s: unit 0 served, unit 1's acquire is the fill's LRUN_E_IO",
             no_thread ? " (no thread)" : "");
    CHECK(name, ok && st == LRUN_E_IO && slot == NULL);
    snprintf(name, sizeof name, "fill error%s: with the fill's message", no_thread ? " (no thread)" : "");
    CHECK(name, strstr(lrun_last_error(), "unit 1 cannot be read") != NULL);
    settle();
    snprintf(name, sizeof name, "fill error%s: nothing is filled after the failure", no_thread ? " (no thread)" : "");
    CHECK(name, fills(&o) == 2);
    snprintf(name, sizeof name, "fill error%s: acquiring it again gives the same error",
             no_thread ? " (no thread)" : "");
    CHECK(name, lrun_ring_acquire(r, 1, &slot, NULL) == LRUN_E_IO);
    /* a new pass starts clean */
    o.fail_unit = -1;
    lrun_ring_begin(r);
    ok = 1;
    for (int64_t u = 0; u < 3; u++) {
        ok &= lrun_ring_acquire(r, u, &slot, NULL) == LRUN_OK && *(int32_t *)slot == (int32_t)u;
        ok &= lrun_ring_release(r, u, NULL) == LRUN_OK;
    }
    snprintf(name, sizeof name, "fill error%s: the next pass is served", no_thread ? " (no thread)" : "");
    CHECK(name, ok);
    lrun_ring_free(r);
    pthread_mutex_destroy(&o.mu);
}

/* ---------------------------------------------------------------- QUEUED: the hooks' order */

static char qlog[512];

static void qlogf(const char *fmt, int64_t a, int b)
{
    char item[32];
    snprintf(item, sizeof item, fmt, (long long)a, b);
    strncat(qlog, item, sizeof qlog - strlen(qlog) - 1);
}

static lrun_status q_fill(void *ctx, int64_t unit, int s, void *slot, size_t *bytes)
{
    (void)ctx, (void)slot;
    qlogf("F%lld.%d ", unit, s);
    *bytes = 10 * (size_t)(unit + 1);
    return LRUN_OK;
}
static lrun_status q_release(void *ctx, int64_t unit, int s, void *slot, size_t *bytes)
{
    (void)ctx, (void)slot, (void)bytes;
    qlogf("R%lld.%d ", unit, s);
    return LRUN_OK;
}
static lrun_status q_acquire(void *ctx, int s)
{
    (void)ctx;
    qlogf("A%lld.%d ", 0, s);
    return LRUN_OK;
}
static lrun_status q_refill(void *ctx, int s)
{
    (void)ctx;
    qlogf("B%lld.%d ", 0, s);
    return LRUN_OK;
}

/* A QUEUED ring of 2 slots (k = 1) over 3 units, as engine_cuda_offload.c
 * drives it: fills issued at a cold acquire and k ahead at each release,
 * before_refill only for a slot that held a unit. */
static void test_queued(void)
{
    int32_t mem[2];
    void *ring_slots[2] = {&mem[0], &mem[1]};
    const lrun_ring_opts opts = {.n_units = 3, .n_ring = 2, .ring_slots = ring_slots, .own_unit = -1,
                                 .order = LRUN_RING_ORDER_CYCLIC, .driver = LRUN_RING_FILL_QUEUED,
                                 .fill = q_fill, .release = q_release, .on_acquire = q_acquire,
                                 .before_refill = q_refill};
    lrun_ring *r = NULL;
    int ok = lrun_ring_init(&r, &opts) == LRUN_OK;
    settle();
    CHECK("queued: nothing is issued before the first acquire", ok && qlog[0] == 0);
    void *slot = NULL;
    size_t bytes = 0;
    for (int64_t u = 0; u < 3; u++) {
        ok &= lrun_ring_acquire(r, u, &slot, &bytes) == LRUN_OK && slot == ring_slots[u % 2] &&
              bytes == 10 * (size_t)(u + 1);
        ok &= lrun_ring_release(r, u, NULL) == LRUN_OK;
    }
    CHECK("queued: fill, wait, release and refill in the CUDA pipeline's order",
          ok && strcmp(qlog, "F0.0 A0.0 R0.0 F1.1 A0.1 R1.1 B0.0 F2.0 A0.0 R2.0 B0.1 F0.1 ") == 0);
    if (!ok || strcmp(qlog, "F0.0 A0.0 R0.0 F1.1 A0.1 R1.1 B0.0 F2.0 A0.0 R2.0 B0.1 F0.1 ") != 0)
        printf("# %s\n", qlog);
    CHECK("queued: out of order is LRUN_E_INTERNAL", lrun_ring_acquire(r, 2, &slot, NULL) == LRUN_E_INTERNAL);
    qlog[0] = 0;
    lrun_ring_begin(r); /* after a failed step: every slot empty, from unit 0 */
    ok = lrun_ring_acquire(r, 0, &slot, NULL) == LRUN_OK && slot == ring_slots[0];
    CHECK("queued: begin empties the pipeline (no before_refill)", ok && strcmp(qlog, "F0.0 A0.0 ") == 0);
    lrun_ring_stats st;
    lrun_ring_stats_get(r, &st);
    CHECK("queued: bytes_filled counts acquired fills", st.bytes_filled == 10 + 20 + 30 + 10);
    lrun_ring_free(r);
}

/* The same ring with ahead = n_ring, as engine_cuda_offload.c drives it
 * for pinned sources: releasing unit c issues c+1 and c+2, the last into
 * c's own slot behind before_refill of that slot (a device-side wait), so
 * two fills are queued while c's successor computes. */
static void test_queued_ahead(void)
{
    int32_t mem[2];
    void *ring_slots[2] = {&mem[0], &mem[1]};
    const lrun_ring_opts opts = {.n_units = 3,
                                 .n_ring = 2,
                                 .ring_slots = ring_slots,
                                 .own_unit = -1,
                                 .order = LRUN_RING_ORDER_CYCLIC,
                                 .driver = LRUN_RING_FILL_QUEUED,
                                 .ahead = 2,
                                 .fill = q_fill,
                                 .release = q_release,
                                 .on_acquire = q_acquire,
                                 .before_refill = q_refill};
    lrun_ring *r = NULL;
    qlog[0] = 0;
    int ok = lrun_ring_init(&r, &opts) == LRUN_OK;
    void *slot = NULL;
    size_t bytes = 0;
    for (int64_t u = 0; u < 4; u++) {
        ok &= lrun_ring_acquire(r, u % 3, &slot, &bytes) == LRUN_OK && slot == ring_slots[u % 2] &&
              bytes == 10 * (size_t)(u % 3 + 1);
        ok &= lrun_ring_release(r, u % 3, NULL) == LRUN_OK;
    }
    const char *want = "F0.0 A0.0 R0.0 F1.1 B0.0 F2.0 A0.1 R1.1 B0.1 F0.1 A0.0 R2.0 B0.0 F1.0 A0.1 R0.1 B0.1 F2.1 ";
    CHECK("queued, ahead = n_ring: a released slot is refilled at once, behind its before_refill",
          ok && strcmp(qlog, want) == 0);
    if (!ok || strcmp(qlog, want) != 0) printf("# %s\n", qlog);
    lrun_ring_free(r);
}

static void test_init_refused(void)
{
    struct owner o;
    owner_init(&o);
    lrun_ring *r = (lrun_ring *)&o;
    const lrun_ring_opts no_fill = {.n_units = 3, .n_ring = 2, .own_unit = -1};
    CHECK("init without a fill callback is LRUN_E_ARG and leaves *out NULL",
          lrun_ring_init(&r, &no_fill) == LRUN_E_ARG && r == NULL);
    const lrun_ring_opts no_slots = {.n_units = 3, .n_ring = 0, .own_unit = -1, .fill = fill};
    CHECK("init with no slots is LRUN_E_ARG", lrun_ring_init(&r, &no_slots) == LRUN_E_ARG && r == NULL);
    const lrun_ring_opts no_units = {.n_units = 0, .n_ring = 2, .own_unit = -1, .fill = fill};
    CHECK("init with no units is LRUN_E_ARG", lrun_ring_init(&r, &no_units) == LRUN_E_ARG && r == NULL);
    lrun_ring_free(NULL);
    CHECK("free(NULL) is a no-op", 1);
    pthread_mutex_destroy(&o.mu);
}

int main(void)
{
    test_cyclic();
    test_pass(0);
    test_pass(1);
    test_fill_error(0);
    test_fill_error(1);
    test_queued();
    test_queued_ahead();
    test_init_refused();
    return CHECK_DONE();
}
