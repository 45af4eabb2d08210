/* codec2_roundtrip.c — the CPU check of the codec2 prototype's format
 * (codec2_lane.h, "pfor-2p"): a reference encoder, then a decode that replays
 * every lane of every warp with the lane code the CUDA prototype runs
 * (codec2_proto.cu), the warp's patch pass with its ballot emulated, and a
 * bit-for-bit comparison with the input, on adversarial values (every bf16
 * bit pattern: NaN payloads, ±0, ±inf, subnormals; all equal; every
 * exponent; blocks made of exceptions and far exponents; sizes not whole
 * blocks) and on trained-like matrices, whose size it prints as a ratio of
 * the plain bytes (headers, tables and padding included).
 *   cc -O2 -std=c11 -Itests/bench tests/bench/codec2_roundtrip.c -lm -o /tmp/codec2_roundtrip
 *   /tmp/codec2_roundtrip            # (tests/bench/codec2_study.sh builds and runs it)
 *   /tmp/codec2_roundtrip FILE.bf16...  # real matrices: codec2_candidates.py --dump DIR writes them
 * Exit status 0 when every case round-trips with no misaligned load and no
 * sign-replicating permute. Bench tool only: not part of the runtime. */
#include "codec2_encode.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- decode: the warps replayed */

/* Block b as one warp of the kernels decodes it (codec2_proto.cu's
 * c2_decode_block): the 32 lanes' stores, then the patch passes, lane j of
 * a pass taking exception base + j, the far ones placed by a ballot's
 * prefix count (what __ballot_sync and __popc do on the GPU). bdst[p] is
 * the block's element p; only p in [plo, phi) is written. */
static void c2_decode_block(const uint8_t *P, const c2_layout *L, uint64_t b, uint16_t *bdst, int plo, int phi)
{
    const uint32_t A = L->base;
    for (uint32_t lane = 0; lane < 32; lane++) c2_lane_block(P, L, A, b, lane, bdst, plo, phi);
    const c2_block B = c2_block_at(P, L, A, b);
    uint32_t run = 0;
    for (uint32_t base = 0; base < B.count; base += 32) {
        c2_exc x[32];
        uint32_t ballot = 0;
        for (uint32_t lane = 0; lane < 32; lane++) {
            x[lane] = c2_exc_load(&B, A, base + lane);
            if (x[lane].act && x[lane].code == A - 1) ballot |= 1u << lane;
        }
        for (uint32_t lane = 0; lane < 32; lane++)
            if (x[lane].act)
                c2_exc_apply(L, &B, A, &x[lane], run + (uint32_t)__builtin_popcount(ballot & ((1u << lane) - 1)),
                             bdst, plo, phi);
        run += (uint32_t)__builtin_popcount(ballot);
    }
}

/* The fused GEMV's tiles replayed (codec2_proto.cu's c2_gemv_k): CUDA block
 * r0/rb decodes rows [r0, r0 + rb) of k into a tile, warp w taking the codec
 * blocks lo/1024 + w, + 8, …, each written at its offset from the tile's
 * start (a block straddling two tiles is decoded by both, each keeping its
 * part). Returns the wrong values plus any write outside the tile. */
static uint64_t c2_replay_tiles(const c2_packed *pk, const uint16_t *v, uint64_t n_rows, uint64_t k, int rb)
{
    const uint64_t te = (uint64_t)rb * k;
    uint16_t *buf = malloc((te + 2 * C2_BLOCK) * sizeof *buf), *tile = buf + C2_BLOCK;
    uint64_t bad = 0;
    for (uint64_t r0 = 0; r0 < n_rows; r0 += (uint64_t)rb) {
        const uint64_t lo = r0 * k, hi = lo + te;
        for (uint64_t i = 0; i < te + 2 * C2_BLOCK; i++) buf[i] = 0xdead;
        for (uint32_t w = 0; w < 8; w++)
            for (uint64_t b = lo / C2_BLOCK + w; b * C2_BLOCK < hi; b += 8) {
                const int off = (int)((int64_t)(b * C2_BLOCK) - (int64_t)lo);
                c2_decode_block(pk->buf, &pk->lay, b, tile + off, -off, (int)(hi - lo) - off);
            }
        for (uint64_t i = 0; i < te; i++) bad += tile[i] != v[lo + i];
        for (uint64_t i = 0; i < C2_BLOCK; i++) bad += (buf[i] != 0xdead) + (tile[te + i] != 0xdead);
    }
    free(buf);
    return bad;
}

