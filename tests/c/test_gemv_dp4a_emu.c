/* test_gemv_dp4a_emu.c — the dp4a GEMV's per-thread arithmetic (Q2_K and
 * Q3_K: its two-scale units, emu_k_unit)
 * (kernels/gemv_dp4a.cu) emulated on the host with the very unpacking
 * functions the GPU runs (kernels/gemv_dp4a_lane.h): every 32-element unit
 * of rows quantized by lrun_quantize_row unpacks to int8 words whose d·q + m
 * are lrun_dequantize_row's values, and the emulated row dot (8 dp4a and
 * one FMA per unit, x quantized by lrun_quantize_activations' rule) is the
 * dot of the dequantized row with the q8-rounded x. Runs in `make test` on
 * any machine; the GPU itself is tested by test_gemv_dp4a_gpu.c. */
#include "check.h"
#include "emu_bytes.h"
#include "gemv_dp4a_lane.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* __dp4a(a, b, c): c + Σ of the 4 signed byte products */
static int dp4a(uint32_t a, uint32_t b, int c)
{
    for (int e = 0; e < 4; e++) c += (int)(int8_t)(a >> (8 * e)) * (int)(int8_t)(b >> (8 * e));
    return c;
}

/* Unit u of a row of type t at row: as dl_blk<t>::load and ::unpack in gemv_dp4a.cu. */
static void emu_unit(lrun_dtype t, const uint8_t *row, int64_t u, uint32_t w[8], float *d, float *m)
{
    uint32_t qs[4];
    *m = 0.0f;
    switch (t) {
    case LRUN_DTYPE_Q8_0: {
        const uint8_t *b = row + u * 34;
        for (int l = 0; l < 8; l++) w[l] = rd32(b + 2 + 4 * l);
        *d = f16(rd16(b));
        return;
    }
    case LRUN_DTYPE_Q4_0:
    case LRUN_DTYPE_IQ4_NL: {
        const uint8_t *b = row + u * 18;
        for (int l = 0; l < 4; l++) qs[l] = rd32(b + 2 + 4 * l);
        if (t == LRUN_DTYPE_Q4_0) dl_q4_0(qs, w);
        else dl_iq4nl(qs, w);
        *d = f16(rd16(b));
        return;
    }
    case LRUN_DTYPE_Q4_1: {
        const uint8_t *b = row + u * 20;
        for (int l = 0; l < 4; l++) qs[l] = rd32(b + 4 + 4 * l);
        dl_q4_1(qs, w);
        *d = f16(rd16(b)), *m = f16(rd16(b + 2));
        return;
    }
    case LRUN_DTYPE_Q5_0: {
        const uint8_t *b = row + u * 22;
        for (int l = 0; l < 4; l++) qs[l] = rd32(b + 6 + 4 * l);
        dl_q5(qs, rd32(b + 2), 0x10101010u, w);
        *d = f16(rd16(b));
        return;
    }
    case LRUN_DTYPE_Q5_1: {
        const uint8_t *b = row + u * 24;
        for (int l = 0; l < 4; l++) qs[l] = rd32(b + 8 + 4 * l);
        dl_q5(qs, rd32(b + 4), 0u, w);
        *d = f16(rd16(b)), *m = f16(rd16(b + 2));
        return;
    }
    default: { /* IQ4_XS */
        const int j = (int)(u & 7);
        const uint8_t *b = row + (u >> 3) * 136;
        for (int l = 0; l < 4; l++) qs[l] = rd32(b + 8 + 16 * j + 4 * l);
        dl_iq4nl(qs, w);
        const uint32_t dh = rd32(b);
        *d = f16(dh & 0xffff) * (float)dl_iq4xs_ls(dh >> 16, b[4 + (j >> 1)], j);
        return;
    }
    }
}

/* Unit u of a Q2_K or Q3_K row as dl_blk<t>::load and ::step in gemv_dp4a.cu:
 * acc plus the unit's contribution against xw (8 words of xq) with scale dx;
 * each element's d·sc·q − dmin·m (as lrun_dequant_q2_K/q3_K compute it, in
 * float) into deq_emu[0..31] and its magnitude |d·sc·q| + |dmin·m| into mag. */
