/* test_packed_gemv_emu.c — the mode-3 kernels' decode (kernels/packed_gemv.cu)
 * emulated on the host, lane by lane, with the very bit functions the GPU
 * runs (kernels/packed_gemv_lane.h): every warp's loads, prefix sums, tier-2
 * staging and assembly, and the fused GEMV's mapping of blocks to rows,
 * segments and codec blocks, checked against the CPU decoder on shapes whose
 * rows straddle codec blocks, tiny and odd shapes, gate/up pairs and
 * adversarial exponents. Runs in `make test` on any machine; the GPU itself
 * is tested by test_packed_gemv_gpu.c. */
#include "check.h"
#include "model/random_fill.h"
#include "packed/codec.h"
#include "packed_gemv_lane.h"
#include "quant/quant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 1024
#define STAGE2 400 /* LRUN_K_PG_STAGE2 */
#define STAGE3 128 /* LRUN_K_PG_STAGE3 */
#define STAGE (STAGE2 + STAGE3)
#define TILE 24576 /* LRUN_K_PG_TILE */
#define MAX_RB 8   /* LRUN_K_PG_MAX_RB */

static int stage_overreads; /* tier-2 words read past the staged (zero-filled) bytes */

static uint64_t ld_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

/* the block's tier-3 bytes: the first STAGE3 staged, the rest from the tensor (PG_ESC) */
static const uint8_t *emu_esc_base, *emu_stage3;
static uint32_t emu_len3;
static int esc_global; /* tier-3 bytes read past the staged ones */
static uint32_t emu_esc(uint32_t i)
{
    if (i < emu_len3) return emu_stage3[i];
    esc_global++;
    return emu_esc_base[i];
}
#define EMU_ESC(i) emu_esc(i)

/* pg_decode_block for one warp: lanes and groups as loops, the warp's
 * shuffles as sequential prefix sums. */
static void emu_decode_block(const uint8_t *in, const lrun_packed_layout *lay, uint64_t cb, uint64_t e0, uint64_t e1,
                             uint16_t *dst)
{
    const int bf16 = lay->dtype == LRUN_DTYPE_BF16;
    uint32_t book1 = 0, b2lo = 0, b2hi = 0;
    for (int k = 0; k < 3; k++) book1 |= (uint32_t)lay->book1[k] << (8 * k);
    for (int k = 0; k < 7; k++) {
        if (k < 4) b2lo |= (uint32_t)lay->book2[k] << (8 * k);
        else b2hi |= (uint32_t)lay->book2[k] << (8 * (k - 4));
    }
    uint32_t c1[32][4], hb[32][4], rs[32][4][2];
    uint64_t cnt[32], cnt3[32], p2[32], p3[32], tot = 0, tot3 = 0;
    for (int l = 0; l < 32; l++) {
        cnt[l] = 0;
        for (int g = 0; g < 4; g++) {
            const uint64_t e = cb * BLOCK + 8 * (uint64_t)l + 256 * (uint64_t)g;
            c1[l][g] = hb[l][g] = rs[l][g][0] = rs[l][g][1] = 0;
            if (e < e1) c1[l][g] = (uint32_t)ld_le(in + lay->code1 + e / 4, 2);
            if (e >= e0 && e < e1) {
                rs[l][g][0] = (uint32_t)ld_le(in + lay->rest + e, 4);
                rs[l][g][1] = (uint32_t)ld_le(in + lay->rest + e + 4, 4);
                if (!bf16) hb[l][g] = (uint32_t)ld_le(in + lay->hi + e / 8 * 3, 3);
            }
            cnt[l] |= (uint64_t)pg_popc(pg_esc_mask(c1[l][g])) << (16 * g);
        }
    }
    const uint64_t o2 = ld_le(in + lay->table + 16 * cb, 8), o3 = ld_le(in + lay->table + 16 * cb + 8, 8);
    const uint64_t o2n = ld_le(in + lay->table + 16 * cb + 16, 8), o3n = ld_le(in + lay->table + 16 * cb + 24, 8);
    const uint32_t len2 = o2n - o2 < 384 ? (uint32_t)(o2n - o2) : 384u;
    const uint32_t len3 = o3n - o3 < STAGE3 ? (uint32_t)(o3n - o3) : STAGE3;
    const uint32_t fill = (len2 & ~3u) + 8;
    uint32_t words[STAGE / 4];
    uint8_t *stage = (uint8_t *)words, *stage3 = stage + STAGE2;
    memset(stage, 0xa5, STAGE); /* what a previous block left */
    for (uint32_t j = 0; j < fill; j++) stage[j] = j < len2 ? in[lay->code2 + o2 + j] : 0;
    for (uint32_t j = 0; j < len3; j++) stage3[j] = in[lay->esc + o3 + j];
    emu_stage3 = stage3, emu_len3 = len3, emu_esc_base = in + lay->esc + o3;
    for (int l = 0; l < 32; l++) tot += cnt[l];
    for (uint64_t s = 0, l = 0; l < 32; s += cnt[l], l++) p2[l] = s + (tot << 16) + (tot << 32) + (tot << 48);
    uint32_t v2[32][4];
    for (int l = 0; l < 32; l++) {
        cnt3[l] = 0;
        for (int g = 0; g < 4; g++) {
            const uint32_t p = (uint32_t)(p2[l] >> (16 * g)) & 0xffffu, ng = (uint32_t)(cnt[l] >> (16 * g)) & 0xffffu;
            if (((3 * p) >> 5) + 1 >= fill / 4 || fill > STAGE2) stage_overreads++;
            v2[l][g] = pg_tier2(words, p, ng);
            cnt3[l] |= (uint64_t)pg_count7(v2[l][g]) << (16 * g);
        }
    }
    for (int l = 0; l < 32; l++) tot3 += cnt3[l];
    for (uint64_t s = 0, l = 0; l < 32; s += cnt3[l], l++) p3[l] = s + (tot3 << 16) + (tot3 << 32) + (tot3 << 48);
    for (int l = 0; l < 32; l++)
        for (int g = 0; g < 4; g++) {
            const uint64_t e = cb * BLOCK + 8 * (uint64_t)l + 256 * (uint64_t)g;
            if (e < e0 || e >= e1) continue;
            uint32_t ex[2], out[4];
            PG_EXPONENTS(ex, c1[l][g], book1, b2lo, b2hi, v2[l][g], (uint32_t)(p3[l] >> (16 * g)) & 0xffffu, EMU_ESC);
            pg_assemble(out, bf16, rs[l][g], ex, hb[l][g]);
            for (int i = 0; i < 4; i++) {
                dst[e - e0 + 2 * i] = (uint16_t)(out[i] & 0xffff);
                dst[e - e0 + 2 * i + 1] = (uint16_t)(out[i] >> 16);
            }
        }
}

