/* moe_gpu_fixture.h — what the MoE kernel tests share (test_moe_kernels_gpu.c,
 * test_moe_exact_gpu.c): an address the argument checks pass where each call
 * must fail first, the CPU's slot-order weighted sum both combine kernels are
 * checked against, and the start of a test's GPU part. Header-only like
 * check.h; include after kernels.h, in a build with LRUN_WITH_CUDA. */
#ifndef LRUN_TEST_MOE_GPU_FIXTURE_H
#define LRUN_TEST_MOE_GPU_FIXTURE_H

#include <stdint.h>
#include <stdio.h>

#include "check.h"
#include "gpu_fixture.h"

#define FAKE ((void *)(uintptr_t)0x10000) /* never dereferenced: each call fails first */

/* runtime/cpu/moe_cpu.c's combine: per token i and column c, the slots'
 * products y·w summed in slot order, then the residual:
 *   ref[i, c] = x[i, c] + sum_s Y[row(i, s), c] * w[i*k + s]
 * Y (rows, d) expert outputs; row(i, s) = pos[i*k + s], or i*k + s where pos
 * is NULL; w (n_tok, k) slot weights; x, ref (n_tok, d). volatile keeps each
 * product rounded before its add (no fma contraction), as the CPU's is. */
static inline void moe_combine_ref(float *ref, const float *x, const float *Y, const int32_t *pos, const float *w,
                                   int64_t n_tok, int64_t k, int64_t d)
{
    for (int64_t i = 0; i < n_tok; i++)
        for (int64_t c = 0; c < d; c++) {
            const int64_t r0 = pos ? (int64_t)pos[i * k] : i * k;
            volatile float o = Y[r0 * d + c] * w[i * k];
            for (int64_t s = 1; s < k; s++) {
                const int64_t r = pos ? (int64_t)pos[i * k + s] : i * k + s;
                const volatile float ps = Y[r * d + c] * w[i * k + s];
                o = o + ps;
            }
            ref[i * d + c] = x[i * d + c] + o;
        }
}

/* The GPU part's start: 0 after a TAP SKIP line where no GPU is visible, -1
 * after a "Bail out!" line, 1 with cuda:0, its stream and an arena of
 * arena_bytes open (gpu_fixture_close ends it). */
static inline int moe_gpu_open(size_t arena_bytes)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok %d - # SKIP no GPU\n", ++check_count);
        return 0;
    }
    return gpu_fixture_open(arena_bytes) ? 1 : -1;
}

#endif
