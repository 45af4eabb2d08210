/* loader.c — reader threads, pinned double buffers and page-cache dropping
 * for model loads (see loader.h). */
#include "residency/loader.h"
#include "core/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/device.h"
#include "core/format_bytes.h"
#include "core/error.h"
#include "residency/page_cache.h"

/* One read: file bytes [at, at + len) of range r (dst bytes [at, at + len)
 * times the range's widen_ratio). */
typedef struct piece {
    int64_t r;      /* index into ranges */
    size_t at;      /* file bytes from the range's start */
    size_t len;     /* file bytes */
} piece;

/* What the reader threads share. */
typedef struct loader {
    const lrun_load_range *ranges;
    const char *const *paths;
    const int *fds;            /* (n_files) */
    const piece *pieces;       /* (n_pieces), in the order they are read */
    int64_t n_pieces;
    const lrun_loader_opts *opts;
    size_t chunk;              /* bytes */
    long page;                 /* bytes */

    pthread_mutex_t lock;      /* guards everything below */
    int64_t next;              /* the next piece to hand out */
    size_t done;               /* bytes read */
    size_t staging;            /* pinned bytes held by the threads now */
    size_t staging_peak;
    size_t scratch;            /* plain scratch bytes held by the threads now (widened ranges) */
    size_t scratch_peak;
    lrun_status status;        /* the first failure; the others stop at their next piece */
    char message[512];         /* its message (lrun_last_error is per thread) */
} loader;

/* A reader thread's own staging for device ranges: two pinned chunks, a
 * copy stream, and the event of each chunk's last copy. */
typedef struct reader {
    loader *l;
    void *chunk[2];
    void *stream;
    void *event[2];
    int pending[2];            /* 1: event[i] guards a queued copy out of chunk[i] */
    int turn;                  /* the chunk the next read goes to */
    int ready;                 /* 1 once staging_init ran (whatever it made is released at the end) */
    void *scratch;             /* (chunk) bytes: a widened piece's file bytes, NULL until one comes */
} reader;

// ---------------------------------------------------------------- failures

/* Records the calling thread's last error as the run's, when it is the first. */
static void record_failure(loader *l, lrun_status st)
{
    pthread_mutex_lock(&l->lock);
    if (l->status == LRUN_OK) {
        l->status = st;
        snprintf(l->message, sizeof l->message, "%s", lrun_last_error());
    }
    pthread_mutex_unlock(&l->lock);
}

// ---------------------------------------------------------------- reading

/* len bytes of file f at off into dst: pread until done, LRUN_E_IO on an
 * error or a file that ends early (truncated while loading, or shorter than
 * its header says). */