/* ---------------------------------------------------------------- cases */

static int failures;

/* Encode with A = 8 and A = 6, decode with the replay, compare; print the ratios. */
static uint64_t total_bytes[2], total_n; /* packed bytes (A = 8, 6) and elements of the cases so far */

static uint64_t check1(const char *name, const uint16_t *v, uint64_t n, uint32_t A);
static void check(const char *name, const uint16_t *v, uint64_t n)
{
    total_bytes[0] += check1(name, v, n, 8);
    total_bytes[1] += check1(name, v, n, 6);
    total_n += n;
}

/* Returns the packed bytes, 0 where the encoder refused. */
static uint64_t check1(const char *name, const uint16_t *v, uint64_t n, uint32_t A)
{
    c2_packed pk;
    if (c2_encode(v, n, A, &pk)) {
        printf("not ok - %s: encode failed\n", name);
        failures++;
        return 0;
    }
    uint16_t *d = malloc(n * sizeof *d);
    for (uint64_t i = 0; i < n; i++) d[i] = (uint16_t)~v[i]; /* garbage: every value must be written */
    const uint64_t nb = (n + C2_BLOCK - 1) / C2_BLOCK;
    for (uint64_t b = 0; b < nb; b++) {
        const uint64_t left = n - b * C2_BLOCK;
        c2_decode_block(pk.buf, &pk.lay, b, d + b * C2_BLOCK, 0, left < C2_BLOCK ? (int)left : C2_BLOCK);
    }
    uint64_t bad = 0, first = 0;
    for (uint64_t i = 0; i < n; i++)
        if (d[i] != v[i] && !bad++) first = i;
    const int ok = !bad && !c2_emu_misaligned && !c2_emu_signsel;
    printf("%s - %s %-34s n %9llu  ratio %.4f  exceptions %.3f%%  far %.4f%%", ok ? "ok" : "not ok",
           A == 8 ? "pfor-2p" : "b6-2p  ", name, (unsigned long long)n, (double)pk.bytes / (2.0 * (double)n),
           100.0 * (double)pk.n_exc / (double)n, 100.0 * (double)pk.n_far / (double)n);
    if (bad)
        printf("  %llu wrong, first at %llu: %04x for %04x", (unsigned long long)bad, (unsigned long long)first,
               d[first], v[first]);
    if (c2_emu_misaligned || c2_emu_signsel)
        printf("  misaligned loads %d, sign-replicating permutes %d", c2_emu_misaligned, c2_emu_signsel);
    printf("\n");
    failures += !ok;
    c2_emu_misaligned = c2_emu_signsel = 0;
    free(d);
    free(pk.buf);
    return pk.bytes;
}

/* The fused GEMV's tiles of a rows x k matrix, replayed for both codes. */
static void check_tiles(const char *name, const uint16_t *v, uint64_t rows, uint64_t k)
{
    const int rb = c2_rows_per_block((int)k);
    for (uint32_t A = 8; A >= 6; A -= 2) {
        c2_packed pk;
        if (c2_encode(v, rows * k, A, &pk)) {
            printf("not ok - %s: encode failed\n", name);
            failures++;
            continue;
        }
        const uint64_t bad = c2_replay_tiles(&pk, v, rows, k, rb);
        const int ok = !bad && !c2_emu_misaligned && !c2_emu_signsel;
        printf("%s - %s fused tiles of %d rows, %-13s %llu wrong or stray, misaligned %d\n", ok ? "ok" : "not ok",
               A == 8 ? "pfor-2p" : "b6-2p  ", rb, name, (unsigned long long)bad, c2_emu_misaligned);
        failures += !ok;
        c2_emu_misaligned = c2_emu_signsel = 0;
        free(pk.buf);
    }
}

/* Each FILE: one matrix as raw little-endian bf16 values (codec2_candidates.py
 * --dump DIR writes SmolLM2's); round-tripped with both codes, then the ratio
 * of all of them together. */
