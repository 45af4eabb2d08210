/* gemv_q8_ref.h — what the GPU tests of the q8-activation decode GEMVs
 * (test_gemv_dp4a_gpu.c, test_gemv_split_gpu.c, test_gemv_split_q8x_gpu.c) compare against: random
 * GGUF rows with a filled gap between them, and each row's dot with the
 * q8-rounded x in double, with the sum of its terms' magnitudes (the
 * tolerance's scale). Include after check.h, with the lrun headers. */
#ifndef LRUN_TESTS_GEMV_Q8_REF_H
#define LRUN_TESTS_GEMV_Q8_REF_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/random_fill.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"
#include "quant/quant_split.h"

/* n rows of k random elements of t, stride bytes apart; the gap holds the
 * byte pattern i·37 + 11, so a kernel reading past a row reads garbage */
static uint8_t *gemv_ref_rows(lrun_dtype t, int64_t n, int64_t k, size_t stride, uint64_t seed)
{
    uint8_t *w = malloc((size_t)n * stride);
    for (size_t i = 0; i < (size_t)n * stride; i++) w[i] = (uint8_t)(i * 37u + 11u);
    for (int64_t r = 0; r < n; r++)
        if (lrun_random_fill(t, w + (size_t)r * stride, r * k, k, 1.0f, seed) != LRUN_OK) {
            printf("Bail out! random_fill: %s\n", lrun_last_error());
            exit(1);
        }
    return w;
}

/* ref[r] = Σ dequant(W[r])·xq and terms[r] = Σ|…| in double, xq the q8-rounded x */
static void gemv_ref_q8(lrun_dtype t, const uint8_t *w, int64_t n, int64_t k, size_t stride, const float *x,
                        double *ref, double *terms)
{
    uint8_t *q = malloc((size_t)k / 32 * 34);
    float *xq = malloc((size_t)k * sizeof *xq), *row = malloc((size_t)k * sizeof *row);
    lrun_quantize_activations(LRUN_DTYPE_Q8_0, x, q, k);
    lrun_dequantize_row(LRUN_DTYPE_Q8_0, q, xq, k);
    for (int64_t r = 0; r < n; r++) {
        lrun_dequantize_row(t, w + (size_t)r * stride, row, k);
        double s = 0.0, a = 0.0;
        for (int64_t i = 0; i < k; i++) s += (double)row[i] * xq[i], a += fabs((double)row[i] * xq[i]);
        ref[r] = s, terms[r] = a;
    }
    free(q), free(xq), free(row);
}

/* a row's bytes rounded up to 16, plus pad: a split-row stride */
static inline size_t gemv_ref_stride(lrun_dtype t, int64_t k, size_t pad)
{
    size_t rb = 0;
    if (lrun_dtype_row_bytes(t, k, &rb) != LRUN_OK) {
        printf("Bail out! row_bytes: %s\n", lrun_last_error());
        exit(1);
    }
    return (rb + 15) / 16 * 16 + pad;
}

/* the same rows split on the host (lrun_quant_split_rows) */
static inline uint8_t *gemv_ref_split(lrun_dtype t, const uint8_t *w, int64_t n, int64_t k, size_t stride)
{
    uint8_t *s = malloc((size_t)n * stride);
    if (lrun_quant_split_rows(t, w, s, stride, n, k) != LRUN_OK) {
        printf("Bail out! split: %s\n", lrun_last_error());
        exit(1);
    }
    return s;
}

#endif
