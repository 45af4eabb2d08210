/* sampling.c — the seeded generator and the logits processors of generation,
 * with HF GenerationConfig semantics and order (REFERENCE.md):
 *
 *   repetition penalty → temperature → top-k → top-p → min-p → softmax → draw
 *
 * A vocabulary is 49k–150k entries and this runs once per token per
 * sequence, so nothing here sorts the whole vocabulary: top-k is a bounded
 * heap in one pass, top-p a quickselect on probability mass over the few
 * candidates that can matter, the dense passes (max, exp, sums) are AVX2 where
 * the CPU has it, and every buffer comes from the caller's work area (no
 * malloc per call).
 *
 * Candidates are ordered by logit, highest first, ties by lower token id.
 * That order is strict, so the kept sets are deterministic whatever the
 * selection's pivots were. */
#include "core/checked.h"
#include "core/error.h"

#include <float.h>
#include <math.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- rng

/* xoshiro256** (Blackman & Vigna), state seeded through splitmix64 so that
 * nearby seeds give unrelated streams and the state is never all zero. */
struct lrun_rng {
    uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(lrun_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

lrun_status lrun_rng_init(lrun_rng **out, uint64_t seed)
{
    lrun_rng *r = malloc(sizeof *r);
    *out = NULL;
    if (!r) return lrun_fail_oom(sizeof *r, 0, "lrun_rng_init: host memory for the generator");
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
    *out = r;
    return LRUN_OK;
}

void lrun_rng_free(lrun_rng *rng) { free(rng); }

double lrun_rng_uniform(lrun_rng *rng)
{
    /* The top 53 bits: every double in [0, 1) on the 2^-53 grid, equally likely. */
    return (double)(rng_next(rng) >> 11) * 0x1.0p-53;
}

// ---------------------------------------------------------------- dense kernels

/* The largest logit, NaN ignored; *has_nan says whether there was one. */
static float max_logit(const float *l, int64_t n, int *has_nan)
{
    float m = -INFINITY;
    int nan = 0;
    int64_t i = 0;
#if defined(__AVX2__)
    __m256 vm = _mm256_set1_ps(-INFINITY), vn = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(l + i);
        vm = _mm256_max_ps(x, vm); /* a NaN x yields vm, the second operand */
        vn = _mm256_or_ps(vn, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, vm);
    for (int j = 0; j < 8; j++) m = lanes[j] > m ? lanes[j] : m;
    nan = _mm256_movemask_ps(vn) != 0;
#endif
    for (; i < n; i++) {
        nan |= l[i] != l[i];
        if (l[i] > m) m = l[i];
    }
    *has_nan = nan;
    return m;
}

/* e^x for x <= 0 (0 below -87.3, where floats stop being normal), within
 * about 2 ulp: x = k·ln2 + r, |r| <= ln2/2, e^r by its degree-6 Taylor
 * polynomial, 2^k through the exponent bits. exp8 is its AVX2 twin. */
static inline float exp_neg(float x)
{
    if (!(x >= -87.3f)) return 0.0f;
    float k = nearbyintf(x * 1.44269504f);
    float r = x - k * 0.693145751953125f - k * 1.428606765330187e-06f;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#if defined(__AVX2__)
static inline __m256 exp8(__m256 x)
{
    __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_GE_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f)); /* keeps -inf out of the arithmetic */
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(k, _mm256_set1_ps(0.693145751953125f)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(k, _mm256_set1_ps(1.428606765330187e-06f)));
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 120));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 24));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f / 6));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(0.5f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.0f));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(bits)), live);
}
#endif

/* Weights are softmax numerators after temperature: e^((l - m) / T), m the
 * max, computed with 1/T (a multiply; the rounding is far below what changes
 * a kept set). With a +inf max the +inf entries share all the mass. */
static inline float weight_of(float l, float m, float inv_t)
{
    return m == INFINITY ? (float)(l == INFINITY) : exp_neg((l - m) * inv_t);
}

static void fill_neg_inf(float *l, int64_t n)
{
    int64_t i = 0;
#if defined(__AVX2__)
    __m256 v = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(l + i, v);
#endif
    for (; i < n; i++) l[i] = -INFINITY;
}

/* Tokens per block of the dense draw's two-level walk. */
#define DRAW_BLOCK 1024

/* w[i] = weight of every token; bsum[b] = sum of block b's weights (float
 * lanes within a block, so long rows do not lose small terms); returns the
 * total. */
