/* disk_reader.c — direct-I/O reads of disk-tier weights (disk_reader.h).
 *
 * A read (or a batch of them) is cut into pieces of LRUN_DISK_REQUEST bytes;
 * the caller and the pool's threads take pieces in turn (a counter under the
 * mutex), so n_threads preads are in flight. The pool sleeps between reads. */
#include "residency/disk_reader.h"
#include "core/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/filemap.h"
#include "core/tensor.h"

#define MAX_FILES 256  /* shards of one model */
#define MAX_TENSORS_GROW 64

struct disk_file {
    char path[512];
    int fd;
    int direct;        /* 1: opened with O_DIRECT */
    uintptr_t map_lo, map_hi; /* the mapping it was found behind */
    uint64_t map_off;  /* file offset of map_lo */
};

struct disk_tensor {
    int file;          /* index into files */
    uint64_t offset;   /* file offset of the tensor's first byte */
    size_t nbytes;
    char name[64];
};

/* One pread's worth of a batch: bytes [off, off+len) of fd into dst. Past
 * need bytes an EOF is fine (the aligned span's tail beyond the file's end). */
struct piece {
    int fd;
    int range;    /* its range in the batch */
    uint64_t off; /* aligned file offset of dst[0] */
    char *dst;
    size_t len, need;
};

/* The batch in progress. */
struct job {
    const struct piece *pieces;
    size_t n_pieces, next, done;
    int err;           /* first errno, 0: none */
    int err_range;     /* its range */
    int short_range;   /* a range whose piece ended early (EOF), -1: none */
    uint64_t short_at; /* the file offset where that piece ended */
};

struct lrun_disk_reader {
    struct disk_file files[MAX_FILES];
    int n_files;
    struct disk_tensor *tensors; /* (n_tensors) located so far */
    int n_tensors, cap_tensors;
    int n_threads;               /* reads in flight, the caller included */
    size_t request;              /* bytes per pread: LRUN_DISK_REQUEST or $LRUN_DISK_REQUEST */
    pthread_t *threads;          /* (n_threads - 1) */
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t work, finished;
    struct job job;
    struct piece *pieces; /* (cap_pieces) the batch's, grown as needed, never shrunk */
    size_t cap_pieces;
    uint64_t generation;         /* bumped per read: workers join it */
    int stop;
    lrun_disk_stats stats;
};

// ---------------------------------------------------------------- pieces

/* Reads a piece (no lock held); returns errno or 0 and the bytes that
 * arrived. Stops early at EOF (a short read). */
static int read_piece(const struct piece *p, size_t *got)
{
    size_t at = 0;
    while (at < p->len) {
        const ssize_t n = pread(p->fd, p->dst + at, p->len - at, (off_t)(p->off + at));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            *got = at;
            return errno;
        }
        if (n == 0) break; /* EOF */
        at += (size_t)n;
    }
    *got = at;
    return 0;
}

/* Takes and reads pieces until none is left; called with mu held, returns with it held. */
static void serve(lrun_disk_reader *r)
{
    struct job *j = &r->job;
    while (j->next < j->n_pieces) {
        const struct piece *p = &j->pieces[j->next++];
        pthread_mutex_unlock(&r->mu);
        size_t got;
        const int err = read_piece(p, &got);
        pthread_mutex_lock(&r->mu);
        if (err && !j->err) {
            j->err = err;
            j->err_range = p->range;
        }
        if (!err && got < p->need && (j->short_range < 0 || p->range < j->short_range)) {
            j->short_range = p->range;
            j->short_at = p->off + got;
        }
        if (++j->done == j->n_pieces) pthread_cond_signal(&r->finished);
    }
}

static void *worker(void *arg)
{
    lrun_disk_reader *r = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->stop && (r->generation == seen || r->job.next >= r->job.n_pieces)) {
            seen = r->generation;
            pthread_cond_wait(&r->work, &r->mu);
        }
        if (r->stop) break;
        seen = r->generation;
        serve(r);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

// ---------------------------------------------------------------- init, free

static int threads_wanted(int n_threads)
{
    if (n_threads > 0) return n_threads > 64 ? 64 : n_threads;
    const char *e = getenv("LRUN_DISK_THREADS");
    const int n = e ? atoi(e) : 0;
    return n > 0 && n <= 64 ? n : LRUN_DISK_THREADS_DEFAULT;
}

