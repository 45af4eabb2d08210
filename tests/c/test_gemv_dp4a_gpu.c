/* test_gemv_dp4a_gpu.c — the dp4a decode GEMV (kernels/gemv_dp4a.cu, taken
 * under LRUN_K_GEMV_DP4A) of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS,
 * Q2_K and Q3_K, and the staged one (kernels/gemv_stage.cu, under
 * LRUN_K_GEMV_STAGE) of the first six, against the CPU (Q2_K/Q3_K also
 * against the generic kernel): y must be the dot of lrun_dequantize_row's rows
 * with x rounded by lrun_quantize_activations (Q8_0 blocks: the q8 x the
 * kernel computes in shared memory), within f32 summation order (error over
 * Σ|terms| <= 1e-6), on odd shapes (n 1, 7, 33, 129, 300; k 256 to 11008),
 * padded strides, an unaligned x, and the modes STORE, ADD and SWIGLU. The
 * staged kernel runs under LRUN_K_GEMV_STAGE alone: had it declined, the
 * default kernel (x not rounded) would miss the bound by ~1e-3, so a pass
 * is its own run; its extra shapes end rows in a chunk tail (k 96, 1056 on
 * 16-byte padded strides), and a 4-byte padded stride checks that it
 * declines to the dp4a kernel (STAGE | DP4A, as the engine sets them). The
 * host emulations (test_gemv_dp4a_emu.c, test_gemv_stage_emu.c) check the
 * same arithmetic and indexing in `make test`; this is the GPU's own run.
 *
 *   build/tests/test_gemv_dp4a_gpu           the tests (one SKIP line without a GPU;
 *                                            LRUN_TEST_STAGE_ONLY=1: the staged kernel's only)
 *   build/tests/test_gemv_dp4a_gpu --bench   GB/s at m = 1 of every GEMV type on the 7B shapes,
 *                                            the default kernel, the dp4a one and the staged one, weights
 *                                            rotated over >= 200 MB so that L2 does not serve them
 *   build/tests/test_gemv_dp4a_gpu --bench q2_k,q3_k   only the types named
 *   build/tests/test_gemv_dp4a_gpu --sweep-stage [types]  the staged kernel's GB/s at each ring
 *                                            depth (lrun_k_gemv_stage_tune: 2, 3, 4, 6, 8 stages) */
#include "check.h"
#include "core/device.h"
#include "cuda/cuda_backend.h"
#include "model/random_fill.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "kernels.h"

#include "gemv_q8_ref.h" /* gemv_ref_rows, gemv_ref_q8 */
#include "gpu_fixture.h" /* dev, stream, the bump arena, up/down/dcopy, ran */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(float lo, float hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static size_t row_bytes(lrun_dtype t, int64_t k)
{
    size_t rb = 0;
    if (lrun_dtype_row_bytes(t, k, &rb) != LRUN_OK) {
        printf("Bail out! row_bytes: %s\n", lrun_last_error());
        exit(1);
    }
    return rb;
}

static const lrun_dtype dp4a_types[] = {LRUN_DTYPE_Q8_0,   LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1,
                                        LRUN_DTYPE_Q5_0,   LRUN_DTYPE_Q5_1, LRUN_DTYPE_IQ4_NL,
                                        LRUN_DTYPE_IQ4_XS, LRUN_DTYPE_Q2_K, LRUN_DTYPE_Q3_K};
#define N_DP4A ((int)(sizeof dp4a_types / sizeof dp4a_types[0]))

static const lrun_dtype stage_types[] = {LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1,
                                         LRUN_DTYPE_Q5_0, LRUN_DTYPE_Q5_1, LRUN_DTYPE_IQ4_NL};
#define N_STAGE ((int)(sizeof stage_types / sizeof stage_types[0]))

static const char *kernel_name(int flags) { return flags & LRUN_K_GEMV_STAGE ? "stage" : "dp4a"; }

/* STORE and ADD of one weight through the kernel of flags, x at an offset of
 * xoff floats; rows pad bytes apart beyond their bytes rounded up to a
 * multiple of round (1: none). */