static double dense_weights(const float *l, int64_t n, float m, float inv_t, float *w, float *bsum)
{
    double z = 0;
    for (int64_t b0 = 0; b0 < n; b0 += DRAW_BLOCK) {
        int64_t b1 = b0 + DRAW_BLOCK < n ? b0 + DRAW_BLOCK : n, i = b0;
        float s = 0;
#if defined(__AVX2__)
        if (m != INFINITY) {
            __m256 vm = _mm256_set1_ps(m), vt = _mm256_set1_ps(inv_t), acc = _mm256_setzero_ps();
            for (; i + 8 <= b1; i += 8) {
                __m256 e = exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(l + i), vm), vt));
                _mm256_storeu_ps(w + i, e);
                acc = _mm256_add_ps(acc, e);
            }
            float lanes[8];
            _mm256_storeu_ps(lanes, acc);
            for (int j = 0; j < 8; j++) s += lanes[j];
        }
#endif
        for (; i < b1; i++) s += w[i] = weight_of(l[i], m, inv_t);
        bsum[b0 / DRAW_BLOCK] = s;
        z += s;
    }
    return z;
}

/* l[i] /= t for every token (the processed scores HF's temperature leaves). */
static void dense_divide(float *l, int64_t n, float t)
{
    int64_t i = 0;
#if defined(__AVX2__)
    __m256 vt = _mm256_set1_ps(t);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(l + i, _mm256_div_ps(_mm256_loadu_ps(l + i), vt));
#endif
    for (; i < n; i++) l[i] /= t;
}

// ---------------------------------------------------------------- argmax, penalty, log-softmax

int32_t lrun_logits_argmax(const float *logits, int64_t n_vocab)
{
    if (!logits || n_vocab <= 0) return -1;
    /* A vector max, then the first index holding it: the first of equals. */
    int nan;
    float m = max_logit(logits, n_vocab, &nan);
    for (int64_t i = 0; i < n_vocab; i++)
        if (logits[i] == m) return (int32_t)i;
    return 0; /* every logit NaN */
}

/* Each distinct id is penalized once: HF gathers the logits of the history
 * and scatters the penalized values back, so repeats do not compound.
 * seen: bitmap of n_vocab bits, zero on entry and on return. */
static void penalize(float *logits, const int32_t *history, int64_t n_history, float penalty, uint8_t *seen)
{
    for (int64_t i = 0; i < n_history; i++) {
        int32_t id = history[i];
        uint8_t bit = (uint8_t)(1u << (id & 7));
        if (seen[id >> 3] & bit) continue;
        seen[id >> 3] |= bit;
        float l = logits[id];
        logits[id] = l < 0 ? l * penalty : l / penalty;
    }
    for (int64_t i = 0; i < n_history; i++) seen[history[i] >> 3] = 0;
}

static lrun_status check_penalty_args(int64_t n_vocab, const int32_t *history, int64_t n_history, float penalty)
{
    if (!(penalty > 0) || isinf(penalty))
        return lrun_fail(LRUN_E_ARG, "repetition_penalty is %g (expected a finite number > 0)", (double)penalty);
    if (n_history < 0 || (n_history > 0 && !history))
        return lrun_fail(LRUN_E_ARG, "repetition penalty: history of %lld ids is missing", (long long)n_history);
    for (int64_t i = 0; i < n_history; i++)
        if (history[i] < 0 || history[i] >= n_vocab)
            return lrun_fail(LRUN_E_ARG, "repetition penalty: history[%lld] = %d is not a token id (vocabulary of %lld)",
                             (long long)i, history[i], (long long)n_vocab);
    return LRUN_OK;
}

lrun_status lrun_logits_repetition_penalty(float *logits, int64_t n_vocab, const int32_t *history,
                                           int64_t n_history, float penalty)
{
    if (!logits || n_vocab <= 0 || n_vocab > INT32_MAX)
        return lrun_fail(LRUN_E_ARG, "repetition penalty: %lld logits (expected 1..2^31-1)", (long long)n_vocab);
    lrun_status st = check_penalty_args(n_vocab, history, n_history, penalty);
    if (st != LRUN_OK || penalty == 1.0f || n_history == 0) return st;
    /* 32 KiB on the stack covers vocabularies up to 262,144 ids. */
    uint8_t stack_bits[32768];
    size_t nbits = ((size_t)n_vocab + 7) / 8;
    uint8_t *seen = nbits <= sizeof stack_bits ? stack_bits : calloc(nbits, 1);
    if (!seen) return lrun_fail_oom(nbits, 0, "repetition penalty: a bitmap of %lld ids", (long long)n_vocab);
    if (seen == stack_bits) memset(seen, 0, nbits);
    penalize(logits, history, n_history, penalty, seen);
    if (seen != stack_bits) free(seen);
    return LRUN_OK;
}

