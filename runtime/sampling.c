/* sampling.c — the seeded generator and the logits processors of generation,
 * with HF GenerationConfig semantics and order (REFERENCE.md):
 *
 *   repetition penalty → temperature → top-k → top-p → min-p → softmax → draw
 *
 * A vocabulary is 49k–150k entries and this runs once per token per
 * sequence, so nothing here sorts the whole vocabulary: top-k and top-p are
 * found by partial selection (quickselect) over candidate indices, and every
 * buffer comes from the caller's work area (no malloc per call).
 *
 * Candidates are ordered by logit, highest first, ties by lower token id.
 * That order is strict, so the kept sets are deterministic whatever the
 * selection's pivots were. */
#include "checked.h"
#include "error.h"

#include <math.h>
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

// ---------------------------------------------------------------- argmax, penalty, log-softmax

int32_t lrun_logits_argmax(const float *logits, int64_t n_vocab)
{
    if (!logits || n_vocab <= 0) return -1;
    int32_t best = 0;
    float v = logits[0];
    for (int64_t i = 1; i < n_vocab; i++) {
        /* Strictly greater keeps the first of equals; a NaN never wins. */
        if (logits[i] > v || (v != v && logits[i] == logits[i])) {
            v = logits[i];
            best = (int32_t)i;
        }
    }
    return best;
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

/* Reorders idx[0, m) so its first k entries are the k first in order (k < m). */
static void select_first(const float *l, int32_t *idx, int64_t m, int64_t k)
{
    int64_t lo = 0, hi = m;
    while (hi - lo > 1) {
        int64_t p = partition(l, idx, lo, hi);
        if (p == k - 1) return;
        if (p < k - 1) lo = p + 1;
        else hi = p;
    }
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
    float *w = work;                   /* (n_vocab) weight by token id; valid for candidates only */
    int32_t *idx = (int32_t *)(w + n); /* (n_vocab) candidate token ids */

    if (params->repetition_penalty != 1.0f && n_history > 0)
        penalize_marks(logits, history, n_history, params->repetition_penalty, idx);
    if (!params->do_sample) {
        *out_token = lrun_logits_argmax(logits, n);
        return LRUN_OK;
    }

    // temperature and the max: weights are exp((l - max) / T), the softmax up to a constant
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (logits[i] != logits[i])
            return lrun_fail(LRUN_E_ARG, "lrun_sample: logit of token %lld is NaN", (long long)i);
        if (logits[i] > m) m = logits[i];
    }
    if (m == -INFINITY) return lrun_fail(LRUN_E_ARG, "lrun_sample: every logit is -inf; nothing can be drawn");
    const float t = params->temperature;

    // top-k: the k highest, plus any tied with the k-th (HF keeps l >= the k-th value)
    int64_t c = n;
    for (int64_t i = 0; i < n; i++) idx[i] = (int32_t)i;
    if (params->top_k > 0 && params->top_k < n) {
        int64_t k = params->top_k;
        select_first(logits, idx, n, k);
        float kth = logits[idx[0]];
        for (int64_t i = 1; i < k; i++)
            if (logits[idx[i]] < kth) kth = logits[idx[i]];
        c = k;
        for (int64_t i = k; i < n; i++)
            if (logits[idx[i]] == kth) swap_i32(&idx[i], &idx[c++]);
    }
    double z = 0;
    for (int64_t j = 0; j < c; j++) {
        float l = logits[idx[j]];
        /* With a +inf logit, the +inf entries share all the mass. */
        float wj = m == INFINITY ? (float)(l == INFINITY) : expf((l - m) / t);
        w[idx[j]] = wj;
        z += wj;
    }

    // top-p: the shortest prefix (in order) whose probability reaches top_p
    if (params->top_p < 1.0f) c = select_mass(logits, w, idx, c, (double)params->top_p * z);

    // min-p: keep p >= min_p * p_max; the max's weight is 1, so the threshold is min_p
    if (params->min_p > 0) {
        int64_t kept = 0;
        for (int64_t j = 0; j < c; j++)
            if (w[idx[j]] >= params->min_p) idx[kept++] = idx[j];
        c = kept; /* >= 1: the max itself has weight 1 */
    }

    // draw: one uniform over the kept weights
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
    *out_token = pick;

    // leave the processed scores, as HF's warpers do: l / T where kept, -inf elsewhere
    for (int64_t j = 0; j < c; j++) w[idx[j]] = m == INFINITY ? logits[idx[j]] : logits[idx[j]] / t;
    for (int64_t i = 0; i < n; i++) logits[i] = -INFINITY;
    for (int64_t j = 0; j < c; j++) logits[idx[j]] = w[idx[j]];
    return LRUN_OK;
}
