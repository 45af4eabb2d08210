/* test_sampling.c — the generator, argmax, repetition penalty, log-softmax
 * and lrun_sample: kept sets on hand-built distributions, agreement with a
 * plain sort-based reference on large vocabularies, the empirical frequency
 * of draws (chi-square), seed reproducibility and bad parameters. */
#include "check.h"
#include "lrun.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static lrun_sampling_params defaults(void)
{
    lrun_sampling_params p = {.do_sample = 1, .temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                              .repetition_penalty = 1.0f};
    return p;
}

/* Runs lrun_sample on a copy of logits; kept[i] = 1 where the processed
 * logit is finite (HF's warpers leave -inf on removed tokens). */
static lrun_status sample_kept(const float *logits, int64_t n, const lrun_sampling_params *p, const int32_t *hist,
                               int64_t nh, lrun_rng *rng, int *kept, int32_t *tok)
{
    float *l = malloc(n * sizeof *l);
    void *work = malloc(lrun_sample_work_bytes(n));
    memcpy(l, logits, n * sizeof *l);
    lrun_status st = lrun_sample(l, n, p, hist, nh, rng, work, tok);
    for (int64_t i = 0; i < n; i++) kept[i] = l[i] != -INFINITY;
    free(l);
    free(work);
    return st;
}

static int kept_is(const int *kept, int64_t n, const char *want)
{
    for (int64_t i = 0; i < n; i++)
        if (kept[i] != (want[i] == '1')) return 0;
    return 1;
}

// ---------------------------------------------------------------- generator, argmax, penalty

static void test_rng(void)
{
    lrun_rng *a, *b, *c;
    lrun_rng_init(&a, 42);
    lrun_rng_init(&b, 42);
    lrun_rng_init(&c, 43);
    int same = 1, differ = 0, in_range = 1;
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double x = lrun_rng_uniform(a), y = lrun_rng_uniform(b), z = lrun_rng_uniform(c);
        same &= x == y;
        differ += x != z;
        in_range &= x >= 0 && x < 1;
        sum += x;
    }
    CHECK("same seed, same draws", same);
    CHECK("neighbouring seeds give different streams", differ > 99990);
    CHECK("uniform in [0, 1)", in_range);
    CHECK_NEAR("uniform mean", sum / 100000, 0.5, 0.005);
    lrun_rng_free(a);
    lrun_rng_free(b);
    lrun_rng_free(c);
    lrun_rng *z;
    lrun_rng_init(&z, 0);
    CHECK("seed 0 works", lrun_rng_uniform(z) != lrun_rng_uniform(z));
    lrun_rng_free(z);
}

static void test_argmax_penalty(void)
{
    float l[6] = {1, 3, -2, 3, 0, 3};
    CHECK("argmax takes the first of equals", lrun_logits_argmax(l, 6) == 1);
    float nan_first[3] = {NAN, 1, 2};
    CHECK("argmax skips NaN", lrun_logits_argmax(nan_first, 3) == 2);
    float ninf[3] = {-INFINITY, -INFINITY, -INFINITY};
    CHECK("argmax of all -inf is 0", lrun_logits_argmax(ninf, 3) == 0);

    float p[5] = {2.0f, -2.0f, 0.5f, -0.5f, 0.0f};
    int32_t hist[7] = {0, 1, 0, 1, 0, 4, 1};
    CHECK("repetition penalty", lrun_logits_repetition_penalty(p, 5, hist, 7, 2.0f) == LRUN_OK);
    CHECK("positive logits are divided, once per distinct id", p[0] == 1.0f);
    CHECK("negative logits are multiplied, once per distinct id", p[1] == -4.0f);
    CHECK("ids not in the history are untouched", p[2] == 0.5f && p[3] == -0.5f);
    CHECK("a zero logit stays zero", p[4] == 0.0f);
    float q[3] = {1, 2, 3};
    int32_t bad[2] = {1, 3};
    CHECK("an id outside the vocabulary is LRUN_E_ARG", lrun_logits_repetition_penalty(q, 3, bad, 2, 1.3f) == LRUN_E_ARG);
    CHECK("and leaves the logits", q[0] == 1 && q[1] == 2 && q[2] == 3);
    CHECK("penalty 0 is LRUN_E_ARG", lrun_logits_repetition_penalty(q, 3, hist, 1, 0.0f) == LRUN_E_ARG &&
                                         strstr(lrun_last_error(), "repetition_penalty"));
    float r[2] = {1, 2};
    int32_t h0[1] = {0};
    lrun_logits_repetition_penalty(r, 2, h0, 1, 0.5f);
    CHECK("a penalty below 1 rewards repeats", r[0] == 2.0f);
}

