/* test_gguf.c — the GGUF reader and writer.
 *
 * A writer→reader round trip over every kind of key/value and several tensor
 * types; a hand-built file holding every scalar type; the real default model
 * (LRUN_MODEL); one hand-built bad file per validation rule, each breaking
 * exactly that rule of an otherwise valid file; and a truncation sweep.
 */
#include "check.h"
#include "lrun.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];   /* a private temporary directory */
static char path[128]; /* the file under test */

// ---------------------------------------------------------------- a byte-buffer builder

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) { perror("realloc"); exit(2); }
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void le(buf *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        uint8_t x = (uint8_t)(v >> (8 * i));
        put(b, &x, 1);
    }
}

static void u8(buf *b, uint8_t v) { le(b, v, 1); }
static void u32(buf *b, uint32_t v) { le(b, v, 4); }
static void u64(buf *b, uint64_t v) { le(b, v, 8); }
static void strn(buf *b, const char *s, size_t n) { u64(b, n); put(b, s, n); }
static void str(buf *b, const char *s) { strn(b, s, strlen(s)); }
static void pad(buf *b, size_t align) { while (b->len % align) u8(b, 0); }

static void save(const buf *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, n, f) != n || fclose(f) != 0) { perror(path); exit(2); }
}

/* Opens path; returns the status, closing the file on success. */
static lrun_status try_open(void)
{
    lrun_gguf *g = NULL;
    lrun_status st = lrun_gguf_open(&g, path);
    if (st == LRUN_OK) lrun_gguf_close(g);
    return st;
}

// ---------------------------------------------------------------- the faults

/* Each fault changes one field of the valid file built below. */
enum fault {
    F_NONE, F_MAGIC, F_VERSION_0, F_VERSION_1, F_VERSION_4, F_BIG_ENDIAN, F_KV_COUNT, F_TENSOR_COUNT,
    F_KEY_LEN, F_KEY_EMPTY, F_KEY_NUL, F_DUP_KEY, F_STR_LEN, F_KV_TYPE, F_BOOL, F_ARR_COUNT, F_ARR_STR_COUNT,
    F_ARR_ELEM_TYPE, F_NESTED, F_BOOL_ELEM, F_ALIGN_TYPE, F_ALIGN_ZERO, F_ALIGN_NPOT, F_NAME_LEN, F_NAME_EMPTY,
    F_NAME_LONG, F_NAME_DUP, F_NDIMS_0, F_NDIMS_5, F_DIM_0, F_DIM_NEG, F_NELEM_OVERFLOW, F_BYTES_OVERFLOW,
    F_TYPE_UNKNOWN, F_TYPE_UNSUPPORTED, F_BLOCK, F_OFFSET_UNALIGNED, F_OFFSET_OVERFLOW, F_DATA_PAST_END,
    F_DATA_START, F_SHORT_HEADER, F_COUNT
};

