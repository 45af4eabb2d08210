/* codec_pex2.c — encode, validate and decode PEX2 bf16 tensors (layout: codec_pex2.h).
 *
 * Encoding: a histogram picks the codebooks (8 most frequent exponents, then
 * the next 7; ties by the smaller exponent, as the prototype), a pass counts
 * each block's exceptions (so the table, a prefix sum, is known), a pass
 * writes every block in place; the passes run in parallel over blocks.
 * Measuring is the first step alone: the histogram fixes the codebooks, so
 * the exception and far counts, so every section's size (plan_tensor, which
 * the encoder runs too).
 * Validation checks the frame and the whole table first (superblock bases,
 * then monotone firsts, each block's counts within its elements), so that
 * every block's exceptions lie inside the exc and far streams; then each
 * block's positions and far bytes, in parallel. Decoding trusts a validated layout.
 * Assumes a little-endian host, like the GGUF reader.
 */
#include "packed/codec_pex2.h"

#include "core/error.h"
#include "core/threadpool.h"
#include "quant/quant_dot.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- layout

static uint64_t align16(uint64_t x) { return (x + 15) & ~(uint64_t)15; }

static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void wr16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }

int lrun_pex2_fits(int dtype, uint64_t n)
{
    return dtype == LRUN_DTYPE_BF16 && n > 0 && n % 8 == 0 && n < ((uint64_t)1 << 32);
}

/* Superblock entries of nb blocks: entries 0 .. nb (entry nb the totals) in runs of LRUN_PEX2_SUPER. */
static uint64_t n_supers(uint64_t nb) { return nb / LRUN_PEX2_SUPER + 1; }

/* The sections that n alone fixes (rest, code, table, super, exc). */
static void layout_fixed(lrun_pex2_layout *lay, uint64_t n)
{
    lay->n = n;
    lay->nb = (n + LRUN_PEX2_BLOCK - 1) / LRUN_PEX2_BLOCK;
    lay->rest = LRUN_PEX2_HEADER;
    lay->code = (size_t)align16(lay->rest + n);
    lay->table = (size_t)align16(lay->code + 3 * n / 8 + 8);
    lay->super = lay->table + (size_t)(LRUN_PEX2_TABLE_ENTRY * (lay->nb + 1));
    lay->exc = lay->super + (size_t)(LRUN_PEX2_SUPER_ENTRY * n_supers(lay->nb));
}

size_t lrun_pex2_bound(uint64_t n)
{
    if (!lrun_pex2_fits(LRUN_DTYPE_BF16, n)) return 0;
    lrun_pex2_layout lay;
    layout_fixed(&lay, n);
    return (size_t)align16(lay.exc + 2 * n);
}

/* Elements of block b, and of its group g (0 past the end). */
static uint32_t block_elems(const lrun_pex2_layout *lay, uint64_t b)
{
    const uint64_t left = lay->n - b * LRUN_PEX2_BLOCK;
    return left < LRUN_PEX2_BLOCK ? (uint32_t)left : LRUN_PEX2_BLOCK;
}

static uint32_t group_elems(uint32_t in_block, uint32_t g)
{
    const uint32_t lo = g * LRUN_PEX2_GROUP;
    if (in_block <= lo) return 0;
    return in_block - lo < LRUN_PEX2_GROUP ? in_block - lo : LRUN_PEX2_GROUP;
}

/* The 3-bit code of element i: the code section has 8 zero bytes after its
 * last field, so the second byte is always there. */
static unsigned code_at(const uint8_t *code, uint64_t i)
{
    const uint64_t bit = 3 * i;
    const unsigned v = code[bit >> 3] | (unsigned)code[(bit >> 3) + 1] << 8;
    return (v >> (bit & 7)) & 7u;
}

static uint16_t join(uint8_t rest, unsigned e)
{
    return (uint16_t)(((rest & 0x80u) << 8) | (e << 7) | (rest & 0x7fu));
}

// ---------------------------------------------------------------- parallel passes

typedef struct pex2_job {
    const lrun_pex2_layout *lay;
    const uint16_t *src;         /* encode: (n) the values */
    uint8_t *out;                /* encode: the tensor being written */
    const uint8_t *in;           /* validate: the tensor */
    uint8_t kind[256];           /* encode, measure: per exponent 0 book1, 1 book2, 2 far */
    uint8_t code_of[256];        /* encode, measure: per exponent its code */
    uint8_t in_book[256];        /* validate: 1 for the exponents of book1 and book2[0..6] */
    uint64_t (*hist)[256];       /* encode, measure: (nth) a histogram per thread */
    uint32_t *blk_exc, *blk_far; /* encode: (nb + 1) per block, then its first (a prefix sum) */
    int64_t *bad;                /* validate: (nth) a thread's first bad block, or -1 */
} pex2_job;

