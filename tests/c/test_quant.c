/* test_quant.c — dtypes, f16/bf16 conversions, block codecs and dot products.
 *
 * References: hand-computed blocks from REFERENCE.md's formulas, the CPU's own
 * F16C conversions, gguf-py's codecs (tests/golden/quant_blocks.json, from
 * tests/golden/make_quant_golden.py) and float dots of dequantized rows. */
#include "check.h"
#include "fixtures.h"
#include "quant/quant_dot.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#define GOLDEN "tests/golden/quant_blocks.json"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rnd_unit(void) { return (float)rnd_u32() / 4294967296.0f; } /* [0, 1) */
static float rnd_gauss(void)
{
    float s = 0.0f;
    for (int i = 0; i < 6; ++i) s += rnd_unit();
    return (s - 3.0f) * 1.41f;
}
/* n values in blocks of 32 with magnitudes spread over four decades */
static void fill_signal(float *x, int64_t n)
{
    for (int64_t b = 0; b < n; b += 32) {
        float scale = powf(10.0f, -2.0f + 3.0f * rnd_unit());
        for (int64_t i = b; i < b + 32 && i < n; ++i) x[i] = rnd_gauss() * scale;
    }
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// ---------------------------------------------------------------- dtype table

static void test_dtype_table(void)
{
    static const int weights[] = {0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 20, 23, 30};
    static const int others[] = {-1, 4, 5, 9, 15, 16, 19, 21, 22, 29, 31, 1000};
    int ok = 1;
    for (size_t i = 0; i < sizeof weights / sizeof weights[0]; ++i) ok &= lrun_dtype_is_supported(weights[i]) == 1;
    CHECK("is_supported: the fifteen weight types", ok);
    ok = 1;
    for (size_t i = 0; i < sizeof others / sizeof others[0]; ++i) ok &= lrun_dtype_is_supported(others[i]) == 0;
    CHECK("is_supported: activation-only and unknown ids are not", ok);

    static const struct { const char *name; lrun_dtype t; int64_t be; size_t bb; } rows[] = {
        {"F32", LRUN_DTYPE_F32, 1, 4},       {"f16", LRUN_DTYPE_F16, 1, 2},        {"Bf16", LRUN_DTYPE_BF16, 1, 2},
        {"q4_0", LRUN_DTYPE_Q4_0, 32, 18},   {"Q4_1", LRUN_DTYPE_Q4_1, 32, 20},    {"q8_0", LRUN_DTYPE_Q8_0, 32, 34},
        {"Q4_K", LRUN_DTYPE_Q4_K, 256, 144}, {"q6_k", LRUN_DTYPE_Q6_K, 256, 210},
        {"q5_0", LRUN_DTYPE_Q5_0, 32, 22},   {"Q5_1", LRUN_DTYPE_Q5_1, 32, 24},    {"q2_k", LRUN_DTYPE_Q2_K, 256, 84},
        {"Q3_K", LRUN_DTYPE_Q3_K, 256, 110}, {"q5_k", LRUN_DTYPE_Q5_K, 256, 176},
        {"iq4_nl", LRUN_DTYPE_IQ4_NL, 32, 18}, {"IQ4_XS", LRUN_DTYPE_IQ4_XS, 256, 136},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; ++i) {
        lrun_dtype t = (lrun_dtype)-1;
        char name[64];
        snprintf(name, sizeof name, "from_name(\"%s\") and its geometry", rows[i].name);
        CHECK(name, lrun_dtype_from_name(rows[i].name, &t) == LRUN_OK && t == rows[i].t &&
                        lrun_dtype_block_elems(t) == rows[i].be && lrun_dtype_block_bytes(t) == rows[i].bb);
    }
    CHECK("names are lower case", strcmp(lrun_dtype_name(LRUN_DTYPE_Q4_K), "q4_k") == 0 &&
                                      strcmp(lrun_dtype_name(LRUN_DTYPE_BF16), "bf16") == 0);
    CHECK("q8_1 and q8_k geometry is their structs'",
          lrun_dtype_block_elems(LRUN_DTYPE_Q8_1) == 32 && lrun_dtype_block_bytes(LRUN_DTYPE_Q8_1) == 40 &&
              lrun_dtype_block_elems(LRUN_DTYPE_Q8_K) == 256 && lrun_dtype_block_bytes(LRUN_DTYPE_Q8_K) == 292);
    lrun_dtype t;
    CHECK("from_name rejects an unknown name", lrun_dtype_from_name("iq2_xxs", &t) == LRUN_E_ARG &&
                                                   strstr(lrun_last_error(), "iq4_xs") != NULL);
    CHECK("from_name rejects activation-only types", lrun_dtype_from_name("q8_k", &t) == LRUN_E_ARG);
    CHECK("unknown dtype: 0-sized, named unknown",
          lrun_dtype_block_bytes((lrun_dtype)5) == 0 && strcmp(lrun_dtype_name((lrun_dtype)5), "unknown") == 0);

    size_t bytes = 0;
    CHECK("row_bytes q4_1 576", lrun_dtype_row_bytes(LRUN_DTYPE_Q4_1, 576, &bytes) == LRUN_OK && bytes == 360);
    CHECK("row_bytes q6_k 512", lrun_dtype_row_bytes(LRUN_DTYPE_Q6_K, 512, &bytes) == LRUN_OK && bytes == 420);
    CHECK("row_bytes f16 7", lrun_dtype_row_bytes(LRUN_DTYPE_F16, 7, &bytes) == LRUN_OK && bytes == 14);
    CHECK("row_bytes: not a whole block", lrun_dtype_row_bytes(LRUN_DTYPE_Q8_0, 33, &bytes) == LRUN_E_ARG);
    CHECK("row_bytes: negative", lrun_dtype_row_bytes(LRUN_DTYPE_F32, -1, &bytes) == LRUN_E_ARG);
    CHECK("row_bytes: overflow", lrun_dtype_row_bytes(LRUN_DTYPE_F32, INT64_C(1) << 62, &bytes) == LRUN_E_FORMAT);
    CHECK("row_bytes: unknown dtype", lrun_dtype_row_bytes((lrun_dtype)77, 32, &bytes) == LRUN_E_ARG);

    float f[32] = {0};
    uint8_t q[34];
    CHECK("to_f32: partial block", lrun_dtype_to_f32(LRUN_DTYPE_Q8_0, q, f, 16) == LRUN_E_ARG);
    CHECK("from_f32: NULL", lrun_dtype_from_f32(LRUN_DTYPE_Q8_0, NULL, q, 32) == LRUN_E_ARG);
    CHECK("from_f32 then to_f32 of zeros", lrun_dtype_from_f32(LRUN_DTYPE_Q8_0, f, q, 32) == LRUN_OK &&
                                               lrun_dtype_to_f32(LRUN_DTYPE_Q8_0, q, f, 32) == LRUN_OK && f[5] == 0.0f);
}

// ---------------------------------------------------------------- f16 and bf16

static void test_half(void)
{
    CHECK("f16: 1.0", lrun_f32_to_f16(1.0f) == 0x3c00 && lrun_f16_to_f32(0x3c00) == 1.0f);
    CHECK("f16: -2.5", lrun_f32_to_f16(-2.5f) == 0xc100);
    CHECK("f16: largest", lrun_f32_to_f16(65504.0f) == 0x7bff && lrun_f16_to_f32(0x7bff) == 65504.0f);
    CHECK("f16: just below the halfway to 65536 stays finite", lrun_f32_to_f16(65519.99f) == 0x7bff);
    CHECK("f16: halfway to 65536 rounds to inf", lrun_f32_to_f16(65520.0f) == 0x7c00);
    CHECK("f16: inf", lrun_f32_to_f16(INFINITY) == 0x7c00 && lrun_f32_to_f16(-INFINITY) == 0xfc00 &&
                          isinf(lrun_f16_to_f32(0x7c00)));
    uint16_t hn = lrun_f32_to_f16(NAN);
    CHECK("f16: nan stays nan", (hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0 && isnan(lrun_f16_to_f32(hn)));
    CHECK("f16: signalling nan becomes quiet", (lrun_f32_to_f16(bits_f32(0x7f800001u)) & 0x7e00) == 0x7e00);
    CHECK("f16: tie rounds to even (down)", lrun_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);
    CHECK("f16: tie rounds to even (up)", lrun_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);
    CHECK("f16: above the tie rounds up", lrun_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01);
    CHECK("f16: smallest normal", lrun_f32_to_f16(0x1p-14f) == 0x0400);
    CHECK("f16: smallest subnormal", lrun_f32_to_f16(0x1p-24f) == 0x0001 && lrun_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK("f16: half the smallest subnormal ties to zero", lrun_f32_to_f16(0x1p-25f) == 0x0000);
    CHECK("f16: 1.5 smallest subnormals ties to 2", lrun_f32_to_f16(3 * 0x1p-25f) == 0x0002);
    CHECK("f16: subnormal rounding up into the normals", lrun_f32_to_f16(0x1p-14f - 0x1p-26f) == 0x0400);
    CHECK("f16: negative zero", lrun_f32_to_f16(-0.0f) == 0x8000 && signbit(lrun_f16_to_f32(0x8000)));
    CHECK("f16: underflow to zero", lrun_f32_to_f16(1e-10f) == 0 && lrun_f32_to_f16(-1e-10f) == 0x8000);

    int roundtrip = 1;
    for (uint32_t h = 0; h < 65536; ++h) {
        float f = lrun_f16_to_f32((uint16_t)h);
        if (isnan(f)) roundtrip &= (lrun_f32_to_f16(f) & 0x7fff) == ((h | 0x200) & 0x7fff);
        else roundtrip &= lrun_f32_to_f16(f) == h;
    }
    CHECK("f16: all 65536 halves survive f16→f32→f16", roundtrip);
#if defined(__F16C__)
    int same_up = 1, same_down = 1;
    for (uint32_t h = 0; h < 65536; ++h) {
        float a = lrun_f16_to_f32((uint16_t)h), b = _cvtsh_ss((uint16_t)h);
        same_up &= f32_bits(a) == f32_bits(b) || (isnan(a) && isnan(b));
    }
    for (int i = 0; i < 2000000; ++i) {
        uint32_t u = rnd_u32() ^ (rnd_u32() << 16);
        if (i & 1) u = (u & 0x83ffffffu) | 0x38000000u; /* exponents near the half range */
        float f = bits_f32(u);
        if (isnan(f)) continue;
        same_down &= lrun_f32_to_f16(f) == _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
    }
    CHECK("f16→f32 equals the CPU's F16C on all 65536 values", same_up);
    CHECK("f32→f16 equals the CPU's F16C on 2M random floats", same_down);
#endif

    CHECK("bf16: 1.0", lrun_f32_to_bf16(1.0f) == 0x3f80 && lrun_bf16_to_f32(0x3f80) == 1.0f);
    CHECK("bf16: tie to even (down)", lrun_f32_to_bf16(bits_f32(0x3f808000u)) == 0x3f80);
    CHECK("bf16: tie to even (up)", lrun_f32_to_bf16(bits_f32(0x3f818000u)) == 0x3f82);
    CHECK("bf16: above the tie", lrun_f32_to_bf16(bits_f32(0x3f808001u)) == 0x3f81);
    CHECK("bf16: inf", lrun_f32_to_bf16(INFINITY) == 0x7f80 && lrun_f32_to_bf16(-INFINITY) == 0xff80);
    CHECK("bf16: largest float rounds to inf", lrun_f32_to_bf16(bits_f32(0x7f7fffffu)) == 0x7f80);
    CHECK("bf16: nan is quiet nan", lrun_f32_to_bf16(bits_f32(0x7f800001u)) == 0x7fc0 &&
                                        isnan(lrun_bf16_to_f32(lrun_f32_to_bf16(NAN))));
    CHECK("bf16: subnormal", lrun_f32_to_bf16(bits_f32(0x00010000u)) == 0x0001 &&
                                 lrun_bf16_to_f32(0x0001) == bits_f32(0x00010000u));
}

// ---------------------------------------------------------------- hand-built blocks

static void test_hand_blocks(void)
{
    float y[256];
    int ok;

    lrun_block_q4_0 b40 = {.d = 0x3800}; /* d = 0.5 */
    for (int j = 0; j < 16; ++j) b40.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    lrun_dequantize_row(LRUN_DTYPE_Q4_0, &b40, y, 32);
    ok = 1;
    for (int j = 0; j < 16; ++j) ok &= y[j] == (j - 8) * 0.5f && y[j + 16] == (7 - j) * 0.5f;
    CHECK("q4_0 hand block: low nibble j, high nibble j+16, (q-8)*d", ok);

    lrun_block_q4_1 b41 = {.d = 0x3400, .m = 0xbc00}; /* d = 0.25, m = -1 */
    for (int j = 0; j < 16; ++j) b41.qs[j] = (uint8_t)((15 - j) | (j << 4));
    lrun_dequantize_row(LRUN_DTYPE_Q4_1, &b41, y, 32);
    ok = 1;
    for (int j = 0; j < 16; ++j) ok &= y[j] == (15 - j) * 0.25f - 1.0f && y[j + 16] == j * 0.25f - 1.0f;
    CHECK("q4_1 hand block: q*d + m", ok);

    lrun_block_q8_0 b80 = {.d = 0x2000}; /* d = 2^-7 */
    for (int j = 0; j < 32; ++j) b80.qs[j] = (int8_t)(j * 8 - 128);
    lrun_dequantize_row(LRUN_DTYPE_Q8_0, &b80, y, 32);
    ok = 1;
    for (int j = 0; j < 32; ++j) ok &= y[j] == (float)(j * 8 - 128) / 128.0f;
    CHECK("q8_0 hand block: q*d", ok);

    /* Q4_K: d = 0.5, dmin = 0.25; scales chosen with the high bits in use:
     * sc = {1, 2, 3, 4, 17, 40, 63, 33}, m = {0, 5, 10, 15, 62, 20, 1, 48}. */
    static const int sc[8] = {1, 2, 3, 4, 17, 40, 63, 33}, mn[8] = {0, 5, 10, 15, 62, 20, 1, 48};
    lrun_block_q4_K bk = {.d = 0x3800, .dmin = 0x3400};
    /* packed by hand from the byte layout of REFERENCE.md:
     *  bytes 0-3: sc0..3 | (sc4..7 >> 4) << 6;  bytes 4-7: m0..3 | (m4..7 >> 4) << 6;
     *  bytes 8-11: (sc4..7 & 15) | (m4..7 & 15) << 4 */
    const uint8_t packed[12] = {
        1 | (1 << 6), 2 | (2 << 6), 3 | (3 << 6), 4 | (2 << 6),      /* 17>>4=1, 40>>4=2, 63>>4=3, 33>>4=2 */
        0 | (3 << 6), 5 | (1 << 6), 10 | (0 << 6), 15 | (3 << 6),    /* 62>>4=3, 20>>4=1, 1>>4=0, 48>>4=3 */
        (17 & 15) | (14 << 4), (40 & 15) | (4 << 4), (63 & 15) | (1 << 4), (33 & 15) | (0 << 4),
    };
    memcpy(bk.scales, packed, 12);
    for (int i = 0; i < 128; ++i) bk.qs[i] = (uint8_t)((i * 7) & 0xFF);
    lrun_dequantize_row(LRUN_DTYPE_Q4_K, &bk, y, 256);
    ok = 1;
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
            uint8_t q = bk.qs[32 * c + l];
            ok &= y[64 * c + l] == 0.5f * sc[2 * c] * (q & 15) - 0.25f * mn[2 * c];
            ok &= y[64 * c + 32 + l] == 0.5f * sc[2 * c + 1] * (q >> 4) - 0.25f * mn[2 * c + 1];
        }
    CHECK("q4_K hand block: 6-bit scales and mins, chunk order", ok);

    /* Q6_K: d = 2^-4; scale of sub-block j (16 elements) = j - 8; quant of
     * element p = p mod 64, spread over ql/qh by hand. */
    lrun_block_q6_K b6 = {.d = 0x2c00};
    for (int j = 0; j < 16; ++j) b6.scales[j] = (int8_t)(j - 8);
    for (int p = 0; p < 256; ++p) {
        int h = p / 128, r = p % 128, l = r % 32, g = r / 32, q = p % 64;
        /* g: 0 → ql[l] low, 1 → ql[l+32] low, 2 → ql[l] high, 3 → ql[l+32] high; qh[l] bits 2g, 2g+1 */
        uint8_t *ql = b6.ql + 64 * h + l + (g & 1) * 32;
        *ql |= (uint8_t)((q & 15) << ((g >> 1) * 4));
        b6.qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * g));
    }
    lrun_dequantize_row(LRUN_DTYPE_Q6_K, &b6, y, 256);
    ok = 1;
    for (int p = 0; p < 256; ++p) ok &= y[p] == 0.0625f * (float)(p / 16 - 8) * (float)(p % 64 - 32);
    CHECK("q6_K hand block: ql/qh split, 16 scales, q-32", ok);
}

