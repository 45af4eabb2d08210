/* test_gemv_stage_emu.c — the staged GEMV's indexing (kernels/gemv_stage.cu)
 * replayed on the host with the very functions the GPU runs
 * (kernels/gemv_stage_lane.h): for every CUDA block, chunk and thread of
 * the launch, every 16-byte piece's global address is 16-byte aligned and
 * inside its row, every 2-byte tail piece 2-byte aligned and inside it,
 * the pieces land inside their stage slot, and each byte of each row is
 * copied exactly once; every (row, weight block) item is multiplied
 * exactly once; the blocks read back from the stage (the rest of the stage
 * filled with garbage, so a byte read but never copied shows) unpack to
 * lrun_dequantize_row's values; and the emulated rows (dp4a, the kernel's
 * per-block FMA, the block's reduction) are the double dot of the
 * dequantized rows with the q8-rounded x within f32 summation (error over
 * Σ|terms| <= 1e-6). Shapes: k from one weight block to 11008 with chunks
 * that end in a tail, n not a multiple of the block's rows, padded strides,
 * the paired (SwiGLU) row mapping. Runs in `make test`; the GPU's own run
 * is test_gemv_dp4a_gpu.c. */
#include "check.h"
#include "emu_bytes.h"
#include "gemv_stage_lane.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    lrun_dtype t;
    int id, bs;
} types[] = {{LRUN_DTYPE_Q8_0, GS_Q8_0, 34}, {LRUN_DTYPE_Q4_0, GS_Q4_0, 18}, {LRUN_DTYPE_Q4_1, GS_Q4_1, 20},
             {LRUN_DTYPE_Q5_0, GS_Q5_0, 22}, {LRUN_DTYPE_Q5_1, GS_Q5_1, 24}, {LRUN_DTYPE_IQ4_NL, GS_IQ4_NL, 18}};
#define N_TYPES ((int)(sizeof types / sizeof types[0]))

/* what a replay found wrong: the first failure, and the worst errors */
typedef struct {
    char first[200];
    int bad;
    double worst_el, worst_dot;
} replay;

static void fail(replay *rp, const char *what, int64_t b, int64_t c, int t)
{
    if (!rp->bad++)
        snprintf(rp->first, sizeof rp->first, "%s (CUDA block %lld, chunk %lld, thread %d)", what, (long long)b,
                 (long long)c, t);
}

/* One matrix (or a gate/up pair, sw) of n rows of type ti, k elements,
 * stride bytes apart (a multiple of 16), on a 256-aligned base: the whole
 * launch replayed. */