static void test_case(lrun_dtype t, int64_t n, int64_t k, size_t pad, int xoff, int flags, size_t round)
{
    dreset();
    const size_t stride = (row_bytes(t, k) + round - 1) / round * round + pad;
    uint8_t *w = gemv_ref_rows(t, n, k, stride, (uint64_t)(n * 131 + k));
    float *x = malloc((size_t)(k + 1) * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < k + 1; i++) x[i] = frand(-1.5f, 1.5f);
    double *ref = malloc((size_t)n * sizeof *ref), *terms = malloc((size_t)n * sizeof *terms);
    gemv_ref_q8(t, w, n, k, stride, x + xoff, ref, terms);
    void *dw = dcopy(w, (size_t)n * stride);
    float *dx = dcopy(x, (size_t)(k + 1) * 4), *dy = dbuf((size_t)n * 4);
    const lrun_k_gemv_part part = {dw, stride, n, dy};
    double worst = 0.0;
    int ok = ran(lrun_k_gemv_multi(t, &part, 1, k, dx + xoff, 1, LRUN_K_GEMV_STORE | flags, stream));
    down(y, dy, (size_t)n * 4);
    for (int64_t r = 0; r < n; r++) {
        const double e = fabs(y[r] - ref[r]) / (terms[r] + 1e-30);
        worst = e > worst ? e : worst;
    }
    /* ADD into y = 1 + r */
    for (int64_t r = 0; r < n; r++) y[r] = 1.0f + (float)r;
    up(dy, y, (size_t)n * 4);
    ok &= ran(lrun_k_gemv_multi(t, &part, 1, k, dx + xoff, 1, LRUN_K_GEMV_ADD | flags, stream));
    down(y, dy, (size_t)n * 4);
    for (int64_t r = 0; r < n; r++) {
        const double e = fabs(y[r] - (1.0 + (double)r + ref[r])) / (terms[r] + 1.0 + (double)r);
        worst = e > worst ? e : worst;
    }
    /* Q2_K/Q3_K (new on the GPU): also against the generic kernel (x not
     * rounded): they differ by x's q8 rounding only, a few 1e-3 of terms */
    double worst_gen = 0.0;
    if ((t == LRUN_DTYPE_Q2_K || t == LRUN_DTYPE_Q3_K) && flags == LRUN_K_GEMV_DP4A) {
        float *yg = malloc((size_t)n * sizeof *yg);
        ok &= ran(lrun_k_gemv_multi(t, &part, 1, k, dx + xoff, 1, LRUN_K_GEMV_STORE | LRUN_K_GEMV_DP4A, stream));
        down(y, dy, (size_t)n * 4);
        ok &= ran(lrun_k_gemv_multi(t, &part, 1, k, dx + xoff, 1, LRUN_K_GEMV_STORE, stream));
        down(yg, dy, (size_t)n * 4);
        for (int64_t r = 0; r < n; r++) {
            const double e = fabs((double)y[r] - yg[r]) / (terms[r] + 1e-30);
            worst_gen = e > worst_gen ? e : worst_gen;
        }
        printf("# dp4a %s n %lld k %lld vs the generic kernel: difference/terms %.2e <= 2e-2\n", lrun_dtype_name(t),
               (long long)n, (long long)k, worst_gen);
        ok &= worst_gen <= 2e-2;
        free(yg);
    }
    char name[200];
    snprintf(name, sizeof name, "%s%s %s n %lld k %lld%s%s, store and add: error/terms %.2e <= 1e-6",
             kernel_name(flags), flags == (LRUN_K_GEMV_STAGE | LRUN_K_GEMV_DP4A) ? " (declines to dp4a)" : "",
             lrun_dtype_name(t), (long long)n, (long long)k, pad ? " (padded stride)" : "",
             xoff ? " (x unaligned)" : "", worst);
    CHECK(name, ok && worst <= 1e-6);
    free(w), free(x), free(y), free(ref), free(terms);
}

