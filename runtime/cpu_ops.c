/* cpu_ops.c — element-wise and attention ops of the CPU forward pass (f32 compute).
 *
 * The hot loops (exp in SwiGLU and softmax, f16 dot products in attention)
 * have AVX2/F16C/FMA paths, taken when the build targets them
 * (-march=native); the scalar paths compute the same math. */
#include "cpu_ops.h"

#include <math.h>
#include <string.h>

#include "error.h"
#include "quant.h"
#include "quant_dot.h"

#include <stdatomic.h>

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#define LRUN_OPS_AVX2 1
#include <immintrin.h>
#endif

// ---------------------------------------------------------------- vector helpers

#ifdef LRUN_OPS_AVX2
static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* e^x for 8 lanes: x = n·ln2 + r with |r| <= ln2/2, e^r by its degree-6
 * Taylor polynomial (relative error < 2e-7), times 2^n built in the exponent
 * bits. x is clamped to [-87, 88] so 2^n stays a normal float: e^-87 is
 * below every weight a softmax or SiLU can notice. */
static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  /* ln2 high part, exact in float */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);       /* ln2 low part */
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

// ---------------------------------------------------------------- f16 rows

void lrun_cpu_f16_from_f32(uint16_t *dst, const float *src, int64_t n)
{
    int64_t i = 0;
#ifdef LRUN_OPS_AVX2
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) dst[i] = lrun_f32_to_f16(src[i]);
}

void lrun_cpu_f32_from_f16(float *dst, const uint16_t *src, int64_t n)
{
    int64_t i = 0;
#ifdef LRUN_OPS_AVX2
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++) dst[i] = lrun_f16_to_f32(src[i]);
}

// ---------------------------------------------------------------- norms and activations

void lrun_cpu_rms_norm(float *y, const float *x, const float *w, int64_t n, float eps)
{
    /* double sum, as ggml: n can be thousands and x² spans many magnitudes */
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float s = (float)(1.0 / sqrt(ss / (double)n + eps));
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * s * w[i];
}

void lrun_cpu_swiglu(float *g, const float *u, int64_t n)
{
    int64_t i = 0;
#ifdef LRUN_OPS_AVX2
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(g + i);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), a));
        __m256 s = _mm256_div_ps(a, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
#endif
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void lrun_cpu_softmax(float *x, int64_t n)
{
    if (n <= 0) return;
    float mx = x[0];
    for (int64_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    int64_t i = 0;
#ifdef LRUN_OPS_AVX2
    __m256 vsum = _mm256_setzero_ps();
    const __m256 vmx = _mm256_set1_ps(mx);
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    sum = hsum8(vsum);
#endif
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    for (i = 0; i < n; i++) x[i] *= inv;
}

void lrun_cpu_add(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

// ---------------------------------------------------------------- embedding

lrun_status lrun_cpu_embedding_row(const struct lrun_tensor *table, int64_t row, float *dst)
{
    if (row < 0 || row >= table->ne[1])
        return lrun_fail(LRUN_E_ARG, "embedding: row %lld out of range [0, %lld) of '%s'", (long long)row,
                         (long long)table->ne[1], table->name);
    const void *bytes = lrun_tensor_host_data(table);
    if (!bytes) return lrun_fail(LRUN_E_ARG, "embedding: '%s' has no host-addressable bytes", table->name);
    return lrun_dtype_to_f32(table->dtype, (const char *)bytes + (size_t)row * table->row_bytes, dst, table->ne[0]);
}

// ---------------------------------------------------------------- RoPE

void lrun_cpu_rope_cos_sin(const lrun_rope *rope, int64_t pos, float *cs)
{
    const int64_t half = rope->n_rot / 2;
    for (int64_t i = 0; i < half; i++) {
        double theta = (double)pos * rope->freq_scale * pow(rope->freq_base, -2.0 * (double)i / (double)rope->n_rot);
        if (rope->freq_factors) theta /= rope->freq_factors[i];
        cs[2 * i] = (float)cos(theta);
        cs[2 * i + 1] = (float)sin(theta);
    }
}

void lrun_cpu_rope_apply(const lrun_rope *rope, const float *cs, float *x, int64_t n_head, int64_t head_dim)
{
    const int64_t half = rope->n_rot / 2;
    for (int64_t h = 0; h < n_head; h++) {
        float *xh = x + h * head_dim;
        if (rope->style == LRUN_ROPE_STYLE_ADJACENT) {
            for (int64_t i = 0; i < half; i++) {
                const float c = cs[2 * i], s = cs[2 * i + 1];
                const float a = xh[2 * i], b = xh[2 * i + 1];
                xh[2 * i] = a * c - b * s;
                xh[2 * i + 1] = a * s + b * c;
            }
        } else {
            for (int64_t i = 0; i < half; i++) {
                const float c = cs[2 * i], s = cs[2 * i + 1];
                const float a = xh[i], b = xh[i + half];
                xh[i] = a * c - b * s;
                xh[i + half] = a * s + b * c;
            }
        }
    }
}

// ---------------------------------------------------------------- attention

static inline float dot_f32_f16(const float *q, const uint16_t *k, int64_t n)
{
    int64_t i = 0;
    float sum = 0.0f;
#ifdef LRUN_OPS_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i))), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8),
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i + 8))), a1);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i))), a0);
    sum = hsum8(_mm256_add_ps(a0, a1));
