/* test_quant_split.c — the split-row layout of Q8_0/Q4_0 (runtime/quant/
 * quant_split.c): rows quantized by lrun_quantize_row, split, read back
 * element by element through the layout quant_split.h documents (which must
 * give lrun_dequantize_row's floats bit for bit), and joined back to the
 * original bytes bit for bit, padding included; in place and out of place;
 * and the arguments it must refuse. */
#include "check.h"
#include "quant/quant.h"
#include "quant/quant_split.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng = 12345u;
static float frand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 16777216.0f * 2.0f - 1.0f;
}

/* element j of split row r, as quant_split.h lays it out */
static float split_elem(lrun_dtype t, const uint8_t *row, int64_t k, int64_t j)
{
    const size_t qb = lrun_quant_split_scales_at(t, k);
    const int64_t b = j / 32, e = j % 32;
    uint16_t h;
    memcpy(&h, row + qb + 2 * b, 2);
    const float d = lrun_f16_to_f32(h);
    if (t == LRUN_DTYPE_Q8_0) return (float)(int8_t)row[j] * d;
    const uint8_t q = row[16 * b + e % 16];
    return (float)((e < 16 ? q & 0x0f : q >> 4) - 8) * d;
}

static void check_case(lrun_dtype t, int64_t n, int64_t k, size_t pad, float amp)
{
    char name[160];
    size_t used;
    if (lrun_dtype_row_bytes(t, k, &used) != LRUN_OK) return;
    const size_t rb = used + pad, bytes = (size_t)n * rb;
    uint8_t *g = malloc(bytes), *s = malloc(bytes), *back = malloc(bytes);
    float *f = malloc((size_t)k * sizeof *f), *ref = malloc((size_t)k * sizeof *ref);
    for (size_t i = 0; i < bytes; i++) g[i] = (uint8_t)(i * 131u + 7u); /* padding: a pattern */
    for (int64_t r = 0; r < n; r++) {
        for (int64_t j = 0; j < k; j++) f[j] = amp * frand() * (j % 97 == 0 ? 0.0f : 1.0f);
        lrun_quantize_row(t, f, g + (size_t)r * rb, k);
    }
    snprintf(name, sizeof name, "%s n %lld k %lld pad %zu amp %g", lrun_dtype_name(t), (long long)n, (long long)k,
             pad, (double)amp);
    char what[320];
    snprintf(what, sizeof what, "%s: split", name);
    CHECK(what, lrun_quant_split_rows(t, g, s, rb, n, k) == LRUN_OK);
    int64_t bad = -1;
    for (int64_t r = 0; r < n && bad < 0; r++) {
        lrun_dequantize_row(t, g + (size_t)r * rb, ref, k);
        for (int64_t j = 0; j < k; j++) {
            const float v = split_elem(t, s + (size_t)r * rb, k, j);
            if (memcmp(&v, &ref[j], sizeof v) != 0) {
                bad = r * k + j;
                break;
            }
        }
    }
    snprintf(what, sizeof what, "%s: every element as lrun_dequantize_row (first bad %lld)", name, (long long)bad);
    CHECK(what, bad < 0);
    int pad_same = 1;
    for (int64_t r = 0; r < n; r++)
        pad_same &= memcmp(s + (size_t)r * rb + used, g + (size_t)r * rb + used, pad) == 0;
    snprintf(what, sizeof what, "%s: padding copied unchanged", name);
    CHECK(what, pad_same);
    snprintf(what, sizeof what, "%s: join gives the GGUF bytes back", name);
    CHECK(what, lrun_quant_join_rows(t, s, back, rb, n, k) == LRUN_OK && memcmp(back, g, bytes) == 0);
    memcpy(back, g, bytes);
    snprintf(what, sizeof what, "%s: in place, split then join", name);
    CHECK(what, lrun_quant_split_rows(t, back, back, rb, n, k) == LRUN_OK && memcmp(back, s, bytes) == 0 &&
                    lrun_quant_join_rows(t, back, back, rb, n, k) == LRUN_OK && memcmp(back, g, bytes) == 0);
    free(g), free(s), free(back), free(f), free(ref);
}

int main(void)
{
    static const lrun_dtype types[] = {LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_0};
    static const int64_t ks[] = {32, 96, 4096, 11008};
    for (int ti = 0; ti < 2; ti++)
        for (int ki = 0; ki < 4; ki++) {
            check_case(types[ti], 5, ks[ki], 0, 1.0f);
            check_case(types[ti], 3, ks[ki], 14, 1e-6f); /* f16 scales near and below the normal range */
        }
    CHECK("split layout exists for q8_0 and q4_0 only",
          lrun_quant_split_supported(LRUN_DTYPE_Q8_0) && lrun_quant_split_supported(LRUN_DTYPE_Q4_0) &&
              !lrun_quant_split_supported(LRUN_DTYPE_Q4_1) && !lrun_quant_split_supported(LRUN_DTYPE_BF16));
    CHECK("scales sit behind the quants: q8_0 k, q4_0 k/2",
          lrun_quant_split_scales_at(LRUN_DTYPE_Q8_0, 4096) == 4096 &&
              lrun_quant_split_scales_at(LRUN_DTYPE_Q4_0, 4096) == 2048);
    uint8_t buf[2 * 34 * 4];
    memset(buf, 0, sizeof buf);
    CHECK("refuses q4_1", lrun_quant_split_rows(LRUN_DTYPE_Q4_1, buf, buf, 20, 1, 32) == LRUN_E_ARG &&
                              strstr(lrun_last_error(), "q4_1") != NULL);
    CHECK("refuses k not a multiple of 32",
          lrun_quant_split_rows(LRUN_DTYPE_Q8_0, buf, buf, 68, 1, 48) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "k 48") != NULL);
    CHECK("refuses a stride below the row",
          lrun_quant_join_rows(LRUN_DTYPE_Q8_0, buf, buf, 67, 1, 64) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "row_bytes 67") != NULL);
    CHECK("refuses overlapping src and dst",
          lrun_quant_split_rows(LRUN_DTYPE_Q8_0, buf, buf + 34, 68, 2, 64) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "overlap") != NULL);
    CHECK("refuses NULL", lrun_quant_split_rows(LRUN_DTYPE_Q4_0, NULL, buf, 18, 1, 32) == LRUN_E_ARG);
    return CHECK_DONE();
}
