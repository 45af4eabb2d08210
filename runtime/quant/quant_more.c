/* quant_more.c — the codecs of Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL and
 * IQ4_XS: scalar dequantizers (ggml's dequantize_row_*, value for value)
 * and round-to-nearest quantizers that write valid blocks. The quantizers of
 * Q5_0/Q5_1 are ggml's reference ones (same bytes as gguf-py); the others
 * are simpler than llama.cpp's search-based ones (no error weighting), which
 * only changes which valid block a row becomes, never how it decodes.
 * Block layouts: quant.h. */
#include "quant/quant_dot.h"
#include "quant/quant_round.h"

#include <math.h>
#include <string.h>

const int8_t lrun_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};


// ---------------------------------------------------------------- shared bit layouts

/* Element e (0..31) of a Q5 block: low nibbles are 0..15, high 16..31; bit e of qh is the fifth bit. */
static inline int q5_elem(const uint8_t *qs, const uint8_t *qh, int e)
{
    const uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
    const int lo = e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4;
    return lo | (int)((h >> e) & 1) << 4;
}

static void k4_pack_scale_min(uint8_t s[12], const uint8_t sc[8], const uint8_t mn[8])
{
    memset(s, 0, 12);
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            s[j] = sc[j];
            s[j + 4] = mn[j];
        } else {
            s[j + 4] = (uint8_t)((sc[j] & 0xF) | ((mn[j] & 0xF) << 4));
            s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

/* The 2-bit field of element 128n + 32j + l of Q2_K/Q3_K (l < 32): bits 2j of qs[32n + l]. */
static inline int k2_bits(const uint8_t *qs, int e) { return (qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3; }

// ---------------------------------------------------------------- dequantize

void lrun_dequant_q5_0(const void *src, float *y, int64_t nb)
{
    const lrun_block_q5_0 *b = src;
    for (int64_t i = 0; i < nb; ++i, y += 32) {
        const float d = lrun_f16_to_f32(b[i].d);
        for (int e = 0; e < 32; ++e) y[e] = (float)(q5_elem(b[i].qs, b[i].qh, e) - 16) * d;
    }
}

void lrun_dequant_q5_1(const void *src, float *y, int64_t nb)
{
    const lrun_block_q5_1 *b = src;
    for (int64_t i = 0; i < nb; ++i, y += 32) {
        const float d = lrun_f16_to_f32(b[i].d), m = lrun_f16_to_f32(b[i].m);
        for (int e = 0; e < 32; ++e) y[e] = (float)q5_elem(b[i].qs, b[i].qh, e) * d + m;
    }
}

void lrun_dequant_q2_K(const void *src, float *y, int64_t nb)
{
    const lrun_block_q2_K *b = src;
    for (int64_t i = 0; i < nb; ++i, y += 256) {
        const float d = lrun_f16_to_f32(b[i].d), dmin = lrun_f16_to_f32(b[i].dmin);
        for (int e = 0; e < 256; ++e) {
            const int sc = b[i].scales[e / 16];
            const float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
            y[e] = dl * (float)k2_bits(b[i].qs, e) - ml;
        }
    }
}

void lrun_dequant_q3_K(const void *src, float *y, int64_t nb)
{
    const lrun_block_q3_K *b = src;
    for (int64_t i = 0; i < nb; ++i, y += 256) {
        const float d = lrun_f16_to_f32(b[i].d);
        for (int e = 0; e < 256; ++e) {
            const float dl = d * (float)lrun_q3_K_scale(b[i].scales, e / 16);
            const int hbit = (b[i].hmask[e & 31] >> (e / 32)) & 1; /* set: no −4 */
            y[e] = dl * (float)(k2_bits(b[i].qs, e) - (hbit ? 0 : 4));
        }
    }
}

void lrun_dequant_q5_K(const void *src, float *y, int64_t nb)
{
    const lrun_block_q5_K *b = src;
    for (int64_t i = 0; i < nb; ++i) {
        const float d = lrun_f16_to_f32(b[i].d), dmin = lrun_f16_to_f32(b[i].dmin);
        const uint8_t *ql = b[i].qs;
        for (int c = 0; c < 4; ++c, ql += 32, y += 64) {
            int sc0, m0, sc1, m1;
            lrun_k4_scale_min(b[i].scales, 2 * c, &sc0, &m0);
            lrun_k4_scale_min(b[i].scales, 2 * c + 1, &sc1, &m1);
            const float d1 = d * (float)sc0, mm1 = dmin * (float)m0, d2 = d * (float)sc1, mm2 = dmin * (float)m1;
            for (int l = 0; l < 32; ++l) {
                y[l] = d1 * (float)((ql[l] & 0xF) + ((b[i].qh[l] >> (2 * c)) & 1) * 16) - mm1;
                y[l + 32] = d2 * (float)((ql[l] >> 4) + ((b[i].qh[l] >> (2 * c + 1)) & 1) * 16) - mm2;
            }
        }
    }
}

void lrun_dequant_iq4_nl(const void *src, float *y, int64_t nb)
{
    const lrun_block_iq4_nl *b = src;
    for (int64_t i = 0; i < nb; ++i, y += 32) {
        const float d = lrun_f16_to_f32(b[i].d);
        for (int j = 0; j < 16; ++j) {
            y[j] = d * (float)lrun_kvalues_iq4nl[b[i].qs[j] & 0xF];
            y[j + 16] = d * (float)lrun_kvalues_iq4nl[b[i].qs[j] >> 4];
        }
    }
}

void lrun_dequant_iq4_xs(const void *src, float *y, int64_t nb)
{
    const lrun_block_iq4_xs *b = src;
    for (int64_t i = 0; i < nb; ++i) {
        const float d = lrun_f16_to_f32(b[i].d);
        const uint8_t *qs = b[i].qs;
        for (int j = 0; j < 8; ++j, qs += 16, y += 32) {
            const float dl = d * (float)lrun_iq4_xs_scale(&b[i], j);
            for (int l = 0; l < 16; ++l) {
                y[l] = dl * (float)lrun_kvalues_iq4nl[qs[l] & 0xF];
                y[l + 16] = dl * (float)lrun_kvalues_iq4nl[qs[l] >> 4];
            }
        }
    }
}

// ---------------------------------------------------------------- quantize: 32-element types

/* Quants q (32, 0..31) into Q5's qs (low nibbles) and qh (fifth bits). */
static void q5_pack(const int q[32], uint8_t qs[16], uint8_t qh[4])
{
    uint32_t h = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
        h |= (uint32_t)(q[j] >> 4) << j;
        h |= (uint32_t)(q[j + 16] >> 4) << (j + 16);
    }
    for (int j = 0; j < 4; ++j) qh[j] = (uint8_t)(h >> (8 * j));
}

/* ggml's quantize_row_q5_0_ref: the value of largest magnitude maps to −16. */
void lrun_quant_q5_0(const float *x, void *dst, int64_t nb)
{
    lrun_block_q5_0 *b = dst;
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; ++j)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int q[32];
        for (int j = 0; j < 32; ++j) {
            q[j] = lrun_trunc_sat(x[j] * id + 16.5f, 0, 31, 16); /* ggml: MIN(31, (int8_t)v) */
        }
        b[i].d = lrun_f32_to_f16(d);
        q5_pack(q, b[i].qs, b[i].qh);
    }
}