static float emu_k_unit(lrun_dtype t, const uint8_t *row, int64_t u, const uint32_t xw[8], float dx, float acc,
                        float deq_emu[32], double mag[32])
{
    const int j = (int)(u & 7);
    uint32_t q[8], hm[8], w[8];
    if (t == LRUN_DTYPE_Q2_K) {
        const uint8_t *b = row + (u >> 3) * 84;
        for (int l = 0; l < 8; l++) q[l] = rd32(b + 16 + 32 * (j >> 2) + 4 * l);
        const uint32_t sc = rd16(b + 2 * j), dm = rd32(b + 80);
        dl_q2k(q, j, w);
        const int sc0 = (int)(sc & 15), sc1 = (int)((sc >> 8) & 15), m0 = (int)((sc >> 4) & 15),
                  m1 = (int)((sc >> 12) & 15);
        const float d = f16(dm & 0xffff), dmin = f16(dm >> 16);
        for (int i = 0; i < 32; i++) {
            const float dl = d * (float)(i < 16 ? sc0 : sc1), ml = dmin * (float)(i < 16 ? m0 : m1);
            const int qi = (int8_t)(w[i / 4] >> (8 * (i % 4)));
            deq_emu[i] = dl * (float)qi - ml;
            mag[i] = fabs((double)dl * qi) + fabs((double)ml);
        }
        const int sumi = dl_dot2(w, xw, sc0, sc1), summ = dl_sum2(xw, m0, m1);
        return fmaf(d * dx, (float)sumi, fmaf(-dmin * dx, (float)summ, acc));
    }
    const uint8_t *b = row + (u >> 3) * 110;
    for (int l = 0; l < 8; l++) hm[l] = rd32(b + 4 * l), q[l] = rd32(b + 32 + 32 * (j >> 2) + 4 * l);
    const uint32_t sl = rd16(b + 96 + (2 * j & 7)), sh = rd16(b + 104 + (2 * j & 3));
    dl_q3k(q, hm, j, w);
    const int sc0 = dl_q3k_scale(sl, sh, j, 0), sc1 = dl_q3k_scale(sl, sh, j, 1);
    const float d = f16(rd16(b + 108));
    for (int i = 0; i < 32; i++) {
        const float dl = d * (float)(i < 16 ? sc0 : sc1);
        const int qi = (int8_t)(w[i / 4] >> (8 * (i % 4)));
        deq_emu[i] = dl * (float)qi;
        mag[i] = fabs((double)dl * qi);
    }
    return fmaf(d * dx, (float)dl_dot2(w, xw, sc0, sc1), acc);
}

/* One row of k random values (a few outliers) of type t: every unpacked
 * element against the CPU's dequantization, and the emulated dot against
 * the double dot of that row with the q8-rounded x. */
static int emu_case(lrun_dtype t, int64_t k, unsigned seed, float wamp, float xamp, double *worst_el,
                    double *worst_dot)
{
    srand(seed);
    size_t rb = 0;
    if (lrun_dtype_row_bytes(t, k, &rb) != LRUN_OK) return 0;
    float *src = malloc((size_t)k * sizeof *src), *deq = malloc((size_t)k * sizeof *deq);
    float *x = malloc((size_t)k * sizeof *x);
    uint8_t *row = malloc(rb), *xq = malloc((size_t)k / 32 * 34);
    if (!src || !deq || !x || !row || !xq) {
        free(src), free(deq), free(x), free(row), free(xq);
        return 0;
    }
    for (int64_t i = 0; i < k; i++) {
        src[i] = ((float)rand() / RAND_MAX * 2.0f - 1.0f) * wamp;
        if (i % 61 == 7) src[i] *= 9.0f;
        if (wamp != 1.0f && (i / 16) % 7 == 3) src[i] = 0.0f; /* sub-blocks of zeros: scale 0 */
        x[i] = ((float)rand() / RAND_MAX * 4.0f - 2.0f) * xamp;
    }
    lrun_quantize_row(t, src, row, k);
    lrun_dequantize_row(t, row, deq, k);
    lrun_quantize_activations(LRUN_DTYPE_Q8_0, x, xq, k); /* blocks of f16 d, 32 int8 */
    double ref = 0.0, terms = 0.0;
    float y = 0.0f;
    const int kq = t == LRUN_DTYPE_Q2_K || t == LRUN_DTYPE_Q3_K;
    for (int64_t u = 0; u < k / 32 && kq; u++) {
        const uint8_t *xb = xq + u * 34;
        const float dx = f16(rd16(xb));
        uint32_t xw[8];
        float de[32];
        double mag[32];
        for (int l = 0; l < 8; l++) xw[l] = rd32(xb + 2 + 4 * l);
        y = emu_k_unit(t, row, u, xw, dx, y, de, mag);
        for (int i = 0; i < 32; i++) {
            const double want = deq[u * 32 + i], qx = (int8_t)(xw[i / 4] >> (8 * (i % 4)));
            const double err = fabs(de[i] - want) / (mag[i] + 1e-30);
            if (err > *worst_el && fabs(de[i] - want) > 1e-30) *worst_el = err;
            ref += want * dx * qx;
            terms += fabs(want * dx * qx);
        }
    }
    for (int64_t u = 0; u < k / 32 && !kq; u++) {
        uint32_t w[8];
        float d, m;
        emu_unit(t, row, u, w, &d, &m);
        const uint8_t *xb = xq + u * 34;
        const float dx = f16(rd16(xb));
        int sumq = 0, sumi = 0;
        for (int l = 0; l < 8; l++) {
            const uint32_t xw = rd32(xb + 2 + 4 * l);
            sumi = dp4a(w[l], xw, sumi);
            for (int e = 0; e < 4; e++) {
                const int i = 4 * l + e, q = (int8_t)(w[l] >> (8 * e)), qx = (int8_t)(xw >> (8 * e));
                const double v = (double)d * q + m, want = deq[u * 32 + i];
                const double err = fabs(v - want) / (fabs(want) + 1e-30);
                if (err > *worst_el && fabs(v - want) > 1e-30) *worst_el = err;
                ref += want * dx * qx;
                terms += fabs(want * dx * qx);
                sumq += qx;
            }
        }
        const float sx = dx * (float)sumq; /* as dl_quantize's s */
        y = fmaf(d * dx, (float)sumi, fmaf(m, sx, y));
    }
    const double err = fabs(y - ref) / (terms > 0 ? terms : 1.0);
    if (err > *worst_dot) *worst_dot = err;
    free(src), free(deq), free(x), free(row), free(xq);
    return 1;
}