static const struct { const char *rule; const char *message; lrun_status status; } faults[F_COUNT] = {
    [F_MAGIC] = {"bad magic", "bad magic", LRUN_E_FORMAT},
    [F_VERSION_0] = {"version 0", "unsupported version 0", LRUN_E_FORMAT},
    [F_VERSION_1] = {"version 1", "unsupported version 1", LRUN_E_FORMAT},
    [F_VERSION_4] = {"version 4", "unsupported version 4", LRUN_E_FORMAT},
    [F_BIG_ENDIAN] = {"big-endian file", "big-endian", LRUN_E_FORMAT},
    [F_KV_COUNT] = {"kv_count larger than the file", "kv_count", LRUN_E_FORMAT},
    [F_TENSOR_COUNT] = {"tensor_count larger than the file", "tensor_count", LRUN_E_FORMAT},
    [F_KEY_LEN] = {"key length past the end", "key: string length", LRUN_E_FORMAT},
    [F_KEY_EMPTY] = {"empty key", "empty key", LRUN_E_FORMAT},
    [F_KEY_NUL] = {"key with a NUL byte", "NUL byte", LRUN_E_FORMAT},
    [F_DUP_KEY] = {"duplicate key", "duplicate key", LRUN_E_FORMAT},
    [F_STR_LEN] = {"string value length past the end", "'general.architecture': string length", LRUN_E_FORMAT},
    [F_KV_TYPE] = {"unknown value type", "unknown value type 13", LRUN_E_FORMAT},
    [F_BOOL] = {"bool not 0/1", "bool value 2 is neither 0 nor 1", LRUN_E_FORMAT},
    [F_ARR_COUNT] = {"array count past the end", "array of", LRUN_E_FORMAT},
    [F_ARR_STR_COUNT] = {"string array count past the end", "array of", LRUN_E_FORMAT},
    [F_ARR_ELEM_TYPE] = {"unknown array element type", "unknown array element type", LRUN_E_FORMAT},
    [F_NESTED] = {"nested array", "nested array", LRUN_E_FORMAT},
    [F_BOOL_ELEM] = {"bool array element not 0/1", "bool element 1 is 7", LRUN_E_FORMAT},
    [F_ALIGN_TYPE] = {"general.alignment not a u32", "general.alignment: must be a u32", LRUN_E_FORMAT},
    [F_ALIGN_ZERO] = {"general.alignment zero", "not a non-zero power of two", LRUN_E_FORMAT},
    [F_ALIGN_NPOT] = {"general.alignment not a power of two", "48 is not a non-zero power of two", LRUN_E_FORMAT},
    [F_NAME_LEN] = {"tensor name length past the end", "name: string length", LRUN_E_FORMAT},
    [F_NAME_EMPTY] = {"empty tensor name", "empty name", LRUN_E_FORMAT},
    [F_NAME_LONG] = {"tensor name of 64 bytes", "name is 64 bytes", LRUN_E_FORMAT},
    [F_NAME_DUP] = {"duplicate tensor name", "duplicate tensor name", LRUN_E_FORMAT},
    [F_NDIMS_0] = {"n_dims 0", "n_dims is 0", LRUN_E_FORMAT},
    [F_NDIMS_5] = {"n_dims 5", "n_dims is 5", LRUN_E_FORMAT},
    [F_DIM_0] = {"a dimension of 0", "ne[1] = 0", LRUN_E_FORMAT},
    [F_DIM_NEG] = {"a dimension >= 2^63", "ne[0] = 9223372036854775808", LRUN_E_FORMAT},
    [F_NELEM_OVERFLOW] = {"element count overflowing int64", "element count overflows int64", LRUN_E_FORMAT},
    [F_BYTES_OVERFLOW] = {"byte size overflowing size_t", "byte size overflows", LRUN_E_FORMAT},
    [F_TYPE_UNKNOWN] = {"unknown ggml type id", "unknown ggml type id 99", LRUN_E_FORMAT},
    [F_TYPE_UNSUPPORTED] = {"known but unsupported type (iq2_xxs)", "type iq2_xxs (id 16) is not supported",
                            LRUN_E_UNSUPPORTED},
    [F_BLOCK] = {"ne[0] not a multiple of the block", "ne[0] = 33 is not a multiple of the q8_0 block size 32",
                 LRUN_E_FORMAT},
    [F_OFFSET_UNALIGNED] = {"offset not a multiple of the alignment", "offset 4 is not a multiple of the alignment 32",
                            LRUN_E_FORMAT},
    [F_OFFSET_OVERFLOW] = {"offset near 2^64", "overflows", LRUN_E_FORMAT},
    [F_DATA_PAST_END] = {"tensor data past the end", "runs past the end of the file", LRUN_E_FORMAT},
    [F_DATA_START] = {"data start past the end", "tensor data would start at", LRUN_E_FORMAT},
    [F_SHORT_HEADER] = {"file shorter than the header", "shorter than the 24-byte header", LRUN_E_FORMAT},
};

#define IF(f, bad, good) (fault == (f) ? (bad) : (good))

/* A valid file of 6 KV pairs and 2 tensors, with fault applied. The data of
 * the last tensor ends the file (no trailing padding), so every shorter
 * prefix is invalid. */
