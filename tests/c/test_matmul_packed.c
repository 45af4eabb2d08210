/* test_matmul_packed.c — lrun_cpu_matmul_packed (a packed weight decoded a
 * tile of rows at a time before its product) equals lrun_cpu_matmul on the
 * decoded weight, bit for bit: PEX1 (bf16, f16) and PEX2 (bf16) tensors of
 * trained-like values with outliers (exceptions in every codec block) and a
 * few NaN, infinities and subnormals; rows of 96 to 40000 elements (a row
 * longer than a tile, rows crossing codec blocks), decode (m = 1) and prompts
 * of 3, 64 and 70 rows, 1, 2, 3 and 5 threads, at every host kernel level
 * the CPU has. */
#include "check.h"
#include "cpu/cpu_matmul.h"
#include "cpu/cpu_matmul_packed.h"
#include "packed/codec.h"
#include "packed/codec_pex2.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static double unit(void) /* U(0, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(void) { return (float)(sqrt(-2.0 * log(unit())) * cos(6.283185307179586 * unit())); }

static uint16_t to_16(float f, lrun_dtype t)
{
    if (t == LRUN_DTYPE_F16) return lrun_f32_to_f16(f);
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* n rows of k values like a trained matrix: a scale per row, 1% outliers at
 * 8x, and a few special values; far (not 0) scales 3% of them by 2^-30 ..
 * 2^29, exponents outside both PEX2 codebooks in every block. */
static void fill(uint16_t *w, int64_t n, int64_t k, lrun_dtype t, int far)
{
    for (int64_t r = 0; r < n; r++) {
        const float scale = 0.02f * (float)(1 + r % 3);
        for (int64_t j = 0; j < k; j++) {
            float v = gauss() * scale * (unit() < 0.01 ? 8.0f : 1.0f);
            if (far && unit() < 0.03) v = ldexpf(v, (int)(unit() * 60.0) - 30);
            w[r * k + j] = to_16(v, t);
        }
    }
    const uint16_t special[] = {t == LRUN_DTYPE_F16 ? 0x7c00 : 0x7f80, t == LRUN_DTYPE_F16 ? 0x7e01 : 0x7fc1, 0x0001,
                                0x8000};
    if (n * k > 1000)
        for (int i = 0; i < 4; i++) w[(int64_t)(unit() * (double)(n * k))] = special[i];
}

/* The weight packed with codec (1 PEX1, 2 PEX2) and validated: its bytes (caller frees), *lay. */
static void *pack(const uint16_t *w, uint64_t n, lrun_dtype t, int codec, lrun_packed_layout *lay)
{
    const size_t cap = codec == 2 ? lrun_pex2_bound(n) : lrun_packed_bound(t, n);
    void *p = malloc(cap);
    size_t bytes = 0;
    const lrun_status st =
        codec == 2 ? lrun_pex2_encode(p, cap, &bytes, w, n, NULL) : lrun_packed_encode(p, cap, &bytes, t, w, n, NULL);
    if (st != LRUN_OK || lrun_packed_validate(lay, p, bytes, "test") != LRUN_OK || lay->codec != codec) {
        free(p);
        return NULL;
    }
    return p;
}

struct shape {
    int64_t n, k;
    int far; /* values with far exponents in every block (fill) */
};

static void check_case(lrun_dtype t, int codec, struct shape s, lrun_threadpool **pools, int n_pools)
{
    const int64_t n = s.n, k = s.k, ms[] = {1, 3, 64, 70};
    uint16_t *w = malloc(sizeof *w * (size_t)(n * k)), *plain = malloc(sizeof *w * (size_t)(n * k));
    float *x = malloc(sizeof(float) * (size_t)(70 * k));
    float *ref = malloc(sizeof(float) * (size_t)(70 * n)), *got = malloc(sizeof(float) * (size_t)(70 * n));
    fill(w, n, k, t, s.far);
    for (int64_t j = 0; j < 70 * k; j++) x[j] = gauss();
    lrun_packed_layout lay;
    void *p = pack(w, (uint64_t)(n * k), t, codec, &lay);
    char name[160];
    snprintf(name, sizeof name, "%s %s %lld x %lld%s: packed and validated", codec == 2 ? "PEX2" : "PEX1",
             t == LRUN_DTYPE_F16 ? "f16" : "bf16", (long long)n, (long long)k, s.far ? " (far exponents)" : "");
    CHECK(name, p != NULL);
    if (p) lrun_packed_decode_range(plain, p, &lay, 0, (uint64_t)(n * k));
    int bad = 0, runs = 0;
    for (int isa = LRUN_CPU_ISA_SCALAR; p && isa <= LRUN_CPU_ISA_AVX512; isa++) {
        if (lrun_cpu_isa_set((lrun_cpu_isa)isa) != LRUN_OK) continue;
        for (int pi = 0; pi < n_pools; pi++) {
            const size_t wb = lrun_cpu_matmul_packed_work_bytes(k, lrun_threadpool_size(pools[pi]));
            void *work = aligned_alloc(64, wb);
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                const int64_t m = ms[mi];
                lrun_cpu_matmul(pools[pi], t, plain, (size_t)k * 2, n, k, x, m, ref, NULL);
                memset(got, 0x55, sizeof(float) * (size_t)(m * n));
                lrun_cpu_matmul_packed(pools[pi], p, &lay, n, k, x, m, got, work);
                bad += memcmp(ref, got, sizeof(float) * (size_t)(m * n)) != 0;
                runs++;
            }
            free(work);
        }
    }
    snprintf(name, sizeof name, "%s %s %lld x %lld%s: the same bits as the decoded weight's product (%d runs)",
             codec == 2 ? "PEX2" : "PEX1", t == LRUN_DTYPE_F16 ? "f16" : "bf16", (long long)n, (long long)k,
             s.far ? " (far exponents)" : "", runs);
    CHECK(name, p && runs > 0 && bad == 0);
    free(p), free(w), free(plain), free(x), free(ref), free(got);
}

