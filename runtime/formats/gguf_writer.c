/* gguf_writer.c — writes GGUF v3 files (layout in gguf.c).
 *
 * Metadata and tensor declarations are gathered in memory; the header, the
 * key/value pairs, the tensor infos and the padding go out on the first data
 * write (or at finish), then tensor bytes stream through a buffer, each
 * tensor padded with zeros to the alignment so the next one starts aligned.
 * Large writes bypass the buffer: the model generator hands over tens of MB
 * at a time.
 */
#include "core/checked.h"
#include "core/error.h"
#include "lrun.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WRITER_BUF_BYTES (4u << 20)
#define WRITER_NAME_MAX 64

// ---------------------------------------------------------------- growable bytes

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;            /* bytes used, bytes allocated */
} bytes;

static lrun_status bytes_put(bytes *b, const void *src, size_t n)
{
    size_t need;
    if (!lrun_size_add(b->len, n, &need)) return lrun_fail(LRUN_E_ARG, "gguf writer: metadata size overflows");
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < need) {
            if (!lrun_size_mul(cap, 2, &cap)) return lrun_fail(LRUN_E_ARG, "gguf writer: metadata size overflows");
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) return lrun_fail_oom(cap, 0, "gguf writer: %zu bytes of metadata", cap);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len = need;
    return LRUN_OK;
}

static lrun_status put_le(bytes *b, uint64_t v, size_t n)
{
    uint8_t le[8];
    for (size_t i = 0; i < n; i++) le[i] = (uint8_t)(v >> (8 * i));
    return bytes_put(b, le, n);
}

static lrun_status put_str(bytes *b, const char *s, size_t n)
{
    lrun_status st = put_le(b, n, 8);
    return st == LRUN_OK ? bytes_put(b, s, n) : st;
}

// ---------------------------------------------------------------- writer state

typedef struct wtensor {
    char name[WRITER_NAME_MAX];
    lrun_dtype dtype;
    int ndim;
    int64_t ne[LRUN_MAX_DIMS];
    size_t bytes;               /* data bytes, without padding */
    size_t offset;              /* from the data start */
} wtensor;

struct lrun_gguf_writer {
    char *path;
    int fd;
    int finished;               /* finish succeeded: keep the file */
    lrun_status failed;         /* first failure; later calls repeat it */
    size_t alignment;           /* bytes; 32 unless general.alignment was set */

    bytes kv;                   /* serialized key/value pairs */
    int64_t n_kv;
    char **keys;                /* (n_kv) for the duplicate check */
    size_t keys_cap;

    wtensor *tensors;           /* (n_tensors) in declaration = data order */
    int64_t n_tensors;
    size_t tensors_cap;
    size_t data_bytes;          /* data section so far, padded */

    int header_written;
    int64_t cur;                /* tensor whose bytes come next */
    size_t cur_done;            /* bytes of it written */
    uint8_t *buf;               /* (WRITER_BUF_BYTES) output buffer */
    size_t buf_len;
    uint64_t file_pos;          /* bytes handed to the kernel so far */
};

static lrun_status fail(lrun_gguf_writer *w, lrun_status st)
{
    if (w->failed == LRUN_OK) w->failed = st;
    return st;
}

/* Refuses work after a failure or once finished. */
static lrun_status usable(lrun_gguf_writer *w, const char *fn)
{
    if (!w) return lrun_fail(LRUN_E_ARG, "%s: writer is NULL", fn);
    if (w->failed != LRUN_OK)
        return lrun_fail(w->failed, "%s: %s: the writer failed earlier", fn, w->path);
    if (w->finished) return lrun_fail(LRUN_E_ARG, "%s: %s: the writer already finished", fn, w->path);
    return LRUN_OK;
}

// ---------------------------------------------------------------- file output

static lrun_status write_all(lrun_gguf_writer *w, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(w->fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return fail(w, lrun_fail(LRUN_E_IO, "gguf writer: %s: write at offset %llu failed: %s", w->path,
                                     (unsigned long long)w->file_pos, strerror(errno)));
        }
        p += k;
        n -= (size_t)k;
        w->file_pos += (uint64_t)k;
    }
    return LRUN_OK;
}

