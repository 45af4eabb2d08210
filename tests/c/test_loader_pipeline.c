/* test_loader_pipeline.c — the streaming loader's copies in flight
 * (residency/loader.c), on a mock device whose asynchronous copies only
 * happen when an event or the stream is waited on (as a slow copy engine
 * would finish them). So:
 *   - a pinned chunk read into again before its copy finished would show
 *     as wrong bytes at the destination (every byte is checked);
 *   - the copies queued and not yet done never exceed 2 per reader thread
 *     (double buffering) and reach 2 (a read overlaps the last copy);
 *   - the pinned staging at the peak is threads × 2 × chunk, nothing more;
 *   - widened ranges (the loader's widen hook, as FP8 weights use it) come
 *     out right at host and device destinations when pieces cut rows, with
 *     the E4M3 value and bf16 rounding computed here (not lrun's), and hold
 *     one scratch chunk per thread;
 *   - under a host account with a budget, the staging is charged for the
 *     run and shrinks to what the budget has left (threads first, then
 *     halved chunks), the account's peak stays under the budget, and a
 *     budget too small for one thread's smallest chunks is a clean oom
 *     naming the staging, with nothing left charged. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/device.h"
#include "core/host_account.h"
#include "lrun.h"
#include "residency/loader.h"

enum { SIZE = (3 << 20) + 4097, CHUNK = 64 << 10, QCAP = 4096, COLS = 1000 };

// ---------------------------------------------------------------- the mock copy engine

typedef struct mcopy {
    void *dst;
    const void *src;
    size_t bytes;
} mcopy;

typedef struct mstream {
    mcopy q[QCAP];
    int queued, done;          /* copies queued, and done (in order) */
    int peak;                  /* most copies queued and not done at once */
} mstream;

typedef struct mevent {
    mstream *s;
    int pos;                   /* the copies before it when recorded */
} mevent;

static pthread_mutex_t mlock = PTHREAD_MUTEX_INITIALIZER;
static int in_flight, in_flight_peak, stream_peak, overflow;
static int streams; /* made: one per reader thread that staged a device piece */

/* The copies of s up to pos happen now. */
static void complete(mstream *s, int pos)
{
    pthread_mutex_lock(&mlock);
    for (; s->done < pos; s->done++) {
        memcpy(s->q[s->done].dst, s->q[s->done].src, s->q[s->done].bytes);
        in_flight--;
    }
    pthread_mutex_unlock(&mlock);
}

static lrun_status m_memcpy_async(lrun_device *d, void *dst, const void *src, size_t bytes, lrun_copy_kind k, void *st)
{
    (void)d, (void)k;
    mstream *s = st;
    pthread_mutex_lock(&mlock);
    if (s->queued == QCAP) overflow = 1;
    else s->q[s->queued++] = (mcopy){dst, src, bytes};
    const int mine = s->queued - s->done;
    if (mine > s->peak) s->peak = mine;
    if (mine > stream_peak) stream_peak = mine;
    if (++in_flight > in_flight_peak) in_flight_peak = in_flight;
    pthread_mutex_unlock(&mlock);
    return overflow ? LRUN_E_ARG : LRUN_OK;
}

static lrun_status m_memcpy(lrun_device *d, void *dst, const void *src, size_t bytes, lrun_copy_kind k)
{
    (void)d, (void)k;
    memcpy(dst, src, bytes);
    return LRUN_OK;
}

static lrun_status m_stream_create(lrun_device *d, void **out)
{
    (void)d;
    pthread_mutex_lock(&mlock);
    streams++;
    pthread_mutex_unlock(&mlock);
    *out = calloc(1, sizeof(mstream));
    return *out ? LRUN_OK : LRUN_E_OOM;
}

static void m_stream_destroy(lrun_device *d, void *s) { (void)d, free(s); }

static lrun_status m_stream_sync(lrun_device *d, void *st)
{
    (void)d;
    mstream *s = st;
    complete(s, s->queued);
    return LRUN_OK;
}

static lrun_status m_event_create(lrun_device *d, void **out)
{
    (void)d;
    *out = calloc(1, sizeof(mevent));
    return *out ? LRUN_OK : LRUN_E_OOM;
}

static void m_event_destroy(lrun_device *d, void *e) { (void)d, free(e); }

static lrun_status m_event_record(lrun_device *d, void *ev, void *st)
{
    (void)d;
    mevent *e = ev;
    mstream *s = st;
    pthread_mutex_lock(&mlock);
    e->s = s;
    e->pos = s->queued;
    pthread_mutex_unlock(&mlock);
    return LRUN_OK;
}

