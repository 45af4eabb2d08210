/* test_packed_pex2.c — the PEX2 codec (runtime/packed/codec_pex2.c):
 * bit-for-bit round trips on the cases of the prototype's check
 * (tests/bench/codec2_roundtrip.c), the same bytes as the prototype's
 * encoder but for the table (the same entries, stored smaller) and a decode
 * by the prototype's lane code (what the CUDA kernels run), range decodes at
 * random offsets, one crafted bad tensor per
 * validation rule, the stored-raw fallback of lrun_pack, and a packed file
 * of mixed PEX1/PEX2 tensors that gives the unpacked model's logits; and
 * lrun_pex2_measure, the size without the encode, against the encoder. */
#include "check.h"
#include "fixtures.h"
#include "lrun.h"
#include "core/threadpool.h"
#include "packed/codec.h"
#include "packed/packed_file.h"
#include "quant/quant_dot.h"

#include "../bench/codec2_encode.h" /* the prototype: encoder, lane decode, trained-like values */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static lrun_threadpool *pool;

// ---------------------------------------------------------------- the prototype's decode, replayed

/* Block b of the runtime's bytes P as one warp of the prototype's kernels
 * decodes it (codec2_roundtrip.c's c2_decode_block): the 32 lanes, then the
 * patch passes with the ballot's prefix count. The lanes and patches are
 * the prototype's (L: its layout, whose rest and code sections are the
 * runtime's); the block's exceptions are found through the runtime's table
 * (lay), whose superblocks the prototype's 12-byte entries do not have. */
static void proto_decode_block(const uint8_t *P, const c2_layout *L, const lrun_pex2_layout *lay, uint64_t b,
                               uint16_t *bdst, int phi)
{
    for (uint32_t lane = 0; lane < 32; lane++) c2_lane_block(P, L, 8, b, lane, bdst, 0, phi);
    const lrun_pex2_block e = lrun_pex2_block_at(P, lay, b);
    const c2_block B = {.count = e.count,
                        .ends = e.ends,
                        .exc = P + lay->exc + e.exc,
                        .far = P + lay->far + e.far,
                        .code = P + L->code + 384 * b};
    uint32_t run = 0;
    for (uint32_t base = 0; base < B.count; base += 32) {
        c2_exc x[32];
        uint32_t ballot = 0;
        for (uint32_t lane = 0; lane < 32; lane++) {
            x[lane] = c2_exc_load(&B, 8, base + lane);
            if (x[lane].act && x[lane].code == 7) ballot |= 1u << lane;
        }
        for (uint32_t lane = 0; lane < 32; lane++)
            if (x[lane].act)
                c2_exc_apply(L, &B, 8, &x[lane], run + (uint32_t)__builtin_popcount(ballot & ((1u << lane) - 1)),
                             bdst, 0, phi);
        run += (uint32_t)__builtin_popcount(ballot);
    }
}

// ---------------------------------------------------------------- measured sizes

/* The layouts a and b, field by field: every offset, count and codebook. */
static int same_layout(const lrun_pex2_layout *a, const lrun_pex2_layout *b)
{
    return a->n == b->n && a->nb == b->nb && a->n_exc == b->n_exc && a->n_far == b->n_far && a->rest == b->rest &&
           a->code == b->code && a->table == b->table && a->super == b->super && a->exc == b->exc &&
           a->far == b->far && a->total == b->total && !memcmp(a->book1, b->book1, sizeof a->book1) &&
           !memcmp(a->book2, b->book2, sizeof a->book2);
}

/* lrun_pex2_measure of v (n values) on one thread and on the pool: the size
 * the encoder wrote (got bytes) and the layout validation read from those
 * bytes (*want), field by field. */
static void measure_matches(const char *name, const uint16_t *v, uint64_t n, size_t got, const lrun_pex2_layout *want)
{
    lrun_pex2_layout one, many;
    memset(&one, 0x5a, sizeof one), memset(&many, 0xa5, sizeof many); /* every field must be written */
    const int ok = lrun_pex2_measure(&one, v, n, NULL) == LRUN_OK && lrun_pex2_measure(&many, v, n, pool) == LRUN_OK;
    char label[200];
    snprintf(label, sizeof label,
             "%s: lrun_pex2_measure gives the encoded size (%zu bytes, %llu exceptions, %llu far) and layout, "
             "1 and %d threads",
             name, got, ok ? (unsigned long long)one.n_exc : 0ull, ok ? (unsigned long long)one.n_far : 0ull,
             lrun_threadpool_size(pool));
    CHECK(label, ok && one.total == got && many.total == got && same_layout(&one, want) && same_layout(&many, want));
}

/* v (n values) encoded over the pool and validated, then measure_matches. */
static void measured_as_encoded(const char *name, const uint16_t *v, uint64_t n)
{
    const size_t cap = lrun_pex2_bound(n);
    uint8_t *p = malloc(cap);
    size_t got = 0;
    lrun_packed_layout lay;
    const int ok = p && lrun_pex2_encode(p, cap, &got, v, n, pool) == LRUN_OK &&
                   lrun_packed_validate_mt(&lay, p, got, name, pool) == LRUN_OK &&
                   lay.codec == LRUN_PACKED_CODEC_PEX2;
    char label[160];
    snprintf(label, sizeof label, "%s: encodes and validates", name);
    CHECK(label, ok);
    if (ok) measure_matches(name, v, n, got, &lay.pex2);
    free(p);
}

