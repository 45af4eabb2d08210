/* model_fp8.h — an HF checkpoint's F8_E4M3 weights, widened to bf16
 * (value × scale, round to nearest even) where they are placed.
 *
 * Every FP8 weight has a record (lrun_fp8_weight) saying where its bytes
 * are in a shard and how its elements find their scale. Its bf16 form is
 * made in one of two ways, both through the streaming loader's widening
 * (residency/loader.h), so the file's mapping is never touched:
 *   - settled: widened into host memory the model owns (the tensor's
 *     file_data, tier MMAP), as every other mapped tensor is read;
 *   - lazy (lrun_model_fp8_lazy_wanted): nothing is made at load; the
 *     tensor is pending (t->fp8_pending: no bytes anywhere) until it moves
 *     (model_upload.c widens it straight into its destination: onto the
 *     GPU through the loader's pinned chunks, so no whole bf16 copy is
 *     ever in host memory) or an engine starts (the rest are settled).
 * Fused matrices the loader splits (phi3's qkv) are settled at load: their
 * parts are row ranges of one buffer. */
#ifndef LRUN_MODEL_FP8_H
#define LRUN_MODEL_FP8_H

#include <stdint.h>

#include "formats/safetensors.h"
#include "model/model.h"
#include "residency/loader.h"

/* How an FP8 weight's elements find their scale (the widening's context). */
typedef struct lrun_fp8_widen {
    const lrun_st_tensor *scale; /* NULL: 1 */
    enum { LRUN_FP8_ONE, LRUN_FP8_ROW, LRUN_FP8_BLOCK } kind;
    int64_t cols;                /* elements per row of the weight */
    int64_t bcols;               /* scale columns (BLOCK) */
    int block[2];                /* rows, columns per scale (BLOCK) */
} lrun_fp8_widen;

/* One FP8 weight of the model. */
typedef struct lrun_fp8_weight {
    int64_t tensor;              /* index into m->tensors */
    lrun_fp8_widen w;
    int file;                    /* index of its shard in m->st */
    uint64_t offset;             /* bytes from that shard's start */
    size_t bytes;                /* FP8 bytes in the file (the tensor's nbytes / 2) */
    int settle_at_load;          /* 1: widened at load whatever the mode (a fused matrix to split) */
} lrun_fp8_weight;

/* 1 for the companions of an FP8 weight that no computation reads here:
 * its scales (applied at load) and activation scales (lrun computes in bf16). */
int lrun_fp8_is_companion(const lrun_st_set *s, const char *name);

/* 1 when FP8 weights load lazily: LRUN_FP8_LAZY=1, or unset with a cuda
 * device (device as lrun_load_opts names it); LRUN_FP8_LAZY=0: never. */
int lrun_model_fp8_lazy_wanted(const char *device);

/* Records the F8_E4M3 weight t of shard file (its scale checked: per
 * tensor, per output row, or per block[0] × block[1]) as tensor index of
 * the model; settle: widened at load even when lazy. */
lrun_status lrun_model_fp8_add(lrun_model *m, const char *file, const lrun_st_tensor *t, const int block[2],
                               int64_t index, int settle);

/* Widens the pending FP8 weights (all, or only those widened at load) into
 * host memory the model owns, charged to its host account as weights, in
 * one loader run; why names the caller in a failure. */
lrun_status lrun_model_fp8_settle(lrun_model *m, int only_at_load, const char *why);

/* Tensor t's loader range when it is a pending FP8 weight (1; dst and
 * on_device left to the caller), else 0. */
int lrun_model_fp8_range(const lrun_model *m, const struct lrun_tensor *t, lrun_load_range *r);

/* 1 when t is an FP8 weight widened straight into its placement (no home,
 * no file bytes of its bf16 form): its copy is released and it is pending
 * again, to be widened anew (a move back to mmap or disk). Else 0. */
int lrun_model_fp8_repend(lrun_model *m, struct lrun_tensor *t);

#endif
