/* test_packed_gemv_emu.c — the mode-3 kernels (kernels/packed_gemv.cu)
 * replayed on the host, thread by thread, with the kernels' own code
 * (kernels/packed_gemv_lane.h): every lane's loads with their addresses and
 * widths, the warp's staging of tier-2 codes in its shared memory (words,
 * kept across the codec blocks a warp decodes, as on the device), the two
 * warp prefix sums step for step as their shuffles run, the exponent
 * permutes and the 16-byte stores; the fused GEMV's grid (blocks to parts,
 * rows, segments, codec blocks, warps) and its product's reads of the tile;
 * decode_rows' grid; the embedding gather's grid (lrun_k_packed_embed: rows
 * by token id, as f32). Every tile against the CPU decoder, and no load or
 * store misaligned for its width or outside the packed tensor. Runs in
 * `make test` on any machine; the GPU itself is tested by
 * test_packed_gemv_gpu.c.
 *
 * Why: the first version passed a replay of the lane functions alone but
 * was wrong on the GPU: its tier-3 read was a macro whose argument (p++)
 * the kernel evaluated twice; only the replay called a function. Now the
 * replay and the kernel run the same functions. */
#include "check.h"
#include "model/random_fill.h"
#include "packed_gemv_lane.h"
#include "quant/quant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WARPS_MAX 8
#define DECODE_WARPS 8 /* LRUN_K_PG_DECODE_THREADS / 32 */

static int embed_ok = 1; /* every emu_case's embedding gather so far */

/* pg_scan: the shuffle steps of an exclusive prefix sum over 32 lanes. */
static void emu_scan(const uint64_t *v, uint64_t *ex, uint64_t *tot)
{
    uint64_t x[32], y[32];
    memcpy(x, v, sizeof x);
    for (unsigned d = 1; d < 32; d <<= 1) {
        for (unsigned l = 0; l < 32; l++) y[l] = l >= d ? x[l - d] : x[l]; /* __shfl_up_sync */
        for (unsigned l = 0; l < 32; l++)
            if (l >= d) x[l] += y[l];
    }
    for (unsigned l = 0; l < 32; l++) ex[l] = x[l] - v[l];
    *tot = x[31]; /* __shfl_sync(..., 31) */
}

static int stage_too_small; /* a block's staged words would not fit PG_STAGE2 */
static int big_tier3;       /* blocks with more tier-3 bytes than the stage holds */

/* pg_decode_block for one warp: the lanes' steps between the warp's
 * barriers, in the kernel's order. stage: the warp's (kept across calls).
 * The values go to dst, or as f32 to dst32 when it is not NULL (the
 * embedding gather's pg_emit). */
static void emu_decode_block(const pg_tensor *t, int bf16, uint64_t cb, uint64_t e0, uint64_t e1, uint16_t *dst,
                             float *dst32, uint8_t *stage)
{
    pg_lane L[32];
    pg_streams s[32];
    uint64_t cnt[32], p2[32], cnt3[32], p3[32], tot;
    uint32_t v2[32][4];
    for (unsigned l = 0; l < 32; l++) {
        pg_lane_load(&L[l], t, cb, e0, e1, l, bf16);
        s[l] = pg_block_streams(t, cb);
        pg_stage_fill(stage, t, &s[l], l);
        cnt[l] = pg_lane_escapes(&L[l]);
    }
    if ((s[0].nw + 2) * 4 > PG_STAGE2) stage_too_small++;
    {
        const uint8_t *tb = t->in + t->table + 16 * cb;
        uint64_t o3, o3n;
        memcpy(&o3, tb + 8, 8), memcpy(&o3n, tb + 24, 8);
        if (o3n - o3 > PG_STAGE3) big_tier3++;
    }
    emu_scan(cnt, p2, &tot);
    for (unsigned l = 0; l < 32; l++) p2[l] = pg_group_prefix(p2[l], tot);
    /* __syncwarp */
    for (unsigned l = 0; l < 32; l++) cnt3[l] = pg_lane_tier2(v2[l], (const uint32_t *)stage, s[l].sh, p2[l], cnt[l]);
    emu_scan(cnt3, p3, &tot);
    for (unsigned l = 0; l < 32; l++) {
        p3[l] = pg_group_prefix(p3[l], tot);
        if (dst32) pg_lane_emit_f32(&L[l], v2[l], p3[l], t, stage, &s[l], cb, e0, e1, l, bf16, dst32);
        else pg_lane_emit(&L[l], v2[l], p3[l], t, stage, &s[l], cb, e0, e1, l, bf16, dst);
    }
    /* __syncwarp */
}

