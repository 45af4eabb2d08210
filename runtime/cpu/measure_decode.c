/* measure_decode.c — what a CPU decode step costs, measured where it is
 * paid (issue #15: the decode prediction was 2-4x too fast on the CPU).
 *
 * Two figures for lua/lrun/predict_plan.lua (docs/residency.md "Predicted
 * decode on the CPU"):
 *  - the decode GEMV's read rate over the model's own matrices, in their own
 *    memory (the file mapping's page-cache pages or the engine's copy), at
 *    their own widths, on the model's threads: a zeroed synthetic weight of
 *    4096-wide rows measured what one model never sees (other pages, another
 *    k, and a cache key without the thread count made it the 2-thread rate
 *    at 1 thread);
 *  - one layer's one-token attention over n_pos cached positions, which a
 *    bandwidth term over the weights leaves out (0.7 ms of a 5.4 ms step at
 *    512 positions on the build machine). */
#include "lrun.h"
#include "core/clock.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/copy_load.h"
#include "core/device.h"
#include "core/error.h"
#include "cpu/cpu_matmul.h"
#include "cpu/cpu_ops.h"
#include "core/host_account.h"
#include "cpu/measure.h"
#include "model/model.h"

#define GEMV_PASSES 5 /* timed passes after the warm-up; their mean is the figure (a run of steps averages its slow ones) */
#define ATTN_RUNS 5   /* timed attention runs after the warm-up; the median */
#define MAX_PARTS 4096

/* A buffer larger than the last-level cache, read over the pool's threads
 * before each attention run: the run then finds its cache cold, as a decode
 * step's does after the layer's weights streamed through (a hot 0.5 MiB
 * cache ran twice as fast at 2 threads), and the workers awake, as between
 * a step's products (after a single-threaded read they slept, and a futex
 * wake added 40 us a run). */
struct evict_task {
    const unsigned char *buf; /* (bytes) */
    size_t bytes;
    unsigned long sum[64];    /* per ith (< 64), so the reads stay */
};

