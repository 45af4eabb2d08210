/* test_moe_exact_emu.c — the exact MoE kernels (kernels/moe_exact.cu)
 * replayed on the host, lane by lane, against the CPU engine's own code:
 *
 *   lrun_k_moe_router_exact: 16 lanes per output, lane j's chain
 *   acc = fmaf(w[i], x[i], acc) over i ≡ j (mod 16), then the shuffles down
 *   by 8, 4, 2, 1 within the 16 (a lane whose source is past the 16 keeps
 *   its own value, as __shfl_down_sync with width 16), lane 0's result —
 *   bit for bit the dot the CPU engine's matmul uses for float weights
 *   (lrun_dot_kernel: the AVX2 dot_float_nx where the CPU has AVX2), for
 *   F32, F16 and BF16 rows, decode (1 row) and prefill (4 rows) calls;
 *   lrun_k_moe_combine_exact: (Y[pos_0]·w_0 + Y[pos_1]·w_1 + …) in slot
 *   order, then into x — the CPU's slots (y · w), their sum (memcpy, then
 *   lrun_cpu_add per slot) and the residual add.
 *
 * Runs in `make test` on any machine; the GPU spec tests/moe_exact_gpu_spec.lua
 * checks the kernels themselves. Without AVX2 the CPU's float dot is the
 * serial scalar one, which the kernel does not reproduce: that case is
 * reported and skipped (the CUDA engine's exact path targets x86 hosts). */
#include "check.h"
#include "cpu/cpu_ops.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    /* wide exponents, so the order of the sums shows in the bits */
    const float u = (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
    return u * ldexpf(1.0f, (int)(rng % 13) - 6);
}

/* element i of a float row of dtype t */
static float load(lrun_dtype t, const void *row, int64_t i)
{
    if (t == LRUN_DTYPE_F32) return ((const float *)row)[i];
    if (t == LRUN_DTYPE_F16) return lrun_f16_to_f32(((const uint16_t *)row)[i]);
    return lrun_bf16_to_f32(((const uint16_t *)row)[i]);
}

/* moe_router_exact for one (row, token): the 16 lanes, then the shuffle tree */
static float emu_router(lrun_dtype t, const void *w, int64_t k, const float *x)
{
    float acc[16];
    for (int l = 0; l < 16; l++) {
        acc[l] = 0.0f;
        for (int64_t i = l; i < k; i += 16) acc[l] = fmaf(load(t, w, i), x[i], acc[l]);
    }
    for (int d = 8; d >= 1; d /= 2) {
        float src[16];
        for (int l = 0; l < 16; l++) src[l] = l + d < 16 ? acc[l + d] : acc[l]; /* __shfl_down_sync(.., d, 16) */
        for (int l = 0; l < 16; l++) acc[l] = acc[l] + src[l];
    }
    return acc[0];
}

static lrun_dot_fn avx2_dot(lrun_dtype t)
{
    lrun_dot_fn fns[4];
    const char *names[4];
    const int n = lrun_dot_kernels(t, fns, names, 4);
    for (int i = 0; i < n && i < 4; i++)
        if (strcmp(names[i], "avx2") == 0) return fns[i];
    return NULL;
}

