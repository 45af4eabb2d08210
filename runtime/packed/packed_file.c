/* packed_file.c — reads packed model files (layout: packed_file.h): checks
 * every bound before anything is read, unpacks to the plain GGUF (mode 1). */
#include "packed/packed_file.h"

#include "core/checked.h"
#include "core/error.h"
#include "core/mapguard.h"
#include "core/progress.h"
#include "core/threadpool.h"
#include "packed/codec.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static lrun_status bad(const char *path, const char *fmt, const char *detail, long long a, long long b)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, detail, a, b);
    return lrun_fail(LRUN_E_FORMAT, "packed file %s: %s", path, msg);
}

int lrun_packed_file_sniff(const char *path)
{
    char magic[8];
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) return 0;
    int ok = fread(magic, 1, 8, f) == 8 && !memcmp(magic, LRUN_PACKED_FILE_MAGIC, 8);
    fclose(f);
    return ok;
}

// ---------------------------------------------------------------- checks of the frame and the entries

static lrun_status check_frame(lrun_packed_file *f)
{
    const uint8_t *m = f->map;
    if (f->size < LRUN_PACKED_FILE_HEADER) return bad(f->path, "%s%lld bytes, shorter than the header", "", (long long)f->size, 0);
    if (memcmp(m, LRUN_PACKED_FILE_MAGIC, 8)) return bad(f->path, "%sbad magic", "", 0, 0);
    f->version = rd32(m + 8);
    if (f->version < LRUN_PACKED_FILE_VERSION_OLDEST || f->version > LRUN_PACKED_FILE_VERSION)
        return bad(f->path, "%sversion %lld, not one this lrun reads (1 to %lld)", "", f->version,
                   LRUN_PACKED_FILE_VERSION);
    if (rd32(m + 12) != 0) return bad(f->path, "%sreserved header field is %lld, not 0", "", rd32(m + 12), 0);
    f->head_bytes = rd64(m + 16);
    f->data_bytes = rd64(m + 24);
    const uint64_t n = rd64(m + 32);
    f->packed_bytes = rd64(m + 40);
    size_t total, entries;
    if (n > (uint64_t)INT64_MAX || !lrun_size_mul((size_t)n, LRUN_PACKED_ENTRY_BYTES, &entries) ||
        !lrun_size_add(LRUN_PACKED_FILE_HEADER, entries, &total) || !lrun_size_add(total, f->head_bytes, &total) ||
        !lrun_size_add(total, f->packed_bytes, &total) || total != f->size)
        return bad(f->path, "%s%lld entries and the head and packed sizes do not add up to the file's %lld bytes", "",
                   (long long)n, (long long)f->size);
    if (f->data_bytes > SIZE_MAX - f->head_bytes) return bad(f->path, "%sdata section of %lld bytes is too large", "", (long long)f->data_bytes, 0);
    f->n_entries = (int64_t)n;
    f->head = m + LRUN_PACKED_FILE_HEADER + entries;
    f->packed = f->head + f->head_bytes;
    return LRUN_OK;
}

