/* measure_matmul.c — how fast the CPU reads weights in a decode matmul,
 * and how fast a batched product (prefill) runs on the host or the device.
 *
 * Host compute (lrun_tensor_set_host_compute) trades bytes over the bus for
 * bytes through the CPU's dot kernels; policies/smart.lua weighs the two
 * with this figure and the measured bus bandwidth. The product is the one
 * host compute runs: lrun_cpu_matmul on the model's thread pool, one
 * activation row (decode), over a synthetic weight of the dtype whose
 * words vary (lrun_measure_fill: a zeroed one read at cache speed in a VM). */
#include "lrun.h"
#include "core/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu/cpu_matmul.h"
#include "core/device.h"
#include "core/error.h"
#include "cpu/measure.h"
#include "model/model.h"

#ifdef LRUN_WITH_CUDA
/* runtime/cuda/measure_gemm.c: lrun_model_measure_matmul on a CUDA device. */
lrun_status lrun_cuda_measure_gemm(lrun_device *device, lrun_dtype dtype, int64_t n, int64_t k, int64_t rows,
                                   double *flops_per_s);
/* runtime/cuda/measure_gemv.c: lrun_model_measure_device_gemv. */
lrun_status lrun_cuda_measure_gemv(lrun_device *device, int exact, lrun_dtype dtype, int64_t n, int64_t k,
                                   size_t bytes, double *bytes_per_s);
#endif

/* Bytes of last-level cache of the whole machine: the largest cache level
 * sysfs lists for cpu0, times the number of such caches (CPUs configured
 * over the CPUs sharing it: AMD parts have one L3 per core complex). 0 when
 * sysfs does not say (containers, gVisor). */
size_t lrun_cpu_last_level_cache_bytes(void)
{
    size_t best = 0;
    long sharing = 1;
    for (int i = 0; i < 8; i++) {
        char path[96], text[256];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        unsigned long kib = 0;
        const int got = fscanf(f, "%luK", &kib);
        fclose(f);
        if (got != 1 || (size_t)kib * 1024 <= best) continue;
        best = (size_t)kib * 1024;
        sharing = 1;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/shared_cpu_list", i);
        f = fopen(path, "r");
        if (f && fgets(text, sizeof text, f)) { /* "0-15,128-143": count the CPUs */
            long n = 0;
            for (char *c = text; *c;) {
                char *end;
                const long lo = strtol(c, &end, 10);
                if (end == c) break;
                long hi = lo;
                if (*end == '-') hi = strtol(end + 1, &end, 10);
                n += hi >= lo ? hi - lo + 1 : 1;
                c = *end == ',' ? end + 1 : end;
                if (*c == '\n') break;
            }
            if (n > 0) sharing = n;
        }
        if (f) fclose(f);
    }
    const long cpus = sysconf(_SC_NPROCESSORS_CONF);
    return best * (size_t)(cpus > sharing ? (cpus + sharing - 1) / sharing : 1);
}

size_t lrun_measure_dram_bytes(size_t bytes, size_t share)
{
    const size_t llc = lrun_cpu_last_level_cache_bytes(), gib = (size_t)1 << 30;
    const size_t floor_bytes = 2 * llc > gib ? 2 * llc : gib;
    const size_t avail = lrun_host_memory_available();
    size_t want = floor_bytes < ((size_t)1 << 32) ? floor_bytes : (size_t)1 << 32;
    if (avail && share && want > avail / share) want = avail / share;
    return bytes < want ? want : bytes;
}

