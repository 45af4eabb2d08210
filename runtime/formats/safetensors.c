/* safetensors.c — one safetensors file: map it, check every rule of the
 * format (safetensors.h lists them, in the order checked), index its tensors.
 *
 * The header is parsed with cJSON, which keeps duplicate keys as separate
 * items; duplicates are found by sorting the names. JSON numbers arrive as
 * doubles, so offsets and dims must be exact integers below 2^53, far above
 * any file this machine can map. */
#include "formats/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/checked.h"
#include "core/error.h"
#include "core/mapguard.h"

#define EXACT_MAX 9007199254740992.0 /* 2^53: doubles are exact integers below it */

struct lrun_safetensors {
    char *path;
    const uint8_t *map;         /* (size) the whole file, read-only */
    size_t size;                /* bytes */
    size_t header_len;          /* N */
    int64_t n;
    lrun_st_tensor *t;          /* (n) in data order */
    int64_t *by_name;           /* (n) indices of t sorted by name */
    int64_t n_meta;
    char **meta;                /* (2·n_meta) key, value, … */
    cJSON *json;                /* the parsed header: names point into it */
};

// ---------------------------------------------------------------- dtypes

static const struct { const char *name; int bits; } dtypes[LRUN_ST_DTYPE_COUNT] = {
    [LRUN_ST_BOOL] = {"BOOL", 8},       [LRUN_ST_F4] = {"F4", 4},
    [LRUN_ST_F6_E2M3] = {"F6_E2M3", 6}, [LRUN_ST_F6_E3M2] = {"F6_E3M2", 6},
    [LRUN_ST_U8] = {"U8", 8},           [LRUN_ST_I8] = {"I8", 8},
    [LRUN_ST_F8_E5M2] = {"F8_E5M2", 8}, [LRUN_ST_F8_E4M3] = {"F8_E4M3", 8},
    [LRUN_ST_F8_E8M0] = {"F8_E8M0", 8}, [LRUN_ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [LRUN_ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
    [LRUN_ST_I16] = {"I16", 16},        [LRUN_ST_U16] = {"U16", 16},
    [LRUN_ST_F16] = {"F16", 16},        [LRUN_ST_BF16] = {"BF16", 16},
    [LRUN_ST_I32] = {"I32", 32},        [LRUN_ST_U32] = {"U32", 32},
    [LRUN_ST_F32] = {"F32", 32},        [LRUN_ST_C64] = {"C64", 64},
    [LRUN_ST_F64] = {"F64", 64},        [LRUN_ST_I64] = {"I64", 64},
    [LRUN_ST_U64] = {"U64", 64},
};

const char *lrun_st_dtype_name(lrun_st_dtype d) { return d >= 0 && d < LRUN_ST_DTYPE_COUNT ? dtypes[d].name : "?"; }
int lrun_st_dtype_bits(lrun_st_dtype d) { return d >= 0 && d < LRUN_ST_DTYPE_COUNT ? dtypes[d].bits : 0; }

int lrun_st_dtype_find(const char *s)
{
    for (int i = 0; s && i < LRUN_ST_DTYPE_COUNT; i++)
        if (strcmp(dtypes[i].name, s) == 0) return i;
    return -1;
}

// ---------------------------------------------------------------- errors

/* "safetensors <path>: tensor '<name>': <rule>: <detail>" (no tensor part when name is NULL). */
static lrun_status bad(const lrun_safetensors *f, const char *tensor, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static lrun_status bad(const lrun_safetensors *f, const char *tensor, const char *rule, const char *fmt, ...)
{
    char detail[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (tensor) return lrun_fail(LRUN_E_FORMAT, "safetensors %s: tensor '%.96s': %s: %s", f->path, tensor, rule, detail);
    return lrun_fail(LRUN_E_FORMAT, "safetensors %s: %s: %s", f->path, rule, detail);
}

// ---------------------------------------------------------------- header text

/* Offset of the first byte that breaks UTF-8 (overlongs, surrogates and
 * code points past U+10FFFF included), or len when s is valid. */
static size_t utf8_invalid_at(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const uint8_t c = s[i];
        int n;
        uint32_t cp, min;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xe0) == 0xc0) n = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) n = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) n = 3, cp = c & 0x07, min = 0x10000;
        else return i;
        if (len - i <= (size_t)n) return i;
        for (int k = 1; k <= n; k++) {
            if ((s[i + (size_t)k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + (size_t)k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += (size_t)n + 1;
    }
    return len;
}

/* Checks the header's bytes and parses them into f->json. */
static lrun_status parse_header(lrun_safetensors *f)
{
    if (f->size < 8) return bad(f, NULL, "size", "the file has %zu bytes, fewer than the 8 of the header length", f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->map[i];
    if (n > LRUN_SAFETENSORS_MAX_HEADER)
        return bad(f, NULL, "header-size", "header length %llu exceeds %u", (unsigned long long)n,
                   LRUN_SAFETENSORS_MAX_HEADER);
    if (n > f->size - 8)
        return bad(f, NULL, "header-bounds", "header length %llu runs past the end of the %zu-byte file",
                   (unsigned long long)n, f->size);
    f->header_len = (size_t)n;
    const uint8_t *h = f->map + 8;
    const size_t bad_at = utf8_invalid_at(h, f->header_len);
    if (bad_at < f->header_len) return bad(f, NULL, "utf8", "the header is not UTF-8 at byte %zu", bad_at);
    size_t lead = 0;
    while (lead < f->header_len && h[lead] == ' ') lead++;
    if (lead == f->header_len || h[lead] != '{')
        return bad(f, NULL, "header-start", "the header does not start with '{' (after spaces)");
    const char *end = NULL;
    f->json = cJSON_ParseWithLengthOpts((const char *)h, f->header_len, &end, 0);
    if (!f->json) {
        const size_t at = end ? (size_t)(end - (const char *)h) : 0;
        return bad(f, NULL, "json", "the header is not JSON (near byte %zu)", at);
    }
    for (size_t i = (size_t)(end - (const char *)h); i < f->header_len; i++)
        if (h[i] != ' ') return bad(f, NULL, "json", "byte %zu after the header's object is not a space", i);
    if (!cJSON_IsObject(f->json)) return bad(f, NULL, "object", "the header is not a JSON object");
    return LRUN_OK;
}

// ---------------------------------------------------------------- entries

/* A JSON number that is an integer in [0, 2^53). */
static int json_u53(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return 0;
    const double d = j->valuedouble;
    if (!(d >= 0.0) || d >= EXACT_MAX || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static lrun_status read_metadata(lrun_safetensors *f, const cJSON *m)
{
    if (!cJSON_IsObject(m)) return bad(f, NULL, "metadata", "__metadata__ is not an object of strings");
    int64_t n = 0;
    for (const cJSON *c = m->child; c; c = c->next) n++;
    f->meta = calloc((size_t)(2 * n + 1), sizeof *f->meta);
    if (!f->meta) return lrun_fail_oom((size_t)(2 * n + 1) * sizeof *f->meta, 0, "safetensors %s: metadata", f->path);
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return bad(f, NULL, "metadata", "__metadata__ value of '%.96s' is not a string", c->string);
        for (int64_t k = 0; k < f->n_meta; k++)
            if (strcmp(f->meta[2 * k], c->string) == 0)
                return bad(f, NULL, "duplicate", "__metadata__ key '%.96s' appears twice", c->string);
        f->meta[2 * f->n_meta] = c->string;
        f->meta[2 * f->n_meta + 1] = c->valuestring;
        f->n_meta++;
    }
    return LRUN_OK;
}

/* Entry e (named e->string) into t; *begin, *end its data offsets. */
static lrun_status read_entry(const lrun_safetensors *f, const cJSON *e, lrun_st_tensor *t, uint64_t *begin,
                              uint64_t *end)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e)) return bad(f, name, "entry", "not an object");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dt || !sh || !of) return bad(f, name, "entry", "needs dtype, shape and data_offsets");
    if (!cJSON_IsString(dt)) return bad(f, name, "dtype", "dtype is not a string");
    const int d = lrun_st_dtype_find(dt->valuestring);
    if (d < 0) return bad(f, name, "dtype", "unknown dtype '%.32s'", dt->valuestring);
    t->name = name;
    t->dtype = (lrun_st_dtype)d;
    if (!cJSON_IsArray(sh)) return bad(f, name, "shape", "shape is not an array");
    const int ndim = cJSON_GetArraySize(sh);
    if (ndim > LRUN_SAFETENSORS_MAX_DIMS)
        return bad(f, name, "shape", "%d dimensions; lrun reads at most %d", ndim, LRUN_SAFETENSORS_MAX_DIMS);
    t->ndim = ndim;
    uint64_t elems = 1;
    int overflow = 0, k = 0;
    for (const cJSON *c = sh->child; c; c = c->next, k++) {
        uint64_t v;
        if (!json_u53(c, &v)) return bad(f, name, "shape", "dimension %d is not a non-negative integer", k);
        t->shape[k] = (int64_t)v;
        overflow |= __builtin_mul_overflow(elems, v, &elems);
    }
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !json_u53(of->child, begin) ||
        !json_u53(of->child->next, end))
        return bad(f, name, "offsets", "data_offsets is not two non-negative integers");
    if (*end < *begin) return bad(f, name, "offsets", "end %llu is before begin %llu", (unsigned long long)*end,
                                  (unsigned long long)*begin);
    uint64_t bits;
    if (overflow || __builtin_mul_overflow(elems, (uint64_t)dtypes[d].bits, &bits))
        return bad(f, name, "overflow", "shape × %d bits overflows 64 bits", dtypes[d].bits);
    if (bits % 8 != 0)
        return bad(f, name, "sub-byte", "%llu elements of %s take %llu bits, not a whole byte",
                   (unsigned long long)elems, dtypes[d].name, (unsigned long long)bits);
    if (*end - *begin != bits / 8)
        return bad(f, name, "byte-size", "data_offsets span %llu bytes, the shape needs %llu",
                   (unsigned long long)(*end - *begin), (unsigned long long)(bits / 8));
    t->nbytes = (size_t)(bits / 8);
    return LRUN_OK;
}

