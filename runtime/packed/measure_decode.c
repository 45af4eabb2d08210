/* measure_decode.c — how fast packed weights decode where they are used.
 *
 * Placing a weight packed trades device (or link) bytes for a decode before
 * each use (docs/packed.md): the streamed bytes shrink to the packed ones,
 * and the decode runs on the copy stream (mode 2), before the product
 * (mode 3's engine path) or on the host (host compute: decoded a tile at a
 * time before each tile's product, lrun_model_measure_packed_host_matmul
 * times the two together). policies/smart.lua weighs both with these
 * figures, measured like the bandwidths: a warm-up,
 * then the best of three, over synthetic trained-like bf16 (the decoder's
 * speed depends on how many exponents escape the codebooks, so values
 * shaped like trained weights, not zeros). */
#include "lrun.h"
#include "core/clock.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "cpu/cpu_matmul.h"
#include "cpu/cpu_matmul_packed.h"
#include "core/threadpool.h"
#include "cpu/measure.h"
#include "model/model.h"
#include "model/random_fill.h"
#include "packed/codec.h"

#ifdef LRUN_WITH_CUDA
lrun_status lrun_cuda_measure_packed_decode(lrun_device *device, const void *packed, const lrun_packed_layout *lay,
                                            double *bytes_per_s);
#endif

/* The host decoder over the model's threads: plain bytes per second. */
static double host_rate(lrun_threadpool *pool, const void *packed, const lrun_packed_layout *lay, uint16_t *dst)
{
    double best = 0;
    for (int i = 0; i < 4; i++) {
        const double t0 = lrun_now_seconds();
        lrun_packed_decode_range_mt(dst, packed, lay, 0, lay->n, pool);
        const double dt = lrun_now_seconds() - t0;
        if (i > 0 && dt > 0 && (double)lay->n * 2 / dt > best) best = (double)lay->n * 2 / dt;
    }
    return best;
}

/* The codec to time: the one most of the model's packable bytes have or
 * will have. A tensor packed now, or before (its layout is kept), has its
 * own; any other would pack at placement by lrun pack's rule (bf16 PEX2,
 * f16 PEX1: lrun_tensor_move_form). The two decode at different speeds (on
 * an H100 the prototype's PEX2 decode_rows wrote 1.5 TB/s against PEX1's
 * lrun_k_packed_decode at 0.42 TB/s; on the host 3.4x faster), so a plan
 * made with the other codec's rate would misprice the decode 3-4x. */
static int model_codec(const lrun_model *model)
{
    size_t by[3] = {0, 0, 0}; /* bytes per LRUN_PACKED_CODEC_* */
    for (int64_t i = 0; i < model->n_tensors; i++) {
        const lrun_tensor *t = &model->tensors[i];
        if (t->ndim != 2 || !lrun_packed_dtype_ok(t->dtype)) continue;
        int c = t->pk.total ? t->pk.codec : 0;
        if (c != LRUN_PACKED_CODEC_EXP && c != LRUN_PACKED_CODEC_PEX2)
            c = lrun_pex2_fits(t->dtype, (uint64_t)lrun_tensor_nelements(t)) ? LRUN_PACKED_CODEC_PEX2
                                                                             : LRUN_PACKED_CODEC_EXP;
        by[c] += t->nbytes;
    }
    return by[LRUN_PACKED_CODEC_PEX2] > 0 && by[LRUN_PACKED_CODEC_PEX2] >= by[LRUN_PACKED_CODEC_EXP]
               ? LRUN_PACKED_CODEC_PEX2
               : LRUN_PACKED_CODEC_EXP;
}

/* Trained-like bf16 values across the pool (counter-based: the same bytes
 * whichever thread writes a range). */
typedef struct {
    uint16_t *dst;
    uint64_t n;
    _Atomic int failed;
} fill_task;

static void fill_run(void *p, int ith, int nth)
{
    fill_task *t = p;
    const uint64_t a = t->n * (uint64_t)ith / (uint64_t)nth, b = t->n * (uint64_t)(ith + 1) / (uint64_t)nth;
    if (b > a &&
        lrun_random_fill_trained(LRUN_DTYPE_BF16, t->dst + a, (int64_t)a, (int64_t)(b - a), 0.02f, 12) != LRUN_OK)
        atomic_store(&t->failed, 1);
}