static void replay_case(int ti, int64_t n, int64_t k, size_t stride, int sw, unsigned seed, replay *rp)
{
    const lrun_dtype t = types[ti].t;
    const int bs = types[ti].bs, srow = gs_srow(bs);
    const int nb = (int)(k / 32), nchunks = (nb + GS_CB - 1) / GS_CB;
    const size_t len_row = (size_t)nb * (size_t)bs, bytes = ((size_t)n * stride + 255) / 256 * 256;
    srand(seed);
    /* parts: one matrix, or gate and up */
    uint8_t *w[2];
    float *deq[2];
    float *src = malloc((size_t)k * sizeof *src);
    for (int q = 0; q < 1 + sw; q++) {
        w[q] = aligned_alloc(256, bytes);
        memset(w[q], 0x5a, bytes);
        deq[q] = malloc((size_t)(n * k) * sizeof *deq[q]);
        for (int64_t r = 0; r < n; r++) {
            for (int64_t i = 0; i < k; i++) src[i] = ((float)rand() / RAND_MAX * 2.0f - 1.0f) * (i % 53 == 5 ? 7 : 1);
            lrun_quantize_row(t, src, w[q] + (size_t)r * stride, k);
            lrun_dequantize_row(t, w[q] + (size_t)r * stride, deq[q] + r * k, k);
        }
    }
    /* x, its q8 blocks (the kernel's dl_quantize: d as f16, s = d·Σq) */
    float *x = malloc((size_t)k * sizeof *x), *xd = malloc((size_t)nb * sizeof *xd), *xs = malloc((size_t)nb * 4);
    float *xr = malloc((size_t)k * sizeof *xr); /* the q8-rounded x */
    uint8_t *xq = malloc((size_t)nb * 34);
    for (int64_t i = 0; i < k; i++) x[i] = (float)rand() / RAND_MAX * 4.0f - 2.0f;
    lrun_quantize_activations(LRUN_DTYPE_Q8_0, x, xq, k);
    lrun_dequantize_row(LRUN_DTYPE_Q8_0, xq, xr, k);
    for (int64_t u = 0; u < nb; u++) {
        int sum = 0;
        for (int i = 0; i < 32; i++) sum += (int8_t)xq[u * 34 + 2 + i];
        xd[u] = f16(rd16(xq + u * 34)), xs[u] = xd[u] * (float)sum;
    }

    uint32_t *stage = malloc((size_t)gs_stage_bytes(bs)); /* exactly one stage: ASan sees overreads */
    int *cover = malloc((size_t)GS_RB * (size_t)srow * sizeof *cover);
    int items[GS_RB][GS_CB];
    const int npt = (gs_pieces(bs) + GS_NT - 1) / GS_NT, ipt = GS_RB * GS_CB / GS_NT, rh = GS_RB / 2;
    const int64_t rows_out = sw ? rh : GS_RB, blocks = (n + rows_out - 1) / rows_out;
    float acc[GS_NT][GS_RB * GS_CB / GS_NT];
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t row0 = b * rows_out;
        memset(acc, 0, sizeof acc);
        for (int c = 0; c < nchunks; c++) {
            const int cb = gs_chunk_blocks(nb, c), len = cb * bs;
            const size_t at = (size_t)c * GS_CB * (size_t)bs;
            memset(stage, 0xc3, (size_t)gs_stage_bytes(bs));
            memset(cover, 0, (size_t)GS_RB * (size_t)srow * sizeof *cover);
            uint8_t *sb = (uint8_t *)stage;
            /* the copies: 16-byte pieces, then the tail */
            for (int th = 0; th < GS_NT; th++) {
                for (int i = 0; i < npt; i++) {
                    int r, off, q;
                    if (!gs_piece(th + i * GS_NT, bs, len, &r, &off)) continue;
                    const int64_t rr = gs_row(r, sw, 0, row0, n, &q);
                    const uint8_t *g = w[q] + (size_t)rr * stride + at + (size_t)off;
                    if (((uintptr_t)g & 15) != 0) fail(rp, "16-byte piece not 16-byte aligned", b, c, th);
                    if (at + (size_t)off + 16 > len_row) fail(rp, "16-byte piece past its row", b, c, th);
                    if (off + 16 > GS_CB * bs || (r * srow + off) % 16 != 0)
                        fail(rp, "piece outside its slot", b, c, th);
                    memcpy(sb + r * srow + off, g, 16);
                    for (int e = 0; e < 16; e++) cover[r * srow + off + e]++;
                }
                int r, off, q;
                for (int L = th; (len & 15) && gs_tail(L, len, &r, &off); L += GS_NT) {
                    const int64_t rr = gs_row(r, sw, 0, row0, n, &q);
                    const uint8_t *g = w[q] + (size_t)rr * stride + at + (size_t)off;
                    if (((uintptr_t)g & 1) != 0 || at + (size_t)off + 2 > len_row) fail(rp, "tail piece", b, c, th);
                    memcpy(sb + r * srow + off, g, 2);
                    cover[r * srow + off]++, cover[r * srow + off + 1]++;
                }
            }
            for (int r = 0; r < GS_RB; r++)
                for (int e = 0; e < srow; e++)
                    if (cover[r * srow + e] != (e < len)) fail(rp, "a byte copied other than once", b, c, -1);
            /* the items: each thread's blocks, from the stage */
            memset(items, 0, sizeof items);
            for (int th = 0; th < GS_NT; th++)
                for (int s = 0; s < ipt; s++) {
                    const int L = th + s * GS_NT, r = L / GS_CB, j = L % GS_CB;
                    if (j >= cb) continue;
                    items[r][j]++;
                    uint32_t wq[8], d16, m16;
                    int z;
                    gs_block(types[ti].id, stage + r * (srow / 4), j, wq, &d16, &m16, &z);
                    /* the kernel's m: the f16 min, or −z·d (one of them is 0) */
                    const float d = f16(d16), m = f16(m16) - (float)z * d;
                    int q;
                    const int64_t rr = gs_row(r, sw, 0, row0, n, &q), u = c * GS_CB + j;
                    int sumi = 0;
                    for (int l = 0; l < 8; l++) {
                        const uint32_t xw = rd32(xq + u * 34 + 2 + 4 * l);
                        sumi = dl_dp4a(wq[l], xw, sumi);
                        for (int e = 0; e < 4; e++) {
                            const double v = (double)d * (int8_t)(wq[l] >> (8 * e)) + m; /* m = −z·d exactly */
                            const double want = deq[q][rr * k + u * 32 + 4 * l + e];
                            const double err = fabs(v - want) / (fabs(want) + 1e-30);
                            if (err > rp->worst_el && fabs(v - want) > 1e-30) rp->worst_el = err;
                        }
                    }
                    acc[th][s] = fmaf(d * xd[u], (float)sumi, fmaf(m, xs[u], acc[th][s]));
                }
            for (int r = 0; r < GS_RB; r++)
                for (int j = 0; j < GS_CB; j++)
                    if (items[r][j] != (j < cb)) fail(rp, "a weight block multiplied other than once", b, c, -1);
        }
        /* the block's reduction: a warp's items of slot s are one row */
        float red[GS_RB][GS_CB / 32];
        for (int wp = 0; wp < GS_NT / 32; wp++)
            for (int s = 0; s < ipt; s++) {
                float v = 0.0f;
                for (int l = 0; l < 32; l++) v += acc[wp * 32 + l][s];
                const int L0 = wp * 32 + s * GS_NT;
                red[L0 / GS_CB][(L0 % GS_CB) / 32] = v;
            }
        for (int r = 0; r < (sw ? rh : GS_RB); r++) {
            if (row0 + r >= n) continue;
            for (int h = 0; h < (sw ? 2 : 1); h++) { /* gate (row r) and up (row rh + r) of a paired block */
                float v = 0.0f;
                for (int c2 = 0; c2 < GS_CB / 32; c2++) v += red[r + h * rh][c2];
                double ref = 0.0, terms = 0.0;
                for (int64_t i = 0; i < k; i++) {
                    const double e = (double)deq[h][(row0 + r) * k + i] * xr[i];
                    ref += e, terms += fabs(e);
                }
                const double err = fabs(v - ref) / (terms > 0 ? terms : 1.0);
                if (err > rp->worst_dot) rp->worst_dot = err;
            }
        }
    }
    for (int q = 0; q < 1 + sw; q++) free(w[q]), free(deq[q]);
    free(src), free(x), free(xd), free(xs), free(xr), free(xq), free(stage), free(cover);
}