/* SWIGLU of a gate and an up weight through the kernel of flags */
static void test_swiglu(lrun_dtype t, int flags)
{
    dreset();
    const int64_t n = 33, k = 768;
    const size_t stride = row_bytes(t, k);
    uint8_t *wg = gemv_ref_rows(t, n, k, stride, 7), *wu = gemv_ref_rows(t, n, k, stride, 8);
    float *x = malloc((size_t)k * sizeof *x), y[33];
    for (int64_t i = 0; i < k; i++) x[i] = frand(-1.0f, 1.0f);
    double g[33], u[33], tg[33], tu[33];
    gemv_ref_q8(t, wg, n, k, stride, x, g, tg);
    gemv_ref_q8(t, wu, n, k, stride, x, u, tu);
    float *dx = dcopy(x, (size_t)k * 4), *dy = dbuf((size_t)n * 4);
    const lrun_k_gemv_part pair[2] = {{dcopy(wg, (size_t)n * stride), stride, n, dy},
                                      {dcopy(wu, (size_t)n * stride), stride, n, NULL}};
    const int ok = ran(lrun_k_gemv_multi(t, pair, 2, k, dx, 1, LRUN_K_GEMV_SWIGLU | flags, stream));
    down(y, dy, sizeof y);
    double worst = 0.0;
    for (int r = 0; r < n; r++) {
        const double want = g[r] / (1.0 + exp(-g[r])) * u[r];
        const double scale = (tg[r] + 1.0) * (fabs(u[r]) + tu[r] + 1.0); /* the inputs' error bounds, multiplied */
        const double e = fabs(y[r] - want) / scale;
        worst = e > worst ? e : worst;
    }
    char name[160];
    snprintf(name, sizeof name, "%s %s swiglu n 33 k 768: error/scale %.2e <= 1e-6", kernel_name(flags),
             lrun_dtype_name(t), worst);
    CHECK(name, ok && worst <= 1e-6);
    free(wg), free(wu), free(x);
}

static void tests(void)
{
    static const int64_t shapes[][2] = {{1, 256}, {7, 768}, {33, 4096}, {129, 11008}, {300, 2816}};
    /* LRUN_TEST_STAGE_ONLY=1: the staged kernel's cases only (a short run
     * under compute-sanitizer's memcheck and racecheck) */
    const char *stage_only = getenv("LRUN_TEST_STAGE_ONLY");
    for (int ti = 0; ti < N_DP4A && !(stage_only && !strcmp(stage_only, "1")); ti++) {
        for (int si = 0; si < 5; si++) test_case(dp4a_types[ti], shapes[si][0], shapes[si][1], 0, 0, LRUN_K_GEMV_DP4A, 1);
        test_case(dp4a_types[ti], 37, 1280 - 1280 % 256, 4, 1, LRUN_K_GEMV_DP4A, 1); /* padded rows, x off 4 bytes */
        test_swiglu(dp4a_types[ti], LRUN_K_GEMV_DP4A);
    }
    /* the staged kernel: the same shapes (rows whole 16-byte pieces), rows
     * ending in a chunk tail on 16-byte padded strides (k 96: 3 blocks; k
     * 1056: a chunk and a block), x off 4 bytes, swiglu; and a 4-byte
     * padded stride it declines (to dp4a under STAGE | DP4A) */
    for (int ti = 0; ti < N_STAGE; ti++) {
        const lrun_dtype t = stage_types[ti];
        for (int si = 0; si < 5; si++) test_case(t, shapes[si][0], shapes[si][1], 0, 0, LRUN_K_GEMV_STAGE, 1);
        test_case(t, 19, 96, 16, 1, LRUN_K_GEMV_STAGE, 16);
        test_case(t, 41, 1056, 32, 0, LRUN_K_GEMV_STAGE, 16);
        test_case(t, 37, 1280, 4, 1, LRUN_K_GEMV_STAGE | LRUN_K_GEMV_DP4A, 1);
        test_swiglu(t, LRUN_K_GEMV_STAGE);
    }
    /* the bench's other ring depths (2: one chunk in flight, wait_group 0;
     * 8: past 48 KiB of shared memory for Q8_0 at k 11008, the opt-in) */
    static const int depths[] = {2, 8};
    for (int di = 0; di < 2; di++) {
        printf("# staged kernel, %s\n", lrun_k_gemv_stage_tune(depths[di]));
        for (int ti = 0; ti < N_STAGE; ti++) {
            test_case(stage_types[ti], 129, 11008, 0, 0, LRUN_K_GEMV_STAGE, 1);
            test_case(stage_types[ti], 19, 96, 16, 1, LRUN_K_GEMV_STAGE, 16);
        }
    }
    lrun_k_gemv_stage_tune(0);
}