/* Values with exactly k distinct exponents (100 .. 100 + k - 1), exponent
 * e's count falling with e (so the codebooks are not a tie), random sign
 * and mantissa. */
static void distinct_exponents(uint16_t *v, uint64_t n, unsigned k)
{
    for (uint64_t i = 0; i < n; i++) {
        unsigned e = (unsigned)(i % k); /* every exponent present */
        if (i >= k) e = (unsigned)(rnd() % k) * (unsigned)(rnd() % k) / k;
        v[i] = (uint16_t)(((100 + e) << 7) | (rnd() & 0x807f));
    }
}

/* lrun_pex2_measure against the encoder, byte for byte (the round trips
 * check it too): normal weights at scales from bf16's subnormals to its
 * largest exponents, the adversarial values, exactly 8, 15 and 16
 * exponents (no exceptions; exceptions, none far; one far), at the sizes
 * where sections and blocks change (one lane, one block, a block and a
 * lane, three blocks and a lane, many blocks); NULL and sizes PEX2 does
 * not take are refused. */
static void measured_sizes(void)
{
    const uint64_t sizes[] = {8, 1024, 1032, 3 * 1024 + 8, 1024 * 1024 + 8};
    const uint64_t big = sizes[4];
    uint16_t *v = malloc(big * sizeof *v);
    const double scales[] = {1e-40, 1e-20, 1e-3, 0.02, 1.0, 3e4, 1e36};
    const uint16_t special[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7fc1, 0xffff,
                                0x7f81, 0x0001, 0x807f, 0x0080, 0x7f7f, 0x0040, 0x8001};
    char name[120];
    for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
        const uint64_t n = sizes[z];
        for (size_t s = 0; s < sizeof scales / sizeof *scales; s++) {
            for (uint64_t i = 0; i < n; i++) v[i] = to_bf16((float)(scales[s] * gauss()));
            snprintf(name, sizeof name, "normal x %g, n = %llu", scales[s], (unsigned long long)n);
            measured_as_encoded(name, v, n);
        }
        for (uint64_t i = 0; i < n; i++) v[i] = special[rnd() % (sizeof special / sizeof *special)];
        snprintf(name, sizeof name, "NaN payloads, +-inf, subnormals, +-0, n = %llu", (unsigned long long)n);
        measured_as_encoded(name, v, n);
        for (uint64_t i = 0; i < n; i++) v[i] = 0xbf80;
        snprintf(name, sizeof name, "all equal (-1.0), n = %llu", (unsigned long long)n);
        measured_as_encoded(name, v, n);
        for (uint64_t i = 0; i < n; i++) v[i] = (uint16_t)(((i % 256) << 7) | (rnd() & 0x807f));
        snprintf(name, sizeof name, "every exponent at once, n = %llu", (unsigned long long)n);
        measured_as_encoded(name, v, n);
        for (uint64_t i = 0; i < n; i++) v[i] = (uint16_t)(((rnd() % 256) << 7) | (rnd() & 0x807f));
        snprintf(name, sizeof name, "every exponent, as many of each, n = %llu", (unsigned long long)n);
        measured_as_encoded(name, v, n);
        const unsigned ks[] = {8, 15, 16};
        for (int k = 0; k < 3; k++) {
            if (n < ks[k]) continue;
            distinct_exponents(v, n, ks[k]);
            snprintf(name, sizeof name, "exactly %u exponents, n = %llu", ks[k], (unsigned long long)n);
            measured_as_encoded(name, v, n);
        }
    }
    lrun_pex2_layout lay;
    distinct_exponents(v, 1024, 8);
    int ok = lrun_pex2_measure(&lay, v, 1024, NULL) == LRUN_OK && lay.n_exc == 0 && lay.n_far == 0;
    distinct_exponents(v, 1024, 15);
    ok = ok && lrun_pex2_measure(&lay, v, 1024, NULL) == LRUN_OK && lay.n_exc > 0 && lay.n_far == 0;
    distinct_exponents(v, 1024, 16);
    ok = ok && lrun_pex2_measure(&lay, v, 1024, NULL) == LRUN_OK && lay.n_far > 0 && lay.n_far < lay.n_exc;
    CHECK("8 exponents have no exceptions, 15 none far, 16 some far", ok);
    CHECK("lrun_pex2_measure refuses NULL, n = 12 and n = 0 with LRUN_E_ARG",
          lrun_pex2_measure(NULL, v, 8, NULL) == LRUN_E_ARG && lrun_pex2_measure(&lay, NULL, 8, NULL) == LRUN_E_ARG &&
              lrun_pex2_measure(&lay, v, 12, NULL) == LRUN_E_ARG && strstr(lrun_last_error(), "multiple of 8") &&
              lrun_pex2_measure(&lay, v, 0, pool) == LRUN_E_ARG);
    free(v);
}

// ---------------------------------------------------------------- round trips

