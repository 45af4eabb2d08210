/* test_kernels_exact_gpu.c — the exact-path kernels (kernels.h, "the exact
 * path") against their CPU twins, to the bit: lrun_k_quantize_q8 against
 * lrun_quantize_activations, lrun_k_q8dot against lrun_vec_dot,
 * lrun_k_rms_norm_exact against lrun_cpu_rms_norm, lrun_k_swiglu_exact
 * against lrun_cpu_swiglu, lrun_k_rope_store_exact against
 * lrun_cpu_rope_apply and lrun_cpu_kv_store, and lrun_k_attention_exact
 * against lrun_cpu_attention_head (f16 and f32 caches, both step orders,
 * head sizes 64 and 40). Inputs are random with odd shapes, and the norm and
 * SwiGLU inputs include outliers and the exp's out-of-range branches. */
#include "check.h"
#include "cpu/cpu_ops.h"
#include "cuda/cuda_backend.h"
#include "core/device.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "kernels.h"

static lrun_device *dev;
static void *stream;
static uint8_t *arena;
static size_t arena_cap, arena_used;

static void *dbuf(size_t bytes)
{
    size_t off = (arena_used + 255) & ~(size_t)255;
    if (off + bytes > arena_cap) {
        printf("Bail out! test arena of %zu bytes exhausted\n", arena_cap);
        exit(1);
    }
    arena_used = off + bytes;
    return arena + off;
}

static void xfer(void *dst, const void *src, size_t n, int to_device)
{
    if (lrun_cuda_memcpy(dev, dst, src, n, to_device ? LRUN_COPY_HOST_TO_DEVICE : LRUN_COPY_DEVICE_TO_HOST) != LRUN_OK) {
        printf("Bail out! copy: %s\n", lrun_last_error());
        exit(1);
    }
}

static void *dcopy(const void *h, size_t n)
{
    void *d = dbuf(n);
    xfer(d, h, n, 1);
    return d;
}

static int ran(lrun_status st)
{
    if (st != LRUN_OK) {
        printf("# kernel: %s\n", lrun_last_error());
        return 0;
    }
    if (lrun_cuda_stream_sync(dev, stream) != LRUN_OK) {
        printf("# sync: %s\n", lrun_last_error());
        return 0;
    }
    return 1;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(float lo, float hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

/* Activations with SmolLM2-like outliers: mostly small, a few large. */
static float *activations(int64_t n)
{
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = frand(-1.0f, 1.0f) * (i % 53 == 7 ? 300.0f : 1.0f);
    return v;
}

static int same(const char *what, const float *cpu, const float *gpu, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&cpu[i], &gpu[i], sizeof *cpu) != 0) {
            printf("# %s: first difference at %lld: CPU %a, CUDA %a\n", what, (long long)i, (double)cpu[i],
                   (double)gpu[i]);
            return 0;
        }
    return 1;
}

// ---------------------------------------------------------------- quantize and dot

static void test_quantize(lrun_dtype partner)
{
    enum { M = 3, K = 160, NB = K / 32 };
    float *x = activations(M * K);
    x[5] = 0.5f * 127.0f / 127.0f; /* a few exact halves: the ties-to-even rule */
    for (int j = 0; j < 32; j++) x[2 * K + j] = 0.0f; /* an all-zero block: id = 0 */
    arena_used = 0;
    int8_t *qs = dbuf(M * K);
    float *d = dbuf(M * NB * sizeof(float)), *s = dbuf(M * NB * sizeof(float));
    int ok = ran(lrun_k_quantize_q8(partner, dcopy(x, sizeof(float) * M * K), M, K, qs, d, s, stream));
    int8_t hq[M * K];
    float hd[M * NB], hs[M * NB];
    xfer(hq, qs, sizeof hq, 0), xfer(hd, d, sizeof hd, 0), xfer(hs, s, sizeof hs, 0);
    const size_t bb = lrun_dtype_block_bytes(partner);
    uint8_t *ref = malloc((size_t)M * NB * bb);
    for (int r = 0; r < M; r++) lrun_quantize_activations(partner, x + r * K, ref + (size_t)r * NB * bb, K);
    for (int b = 0; ok && b < M * NB; b++) {
        const uint8_t *blk = ref + (size_t)b * bb;
        if (partner == LRUN_DTYPE_Q8_0) {
            const lrun_block_q8_0 *q = (const void *)blk;
            ok = memcmp(q->qs, hq + b * 32, 32) == 0 && lrun_f16_to_f32(q->d) == hd[b];
        } else {
            const lrun_block_q8_1 *q = (const void *)blk;
            ok = memcmp(q->qs, hq + b * 32, 32) == 0 && memcmp(&q->d, &hd[b], 4) == 0 && memcmp(&q->s, &hs[b], 4) == 0;
        }
        if (!ok) printf("# block %d differs\n", b);
    }
    char msg[128];
    snprintf(msg, sizeof msg, "quantize_q8 %s: the CPU's activation bytes", lrun_dtype_name(partner));
    CHECK(msg, ok);
    free(x), free(ref);
}