void lrun_logits_log_softmax(float *logits, int64_t n_vocab)
{
    if (!logits || n_vocab <= 0) return;
    float m = -INFINITY;
    int64_t n_inf = 0;
    for (int64_t i = 0; i < n_vocab; i++) {
        if (logits[i] > m) m = logits[i];
        n_inf += logits[i] == INFINITY;
    }
    if (m == -INFINITY) return; /* nothing has mass: leave the -inf row as it is */
    if (m == INFINITY) {
        /* The +inf entries share all the mass. */
        for (int64_t i = 0; i < n_vocab; i++)
            logits[i] = logits[i] == INFINITY ? (float)-log((double)n_inf) : -INFINITY;
        return;
    }
    /* Shifted by the max so no exp overflows; summed in double for long rows. */
    double sum = 0;
    for (int64_t i = 0; i < n_vocab; i++) sum += exp((double)(logits[i] - m));
    double lse = (double)m + log(sum);
    for (int64_t i = 0; i < n_vocab; i++) logits[i] = (float)((double)logits[i] - lse);
}

// ---------------------------------------------------------------- partial selection

/* a comes before b: higher logit, or equal logit and lower id. */
static inline int before(const float *l, int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); }

static inline void swap_i32(int32_t *a, int32_t *b)
{
    int32_t t = *a;
    *a = *b;
    *b = t;
}

/* Partitions idx[lo, hi) around a median-of-three pivot: on return
 * idx[lo, p) come before idx[p], idx[p+1, hi) after it; returns p. */
static int64_t partition(const float *l, int32_t *idx, int64_t lo, int64_t hi)
{
    int64_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (before(l, idx[mid], idx[lo])) swap_i32(&idx[mid], &idx[lo]);
    if (before(l, idx[last], idx[lo])) swap_i32(&idx[last], &idx[lo]);
    if (before(l, idx[mid], idx[last])) swap_i32(&idx[mid], &idx[last]);
    /* Now idx[last] holds the median of the three: the pivot. */
    int32_t pivot = idx[last];
    int64_t store = lo;
    for (int64_t i = lo; i < last; i++)
        if (before(l, idx[i], pivot)) swap_i32(&idx[i], &idx[store++]);
    swap_i32(&idx[store], &idx[last]);
    return store;
}

/* Reorders idx[0, m) and returns c: idx[0, c) is the shortest prefix, in
 * order, whose weight reaches target (m when the whole set falls short by
 * rounding). w is indexed by token id. */
static int64_t select_mass(const float *l, const float *w, int32_t *idx, int64_t m, double target)
{
    int64_t lo = 0, hi = m;
    double acc = 0; /* weight of idx[0, lo), all inside the prefix; acc < target */
    while (lo < hi) {
        int64_t p = partition(l, idx, lo, hi);
        double left = 0;
        for (int64_t i = lo; i < p; i++) left += w[idx[i]];
        if (acc + left >= target) {
            hi = p;
            continue;
        }
        acc += left + w[idx[p]];
        if (acc >= target) return p + 1;
        lo = p + 1;
    }
    return lo;
}

/* Candidates above which top-p goes through a histogram first. */
#define TOP_P_DIRECT 2048
/* Buckets of the histogram over x = (max - l) / T, the negative log-weight. */
#define TOP_P_BUCKETS 4096

static inline int bucket_of(float x)
{
    return x < TOP_P_BUCKETS - 1 ? (int)x : TOP_P_BUCKETS - 1;
}

/* As select_mass, for any number of candidates: a histogram of their mass
 * over log-weight finds the bucket where the prefix reaches target; every
 * candidate of a lower bucket is kept (buckets follow the order, since x
 * rises as l falls), and only the boundary bucket's few are selected. */