/* The runtime's bytes p (layout lay) against the prototype's ref: the same
 * header but for magic and dtype, the same rest and code sections, the same
 * exception and far streams, and the same table entries read through each
 * format (first exception, first far byte, group ends and counts of every
 * block, so the totals too), though the runtime stores them in 8 bytes and superblocks,
 * the prototype in 12. The prototype stays the record of the study
 * (docs/packed.md, session 14) with the table it was measured with. */
static int same_as_prototype(const uint8_t *p, const lrun_pex2_layout *lay, const c2_packed *ref)
{
    const uint8_t *q = ref->buf;
    const c2_layout *R = &ref->lay;
    if (R->table != lay->table || memcmp(q + 8, p + 8, lay->table - 8)) return 0;
    if (ref->n_exc != lay->n_exc || ref->n_far != lay->n_far ||
        memcmp(q + R->exc, p + lay->exc, (size_t)(lay->n_exc + lay->n_far))) /* the padding after: to 16 from each */
        return 0;
    for (uint64_t b = 0; b < lay->nb; b++) {
        const lrun_pex2_block e = lrun_pex2_block_at(p, lay, b);
        const uint8_t *t = q + R->table + 12 * b;
        if (e.exc != lrun_pex2_u32(t) || e.far != lrun_pex2_u32(t + 4) || e.ends != lrun_pex2_u32(t + 8) ||
            e.count != lrun_pex2_u32(t + 12) - e.exc || e.far_count != lrun_pex2_u32(t + 16) - e.far)
            return 0;
    }
    return 1; /* the totals (entry nb): n_exc and n_far, compared above */
}

/* v (n values) encoded with one thread and with the pool (same bytes), the
 * prototype's bytes but for the magic, dtype and table form, validated, decoded by the
 * runtime and by the prototype's lanes: every bit back. Returns the size. */
static size_t round_trip(const char *name, const uint16_t *v, uint64_t n)
{
    const size_t cap = lrun_pex2_bound(n);
    uint8_t *p = aligned_alloc(64, (cap + 63) & ~(size_t)63), *p2 = malloc(cap);
    uint16_t *back = malloc(n * 2), *proto = malloc(n * 2);
    size_t got = 0, got2 = 0;
    lrun_packed_layout lay;
    c2_packed ref = {0};
    int ok = p && p2 && back && proto && lrun_pex2_encode(p, cap, &got, v, n, NULL) == LRUN_OK &&
             lrun_pex2_encode(p2, cap, &got2, v, n, pool) == LRUN_OK && got == got2 && !memcmp(p, p2, got);
    char label[160];
    snprintf(label, sizeof label, "%s: encodes, the same bytes on 1 and %d threads", name,
             lrun_threadpool_size(pool));
    CHECK(label, ok);
    ok = ok && lrun_packed_validate_mt(&lay, p, got, name, pool) == LRUN_OK && lay.codec == LRUN_PACKED_CODEC_PEX2 &&
         lay.n == n && lay.dtype == LRUN_DTYPE_BF16 && lay.total == got;
    const int proto_ok = ok && c2_encode(v, n, 8, &ref) == 0 && same_as_prototype(p, &lay.pex2, &ref);
    snprintf(label, sizeof label, "%s: the prototype encoder's bytes (but magic, dtype and the table's form)", name);
    CHECK(label, proto_ok);
    for (uint64_t i = 0; i < n; i++) back[i] = (uint16_t)~v[i]; /* every value must be written */
    if (ok) lrun_packed_decode_range_mt(back, p, &lay, 0, n, pool);
    snprintf(label, sizeof label, "%s: validates and decodes bit for bit (ratio %.4f)", name,
             (double)got / (2.0 * (double)n));
    CHECK(label, ok && !memcmp(back, v, n * 2));
    if (ok) measure_matches(name, v, n, got, &lay.pex2);
    for (uint64_t i = 0; i < n; i++) proto[i] = (uint16_t)~v[i];
    for (uint64_t b = 0; ok && ref.buf && b * C2_BLOCK < n; b++) {
        const uint64_t left = n - b * C2_BLOCK;
        proto_decode_block(p, &ref.lay, &lay.pex2, b, proto + b * C2_BLOCK, left < C2_BLOCK ? (int)left : C2_BLOCK);
    }
    snprintf(label, sizeof label, "%s: the prototype's lanes decode it bit for bit, aligned", name);
    CHECK(label, ok && ref.buf && !memcmp(proto, v, n * 2) && !c2_emu_misaligned && !c2_emu_signsel);
    c2_emu_misaligned = c2_emu_signsel = 0;
    uint16_t *whole = malloc(n * 2);
    snprintf(label, sizeof label, "%s: lrun_packed_decode takes it, and refuses a wrong count", name);
    CHECK(label, whole && lrun_packed_decode(whole, LRUN_DTYPE_BF16, n, p, got, name, pool) == LRUN_OK &&
                     !memcmp(whole, v, n * 2) &&
                     lrun_packed_decode(whole, LRUN_DTYPE_BF16, n - 8, p, got, name, NULL) == LRUN_E_FORMAT);
    free(whole);
    free(ref.buf);
    free(p), free(p2), free(back), free(proto);
    return got;
}

