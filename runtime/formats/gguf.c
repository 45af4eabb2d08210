/* gguf.c — the GGUF reader: maps a file read-only, checks every rule of the
 * format at open, then answers questions by indexing what it parsed.
 *
 * File layout (all little-endian; REFERENCE.md "GGUF", ggml docs/gguf.md):
 *   1. u32 magic: the bytes "GGUF".
 *   2. u32 version: 2 or 3 (1 had 32-bit counts; 3 only marks that
 *      big-endian files exist, which would fail the version check here).
 *   3. u64 tensor_count.
 *   4. u64 kv_count.
 *   5. kv_count key/value pairs, each:
 *        key:   u64 length + that many bytes (no NUL), unique, non-empty;
 *        u32 type (lrun_gguf_type, 0..12);
 *        value: a scalar of that type (bool is one byte, 0 or 1), or a string
 *               (u64 length + bytes), or an array: u32 element type (never
 *               another array), u64 count, count elements.
 *   6. tensor_count tensor infos, each:
 *        name:   string, 1..63 bytes, unique;
 *        u32 n_dims (1..4); u64 ne[n_dims], each > 0, ne[0] innermost and a
 *        multiple of the type's block size;
 *        u32 ggml type id; u64 offset from the data start, a multiple of
 *        the alignment.
 *   7. zero padding up to the next multiple of the alignment
 *      (general.alignment: a u32 power of two; 32 when absent).
 *   8. the data: tensor t's bytes are [data_start + offset, + bytes(t)),
 *      which must lie inside the file.
 *
 * Every read is bounded by the bytes remaining, every count by what the file
 * could hold before anything is allocated for it, and every product is
 * checked before it is used (REFERENCE.md "Hostile files").
 */
#include "core/checked.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/mapguard.h"
#include "formats/gguf_probes.h"
#include "lrun.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_HEADER_BYTES 24      /* magic, version, tensor_count, kv_count */
#define GGUF_NAME_MAX 64          /* tensor names are shorter than this */
#define GGUF_DEFAULT_ALIGNMENT 32
/* The fewest bytes a KV pair or a tensor info can take: they bound the
 * counts from the header before anything is allocated for them. */
#define GGUF_MIN_KV_BYTES (8 + 1 + 4 + 1)              /* key len, 1-byte key, type, u8 */
#define GGUF_MIN_TENSOR_BYTES (8 + 1 + 4 + 8 + 4 + 8)  /* name, n_dims, ne[0], type, offset */

// ---------------------------------------------------------------- records

typedef struct gguf_kv {
    char *key;                  /* NUL-terminated copy of the key */
    lrun_gguf_type type;
    union {
        uint64_t u;             /* u8, u16, u32, u64, bool */
        int64_t i;              /* i8, i16, i32, i64 */
        double f;               /* f32, f64 */
    } v;
    const uint8_t *data;        /* string: its bytes; array: its first element (in the mapping) */
    size_t len;                 /* string: bytes */
    lrun_gguf_type elem_type;   /* array: element type */
    int64_t count;              /* array: elements */
    size_t *str_offsets;        /* string array: (count) offset of element i's u64 length from data */
} gguf_kv;

typedef struct gguf_tensor {
    char name[GGUF_NAME_MAX];
    lrun_dtype dtype;
    int ndim;
    int64_t ne[LRUN_MAX_DIMS];  /* elements per axis, ne[0] innermost; unused axes 1 */
    size_t bytes;               /* bytes of the whole tensor */
    size_t offset;              /* from the data start, bytes */
} gguf_tensor;

struct lrun_gguf {
    const uint8_t *map;         /* the whole file, read-only */
    size_t size;                /* file bytes */
    uint32_t version;
    size_t alignment;           /* bytes */
    size_t data_offset;         /* start of tensor data, bytes from the file start */
    int64_t n_kv;
    gguf_kv *kv;                /* (n_kv) */
    int64_t n_tensors;
    gguf_tensor *tensors;       /* (n_tensors) */
    int64_t *kv_slots;          /* (kv_cap) open-addressed hash of keys: kv index or -1 */
    size_t kv_cap;              /* power of two */
    int64_t *tensor_slots;      /* (tensor_cap) same for tensor names */
    size_t tensor_cap;
    size_t index_probes;        /* slots looked at while indexing (formats/gguf_probes.h) */
};

// ---------------------------------------------------------------- names and hashing

static const char *gguf_type_name(uint32_t type)
{
    static const char *const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                        "bool", "string", "array", "u64", "i64", "f64"};
    return type < sizeof names / sizeof names[0] ? names[type] : "unknown";
}