/* ggml's quantize_row_q5_1_ref: [min, max] in 31 steps. */
void lrun_quant_q5_1(const float *x, void *dst, int64_t nb)
{
    lrun_block_q5_1 *b = dst;
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < 32; ++j) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int q[32];
        for (int j = 0; j < 32; ++j) {
            q[j] = lrun_trunc_sat((x[j] - min) * id + 0.5f, 0, 31, 0);
        }
        b[i].d = lrun_f32_to_f16(d);
        b[i].m = lrun_f32_to_f16(min);
        q5_pack(q, b[i].qs, b[i].qh);
    }
}

/* The index of the IQ4 value nearest to v (the table is sorted). */
static int iq4_index(float v)
{
    int best = 0;
    float err = fabsf(v - (float)lrun_kvalues_iq4nl[0]);
    for (int k = 1; k < 16; ++k) {
        const float e = fabsf(v - (float)lrun_kvalues_iq4nl[k]);
        if (e < err) err = e, best = k;
    }
    return best;
}

/* The value of largest magnitude in x (n), sign kept. */
static float signed_max(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; ++j)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

/* 32 values with scale dl into IQ4 nibbles (low: elements 0..15, high: 16..31). */
static void iq4_pack(const float *x, float dl, uint8_t qs[16])
{
    const float id = dl != 0.0f ? 1.0f / dl : 0.0f;
    for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)(iq4_index(x[j] * id) | (iq4_index(x[j + 16] * id) << 4));
}