/* pg_rows_per_block */
static int rows_per_block(int64_t k, int sw)
{
    int rb = 1;
    while (rb < MAX_RB && 2 * rb * k <= TILE) rb *= 2;
    return sw && rb < 2 ? 2 : rb;
}

/* The fused GEMV's decode stage for every block of a weight of rows x k
 * (sw: as the gate and the up of a pair, the same tensor twice), warps
 * NW: each block's tile must hold its rows. */
static int emu_tiles(const uint8_t *in, const lrun_packed_layout *lay, const uint16_t *plain, int64_t rows, int64_t k,
                     int sw, int nw)
{
    const int rb = rows_per_block(k, sw), rh = sw ? rb / 2 : rb, nseg = sw ? 2 : 1;
    const int64_t blocks = (rows + rh - 1) / rh;
    uint16_t *tile = malloc((size_t)rb * (size_t)k * 2);
    int ok = tile != NULL;
    for (int64_t b = 0; ok && b < blocks; b++) {
        const int64_t row0 = b * rh, live = rows - row0 < rh ? rows - row0 : rh;
        const uint64_t e0 = (uint64_t)(row0 * k), e1 = (uint64_t)((row0 + live) * k);
        const int64_t nc = (int64_t)((e1 - 1) / BLOCK - e0 / BLOCK + 1);
        memset(tile, 0xff, (size_t)rb * (size_t)k * 2);
        for (int w = 0; w < nw; w++)
            for (int64_t i = w; i < nseg * nc; i += nw) {
                const int s = i >= nc;
                const uint64_t cb = e0 / BLOCK + (uint64_t)(i - s * nc);
                emu_decode_block(in, lay, cb, e0, e1, tile + (size_t)s * rh * k);
            }
        for (int s = 0; s < nseg; s++) ok &= !memcmp(tile + (size_t)s * rh * k, plain + e0, (size_t)(e1 - e0) * 2);
    }
    free(tile);
    return ok;
}

/* Packs rows x k values, then checks the tiles (both modes, 8 and 4 warps)
 * and a decode of rows [r0, r0 + nr) as lrun_k_packed_decode_rows does it. */