static lrun_status check_entry(const lrun_packed_file *f, const lrun_packed_entry *e, const lrun_packed_entry *prev, int64_t i)
{
    const char *p = f->path;
    char what[32];
    snprintf(what, sizeof what, "entry %lld: ", (long long)i);
    if (e->plain_bytes > f->data_bytes || e->plain_offset > f->data_bytes - e->plain_bytes)
        return bad(p, "%splain range at %lld (+%lld) is outside the data section", what, (long long)e->plain_offset, (long long)e->plain_bytes);
    const uint64_t prev_end = prev ? prev->plain_offset + prev->plain_bytes : 0;
    if (e->plain_offset < prev_end)
        return bad(p, "%splain range at %lld overlaps or precedes the one before, ending at %lld", what,
                   (long long)e->plain_offset, (long long)prev_end);
    if (e->plain_offset - prev_end >= LRUN_PACKED_MAX_GAP)
        return bad(p, "%splain range at %lld leaves a gap of 1 MiB or more after %lld", what, (long long)e->plain_offset,
                   (long long)prev_end);
    if (e->packed_size > f->packed_bytes || e->packed_offset > f->packed_bytes - e->packed_size)
        return bad(p, "%spacked range at %lld (+%lld) is outside the packed section", what, (long long)e->packed_offset, (long long)e->packed_size);
    if (e->packed_offset % LRUN_PACKED_ALIGN)
        return bad(p, "%spacked offset %lld is not a multiple of %lld", what, (long long)e->packed_offset, LRUN_PACKED_ALIGN);
    if (prev && e->packed_offset < prev->packed_offset + prev->packed_size)
        return bad(p, "%spacked range at %lld overlaps or precedes the one before, ending at %lld", what,
                   (long long)e->packed_offset, (long long)(prev->packed_offset + prev->packed_size));
    if (e->dtype > 1000 || !lrun_dtype_is_supported((int)e->dtype))
        return bad(p, "%sdtype %lld is not a known type", what, e->dtype, 0);
    if (e->codec == LRUN_PACKED_CODEC_RAW) {
        if (e->packed_size != e->plain_bytes)
            return bad(p, "%sstored as is, but %lld packed bytes for %lld plain ones", what, (long long)e->packed_size, (long long)e->plain_bytes);
    } else if (e->codec == LRUN_PACKED_CODEC_EXP) {
        if (!lrun_packed_dtype_ok((int)e->dtype) || e->plain_bytes % 2)
            return bad(p, "%spacked, but dtype %lld with %lld bytes is not bf16 or f16", what, e->dtype, (long long)e->plain_bytes);
    } else if (e->codec == LRUN_PACKED_CODEC_PEX2) {
        if (e->plain_bytes % 2 || !lrun_pex2_fits((int)e->dtype, e->plain_bytes / 2))
            return bad(p,
                       "%spacked PEX2, but dtype %lld with %lld bytes is not bf16 of a multiple of 8 values below "
                       "2^32",
                       what, e->dtype, (long long)e->plain_bytes);
    } else {
        return bad(p, "%scodec %lld is unknown", what, e->codec, 0);
    }
    /* a codec decodes 16-bit values in place in the unpacked file: they must start on an even byte there */
    if (e->codec != LRUN_PACKED_CODEC_RAW && (f->head_bytes + e->plain_offset) % 2)
        return bad(p,
                   "%spacked, but its values would start at byte %lld of the unpacked file (after %lld head "
                   "bytes): not 2-byte aligned",
                   what, (long long)(f->head_bytes + e->plain_offset), (long long)f->head_bytes);
    return LRUN_OK;
}

/* The bytes of the packed section that no tensor covers must be zero. */
static lrun_status check_gaps(const lrun_packed_file *f)
{
    uint64_t at = 0;
    for (int64_t i = 0; i <= f->n_entries; i++) {
        uint64_t end = i < f->n_entries ? f->entries[i].packed_offset : f->packed_bytes;
        for (uint64_t k = at; k < end; k++)
            if (f->packed[k]) return bad(f->path, "%spadding byte at packed offset %lld is not zero", "", (long long)k, 0);
        if (i < f->n_entries) at = end + f->entries[i].packed_size;
    }
    return LRUN_OK;
}

static lrun_status read_entries(lrun_packed_file *f)
{
    f->entries = calloc(f->n_entries ? (size_t)f->n_entries : 1, sizeof *f->entries);
    if (!f->entries) return lrun_fail_oom((size_t)f->n_entries * sizeof *f->entries, 0, "packed file %s: entries", f->path);
    for (int64_t i = 0; i < f->n_entries; i++) {
        const uint8_t *r = f->map + LRUN_PACKED_FILE_HEADER + (size_t)i * LRUN_PACKED_ENTRY_BYTES;
        lrun_packed_entry *e = &f->entries[i];
        *e = (lrun_packed_entry){rd64(r), rd64(r + 8), rd64(r + 16), rd64(r + 24), rd32(r + 32), rd32(r + 36)};
        lrun_status st = check_entry(f, e, i ? e - 1 : NULL, i);
        if (st != LRUN_OK) return st;
    }
    const uint64_t end = f->n_entries ? f->entries[f->n_entries - 1].plain_offset + f->entries[f->n_entries - 1].plain_bytes : 0;
    if (f->data_bytes - end >= LRUN_PACKED_MAX_GAP)
        return bad(f->path, "%sthe data section of %lld bytes ends 1 MiB or more after the last tensor, at %lld", "",
                   (long long)f->data_bytes, (long long)end);
    return check_gaps(f);
}