static void span(uint64_t count, int ith, int nth, uint64_t *a, uint64_t *b)
{
    *a = count * (uint64_t)ith / (uint64_t)nth;
    *b = count * (uint64_t)(ith + 1) / (uint64_t)nth;
}

static void run(struct lrun_threadpool *pool, lrun_task_fn fn, pex2_job *j)
{
    if (pool) lrun_threadpool_run(pool, fn, j);
    else fn(j, 0, 1);
}

static int n_threads(struct lrun_threadpool *pool) { return pool ? lrun_threadpool_size(pool) : 1; }

// ---------------------------------------------------------------- codebooks and size (encode and measure)

/* One thread's part of the exponent histogram. Four counters per exponent,
 * element i adding to counter i % 4: trained weights repeat an exponent
 * often, and one counter would chain each increment to the one before
 * (a store, then a load of the same address); 32-bit counters, as PEX2's n
 * is below 2^32. */
static void task_hist(void *ctx, int ith, int nth)
{
    const pex2_job *j = ctx;
    uint64_t a, b, *h = j->hist[ith];
    uint32_t c[4][256] = {{0}};
    span(j->lay->n, ith, nth, &a, &b);
    uint64_t i = a;
    for (; i + 4 <= b; i += 4) {
        c[0][(j->src[i] >> 7) & 0xffu]++;
        c[1][(j->src[i + 1] >> 7) & 0xffu]++;
        c[2][(j->src[i + 2] >> 7) & 0xffu]++;
        c[3][(j->src[i + 3] >> 7) & 0xffu]++;
    }
    for (; i < b; i++) c[0][(j->src[i] >> 7) & 0xffu]++;
    for (int e = 0; e < 256; e++) h[e] = (uint64_t)c[0][e] + c[1][e] + c[2][e] + c[3][e];
}

/* The codebooks from the histogram: exponents by count, descending, ties by
 * the smaller exponent (a stable insertion sort of 256, as the prototype). */
static void choose_books(pex2_job *j, lrun_pex2_layout *lay, const uint64_t cnt[256])
{
    int order[256];
    for (int i = 0; i < 256; i++) order[i] = i;
    for (int i = 1; i < 256; i++)
        for (int k = i; k > 0 && cnt[order[k]] > cnt[order[k - 1]]; k--) {
            const int t = order[k];
            order[k] = order[k - 1], order[k - 1] = t;
        }
    memset(lay->book1, 0, sizeof lay->book1);
    memset(lay->book2, 0, sizeof lay->book2);
    for (int e = 0; e < 256; e++) j->kind[e] = 2, j->code_of[e] = 7;
    for (int c = 0; c < 8; c++)
        lay->book1[c] = (uint8_t)order[c], j->kind[order[c]] = 0, j->code_of[order[c]] = (uint8_t)c;
    for (int c = 0; c < 7; c++)
        lay->book2[c] = (uint8_t)order[8 + c], j->kind[order[8 + c]] = 1, j->code_of[order[8 + c]] = (uint8_t)c;
}

/* The codebooks and every section of the tensor of src (n values, PEX2
 * fits them), from the exponent histogram alone (over the pool), and per
 * exponent its kind and code (j->kind, j->code_of) for the encoder's passes.
 * Exceptions are the elements whose exponent is not in book1, far ones
 * those in neither codebook, so their counts, and with them every offset
 * and the size, follow from the histogram. lrun_pex2_encode writes what
 * this plans and lrun_pex2_measure answers it: they cannot disagree. */