static void test_log_softmax(void)
{
    float l[3] = {1000.0f, 1001.0f, 999.0f};
    lrun_logits_log_softmax(l, 3);
    double s = exp(l[0]) + exp(l[1]) + exp(l[2]);
    CHECK_NEAR("log-softmax of large logits sums to 1", s, 1.0, 1e-6);
    CHECK_NEAR("log-softmax value", l[1], -0.40760596, 1e-6);
    float m[3] = {0, -INFINITY, 0};
    lrun_logits_log_softmax(m, 3);
    CHECK("log-softmax keeps -inf and halves the rest", m[1] == -INFINITY && fabs(m[0] - log(0.5)) < 1e-6);
    float big[1000];
    for (int i = 0; i < 1000; i++) big[i] = (float)(i % 17) * 3.0f - 20.0f;
    lrun_logits_log_softmax(big, 1000);
    double t = 0;
    for (int i = 0; i < 1000; i++) t += exp(big[i]);
    CHECK_NEAR("log-softmax over 1000 sums to 1", t, 1.0, 1e-5);
}

// ---------------------------------------------------------------- kept sets on hand-built distributions

static void test_kept_sets(void)
{
    lrun_rng *rng;
    lrun_rng_init(&rng, 7);
    int kept[8];
    int32_t tok;
    lrun_sampling_params p = defaults();

    float tk[6] = {1, 5, 3, 5, 2, 4};
    p.top_k = 2;
    sample_kept(tk, 6, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_k 2 keeps the two 5s", kept_is(kept, 6, "010100") && (tok == 1 || tok == 3));
    p.top_k = 3;
    sample_kept(tk, 6, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_k 3 adds the 4", kept_is(kept, 6, "010101"));
    float ties[5] = {5, 4, 4, 4, 1};
    p.top_k = 2;
    sample_kept(ties, 5, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_k keeps every tie of the k-th value (HF)", kept_is(kept, 5, "11110"));
    p.top_k = 10;
    sample_kept(tk, 6, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_k above the vocabulary keeps all", kept_is(kept, 6, "111111"));

    /* probabilities 0.1, 0.5, 0.15, 0.25 (shuffled so order is not position) */
    float pp[4] = {logf(0.1f), logf(0.5f), logf(0.15f), logf(0.25f)};
    p = defaults();
    p.top_p = 0.7f;
    sample_kept(pp, 4, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_p 0.7 keeps 0.5 + 0.25", kept_is(kept, 4, "0101"));
    p.top_p = 0.8f;
    sample_kept(pp, 4, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_p 0.8 adds 0.15", kept_is(kept, 4, "0111"));
    p.top_p = 0.3f;
    sample_kept(pp, 4, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_p below the top probability keeps only it", kept_is(kept, 4, "0100") && tok == 1);
    p.top_p = 1e-6f;
    sample_kept(pp, 4, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_p tiny still keeps one", kept_is(kept, 4, "0100"));
    p.top_p = 1.0f;
    sample_kept(pp, 4, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_p 1 keeps all", kept_is(kept, 4, "1111"));

    p = defaults();
    p.min_p = 0.25f; /* threshold 0.125: keeps 0.5, 0.25, 0.15 */
    sample_kept(pp, 4, &p, NULL, 0, rng, kept, &tok);
    CHECK("min_p 0.25 keeps p >= 0.125", kept_is(kept, 4, "0111"));
    p.min_p = 0.4f; /* threshold 0.2 */
    sample_kept(pp, 4, &p, NULL, 0, rng, kept, &tok);
    CHECK("min_p 0.4 keeps p >= 0.2", kept_is(kept, 4, "0101"));
    p.min_p = 1.0f;
    sample_kept(pp, 4, &p, NULL, 0, rng, kept, &tok);
    CHECK("min_p 1 keeps the top only", kept_is(kept, 4, "0100") && tok == 1);

    /* Order: top-k renormalizes before top-p. p = 0.4, 0.3, 0.2, 0.1; top_k 3
     * gives 0.444, 0.333, 0.222: top_p 0.75 then keeps two, where without
     * top-k 0.4 + 0.3 < 0.75 would keep three. */
    float o[4] = {logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f)};
    p = defaults();
    p.top_p = 0.75f;
    sample_kept(o, 4, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_p 0.75 alone keeps three", kept_is(kept, 4, "1110"));
    p.top_k = 3;
    sample_kept(o, 4, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_k before top_p: two", kept_is(kept, 4, "1100"));

    /* Temperature comes before top-p: T = 0.5 squares the probabilities,
     * 0.5, 0.3, 0.2 → 0.658, 0.237, 0.105. */
    float t3[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    p = defaults();
    p.top_p = 0.6f;
    sample_kept(t3, 3, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_p 0.6 at T = 1 keeps two", kept_is(kept, 3, "110"));
    p.temperature = 0.5f;
    sample_kept(t3, 3, &p, NULL, 0, rng, kept, &tok);
    CHECK("top_p 0.6 at T = 0.5 keeps one", kept_is(kept, 3, "100"));

    /* Processed scores are l / T on kept tokens. */
    float s[3] = {2, 1, 0};
    p = defaults();
    p.temperature = 0.5f;
    void *work = malloc(lrun_sample_work_bytes(3));
    lrun_sample(s, 3, &p, NULL, 0, rng, work, &tok);
    CHECK("processed logits are divided by the temperature", s[0] == 4.0f && s[1] == 2.0f && s[2] == 0.0f);

    /* The repetition penalty comes first, also when greedy. */
    float g[3] = {3.0f, 2.0f, -1.0f};
    int32_t h[1] = {0};
    p = defaults();
    p.do_sample = 0;
    p.repetition_penalty = 2.0f;
    lrun_sample(g, 3, &p, h, 1, NULL, work, &tok);
    CHECK("greedy after the penalty picks 2 over 3/2", tok == 1 && g[0] == 1.5f);
    float g2[3] = {-3.0f, -2.0f, -2.5f};
    int32_t h2[2] = {1, 1};
    lrun_sample(g2, 3, &p, h2, 2, NULL, work, &tok);
    CHECK("a negative logit is multiplied (once): -2 → -4", tok == 2 && g2[1] == -4.0f);
    p.temperature = 0.0f; /* ignored when greedy */
    CHECK("greedy ignores temperature", lrun_sample(g2, 3, &p, NULL, 0, NULL, work, &tok) == LRUN_OK);
    free(work);
    lrun_rng_free(rng);
}

static void test_bad_params(void)
{
    float l[4] = {1, 2, 3, 4};
    void *work = malloc(lrun_sample_work_bytes(4));
    int32_t tok;
    lrun_rng *rng;
    lrun_rng_init(&rng, 1);
    lrun_sampling_params p = defaults();
    p.temperature = 0.0f;
    CHECK("temperature 0 with do_sample is LRUN_E_ARG naming it",
          lrun_sample(l, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG && strstr(lrun_last_error(), "temperature"));
    p = defaults();
    p.top_p = 0.0f;
    CHECK("top_p 0 is LRUN_E_ARG naming it",
          lrun_sample(l, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG && strstr(lrun_last_error(), "top_p"));
    p.top_p = 1.5f;
    CHECK("top_p 1.5 is LRUN_E_ARG", lrun_sample(l, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG);
    p = defaults();
    p.top_k = -1;
    CHECK("top_k -1 is LRUN_E_ARG naming it",
          lrun_sample(l, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG && strstr(lrun_last_error(), "top_k"));
    p = defaults();
    p.min_p = 2.0f;
    CHECK("min_p 2 is LRUN_E_ARG naming it",
          lrun_sample(l, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG && strstr(lrun_last_error(), "min_p"));
    p = defaults();
    p.repetition_penalty = -1.0f;
    CHECK("repetition_penalty -1 is LRUN_E_ARG naming it",
          lrun_sample(l, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG &&
              strstr(lrun_last_error(), "repetition_penalty"));
    p = defaults();
    CHECK("do_sample without a generator is LRUN_E_ARG", lrun_sample(l, 4, &p, NULL, 0, NULL, work, &tok) == LRUN_E_ARG);
    float nan_l[2] = {NAN, 1};
    CHECK("NaN logits are LRUN_E_ARG", lrun_sample(nan_l, 2, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG);
    float ninf[2] = {-INFINITY, -INFINITY};
    CHECK("all -inf is LRUN_E_ARG", lrun_sample(ninf, 2, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG);
    CHECK("work bytes: n floats and n int32", lrun_sample_work_bytes(49152) == 49152 * 8 &&
                                                 lrun_sample_work_bytes(0) == 0);
    free(work);
    lrun_rng_free(rng);
}

// ---------------------------------------------------------------- a plain reference

static const double *ref_key;

static int ref_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (ref_key[x] != ref_key[y]) return ref_key[x] > ref_key[y] ? -1 : 1;
    return x < y ? -1 : 1;
}

/* The renormalized distribution the sampler draws from, by full sort in
 * double: prob[i] = 0 outside the kept set. */
static void reference(const float *logits, int64_t n, const lrun_sampling_params *p, double *prob)
{
    double *s = malloc(n * sizeof *s);
    int32_t *ord = malloc(n * sizeof *ord);
    for (int64_t i = 0; i < n; i++) {
        s[i] = (double)logits[i] / p->temperature;
        ord[i] = (int32_t)i;
        prob[i] = 0;
    }
    ref_key = s;
    qsort(ord, n, sizeof *ord, ref_cmp);
    int64_t c = n;
    if (p->top_k > 0 && p->top_k < n) {
        c = p->top_k;
        while (c < n && s[ord[c]] == s[ord[p->top_k - 1]]) c++;
    }
    double z = 0;
    for (int64_t j = 0; j < c; j++) z += exp(s[ord[j]] - s[ord[0]]);
    if (p->top_p < 1) {
        double acc = 0;
        int64_t j = 0;
        while (j < c) {
            acc += exp(s[ord[j]] - s[ord[0]]) / z;
            j++;
            if (acc >= p->top_p) break;
        }
        c = j;
    }
    double total = 0;
    for (int64_t j = 0; j < c; j++) {
        double w = exp(s[ord[j]] - s[ord[0]]);
        if (w < p->min_p) continue;
        prob[ord[j]] = w;
        total += w;
    }
    for (int64_t i = 0; i < n; i++) prob[i] /= total;
    free(s);
    free(ord);
}

static void test_large_vocab(void)
{
    const int64_t n = 151936; /* Qwen2's vocabulary */
    float *l = malloc(n * sizeof *l);
    int *kept = malloc(n * sizeof *kept);
    double *prob = malloc(n * sizeof *prob);
    uint64_t x = 99;
    for (int64_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        /* a skewed, logit-like spread with some exact ties */
        l[i] = (float)((int)((x >> 40) % 20000)) / 1000.0f - 10.0f;
    }
    lrun_rng *rng;
    lrun_rng_init(&rng, 5);
    int32_t tok;
    static const struct { int32_t k; float p, m, t; } cases[] = {
        {50, 1.0f, 0.0f, 1.0f}, {0, 0.9f, 0.0f, 1.0f}, {0, 1.0f, 0.05f, 0.7f}, {1000, 0.5f, 0.1f, 1.3f}, {1, 1.0f, 0, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        lrun_sampling_params p = defaults();
        p.top_k = cases[c].k;
        p.top_p = cases[c].p;
        p.min_p = cases[c].m;
        p.temperature = cases[c].t;
        clock_t t0 = clock();
        sample_kept(l, n, &p, NULL, 0, rng, kept, &tok);
        double us = 1e6 * (double)(clock() - t0) / CLOCKS_PER_SEC;
        reference(l, n, &p, prob);
        int64_t agree = 1, n_kept = 0;
        for (int64_t i = 0; i < n; i++) {
            agree &= kept[i] == (prob[i] > 0);
            n_kept += kept[i];
        }
        char name[128];
        snprintf(name, sizeof name, "151936 ids, top_k %d top_p %g min_p %g T %g: kept set as the reference (%lld)",
                 cases[c].k, (double)cases[c].p, (double)cases[c].m, (double)cases[c].t, (long long)n_kept);
        CHECK(name, agree && prob[tok] > 0);
        printf("# %.0f us per sample (with copies)\n", us);
    }
    lrun_rng_free(rng);
    free(l);
    free(kept);
    free(prob);
}

// ---------------------------------------------------------------- draws

static void test_frequencies(void)
{
    const float l[8] = {0.3f, 2.0f, -1.0f, 1.1f, 1.7f, 0.9f, -0.2f, 1.4f};
    lrun_sampling_params p = defaults();
    p.top_k = 6;
    p.top_p = 0.9f;
    p.temperature = 0.8f;
    double prob[8];
    reference(l, 8, &p, prob);
    enum { N = 40000 };
    long count[8] = {0};
    lrun_rng *rng;
    lrun_rng_init(&rng, 2024);
    float buf[8];
    void *work = malloc(lrun_sample_work_bytes(8));
    for (int i = 0; i < N; i++) {
        int32_t tok;
        memcpy(buf, l, sizeof buf);
        lrun_sample(buf, 8, &p, NULL, 0, rng, work, &tok);
        count[tok]++;
    }
    int outside = 0, df = -1;
    double chi2 = 0;
    for (int i = 0; i < 8; i++) {
        if (prob[i] == 0) {
            outside += count[i] != 0;
            continue;
        }
        double e = prob[i] * N;
        chi2 += (count[i] - e) * (count[i] - e) / e;
        df++;
    }
    /* chi-square critical values at p = 0.001 for 1..7 degrees of freedom */
    static const double crit[8] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32};
    CHECK("draws never leave the kept set", outside == 0);
    CHECK("kept set has several tokens", df >= 2);
    CHECK("draw frequencies match the renormalized distribution (chi-square, p = 0.001)", df >= 1 && chi2 < crit[df]);
    printf("# chi2 = %.2f with %d degrees of freedom\n", chi2, df);

    // the same seed gives the same tokens
    lrun_rng *a, *b;
    lrun_rng_init(&a, 77);
    lrun_rng_init(&b, 77);
    int same = 1, distinct = 0;
    int32_t first = -1;
    for (int i = 0; i < 200; i++) {
        int32_t ta, tb;
        memcpy(buf, l, sizeof buf);
        lrun_sample(buf, 8, &p, NULL, 0, a, work, &ta);
        memcpy(buf, l, sizeof buf);
        lrun_sample(buf, 8, &p, NULL, 0, b, work, &tb);
        same &= ta == tb;
        if (i == 0) first = ta;
        distinct |= ta != first;
    }
    CHECK("same seed, same sampled tokens", same && distinct);
    free(work);
    lrun_rng_free(a);
    lrun_rng_free(b);
    lrun_rng_free(rng);
}

// ---------------------------------------------------------------- edge values (issue 16)

/* Logits strictly above token tok's: top-k keeps tok when this is < k (HF
 * keeps every token tied with the k-th). */
static int64_t rank_of(const float *l, int64_t n, int32_t tok)
{
    int64_t r = 0;
    for (int64_t i = 0; i < n; i++) r += l[i] > l[tok];
    return r;
}

/* Every accepted combination of edge temperatures, top_k, top_p and min_p
 * over edge logits draws a real token, one its own filters kept: the issue's
 * fuzz run saw −1 and filtered tokens with a subnormal temperature. */
static void test_edge_values(void)
{
    const float temps[] = {1e-45f, 1e-40f, 1.17549435e-38f, 1e-30f, 1e-6f, 0.7f, 1e30f, 3.4e38f};
    const float top_ps[] = {1e-45f, 1e-30f, 0.5f, 0.999999f, 1.0f};
    const float min_ps[] = {0.0f, 1e-45f, 1e-30f, 0.5f, 1.0f};
    const int top_ks[] = {0, 1, 2, 7, 8, 9, 2147483647};
    enum { N = 8, CASES = 5 };
    const float logits[CASES][N] = {
        {0.5f, -1.0f, 3.0f, 2.0f, -4.0f, 0.0f, 1.0f, 2.5f},
        {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f},
        {-INFINITY, -3.0f, -INFINITY, -1e30f, -2.0f, -INFINITY, -INFINITY, -INFINITY},
        {1.0f, INFINITY, 2.0f, INFINITY, -INFINITY, 0.0f, 3e38f, -3e38f},
        {3e38f, -3e38f, 3.4e38f, -3.4e38f, 1e-45f, -1e-45f, 0.0f, 3.3e38f},
    };
    lrun_rng *rng;
    lrun_rng_init(&rng, 7);
    void *work = malloc(lrun_sample_work_bytes(N));
    int bad = 0, not_max = 0, calls = 0;
    for (int c = 0; c < CASES; c++)
        for (size_t a = 0; a < sizeof temps / sizeof *temps; a++)
            for (size_t b = 0; b < sizeof top_ps / sizeof *top_ps; b++)
                for (size_t d = 0; d < sizeof min_ps / sizeof *min_ps; d++)
                    for (size_t e = 0; e < sizeof top_ks / sizeof *top_ks; e++) {
                        lrun_sampling_params p = defaults();
                        p.temperature = temps[a];
                        p.top_p = top_ps[b];
                        p.min_p = min_ps[d];
                        p.top_k = top_ks[e];
                        float l[N];
                        memcpy(l, logits[c], sizeof l);
                        int32_t tok = -7;
                        lrun_status st = lrun_sample(l, N, &p, NULL, 0, rng, work, &tok);
                        calls++;
                        if (st != LRUN_OK || tok < 0 || tok >= N) {
                            if (bad++ < 5)
                                printf("# case %d T=%g top_p=%g min_p=%g top_k=%d: status %d token %d\n", c,
                                       (double)p.temperature, (double)p.top_p, (double)p.min_p, p.top_k, st, tok);
                            continue;
                        }
                        if (logits[c][tok] == -INFINITY || (p.top_k > 0 && rank_of(logits[c], N, tok) >= p.top_k)) {
                            if (bad++ < 5)
                                printf("# case %d T=%g top_p=%g min_p=%g top_k=%d: token %d (logit %g) filtered\n", c,
                                       (double)p.temperature, (double)p.top_p, (double)p.min_p, p.top_k, tok,
                                       (double)logits[c][tok]);
                        }
                        /* below 1e-30 only the largest logits carry any weight */
                        if (p.temperature <= 1e-30f && logits[c][tok] != logits[c][lrun_logits_argmax(logits[c], N)])
                            not_max++;
                    }
    CHECK("edge temperatures, top_k, top_p, min_p: always a real, kept token", bad == 0 && calls > 0);
    CHECK("a temperature down to subnormal draws among the largest logits", not_max == 0);

    /* NaN and inf logits: NaN is an error when sampling, ignored by argmax */
    float nanl[4] = {1.0f, NAN, 2.0f, 0.0f};
    lrun_sampling_params p = defaults();
    int32_t tok = -7;
    CHECK("a NaN logit is an argument error when sampling",
          lrun_sample(nanl, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG);
    float nanl2[4] = {1.0f, NAN, 2.0f, 0.0f};
    p.do_sample = 0;
    CHECK("greedy skips a NaN logit", lrun_sample(nanl2, 4, &p, NULL, 0, rng, work, &tok) == LRUN_OK && tok == 2);
    float alln[3] = {NAN, NAN, NAN};
    CHECK("greedy over all-NaN logits gives a real token",
          lrun_sample(alln, 3, &p, NULL, 0, rng, work, &tok) == LRUN_OK && tok >= 0 && tok < 3);
    p = defaults();
    const float bad_t[] = {0.0f, -0.0f, -1e-45f, -1.0f, NAN, INFINITY, -INFINITY};
    int refused = 1;
    for (size_t i = 0; i < sizeof bad_t / sizeof *bad_t; i++) {
        p.temperature = bad_t[i];
        float l[4] = {1, 2, 3, 4};
        refused &= lrun_sample(l, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG;
    }
    p = defaults();
    const float bad_p[] = {0.0f, -1e-45f, NAN, 1.0000001f, INFINITY};
    for (size_t i = 0; i < sizeof bad_p / sizeof *bad_p; i++) {
        p.top_p = bad_p[i];
        float l[4] = {1, 2, 3, 4};
        refused &= lrun_sample(l, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG;
        p.top_p = 1.0f;
        p.min_p = bad_p[i] == 0.0f ? -1e-45f : bad_p[i];
        refused &= lrun_sample(l, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG;
        p.min_p = 0.0f;
    }
    p.top_k = -1;
    float l4[4] = {1, 2, 3, 4};
    refused &= lrun_sample(l4, 4, &p, NULL, 0, rng, work, &tok) == LRUN_E_ARG;
    CHECK("zero, negative, NaN and infinite temperature, top_p, min_p, top_k are argument errors", refused);
    /* repetition penalties at the edges keep the draw real */
    const float pens[] = {1e-45f, 1e-30f, 3e38f};
    int pen_ok = 1;
    for (size_t i = 0; i < sizeof pens / sizeof *pens; i++) {
        p = defaults();
        p.repetition_penalty = pens[i];
        float l[4] = {1, -2, 0, 4};
        int32_t hist[3] = {0, 1, 3};
        lrun_status st = lrun_sample(l, 4, &p, hist, 3, rng, work, &tok);
        pen_ok &= st == LRUN_OK && tok >= 0 && tok < 4;
    }
    CHECK("edge repetition penalties still draw a real token", pen_ok);
    free(work);
    lrun_rng_free(rng);
}

int main(void)
{
    test_rng();
    test_argmax_penalty();
    test_log_softmax();
    test_kept_sets();
    test_bad_params();
    test_large_vocab();
    test_frequencies();
    test_edge_values();
    return CHECK_DONE();
}
