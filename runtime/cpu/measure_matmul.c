/* measure_matmul.c — how fast the CPU reads weights in a decode matmul.
 *
 * Host compute (lrun_tensor_set_host_compute) trades bytes over the bus for
 * bytes through the CPU's dot kernels; policies/smart.lua weighs the two
 * with this figure and the measured bus bandwidth. The product is the one
 * host compute runs: lrun_cpu_matmul on the model's thread pool, one
 * activation row (decode), over a zeroed weight of the dtype (the kernels'
 * speed does not depend on the values). */
#include "lrun.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu/cpu_matmul.h"
#include "core/device.h"
#include "core/error.h"
#include "model/model.h"

/* Bytes of last-level cache of the whole machine: the largest cache level
 * sysfs lists for cpu0, times the number of such caches (CPUs configured
 * over the CPUs sharing it: AMD parts have one L3 per core complex). 0 when
 * sysfs does not say (containers, gVisor). */
static size_t last_level_cache_bytes(void)
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

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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
    /* Twice the machine's last-level cache (1 GiB when unknown), so the rows
     * come from DRAM as a model's would, not from cache: a 64 MiB weight in a
     * 300 MiB L3 measured 222 GB/s against DRAM's ~99 (issue #15). */
    const size_t llc = last_level_cache_bytes(), floor_bytes = llc ? 2 * llc : (size_t)1 << 30;
    const size_t avail = lrun_host_memory_available(); /* never more than a quarter of what is free */
    size_t want = floor_bytes < ((size_t)1 << 32) ? floor_bytes : (size_t)1 << 32;
    if (avail && want > avail / 4) want = avail / 4;
    if (bytes < want) bytes = want;
    /* rows of 4096 elements: a multiple of every block size, a typical width */
    const int64_t k = 4096;
    size_t row_bytes = 0;
    const lrun_status rs = lrun_dtype_row_bytes(dtype, k, &row_bytes);
    if (rs != LRUN_OK) return rs;
    const int64_t n = (int64_t)(bytes / row_bytes) > 0 ? (int64_t)(bytes / row_bytes) : 1;
    const size_t wbytes = (size_t)n * row_bytes, work_bytes = lrun_cpu_matmul_work_bytes(dtype, 1, k);
    /* written, not calloc'd: untouched pages all map the kernel's one zero
     * page, which a read finds in L1 whatever the size */
    void *w = malloc(wbytes), *work = work_bytes ? malloc(work_bytes) : NULL;
    if (w) memset(w, 0, wbytes);
    float *x = calloc((size_t)k, sizeof *x), *y = malloc((size_t)n * sizeof *y);
    lrun_status st = LRUN_OK;
    if (!w || !x || !y || (work_bytes && !work))
        st = lrun_fail_oom(wbytes, 0, "measuring host matmul: %zu bytes of host memory", wbytes);
    double best = 0;
    lrun_threadpool *pool = lrun_model_threadpool(model);
    /* one warm-up product (pages in, threads awake), then the best of three */
    for (int i = 0; i < 4 && st == LRUN_OK; i++) {
        const double t0 = now_seconds();
        lrun_cpu_matmul(pool, dtype, w, row_bytes, n, k, x, 1, y, work);
        const double dt = now_seconds() - t0;
        if (i > 0 && dt > 0 && (double)wbytes / dt > best) best = (double)wbytes / dt;
    }
    free(w);
    free(work);
    free(x);
    free(y);
    if (st == LRUN_OK) *bytes_per_s = best;
    return st;
}
