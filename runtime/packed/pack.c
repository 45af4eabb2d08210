/* pack.c — writes packed model files (layout: packed_file.h): lrun_pack and
 * lrun_unpack.
 *
 * The input side is one function, source_from_gguf, that describes the
 * plain model as a GGUF head plus tensors (offset, bytes, dtype, data); an
 * HF directory is first written as a plain GGUF (pack_hf.c) into a
 * temporary file next to the output, removed when packing ends.
 * Each bf16/f16 tensor is PEX1, or with opts->codec PEX2 (bf16 only; f16
 * stays PEX1), or stored as it is where PEX2 would grow it.
 * Tensors are packed one after another, each with every thread of the pool
 * (the codec parallelises over blocks), and written as they are done; the
 * entries are written last, then the file is renamed into place, so a
 * failure leaves no file behind.
 */
#include "core/checked.h"
#include "core/error.h"
#include "core/mapguard.h"
#include "core/progress.h"
#include "core/threadpool.h"
#include "model/model.h"
#include "packed/codec.h"
#include "packed/packed_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// ---------------------------------------------------------------- the input side

lrun_status lrun_pack_hf_write_gguf(const char *dir, const char *gguf_path, int n_threads); /* pack_hf.c */

typedef struct pack_tensor {
    uint64_t offset;            /* bytes from the data start */
    uint64_t bytes;
    lrun_dtype dtype;
    const void *data;           /* (bytes) */
} pack_tensor;

typedef struct pack_source {
    lrun_gguf *gguf;            /* owns what the pointers below point into */
    const uint8_t *head;        /* (head_bytes) the GGUF up to its data */
    uint64_t head_bytes, data_bytes;
    int64_t n;
    pack_tensor *t;             /* (n) by increasing offset */
} pack_source;

