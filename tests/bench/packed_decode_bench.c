/* packed_decode_bench.c — speed of the packed codec (runtime/packed/codec.h)
 * on an 11008 x 4096 bf16 matrix shaped like trained weights (synthetic:
 * lrun_random_fill_trained): the ratio, CPU encode and decode MB/s with
 * every core and with one, for PEX1 (codec.h) and PEX2 (codec_pex2.h), PEX2's size measured without the encode
 * (lrun_pex2_measure) against the encode, and with a GPU the decode kernel's GB/s next to a plain
 * device-to-device copy of the same plain bytes, then mode 3 on 11008 x 4096
 * and 4096 x 11008: the fused packed GEMV (lrun_k_packed_gemv) against the
 * plain bf16 GEMV and decode-then-GEMV, and the packed prefill GEMM.
 * Not part of `make test`:
 *
 *   make CUDA=1 && cc -O2 -march=native -std=c11 -D_GNU_SOURCE -pthread -DLRUN_WITH_CUDA \
 *      -Iruntime -Ikernels -I/usr/local/cuda/include tests/bench/packed_decode_bench.c -o build/packed_decode_bench \
 *      build/liblrun.a -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 -lcudart -lcublas -lstdc++ -lpcre2-8 -lm
 *   build/packed_decode_bench [rows cols]
 *   build/packed_decode_bench --gguf FILE   the ratio over every matrix of FILE,
 *                                           dequantized to bf16 first (for quantized files)
 *
 * (without CUDA: drop -DLRUN_WITH_CUDA and the CUDA flags; CPU figures only.)
 * Every figure is the best of several runs. */
#include "core/device.h"
#include "core/threadpool.h"
#include "model/random_fill.h"
#include "packed/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef LRUN_WITH_CUDA
#include "cuda/cuda_backend.h"
#include "kernels.h"
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#ifdef LRUN_WITH_CUDA
/* The calls a mode-3 timing makes: copy c of the weights (rotated so that
 * no call finds its weights in L2). */
enum { PLAIN_GEMV, FUSED_GEMV, DECODE_GEMV, ROWS_GEMV, DECODE, DECODE_ROWS, PLAIN_GEMM, PACKED_GEMM };
struct m3 {
    void *s, *cublas, *plain[4], *packed[4], *slot, *x_slot, *x, *y;
    int n_plain, n_packed;
    int64_t rows, cols, m;
    lrun_packed_layout lay;
};

static lrun_status m3_call(struct m3 *b, int what, int c)
{
    void *p = b->plain[c % b->n_plain], *q = b->packed[c % b->n_packed];
    const int64_t n = b->rows * b->cols;
    lrun_status st = LRUN_OK;
    switch (what) {
    case PLAIN_GEMV: return lrun_k_gemv(LRUN_DTYPE_BF16, p, (size_t)b->cols * 2, b->rows, b->cols, b->x, 1, b->y, b->s);
    case FUSED_GEMV: return lrun_k_packed_gemv(q, &b->lay, b->rows, b->cols, b->x, 1, b->y, b->s);
    case DECODE: return lrun_k_packed_decode(b->slot, q, &b->lay, 0, (uint64_t)n, b->s);
    case DECODE_ROWS: return lrun_k_packed_decode_rows(b->slot, q, &b->lay, b->cols, 0, b->rows, b->s);
    case DECODE_GEMV: st = lrun_k_packed_decode(b->slot, q, &b->lay, 0, (uint64_t)n, b->s); break;
    case ROWS_GEMV: st = lrun_k_packed_decode_rows(b->slot, q, &b->lay, b->cols, 0, b->rows, b->s); break;
    case PLAIN_GEMM:
        return lrun_k_gemm(b->cublas, LRUN_DTYPE_BF16, p, (size_t)b->cols * 2, b->rows, b->cols, b->x, b->m, b->y,
                           LRUN_DTYPE_BF16, b->slot, b->x_slot, b->s);
    case PACKED_GEMM:
        return lrun_k_packed_gemm(b->cublas, q, &b->lay, b->rows, b->cols, b->x, b->m, b->y, b->slot, b->x_slot, b->s);
    }
    if (st != LRUN_OK) return st;
    return lrun_k_gemv(LRUN_DTYPE_BF16, b->slot, (size_t)b->cols * 2, b->rows, b->cols, b->x, 1, b->y, b->s);
}