// ---------------------------------------------------------------- round trips

/* quantize → dequantize of n signal values; returns the worst error relative
 * to the bound the format promises for each block of block elements. */
typedef float (*bound_fn)(const float *x, int n);

static float max_abs(const float *x, int n)
{
    float m = 0.0f;
    for (int i = 0; i < n; ++i) m = fmaxf(m, fabsf(x[i]));
    return m;
}
static float range(const float *x, int n)
{
    float lo = x[0], hi = x[0];
    for (int i = 0; i < n; ++i) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    return hi - lo;
}
/* bounds per block: half a step, plus the f16 rounding of the scale (2^-11
 * relative, times the largest quant), plus a hair for float rounding */
static float bound_q8(const float *x, int n) { return max_abs(x, n) / 127.0f * (0.5f + 127.0f / 2048.0f) * 1.001f; }
static float bound_q8_float_d(const float *x, int n) { return max_abs(x, n) / 127.0f * 0.5f * 1.001f + 1e-30f; }
/* Q4_0: x = -max lands on 8, clipped to 7: one whole step */
static float bound_q4_0(const float *x, int n) { return max_abs(x, n) / 8.0f * (1.0f + 8.0f / 1024.0f) * 1.001f; }
static float bound_q4_1(const float *x, int n)
{
    float lo = x[0];
    for (int i = 0; i < n; ++i) lo = fminf(lo, x[i]);
    return range(x, n) / 15.0f * (0.5f + 15.0f / 2048.0f) * 1.001f + fabsf(lo) / 2048.0f;
}
/* K-quants: sub-block scales are themselves rounded (6 or 8 bits against the
 * largest), so the bound is a step of the super-block's largest sub-block
 * scale rather than of each sub-block's own. */