/* IQ4_NL: the value of largest magnitude maps to the table's −127. */
void lrun_quant_iq4_nl(const float *x, void *dst, int64_t nb)
{
    lrun_block_iq4_nl *b = dst;
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        b[i].d = lrun_f32_to_f16(signed_max(x, 32) / -127.0f);
        iq4_pack(x, lrun_f16_to_f32(b[i].d), b[i].qs);
    }
}

// ---------------------------------------------------------------- quantize: 256-element types

/* Affine sub-blocks (Q2_K: 16 of 16, Q5_K: 8 of 32): each gets [lo, hi] with
 * lo ≤ 0 so zero is representable, scale (hi − lo)/qmax and min −lo; the
 * scales and mins are rounded to smax steps of d and dmin, and the values
 * against the scales as stored. q gets the quants (0..qmax). */
static void affine_subblocks(const float *x, int n_sub, int len, int qmax, int smax, uint8_t *sc, uint8_t *mn,
                             float *d_out, float *dmin_out, uint16_t *d16, uint16_t *dmin16, uint8_t *q)
{
    float scale[16], mins[16], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < n_sub; ++j) {
        float lo = 0.0f, hi = 0.0f;
        for (int l = 0; l < len; ++l) {
            lo = fminf(lo, x[len * j + l]);
            hi = fmaxf(hi, x[len * j + l]);
        }
        scale[j] = (hi - lo) / (float)qmax;
        mins[j] = -lo;
        max_scale = fmaxf(max_scale, scale[j]);
        max_min = fmaxf(max_min, mins[j]);
    }
    *d16 = lrun_f32_to_f16(max_scale / (float)smax);
    *dmin16 = lrun_f32_to_f16(max_min / (float)smax);
    const float d = lrun_f16_to_f32(*d16), dmin = lrun_f16_to_f32(*dmin16);
    for (int j = 0; j < n_sub; ++j) {
        sc[j] = (uint8_t)(d > 0.0f ? lrun_nearest_sat(scale[j] / d, 0, smax, 0) : 0);
        mn[j] = (uint8_t)(dmin > 0.0f ? lrun_nearest_sat(mins[j] / dmin, 0, smax, 0) : 0);
        const float ds = d * (float)sc[j], dm = dmin * (float)mn[j];
        for (int l = 0; l < len; ++l)
            q[len * j + l] = (uint8_t)(ds > 0.0f ? lrun_nearest_sat((x[len * j + l] + dm) / ds, 0, qmax, 0) : 0);
    }
    *d_out = d;
    *dmin_out = dmin;
}

void lrun_quant_q2_K(const float *x, void *dst, int64_t nb)
{
    lrun_block_q2_K *b = dst;
    for (int64_t i = 0; i < nb; ++i, x += 256) {
        uint8_t sc[16], mn[16], q[256];
        float d, dmin;
        affine_subblocks(x, 16, 16, 3, 15, sc, mn, &d, &dmin, &b[i].d, &b[i].dmin, q);
        for (int j = 0; j < 16; ++j) b[i].scales[j] = (uint8_t)(sc[j] | (mn[j] << 4));
        memset(b[i].qs, 0, sizeof b[i].qs);
        for (int e = 0; e < 256; ++e) b[i].qs[32 * (e >> 7) + (e & 31)] |= (uint8_t)(q[e] << (2 * ((e >> 5) & 3)));
    }
}