static int check_files(int nf, char **files)
{
    for (int i = 0; i < nf; i++) {
        FILE *f = fopen(files[i], "rb");
        if (!f) {
            fprintf(stderr, "codec2_roundtrip: cannot open %s\n", files[i]);
            return 2;
        }
        fseek(f, 0, SEEK_END);
        const long bytes = ftell(f);
        fseek(f, 0, SEEK_SET);
        if (bytes <= 0 || bytes % 16) {
            fprintf(stderr, "codec2_roundtrip: %s: %ld bytes: not a positive multiple of 8 bf16 values\n", files[i],
                    bytes);
            fclose(f);
            return 2;
        }
        uint16_t *v = malloc((size_t)bytes);
        const size_t got = fread(v, 1, (size_t)bytes, f);
        fclose(f);
        if (got != (size_t)bytes) {
            fprintf(stderr, "codec2_roundtrip: %s: short read\n", files[i]);
            free(v);
            return 2;
        }
        const char *base = strrchr(files[i], '/');
        check(base ? base + 1 : files[i], v, (uint64_t)bytes / 2);
        free(v);
    }
    printf("all %d files, %llu elements: pfor-2p ratio %.4f, b6-2p ratio %.4f\n", nf, (unsigned long long)total_n,
           (double)total_bytes[0] / (2.0 * (double)total_n), (double)total_bytes[1] / (2.0 * (double)total_n));
    printf("%s: %d failed\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc > 1) return check_files(argc - 1, argv + 1);
    const uint64_t big = 11008ull * 4096;
    uint16_t *v = malloc(big * sizeof *v);
    for (uint64_t i = 0; i < 65536; i++) v[i] = (uint16_t)i;
    check("every bf16 bit pattern", v, 65536);
    for (uint64_t i = 0; i < 65536; i++) v[i] = (uint16_t)(rnd() >> 7); /* patterns shuffled: exceptions everywhere */
    check("random bit patterns", v, 65536);
    for (uint64_t i = 0; i < 4096; i++) v[i] = 0x3f80;
    check("all equal (1.0)", v, 4096);
    for (uint64_t i = 0; i < 4096; i++) v[i] = 0x8000;
    check("all -0", v, 4096);
    const uint16_t special[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7fc1,
                                0xffff, 0x7f81, 0x0001, 0x807f, 0x0080, 0x7f7f};
    for (uint64_t i = 0; i < 8192; i++) v[i] = i % 3 ? special[rnd() % 12] : 0x3c00;
    check("NaN payloads, inf, subnormals, 0", v, 8192);
    for (uint64_t i = 0; i < 256 * 1024; i++) v[i] = (uint16_t)(((i % 256) << 7) | (rnd() & 0x807f));
    check("every exponent, each block", v, 256 * 1024);
    for (uint64_t i = 0; i < 8192; i++) v[i] = (uint16_t)((((rnd() % 16) + 100) << 7) | (rnd() & 0x807f));
    check("16 exponents: half exceptions", v, 8192);
    for (uint64_t i = 0; i < 3072; i++) v[i] = (uint16_t)(((i < 1024 ? 120 : (rnd() % 256)) << 7) | (rnd() & 0x807f));
    check("a block of one exponent, then far", v, 3072);
    trained(v, 1, 8);
    check("one lane (n = 8)", v, 8);
    trained(v, 37, 24);
    check("37x24 (not whole blocks)", v, 37 * 24);
    trained(v, 3, 776);
    check("3x776", v, 3 * 776);
    trained(v, 576, 1536);
    check("trained-like 576x1536", v, 576 * 1536);
    trained(v, 4096, 4096);
    check("trained-like 4096x4096", v, 4096 * 4096);
    trained(v, 11008, 4096);
    check("trained-like 11008x4096", v, big);
    check_tiles("11008x4096", v, 11008, 4096);
    trained(v, 4096, 11008);
    check_tiles("4096x11008", v, 4096, 11008);
    trained(v, 64, 4104);
    check_tiles("64x4104", v, 64, 4104);
    trained(v, 16, 776);
    check_tiles("16x776", v, 16, 776);
    for (uint64_t i = 0; i < 64 * 4104; i++) v[i] = (uint16_t)(((rnd() % 24 + 100) << 7) | (rnd() & 0x807f));
    check_tiles("64x4104 exc.", v, 64, 4104);
    free(v);
    printf("%s: %d failed\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