static lrun_status fill_trained(lrun_threadpool *pool, uint16_t *dst, uint64_t n)
{
    fill_task t = {.dst = dst, .n = n};
    atomic_init(&t.failed, 0);
    lrun_threadpool_run(pool, fill_run, &t);
    return atomic_load(&t.failed) ? lrun_fail(LRUN_E_ARG, "filling %llu trained-like values", (unsigned long long)n)
                                  : LRUN_OK;
}

/* One weight of the model's codec: n plain values, trained-like; *plain
 * (may be NULL: freed) the plain values, *out its packed bytes (both
 * malloc'd), *lay its layout. */
static lrun_status packed_weight(lrun_model *model, uint64_t n, uint16_t **plain_out, void **out, size_t *size,
                                 lrun_packed_layout *lay)
{
    const int pex2 = model_codec(model) == LRUN_PACKED_CODEC_PEX2;
    const size_t cap = pex2 ? lrun_pex2_bound(n) : lrun_packed_bound(LRUN_DTYPE_BF16, n);
    uint16_t *plain = malloc((size_t)n * 2);
    void *packed = malloc(cap);
    lrun_status st = plain && packed
                         ? LRUN_OK
                         : lrun_fail_oom(cap + n * 2, 0, "a packed weight of %llu values", (unsigned long long)n);
    lrun_threadpool *pool = lrun_model_threadpool(model);
    if (st == LRUN_OK) st = fill_trained(pool, plain, n);
    if (st == LRUN_OK)
        st = pex2 ? lrun_pex2_encode(packed, cap, size, plain, n, pool)
                  : lrun_packed_encode(packed, cap, size, LRUN_DTYPE_BF16, plain, n, pool);
    if (st == LRUN_OK) st = lrun_packed_validate_mt(lay, packed, *size, "measurement", pool);
    if (st != LRUN_OK || !plain_out) free(plain);
    if (st != LRUN_OK) {
        free(packed);
        return st;
    }
    if (plain_out) *plain_out = plain;
    *out = packed;
    return LRUN_OK;
}

lrun_status lrun_model_measure_packed_decode(lrun_model *model, int on_device, size_t bytes, double *bytes_per_s)
{
    if (!bytes_per_s) return lrun_fail(LRUN_E_ARG, "measuring packed decode: bytes_per_s is NULL");
    *bytes_per_s = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring packed decode: model is NULL");
    if (bytes < ((size_t)1 << 20) || bytes > ((size_t)1 << 32))
        return lrun_fail(LRUN_E_ARG, "measuring packed decode: %zu bytes is outside [1 MiB, 4 GiB]", bytes);
    const uint64_t n = bytes / 2 / 8 * 8; /* PEX2 takes multiples of 8 */
    void *packed = NULL;
    size_t size = 0;
    lrun_packed_layout lay;
    lrun_status st = packed_weight(model, n, NULL, &packed, &size, &lay);
    if (st != LRUN_OK) return lrun_fail_context(st, "measuring packed decode");
    uint16_t *plain = malloc((size_t)n * 2);
    if (!plain) st = lrun_fail_oom((size_t)n * 2, 0, "measuring packed decode: host buffers");
    double best = 0;
    lrun_device *dev = lrun_model_device(model);
    if (st == LRUN_OK && on_device && lrun_device_kind_of(dev) == LRUN_DEVICE_KIND_CUDA) {
#ifdef LRUN_WITH_CUDA
        st = lrun_cuda_measure_packed_decode(dev, packed, &lay, &best);
#else
        st = lrun_fail(LRUN_E_DEVICE, "measuring packed decode: this build has no CUDA");
#endif
    } else if (st == LRUN_OK) {
        best = host_rate(lrun_model_threadpool(model), packed, &lay, plain);
    }
    free(plain);
    free(packed);
    if (st == LRUN_OK) *bytes_per_s = best;
    return st;
}