static void test_q8dot(lrun_dtype wt, int64_t m)
{
    enum { N0 = 37, N1 = 20, K = 160 };
    const lrun_dtype partner = lrun_dot_partner(wt);
    const size_t rb = (size_t)(K / 32) * lrun_dtype_block_bytes(wt), xb = (size_t)(K / 32) * lrun_dtype_block_bytes(partner);
    uint8_t *w = malloc((size_t)(N0 + N1) * rb);
    if (lrun_random_fill(wt, w, 0, (int64_t)(N0 + N1) * K, 1.0f, 7) != LRUN_OK) printf("# fill: %s\n", lrun_last_error());
    float *x = activations(m * K);
    arena_used = 0;
    const uint8_t *dw = dcopy(w, (size_t)(N0 + N1) * rb);
    int8_t *qs = dbuf((size_t)(m * K));
    float *d = dbuf((size_t)m * (K / 32) * 4), *s = dbuf((size_t)m * (K / 32) * 4);
    float *y0 = dbuf((size_t)(m * N0) * 4), *y1 = dbuf((size_t)(m * N1) * 4);
    const lrun_k_q8dot_part parts[2] = {{dw, rb, N0, y0}, {dw + N0 * rb, rb, N1, y1}};
    int ok = ran(lrun_k_quantize_q8(partner, dcopy(x, (size_t)(m * K) * 4), m, K, qs, d, s, stream)) &&
             ran(lrun_k_q8dot(wt, parts, 2, K, qs, d, s, m, stream));
    float *g = malloc((size_t)(m * (N0 + N1)) * 4), *c = malloc((size_t)(m * (N0 + N1)) * 4);
    xfer(g, y0, (size_t)(m * N0) * 4, 0);
    xfer(g + m * N0, y1, (size_t)(m * N1) * 4, 0);
    uint8_t *xq = malloc(xb);
    for (int64_t t = 0; t < m; t++) {
        lrun_quantize_activations(partner, x + t * K, xq, K);
        for (int64_t i = 0; i < N0 + N1; i++) {
            const float v = lrun_vec_dot(wt, K, w + (size_t)i * rb, xq);
            if (i < N0) c[t * N0 + i] = v;
            else c[m * N0 + t * N1 + (i - N0)] = v;
        }
    }
    char msg[128];
    snprintf(msg, sizeof msg, "q8dot %s, %lld activation rows, 2 parts: lrun_vec_dot's bits", lrun_dtype_name(wt),
             (long long)m);
    CHECK(msg, ok && same(msg, c, g, m * (N0 + N1)));
    free(w), free(x), free(g), free(c), free(xq);
}

// ---------------------------------------------------------------- norm, SwiGLU, RoPE