static lrun_status read_exact(const loader *l, int f, uint64_t off, void *dst, size_t len)
{
    size_t got = 0;
    while (got < len) {
        const ssize_t n = pread(l->fds[f], (char *)dst + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            return lrun_fail(LRUN_E_IO, "%s: reading %zu bytes at offset %llu: %s", l->paths[f], len - got,
                             (unsigned long long)(off + got), strerror(errno));
        if (n == 0)
            return lrun_fail(LRUN_E_IO, "%s: the file ends at offset %llu, inside bytes [%llu, %llu) it should hold "
                             "(truncated or changed while loading?)", l->paths[f], (unsigned long long)(off + got),
                             (unsigned long long)off, (unsigned long long)(off + len));
        got += (size_t)n;
    }
    return LRUN_OK;
}

/* The page cache of the whole pages inside [off, off + len) of file f is
 * not needed again: the bytes are in their destination. Advice only. */
static void drop_pages(const loader *l, int f, uint64_t off, size_t len)
{
    if (!l->opts->drop_cache) return;
    const uint64_t page = (uint64_t)l->page;
    const uint64_t begin = (off + page - 1) / page * page, end = (off + len) / page * page;
    if (end > begin) (void)posix_fadvise(l->fds[f], (off_t)begin, (off_t)(end - begin), POSIX_FADV_DONTNEED);
}

// ---------------------------------------------------------------- staging for device ranges

static lrun_status staging_init(reader *rd)
{
    loader *l = rd->l;
    lrun_device *d = l->opts->device;
    lrun_status st = LRUN_OK;
    /* the queues first: creating them makes the device current on this thread */
    if (d->iface->memcpy_async) { /* without it, copies as issued: one chunk at a time */
        st = d->iface->stream_create(d, &rd->stream);
        for (int i = 0; st == LRUN_OK && i < 2; i++) st = d->iface->event_create(d, &rd->event[i]);
    }
    for (int i = 0; st == LRUN_OK && i < 2; i++) {
        st = lrun_host_alloc(LRUN_TIER_PINNED, l->chunk, "model load staging chunk", &rd->chunk[i]);
        if (st != LRUN_OK) break;
        pthread_mutex_lock(&l->lock);
        l->staging += l->chunk;
        if (l->staging > l->staging_peak) l->staging_peak = l->staging;
        pthread_mutex_unlock(&l->lock);
    }
    rd->ready = 1; /* staging_free releases what was made, all or part */
    return st;
}

/* Waits for the copies still queued from this thread's chunks. */
static lrun_status staging_drain(reader *rd)
{
    lrun_device *d = rd->l->opts->device;
    lrun_status st = LRUN_OK;
    if (rd->stream) st = d->iface->stream_sync(d, rd->stream);
    rd->pending[0] = rd->pending[1] = 0;
    return st;
}

static void staging_free(reader *rd)
{
    loader *l = rd->l;
    lrun_device *d = l->opts->device;
    if (rd->scratch) {
        free(rd->scratch);
        pthread_mutex_lock(&l->lock);
        l->scratch -= l->chunk;
        pthread_mutex_unlock(&l->lock);
    }
    if (!rd->ready) return;
    for (int i = 0; i < 2; i++) {
        if (rd->event[i]) d->iface->event_destroy(d, rd->event[i]);
        if (!rd->chunk[i]) continue;
        lrun_host_release(LRUN_TIER_PINNED, rd->chunk[i]);
        pthread_mutex_lock(&l->lock);
        l->staging -= l->chunk;
        pthread_mutex_unlock(&l->lock);
    }
    if (rd->stream) d->iface->stream_destroy(d, rd->stream);
}

/* The file bytes of a widened piece, in the thread's scratch chunk (made at
 * the first such piece: a widened range never reads its whole into memory). */
static lrun_status read_scratch(reader *rd, const lrun_load_range *r, const piece *p)
{
    loader *l = rd->l;
    if (!rd->scratch) {
        if (!(rd->scratch = malloc(l->chunk)))
            return lrun_fail_oom(l->chunk, 0, "model load: a widening scratch chunk");
        pthread_mutex_lock(&l->lock);
        l->scratch += l->chunk;
        if (l->scratch > l->scratch_peak) l->scratch_peak = l->scratch;
        pthread_mutex_unlock(&l->lock);
    }
    return read_exact(l, r->file, r->offset + p->at, rd->scratch, p->len);
}

/* One piece of a host range: pread straight into dst, or widened from the scratch. */
static lrun_status read_to_host(reader *rd, const lrun_load_range *r, const piece *p)
{
    if (!r->widen) return read_exact(rd->l, r->file, r->offset + p->at, (char *)r->dst + p->at, p->len);
    const lrun_status st = read_scratch(rd, r, p);
    if (st == LRUN_OK) r->widen(r->widen_ctx, p->at, rd->scratch, p->len, (char *)r->dst + p->at * (size_t)r->widen_ratio);
    return st;
}

/* One piece of a device range: read into the next chunk (once its last copy
 * is done; a widened piece is read into the scratch first, so that read
 * overlaps the copy too, and widened into the chunk), then queue its copy. */
static lrun_status read_to_device(reader *rd, const lrun_load_range *r, const piece *p)
{
    loader *l = rd->l;
    lrun_device *d = l->opts->device;
    lrun_status st = LRUN_OK;
    if (!rd->ready && (st = staging_init(rd)) != LRUN_OK) return st;
    if (r->widen && (st = read_scratch(rd, r, p)) != LRUN_OK) return st;
    const int b = rd->turn;
    rd->turn ^= 1;
    if (rd->pending[b] && (st = d->iface->event_sync(d, rd->event[b])) != LRUN_OK) return st;
    rd->pending[b] = 0;
    const size_t ratio = r->widen ? (size_t)r->widen_ratio : 1, len = p->len * ratio; /* dst bytes */
    if (r->widen) r->widen(r->widen_ctx, p->at, rd->scratch, p->len, rd->chunk[b]);
    else if ((st = read_exact(l, r->file, r->offset + p->at, rd->chunk[b], p->len)) != LRUN_OK) return st;
    char *dst = (char *)r->dst + p->at * ratio;
    if (!d->iface->memcpy_async)
        return d->iface->memcpy(d, dst, rd->chunk[b], len, LRUN_COPY_HOST_TO_DEVICE);
    st = d->iface->memcpy_async(d, dst, rd->chunk[b], len, LRUN_COPY_HOST_TO_DEVICE, rd->stream);
    if (st == LRUN_OK) st = d->iface->event_record(d, rd->event[b], rd->stream);
    if (st == LRUN_OK) rd->pending[b] = 1;
    return st;
}

// ---------------------------------------------------------------- the threads

/* The next piece to read, or -1 when none is left or the run failed. */
static int64_t take(loader *l)
{
    pthread_mutex_lock(&l->lock);
    const int64_t i = l->status == LRUN_OK && l->next < l->n_pieces ? l->next++ : -1;
    pthread_mutex_unlock(&l->lock);
    return i;
}

static void finished(loader *l, const piece *p)
{
    const lrun_load_range *r = &l->ranges[p->r];
    pthread_mutex_lock(&l->lock);
    l->done += p->len;
    if (l->opts->progress) l->opts->progress(l->opts->progress_ctx, l->done, r->file);
    pthread_mutex_unlock(&l->lock);
}

static void *reader_main(void *arg)
{
    reader *rd = arg;
    loader *l = rd->l;
    lrun_status st = LRUN_OK;
    for (int64_t i; st == LRUN_OK && (i = take(l)) >= 0;) {
        const piece *p = &l->pieces[i];
        const lrun_load_range *r = &l->ranges[p->r];
        if (r->on_device) st = read_to_device(rd, r, p);
        else st = read_to_host(rd, r, p);
        if (st == LRUN_OK) {
            drop_pages(l, r->file, r->offset + p->at, p->len);
            finished(l, p);
        }
    }
    if (rd->ready) {
        const lrun_status sd = staging_drain(rd);
        if (st == LRUN_OK) st = sd;
    }
    if (st != LRUN_OK) record_failure(l, st);
    staging_free(rd); /* and the scratch */
    return NULL;
}

// ---------------------------------------------------------------- set-up

static int env_int(const char *name, int def, int lo, int hi)
{
    const char *s = getenv(name);
    if (!s || !*s) return def;
    char *end;
    const long v = strtol(s, &end, 10);
    return *end == '\0' && v >= lo && v <= hi ? (int)v : def;
}

/* warm: the ranges are in the page cache (memcpy-bound: more threads, smaller pieces) */
static int default_threads(int warm)
{
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const int want = warm ? LRUN_LOADER_WARM_THREADS : LRUN_LOADER_THREADS_DEFAULT;
    return env_int("LRUN_LOAD_THREADS", cores > 0 && cores < want ? (int)cores : want, 1, LRUN_LOADER_THREADS_MAX);
}

static size_t default_chunk(int warm)
{
    const size_t want = warm ? LRUN_LOADER_WARM_CHUNK : LRUN_LOADER_CHUNK_DEFAULT;
    return (size_t)env_int("LRUN_LOAD_CHUNK_MB", (int)(want >> 20), 1, 1024) << 20;
}

/* The file bytes of one piece of r: a widened piece's dst bytes fit one chunk. */
static size_t piece_bytes(const lrun_load_range *r, size_t chunk)
{
    return r->widen ? chunk / (size_t)r->widen_ratio : chunk;
}

/* Checks the ranges and cuts them into pieces of at most chunk dst bytes. */
static lrun_status make_pieces(const lrun_load_range *ranges, int64_t n, int n_files, const lrun_loader_opts *o,
                               size_t chunk, piece **out, int64_t *n_out, size_t *total)
{
    int64_t count = 0;
    *total = 0;
    for (int64_t i = 0; i < n; i++) {
        const lrun_load_range *r = &ranges[i];
        if (r->file < 0 || r->file >= n_files || (!r->dst && r->bytes) || (r->on_device && !o->device) ||
            r->offset > (uint64_t)INT64_MAX - r->bytes ||
            (r->widen && (r->widen_ratio < 1 || r->widen_ratio > LRUN_LOADER_WIDEN_MAX ||
                          chunk < (size_t)r->widen_ratio || r->bytes > SIZE_MAX / (size_t)r->widen_ratio)))
            return lrun_fail(LRUN_E_ARG, "loader: range %lld (file %d, offset %llu, %zu bytes) is not valid here",
                             (long long)i, r->file, (unsigned long long)r->offset, r->bytes);
        count += (int64_t)((r->bytes + piece_bytes(r, chunk) - 1) / piece_bytes(r, chunk));
        *total += r->bytes;
    }
    piece *p = malloc((size_t)(count ? count : 1) * sizeof *p);
    if (!p) return lrun_fail_oom((size_t)count * sizeof *p, 0, "loader: %lld pieces", (long long)count);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        const size_t step = piece_bytes(&ranges[i], chunk);
        for (size_t at = 0; at < ranges[i].bytes; at += step)
            p[k++] = (piece){i, at, ranges[i].bytes - at < step ? ranges[i].bytes - at : step};
    }
    *out = p;
    *n_out = k;
    return LRUN_OK;
}

