/* test_dot_isa.c — the host kernel levels (quant_isa.c) and the AVX-512 dot
 * kernels (quant_dot_avx512.c) on adversarial inputs.
 *
 * Every AVX-512 kernel must give its AVX2 twin's bits (llama.cpp's x86
 * arithmetic, docs/numerics.md), and for the 32-element block types also the
 * scalar kernel's, for: odd and small block counts, 1..4 rows per call
 * from any first row, rows an odd multiple of a row's bytes apart, random
 * raw blocks (every quant byte, −128 included) with extreme f16 scales
 * (±65504, subnormals, 0) and activation scales spanning 60 decades, 1..33
 * blocks or super-blocks (the float types, which keep AVX2, take the same
 * generators if they get one). Where the CPU has no AVX-512 the kernel
 * checks are skipped, saying why (TAP SKIP). Then lrun_cpu_isa_set/get and
 * lrun_dot_kernel agree. */
#include "check.h"
#include "quant/quant_dot.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* An f16 scale: mostly ordinary, often an extreme one. */
static uint16_t pick_f16(void)
{
    static const uint16_t extremes[] = {0x7bff, 0xfbff, 0x0001, 0x8001, 0x03ff, 0x0400, 0x0000, 0x3c00};
    if (rnd() % 4 == 0) return extremes[rnd() % 8];
    return (uint16_t)(((rnd() & 1) << 15) | ((5 + rnd() % 20) << 10) | (rnd() & 0x3ff));
}

/* A finite float over many decades (1e-30 .. 1e30), either sign. */
static float pick_f32(void)
{
    float m = (float)(rnd() % 2000001) / 1000000.0f - 1.0f;
    int e = (int)(rnd() % 7) - 3; /* mostly moderate */
    if (rnd() % 8 == 0) e = (int)(rnd() % 61) - 30;
    return m * powf(10.0f, (float)e);
}

/* A random finite f16 or bf16 weight. */
static uint16_t pick_half(int bf16)
{
    for (;;) {
        uint16_t h = (uint16_t)rnd();
        if (bf16 ? ((h >> 7) & 0xFF) != 0xFF : ((h >> 10) & 0x1F) != 0x1F) return h;
    }
}

static void fill_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; ++i) p[i] = (uint8_t)rnd();
}

/* k weights of type t at w: raw random quants, finite scales. */
static void make_weights(lrun_dtype t, uint8_t *w, int64_t k)
{
    size_t bytes;
    lrun_dtype_row_bytes(t, k, &bytes);
    fill_bytes(w, bytes);
    const int64_t nb = k / lrun_dtype_block_elems(t);
    for (int64_t b = 0; b < nb; ++b) {
        switch (t) {
        case LRUN_DTYPE_F32: ((float *)w)[b] = pick_f32(); break;
        case LRUN_DTYPE_F16: ((uint16_t *)w)[b] = pick_half(0); break;
        case LRUN_DTYPE_BF16: ((uint16_t *)w)[b] = pick_half(1); break;
        case LRUN_DTYPE_Q4_0: ((lrun_block_q4_0 *)w)[b].d = pick_f16(); break;
        case LRUN_DTYPE_Q8_0: ((lrun_block_q8_0 *)w)[b].d = pick_f16(); break;
        case LRUN_DTYPE_Q4_1:
            ((lrun_block_q4_1 *)w)[b].d = pick_f16();
            ((lrun_block_q4_1 *)w)[b].m = pick_f16();
            break;
        case LRUN_DTYPE_Q5_0: ((lrun_block_q5_0 *)w)[b].d = pick_f16(); break;
        case LRUN_DTYPE_IQ4_NL: ((lrun_block_iq4_nl *)w)[b].d = pick_f16(); break;
        case LRUN_DTYPE_Q5_1:
            ((lrun_block_q5_1 *)w)[b].d = pick_f16();
            ((lrun_block_q5_1 *)w)[b].m = pick_f16();
            break;
        case LRUN_DTYPE_Q4_K:
            ((lrun_block_q4_K *)w)[b].d = pick_f16();
            ((lrun_block_q4_K *)w)[b].dmin = pick_f16();
            break;
        case LRUN_DTYPE_Q5_K:
            ((lrun_block_q5_K *)w)[b].d = pick_f16();
            ((lrun_block_q5_K *)w)[b].dmin = pick_f16();
            break;
        case LRUN_DTYPE_Q6_K: ((lrun_block_q6_K *)w)[b].d = pick_f16(); break;
        case LRUN_DTYPE_Q2_K:
            ((lrun_block_q2_K *)w)[b].d = pick_f16();
            ((lrun_block_q2_K *)w)[b].dmin = pick_f16();
            break;
        case LRUN_DTYPE_Q3_K: ((lrun_block_q3_K *)w)[b].d = pick_f16(); break;
        case LRUN_DTYPE_IQ4_XS: ((lrun_block_iq4_xs *)w)[b].d = pick_f16(); break;
        default: break;
        }
    }
}