lrun_status lrun_model_measure_host_matmul(lrun_model *model, lrun_dtype dtype, size_t bytes, double *bytes_per_s)
{
    if (!bytes_per_s) return lrun_fail(LRUN_E_ARG, "measuring host matmul: bytes_per_s is NULL");
    *bytes_per_s = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring host matmul: model is NULL");
    if (bytes < ((size_t)1 << 20) || bytes > ((size_t)1 << 32))
        return lrun_fail(LRUN_E_ARG, "measuring host matmul: %zu bytes is outside [1 MiB, 4 GiB]", bytes);
    if (dtype == LRUN_DTYPE_Q8_1 || dtype == LRUN_DTYPE_Q8_K || !lrun_dtype_is_supported((int)dtype))
        return lrun_fail(LRUN_E_ARG, "measuring host matmul: dtype %d is not a weight dtype", (int)dtype);
    /* Twice the machine's last-level cache and at least 1 GiB, so the rows
     * come from DRAM as a model's would, not from cache: a 64 MiB weight in a
     * 300 MiB L3 measured 222 GB/s against DRAM's ~99 (issue #15). The 1 GiB
     * floor because a virtual machine's sysfs may list less cache than the
     * host has. */
    bytes = lrun_measure_dram_bytes(bytes, 4); /* never more than a quarter of what is free */
    /* rows of 4096 elements: a multiple of every block size, a typical width */
    const int64_t k = 4096;
    size_t row_bytes = 0;
    const lrun_status rs = lrun_dtype_row_bytes(dtype, k, &row_bytes);
    if (rs != LRUN_OK) return rs;
    const int64_t n = (int64_t)(bytes / row_bytes) > 0 ? (int64_t)(bytes / row_bytes) : 1;
    const size_t wbytes = (size_t)n * row_bytes, work_bytes = lrun_cpu_matmul_work_bytes(dtype, 1, k);
    /* written with varied words, not zeros: untouched pages all map the
     * kernel's one zero page, and pages all alike read as no model's do
     * (measure_fill.c) */
    void *w = malloc(wbytes), *work = work_bytes ? malloc(work_bytes) : NULL;
    if (w) lrun_measure_fill(w, wbytes, 1);
    float *x = calloc((size_t)k, sizeof *x), *y = malloc((size_t)n * sizeof *y);
    lrun_status st = LRUN_OK;
    if (!w || !x || !y || (work_bytes && !work))
        st = lrun_fail_oom(wbytes, 0, "measuring host matmul: %zu bytes of host memory", wbytes);
    double best = 0;
    lrun_threadpool *pool = lrun_model_threadpool(model);
    /* one warm-up product (pages in, threads awake), then the best of three */
    for (int i = 0; i < 4 && st == LRUN_OK; i++) {
        const double t0 = lrun_now_seconds();
        lrun_cpu_matmul(pool, dtype, w, row_bytes, n, k, x, 1, y, work);
        const double dt = lrun_now_seconds() - t0;
        if (i > 0 && dt > 0 && (double)wbytes / dt > best) best = (double)wbytes / dt;
    }
    free(w);
    free(work);
    free(x);
    free(y);
    if (st == LRUN_OK) *bytes_per_s = best;
    return st;
}

/* The batched product on the host: n rows of a synthetic weight (varied
 * words: lrun_measure_fill), rows activation rows; flop/s. */
static lrun_status host_gemm_rate(lrun_model *model, lrun_dtype dtype, int64_t n, int64_t k, int64_t rows,
                                  double *flops_per_s)
{
    size_t row_bytes = 0;
    lrun_status st = lrun_dtype_row_bytes(dtype, k, &row_bytes);
    if (st != LRUN_OK) return lrun_fail_context(st, "measuring matmul");
    /* at most 2 GFLOP a product, so a 2-core host measures in about a second */
    const double max_flops = 2e9;
    const int64_t n_cap = (int64_t)(max_flops / (2.0 * (double)k * (double)rows));
    if (n > n_cap) n = n_cap > 0 ? n_cap : 1;
    const size_t wbytes = (size_t)n * row_bytes, work_bytes = lrun_cpu_matmul_work_bytes(dtype, rows, k);
    void *w = malloc(wbytes), *work = work_bytes ? malloc(work_bytes) : NULL;
    float *x = calloc((size_t)rows * (size_t)k, sizeof *x), *y = malloc((size_t)rows * (size_t)n * sizeof *y);
    if (!w || !x || !y || (work_bytes && !work))
        st = lrun_fail_oom(wbytes, 0, "measuring matmul: %zu bytes of host memory", wbytes);
    else lrun_measure_fill(w, wbytes, 2); /* written, varied: measure_fill.c */
    double best = 0;
    lrun_threadpool *pool = lrun_model_threadpool(model);
    const double flops = 2.0 * (double)n * (double)k * (double)rows;
    for (int i = 0; i < 4 && st == LRUN_OK; i++) { /* a warm-up, then the best of three */
        const double t0 = lrun_now_seconds();
        lrun_cpu_matmul(pool, dtype, w, row_bytes, n, k, x, rows, y, work);
        const double dt = lrun_now_seconds() - t0;
        if (i > 0 && dt > 0 && flops / dt > best) best = flops / dt;
    }
    free(w);
    free(work);
    free(x);
    free(y);
    if (st == LRUN_OK) *flops_per_s = best;
    return st;
}