static float bound_q4_K(const float *x, int n) { return range(x, n) / 15.0f * 1.05f; }
static float bound_q6_K(const float *x, int n) { return max_abs(x, n) / 32.0f * 1.05f; }
static float bound_q5_0(const float *x, int n) { return max_abs(x, n) / 16.0f * (1.0f + 16.0f / 1024.0f) * 1.001f; }
static float bound_q5_1(const float *x, int n)
{
    float lo = x[0];
    for (int i = 0; i < n; ++i) lo = fminf(lo, x[i]);
    return range(x, n) / 31.0f * (0.5f + 31.0f / 2048.0f) * 1.001f + fabsf(lo) / 2048.0f;
}
static float bound_q2_K(const float *x, int n) { return range(x, n) / 3.0f * 1.05f; }
static float bound_q3_K(const float *x, int n) { return max_abs(x, n) / 4.0f * 1.05f; }
static float bound_q5_K(const float *x, int n) { return range(x, n) / 31.0f * 1.05f; }
/* IQ4: the widest gap of the table at its ends (+127 → 113), plus (XS) the 6-bit sub-block scales */
static float bound_iq4_nl(const float *x, int n) { return max_abs(x, n) * 14.0f / 127.0f * 1.05f; }
static float bound_iq4_xs(const float *x, int n) { return max_abs(x, n) * 16.0f / 127.0f * 1.05f; }
/* f16: half an ulp, 2^-11 relative; below 2^-14 subnormal, half of 2^-24 */
static float bound_f16(const float *x, int n) { return fmaxf(max_abs(x, n) / 2048.0f, 0x1p-25f); }
static float bound_bf16(const float *x, int n) { return max_abs(x, n) / 256.0f; }

