/* test_attention_flash_gpu.c — the tensor-core prefill attention
 * (lrun_k_attention_flash, kernels/attention_flash.cu) against the
 * split-KV kernel (lrun_k_attention_window, itself tested against the CPU
 * in test_kernels_gpu): random q and f16 K/V, n_tok 1 .. 1000, head_dim 64
 * and 128, GQA 1, 4 and 8, one sequence or several per chunk (contiguous
 * and interleaved), a sliding window and a cache base off 16 bytes.
 *
 * Tolerance, per output row (docs/cuda-kernels.md): the flash kernel rounds
 * q·scale to f16 (relative error ≤ 2^-11 each) and the softmax weights P to
 * f16 before P·V. A score then moves by at most
 *   δ = 2^-11 · scale · Σ_d |q_d| · max_t |k_t,d|  (+ D·2^-25·kmax for subnormals),
 * which moves each softmax weight by a factor within e^(±2δ), so the output
 * moves by at most vmax·(e^(2δ) - 1); rounding P adds vmax·(2^-11 + n_kv·2^-25)
 * (the largest weight of a tile is 1 and the sum l ≥ 1), and f32 sums in two
 * orders add 1e-5. Every element must be within its row's bound.
 *
 *   build/tests/test_attention_flash_gpu          the tests
 *   build/tests/test_attention_flash_gpu --bench  µs of both kernels (flash with 4- and 8-warp
 *                                                 blocks) for prefill chunks of 7B (32/32 heads of
 *                                                 128) and 30B-A3B (32/4) shapes */
#include "check.h"
#include "cuda/cuda_backend.h"
#include "core/device.h"
#include "quant/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "kernels.h"
#include "gpu_fixture.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(float lo, float hi) /* U(lo, hi) */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------- arguments (no GPU needed)

static int fails_with(lrun_status st, lrun_status want, const char *needle)
{
    return st == want && strstr(lrun_last_error(), needle) != NULL;
}

static void test_arguments(void)
{
    void *const FAKE = (void *)(uintptr_t)256; /* never dereferenced: the checks fail first */
    float *y = FAKE;
    CHECK("flash: supports f16 caches of head_dim 64 and 128 only",
          lrun_k_attention_flash_supported(LRUN_DTYPE_F16, 64) &&
              lrun_k_attention_flash_supported(LRUN_DTYPE_F16, 128) &&
              !lrun_k_attention_flash_supported(LRUN_DTYPE_F16, 96) &&
              !lrun_k_attention_flash_supported(LRUN_DTYPE_F16, 256) &&
              !lrun_k_attention_flash_supported(LRUN_DTYPE_F32, 128));
    CHECK("flash: a NULL q is LRUN_E_ARG naming q",
          fails_with(lrun_k_attention_flash(NULL, FAKE, FAKE, FAKE, FAKE, FAKE, 4, 8, 2, 128, 10, 0.1f, 0, y, FAKE),
                     LRUN_E_ARG, "q is NULL"));
    CHECK("flash: head_dim 96 is LRUN_E_UNSUPPORTED",
          fails_with(lrun_k_attention_flash(FAKE, FAKE, FAKE, FAKE, FAKE, FAKE, 4, 8, 2, 96, 10, 0.1f, 0, y, FAKE),
                     LRUN_E_UNSUPPORTED, "head_dim 96"));
    CHECK("flash: n_head not a multiple of n_head_kv is LRUN_E_ARG",
          fails_with(lrun_k_attention_flash(FAKE, FAKE, FAKE, FAKE, FAKE, FAKE, 4, 6, 4, 64, 10, 0.1f, 0, y, FAKE),
                     LRUN_E_ARG, "n_head_kv"));
    CHECK("flash: a negative window is LRUN_E_ARG",
          fails_with(lrun_k_attention_flash(FAKE, FAKE, FAKE, FAKE, FAKE, FAKE, 4, 8, 2, 64, 10, 0.1f, -1, y, FAKE),
                     LRUN_E_ARG, "n_swa"));
    CHECK("flash: no stream is LRUN_E_ARG",
          fails_with(lrun_k_attention_flash(FAKE, FAKE, FAKE, FAKE, FAKE, FAKE, 4, 8, 2, 64, 10, 0.1f, 0, y, NULL),
                     LRUN_E_ARG, "stream"));
}