static lrun_status plan_tensor(pex2_job *j, lrun_pex2_layout *lay, const uint16_t *src, uint64_t n,
                               struct lrun_threadpool *pool, const char *who)
{
    layout_fixed(lay, n);
    const int nth = n_threads(pool);
    j->lay = lay, j->src = src;
    if (!(j->hist = malloc((size_t)nth * sizeof *j->hist)))
        return lrun_fail_oom((size_t)nth * sizeof *j->hist, 0, "%s: exponent histograms", who);
    run(pool, task_hist, j);
    uint64_t cnt[256] = {0};
    for (int t = 0; t < nth; t++)
        for (int e = 0; e < 256; e++) cnt[e] += j->hist[t][e];
    free(j->hist), j->hist = NULL;
    choose_books(j, lay, cnt);
    uint64_t n_exc = 0, n_far = 0;
    for (int e = 0; e < 256; e++) n_exc += j->kind[e] ? cnt[e] : 0, n_far += j->kind[e] == 2 ? cnt[e] : 0;
    lay->n_exc = n_exc, lay->n_far = n_far;
    lay->far = lay->exc + (size_t)n_exc;
    lay->total = (size_t)align16(lay->far + n_far);
    return LRUN_OK;
}

lrun_status lrun_pex2_measure(lrun_pex2_layout *lay, const uint16_t *src, uint64_t n, struct lrun_threadpool *pool)
{
    if (!lay || !src) return lrun_fail(LRUN_E_ARG, "lrun_pex2_measure: NULL argument");
    if (!lrun_pex2_fits(LRUN_DTYPE_BF16, n))
        return lrun_fail(LRUN_E_ARG, "lrun_pex2_measure: n = %llu: PEX2 takes a positive multiple of 8 below 2^32",
                         (unsigned long long)n);
    pex2_job j = {0};
    return plan_tensor(&j, lay, src, n, pool, "lrun_pex2_measure");
}

// ---------------------------------------------------------------- encode

static void task_count(void *ctx, int ith, int nth)
{
    const pex2_job *j = ctx;
    uint64_t b0, b1;
    span(j->lay->nb, ith, nth, &b0, &b1);
    for (uint64_t b = b0; b < b1; b++) {
        const uint64_t i0 = b * LRUN_PEX2_BLOCK, i1 = i0 + block_elems(j->lay, b);
        uint32_t exc = 0, far = 0;
        for (uint64_t i = i0; i < i1; i++) {
            const unsigned k = j->kind[(j->src[i] >> 7) & 0xffu];
            exc += k != 0, far += k == 2;
        }
        j->blk_exc[b] = exc, j->blk_far[b] = far;
    }
}

/* Block b's table entry: its firsts as offsets from its superblock's (the
 * superblock's first block's firsts, its bases), and its group ends. */
static void write_entry(const pex2_job *j, uint64_t b, uint32_t ends)
{
    uint8_t *t = j->out + j->lay->table + LRUN_PEX2_TABLE_ENTRY * b;
    const uint64_t s = b - b % LRUN_PEX2_SUPER;
    wr16(t, j->blk_exc[b] - j->blk_exc[s]);
    wr16(t + 2, j->blk_far[b] - j->blk_far[s]);
    wr32(t + 4, ends);
}

/* Block b: its rest bytes, codes, exceptions, far bytes and table entry. */
static void encode_block(const pex2_job *j, uint64_t b)
{
    const lrun_pex2_layout *lay = j->lay;
    uint8_t *P = j->out;
    const uint64_t i0 = b * LRUN_PEX2_BLOCK, i1 = i0 + block_elems(lay, b);
    uint32_t xe = j->blk_exc[b], xf = j->blk_far[b], per_group[4] = {0};
    for (uint64_t i = i0; i < i1; i += 8) { /* a lane: 8 codes in 3 bytes */
        uint32_t w = 0;
        for (unsigned k = 0; k < 8; k++) {
            const uint16_t v = j->src[i + k];
            const unsigned e = (v >> 7) & 0xffu;
            P[lay->rest + i + k] = (uint8_t)(((v >> 8) & 0x80u) | (v & 0x7fu));
            w |= (uint32_t)j->code_of[e] << (3 * k);
            if (j->kind[e]) {
                const uint64_t pos = i + k - i0;
                P[lay->exc + xe++] = (uint8_t)(pos % LRUN_PEX2_GROUP);
                per_group[pos / LRUN_PEX2_GROUP]++;
                if (j->kind[e] == 2) P[lay->far + xf++] = (uint8_t)e;
            }
        }
        uint8_t *c = P + lay->code + 3 * (i / 8);
        c[0] = (uint8_t)w, c[1] = (uint8_t)(w >> 8), c[2] = (uint8_t)(w >> 16);
    }
    const uint32_t e0 = per_group[0], e1 = e0 + per_group[1], e2 = e1 + per_group[2];
    write_entry(j, b, e0 | e1 << 10 | e2 << 20);
}