static void roundtrip(const char *name, lrun_dtype t, int block, bound_fn bound, float *rms_out)
{
    enum { N = 4096 };
    static float x[N], y[N];
    static uint8_t q[N * 4];
    fill_signal(x, N);
    for (int i = 0; i < 32; ++i) x[512 + i] = 0.0f;       /* an all-zero block */
    for (int i = 0; i < 32; ++i) x[1024 + i] = 0.3f;      /* a constant block */
    for (int i = 0; i < 32; ++i) x[2048 + i] = 1.0f + i;  /* all positive */
    lrun_quantize_row(t, x, q, N);
    lrun_dequantize_row(t, q, y, N);
    float worst = 0.0f;
    double se = 0.0, sx = 0.0;
    for (int b = 0; b < N; b += block) {
        float lim = bound(x + b, block);
        for (int i = b; i < b + block; ++i) {
            float e = fabsf(y[i] - x[i]);
            if (e > 0.0f) worst = fmaxf(worst, lim > 0.0f ? e / lim : INFINITY);
            se += (double)e * e;
            sx += (double)x[i] * x[i];
        }
    }
    char msg[128];
    snprintf(msg, sizeof msg, "%s: quantize→dequantize error within the format's bound (worst %.3f of it)", name,
             worst);
    CHECK(msg, worst <= 1.0f);
    snprintf(msg, sizeof msg, "%s: zero block decodes to zeros", name);
    CHECK(msg, max_abs(y + 512, 32) == 0.0f);
    if (rms_out) *rms_out = (float)sqrt(se / sx);
}

static void test_roundtrips(void)
{
    float rms;
    roundtrip("q4_0", LRUN_DTYPE_Q4_0, 32, bound_q4_0, &rms);
    roundtrip("q4_1", LRUN_DTYPE_Q4_1, 32, bound_q4_1, &rms);
    roundtrip("q8_0", LRUN_DTYPE_Q8_0, 32, bound_q8, &rms);
    roundtrip("q8_1", LRUN_DTYPE_Q8_1, 32, bound_q8, &rms); /* d is stored f16-rounded */
    roundtrip("q8_k", LRUN_DTYPE_Q8_K, 256, bound_q8_float_d, &rms);
    roundtrip("f16", LRUN_DTYPE_F16, 1, bound_f16, &rms);
    roundtrip("bf16", LRUN_DTYPE_BF16, 1, bound_bf16, &rms);
    roundtrip("q4_K", LRUN_DTYPE_Q4_K, 256, bound_q4_K, &rms);
    CHECK_NEAR("q4_K: relative rms error of a 4-bit code (< 0.12)", rms, 0.06, 0.06);
    roundtrip("q6_K", LRUN_DTYPE_Q6_K, 256, bound_q6_K, &rms);
    CHECK_NEAR("q6_K: relative rms error of a 6-bit code (< 0.03)", rms, 0.015, 0.015);
    roundtrip("q5_0", LRUN_DTYPE_Q5_0, 32, bound_q5_0, &rms);
    roundtrip("q5_1", LRUN_DTYPE_Q5_1, 32, bound_q5_1, &rms);
    roundtrip("q2_K", LRUN_DTYPE_Q2_K, 256, bound_q2_K, &rms);
    CHECK_NEAR("q2_K: relative rms error of a 2-bit code (< 0.5)", rms, 0.25, 0.25);
    roundtrip("q3_K", LRUN_DTYPE_Q3_K, 256, bound_q3_K, &rms);
    CHECK_NEAR("q3_K: relative rms error of a 3-bit code (< 0.25)", rms, 0.125, 0.125);
    roundtrip("q5_K", LRUN_DTYPE_Q5_K, 256, bound_q5_K, &rms);
    CHECK_NEAR("q5_K: relative rms error of a 5-bit code (< 0.06)", rms, 0.03, 0.03);
    roundtrip("iq4_nl", LRUN_DTYPE_IQ4_NL, 32, bound_iq4_nl, &rms);
    roundtrip("iq4_xs", LRUN_DTYPE_IQ4_XS, 256, bound_iq4_xs, &rms);
    CHECK_NEAR("iq4_xs: relative rms error of a 4-bit code (< 0.12)", rms, 0.06, 0.06);

    /* Q8_1's s is f16(d * sum(q)) with the d before its own f16 rounding */
    float x[64];
    lrun_block_q8_1 b[2];
    fill_signal(x, 64);
    lrun_quantize_row(LRUN_DTYPE_Q8_1, x, b, 64);
    int sum = 0;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) {
        sum += b[1].qs[j];
        amax = fmaxf(amax, fabsf(x[32 + j]));
    }
    const float d = amax / 127.0f;
    CHECK("q8_1: d = f16(amax / 127), s = f16(d * sum(q)) from the unrounded d",
          b[1].d == lrun_f16_to_f32(lrun_f32_to_f16(d)) && b[1].s == lrun_f16_to_f32(lrun_f32_to_f16(d * (float)sum)));
    /* Q8_K's bsums */
    float xk[256];
    lrun_block_q8_K bk;
    fill_signal(xk, 256);
    lrun_quantize_row(LRUN_DTYPE_Q8_K, xk, &bk, 256);
    int ok = 1;
    for (int j = 0; j < 16; ++j) {
        int s = 0;
        for (int l = 0; l < 16; ++l) s += bk.qs[16 * j + l];
        ok &= bk.bsums[j] == s;
    }
    CHECK("q8_K: bsums are the sums of each 16 quants", ok);
}