// ---------------------------------------------------------------- layout

typedef struct span {
    uint64_t begin, end;
    int64_t i;                  /* the tensor's index in read order */
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

typedef struct named {
    const char *name;
    int64_t i;
} named;

static int named_cmp(const void *a, const void *b) { return strcmp(((const named *)a)->name, ((const named *)b)->name); }

/* f->by_name: the indices of f->t sorted by name. */
static lrun_status sort_names(lrun_safetensors *f)
{
    named *tmp = malloc((size_t)(f->n ? f->n : 1) * sizeof *tmp);
    if (!tmp) return lrun_fail_oom((size_t)f->n * sizeof *tmp, 0, "safetensors %s: name index", f->path);
    for (int64_t i = 0; i < f->n; i++) tmp[i] = (named){f->t[i].name, i};
    qsort(tmp, (size_t)f->n, sizeof *tmp, named_cmp);
    for (int64_t i = 0; i < f->n; i++) f->by_name[i] = tmp[i].i;
    free(tmp);
    return LRUN_OK;
}

/* Sorted by begin: back to back from 0, and ending where the file ends. */
static lrun_status check_layout(lrun_safetensors *f, span *s, const lrun_st_tensor *read)
{
    qsort(s, (size_t)f->n, sizeof *s, span_cmp);
    uint64_t at = 0;
    const char *prev = NULL;
    for (int64_t i = 0; i < f->n; i++) {
        const char *name = read[s[i].i].name;
        if (s[i].begin > at)
            return bad(f, name, "contiguous", "a hole: data begins at %llu, but %s%.96s%s ends at %llu",
                       (unsigned long long)s[i].begin, prev ? "'" : "", prev ? prev : "the data start",
                       prev ? "'" : "", (unsigned long long)at);
        if (s[i].begin < at)
            return bad(f, name, "contiguous", "overlaps '%.96s': begins at %llu, before its end %llu", prev,
                       (unsigned long long)s[i].begin, (unsigned long long)at);
        at = s[i].end;
        prev = name;
    }
    const uint64_t data = f->size - 8 - f->header_len;
    if (at != data)
        return bad(f, prev, "file-length", "8 + header %zu + data %llu = %llu bytes, but the file has %zu (%s bytes)",
                   f->header_len, (unsigned long long)at, (unsigned long long)(8 + f->header_len + at), f->size,
                   at < data ? "trailing" : "missing");
    const uint8_t *base = f->map + 8 + f->header_len;
    for (int64_t i = 0; i < f->n; i++) {
        f->t[i] = read[s[i].i];
        f->t[i].data = base + s[i].begin;
    }
    return LRUN_OK;
}

/* The names, sorted, for find and for the duplicate rule. */
static lrun_status index_names(lrun_safetensors *f)
{
    f->by_name = malloc((size_t)(f->n ? f->n : 1) * sizeof *f->by_name);
    if (!f->by_name) return lrun_fail_oom((size_t)f->n * sizeof *f->by_name, 0, "safetensors %s: name index", f->path);
    lrun_status st = sort_names(f);
    for (int64_t i = 1; st == LRUN_OK && i < f->n; i++)
        if (strcmp(f->t[f->by_name[i]].name, f->t[f->by_name[i - 1]].name) == 0)
            return bad(f, f->t[f->by_name[i]].name, "duplicate", "the name appears twice in the header");
    return st;
}

static lrun_status parse_tensors(lrun_safetensors *f)
{
    int64_t n = 0;
    const cJSON *meta = NULL;
    for (const cJSON *c = f->json->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (meta) return bad(f, NULL, "duplicate", "__metadata__ appears twice");
            meta = c;
        } else {
            n++;
        }
    }
    if (meta) {
        lrun_status st = read_metadata(f, meta);
        if (st != LRUN_OK) return st;
    }
    f->n = n;
    f->t = calloc((size_t)(n ? n : 1), sizeof *f->t);
    lrun_st_tensor *read = calloc((size_t)(n ? n : 1), sizeof *read);
    span *s = calloc((size_t)(n ? n : 1), sizeof *s);
    lrun_status st = LRUN_OK;
    if (!f->t || !read || !s) st = lrun_fail_oom((size_t)n * (sizeof *read + sizeof *s), 0, "safetensors %s: %lld "
                                                 "tensor records", f->path, (long long)n);
    int64_t i = 0;
    for (const cJSON *c = f->json->child; st == LRUN_OK && c; c = c->next) {
        if (c == meta) continue;
        s[i].i = i;
        st = read_entry(f, c, &read[i], &s[i].begin, &s[i].end);
        i++;
    }
    /* duplicates first: a repeated name would otherwise read as an overlap */
    if (st == LRUN_OK) {
        memcpy(f->t, read, (size_t)n * sizeof *read);
        st = index_names(f);
    }
    if (st == LRUN_OK) st = check_layout(f, s, read);
    if (st == LRUN_OK) st = sort_names(f); /* the data order moved the records: index again */
    free(read);
    free(s);
    return st;
}