/* Seconds per call of what: the best of 5 runs of 100 calls back to back. */
static double m3_time(lrun_device *dev, struct m3 *b, int what)
{
    double best = 1e9;
    for (int c = 0; c < 3; c++) m3_call(b, what, c);
    lrun_cuda_stream_sync(dev, b->s);
    for (int r = 0; r < 5; r++) {
        const double t0 = now_s();
        for (int c = 0; c < 100; c++)
            if (m3_call(b, what, c) != LRUN_OK) {
                printf("mode 3: %s\n", lrun_last_error());
                return 1e9;
            }
        lrun_cuda_stream_sync(dev, b->s);
        const double t = (now_s() - t0) / 100;
        best = t < best ? t : best;
    }
    return best;
}

/* Mode 3 on one rows x cols bf16 matrix (trained-like): the fused packed
 * GEMV against the plain bf16 GEMV and against decoding into a slot first;
 * the prefill GEMM (m 512) plain and packed. GB/s count the bytes each
 * reads: plain bytes for the plain kernels, packed bytes for the others. */
/* The codec gpu_bench's mode 3 part packs in: 0 PEX1, 1 PEX2 (kernels/packed_pex2.cu). */
static int g_pex2;

/* The fused GEMV's variant of the codec timed (0 its default): PEX1's decode
 * loop (lrun_k_packed_gemv_tune), PEX2's product (lrun_k_pex2_gemv_tune).
 * Returns its description. */
static const char *m3_tune(int variant)
{
    return g_pex2 ? lrun_k_pex2_gemv_tune(variant) : lrun_k_packed_gemv_tune(variant);
}