// ---------------------------------------------------------------- flash against split-KV

/* The chunk layouts of a case: token i of the chunk belongs to sequence
 * seq[i] and sits at position pos[i] of it (n_kv = pos + 1). */
enum layout { ONE_SEQ, SEQS_CONTIGUOUS, SEQS_INTERLEAVED };

/* n_tok tokens of n_seq sequences; each sequence already holds `prefix`
 * positions before the chunk. Its cache region has cap positions and starts
 * pad elements into the cache (pad 1: k_base off 16 bytes). */
static void flash_case(enum layout lay, int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                       int64_t prefix, int64_t n_swa, int64_t pad)
{
    dreset();
    const int n_seq = lay == ONE_SEQ ? 1 : 3;
    int64_t *base = malloc((size_t)n_tok * 8);
    int32_t *nkv = malloc((size_t)n_tok * 4);
    int64_t *placed = calloc((size_t)n_seq, 8);
    const int64_t row = n_head_kv * head_dim, cap = prefix + n_tok;
    for (int64_t i = 0; i < n_tok; i++) {
        const int s = lay == ONE_SEQ ? 0 : lay == SEQS_CONTIGUOUS ? (int)(i * n_seq / n_tok) : (int)(i % n_seq);
        /* sequence s's prefix grows with s, so the sequences' lengths differ */
        nkv[i] = (int32_t)(prefix * (s + 1) / n_seq + placed[s]++ + 1);
        base[i] = pad + s * cap * row;
    }
    const int64_t cache_n = pad + n_seq * cap * row, qn = n_tok * n_head * head_dim;
    uint16_t *kh = malloc((size_t)cache_n * 2), *vh = malloc((size_t)cache_n * 2);
    for (int64_t i = 0; i < cache_n; i++)
        kh[i] = lrun_f32_to_f16(frand(-1.0f, 1.0f)), vh[i] = lrun_f32_to_f16(frand(-1.0f, 1.0f));
    float *q = malloc((size_t)qn * 4);
    for (int64_t i = 0; i < qn; i++) q[i] = frand(-3.0f, 3.0f);
    const float scale = 1.0f / sqrtf((float)head_dim);

    void *dk = dcopy(kh, (size_t)cache_n * 2), *dv = dcopy(vh, (size_t)cache_n * 2);
    float *dq = dcopy(q, (size_t)qn * 4), *d_ref = dbuf((size_t)qn * 4), *d_got = dbuf((size_t)qn * 4);
    int64_t *dbase = dcopy(base, (size_t)n_tok * 8);
    int32_t *dnkv = dcopy(nkv, (size_t)n_tok * 4);
    const size_t wb = lrun_k_attention_work_bytes(n_tok, n_head, head_dim, cap);
    void *work = wb ? dbuf(wb) : NULL;
    int ok = ran(lrun_k_attention_window(LRUN_DTYPE_F16, dq, dk, dv, dbase, dbase, dnkv, n_tok, n_head, n_head_kv,
                                         head_dim, cap, scale, n_swa, d_ref, work, stream));
    ok &= ran(lrun_k_attention_flash(dq, dk, dv, dbase, dbase, dnkv, n_tok, n_head, n_head_kv, head_dim, cap, scale,
                                     n_swa, d_got, stream));
    float *ref = malloc((size_t)qn * 4), *got = malloc((size_t)qn * 4);
    down(ref, d_ref, (size_t)qn * 4), down(got, d_got, (size_t)qn * 4);

    /* per row: the bound of the header; worst |diff| / bound over the case */
    double worst = 0.0, worst_diff = 0.0, sum_diff = 0.0;
    int64_t worst_at = 0, bad = 0;
    float *kmax = malloc((size_t)head_dim * 4), *ka = malloc((size_t)cache_n * 4), *va = malloc((size_t)cache_n * 4);
    for (int64_t i = 0; i < cache_n; i++)
        ka[i] = fabsf(lrun_f16_to_f32(kh[i])), va[i] = fabsf(lrun_f16_to_f32(vh[i]));
    const int64_t group = n_head / n_head_kv;
    for (int64_t i = 0; i < n_tok; i++) {
        float vmax = 0.0f, kall = 0.0f; /* of (token, KV head): computed at the group's first head */
        for (int64_t h = 0; h < n_head; h++) {
            const int64_t hk = h / group, o = (i * n_head + h) * head_dim;
            const int64_t lo = n_swa > 0 && nkv[i] > n_swa ? nkv[i] - n_swa : 0;
            if (h % group == 0) {
                vmax = 0.0f, kall = 0.0f;
                for (int64_t d = 0; d < head_dim; d++) kmax[d] = 0.0f;
                for (int64_t t = lo; t < nkv[i]; t++) {
                    const float *kr = ka + base[i] + t * row + hk * head_dim,
                                *vr = va + base[i] + t * row + hk * head_dim;
                    for (int64_t d = 0; d < head_dim; d++) {
                        kmax[d] = kr[d] > kmax[d] ? kr[d] : kmax[d];
                        vmax = vr[d] > vmax ? vr[d] : vmax;
                    }
                }
                for (int64_t d = 0; d < head_dim; d++) kall = kmax[d] > kall ? kmax[d] : kall;
            }
            double delta = 0.0;
            for (int64_t d = 0; d < head_dim; d++) delta += fabs((double)q[o + d]) * kmax[d];
            delta = ldexp(delta * scale, -11) + ldexp((double)head_dim * kall, -25);
            const double tol =
                vmax * (expm1(2.0 * delta) + ldexp(1.0, -11) + ldexp((double)(nkv[i] - lo), -25)) + 1e-5;
            for (int64_t d = 0; d < head_dim; d++) {
                const double diff = fabs((double)ref[o + d] - (double)got[o + d]);
                sum_diff += diff;
                if (!(diff <= tol)) bad++; /* NaN fails too */
                if (!(diff / tol <= worst)) worst = diff / tol, worst_diff = diff, worst_at = o + d;
            }
        }
    }
    static const char *const lay_name[] = {"one sequence", "3 sequences, contiguous", "3 sequences, interleaved"};
    char name[300];
    const int warps = lrun_k_attention_flash_tune(0);
    snprintf(name, sizeof name,
             "flash%s vs split-KV: %s, n_tok %lld, heads %lld/%lld, head_dim %lld, prefix %lld%s%s: "
             "max |diff| %.2e (%.2f of its bound), mean %.2e",
             warps == 8 ? " (8 warps)" : "", lay_name[lay], (long long)n_tok, (long long)n_head, (long long)n_head_kv,
             (long long)head_dim, (long long)prefix, n_swa ? ", window 100" : "", pad ? ", base off 16 B" : "",
             worst_diff, worst, sum_diff / (double)qn);
    if (bad)
        printf("# %lld elements past their bound; worst at token %lld, head %lld, dim %lld: split-KV %.7g, flash "
               "%.7g\n",
               (long long)bad, (long long)(worst_at / (n_head * head_dim)), (long long)(worst_at / head_dim % n_head),
               (long long)(worst_at % head_dim), (double)ref[worst_at], (double)got[worst_at]);
    CHECK(name, ok && bad == 0);
    free(base), free(nkv), free(placed), free(kh), free(vh), free(q), free(ref), free(got), free(kmax), free(ka),
        free(va);
}

