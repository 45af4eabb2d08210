/* test_packed_pex2_emu.c — the PEX2 kernels (kernels/packed_pex2.cu)
 * replayed on the host, lane by lane, with the kernels' own code
 * (kernels/packed_pex2_lane.h): each lane's loads with their addresses and
 * widths, its decode and stores, then the warp's patch passes with the
 * ballot that counts far exceptions, in the order px_decode_block runs
 * them; over the grids of lrun_k_pex2_decode (any range, any dst offset),
 * the fused GEMV's tile (pg_block_rows' blocks, segments and codec blocks,
 * a gate/up pair too) and the embedding gather (rows by token id, as f32).
 * Every result against the plain values, and no load misaligned for its
 * width or outside the packed tensor, no store misaligned, no permute
 * selector with a sign-replication bit. Runs in `make test` on any machine;
 * the GPU itself is tested by test_packed_gemv_gpu.c. */
#include "check.h"
#include "model/random_fill.h"
#include "packed_gemv_lane.h" /* the grids shared with PEX1: pg_block_rows, pg_embed_job_of, ... */
#include "packed_pex2_lane.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* One PEX2 tensor: its plain values, its bytes in a buffer of exactly their
 * size (16-byte aligned, so any read past them is one the replay counts),
 * and the kernels' view. */
typedef struct {
    uint64_t n;
    uint16_t *plain;
    uint8_t *bytes;
    size_t size;
    lrun_packed_layout lay;
    px_tensor t;
} tensor;

/* kind 0: trained-like; 1: exponents over 40 values; 2: random bits (most exceptions far). */
static int tensor_make(tensor *T, uint64_t n, int kind, uint64_t seed)
{
    memset(T, 0, sizeof *T);
    T->n = n;
    T->plain = malloc(n * 2);
    const size_t cap = lrun_pex2_bound(n);
    uint8_t *tmp = malloc(cap);
    if (!T->plain || !tmp) return 0;
    if (kind == 0) lrun_random_fill_trained(LRUN_DTYPE_BF16, T->plain, 0, (int64_t)n, 0.02f, seed);
    for (uint64_t i = 0; kind && i < n; i++) {
        const uint32_t r = rnd();
        T->plain[i] = kind == 2 ? (uint16_t)r : (uint16_t)(((r >> 8) & 0x807f) | ((100 + r % 40) << 7));
    }
    int ok = lrun_pex2_encode(tmp, cap, &T->size, T->plain, n, NULL) == LRUN_OK;
    T->bytes = ok ? aligned_alloc(16, T->size) : NULL;
    ok = ok && T->bytes;
    if (ok) memcpy(T->bytes, tmp, T->size);
    free(tmp);
    ok = ok && lrun_packed_validate(&T->lay, T->bytes, T->size, "emu") == LRUN_OK &&
         T->lay.codec == LRUN_PACKED_CODEC_PEX2;
    if (!ok) printf("# %s\n", lrun_last_error());
    if (ok) T->t = px_tensor_of(T->bytes, &T->lay);
    return ok;
}

static void tensor_free(tensor *T)
{
    free(T->plain), free(T->bytes);
    memset(T, 0, sizeof *T);
}

/* ---------------------------------------------------------------- px_decode_block, lane by lane */

/* The warp's decode of block b into d (u16) or f (f32): the 32 lanes' pass,
 * then the patch passes: every lane loads its exception, the ballot of the
 * far ones, then each active lane in range writes its exponent. */
static void emu_block(const tensor *T, uint64_t b, const px_span *sp, uint16_t *d, float *f, int a16)
{
    const px_block B = px_block_at(&T->t, b);
    for (unsigned l = 0; l < 32; l++) {
        if (d) px_lane_pass_u16(&T->t, b, sp, d, a16, l);
        else px_lane_pass_f32(&T->t, b, sp, f, a16, l);
    }
    uint32_t run = 0;
    for (uint32_t base = 0; base < B.count; base += 32) {
        px_exc x[32];
        uint32_t m = 0;
        for (unsigned l = 0; l < 32; l++) {
            x[l] = px_exc_load(&B, base + l);
            if (x[l].act && x[l].code == 7u) m |= 1u << l; /* __ballot_sync */
        }
        for (unsigned l = 0; l < 32; l++) {
            if (!x[l].act || (int)x[l].pos < sp->plo || (int)x[l].pos >= sp->phi) continue;
            const uint32_t e = px_exc_exp(&T->t, &B, &x[l], run + (uint32_t)__builtin_popcount(m & ((1u << l) - 1)));
            if (d) px_patch_u16(d + (sp->doff + (int64_t)x[l].pos), e);
            else px_patch_f32(f + (sp->doff + (int64_t)x[l].pos), e);
        }
        run += (uint32_t)__builtin_popcount(m);
    }
}