static void task_encode(void *ctx, int ith, int nth)
{
    const pex2_job *j = ctx;
    uint64_t b0, b1;
    span(j->lay->nb, ith, nth, &b0, &b1);
    for (uint64_t b = b0; b < b1; b++) encode_block(j, b);
}

lrun_status lrun_pex2_encode(void *dst, size_t cap, size_t *out_bytes, const uint16_t *src, uint64_t n,
                             struct lrun_threadpool *pool)
{
    if (!dst || !out_bytes || !src) return lrun_fail(LRUN_E_ARG, "lrun_pex2_encode: NULL argument");
    if (!lrun_pex2_fits(LRUN_DTYPE_BF16, n))
        return lrun_fail(LRUN_E_ARG, "lrun_pex2_encode: n = %llu: PEX2 takes a positive multiple of 8 below 2^32",
                         (unsigned long long)n);
    if (cap < lrun_pex2_bound(n))
        return lrun_fail(LRUN_E_ARG, "lrun_pex2_encode: cap %zu bytes is under the bound %zu", cap,
                         lrun_pex2_bound(n));
    lrun_pex2_layout lay;
    pex2_job j = {.out = dst};
    const lrun_status st = plan_tensor(&j, &lay, src, n, pool, "lrun_pex2_encode");
    if (st != LRUN_OK) return st;
    j.blk_exc = malloc((size_t)(lay.nb + 1) * sizeof *j.blk_exc);
    j.blk_far = malloc((size_t)(lay.nb + 1) * sizeof *j.blk_far);
    if (!j.blk_exc || !j.blk_far) {
        free(j.blk_exc), free(j.blk_far);
        return lrun_fail_oom((size_t)(lay.nb + 1) * 8, 0, "lrun_pex2_encode: block counts");
    }
    run(pool, task_count, &j);
    uint64_t xe = 0, xf = 0; /* the counts become each block's first: a prefix sum */
    for (uint64_t b = 0; b <= lay.nb; b++) {
        const uint32_t e = b < lay.nb ? j.blk_exc[b] : 0, f = b < lay.nb ? j.blk_far[b] : 0;
        j.blk_exc[b] = (uint32_t)xe, j.blk_far[b] = (uint32_t)xf;
        xe += e, xf += f;
    }
    assert(xe == lay.n_exc && xf == lay.n_far); /* the blocks' counts add up to the histogram's */
    uint8_t *P = dst;
    memset(P, 0, lay.total); /* every gap is zero */
    wr32(P, LRUN_PEX2_MAGIC);
    wr32(P + 4, LRUN_DTYPE_BF16);
    memcpy(P + 8, &n, 8);
    memcpy(P + 16, lay.book1, 8);
    memcpy(P + 24, lay.book2, 8);
    run(pool, task_encode, &j);
    write_entry(&j, lay.nb, 0); /* entry nb: the totals, ends 0 */
    for (uint64_t s = 0; s < n_supers(lay.nb); s++) {
        wr32(P + lay.super + LRUN_PEX2_SUPER_ENTRY * s, j.blk_exc[s * LRUN_PEX2_SUPER]);
        wr32(P + lay.super + LRUN_PEX2_SUPER_ENTRY * s + 4, j.blk_far[s * LRUN_PEX2_SUPER]);
    }
    free(j.blk_exc), free(j.blk_far);
    *out_bytes = lay.total;
    return LRUN_OK;
}

// ---------------------------------------------------------------- validate

/* Block b's exceptions, the table already checked: positions ascending in
 * each group and inside the tensor, far codes as many as the table says,
 * far bytes in neither codebook. NULL when good, else what is wrong. */
static const char *check_block(const pex2_job *j, uint64_t b)
{
    const lrun_pex2_layout *lay = j->lay;
    const uint8_t *P = j->in;
    const lrun_pex2_block t = lrun_pex2_block_at(P, lay, b);
    const uint32_t first = t.exc, far0 = t.far, ends = t.ends, count = t.count;
    const uint32_t far_n = t.far_count, in_block = block_elems(lay, b);
    const uint32_t end_of[4] = {ends & 1023u, (ends >> 10) & 1023u, ends >> 20, count};
    uint32_t x = 0, far = 0;
    for (uint32_t g = 0; g < 4; g++) {
        const uint32_t lim = group_elems(in_block, g);
        int prev = -1;
        for (; x < end_of[g]; x++) {
            const unsigned pos = P[lay->exc + first + x];
            if ((int)pos <= prev) return "exception positions are not ascending within their group";
            if (pos >= lim) return "an exception's position is past its group's last element";
            prev = (int)pos;
            if (code_at(P + lay->code, b * LRUN_PEX2_BLOCK + g * LRUN_PEX2_GROUP + pos) == 7) {
                if (far == far_n) return "more far exceptions (code 7) than the table's far count";
                if (j->in_book[P[lay->far + far0 + far]]) return "a far exponent is in a codebook";
                far++;
            }
        }
    }
    return far == far_n ? NULL : "fewer far exceptions (code 7) than the table's far count";
}