lrun_status lrun_disk_reader_init(lrun_disk_reader **out, int n_threads)
{
    *out = NULL;
    lrun_disk_reader *r = calloc(1, sizeof *r);
    if (!r) return lrun_fail_oom(sizeof *r, 0, "disk tier: reader record");
    r->n_threads = threads_wanted(n_threads);
    /* $LRUN_DISK_REQUEST (whole blocks) tunes the request size: benches and tests */
    const char *req = getenv("LRUN_DISK_REQUEST");
    const long long rq = req ? atoll(req) : 0;
    r->request = rq > 0 && rq % (long long)LRUN_DISK_ALIGN == 0 ? (size_t)rq : LRUN_DISK_REQUEST;
    r->stats.queue_depth = r->n_threads;
    r->stats.direct = 1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->work, NULL);
    pthread_cond_init(&r->finished, NULL);
    r->threads = calloc((size_t)r->n_threads, sizeof *r->threads);
    if (!r->threads) {
        lrun_disk_reader_free(r);
        return lrun_fail_oom(0, 0, "disk tier: reader threads");
    }
    /* a thread that cannot start only lowers the queue depth */
    for (int i = 0; i < r->n_threads - 1; i++)
        if (pthread_create(&r->threads[r->n_started], NULL, worker, r) == 0) r->n_started++;
    r->stats.queue_depth = r->n_started + 1;
    *out = r;
    return LRUN_OK;
}

void lrun_disk_reader_free(lrun_disk_reader *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->work);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->n_started; i++) pthread_join(r->threads[i], NULL);
    for (int i = 0; i < r->n_files; i++)
        if (r->files[i].fd >= 0) close(r->files[i].fd);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->work);
    pthread_cond_destroy(&r->finished);
    free(r->threads);
    free(r->pieces);
    free(r->tensors);
    free(r);
}

// ---------------------------------------------------------------- locating

/* The file mapping that holds address p (core/filemap.h), into f. */
static int find_mapping(uintptr_t p, struct disk_file *f)
{
    lrun_filemap m;
    if (!lrun_filemap_find((const void *)p, &m)) return 0;
    snprintf(f->path, sizeof f->path, "%s", m.path);
    f->map_lo = m.lo;
    f->map_hi = m.hi;
    f->map_off = m.offset;
    return 1;
}

static void warn_buffered(const char *path, int err)
{
    fprintf(stderr, "lrun: warning: disk tier: %s: O_DIRECT refused (%s); reading it buffered, each range "
            "dropped from the page cache after its read\n", path, strerror(err));
}

