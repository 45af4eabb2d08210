/* fuzz_sampler.c — libFuzzer target: lrun_sample over arbitrary options and
 * logits. The input is read as: do_sample, temperature, top_k, top_p, min_p,
 * repetition penalty (raw float/int bits, so NaN, inf, subnormals and
 * negatives come up), the vocabulary size (1..300), the history length, the
 * history ids and then the logits' bits. Accepted options must give a real
 * token that the filters kept: in range, not a -inf logit (after the
 * penalty), and within top_k (ties with the k-th kept, as HF does). */
#include "lrun.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader {
    const uint8_t *p;
    size_t left;
} reader;

static uint32_t take32(reader *r)
{
    uint32_t v = 0;
    size_t n = r->left < 4 ? r->left : 4;
    memcpy(&v, r->p, n);
    r->p += n, r->left -= n;
    return v;
}

static float takef(reader *r)
{
    uint32_t v = take32(r);
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size};
    lrun_sampling_params p;
    p.do_sample = (int)(take32(&r) & 1);
    p.temperature = takef(&r);
    p.top_k = (int)take32(&r);
    p.top_p = takef(&r);
    p.min_p = takef(&r);
    p.repetition_penalty = takef(&r);
    const int64_t n = 1 + take32(&r) % 300;
    const int64_t nh = take32(&r) % 16;
    int32_t hist[16];
    for (int64_t i = 0; i < nh; i++) hist[i] = (int32_t)(take32(&r) % (uint32_t)(n + 2)) - 1; /* -1..n: some bad */
    float *logits = malloc((size_t)n * sizeof *logits), *before = malloc((size_t)n * sizeof *before);
    void *work = malloc(lrun_sample_work_bytes(n));
    for (int64_t i = 0; i < n; i++) logits[i] = takef(&r);
    lrun_rng *rng = NULL;
    lrun_rng_init(&rng, take32(&r));

    /* the logits after the penalty, as the sampler sees them */
    memcpy(before, logits, (size_t)n * sizeof *before);
    int hist_ok = 1;
    for (int64_t i = 0; i < nh; i++) hist_ok &= hist[i] >= 0 && hist[i] < n;
    if (hist_ok && p.repetition_penalty > 0 && p.repetition_penalty != 1.0f) {
        uint8_t seen[300] = {0};
        for (int64_t i = 0; i < nh; i++) {
            if (seen[hist[i]]++) continue;
            float l = before[hist[i]];
            before[hist[i]] = l < 0 ? l * p.repetition_penalty : l / p.repetition_penalty;
        }
    }

    int32_t tok = -7;
    lrun_status st = lrun_sample(logits, n, &p, hist, nh, rng, work, &tok);
    if (st == LRUN_OK) {
        if (tok < 0 || tok >= n) __builtin_trap();
        if (p.do_sample) {
            if (before[tok] == -INFINITY) __builtin_trap();
            if (p.top_k > 0) {
                int64_t above = 0;
                for (int64_t i = 0; i < n; i++) above += before[i] > before[tok];
                if (above >= p.top_k) __builtin_trap();
            }
        }
    }
    lrun_rng_free(rng);
    free(work);
    free(before);
    free(logits);
    return 0;
}