/* A buffer at the device's alignment (16 bytes), size rounded up. */
static void *alloc16(size_t bytes) { return aligned_alloc(16, (bytes + 15) / 16 * 16); }

/* The fused GEMV's grid for a weight of rows x k (sw: as the gate and the
 * up of a pair, the same tensor twice) with nt threads a block: every
 * block's tile against the plain values, and its product's reads: each
 * live row's units read once, 16-byte aligned. */
static int emu_gemv(const pg_tensor *t, int bf16, const uint16_t *plain, int64_t rows, int64_t k, int sw, int nt)
{
    const int nw = nt / 32, rb = pg_rows_per_block(k, sw), rh = sw ? rb / 2 : rb, nseg = sw ? 2 : 1;
    int64_t b0[4], n[3] = {rows, rows, rows};
    const int64_t blocks = pg_grid(b0, n, sw ? 2 : 1, rh, sw);
    uint16_t *tile = alloc16((size_t)rb * (size_t)k * 2);
    uint8_t *stage = alloc16((size_t)WARPS_MAX * PG_STAGE); /* PG_STAGE is a multiple of 16 */
    unsigned char *seen = malloc((size_t)(k / 8));
    int ok = tile && stage && seen;
    if (ok) memset(stage, 0xa5, (size_t)WARPS_MAX * PG_STAGE); /* what the block before left */
    for (int64_t b = 0; ok && b < blocks; b++) {
        const pg_rows R = pg_block_rows(b0, n, b, k, rh);
        ok &= R.p == 0 && R.live >= 1 && R.live <= rh && R.row0 == b * rh;
        memset(tile, 0xff, (size_t)rb * (size_t)k * 2);
        for (int w = 0; w < nw; w++)
            for (int64_t i = w; i < nseg * R.nc; i += nw) {
                const int sg = i >= R.nc;
                emu_decode_block(t, bf16, R.cb0 + (uint64_t)(i - sg * R.nc), R.e0, R.e1, tile + (size_t)sg * rh * k,
                                 NULL, stage + (size_t)w * PG_STAGE);
            }
        for (int sg = 0; sg < nseg; sg++)
            ok &= !memcmp(tile + (size_t)sg * rh * k, plain + R.e0, (size_t)(R.e1 - R.e0) * 2);
        /* the product: row r, thread th, units th, th + nt, ... (uint4 reads) */
        for (int r = 0; ok && r < rb; r++) {
            const int rr = sw && r >= rh ? r - rh : r;
            if (rr >= R.live) continue;
            memset(seen, 0, (size_t)(k / 8));
            for (int th = 0; th < nt; th++)
                for (int64_t u = th; u < k / 8; u += nt) {
                    const uint16_t *q = tile + (size_t)r * k + 8 * u;
                    if ((uintptr_t)q % 16) pg_emu_misaligned++;
                    seen[u]++;
                }
            for (int64_t u = 0; u < k / 8; u++) ok &= seen[u] == 1;
        }
    }
    free(tile), free(stage), free(seen);
    return ok;
}

/* decode_rows of rows [r0, r0 + nr): warp w of block bi decodes codec block
 * cb0 + 8 bi + w (a warp past the rows returns). */
static int emu_decode_rows(const pg_tensor *t, int bf16, const uint16_t *plain, int64_t k, int64_t r0, int64_t nr)
{
    const uint64_t e0 = (uint64_t)(r0 * k), e1 = e0 + (uint64_t)(nr * k);
    const uint64_t cb0 = e0 / PG_BLOCK, cb_end = (e1 - 1) / PG_BLOCK + 1;
    const uint64_t grid = (cb_end - cb0 + DECODE_WARPS - 1) / DECODE_WARPS;
    uint16_t *d = alloc16((size_t)(nr * k) * 2);
    uint8_t *stage = alloc16((size_t)DECODE_WARPS * PG_STAGE);
    int ok = d && stage;
    if (ok) memset(stage, 0xa5, (size_t)DECODE_WARPS * PG_STAGE), memset(d, 0xff, (size_t)(nr * k) * 2);
    for (uint64_t bi = 0; ok && bi < grid; bi++)
        for (unsigned w = 0; w < DECODE_WARPS; w++) {
            const uint64_t cb = cb0 + bi * DECODE_WARPS + w;
            if (cb * PG_BLOCK >= e1) continue;
            emu_decode_block(t, bf16, cb, e0, e1, d, NULL, stage + (size_t)w * PG_STAGE);
        }
    ok = ok && !memcmp(d, plain + e0, (size_t)(e1 - e0) * 2);
    free(d), free(stage);
    return ok;
}

