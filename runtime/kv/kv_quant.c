/* kv_quant.c — the int8/int4 store of the QUANTIZED KV cache (kv_quant.h).
 *
 * A group of g elements x is stored as codes q = round((x - min) / scale),
 * scale = (max - min) / (2^bits - 1), clamped to [0, 2^bits - 1], and read
 * back as min + q·scale (asymmetric, as quanto's and HQQ's int4 with a zero
 * point): the error of an element is at most scale / 2. A group holding a
 * NaN or an infinity stores NaN as its scale and minimum, so it reads back as
 * NaN (the f32 cache would make that position's scores NaN too) instead of
 * converting NaN to an integer, which C leaves undefined (issue #16); the
 * CUDA store (kernels/kv_stage.cu) does the same. */
#include "kv/kv_quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "cpu/cpu_ops.h"
#include "core/device.h"
#include "core/error.h"
#include "quant/quant.h"

#define DEFAULT_BITS 8
#define DEFAULT_GROUP 64
#define DEFAULT_RESIDUAL 128 /* HF QuantizedCacheConfig.residual_length */
#define MIN_CODE_CAP 32

lrun_status lrun_kv_quant_setup(lrun_kv_cache *kv, const lrun_kv_quant_opts *o)
{
    const int bits = o->bits ? o->bits : DEFAULT_BITS;
    int64_t group = o->group ? o->group : (kv->head_dim < DEFAULT_GROUP ? kv->head_dim : DEFAULT_GROUP);
    const int64_t residual = o->residual ? o->residual : DEFAULT_RESIDUAL;
    if (bits != 8 && bits != 4) return lrun_fail(LRUN_E_ARG, "quantized KV cache: kv_quant_bits must be 8 or 4, got %d", bits);
    if (group <= 0 || group % 2 || kv->head_dim % group)
        return lrun_fail(LRUN_E_ARG, "quantized KV cache: kv_quant_group %lld must be even and divide head_dim %lld",
                         (long long)group, (long long)kv->head_dim);
    if (residual <= 0 || residual > ((int64_t)1 << 30))
        return lrun_fail(LRUN_E_ARG, "quantized KV cache: kv_residual_len %lld must be in [1, 2^30]", (long long)residual);
    kv->q_bits = bits;
    kv->q_group = group;
    kv->q_residual = residual;
    const size_t codes = bits == 8 ? (size_t)kv->kv_dim : (size_t)kv->kv_dim / 2;
    kv->q_pos_bytes = codes + (size_t)(kv->kv_dim / group) * 2 * sizeof(float);
    return LRUN_OK;
}

// ---------------------------------------------------------------- one position

/* codes and (scale, min) pairs of n elements (a whole number of groups) */
static void quantize(const lrun_kv_cache *kv, uint8_t *dst, const float *x)
{
    const int64_t g = kv->q_group, n = kv->kv_dim;
    const float qmax = kv->q_bits == 8 ? 255.0f : 15.0f;
    float *params = (float *)(dst + (kv->q_bits == 8 ? n : n / 2));
    if (kv->q_bits == 4) memset(dst, 0, (size_t)n / 2);
    for (int64_t j = 0; j < n; j += g) {
        float lo = INFINITY, hi = -INFINITY;
        int finite = 1;
        for (int64_t i = j; i < j + g; i++) {
            finite &= isfinite(x[i]) != 0;
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
        }
        if (!finite) { /* poison: the group reads back as NaN, as an f32 cache would give NaN scores */
            params[2 * (j / g)] = NAN;
            params[2 * (j / g) + 1] = NAN;
            if (kv->q_bits == 8) memset(dst + j, 0, (size_t)g);
            continue;
        }
        const float scale = (hi - lo) / qmax, inv = scale > 0 ? 1.0f / scale : 0.0f;
        params[2 * (j / g)] = scale;
        params[2 * (j / g) + 1] = lo;
        for (int64_t i = j; i < j + g; i++) {
            float q = nearbyintf((x[i] - lo) * inv);
            q = q >= 0 ? (q <= qmax ? q : qmax) : 0; /* NaN (hi - lo past FLT_MAX) is 0, as fmaxf on the GPU */
            if (kv->q_bits == 8) dst[i] = (uint8_t)q;
            else dst[i / 2] |= (uint8_t)((uint8_t)q << (4 * (i % 2)));
        }
    }
}

