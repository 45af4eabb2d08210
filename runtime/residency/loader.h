/* loader.h — reading byte ranges of model files into host or device memory,
 * fast and without keeping the file's pages.
 *
 * What a model load does once per weight: bytes at (file, offset, length)
 * go to a destination that is host memory (a host or pinned tier, or the
 * cpu device) or device memory (cuda). The naive way — touch the mmap'd
 * file, then copy each tensor from the mapping — reads the disk on one
 * thread through page faults, copies to the GPU from pageable memory, and
 * leaves every page of the file mapped in the process (RSS = the model).
 *
 * The loader instead:
 *   - splits the ranges into pieces of at most chunk_bytes and hands them to
 *     n_threads reader threads in order (a shard is read front to back, each
 *     thread one piece at a time, so the disk sees several large requests);
 *   - host destinations: pread straight into dst (no staging, no copy);
 *   - device destinations: each thread preads into one of its two pinned
 *     chunks and queues the copy on its own stream (memcpy_async), so the
 *     next read overlaps the copy of the last one (double buffering; an
 *     event per chunk says when its copy is done and it may be read into
 *     again); pinned memory held: n_threads × 2 × chunk_bytes;
 *   - widened ranges (FP8 weights to bf16): a piece's file bytes go to a
 *     per-thread scratch chunk and are widened from there into the host
 *     destination or into the pinned chunk, piece by piece;
 *   - the staging (pinned chunks, widening scratch) is charged to the
 *     model's host account (opts->account, category slots) for the whole
 *     run, and sized from what the host budget has left: fewer threads
 *     first, then halved chunks, down to one thread's chunks of
 *     LRUN_LOADER_CHUNK_MIN (or the chunk asked, when smaller); when even
 *     that does not fit, the load is LRUN_E_OOM naming the staging;
 *   - drop_cache: once a piece is read, POSIX_FADV_DONTNEED on the whole
 *     pages inside it, so the page cache does not keep what was uploaded;
 *     it never maps the file, so no file page counts in the process's RSS.
 *
 * Nothing here knows models or tensors (model/model_upload.c maps tensors
 * to ranges): any reader of file bytes — the disk tier, a packed file —
 * can use it. */
#ifndef LRUN_LOADER_H
#define LRUN_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "core/host_account.h"
#include "lrun.h"

/* The defaults, from tests/bench/hf_load_bench.py on the H200 machine
 * (docs/benchmarks.md): 4 threads of 64 MiB pieces read a cold 13.2 GB
 * directory at 81% of the disk's sequential rate (16 MiB: 72%); from the
 * page cache (warm) 8 threads of 16 MiB loaded it in 1.31 s, 4 of 64 MiB in
 * 1.76 s; on the H100 machine (session 16) 8 of 4 MiB in 0.91 s, of 8 MiB
 * 0.94 s, of 16 MiB 1.23 s (smaller pieces: less pinned staging to
 * allocate, 32 MiB instead of 128, and more reads in flight). A load whose
 * bytes are at least LRUN_LOADER_WARM_SHARE in the page cache
 * (page_cache.h) takes the warm pair. */
#define LRUN_LOADER_CHUNK_DEFAULT ((size_t)64 << 20) /* bytes: one read, one pinned staging chunk */
#define LRUN_LOADER_THREADS_DEFAULT 4                /* reader threads (the core count when lower) */
#define LRUN_LOADER_WARM_CHUNK ((size_t)4 << 20)     /* bytes, from the page cache */
#define LRUN_LOADER_WARM_THREADS 8                   /* from the page cache (the core count when lower) */
#define LRUN_LOADER_WARM_SHARE 0.9
#define LRUN_LOADER_THREADS_MAX 64
#define LRUN_LOADER_CHUNK_MIN ((size_t)1 << 20)   /* bytes: the smallest chunk a tight host budget shrinks to */
#define LRUN_LOADER_WIDEN_MAX 8                      /* largest dst bytes per file byte of a widening */

/* Widens n file bytes, those at byte at of their range, into n × widen_ratio
 * bytes at dst (e.g. F8_E4M3 times its scales into bf16). Called once per
 * piece, from reader threads at once, so it must only read ctx; a piece may
 * start anywhere in the range (it indexes by at, never by piece). */
typedef void (*lrun_load_widen_fn)(const void *ctx, uint64_t at, const void *src, size_t n, void *dst);