static void build(buf *b, enum fault fault)
{
    b->len = 0;
    put(b, IF(F_MAGIC, "GGUG", "GGUF"), 4);
    u32(b, IF(F_VERSION_0, 0, IF(F_VERSION_1, 1, IF(F_VERSION_4, 4, IF(F_BIG_ENDIAN, 0x03000000u, 3)))));
    u64(b, IF(F_TENSOR_COUNT, 1ull << 40, 2));
    u64(b, IF(F_KV_COUNT, 1ull << 40, 6));

    /* kv 0: general.architecture = "llama" */
    if (fault == F_KEY_LEN) u64(b, 1ull << 62);
    else if (fault == F_KEY_EMPTY) str(b, "");
    else if (fault == F_KEY_NUL) strn(b, "general.arch\0tecture", 20);
    else str(b, "general.architecture");
    u32(b, IF(F_KV_TYPE, 13, 8));
    if (fault == F_STR_LEN) u64(b, 1ull << 40);
    else str(b, "llama");
    /* kv 1: general.alignment = 32 */
    str(b, "general.alignment");
    if (fault == F_ALIGN_TYPE) { u32(b, 10); u64(b, 32); }
    else { u32(b, 4); u32(b, IF(F_ALIGN_ZERO, 0, IF(F_ALIGN_NPOT, 48, 32))); }
    /* kv 2: a bool */
    str(b, IF(F_DUP_KEY, "general.architecture", "t.bool"));
    u32(b, 7);
    u8(b, IF(F_BOOL, 2, 1));
    /* kv 3: array of three u32 */
    str(b, "t.u32s");
    u32(b, 9);
    u32(b, IF(F_ARR_ELEM_TYPE, 13, IF(F_NESTED, 9, 4)));
    u64(b, IF(F_ARR_COUNT, 1ull << 60, 3));
    u32(b, 1); u32(b, 2); u32(b, 3);
    /* kv 4: array of two strings */
    str(b, "t.strs");
    u32(b, 9);
    u32(b, 8);
    u64(b, IF(F_ARR_STR_COUNT, 1ull << 59, 2));
    str(b, "a"); str(b, "bc");
    /* kv 5: array of two bools */
    str(b, "t.bools");
    u32(b, 9);
    u32(b, 7);
    u64(b, 2);
    u8(b, 0); u8(b, IF(F_BOOL_ELEM, 7, 1));

    /* tensor 0: a.weight, f32 {32, 2}: 256 bytes at offset 0 */
    if (fault == F_NAME_LEN) u64(b, 1ull << 50);
    else if (fault == F_NAME_EMPTY) str(b, "");
    else if (fault == F_NAME_LONG) str(b, "a.weight.0123456789012345678901234567890123456789012345678901234");
    else str(b, "a.weight");
    u32(b, IF(F_NDIMS_0, 0, IF(F_NDIMS_5, 5, IF(F_NELEM_OVERFLOW, 3, 2))));
    u64(b, IF(F_DIM_NEG, 1ull << 63, IF(F_BYTES_OVERFLOW, 1ull << 30, 32)));
    if (fault != F_NDIMS_0) u64(b, IF(F_DIM_0, 0, IF(F_NELEM_OVERFLOW, 1ull << 40, IF(F_BYTES_OVERFLOW, 1ull << 32, 2))));
    if (fault == F_NELEM_OVERFLOW) u64(b, 1ull << 40);
    if (fault == F_NDIMS_5) { u64(b, 1); u64(b, 1); u64(b, 1); }
    u32(b, IF(F_TYPE_UNKNOWN, 99, IF(F_TYPE_UNSUPPORTED, 16, 0)));
    u64(b, IF(F_OFFSET_UNALIGNED, 4, IF(F_OFFSET_OVERFLOW, UINT64_MAX - 31, 0)));
    /* tensor 1: b.weight, q8_0 {32}: one 34-byte block at offset 256 */
    str(b, IF(F_NAME_DUP, "a.weight", "b.weight"));
    u32(b, 1);
    u64(b, IF(F_BLOCK, 33, 32));
    u32(b, 8);
    u64(b, IF(F_DATA_PAST_END, 4096, 256));

    if (fault == F_DATA_START) return; /* the file ends with the infos, before the padding */
    pad(b, 32);
    for (int i = 0; i < 256 + 34; i++) u8(b, (uint8_t)i);
    if (fault == F_SHORT_HEADER) b->len = 20;
}

static void test_faults(void)
{
    buf b = {0};
    build(&b, F_NONE);
    save(&b, b.len);
    CHECK("the unbroken hand-built file opens", try_open() == LRUN_OK);
    for (int f = 1; f < F_COUNT; f++) {
        char name[160];
        build(&b, (enum fault)f);
        save(&b, b.len);
        lrun_status st = try_open();
        const char *msg = lrun_last_error();
        snprintf(name, sizeof name, "rejects %s (status %s)", faults[f].rule, lrun_status_name(faults[f].status));
        CHECK(name, st == faults[f].status);
        snprintf(name, sizeof name, "message for %s names the rule and the file", faults[f].rule);
        CHECK(name, strstr(msg, faults[f].message) != NULL && strstr(msg, path) != NULL && strncmp(msg, "gguf: ", 6) == 0);
        printf("#   %s\n", msg);
    }
    /* the message names the tensor, its index and the byte range */
    build(&b, F_DATA_PAST_END);
    save(&b, b.len);
    try_open();
    CHECK("past-the-end message names the tensor and the range",
          strstr(lrun_last_error(), "tensor 'b.weight' (#1): data [4448, 4482)") != NULL);

    /* every prefix of a valid file fails cleanly (valgrind: no leak, no bad read) */
    build(&b, F_NONE);
    int clean = 1;
    for (size_t n = 0; n < b.len; n++) {
        save(&b, n);
        if (try_open() != LRUN_E_FORMAT) {
            clean = 0;
            printf("#   prefix of %zu bytes: %s\n", n, lrun_last_error());
        }
    }
    CHECK("every prefix of a valid file is rejected as format", clean);

    /* a file without tensors may end right after its metadata */
    b.len = 0;
    put(&b, "GGUF", 4); u32(&b, 2); u64(&b, 0); u64(&b, 1);
    str(&b, "k"); u32(&b, 8); str(&b, "v");
    save(&b, b.len);
    CHECK("version 2, no tensors, no padding: opens", try_open() == LRUN_OK);
    free(b.p);
}