void lrun_quant_q5_K(const float *x, void *dst, int64_t nb)
{
    lrun_block_q5_K *b = dst;
    for (int64_t i = 0; i < nb; ++i, x += 256) {
        uint8_t sc[8], mn[8], q[256];
        float d, dmin;
        affine_subblocks(x, 8, 32, 31, 63, sc, mn, &d, &dmin, &b[i].d, &b[i].dmin, q);
        k4_pack_scale_min(b[i].scales, sc, mn);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l) {
                const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
                b[i].qs[32 * c + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
                b[i].qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            }
    }
}

/* Symmetric sub-blocks (Q3_K: 16 of 16 in −4..3; IQ4_XS: 8 of 32 on the
 * table): ideal scale per sub-block from its value of largest magnitude
 * (which maps to lowest, the most negative quant), then rounded to a 6-bit
 * signed step (−32..31) of d, the ideal scale of largest magnitude mapping
 * to −32. ls gets the steps, returns d as stored. */
static float symmetric_scales(const float *x, int n_sub, int len, float lowest, int8_t *ls, uint16_t *d16)
{
    float scale[16], max_scale = 0.0f, amax_scale = 0.0f;
    for (int j = 0; j < n_sub; ++j) {
        scale[j] = signed_max(x + len * j, len) / lowest;
        if (fabsf(scale[j]) > amax_scale) {
            amax_scale = fabsf(scale[j]);
            max_scale = scale[j];
        }
    }
    *d16 = lrun_f32_to_f16(max_scale / -32.0f);
    const float d = lrun_f16_to_f32(*d16);
    for (int j = 0; j < n_sub; ++j) ls[j] = (int8_t)(d != 0.0f ? lrun_nearest_sat(scale[j] / d, -32, 31, 0) : 0);
    return d;
}

void lrun_quant_q3_K(const float *x, void *dst, int64_t nb)
{
    lrun_block_q3_K *b = dst;
    for (int64_t i = 0; i < nb; ++i, x += 256) {
        int8_t ls[16];
        const float d = symmetric_scales(x, 16, 16, -4.0f, ls, &b[i].d);
        memset(b[i].scales, 0, sizeof b[i].scales);
        for (int j = 0; j < 16; ++j) {
            const int s = ls[j] + 32;
            b[i].scales[j & 7] |= (uint8_t)((s & 0xF) << (4 * (j >> 3)));
            b[i].scales[8 + (j & 3)] |= (uint8_t)((s >> 4) << (2 * (j >> 2)));
        }
        memset(b[i].qs, 0, sizeof b[i].qs);
        memset(b[i].hmask, 0, sizeof b[i].hmask);
        for (int e = 0; e < 256; ++e) {
            const float ds = d * (float)ls[e / 16];
            const int q = (ds != 0.0f ? lrun_nearest_sat(x[e] / ds, -4, 3, 0) : 0) + 4; /* 0..7 */
            b[i].qs[32 * (e >> 7) + (e & 31)] |= (uint8_t)((q & 3) << (2 * ((e >> 5) & 3)));
            b[i].hmask[e & 31] |= (uint8_t)((q >> 2) << (e / 32));
        }
    }
}

void lrun_quant_iq4_xs(const float *x, void *dst, int64_t nb)
{
    lrun_block_iq4_xs *b = dst;
    for (int64_t i = 0; i < nb; ++i, x += 256) {
        int8_t ls[8];
        const float d = symmetric_scales(x, 8, 32, -127.0f, ls, &b[i].d);
        b[i].scales_h = 0;
        memset(b[i].scales_l, 0, sizeof b[i].scales_l);
        for (int j = 0; j < 8; ++j) {
            const int s = ls[j] + 32;
            b[i].scales_l[j / 2] |= (uint8_t)((s & 0xF) << (4 * (j % 2)));
            b[i].scales_h |= (uint16_t)((s >> 4) << (2 * j));
            iq4_pack(x + 32 * j, d * (float)ls[j], b[i].qs + 16 * j);
        }
    }
}