// ---------------------------------------------------------------- files of version 1

static lrun_status open_head(lrun_gguf **out, const lrun_packed_file *f, int stored);

/* A version-1 file's PEX2 tensors have the 12-byte block table that PEX2
 * had then (codec_pex2.h), which no decoder here reads: refused, naming the
 * first (its name from the GGUF head; its entry where the head does not
 * open), so that the model is packed again. Its stored and PEX1 tensors
 * are as version 2 writes them. */
static lrun_status refuse_old_pex2(const lrun_packed_file *f)
{
    if (f->version >= 2) return LRUN_OK;
    int64_t i = 0;
    while (i < f->n_entries && f->entries[i].codec != LRUN_PACKED_CODEC_PEX2) i++;
    if (i == f->n_entries) return LRUN_OK;
    char name[256];
    snprintf(name, sizeof name, "entry %lld", (long long)i);
    lrun_gguf *g = NULL;
    if (open_head(&g, f, 0) == LRUN_OK)
        for (int64_t t = 0; t < lrun_gguf_tensor_count(g); t++)
            if (lrun_gguf_tensor_offset(g, t) == f->entries[i].plain_offset)
                snprintf(name, sizeof name, "tensor '%s'", lrun_gguf_tensor_name(g, t));
    lrun_gguf_close(g);
    return lrun_fail(LRUN_E_FORMAT,
                     "packed file %s: %s is PEX2 in a version-1 packed file, whose PEX2 block table this lrun no "
                     "longer reads: pack the model again (lrun pack)",
                     f->path, name);
}

// ---------------------------------------------------------------- open and close

lrun_status lrun_packed_file_open(lrun_packed_file **out, const char *path)
{
    if (!out || !path) return lrun_fail(LRUN_E_ARG, "lrun_packed_file_open: out and path must not be NULL");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lrun_fail(LRUN_E_IO, "packed file %s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lrun_fail(LRUN_E_IO, "packed file %s: not a regular file", path);
    }
    lrun_packed_file *f = calloc(1, sizeof *f);
    if (!f) {
        close(fd);
        return lrun_fail_oom(sizeof *f, 0, "packed file %s: reader", path);
    }
    f->path = path;
    f->size = (size_t)sb.st_size;
    static const uint8_t empty[1];
    f->map = empty;
    if (f->size) {
        void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            free(f);
            return lrun_fail(LRUN_E_IO, "packed file %s: cannot mmap %zu bytes", path, (size_t)sb.st_size);
        }
        f->map = map;
        lrun_mapguard_add(map, f->size, path); /* a truncation in use: an error, not SIGBUS (mapguard.h) */
    }
    close(fd);
    /* the frame and the entry table are read from the mapping */
    const unsigned long g0 = lrun_mapguard_begin();
    lrun_status st = check_frame(f);
    if (st == LRUN_OK) st = read_entries(f);
    if (st == LRUN_OK) st = refuse_old_pex2(f);
    char what[600];
    snprintf(what, sizeof what, "packed file %s: reading its entry table", path);
    st = lrun_mapguard_end(g0, st, what);
    if (st != LRUN_OK) {
        lrun_packed_file_close(f);
        return st;
    }
    *out = f;
    return LRUN_OK;
}

void lrun_packed_file_close(lrun_packed_file *f)
{
    if (!f) return;
    if (f->size) {
        lrun_mapguard_remove(f->map);
        munmap((void *)f->map, f->size);
    }
    free(f->entries);
    free(f);
}

// ---------------------------------------------------------------- unpack

const char *lrun_packed_codec_name(uint32_t codec)
{
    return codec == LRUN_PACKED_CODEC_RAW    ? "stored"
           : codec == LRUN_PACKED_CODEC_EXP  ? "PEX1"
           : codec == LRUN_PACKED_CODEC_PEX2 ? "PEX2"
                                             : "unknown";
}

lrun_status lrun_packed_file_check_codec(const lrun_packed_file *f, const lrun_packed_entry *e, const char *what)
{
    const int got = lrun_packed_codec_of(f->packed + e->packed_offset, (size_t)e->packed_size);
    if (got == (int)e->codec) return LRUN_OK;
    return lrun_fail(LRUN_E_FORMAT, "%s: the entry says codec %s, its bytes are %s", what,
                     lrun_packed_codec_name(e->codec),
                     got ? lrun_packed_codec_name((uint32_t)got) : "neither PEX1 nor PEX2");
}