/* lrun_k_packed_embed's grid for the token ids of a chunk (valid ones in
 * every position of the table, repeats, and two outside it): warp w of
 * block bi is warp 8 bi + w of the gather, token w / nw, the (w % nw)-th
 * codec block of its row (pg_embed_job_of). Every row as the plain table's
 * row widened to f32 as lrun_k_embed does (zeros for the outside ids), to
 * the bit, and nothing stored past the chunk's rows. */
static int emu_embed(const pg_tensor *t, int bf16, const uint16_t *plain, int64_t rows, int64_t k)
{
    const int32_t r = (int32_t)rows;
    const int32_t ids[] = {r - 1, 0, r / 2, r / 3, -1, r, r / 2, r > 1 ? 1 : 0, r - 1};
    const int64_t n_tok = (int64_t)(sizeof ids / sizeof ids[0]), nw = pg_embed_warps(k), guard = 64;
    const int64_t warps = n_tok * nw, grid = (warps + DECODE_WARPS - 1) / DECODE_WARPS;
    float *out = alloc16((size_t)(n_tok * k + guard) * 4);
    uint8_t *stage = alloc16((size_t)DECODE_WARPS * PG_STAGE);
    int ok = out && stage;
    if (ok) memset(stage, 0xa5, (size_t)DECODE_WARPS * PG_STAGE), memset(out, 0xff, (size_t)(n_tok * k + guard) * 4);
    for (int64_t bi = 0; ok && bi < grid; bi++)
        for (int w8 = 0; w8 < DECODE_WARPS; w8++) {
            const int64_t w = bi * DECODE_WARPS + w8;
            if (w >= warps) continue;
            const int64_t tok = w / nw;
            const int j = (int)(w % nw);
            const pg_embed_job J = pg_embed_job_of(ids[tok], j, rows, k);
            float *row = out + tok * k;
            if (!J.valid) {
                for (unsigned l = 0; l < 32; l++) pg_lane_zero_f32(row, j, k, l);
            } else if (J.live) {
                emu_decode_block(t, bf16, J.cb, J.e0, J.e1, NULL, row, stage + (size_t)w8 * PG_STAGE);
            }
        }
    for (int64_t i = 0; ok && i < n_tok; i++)
        for (int64_t c = 0; c < k; c++) {
            const int valid = ids[i] >= 0 && ids[i] < rows;
            const uint16_t h = valid ? plain[(int64_t)ids[i] * k + c] : 0;
            const float want = !valid ? 0.0f : bf16 ? lrun_bf16_to_f32(h) : lrun_f16_to_f32(h);
            ok &= !memcmp(&out[i * k + c], &want, 4);
        }
    for (int64_t g = 0; ok && g < guard; g++) {
        uint32_t u;
        memcpy(&u, &out[n_tok * k + g], 4);
        ok &= u == 0xffffffffu;
    }
    free(out), free(stage);
    return ok;
}

/* Packs rows x k values into a 16-byte aligned buffer, then replays the
 * fused GEMV (8 and 4 warps, a gate/up pair) and decode_rows (all rows, a
 * range). */
