/* codec2_encode.h — the reference encoder of the codec2 prototype format
 * (codec2_lane.h) and the trained-like test matrices, shared by the CPU
 * round trip (codec2_roundtrip.c) and the GPU prototype's host side
 * (codec2_proto.cu). Bench tools only: not part of the runtime. */
#ifndef LRUN_BENCH_CODEC2_ENCODE_H
#define LRUN_BENCH_CODEC2_ENCODE_H

#include "codec2_lane.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- encoder */

typedef struct {
    uint8_t *buf;   /* (bytes) the packed tensor, 16-byte aligned */
    uint64_t bytes; /* its size */
    c2_layout lay;  /* the decoder's view */
    uint64_t n_exc; /* exceptions */
    uint64_t n_far; /* of which far */
} c2_packed;

static uint64_t align16(uint64_t x) { return (x + 15) & ~(uint64_t)15; }

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* v (n bf16 values, n a multiple of 8) → out, with codes of A = 8 or 6
 * values. Returns 0, or -1 with a message. */
static int c2_encode(const uint16_t *v, uint64_t n, uint32_t A, c2_packed *out)
{
    if (n == 0 || n % 8) {
        fprintf(stderr, "c2_encode: n = %llu: must be a positive multiple of 8\n", (unsigned long long)n);
        return -1;
    }
    uint64_t cnt[256] = {0};
    for (uint64_t i = 0; i < n; i++) cnt[(v[i] >> 7) & 0xff]++;
    int order[256];
    for (int i = 0; i < 256; i++) order[i] = i;
    for (int i = 1; i < 256; i++) /* by count, descending; ties by exponent: stable insertion */
        for (int j = i; j > 0 && cnt[order[j]] > cnt[order[j - 1]]; j--) {
            const int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    int kind[256], code_of[256]; /* kind: 0 book1, 1 book2 (near exception), 2 far exception */
    const int a = (int)A;
    for (int i = 0; i < 256; i++) kind[i] = 2, code_of[i] = a - 1;
    uint8_t book1[8] = {0}, book2[8] = {0};
    for (int i = 0; i < a; i++) book1[i] = (uint8_t)order[i], kind[order[i]] = 0, code_of[order[i]] = i;
    for (int i = 0; i < a - 1; i++)
        book2[i] = (uint8_t)order[a + i], kind[order[a + i]] = 1, code_of[order[a + i]] = i;
    const uint64_t nb = (n + C2_BLOCK - 1) / C2_BLOCK;
    uint64_t n_exc = 0, n_far = 0;
    for (int e = 0; e < 256; e++) n_exc += kind[e] ? cnt[e] : 0, n_far += kind[e] == 2 ? cnt[e] : 0;
    c2_layout *L = &out->lay;
    L->n = n;
    L->base = A;
    L->rest = C2_HEADER;
    L->code = align16(L->rest + n);
    L->table = align16(L->code + (A == 8 ? 3 * n / 8 : (21 * (n / 8) + 7) / 8) + 8);
    L->exc = L->table + 12 * (nb + 1);
    L->far = L->exc + n_exc;
    out->bytes = align16(L->far + n_far);
    out->buf = (uint8_t *)aligned_alloc(16, out->bytes);
    if (!out->buf) {
        fprintf(stderr, "c2_encode: out of memory (%llu bytes)\n", (unsigned long long)out->bytes);
        return -1;
    }
    memset(out->buf, 0, out->bytes);
    uint8_t *P = out->buf;
    memcpy(P, A == 8 ? "PX2p" : "PX26", 4);
    put32(P + 4, 1);
    for (int i = 0; i < 8; i++) P[8 + i] = (uint8_t)(n >> (8 * i));
    memcpy(P + 16, book1, 8);
    memcpy(P + 24, book2, 8);
    uint64_t xe = 0, xf = 0, lane_v = 0;
    for (uint64_t b = 0; b < nb; b++) {
        uint8_t *t = P + L->table + 12 * b;
        uint32_t per_group[4] = {0};
        put32(t, (uint32_t)xe);
        put32(t + 4, (uint32_t)xf);
        for (uint64_t i = b * C2_BLOCK; i < n && i < (b + 1) * C2_BLOCK; i++) {
            const uint64_t pos = i - b * C2_BLOCK;
            P[L->rest + i] = (uint8_t)(((v[i] >> 8) & 0x80) | (v[i] & 0x7f));
            const int e = (v[i] >> 7) & 0xff, c = code_of[e];
            if (kind[e]) {
                P[L->exc + xe++] = (uint8_t)(pos % C2_GROUP);
                per_group[pos / C2_GROUP]++;
                if (kind[e] == 2) P[L->far + xf++] = (uint8_t)e;
            }
            if (A == 8) {
                const uint64_t bit = 3 * i;
                for (int k = 0; k < 3; k++)
                    if ((c >> k) & 1) P[L->code + (bit + k) / 8] |= (uint8_t)(1u << ((bit + k) % 8));
            } else {
                lane_v = lane_v * 6 + (uint64_t)c;
                if (i % 8 == 7) { /* the lane's fraction ceil(v 2^21 / 6^8), 21 bits at 21 L */
                    const uint64_t f = ((lane_v << 21) + 1679615) / 1679616, bit = 21 * (i / 8);
                    for (int k = 0; k < 21; k++)
                        if ((f >> k) & 1) P[L->code + (bit + k) / 8] |= (uint8_t)(1u << ((bit + k) % 8));
                    lane_v = 0;
                }
            }
        }
        const uint32_t e0 = per_group[0], e1 = e0 + per_group[1], e2 = e1 + per_group[2];
        put32(t + 8, e0 | e1 << 10 | e2 << 20);
    }
    put32(P + L->table + 12 * nb, (uint32_t)xe);
    put32(P + L->table + 12 * nb + 4, (uint32_t)xf);
    out->n_exc = n_exc, out->n_far = n_far;
    if (xe != n_exc || xf != n_far) {
        fprintf(stderr, "c2_encode: internal count mismatch (%llu/%llu exceptions)\n", (unsigned long long)xe,
                (unsigned long long)n_exc);
        return -1;
    }
    uint32_t h1[2] = {0}, l1[2] = {0}, b2[2] = {0};
    for (int i = 0; i < 8; i++) {
        h1[i / 4] |= (uint32_t)(book1[i] >> 1) << (8 * (i % 4));
        l1[i / 4] |= (uint32_t)((book1[i] & 1) << 7) << (8 * (i % 4));
        b2[i / 4] |= (uint32_t)book2[i] << (8 * (i % 4));
    }
    L->h1lo = h1[0], L->h1hi = h1[1], L->l1lo = l1[0], L->l1hi = l1[1], L->b2lo = b2[0], L->b2hi = b2[1];
    return 0;
}

/* Rows of k per fused GEMV tile (codec2_proto.cu's c2_gemv_k): a power of
 * two ≤ 8 with rb·k ≤ 24576 elements (48 KiB of bf16), as PEX1's kernel. */
#define C2_TILE 24576
static inline int c2_rows_per_block(int k)
{
    int rb = 8;
    while (rb > 1 && (long)rb * k > C2_TILE) rb /= 2;
    return rb;
}

/* ---------------------------------------------------------------- test values */

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return rng_state;
}
static double gauss(void)
{
    const double u = ((double)(rnd() >> 11) + 0.5) / 9007199254740992.0,
                 w = ((double)(rnd() >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * w);
}
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* Normal, std 0.01-0.03 per matrix, three outliers of 5-20x per row (the
 * realistic() of tests/bench/packed_codec_candidates.py). */
static void trained(uint16_t *v, uint64_t rows, uint64_t cols)
{
    const double std = 0.02 * (0.5 + (double)(rnd() % 1000) / 1000.0);
    for (uint64_t r = 0; r < rows; r++) {
        float *row = (float *)malloc(cols * sizeof *row);
        for (uint64_t c = 0; c < cols; c++) row[c] = (float)(std * gauss());
        for (int k = 0; k < 3; k++) row[rnd() % cols] *= (float)(5 + 15 * (double)(rnd() % 1000) / 1000.0);
        for (uint64_t c = 0; c < cols; c++) v[r * cols + c] = to_bf16(row[c]);
        free(row);
    }
}

#endif