static void task_check(void *ctx, int ith, int nth)
{
    const pex2_job *j = ctx;
    uint64_t b0, b1;
    span(j->lay->nb, ith, nth, &b0, &b1);
    j->bad[ith] = -1;
    for (uint64_t b = b0; b < b1; b++)
        if (check_block(j, b)) {
            j->bad[ith] = (int64_t)b;
            return;
        }
}

static int all_zero(const uint8_t *p, size_t a, size_t b)
{
    for (size_t i = a; i < b; i++)
        if (p[i]) return 0;
    return 1;
}

/* The header and codebooks; fills lay's fixed sections. */
static lrun_status check_header(lrun_pex2_layout *lay, const uint8_t *P, size_t size, const char *what)
{
    if (size < LRUN_PEX2_HEADER)
        return lrun_fail(LRUN_E_FORMAT, "PEX2 tensor '%s': %zu bytes, shorter than its %d-byte header", what, size,
                         LRUN_PEX2_HEADER);
    if (lrun_pex2_u32(P) != LRUN_PEX2_MAGIC)
        return lrun_fail(LRUN_E_FORMAT, "PEX2 tensor '%s': bad magic (not \"PEX2\")", what);
    if (lrun_pex2_u32(P + 4) != LRUN_DTYPE_BF16)
        return lrun_fail(LRUN_E_FORMAT, "PEX2 tensor '%s': dtype %u, PEX2 holds only bf16 (%d)", what,
                         lrun_pex2_u32(P + 4), LRUN_DTYPE_BF16);
    uint64_t n;
    memcpy(&n, P + 8, 8);
    if (!lrun_pex2_fits(LRUN_DTYPE_BF16, n))
        return lrun_fail(LRUN_E_FORMAT, "PEX2 tensor '%s': n = %llu: not a positive multiple of 8 below 2^32", what,
                         (unsigned long long)n);
    memcpy(lay->book1, P + 16, 8);
    memcpy(lay->book2, P + 24, 8);
    int seen[256] = {0};
    for (int c = 0; c < 15; c++) {
        const uint8_t e = c < 8 ? lay->book1[c] : lay->book2[c - 8];
        if (seen[e]++)
            return lrun_fail(LRUN_E_FORMAT, "PEX2 tensor '%s': exponent %u appears twice in the codebooks (%s[%d])",
                             what, e, c < 8 ? "book1" : "book2", c < 8 ? c : c - 8);
    }
    if (lay->book2[7])
        return lrun_fail(LRUN_E_FORMAT, "PEX2 tensor '%s': book2[7] is %u, not 0", what, lay->book2[7]);
    layout_fixed(lay, n);
    return LRUN_OK;
}

/* Block b's firsts (b <= nb) as the table says them, 64-bit: a bad
 * superblock base must not wrap into a good-looking one. */
static void table_firsts(const uint8_t *P, const lrun_pex2_layout *lay, uint64_t b, uint64_t *exc, uint64_t *far)
{
    const uint8_t *t = P + lay->table + LRUN_PEX2_TABLE_ENTRY * b;
    const uint8_t *s = P + lay->super + LRUN_PEX2_SUPER_ENTRY * (b / LRUN_PEX2_SUPER);
    *exc = (uint64_t)lrun_pex2_u32(s) + lrun_pex2_u16(t);
    *far = (uint64_t)lrun_pex2_u32(s + 4) + lrun_pex2_u16(t + 2);
}

/* The superblock entries: the first's bases 0, bases never falling, each
 * superblock's first table entry at offsets 0 (its bases are its firsts,
 * so each block's first has one spelling). The blocks' check then bounds
 * every step, across superblocks too. */
