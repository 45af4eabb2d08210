/* test_gemv_split_emu.c — the split-row GEMV's per-lane arithmetic
 * (kernels/gemv_split.cu) emulated on the host with the very functions the
 * GPU runs (kernels/gemv_split_lane.h): rows quantized by lrun_quantize_row
 * and split by lrun_quant_split_rows, x quantized by
 * lrun_quantize_activations (the kernel's rule); every chunk's integer dot,
 * taken where the lane functions say the chunk, its scale and its x sit,
 * must equal Σ q·xq computed straight from the GGUF block (exact), and the
 * emulated row (one FMA per chunk with d·d_x, as the kernel) must be the
 * double dot of lrun_dequantize_row's row with the q8-rounded x within 1e-6
 * of Σ|terms|; and the chunk's bytes and scale where gs_gguf_chunk_at and
 * gs_gguf_scale_at put them in the GGUF row (gemv_split_q8x.cu's reads of
 * unsplit weights) equal the split chunk's. Runs in `make test` on any
 * machine; the GPU itself is tested by test_gemv_split_gpu.c and
 * test_gemv_split_q8x_gpu.c. */
#include "check.h"
#include "gemv_split_lane.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"
#include "quant/quant_split.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng = 99991u;
static float frand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 16777216.0f * 2.0f - 1.0f;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* element j's integer quant in a GGUF row (Q8_0: the int8; Q4_0: nibble − 8),
 * read straight from its block. (One index on purpose: with a block index
 * and an in-block index, GCC 12.2 at -O2 -march=native on an AVX-512 host
 * summed the Q8_0 loop wrongly, while -march=x86-64-v3 and a
 * -fsanitize=undefined build, which reported nothing, summed it right: a
 * vectorizer fault, not pursued.) */
static int gguf_q(lrun_dtype t, const uint8_t *row, int64_t j)
{
    if (t == LRUN_DTYPE_Q8_0) return (int)(int8_t)row[j / 32 * 34 + 2 + j % 32];
    const uint8_t v = row[j / 32 * 18 + 2 + j % 16];
    return (j % 32 < 16 ? v & 0x0f : v >> 4) - 8;
}

