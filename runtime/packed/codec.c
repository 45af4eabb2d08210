/* codec.c — encode, validate and decode packed bf16/f16 tensors (layout: codec.h).
 *
 * Encoding is two passes over the blocks: count each block's tier-2 and
 * tier-3 entries (so the table, a prefix sum, is known), then write every
 * block in place; both passes run in parallel over blocks. Decoding checks
 * as it goes (a block's escape counts must match the table exactly), so a
 * hostile file fails with a message and never reads out of bounds.
 * Assumes a little-endian host, like the GGUF reader.
 */
#include "packed/codec.h"

#include "core/checked.h"
#include "core/error.h"
#include "core/threadpool.h"

#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- the split of a 16-bit float

int lrun_packed_dtype_ok(int dtype) { return dtype == LRUN_DTYPE_BF16 || dtype == LRUN_DTYPE_F16; }

static int exp_max(int dtype) { return dtype == LRUN_DTYPE_BF16 ? 255 : 31; }

static unsigned exp_of(int dtype, uint16_t h) { return dtype == LRUN_DTYPE_BF16 ? (h >> 7) & 0xffu : (h >> 10) & 0x1fu; }

/* The byte kept as it is: bf16 sign << 7 | mantissa; f16 the mantissa's low byte. */
static uint8_t rest_of(int dtype, uint16_t h)
{
    return dtype == LRUN_DTYPE_BF16 ? (uint8_t)(((h >> 8) & 0x80u) | (h & 0x7fu)) : (uint8_t)(h & 0xffu);
}

/* f16 only: sign << 2 | the mantissa's top 2 bits. */
static unsigned hi_of(uint16_t h) { return ((h >> 13) & 4u) | ((h >> 8) & 3u); }

static uint16_t join(int dtype, unsigned e, uint8_t rest, unsigned hi)
{
    if (dtype == LRUN_DTYPE_BF16) return (uint16_t)(((rest & 0x80u) << 8) | (e << 7) | (rest & 0x7fu));
    return (uint16_t)(((hi & 4u) << 13) | (e << 10) | ((hi & 3u) << 8) | rest);
}

// ---------------------------------------------------------------- bit fields and the table

/* Field j (w bits, w <= 8) of a stream of len bytes, LSB first. */
static unsigned field_get(const uint8_t *p, size_t len, uint64_t j, unsigned w)
{
    uint64_t bit = j * w;
    size_t byte = (size_t)(bit >> 3);
    unsigned v = p[byte];
    if (byte + 1 < len) v |= (unsigned)p[byte + 1] << 8;
    return (v >> (bit & 7)) & ((1u << w) - 1);
}