static void round_trips(void)
{
    const uint64_t big = 4096ull * 4096;
    uint16_t *v = malloc(big * sizeof *v);
    for (uint64_t i = 0; i < 65536; i++) v[i] = (uint16_t)i;
    round_trip("every bf16 bit pattern", v, 65536);
    for (uint64_t i = 0; i < 65536; i++) v[i] = (uint16_t)(rnd() >> 7);
    const size_t grown = round_trip("random bit patterns", v, 65536);
    CHECK("random bit patterns grow under PEX2 (lrun_pack stores them raw)", grown > 2 * 65536);
    for (uint64_t i = 0; i < 4096; i++) v[i] = 0x3f80;
    round_trip("all equal (1.0)", v, 4096);
    for (uint64_t i = 0; i < 4096; i++) v[i] = 0x8000;
    round_trip("all -0", v, 4096);
    const uint16_t special[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7fc1,
                                0xffff, 0x7f81, 0x0001, 0x807f, 0x0080, 0x7f7f};
    for (uint64_t i = 0; i < 8192; i++) v[i] = i % 3 ? special[rnd() % 12] : 0x3c00;
    round_trip("NaN payloads, inf, subnormals, +-0", v, 8192);
    for (uint64_t i = 0; i < 256 * 1024; i++) v[i] = (uint16_t)(((i % 256) << 7) | (rnd() & 0x807f));
    round_trip("every exponent, each block", v, 256 * 1024);
    for (uint64_t i = 0; i < 8192; i++) v[i] = (uint16_t)((((rnd() % 16) + 100) << 7) | (rnd() & 0x807f));
    round_trip("16 exponents: half exceptions", v, 8192);
    for (uint64_t i = 0; i < 3072; i++) v[i] = (uint16_t)(((i < 1024 ? 120 : (rnd() % 256)) << 7) | (rnd() & 0x807f));
    round_trip("a block of one exponent, then far", v, 3072);
    trained(v, 1, 8);
    round_trip("one lane (n = 8)", v, 8);
    trained(v, 37, 24);
    round_trip("37x24 (not whole blocks)", v, 37 * 24);
    trained(v, 3, 776);
    round_trip("3x776", v, 3 * 776);
    trained(v, 576, 1536);
    round_trip("trained-like 576x1536", v, 576 * 1536);
    trained(v, 4096, 4096);
    const size_t tb = round_trip("trained-like 4096x4096", v, big);
    printf("# trained-like 4096x4096: PEX2 ratio %.4f\n", (double)tb / (2.0 * (double)big));
    CHECK("trained-like 4096x4096 packs to under 0.72 of plain", (double)tb / (2.0 * (double)big) < 0.72);
    size_t dummy = 0;
    CHECK("n not a multiple of 8 is refused by the encoder",
          lrun_pex2_encode(v, big, &dummy, v, 12, NULL) == LRUN_E_ARG && strstr(lrun_last_error(), "multiple of 8"));
    CHECK("f16 and odd counts do not fit PEX2 (they stay PEX1)", !lrun_pex2_fits(LRUN_DTYPE_F16, 64) &&
                                                                     !lrun_pex2_fits(LRUN_DTYPE_BF16, 12) &&
                                                                     lrun_pex2_fits(LRUN_DTYPE_BF16, 16));
    free(v);
}

// ---------------------------------------------------------------- ranges

static void ranges(void)
{
    /* 65 whole blocks and a partial one (two superblocks), every exponent: exceptions and far bytes in every
     * block, ranges that start, end or cross a superblock */
    const uint64_t n = 65 * 1024 + 520;
    uint16_t *v = malloc(n * 2), *got = malloc(n * 2);
    for (uint64_t i = 0; i < n; i++) v[i] = (uint16_t)(((rnd() % 40 + 100) << 7) | (rnd() & 0x807f));
    const size_t cap = lrun_pex2_bound(n);
    uint8_t *p = malloc(cap);
    size_t bytes = 0;
    lrun_packed_layout lay;
    int ok = lrun_pex2_encode(p, cap, &bytes, v, n, NULL) == LRUN_OK &&
             lrun_packed_validate(&lay, p, bytes, "r") == LRUN_OK;
    int bad = 0;
    for (int k = 0; ok && k < 500; k++) {
        const uint64_t a = rnd() % n, c = 1 + rnd() % (n - a);
        for (uint64_t i = 0; i < c; i++) got[i] = 0x5555;
        lrun_packed_decode_range(got, p, &lay, a, c);
        bad += memcmp(got, v + a, c * 2) != 0;
    }
    CHECK("500 ranges at random offsets decode bit for bit", ok && !bad);
    for (uint64_t i = 0; i < n; i++) got[i] = 0x5555;
    if (ok) lrun_packed_decode_range_mt(got + 1, p, &lay, 1, n - 1, pool);
    CHECK("a range over the pool decodes bit for bit",
          ok && !memcmp(got + 1, v + 1, (n - 1) * 2) && got[0] == 0x5555);

    /* every host kernel level the build and CPU have (codec_pex2_avx2.c and _avx512.c against the scalar loop):
     * the same bits on the same 500 ranges, whatever level is in use */
    const lrun_cpu_isa was = lrun_cpu_isa_get();
    int levels = 0, level_bad = 0;
    for (int isa = LRUN_CPU_ISA_SCALAR; ok && isa <= LRUN_CPU_ISA_AVX512; isa++) {
        if (lrun_cpu_isa_set((lrun_cpu_isa)isa) != LRUN_OK) continue;
        levels++;
        for (int k = 0; k < 500; k++) {
            const uint64_t a = rnd() % n, c = 1 + rnd() % (n - a);
            for (uint64_t i = 0; i < c; i++) got[i] = 0x5555;
            lrun_packed_decode_range(got, p, &lay, a, c);
            level_bad += memcmp(got, v + a, c * 2) != 0;
        }
    }
    (void)lrun_cpu_isa_set(was);
    char name[96];
    snprintf(name, sizeof name, "500 ranges decode bit for bit at each of the %d host kernel levels", levels);
    CHECK(name, ok && levels >= 1 && !level_bad);
    free(v), free(got), free(p);
}