/* Under compute-sanitizer (tests/gpu_sanitize.sh, LRUN_TEST_QUICK): one case
 * of each layout, the window, plain loads and 8-warp blocks. */
static void test_flash_quick(void)
{
    flash_case(ONE_SEQ, 200, 8, 2, 128, 37, 0, 0);
    flash_case(SEQS_CONTIGUOUS, 200, 8, 2, 64, 90, 0, 0);
    flash_case(SEQS_INTERLEAVED, 64, 4, 1, 128, 30, 100, 0);
    flash_case(ONE_SEQ, 100, 4, 4, 64, 20, 0, 1);
    lrun_k_attention_flash_tune(8);
    flash_case(ONE_SEQ, 200, 8, 2, 128, 37, 0, 0);
    lrun_k_attention_flash_tune(LRUN_K_FATTN_DEFAULT_WARPS);
}

static void test_flash(void)
{
    static const int64_t toks[] = {1, 17, 64, 200, 512, 1000};
    static const int64_t dims[] = {64, 128};
    static const int64_t ratios[] = {1, 4, 8};
    for (int di = 0; di < 2; di++)
        for (int ri = 0; ri < 3; ri++)
            for (int ti = 0; ti < 6; ti++) {
                const int64_t n_head_kv = 2, n_head = n_head_kv * ratios[ri];
                /* a first chunk (prefix 0) and a later one (after 37 positions) */
                flash_case(ONE_SEQ, toks[ti], n_head, n_head_kv, dims[di], ti % 2 ? 37 : 0, 0, 0);
                if (toks[ti] >= 17) {
                    flash_case(SEQS_CONTIGUOUS, toks[ti], n_head, n_head_kv, dims[di], 90, 0, 0);
                    flash_case(SEQS_INTERLEAVED, toks[ti], n_head, n_head_kv, dims[di], 30, 0, 0);
                }
            }
    /* a sliding window of 100 (Mistral), and cache bases off 16 bytes (plain loads) */
    flash_case(ONE_SEQ, 512, 8, 2, 128, 300, 100, 0);
    flash_case(SEQS_CONTIGUOUS, 200, 8, 1, 64, 150, 100, 0);
    flash_case(ONE_SEQ, 200, 8, 2, 128, 37, 0, 1);
    flash_case(SEQS_INTERLEAVED, 64, 4, 4, 64, 20, 0, 1);
    /* the 8-warp blocks lrun_k_attention_flash_tune offers for measurements */
    lrun_k_attention_flash_tune(8);
    flash_case(ONE_SEQ, 1000, 16, 2, 128, 37, 0, 0);
    flash_case(SEQS_CONTIGUOUS, 200, 8, 2, 64, 90, 0, 0);
    flash_case(SEQS_INTERLEAVED, 200, 8, 1, 128, 30, 100, 1);
    lrun_k_attention_flash_tune(LRUN_K_FATTN_DEFAULT_WARPS);
}

