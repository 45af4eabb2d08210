/* disk_reader.h — the disk tier's source: weights read from the model file
 * with direct I/O into staging memory, bypassing the page cache.
 *
 * A tensor in LRUN_TIER_DISK still has its bytes in the mapped model file
 * (data = file_data, for the readers that are not staged). The engines'
 * staging fills read them here instead of copying from the mapping:
 *
 *   where    the file and offset behind a mapped address, from the
 *            kernel's own record (/proc/self/maps): a GGUF file or a
 *            safetensors shard, whichever the loader mapped; memory that is
 *            not a file mapping (weights the loader decoded or widened) is
 *            refused by name;
 *   how      open(O_DIRECT) once per file, then aligned pread()s of
 *            LRUN_DISK_REQUEST bytes spread over a pool of threads (the
 *            caller is one of them), so n_threads requests are in flight;
 *            a filesystem that refuses O_DIRECT (tmpfs) gets buffered reads
 *            and one warning, and each buffered range is dropped from the
 *            page cache after it is read (posix_fadvise DONTNEED);
 *   aligned  O_DIRECT needs the file offset, length and buffer aligned to
 *            the device's block: a read of bytes [at, at+len) of a tensor
 *            reads the LRUN_DISK_ALIGN-aligned span that covers them into
 *            an aligned destination; the tensor's byte `at` lands `lead`
 *            bytes in (lrun_disk_reader_read). Slot layouts reserve
 *            lrun_disk_region(len) bytes for any lead;
 *   errors   a short read (the file was truncated while in use) is an
 *            LRUN_E_IO naming the file, the tensor and the file offset;
 *            never a SIGBUS, since nothing here touches the mapping.
 *
 * Why a pread pool and not io_uring: measured on the build machine and
 * documented in docs/residency.md ("The disk tier"); it needs no library. */
#ifndef LRUN_DISK_READER_H
#define LRUN_DISK_READER_H

#include <stddef.h>
#include <stdint.h>

#include "lrun.h"

#define LRUN_DISK_ALIGN ((size_t)4096)         /* O_DIRECT alignment of offsets, lengths and buffers */
#define LRUN_DISK_REQUEST ((size_t)4 << 20)    /* one pread: large enough for sequential throughput
                                                * ($LRUN_DISK_REQUEST overrides, whole blocks) */
#define LRUN_DISK_THREADS_DEFAULT 8            /* reads in flight (docs/residency.md: measured) */

struct lrun_tensor;
typedef struct lrun_disk_reader lrun_disk_reader;

/* Counters since init or the last reset. */
typedef struct lrun_disk_stats {
    uint64_t bytes_read;  /* bytes read, aligned spans included */
    double read_seconds;  /* wall time inside lrun_disk_reader_read */
    int queue_depth;      /* preads in flight at once: the pool's threads */
    int direct;           /* 1: every file open with O_DIRECT */
} lrun_disk_stats;

/* A reader for model's files with n_threads preads in flight (0: the
 * default, or $LRUN_DISK_THREADS). Files are opened when a tensor of them
 * is first located (lrun_disk_reader_add). */
lrun_status lrun_disk_reader_init(lrun_disk_reader **out, int n_threads);
void lrun_disk_reader_free(lrun_disk_reader *r);

/* Finds t's bytes in a file and opens the file (once): *id identifies the
 * tensor for reads, *lead = its file offset mod LRUN_DISK_ALIGN. LRUN_E_UNSUPPORTED
 * when t's bytes are not a file mapping, LRUN_E_IO when the file cannot be
 * opened (removed since it was mapped). */
lrun_status lrun_disk_reader_add(lrun_disk_reader *r, const struct lrun_tensor *t, int *id, size_t *lead);

/* Bytes to reserve in a slot for len bytes at any lead: the largest span. */
static inline size_t lrun_disk_region(size_t len)
{
    return (len + 2 * LRUN_DISK_ALIGN - 2) / LRUN_DISK_ALIGN * LRUN_DISK_ALIGN;
}

/* Reads bytes [at, at+len) of tensor id into dst (LRUN_DISK_ALIGN-aligned,
 * lrun_disk_region(len) bytes of room); the tensor's byte `at` is then at
 * dst + *lead. One read at a time per reader (its threads serve it). */
lrun_status lrun_disk_reader_read(lrun_disk_reader *r, int id, size_t at, size_t len, void *dst, size_t *lead);

/* One range of a batch: bytes [at, at+len) of tensor id into dst
 * (LRUN_DISK_ALIGN-aligned, lrun_disk_region(len) bytes of room); the read
 * sets lead, so that the tensor's byte `at` is at dst + lead. */
typedef struct lrun_disk_range {
    int id;
    size_t at, len;
    void *dst;
    size_t lead; /* out */
} lrun_disk_range;

/* Reads n ranges at once: their pieces share the pool, so small ranges
 * (one expert's slice of a stacked tensor, docs/moe.md "Experts from the
 * disk") keep n_threads preads in flight where one read at a time would
 * keep one. Errors as lrun_disk_reader_read, naming the first range that
 * failed. */
lrun_status lrun_disk_reader_read_many(lrun_disk_reader *r, lrun_disk_range *ranges, int n);

void lrun_disk_reader_stats(lrun_disk_reader *r, lrun_disk_stats *out);
void lrun_disk_reader_reset_stats(lrun_disk_reader *r);

#endif