int main(void)
{
    /* the IQ4 codebook lookup: every index in every byte */
    int lut_ok = 1;
    for (int e = 0; e < 4; e++)
        for (uint32_t v = 0; v < 16; v++) {
            const uint32_t in = (v << (8 * e)) | (((v * 7 + 3) & 15) << (8 * ((e + 1) & 3)));
            const uint32_t out = dl_iq4(in);
            lut_ok &= (int8_t)(out >> (8 * e)) == lrun_kvalues_iq4nl[v];
            lut_ok &= (int8_t)(out >> (8 * ((e + 1) & 3))) == lrun_kvalues_iq4nl[(v * 7 + 3) & 15];
        }
    CHECK("dl_iq4: every index in every byte is lrun_kvalues_iq4nl's value", lut_ok);
    int sub_ok = 1;
    for (uint32_t q = 0; q < 32; q++)
        for (uint32_t c = 0; c <= 16; c += 8) {
            const uint32_t r = dl_sub4(q * 0x01010101u, c * 0x01010101u);
            for (int e = 0; e < 4; e++) sub_ok &= (int8_t)(r >> (8 * e)) == (int)q - (int)c;
        }
    CHECK("dl_sub4: q - c per byte without borrows, q < 32, c 0/8/16", sub_ok);

    static const lrun_dtype types[] = {LRUN_DTYPE_Q8_0, LRUN_DTYPE_Q4_0,   LRUN_DTYPE_Q4_1,  LRUN_DTYPE_Q5_0,
                                       LRUN_DTYPE_Q5_1, LRUN_DTYPE_IQ4_NL, LRUN_DTYPE_IQ4_XS};
    static const int64_t ks[] = {256, 768, 4096, 11008};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        double worst_el = 0.0, worst_dot = 0.0;
        int ok = 1;
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            for (unsigned s = 1; s <= 3; s++)
                ok &= emu_case(types[ti], ks[ki], s * 31u + (unsigned)ki, 1.0f, 1.0f, &worst_el, &worst_dot);
        char name[160];
        snprintf(name, sizeof name,
                 "%s: unpacked d*q + m vs lrun_dequantize_row %.1e <= 1e-6, dot error/terms %.1e <= 1e-6",
                 lrun_dtype_name(types[ti]), worst_el, worst_dot);
        CHECK(name, ok && worst_el <= 1e-6 && worst_dot <= 1e-6);
    }

    /* Q2_K and Q3_K (the dp4a kernel's two-scale units): the same bounds, on
     * rows of amplitude 1, 1e-3 (f16 scales near and below the normal range)
     * and 300, with zero sub-blocks (scale 0), and x of amplitude 1e-4 to 1e4 */
    static const lrun_dtype ktypes[] = {LRUN_DTYPE_Q2_K, LRUN_DTYPE_Q3_K};
    static const float wamps[] = {1.0f, 1e-3f, 300.0f}, xamps[] = {1.0f, 1e-4f, 1e4f};
    for (size_t ti = 0; ti < 2; ti++) {
        double worst_el = 0.0, worst_dot = 0.0;
        int ok = 1;
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            for (unsigned s = 0; s < 9; s++)
                ok &= emu_case(ktypes[ti], ks[ki], s * 31u + (unsigned)ki, wamps[s % 3], xamps[s / 3], &worst_el,
                               &worst_dot);
        char name[200];
        snprintf(name, sizeof name,
                 "%s: unpacked d*sc*q - dmin*m vs lrun_dequantize_row %.1e <= 1e-6 (of |d*sc*q| + |dmin*m|), "
                 "dot error/terms %.1e <= 1e-6, extreme scales",
                 lrun_dtype_name(ktypes[ti]), worst_el, worst_dot);
        CHECK(name, ok && worst_el <= 1e-6 && worst_dot <= 1e-6);
    }
    return CHECK_DONE();
}