static void field_put(uint8_t *p, uint64_t j, unsigned w, unsigned v)
{
    uint64_t bit = j * w;
    size_t byte = (size_t)(bit >> 3);
    unsigned s = (unsigned)(bit & 7), x = v << s;
    p[byte] |= (uint8_t)x;
    if (s + w > 8) p[byte + 1] |= (uint8_t)(x >> 8);
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static size_t bits_bytes(uint64_t n, unsigned w) { return (size_t)((n * w + 7) / 8); }

/* Offsets of the fixed sections for n elements; 0 when the sizes overflow. */
static int layout_fixed(lrun_packed_layout *lay, int dtype, uint64_t n)
{
    memset(lay, 0, sizeof *lay);
    if (n > ((uint64_t)1 << 56)) return 0; /* keeps n * 3 bits and the table in size_t */
    lay->codec = LRUN_PACKED_CODEC_EXP;
    lay->dtype = dtype;
    lay->n = n;
    lay->nb = (n + LRUN_PACKED_BLOCK - 1) / LRUN_PACKED_BLOCK;
    lay->rest = LRUN_PACKED_HEADER_BYTES;
    lay->hi = lay->rest + (size_t)n;
    lay->code1 = lay->hi + (dtype == LRUN_DTYPE_F16 ? bits_bytes(n, 3) : 0);
    lay->table = lay->code1 + bits_bytes(n, 2);
    lay->code2 = lay->table + (size_t)(lay->nb + 1) * 16;
    return 1;
}

size_t lrun_packed_bound(int dtype, uint64_t n)
{
    lrun_packed_layout lay;
    if (!lrun_packed_dtype_ok(dtype) || !layout_fixed(&lay, dtype, n)) return 0;
    return lay.code2 + bits_bytes(n, 3) + lay.nb + (size_t)n; /* + a padding byte per block */
}

// ---------------------------------------------------------------- codebooks

typedef struct codebook {
    uint8_t book1[LRUN_PACKED_N1], book2[LRUN_PACKED_N2];
    uint8_t tier[256];           /* exponent -> 1, 2 or 3 */
    uint8_t code[256];           /* exponent -> its tier-1 or tier-2 code */
} codebook;

/* Fills tier/code from the books; 0 when they repeat a value or hold one out of range. */
static int codebook_index(codebook *cb, int dtype)
{
    memset(cb->tier, 3, sizeof cb->tier);
    for (unsigned k = 0; k < LRUN_PACKED_N1 + LRUN_PACKED_N2; k++) {
        unsigned e = k < LRUN_PACKED_N1 ? cb->book1[k] : cb->book2[k - LRUN_PACKED_N1];
        if ((int)e > exp_max(dtype) || cb->tier[e] != 3) return 0;
        cb->tier[e] = k < LRUN_PACKED_N1 ? 1 : 2;
        cb->code[e] = (uint8_t)(k < LRUN_PACKED_N1 ? k : k - LRUN_PACKED_N1);
    }
    return 1;
}

/* The 10 most frequent exponents (ties: the smaller), then unused ones to fill. */
static void codebook_choose(codebook *cb, int dtype, const uint64_t hist[256])
{
    uint8_t taken[256] = {0}, pick[LRUN_PACKED_N1 + LRUN_PACKED_N2];
    for (unsigned k = 0; k < sizeof pick; k++) {
        int best = 0; /* the first free exponent, then any more frequent one: ties go to the smaller */
        while (taken[best]) best++;
        for (int e = best + 1; e <= exp_max(dtype); e++)
            if (!taken[e] && hist[e] > hist[best]) best = e;
        taken[best] = 1;
        pick[k] = (uint8_t)best;
    }
    memcpy(cb->book1, pick, LRUN_PACKED_N1);
    memcpy(cb->book2, pick + LRUN_PACKED_N1, LRUN_PACKED_N2);
    codebook_index(cb, dtype);
}

// ---------------------------------------------------------------- parallel passes over blocks

typedef struct job {
    int dtype;
    const uint16_t *src;         /* (n) plain values (encode) */
    uint16_t *dst;               /* (n) plain values (decode) */
    uint8_t *out;                /* packed bytes (encode) */
    const uint8_t *in;           /* packed bytes (decode) */
    size_t in_size;
    const lrun_packed_layout *lay;
    codebook cb;
    uint64_t (*hist)[256];       /* (nth, 256) per-thread exponent counts */
    uint64_t *counts;            /* (nb, 2) tier-2 and tier-3 entries per block */
    int64_t *bad_block;          /* (nth) first failing block per thread, or -1 */
    int pass;
} job;

static void block_span(uint64_t nb, int ith, int nth, uint64_t *b0, uint64_t *b1)
{
    *b0 = nb * (uint64_t)ith / (uint64_t)nth;
    *b1 = nb * (uint64_t)(ith + 1) / (uint64_t)nth;
}

static void run(lrun_threadpool *pool, lrun_task_fn fn, job *j)
{
    if (pool) lrun_threadpool_run(pool, fn, j);
    else fn(j, 0, 1);
}

static void task_hist(void *ctx, int ith, int nth)
{
    job *j = ctx;
    uint64_t *h = j->hist[ith], n = j->lay->n;
    uint64_t i0 = n * (uint64_t)ith / (uint64_t)nth, i1 = n * (uint64_t)(ith + 1) / (uint64_t)nth;
    memset(h, 0, 256 * sizeof *h);
    for (uint64_t i = i0; i < i1; i++) h[exp_of(j->dtype, j->src[i])]++;
}

static void task_count(void *ctx, int ith, int nth)
{
    job *j = ctx;
    uint64_t b0, b1;
    block_span(j->lay->nb, ith, nth, &b0, &b1);
    for (uint64_t b = b0; b < b1; b++) {
        uint64_t i0 = b * LRUN_PACKED_BLOCK, i1 = i0 + LRUN_PACKED_BLOCK < j->lay->n ? i0 + LRUN_PACKED_BLOCK : j->lay->n;
        uint64_t n2 = 0, n3 = 0;
        for (uint64_t i = i0; i < i1; i++) {
            unsigned t = j->cb.tier[exp_of(j->dtype, j->src[i])];
            n2 += t >= 2;
            n3 += t == 3;
        }
        j->counts[2 * b] = n2;
        j->counts[2 * b + 1] = n3;
    }
}

/* Writes block b; the table is already written and the variable sections zeroed. */
static void encode_block(const job *j, uint64_t b)
{
    const lrun_packed_layout *lay = j->lay;
    uint8_t *o = j->out;
    uint8_t *code2 = o + lay->code2 + rd64(o + lay->table + 16 * b), *esc = o + lay->esc + rd64(o + lay->table + 16 * b + 8);
    uint64_t i0 = b * LRUN_PACKED_BLOCK, i1 = i0 + LRUN_PACKED_BLOCK < lay->n ? i0 + LRUN_PACKED_BLOCK : lay->n;
    uint64_t k2 = 0;
    for (uint64_t i = i0; i < i1; i++) {
        uint16_t h = j->src[i];
        unsigned e = exp_of(j->dtype, h), t = j->cb.tier[e];
        o[lay->rest + i] = rest_of(j->dtype, h);
        if (j->dtype == LRUN_DTYPE_F16) field_put(o + lay->hi, i, 3, hi_of(h));
        field_put(o + lay->code1, i, 2, t == 1 ? j->cb.code[e] : 3);
        if (t == 2) field_put(code2, k2++, 3, j->cb.code[e]);
        if (t == 3) {
            field_put(code2, k2++, 3, 7);
            *esc++ = (uint8_t)e;
        }
    }
}

static void task_encode(void *ctx, int ith, int nth)
{
    job *j = ctx;
    uint64_t b0, b1;
    block_span(j->lay->nb, ith, nth, &b0, &b1);
    for (uint64_t b = b0; b < b1; b++) encode_block(j, b);
}

// ---------------------------------------------------------------- encode

static lrun_status encode_run(job *j, lrun_threadpool *pool, size_t cap, size_t *out_bytes)
{
    lrun_packed_layout *lay = (lrun_packed_layout *)j->lay;
    uint8_t *o = j->out;
    run(pool, task_hist, j);
    uint64_t hist[256] = {0};
    int nth = pool ? lrun_threadpool_size(pool) : 1;
    for (int t = 0; t < nth; t++)
        for (int e = 0; e < 256; e++) hist[e] += j->hist[t][e];
    codebook_choose(&j->cb, j->dtype, hist);
    memcpy(lay->book1, j->cb.book1, sizeof lay->book1);
    memcpy(lay->book2, j->cb.book2, sizeof lay->book2);
    run(pool, task_count, j);
    uint64_t c2 = 0, c3 = 0;
    for (uint64_t b = 0; b <= lay->nb; b++) { /* the table: where each block's entries start */
        if (lay->table + 16 * b + 16 > cap) return lrun_fail(LRUN_E_ARG, "lrun_packed_encode: %zu bytes are too few", cap);
        wr64(o + lay->table + 16 * b, c2);
        wr64(o + lay->table + 16 * b + 8, c3);
        if (b < lay->nb) c2 += bits_bytes(j->counts[2 * b], 3), c3 += j->counts[2 * b + 1];
    }
    lay->code2_bytes = (size_t)c2;
    lay->esc = lay->code2 + lay->code2_bytes;
    lay->esc_bytes = (size_t)c3;
    lay->total = lay->esc + lay->esc_bytes;
    if (lay->total > cap) return lrun_fail(LRUN_E_ARG, "lrun_packed_encode: needs %zu bytes, has %zu", lay->total, cap);
    lrun_packed_header hd = {.magic = LRUN_PACKED_MAGIC, .dtype = (uint8_t)j->dtype, .n = lay->n};
    memcpy(hd.book1, j->cb.book1, sizeof hd.book1);
    memcpy(hd.book2, j->cb.book2, sizeof hd.book2);
    memcpy(o, &hd, LRUN_PACKED_HEADER_BYTES);
    memset(o + lay->hi, 0, lay->table - lay->hi); /* bit streams are OR-ed into */
    memset(o + lay->code2, 0, lay->code2_bytes);
    run(pool, task_encode, j);
    *out_bytes = lay->total;
    return LRUN_OK;
}

lrun_status lrun_packed_encode(void *dst, size_t cap, size_t *out_bytes, int dtype, const uint16_t *src, uint64_t n,
                               lrun_threadpool *pool)
{
    _Static_assert(sizeof(lrun_packed_header) == LRUN_PACKED_HEADER_BYTES, "header is 32 bytes");
    lrun_packed_layout lay;
    if (!lrun_packed_dtype_ok(dtype)) return lrun_fail(LRUN_E_ARG, "lrun_packed_encode: dtype %d is not bf16 or f16", dtype);
    if (!dst || !out_bytes || (n && !src)) return lrun_fail(LRUN_E_ARG, "lrun_packed_encode: NULL argument");
    if (!layout_fixed(&lay, dtype, n)) return lrun_fail(LRUN_E_ARG, "lrun_packed_encode: %llu elements are too many", (unsigned long long)n);
    if (lay.code2 > cap) return lrun_fail(LRUN_E_ARG, "lrun_packed_encode: needs more than %zu bytes", cap);
    int nth = pool ? lrun_threadpool_size(pool) : 1;
    job j = {.dtype = dtype, .src = src, .out = dst, .lay = &lay};
    j.hist = malloc((size_t)nth * sizeof *j.hist);
    j.counts = malloc((size_t)(lay.nb + 1) * 2 * sizeof *j.counts);
    lrun_status st = j.hist && j.counts ? encode_run(&j, pool, cap, out_bytes)
                                        : lrun_fail_oom((size_t)lay.nb * 16, 0, "lrun_packed_encode: block counts");
    free(j.hist);
    free(j.counts);
    return st;
}

// ---------------------------------------------------------------- validate and decode

/* Decodes block b into out (up to LRUN_PACKED_BLOCK values), checking it;
 * NULL when it is well formed, else why not. */
static const char *decode_block(const job *j, uint64_t b, uint16_t *out)
{
    const lrun_packed_layout *lay = j->lay;
    const uint8_t *in = j->in, *tb = in + lay->table + 16 * b;
    const uint64_t o2 = rd64(tb), o3 = rd64(tb + 8), e2 = rd64(tb + 16), e3 = rd64(tb + 24);
    if (e2 < o2 || e3 < o3) return "table offsets decrease";
    if (e2 > lay->code2_bytes || e3 > lay->esc_bytes) return "table offset past its section";
    const uint8_t *code2 = in + lay->code2 + o2, *esc = in + lay->esc + o3;
    const size_t len2 = (size_t)(e2 - o2);
    uint64_t i0 = b * LRUN_PACKED_BLOCK, i1 = i0 + LRUN_PACKED_BLOCK < lay->n ? i0 + LRUN_PACKED_BLOCK : lay->n;
    const uint8_t *code1 = in + lay->code1;
    uint64_t n2 = 0, n3 = 0;
    for (uint64_t q = i0 / 4; q < (i1 + 3) / 4; q++) { /* escapes (code 3) of 4 codes a byte; padding bits are 0 */
        const unsigned x = code1[q];
        n2 += (uint64_t)__builtin_popcount(x & (x >> 1) & 0x55u);
    }
    if (bits_bytes(n2, 3) != len2) return "tier-2 bytes differ from the block's escapes";
    for (uint64_t k = 0; k < n2; k++) n3 += field_get(code2, len2, k, 3) == 7;
    if (n3 != e3 - o3) return "tier-3 bytes differ from the block's tier-2 escapes";
    if (n2 % 8 && (code2[len2 - 1] >> ((n2 * 3) & 7))) return "tier-2 padding bits are not zero";
    uint64_t k2 = 0, k3 = 0;
    for (uint64_t i = i0; i < i1; i++) {
        unsigned c = (code1[i >> 2] >> (2 * (i & 3))) & 3u, e;
        if (c < 3) e = j->cb.book1[c];
        else {
            unsigned c2 = field_get(code2, len2, k2++, 3);
            if (c2 < 7) e = j->cb.book2[c2];
            else {
                e = esc[k3++];
                if ((int)e > exp_max(j->dtype)) return "tier-3 exponent out of range";
                if (j->cb.tier[e] != 3) return "tier-3 exponent is in a codebook";
            }
        }
        unsigned hi = lay->dtype == LRUN_DTYPE_F16 ? field_get(in + lay->hi, lay->code1 - lay->hi, i, 3) : 0;
        out[i - i0] = join(j->dtype, e, in[lay->rest + i], hi);
    }
    return NULL;
}

static void task_decode(void *ctx, int ith, int nth)
{
    job *j = ctx;
    uint64_t b0, b1;
    uint16_t scratch[LRUN_PACKED_BLOCK] = {0}; /* validation only: the values are dropped */
    block_span(j->lay->nb, ith, nth, &b0, &b1);
    j->bad_block[ith] = -1;
    for (uint64_t b = b0; b < b1; b++)
        if (decode_block(j, b, j->dst ? j->dst + b * LRUN_PACKED_BLOCK : scratch)) {
            j->bad_block[ith] = (int64_t)b;
            return;
        }
}

/* Header, sizes, codebooks, the table's ends and the padding of the fixed streams. */
static lrun_status check_frame(lrun_packed_layout *lay, codebook *cb, const uint8_t *in, size_t size, const char *what)
{
    lrun_packed_header hd;
    if (size < LRUN_PACKED_HEADER_BYTES) return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': %zu bytes, shorter than its header", what, size);
    memcpy(&hd, in, sizeof hd);
    if (hd.magic != LRUN_PACKED_MAGIC) return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': bad magic 0x%08x", what, hd.magic);
    if (!lrun_packed_dtype_ok(hd.dtype)) return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': dtype %u is not bf16 or f16", what, hd.dtype);
    static const uint8_t zero[6];
    if (memcmp(hd.reserved, zero, 3) || memcmp(hd.pad, zero, 6))
        return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': reserved header bytes are not zero", what);
    if (!layout_fixed(lay, hd.dtype, hd.n) || lay->code2 > size)
        return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': %llu elements need more than its %zu bytes", what,
                         (unsigned long long)hd.n, size);
    memcpy(cb->book1, hd.book1, sizeof cb->book1);
    memcpy(cb->book2, hd.book2, sizeof cb->book2);
    memcpy(lay->book1, hd.book1, sizeof lay->book1);
    memcpy(lay->book2, hd.book2, sizeof lay->book2);
    if (!codebook_index(cb, hd.dtype))
        return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': codebook repeats an exponent or holds one out of range", what);
    const uint8_t *last = in + lay->table + 16 * lay->nb;
    if (rd64(in + lay->table) != 0 || rd64(in + lay->table + 8) != 0)
        return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': block table does not start at 0", what);
    uint64_t c2 = rd64(last), c3 = rd64(last + 8);
    if (c2 > size - lay->code2 || c3 > size - lay->code2 - c2 || lay->code2 + c2 + c3 != size)
        return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': table totals %llu + %llu do not fill its %zu bytes", what,
                         (unsigned long long)c2, (unsigned long long)c3, size);
    lay->code2_bytes = (size_t)c2;
    lay->esc = lay->code2 + lay->code2_bytes;
    lay->esc_bytes = (size_t)c3;
    lay->total = size;
    if ((lay->n * 2) % 8 && in[lay->table - 1] >> ((lay->n * 2) & 7))
        return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': tier-1 padding bits are not zero", what);
    if (lay->dtype == LRUN_DTYPE_F16 && (lay->n * 3) % 8 && in[lay->code1 - 1] >> ((lay->n * 3) & 7))
        return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': sign padding bits are not zero", what);
    return LRUN_OK;
}

