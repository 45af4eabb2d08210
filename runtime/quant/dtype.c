/* dtype.c — the table of element types: names, block geometry, row sizes,
 * and whole-row conversions to and from f32 (the codecs live in quant.c). */
#include "core/checked.h"
#include "core/error.h"
#include "quant/quant.h"

#include <strings.h>

// ---------------------------------------------------------------- the table

typedef struct {
    lrun_dtype dtype;
    const char *name;   /* lower case, as lrun_dtype_name returns it */
    int64_t block_elems; /* elements per block (1 for float types) */
    size_t block_bytes;  /* bytes per block */
    int weight;          /* 1: a type weights may be stored in (the GGUF allow-list) */
} dtype_info;

static const dtype_info infos[] = {
    {LRUN_DTYPE_F32, "f32", 1, 4, 1},
    {LRUN_DTYPE_F16, "f16", 1, 2, 1},
    {LRUN_DTYPE_BF16, "bf16", 1, 2, 1},
    {LRUN_DTYPE_Q4_0, "q4_0", LRUN_QK4_0, sizeof(lrun_block_q4_0), 1},
    {LRUN_DTYPE_Q4_1, "q4_1", LRUN_QK4_1, sizeof(lrun_block_q4_1), 1},
    {LRUN_DTYPE_Q8_0, "q8_0", LRUN_QK8_0, sizeof(lrun_block_q8_0), 1},
    {LRUN_DTYPE_Q4_K, "q4_k", LRUN_QK_K, sizeof(lrun_block_q4_K), 1},
    {LRUN_DTYPE_Q6_K, "q6_k", LRUN_QK_K, sizeof(lrun_block_q6_K), 1},
    {LRUN_DTYPE_Q5_0, "q5_0", LRUN_QK5_0, sizeof(lrun_block_q5_0), 1},
    {LRUN_DTYPE_Q5_1, "q5_1", LRUN_QK5_1, sizeof(lrun_block_q5_1), 1},
    {LRUN_DTYPE_Q2_K, "q2_k", LRUN_QK_K, sizeof(lrun_block_q2_K), 1},
    {LRUN_DTYPE_Q3_K, "q3_k", LRUN_QK_K, sizeof(lrun_block_q3_K), 1},
    {LRUN_DTYPE_Q5_K, "q5_k", LRUN_QK_K, sizeof(lrun_block_q5_K), 1},
    {LRUN_DTYPE_IQ4_NL, "iq4_nl", LRUN_QK4_NL, sizeof(lrun_block_iq4_nl), 1},
    {LRUN_DTYPE_IQ4_XS, "iq4_xs", LRUN_QK_K, sizeof(lrun_block_iq4_xs), 1},
    {LRUN_DTYPE_MXFP4, "mxfp4", LRUN_QK_MXFP4, sizeof(lrun_block_mxfp4), 1},
    /* Activation-only types: they have a geometry (work buffers are sized with
     * it) but no file stores them, so neither the allow-list nor from_name
     * admits them. */
    {LRUN_DTYPE_Q8_1, "q8_1", LRUN_QK8_1, sizeof(lrun_block_q8_1), 0},
    {LRUN_DTYPE_Q8_K, "q8_k", LRUN_QK_K, sizeof(lrun_block_q8_K), 0},
};

/* The block structs must match ggml's packed layouts byte for byte. */
_Static_assert(sizeof(lrun_block_q4_0) == 18, "q4_0 block is 18 bytes");
_Static_assert(sizeof(lrun_block_q4_1) == 20, "q4_1 block is 20 bytes");
_Static_assert(sizeof(lrun_block_q8_0) == 34, "q8_0 block is 34 bytes");
_Static_assert(sizeof(lrun_block_q8_1) == 40, "q8_1 block is 40 bytes");
_Static_assert(sizeof(lrun_block_q4_K) == 144, "q4_K block is 144 bytes");
_Static_assert(sizeof(lrun_block_q6_K) == 210, "q6_K block is 210 bytes");
_Static_assert(sizeof(lrun_block_q8_K) == 292, "q8_K block is 292 bytes");
_Static_assert(sizeof(lrun_block_q5_0) == 22, "q5_0 block is 22 bytes");
_Static_assert(sizeof(lrun_block_q5_1) == 24, "q5_1 block is 24 bytes");
_Static_assert(sizeof(lrun_block_q2_K) == 84, "q2_K block is 84 bytes");
_Static_assert(sizeof(lrun_block_q3_K) == 110, "q3_K block is 110 bytes");
_Static_assert(sizeof(lrun_block_q5_K) == 176, "q5_K block is 176 bytes");
_Static_assert(sizeof(lrun_block_iq4_nl) == 18, "iq4_nl block is 18 bytes");
_Static_assert(sizeof(lrun_block_iq4_xs) == 136, "iq4_xs block is 136 bytes");
_Static_assert(sizeof(lrun_block_mxfp4) == 17, "mxfp4 block is 17 bytes");

