/* safetensors.h — the safetensors reader: one file, or the shards of a
 * model.safetensors.index.json, mapped read-only and validated at open.
 *
 * File layout (huggingface/safetensors; REFERENCE.md "safetensors"):
 *   1. u64 N, little-endian: the header's length in bytes, at most
 *      100,000,000, and 8 + N at most the file's length.
 *   2. N bytes of UTF-8 JSON, starting with '{' (spaces may come before it
 *      and after the object): an object of unique keys,
 *        "__metadata__": {string: string, …}          (optional)
 *        name: {"dtype": "F32", "shape": [d0, d1, …],  (row-major, d0 outermost)
 *               "data_offsets": [begin, end]}          (bytes from the data start)
 *   3. the data: tensors, sorted by begin, lie back to back from byte 0 with
 *      no holes or overlaps; end − begin = elements × dtype bits / 8
 *      (checked arithmetic; a sub-byte dtype must end on a whole byte); the
 *      last end is the end of the file (8 + N + last end = file length).
 *
 * Each violation fails with LRUN_E_FORMAT and a message "safetensors
 * <file>: tensor '<name>': <rule>: <detail>", rule one of: size, header-size,
 * header-bounds, utf8, header-start, json, object, metadata, duplicate,
 * entry, dtype, shape, offsets, overflow, sub-byte, byte-size, contiguous,
 * file-length; for an index: index-json, weight-map, shard-name, shard-tensor,
 * index-missing. Tests match on the rule. */
#ifndef LRUN_SAFETENSORS_H
#define LRUN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "lrun.h"

#define LRUN_SAFETENSORS_MAX_HEADER 100000000u /* bytes, the reference's bound */
#define LRUN_SAFETENSORS_MAX_DIMS 8

/* The format's dtypes (REFERENCE.md's list). */
typedef enum lrun_st_dtype {
    LRUN_ST_BOOL, LRUN_ST_F4, LRUN_ST_F6_E2M3, LRUN_ST_F6_E3M2, LRUN_ST_U8, LRUN_ST_I8, LRUN_ST_F8_E5M2,
    LRUN_ST_F8_E4M3, LRUN_ST_F8_E8M0, LRUN_ST_F8_E4M3FNUZ, LRUN_ST_F8_E5M2FNUZ, LRUN_ST_I16, LRUN_ST_U16,
    LRUN_ST_F16, LRUN_ST_BF16, LRUN_ST_I32, LRUN_ST_U32, LRUN_ST_F32, LRUN_ST_C64, LRUN_ST_F64, LRUN_ST_I64,
    LRUN_ST_U64,
    LRUN_ST_DTYPE_COUNT
} lrun_st_dtype;

/* "F32", … */
const char *lrun_st_dtype_name(lrun_st_dtype d);
/* Bits per element (4 for F4, 6 for F6_*). */
int lrun_st_dtype_bits(lrun_st_dtype d);
/* The dtype named s, or -1. */
int lrun_st_dtype_find(const char *s);

typedef struct lrun_st_tensor {
    const char *name;
    lrun_st_dtype dtype;
    int ndim;                                  /* 0 for a scalar */
    int64_t shape[LRUN_SAFETENSORS_MAX_DIMS];  /* row-major: shape[ndim-1] is innermost */
    size_t nbytes;
    const void *data;                          /* into the read-only mapping */
    int file;                                  /* index of its shard in a set (0 for one file) */
} lrun_st_tensor;

// ---------------------------------------------------------------- one file

typedef struct lrun_safetensors lrun_safetensors;

lrun_status lrun_safetensors_open(lrun_safetensors **out, const char *path);
void lrun_safetensors_close(lrun_safetensors *f);
/* Tensors in data order (by begin). */
int64_t lrun_safetensors_count(const lrun_safetensors *f);
const lrun_st_tensor *lrun_safetensors_tensor(const lrun_safetensors *f, int64_t i);
/* Index of the tensor named name, or -1. */
int64_t lrun_safetensors_find(const lrun_safetensors *f, const char *name);
/* A __metadata__ value, or NULL. */
const char *lrun_safetensors_metadata(const lrun_safetensors *f, const char *key);
const char *lrun_safetensors_path(const lrun_safetensors *f);
size_t lrun_safetensors_file_bytes(const lrun_safetensors *f);
/* The mapping of the data section (after the header) and its length. */
const void *lrun_safetensors_data(const lrun_safetensors *f, size_t *len);

// ---------------------------------------------------------------- a model: one file or shards

typedef struct lrun_st_set lrun_st_set;

/* Called after each shard is opened: shard i of n, bytes of that shard. */
typedef void (*lrun_st_open_cb)(void *ctx, int i, int n, const char *path, size_t bytes);

/* One .safetensors file as a set of one. */
lrun_status lrun_st_set_open_file(lrun_st_set **out, const char *path);
/* A model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor:
 * shard}}. Shard names are plain file names beside the index (no '/', no
 * "..", ending ".safetensors"); every shard is validated; every mapped tensor
 * must be in its shard and every shard tensor in the map. cb may be NULL. */
lrun_status lrun_st_set_open_index(lrun_st_set **out, const char *index_path, lrun_st_open_cb cb, void *ctx);
void lrun_st_set_close(lrun_st_set *s);
/* Tensors of all shards: shard by shard (in sorted shard-name order), data order within. */
int64_t lrun_st_set_count(const lrun_st_set *s);
const lrun_st_tensor *lrun_st_set_tensor(const lrun_st_set *s, int64_t i);
/* Index of the tensor named name, or -1. */
int64_t lrun_st_set_find(const lrun_st_set *s, const char *name);
int lrun_st_set_n_files(const lrun_st_set *s);
const lrun_safetensors *lrun_st_set_file(const lrun_st_set *s, int i);

#endif