int lrun_packed_codec_of(const void *src, size_t size)
{
    uint32_t magic;
    if (!src || size < 4) return 0;
    memcpy(&magic, src, 4);
    return magic == LRUN_PACKED_MAGIC ? LRUN_PACKED_CODEC_EXP : magic == LRUN_PEX2_MAGIC ? LRUN_PACKED_CODEC_PEX2 : 0;
}

void lrun_packed_layout_pex2(lrun_packed_layout *lay, const lrun_pex2_layout *p)
{
    memset(lay, 0, sizeof *lay);
    lay->codec = LRUN_PACKED_CODEC_PEX2;
    lay->dtype = LRUN_DTYPE_BF16;
    lay->n = p->n;
    lay->nb = p->nb;
    lay->total = p->total;
    lay->pex2 = *p;
}

/* A PEX2 tensor (codec_pex2.c): validated, then decoded when dst is given. */
static lrun_status decode_all_pex2(lrun_packed_layout *lay, uint16_t *dst, const uint8_t *in, size_t size,
                                   const char *what, lrun_threadpool *pool)
{
    lrun_pex2_layout p;
    memset(lay, 0, sizeof *lay);
    const lrun_status st = lrun_pex2_validate(&p, in, size, what, pool);
    if (st != LRUN_OK) return st;
    lrun_packed_layout_pex2(lay, &p);
    if (dst) lrun_packed_decode_range_mt(dst, in, lay, 0, lay->n, pool);
    return LRUN_OK;
}