static void test_rms_norm(void)
{
    enum { R = 3, N = 577 };
    float *x = activations(R * N), *w = activations(N), c[R * N], g[R * N];
    for (int r = 0; r < R; r++) lrun_cpu_rms_norm(c + r * N, x + r * N, w, N, 1e-5f);
    arena_used = 0;
    float *y = dbuf(sizeof g);
    int ok = ran(lrun_k_rms_norm_exact(dcopy(x, sizeof g), dcopy(w, N * 4), y, R, N, 1e-5f, stream));
    xfer(g, y, sizeof g, 0);
    CHECK("rms_norm_exact (577 wide, outliers): lrun_cpu_rms_norm's bits", ok && same("rms_norm", c, g, R * N));
    free(x), free(w);

    /* fused: x += add, x += bias, the norm, y quantized for Q8_1 */
    enum { N2 = 576, NB = N2 / 32 };
    float *x2 = activations(R * N2), *a2 = activations(R * N2), *b2 = activations(N2), *w2 = activations(N2);
    float cx[R * N2], cy[R * N2], gx[R * N2], gy[R * N2], gd[R * NB], gs[R * NB];
    int8_t gq[R * N2];
    arena_used = 0;
    float *dx = dcopy(x2, sizeof cx), *dy = dbuf(sizeof cy), *dd = dbuf(sizeof gd), *ds = dbuf(sizeof gs);
    int8_t *dq = dbuf(sizeof gq);
    ok = ran(lrun_k_add_rms_norm_exact(dx, dcopy(a2, sizeof cx), dcopy(b2, N2 * 4), dcopy(w2, N2 * 4), dy, R, N2, 1e-5f,
                                       LRUN_DTYPE_Q8_1, dq, dd, ds, stream));
    xfer(gx, dx, sizeof gx, 0), xfer(gy, dy, sizeof gy, 0), xfer(gq, dq, sizeof gq, 0), xfer(gd, dd, sizeof gd, 0),
        xfer(gs, ds, sizeof gs, 0);
    memcpy(cx, x2, sizeof cx);
    lrun_block_q8_1 qb[NB];
    for (int r = 0; r < R; r++) {
        lrun_cpu_add(cx + r * N2, a2 + r * N2, N2);
        lrun_cpu_add(cx + r * N2, b2, N2);
        lrun_cpu_rms_norm(cy + r * N2, cx + r * N2, w2, N2, 1e-5f);
        lrun_quantize_activations(LRUN_DTYPE_Q8_1, cy + r * N2, qb, N2);
        for (int b = 0; ok && b < NB; b++)
            ok = memcmp(qb[b].qs, gq + r * N2 + b * 32, 32) == 0 && memcmp(&qb[b].d, &gd[r * NB + b], 4) == 0 &&
                 memcmp(&qb[b].s, &gs[r * NB + b], 4) == 0;
    }
    CHECK("add_rms_norm_exact (add, bias, norm, q8_1 quantization): the CPU's x, y and bytes",
          ok && same("add_rms_norm x", cx, gx, R * N2) && same("add_rms_norm y", cy, gy, R * N2));
    free(x2), free(a2), free(b2), free(w2);
}

static void test_swiglu(void)
{
    enum { R = 2, N = 96 };
    float gate[R * N], u[R * N], c[R * N], g[R * N];
    for (int i = 0; i < R * N; i++) gate[i] = frand(-30.0f, 30.0f), u[i] = frand(-2.0f, 2.0f);
    gate[3] = -100.0f, gate[4] = 100.0f, gate[5] = -150.0f, gate[6] = 200.0f; /* |n| > 126 and > 192 */
    memcpy(c, gate, sizeof c);
    for (int r = 0; r < R; r++) lrun_cpu_swiglu(c + r * N, u + r * N, N);
    arena_used = 0;
    float *dg = dcopy(gate, sizeof gate);
    int ok = ran(lrun_k_swiglu_exact(dg, dcopy(u, sizeof u), R, N, LRUN_DTYPE_F32, NULL, NULL, NULL, stream));
    xfer(g, dg, sizeof g, 0);
    CHECK("swiglu_exact (with exp's range branches): lrun_cpu_swiglu's bits", ok && same("swiglu", c, g, R * N));
}