// ---------------------------------------------------------------- crafted bad tensors, one per rule

static uint8_t *good;
static size_t good_n;
static lrun_pex2_layout glay;

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static void wr16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
/* Table entry k (u16 exc offset, u16 far offset, u32 ends) and superblock s (u32 exc base, u32 far base). */
static uint8_t *entry(uint8_t *b, uint64_t k) { return b + glay.table + LRUN_PEX2_TABLE_ENTRY * k; }
static uint8_t *super(uint8_t *b, uint64_t s) { return b + glay.super + LRUN_PEX2_SUPER_ENTRY * s; }

/* The tensor with edit applied is refused with LRUN_E_FORMAT and a message holding want. */
static void bad_rule(const char *rule, void (*edit)(uint8_t *b, size_t *n), const char *want)
{
    size_t n = good_n;
    uint8_t *b = malloc(good_n + 64);
    memcpy(b, good, good_n);
    edit(b, &n);
    lrun_packed_layout lay;
    const lrun_status st = lrun_packed_validate_mt(&lay, b, n, "crafted", pool);
    printf("# %s: %s\n", rule, lrun_last_error());
    CHECK(rule, st == LRUN_E_FORMAT && strstr(lrun_last_error(), want) && strstr(lrun_last_error(), "'crafted'"));
    free(b);
}

static void e_short(uint8_t *b, size_t *n) { (void)b, *n = 20; }
static void e_magic(uint8_t *b, size_t *n) { (void)n, b[3] = '3'; }
static void e_dtype(uint8_t *b, size_t *n) { (void)n, wr32(b + 4, LRUN_DTYPE_F16); }
static void e_n_odd(uint8_t *b, size_t *n) { (void)n, b[8] = (uint8_t)(b[8] + 4); }
static void e_n_zero(uint8_t *b, size_t *n) { (void)n, memset(b + 8, 0, 8); }
static void e_n_huge(uint8_t *b, size_t *n) { (void)n, b[12] = 1; }
static void e_book1(uint8_t *b, size_t *n) { (void)n, b[17] = b[16]; }
static void e_book2(uint8_t *b, size_t *n) { (void)n, b[24] = b[16]; }
static void e_book2_7(uint8_t *b, size_t *n) { (void)n, b[31] = 200; }
static void e_truncated(uint8_t *b, size_t *n) { (void)b, *n = glay.exc - 1; }
static void e_longer(uint8_t *b, size_t *n) { b[(*n)++] = 0; }
static void e_shorter(uint8_t *b, size_t *n) { (void)b, *n -= 16; }
static void e_totals(uint8_t *b, size_t *n) { (void)n, wr32(super(b, glay.nb / 64), (uint32_t)glay.n + 1); }
static void e_total_ends(uint8_t *b, size_t *n) { (void)n, wr32(entry(b, glay.nb) + 4, 1); }
static void e_pad_rest(uint8_t *b, size_t *n) { (void)n, b[glay.code - 1] = 1; }
static void e_pad_code(uint8_t *b, size_t *n) { (void)n, b[glay.table - 3] = 1; }
static void e_pad_tail(uint8_t *b, size_t *n) { b[*n - 1] = 1; }
static void e_first(uint8_t *b, size_t *n)
{
    (void)n; /* superblock 0 (every entry's) exc base 1, the totals' offset 1 less: the same totals */
    wr32(super(b, 0), 1);
    wr16(entry(b, glay.nb), rd16(entry(b, glay.nb)) - 1);
}
static void e_count_neg(uint8_t *b, size_t *n) { (void)n, wr16(entry(b, 2), rd16(entry(b, 3)) + 1); }
static void e_count_big(uint8_t *b, size_t *n)
{
    (void)n, wr16(entry(b, 1), rd16(entry(b, 1)) + 1);
} /* block 0: 1025 */
static void e_far_big(uint8_t *b, size_t *n)
{
    (void)n, wr16(entry(b, 1) + 2, rd16(entry(b, 2) + 2) - rd16(entry(b, 2)) + rd16(entry(b, 1)) - 1);
}
static void e_ends_bits(uint8_t *b, size_t *n) { (void)n, wr32(entry(b, 1) + 4, rd32(entry(b, 1) + 4) | 1u << 30); }
static void e_ends_order(uint8_t *b, size_t *n)
{
    (void)n; /* group 1 ends before group 0 */
    const uint32_t e = rd32(entry(b, 1) + 4), e0 = e & 1023u, e1 = (e >> 10) & 1023u;
    wr32(entry(b, 1) + 4, (e & ~(uint32_t)0xfffff) | e0 << 10 | e1);
}
static void e_pos_order(uint8_t *b, size_t *n)
{
    (void)n; /* block 0's first two exceptions (both in group 0) swapped */
    uint8_t *x = b + glay.exc, t = x[0];
    x[0] = x[1], x[1] = t;
}
static void e_pos_past(uint8_t *b, size_t *n)
{
    (void)n; /* the last block's group 2 has 8 values (520 = 2 x 256 + 8): its last exception moved past them */
    b[glay.exc + glay.n_exc - 1] = 200;
}
static void e_far_code(uint8_t *b, size_t *n)
{
    (void)n; /* the first far exception's code made 0 (a near one): the block has fewer far codes */
    for (uint64_t i = 0; i < glay.n; i++) {
        const uint64_t bit = 3 * i;
        if (((b[glay.code + bit / 8] | b[glay.code + bit / 8 + 1] << 8) >> (bit % 8) & 7) == 7) {
            b[glay.code + bit / 8] &= (uint8_t) ~(7u << (bit % 8));
            b[glay.code + bit / 8 + 1] &= (uint8_t) ~(7u >> (8 - bit % 8));
            return;
        }
    }
}
static void e_far_book(uint8_t *b, size_t *n) { (void)n, b[glay.far] = glay.book1[0]; }

