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
 * Exit status 0 when every case round-trips with no misaligned load and no
 * sign-replicating permute. Bench tool only: not part of the runtime. */
#include "codec2_encode.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- decode: the warps replayed */

/* Block b as one warp decodes it: 4 groups of 32 lanes, then the patch
 * passes, lane j of a pass taking exception base + j, the far ones placed
 * by a ballot's prefix count (what __ballot_sync and __popc do on the GPU). */
static void c2_decode_block(const uint8_t *P, const c2_layout *L, uint64_t b, uint16_t *out)
{
    for (uint32_t g = 0; g < 4; g++)
        for (uint32_t lane = 0; lane < 32; lane++) {
            const uint64_t ln = b * (C2_BLOCK / 8) + g * 32 + lane;
            if (8 * ln >= L->n) continue;
            uint32_t w[4];
            const c2_lane_at a = c2_lane_base(P, L, L->base, b, lane);
            if (L->base == 8)
                c2_lane_decode(&a, g, L, w);
            else
                c2_lane_decode6(&a, g, L, w);
            for (int i = 0; i < 4; i++) out[8 * ln + 2 * i] = (uint16_t)w[i], out[8 * ln + 2 * i + 1] = (uint16_t)(w[i] >> 16);
        }
    const c2_block B = c2_block_at(P, L, L->base, b);
    uint32_t run = 0;
    for (uint32_t base = 0; base < B.count; base += 32) {
        uint32_t pos[32], code[32], ballot = 0;
        for (uint32_t lane = 0; lane < 32; lane++) {
            if (base + lane >= B.count) continue;
            pos[lane] = c2_exc_pos(&B, base + lane);
            code[lane] = L->base == 8 ? c2_code_at3(&B, pos[lane]) : c2_code_at6(&B, pos[lane]);
            if (code[lane] == L->base - 1) ballot |= 1u << lane;
        }
        for (uint32_t lane = 0; lane < 32; lane++) {
            if (base + lane >= B.count) continue;
            const uint32_t fi = run + (uint32_t)__builtin_popcount(ballot & ((1u << lane) - 1));
            const uint32_t e = code[lane] == L->base - 1 ? c2_ld8(B.far + fi) : c2_near_exp(L, code[lane]);
            uint16_t *o = out + b * C2_BLOCK + pos[lane];
            *o = (uint16_t)c2_with_exp(*o, e);
        }
        run += (uint32_t)__builtin_popcount(ballot);
    }
}

/* ---------------------------------------------------------------- cases */

static int failures;

/* Encode with A = 8 and A = 6, decode with the replay, compare; print the ratios. */
static void check1(const char *name, const uint16_t *v, uint64_t n, uint32_t A);
static void check(const char *name, const uint16_t *v, uint64_t n)
{
    check1(name, v, n, 8);
    check1(name, v, n, 6);
}

static void check1(const char *name, const uint16_t *v, uint64_t n, uint32_t A)
{
    c2_packed pk;
    if (c2_encode(v, n, A, &pk)) {
        printf("not ok - %s: encode failed\n", name);
        failures++;
        return;
    }
    uint16_t *d = malloc(n * sizeof *d);
    for (uint64_t i = 0; i < n; i++) d[i] = (uint16_t)~v[i]; /* garbage: every value must be written */
    const uint64_t nb = (n + C2_BLOCK - 1) / C2_BLOCK;
    for (uint64_t b = 0; b < nb; b++) c2_decode_block(pk.buf, &pk.lay, b, d);
    uint64_t bad = 0, first = 0;
    for (uint64_t i = 0; i < n; i++)
        if (d[i] != v[i] && !bad++) first = i;
    const int ok = !bad && !c2_emu_misaligned && !c2_emu_signsel;
    printf("%s - %s %-34s n %9llu  ratio %.4f  exceptions %.3f%%  far %.4f%%", ok ? "ok" : "not ok", A == 8 ? "pfor-2p" : "b6-2p  ", name,
           (unsigned long long)n, (double)pk.bytes / (2.0 * (double)n), 100.0 * (double)pk.n_exc / (double)n,
           100.0 * (double)pk.n_far / (double)n);
    if (bad) printf("  %llu wrong, first at %llu: %04x for %04x", (unsigned long long)bad, (unsigned long long)first, d[first], v[first]);
    if (c2_emu_misaligned || c2_emu_signsel) printf("  misaligned loads %d, sign-replicating permutes %d", c2_emu_misaligned, c2_emu_signsel);
    printf("\n");
    failures += !ok;
    c2_emu_misaligned = c2_emu_signsel = 0;
    free(d);
    free(pk.buf);
}

int main(void)
{
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
    const uint16_t special[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7fc1, 0xffff, 0x7f81, 0x0001, 0x807f, 0x0080, 0x7f7f};
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
    free(v);
    printf("%s: %d failed\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