static void mode3_bench(lrun_device *dev, void *s, int64_t rows, int64_t cols)
{
    struct m3 b;
    memset(&b, 0, sizeof b);
    b.s = s, b.cublas = lrun_cuda_cublas(dev), b.rows = rows, b.cols = cols, b.m = 512;
    const int64_t n = rows * cols;
    const size_t plain_bytes = (size_t)n * 2,
                 cap = g_pex2 ? lrun_pex2_bound((uint64_t)n) : lrun_packed_bound(LRUN_DTYPE_BF16, (uint64_t)n);
    printf("mode 3, %s:\n", g_pex2 ? "PEX2" : "PEX1");
    uint16_t *plain = malloc(plain_bytes);
    uint8_t *packed = malloc(cap);
    float *x = malloc((size_t)(b.m * cols) * 4), *y0 = malloc((size_t)rows * 4), *y1 = malloc((size_t)rows * 4);
    size_t bytes = 0;
    if (!plain || !packed || !x || !y0 || !y1 ||
        lrun_random_fill_trained(LRUN_DTYPE_BF16, plain, 0, n, 0.02f, 3) != LRUN_OK ||
        (g_pex2 ? lrun_pex2_encode(packed, cap, &bytes, plain, (uint64_t)n, NULL)
                : lrun_packed_encode(packed, cap, &bytes, LRUN_DTYPE_BF16, plain, (uint64_t)n, NULL)) != LRUN_OK ||
        lrun_packed_validate(&b.lay, packed, bytes, "bench") != LRUN_OK) {
        printf("mode 3: %s\n", lrun_last_error());
        return;
    }
    for (int64_t i = 0; i < b.m * cols; i++) x[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    /* copies totalling at least 160 MB: more than the 50-60 MB of L2 */
    b.n_plain = (int)((160e6 + plain_bytes - 1) / plain_bytes), b.n_packed = (int)((160e6 + bytes - 1) / bytes);
    b.n_plain = b.n_plain > 4 ? 4 : b.n_plain, b.n_packed = b.n_packed > 4 ? 4 : b.n_packed;
    int ok = lrun_cuda_alloc(dev, plain_bytes, "slot", &b.slot) == LRUN_OK &&
             lrun_cuda_alloc(dev, (size_t)(b.m * cols) * 2, "x_slot", &b.x_slot) == LRUN_OK &&
             lrun_cuda_alloc(dev, (size_t)(b.m * cols) * 4, "x", &b.x) == LRUN_OK &&
             lrun_cuda_alloc(dev, (size_t)(b.m * rows) * 4, "y", &b.y) == LRUN_OK &&
             lrun_cuda_memcpy(dev, b.x, x, (size_t)(b.m * cols) * 4, LRUN_COPY_HOST_TO_DEVICE) == LRUN_OK;
    for (int c = 0; ok && c < b.n_plain; c++)
        ok = lrun_cuda_alloc(dev, plain_bytes, "plain", &b.plain[c]) == LRUN_OK &&
             lrun_cuda_memcpy(dev, b.plain[c], plain, plain_bytes, LRUN_COPY_HOST_TO_DEVICE) == LRUN_OK;
    for (int c = 0; ok && c < b.n_packed; c++)
        ok = lrun_cuda_alloc(dev, bytes, "packed", &b.packed[c]) == LRUN_OK &&
             lrun_cuda_memcpy(dev, b.packed[c], packed, bytes, LRUN_COPY_HOST_TO_DEVICE) == LRUN_OK;
    /* bit-exactness of the fused GEMV on this matrix */
    ok = ok && m3_call(&b, PLAIN_GEMV, 0) == LRUN_OK && lrun_cuda_stream_sync(dev, s) == LRUN_OK &&
         lrun_cuda_memcpy(dev, y0, b.y, (size_t)rows * 4, LRUN_COPY_DEVICE_TO_HOST) == LRUN_OK &&
         m3_call(&b, FUSED_GEMV, 0) == LRUN_OK && lrun_cuda_stream_sync(dev, s) == LRUN_OK &&
         lrun_cuda_memcpy(dev, y1, b.y, (size_t)rows * 4, LRUN_COPY_DEVICE_TO_HOST) == LRUN_OK;
    const int same0 = ok && !memcmp(y0, y1, (size_t)rows * 4);
    /* the other fused variants: PEX1's pipelined decode loop (lrun_k_packed_gemv_tune 1), PEX2's rows-outer
     * product and pipelined decode (lrun_k_pex2_gemv_tune 1 and 2) */
    int same_v = 1;
    for (int v = 1; ok && m3_tune(v); v++) {
        ok = m3_call(&b, FUSED_GEMV, 0) == LRUN_OK && lrun_cuda_stream_sync(dev, s) == LRUN_OK &&
             lrun_cuda_memcpy(dev, y1, b.y, (size_t)rows * 4, LRUN_COPY_DEVICE_TO_HOST) == LRUN_OK;
        same_v &= ok && !memcmp(y0, y1, (size_t)rows * 4);
    }
    m3_tune(0);
    if (!ok) {
        printf("mode 3: %s\n", lrun_last_error());
        return;
    }
    printf("mode 3, %lld x %lld bf16 (ratio %.4f), m 1, fused y = plain y bit for bit: %s, its other variants: %s\n",
           (long long)rows, (long long)cols, (double)bytes / (double)plain_bytes, same0 ? "yes" : "NO",
           same_v ? "yes" : "NO");
    for (int pdl = 0; pdl < 2; pdl++) {
        if (pdl && !lrun_k_pdl_supported(0)) break;
        lrun_k_set_pdl(pdl);
        const double tp = m3_time(dev, &b, PLAIN_GEMV), tf = m3_time(dev, &b, FUSED_GEMV);
        const double td = m3_time(dev, &b, DECODE_GEMV), tr = m3_time(dev, &b, ROWS_GEMV);
        printf("  pdl %s: plain bf16 GEMV %.1f us (%.0f GB/s plain) | fused %.1f us (%.0f GB/s packed, %.2fx plain speed)"
               " | decode+GEMV %.1f us (%.2fx) | decode_rows+GEMV %.1f us (%.2fx)\n",
               pdl ? "on" : "off", tp * 1e6, plain_bytes / tp / 1e9, tf * 1e6, bytes / tf / 1e9, tp / tf, td * 1e6,
               tp / td, tr * 1e6, tp / tr);
        const char *alt;
        for (int v = 1; (alt = m3_tune(v)) != NULL; v++) {
            const double tq = m3_time(dev, &b, FUSED_GEMV);
            printf("  pdl %s: fused, %s: %.1f us (%.0f GB/s packed, %.2fx plain speed, %.2fx the fused above)\n",
                   pdl ? "on" : "off", alt, tq * 1e6, bytes / tq / 1e9, tp / tq, tf / tq);
        }
        m3_tune(0);
    }
    lrun_k_set_pdl(0);
    const double d0 = m3_time(dev, &b, DECODE), d1 = m3_time(dev, &b, DECODE_ROWS);
    printf("  decode alone: lrun_k_packed_decode %.1f us (%.0f GB/s plain out), lrun_k_packed_decode_rows %.1f us (%.0f GB/s)\n",
           d0 * 1e6, plain_bytes / d0 / 1e9, d1 * 1e6, plain_bytes / d1 / 1e9);
    const double g0 = m3_time(dev, &b, PLAIN_GEMM), g1 = m3_time(dev, &b, PACKED_GEMM);
    printf("  prefill m %lld: plain GEMM %.1f us | packed (decode_rows into the slot + cuBLAS) %.1f us (%.2fx)\n",
           (long long)b.m, g0 * 1e6, g1 * 1e6, g0 / g1);
    for (int c = 0; c < b.n_plain; c++) lrun_cuda_release(dev, b.plain[c]);
    for (int c = 0; c < b.n_packed; c++) lrun_cuda_release(dev, b.packed[c]);
    lrun_cuda_release(dev, b.slot), lrun_cuda_release(dev, b.x_slot), lrun_cuda_release(dev, b.x),
        lrun_cuda_release(dev, b.y);
    free(plain), free(packed), free(x), free(y0), free(y1);
}

/* Best seconds of reps decodes of the whole tensor, and of a plain copy. */
static void gpu_bench(const uint8_t *packed, size_t bytes, const lrun_packed_layout *lay, const uint16_t *plain)
{
    lrun_device *dev = NULL;
    if (lrun_cuda_device_count() == 0 || lrun_device_open(&dev, "cuda:0", 0) != LRUN_OK) {
        printf("gpu: none\n");
        return;
    }
    void *s = lrun_cuda_compute_stream(dev), *dp = NULL, *dd = NULL, *dc = NULL;
    const size_t plain_bytes = (size_t)lay->n * 2;
    if (lrun_cuda_alloc(dev, bytes, "packed", &dp) != LRUN_OK || lrun_cuda_alloc(dev, plain_bytes, "out", &dd) != LRUN_OK ||
        lrun_cuda_alloc(dev, plain_bytes, "copy", &dc) != LRUN_OK) {
        printf("gpu: %s\n", lrun_last_error());
        return;
    }
    lrun_cuda_memcpy(dev, dp, packed, bytes, LRUN_COPY_HOST_TO_DEVICE);
    lrun_cuda_memcpy(dev, dc, plain, plain_bytes, LRUN_COPY_HOST_TO_DEVICE);
    double best = 1e9, best_copy = 1e9;
    for (int r = 0; r < 20; r++) {
        double t0 = now_s();
        for (int k = 0; k < 10; k++) lrun_k_packed_decode(dd, dp, lay, 0, lay->n, s);
        lrun_cuda_stream_sync(dev, s);
        double t = (now_s() - t0) / 10;
        best = t < best ? t : best;
        t0 = now_s();
        lrun_cuda_memcpy(dev, dd, dc, plain_bytes, LRUN_COPY_DEVICE_TO_DEVICE);
        t = now_s() - t0;
        best_copy = t < best_copy ? t : best_copy;
    }
    uint16_t *back = malloc(plain_bytes);
    lrun_k_packed_decode(dd, dp, lay, 0, lay->n, s);
    lrun_cuda_stream_sync(dev, s);
    lrun_cuda_memcpy(dev, back, dd, plain_bytes, LRUN_COPY_DEVICE_TO_HOST);
    printf("gpu decode: %.3f ms, %.1f GB/s of plain bf16 out (%.1f GB/s packed in); bit-exact: %s\n", best * 1e3,
           plain_bytes / best / 1e9, bytes / best / 1e9, memcmp(back, plain, plain_bytes) ? "NO" : "yes");
    printf("gpu plain copy of the same bytes (device to device): %.3f ms, %.1f GB/s\n", best_copy * 1e3,
           plain_bytes / best_copy / 1e9);
    free(back);
    lrun_cuda_release(dev, dp), lrun_cuda_release(dev, dd), lrun_cuda_release(dev, dc);
    mode3_bench(dev, s, 11008, 4096);
    mode3_bench(dev, s, 4096, 11008);
    lrun_device_free(dev);
}
#endif

/* The packed/plain ratio of every 2-D tensor of a GGUF file, each converted to bf16. */
static int gguf_ratio(const char *path)
{
    lrun_gguf *g = NULL;
    if (lrun_gguf_open(&g, path) != LRUN_OK) {
        printf("%s\n", lrun_last_error());
        return 1;
    }
    size_t plain = 0, packed = 0, packed2 = 0;
    for (int64_t t = 0; t < lrun_gguf_tensor_count(g); t++) {
        if (lrun_gguf_tensor_ndim(g, t) < 2) continue;
        const int64_t n = lrun_gguf_tensor_dim(g, t, 0) * lrun_gguf_tensor_dim(g, t, 1);
        float *f = malloc((size_t)n * 4);
        uint16_t *b = malloc((size_t)n * 2);
        size_t cap = lrun_packed_bound(LRUN_DTYPE_BF16, (uint64_t)n), got = 0, got2 = 0;
        if (lrun_pex2_bound((uint64_t)n) > cap) cap = lrun_pex2_bound((uint64_t)n);
        uint8_t *p = malloc(cap);
        if (!f || !b || !p || lrun_dtype_to_f32(lrun_gguf_tensor_dtype(g, t), lrun_gguf_tensor_data(g, t), f, n) != LRUN_OK ||
            lrun_dtype_from_f32(LRUN_DTYPE_BF16, f, b, n) != LRUN_OK ||
            lrun_packed_encode(p, cap, &got, LRUN_DTYPE_BF16, b, (uint64_t)n, NULL) != LRUN_OK) {
            printf("%s: %s\n", lrun_gguf_tensor_name(g, t), lrun_last_error());
            return 1;
        }
        plain += (size_t)n * 2;
        packed += got;
        /* lrun pack --codec pex2's rule: PEX2 where it fits (stored plain where it would grow), else PEX1 */
        if (!lrun_pex2_fits(LRUN_DTYPE_BF16, (uint64_t)n) || lrun_pex2_encode(p, cap, &got2, b, (uint64_t)n, NULL) != LRUN_OK)
            got2 = got;
        else if (got2 >= (size_t)n * 2)
            got2 = (size_t)n * 2;
        packed2 += got2;
        free(f), free(b), free(p);
    }
    printf("%s, every matrix as bf16: %.1f MB -> %.1f MB, ratio %.4f (PEX1), %.4f (PEX2)\n", path, plain / 1e6,
           packed / 1e6, (double)packed / (double)plain, (double)packed2 / (double)plain);
    lrun_gguf_close(g);
    return 0;
}

/* One codec on the CPU: its ratio, encode and decode MB/s of plain bf16 (best of 5). */
static void cpu_bench(int pex2, lrun_threadpool *pool, const uint16_t *plain, uint16_t *back, uint8_t *packed,
                      size_t cap, int64_t n, size_t *bytes)
{
    double enc = 1e9, dec = 1e9;
    int ok = 1;
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        ok = ok && (pex2 ? lrun_pex2_encode(packed, cap, bytes, plain, (uint64_t)n, pool)
                         : lrun_packed_encode(packed, cap, bytes, LRUN_DTYPE_BF16, plain, (uint64_t)n, pool)) == LRUN_OK;
        double t1 = now_s();
        ok = ok && lrun_packed_decode(back, LRUN_DTYPE_BF16, (uint64_t)n, packed, *bytes, "bench", pool) == LRUN_OK;
        double t2 = now_s();
        enc = t1 - t0 < enc ? t1 - t0 : enc;
        dec = t2 - t1 < dec ? t2 - t1 : dec;
    }
    printf("%s cpu (%d threads): ratio %.4f, bit-exact: %s, encode %.0f MB/s, decode (validate + decode) %.0f MB/s\n",
           pex2 ? "PEX2" : "PEX1", pool ? lrun_threadpool_size(pool) : 1, (double)*bytes / (2.0 * (double)n),
           ok && !memcmp(back, plain, (size_t)n * 2) ? "yes" : "NO", 2.0 * (double)n / enc / 1e6,
           2.0 * (double)n / dec / 1e6);
}