/* Bytes of one scalar of a fixed-size type; 0 for string, array and unknown. */
static size_t gguf_type_size(uint32_t type)
{
    switch (type) {
    case LRUN_GGUF_TYPE_U8: case LRUN_GGUF_TYPE_I8: case LRUN_GGUF_TYPE_BOOL: return 1;
    case LRUN_GGUF_TYPE_U16: case LRUN_GGUF_TYPE_I16: return 2;
    case LRUN_GGUF_TYPE_U32: case LRUN_GGUF_TYPE_I32: case LRUN_GGUF_TYPE_F32: return 4;
    case LRUN_GGUF_TYPE_U64: case LRUN_GGUF_TYPE_I64: case LRUN_GGUF_TYPE_F64: return 8;
    default: return 0;
    }
}

/* ggml type ids that exist (so a file using one lrun lacks is "unsupported",
 * not "malformed"); gaps are ids ggml retired. */
static const char *ggml_type_name(uint32_t id)
{
    static const char *const names[] = {
        [0] = "f32", [1] = "f16", [2] = "q4_0", [3] = "q4_1", [6] = "q5_0", [7] = "q5_1",
        [8] = "q8_0", [9] = "q8_1", [10] = "q2_K", [11] = "q3_K", [12] = "q4_K", [13] = "q5_K",
        [14] = "q6_K", [15] = "q8_K", [16] = "iq2_xxs", [17] = "iq2_xs", [18] = "iq3_xxs",
        [19] = "iq1_s", [20] = "iq4_nl", [21] = "iq3_s", [22] = "iq2_s", [23] = "iq4_xs",
        [24] = "i8", [25] = "i16", [26] = "i32", [27] = "i64", [28] = "f64", [29] = "iq1_m",
        [30] = "bf16", [34] = "tq1_0", [35] = "tq2_0", [39] = "mxfp4"};
    return id < sizeof names / sizeof names[0] ? names[id] : NULL;
}

/* Finds name in an open-addressed table; returns the slot holding it, or the
 * empty slot where it would go. names(i) gives the name of entry i; probes,
 * when not NULL, counts the slots looked at. The hash is keyed per process
 * (core/hash.h): a file cannot choose names that share one cluster. */
static size_t slot_find(const int64_t *slots, size_t cap, const char *name,
                        const char *(*names)(const lrun_gguf *, int64_t), const lrun_gguf *g, size_t *probes)
{
    size_t i = lrun_hash_keyed(name, strlen(name)) & (cap - 1), n = 1;
    for (; slots[i] >= 0 && strcmp(names(g, slots[i]), name) != 0; n++) i = (i + 1) & (cap - 1);
    if (probes) *probes += n;
    return i;
}

static const char *kv_name(const lrun_gguf *g, int64_t i) { return g->kv[i].key; }
static const char *tensor_name(const lrun_gguf *g, int64_t i) { return g->tensors[i].name; }

/* A table with room for n entries at load factor <= 1/2. */
static lrun_status slots_init(int64_t n, int64_t **out, size_t *cap)
{
    size_t c = 16;
    while (c < (size_t)n * 2) c *= 2; /* n is bounded by the file size, so this cannot overflow */
    int64_t *slots = malloc(c * sizeof *slots);
    if (!slots) return lrun_fail_oom(c * sizeof *slots, 0, "gguf: hash table of %lld names", (long long)n);
    memset(slots, 0xff, c * sizeof *slots); /* every slot -1 */
    *out = slots;
    *cap = c;
    return LRUN_OK;
}

// ---------------------------------------------------------------- bounded reads

typedef struct cursor {
    const uint8_t *base;
    size_t size;                /* file bytes */
    size_t pos;                 /* next byte to read */
    const char *path;           /* for messages */
} cursor;

#define FAIL(c, ...) gguf_bad((c)->path, __VA_ARGS__)

static lrun_status gguf_bad(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static lrun_status gguf_bad(const char *path, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return lrun_fail(LRUN_E_FORMAT, "gguf: %s: %s", path, what);
}

static size_t left(const cursor *c) { return c->size - c->pos; }

/* Reads n bytes (n <= 8) into out as a little-endian integer. what names the
 * field for the message. */
static lrun_status read_le(cursor *c, size_t n, uint64_t *out, const char *what)
{
    if (n > left(c))
        return FAIL(c, "%s: needs %zu bytes at offset %zu, the file ends after %zu", what, n, c->pos, left(c));
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)c->base[c->pos + i] << (8 * i);
    c->pos += n;
    *out = v;
    return LRUN_OK;
}

static lrun_status read_u32(cursor *c, uint32_t *out, const char *what)
{
    uint64_t v = 0;
    lrun_status st = read_le(c, 4, &v, what);
    *out = (uint32_t)v;
    return st;
}