/* The patch passes of block B into bdst (the block's element 0), as
 * px_patch_block runs them: every lane loads its exception, the ballot of
 * the far ones, then each active lane in [plo, phi) writes its exponent. */
static void emu_patch(const tensor *T, const px_block *B, const px_span *sp, uint16_t *bdst)
{
    uint32_t run = 0;
    for (uint32_t base = 0; base < B->count; base += 32) {
        px_exc x[32];
        uint32_t m = 0;
        for (unsigned l = 0; l < 32; l++) {
            x[l] = px_exc_load(B, base + l);
            if (x[l].act && x[l].code == 7u) m |= 1u << l; /* __ballot_sync */
        }
        for (unsigned l = 0; l < 32; l++) {
            if (!x[l].act || (int)x[l].pos < sp->plo || (int)x[l].pos >= sp->phi) continue;
            px_patch_u16(bdst + x[l].pos,
                         px_exc_exp(&T->t, B, &x[l], run + (uint32_t)__builtin_popcount(m & ((1u << l) - 1))));
        }
        run += (uint32_t)__builtin_popcount(m);
    }
}

/* The fused GEMV's decode of block b (px_decode_tile): the 32 lanes'
 * px_lane_pass_tile into bdst (the tile's slot of the block's element 0),
 * then the patch passes. */
static void emu_tile_block(const tensor *T, uint64_t b, const px_span *sp, uint16_t *bdst)
{
    const px_block B = px_block_at(&T->t, b);
    for (unsigned l = 0; l < 32; l++) px_lane_pass_tile(&T->t, b, sp->plo, sp->phi, bdst, l);
    emu_patch(T, &B, sp, bdst);
}

/* Variant 2's decode of a segment (px_decode_seg_pipe) by warp w of nw: its
 * codec blocks w, w + nw, ..., each lane's loads held from one block to the
 * next (px_tile_loads), block i + nw's loads and table entry taken after
 * block i's stores and before its patch. */
static void emu_seg_pipe(const tensor *T, uint64_t cb0, int nc, uint64_t e0, uint64_t e1, uint16_t *seg, int w,
                         int nw)
{
    if (w >= nc) return;
    px_tile_loads L[32];
    px_span sp = px_span_of(cb0 + (uint64_t)w, e0, e1);
    for (unsigned l = 0; l < 32; l++) px_tile_load(&T->t, cb0 + (uint64_t)w, sp.plo, sp.phi, l, &L[l]);
    px_block B = px_block_at(&T->t, cb0 + (uint64_t)w);
    for (int i = w; i < nc; i += nw) {
        const px_span cur = sp;
        const px_block Bc = B;
        uint16_t *bdst = seg + (int)cur.doff;
        for (unsigned l = 0; l < 32; l++) px_tile_store(&T->t, &L[l], cur.plo, cur.phi, bdst, l);
        if (i + nw < nc) {
            const uint64_t nb = cb0 + (uint64_t)(i + nw);
            sp = px_span_of(nb, e0, e1);
            for (unsigned l = 0; l < 32; l++) px_tile_load(&T->t, nb, sp.plo, sp.phi, l, &L[l]);
            B = px_block_at(&T->t, nb);
        }
        emu_patch(T, &Bc, &cur, bdst);
    }
}

/* lrun_k_pex2_decode's grid: elements [e0, e1) into dst[element - e0]. */
static void emu_decode(const tensor *T, uint64_t e0, uint64_t e1, uint16_t *dst)
{
    for (uint64_t b = e0 / PX_BLOCK; b * PX_BLOCK < e1; b++) {
        const px_span sp = px_span_of(b, e0, e1);
        emu_block(T, b, &sp, dst, NULL, (((uintptr_t)dst + 2 * (uint64_t)sp.doff) & 15) == 0);
    }
}