// ---------------------------------------------------------------- bench

/* One prefill chunk of n_tok tokens of one sequence after `prefix`
 * positions, both kernels: µs per call and the causal attention's TFLOPS
 * (4 · head_dim FLOPs per (query head, visible position)). */
static void bench_shape(const char *shape, int64_t n_head, int64_t n_head_kv, int64_t n_tok, int64_t prefix)
{
    enum { HD = 128, ITERS = 20 };
    dreset();
    const int64_t n_kv_max = prefix + n_tok, row = n_head_kv * HD, qn = n_tok * n_head * HD;
    uint16_t *h = malloc((size_t)n_kv_max * row * 2);
    for (int64_t i = 0; i < n_kv_max * row; i++) h[i] = lrun_f32_to_f16(frand(-1.0f, 1.0f));
    void *ck = dcopy(h, (size_t)n_kv_max * row * 2), *cv = dcopy(h, (size_t)n_kv_max * row * 2);
    free(h);
    float *qh = malloc((size_t)qn * 4);
    for (int64_t i = 0; i < qn; i++) qh[i] = frand(-1.0f, 1.0f);
    float *q = dcopy(qh, (size_t)qn * 4), *out = dbuf((size_t)qn * 4);
    free(qh);
    int64_t *base = calloc((size_t)n_tok, 8);
    int32_t *nkv = malloc((size_t)n_tok * 4);
    double vis = 0.0;
    for (int64_t i = 0; i < n_tok; i++) nkv[i] = (int32_t)(prefix + i + 1), vis += (double)nkv[i];
    int64_t *dbase = dcopy(base, (size_t)n_tok * 8);
    int32_t *dnkv = dcopy(nkv, (size_t)n_tok * 4);
    free(base), free(nkv);
    const size_t wb = lrun_k_attention_work_bytes(n_tok, n_head, HD, n_kv_max);
    void *work = wb ? dbuf(wb) : NULL;
    const float scale = 1.0f / sqrtf((float)HD);
    double us[3];
    int ok = 1;
    const int warps = lrun_k_attention_flash_tune(0);
    for (int k = 0; k < 3; k++) {
        double t0 = 0.0;
        lrun_k_attention_flash_tune(k == 2 ? 8 : warps); /* k 1: the default blocks, k 2: 8 warps */
        for (int it = -3; it < ITERS && ok; it++) {
            if (it == 0) ok = lrun_cuda_stream_sync(dev, stream) == LRUN_OK, t0 = now_s();
            ok &= (k == 0 ? lrun_k_attention(LRUN_DTYPE_F16, q, ck, cv, dbase, dbase, dnkv, n_tok, n_head, n_head_kv,
                                             HD, n_kv_max, scale, out, work, stream)
                          : lrun_k_attention_flash(q, ck, cv, dbase, dbase, dnkv, n_tok, n_head, n_head_kv, HD,
                                                   n_kv_max, scale, 0, out, stream)) == LRUN_OK;
        }
        ok &= lrun_cuda_stream_sync(dev, stream) == LRUN_OK;
        us[k] = (now_s() - t0) / ITERS * 1e6;
    }
    lrun_k_attention_flash_tune(warps);
    const double flop = 4.0 * HD * (double)n_head * vis;
    printf("# bench attn prefill %-7s heads %2lld/%-2lld of 128, n_tok %4lld after %4lld: split-KV %8.1f us "
           "(%5.1f TFLOPS)  flash %7.1f us (%5.1f TFLOPS, %.2fx)  flash 8 warps %7.1f us (%5.1f TFLOPS)%s\n",
           shape, (long long)n_head, (long long)n_head_kv, (long long)n_tok, (long long)prefix, us[0],
           flop / us[0] * 1e-6, us[1], flop / us[1] * 1e-6, us[0] / us[1], us[2], flop / us[2] * 1e-6,
           ok ? "" : "  FAILED");
}

static void bench(void)
{
    static const int64_t toks[] = {16, 32, 64, 128, 256, 512, 2048, 4096};
    for (int ti = 0; ti < 8; ti++) bench_shape("7B", 32, 32, toks[ti], 0);
    for (int ti = 0; ti < 8; ti++) bench_shape("30B-A3B", 32, 4, toks[ti], 0);
    /* the last 512-token chunk of a 4096-token prompt */
    bench_shape("7B", 32, 32, 512, 3584);
    bench_shape("30B-A3B", 32, 4, 512, 3584);
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    const int bench_mode = argc > 1 && !strcmp(argv[1], "--bench");
    if (!bench_mode) test_arguments();
    if (lrun_cuda_device_count() == 0) {
        printf("ok %d - # SKIP no GPU\n", ++check_count);
        return CHECK_DONE();
    }
    if (!gpu_fixture_open((size_t)1 << 30)) return 1;
    lrun_k_set_pdl(lrun_k_pdl_supported(dev->cuda_ordinal)); /* as the engine launches them */
    if (bench_mode) bench();
    else if (getenv("LRUN_TEST_QUICK")) test_flash_quick();
    else test_flash();
    gpu_fixture_close();
    return bench_mode ? 0 : CHECK_DONE();
}
#endif