/* A string: u64 length, then the bytes (left in the mapping). */
static lrun_status read_str(cursor *c, const uint8_t **bytes, size_t *len, const char *what)
{
    uint64_t n = 0;
    lrun_status st = read_le(c, 8, &n, what);
    if (st != LRUN_OK) return st;
    if (n > left(c))
        return FAIL(c, "%s: string length %llu runs past the end of the file (offset %zu, %zu bytes left)",
                    what, (unsigned long long)n, c->pos, left(c));
    *bytes = c->base + c->pos;
    *len = (size_t)n;
    c->pos += (size_t)n;
    return LRUN_OK;
}

static double f32_bits(uint64_t bits)
{
    uint32_t u = (uint32_t)bits;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static double f64_bits(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static int64_t sign_extend(uint64_t v, size_t bytes)
{
    unsigned shift = 64 - 8 * (unsigned)bytes;
    return (int64_t)(v << shift) >> shift;
}

// ---------------------------------------------------------------- key/value pairs

/* Reads one scalar (not string, not array) of type into kv->v. */
static lrun_status read_scalar(cursor *c, uint32_t type, gguf_kv *kv, const char *what)
{
    uint64_t raw;
    size_t n = gguf_type_size(type);
    lrun_status st = read_le(c, n, &raw, what);
    if (st != LRUN_OK) return st;
    switch (type) {
    case LRUN_GGUF_TYPE_I8: case LRUN_GGUF_TYPE_I16: case LRUN_GGUF_TYPE_I32: case LRUN_GGUF_TYPE_I64:
        kv->v.i = sign_extend(raw, n);
        break;
    case LRUN_GGUF_TYPE_F32: kv->v.f = f32_bits(raw); break;
    case LRUN_GGUF_TYPE_F64: kv->v.f = f64_bits(raw); break;
    case LRUN_GGUF_TYPE_BOOL:
        if (raw > 1) return FAIL(c, "%s: bool value %llu is neither 0 nor 1", what, (unsigned long long)raw);
        kv->v.u = raw;
        break;
    default: kv->v.u = raw; break;
    }
    return LRUN_OK;
}

static lrun_status read_array(cursor *c, gguf_kv *kv, const char *what)
{
    uint32_t et = 0;
    uint64_t count = 0;
    lrun_status st = read_u32(c, &et, what);
    if (st == LRUN_OK) st = read_le(c, 8, &count, what);
    if (st != LRUN_OK) return st;
    if (et == LRUN_GGUF_TYPE_ARRAY) return FAIL(c, "%s: nested array (arrays of arrays are not allowed)", what);
    if (et > LRUN_GGUF_TYPE_F64) return FAIL(c, "%s: unknown array element type %u", what, et);
    kv->elem_type = (lrun_gguf_type)et;
    kv->data = c->base + c->pos;
    /* Each element takes at least its fixed size (8 bytes of length for a
     * string), so a count the rest of the file cannot hold is rejected
     * before anything is allocated. */
    size_t elem = et == LRUN_GGUF_TYPE_STRING ? 8 : gguf_type_size(et);
    if (count > left(c) / elem)
        return FAIL(c, "%s: array of %llu %s elements runs past the end of the file (%zu bytes left)", what,
                    (unsigned long long)count, gguf_type_name(et), left(c));
    kv->count = (int64_t)count;
    if (et == LRUN_GGUF_TYPE_STRING) {
        kv->str_offsets = malloc((count ? count : 1) * sizeof *kv->str_offsets);
        if (!kv->str_offsets)
            return lrun_fail_oom(count * sizeof *kv->str_offsets, 0, "gguf: %s: %s: string offsets", c->path, what);
        for (uint64_t i = 0; i < count; i++) {
            const uint8_t *b;
            size_t n;
            kv->str_offsets[i] = (size_t)(c->base + c->pos - kv->data);
            st = read_str(c, &b, &n, what);
            if (st != LRUN_OK) return lrun_fail_context(st, "element %llu", (unsigned long long)i);
        }
        return LRUN_OK;
    }
    if (et == LRUN_GGUF_TYPE_BOOL)
        for (uint64_t i = 0; i < count; i++)
            if (kv->data[i] > 1)
                return FAIL(c, "%s: bool element %llu is %u, neither 0 nor 1", what, (unsigned long long)i, kv->data[i]);
    c->pos += (size_t)count * elem;
    return LRUN_OK;
}

static lrun_status read_kv(cursor *c, lrun_gguf *g, int64_t index)
{
    gguf_kv *kv = &g->kv[index];
    char what[160];
    const uint8_t *key;
    size_t key_len;
    uint32_t type = 0;

    snprintf(what, sizeof what, "kv #%lld: key", (long long)index);
    lrun_status st = read_str(c, &key, &key_len, what);
    if (st != LRUN_OK) return st;
    if (key_len == 0) return FAIL(c, "kv #%lld: empty key", (long long)index);
    if (memchr(key, 0, key_len)) return FAIL(c, "kv #%lld: key contains a NUL byte", (long long)index);
    kv->key = malloc(key_len + 1);
    if (!kv->key) return lrun_fail_oom(key_len + 1, 0, "gguf: %s: kv #%lld key", c->path, (long long)index);
    memcpy(kv->key, key, key_len);
    kv->key[key_len] = 0;

    size_t slot = slot_find(g->kv_slots, g->kv_cap, kv->key, kv_name, g, &g->index_probes);
    if (g->kv_slots[slot] >= 0)
        return FAIL(c, "kv #%lld '%.80s': duplicate key (first at kv #%lld)", (long long)index, kv->key,
                    (long long)g->kv_slots[slot]);
    g->kv_slots[slot] = index;

    snprintf(what, sizeof what, "kv #%lld '%.80s'", (long long)index, kv->key);
    st = read_u32(c, &type, what);
    if (st != LRUN_OK) return st;
    if (type > LRUN_GGUF_TYPE_F64) return FAIL(c, "%s: unknown value type %u", what, type);
    kv->type = (lrun_gguf_type)type;
    if (type == LRUN_GGUF_TYPE_STRING) return read_str(c, &kv->data, &kv->len, what);
    if (type == LRUN_GGUF_TYPE_ARRAY) return read_array(c, kv, what);
    return read_scalar(c, type, kv, what);
}

/* general.alignment: a u32, non-zero power of two; 32 when absent. */
static lrun_status find_alignment(const cursor *c, lrun_gguf *g)
{
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = lrun_gguf_find_key(g, "general.alignment");
    if (i < 0) return LRUN_OK;
    const gguf_kv *kv = &g->kv[i];
    if (kv->type != LRUN_GGUF_TYPE_U32)
        return FAIL(c, "general.alignment: must be a u32, found type %s", gguf_type_name(kv->type));
    if (kv->v.u == 0 || (kv->v.u & (kv->v.u - 1)) != 0)
        return FAIL(c, "general.alignment: %llu is not a non-zero power of two", (unsigned long long)kv->v.u);
    g->alignment = (size_t)kv->v.u;
    return LRUN_OK;
}

// ---------------------------------------------------------------- tensor infos

static lrun_status read_tensor_info(cursor *c, lrun_gguf *g, int64_t index)
{
    gguf_tensor *t = &g->tensors[index];
    char what[160];
    const uint8_t *name;
    size_t name_len;
    uint32_t n_dims = 0, type = 0;
    uint64_t v = 0;

    snprintf(what, sizeof what, "tensor #%lld: name", (long long)index);
    lrun_status st = read_str(c, &name, &name_len, what);
    if (st != LRUN_OK) return st;
    if (name_len == 0) return FAIL(c, "tensor #%lld: empty name", (long long)index);
    if (name_len >= GGUF_NAME_MAX)
        return FAIL(c, "tensor #%lld '%.*s…': name is %zu bytes, the limit is %d", (long long)index, 40,
                    (const char *)name, name_len, GGUF_NAME_MAX - 1);
    if (memchr(name, 0, name_len)) return FAIL(c, "tensor #%lld: name contains a NUL byte", (long long)index);
    memcpy(t->name, name, name_len);
    t->name[name_len] = 0;
    size_t slot = slot_find(g->tensor_slots, g->tensor_cap, t->name, tensor_name, g, &g->index_probes);
    if (g->tensor_slots[slot] >= 0)
        return FAIL(c, "tensor '%s' (#%lld): duplicate tensor name (first at #%lld)", t->name, (long long)index,
                    (long long)g->tensor_slots[slot]);
    g->tensor_slots[slot] = index;

    snprintf(what, sizeof what, "tensor '%s' (#%lld)", t->name, (long long)index);
    st = read_u32(c, &n_dims, what);
    if (st != LRUN_OK) return st;
    if (n_dims == 0 || n_dims > LRUN_MAX_DIMS)
        return FAIL(c, "%s: n_dims is %u, must be 1..%d", what, n_dims, LRUN_MAX_DIMS);
    t->ndim = (int)n_dims;
    int64_t nelem = 1;
    for (int d = 0; d < LRUN_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        st = read_le(c, 8, &v, what);
        if (st != LRUN_OK) return st;
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return FAIL(c, "%s: ne[%u] = %llu, must be in 1..2^63-1", what, d, (unsigned long long)v);
        t->ne[d] = (int64_t)v;
        /* checked by division before the product is formed */
        if (t->ne[d] > INT64_MAX / nelem)
            return FAIL(c, "%s: element count overflows int64 at ne[%u] = %lld", what, d, (long long)t->ne[d]);
        nelem *= t->ne[d];
    }

    st = read_u32(c, &type, what);
    if (st != LRUN_OK) return st;
    if (!lrun_dtype_is_supported((int)type)) {
        const char *known = ggml_type_name(type);
        if (known)
            return lrun_fail(LRUN_E_UNSUPPORTED, "gguf: %s: %s: type %s (id %u) is not supported by lrun",
                             c->path, what, known, type);
        return FAIL(c, "%s: unknown ggml type id %u", what, type);
    }
    t->dtype = (lrun_dtype)type;
    int64_t block = lrun_dtype_block_elems(t->dtype);
    if (block <= 0 || t->ne[0] % block != 0)
        return FAIL(c, "%s: ne[0] = %lld is not a multiple of the %s block size %lld", what, (long long)t->ne[0],
                    lrun_dtype_name(t->dtype), (long long)block);
    size_t row_bytes;
    if (lrun_dtype_row_bytes(t->dtype, t->ne[0], &row_bytes) != LRUN_OK)
        return FAIL(c, "%s: row of %lld %s elements overflows size_t", what, (long long)t->ne[0],
                    lrun_dtype_name(t->dtype));
    if (!lrun_size_mul(row_bytes, (size_t)(nelem / t->ne[0]), &t->bytes))
        return FAIL(c, "%s: byte size overflows size_t (%lld rows of %zu bytes)", what,
                    (long long)(nelem / t->ne[0]), row_bytes);

    st = read_le(c, 8, &v, what);
    if (st != LRUN_OK) return st;
    if (v > SIZE_MAX) return FAIL(c, "%s: offset %llu does not fit in size_t", what, (unsigned long long)v);
    t->offset = (size_t)v;
    return LRUN_OK;
}

/* Offsets are checked once the data start is known: after every info. */
static lrun_status check_tensor_data(const cursor *c, const lrun_gguf *g, int64_t index)
{
    const gguf_tensor *t = &g->tensors[index];
    size_t begin, end;
    if (t->offset % g->alignment != 0)
        return FAIL(c, "tensor '%s' (#%lld): offset %zu is not a multiple of the alignment %zu", t->name,
                    (long long)index, t->offset, g->alignment);
    if (!lrun_size_add(g->data_offset, t->offset, &begin) || !lrun_size_add(begin, t->bytes, &end))
        return FAIL(c, "tensor '%s' (#%lld): data start %zu + offset %zu + %zu bytes overflows", t->name,
                    (long long)index, g->data_offset, t->offset, t->bytes);
    if (end > g->size)
        return FAIL(c, "tensor '%s' (#%lld): data [%zu, %zu) runs past the end of the file (%zu bytes)", t->name,
                    (long long)index, begin, end, g->size);
    return LRUN_OK;
}

// ---------------------------------------------------------------- open and close

static lrun_status parse(cursor *c, lrun_gguf *g)
{
    uint64_t magic = 0, version = 0, n_tensors = 0, n_kv = 0;
    lrun_status st;

    if (c->size < GGUF_HEADER_BYTES)
        return FAIL(c, "file is %zu bytes, shorter than the %d-byte header", c->size, GGUF_HEADER_BYTES);
    read_le(c, 4, &magic, "magic");
    if (memcmp(c->base, "GGUF", 4) != 0)
        return FAIL(c, "bad magic %02x %02x %02x %02x (expected \"GGUF\")", c->base[0], c->base[1], c->base[2],
                    c->base[3]);
    read_le(c, 4, &version, "version");
    if (version != 2 && version != 3) {
        if (version == 0x02000000u || version == 0x03000000u)
            return FAIL(c, "version 0x%08llx: a big-endian file, lrun reads little-endian GGUF",
                        (unsigned long long)version);
        return FAIL(c, "unsupported version %llu (lrun reads versions 2 and 3)", (unsigned long long)version);
    }
    g->version = (uint32_t)version;
    read_le(c, 8, &n_tensors, "tensor_count");
    read_le(c, 8, &n_kv, "kv_count");
    if (n_kv > left(c) / GGUF_MIN_KV_BYTES)
        return FAIL(c, "kv_count %llu is more than the file could hold (%zu bytes after the header)",
                    (unsigned long long)n_kv, left(c));
    if (n_tensors > left(c) / GGUF_MIN_TENSOR_BYTES)
        return FAIL(c, "tensor_count %llu is more than the file could hold (%zu bytes after the header)",
                    (unsigned long long)n_tensors, left(c));

    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors)
        return lrun_fail_oom(n_kv * sizeof *g->kv + n_tensors * sizeof *g->tensors, 0,
                             "gguf: %s: %llu kv records and %llu tensor records", c->path,
                             (unsigned long long)n_kv, (unsigned long long)n_tensors);
    if ((st = slots_init((int64_t)n_kv, &g->kv_slots, &g->kv_cap)) != LRUN_OK) return st;
    if ((st = slots_init((int64_t)n_tensors, &g->tensor_slots, &g->tensor_cap)) != LRUN_OK) return st;

    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv = (int64_t)i + 1; /* so close() frees what this record holds */
        if ((st = read_kv(c, g, (int64_t)i)) != LRUN_OK) return st;
    }
    if ((st = find_alignment(c, g)) != LRUN_OK) return st;
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors = (int64_t)i + 1;
        if ((st = read_tensor_info(c, g, (int64_t)i)) != LRUN_OK) return st;
    }
    if (!lrun_size_align_up(c->pos, g->alignment, &g->data_offset))
        return FAIL(c, "padding the end of the tensor infos (%zu) to %zu overflows", c->pos, g->alignment);
    if (g->data_offset > c->size) {
        /* A file without tensors may end before its (empty) data section. */
        if (n_tensors != 0)
            return FAIL(c, "tensor data would start at %zu, past the end of the file (%zu bytes)",
                        g->data_offset, c->size);
        g->data_offset = c->size;
    }
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((st = check_tensor_data(c, g, i)) != LRUN_OK) return st;
    return LRUN_OK;
}