static int clean(void) { return !px_emu_misaligned && !px_emu_oob && !px_emu_signsel; }
static void emu_reset(const tensor *T)
{
    px_emu_misaligned = px_emu_oob = px_emu_signsel = 0;
    px_emu_lo = T->bytes, px_emu_hi = T->bytes + T->size;
}

/* ---------------------------------------------------------------- cases */

static void case_decode(const tensor *T, const char *name)
{
    char label[200];
    emu_reset(T);
    uint16_t *out = aligned_alloc(16, (T->n + 16) * 2);
    int ok = out != NULL;
    if (ok) {
        emu_decode(T, 0, T->n, out);
        ok = !memcmp(out, T->plain, T->n * 2);
    }
    snprintf(label, sizeof label, "%s: the whole tensor = the plain values, loads aligned and inside", name);
    CHECK(label, ok && clean());
    /* ranges that start and end anywhere, into dst 0-7 elements past a 16-byte boundary */
    int all = ok;
    for (int i = 0; ok && i < 60; i++) {
        const uint64_t first = rnd() % T->n, count = 1 + rnd() % (T->n - first);
        const unsigned off = rnd() % 8;
        const uint64_t c = count > T->n ? T->n : count;
        memset(out, 0xab, (T->n + 16) * 2);
        emu_decode(T, first, first + c, out + off);
        all &= !memcmp(out + off, T->plain + first, c * 2);
        for (unsigned j = 0; j < off; j++) all &= out[j] == 0xabab;
        all &= out[off + c] == 0xabab;
    }
    snprintf(label, sizeof label, "%s: 60 ranges into dst + 0-7 elements = the plain values, nothing around written",
             name);
    CHECK(label, all && clean());
    free(out);
}

/* The fused GEMV's decode phase for rows of k: every block of the grid (one
 * part, or a gate/up pair of the same tensor: sw), its tile against the rows. */
static void case_tile(const tensor *T, int64_t k, int sw, int pipe, const char *name)
{
    char label[200];
    emu_reset(T);
    const int64_t rows = (int64_t)(T->n / (uint64_t)k);
    const int rb = pg_rows_per_block(k, sw), rh = sw ? rb / 2 : rb;
    int64_t b0[4], n[3] = {rows, sw ? rows : 0, 0};
    const int64_t blocks = pg_grid(b0, n, sw ? 2 : 1, rh, sw);
    uint16_t *guarded = aligned_alloc(16, ((size_t)rb * (size_t)k + 2 * PX_BLOCK) * 2),
             *tile = guarded ? guarded + PX_BLOCK : NULL; /* (rb, k) bf16, PX_BLOCK guard elements each side */
    int ok = tile != NULL;
    for (int64_t blk = 0; ok && blk < blocks; blk++) {
        const pg_rows R = pg_block_rows(b0, n, blk, k, rh);
        /* guard rows before and after the tile: a store outside it shows */
        memset(guarded, 0xcd, ((size_t)rb * (size_t)k + 2 * PX_BLOCK) * 2);
        for (int64_t i = 0; !pipe && i < (sw ? 2 : 1) * R.nc; i++) { /* the warps' codec blocks, in any order */
            const int s = i >= R.nc;
            const uint64_t cb = R.cb0 + (uint64_t)(i - s * R.nc);
            const px_span sp = px_span_of(cb, R.e0, R.e1);
            emu_tile_block(T, cb, &sp, tile + (size_t)s * (size_t)rh * (size_t)k + (int)sp.doff);
        }
        for (int s = 0; pipe && s < (sw ? 2 : 1); s++) /* variant 2: each segment, the 8 warps of 256 threads */
            for (int w = 0; w < 8; w++)
                emu_seg_pipe(T, R.cb0, (int)R.nc, R.e0, R.e1, tile + (size_t)s * (size_t)rh * (size_t)k, w, 8);
        for (int s = 0; s < (sw ? 2 : 1); s++)
            ok &= !memcmp(tile + (size_t)s * (size_t)rh * (size_t)k, T->plain + R.e0, (size_t)(R.e1 - R.e0) * 2);
        for (size_t j = 0; j < PX_BLOCK; j++)
            ok &= guarded[j] == 0xcdcd && tile[(size_t)rb * (size_t)k + j] == 0xcdcd;
    }
    snprintf(label, sizeof label,
             "%s: fused tiles of %d rows of %lld%s (%s) = the rows, 16-byte stores aligned, none outside", name, rb,
             (long long)k, sw ? " (gate/up pair)" : "", pipe ? "pipelined: px_tile_load/store" : "px_lane_pass_tile");
    CHECK(label, ok && clean());
    free(guarded);
}