static lrun_status unpack_entry(const lrun_packed_file *f, int64_t i, uint8_t *data, lrun_threadpool *pool)
{
    const lrun_packed_entry *e = &f->entries[i];
    char what[48];
    snprintf(what, sizeof what, "entry %lld", (long long)i);
    if (e->codec == LRUN_PACKED_CODEC_RAW) {
        memcpy(data + e->plain_offset, f->packed + e->packed_offset, (size_t)e->plain_bytes);
        return LRUN_OK;
    }
    lrun_status st = lrun_packed_file_check_codec(f, e, what);
    if (st == LRUN_OK)
        st = lrun_packed_decode((uint16_t *)(data + e->plain_offset), (int)e->dtype, e->plain_bytes / 2,
                                f->packed + e->packed_offset, (size_t)e->packed_size, what, pool);
    return st == LRUN_OK ? st : lrun_fail_context(st, "packed file %s", f->path);
}

lrun_status lrun_packed_file_unpack_fd(const lrun_packed_file *f, int fd, int n_threads, int progress)
{
    const size_t size = (size_t)(f->head_bytes + f->data_bytes);
    if (ftruncate(fd, (off_t)size) != 0) return lrun_fail(LRUN_E_IO, "unpacking %s: cannot size the output to %zu bytes: %s", f->path, size, strerror(errno));
    if (size == 0) return LRUN_OK;
    uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return lrun_fail_oom(size, 0, "unpacking %s: cannot map %zu bytes", f->path, size);
    lrun_threadpool *pool = NULL;
    lrun_status st = lrun_threadpool_init(&pool, n_threads);
    memcpy(m, f->head, (size_t)f->head_bytes);
    lrun_progress bar;
    lrun_progress_begin(&bar, progress, "unpacking", (size_t)f->data_bytes);
    for (int64_t i = 0; st == LRUN_OK && i < f->n_entries; i++) {
        st = unpack_entry(f, i, m + f->head_bytes, pool);
        lrun_progress_update(&bar, (size_t)(f->entries[i].plain_offset + f->entries[i].plain_bytes));
    }
    lrun_progress_end(&bar);
    if (pool) lrun_threadpool_free(pool);
    munmap(m, size);
    return st;
}

/* Every entry is one GGUF tensor: same offset, bytes and dtype; every tensor has one. */
static lrun_status match_gguf(const lrun_packed_file *f, const lrun_gguf *g)
{
    if (lrun_gguf_tensor_count(g) != f->n_entries)
        return bad(f->path, "%s%lld entries for %lld GGUF tensors", "", (long long)f->n_entries, (long long)lrun_gguf_tensor_count(g));
    if (lrun_gguf_data_offset(g) != f->head_bytes)
        return bad(f->path, "%sthe GGUF data starts at %lld, not after the %lld head bytes", "", (long long)lrun_gguf_data_offset(g), (long long)f->head_bytes);
    for (int64_t t = 0; t < lrun_gguf_tensor_count(g); t++) {
        const uint64_t off = lrun_gguf_tensor_offset(g, t);
        int64_t lo = 0, hi = f->n_entries - 1, k = -1; /* entries are sorted by plain offset */
        while (lo <= hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (f->entries[mid].plain_offset == off) { k = mid; break; }
            if (f->entries[mid].plain_offset < off) lo = mid + 1;
            else hi = mid - 1;
        }
        if (k < 0 || f->entries[k].plain_bytes != lrun_gguf_tensor_bytes(g, t) ||
            f->entries[k].dtype != (uint32_t)lrun_gguf_tensor_dtype(g, t))
            return bad(f->path, "tensor '%s': no entry with its offset %lld, %lld bytes and dtype", lrun_gguf_tensor_name(g, t),
                       (long long)off, (long long)lrun_gguf_tensor_bytes(g, t));
    }
    return LRUN_OK;
}