lrun_status lrun_gguf_open(lrun_gguf **out, const char *path)
{
    if (!out || !path) return lrun_fail(LRUN_E_ARG, "lrun_gguf_open: out and path must not be NULL");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lrun_fail(LRUN_E_IO, "gguf: %s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return lrun_fail(LRUN_E_IO, "gguf: %s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return lrun_fail(LRUN_E_IO, "gguf: %s: not a regular file", path);
    }
    lrun_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        close(fd);
        return lrun_fail_oom(sizeof *g, 0, "gguf: %s: reader", path);
    }
    g->size = (size_t)sb.st_size;
    if (g->size >= GGUF_HEADER_BYTES) {
        void *map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(g);
            return lrun_fail(LRUN_E_IO, "gguf: %s: cannot mmap %zu bytes: %s", path, (size_t)sb.st_size, strerror(e));
        }
        g->map = map;
        lrun_mapguard_add(map, g->size, path); /* a truncation in use: an error from the step (mapguard.h) */
    }
    close(fd); /* the mapping keeps the file */

    cursor c = {g->map, g->size, 0, path};
    /* the header, metadata and tensor infos are read from the mapping: a
     * file truncated meanwhile is an error naming it (core/mapguard.h) */
    const unsigned long g0 = lrun_mapguard_begin();
    lrun_status st = parse(&c, g);
    char what[600];
    snprintf(what, sizeof what, "gguf: %s: reading its header", path);
    st = lrun_mapguard_end(g0, st, what);
    if (st != LRUN_OK) {
        lrun_gguf_close(g);
        return st;
    }
    *out = g;
    return LRUN_OK;
}