/* The gather's grid: ids first, last, repeated, negative and past the table. */
static void case_embed(const tensor *T, int64_t k, const char *name)
{
    char label[200];
    emu_reset(T);
    const int64_t rows = (int64_t)(T->n / (uint64_t)k);
    const int32_t ids[] = {0, (int32_t)(rows - 1), (int32_t)(rows / 2), (int32_t)(rows / 2), -1, (int32_t)rows};
    const int64_t n_tok = (int64_t)(sizeof ids / sizeof ids[0]);
    const int nw = pg_embed_warps(k);
    float *out = aligned_alloc(16, (size_t)(n_tok * k) * 4);
    int ok = out != NULL;
    if (ok) memset(out, 0x7f, (size_t)(n_tok * k) * 4);
    for (int64_t w = 0; ok && w < n_tok * nw; w++) {
        const int64_t tok = w / nw;
        const int j = (int)(w % nw);
        const pg_embed_job J = pg_embed_job_of(ids[tok], j, rows, k);
        float *row = out + tok * k;
        if (!J.valid)
            for (unsigned l = 0; l < 32; l++) pg_lane_zero_f32(row, j, k, l);
        else if (J.live) {
            const px_span sp = px_span_of(J.cb, J.e0, J.e1);
            emu_block(T, J.cb, &sp, NULL, row, 1);
        }
    }
    for (int64_t tok = 0; ok && tok < n_tok; tok++) {
        const int valid = ids[tok] >= 0 && ids[tok] < rows;
        for (int64_t c = 0; c < k; c++) {
            const uint32_t want =
                valid ? (uint32_t)T->plain[(uint64_t)ids[tok] * (uint64_t)k + (uint64_t)c] << 16 : 0;
            ok &= px_u32(out[tok * k + c]) == want;
        }
    }
    snprintf(label, sizeof label, "%s: gathered rows of %lld (ids first, last, repeated, outside) as f32", name,
             (long long)k);
    CHECK(label, ok && clean() && !pg_emu_misaligned);
    free(out);
}

int main(void)
{
    /* 129 x 4104 and 300 x 4096: many superblocks of the table, blocks that
     * cross into the next; 16 x 4096: 64 blocks exactly, the totals entry
     * the first of its superblock */
    static const struct {
        int64_t rows, k;
        int kind;
    } shapes[] = {{1, 8, 0},      {3, 24, 0},    {37, 776, 0},  {5, 1000, 0},  {129, 4104, 0},
                  {300, 4096, 1}, {64, 1032, 2}, {3, 11008, 2}, {2, 30000, 0}, {16, 4096, 0}};
    static const char *const kinds[] = {"trained-like", "exponents over 40 values", "random bits"};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        char name[120];
        tensor T;
        snprintf(name, sizeof name, "PEX2 %lld x %lld %s", (long long)shapes[i].rows, (long long)shapes[i].k,
                 kinds[shapes[i].kind]);
        const int ok = tensor_make(&T, (uint64_t)(shapes[i].rows * shapes[i].k), shapes[i].kind, 5 + i);
        CHECK(name, ok);
        if (!ok) continue;
        case_decode(&T, name);
        for (int pipe = 0; pipe < 2; pipe++) {
            case_tile(&T, shapes[i].k, 0, pipe, name);
            case_tile(&T, shapes[i].k, 1, pipe, name);
        }
        case_embed(&T, shapes[i].k, name);
        tensor_free(&T);
    }
    return CHECK_DONE();
}