/* The rules of the superblocks, on a tensor of three (129 whole blocks and a partial one). */
static void e_super_offsets(uint8_t *b, size_t *n) { (void)n, wr16(entry(b, 64) + 2, 1); } /* far offset */
static void e_super_falls(uint8_t *b, size_t *n)
{
    (void)n; /* superblock 2's exc base below superblock 1's, the totals' offset as much more: the same totals */
    const uint32_t was = rd32(super(b, 2)), now = rd32(super(b, 1)) - 1;
    wr32(super(b, 2), now);
    wr16(entry(b, glay.nb), rd16(entry(b, glay.nb)) + (was - now));
}
static void e_super_jump(uint8_t *b, size_t *n)
{
    (void)n; /* superblock 1's exc base 1025 on: block 63, the last before it, more exceptions than elements */
    wr32(super(b, 1), rd32(super(b, 1)) + 1025);
}

/* The good tensor of n values for the bad ones (good, good_n, glay): block
 * 0 all exceptions (exponents 140..199), then 90% from 100..107 (book1);
 * two far exceptions at the start (exponent 130, in neither book), the last
 * group all exceptions. */
static int make_good(uint64_t n)
{
    uint16_t *v = malloc(n * 2);
    for (uint64_t i = 0; i < n; i++) {
        const unsigned r = (unsigned)(rnd() % 100), e = i < 1024 ? 140 + (unsigned)(rnd() % 60)
                                                        : r < 90 ? 100 + r % 8
                                                                 : 108 + (unsigned)(rnd() % 32);
        v[i] = (uint16_t)((e << 7) | (rnd() & 0x807f));
    }
    v[0] = v[1] = (uint16_t)(130 << 7);
    for (uint64_t i = n - 8; i < n; i++) v[i] = (uint16_t)(131 << 7);
    good = malloc(lrun_pex2_bound(n));
    const int ok = lrun_pex2_encode(good, lrun_pex2_bound(n), &good_n, v, n, NULL) == LRUN_OK &&
                   lrun_pex2_validate(&glay, good, good_n, "good", NULL) == LRUN_OK && glay.n_far >= 2 &&
                   rd16(entry(good, 1)) == 1024 && glay.far + glay.n_far < good_n; /* a tail to pad */
    free(v);
    return ok;
}

