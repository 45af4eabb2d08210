/* measure_disk.c — the disk tier's read bandwidth, measured on the model's
 * own file: the planner (lua/lrun/residency.lua, lrun.predict, smart) weighs
 * disk-tier placements with it instead of an assumed figure. The reads are
 * the tier's own (residency/disk_reader.h: O_DIRECT, the same request size
 * and queue depth), over the file region of the model's weights in file
 * order, up to `bytes` of them, each at most one chunk, into an aligned
 * buffer; direct reads bypass the page cache, so a file read before (the
 * load) does not make the disk look faster. A filesystem that refuses
 * O_DIRECT gets buffered reads (the tier's own fallback), and the figure is
 * then what the tier would see too.
 *
 * Two passes over the same bytes, the second timed: decode re-reads the
 * tier's weights every token, and its steady state is a re-read. On the
 * build VM (a virtual disk backed by the host's page cache) one cold pass
 * measured 0.9-1.0 GB/s while decode read the disk tier at 1.6-3 GB/s
 * (issue #15); on a local NVMe both passes read the device alike. */
#include "lrun.h"

#include <stdlib.h>

#include "core/error.h"
#include "model/model.h"
#include "residency/disk_reader.h"

#define MEASURE_CHUNK ((size_t)32 << 20) /* one read: 8 requests over the pool, a CUDA staging chunk */

/* The bytes of t in its file (the packed ones of a packed file), 0 when t
 * is not a file mapping. */
static size_t file_bytes(const struct lrun_tensor *t)
{
    if (!t->file_data) return 0;
    return t->file_packed ? t->pk.total : t->nbytes;
}

/* Reads up to bytes of the model's weights, a chunk at a time, through r. */
static lrun_status read_weights(lrun_disk_reader *r, const lrun_model *model, size_t bytes, void *buf)
{
    size_t done = 0;
    for (int64_t i = 0; i < model->n_tensors && done < bytes; i++) {
        const struct lrun_tensor *t = &model->tensors[i];
        const size_t n = file_bytes(t);
        if (n < LRUN_DISK_ALIGN) continue; /* vectors: too small to say anything */
        int id;
        size_t lead;
        lrun_status st = lrun_disk_reader_add(r, t, &id, &lead);
        if (st != LRUN_OK) return st;
        for (size_t at = 0; at < n && done < bytes; at += MEASURE_CHUNK) {
            const size_t len = n - at < MEASURE_CHUNK ? n - at : MEASURE_CHUNK;
            st = lrun_disk_reader_read(r, id, at, len, buf, &lead);
            if (st != LRUN_OK) return st;
            done += len;
        }
    }
    return LRUN_OK;
}

lrun_status lrun_model_measure_disk_read(lrun_model *model, size_t bytes, double *bytes_per_s)
{
    if (!bytes_per_s) return lrun_fail(LRUN_E_ARG, "measuring disk reads: bytes_per_s is NULL");
    *bytes_per_s = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring disk reads: model is NULL");
    if (bytes < ((size_t)1 << 20) || bytes > ((size_t)1 << 34))
        return lrun_fail(LRUN_E_ARG, "measuring disk reads: %zu bytes is outside [1 MiB, 16 GiB]", bytes);
    void *buf = NULL;
    const size_t room = lrun_disk_region(MEASURE_CHUNK);
    if (posix_memalign(&buf, LRUN_DISK_ALIGN, room) != 0)
        return lrun_fail_oom(room, 0, "measuring disk reads: an aligned buffer");
    lrun_disk_reader *r = NULL;
    lrun_status st = lrun_disk_reader_init(&r, 0);
    if (st == LRUN_OK) st = read_weights(r, model, bytes, buf); /* the warm-up pass */
    lrun_disk_reader_free(r);
    r = NULL;
    if (st == LRUN_OK) st = lrun_disk_reader_init(&r, 0); /* a fresh reader: its stats are the timed pass's */
    if (st == LRUN_OK) st = read_weights(r, model, bytes, buf);
    if (st == LRUN_OK) {
        lrun_disk_stats s;
        lrun_disk_reader_stats(r, &s);
        if (s.bytes_read == 0 || s.read_seconds <= 0)
            st = lrun_fail(LRUN_E_UNSUPPORTED, "measuring disk reads: model %s has no weights in a file on disk "
                           "(every one was decoded or converted into memory at load)",
                           model->weights_path ? model->weights_path : "(no path)");
        else
            *bytes_per_s = (double)s.bytes_read / s.read_seconds;
    }
    lrun_disk_reader_free(r);
    free(buf);
    return st;
}