/* Opens f->path for reading, O_DIRECT when the filesystem allows it. */
static lrun_status open_file(struct disk_file *f, const char *tensor)
{
    f->direct = 1;
    f->fd = open(f->path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (f->fd < 0 && errno == EINVAL) {
        warn_buffered(f->path, errno);
        f->direct = 0;
        f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
    }
    if (f->fd < 0)
        return lrun_fail(LRUN_E_IO, "disk tier: opening %s for tensor %s: %s", f->path, tensor, strerror(errno));
    return LRUN_OK;
}

static lrun_status add_file(lrun_disk_reader *r, uintptr_t p, const char *tensor, int *index)
{
    for (int i = 0; i < r->n_files; i++)
        if (p >= r->files[i].map_lo && p < r->files[i].map_hi) {
            *index = i;
            return LRUN_OK;
        }
    if (r->n_files == MAX_FILES)
        return lrun_fail(LRUN_E_UNSUPPORTED, "disk tier: tensor %s: more than %d model files", tensor, MAX_FILES);
    struct disk_file *f = &r->files[r->n_files];
    if (!find_mapping(p, f))
        return lrun_fail(LRUN_E_UNSUPPORTED, "disk tier: tensor %s is not in a mapped file (the loader decoded or "
                         "converted it into memory): place it in host or pinned instead", tensor);
    if (strncmp(f->path, "/memfd:", 7) == 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "disk tier: tensor %s lives in memory the loader made (%s: a packed "
                         "file decoded at load), not in a file on disk: place it in host or pinned instead", tensor,
                         f->path);
    char *deleted = strstr(f->path, " (deleted)");
    if (deleted) {
        *deleted = '\0';
        return lrun_fail(LRUN_E_IO, "disk tier: tensor %s: its file %s was removed after the model was loaded",
                         tensor, f->path);
    }
    const lrun_status st = open_file(f, tensor);
    if (st != LRUN_OK) return st;
    pthread_mutex_lock(&r->mu);
    if (!f->direct) r->stats.direct = 0;
    pthread_mutex_unlock(&r->mu);
    *index = r->n_files++;
    return LRUN_OK;
}

lrun_status lrun_disk_reader_add(lrun_disk_reader *r, const struct lrun_tensor *t, int *id, size_t *lead)
{
    const uintptr_t p = (uintptr_t)t->file_data;
    if (!p) return lrun_fail(LRUN_E_ARG, "disk tier: tensor %s did not come from a model file", t->name);
    int fi = -1;
    lrun_status st = add_file(r, p, t->name, &fi);
    if (st != LRUN_OK) return st;
    /* the file's form: a packed file holds the packed bytes (docs/packed.md) */
    const size_t bytes = t->file_packed ? t->pk.total : t->nbytes;
    if (p + bytes > r->files[fi].map_hi)
        return lrun_fail(LRUN_E_UNSUPPORTED, "disk tier: tensor %s runs past the end of its mapping of %s", t->name,
                         r->files[fi].path);
    if (r->n_tensors == r->cap_tensors) {
        const int cap = r->cap_tensors + MAX_TENSORS_GROW;
        struct disk_tensor *grown = realloc(r->tensors, (size_t)cap * sizeof *grown);
        if (!grown) return lrun_fail_oom((size_t)cap * sizeof *grown, 0, "disk tier: tensor records");
        r->tensors = grown;
        r->cap_tensors = cap;
    }
    struct disk_tensor *d = &r->tensors[r->n_tensors];
    d->file = fi;
    d->offset = r->files[fi].map_off + (uint64_t)(p - r->files[fi].map_lo);
    d->nbytes = bytes;
    snprintf(d->name, sizeof d->name, "%s", t->name);
    *id = r->n_tensors++;
    *lead = (size_t)(d->offset % LRUN_DISK_ALIGN);
    return LRUN_OK;
}

// ---------------------------------------------------------------- reading

/* Runs the n pieces over the pool; returns with r->job holding the outcome. */
static void run_job(lrun_disk_reader *r, size_t n)
{
    pthread_mutex_lock(&r->mu);
    r->job = (struct job){.pieces = r->pieces, .n_pieces = n, .err_range = -1, .short_range = -1};
    r->generation++;
    if (n > 1) pthread_cond_broadcast(&r->work);
    serve(r);
    while (r->job.done < r->job.n_pieces) pthread_cond_wait(&r->finished, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

/* Range g's aligned span: its first aligned file offset, and the bytes from there that must arrive. */
static uint64_t range_span(const lrun_disk_reader *r, const lrun_disk_range *g, size_t *lead, size_t *need,
                           size_t *span)
{
    const uint64_t first = r->tensors[g->id].offset + g->at, aligned = first / LRUN_DISK_ALIGN * LRUN_DISK_ALIGN;
    *lead = (size_t)(first - aligned);
    *need = *lead + g->len;
    *span = (*need + LRUN_DISK_ALIGN - 1) / LRUN_DISK_ALIGN * LRUN_DISK_ALIGN;
    return aligned;
}

/* Cuts the ranges into the reader's pieces (r->pieces); returns how many, or 0 when the list cannot grow. */
static size_t cut_pieces(lrun_disk_reader *r, lrun_disk_range *g, int n)
{
    size_t count = 0;
    for (int i = 0; i < n; i++) {
        size_t lead, need, span;
        (void)range_span(r, &g[i], &lead, &need, &span);
        count += (span + r->request - 1) / r->request;
    }
    if (count > r->cap_pieces) {
        struct piece *grown = realloc(r->pieces, count * sizeof *grown);
        if (!grown) return 0;
        r->pieces = grown;
        r->cap_pieces = count;
    }
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        size_t need, span;
        const uint64_t aligned = range_span(r, &g[i], &g[i].lead, &need, &span);
        const int fd = r->files[r->tensors[g[i].id].file].fd;
        for (size_t a = 0; a < span; a += r->request, k++) {
            const size_t len = span - a < r->request ? span - a : r->request;
            r->pieces[k] = (struct piece){.fd = fd,
                                          .range = i,
                                          .off = aligned + a,
                                          .dst = (char *)g[i].dst + a,
                                          .len = len,
                                          .need = need > a ? (need - a < len ? need - a : len) : 0};
        }
    }
    return count;
}

/* O_DIRECT taken at open but refused by a read: file f reads buffered from now on. */
static int fall_back_buffered(lrun_disk_reader *r, struct disk_file *f)
{
    warn_buffered(f->path, EINVAL);
    const int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    close(f->fd);
    f->fd = fd;
    f->direct = 0;
    pthread_mutex_lock(&r->mu);
    r->stats.direct = 0;
    pthread_mutex_unlock(&r->mu);
    return 1;
}

lrun_status lrun_disk_reader_read_many(lrun_disk_reader *r, lrun_disk_range *g, int n)
{
    if (n <= 0) return LRUN_OK;
    const double t0 = lrun_now_seconds();
    size_t n_pieces = cut_pieces(r, g, n);
    if (!n_pieces) return lrun_fail_oom(0, 0, "disk tier: the pieces of %d reads", n);
    run_job(r, n_pieces);
    if (r->job.err == EINVAL && r->files[r->tensors[g[r->job.err_range].id].file].direct &&
        fall_back_buffered(r, &r->files[r->tensors[g[r->job.err_range].id].file])) {
        n_pieces = cut_pieces(r, g, n); /* the same count: only the file's descriptor changed */
        run_job(r, n_pieces);
    }
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) {
        size_t lead, need, span;
        const uint64_t aligned = range_span(r, &g[i], &lead, &need, &span);
        const struct disk_file *f = &r->files[r->tensors[g[i].id].file];
        if (!f->direct) (void)posix_fadvise(f->fd, (off_t)aligned, (off_t)span, POSIX_FADV_DONTNEED);
        bytes += span;
    }
    const struct job j = r->job;
    pthread_mutex_lock(&r->mu); /* the stats are read from compute's thread */
    r->stats.read_seconds += lrun_now_seconds() - t0;
    if (!j.err && j.short_range < 0) r->stats.bytes_read += bytes;
    pthread_mutex_unlock(&r->mu);
    if (j.err) {
        const lrun_disk_range *e = &g[j.err_range];
        const struct disk_tensor *d = &r->tensors[e->id];
        return lrun_fail(LRUN_E_IO, "disk tier: reading tensor %s from %s at file offset %llu (%zu bytes): %s",
                         d->name, r->files[d->file].path, (unsigned long long)(d->offset + e->at), e->len,
                         strerror(j.err));
    }
    if (j.short_range >= 0) {
        const lrun_disk_range *e = &g[j.short_range];
        const struct disk_tensor *d = &r->tensors[e->id];
        const uint64_t first = d->offset + e->at, got = j.short_at > first ? j.short_at - first : 0;
        return lrun_fail(LRUN_E_IO,
                         "disk tier: short read of tensor %s from %s at file offset %llu: the file ends "
                         "there (%llu of %zu bytes read); it was truncated or replaced while in use",
                         d->name, r->files[d->file].path, (unsigned long long)j.short_at, (unsigned long long)got,
                         e->len);
    }
    return LRUN_OK;
}

lrun_status lrun_disk_reader_read(lrun_disk_reader *r, int id, size_t at, size_t len, void *dst, size_t *lead)
{
    lrun_disk_range g = {.id = id, .at = at, .len = len, .dst = dst};
    const lrun_status st = lrun_disk_reader_read_many(r, &g, 1);
    *lead = g.lead;
    return st;
}

void lrun_disk_reader_stats(lrun_disk_reader *r, lrun_disk_stats *out)
{
    if (!r) {
        memset(out, 0, sizeof *out);
        return;
    }
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}

void lrun_disk_reader_reset_stats(lrun_disk_reader *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stats.bytes_read = 0;
    r->stats.read_seconds = 0;
    pthread_mutex_unlock(&r->mu);
}