lrun_status lrun_packed_open_gguf(lrun_gguf **out, const char *path, int n_threads, int progress)
{
    lrun_packed_file *f = NULL;
    lrun_status st = lrun_packed_file_open(&f, path);
    if (st != LRUN_OK) return st;
    int fd = memfd_create("lrun-unpacked", MFD_CLOEXEC);
    if (fd < 0) st = lrun_fail(LRUN_E_IO, "unpacking %s: memfd_create: %s", path, strerror(errno));
    const unsigned long g0 = lrun_mapguard_begin(); /* the decode reads the mapping */
    if (st == LRUN_OK) st = lrun_packed_file_unpack_fd(f, fd, n_threads, progress);
    st = lrun_mapguard_end(g0, st, "unpacking a packed file");
    if (st == LRUN_OK) {
        char fd_path[64];
        snprintf(fd_path, sizeof fd_path, "/proc/self/fd/%d", fd);
        st = lrun_gguf_open(out, fd_path); /* the mapping keeps the memory file once fd is closed */
        if (st != LRUN_OK) lrun_fail_context(st, "the GGUF unpacked from %s", path);
        if (st == LRUN_OK && (st = match_gguf(f, *out)) != LRUN_OK) {
            lrun_gguf_close(*out);
            *out = NULL;
        }
    }
    if (fd >= 0) close(fd);
    lrun_packed_file_close(f);
    return st;
}

// ---------------------------------------------------------------- kept packed

/* The GGUF head of f (and its stored tensors, when stored) in a sized
 * anonymous memory file whose other tensors' ranges stay holes (no memory),
 * opened with the GGUF reader; not yet matched to the entries. */
static lrun_status open_head(lrun_gguf **out, const lrun_packed_file *f, int stored)
{
    *out = NULL;
    const char *path = f->path;
    lrun_status st = LRUN_OK;
    int fd = memfd_create("lrun-packed-head", MFD_CLOEXEC);
    if (fd < 0) st = lrun_fail(LRUN_E_IO, "opening %s: memfd_create: %s", path, strerror(errno));
    const size_t size = (size_t)(f->head_bytes + f->data_bytes);
    /* sized, not filled: the packed tensors' ranges stay holes, which take no memory */
    if (st == LRUN_OK && ftruncate(fd, (off_t)size) != 0)
        st = lrun_fail(LRUN_E_IO, "opening %s: cannot size the head's memory file to %zu bytes: %s", path, size,
                       strerror(errno));
    uint8_t *m = MAP_FAILED;
    if (st == LRUN_OK && size) {
        m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) st = lrun_fail_oom(size, 0, "opening %s: cannot map %zu bytes", path, size);
    }
    if (st == LRUN_OK && size) {
        memcpy(m, f->head, (size_t)f->head_bytes);
        for (int64_t i = 0; stored && i < f->n_entries; i++)
            if (f->entries[i].codec == LRUN_PACKED_CODEC_RAW) st = unpack_entry(f, i, m + f->head_bytes, NULL);
    }
    if (m != MAP_FAILED) munmap(m, size);
    if (st == LRUN_OK) {
        char fd_path[64];
        snprintf(fd_path, sizeof fd_path, "/proc/self/fd/%d", fd);
        st = lrun_gguf_open(out, fd_path); /* the mapping keeps the memory file once fd is closed */
        if (st != LRUN_OK) lrun_fail_context(st, "the GGUF head of %s", path);
    }
    if (fd >= 0) close(fd);
    return st;
}

lrun_status lrun_packed_open_lazy(lrun_gguf **out, lrun_packed_file **file, const char *path)
{
    *out = NULL;
    *file = NULL;
    lrun_packed_file *f = NULL;
    lrun_status st = lrun_packed_file_open(&f, path);
    if (st != LRUN_OK) return st;
    st = open_head(out, f, 1);
    if (st == LRUN_OK && (st = match_gguf(f, *out)) != LRUN_OK) {
        lrun_gguf_close(*out);
        *out = NULL;
    }
    if (st != LRUN_OK) {
        lrun_packed_file_close(f);
        return st;
    }
    *file = f;
    return LRUN_OK;
}

const lrun_packed_entry *lrun_packed_file_entry_at(const lrun_packed_file *f, uint64_t plain_offset)
{
    int64_t lo = 0, hi = f->n_entries - 1; /* entries are sorted by plain offset */
    while (lo <= hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const lrun_packed_entry *e = &f->entries[mid];
        if (plain_offset >= e->plain_offset && plain_offset - e->plain_offset < e->plain_bytes) return e;
        if (e->plain_offset < plain_offset) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}