/* PEX2's size without the encode (lrun_pex2_measure: the exponent histogram)
 * against the encode, and against what lrun_tensor_measure_packed did before
 * it (a fresh buffer, the encode, the validation, the buffer freed; its
 * pages faulted in each time), best of 5 each. */
static void measure_bench(lrun_threadpool *pool, const uint16_t *plain, uint8_t *packed, size_t cap, int64_t n)
{
    double meas = 1e9, enc = 1e9, old = 1e9;
    size_t bytes = 0, encoded = 0, old_bytes = 0;
    int ok = 1;
    for (int r = 0; r < 5; r++) {
        lrun_pex2_layout lay;
        lrun_packed_layout pk;
        double t0 = now_s();
        ok = ok && lrun_pex2_measure(&lay, plain, (uint64_t)n, pool) == LRUN_OK;
        double t1 = now_s();
        ok = ok && lrun_pex2_encode(packed, cap, &encoded, plain, (uint64_t)n, pool) == LRUN_OK;
        double t2 = now_s();
        uint8_t *fresh = malloc(cap);
        ok = ok && fresh && lrun_pex2_encode(fresh, cap, &old_bytes, plain, (uint64_t)n, pool) == LRUN_OK &&
             lrun_packed_validate_mt(&pk, fresh, old_bytes, "bench", pool) == LRUN_OK;
        free(fresh);
        double t3 = now_s();
        bytes = lay.total;
        meas = t1 - t0 < meas ? t1 - t0 : meas;
        enc = t2 - t1 < enc ? t2 - t1 : enc;
        old = t3 - t2 < old ? t3 - t2 : old;
    }
    printf("PEX2 size (%d threads, %.1f MiB of bf16): measure %.1f ms (%.0f MB/s), encode %.1f ms, "
           "measure_packed before (malloc, encode, validate, free) %.1f ms; the same size: %s\n",
           pool ? lrun_threadpool_size(pool) : 1, 2.0 * (double)n / 1048576.0, meas * 1e3,
           2.0 * (double)n / meas / 1e6, enc * 1e3, old * 1e3,
           ok && bytes == encoded && bytes == old_bytes ? "yes" : "NO");
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "--gguf")) return gguf_ratio(argv[2]);
    const int64_t rows = argc > 2 ? atoll(argv[1]) : 11008, cols = argc > 2 ? atoll(argv[2]) : 4096, n = rows * cols;
    uint16_t *plain = malloc((size_t)n * 2), *back = malloc((size_t)n * 2);
    size_t cap = lrun_packed_bound(LRUN_DTYPE_BF16, (uint64_t)n), bytes = 0;
    if (lrun_pex2_bound((uint64_t)n) > cap) cap = lrun_pex2_bound((uint64_t)n);
    uint8_t *packed = malloc(cap);
    lrun_threadpool *pool = NULL;
    if (!plain || !back || !packed || lrun_threadpool_init(&pool, 0) != LRUN_OK) return 1;
    lrun_random_fill_trained(LRUN_DTYPE_BF16, plain, 0, n, 0.02f, 1);
    printf("%lld x %lld bf16 (trained-like, synthetic)\n", (long long)rows, (long long)cols);
    for (int pex2 = 0; pex2 <= 1; pex2++) /* PEX1, then PEX2 (codec_pex2.h): every core, then one */
        for (int one = 0; one <= 1; one++) cpu_bench(pex2, one ? NULL : pool, plain, back, packed, cap, n, &bytes);
    for (int one = 0; one <= 1; one++) measure_bench(one ? NULL : pool, plain, packed, cap, n);
#ifdef LRUN_WITH_CUDA
    /* the GPU part for each codec: its decode kernel, then mode 3 on both 7B shapes */
    for (g_pex2 = 0; g_pex2 <= 1; g_pex2++) {
        if (g_pex2) lrun_pex2_encode(packed, cap, &bytes, plain, (uint64_t)n, pool);
        else lrun_packed_encode(packed, cap, &bytes, LRUN_DTYPE_BF16, plain, (uint64_t)n, pool);
        lrun_packed_layout lay;
        printf("%s on the GPU:\n", g_pex2 ? "PEX2" : "PEX1");
        if (lrun_packed_validate(&lay, packed, bytes, "bench") == LRUN_OK) gpu_bench(packed, bytes, &lay, plain);
    }
#endif
    lrun_threadpool_free(pool);
    free(plain), free(back), free(packed);
    return 0;
}