// ---------------------------------------------------------------- open and close

static lrun_status map_file(lrun_safetensors *f)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lrun_fail(LRUN_E_IO, "safetensors %s: cannot open: %s", f->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lrun_fail(LRUN_E_IO, "safetensors %s: not a regular file", f->path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size > 0) {
        void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            const int e = errno;
            close(fd);
            return lrun_fail(LRUN_E_IO, "safetensors %s: cannot mmap %zu bytes: %s", f->path, f->size, strerror(e));
        }
        f->map = map;
        lrun_mapguard_add(map, f->size, f->path); /* a truncation in use: an error from the step (mapguard.h) */
    }
    close(fd); /* the mapping keeps the file */
    return LRUN_OK;
}

lrun_status lrun_safetensors_open(lrun_safetensors **out, const char *path)
{
    if (!out || !path) return lrun_fail(LRUN_E_ARG, "lrun_safetensors_open: out and path must not be NULL");
    *out = NULL;
    lrun_safetensors *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return lrun_fail_oom(sizeof *f, 0, "safetensors %s: reader", path);
    }
    lrun_status st = map_file(f);
    if (st == LRUN_OK) st = parse_header(f);
    if (st == LRUN_OK) st = parse_tensors(f);
    if (st != LRUN_OK) {
        lrun_safetensors_close(f);
        return st;
    }
    *out = f;
    return LRUN_OK;
}