static lrun_status check_supers(const lrun_pex2_layout *lay, const uint8_t *P, const char *what)
{
    uint32_t prev_x = 0, prev_f = 0;
    for (uint64_t s = 0; s < n_supers(lay->nb); s++) {
        const uint8_t *sp = P + lay->super + LRUN_PEX2_SUPER_ENTRY * s,
                      *t0 = P + lay->table + LRUN_PEX2_TABLE_ENTRY * LRUN_PEX2_SUPER * s;
        const uint32_t xb = lrun_pex2_u32(sp), fb = lrun_pex2_u32(sp + 4), xo = lrun_pex2_u16(t0),
                       fo = lrun_pex2_u16(t0 + 2);
        const char *why = NULL;
        if (s == 0 && (xb || fb)) why = "the first superblock's bases are not 0";
        else if (xb < prev_x || fb < prev_f) why = "its bases are below the superblock's before";
        else if (xo || fo) why = "its first table entry's offsets are not 0";
        if (why)
            return lrun_fail(LRUN_E_FORMAT,
                             "PEX2 tensor '%s': superblock %llu (bases %u, %u; table entry %llu's offsets %u, %u): "
                             "%s",
                             what, (unsigned long long)s, xb, fb, (unsigned long long)(LRUN_PEX2_SUPER * s), xo, fo,
                             why);
        prev_x = xb, prev_f = fb;
    }
    return LRUN_OK;
}

/* The size and padding, then the table: the superblocks, then each block's
 * exceptions within its elements and its groups', entry nb the totals. */
static lrun_status check_frame(lrun_pex2_layout *lay, const uint8_t *P, size_t size, const char *what)
{
    if (size < lay->exc)
        return lrun_fail(LRUN_E_FORMAT,
                         "PEX2 tensor '%s': %zu bytes, shorter than its table's end (%zu) for n = %llu", what, size,
                         lay->exc, (unsigned long long)lay->n);
    uint64_t n_exc, n_far;
    table_firsts(P, lay, lay->nb, &n_exc, &n_far);
    const uint32_t last_ends = lrun_pex2_ends(P, lay, lay->nb);
    if (n_exc > lay->n || n_far > n_exc || last_ends)
        return lrun_fail(LRUN_E_FORMAT,
                         "PEX2 tensor '%s': table totals %llu exceptions, %llu far, ends %u: wrong for n = %llu",
                         what, (unsigned long long)n_exc, (unsigned long long)n_far, last_ends,
                         (unsigned long long)lay->n);
    lay->n_exc = n_exc, lay->n_far = n_far;
    lay->far = lay->exc + (size_t)lay->n_exc;
    lay->total = (size_t)align16(lay->far + lay->n_far);
    if (size != lay->total)
        return lrun_fail(LRUN_E_FORMAT, "PEX2 tensor '%s': %zu bytes, its sections make %zu", what, size, lay->total);
    if (!all_zero(P, lay->rest + (size_t)lay->n, lay->code) ||
        !all_zero(P, lay->code + (size_t)(3 * lay->n / 8), lay->table) ||
        !all_zero(P, lay->far + (size_t)lay->n_far, lay->total))
        return lrun_fail(LRUN_E_FORMAT, "PEX2 tensor '%s': nonzero padding between sections", what);
    const lrun_status st = check_supers(lay, P, what);
    if (st != LRUN_OK) return st;
    uint64_t x1, f1;
    table_firsts(P, lay, 0, &x1, &f1);
    for (uint64_t b = 0; b < lay->nb; b++) {
        const uint64_t x0 = x1, f0 = f1;
        table_firsts(P, lay, b + 1, &x1, &f1);
        const uint32_t ends = lrun_pex2_ends(P, lay, b);
        const uint32_t in_block = block_elems(lay, b),
                       e[3] = {ends & 1023u, (ends >> 10) & 1023u, (ends >> 20) & 1023u};
        const char *why = NULL;
        if (x1 < x0 || x1 - x0 > in_block) why = "its exception count is negative or more than its elements";
        else if (f1 < f0 || f1 - f0 > x1 - x0) why = "its far count is negative or more than its exceptions";
        else if (ends >> 30) why = "its group ends have bits 30-31 set";
        else
            for (uint32_t g = 0, prev = 0; g < 4 && !why; g++) {
                const uint32_t end = g < 3 ? e[g] : (uint32_t)(x1 - x0);
                if (end < prev || end - prev > group_elems(in_block, g))
                    why = "its group ends are not ascending, or a group has more exceptions than elements";
                prev = end;
            }
        if (why)
            return lrun_fail(LRUN_E_FORMAT,
                             "PEX2 tensor '%s': table entry %llu (first %llu, far %llu, ends 0x%08x; next %llu, "
                             "%llu): %s",
                             what, (unsigned long long)b, (unsigned long long)x0, (unsigned long long)f0, ends,
                             (unsigned long long)x1, (unsigned long long)f1, why);
    }
    return LRUN_OK;
}