static lrun_status decode_all(lrun_packed_layout *lay, uint16_t *dst, const uint8_t *in, size_t size, const char *what,
                              lrun_threadpool *pool)
{
    if (lrun_packed_codec_of(in, size) == LRUN_PACKED_CODEC_PEX2)
        return decode_all_pex2(lay, dst, in, size, what, pool);
    job j = {.in = in, .in_size = size, .lay = lay, .dst = dst};
    lrun_status st = check_frame(lay, &j.cb, in, size, what);
    if (st != LRUN_OK) return st;
    j.dtype = lay->dtype;
    int nth = pool ? lrun_threadpool_size(pool) : 1;
    int64_t bad[256];
    if (nth > 256) return lrun_fail(LRUN_E_ARG, "packed tensor '%s': %d threads, at most 256", what, nth);
    j.bad_block = bad;
    run(pool, task_decode, &j);
    for (int t = 0; t < nth; t++)
        if (bad[t] >= 0) {
            uint16_t scratch[LRUN_PACKED_BLOCK];
            const char *why = decode_block(&j, (uint64_t)bad[t], scratch);
            return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': block %lld: %s", what, (long long)bad[t], why);
        }
    return LRUN_OK;
}

lrun_status lrun_packed_validate(lrun_packed_layout *lay, const void *src, size_t size, const char *what)
{
    if (!lay || (!src && size)) return lrun_fail(LRUN_E_ARG, "lrun_packed_validate: NULL argument");
    return decode_all(lay, NULL, src, size, what ? what : "?", NULL);
}

