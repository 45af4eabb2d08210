/* measure_host_copy.c — how fast the runtime's threaded host copy moves
 * weights out of DRAM.
 *
 * On cuda a weight streamed from the host or mmap tier is copied by every
 * core (lrun_threadpool_memcpy) into pinned staging buffers and then sent by
 * DMA (copy_bytes in runtime/cuda/engine_cuda_offload.c), so its link runs at
 * the slower of this copy and the pinned link, not at the driver's pageable
 * rate (issues #12/#15: 50.5 GB/s measured against 12.8 pageable). Both
 * run at once and share the host's DRAM, so the rate that counts is each
 * one's beside the other (lrun_model_measure_host_copy_copying, the copy
 * load of core/copy_load.h running meanwhile). */
#include "lrun.h"
#include "core/clock.h"

#include <stdlib.h>
#include <string.h>

#include "core/copy_load.h"
#include "core/error.h"
#include "core/threadpool.h"
#include "cpu/measure.h"
#include "model/model.h"

lrun_status lrun_model_measure_host_copy(lrun_model *model, size_t bytes, double *bytes_per_s)
{
    if (!bytes_per_s) return lrun_fail(LRUN_E_ARG, "measuring host copy: bytes_per_s is NULL");
    *bytes_per_s = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring host copy: model is NULL");
    if (bytes < ((size_t)1 << 20) || bytes > ((size_t)1 << 32))
        return lrun_fail(LRUN_E_ARG, "measuring host copy: %zu bytes is outside [1 MiB, 4 GiB]", bytes);
    /* as lrun_model_measure_host_matmul: twice the last-level cache and at
     * least 1 GiB, so the source comes from DRAM as a streamed weight does;
     * never more than a quarter of free memory (source and destination) */
    bytes = lrun_measure_dram_bytes(bytes, 8);
    /* written, not calloc'd: untouched pages all map the kernel's one zero
     * page, which a read finds in cache whatever the size */
    unsigned char *src = malloc(bytes), *dst = malloc(bytes);
    lrun_status st = LRUN_OK;
    if (!src || !dst) st = lrun_fail_oom(2 * bytes, 0, "measuring host copy: 2 x %zu bytes of host memory", bytes);
    else {
        lrun_measure_fill(src, bytes, 3); /* varied words, as a weight's (measure_fill.c) */
        memset(dst, 0, bytes); /* the staging buffers are touched too: no first-touch faults in the timing */
    }
    double best = 0;
    lrun_threadpool *pool = lrun_model_threadpool(model);
    /* one warm-up copy (threads awake), then the best of three */
    for (int i = 0; i < 4 && st == LRUN_OK; i++) {
        const double t0 = lrun_now_seconds();
        lrun_threadpool_memcpy(pool, dst, src, bytes);
        const double dt = lrun_now_seconds() - t0;
        if (i > 0 && dt > 0 && (double)bytes / dt > best) best = (double)bytes / dt;
    }
    free(src);
    free(dst);
    if (st == LRUN_OK) *bytes_per_s = best;
    return st;
}

struct copy_args {
    lrun_model *model;
    size_t bytes;
    double *bytes_per_s;
};

static lrun_status copy_alone(void *ctx)
{
    const struct copy_args *a = ctx;
    return lrun_model_measure_host_copy(a->model, a->bytes, a->bytes_per_s);
}

lrun_status lrun_model_measure_host_copy_copying(lrun_model *model, size_t bytes, size_t copy_bytes,
                                                 double *bytes_per_s, double *copy_bytes_per_s)
{
    if (copy_bytes_per_s) *copy_bytes_per_s = 0;
    if (!bytes_per_s) return lrun_fail(LRUN_E_ARG, "measuring host copy beside copies: bytes_per_s is NULL");
    *bytes_per_s = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring host copy beside copies: model is NULL");
    struct copy_args a = {model, bytes, bytes_per_s};
    const lrun_status st =
        lrun_copy_load_beside(lrun_model_device(model), copy_bytes, "measuring host copy beside copies", copy_alone,
                              &a, copy_bytes_per_s);
    if (st != LRUN_OK) *bytes_per_s = 0;
    return st;
}