void lrun_gguf_close(lrun_gguf *g)
{
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].str_offsets);
    }
    free(g->kv);
    free(g->tensors);
    free(g->kv_slots);
    free(g->tensor_slots);
    if (g->map) {
        lrun_mapguard_remove(g->map);
        munmap((void *)g->map, g->size);
    }
    free(g);
}

// ---------------------------------------------------------------- file accessors

uint32_t lrun_gguf_version(const lrun_gguf *g) { return g->version; }
size_t lrun_gguf_file_bytes(const lrun_gguf *g) { return g->size; }
size_t lrun_gguf_alignment(const lrun_gguf *g) { return g->alignment; }
size_t lrun_gguf_data_offset(const lrun_gguf *g) { return g->data_offset; }

// ---------------------------------------------------------------- key/value accessors

int64_t lrun_gguf_kv_count(const lrun_gguf *g) { return g->n_kv; }

int64_t lrun_gguf_find_key(const lrun_gguf *g, const char *key)
{
    if (!key) return -1;
    return g->kv_slots[slot_find(g->kv_slots, g->kv_cap, key, kv_name, g, NULL)];
}

const char *lrun_gguf_key(const lrun_gguf *g, int64_t kv)
{
    return kv >= 0 && kv < g->n_kv ? g->kv[kv].key : NULL;
}