static lrun_status flush(lrun_gguf_writer *w)
{
    lrun_status st = write_all(w, w->buf, w->buf_len);
    w->buf_len = 0;
    return st;
}

static lrun_status out(lrun_gguf_writer *w, const void *src, size_t n)
{
    if (n >= WRITER_BUF_BYTES / 2) {
        lrun_status st = flush(w);
        return st == LRUN_OK ? write_all(w, src, n) : st;
    }
    if (n > WRITER_BUF_BYTES - w->buf_len) {
        lrun_status st = flush(w);
        if (st != LRUN_OK) return st;
    }
    memcpy(w->buf + w->buf_len, src, n);
    w->buf_len += n;
    return LRUN_OK;
}

static lrun_status out_zeros(lrun_gguf_writer *w, size_t n)
{
    static const uint8_t zeros[256];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        lrun_status st = out(w, zeros, k);
        if (st != LRUN_OK) return st;
        n -= k;
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- open and free

lrun_status lrun_gguf_writer_open(lrun_gguf_writer **out_writer, const char *path)
{
    if (!out_writer || !path) return lrun_fail(LRUN_E_ARG, "lrun_gguf_writer_open: out and path must not be NULL");
    *out_writer = NULL;
    lrun_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return lrun_fail_oom(sizeof *w, 0, "gguf writer: %s", path);
    w->fd = -1;
    w->alignment = 32;
    w->path = strdup(path);
    w->buf = malloc(WRITER_BUF_BYTES);
    if (!w->path || !w->buf) {
        free(w->path);
        free(w->buf);
        free(w);
        return lrun_fail_oom(WRITER_BUF_BYTES, 0, "gguf writer: %s: buffer", path);
    }
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        lrun_status st = lrun_fail(LRUN_E_IO, "gguf writer: %s: cannot create: %s", path, strerror(errno));
        free(w->path);
        free(w->buf);
        free(w);
        return st;
    }
    *out_writer = w;
    return LRUN_OK;
}