static int emu_case(int dtype, const uint16_t *v, int64_t rows, int64_t k)
{
    const uint64_t n = (uint64_t)(rows * k);
    size_t cap = lrun_packed_bound(dtype, n), bytes = 0;
    uint8_t *p = malloc(cap);
    lrun_packed_layout lay;
    int ok = p && lrun_packed_encode(p, cap, &bytes, dtype, v, n, NULL) == LRUN_OK &&
             lrun_packed_validate(&lay, p, bytes, "emu") == LRUN_OK;
    ok = ok && emu_tiles(p, &lay, v, rows, k, 0, 8) && emu_tiles(p, &lay, v, rows, k, 1, 8) &&
         emu_tiles(p, &lay, v, rows, k, 0, 4);
    const int64_t r0 = rows / 3, nr = rows - r0 > 5 ? 5 : rows - r0;
    uint16_t *d = malloc((size_t)(nr * k + 8) * 2);
    if (ok && d && nr > 0) { /* the decode_rows kernel: warp w of block b takes codec block cb0 + 8b + w */
        const uint64_t e0 = (uint64_t)(r0 * k), e1 = e0 + (uint64_t)(nr * k);
        for (uint64_t cb = e0 / BLOCK; cb * BLOCK < e1; cb++) emu_decode_block(p, &lay, cb, e0, e1, d);
        ok &= !memcmp(d, v + e0, (size_t)(e1 - e0) * 2);
    }
    if (!ok)
        printf("# %lld x %lld (%s): %s\n", (long long)rows, (long long)k, lrun_dtype_name(dtype), lrun_last_error());
    free(d), free(p);
    return ok;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

int main(void)
{
    static const int64_t shapes[][2] = {{64, 4096}, {37, 11008}, {11, 24},  {3, 776},   {1, 8},
                                        {5, 1000},  {129, 4104}, {7, 2048}, {2, 12296}, {1, 30000}};
    const int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
    const size_t most = 64 * 4096 > 37 * 11008 ? 64 * 4096 : 37 * 11008;
    uint16_t *v = malloc(most * 2);
    if (!v) return 1;
    char label[128];
    for (int t = 0; t < 2; t++) {
        const int dtype = t ? LRUN_DTYPE_F16 : LRUN_DTYPE_BF16;
        int ok = 1;
        for (int s = 0; s < n_shapes; s++) {
            const int64_t n = shapes[s][0] * shapes[s][1];
            const int64_t whole = (n + 255) / 256 * 256; /* the generator fills whole blocks */
            uint16_t *w = malloc((size_t)whole * 2);
            ok &= w && lrun_random_fill_trained((lrun_dtype)dtype, w, 0, whole, 0.02f, 7 + (uint64_t)s) == LRUN_OK &&
                  emu_case(dtype, w, shapes[s][0], shapes[s][1]);
            free(w);
        }
        snprintf(label, sizeof label, "%s: trained-like, rows straddling codec blocks, tiny and odd shapes",
                 lrun_dtype_name((lrun_dtype)dtype));
        CHECK(label, ok);

        /* adversarial: exponents spread over 40 values (most in tier 3), and every bit pattern */
        for (size_t i = 0; i < 37 * 11008; i++) {
            const uint32_t r = rnd(), e = dtype == LRUN_DTYPE_BF16 ? 100 + r % 40 : 1 + r % 30;
            v[i] = dtype == LRUN_DTYPE_BF16 ? (uint16_t)(((r >> 8) & 0x807f) | (e << 7))
                                            : (uint16_t)(((r >> 8) & 0x83ff) | (e << 10));
        }
        snprintf(label, sizeof label, "%s: exponents over 40 values (tier 3 everywhere)",
                 lrun_dtype_name((lrun_dtype)dtype));
        CHECK(label, emu_case(dtype, v, 37, 11008) && emu_case(dtype, v, 13, 776));
        for (uint32_t i = 0; i < 65536; i++) v[i] = (uint16_t)i;
        snprintf(label, sizeof label, "%s: every bit pattern, 16 x 4096 and 64 x 1024",
                 lrun_dtype_name((lrun_dtype)dtype));
        CHECK(label, emu_case(dtype, v, 16, 4096) && emu_case(dtype, v, 64, 1024));
        for (size_t i = 0; i < 8192; i++) v[i] = (uint16_t)(dtype == LRUN_DTYPE_BF16 ? 0x3f80 : 0x3c00);
        for (size_t i = 0; i < 8192; i += 97) v[i] = (uint16_t)(dtype == LRUN_DTYPE_BF16 ? 0x4f80 : 0x7800);
        snprintf(label, sizeof label, "%s: one exponent with rare others (empty tier-2 streams)",
                 lrun_dtype_name((lrun_dtype)dtype));
        CHECK(label, emu_case(dtype, v, 8, 1024) && emu_case(dtype, v, 3, 2728));
    }
    CHECK("no tier-2 word is read past the staged bytes", stage_overreads == 0);
    printf("# tier-3 bytes read from the tensor past the %d staged: %d\n", STAGE3, esc_global);
    CHECK("adversarial blocks read tier-3 bytes past the stage (that path is exercised)", esc_global > 0);
    free(v);
    return CHECK_DONE();
}