static int by_offset(const void *a, const void *b)
{
    const pack_tensor *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static lrun_status source_from_gguf(pack_source *s, const char *path)
{
    lrun_status st = lrun_gguf_open(&s->gguf, path);
    if (st != LRUN_OK) return st;
    const lrun_gguf *g = s->gguf;
    s->n = lrun_gguf_tensor_count(g);
    s->head_bytes = lrun_gguf_data_offset(g);
    s->data_bytes = lrun_gguf_file_bytes(g) - s->head_bytes;
    s->t = calloc(s->n ? (size_t)s->n : 1, sizeof *s->t);
    if (!s->t) return lrun_fail_oom((size_t)s->n * sizeof *s->t, 0, "packing %s: tensor list", path);
    for (int64_t i = 0; i < s->n; i++)
        s->t[i] = (pack_tensor){lrun_gguf_tensor_offset(g, i), lrun_gguf_tensor_bytes(g, i), lrun_gguf_tensor_dtype(g, i),
                                lrun_gguf_tensor_data(g, i)};
    /* the head is the mapping's first bytes: any tensor's data minus its offset */
    s->head = s->n ? (const uint8_t *)s->t[0].data - s->t[0].offset - s->head_bytes : NULL;
    qsort(s->t, (size_t)s->n, sizeof *s->t, by_offset);
    if (s->n == 0) return lrun_fail(LRUN_E_ARG, "packing %s: the file has no tensors", path);
    uint64_t end = 0; /* the packed format bounds the GGUF padding (packed_file.h) */
    for (int64_t i = 0; i <= s->n; i++) {
        const uint64_t at = i < s->n ? s->t[i].offset : s->data_bytes;
        if (at < end || at - end >= LRUN_PACKED_MAX_GAP)
            return lrun_fail(LRUN_E_ARG, "packing %s: %s at data offset %llu (padding of 1 MiB or more, or overlapping tensors)",
                             path, i < s->n ? "a tensor" : "the end of the data", (unsigned long long)at);
        if (i < s->n) end = at + s->t[i].bytes;
    }
    return LRUN_OK;
}

static void source_free(pack_source *s)
{
    if (s->gguf) lrun_gguf_close(s->gguf);
    free(s->t);
}

// ---------------------------------------------------------------- the output side

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static lrun_status write_all(FILE *fp, const void *p, size_t n, const char *path)
{
    if (n && fwrite(p, 1, n, fp) != n) return lrun_fail(LRUN_E_IO, "writing %s: %s", path, strerror(errno));
    return LRUN_OK;
}

/* The codec of tensor t: PEX2 where asked for and it fits, PEX1 for the
 * other bf16/f16 tensors, stored as it is for the rest. */
static uint32_t codec_for(const pack_tensor *t, int codec)
{
    if (!lrun_packed_dtype_ok((int)t->dtype) || t->bytes < 2) return LRUN_PACKED_CODEC_RAW;
    if (codec == LRUN_PACK_CODEC_PEX2 && lrun_pex2_fits((int)t->dtype, t->bytes / 2)) return LRUN_PACKED_CODEC_PEX2;
    return LRUN_PACKED_CODEC_EXP;
}

/* Tensor t encoded into *buf (grown to the codec's bound); *got its size. */
static lrun_status encode_one(uint8_t **buf, size_t *cap, size_t *got, const pack_tensor *t, uint32_t codec,
                              lrun_threadpool *pool, const char *path)
{
    const uint64_t n = t->bytes / 2;
    const size_t need = codec == LRUN_PACKED_CODEC_PEX2 ? lrun_pex2_bound(n) : lrun_packed_bound((int)t->dtype, n);
    if (need > *cap) {
        free(*buf);
        *cap = need;
        if (!(*buf = malloc(*cap))) return lrun_fail_oom(*cap, 0, "packing %s: buffer", path);
    }
    if (codec == LRUN_PACKED_CODEC_PEX2) return lrun_pex2_encode(*buf, *cap, got, t->data, n, pool);
    return lrun_packed_encode(*buf, *cap, got, (int)t->dtype, t->data, n, pool);
}

/* Packs every tensor into fp at the packed section; fills entries and the
 * section size. A PEX2 tensor that would grow (random bit patterns: 1.6x)
 * is stored as it is: every reader takes a stored bf16 tensor. */
static lrun_status write_tensors(FILE *fp, const pack_source *s, lrun_packed_entry *e, uint64_t *packed_bytes,
                                 lrun_threadpool *pool, lrun_pack_stats *stats, int progress, int codec,
                                 const char *path)
{
    static const uint8_t zeros[LRUN_PACKED_ALIGN];
    size_t cap = 0;
    uint8_t *buf = NULL;
    uint64_t at = 0;
    lrun_status st = LRUN_OK;
    lrun_progress bar;
    lrun_progress_begin(&bar, progress, "packing", (size_t)s->data_bytes);
    for (int64_t i = 0; st == LRUN_OK && i < s->n; i++) {
        const pack_tensor *t = &s->t[i];
        const uint32_t c = codec_for(t, codec);
        e[i] = (lrun_packed_entry){t->offset, t->bytes, at, t->bytes, c, (uint32_t)t->dtype};
        const void *out = t->data;
        size_t got = 0;
        if (c != LRUN_PACKED_CODEC_RAW) st = encode_one(&buf, &cap, &got, t, c, pool, path);
        if (st == LRUN_OK && c == LRUN_PACKED_CODEC_PEX2 && got >= t->bytes) e[i].codec = LRUN_PACKED_CODEC_RAW;
        if (e[i].codec != LRUN_PACKED_CODEC_RAW) {
            e[i].packed_size = got;
            out = buf;
            stats->n_packed++;
            stats->n_pex2 += e[i].codec == LRUN_PACKED_CODEC_PEX2;
            stats->plain_bytes += t->bytes;
            stats->packed_bytes += got;
        } else {
            stats->n_raw++;
        }
        if (st == LRUN_OK) st = write_all(fp, out, (size_t)e[i].packed_size, path);
        at += e[i].packed_size;
        const size_t pad = (size_t)((LRUN_PACKED_ALIGN - at % LRUN_PACKED_ALIGN) % LRUN_PACKED_ALIGN);
        if (st == LRUN_OK && i + 1 < s->n) st = write_all(fp, zeros, pad, path), at += pad;
        lrun_progress_update(&bar, (size_t)(t->offset + t->bytes));
    }
    lrun_progress_end(&bar);
    free(buf);
    *packed_bytes = at;
    return st;
}

static lrun_status write_file(FILE *fp, const pack_source *s, lrun_threadpool *pool, lrun_pack_stats *stats,
                              int progress, int codec, const char *path)
{
    const size_t table = (size_t)s->n * LRUN_PACKED_ENTRY_BYTES;
    uint8_t *hdr = calloc(1, LRUN_PACKED_FILE_HEADER + table);
    lrun_packed_entry *e = calloc((size_t)s->n, sizeof *e);
    if (!hdr || !e) {
        free(hdr);
        free(e);
        return lrun_fail_oom(table, 0, "packing %s: entries", path);
    }
    /* the header and entries are written twice: once to hold their place, once filled in */
    lrun_status st = write_all(fp, hdr, LRUN_PACKED_FILE_HEADER + table, path);
    if (st == LRUN_OK) st = write_all(fp, s->head, (size_t)s->head_bytes, path);
    uint64_t packed_bytes = 0;
    if (st == LRUN_OK) st = write_tensors(fp, s, e, &packed_bytes, pool, stats, progress, codec, path);
    if (st == LRUN_OK) {
        memcpy(hdr, LRUN_PACKED_FILE_MAGIC, 8);
        put32(hdr + 8, LRUN_PACKED_FILE_VERSION);
        put64(hdr + 16, s->head_bytes);
        put64(hdr + 24, s->data_bytes);
        put64(hdr + 32, (uint64_t)s->n);
        put64(hdr + 40, packed_bytes);
        for (int64_t i = 0; i < s->n; i++) {
            uint8_t *r = hdr + LRUN_PACKED_FILE_HEADER + (size_t)i * LRUN_PACKED_ENTRY_BYTES;
            put64(r, e[i].plain_offset), put64(r + 8, e[i].plain_bytes), put64(r + 16, e[i].packed_offset);
            put64(r + 24, e[i].packed_size), put32(r + 32, e[i].codec), put32(r + 36, e[i].dtype);
        }
        if (fseek(fp, 0, SEEK_SET) != 0) st = lrun_fail(LRUN_E_IO, "writing %s: seek: %s", path, strerror(errno));
        else st = write_all(fp, hdr, LRUN_PACKED_FILE_HEADER + table, path);
        stats->out_bytes = LRUN_PACKED_FILE_HEADER + table + s->head_bytes + packed_bytes;
    }
    free(hdr);
    free(e);
    return st;
}

// ---------------------------------------------------------------- entry points

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Writes to out.tmp, then renames: no partial file under out's name. */
static lrun_status open_tmp(FILE **fp, char **tmp, const char *out)
{
    size_t n = strlen(out) + 5;
    *tmp = malloc(n);
    if (!*tmp) return lrun_fail_oom(n, 0, "packing: path");
    snprintf(*tmp, n, "%s.tmp", out);
    *fp = fopen(*tmp, "wb");
    if (!*fp) return lrun_fail(LRUN_E_IO, "cannot create %s: %s", *tmp, strerror(errno));
    return LRUN_OK;
}

static lrun_status close_tmp(FILE *fp, char *tmp, const char *out, lrun_status st)
{
    if (fp && fclose(fp) != 0 && st == LRUN_OK) st = lrun_fail(LRUN_E_IO, "writing %s: %s", tmp, strerror(errno));
    if (st == LRUN_OK && rename(tmp, out) != 0) st = lrun_fail(LRUN_E_IO, "renaming %s to %s: %s", tmp, out, strerror(errno));
    if (st != LRUN_OK && tmp) unlink(tmp);
    free(tmp);
    return st;
}

lrun_status lrun_pack(const char *in, const char *out, const lrun_pack_opts *opts, lrun_pack_stats *stats)
{
    static const lrun_pack_opts defaults = {0, 0, LRUN_PACK_CODEC_PEX1};
    lrun_pack_stats local;
    if (!in || !out) return lrun_fail(LRUN_E_ARG, "lrun_pack: in and out must not be NULL");
    if (!opts) opts = &defaults;
    if (opts->codec != LRUN_PACK_CODEC_PEX1 && opts->codec != LRUN_PACK_CODEC_PEX2)
        return lrun_fail(LRUN_E_ARG, "lrun_pack: codec %d is not LRUN_PACK_CODEC_PEX1 (0) or _PEX2 (1)", opts->codec);
    if (!stats) stats = &local;
    memset(stats, 0, sizeof *stats);
    const double t0 = now_s();
    pack_source s = {0};
    lrun_threadpool *pool = NULL;
    FILE *fp = NULL;
    char *tmp = NULL, *hf_gguf = NULL;
    lrun_status st = LRUN_OK;
    /* the input is read through its mapping: a file truncated meanwhile is
     * an error (checked before the output takes its name), not SIGBUS */
    const unsigned long g0 = lrun_mapguard_begin();
    if (lrun_model_is_hf(in)) { /* an HF directory: its plain GGUF first */
        const size_t n = strlen(out) + 16;
        if (!(hf_gguf = malloc(n))) return lrun_fail_oom(n, 0, "packing: path");
        snprintf(hf_gguf, n, "%s.hf.gguf.tmp", out);
        st = lrun_pack_hf_write_gguf(in, hf_gguf, opts->n_threads);
    }
    if (st == LRUN_OK) st = source_from_gguf(&s, hf_gguf ? hf_gguf : in);
    if (st == LRUN_OK) st = lrun_threadpool_init(&pool, opts->n_threads);
    if (st == LRUN_OK) st = open_tmp(&fp, &tmp, out);
    if (st == LRUN_OK) st = write_file(fp, &s, pool, stats, opts->progress, opts->codec, out);
    st = lrun_mapguard_end(g0, st, "reading the input");
    st = close_tmp(fp, tmp, out, st);
    if (st == LRUN_OK) stats->in_bytes = lrun_gguf_file_bytes(s.gguf);
    if (pool) lrun_threadpool_free(pool);
    source_free(&s);
    if (hf_gguf) unlink(hf_gguf);
    free(hf_gguf);
    stats->seconds = now_s() - t0;
    return st == LRUN_OK ? st : lrun_fail_context(st, "lrun pack %s %s", in, out);
}

lrun_status lrun_unpack(const char *in, const char *out, const lrun_pack_opts *opts)
{
    static const lrun_pack_opts defaults = {0, 0, 0};
    if (!in || !out) return lrun_fail(LRUN_E_ARG, "lrun_unpack: in and out must not be NULL");
    if (!opts) opts = &defaults;
    lrun_packed_file *f = NULL;
    FILE *fp = NULL;
    char *tmp = NULL;
    const unsigned long g0 = lrun_mapguard_begin(); /* the packed input's mapping: as lrun_pack's */
    lrun_status st = lrun_packed_file_open(&f, in);
    if (st == LRUN_OK) st = open_tmp(&fp, &tmp, out);
    if (st == LRUN_OK) { /* written through a shared mapping, which needs the file open for reading too */
        int fd = open(tmp, O_RDWR | O_CLOEXEC);
        st = fd < 0 ? lrun_fail(LRUN_E_IO, "cannot open %s: %s", tmp, strerror(errno))
                    : lrun_packed_file_unpack_fd(f, fd, opts->n_threads, opts->progress);
        if (fd >= 0) close(fd);
    }
    char what[600];
    snprintf(what, sizeof what, "lrun unpack %s: reading the input", in);
    st = lrun_mapguard_end(g0, st, what);
    st = close_tmp(fp, tmp, out, st);
    lrun_packed_file_close(f);
    return st;
}