void lrun_gguf_writer_free(lrun_gguf_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (!w->finished) unlink(w->path); /* a partial file would only mislead a reader */
    for (int64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    free(w->kv.p);
    free(w->tensors);
    free(w->buf);
    free(w->path);
    free(w);
}

// ---------------------------------------------------------------- metadata

/* Checks the key and appends it plus the type id to the KV blob. */
static lrun_status begin_kv(lrun_gguf_writer *w, const char *key, lrun_gguf_type type, const char *fn)
{
    lrun_status st = usable(w, fn);
    if (st != LRUN_OK) return st;
    if (w->header_written)
        return lrun_fail(LRUN_E_ARG, "%s: %s: metadata must be set before the first tensor data", fn, w->path);
    if (!key || !key[0]) return lrun_fail(LRUN_E_ARG, "%s: %s: key must be a non-empty string", fn, w->path);
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return lrun_fail(LRUN_E_ARG, "%s: %s: duplicate key '%s'", fn, w->path, key);
    if ((size_t)w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? w->keys_cap * 2 : 32;
        char **keys = realloc(w->keys, cap * sizeof *keys);
        if (!keys) return lrun_fail_oom(cap * sizeof *keys, 0, "gguf writer: key list");
        w->keys = keys;
        w->keys_cap = cap;
    }
    char *copy = strdup(key);
    if (!copy) return lrun_fail_oom(strlen(key) + 1, 0, "gguf writer: key '%s'", key);
    /* Key and type go in only when both fit, so a failure leaves the blob whole. */
    size_t mark = w->kv.len;
    st = put_str(&w->kv, key, strlen(key));
    if (st == LRUN_OK) st = put_le(&w->kv, (uint64_t)type, 4);
    if (st != LRUN_OK) {
        w->kv.len = mark;
        free(copy);
        return st;
    }
    w->keys[w->n_kv++] = copy;
    return LRUN_OK;
}

static lrun_status set_scalar(lrun_gguf_writer *w, const char *key, lrun_gguf_type type, uint64_t bits, size_t n,
                              const char *fn)
{
    lrun_status st = begin_kv(w, key, type, fn);
    return st == LRUN_OK ? fail(w, put_le(&w->kv, bits, n)) : st;
}

lrun_status lrun_gguf_writer_set_u32(lrun_gguf_writer *w, const char *key, uint32_t value)
{
    if (w && key && strcmp(key, "general.alignment") == 0) {
        if (value == 0 || (value & (value - 1)) != 0)
            return lrun_fail(LRUN_E_ARG, "lrun_gguf_writer_set_u32: general.alignment %u is not a power of two", value);
        if (w->n_tensors > 0)
            return lrun_fail(LRUN_E_ARG, "lrun_gguf_writer_set_u32: set general.alignment before adding tensors");
    }
    lrun_status st = set_scalar(w, key, LRUN_GGUF_TYPE_U32, value, 4, "lrun_gguf_writer_set_u32");
    if (st == LRUN_OK && strcmp(key, "general.alignment") == 0) w->alignment = value;
    return st;
}

lrun_status lrun_gguf_writer_set_i32(lrun_gguf_writer *w, const char *key, int32_t value)
{
    return set_scalar(w, key, LRUN_GGUF_TYPE_I32, (uint32_t)value, 4, "lrun_gguf_writer_set_i32");
}

lrun_status lrun_gguf_writer_set_u64(lrun_gguf_writer *w, const char *key, uint64_t value)
{
    return set_scalar(w, key, LRUN_GGUF_TYPE_U64, value, 8, "lrun_gguf_writer_set_u64");
}

lrun_status lrun_gguf_writer_set_f32(lrun_gguf_writer *w, const char *key, float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return set_scalar(w, key, LRUN_GGUF_TYPE_F32, bits, 4, "lrun_gguf_writer_set_f32");
}

lrun_status lrun_gguf_writer_set_bool(lrun_gguf_writer *w, const char *key, int value)
{
    return set_scalar(w, key, LRUN_GGUF_TYPE_BOOL, value ? 1 : 0, 1, "lrun_gguf_writer_set_bool");
}

lrun_status lrun_gguf_writer_set_str(lrun_gguf_writer *w, const char *key, const char *value)
{
    if (!value) return lrun_fail(LRUN_E_ARG, "lrun_gguf_writer_set_str: value of '%s' is NULL", key ? key : "?");
    lrun_status st = begin_kv(w, key, LRUN_GGUF_TYPE_STRING, "lrun_gguf_writer_set_str");
    return st == LRUN_OK ? fail(w, put_str(&w->kv, value, strlen(value))) : st;
}

static lrun_status begin_arr(lrun_gguf_writer *w, const char *key, lrun_gguf_type elem, const void *values,
                             int64_t count, const char *fn)
{
    if (count < 0 || (count > 0 && !values))
        return lrun_fail(LRUN_E_ARG, "%s: '%s': %lld values at %p", fn, key ? key : "?", (long long)count, values);
    lrun_status st = begin_kv(w, key, LRUN_GGUF_TYPE_ARRAY, fn);
    if (st == LRUN_OK) st = put_le(&w->kv, (uint64_t)elem, 4);
    if (st == LRUN_OK) st = put_le(&w->kv, (uint64_t)count, 8);
    return fail(w, st);
}

lrun_status lrun_gguf_writer_set_arr_str(lrun_gguf_writer *w, const char *key, const char *const *values, int64_t count)
{
    const char *fn = "lrun_gguf_writer_set_arr_str";
    for (int64_t i = 0; i < count && values; i++)
        if (!values[i]) return lrun_fail(LRUN_E_ARG, "%s: '%s': element %lld is NULL", fn, key ? key : "?", (long long)i);
    lrun_status st = begin_arr(w, key, LRUN_GGUF_TYPE_STRING, values, count, fn);
    for (int64_t i = 0; st == LRUN_OK && i < count; i++) st = put_str(&w->kv, values[i], strlen(values[i]));
    return fail(w, st);
}

lrun_status lrun_gguf_writer_set_arr_f32(lrun_gguf_writer *w, const char *key, const float *values, int64_t count)
{
    lrun_status st = begin_arr(w, key, LRUN_GGUF_TYPE_F32, values, count, "lrun_gguf_writer_set_arr_f32");
    for (int64_t i = 0; st == LRUN_OK && i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        st = put_le(&w->kv, bits, 4);
    }
    return fail(w, st);
}

lrun_status lrun_gguf_writer_set_arr_i32(lrun_gguf_writer *w, const char *key, const int32_t *values, int64_t count)
{
    lrun_status st = begin_arr(w, key, LRUN_GGUF_TYPE_I32, values, count, "lrun_gguf_writer_set_arr_i32");
    for (int64_t i = 0; st == LRUN_OK && i < count; i++) st = put_le(&w->kv, (uint32_t)values[i], 4);
    return fail(w, st);
}

// ---------------------------------------------------------------- tensors

lrun_status lrun_gguf_writer_add_tensor(lrun_gguf_writer *w, const char *name, lrun_dtype dtype, int ndim,
                                        const int64_t *dims)
{
    const char *fn = "lrun_gguf_writer_add_tensor";
    lrun_status st = usable(w, fn);
    if (st != LRUN_OK) return st;
    if (w->header_written)
        return lrun_fail(LRUN_E_ARG, "%s: %s: tensors must be declared before the first tensor data", fn, w->path);
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len >= WRITER_NAME_MAX)
        return lrun_fail(LRUN_E_ARG, "%s: name '%s' must be 1..%d bytes", fn, name ? name : "(null)", WRITER_NAME_MAX - 1);
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return lrun_fail(LRUN_E_ARG, "%s: duplicate tensor name '%s'", fn, name);
    if (ndim < 1 || ndim > LRUN_MAX_DIMS || !dims)
        return lrun_fail(LRUN_E_ARG, "%s: '%s': ndim %d must be 1..%d", fn, name, ndim, LRUN_MAX_DIMS);
    if (!lrun_dtype_is_supported((int)dtype))
        return lrun_fail(LRUN_E_ARG, "%s: '%s': dtype id %d is not a weight type lrun supports", fn, name, (int)dtype);

    wtensor t = {.dtype = dtype, .ndim = ndim, .ne = {1, 1, 1, 1}};
    memcpy(t.name, name, len + 1);
    int64_t rows = 1;
    for (int d = 0; d < ndim; d++) {
        if (dims[d] <= 0) return lrun_fail(LRUN_E_ARG, "%s: '%s': dims[%d] = %lld must be > 0", fn, name, d, (long long)dims[d]);
        t.ne[d] = dims[d];
        if (d > 0 && !lrun_i64_mul(rows, dims[d], &rows))
            return lrun_fail(LRUN_E_ARG, "%s: '%s': element count overflows", fn, name);
    }
    size_t row_bytes, end;
    if ((st = lrun_dtype_row_bytes(dtype, t.ne[0], &row_bytes)) != LRUN_OK)
        return lrun_fail_context(LRUN_E_ARG, "%s: '%s'", fn, name);
    if (!lrun_size_mul(row_bytes, (size_t)rows, &t.bytes) || !lrun_size_add(w->data_bytes, t.bytes, &end) ||
        !lrun_size_align_up(end, w->alignment, &end))
        return lrun_fail(LRUN_E_ARG, "%s: '%s': byte size overflows", fn, name);
    t.offset = w->data_bytes;

    if ((size_t)w->n_tensors == w->tensors_cap) {
        size_t cap = w->tensors_cap ? w->tensors_cap * 2 : 64;
        wtensor *p = realloc(w->tensors, cap * sizeof *p);
        if (!p) return lrun_fail_oom(cap * sizeof *p, 0, "gguf writer: tensor list");
        w->tensors = p;
        w->tensors_cap = cap;
    }
    w->tensors[w->n_tensors++] = t;
    w->data_bytes = end;
    return LRUN_OK;
}