lrun_status lrun_packed_decode(uint16_t *dst, int want_dtype, uint64_t want_n, const void *src, size_t size,
                               const char *what, lrun_threadpool *pool)
{
    lrun_packed_layout lay;
    what = what ? what : "?";
    if ((!dst && want_n) || (!src && size)) return lrun_fail(LRUN_E_ARG, "lrun_packed_decode: NULL argument");
    if (size >= LRUN_PACKED_HEADER_BYTES) { /* the shape check first: dst holds want_n values */
        lrun_packed_header hd;
        memcpy(&hd, src, sizeof hd);
        if (hd.dtype != want_dtype || hd.n != want_n)
            return lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': holds %llu values of dtype %u, expected %llu of %d", what,
                             (unsigned long long)hd.n, hd.dtype, (unsigned long long)want_n, want_dtype);
    }
    return decode_all(&lay, dst, src, size, what, pool);
}

void lrun_packed_decode_range(uint16_t *dst, const void *src, const lrun_packed_layout *lay, uint64_t first, uint64_t count)
{
    if (lay->codec == LRUN_PACKED_CODEC_PEX2) {
        lrun_pex2_decode_range(dst, src, &lay->pex2, first, count);
        return;
    }
    job j = {.in = src, .in_size = lay->total, .lay = lay, .dtype = lay->dtype};
    memcpy(j.cb.book1, lay->book1, sizeof j.cb.book1);
    memcpy(j.cb.book2, lay->book2, sizeof j.cb.book2);
    codebook_index(&j.cb, lay->dtype);
    uint16_t scratch[LRUN_PACKED_BLOCK];
    for (uint64_t i = first; i < first + count;) {
        uint64_t b = i / LRUN_PACKED_BLOCK, i0 = b * LRUN_PACKED_BLOCK, take = i0 + LRUN_PACKED_BLOCK - i;
        if (take > first + count - i) take = first + count - i;
        decode_block(&j, b, scratch);
        memcpy(dst + (i - first), scratch + (i - i0), take * sizeof *dst);
        i += take;
    }
}