#endif
    for (; i < n; i++) sum += q[i] * lrun_f16_to_f32(k[i]);
    return sum;
}

/* out (n) += p * v (n), v in f16 */
static inline void axpy_f16(float *out, float p, const uint16_t *v, int64_t n)
{
    int64_t i = 0;
#ifdef LRUN_OPS_AVX2
    const __m256 vp = _mm256_set1_ps(p);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(vp, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i))),
                                                  _mm256_loadu_ps(out + i)));
#endif
    for (; i < n; i++) out[i] += p * lrun_f16_to_f32(v[i]);
}

#ifdef LRUN_OPS_AVX2
static inline __m256 load_f16x8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* scores[0..4) = scale * (q · k_j) for the 4 rows k_j = k + j*stride; head_dim a
 * multiple of 8. Four rows at a time share each load of q and one horizontal
 * reduction (hadd tree) instead of four. */
static inline void dot4_f32_f16(float *scores, const float *q, const uint16_t *k, int64_t stride, int64_t n,
                                float scale)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
        a0 = _mm256_fmadd_ps(qv, load_f16x8(k + i), a0);
        a1 = _mm256_fmadd_ps(qv, load_f16x8(k + stride + i), a1);
        a2 = _mm256_fmadd_ps(qv, load_f16x8(k + 2 * stride + i), a2);
        a3 = _mm256_fmadd_ps(qv, load_f16x8(k + 3 * stride + i), a3);
    }
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    const __m128 r = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    _mm_storeu_ps(scores, _mm_mul_ps(r, _mm_set1_ps(scale)));
}

/* out (n) += sum over j < 4 of p[j] * v_j, v_j = v + j*stride in f16; n a multiple of 8.
 * Each chunk of out is loaded and stored once per four rows. */
static inline void axpy4_f16(float *out, const float *p, const uint16_t *v, int64_t stride, int64_t n)
{
    const __m256 p0 = _mm256_set1_ps(p[0]), p1 = _mm256_set1_ps(p[1]), p2 = _mm256_set1_ps(p[2]),
                 p3 = _mm256_set1_ps(p[3]);
    for (int64_t i = 0; i < n; i += 8) {
        __m256 o = _mm256_loadu_ps(out + i);
        o = _mm256_fmadd_ps(p0, load_f16x8(v + i), o);
        o = _mm256_fmadd_ps(p1, load_f16x8(v + stride + i), o);
        o = _mm256_fmadd_ps(p2, load_f16x8(v + 2 * stride + i), o);
        o = _mm256_fmadd_ps(p3, load_f16x8(v + 3 * stride + i), o);
        _mm256_storeu_ps(out + i, o);
    }
}
#endif