/* One activation row of k in partner type p at x. full_range lets Q8 quants
 * be −128, which no quantizer writes (the AVX2 sign trick then differs from
 * the scalar kernels, and the AVX-512 kernels must still equal AVX2). */
static void make_row(lrun_dtype p, uint8_t *x, int64_t k, int full_range)
{
    const int lo = full_range ? -128 : -127;
    if (p == LRUN_DTYPE_F32) {
        for (int64_t i = 0; i < k; ++i) ((float *)x)[i] = pick_f32();
        return;
    }
    const int64_t nb = k / lrun_dtype_block_elems(p);
    for (int64_t b = 0; b < nb; ++b) {
        if (p == LRUN_DTYPE_Q8_0) {
            lrun_block_q8_0 *y = (lrun_block_q8_0 *)x + b;
            y->d = pick_f16();
            for (int j = 0; j < 32; ++j) y->qs[j] = (int8_t)(lo + (int)(rnd() % (unsigned)(128 - lo)));
        } else if (p == LRUN_DTYPE_Q8_1) {
            lrun_block_q8_1 *y = (lrun_block_q8_1 *)x + b;
            y->d = lrun_f16_to_f32(pick_f16());
            y->s = pick_f32();
            for (int j = 0; j < 32; ++j) y->qs[j] = (int8_t)(lo + (int)(rnd() % (unsigned)(128 - lo)));
        } else {
            lrun_block_q8_K *y = (lrun_block_q8_K *)x + b;
            y->d = rnd() % 4 == 0 ? pick_f32() : lrun_f16_to_f32(pick_f16());
            for (int j = 0; j < 256; ++j) y->qs[j] = (int8_t)(lo + (int)(rnd() % (unsigned)(128 - lo)));
            for (int g = 0; g < 16; ++g) {
                int s = 0;
                for (int j = 0; j < 16; ++j) s += y->qs[16 * g + j];
                y->bsums[g] = (int16_t)s;
            }
        }
    }
}

/* Same bits, or both NaN (a NaN's payload is not part of the arithmetic). */
static int same(float a, float b)
{
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub || (a != a && b != b);
}

static lrun_dot_fn kernel_named(lrun_dtype t, const char *name)
{
    lrun_dot_fn fns[8];
    const char *names[8];
    int n = lrun_dot_kernels(t, fns, names, 8);
    for (int i = 0; i < n && i < 8; ++i)
        if (strcmp(names[i], name) == 0) return fns[i];
    return NULL;
}

static const lrun_dtype wide_types[] = {LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q5_0,
                                        LRUN_DTYPE_Q5_1, LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_MXFP4, LRUN_DTYPE_Q4_K,
                                        LRUN_DTYPE_Q5_K, LRUN_DTYPE_Q6_K, LRUN_DTYPE_Q2_K, LRUN_DTYPE_Q3_K,
                                        LRUN_DTYPE_IQ4_XS};

/* Every k, nx, stride and input kind for type t: AVX-512 = AVX2 (bits);
 * for the 32-element types with quantizer-range activations, = scalar too. */