static lrun_status m_event_sync(lrun_device *d, void *ev)
{
    (void)d;
    mevent *e = ev;
    if (e->s) complete(e->s, e->pos);
    return LRUN_OK;
}

static const lrun_device_iface mock_iface = {
    .memcpy = m_memcpy, .memcpy_async = m_memcpy_async, .stream_create = m_stream_create,
    .stream_destroy = m_stream_destroy, .stream_sync = m_stream_sync, .event_create = m_event_create,
    .event_destroy = m_event_destroy, .event_record = m_event_record, .event_sync = m_event_sync,
};

static void reset_counts(void) { in_flight = in_flight_peak = stream_peak = overflow = streams = 0; }

// ---------------------------------------------------------------- E4M3 and bf16, written here

#define WIDEN_COLS COLS
#include "widen_ref.h" /* e4m3, bf16, widen_rows: the test's own decode */

// ---------------------------------------------------------------- the runs

static char path[256];
static uint8_t *file;          /* (SIZE) the file's bytes; NaN codes replaced */

static int write_file(void)
{
    snprintf(path, sizeof path, "%s/lrun_pipe_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    const int fd = mkstemp(path);
    if (fd < 0 || !(file = malloc(SIZE))) return 0;
    uint32_t x = 12345;
    for (size_t i = 0; i < SIZE; i++) {
        x = x * 1664525u + 1013904223u;
        file[i] = (uint8_t)(x >> 24);
        if ((file[i] & 0x7f) == 0x7f) file[i] = 0x3c; /* no NaN: the comparison is bitwise */
    }
    const int ok = write(fd, file, SIZE) == SIZE;
    return close(fd) == 0 && ok;
}

/* Plain copies to the mock device with n_threads readers. */
static void plain(int n_threads)
{
    lrun_device dev = {.iface = &mock_iface, .kind = LRUN_DEVICE_KIND_CPU, .cuda_ordinal = -1};
    uint8_t *dst = calloc(1, SIZE);
    const lrun_load_range r[2] = {{.offset = 3, .bytes = SIZE / 2, .dst = dst, .on_device = 1},
                                  {.offset = 3 + SIZE / 2, .bytes = SIZE - 3 - SIZE / 2, .dst = dst + SIZE / 2,
                                   .on_device = 1}};
    const char *paths[1] = {path};
    const lrun_loader_opts o = {.device = &dev, .n_threads = n_threads, .chunk_bytes = CHUNK};
    lrun_loader_stats s;
    reset_counts();
    const lrun_status st = lrun_loader_read(paths, 1, r, 2, &o, &s);
    if (st != LRUN_OK) printf("# %s\n", lrun_last_error());
    char name[128];
    printf("# %d threads (%d staged): %d copies in flight at most (one stream %d), staging %zu bytes\n",
           n_threads, streams, in_flight_peak, stream_peak, s.staging_bytes);
    snprintf(name, sizeof name, "%d threads: every byte at the device destination is the file's", n_threads);
    CHECK(name, st == LRUN_OK && !overflow && memcmp(dst, file + 3, SIZE - 3) == 0);
    snprintf(name, sizeof name, "%d threads: at most 2 copies in flight per thread, 2 reached", n_threads);
    CHECK(name, stream_peak == 2 && in_flight_peak <= 2 * n_threads && in_flight == 0);
    /* a thread the scheduler starts after the last piece stages nothing: count those that did;
     * a thread frees its two chunks when it is done, so one that finished before another
     * staged does not add to the peak (and a thread takes its two chunks one at a time): at
     * least one thread's pair, at most a pair per staging thread, whole chunks */
    snprintf(name, sizeof name, "%d threads: peak pinned staging between 2 chunks and staging threads x 2 x chunk",
             n_threads);
    CHECK(name, s.n_threads == n_threads && streams >= 1 && streams <= n_threads &&
                    s.staging_bytes >= 2 * (size_t)CHUNK && s.staging_bytes <= (size_t)streams * 2 * CHUNK &&
                    s.staging_bytes % (size_t)CHUNK == 0 && s.scratch_bytes == 0);
    free(dst);
}

/* A widened range (ratio 2: E4M3 → bf16 times a per-row scale) to the host and to the mock device. */
static void widened(int n_threads, int on_device)
{
    lrun_device dev = {.iface = &mock_iface, .kind = LRUN_DEVICE_KIND_CPU, .cuda_ordinal = -1};
    const size_t n = SIZE - 7, rows = (n + COLS - 1) / COLS;
    float *scale = malloc(rows * sizeof *scale);
    uint16_t *dst = calloc(n, sizeof *dst);
    for (size_t i = 0; i < rows; i++) scale[i] = 0.001f * (float)(i % 97 + 1);
    const lrun_load_range r = {.offset = 7, .bytes = n, .dst = dst, .on_device = on_device, .widen = widen_rows,
                               .widen_ctx = scale, .widen_ratio = 2};
    const char *paths[1] = {path};
    const lrun_loader_opts o = {.device = &dev, .n_threads = n_threads, .chunk_bytes = CHUNK};
    lrun_loader_stats s;
    reset_counts();
    const lrun_status st = lrun_loader_read(paths, 1, &r, 1, &o, &s);
    if (st != LRUN_OK) printf("# %s\n", lrun_last_error());
    int same = st == LRUN_OK && !overflow;
    for (size_t i = 0; same && i < n; i++) same = dst[i] == bf16(e4m3(file[7 + i]) * scale[i / COLS]);
    char name[160];
    snprintf(name, sizeof name, "widened to the %s, %d threads: bf16(e4m3 x row scale) at every element",
             on_device ? "device" : "host", n_threads);
    CHECK(name, same);
    snprintf(name, sizeof name, "widened to the %s: one scratch chunk per thread, staging only for the device",
             on_device ? "device" : "host");
    CHECK(name, s.scratch_bytes >= CHUNK && s.scratch_bytes <= (size_t)n_threads * CHUNK && s.scratch_bytes % CHUNK == 0 &&
                    s.staging_bytes == (on_device ? (size_t)streams * 2 * CHUNK : 0) &&
                    (!on_device || (stream_peak == 2 && in_flight_peak <= 2 * n_threads)));
    free(scale);
    free(dst);
}

/* The sizing alone: threads go first, then chunks halve down to the minimum. */
static void fit_sizes(void)
{
    int t = 4;
    size_t c = 64 << 20;
    CHECK("no budget: the staging as asked", lrun_loader_fit_staging(SIZE_MAX, 2, 1 << 20, &t, &c) && t == 4 &&
                                                 c == (size_t)64 << 20);
    CHECK("no staging (host ranges, nothing widened): as asked",
          lrun_loader_fit_staging(0, 0, 1 << 20, &t, &c) && t == 4 && c == (size_t)64 << 20);
    CHECK("300 MiB of room for 2 chunks a thread: 2 threads of 64 MiB",
          lrun_loader_fit_staging((size_t)300 << 20, 2, 1 << 20, &t, &c) && t == 2 && c == (size_t)64 << 20);
    t = 4, c = (size_t)64 << 20;
    CHECK("40 MiB of room: 1 thread of 16 MiB", lrun_loader_fit_staging((size_t)40 << 20, 2, 1 << 20, &t, &c) &&
                                                    t == 1 && c == (size_t)16 << 20);
    t = 4, c = (size_t)64 << 20;
    CHECK("3 MiB of room, 3 chunks a thread: 1 thread of 1 MiB (the minimum)",
          lrun_loader_fit_staging((size_t)3 << 20, 3, 1 << 20, &t, &c) && t == 1 && c == (size_t)1 << 20);
    t = 4, c = (size_t)64 << 20;
    CHECK("1 MiB of room for 2 chunks of at least 1 MiB: does not fit, left at the smallest",
          !lrun_loader_fit_staging((size_t)1 << 20, 2, 1 << 20, &t, &c) && t == 1 && c == (size_t)1 << 20);
    t = 2, c = 300 << 10;
    CHECK("a chunk asked below the minimum is the floor itself",
          !lrun_loader_fit_staging(500 << 10, 2, 1 << 20, &t, &c) && t == 1 && c == 300 << 10);
}

/* Copies to the mock device (widened or not) with 3 threads of 512 KiB asked,
 * under a budget that leaves room bytes after 100 KiB of weights already held. */
static void budgeted(size_t room, int widen, int want_threads, size_t want_chunk)
{
    lrun_device dev = {.iface = &mock_iface, .kind = LRUN_DEVICE_KIND_CPU, .cuda_ordinal = -1};
    const size_t held = 100 << 10, n = SIZE - 7, rows = (n + COLS - 1) / COLS;
    lrun_host_account a;
    lrun_host_account_init(&a);
    lrun_host_account_set_budget(&a, held + room);
    lrun_host_account_charge(&a, LRUN_HOST_CATEGORY_WEIGHTS, held, "weights");
    float *scale = malloc(rows * sizeof *scale);
    for (size_t i = 0; i < rows; i++) scale[i] = 0.002f * (float)(i % 89 + 1);
    uint16_t *dst = calloc(n, sizeof *dst);
    /* plain: the file's n bytes into dst's first n; widened: n × 2 bytes of bf16 */
    const lrun_load_range r = {.offset = 7, .bytes = n, .dst = dst, .on_device = 1,
                               .widen = widen ? widen_rows : NULL, .widen_ctx = scale, .widen_ratio = 2};
    const char *paths[1] = {path};
    const lrun_loader_opts o = {.device = &dev, .n_threads = 3, .chunk_bytes = 512 << 10, .account = &a,
                                .chunk_min = CHUNK};
    lrun_loader_stats s;
    reset_counts();
    const lrun_status st = lrun_loader_read(paths, 1, &r, 1, &o, &s);
    lrun_host_stats h;
    lrun_host_account_get(&a, &h);
    char name[200];
    const char *kind = widen ? "widened" : "plain";
    if (!want_threads) {
        snprintf(name, sizeof name, "%s, %zu KiB of room: an oom naming the loading and the staging, nothing left "
                 "charged", kind, room >> 10);
        const char *msg = lrun_last_error();
        printf("# %s\n", msg);
        CHECK(name, st == LRUN_E_OOM && strstr(msg, "loading") && strstr(msg, "model load staging") &&
                        h.held == held && h.refused >= 1 && streams == 0);
    } else {
        if (st != LRUN_OK) printf("# %s\n", lrun_last_error());
        int same = st == LRUN_OK && !overflow;
        for (size_t i = 0; same && i < n; i++)
            same = widen ? dst[i] == bf16(e4m3(file[7 + i]) * scale[i / COLS]) : ((uint8_t *)dst)[i] == file[7 + i];
        const int per = widen ? 3 : 2;
        printf("# %s, %zu KiB of room: %d threads of %zu KiB, %zu KiB charged, account peak %zu KiB of %zu\n", kind,
               room >> 10, s.n_threads, s.chunk_bytes >> 10, s.charged_bytes >> 10, h.peak >> 10, h.budget >> 10);
        snprintf(name, sizeof name, "%s, %zu KiB of room: every byte right with %d thread(s) of %zu KiB", kind,
                 room >> 10, want_threads, want_chunk >> 10);
        CHECK(name, same && s.n_threads == want_threads && s.chunk_bytes == want_chunk && s.shrunk);
        snprintf(name, sizeof name, "%s, %zu KiB of room: the staging charged for the run, the peak under the budget, "
                 "given back after", kind, room >> 10);
        CHECK(name, s.charged_bytes == (size_t)want_threads * per * want_chunk &&
                        s.staging_bytes + s.scratch_bytes <= s.charged_bytes && h.peak == held + s.charged_bytes &&
                        h.peak <= h.budget && h.held == held && h.slots == 0);
    }
    lrun_host_account_destroy(&a);
    free(scale);
    free(dst);
}

int main(void)
{
    if (!write_file()) {
        printf("not ok 1 - a test file\n1..1\n");
        return 1;
    }
    plain(1);
    plain(3);
    widened(1, 0);
    widened(3, 0);
    widened(1, 1);
    widened(3, 1);
    fit_sizes();
    budgeted(1200 << 10, 0, 1, 512 << 10); /* 3 × 2 × 512 KiB do not fit, 1 × 2 × 512 KiB do */
    budgeted(300 << 10, 0, 1, 128 << 10);  /* then the chunk halves: 2 × 128 KiB */
    budgeted(300 << 10, 1, 1, 64 << 10);   /* widened: 3 chunks a thread (2 pinned, 1 scratch) of 64 KiB */
    budgeted(100 << 10, 0, 0, 0);          /* 2 × 64 KiB (the minimum) do not fit */
    /* a widening whose ratio does not fit the chunk is refused, not looped on */
    uint16_t out[4];
    const lrun_load_range bad = {.bytes = 4, .dst = out, .widen = widen_rows, .widen_ctx = out, .widen_ratio = 9};
    const char *paths[1] = {path};
    CHECK("a widen ratio past LRUN_LOADER_WIDEN_MAX is LRUN_E_ARG",
          lrun_loader_read(paths, 1, &bad, 1, NULL, NULL) == LRUN_E_ARG);
    unlink(path);
    free(file);
    printf("1..%d\n", check_count);
    return check_failures ? 1 : 0;
}