lrun_status lrun_pex2_validate(lrun_pex2_layout *lay, const void *src, size_t size, const char *what,
                               struct lrun_threadpool *pool)
{
    if (!lay || (!src && size)) return lrun_fail(LRUN_E_ARG, "lrun_pex2_validate: NULL argument");
    what = what ? what : "?";
    const uint8_t *P = src;
    lrun_status st = check_header(lay, P, size, what);
    if (st == LRUN_OK) st = check_frame(lay, P, size, what);
    if (st != LRUN_OK) return st;
    const int nth = n_threads(pool);
    pex2_job j = {.lay = lay, .in = P};
    for (int c = 0; c < 8; c++) j.in_book[lay->book1[c]] = 1;
    for (int c = 0; c < 7; c++) j.in_book[lay->book2[c]] = 1;
    if (!(j.bad = malloc((size_t)nth * sizeof *j.bad)))
        return lrun_fail_oom((size_t)nth * sizeof *j.bad, 0, "PEX2 tensor '%s': validation", what);
    run(pool, task_check, &j);
    int64_t bad = -1;
    for (int t = 0; t < nth && bad < 0; t++) bad = j.bad[t];
    free(j.bad);
    if (bad >= 0)
        return lrun_fail(LRUN_E_FORMAT, "PEX2 tensor '%s': block %lld: %s", what, (long long)bad,
                         check_block(&j, (uint64_t)bad));
    return LRUN_OK;
}

// ---------------------------------------------------------------- decode

void lrun_pex2_lanes_scalar(uint16_t *dst, const uint8_t *rest, const uint8_t *code, const uint16_t hi[8],
                            uint64_t n_lanes)
{
    for (uint64_t l = 0; l < n_lanes; l++) { /* one 3-byte load a lane */
        const uint8_t *c3 = code + 3 * l, *r = rest + 8 * l;
        const uint32_t w = c3[0] | (uint32_t)c3[1] << 8 | (uint32_t)c3[2] << 16;
        uint16_t *d = dst + 8 * l;
        for (unsigned k = 0; k < 8; k++)
            d[k] = (uint16_t)(((r[k] & 0x80u) << 8) | hi[(w >> (3 * k)) & 7u] | (r[k] & 0x7fu));
    }
}

/* The n exceptions of a whole block (elements i0 ..) patched into out, its
 * decoded ordinary elements: each group's run of positions in turn (ends:
 * the table's cumulative group ends), the far bytes from far in order. */
static void patch_block(uint16_t *out, const uint8_t *code, uint64_t i0, const uint8_t *pos, uint32_t n,
                        uint32_t ends, const uint8_t *far, const uint8_t book2[8])
{
    const uint32_t e0 = ends & 1023u, e1 = (ends >> 10) & 1023u, e2 = ends >> 20;
    for (uint32_t x = 0; x < n; x++) { /* one loop, each one's group computed: a loop a group mispredicts its exit */
        const uint32_t at = ((x >= e0) + (x >= e1) + (x >= e2)) * LRUN_PEX2_GROUP + pos[x];
        const unsigned c = code_at(code, i0 + at);
        const unsigned e = c == 7 ? *far++ : book2[c];
        out[at] = (uint16_t)((out[at] & 0x807fu) | e << 7);
    }
}