// ---------------------------------------------------------------- bench

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* µs per call at m = 1 rotating over copies, flags 0 (the default kernels) or LRUN_K_GEMV_DP4A */
static double time_gemv(lrun_dtype t, void **dw, int copies, size_t stride, int64_t n, int64_t k, const float *dx,
                        float *dy, int flags)
{
    lrun_k_gemv_part part = {dw[0], stride, n, dy};
    if (!ran(lrun_k_gemv_multi(t, &part, 1, k, dx, 1, LRUN_K_GEMV_STORE | flags, stream))) return -1.0;
    const int iters = copies * (1 + 400 / copies);
    const double t0 = now_s();
    for (int i = 0; i < iters; i++) {
        part.w = dw[i % copies];
        lrun_k_gemv_multi(t, &part, 1, k, dx, 1, LRUN_K_GEMV_STORE | flags, stream);
    }
    if (lrun_cuda_stream_sync(dev, stream) != LRUN_OK) return -1.0;
    return (now_s() - t0) / iters;
}

/* The device memory's read rate, GB/s, measured here: a 256 MiB device-to-device copy (far beyond L2)
 * reads and writes every byte, so reading alone runs about twice its rate. 0 when it cannot be measured. */
static double read_gbs(void)
{
    double bps = 0;
    if (lrun_device_measure_bandwidth(dev, LRUN_TIER_DEVICE, LRUN_TIER_DEVICE, (size_t)256 << 20, &bps) != LRUN_OK)
        return 0;
    return 2 * bps / 1e9;
}