typedef struct lrun_load_range {
    int file;          /* index into the paths given to lrun_loader_read */
    uint64_t offset;   /* bytes from the file's start */
    size_t bytes;
    void *dst;         /* bytes destination: host memory, or device memory when on_device */
    int on_device;     /* 1: dst is memory of opts->device the host cannot address (cuda) */
    /* NULL: dst receives the file's bytes as they are. Else the bytes are
     * widened as they stream, piece by piece: bytes counts the file's bytes,
     * dst receives bytes × widen_ratio, and no whole-range host copy is made
     * (host dst: read into a per-thread scratch chunk, widened into dst;
     * device dst: widened into the pinned chunk that is then copied). */
    lrun_load_widen_fn widen;
    const void *widen_ctx;
    int widen_ratio;   /* dst bytes per file byte when widen is set: 1 to LRUN_LOADER_WIDEN_MAX */
} lrun_load_range;

/* Called after each piece, from a reader thread, under the loader's lock:
 * done = bytes read so far (all ranges), file = the file of this piece. */
typedef void (*lrun_loader_progress_fn)(void *ctx, size_t done, int file);

typedef struct lrun_loader_opts {
    lrun_device *device;       /* for on_device ranges; NULL when there are none */
    int n_threads;             /* reader threads; 0: LRUN_LOAD_THREADS from the environment, else
                                * min(cores, LRUN_LOADER_THREADS_DEFAULT), or LRUN_LOADER_WARM_THREADS
                                * when the ranges are in the page cache */
    size_t chunk_bytes;        /* bytes per piece and per staging chunk; 0: LRUN_LOAD_CHUNK_MB from
                                * the environment, else LRUN_LOADER_CHUNK_DEFAULT, or
                                * LRUN_LOADER_WARM_CHUNK when the ranges are in the page cache */
    int drop_cache;            /* 1: drop the page cache of each piece once it is read */
    lrun_host_account *account; /* the model's: charged for the staging, which fits what its budget
                                 * has left; NULL: nothing charged, the staging as asked */
    size_t chunk_min;          /* bytes: the smallest chunk a budget shrinks to; 0: LRUN_LOADER_CHUNK_MIN */
    lrun_loader_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} lrun_loader_opts;

/* What a run did, for benchmarks and tests. */
typedef struct lrun_loader_stats {
    uint64_t bytes;            /* bytes read */
    int n_threads;             /* reader threads that ran */
    size_t chunk_bytes;        /* piece size used */
    size_t staging_bytes;      /* pinned staging held at the peak (0 without device ranges):
                                * 2 × chunk_bytes per thread that read a device range */
    double seconds;            /* wall time of the run */
    size_t scratch_bytes;      /* plain host scratch held at the peak for widened ranges' file
                                * bytes: chunk_bytes per thread that read one (0 without) */
    size_t charged_bytes;      /* staging and scratch charged to opts->account for the run:
                                * n_threads × chunks per thread × chunk_bytes (0 without an account) */
    int shrunk;                /* 1: the host budget's room made threads or chunks smaller than asked */
    double cached;             /* share of the bytes in the page cache when the run began (-1: unknown) */
    int warm;                  /* 1: cached ≥ LRUN_LOADER_WARM_SHARE, so the defaults were the warm pair
                                * (threads and chunk not given by opts or the environment) */
} lrun_loader_stats;

/* The staging of n_threads readers that hold per_thread chunks each, shrunk
 * until n_threads × per_thread × chunk ≤ room: threads first (down to 1),
 * then chunk halved (down to chunk_min, or the chunk given when smaller).
 * Returns 1 when it fits (n_threads and chunk set), 0 when even one thread
 * of the smallest chunks does not (they are left at 1 and that chunk). */
int lrun_loader_fit_staging(size_t room, int per_thread, size_t chunk_min, int *n_threads, size_t *chunk);

/* Reads every range into its destination; returns when all bytes are in
 * place (device copies included). With opts->account the staging is charged
 * before the readers start and given back when they are done; a budget too
 * small for the smallest staging is LRUN_E_OOM (phase "loading") naming it. Ranges of one file given in file order
 * read fastest. A file shorter than a range is LRUN_E_IO naming the file,
 * the offset and the bytes that were there. On failure destinations hold
 * unspecified bytes. stats may be NULL. */
lrun_status lrun_loader_read(const char *const *paths, int n_files, const lrun_load_range *ranges, int64_t n,
                             const lrun_loader_opts *opts, lrun_loader_stats *stats);

#endif