static void check_type(lrun_dtype t)
{
    const lrun_dtype p = lrun_dot_partner(t);
    const int64_t be = lrun_dtype_block_elems(t);
    static const int64_t float_ks[] = {1, 7, 15, 16, 17, 31, 33, 100, 1007, 4101};
    static const int64_t blocks[] = {1, 2, 3, 4, 5, 7, 8, 9, 33};
    const int nks = be == 1 ? 10 : 9;
    lrun_dot_fn wide = kernel_named(t, "avx512"), avx2 = kernel_named(t, "avx2"), scalar = lrun_dot_kernel_scalar(t);
    const int exact32 = t == LRUN_DTYPE_Q4_0 || t == LRUN_DTYPE_Q4_1 || t == LRUN_DTYPE_Q8_0 ||
                        t == LRUN_DTYPE_Q5_0 || t == LRUN_DTYPE_Q5_1 || t == LRUN_DTYPE_IQ4_NL || t == LRUN_DTYPE_MXFP4;
    int ok_avx2 = 1, ok_scalar = 1, ok_rows = 1, cases = 0;
    for (int ki = 0; ki < nks; ++ki) {
        const int64_t k = be == 1 ? float_ks[ki] : be * blocks[ki];
        size_t wbytes, xbytes;
        lrun_dtype_row_bytes(t, k, &wbytes);
        lrun_dtype_row_bytes(p, k, &xbytes);
        for (int odd = 1; odd <= 5; odd += 2) {
            const size_t stride = xbytes * (size_t)odd;
            uint8_t *w = malloc(wbytes), *x = malloc(stride * 4);
            for (int full = 0; full < 2; ++full) {
                make_weights(t, w, k);
                for (int r = 0; r < 4; ++r) make_row(p, x + (size_t)r * stride, k, full);
                float o4w[4], o4a[4], o4s[4];
                wide(k, w, x, stride, 4, o4w);
                if (avx2) avx2(k, w, x, stride, 4, o4a);
                scalar(k, w, x, stride, 4, o4s);
                for (int r = 0; r < 4; ++r) {
                    if (avx2) ok_avx2 &= same(o4w[r], o4a[r]);
                    if (exact32 && !full) ok_scalar &= same(o4w[r], o4s[r]);
                }
                for (int nx = 1; nx <= 3; ++nx) /* any grouping of the rows gives the same bits */
                    for (int r0 = 0; r0 + nx <= 4; ++r0) {
                        float o[4];
                        wide(k, w, x + (size_t)r0 * stride, stride, nx, o);
                        for (int r = 0; r < nx; ++r) ok_rows &= same(o[r], o4w[r0 + r]);
                    }
                ++cases;
            }
            free(w);
            free(x);
        }
    }
    char msg[160];
    if (avx2) {
        snprintf(msg, sizeof msg, "%s: avx512 kernel = avx2 kernel, bit for bit (%d cases: ragged k, odd strides, "
                 "raw blocks, extreme scales)", lrun_dtype_name(t), cases);
        CHECK(msg, ok_avx2);
    } else {
        printf("ok %d - %s: avx512 against avx2 # SKIP this build has no AVX2 kernels\n", ++check_count,
               lrun_dtype_name(t));
    }
    snprintf(msg, sizeof msg, "%s: avx512 kernel, 1..4 rows per call from any first row give the same bits",
             lrun_dtype_name(t));
    CHECK(msg, ok_rows);
    if (exact32) {
        snprintf(msg, sizeof msg, "%s: avx512 kernel = scalar kernel (llama.cpp's bits) on quantizer-range rows",
                 lrun_dtype_name(t));
        CHECK(msg, ok_scalar);
    }
}

static void test_kernels(void)
{
    const int have = lrun_cpu_isa_supported(LRUN_CPU_ISA_AVX512);
    for (size_t i = 0; i < sizeof wide_types / sizeof wide_types[0]; ++i) {
        if (!have) {
            printf("ok %d - %s: avx512 kernel # SKIP this CPU (or build) has no AVX-512 F/BW/VL/DQ/VNNI\n",
                   ++check_count, lrun_dtype_name(wide_types[i]));
            continue;
        }
        char msg[96];
        snprintf(msg, sizeof msg, "%s: an avx512 kernel is listed", lrun_dtype_name(wide_types[i]));
        CHECK(msg, kernel_named(wide_types[i], "avx512") != NULL);
        if (kernel_named(wide_types[i], "avx512")) check_type(wide_types[i]);
    }
}

/* lrun_gemv_kernel (decode's multi-row kernel): MXFP4 at the avx512 level
 * gives each row the avx512 dot's bits, for 1..9 weight rows (the 4-row
 * lanes and the rows left over), even and odd block counts, raw blocks and
 * extreme scales; the float types have none (their dot streams faster). */