static void dequantize(const lrun_kv_cache *kv, float *x, const uint8_t *src)
{
    const int64_t g = kv->q_group, n = kv->kv_dim;
    const float *params = (const float *)(src + (kv->q_bits == 8 ? n : n / 2));
    for (int64_t i = 0; i < n; i++) {
        const unsigned q = kv->q_bits == 8 ? src[i] : (src[i / 2] >> (4 * (i % 2))) & 15u;
        x[i] = params[2 * (i / g) + 1] + (float)q * params[2 * (i / g)];
    }
}

static void to_f32(const lrun_kv_cache *kv, float *dst, const void *src, int64_t stride)
{
    for (int64_t i = 0; i < kv->kv_dim; i++)
        dst[i] = kv->dtype == LRUN_DTYPE_F16 ? lrun_f16_to_f32(((const uint16_t *)src)[i * stride])
                                             : ((const float *)src)[i * stride];
}

// ---------------------------------------------------------------- where things are

static uint8_t *codes_at(const lrun_kv_cache *kv, const lrun_kv_seq *rec, int64_t layer, int which, int64_t pos)
{
    return (uint8_t *)rec->data + ((size_t)(2 * layer + which) * (size_t)rec->cap + (size_t)pos) * kv->q_pos_bytes;
}

static char *ring_at(const lrun_kv_cache *kv, const lrun_kv_seq *rec, int64_t layer, int which, int64_t pos)
{
    const int64_t R = kv->q_residual;
    return (char *)rec->ring + ((size_t)(2 * layer + which) * (size_t)R + (size_t)(pos % R)) * (size_t)kv->kv_dim *
                                   kv->elem_bytes;
}

// ---------------------------------------------------------------- memory

int lrun_kv_quant_ring_bytes(const lrun_kv_cache *kv, size_t *out)
{
    return lrun_size_mul((size_t)kv->n_layer * 2 * (size_t)kv->q_residual, (size_t)kv->kv_dim * kv->elem_bytes, out);
}

int64_t lrun_kv_quant_code_cap(const lrun_kv_cache *kv, int64_t cap, int64_t n_pos, int64_t n_codes)
{
    const int64_t R = kv->q_residual;
    /* positions that may have left the ring, or that a copy brings as codes */
    const int64_t need = n_pos - R > n_codes ? n_pos - R : n_codes;
    if (need <= cap) return cap;
    cap = cap > 0 ? cap : MIN_CODE_CAP;
    while (cap < need) cap *= 2;
    return cap;
}

int64_t lrun_kv_quant_code_cap_before(const lrun_kv_cache *kv, int64_t cap)
{
    (void)kv;
    return cap > MIN_CODE_CAP ? cap / 2 : 0;
}

int lrun_kv_quant_codes_bytes(const lrun_kv_cache *kv, int64_t cap, size_t *out)
{
    return lrun_size_mul((size_t)kv->n_layer * 2 * (size_t)cap, kv->q_pos_bytes, out);
}

lrun_status lrun_kv_quant_reserve(lrun_kv_cache *kv, lrun_kv_seq *rec, int64_t seq, int64_t n_pos, int64_t n_codes)
{
    const int64_t R = kv->q_residual;
    void *ring = NULL;
    size_t ring_bytes = 0;
    if (!rec->ring && n_pos > 0) {
        if (!lrun_kv_quant_ring_bytes(kv, &ring_bytes))
            return lrun_fail(LRUN_E_OOM, "quantized KV cache: ring of %lld positions overflows", (long long)R);
        lrun_status st = lrun_device_alloc(kv->device, ring_bytes, "quantized KV cache (recent positions)", &ring);
        if (st != LRUN_OK) return lrun_fail_context(st, "KV cache: sequence %lld", (long long)seq);
    }
    const int64_t cap = lrun_kv_quant_code_cap(kv, rec->cap, n_pos, n_codes);
    if (cap > rec->cap) {
        size_t bytes;
        void *mem = NULL;
        lrun_status st = lrun_kv_quant_codes_bytes(kv, cap, &bytes)
                             ? lrun_device_alloc(kv->device, bytes, "quantized KV cache (codes)", &mem)
                             : lrun_fail(LRUN_E_OOM, "quantized KV cache: %lld positions overflow", (long long)cap);
        if (st != LRUN_OK) {
            if (ring) lrun_device_release(kv->device, ring, ring_bytes);
            return lrun_fail_context(st, "KV cache: sequence %lld", (long long)seq);
        }
        for (int64_t l = 0; rec->data && l < kv->n_layer; l++)
            for (int w = 0; w < 2; w++)
                memcpy((uint8_t *)mem + ((size_t)(2 * l + w) * (size_t)cap) * kv->q_pos_bytes,
                       codes_at(kv, rec, l, w, 0), (size_t)rec->q_lo * kv->q_pos_bytes);
        if (rec->data) lrun_device_release(kv->device, rec->data, rec->bytes);
        rec->data = mem;
        rec->cap = cap;
        rec->bytes = bytes;
    }
    if (ring) {
        rec->ring = ring;
        rec->ring_bytes = ring_bytes;
    }
    return LRUN_OK;
}

