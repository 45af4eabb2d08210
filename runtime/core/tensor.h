/* tensor.h — the tensor record shared by the model loader, residency and the engine. */
#ifndef LRUN_TENSOR_H
#define LRUN_TENSOR_H

#include "lrun.h"
#include "packed/codec.h"

/* How a tensor whose bytes are not made yet gets them (an FP8 weight not
 * widened yet, model/model_fp8.h): make(ctx, why) makes them for every such
 * tensor of its model (why names the caller in a failure). */
typedef struct lrun_tensor_maker {
    lrun_status (*make)(void *ctx, const char *why);
    void *ctx;
} lrun_tensor_maker;

struct lrun_tensor {
    char name[64];
    lrun_dtype dtype;
    int ndim;
    int64_t ne[LRUN_MAX_DIMS]; /* elements per axis, ne[0] innermost; unused axes 1 */
    size_t nbytes;             /* bytes of the whole tensor */
    size_t row_bytes;          /* bytes of one ne[0] row */
    lrun_role role;
    int layer;                 /* block index, -1 outside blocks */
    lrun_tier tier;            /* where data lives now */
    void *data;                /* the bytes in that tier (device pointer on cuda) */
    lrun_device *device;       /* the device a DEVICE-tier copy is counted on */
    const void *file_data;     /* the bytes in the mapped model file, NULL if none */
    int host_compute;          /* 1: an AS_PLACED engine runs this weight's matmul on the host */
    int split;                 /* 1: a CUDA engine holds the device bytes in quant_split.h's split-row
                                * layout (engine_cuda_split.h: the default for Q8_0/Q4_0 in fast
                                * numerics) until it is freed; nothing may move them */
    int fp8_pending;           /* 1: an FP8 weight not widened yet (model/model_fp8.h): tier MMAP with no
                                * bytes anywhere (data, file_data NULL) until it moves or an engine starts */
    const lrun_tensor_maker *maker; /* with fp8_pending: what makes its bytes (lrun_tensor_move calls it) */
    /* The packed form (docs/packed.md): a bf16/f16 matrix may hold its codec
     * bytes instead of the plain ones, in any tier. nbytes stays the plain
     * size (the shape's); the tier holds lrun_tensor_stored_bytes. */
    int packed;                /* 1: data holds the packed bytes (pk.total), 0: the plain nbytes */
    int file_packed;           /* 1: file_data holds packed bytes (a packed model file) */
    lrun_packed_layout pk;     /* layout of the packed form, validated; pk.total 0: none made yet */
};


/* Fills a tensor record's shape fields; checks dims and the byte size for overflow. */
lrun_status lrun_tensor_set_shape(lrun_tensor *t, const char *name, lrun_dtype dtype, int ndim, const int64_t *dims);

/* Role and block index from a GGUF tensor name ("blk.3.attn_q.weight" →
 * ATTN_Q, 3; "token_embd.weight" → EMBEDDING, -1; any ".bias" → BIAS). */
void lrun_tensor_classify(const char *name, lrun_role *role, int *layer);

/* Releases the storage the tensor owns in its tier (DEVICE budget given
 * back, host memory freed), for owners of tensor arrays (the model). After
 * it a file tensor is back in MMAP (data = file_data); any other has data NULL. */
void lrun_tensor_release_data(lrun_tensor *t);

#endif