int main(void)
{
    const int threads[] = {1, 2, 3, 5};
    lrun_threadpool *pools[4] = {0};
    int n_pools = 0;
    for (int i = 0; i < 4; i++)
        if (lrun_threadpool_init(&pools[n_pools], threads[i]) == LRUN_OK) n_pools++;
    CHECK("thread pools", n_pools == 4);
    const lrun_cpu_isa was = lrun_cpu_isa_get();
    /* 96: many rows a tile; 1000: rows crossing codec blocks of 1024; 40000: a row longer than a tile;
     * 576 and 4096, multiples of 64: PEX2's decode products in registers at the avx512 level
     * (lrun_pex2_gemv_avx512), once with far exponents in every block */
    const struct shape shapes[] = {{83, 96, 0},  {131, 1000, 0}, {5, 40000, 0},
                                   {77, 576, 0}, {40, 4096, 0},  {77, 576, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        check_case(LRUN_DTYPE_BF16, 2, shapes[s], pools, n_pools);
        check_case(LRUN_DTYPE_BF16, 1, shapes[s], pools, n_pools);
        check_case(LRUN_DTYPE_F16, 1, shapes[s], pools, n_pools);
    }
    (void)lrun_cpu_isa_set(was);

    /* work sized for the longest row of two weights holds the other's tiles too: 2048 fills 128 KiB with 32
     * rows, 5632 only 123904 bytes with 11 (the CPU engine sizes its tiles so: weight_ring.c); a canary after */
    {
        const int64_t n = 300, k = 2048;
        uint16_t *w = malloc(sizeof *w * (size_t)(n * k));
        float *x = malloc(sizeof(float) * (size_t)k), *y = malloc(sizeof(float) * (size_t)n);
        fill(w, n, k, LRUN_DTYPE_BF16, 0);
        for (int64_t j = 0; j < k; j++) x[j] = gauss();
        lrun_packed_layout pk;
        void *p = pack(w, (uint64_t)(n * k), LRUN_DTYPE_BF16, 2, &pk);
        const int nth = lrun_threadpool_size(pools[3]);
        const size_t wb = lrun_cpu_matmul_packed_work_bytes(5632, nth);
        unsigned char *work = aligned_alloc(64, wb + 64);
        memset(work + wb, 0xA5, 64);
        if (p) lrun_cpu_matmul_packed(pools[3], p, &pk, n, k, x, 1, y, work);
        int intact = 1;
        for (int i = 0; i < 64; i++) intact &= work[wb + i] == 0xA5;
        CHECK("work sized for a longer row holds a shorter row's tiles",
              p && intact && wb >= lrun_cpu_matmul_packed_work_bytes(k, nth));
        free(p), free(w), free(x), free(y), free(work);
    }

    /* lrun_pex2_gemv_avx512 on ranges starting mid-block (lrun_cpu_matmul_packed's chunks of 16 rows of a
     * multiple of 64 start on blocks): every row range of a 576-wide weight with far exponents in every block
     * (the far bytes of the block before the range's first row are counted), 130 rows: 74 blocks, so ranges
     * start and run on in PEX2's second superblock, against the plain rows */
#if defined(LRUN_HAVE_AVX512)
    if (lrun_pex2_gemv_fits(576) && lrun_pex2_avx512_supported() &&
        lrun_cpu_isa_set(LRUN_CPU_ISA_AVX512) == LRUN_OK) {
        const int64_t n = 130, k = 576;
        uint16_t *w = malloc(sizeof *w * (size_t)(n * k)), *plain = malloc(sizeof *w * (size_t)(n * k));
        float *x = malloc(sizeof(float) * (size_t)k), *ref = malloc(sizeof(float) * (size_t)n),
              *got = malloc(sizeof(float) * (size_t)n);
        fill(w, n, k, LRUN_DTYPE_BF16, 1);
        for (int64_t j = 0; j < k; j++) x[j] = gauss();
        lrun_packed_layout pk;
        void *p = pack(w, (uint64_t)(n * k), LRUN_DTYPE_BF16, 2, &pk);
        int bad = !p, ranges = 0;
        if (p) {
            lrun_packed_decode_range(plain, p, &pk, 0, (uint64_t)(n * k));
            lrun_cpu_matmul(pools[0], LRUN_DTYPE_BF16, plain, (size_t)k * 2, n, k, x, 1, ref, NULL);
            for (int64_t r0 = 0; r0 < n; r0++)
                for (int64_t r1 = r0 + 1; r1 <= n; r1 += 7, ranges++) {
                    memset(got, 0x55, sizeof(float) * (size_t)n);
                    lrun_pex2_gemv_avx512(p, &pk.pex2, k, r0, r1 - r0, x, got + r0);
                    bad += memcmp(ref + r0, got + r0, sizeof(float) * (size_t)(r1 - r0)) != 0;
                }
        }
        char name[160];
        snprintf(name, sizeof name, "PEX2 products in registers from any row on: the plain rows' bits (%d ranges)",
                 ranges);
        CHECK(name, bad == 0 && ranges > 0);
        free(p), free(w), free(plain), free(x), free(ref), free(got);
        (void)lrun_cpu_isa_set(was);
    }
#endif

    /* an empty product (k = 0) writes zeros, as lrun_cpu_matmul does */
    lrun_packed_layout lay = {.dtype = LRUN_DTYPE_BF16};
    float y[6] = {1, 2, 3, 4, 5, 6};
    lrun_cpu_matmul_packed(pools[0], NULL, &lay, 3, 0, NULL, 2, y, NULL);
    CHECK("k = 0 gives zeros", y[0] == 0 && y[5] == 0);
    for (int i = 0; i < n_pools; i++) lrun_threadpool_free(pools[i]);
    return CHECK_DONE();
}