static int emu_case(int dtype, const uint16_t *v, int64_t rows, int64_t k)
{
    const uint64_t n = (uint64_t)(rows * k);
    size_t cap = lrun_packed_bound(dtype, n), bytes = 0;
    uint8_t *p = alloc16(cap);
    lrun_packed_layout lay;
    int ok = p && lrun_packed_encode(p, cap, &bytes, dtype, v, n, NULL) == LRUN_OK &&
             lrun_packed_validate(&lay, p, bytes, "emu") == LRUN_OK;
    if (ok) {
        const pg_tensor t = pg_tensor_of(p, &lay);
        const int bf16 = dtype == LRUN_DTYPE_BF16;
        pg_emu_lo = p, pg_emu_hi = p + bytes;
        const int64_t r0 = rows / 3, nr = rows - r0 > 5 ? 5 : rows - r0;
        ok = emu_gemv(&t, bf16, v, rows, k, 0, 256) && emu_gemv(&t, bf16, v, rows, k, 1, 256) &&
             emu_gemv(&t, bf16, v, rows, k, 0, 128) && emu_decode_rows(&t, bf16, v, k, 0, rows) &&
             emu_decode_rows(&t, bf16, v, k, r0, nr);
        if (!ok)
            printf("# %lld x %lld (%s): a tile or decoded range differs from the values\n", (long long)rows,
                   (long long)k, lrun_dtype_name(dtype));
        embed_ok &= emu_embed(&t, bf16, v, rows, k);
        if (!embed_ok)
            printf("# %lld x %lld (%s): gathered embedding rows differ\n", (long long)rows, (long long)k,
                   lrun_dtype_name(dtype));
        pg_emu_lo = pg_emu_hi = NULL;
    }
    free(p);
    return ok;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* pg_embed_warps(k): the most codec blocks a row of k touches, over every
 * row of a table of 4096 rows (rows start at multiples of k). */
static int embed_warps_ok(void)
{
    int ok = 1;
    for (int64_t k = 8; k <= 20000; k += k < 2100 ? 8 : 776) {
        int64_t most = 0;
        for (int64_t r = 0; r < 4096; r++) {
            const int64_t e0 = r * k, nb = (e0 + k - 1) / PG_BLOCK - e0 / PG_BLOCK + 1;
            if (nb > most) most = nb;
        }
        ok &= pg_embed_warps(k) == most;
    }
    return ok;
}

/* The bit helpers on their own, against their definitions. */
static void helpers(void)
{
    int ok = 1;
    for (int i = 0; i < 20000; i++) {
        const uint32_t c = rnd() & 0xffff, v = rnd() & 0xffffff;
        uint32_t a = 0, b = 0;
        for (int j = 0; j < 8; j++) a |= ((c >> (2 * j)) & 3u) << (4 * j), b |= ((v >> (3 * j)) & 7u) << (4 * j);
        ok &= pg_spread(c) == a && pg_spread3(v) == b;
    }
    CHECK("pg_spread and pg_spread3: code j to nibble j", ok);
    CHECK("pg_embed_warps(k): the most codec blocks one row of k touches", embed_warps_ok());
}

int main(void)
{
    helpers();
    static const int64_t shapes[][2] = {{64, 4096}, {37, 11008}, {11, 24},  {3, 776},   {1, 8},   {5, 1000},
                                        {129, 4104}, {7, 2048}, {2, 12296}, {1, 30000}, {7, 12296}};
    const int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
    const size_t most = 64 * 4096 > 37 * 11008 ? 64 * 4096 : 37 * 11008;
    uint16_t *v = malloc(most * 2);
    if (!v) return 1;
    char label[128];
    for (int ty = 0; ty < 2; ty++) {
        const int dtype = ty ? LRUN_DTYPE_F16 : LRUN_DTYPE_BF16;
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
        CHECK(label, emu_case(dtype, v, 37, 11008) && emu_case(dtype, v, 13, 776) && emu_case(dtype, v, 300, 64));
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
    printf("# loads/stores misaligned for their width: %d; outside the packed tensor: %d\n", pg_emu_misaligned,
           pg_emu_oob);
    CHECK("embedding gather (lrun_k_packed_embed's grid): every chunk row the table row as f32, bit for bit; "
          "zeros for ids outside it; nothing past the rows",
          embed_ok);
    CHECK("every load and store aligned for its width (on a 16-byte aligned tensor and tile)", pg_emu_misaligned == 0);
    CHECK("no load outside the packed tensor", pg_emu_oob == 0);
    CHECK("no byte-permute selector asks for sign replication (bit 3 of a nibble)", pg_emu_signsel == 0);
    CHECK("a block's staged tier-2 words and zero words fit the stage", stage_too_small == 0);
    printf("# blocks with more tier-3 bytes than the %d staged: %d\n", PG_STAGE3, big_tier3);
    CHECK("adversarial blocks read tier-3 bytes past the stage (that path is exercised)", big_tier3 > 0);
    free(v);
    return CHECK_DONE();
}