int main(void)
{
    /* dl_iq4_word (3 permutes a half-word) against dl_iq4 (a byte each),
     * every nibble value at every position among 2^20 words */
    int iq4_ok = 1;
    for (uint32_t i = 0, q = 0x12345678u; i < (1u << 20); i++, q = q * 1664525u + 1013904223u) {
        const uint32_t v = i < 16 ? i * 0x11111111u : q;
        uint32_t lo, hi;
        dl_iq4_word(v, &lo, &hi);
        iq4_ok &= lo == dl_iq4(dl_lo(v)) && hi == dl_iq4(dl_hi(v));
    }
    CHECK("dl_iq4_word: the codebook values of both nibbles of 2^20 words, as dl_iq4", iq4_ok);

    /* k: one weight block; 3 blocks (a tail); 9 (a chunk of 9, tail); a
     * chunk and a tail; 4096 and 11008 (the 7B shapes: whole pieces) */
    static const int64_t ks[] = {32, 96, 288, 1056, 4096, 11008};
    static const int64_t ns[] = {1, 9, 17};
    for (int ti = 0; ti < N_TYPES; ti++) {
        replay rp;
        memset(&rp, 0, sizeof rp);
        int cases = 0;
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            size_t rb = 0;
            lrun_dtype_row_bytes(types[ti].t, ks[ki], &rb);
            const size_t tight = (rb + 15) / 16 * 16;
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                const int64_t n = ns[ni];
                replay_case(ti, n, ks[ki], tight, 0, (unsigned)(ki * 7 + ni), &rp);
                replay_case(ti, n, ks[ki], tight + 48, 0, (unsigned)(ki * 7 + ni + 100), &rp); /* padded stride */
                replay_case(ti, n, ks[ki], tight, 1, (unsigned)(ki * 7 + ni + 200), &rp);      /* gate/up pair */
                cases += 3;
            }
        }
        char name[512];
        snprintf(name, sizeof name,
                 "stage %s, %d launches replayed: loads aligned, in bounds, each byte once, each block once%s%s; "
                 "d*q + m vs lrun_dequantize_row %.1e <= 1e-6; rows' error/terms %.1e <= 1e-6",
                 lrun_dtype_name(types[ti].t), cases, rp.bad ? ": FIRST FAILURE " : "", rp.bad ? rp.first : "",
                 rp.worst_el, rp.worst_dot);
        CHECK(name, !rp.bad && rp.worst_el <= 1e-6 && rp.worst_dot <= 1e-6);
    }
    return CHECK_DONE();
}