// ---------------------------------------------------------------- MXFP4 tensors

/* A file with one MXFP4 tensor 'blk.0.ffn_up_exps.weight' {ne0, 2, 2}
 * (ne0/32 blocks of 17 bytes per row) whose data ends the file; short
 * drops that many bytes from its end. */
static void build_mxfp4(buf *b, uint64_t ne0, size_t short_by)
{
    b->len = 0;
    put(b, "GGUF", 4); u32(b, 3); u64(b, 1); u64(b, 1);
    str(b, "general.architecture"); u32(b, 8); str(b, "gpt-oss");
    str(b, "blk.0.ffn_up_exps.weight");
    u32(b, 3); u64(b, ne0); u64(b, 2); u64(b, 2);
    u32(b, 39);
    u64(b, 0);
    pad(b, 32);
    const size_t data = (size_t)(ne0 / 32) * 17 * 4;
    for (size_t i = 0; i < data; i++) u8(b, (uint8_t)(i * 7));
    b->len -= short_by;
}

static void test_mxfp4(void)
{
    buf b = {0};
    build_mxfp4(&b, 64, 0);
    save(&b, b.len);
    lrun_gguf *g = NULL;
    CHECK("an MXFP4 tensor (type 39) opens", lrun_gguf_open(&g, path) == LRUN_OK);
    if (g) {
        CHECK("MXFP4: dtype, 17-byte blocks of 32 (2 per row, 4 rows)",
              lrun_gguf_tensor_dtype(g, 0) == LRUN_DTYPE_MXFP4 && lrun_gguf_tensor_bytes(g, 0) == 4 * 2 * 17);
        lrun_gguf_close(g);
    }
    CHECK("mxfp4 is a supported weight type named mxfp4",
          lrun_dtype_is_supported(39) && strcmp(lrun_dtype_name(LRUN_DTYPE_MXFP4), "mxfp4") == 0);

    /* the data one byte short of 4 rows of 2 blocks: rejected, naming the tensor and its bytes */
    build_mxfp4(&b, 64, 1);
    save(&b, b.len);
    CHECK("MXFP4 tensor one byte short of its size: rejected as format", try_open() == LRUN_E_FORMAT);
    printf("#   %s\n", lrun_last_error());
    CHECK("the message names the tensor and its byte range",
          strstr(lrun_last_error(), "tensor 'blk.0.ffn_up_exps.weight' (#0): data [") != NULL &&
              strstr(lrun_last_error(), "runs past the end of the file") != NULL);

    /* a row that is not whole blocks of 32 */
    build_mxfp4(&b, 48, 0);
    save(&b, b.len);
    CHECK("MXFP4 row of 48 elements: rejected as format", try_open() == LRUN_E_FORMAT);
    printf("#   %s\n", lrun_last_error());
    CHECK("the message names the tensor and the block size",
          strstr(lrun_last_error(), "blk.0.ffn_up_exps.weight") != NULL &&
              strstr(lrun_last_error(), "ne[0] = 48 is not a multiple of the mxfp4 block size 32") != NULL);
    free(b.p);
}

// ---------------------------------------------------------------- every scalar type, by hand