lrun_gguf_type lrun_gguf_kv_type(const lrun_gguf *g, int64_t kv)
{
    return kv >= 0 && kv < g->n_kv ? g->kv[kv].type : (lrun_gguf_type)-1;
}

/* The record for kv, or NULL with LRUN_E_ARG set. */
static const gguf_kv *kv_at(const lrun_gguf *g, int64_t kv, const char *fn)
{
    if (!g || kv < 0 || kv >= g->n_kv) {
        lrun_fail(LRUN_E_ARG, "%s: kv index %lld out of range [0, %lld)", fn, (long long)kv,
                  (long long)(g ? g->n_kv : 0));
        return NULL;
    }
    return &g->kv[kv];
}

static lrun_status type_mismatch(const gguf_kv *kv, const char *fn, const char *want)
{
    return lrun_fail(LRUN_E_ARG, "%s: '%s' is %s, not %s", fn, kv->key, gguf_type_name(kv->type), want);
}

/* Integer of type from the raw little-endian bytes p, as int64 when it fits. */
static int int_from(lrun_gguf_type type, const uint8_t *p, int64_t *out)
{
    size_t n = gguf_type_size(type);
    uint64_t raw = 0;
    for (size_t i = 0; i < n; i++) raw |= (uint64_t)p[i] << (8 * i);
    switch (type) {
    case LRUN_GGUF_TYPE_U8: case LRUN_GGUF_TYPE_U16: case LRUN_GGUF_TYPE_U32: case LRUN_GGUF_TYPE_U64:
        if (raw > (uint64_t)INT64_MAX) return 0;
        *out = (int64_t)raw;
        return 1;
    case LRUN_GGUF_TYPE_I8: case LRUN_GGUF_TYPE_I16: case LRUN_GGUF_TYPE_I32: case LRUN_GGUF_TYPE_I64:
        *out = sign_extend(raw, n);
        return 1;
    default: return 0;
    }
}