/* The SIMD activation quantizers must give the scalar ones' bytes, ties included. */
static void test_simd_quantizers(void)
{
    enum { N = 2048 };
    static float x[N];
    static uint8_t a[N * 2], b[N * 2];
    fill_signal(x, N);
    /* a block with amax 127 (d = 1): every x.5 is a tie */
    for (int i = 0; i < 32; ++i) x[i] = (float)i - 15.5f;
    x[31] = 127.0f;
    /* a Q8_K super-block whose scale is exactly -1: ties at x.5 again */
    for (int i = 256; i < 512; ++i) x[i] = (float)((i % 64) - 32) + 0.5f;
    x[300] = -127.0f;
    static const lrun_dtype ts[] = {LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q8_1, LRUN_DTYPE_Q8_K};
    for (int i = 0; i < 3; ++i) {
        size_t bytes;
        lrun_dtype_row_bytes(ts[i], N, &bytes);
        memset(a, 0, sizeof a);
        memset(b, 0, sizeof b);
        lrun_quantize_row(ts[i], x, a, N);
        lrun_quantize_row_scalar(ts[i], x, b, N);
        char msg[96];
        snprintf(msg, sizeof msg, "%s: quantize_row gives the scalar reference's bytes", lrun_dtype_name(ts[i]));
        CHECK(msg, memcmp(a, b, bytes) == 0);
    }
    for (int i = 0; i < 2; ++i) {
        size_t bytes;
        lrun_dtype_row_bytes(ts[i], N, &bytes);
        memset(a, 0, sizeof a);
        memset(b, 0, sizeof b);
        lrun_quantize_activations(ts[i], x, a, N);
        lrun_quantize_activations_scalar(ts[i], x, b, N);
        char msg[96];
        snprintf(msg, sizeof msg, "%s: quantize_activations gives the scalar twin's bytes", lrun_dtype_name(ts[i]));
        CHECK(msg, memcmp(a, b, bytes) == 0);
    }
    lrun_block_q8_0 q;
    lrun_quantize_row(LRUN_DTYPE_Q8_0, x, &q, 32);
    CHECK("q8_0 weights: ties round away from zero, as ggml's reference roundf",
          q.qs[0] == -16 && q.qs[15] == -1 && q.qs[16] == 1);
    lrun_quantize_activations(LRUN_DTYPE_Q8_0, x, &q, 32);
    CHECK("q8_0 activations: ties round to even, as llama.cpp's x86 quantize_row_q8_0",
          q.qs[0] == -16 && q.qs[1] == -14 && q.qs[15] == 0 && q.qs[16] == 0 && q.qs[17] == 2);
    lrun_block_q8_1 q1;
    lrun_quantize_activations(LRUN_DTYPE_Q8_1, x, &q1, 32);
    CHECK("q8_1 activations: the same quants", memcmp(q1.qs, q.qs, 32) == 0);
}

/* Where llama.cpp's activation rule and the reference rule part: id =
 * 127/amax is not always 1/(amax/127). Search a value where x·id lands on
 * the other side of a .5 boundary, and check the activation quantizer
 * follows the 127/amax product (round half to even). */
static void test_activation_rule(void)
{
    int found = 0, ok = 1;
    float x[32];
    for (int t = 1; t < 20000 && found < 20; ++t) {
        const float amax = 1.0f + (float)t * 0.0137f;
        const float id_act = 127.0f / amax, id_ref = 1.0f / (amax / 127.0f);
        if (id_act == id_ref) continue;
        for (int j = 0; j < 32; ++j) x[j] = 0.0f;
        x[0] = amax;
        /* a value whose scaled form differs between the two rules */
        for (int m = 1; m < 127; ++m) {
            const float v = ((float)m + 0.5f) / id_act;
            if (v * id_act == v * id_ref) continue;
            x[1] = v;
            lrun_block_q8_0 qa, qs;
            lrun_quantize_activations(LRUN_DTYPE_Q8_0, x, &qa, 32);
            lrun_quantize_activations_scalar(LRUN_DTYPE_Q8_0, x, &qs, 32);
            ok &= qa.qs[1] == (int8_t)nearbyintf(v * id_act) && qs.qs[1] == qa.qs[1] && qa.qs[0] == 127 &&
                  qa.d == lrun_f32_to_f16(amax / 127.0f);
            ++found;
            break;
        }
    }
    CHECK("activation quantizer: q = rint(x * (127/amax)), d = f16(amax/127) where 127/amax != 1/d", found > 0 && ok);
}

// ---------------------------------------------------------------- gguf-py golden

static int hex_bytes(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    if (n > cap) return -1;
    for (size_t i = 0; i < n; ++i) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (uint8_t)v;
    }
    return (int)n;
}