/* Header, metadata, tensor infos, padding: everything before the data. */
static lrun_status write_header(lrun_gguf_writer *w)
{
    bytes h = {0};
    lrun_status st = bytes_put(&h, "GGUF", 4);
    if (st == LRUN_OK) st = put_le(&h, 3, 4);
    if (st == LRUN_OK) st = put_le(&h, (uint64_t)w->n_tensors, 8);
    if (st == LRUN_OK) st = put_le(&h, (uint64_t)w->n_kv, 8);
    if (st == LRUN_OK) st = bytes_put(&h, w->kv.p, w->kv.len);
    for (int64_t i = 0; st == LRUN_OK && i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        st = put_str(&h, t->name, strlen(t->name));
        if (st == LRUN_OK) st = put_le(&h, (uint64_t)t->ndim, 4);
        for (int d = 0; st == LRUN_OK && d < t->ndim; d++) st = put_le(&h, (uint64_t)t->ne[d], 8);
        if (st == LRUN_OK) st = put_le(&h, (uint64_t)t->dtype, 4);
        if (st == LRUN_OK) st = put_le(&h, (uint64_t)t->offset, 8);
    }
    size_t padded = 0;
    if (st == LRUN_OK && !lrun_size_align_up(h.len, w->alignment, &padded))
        st = lrun_fail(LRUN_E_ARG, "gguf writer: %s: header size overflows", w->path);
    if (st == LRUN_OK) st = out(w, h.p, h.len);
    if (st == LRUN_OK) st = out_zeros(w, padded - h.len);
    free(h.p);
    w->header_written = 1;
    return fail(w, st);
}