static void evict_run(void *ctx, int ith, int nth)
{
    struct evict_task *t = ctx;
    const size_t lines = t->bytes / 64, first = lines * (size_t)ith / (size_t)nth,
                 last = lines * (size_t)(ith + 1) / (size_t)nth;
    unsigned long s = 0;
    for (size_t i = first; i < last; i++) s += t->buf[i * 64];
    t->sum[ith & 63] += s;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* What a measurement may touch: a quarter of the host's available memory
 * (MemAvailable, or a memory cgroup's room) and of the host budget's room.
 * Reading a model's mapped weights fills the page cache that a cgroup
 * charges, and a build VM may report a whole socket's L3 (260 MiB): twice
 * that in a 256 MiB cgroup was an OOM kill at load (tests/disk/cgroup_test.sh). */
static size_t measure_room(lrun_model *model)
{
    size_t room = lrun_host_memory_available();
    const size_t budget = lrun_host_account_room(&model->host);
    if (!room || budget < room) room = budget;
    return room == SIZE_MAX ? SIZE_MAX : room / 4;
}

/* The median of n timings (sorts them). */
static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* One matrix the decode GEMV reads: rows of k elements, row_bytes apart, at w. */
typedef struct {
    const void *w;
    int64_t rows, k;
    size_t row_bytes;
} gemv_part;

/* Where the host reads tensor t's plain bytes, or NULL: the engine's copy
 * when the host can read it (every tier on the cpu device; on cuda every
 * tier but the device's), else the file mapping; packed bytes are no GEMV's. */
static const void *host_bytes(const struct lrun_tensor *t, int cpu)
{
    if (t->data && !t->packed && (cpu || t->tier != LRUN_TIER_DEVICE)) return t->data;
    if (t->file_data && !t->file_packed) return t->file_data;
    return NULL;
}

/* The model's matrices of dtype in file order (what a decode step reads;
 * the embedding gives one row per token, so not it), until want bytes. */
static int gemv_parts(lrun_model *model, lrun_dtype dtype, size_t want, gemv_part *parts, size_t *total,
                      int64_t *max_k, int64_t *max_rows)
{
    const int cpu = lrun_device_kind_of(lrun_model_device(model)) == LRUN_DEVICE_KIND_CPU;
    int n = 0;
    *total = 0;
    *max_k = *max_rows = 0;
    for (int64_t i = 0; i < model->n_tensors && n < MAX_PARTS && *total < want; i++) {
        const struct lrun_tensor *t = &model->tensors[i];
        if (t->dtype != dtype || t->ndim < 2 || t->role == LRUN_ROLE_EMBEDDING || t->ne[1] < 2) continue;
        const void *w = host_bytes(t, cpu);
        if (!w) continue;
        const int64_t rows = (int64_t)(t->nbytes / t->row_bytes); /* stacked experts: every expert's rows */
        parts[n++] = (gemv_part){w, rows, t->ne[0], t->row_bytes};
        *total += t->nbytes;
        if (t->ne[0] > *max_k) *max_k = t->ne[0];
        if (rows > *max_rows) *max_rows = rows;
    }
    return n;
}

lrun_status lrun_model_measure_weights_gemv(lrun_model *model, lrun_dtype dtype, size_t bytes, double *bytes_per_s)
{
    if (!bytes_per_s) return lrun_fail(LRUN_E_ARG, "measuring the weights' gemv: bytes_per_s is NULL");
    *bytes_per_s = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring the weights' gemv: model is NULL");
    if (bytes < ((size_t)1 << 20) || bytes > ((size_t)1 << 32))
        return lrun_fail(LRUN_E_ARG, "measuring the weights' gemv: %zu bytes is outside [1 MiB, 4 GiB]", bytes);
    if (dtype == LRUN_DTYPE_Q8_1 || dtype == LRUN_DTYPE_Q8_K || !lrun_dtype_is_supported((int)dtype))
        return lrun_fail(LRUN_E_ARG, "measuring the weights' gemv: dtype %d is not a weight dtype", (int)dtype);
    /* twice the last-level cache at least, so the passes read DRAM as a
     * step over a larger model does; a smaller model is read whole (its
     * decode finds it in cache too) */
    const size_t llc = lrun_cpu_last_level_cache_bytes(), room = measure_room(model);
    size_t want = llc && 2 * llc > bytes ? 2 * llc : bytes;
    if (want > room) want = room > bytes ? room : bytes; /* at least what the caller asked */
    gemv_part *parts = malloc(MAX_PARTS * sizeof *parts);
    if (!parts) return lrun_fail_oom(MAX_PARTS * sizeof *parts, 0, "measuring the weights' gemv: the list");
    size_t total = 0;
    int64_t max_k = 0, max_rows = 0;
    const int n = gemv_parts(model, dtype, want, parts, &total, &max_k, &max_rows);
    if (n == 0) {
        free(parts);
        return lrun_fail(LRUN_E_UNSUPPORTED, "measuring the weights' gemv: model %s has no %s matrix the host "
                         "can read", model->weights_path ? model->weights_path : "(no path)", lrun_dtype_name(dtype));
    }
    const size_t work_bytes = lrun_cpu_matmul_work_bytes(dtype, 1, max_k);
    void *work = work_bytes ? malloc(work_bytes) : NULL;
    float *x = calloc((size_t)max_k, sizeof *x), *y = malloc((size_t)max_rows * sizeof *y);
    lrun_status st = LRUN_OK;
    if (!x || !y || (work_bytes && !work))
        st = lrun_fail_oom((size_t)max_rows * sizeof *y, 0, "measuring the weights' gemv: activations");
    lrun_threadpool *pool = lrun_model_threadpool(model);
    double t[GEMV_PASSES];
    for (int pass = 0; pass <= GEMV_PASSES && st == LRUN_OK; pass++) { /* pass 0: pages in, threads awake */
        const double t0 = lrun_now_seconds();
        for (int i = 0; i < n; i++)
            lrun_cpu_matmul(pool, dtype, parts[i].w, parts[i].row_bytes, parts[i].rows, parts[i].k, x, 1, y, work);
        if (pass > 0) t[pass - 1] = lrun_now_seconds() - t0;
    }
    free(parts);
    free(work);
    free(x);
    free(y);
    if (st != LRUN_OK) return st;
    double s = 0;
    for (int i = 0; i < GEMV_PASSES; i++) s += t[i];
    *bytes_per_s = s > 0 ? (double)total * GEMV_PASSES / s : 0;
    return LRUN_OK;
}

struct gemv_args {
    lrun_model *model;
    lrun_dtype dtype;
    size_t bytes;
    double *bytes_per_s;
};

static lrun_status gemv_alone(void *ctx)
{
    const struct gemv_args *a = ctx;
    return lrun_model_measure_weights_gemv(a->model, a->dtype, a->bytes, a->bytes_per_s);
}

lrun_status lrun_model_measure_weights_gemv_copying(lrun_model *model, lrun_dtype dtype, size_t bytes,
                                                    size_t copy_bytes, double *bytes_per_s, double *copy_bytes_per_s)
{
    if (copy_bytes_per_s) *copy_bytes_per_s = 0;
    if (!bytes_per_s) return lrun_fail(LRUN_E_ARG, "measuring the weights' gemv beside copies: bytes_per_s is NULL");
    *bytes_per_s = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring the weights' gemv beside copies: model is NULL");
    struct gemv_args a = {model, dtype, bytes, bytes_per_s};
    const lrun_status st =
        lrun_copy_load_beside(lrun_model_device(model), copy_bytes, "measuring the weights' gemv beside copies",
                              gemv_alone, &a, copy_bytes_per_s);
    if (st != LRUN_OK) *bytes_per_s = 0;
    return st;
}

lrun_status lrun_model_measure_decode_attention(lrun_model *model, int64_t n_pos, double *seconds)
{
    if (!seconds) return lrun_fail(LRUN_E_ARG, "measuring decode attention: seconds is NULL");
    *seconds = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring decode attention: model is NULL");
    if (n_pos < 1 || n_pos > ((int64_t)1 << 20))
        return lrun_fail(LRUN_E_ARG, "measuring decode attention: %lld positions is outside [1, 2^20]",
                         (long long)n_pos);
    const lrun_model_info *in = &model->info;
    const int64_t nh = in->n_head, nkv = in->n_head_kv, hd = in->head_dim;
    if (nh < 1 || nkv < 1 || hd < 1 || nh % nkv != 0)
        return lrun_fail(LRUN_E_ARG, "measuring decode attention: model has %lld heads, %lld KV heads of %lld",
                         (long long)nh, (long long)nkv, (long long)hd);
    lrun_threadpool *pool = lrun_model_threadpool(model);
    const int nth = pool ? lrun_threadpool_size(pool) : 1;
    /* the engine's cache layout at f16: keys (n_pos, nkv, hd), values transposed (nkv, hd, n_pos) */
    const size_t kv = (size_t)(n_pos * nkv * hd);
    const int64_t stride = (n_pos + 31) / 32 * 32 + hd; /* lrun_attention_batch's scores_stride */
    uint16_t *k = calloc(kv, 2), *v = calloc(kv, 2);
    float *q = calloc((size_t)(nh * hd), sizeof *q), *out = malloc((size_t)(nh * hd) * sizeof *out);
    float *scores = malloc((size_t)(nth * stride) * sizeof *scores);
    const size_t llc = lrun_cpu_last_level_cache_bytes(), room = measure_room(model);
    size_t flush = llc ? (2 * llc < ((size_t)256 << 20) ? 2 * llc : (size_t)256 << 20) : (size_t)64 << 20;
    if (flush > room) flush = room > ((size_t)1 << 20) ? room : (size_t)1 << 20;
    unsigned char *cold = malloc(flush);
    if (cold) memset(cold, 1, flush); /* written: untouched pages all map one zero page */
    lrun_status st = LRUN_OK;
    if (!k || !v || !q || !out || !scores || !cold)
        st = lrun_fail_oom(2 * kv * 2, 0, "measuring decode attention: a cache of %lld positions", (long long)n_pos);
    const void *kp = k, *vp = v;
    const int64_t cap = n_pos;
    const lrun_attention_batch ab = {1, nh, nkv, hd, 1.0f / 8.0f, LRUN_DTYPE_F16, 0, q, out, &kp, &vp, &cap, &n_pos,
                                     scores, stride, NULL, 0, 0, 0, 0, 0.0f, NULL};
    double t[ATTN_RUNS];
    struct evict_task ev = {.buf = cold, .bytes = flush};
    for (int r = 0; r <= ATTN_RUNS && st == LRUN_OK; r++) { /* run 0: warm-up */
        if (pool) lrun_threadpool_run(pool, evict_run, &ev);
        else evict_run(&ev, 0, 1);
        const double t0 = lrun_now_seconds();
        lrun_cpu_attention(pool, &ab);
        if (r > 0) t[r - 1] = lrun_now_seconds() - t0;
    }
    free(k);
    free(v);
    free(q);
    free(out);
    free(scores);
    free(cold);
    if (st == LRUN_OK) *seconds = median(t, ATTN_RUNS);
    return st;
}