static void test_golden(void)
{
    cJSON *root = fixture_read_json(GOLDEN);
    CHECK("golden file " GOLDEN " opens and parses (run from the repository root)", root != NULL);
    if (!root) return;
    cJSON *cases = cJSON_GetObjectItem(root, "cases");
    CHECK("golden file has cases", cJSON_IsArray(cases) && cJSON_GetArraySize(cases) > 0);
    cJSON *c;
    cJSON_ArrayForEach(c, cases)
    {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(c, "type"));
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItem(c, "kind"));
        int n = cJSON_GetObjectItem(c, "n")->valueint;
        lrun_dtype t;
        if (lrun_dtype_from_name(type, &t) != LRUN_OK || n > 1024) {
            CHECK("golden case has a known type and size", 0);
            continue;
        }
        uint8_t want[4096], ours[4096];
        float deq[1024], x[1024];
        int nbytes = hex_bytes(cJSON_GetStringValue(cJSON_GetObjectItem(c, "quantized")), want, sizeof want);
        size_t row;
        lrun_dtype_row_bytes(t, n, &row);
        char msg[160];
        snprintf(msg, sizeof msg, "golden %s/%s: %d bytes", type, kind, nbytes);
        CHECK(msg, nbytes == (int)row);
        if (nbytes != (int)row) continue;

        /* our dequantize of gguf-py's bytes = gguf-py's dequantize */
        cJSON *dq = cJSON_GetObjectItem(c, "dequantized");
        lrun_dequantize_row(t, want, deq, n);
        int same = cJSON_GetArraySize(dq) == n, i = 0;
        cJSON *v;
        cJSON_ArrayForEach(v, dq)
        {
            if (i < n) same &= deq[i] == (float)v->valuedouble;
            ++i;
        }
        snprintf(msg, sizeof msg, "golden %s/%s: dequantize equals gguf-py's", type, kind);
        CHECK(msg, same);

        /* our quantize of the same inputs = gguf-py's bytes, where it is ggml's reference */
        cJSON *in = cJSON_GetObjectItem(c, "input");
        if (in && cJSON_IsTrue(cJSON_GetObjectItem(c, "exact_quant"))) {
            i = 0;
            cJSON_ArrayForEach(v, in) if (i < n) x[i++] = (float)v->valuedouble;
            lrun_quantize_row(t, x, ours, n);
            snprintf(msg, sizeof msg, "golden %s/%s: quantize gives gguf-py's bytes", type, kind);
            CHECK(msg, memcmp(ours, want, row) == 0);
        }
    }
    cJSON_Delete(root);
}

// ---------------------------------------------------------------- dot products

static const lrun_dtype weight_types[] = {LRUN_DTYPE_F32,  LRUN_DTYPE_F16,  LRUN_DTYPE_BF16,   LRUN_DTYPE_Q4_0,
                                          LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_K,   LRUN_DTYPE_Q6_K,
                                          LRUN_DTYPE_Q5_0, LRUN_DTYPE_Q5_1, LRUN_DTYPE_Q2_K,   LRUN_DTYPE_Q3_K,
                                          LRUN_DTYPE_Q5_K, LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_IQ4_XS,
                                          LRUN_DTYPE_MXFP4};

static void test_dots(void)
{
    enum { MAXK = 2560 };
    static float w[MAXK], x[4][MAXK], wd[MAXK], xd[MAXK];
    static uint8_t wq[MAXK * 4], xs[4 * MAXK * 4];
    CHECK("partners", lrun_dot_partner(LRUN_DTYPE_Q4_0) == LRUN_DTYPE_Q8_0 &&
                          lrun_dot_partner(LRUN_DTYPE_Q4_1) == LRUN_DTYPE_Q8_1 &&
                          lrun_dot_partner(LRUN_DTYPE_Q8_0) == LRUN_DTYPE_Q8_0 &&
                          lrun_dot_partner(LRUN_DTYPE_Q4_K) == LRUN_DTYPE_Q8_K &&
                          lrun_dot_partner(LRUN_DTYPE_Q6_K) == LRUN_DTYPE_Q8_K &&
                          lrun_dot_partner(LRUN_DTYPE_Q5_0) == LRUN_DTYPE_Q8_0 &&
                          lrun_dot_partner(LRUN_DTYPE_Q5_1) == LRUN_DTYPE_Q8_1 &&
                          lrun_dot_partner(LRUN_DTYPE_IQ4_NL) == LRUN_DTYPE_Q8_0 &&
                          lrun_dot_partner(LRUN_DTYPE_Q2_K) == LRUN_DTYPE_Q8_K &&
                          lrun_dot_partner(LRUN_DTYPE_Q3_K) == LRUN_DTYPE_Q8_K &&
                          lrun_dot_partner(LRUN_DTYPE_Q5_K) == LRUN_DTYPE_Q8_K &&
                          lrun_dot_partner(LRUN_DTYPE_IQ4_XS) == LRUN_DTYPE_Q8_K &&
                          lrun_dot_partner(LRUN_DTYPE_F16) == LRUN_DTYPE_F32 &&
                          lrun_dot_partner(LRUN_DTYPE_BF16) == LRUN_DTYPE_F32);
    for (size_t ti = 0; ti < sizeof weight_types / sizeof weight_types[0]; ++ti) {
        lrun_dtype t = weight_types[ti], p = lrun_dot_partner(t);
        /* odd block counts exercise the kernels' tails; float types get a ragged k */
        int64_t sizes[2];
        int64_t be = lrun_dtype_block_elems(t);
        sizes[0] = be == 1 ? 1007 : be == 32 ? 32 * 25 : 256 * 3;
        sizes[1] = be == 1 ? 16 : be == 32 ? 32 : 256;
        for (int si = 0; si < 2; ++si) {
            int64_t k = sizes[si];
            size_t xrow;
            lrun_dtype_row_bytes(p, k, &xrow);
            fill_signal(w, k);
            lrun_quantize_row(t, w, wq, k);
            lrun_dequantize_row(t, wq, wd, k);
            /* 4 activation rows in the partner type, xrow bytes apart */
            for (int r = 0; r < 4; ++r) {
                fill_signal(x[r], k);
                lrun_quantize_activations(p, x[r], xs + r * xrow, k);
            }
            /* the 32-element block kernels all give llama.cpp's bits: the scalar kernel's */
            const int exact_type = t == LRUN_DTYPE_Q4_0 || t == LRUN_DTYPE_Q4_1 || t == LRUN_DTYPE_Q8_0 ||
                                   t == LRUN_DTYPE_Q5_0 || t == LRUN_DTYPE_Q5_1 || t == LRUN_DTYPE_IQ4_NL;
            float scalar4[4];
            lrun_dot_kernel_scalar(t)(k, wq, xs, xrow, 4, scalar4);

            /* every kernel of this build: SIMD forms and the scalar reference */
            lrun_dot_fn fns[8];
            const char *names[8];
            int nk = lrun_dot_kernels(t, fns, names, 8);
            char msg[160];
            snprintf(msg, sizeof msg, "%s: kernels listed, the chosen one among them, scalar last", lrun_dtype_name(t));
            int listed = nk >= 1 && nk <= 8 && fns[nk - 1] == lrun_dot_kernel_scalar(t), chosen = 0;
            for (int i = 0; i < nk && i < 8; ++i) chosen |= fns[i] == lrun_dot_kernel(t);
            CHECK(msg, listed && chosen);
            for (int ki = 0; ki < nk && ki < 8; ++ki) {
                double worst = 0.0;
                int rows_agree = 1;
                float all4[4];
                fns[ki](k, wq, xs, xrow, 4, all4);
                for (int r = 0; r < 4; ++r) {
                    lrun_dequantize_row(p, xs + r * xrow, xd, k);
                    double ref = 0.0, mag = 0.0;
                    for (int64_t i = 0; i < k; ++i) {
                        ref += (double)wd[i] * xd[i];
                        mag += fabs((double)wd[i] * xd[i]);
                    }
                    if (t == LRUN_DTYPE_Q4_1 || t == LRUN_DTYPE_Q5_1) { /* the min term uses Q8_1's stored s, not d·Σq */
                        const lrun_block_q8_1 *xb = (const lrun_block_q8_1 *)(xs + r * xrow);
                        for (int64_t bi = 0; bi < k / 32; ++bi) {
                            const uint16_t m = t == LRUN_DTYPE_Q4_1 ? ((const lrun_block_q4_1 *)wq)[bi].m
                                                                    : ((const lrun_block_q5_1 *)wq)[bi].m;
                            double sq = 0.0;
                            for (int j = 0; j < 32; ++j) sq += xb[bi].qs[j];
                            ref += (double)lrun_f16_to_f32(m) * ((double)xb[bi].s - (double)xb[bi].d * sq);
                        }
                    }
                    if (exact_type) rows_agree &= f32_bits(all4[r]) == f32_bits(scalar4[r]);
                    worst = fmax(worst, fabs(all4[r] - ref) / (mag + 1e-30));
                    for (int nx = r + 1; nx <= 4; ++nx) { /* any grouping gives the same bits */
                        float o[4];
                        fns[ki](k, wq, xs, xrow, nx, o);
                        rows_agree &= f32_bits(o[r]) == f32_bits(all4[r]);
                    }
                    if (fns[ki] == lrun_dot_kernel(t)) {
                        float one = lrun_vec_dot(t, k, wq, xs + r * xrow);
                        rows_agree &= f32_bits(one) == f32_bits(all4[r]);
                    }
                }
                snprintf(msg, sizeof msg, "%s·%s k=%lld, %s kernel: = float dot of dequantized rows (rel %.2g)",
                         lrun_dtype_name(t), lrun_dtype_name(p), (long long)k, names[ki], worst);
                CHECK(msg, worst < 1e-5);
                snprintf(msg, sizeof msg, "%s k=%lld, %s kernel: 1..4 rows per call give identical bits%s",
                         lrun_dtype_name(t), (long long)k, names[ki], exact_type ? ", the scalar kernel's" : "");
                CHECK(msg, rows_agree);
            }
        }
    }
}