static void check_case(lrun_dtype t, int64_t n, int64_t k, float wamp, float xamp)
{
    const int q8 = t == LRUN_DTYPE_Q8_0;
    size_t rb;
    lrun_dtype_row_bytes(t, k, &rb);
    uint8_t *g = malloc((size_t)n * rb), *s = malloc((size_t)n * rb), *xb = malloc((size_t)k / 32 * 34);
    float *f = malloc((size_t)k * sizeof *f), *x = malloc((size_t)k * sizeof *x),
          *row = malloc((size_t)k * sizeof *row);
    int8_t *xq = malloc((size_t)k);
    float *xd = malloc((size_t)k / 32 * sizeof *xd);
    for (int64_t r = 0; r < n; r++) {
        for (int64_t j = 0; j < k; j++) f[j] = wamp * frand();
        lrun_quantize_row(t, f, g + (size_t)r * rb, k);
    }
    lrun_quant_split_rows(t, g, s, rb, n, k);
    for (int64_t j = 0; j < k; j++) x[j] = xamp * frand() * (j % 5 == 0 ? 4.0f : 1.0f);
    lrun_quantize_activations(LRUN_DTYPE_Q8_0, x, xb, k); /* blocks of f16 d and 32 int8 */
    for (int64_t b = 0; b < k / 32; b++) {
        uint16_t h;
        memcpy(&h, xb + b * 34, 2);
        xd[b] = lrun_f16_to_f32(h);
        memcpy(xq + b * 32, xb + b * 34 + 2, 32);
    }
    const size_t qb = lrun_quant_split_scales_at(t, k);
    const int64_t nck = k / gs_chunk_elems(q8);
    int64_t int_bad = 0, gguf_bad = 0;
    double worst = 0;
    for (int64_t r = 0; r < n; r++) {
        const uint8_t *sr = s + (size_t)r * rb, *gr = g + (size_t)r * rb;
        float acc = 0.0f;
        for (int64_t c = 0; c < nck; c++) {
            const uint8_t *w = sr + gs_chunk_at(c), *xc = (const uint8_t *)xq + gs_chunk_x(q8, c);
            const int64_t b = gs_chunk_block(q8, c);
            uint16_t h;
            memcpy(&h, sr + qb + 2 * b, 2);
            /* where gemv_split_q8x.cu finds the same chunk and scale in the GGUF row */
            gguf_bad +=
                memcmp(gr + gs_gguf_chunk_at(q8, c), w, 16) != 0 || memcmp(gr + gs_gguf_scale_at(q8, c), &h, 2) != 0;
            int v, want = 0;
            if (q8) {
                v = gs_dot_q8(rd32(w), rd32(w + 4), rd32(w + 8), rd32(w + 12), rd32(xc), rd32(xc + 4), rd32(xc + 8),
                              rd32(xc + 12));
                for (int64_t j = 16 * c; j < 16 * c + 16; j++) want += gguf_q(t, gr, j) * (int)xq[j];
            } else {
                const uint32_t xl[4] = {rd32(xc), rd32(xc + 4), rd32(xc + 8), rd32(xc + 12)};
                const uint32_t xh[4] = {rd32(xc + 16), rd32(xc + 20), rd32(xc + 24), rd32(xc + 28)};
                v = gs_dot_q4(rd32(w), rd32(w + 4), rd32(w + 8), rd32(w + 12), xl, xh, gs_sum_x(xl, xh));
                for (int64_t j = 32 * c; j < 32 * c + 32; j++) want += gguf_q(t, gr, j) * (int)xq[j];
            }
            int_bad += v != want;
            acc = fmaf((float)v, lrun_f16_to_f32(h) * xd[b], acc);
        }
        lrun_dequantize_row(t, gr, row, k);
        double ref = 0, terms = 0;
        for (int64_t j = 0; j < k; j++) {
            const double p = (double)row[j] * ((double)xq[j] * xd[j / 32]);
            ref += p, terms += fabs(p);
        }
        const double e = fabs(acc - ref) / (terms + 1e-30);
        worst = e > worst ? e : worst;
    }
    char name[200];
    snprintf(name, sizeof name, "%s n %lld k %lld (w x%g, x x%g): every chunk's integer dot exact (%lld off)",
             lrun_dtype_name(t), (long long)n, (long long)k, (double)wamp, (double)xamp, (long long)int_bad);
    CHECK(name, int_bad == 0);
    snprintf(name, sizeof name,
             "%s n %lld k %lld: every chunk and scale sits in the GGUF row where the lane "
             "functions say (%lld off)",
             lrun_dtype_name(t), (long long)n, (long long)k, (long long)gguf_bad);
    CHECK(name, gguf_bad == 0);
    snprintf(name, sizeof name, "%s n %lld k %lld (w x%g, x x%g): rows within 1e-6 of terms (%.2e)",
             lrun_dtype_name(t), (long long)n, (long long)k, (double)wamp, (double)xamp, worst);
    CHECK(name, worst <= 1e-6);
    free(g), free(s), free(xb), free(f), free(x), free(row), free(xq), free(xd);
}

int main(void)
{
    static const int64_t ks[] = {32, 96, 4096, 11008};
    for (int ti = 0; ti < 2; ti++) {
        const lrun_dtype t = ti == 0 ? LRUN_DTYPE_Q8_0 : LRUN_DTYPE_Q4_0;
        for (int ki = 0; ki < 4; ki++) check_case(t, 6, ks[ki], 1.0f, 1.0f);
        check_case(t, 4, 4096, 1e-3f, 1e4f); /* f16 scales near the normal range, large x */
        check_case(t, 4, 4096, 300.0f, 1e-4f);
    }
    return CHECK_DONE();
}