static void test_rope_store(int style, lrun_dtype kv)
{
    enum { T = 3, NH = 4, NHK = 2, HD = 40, NROT = 40 };
    float *q = activations(T * NH * HD), *k = activations(T * NHK * HD), *v = activations(T * NHK * HD);
    float cs[T * NROT];
    const lrun_rope rope = {NROT, style, 10000.0, 1.0, NULL, 0, {0, 0}, 0};
    for (int t = 0; t < T; t++) lrun_cpu_rope_cos_sin(&rope, 5 + 11 * t, cs + t * NROT);
    arena_used = 0;
    const size_t eb = kv == LRUN_DTYPE_F16 ? 2 : 4, cache_bytes = (size_t)T * NHK * HD * eb;
    float *dq = dcopy(q, T * NH * HD * 4), *dk = dcopy(k, T * NHK * HD * 4);
    void *ck = dbuf(cache_bytes), *cv = dbuf(cache_bytes);
    const int64_t off[T] = {0, NHK * HD, 2 * NHK * HD};
    int ok = ran(lrun_k_rope_store_exact(dq, dk, dcopy(v, T * NHK * HD * 4), dcopy(cs, sizeof cs), T, NH, NHK, HD, NROT,
                                         style, kv, ck, cv, dcopy(off, sizeof off), stream));
    float gq[T * NH * HD];
    uint8_t *gk = malloc(cache_bytes), *gv = malloc(cache_bytes), *rk = malloc(cache_bytes), *rv = malloc(cache_bytes);
    xfer(gq, dq, sizeof gq, 0), xfer(gk, ck, cache_bytes, 0), xfer(gv, cv, cache_bytes, 0);
    for (int t = 0; t < T; t++) {
        lrun_cpu_rope_apply(&rope, cs + t * NROT, q + t * NH * HD, NH, HD);
        lrun_cpu_rope_apply(&rope, cs + t * NROT, k + t * NHK * HD, NHK, HD);
        lrun_cpu_kv_store(rk + (size_t)t * NHK * HD * eb, kv, 1, k + t * NHK * HD, NHK * HD);
        lrun_cpu_kv_store(rv + (size_t)t * NHK * HD * eb, kv, 1, v + t * NHK * HD, NHK * HD);
    }
    char msg[128];
    snprintf(msg, sizeof msg, "rope_store_exact (%s pairs, %s cache): the CPU's q and cache bytes",
             style == LRUN_ROPE_STYLE_ADJACENT ? "adjacent" : "half", lrun_dtype_name(kv));
    CHECK(msg, ok && same(msg, q, gq, T * NH * HD) && memcmp(rk, gk, cache_bytes) == 0 &&
                   memcmp(rv, gv, cache_bytes) == 0);
    free(q), free(k), free(v), free(gk), free(gv), free(rk), free(rv);
}

// ---------------------------------------------------------------- attention

/* One token, one KV head of head_dim, n_pos positions stored and n_valid
 * readable (later positions of the same step), cap 64 positions; n_swa > 0:
 * a sliding window (Mistral), against lrun_cpu_attention with the same. */