static int64_t select_top_p(const float *l, const float *w, int32_t *idx, int64_t c, double target, float m,
                            float inv_t)
{
    if (c <= TOP_P_DIRECT || m == INFINITY) return select_mass(l, w, idx, c, target);
    float x_max = 0;
    for (int64_t j = 0; j < c; j++) {
        float x = w[idx[j]] > 0 ? (m - l[idx[j]]) * inv_t : 0;
        x_max = x > x_max ? x : x_max;
    }
    if (!(x_max > 0)) return select_mass(l, w, idx, c, target);
    const float scale = (TOP_P_BUCKETS - 1) / x_max;
#define BUCKET(id) bucket_of((m - l[id]) * inv_t * scale)
    double mass[TOP_P_BUCKETS]; /* (buckets) weight per bucket */
    memset(mass, 0, sizeof mass);
    for (int64_t j = 0; j < c; j++) mass[BUCKET(idx[j])] += w[idx[j]];
    int boundary = 0;
    double before_b = 0; /* mass of the buckets under the boundary */
    while (boundary < TOP_P_BUCKETS - 1 && before_b + mass[boundary] < target) before_b += mass[boundary++];
    int64_t c1 = 0, c2 = 0;
    for (int64_t j = 0; j < c; j++)
        if (BUCKET(idx[j]) < boundary) swap_i32(&idx[j], &idx[c1++]);
    for (int64_t j = c1; j < c; j++)
        if (BUCKET(idx[j]) == boundary) swap_i32(&idx[j], &idx[c1 + c2++]);
#undef BUCKET
    return c1 + select_mass(l, w, idx + c1, c2, target - before_b);
}

/* The top k tokens in order (0 < k < n) and every token tied with the k-th
 * (HF keeps l >= the k-th value): ids into idx, count returned. heap: (k)
 * scratch. One pass with a bounded heap whose root is the k-th best so far;
 * almost every token is turned away by one comparison with it. */
static int64_t select_top_k(const float *l, int64_t n, int64_t k, int32_t *heap, int32_t *idx)
{
    for (int64_t i = 0; i < k; i++) heap[i] = (int32_t)i;
    /* Heapify so the root is the last in order among the k. */
    for (int64_t s = k / 2; s-- > 0;) {
        for (int64_t i = s;;) {
            int64_t a = 2 * i + 1, b = a + 1, worst = i;
            if (a < k && before(l, heap[worst], heap[a])) worst = a;
            if (b < k && before(l, heap[worst], heap[b])) worst = b;
            if (worst == i) break;
            swap_i32(&heap[i], &heap[worst]);
            i = worst;
        }
    }
    float root = l[heap[0]];
    for (int64_t j = k; j < n; j++) {
#if defined(__AVX2__)
        /* Eight at a time while none beats the root: the usual case. */
        if ((j & 7) == 0) {
            __m256 vr = _mm256_set1_ps(root);
            while (j + 8 <= n && !_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(l + j), vr, _CMP_GT_OQ))) j += 8;
            if (j >= n) break;
        }
#endif
        /* j is above every id in the heap, so an equal logit never beats the root. */
        if (!(l[j] > root)) continue;
        heap[0] = (int32_t)j;
        for (int64_t i = 0;;) {
            int64_t a = 2 * i + 1, b = a + 1, worst = i;
            if (a < k && before(l, heap[worst], heap[a])) worst = a;
            if (b < k && before(l, heap[worst], heap[b])) worst = b;
            if (worst == i) break;
            swap_i32(&heap[i], &heap[worst]);
            i = worst;
        }
        root = l[heap[0]];
    }
    int64_t c = 0, i = 0;
#if defined(__AVX2__)
    __m256 vr = _mm256_set1_ps(root);
    for (; i + 8 <= n; i += 8) {
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(l + i), vr, _CMP_GE_OQ));
        for (; mask; mask &= mask - 1) idx[c++] = (int32_t)(i + __builtin_ctz(mask));
    }
#endif
    /* Branch-free: most tokens fail the test, in no predictable pattern. */
    for (; i < n; i++) {
        idx[c] = (int32_t)i;
        c += l[i] >= root;
    }
    return c;
}

// ---------------------------------------------------------------- sampling

/* Work area: w (n_vocab floats, by token id) and idx (n_vocab int32), as lrun.h says. */
size_t lrun_sample_work_bytes(int64_t n_vocab)
{
    size_t total;
    if (n_vocab <= 0 || n_vocab > INT32_MAX) return 0;
    if (!lrun_size_mul((size_t)n_vocab, sizeof(float) + sizeof(int32_t), &total)) return 0;
    return total;
}