static lrun_status open_files(const char *const *paths, int n_files, int *fds)
{
    for (int i = 0; i < n_files; i++) fds[i] = -1;
    for (int i = 0; i < n_files; i++) {
        fds[i] = open(paths[i], O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0) return lrun_fail(LRUN_E_IO, "%s: cannot open it to load: %s", paths[i], strerror(errno));
        /* a larger readahead window: every thread reads its piece front to back */
        (void)posix_fadvise(fds[i], 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- the staging under the host budget

/* Chunks a reader may hold at once: two pinned ones when a range goes to
 * the device, one scratch when a range is widened. */
static int chunks_per_thread(const lrun_load_range *r, int64_t n)
{
    int dev = 0, wide = 0;
    for (int64_t i = 0; i < n; i++) {
        dev |= r[i].on_device != 0;
        wide |= r[i].widen != NULL;
    }
    return 2 * dev + wide;
}

int lrun_loader_fit_staging(size_t room, int per_thread, size_t chunk_min, int *n_threads, size_t *chunk)
{
    if (per_thread <= 0 || *chunk == 0) return 1;
    if (*n_threads < 1) *n_threads = 1;
    const size_t floor = *chunk < chunk_min ? *chunk : chunk_min;
    for (;;) {
        /* n_threads × per_thread × chunk ≤ room, without overflow */
        if (*chunk <= room / ((size_t)*n_threads * (size_t)per_thread)) return 1;
        if (*n_threads > 1) (*n_threads)--;
        else if (*chunk > floor) *chunk = *chunk / 2 < floor ? floor : *chunk / 2;
        else return 0;
    }
}

/* Charges the run's staging (n_threads × per × chunk) to the account before
 * any of it is made; a refusal is the load's oom, naming the staging. */
static lrun_status charge_staging(lrun_host_account *a, int n_threads, int per, size_t chunk, size_t *charged)
{
    *charged = 0;
    if (!a || per <= 0) return LRUN_OK;
    char c[32], what[160];
    snprintf(what, sizeof what, "model load staging: %d thread%s x %d chunk%s of %s", n_threads,
             n_threads == 1 ? "" : "s", per, per == 1 ? "" : "s", lrun_format_bytes(chunk, c, sizeof c));
    const size_t bytes = (size_t)n_threads * (size_t)per * chunk;
    const lrun_status st = lrun_host_account_charge(a, LRUN_HOST_CATEGORY_SLOTS, bytes, what);
    if (st != LRUN_OK) return lrun_oom_phase(lrun_fail_context(st, "loading"), "loading");
    *charged = bytes;
    return LRUN_OK;
}

// ---------------------------------------------------------------- running

/* Starts the readers, waits for them, and takes the first failure. */
static lrun_status run_readers(loader *l, int n_threads)
{
    reader *rd = calloc((size_t)n_threads, sizeof *rd);
    pthread_t *th = calloc((size_t)n_threads, sizeof *th);
    if (!rd || !th) {
        free(rd);
        free(th);
        return lrun_fail_oom((size_t)n_threads * sizeof *rd, 0, "loader: %d reader records", n_threads);
    }
    int started = 0;
    for (int i = 0; i < n_threads; i++) {
        rd[i].l = l;
        if (i > 0 && pthread_create(&th[i], NULL, reader_main, &rd[i]) != 0) break;
        started = i + 1;
    }
    reader_main(&rd[0]); /* the calling thread reads too */
    for (int i = 1; i < started; i++) pthread_join(th[i], NULL);
    free(rd);
    free(th);
    if (l->status != LRUN_OK) return lrun_fail(l->status, "%s", l->message);
    return LRUN_OK;
}

lrun_status lrun_loader_read(const char *const *paths, int n_files, const lrun_load_range *ranges, int64_t n,
                             const lrun_loader_opts *opts, lrun_loader_stats *stats)
{
    static const lrun_loader_opts defaults = {0};
    const lrun_loader_opts *o = opts ? opts : &defaults;
    if (stats) memset(stats, 0, sizeof *stats);
    if (n < 0 || n_files < 0 || (n > 0 && (!ranges || !paths)))
        return lrun_fail(LRUN_E_ARG, "loader: %lld ranges over %d files", (long long)n, n_files);
    if (n == 0) return LRUN_OK;
    const double t0 = lrun_now_seconds();
    const double cached = lrun_page_cache_fraction(paths, n_files, ranges, n);
    const int warm = cached >= LRUN_LOADER_WARM_SHARE;
    size_t chunk = o->chunk_bytes ? o->chunk_bytes : default_chunk(warm);
    int n_threads = o->n_threads > 0 ? o->n_threads : default_threads(warm);
    if (n_threads > LRUN_LOADER_THREADS_MAX) n_threads = LRUN_LOADER_THREADS_MAX;
    /* the staging fits what the budget has left (or is the smallest, whose charge fails below) */
    const int per = o->account ? chunks_per_thread(ranges, n) : 0;
    const int asked_threads = n_threads;
    const size_t asked_chunk = chunk;
    (void)lrun_loader_fit_staging(lrun_host_account_room(o->account), per,
                                  o->chunk_min ? o->chunk_min : LRUN_LOADER_CHUNK_MIN, &n_threads, &chunk);
    const int shrunk = n_threads < asked_threads || chunk < asked_chunk;
    piece *pieces = NULL;
    int64_t n_pieces = 0;
    size_t total = 0, charged = 0;
    lrun_status st = make_pieces(ranges, n, n_files, o, chunk, &pieces, &n_pieces, &total);
    int *fds = st == LRUN_OK ? malloc((size_t)(n_files ? n_files : 1) * sizeof *fds) : NULL;
    if (st == LRUN_OK && !fds) st = lrun_fail_oom((size_t)n_files * sizeof *fds, 0, "loader: %d files", n_files);
    if (st == LRUN_OK) st = open_files(paths, n_files, fds);
    if (n_threads > n_pieces) n_threads = (int)(n_pieces > 0 ? n_pieces : 1);
    if (st == LRUN_OK) st = charge_staging(o->account, n_threads, per, chunk, &charged);
    loader l = {.ranges = ranges, .paths = paths, .fds = fds, .pieces = pieces, .n_pieces = n_pieces, .opts = o,
                .chunk = chunk, .page = sysconf(_SC_PAGESIZE), .status = LRUN_OK};
    if (l.page <= 0) l.page = 4096;
    if (st == LRUN_OK) {
        pthread_mutex_init(&l.lock, NULL);
        st = run_readers(&l, n_threads);
        pthread_mutex_destroy(&l.lock);
    }
    lrun_host_account_credit(o->account, LRUN_HOST_CATEGORY_SLOTS, charged); /* every reader freed its staging */
    for (int i = 0; fds && i < n_files; i++)
        if (fds[i] >= 0) close(fds[i]);
    free(fds);
    free(pieces);
    if (stats && st == LRUN_OK)
        *stats = (lrun_loader_stats){total, n_threads, chunk, l.staging_peak, lrun_now_seconds() - t0, l.scratch_peak,
                                     charged, shrunk, cached, warm};
    return st;
}