static void bad_tensors(void)
{
    int ok = make_good(3 * 1024 + 520);
    CHECK("the good tensor for the bad ones", ok);
    if (!ok) return;
    bad_rule("shorter than the header", e_short, "shorter than its 32-byte header");
    bad_rule("bad magic", e_magic, "bad magic"); /* neither PEX1 nor PEX2: PEX1's check names it */
    bad_rule("dtype not bf16", e_dtype, "holds only bf16");
    bad_rule("n not a multiple of 8", e_n_odd, "not a positive multiple of 8");
    bad_rule("n = 0", e_n_zero, "not a positive multiple of 8");
    bad_rule("n of 2^32 or more", e_n_huge, "below 2^32");
    bad_rule("book1 repeats an exponent", e_book1, "appears twice in the codebooks (book1[1])");
    bad_rule("book2 repeats a book1 exponent", e_book2, "appears twice in the codebooks (book2[0])");
    bad_rule("book2[7] not 0", e_book2_7, "book2[7] is 200");
    bad_rule("truncated inside the table", e_truncated, "shorter than its table's end");
    bad_rule("one byte more", e_longer, "its sections make");
    bad_rule("16 bytes less", e_shorter, "its sections make");
    bad_rule("table totals more exceptions than values", e_totals, "table totals");
    bad_rule("table's last entry has group ends", e_total_ends, "table totals");
    bad_rule("padding after rest not zero", e_pad_rest, "nonzero padding");
    bad_rule("padding after the codes not zero", e_pad_code, "nonzero padding");
    bad_rule("padding at the end not zero", e_pad_tail, "nonzero padding");
    bad_rule("first block's exceptions not at 0", e_first, "superblock 0 (bases 1, 0;");
    bad_rule("a block's exception count negative", e_count_neg, "table entry 2");
    bad_rule("a block's exceptions more than its values", e_count_big, "table entry 0");
    bad_rule("a block's far count more than its exceptions", e_far_big, "far count is negative or more");
    bad_rule("group ends with bits 30-31 set", e_ends_bits, "bits 30-31");
    bad_rule("group ends not ascending", e_ends_order, "group ends are not ascending");
    bad_rule("exception positions not ascending", e_pos_order, "block 0: exception positions are not ascending");
    bad_rule("an exception past the tensor's end", e_pos_past, "block 3: an exception's position is past");
    bad_rule("a far exception's code changed", e_far_code, "fewer far exceptions");
    bad_rule("a far exponent in a codebook", e_far_book, "a far exponent is in a codebook");
    lrun_packed_layout lay;
    CHECK("the good tensor still validates", lrun_packed_validate(&lay, good, good_n, "good") == LRUN_OK);
    free(good);

    ok = make_good(129 * 1024 + 520) && glay.super + 3 * LRUN_PEX2_SUPER_ENTRY == glay.exc;
    CHECK("the good tensor of three superblocks for the bad ones", ok);
    if (!ok) return;
    bad_rule("a superblock's first entry has offsets", e_super_offsets,
             "table entry 64's offsets 0, 1): its first table entry's offsets are not 0");
    bad_rule("a superblock's bases below the one's before", e_super_falls,
             "table entry 128's offsets 0, 0): its bases are below the superblock's before");
    bad_rule("a superblock's base past its last block's elements", e_super_jump, "table entry 63 (");
    CHECK("the good tensor still validates", lrun_packed_validate(&lay, good, good_n, "good") == LRUN_OK);
    free(good);
}

// ---------------------------------------------------------------- packed files: raw fallback, mixed codecs

#include "dir_files.h" /* dir, path_of, slurp, spit */