/* Extreme quants, where 16-bit intermediate sums would overflow if a kernel
 * added too many of them: every kernel must give the exact integer dot. */
static void test_dot_extremes(void)
{
    enum { NB = 3 };
    lrun_block_q8_0 w8[NB], x8[NB];
    lrun_block_q4_0 w40[NB];
    lrun_block_q4_1 w41[NB];
    lrun_block_q8_1 x81[NB];
    for (int b = 0; b < NB; ++b) {
        w8[b].d = x8[b].d = w40[b].d = w41[b].d = 0x3c00; /* 1.0 */
        w41[b].m = 0;
        x81[b].d = 1.0f;
        x81[b].s = 32.0f * 127.0f;
        memset(w40[b].qs, 0x00, 16); /* every q - 8 = -8 */
        memset(w41[b].qs, 0xFF, 16); /* every q = 15 */
        for (int j = 0; j < 32; ++j) {
            w8[b].qs[j] = (j & 1) ? 127 : -127;
            x8[b].qs[j] = (j & 1) ? 127 : -127;
            x81[b].qs[j] = 127;
        }
    }
    /* Q4_K: every scale 63, every quant 15, min 0, against 127s */
    lrun_block_q4_K wk = {.d = 0x3c00, .dmin = 0};
    lrun_block_q8_K xk = {.d = 1.0f};
    memset(wk.scales, 0, 12);
    for (int j = 0; j < 4; ++j) {
        wk.scales[j] = 63 | (3 << 6); /* scale j, and the high bits of scale j+4 */
        wk.scales[j + 8] = 15;         /* low bits of scale j+4 (mins 0) */
    }
    memset(wk.qs, 0xFF, sizeof wk.qs);
    memset(xk.qs, 127, sizeof xk.qs);
    for (int j = 0; j < 16; ++j) xk.bsums[j] = 16 * 127;
    /* the newer super-block types at their largest quants and scales */
    lrun_block_q5_K w5k = {.d = 0x3c00, .dmin = 0};
    memcpy(w5k.scales, wk.scales, 12); /* every scale 63, mins 0 */
    memset(w5k.qh, 0xFF, sizeof w5k.qh);
    memset(w5k.qs, 0xFF, sizeof w5k.qs); /* every q = 31 */
    lrun_block_q3_K w3k = {.d = 0x3c00};
    memset(w3k.hmask, 0xFF, sizeof w3k.hmask); /* no −4: every q = 3 */
    memset(w3k.qs, 0xFF, sizeof w3k.qs);
    memset(w3k.scales, 0xFF, sizeof w3k.scales); /* every scale 63 − 32 = 31 */
    lrun_block_q2_K w2k = {.d = 0x3c00, .dmin = 0};
    memset(w2k.scales, 0x0F, sizeof w2k.scales); /* scale 15, min 0 */
    memset(w2k.qs, 0xFF, sizeof w2k.qs);          /* every q = 3 */
    lrun_block_iq4_xs wxs = {.d = 0x3c00, .scales_h = 0};
    memset(wxs.scales_l, 0, sizeof wxs.scales_l); /* every scale 0 − 32 */
    memset(wxs.qs, 0, sizeof wxs.qs);             /* every value −127 */
    const struct { lrun_dtype t; const void *w, *x; int k; double want; } cases[] = {
        {LRUN_DTYPE_Q5_K, &w5k, &xk, 256, 256.0 * 63 * 31 * 127},
        {LRUN_DTYPE_Q3_K, &w3k, &xk, 256, 256.0 * 31 * 3 * 127},
        {LRUN_DTYPE_Q2_K, &w2k, &xk, 256, 256.0 * 15 * 3 * 127},
        {LRUN_DTYPE_IQ4_XS, &wxs, &xk, 256, 256.0 * -32 * -127 * 127},
        {LRUN_DTYPE_Q8_0, w8, x8, 32 * NB, 32.0 * NB * 127 * 127},
        {LRUN_DTYPE_Q4_0, w40, x8, 32 * NB, 0.0}, /* ±127 alternating against -8: cancels */
        {LRUN_DTYPE_Q4_1, w41, x81, 32 * NB, 32.0 * NB * 15 * 127},
        {LRUN_DTYPE_Q4_K, &wk, &xk, 256, 256.0 * 63 * 15 * 127},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        lrun_dot_fn fns[8];
        const char *names[8];
        int nk = lrun_dot_kernels(cases[c].t, fns, names, 8), ok = 1;
        for (int i = 0; i < nk && i < 8; ++i) {
            float out;
            fns[i](cases[c].k, cases[c].w, cases[c].x, 0, 1, &out);
            ok &= out == (float)cases[c].want;
        }
        char msg[96];
        snprintf(msg, sizeof msg, "%s: extreme quants give the exact dot in every kernel", lrun_dtype_name(cases[c].t));
        CHECK(msg, ok);
    }
}