lrun_status lrun_model_measure_matmul(lrun_model *model, int on_device, lrun_dtype dtype, int64_t n, int64_t k,
                                      int64_t rows, double *flops_per_s)
{
    if (!flops_per_s) return lrun_fail(LRUN_E_ARG, "measuring matmul: flops_per_s is NULL");
    *flops_per_s = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring matmul: model is NULL");
    if (dtype == LRUN_DTYPE_Q8_1 || dtype == LRUN_DTYPE_Q8_K || !lrun_dtype_is_supported((int)dtype))
        return lrun_fail(LRUN_E_ARG, "measuring matmul: dtype %d is not a weight dtype", (int)dtype);
    if (n < 1 || n > 65536 || k < 1 || k > 65536 || rows < 1 || rows > 8192)
        return lrun_fail(LRUN_E_ARG, "measuring matmul: n %lld, k %lld, rows %lld outside [1, 65536], [1, 65536], "
                         "[1, 8192]", (long long)n, (long long)k, (long long)rows);
    size_t row_bytes = 0;
    if (lrun_dtype_row_bytes(dtype, k, &row_bytes) != LRUN_OK)
        return lrun_fail(LRUN_E_ARG, "measuring matmul: k %lld is not a whole number of %s blocks", (long long)k,
                         lrun_dtype_name(dtype));
    lrun_device *dev = lrun_model_device(model);
    if (on_device && lrun_device_kind_of(dev) == LRUN_DEVICE_KIND_CUDA) {
#ifdef LRUN_WITH_CUDA
        return lrun_cuda_measure_gemm(dev, dtype, n, k, rows, flops_per_s);
#else
        return lrun_fail(LRUN_E_DEVICE, "measuring matmul: this build has no CUDA");
#endif
    }
    return host_gemm_rate(model, dtype, n, k, rows, flops_per_s);
}

lrun_status lrun_model_measure_device_gemv(lrun_model *model, lrun_dtype dtype, int64_t n, int64_t k, size_t bytes,
                                           double *bytes_per_s)
{
    if (!bytes_per_s) return lrun_fail(LRUN_E_ARG, "measuring the decode GEMV: bytes_per_s is NULL");
    *bytes_per_s = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring the decode GEMV: model is NULL");
    if (dtype == LRUN_DTYPE_Q8_1 || dtype == LRUN_DTYPE_Q8_K || !lrun_dtype_is_supported((int)dtype))
        return lrun_fail(LRUN_E_ARG, "measuring the decode GEMV: dtype %d is not a weight dtype", (int)dtype);
    if (n < 1 || n > 65536 || k < 1 || k > 65536)
        return lrun_fail(LRUN_E_ARG, "measuring the decode GEMV: n %lld, k %lld outside [1, 65536]", (long long)n,
                         (long long)k);
    if (bytes < ((size_t)1 << 20) || bytes > ((size_t)16 << 30))
        return lrun_fail(LRUN_E_ARG, "measuring the decode GEMV: %zu bytes outside [1 MiB, 16 GiB]", bytes);
    size_t row_bytes = 0;
    if (lrun_dtype_row_bytes(dtype, k, &row_bytes) != LRUN_OK)
        return lrun_fail(LRUN_E_ARG, "measuring the decode GEMV: k %lld is not a whole number of %s blocks",
                         (long long)k, lrun_dtype_name(dtype));
    lrun_device *dev = lrun_model_device(model);
    if (lrun_device_kind_of(dev) != LRUN_DEVICE_KIND_CUDA)
        return lrun_fail(LRUN_E_DEVICE, "measuring the decode GEMV: the model's device %s is not a CUDA device "
                         "(lrun_model_measure_weights_gemv measures the CPU's)", lrun_device_name(dev));
#ifdef LRUN_WITH_CUDA
    return lrun_cuda_measure_gemv(dev, 0, dtype, n, k, bytes, bytes_per_s);
#else
    return lrun_fail(LRUN_E_DEVICE, "measuring the decode GEMV: this build has no CUDA");
#endif
}