lrun_status lrun_packed_validate_mt(lrun_packed_layout *lay, const void *src, size_t size, const char *what,
                                    lrun_threadpool *pool)
{
    if (!lay || (!src && size)) return lrun_fail(LRUN_E_ARG, "lrun_packed_validate: NULL argument");
    return decode_all(lay, NULL, src, size, what ? what : "?", pool);
}

typedef struct range_job {
    uint16_t *dst;
    const void *src;
    const lrun_packed_layout *lay;
    uint64_t first, count;
} range_job;

static void task_range(void *ctx, int ith, int nth)
{
    const range_job *r = ctx;
    const uint64_t end = r->first + r->count;
    const uint64_t bfirst = r->first / LRUN_PACKED_BLOCK, blast = (end + LRUN_PACKED_BLOCK - 1) / LRUN_PACKED_BLOCK;
    uint64_t b0, b1;
    block_span(blast - bfirst, ith, nth, &b0, &b1);
    uint64_t i0 = (bfirst + b0) * LRUN_PACKED_BLOCK, i1 = (bfirst + b1) * LRUN_PACKED_BLOCK;
    if (i0 < r->first) i0 = r->first;
    if (i1 > end) i1 = end;
    if (i1 > i0) lrun_packed_decode_range(r->dst + (i0 - r->first), r->src, r->lay, i0, i1 - i0);
}

void lrun_packed_decode_range_mt(uint16_t *dst, const void *src, const lrun_packed_layout *lay, uint64_t first,
                                 uint64_t count, lrun_threadpool *pool)
{
    range_job r = {dst, src, lay, first, count};
    if (count == 0) return;
    /* a thread per block at least: small ranges stay on the caller's thread */
    if (pool && count > LRUN_PACKED_BLOCK) lrun_threadpool_run(pool, task_range, &r);
    else task_range(&r, 0, 1);
}