void lrun_kv_quant_release(lrun_kv_cache *kv, lrun_kv_seq *rec)
{
    if (rec->data) lrun_device_release(kv->device, rec->data, rec->bytes);
    if (rec->ring) lrun_device_release(kv->device, rec->ring, rec->ring_bytes);
}

size_t lrun_kv_quant_copy(const lrun_kv_cache *kv, lrun_kv_seq *dst, const lrun_kv_seq *src)
{
    size_t moved = 0;
    if (src->ring && dst->ring) {
        memcpy(dst->ring, src->ring, src->ring_bytes);
        moved += src->ring_bytes;
    }
    for (int64_t l = 0; src->q_lo > 0 && l < kv->n_layer; l++)
        for (int w = 0; w < 2; w++) {
            memcpy(codes_at(kv, dst, l, w, 0), codes_at(kv, src, l, w, 0), (size_t)src->q_lo * kv->q_pos_bytes);
            moved += (size_t)src->q_lo * kv->q_pos_bytes;
        }
    dst->q_lo = src->q_lo;
    return moved;
}

// ---------------------------------------------------------------- slots

size_t lrun_kv_quant_load(lrun_kv_cache *kv, const lrun_kv_seq *rec, int64_t layer, int64_t lo, void *k, void *v,
                          int64_t cap)
{
    const size_t eb = kv->elem_bytes;
    const int64_t d = kv->kv_dim;
    float row[d > 0 ? d : 1];
    size_t moved = 0;
    for (int64_t p = 0; p < lo; p++) {
        char *kd = (char *)k + (size_t)(p * d) * eb, *vd = (char *)v + (size_t)p * eb;
        if (p < rec->q_lo) {
            dequantize(kv, row, codes_at(kv, rec, layer, 0, p));
            lrun_cpu_kv_store(kd, kv->dtype, 1, row, d);
            dequantize(kv, row, codes_at(kv, rec, layer, 1, p));
            lrun_cpu_kv_store(vd, kv->dtype, cap, row, d);
            moved += 2 * kv->q_pos_bytes;
        } else { /* exact: the ring's bits */
            memcpy(kd, ring_at(kv, rec, layer, 0, p), (size_t)d * eb);
            const char *r = ring_at(kv, rec, layer, 1, p);
            for (int64_t c = 0; c < d; c++) memcpy(vd + (size_t)(c * cap) * eb, r + (size_t)c * eb, eb);
            moved += 2 * (size_t)d * eb;
        }
    }
    for (int64_t c = 0; c < d; c++) memset((char *)v + (size_t)(c * cap + lo) * eb, 0, (size_t)(cap - lo) * eb);
    return moved;
}

size_t lrun_kv_quant_write_back(lrun_kv_cache *kv, const lrun_kv_seq *rec, int64_t layer, int64_t lo, int64_t hi,
                                const void *k, const void *v, int64_t cap)
{
    const size_t eb = kv->elem_bytes;
    const int64_t d = kv->kv_dim, R = kv->q_residual;
    float row[d > 0 ? d : 1];
    size_t moved = 0;
    for (int64_t p = lo; p < hi; p++) {
        /* position p - R leaves the ring: its exact values become codes first */
        const int64_t out = p - R;
        if (out >= rec->q_lo) {
            to_f32(kv, row, ring_at(kv, rec, layer, 0, out), 1);
            quantize(kv, codes_at(kv, rec, layer, 0, out), row);
            to_f32(kv, row, ring_at(kv, rec, layer, 1, out), 1);
            quantize(kv, codes_at(kv, rec, layer, 1, out), row);
            moved += 2 * kv->q_pos_bytes;
        }
        memcpy(ring_at(kv, rec, layer, 0, p), (const char *)k + (size_t)(p * d) * eb, (size_t)d * eb);
        char *r = ring_at(kv, rec, layer, 1, p);
        for (int64_t c = 0; c < d; c++) memcpy(r + (size_t)c * eb, (const char *)v + (size_t)(c * cap + p) * eb, eb);
        moved += 2 * (size_t)d * eb;
    }
    return moved;
}

void lrun_kv_quant_chunk_done(const lrun_kv_cache *kv, lrun_kv_seq *rec, int64_t hi)
{
    if (hi - kv->q_residual > rec->q_lo) rec->q_lo = hi - kv->q_residual;
}