static void test_scalars(void)
{
    buf b = {0};
    put(&b, "GGUF", 4); u32(&b, 3); u64(&b, 0); u64(&b, 14);
    str(&b, "u8"); u32(&b, 0); u8(&b, 200);
    str(&b, "i8"); u32(&b, 1); u8(&b, 0x80);
    str(&b, "u16"); u32(&b, 2); le(&b, 65535, 2);
    str(&b, "i16"); u32(&b, 3); le(&b, 0x8000, 2);
    str(&b, "u32"); u32(&b, 4); u32(&b, 4000000000u);
    str(&b, "i32"); u32(&b, 5); u32(&b, (uint32_t)-7);
    float f = 0.25f; uint32_t fb; memcpy(&fb, &f, 4);
    str(&b, "f32"); u32(&b, 6); u32(&b, fb);
    str(&b, "bool"); u32(&b, 7); u8(&b, 1);
    str(&b, "str"); u32(&b, 8); str(&b, "hé");
    str(&b, "u64"); u32(&b, 10); u64(&b, UINT64_MAX);
    str(&b, "i64"); u32(&b, 11); u64(&b, (uint64_t)INT64_MIN);
    double d = -1.5; uint64_t db; memcpy(&db, &d, 8);
    str(&b, "f64"); u32(&b, 12); u64(&b, db);
    str(&b, "i16s"); u32(&b, 9); u32(&b, 3); u64(&b, 2); le(&b, 0xffff, 2); le(&b, 5, 2);
    str(&b, "f64s"); u32(&b, 9); u32(&b, 12); u64(&b, 1); u64(&b, db);
    save(&b, b.len);
    free(b.p);

    lrun_gguf *g = NULL;
    CHECK("hand-built file with every scalar type opens", lrun_gguf_open(&g, path) == LRUN_OK);
    if (!g) return;
    int64_t i = 0;
    double x = 0;
    int bv = 0;
    const char *s = NULL;
    size_t n = 0;
    lrun_gguf_type et;
#define KEY(k) lrun_gguf_find_key(g, k)
    CHECK("u8 -> i64", lrun_gguf_get_i64(g, KEY("u8"), &i) == LRUN_OK && i == 200);
    CHECK("i8 -> i64 (sign-extended)", lrun_gguf_get_i64(g, KEY("i8"), &i) == LRUN_OK && i == -128);
    CHECK("u16 -> i64", lrun_gguf_get_i64(g, KEY("u16"), &i) == LRUN_OK && i == 65535);
    CHECK("i16 -> i64", lrun_gguf_get_i64(g, KEY("i16"), &i) == LRUN_OK && i == -32768);
    CHECK("u32 -> i64", lrun_gguf_get_i64(g, KEY("u32"), &i) == LRUN_OK && i == 4000000000ll);
    CHECK("i32 -> i64", lrun_gguf_get_i64(g, KEY("i32"), &i) == LRUN_OK && i == -7);
    CHECK("f32 -> f64", lrun_gguf_get_f64(g, KEY("f32"), &x) == LRUN_OK && x == 0.25);
    CHECK("bool", lrun_gguf_get_bool(g, KEY("bool"), &bv) == LRUN_OK && bv == 1);
    CHECK("string bytes and length", lrun_gguf_get_str(g, KEY("str"), &s, &n) == LRUN_OK && n == 3 && memcmp(s, "hé", 3) == 0);
    CHECK("u64 above INT64_MAX does not convert", lrun_gguf_get_i64(g, KEY("u64"), &i) == LRUN_E_ARG);
    CHECK("i64 min", lrun_gguf_get_i64(g, KEY("i64"), &i) == LRUN_OK && i == INT64_MIN);
    CHECK("f64", lrun_gguf_get_f64(g, KEY("f64"), &x) == LRUN_OK && x == -1.5);
    CHECK("i16 array", lrun_gguf_get_arr(g, KEY("i16s"), &et, &i) == LRUN_OK && et == LRUN_GGUF_TYPE_I16 && i == 2);
    CHECK("i16 array elements", lrun_gguf_get_arr_i64(g, KEY("i16s"), 0, &i) == LRUN_OK && i == -1 &&
                                    lrun_gguf_get_arr_i64(g, KEY("i16s"), 1, &i) == LRUN_OK && i == 5);
    CHECK("f64 array element", lrun_gguf_get_arr_f64(g, KEY("f64s"), 0, &x) == LRUN_OK && x == -1.5);
    CHECK("array index out of range", lrun_gguf_get_arr_i64(g, KEY("i16s"), 2, &i) == LRUN_E_ARG);
    CHECK("float does not convert to int", lrun_gguf_get_i64(g, KEY("f32"), &i) == LRUN_E_ARG);
    CHECK("int does not convert to bool", lrun_gguf_get_bool(g, KEY("u8"), &bv) == LRUN_E_ARG);
    CHECK("string is not an array", lrun_gguf_get_arr(g, KEY("str"), &et, &i) == LRUN_E_ARG);
    CHECK("kv index out of range", lrun_gguf_get_i64(g, 14, &i) == LRUN_E_ARG && lrun_gguf_key(g, 14) == NULL);
    CHECK("missing key", KEY("nope") == -1);
    CHECK("key order kept", strcmp(lrun_gguf_key(g, 4), "u32") == 0 && lrun_gguf_kv_type(g, 4) == LRUN_GGUF_TYPE_U32);
    CHECK("no tensors, data offset at the end", lrun_gguf_tensor_count(g) == 0 && lrun_gguf_data_offset(g) <= lrun_gguf_file_bytes(g));
#undef KEY
    lrun_gguf_close(g);
}

// ---------------------------------------------------------------- writer round trip

static void fill_bytes(uint8_t *p, size_t n, unsigned salt)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 31u + salt);
}