void lrun_safetensors_close(lrun_safetensors *f)
{
    if (!f) return;
    if (f->map) {
        lrun_mapguard_remove(f->map);
        munmap((void *)f->map, f->size);
    }
    cJSON_Delete(f->json);
    free(f->t);
    free(f->by_name);
    free(f->meta);
    free(f->path);
    free(f);
}

// ---------------------------------------------------------------- queries

int64_t lrun_safetensors_count(const lrun_safetensors *f) { return f->n; }
const char *lrun_safetensors_path(const lrun_safetensors *f) { return f->path; }
size_t lrun_safetensors_file_bytes(const lrun_safetensors *f) { return f->size; }

const lrun_st_tensor *lrun_safetensors_tensor(const lrun_safetensors *f, int64_t i)
{
    return i >= 0 && i < f->n ? &f->t[i] : NULL;
}

int64_t lrun_safetensors_find(const lrun_safetensors *f, const char *name)
{
    int64_t lo = 0, hi = f->n;
    while (name && lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(f->t[f->by_name[mid]].name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

const char *lrun_safetensors_metadata(const lrun_safetensors *f, const char *key)
{
    for (int64_t k = 0; key && k < f->n_meta; k++)
        if (strcmp(f->meta[2 * k], key) == 0) return f->meta[2 * k + 1];
    return NULL;
}

const void *lrun_safetensors_data(const lrun_safetensors *f, size_t *len)
{
    *len = f->size - 8 - f->header_len;
    return f->map + 8 + f->header_len;
}