static void router_case(lrun_dtype t, int64_t n, int64_t k)
{
    lrun_dot_fn dot = avx2_dot(t);
    if (!dot) {
        printf("# %s: no AVX2 float dot on this CPU, skipped\n", lrun_dtype_name(t));
        return;
    }
    const size_t eb = t == LRUN_DTYPE_F32 ? 4 : 2, row_bytes = (size_t)k * eb;
    uint8_t *w = malloc((size_t)n * row_bytes);
    float *x = malloc((size_t)(4 * k) * sizeof *x);
    for (int64_t i = 0; i < n * k; i++) {
        const float v = frand();
        if (t == LRUN_DTYPE_F32) ((float *)w)[i] = v;
        else if (t == LRUN_DTYPE_F16) ((uint16_t *)w)[i] = lrun_f32_to_f16(v);
        else ((uint16_t *)w)[i] = lrun_f32_to_bf16(v);
    }
    for (int64_t i = 0; i < 4 * k; i++) x[i] = frand();
    int same = 1, differs_from_serial = 0;
    for (int64_t r = 0; r < n; r++) {
        const uint8_t *wr = w + (size_t)r * row_bytes;
        float cpu1, cpu4[4];
        dot(k, wr, x, 0, 1, &cpu1);                           /* decode: one row */
        dot(k, wr, x, (size_t)k * sizeof(float), 4, cpu4);    /* prefill: four rows at a time */
        for (int j = 0; j < 4; j++) {
            const float g = emu_router(t, wr, k, x + j * k);
            same &= memcmp(&g, &cpu4[j], 4) == 0;
            if (j == 0) same &= memcmp(&g, &cpu1, 4) == 0;
            float serial = 0.0f;
            for (int64_t i = 0; i < k; i++) serial += load(t, wr, i) * x[j * k + i];
            differs_from_serial |= memcmp(&g, &serial, 4) != 0;
        }
    }
    char name[96];
    snprintf(name, sizeof name, "router %s n %lld k %lld: the CPU's float dot to the bit", lrun_dtype_name(t),
             (long long)n, (long long)k);
    CHECK(name, same);
    snprintf(name, sizeof name, "router %s k %lld: the case tells orders apart", lrun_dtype_name(t), (long long)k);
    CHECK(name, differs_from_serial);
    free(w);
    free(x);
}

/* moe_combine_exact against the CPU's slots, their sum and the residual add */
static void combine_case(int64_t n_tok, int64_t k, int64_t d)
{
    const int64_t rows = n_tok * k;
    float *Y = malloc((size_t)(rows * d) * sizeof *Y), *w = malloc((size_t)rows * sizeof *w);
    float *x0 = malloc((size_t)(n_tok * d) * sizeof *x0), *xg = malloc((size_t)(n_tok * d) * sizeof *xg);
    float *xc = malloc((size_t)(n_tok * d) * sizeof *xc), *slot = malloc((size_t)(k * d) * sizeof *slot);
    int32_t *pos = malloc((size_t)rows * sizeof *pos);
    for (int64_t i = 0; i < rows * d; i++) Y[i] = frand();
    for (int64_t i = 0; i < n_tok * d; i++) x0[i] = frand();
    for (int64_t j = 0; j < rows; j++) w[j] = fabsf(frand()), pos[j] = (int32_t)((j * 7 + 3) % rows); /* a permutation */
    memcpy(xg, x0, (size_t)(n_tok * d) * sizeof *xg);
    memcpy(xc, x0, (size_t)(n_tok * d) * sizeof *xc);
    for (int64_t i = 0; i < n_tok; i++)
        for (int64_t t = 0; t < d; t++) { /* the kernel's thread (t, i) */
            float acc = Y[(int64_t)pos[i * k] * d + t] * w[i * k];
            for (int64_t s = 1; s < k; s++) acc = acc + Y[(int64_t)pos[i * k + s] * d + t] * w[i * k + s];
            xg[i * d + t] = xg[i * d + t] + acc;
        }
    for (int64_t i = 0; i < n_tok; i++) { /* moe_cpu.c: scatter_group, sum_slots; forward_cpu.c: the residual */
        for (int64_t s = 0; s < k; s++)
            for (int64_t t = 0; t < d; t++) slot[s * d + t] = Y[(int64_t)pos[i * k + s] * d + t] * w[i * k + s];
        for (int64_t s = 1; s < k; s++) lrun_cpu_add(slot, slot + s * d, d);
        lrun_cpu_add(xc + i * d, slot, d);
    }
    CHECK("combine: the CPU's slots, sum and residual add to the bit",
          memcmp(xg, xc, (size_t)(n_tok * d) * sizeof *xg) == 0);
    free(Y), free(w), free(x0), free(xg), free(xc), free(slot), free(pos);
}

int main(void)
{
    const lrun_dtype types[3] = {LRUN_DTYPE_F32, LRUN_DTYPE_F16, LRUN_DTYPE_BF16};
    for (int i = 0; i < 3; i++) {
        router_case(types[i], 8, 128);   /* the tiny test models' router */
        router_case(types[i], 128, 2048); /* Qwen3-30B-A3B's */
        router_case(types[i], 3, 16);    /* one step */
    }
    combine_case(5, 4, 128);
    combine_case(3, 8, 96);
    combine_case(2, 1, 32);
    return CHECK_DONE();
}