static void test_attention(lrun_dtype kv, int64_t head_dim, int64_t n_pos, int64_t n_valid, int chain8, int64_t n_swa)
{
    enum { CAP = 64, NH = 2 };
    const size_t eb = kv == LRUN_DTYPE_F16 ? 2 : 4;
    float *q = activations(NH * head_dim), *kf = malloc((size_t)CAP * head_dim * 4), *vf = malloc((size_t)CAP * head_dim * 4);
    for (int64_t i = 0; i < CAP * head_dim; i++) {
        const int64_t pos = i / head_dim;
        kf[i] = pos < n_valid ? frand(-1.0f, 1.0f) : 0.0f;
        vf[i] = pos < n_valid ? frand(-1.0f, 1.0f) : 0.0f;
    }
    /* the GPU cache: (pos, head_dim), the rows past n_valid garbage it must not read */
    uint8_t *gk = malloc((size_t)CAP * head_dim * eb), *gvv = malloc((size_t)CAP * head_dim * eb);
    uint8_t *cvt = malloc((size_t)CAP * head_dim * eb); /* the CPU's transposed values (head_dim, CAP) */
    lrun_cpu_kv_store(gk, kv, 1, kf, CAP * head_dim);
    lrun_cpu_kv_store(gvv, kv, 1, vf, CAP * head_dim);
    for (int64_t p = 0; p < CAP; p++) lrun_cpu_kv_store(cvt + (size_t)p * eb, kv, CAP, vf + p * head_dim, head_dim);
    const size_t garbage = (size_t)n_valid * head_dim * eb;
    arena_used = 0;
    void *dk = dcopy(gk, (size_t)CAP * head_dim * eb), *dv = dcopy(gvv, (size_t)CAP * head_dim * eb);
    uint8_t nan_bytes[4096];
    memset(nan_bytes, 0xff, sizeof nan_bytes);
    xfer((uint8_t *)dv + garbage, nan_bytes, (size_t)CAP * head_dim * eb - garbage < sizeof nan_bytes
                                                 ? (size_t)CAP * head_dim * eb - garbage : sizeof nan_bytes, 1);
    const int64_t base = 0;
    const int32_t nkv = (int32_t)n_pos, nval = (int32_t)n_valid;
    float *out = dbuf((size_t)NH * head_dim * 4);
    /* two query heads on one KV head: GQA */
    const float scale = 1.0f / sqrtf((float)head_dim);
    int ok = ran(n_swa ? lrun_k_attention_exact_window(kv, dcopy(q, (size_t)NH * head_dim * 4), dk, dv, dcopy(&base, 8),
                                                       dcopy(&nkv, 4), dcopy(&nval, 4), 1, NH, 1, head_dim, CAP, scale,
                                                       chain8, n_swa, out, stream)
                       : lrun_k_attention_exact(kv, dcopy(q, (size_t)NH * head_dim * 4), dk, dv, dcopy(&base, 8),
                                                dcopy(&nkv, 4), dcopy(&nval, 4), 1, NH, 1, head_dim, CAP, scale, chain8,
                                                out, stream));
    float g[NH * 128], c[NH * 128], scores[CAP + 128];
    xfer(g, out, (size_t)NH * head_dim * 4, 0);
    if (n_swa) {
        const void *kp[1] = {gk}, *vp[1] = {cvt};
        const int64_t vs[1] = {CAP}, np[1] = {n_pos};
        const lrun_attention_batch b = {.n_tok = 1, .n_head = NH, .n_head_kv = 1, .head_dim = head_dim, .scale = scale,
                                        .kv_dtype = kv, .pv_chain8 = chain8, .q = q, .out = c, .k = kp, .v = vp,
                                        .v_stride = vs, .n_pos = np, .scores = scores, .scores_stride = CAP + 128,
                                        .n_swa = n_swa};
        lrun_cpu_attention(NULL, &b);
    } else {
        for (int h = 0; h < NH; h++)
            lrun_cpu_attention_head(c + h * head_dim, q + h * head_dim, gk, head_dim, cvt, CAP, kv, n_pos, head_dim,
                                    scale, chain8, scores);
    }
    char msg[192];
    snprintf(msg, sizeof msg, "attention_exact %s cache, head %lld, %lld positions (%lld readable), %s order%s: "
             "the CPU's bits", lrun_dtype_name(kv), (long long)head_dim, (long long)n_pos, (long long)n_valid,
             chain8 ? "prompt" : "decode", n_swa ? ", sliding window 5" : "");
    CHECK(msg, ok && same(msg, c, g, NH * head_dim));
    free(q), free(kf), free(vf), free(gk), free(gvv), free(cvt);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok %d - # SKIP no GPU\n", ++check_count);
        return CHECK_DONE();
    }
    if (lrun_device_open(&dev, "cuda:0", 0) != LRUN_OK) {
        printf("Bail out! %s\n", lrun_last_error());
        return 1;
    }
    stream = lrun_cuda_compute_stream(dev);
    arena_cap = (size_t)64 << 20;
    if (lrun_device_alloc(dev, arena_cap, "test arena", (void **)&arena) != LRUN_OK) {
        printf("Bail out! %s\n", lrun_last_error());
        return 1;
    }
    test_quantize(LRUN_DTYPE_Q8_0);
    test_quantize(LRUN_DTYPE_Q8_1);
    static const lrun_dtype wts[] = {LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q8_0};
    static const int64_t ms[] = {1, 3, 13};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) test_q8dot(wts[i], ms[j]);
    test_rms_norm();
    test_swiglu();
    for (int kv = 0; kv < 2; kv++) {
        const lrun_dtype kd = kv ? LRUN_DTYPE_F32 : LRUN_DTYPE_F16;
        test_rope_store(LRUN_ROPE_STYLE_ADJACENT, kd);
        test_rope_store(LRUN_ROPE_STYLE_HALF, kd);
        for (int chain8 = 0; chain8 < 2; chain8++) {
            test_attention(kd, 64, 37, 39, chain8, 0);
            test_attention(kd, 40, 50, 50, chain8, 0);
            test_attention(kd, 64, 1, 3, chain8, 0);
            test_attention(kd, 64, 37, 39, chain8, 5);
            test_attention(kd, 40, 50, 50, chain8, 5);
        }
    }
    lrun_device_release(dev, arena, arena_cap);
    lrun_device_free(dev);
    return CHECK_DONE();
}
#endif
