/* test_moe_exact_gpu.c — the exact path's MoE kernels (kernels/moe_exact.cu)
 * against the CPU, bit for bit:
 *   lrun_k_moe_router_exact   each output against the dot the CPU engine's
 *                             matmul uses for float weights (lrun_dot_kernel),
 *                             F32, F16 and BF16 rows, decode (1 token) and
 *                             prefill (5 tokens), a router row count that is
 *                             not a multiple of the 8 per block;
 *   lrun_k_moe_combine_exact  against the CPU's slots (y·w), their sum in slot
 *                             order and the residual add, rows of Y by pos.
 * The argument checks run everywhere; the rest is one TAP SKIP line where no
 * GPU is visible. tests/c/test_moe_exact_emu.c replays the kernels' lanes on
 * the host in `make test`. */
#include "check.h"
#include "core/device.h"
#include "cuda/cuda_backend.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "kernels.h"
#include "moe_gpu_fixture.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) /* wide exponents, so the order of the sums shows in the bits */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    const float u = (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
    return u * ldexpf(1.0f, (int)(rng % 13) - 6);
}

static void test_arguments(void)
{
    float *f = FAKE;
    CHECK("router_exact refuses a Q8_0 weight",
          lrun_k_moe_router_exact(LRUN_DTYPE_Q8_0, FAKE, 34, 8, 32, f, 1, f, FAKE) == LRUN_E_ARG);
    CHECK("router_exact refuses k not a multiple of 16",
          lrun_k_moe_router_exact(LRUN_DTYPE_F32, FAKE, 40, 8, 10, f, 1, f, FAKE) == LRUN_E_ARG);
    CHECK("router_exact refuses a NULL stream",
          lrun_k_moe_router_exact(LRUN_DTYPE_F32, FAKE, 64, 8, 16, f, 1, f, NULL) == LRUN_E_ARG);
    CHECK("combine_exact refuses a NULL pos", lrun_k_moe_combine_exact(f, NULL, f, 1, 2, 8, f, FAKE) == LRUN_E_ARG);
    CHECK("combine_exact refuses k 0", lrun_k_moe_combine_exact(f, FAKE, f, 1, 0, 8, f, FAKE) == LRUN_E_ARG);
}

static void router_case(lrun_dtype t, int64_t n, int64_t k, int64_t m)
{
    dreset();
    const size_t eb = t == LRUN_DTYPE_F32 ? 4 : 2, row_bytes = (size_t)k * eb;
    uint8_t *w = malloc((size_t)n * row_bytes);
    float *x = malloc((size_t)(m * k) * 4), *ref = malloc((size_t)(m * n) * 4), *got = malloc((size_t)(m * n) * 4);
    for (int64_t i = 0; i < n * k; i++) {
        const float v = frand();
        if (t == LRUN_DTYPE_F32) ((float *)w)[i] = v;
        else if (t == LRUN_DTYPE_F16) ((uint16_t *)w)[i] = lrun_f32_to_f16(v);
        else ((uint16_t *)w)[i] = lrun_f32_to_bf16(v);
    }
    for (int64_t i = 0; i < m * k; i++) x[i] = frand();
    lrun_dot_fn dot = lrun_dot_kernel(t);
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < m; j++) dot(k, w + (size_t)r * row_bytes, x + j * k, 0, 1, &ref[j * n + r]);
    const void *dw = dcopy(w, (size_t)n * row_bytes);
    const float *dx = dcopy(x, (size_t)(m * k) * 4);
    float *dy = dbuf((size_t)(m * n) * 4);
    const int ok = ran(lrun_k_moe_router_exact(t, dw, row_bytes, n, k, dx, m, dy, stream));
    down(got, dy, (size_t)(m * n) * 4);
    const int same = memcmp(got, ref, (size_t)(m * n) * 4) == 0;
    char name[128];
    snprintf(name, sizeof name, "router_exact %s n %lld k %lld m %lld: the CPU's float dot to the bit",
             lrun_dtype_name(t), (long long)n, (long long)k, (long long)m);
    CHECK(name, ok && same);
    free(w), free(x), free(ref), free(got);
}

static void test_combine(void)
{
    const int64_t n_tok = 5, k = 4, d = 300, rows = n_tok * k;
    dreset();
    float *Y = malloc((size_t)(rows * d) * 4), *w = malloc((size_t)rows * 4), *x = malloc((size_t)(n_tok * d) * 4);
    float *ref = malloc((size_t)(n_tok * d) * 4), *got = malloc((size_t)(n_tok * d) * 4);
    int32_t *pos = malloc((size_t)rows * 4);
    for (int64_t i = 0; i < rows * d; i++) Y[i] = frand();
    for (int64_t i = 0; i < n_tok * d; i++) x[i] = frand();
    for (int64_t j = 0; j < rows; j++) w[j] = fabsf(frand()), pos[j] = (int32_t)((j * 7 + 3) % rows);
    moe_combine_ref(ref, x, Y, pos, w, n_tok, k, d); /* rows of Y by pos */
    const float *dY = dcopy(Y, (size_t)(rows * d) * 4), *dw = dcopy(w, (size_t)rows * 4);
    const int32_t *dpos = dcopy(pos, (size_t)rows * 4);
    float *dx = dcopy(x, (size_t)(n_tok * d) * 4);
    const int ok = ran(lrun_k_moe_combine_exact(dY, dpos, dw, n_tok, k, d, dx, stream));
    down(got, dx, (size_t)(n_tok * d) * 4);
    CHECK("combine_exact 5 tokens top-4 of width 300: the CPU's bits",
          ok && memcmp(got, ref, (size_t)(n_tok * d) * 4) == 0);
    free(Y), free(w), free(x), free(ref), free(got), free(pos);
}

int main(void)
{
    test_arguments();
    const int open = moe_gpu_open((size_t)64 << 20);
    if (open <= 0) return open < 0 ? 1 : CHECK_DONE();
    const lrun_dtype types[3] = {LRUN_DTYPE_F32, LRUN_DTYPE_F16, LRUN_DTYPE_BF16};
    for (int i = 0; i < 3; i++) {
        router_case(types[i], 8, 128, 1);
        router_case(types[i], 13, 2048, 5);
        router_case(types[i], 128, 2048, 1);
    }
    test_combine();
    gpu_fixture_close();
    return CHECK_DONE();
}
#endif