/* After a tensor's last byte: zeros up to where the next one starts. */
static lrun_status end_tensor(lrun_gguf_writer *w)
{
    const wtensor *t = &w->tensors[w->cur];
    size_t end = 0;
    lrun_size_align_up(t->offset + t->bytes, w->alignment, &end); /* checked in add_tensor */
    w->cur++;
    w->cur_done = 0;
    return out_zeros(w, end - t->offset - t->bytes);
}

lrun_status lrun_gguf_writer_write_data(lrun_gguf_writer *w, const void *src, size_t n)
{
    const char *fn = "lrun_gguf_writer_write_data";
    lrun_status st = usable(w, fn);
    if (st != LRUN_OK) return st;
    if (n > 0 && !src) return lrun_fail(LRUN_E_ARG, "%s: %s: NULL data", fn, w->path);
    if (!w->header_written && (st = write_header(w)) != LRUN_OK) return st;
    const uint8_t *p = src;
    while (n > 0) {
        if (w->cur >= w->n_tensors)
            return fail(w, lrun_fail(LRUN_E_ARG, "%s: %s: %zu bytes more than the declared tensors hold", fn,
                                     w->path, n));
        const wtensor *t = &w->tensors[w->cur];
        size_t k = t->bytes - w->cur_done;
        if (k > n) k = n;
        if ((st = out(w, p, k)) != LRUN_OK) return st;
        p += k;
        n -= k;
        w->cur_done += k;
        if (w->cur_done == t->bytes && (st = end_tensor(w)) != LRUN_OK) return st;
    }
    return LRUN_OK;
}

lrun_status lrun_gguf_writer_finish(lrun_gguf_writer *w)
{
    const char *fn = "lrun_gguf_writer_finish";
    lrun_status st = usable(w, fn);
    if (st != LRUN_OK) return st;
    if (!w->header_written && (st = write_header(w)) != LRUN_OK) return st;
    if (w->cur < w->n_tensors)
        return lrun_fail(LRUN_E_ARG, "%s: %s: tensor '%s' (#%lld) has %zu of its %zu bytes", fn, w->path,
                         w->tensors[w->cur].name, (long long)w->cur, w->cur_done, w->tensors[w->cur].bytes);
    if ((st = flush(w)) != LRUN_OK) return st;
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0)
        return fail(w, lrun_fail(LRUN_E_IO, "gguf writer: %s: close failed: %s", w->path, strerror(errno)));
    w->finished = 1;
    return LRUN_OK;
}