/* sweep: the staged kernel at each ring depth instead of the three kernels */
static void bench(const char *only, int sweep)
{
    static const int depths[] = {2, 3, 4, 6, 8};
    static const lrun_dtype all[] = {LRUN_DTYPE_Q8_0,  LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1,   LRUN_DTYPE_Q5_0,
                                     LRUN_DTYPE_Q5_1,  LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_IQ4_XS, LRUN_DTYPE_Q2_K,
                                     LRUN_DTYPE_Q3_K,  LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q5_K,   LRUN_DTYPE_Q6_K,
                                     LRUN_DTYPE_BF16,  LRUN_DTYPE_F16};
    static const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}}; /* n, k */
    const double read = read_gbs(), pct = read > 0 ? read / 100 : 42.2; /* else the H200's 4220 GB/s */
    printf("# GB/s at m = 1, weights rotated over >= 200 MB; %% of the device's read rate, %.0f GB/s%s\n",
           read > 0 ? read : 4220.0, read > 0 ? " (measured now)" : " (the H200's, not measured)");
    if (sweep) printf("# %-7s %13s %10s %10s %10s %10s %10s  (staged kernel, stages in the ring)\n", "type",
                      "n x k", "2", "3", "4", "6", "8");
    else
        printf("# %-7s %13s %10s %7s %10s %7s %10s %7s\n", "type", "n x k", "default", "%", "dp4a", "%", "stage",
               "%");
    for (size_t ti = 0; ti < sizeof all / sizeof all[0]; ti++)
        for (int si = 0; si < 3; si++) {
            if (only && !strstr(only, lrun_dtype_name(all[ti]))) continue;
            int is_stage = 0;
            for (int i = 0; i < N_STAGE; i++) is_stage |= stage_types[i] == all[ti];
            if (sweep && !is_stage) continue;
            dreset();
            const lrun_dtype t = all[ti];
            const int64_t n = shapes[si][0], k = shapes[si][1];
            const size_t stride = row_bytes(t, k), bytes = (size_t)n * stride;
            int copies = (int)((200000000 + bytes - 1) / bytes) + 1;
            copies = copies > 64 ? 64 : copies;
            /* 2^20 random elements tiled: n·k is a multiple of them on these shapes */
            const int64_t tile = (int64_t)1 << 20;
            const size_t tile_bytes = row_bytes(t, tile);
            uint8_t *tw = gemv_ref_rows(t, 1, tile, tile_bytes, 5), *w = malloc(bytes);
            for (size_t off = 0; off < bytes; off += tile_bytes) memcpy(w + off, tw, tile_bytes);
            free(tw);
            void *dw[64];
            for (int c = 0; c < copies; c++) dw[c] = dcopy(w, bytes);
            float *x = malloc((size_t)k * 4);
            for (int64_t i = 0; i < k; i++) x[i] = frand(-1.0f, 1.0f);
            float *dx = dcopy(x, (size_t)k * 4), *dy = dbuf((size_t)n * 4);
            free(w), free(x);
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)n, (long long)k);
            if (sweep) {
                printf("# %-7s %13s", lrun_dtype_name(t), shape);
                for (int di = 0; di < 5; di++) {
                    lrun_k_gemv_stage_tune(depths[di]);
                    const double ts = time_gemv(t, dw, copies, stride, n, k, dx, dy, LRUN_K_GEMV_STAGE);
                    if (ts > 0) printf(" %10.1f", bytes / ts / 1e9);
                    else printf(" %10s", "FAILED");
                }
                lrun_k_gemv_stage_tune(0);
                printf("\n");
                continue;
            }
            const double t_old = time_gemv(t, dw, copies, stride, n, k, dx, dy, 0);
            int is_dp4a = 0;
            for (int i = 0; i < N_DP4A; i++) is_dp4a |= dp4a_types[i] == t;
            const double t_new = is_dp4a ? time_gemv(t, dw, copies, stride, n, k, dx, dy, LRUN_K_GEMV_DP4A) : 0.0;
            const double t_st = is_stage ? time_gemv(t, dw, copies, stride, n, k, dx, dy, LRUN_K_GEMV_STAGE) : 0.0;
            const double g_old = t_old > 0 ? bytes / t_old / 1e9 : 0.0, g_new = t_new > 0 ? bytes / t_new / 1e9 : 0.0;
            const double g_st = t_st > 0 ? bytes / t_st / 1e9 : 0.0;
            if (is_stage)
                printf("# %-7s %13s %10.1f %6.1f%% %10.1f %6.1f%% %10.1f %6.1f%%%s\n", lrun_dtype_name(t), shape,
                       g_old, g_old / pct, g_new, g_new / pct, g_st, g_st / pct,
                       t_old < 0 || t_new < 0 || t_st < 0 ? "  FAILED" : "");
            else if (is_dp4a)
                printf("# %-7s %13s %10.1f %6.1f%% %10.1f %6.1f%%%s\n", lrun_dtype_name(t), shape, g_old,
                       g_old / pct, g_new, g_new / pct, t_old < 0 || t_new < 0 ? "  FAILED" : "");
            else
                printf("# %-7s %13s %10.1f %6.1f%% %10s %7s%s\n", lrun_dtype_name(t), shape, g_old, g_old / pct,
                       "-", "", t_old < 0 ? "  FAILED" : "");
        }
}

int main(int argc, char **argv)
{
    const int sweep = argc > 1 && !strcmp(argv[1], "--sweep-stage");
    const int bench_mode = argc > 1 && (!strcmp(argv[1], "--bench") || sweep);
    if (lrun_cuda_device_count() == 0) {
        printf("ok %d - # SKIP no GPU\n", ++check_count);
        return CHECK_DONE();
    }
    if (!gpu_fixture_open((size_t)1 << 30)) return 1;
    lrun_k_set_pdl(lrun_k_pdl_supported(dev->cuda_ordinal)); /* as the engine launches them */
    if (bench_mode) bench(argc > 2 ? argv[2] : NULL, sweep);
    else tests();
    gpu_fixture_close();
    return bench_mode ? 0 : CHECK_DONE();
}
#endif