static void test_round_trip(size_t alignment)
{
    static const struct { const char *name; lrun_dtype dtype; int ndim; int64_t dims[4]; } ts[] = {
        {"f32.vec", LRUN_DTYPE_F32, 1, {5}},
        {"f16.mat", LRUN_DTYPE_F16, 2, {3, 7}},
        {"bf16.3d", LRUN_DTYPE_BF16, 3, {4, 3, 2}},
        {"q4_0.mat", LRUN_DTYPE_Q4_0, 2, {64, 3}},
        {"q4_1.mat", LRUN_DTYPE_Q4_1, 2, {32, 5}},
        {"q8_0.4d", LRUN_DTYPE_Q8_0, 4, {32, 2, 1, 3}},
        {"q4_K.mat", LRUN_DTYPE_Q4_K, 2, {256, 2}},
        {"q6_K.mat", LRUN_DTYPE_Q6_K, 2, {512, 1}},
    };
    enum { NT = sizeof ts / sizeof ts[0] };
    char name[128];
    lrun_gguf_writer *w = NULL;
    CHECK("writer opens", lrun_gguf_writer_open(&w, path) == LRUN_OK);
    if (!w) return;
    const char *strs[] = {"alpha", "", "Ġthe"};
    const float fs[] = {1.5f, -2.0f};
    const int32_t is[] = {-1, 0, 2147483647};
    lrun_status st = LRUN_OK;
    if (alignment != 32) st = lrun_gguf_writer_set_u32(w, "general.alignment", (uint32_t)alignment);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_u32(w, "k.u32", 4000000000u);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_i32(w, "k.i32", -5);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_u64(w, "k.u64", 1ull << 40);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_f32(w, "k.f32", 0.125f);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_bool(w, "k.bool", 1);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_str(w, "k.str", "llama");
    if (st == LRUN_OK) st = lrun_gguf_writer_set_arr_str(w, "k.strs", strs, 3);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_arr_f32(w, "k.f32s", fs, 2);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_arr_i32(w, "k.i32s", is, 3);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_arr_str(w, "k.empty", NULL, 0);
    CHECK("writer takes every kind of value", st == LRUN_OK);
    CHECK("writer refuses a duplicate key", lrun_gguf_writer_set_u32(w, "k.u32", 1) == LRUN_E_ARG);
    for (int i = 0; i < NT && st == LRUN_OK; i++) st = lrun_gguf_writer_add_tensor(w, ts[i].name, ts[i].dtype, ts[i].ndim, ts[i].dims);
    CHECK("writer takes tensors of every weight type", st == LRUN_OK);
    int64_t bad_dims[2] = {33, 1};
    CHECK("writer refuses rows that are not whole blocks",
          lrun_gguf_writer_add_tensor(w, "bad", LRUN_DTYPE_Q8_0, 2, bad_dims) == LRUN_E_ARG);
    CHECK("writer refuses a duplicate tensor name",
          lrun_gguf_writer_add_tensor(w, "f32.vec", LRUN_DTYPE_F32, 1, bad_dims) == LRUN_E_ARG);

    size_t sizes[NT];
    uint8_t *data[NT];
    for (int i = 0; i < NT; i++) {
        int64_t rows = 1;
        for (int d = 1; d < ts[i].ndim; d++) rows *= ts[i].dims[d];
        lrun_dtype_row_bytes(ts[i].dtype, ts[i].dims[0], &sizes[i]);
        sizes[i] *= (size_t)rows;
        data[i] = malloc(sizes[i]);
        fill_bytes(data[i], sizes[i], (unsigned)i);
        /* in two pieces, to exercise partial writes */
        if (st == LRUN_OK) st = lrun_gguf_writer_write_data(w, data[i], sizes[i] / 2);
        if (st == LRUN_OK) st = lrun_gguf_writer_write_data(w, data[i] + sizes[i] / 2, sizes[i] - sizes[i] / 2);
    }
    CHECK("writer streams the data", st == LRUN_OK);
    CHECK("metadata after data is refused", lrun_gguf_writer_set_u32(w, "late", 1) == LRUN_E_ARG);
    CHECK("data past the declared tensors is refused", lrun_gguf_writer_write_data(w, "x", 1) == LRUN_E_ARG);
    lrun_gguf_writer_free(w); /* the failure above poisons the writer: start again, finishing this time */

    CHECK("a failed writer's partial file is removed", access(path, F_OK) != 0);
    w = NULL;
    lrun_gguf_writer_open(&w, path);
    st = alignment != 32 ? lrun_gguf_writer_set_u32(w, "general.alignment", (uint32_t)alignment) : LRUN_OK;
    if (st == LRUN_OK) st = lrun_gguf_writer_set_u32(w, "k.u32", 4000000000u);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_i32(w, "k.i32", -5);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_u64(w, "k.u64", 1ull << 40);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_f32(w, "k.f32", 0.125f);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_bool(w, "k.bool", 1);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_str(w, "k.str", "llama");
    if (st == LRUN_OK) st = lrun_gguf_writer_set_arr_str(w, "k.strs", strs, 3);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_arr_f32(w, "k.f32s", fs, 2);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_arr_i32(w, "k.i32s", is, 3);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_arr_str(w, "k.empty", NULL, 0);
    for (int i = 0; i < NT && st == LRUN_OK; i++) st = lrun_gguf_writer_add_tensor(w, ts[i].name, ts[i].dtype, ts[i].ndim, ts[i].dims);
    for (int i = 0; i < NT && st == LRUN_OK; i++) st = lrun_gguf_writer_write_data(w, data[i], sizes[i]);
    if (st == LRUN_OK) st = lrun_gguf_writer_finish(w);
    lrun_gguf_writer_free(w);
    snprintf(name, sizeof name, "writer finishes (alignment %zu)", alignment);
    CHECK(name, st == LRUN_OK);

    lrun_gguf *g = NULL;
    st = lrun_gguf_open(&g, path);
    snprintf(name, sizeof name, "reader opens the writer's file (alignment %zu)", alignment);
    CHECK(name, st == LRUN_OK);
    if (st != LRUN_OK) {
        printf("#   %s\n", lrun_last_error());
        for (int i = 0; i < NT; i++) free(data[i]);
        return;
    }
    int64_t v = 0;
    double x = 0;
    int bv = 0;
    const char *s = NULL;
    size_t n = 0;
    lrun_gguf_type et;
#define KEY(k) lrun_gguf_find_key(g, k)
    CHECK("version 3", lrun_gguf_version(g) == 3);
    CHECK("alignment read back", lrun_gguf_alignment(g) == alignment && lrun_gguf_data_offset(g) % alignment == 0);
    CHECK("u32", lrun_gguf_kv_type(g, KEY("k.u32")) == LRUN_GGUF_TYPE_U32 && lrun_gguf_get_i64(g, KEY("k.u32"), &v) == LRUN_OK && v == 4000000000ll);
    CHECK("i32", lrun_gguf_get_i64(g, KEY("k.i32"), &v) == LRUN_OK && v == -5);
    CHECK("u64", lrun_gguf_get_i64(g, KEY("k.u64"), &v) == LRUN_OK && v == (1ll << 40));
    CHECK("f32", lrun_gguf_get_f64(g, KEY("k.f32"), &x) == LRUN_OK && x == 0.125);
    CHECK("bool", lrun_gguf_get_bool(g, KEY("k.bool"), &bv) == LRUN_OK && bv == 1);
    CHECK("string", lrun_gguf_get_str(g, KEY("k.str"), &s, &n) == LRUN_OK && n == 5 && memcmp(s, "llama", 5) == 0);
    int ok = lrun_gguf_get_arr(g, KEY("k.strs"), &et, &v) == LRUN_OK && et == LRUN_GGUF_TYPE_STRING && v == 3;
    for (int i = 0; ok && i < 3; i++)
        ok = lrun_gguf_get_arr_str(g, KEY("k.strs"), i, &s, &n) == LRUN_OK && n == strlen(strs[i]) && memcmp(s, strs[i], n) == 0;
    CHECK("string array", ok);
    ok = lrun_gguf_get_arr(g, KEY("k.f32s"), &et, &v) == LRUN_OK && et == LRUN_GGUF_TYPE_F32 && v == 2;
    for (int i = 0; ok && i < 2; i++) ok = lrun_gguf_get_arr_f64(g, KEY("k.f32s"), i, &x) == LRUN_OK && x == fs[i];
    CHECK("f32 array", ok);
    ok = lrun_gguf_get_arr(g, KEY("k.i32s"), &et, &v) == LRUN_OK && et == LRUN_GGUF_TYPE_I32 && v == 3;
    for (int i = 0; ok && i < 3; i++) ok = lrun_gguf_get_arr_i64(g, KEY("k.i32s"), i, &v) == LRUN_OK && v == is[i];
    CHECK("i32 array", ok);
    CHECK("empty array", lrun_gguf_get_arr(g, KEY("k.empty"), &et, &v) == LRUN_OK && v == 0);
    CHECK("f32 array is not integers", lrun_gguf_get_arr_i64(g, KEY("k.f32s"), 0, &v) == LRUN_E_ARG);
#undef KEY
    CHECK("tensor count", lrun_gguf_tensor_count(g) == NT);
    for (int i = 0; i < NT; i++) {
        int64_t t = lrun_gguf_find_tensor(g, ts[i].name);
        int same = t == i && lrun_gguf_tensor_dtype(g, t) == ts[i].dtype && lrun_gguf_tensor_ndim(g, t) == ts[i].ndim &&
                   lrun_gguf_tensor_bytes(g, t) == sizes[i] && lrun_gguf_tensor_offset(g, t) % alignment == 0 &&
                   lrun_gguf_tensor_dim(g, t, 4) == 1;
        for (int d = 0; d < 4; d++) same = same && lrun_gguf_tensor_dim(g, t, d) == (d < ts[i].ndim ? ts[i].dims[d] : 1);
        same = same && memcmp(lrun_gguf_tensor_data(g, t), data[i], sizes[i]) == 0;
        snprintf(name, sizeof name, "tensor %s: name, type, shape, offset and bytes read back", ts[i].name);
        CHECK(name, same);
    }
    CHECK("unknown tensor", lrun_gguf_find_tensor(g, "nope") == -1 && lrun_gguf_tensor_name(g, NT) == NULL);
    lrun_gguf_close(g);
    for (int i = 0; i < NT; i++) free(data[i]);
}