static const dtype_info *find(int type_id)
{
    for (size_t i = 0; i < sizeof infos / sizeof infos[0]; ++i)
        if ((int)infos[i].dtype == type_id) return &infos[i];
    return NULL;
}

// ---------------------------------------------------------------- queries

int lrun_dtype_is_supported(int type_id)
{
    const dtype_info *info = find(type_id);
    return info && info->weight;
}

const char *lrun_dtype_name(lrun_dtype dtype)
{
    const dtype_info *info = find((int)dtype);
    return info ? info->name : "unknown";
}

lrun_status lrun_dtype_from_name(const char *name, lrun_dtype *out)
{
    if (!name || !out) return lrun_fail(LRUN_E_ARG, "lrun_dtype_from_name: name and out must not be NULL");
    for (size_t i = 0; i < sizeof infos / sizeof infos[0]; ++i) {
        if (infos[i].weight && strcasecmp(infos[i].name, name) == 0) {
            *out = infos[i].dtype;
            return LRUN_OK;
        }
    }
    return lrun_fail(LRUN_E_ARG,
                     "lrun_dtype_from_name: unknown dtype \"%s\" (expected f32, f16, bf16, q4_0, q4_1, "
                     "q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs or mxfp4)",
                     name);
}

int64_t lrun_dtype_block_elems(lrun_dtype dtype)
{
    const dtype_info *info = find((int)dtype);
    return info ? info->block_elems : 0;
}

size_t lrun_dtype_block_bytes(lrun_dtype dtype)
{
    const dtype_info *info = find((int)dtype);
    return info ? info->block_bytes : 0;
}

lrun_status lrun_dtype_row_bytes(lrun_dtype dtype, int64_t n, size_t *out)
{
    const dtype_info *info = find((int)dtype);
    size_t bytes;
    if (!out) return lrun_fail(LRUN_E_ARG, "lrun_dtype_row_bytes: out must not be NULL");
    if (!info) return lrun_fail(LRUN_E_ARG, "lrun_dtype_row_bytes: unknown dtype %d", (int)dtype);
    if (n < 0 || n % info->block_elems != 0)
        return lrun_fail(LRUN_E_ARG, "lrun_dtype_row_bytes: %lld elements is not a whole number of %s blocks of %lld",
                         (long long)n, info->name, (long long)info->block_elems);
    if ((uint64_t)(n / info->block_elems) > SIZE_MAX ||
        !lrun_size_mul((size_t)(n / info->block_elems), info->block_bytes, &bytes))
        return lrun_fail(LRUN_E_FORMAT, "lrun_dtype_row_bytes: a %s row of %lld elements overflows size_t",
                         info->name, (long long)n);
    *out = bytes;
    return LRUN_OK;
}

// ---------------------------------------------------------------- conversions

static lrun_status check_row(const char *what, lrun_dtype dtype, const void *a, const void *b, int64_t n)
{
    const dtype_info *info = find((int)dtype);
    if (!a || !b) return lrun_fail(LRUN_E_ARG, "%s: src and dst must not be NULL", what);
    if (!info) return lrun_fail(LRUN_E_ARG, "%s: unknown dtype %d", what, (int)dtype);
    if (n < 0 || n % info->block_elems != 0)
        return lrun_fail(LRUN_E_ARG, "%s: %lld elements is not a whole number of %s blocks of %lld", what,
                         (long long)n, info->name, (long long)info->block_elems);
    return LRUN_OK;
}

lrun_status lrun_dtype_to_f32(lrun_dtype dtype, const void *src, float *dst, int64_t n)
{
    lrun_status st = check_row("lrun_dtype_to_f32", dtype, src, dst, n);
    if (st != LRUN_OK) return st;
    lrun_dequantize_row(dtype, src, dst, n);
    return LRUN_OK;
}

lrun_status lrun_dtype_from_f32(lrun_dtype dtype, const float *src, void *dst, int64_t n)
{
    lrun_status st = check_row("lrun_dtype_from_f32", dtype, src, dst, n);
    if (st != LRUN_OK) return st;
    lrun_quantize_row(dtype, src, dst, n);
    return LRUN_OK;
}