static int is_int_type(lrun_gguf_type t)
{
    return t <= LRUN_GGUF_TYPE_I32 || t == LRUN_GGUF_TYPE_U64 || t == LRUN_GGUF_TYPE_I64;
}

lrun_status lrun_gguf_get_i64(const lrun_gguf *g, int64_t kv, int64_t *out)
{
    const gguf_kv *r = kv_at(g, kv, "lrun_gguf_get_i64");
    if (!r) return LRUN_E_ARG;
    if (!is_int_type(r->type)) return type_mismatch(r, "lrun_gguf_get_i64", "an integer");
    if (r->type == LRUN_GGUF_TYPE_I8 || r->type == LRUN_GGUF_TYPE_I16 || r->type == LRUN_GGUF_TYPE_I32 ||
        r->type == LRUN_GGUF_TYPE_I64) {
        *out = r->v.i;
        return LRUN_OK;
    }
    if (r->v.u > (uint64_t)INT64_MAX)
        return lrun_fail(LRUN_E_ARG, "lrun_gguf_get_i64: '%s' = %llu does not fit in int64", r->key,
                         (unsigned long long)r->v.u);
    *out = (int64_t)r->v.u;
    return LRUN_OK;
}

lrun_status lrun_gguf_get_f64(const lrun_gguf *g, int64_t kv, double *out)
{
    const gguf_kv *r = kv_at(g, kv, "lrun_gguf_get_f64");
    if (!r) return LRUN_E_ARG;
    if (r->type != LRUN_GGUF_TYPE_F32 && r->type != LRUN_GGUF_TYPE_F64)
        return type_mismatch(r, "lrun_gguf_get_f64", "f32 or f64");
    *out = r->v.f;
    return LRUN_OK;
}

lrun_status lrun_gguf_get_bool(const lrun_gguf *g, int64_t kv, int *out)
{
    const gguf_kv *r = kv_at(g, kv, "lrun_gguf_get_bool");
    if (!r) return LRUN_E_ARG;
    if (r->type != LRUN_GGUF_TYPE_BOOL) return type_mismatch(r, "lrun_gguf_get_bool", "bool");
    *out = (int)r->v.u;
    return LRUN_OK;
}

lrun_status lrun_gguf_get_str(const lrun_gguf *g, int64_t kv, const char **str, size_t *len)
{
    const gguf_kv *r = kv_at(g, kv, "lrun_gguf_get_str");
    if (!r) return LRUN_E_ARG;
    if (r->type != LRUN_GGUF_TYPE_STRING) return type_mismatch(r, "lrun_gguf_get_str", "string");
    *str = (const char *)r->data;
    *len = r->len;
    return LRUN_OK;
}

lrun_status lrun_gguf_get_arr(const lrun_gguf *g, int64_t kv, lrun_gguf_type *elem_type, int64_t *count)
{
    const gguf_kv *r = kv_at(g, kv, "lrun_gguf_get_arr");
    if (!r) return LRUN_E_ARG;
    if (r->type != LRUN_GGUF_TYPE_ARRAY) return type_mismatch(r, "lrun_gguf_get_arr", "array");
    *elem_type = r->elem_type;
    *count = r->count;
    return LRUN_OK;
}

/* The array record for kv with element i in range, or NULL with LRUN_E_ARG set. */
static const gguf_kv *arr_elem(const lrun_gguf *g, int64_t kv, int64_t i, const char *fn)
{
    const gguf_kv *r = kv_at(g, kv, fn);
    if (!r) return NULL;
    if (r->type != LRUN_GGUF_TYPE_ARRAY) {
        type_mismatch(r, fn, "array");
        return NULL;
    }
    if (i < 0 || i >= r->count) {
        lrun_fail(LRUN_E_ARG, "%s: '%s': index %lld out of range [0, %lld)", fn, r->key, (long long)i,
                  (long long)r->count);
        return NULL;
    }
    return r;
}