/* The best of two passes (after a warm-up: the span is 1 GiB or more, and
 * this runs where a plan weighs packing, at load) of one product per copy
 * of a weight laid stride bytes apart across all: the packed one (lay) or
 * the plain one (lay NULL); plain bytes per second. */
static double products_rate(lrun_threadpool *pool, const char *all, size_t copies, size_t stride,
                            const lrun_packed_layout *lay, int64_t rows, int64_t k, const float *x, float *y,
                            void *work)
{
    double best = 0;
    const double plain = (double)copies * (double)rows * (double)k * 2;
    for (int i = 0; i < 3; i++) {
        const double t0 = lrun_now_seconds();
        for (size_t c = 0; c < copies; c++) {
            if (lay) lrun_cpu_matmul_packed(pool, all + c * stride, lay, rows, k, x, 1, y, work);
            else lrun_cpu_matmul(pool, LRUN_DTYPE_BF16, all + c * stride, (size_t)k * 2, rows, k, x, 1, y, NULL);
        }
        const double dt = lrun_now_seconds() - t0;
        if (i > 0 && dt > 0 && plain / dt > best) best = plain / dt;
    }
    return best;
}

lrun_status lrun_model_measure_packed_host_matmul(lrun_model *model, size_t bytes, double *packed_per_s,
                                                  double *plain_per_s)
{
    if (!packed_per_s || !plain_per_s) return lrun_fail(LRUN_E_ARG, "measuring packed host products: a rate is NULL");
    *packed_per_s = *plain_per_s = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring packed host products: model is NULL");
    if (bytes < ((size_t)1 << 20) || bytes > ((size_t)1 << 32))
        return lrun_fail(LRUN_E_ARG, "measuring packed host products: %zu bytes is outside [1 MiB, 4 GiB]", bytes);
    /* one weight of 2048 rows of 4096 (16 MiB plain: generating trained-like values is what costs here), its
     * copies across the DRAM span */
    const int64_t k = 4096, rows = 2048;
    const size_t plain_bytes = (size_t)(rows * k) * 2;
    uint16_t *plain = NULL;
    void *one = NULL;
    size_t size = 0;
    lrun_packed_layout lay;
    lrun_status st = packed_weight(model, (uint64_t)(rows * k), &plain, &one, &size, &lay);
    if (st != LRUN_OK) return lrun_fail_context(st, "measuring packed host products");
    const size_t span = lrun_measure_dram_bytes(bytes, 4);
    lrun_threadpool *pool = lrun_model_threadpool(model);
    const size_t work_bytes = lrun_cpu_matmul_packed_work_bytes(k, lrun_threadpool_size(pool));
    char *all = aligned_alloc(64, (span + plain_bytes + 63) / 64 * 64);
    void *work = work_bytes != SIZE_MAX ? aligned_alloc(64, work_bytes) : NULL;
    float *x = malloc((size_t)k * sizeof *x), *y = malloc((size_t)rows * sizeof *y);
    if (!all || !work || !x || !y) st = lrun_fail_oom(span, 0, "measuring packed host products: %zu bytes", span);
    for (int64_t i = 0; st == LRUN_OK && i < k; i++) x[i] = (float)((i % 7) - 3) * 0.25f;
    /* the same span of packed copies, then of plain ones: both from DRAM */
    const size_t stride = (size + 63) / 64 * 64, n_packed = span / stride > 0 ? span / stride : 1;
    const size_t n_plain = span / plain_bytes > 0 ? span / plain_bytes : 1;
    if (st == LRUN_OK) {
        /* across the pool: the span's first-touch faults and copies are most of this measurement's time */
        for (size_t c = 0; c < n_packed; c++) lrun_threadpool_memcpy(pool, all + c * stride, one, size);
        *packed_per_s = products_rate(pool, all, n_packed, stride, &lay, rows, k, x, y, work);
        for (size_t c = 0; c < n_plain; c++) lrun_threadpool_memcpy(pool, all + c * plain_bytes, plain, plain_bytes);
        *plain_per_s = products_rate(pool, all, n_plain, plain_bytes, NULL, rows, k, x, y, NULL);
    }
    free(plain);
    free(one);
    free(all);
    free(work);
    free(x);
    free(y);
    return st;
}