static void test_writer_misuse(void)
{
    lrun_gguf_writer *w = NULL;
    int64_t dims[1] = {32};
    lrun_gguf_writer_open(&w, path);
    lrun_gguf_writer_add_tensor(w, "t", LRUN_DTYPE_F32, 1, dims);
    lrun_gguf_writer_write_data(w, dims, 8);
    CHECK("finish with a tensor short of bytes is refused", lrun_gguf_writer_finish(w) == LRUN_E_ARG &&
                                                               strstr(lrun_last_error(), "'t'") != NULL);
    lrun_gguf_writer_free(w);
    CHECK("an unfinished writer leaves no file", access(path, F_OK) != 0);
    CHECK("alignment must be a power of two", lrun_gguf_writer_open(&w, path) == LRUN_OK &&
                                                   lrun_gguf_writer_set_u32(w, "general.alignment", 24) == LRUN_E_ARG);
    lrun_gguf_writer_free(w);
    CHECK("writer reports an uncreatable path", lrun_gguf_writer_open(&w, "/nonexistent-dir/x.gguf") == LRUN_E_IO);
}

// ---------------------------------------------------------------- the real model

static void test_real_model(void)
{
    const char *model = getenv("LRUN_MODEL");
    if (!model || !*model) {
        printf("ok %d - real model # SKIP LRUN_MODEL is not set\n", ++check_count);
        return;
    }
    lrun_gguf *g = NULL;
    lrun_status st = lrun_gguf_open(&g, model);
    CHECK("the default model opens", st == LRUN_OK);
    if (st != LRUN_OK) {
        printf("#   %s\n", lrun_last_error());
        return;
    }
    int64_t v = 0, count = 0;
    const char *s = NULL;
    size_t n = 0;
    lrun_gguf_type et;
    CHECK("272 tensors, 33 keys, version 3", lrun_gguf_tensor_count(g) == 272 && lrun_gguf_kv_count(g) == 33 && lrun_gguf_version(g) == 3);
    CHECK("architecture llama", lrun_gguf_get_str(g, lrun_gguf_find_key(g, "general.architecture"), &s, &n) == LRUN_OK &&
                                   n == 5 && memcmp(s, "llama", 5) == 0);
    CHECK("30 blocks", lrun_gguf_get_i64(g, lrun_gguf_find_key(g, "llama.block_count"), &v) == LRUN_OK && v == 30);
    CHECK("49152 tokens", lrun_gguf_get_arr(g, lrun_gguf_find_key(g, "tokenizer.ggml.tokens"), &et, &count) == LRUN_OK &&
                             et == LRUN_GGUF_TYPE_STRING && count == 49152);
    int64_t t = lrun_gguf_find_tensor(g, "token_embd.weight");
    CHECK("token_embd q8_0 {576, 49152}", t >= 0 && lrun_gguf_tensor_dtype(g, t) == LRUN_DTYPE_Q8_0 &&
                                             lrun_gguf_tensor_dim(g, t, 0) == 576 && lrun_gguf_tensor_dim(g, t, 1) == 49152);
    t = lrun_gguf_find_tensor(g, "blk.29.ffn_down.weight");
    CHECK("blk.29.ffn_down q4_1 {1536, 576}", t >= 0 && lrun_gguf_tensor_dtype(g, t) == LRUN_DTYPE_Q4_1 &&
                                                 lrun_gguf_tensor_dim(g, t, 0) == 1536 && lrun_gguf_tensor_dim(g, t, 1) == 576);
    CHECK("no output.weight (tied)", lrun_gguf_find_tensor(g, "output.weight") == -1);
    lrun_gguf_close(g);
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s", "/tmp/lrun-test-gguf-XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 2; }
    snprintf(path, sizeof path, "%s/t.gguf", dir);

    CHECK("missing file is an io error", lrun_gguf_open(&(lrun_gguf *){NULL}, "/nonexistent/x.gguf") == LRUN_E_IO);
    test_faults();
    test_mxfp4();
    test_scalars();
    test_round_trip(32);
    test_round_trip(64);
    test_writer_misuse();
    test_real_model();

    unlink(path);
    rmdir(dir);
    return CHECK_DONE();
}