/* The penalty over the work area, which may hold anything on entry: the ids
 * of the history are first marked -1 in mark (n_vocab int32, by token id),
 * then each still marked is penalized and unmarked, so every distinct id is
 * penalized once and only entries written here are ever read. */
static void penalize_marks(float *logits, const int32_t *history, int64_t n_history, float penalty, int32_t *mark)
{
    for (int64_t i = 0; i < n_history; i++) mark[history[i]] = -1;
    for (int64_t i = 0; i < n_history; i++) {
        int32_t id = history[i];
        if (mark[id] != -1) continue;
        mark[id] = 0;
        float l = logits[id];
        logits[id] = l < 0 ? l * penalty : l / penalty;
    }
}

static lrun_status check_params(const lrun_sampling_params *p)
{
    if (!(p->repetition_penalty > 0) || isinf(p->repetition_penalty))
        return lrun_fail(LRUN_E_ARG, "repetition_penalty is %g (expected a finite number > 0)",
                         (double)p->repetition_penalty);
    if (!p->do_sample) return LRUN_OK; /* HF ignores the sampling knobs when greedy */
    if (!(p->temperature > 0) || isinf(p->temperature))
        return lrun_fail(LRUN_E_ARG, "temperature is %g with do_sample (expected a finite number > 0; use "
                         "do_sample = false for greedy)", (double)p->temperature);
    if (p->top_k < 0) return lrun_fail(LRUN_E_ARG, "top_k is %d (expected >= 0; 0 = off)", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return lrun_fail(LRUN_E_ARG, "top_p is %g (expected 0 < top_p <= 1; 1 = off)", (double)p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return lrun_fail(LRUN_E_ARG, "min_p is %g (expected 0 <= min_p <= 1; 0 = off)", (double)p->min_p);
    return LRUN_OK;
}

/* One uniform over the weights of all n tokens, walking block sums first. */
static int32_t draw_dense(const float *w, const float *bsum, int64_t n, double z, lrun_rng *rng)
{
    double u = lrun_rng_uniform(rng) * z, acc = 0;
    int64_t b0 = 0;
    for (; b0 + DRAW_BLOCK < n && acc + bsum[b0 / DRAW_BLOCK] <= u; b0 += DRAW_BLOCK) acc += bsum[b0 / DRAW_BLOCK];
    int64_t last = -1;
    for (int64_t i = b0; i < n; i++) {
        if (w[i] <= 0) continue;
        last = i;
        acc += w[i];
        if (acc > u) return (int32_t)i;
    }
    /* Rounding left u past the end: the last token with mass. */
    for (int64_t i = n; last < 0 && i-- > 0;)
        if (w[i] > 0) last = i;
    return (int32_t)last;
}

/* One uniform over the weights of the c candidates in idx. */
static int32_t draw_sparse(const float *w, const int32_t *idx, int64_t c, lrun_rng *rng)
{
    double total = 0;
    for (int64_t j = 0; j < c; j++) total += w[idx[j]];
    double u = lrun_rng_uniform(rng) * total, acc = 0;
    int32_t pick = idx[0];
    for (int64_t j = 0; j < c; j++) {
        if (w[idx[j]] <= 0) continue;
        pick = idx[j];
        acc += w[idx[j]];
        if (acc > u) break;
    }
    return pick;
}

lrun_status lrun_sample(float *logits, int64_t n_vocab, const lrun_sampling_params *params, const int32_t *history,
                        int64_t n_history, lrun_rng *rng, void *work, int32_t *out_token)
{
    if (!logits || !params || !work || !out_token)
        return lrun_fail(LRUN_E_ARG, "lrun_sample: logits, params, work and out_token must not be NULL");
    if (n_vocab <= 0 || n_vocab > INT32_MAX)
        return lrun_fail(LRUN_E_ARG, "lrun_sample: %lld logits (expected 1..2^31-1)", (long long)n_vocab);
    if ((uintptr_t)work % sizeof(float))
        return lrun_fail(LRUN_E_ARG, "lrun_sample: work area at %p is not 4-byte aligned", work);
    lrun_status st = check_params(params);
    if (st == LRUN_OK && params->repetition_penalty != 1.0f)
        st = check_penalty_args(n_vocab, history, n_history, params->repetition_penalty);
    if (st == LRUN_OK && params->do_sample && !rng)
        st = lrun_fail(LRUN_E_ARG, "lrun_sample: do_sample needs a generator (rng is NULL)");
    if (st != LRUN_OK) return st;

    const int64_t n = n_vocab;
    /* A temperature below 1/FLT_MAX (subnormal) would make 1/T infinite and
     * the max's own weight 0·inf = NaN, so no token would weigh anything:
     * 1/T is capped at FLT_MAX, where the max still weighs e^0 = 1 and every
     * lower logit 0 (issue 16: the sampler drew token -1). */
    const float t = params->temperature, inv_t = 1.0f / t <= FLT_MAX ? 1.0f / t : FLT_MAX;
    float *w = work;                   /* (n_vocab) weight by token id; valid for candidates only */
    int32_t *idx = (int32_t *)(w + n); /* (n_vocab) candidate token ids */

    if (params->repetition_penalty != 1.0f && n_history > 0)
        penalize_marks(logits, history, n_history, params->repetition_penalty, idx);
    if (!params->do_sample) {
        *out_token = lrun_logits_argmax(logits, n);
        return LRUN_OK;
    }
    int nan;
    float m = max_logit(logits, n, &nan);
    if (nan) return lrun_fail(LRUN_E_ARG, "lrun_sample: a logit is NaN (the forward pass went wrong)");
    if (m == -INFINITY) return lrun_fail(LRUN_E_ARG, "lrun_sample: every logit is -inf; nothing can be drawn");

    /* Candidates are either dense (every token, weights w[i]) or the c ids in idx. */
    int dense = 1;
    int64_t c = n;
    double z = 0;

    // top-k
    if (params->top_k > 0 && params->top_k < n) {
        c = select_top_k(logits, n, params->top_k, (int32_t *)w, idx);
        dense = 0;
        for (int64_t j = 0; j < c; j++) z += w[idx[j]] = weight_of(logits[idx[j]], m, inv_t);
    } else {
        /* Block sums live in idx until a filter needs it. */
        z = dense_weights(logits, n, m, inv_t, w, (float *)idx);
    }

    // top-p: the shortest prefix, in order, whose probability reaches top_p
    if (params->top_p < 1.0f) {
        double target = (double)params->top_p * z;
        if (dense) {
            /* Tokens lighter than (1 - top_p)·z / n weigh less than (1 - top_p)·z
             * together, and come after every heavier one: the prefix ends
             * before them, so only the heavier ones need selecting (half the
             * bound, for rounding). */
            float floor_w = (float)(0.5 * (1.0 - params->top_p) * z / (double)n);
            c = 0;
            for (int64_t i = 0; i < n; i++) {
                idx[c] = (int32_t)i;
                c += w[i] >= floor_w;
            }
            dense = 0;
        }
        c = select_top_p(logits, w, idx, c, target, m, inv_t);
    }

    // min-p: p >= min_p·p_max; the max weighs 1, so the threshold is min_p itself
    if (params->min_p > 0) {
        int64_t kept = 0;
        if (dense) {
            for (int64_t i = 0; i < n; i++) {
                idx[kept] = (int32_t)i;
                kept += w[i] >= params->min_p;
            }
            dense = 0;
        } else {
            for (int64_t j = 0; j < c; j++)
                if (w[idx[j]] >= params->min_p) idx[kept++] = idx[j];
        }
        c = kept; /* >= 1: the max itself weighs 1 */
    }

    // draw, then leave the processed scores as HF's warpers do: l / T where kept, -inf elsewhere
    if (dense) {
        *out_token = draw_dense(w, (const float *)idx, n, z, rng);
        if (*out_token < 0) *out_token = lrun_logits_argmax(logits, n); /* no mass at all: cannot happen, the max weighs 1 */
        if (t != 1.0f && m != INFINITY) dense_divide(logits, n, t);
        return LRUN_OK;
    }
    *out_token = draw_sparse(w, idx, c, rng);
    for (int64_t j = 0; j < c; j++) w[idx[j]] = m == INFINITY ? logits[idx[j]] : logits[idx[j]] / t;
    fill_neg_inf(logits, n);
    for (int64_t j = 0; j < c; j++) logits[idx[j]] = w[idx[j]];
    return LRUN_OK;
}