void lrun_cpu_attention_head(float *out, const float *q, const uint16_t *k, const uint16_t *v,
                             int64_t kv_stride, int64_t n_pos, int64_t head_dim, float scale,
                             float *scores)
{
    int64_t t = 0;
#ifdef LRUN_OPS_AVX2
    if (head_dim % 8 == 0)
        for (; t + 4 <= n_pos; t += 4) dot4_f32_f16(scores + t, q, k + t * kv_stride, kv_stride, head_dim, scale);
#endif
    for (; t < n_pos; t++) scores[t] = scale * dot_f32_f16(q, k + t * kv_stride, head_dim);
    lrun_cpu_softmax(scores, n_pos);
    memset(out, 0, (size_t)head_dim * sizeof *out);
    t = 0;
#ifdef LRUN_OPS_AVX2
    if (head_dim % 8 == 0)
        for (; t + 4 <= n_pos; t += 4) axpy4_f16(out, scores + t, v + t * kv_stride, kv_stride, head_dim);
#endif
    for (; t < n_pos; t++) axpy_f16(out, scores[t], v + t * kv_stride, head_dim);
}

struct attention_task {
    const lrun_attention_batch *b;
};

static void attention_worker(void *ctx, int ith, int nth)
{
    const lrun_attention_batch *b = ((struct attention_task *)ctx)->b;
    const int64_t group = b->n_head / b->n_head_kv;
    const int64_t kv_stride = b->n_head_kv * b->head_dim;
    float *scores = b->scores + (int64_t)ith * b->scores_stride;
    /* tasks are interleaved, not split in blocks: in a causal prefill later
     * tokens see more positions, and interleaving spreads them evenly */
    for (int64_t task = ith; task < b->n_tok * b->n_head; task += nth) {
        const int64_t i = task / b->n_head, h = task % b->n_head, hk = h / group;
        const int64_t off = (i * b->n_head + h) * b->head_dim;
        lrun_cpu_attention_head(b->out + off, b->q + off, b->k[i] + hk * b->head_dim, b->v[i] + hk * b->head_dim,
                                kv_stride, b->n_pos[i], b->head_dim, b->scale, scores);
    }
}

void lrun_cpu_attention(lrun_threadpool *pool, const lrun_attention_batch *batch)
{
    struct attention_task task = {batch};
    if (!pool || batch->n_tok * batch->n_head == 1) attention_worker(&task, 0, 1);
    else lrun_threadpool_run(pool, attention_worker, &task);
}

// ---------------------------------------------------------------- fused matrix-vector products

static size_t partner_row_bytes(lrun_dtype weight_dtype, int64_t k)
{
    const lrun_dtype p = lrun_dot_partner(weight_dtype);
    if (p == LRUN_DTYPE_F32 || p == LRUN_DTYPE_F16 || p == LRUN_DTYPE_BF16) return 0; /* x is used as it is */
    return (size_t)(k / lrun_dtype_block_elems(p)) * lrun_dtype_block_bytes(p);
}

size_t lrun_cpu_matvec_work_bytes(const lrun_matvec *parts, int n_parts)
{
    size_t total = 0;
    for (int i = 0; i < n_parts; i++) total += (partner_row_bytes(parts[i].dtype, parts[i].k) + 63) & ~(size_t)63;
    return total;
}

struct matvec_task {
    int n_parts;
    struct {
        lrun_dot_fn dot;
        const uint8_t *w;
        size_t row_bytes;
        int64_t first, k;  /* first: index of row 0 in the concatenated row space */
        const void *x;     /* the partner row */
        float *y;
    } part[LRUN_MATVEC_MAX_PARTS];
    int64_t total, chunk;
    _Alignas(64) _Atomic int64_t next; /* first concatenated row not yet taken */
};