/* Block b's exceptions that fall in [first, end), patched into dst (element first at dst[0]). */
static void patch_range(uint16_t *dst, const uint8_t *P, const lrun_pex2_layout *lay, uint64_t b, uint64_t first,
                        uint64_t end)
{
    const uint8_t *code = P + lay->code;
    const lrun_pex2_block t = lrun_pex2_block_at(P, lay, b);
    const uint32_t x0 = t.exc, ends = t.ends, x1 = t.exc + t.count;
    const uint8_t *far = P + lay->far + t.far; /* counts every far exception of the block before it */
    const uint64_t i0 = b * LRUN_PEX2_BLOCK;
    if (i0 >= first && i0 + LRUN_PEX2_BLOCK <= end) { /* the whole block: each group's run, no range test */
        patch_block(dst + (i0 - first), code, i0, P + lay->exc + x0, x1 - x0, ends, far, lay->book2);
        return;
    }
    const uint32_t end_of[3] = {ends & 1023u, (ends >> 10) & 1023u, ends >> 20};
    uint32_t g = 0;
    for (uint32_t x = 0; x < x1 - x0; x++) {
        while (g < 3 && x >= end_of[g]) g++;
        const uint64_t i = i0 + g * LRUN_PEX2_GROUP + P[lay->exc + x0 + x];
        const unsigned c = code_at(code, i);
        const unsigned e = c == 7 ? *far++ : lay->book2[c];
        if (i >= first && i < end) dst[i - first] = (uint16_t)((dst[i - first] & 0x807fu) | e << 7);
    }
}

/* The host kernel level's lanes (the same bits at every level). */
typedef void (*lanes_fn)(uint16_t *dst, const uint8_t *rest, const uint8_t *code, const uint16_t hi[8],
                         uint64_t n_lanes);

static lanes_fn pick_lanes(void)
{
    const lrun_cpu_isa isa = lrun_cpu_isa_get();
    (void)isa;
#if defined(LRUN_HAVE_AVX512)
    if (isa >= LRUN_CPU_ISA_AVX512 && lrun_pex2_avx512_supported()) return lrun_pex2_lanes_avx512;
#endif
#if defined(LRUN_HAVE_AVX2)
    if (isa >= LRUN_CPU_ISA_AVX2) return lrun_pex2_lanes_avx2;
#endif
    return lrun_pex2_lanes_scalar;
}

/* Elements [s, e) of one block as if ordinary, then the block's exceptions
 * among them: one block at a time, so the patches land while its 2 KiB of
 * output is still in L1 (host compute decodes tile by tile just before each
 * product, and patching after a whole tile's lanes cost 3-4 ns an exception
 * out of L2, as much as the lanes). */
static void decode_block(uint16_t *dst, const uint8_t *P, const lrun_pex2_layout *lay, uint64_t b, uint64_t s,
                         uint64_t e, const uint16_t hi[8], lanes_fn lanes)
{
    const uint8_t *rest = P + lay->rest, *code = P + lay->code;
    uint64_t i = s;
    for (; i < e && i % 8 != 0; i++) dst[i - s] = join(rest[i], lay->book1[code_at(code, i)]);
    const uint64_t n_lanes = (e - i) / 8;
    if (n_lanes) lanes(dst + (i - s), rest + i, code + 3 * (i / 8), hi, n_lanes);
    for (i += 8 * n_lanes; i < e; i++) dst[i - s] = join(rest[i], lay->book1[code_at(code, i)]);
    patch_range(dst, P, lay, b, s, e);
}

void lrun_pex2_decode_range(uint16_t *dst, const void *src, const lrun_pex2_layout *lay, uint64_t first,
                            uint64_t count)
{
    if (!count) return;
    const uint8_t *P = src;
    const uint64_t end = first + count;
    uint16_t hi[8]; /* each ordinary code's exponent bits */
    for (int c = 0; c < 8; c++) hi[c] = (uint16_t)(lay->book1[c] << 7);
    const lanes_fn lanes = pick_lanes();
    for (uint64_t b = first / LRUN_PEX2_BLOCK; b <= (end - 1) / LRUN_PEX2_BLOCK; b++) {
        const uint64_t s = b * LRUN_PEX2_BLOCK > first ? b * LRUN_PEX2_BLOCK : first;
        uint64_t whole = 0; /* whole blocks from b on, for the AVX-512 block decoder */
#if defined(LRUN_HAVE_AVX512)
        if (s == b * LRUN_PEX2_BLOCK && lanes == lrun_pex2_lanes_avx512)
            whole = (end - s) / LRUN_PEX2_BLOCK;
#endif
        if (whole) {
            lrun_pex2_blocks_avx512(dst + (s - first), P, lay, b, b + whole);
            b += whole - 1;
            continue;
        }
        const uint64_t e = (b + 1) * LRUN_PEX2_BLOCK < end ? (b + 1) * LRUN_PEX2_BLOCK : end;
        decode_block(dst + (s - first), P, lay, b, s, e, hi, lanes);
    }
}
