/* disk_reader.c — direct-I/O reads of disk-tier weights (disk_reader.h).
 *
 * One read is cut into pieces of LRUN_DISK_REQUEST bytes; the caller and
 * the pool's threads take pieces in turn (a counter under the mutex), so
 * n_threads preads are in flight. The pool sleeps between reads. */
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

/* The read in progress: pieces of [off, off+span) into dst. */
struct job {
    int fd;
    uint64_t off;      /* aligned file offset of dst[0] */
    char *dst;
    size_t span;       /* bytes to read (aligned) */
    size_t need;       /* bytes that must arrive (lead + len): past them EOF is fine */
    size_t piece;      /* bytes per pread (the reader's request size) */
    size_t n_pieces, next, done;
    int err;           /* first errno, 0: none */
    size_t short_at;   /* first byte that did not arrive, SIZE_MAX: none */
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
    uint64_t generation;         /* bumped per read: workers join it */
    int stop;
    lrun_disk_stats stats;
};

// ---------------------------------------------------------------- pieces

/* Reads piece i of the job (no lock held); returns errno or 0 and the bytes
 * that arrived. Stops early at EOF (a short read). */
static int read_piece(const struct job *j, size_t i, size_t *got)
{
    const size_t a = i * j->piece, b = a + j->piece < j->span ? a + j->piece : j->span;
    size_t at = a;
    while (at < b) {
        const ssize_t n = pread(j->fd, j->dst + at, b - at, (off_t)(j->off + at));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            *got = at - a;
            return errno;
        }
        if (n == 0) break; /* EOF */
        at += (size_t)n;
    }
    *got = at - a;
    return 0;
}

/* Takes and reads pieces until none is left; called with mu held, returns with it held. */
static void serve(lrun_disk_reader *r)
{
    struct job *j = &r->job;
    while (j->next < j->n_pieces) {
        const size_t i = j->next++;
        pthread_mutex_unlock(&r->mu);
        size_t got;
        const int err = read_piece(j, i, &got);
        pthread_mutex_lock(&r->mu);
        const size_t start = i * j->piece, want_end = start + j->piece;
        const size_t need_end = want_end < j->need ? want_end : j->need;
        if (err && !j->err) j->err = err;
        if (!err && start + got < need_end && start + got < j->short_at) j->short_at = start + got;
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

/* Runs one job over the pool; returns its errno (0) with short_at set. */
static int run_job(lrun_disk_reader *r, int fd, uint64_t off, char *dst, size_t span, size_t need, size_t *short_at)
{
    pthread_mutex_lock(&r->mu);
    r->job = (struct job){.fd = fd, .off = off, .dst = dst, .span = span, .need = need, .piece = r->request,
                          .n_pieces = (span + r->request - 1) / r->request, .short_at = SIZE_MAX};
    r->generation++;
    if (r->job.n_pieces > 1) pthread_cond_broadcast(&r->work);
    serve(r);
    while (r->job.done < r->job.n_pieces) pthread_cond_wait(&r->finished, &r->mu);
    const int err = r->job.err;
    *short_at = r->job.short_at;
    pthread_mutex_unlock(&r->mu);
    return err;
}

lrun_status lrun_disk_reader_read(lrun_disk_reader *r, int id, size_t at, size_t len, void *dst, size_t *lead)
{
    const struct disk_tensor *d = &r->tensors[id];
    struct disk_file *f = &r->files[d->file];
    const uint64_t first = d->offset + at, aligned = first / LRUN_DISK_ALIGN * LRUN_DISK_ALIGN;
    *lead = (size_t)(first - aligned);
    const size_t need = *lead + len, span = (need + LRUN_DISK_ALIGN - 1) / LRUN_DISK_ALIGN * LRUN_DISK_ALIGN;
    const double t0 = lrun_now_seconds();
    size_t short_at;
    int err = run_job(r, f->fd, aligned, dst, span, need, &short_at);
    if (err == EINVAL && f->direct) { /* open took O_DIRECT, read refused it: buffered from now on */
        warn_buffered(f->path, err);
        const int fd = open(f->path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            close(f->fd);
            f->fd = fd;
            f->direct = 0;
            err = run_job(r, f->fd, aligned, dst, span, need, &short_at);
        }
    }
    if (!f->direct) (void)posix_fadvise(f->fd, (off_t)aligned, (off_t)span, POSIX_FADV_DONTNEED);
    pthread_mutex_lock(&r->mu); /* the stats are read from compute's thread */
    r->stats.read_seconds += lrun_now_seconds() - t0;
    if (!f->direct) r->stats.direct = 0;
    if (!err && short_at == SIZE_MAX) r->stats.bytes_read += span;
    pthread_mutex_unlock(&r->mu);
    if (err)
        return lrun_fail(LRUN_E_IO, "disk tier: reading tensor %s from %s at file offset %llu (%zu bytes): %s",
                         d->name, f->path, (unsigned long long)first, len, strerror(err));
    if (short_at != SIZE_MAX)
        return lrun_fail(LRUN_E_IO, "disk tier: short read of tensor %s from %s at file offset %llu: the file ends "
                         "there (%zu of %zu bytes read); it was truncated or replaced while in use", d->name,
                         f->path, (unsigned long long)(aligned + short_at), short_at > *lead ? short_at - *lead : 0,
                         len);
    return LRUN_OK;
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