/* Non-finite and huge inputs (issue #16): every quantizer, weight rule and
 * activation rule, scalar and SIMD, on rows of 256-element blocks where one
 * block is finite and the others hold a NaN, +inf, -inf, ±1e38, or only
 * subnormals. Before, these cast NaN or out-of-range floats to integers
 * (undefined; the ASan+UBSan build checks float-cast-overflow). Now: the
 * finite block quantizes to the same bytes as alone (blocks are independent),
 * and a NaN among finite values in a symmetric type leaves the others within
 * the type's step of their value. */
static void test_nonfinite_inputs(void)
{
    static const lrun_dtype types[] = {LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q5_0, LRUN_DTYPE_Q5_1,
                                       LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q2_K, LRUN_DTYPE_Q3_K, LRUN_DTYPE_Q4_K,
                                       LRUN_DTYPE_Q5_K, LRUN_DTYPE_Q6_K, LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_IQ4_XS};
    enum { NB = 6, N = 256 * NB };
    static float x[N], y[N], alone[256];
    static uint8_t q[N * 2], qa[512];
    for (int i = 0; i < N; ++i) x[i] = rnd_gauss() * 0.05f;
    x[256 + 7] = NAN;
    x[512 + 3] = INFINITY;
    x[768 + 9] = -INFINITY;
    for (int i = 1024; i < 1280; ++i) x[i] = (i % 2 ? 1e38f : -1e38f) * (float)(1 + i % 3);
    for (int i = 1280; i < 1536; ++i) x[i] = (float)(i % 7 - 3) * 0x1p-140f;
    for (int i = 0; i < 256; ++i) alone[i] = x[i];
    for (size_t t = 0; t < sizeof types / sizeof types[0]; ++t) {
        const lrun_dtype dt = types[t];
        size_t rb = 0, ab = 0;
        if (lrun_dtype_row_bytes(dt, N, &rb) != LRUN_OK || lrun_dtype_row_bytes(dt, 256, &ab) != LRUN_OK || rb > sizeof q) {
            CHECK(lrun_dtype_name(dt), 0);
            continue;
        }
        char name[96];
        for (int simd = 0; simd < 2; ++simd) {
            memset(q, 0xAB, sizeof q);
            if (simd) lrun_quantize_row(dt, x, q, N);
            else lrun_quantize_row_scalar(dt, x, q, N);
            if (simd) lrun_quantize_row(dt, alone, qa, 256);
            else lrun_quantize_row_scalar(dt, alone, qa, 256);
            lrun_dequantize_row(dt, q, y, N);
            int near = 1;
            float step = 0.0f; /* the symmetric types' worst step on the NaN block: amax / levels */
            for (int i = 256; i < 512; ++i)
                if (i != 256 + 7) step = fmaxf(step, fabsf(x[i]));
            step /= (dt == LRUN_DTYPE_Q8_0 ? 127.0f : dt == LRUN_DTYPE_Q5_0 ? 15.0f : 7.0f);
            if (dt == LRUN_DTYPE_Q4_0 || dt == LRUN_DTYPE_Q5_0 || dt == LRUN_DTYPE_Q8_0)
                for (int i = 256; i < 512; ++i)
                    if (i != 256 + 7) near &= fabsf(y[i] - x[i]) <= step;
            snprintf(name, sizeof name, "%s %s: a finite block is independent of non-finite neighbours%s",
                     lrun_dtype_name(dt), simd ? "simd" : "scalar",
                     dt == LRUN_DTYPE_Q4_0 || dt == LRUN_DTYPE_Q5_0 || dt == LRUN_DTYPE_Q8_0 ? "; NaN is skipped" : "");
            CHECK(name, memcmp(q, qa, ab) == 0 && near);
        }
    }
    /* the activation rules (Q8_0, Q8_1, Q8_K partners) */
    static const lrun_dtype partners[] = {LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q4_K};
    for (size_t t = 0; t < 3; ++t) {
        static uint8_t act[N * 2], act1[N * 2];
        lrun_quantize_activations(partners[t], x, act, N);
        lrun_quantize_activations_scalar(partners[t], x, act1, N);
        const lrun_dtype pd = lrun_dot_partner(partners[t]);
        char name[96];
        snprintf(name, sizeof name, "activations for %s: defined on non-finite rows, finite block as scalar",
                 lrun_dtype_name(partners[t]));
        const size_t first = pd == LRUN_DTYPE_Q8_K   ? sizeof(lrun_block_q8_K)
                             : pd == LRUN_DTYPE_Q8_1 ? 8 * sizeof(lrun_block_q8_1)
                                                     : 8 * sizeof(lrun_block_q8_0); /* the first 256 elements */
        CHECK(name, memcmp(act, act1, first) == 0);
    }
}

int main(void)
{
    test_dtype_table();
    test_half();
    test_hand_blocks();
    test_roundtrips();
    test_simd_quantizers();
    test_activation_rule();
    test_golden();
    test_dots();
    test_dot_extremes();
    test_nonfinite_inputs();
    return CHECK_DONE();
}