/* Matrices bf16, the embedding f16 (so PEX2 packs the first, PEX1 the second), trained-like. */
static void make_model(const char *path)
{
    lrun_model_gen_spec s = {.n_layer = 2,
                             .n_embd = 64,
                             .n_head = 4,
                             .n_head_kv = 2,
                             .n_ff = 160,
                             .n_vocab = 300,
                             .n_ctx = 64,
                             .weight_dtype = LRUN_DTYPE_BF16,
                             .embd_dtype = LRUN_DTYPE_F16,
                             .rope_freq_base = 10000,
                             .rms_eps = 1e-5,
                             .seed = 5,
                             .n_threads = 1,
                             .trained_stats = 1};
    if (lrun_model_generate(path, &s) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
}

/* Logits of 4 prompt tokens then 3 greedy ones, on the CPU engine. */
static int logits_of(const char *path, float *logits, int64_t n_vocab)
{
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *e = NULL;
    const lrun_engine_opts eo = {.n_seq_max = 1, .n_ctx_max = 64, .n_batch_max = 64};
    int ok = m && lrun_engine_init(&e, m, &eo) == LRUN_OK;
    int32_t prompt[4] = {1, 50, 120, 7}, seq[4] = {0, 0, 0, 0};
    int64_t n_out = 0;
    ok = ok && lrun_engine_step(e, 4, prompt, seq, NULL, logits, 1, &n_out) == LRUN_OK;
    for (int i = 1; ok && i < 4; i++) {
        const float *row = logits + (int64_t)(i - 1) * n_vocab;
        int32_t best = 0;
        for (int64_t v = 1; v < n_vocab; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        ok = lrun_engine_step(e, 1, &best, seq, NULL, logits + (int64_t)i * n_vocab, 1, &n_out) == LRUN_OK;
    }
    if (!ok) printf("# %s: %s\n", path, lrun_last_error());
    lrun_engine_free(e);
    lrun_model_free(m);
    return ok;
}

/* Entries of each codec in the packed file at path: counts[codec]. */
static int count_codecs(const char *path, int counts[3])
{
    lrun_packed_file *f = NULL;
    if (lrun_packed_file_open(&f, path) != LRUN_OK) return 0;
    counts[0] = counts[1] = counts[2] = 0;
    for (int64_t i = 0; i < f->n_entries; i++) counts[f->entries[i].codec < 3 ? f->entries[i].codec : 0]++;
    lrun_packed_file_close(f);
    return 1;
}

static void mixed_file(void)
{
    enum { V = 300 };
    static float la[4 * V], lb[4 * V];
    char gg[128], pk[128], back[128], bad[128];
    snprintf(gg, sizeof gg, "%s", path_of("mix.gguf"));
    snprintf(pk, sizeof pk, "%s", path_of("mix.lrpk"));
    snprintf(back, sizeof back, "%s", path_of("mix_back.gguf"));
    snprintf(bad, sizeof bad, "%s", path_of("mix_bad.lrpk"));
    make_model(gg);
    lrun_pack_stats st = {0};
    const lrun_pack_opts o = {.n_threads = 2, .codec = LRUN_PACK_CODEC_PEX2};
    int c[3] = {0};
    int ok = lrun_pack(gg, pk, &o, &st) == LRUN_OK && count_codecs(pk, c);
    printf("# mixed: %lld packed (%lld PEX2), %lld stored; entries stored %d, PEX1 %d, PEX2 %d; ratio %.4f\n",
           (long long)st.n_packed, (long long)st.n_pex2, (long long)st.n_raw, c[0], c[1], c[2],
           st.plain_bytes ? (double)st.packed_bytes / (double)st.plain_bytes : 0.0);
    CHECK("--codec pex2: bf16 matrices PEX2, the f16 embedding and head PEX1",
          ok && c[2] == 14 && c[1] == 2 && st.n_pex2 == 14);
    size_t na = 0, nb = 0;
    int un = lrun_unpack(pk, back, &o) == LRUN_OK;
    uint8_t *a = slurp(gg, &na), *b = un ? slurp(back, &nb) : NULL;
    CHECK("the mixed file unpacks to the GGUF byte for byte", a && b && na == nb && !memcmp(a, b, na));
    free(b);
    CHECK("the mixed file loads and gives the unpacked model's logits bit for bit",
          logits_of(gg, la, V) && logits_of(pk, lb, V) && !memcmp(la, lb, sizeof la));
    lrun_pack_opts wrong = o;
    wrong.codec = 7;
    CHECK("an unknown codec is refused",
          lrun_pack(gg, pk, &wrong, NULL) == LRUN_E_ARG && strstr(lrun_last_error(), "codec 7"));

    /* an entry that says PEX1 over PEX2 bytes: refused at load, naming both */
    size_t n = 0;
    uint8_t *f = slurp(pk, &n);
    lrun_packed_file *pf = NULL;
    int64_t k = -1;
    if (f && lrun_packed_file_open(&pf, pk) == LRUN_OK) {
        for (int64_t i = 0; i < pf->n_entries && k < 0; i++)
            if (pf->entries[i].codec == LRUN_PACKED_CODEC_PEX2) k = i;
        lrun_packed_file_close(pf);
    }
    if (k >= 0) {
        const uint32_t pex1 = LRUN_PACKED_CODEC_EXP;
        memcpy(f + LRUN_PACKED_FILE_HEADER + (size_t)k * LRUN_PACKED_ENTRY_BYTES + 32, &pex1, 4);
        spit(bad, f, n);
    }
    lrun_model *m = NULL;
    const lrun_status s = k >= 0 ? lrun_model_load(&m, bad, NULL) : LRUN_OK;
    printf("# %s\n", lrun_last_error());
    CHECK("an entry's codec that is not its bytes' is refused at load",
          s == LRUN_E_FORMAT && strstr(lrun_last_error(), "says codec PEX1, its bytes are PEX2"));
    lrun_model_free(m);
    lrun_gguf *g = NULL;
    CHECK("and by unpacking", k >= 0 && lrun_packed_open_gguf(&g, bad, 1, 0) == LRUN_E_FORMAT);
    lrun_gguf_close(g);
    free(f);

    /* the raw fallback: a bf16 matrix of random bit patterns is stored as it is */
    lrun_gguf *src = NULL;
    int64_t t = -1;
    size_t at = 0, tbytes = 0;
    if (lrun_gguf_open(&src, gg) == LRUN_OK && (t = lrun_gguf_find_tensor(src, "blk.0.ffn_up.weight")) >= 0) {
        at = lrun_gguf_data_offset(src) + lrun_gguf_tensor_offset(src, t);
        tbytes = lrun_gguf_tensor_bytes(src, t);
    }
    lrun_gguf_close(src);
    for (size_t i = 0; t >= 0 && i < tbytes; i++) a[at + i] = (uint8_t)rnd();
    spit(gg, a, na);
    int c2[3] = {0};
    memset(&st, 0, sizeof st);
    ok = t >= 0 && lrun_pack(gg, pk, &o, &st) == LRUN_OK && count_codecs(pk, c2);
    CHECK("a bf16 matrix PEX2 would grow is stored as it is",
          ok && c2[2] == 13 && c2[1] == 2 && st.n_pex2 == 13 && c2[0] == c[0] + 1);
    un = ok && lrun_unpack(pk, back, &o) == LRUN_OK;
    b = un ? slurp(back, &nb) : NULL;
    CHECK("and unpacks to the GGUF byte for byte", b && na == nb && !memcmp(a, b, na));
    CHECK("and loads with the same logits",
          logits_of(gg, la, V) && logits_of(pk, lb, V) && !memcmp(la, lb, sizeof la));
    free(a), free(b);
}

int main(void)
{
    if (lrun_threadpool_init(&pool, 3) != LRUN_OK) return 1;
    snprintf(dir, sizeof dir, "/tmp/lrun_test_packed_pex2_%d", (int)getpid());
    char cmd[128];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd) != 0) return 1;
    round_trips();
    measured_sizes();
    ranges();
    bad_tensors();
    mixed_file();
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    lrun_threadpool_free(pool);
    return CHECK_DONE();
}