static void matvec_worker(void *ctx, int ith, int nth)
{
    (void)ith, (void)nth;
    struct matvec_task *t = ctx;
    for (;;) {
        int64_t i = atomic_fetch_add_explicit(&t->next, t->chunk, memory_order_relaxed);
        if (i >= t->total) break;
        const int64_t end = i + t->chunk < t->total ? i + t->chunk : t->total;
        int p = 0;
        while (p + 1 < t->n_parts && t->part[p + 1].first <= i) p++;
        for (; i < end; i++) {
            while (p + 1 < t->n_parts && t->part[p + 1].first <= i) p++;
            const int64_t r = i - t->part[p].first;
            t->part[p].dot(t->part[p].k, t->part[p].w + (size_t)r * t->part[p].row_bytes, t->part[p].x, 0, 1,
                           &t->part[p].y[r]);
        }
    }
}

void lrun_cpu_matvec_multi(lrun_threadpool *pool, const lrun_matvec *parts, int n_parts, void *work)
{
    struct matvec_task t;
    t.n_parts = n_parts;
    t.total = 0;
    uint8_t *cursor = work;
    for (int i = 0; i < n_parts; i++) {
        const lrun_matvec *mv = &parts[i];
        const lrun_dtype partner = lrun_dot_partner(mv->dtype);
        const size_t xb = partner_row_bytes(mv->dtype, mv->k);
        t.part[i].dot = lrun_dot_kernel(mv->dtype);
        t.part[i].w = mv->w;
        t.part[i].row_bytes = mv->row_bytes;
        t.part[i].first = t.total;
        t.part[i].k = mv->k;
        t.part[i].y = mv->y;
        t.total += mv->n;
        if (xb == 0) {
            t.part[i].x = mv->x;
            continue;
        }
        /* q, k and v (gate and up) read the same x: convert it once */
        int shared = -1;
        for (int j = 0; j < i && shared < 0; j++)
            if (parts[j].x == mv->x && parts[j].k == mv->k && lrun_dot_partner(parts[j].dtype) == partner) shared = j;
        if (shared >= 0) {
            t.part[i].x = t.part[shared].x;
            continue;
        }
        lrun_quantize_row(partner, mv->x, cursor, mv->k);
        t.part[i].x = cursor;
        cursor += (xb + 63) & ~(size_t)63;
    }
    const int nth = pool ? lrun_threadpool_size(pool) : 1;
    /* about 8 chunks per thread so a late thread takes fewer; multiples of 16
     * rows so that neighbouring chunks of y do not share a cache line */
    int64_t c = (t.total + (int64_t)nth * 8 - 1) / ((int64_t)nth * 8);
    t.chunk = c < 16 ? 16 : (c + 15) / 16 * 16;
    atomic_init(&t.next, 0);
    if (nth <= 1) matvec_worker(&t, 0, 1);
    else lrun_threadpool_run(pool, matvec_worker, &t);
}

// ---------------------------------------------------------------- parallel rows

struct range_task {
    lrun_range_fn fn;
    void *ctx;
    int64_t n;
};

static void range_worker(void *ctx, int ith, int nth)
{
    const struct range_task *t = ctx;
    const int64_t first = t->n * ith / nth, last = t->n * (ith + 1) / nth;
    if (first < last) t->fn(t->ctx, first, last);
}

void lrun_cpu_parallel_for(lrun_threadpool *pool, int64_t n, int64_t min_parallel, lrun_range_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (!pool || n < min_parallel || lrun_threadpool_size(pool) <= 1) {
        fn(ctx, 0, n);
        return;
    }
    struct range_task t = {fn, ctx, n};
    lrun_threadpool_run(pool, range_worker, &t);
}