static void test_gemv(void)
{
    if (!lrun_cpu_isa_supported(LRUN_CPU_ISA_AVX512) || lrun_cpu_isa_set(LRUN_CPU_ISA_AVX512) != LRUN_OK) {
        printf("ok %d - mxfp4 decode kernel # SKIP this CPU (or build) has no AVX-512 F/BW/VL/DQ/VNNI\n",
               ++check_count);
        return;
    }
    lrun_gemm_fn g = lrun_gemv_kernel(LRUN_DTYPE_MXFP4);
    lrun_dot_fn dot = kernel_named(LRUN_DTYPE_MXFP4, "avx512");
    CHECK("mxfp4 has a decode kernel at avx512", g != NULL && dot != NULL);
    CHECK("bf16 has no decode kernel (row by row streams faster)", lrun_gemv_kernel(LRUN_DTYPE_BF16) == NULL);
    if (!g || !dot) return;
    static const int64_t blocks[] = {1, 2, 3, 8, 9, 33};
    int ok = 1, cases = 0;
    for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; ++bi) {
        const int64_t k = 32 * blocks[bi];
        size_t wbytes, xbytes;
        lrun_dtype_row_bytes(LRUN_DTYPE_MXFP4, k, &wbytes);
        lrun_dtype_row_bytes(LRUN_DTYPE_Q8_0, k, &xbytes);
        const size_t ws = wbytes + 17 * (bi & 1); /* an odd stride too */
        uint8_t *w = malloc(ws * 9), *x = malloc(xbytes);
        for (int full = 0; full < 2; ++full) {
            for (int j = 0; j < 9; ++j) make_weights(LRUN_DTYPE_MXFP4, w + (size_t)j * ws, k);
            make_row(LRUN_DTYPE_Q8_0, x, k, full);
            for (int64_t nw = 1; nw <= 9; ++nw) {
                float y[9], ref;
                g(k, w, ws, nw, x, xbytes, 1, y, 1);
                for (int64_t j = 0; j < nw; ++j) {
                    dot(k, w + (size_t)j * ws, x, 0, 1, &ref);
                    ok &= same(y[j], ref);
                }
                ++cases;
            }
        }
        free(w);
        free(x);
    }
    char msg[160];
    snprintf(msg, sizeof msg,
             "mxfp4 decode kernel: every row = the avx512 dot's bits (%d cases: 1..9 rows, odd "
             "block counts and strides, raw blocks)",
             cases);
    CHECK(msg, ok);
}

/* lrun_dot_kernel follows the level; an unsupported level is refused. */
static void test_levels(void)
{
    const lrun_cpu_isa start = lrun_cpu_isa_get();
    CHECK("the level in use is supported", lrun_cpu_isa_supported(start));
    CHECK("lrun_cpu_kernels names the level in use", strcmp(lrun_cpu_kernels(), lrun_cpu_isa_name(start)) == 0);
    CHECK("scalar is always supported", lrun_cpu_isa_set(LRUN_CPU_ISA_SCALAR) == LRUN_OK &&
                                            lrun_dot_kernel(LRUN_DTYPE_Q4_K) == lrun_dot_kernel_scalar(LRUN_DTYPE_Q4_K));
    CHECK("a level that is no level is refused", lrun_cpu_isa_set((lrun_cpu_isa)7) == LRUN_E_ARG);
    for (int l = LRUN_CPU_ISA_AVX2; l <= LRUN_CPU_ISA_AVX512; ++l) {
        const lrun_cpu_isa isa = (lrun_cpu_isa)l;
        char msg[128];
        if (!lrun_cpu_isa_supported(isa)) {
            /* refused, and the level set before (scalar, or avx2 from the pass before) stays */
            const lrun_cpu_isa before = lrun_cpu_isa_get();
            snprintf(msg, sizeof msg, "%s is refused where unsupported", lrun_cpu_isa_name(isa));
            CHECK(msg, lrun_cpu_isa_set(isa) == LRUN_E_ARG && lrun_cpu_isa_get() == before);
            continue;
        }
        int ok = lrun_cpu_isa_set(isa) == LRUN_OK && lrun_cpu_isa_get() == isa;
        for (size_t i = 0; i < sizeof wide_types / sizeof wide_types[0]; ++i) {
            lrun_dot_fn want = kernel_named(wide_types[i], lrun_cpu_isa_name(isa));
            ok &= want != NULL && lrun_dot_kernel(wide_types[i]) == want;
        }
        snprintf(msg, sizeof msg, "level %s: lrun_dot_kernel returns the %s kernels", lrun_cpu_isa_name(isa),
                 lrun_cpu_isa_name(isa));
        CHECK(msg, ok);
        if (isa == LRUN_CPU_ISA_AVX512) /* a type without an AVX-512 kernel keeps AVX2's */
            CHECK("level avx512: F32 and BF16 keep their avx2 kernels",
                  !lrun_cpu_isa_supported(LRUN_CPU_ISA_AVX2) ||
                      (lrun_dot_kernel(LRUN_DTYPE_F32) == kernel_named(LRUN_DTYPE_F32, "avx2") &&
                       lrun_dot_kernel(LRUN_DTYPE_BF16) == kernel_named(LRUN_DTYPE_BF16, "avx2")));
    }
    lrun_cpu_isa_set(start);
}

int main(void)
{
    printf("# host kernel level in use: %s\n", lrun_cpu_kernels());
    test_kernels();
    const lrun_cpu_isa start = lrun_cpu_isa_get();
    test_gemv();
    (void)lrun_cpu_isa_set(start);
    test_levels();
    return CHECK_DONE();
}