lrun_status lrun_gguf_get_arr_i64(const lrun_gguf *g, int64_t kv, int64_t i, int64_t *out)
{
    const gguf_kv *r = arr_elem(g, kv, i, "lrun_gguf_get_arr_i64");
    if (!r) return LRUN_E_ARG;
    if (!is_int_type(r->elem_type))
        return lrun_fail(LRUN_E_ARG, "lrun_gguf_get_arr_i64: '%s' holds %s, not integers", r->key,
                         gguf_type_name(r->elem_type));
    if (!int_from(r->elem_type, r->data + (size_t)i * gguf_type_size(r->elem_type), out))
        return lrun_fail(LRUN_E_ARG, "lrun_gguf_get_arr_i64: '%s'[%lld] does not fit in int64", r->key, (long long)i);
    return LRUN_OK;
}

lrun_status lrun_gguf_get_arr_f64(const lrun_gguf *g, int64_t kv, int64_t i, double *out)
{
    const gguf_kv *r = arr_elem(g, kv, i, "lrun_gguf_get_arr_f64");
    if (!r) return LRUN_E_ARG;
    const uint8_t *p = r->data + (size_t)i * gguf_type_size(r->elem_type);
    uint64_t raw = 0;
    if (r->elem_type == LRUN_GGUF_TYPE_F32) {
        for (int b = 0; b < 4; b++) raw |= (uint64_t)p[b] << (8 * b);
        *out = f32_bits(raw);
    } else if (r->elem_type == LRUN_GGUF_TYPE_F64) {
        for (int b = 0; b < 8; b++) raw |= (uint64_t)p[b] << (8 * b);
        *out = f64_bits(raw);
    } else {
        return lrun_fail(LRUN_E_ARG, "lrun_gguf_get_arr_f64: '%s' holds %s, not f32 or f64", r->key,
                         gguf_type_name(r->elem_type));
    }
    return LRUN_OK;
}

lrun_status lrun_gguf_get_arr_str(const lrun_gguf *g, int64_t kv, int64_t i, const char **str, size_t *len)
{
    const gguf_kv *r = arr_elem(g, kv, i, "lrun_gguf_get_arr_str");
    if (!r) return LRUN_E_ARG;
    if (r->elem_type != LRUN_GGUF_TYPE_STRING)
        return lrun_fail(LRUN_E_ARG, "lrun_gguf_get_arr_str: '%s' holds %s, not strings", r->key,
                         gguf_type_name(r->elem_type));
    const uint8_t *p = r->data + r->str_offsets[i];
    uint64_t n = 0;
    for (int b = 0; b < 8; b++) n |= (uint64_t)p[b] << (8 * b);
    *str = (const char *)(p + 8);
    *len = (size_t)n; /* bounded at open */
    return LRUN_OK;
}

// ---------------------------------------------------------------- tensor accessors

int64_t lrun_gguf_tensor_count(const lrun_gguf *g) { return g->n_tensors; }

int64_t lrun_gguf_find_tensor(const lrun_gguf *g, const char *name)
{
    if (!name) return -1;
    return g->tensor_slots[slot_find(g->tensor_slots, g->tensor_cap, name, tensor_name, g, NULL)];
}

static int tensor_ok(const lrun_gguf *g, int64_t t) { return g && t >= 0 && t < g->n_tensors; }

const char *lrun_gguf_tensor_name(const lrun_gguf *g, int64_t t)
{
    return tensor_ok(g, t) ? g->tensors[t].name : NULL;
}

lrun_dtype lrun_gguf_tensor_dtype(const lrun_gguf *g, int64_t t)
{
    return tensor_ok(g, t) ? g->tensors[t].dtype : (lrun_dtype)-1;
}

int lrun_gguf_tensor_ndim(const lrun_gguf *g, int64_t t) { return tensor_ok(g, t) ? g->tensors[t].ndim : 0; }

int64_t lrun_gguf_tensor_dim(const lrun_gguf *g, int64_t t, int axis)
{
    if (!tensor_ok(g, t) || axis < 0) return 0;
    return axis < LRUN_MAX_DIMS ? g->tensors[t].ne[axis] : 1;
}

size_t lrun_gguf_tensor_bytes(const lrun_gguf *g, int64_t t) { return tensor_ok(g, t) ? g->tensors[t].bytes : 0; }

size_t lrun_gguf_tensor_offset(const lrun_gguf *g, int64_t t)
{
    return tensor_ok(g, t) ? g->tensors[t].offset : 0;
}

const void *lrun_gguf_tensor_data(const lrun_gguf *g, int64_t t)
{
    return tensor_ok(g, t) ? g->map + g->data_offset + g->tensors[t].offset : NULL;
}

size_t lrun_gguf_index_probes(const lrun_gguf *g) { return g ? g->index_probes : 0; }
