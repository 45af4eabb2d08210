/* test_dequant_split_emu.c — the split-row dequantize (gemv_split.cu,
 * lrun_k_dequantize_split) replayed on the host: the kernel's grid-stride
 * loop over 32-value blocks, thread by thread of a simulated grid, with its
 * 32-bit block index, its division into row and block, and the very block
 * functions the GPU runs (kernels/dequant_split_lane.h). GGUF rows of random
 * bytes (every quant value; f16 scales normal, subnormal, zero and large
 * enough that q·d overflows f16, never inf or NaN, which no weight holds and
 * whose NaN payloads the host and the GPU round differently) are split by
 * lrun_quant_split_rows; the replay's f16 must equal lrun_dequantize_row of
 * the GGUF rows rounded by lrun_f32_to_f16 (lrun_k_dequantize's f16), bit
 * for bit, and must write every value once; with the rows and dst 16-byte
 * aligned (the 16-byte path) every load and store must be, and with a row
 * stride or dst 2 bytes off, ds_vector_ok must send it to the 2-byte path.
 * Q8_0 and Q4_0, odd n, k 32, 96 and 4128, the launcher's grid and a grid
 * of one CUDA block (each thread many blocks, across rows). The GPU runs the
 * same comparison in test_gemv_split_gpu. */
#include "check.h"
#include "dequant_split_lane.h"
#include "quant/quant.h"
#include "quant/quant_split.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* an f16 scale: never inf/NaN; a quarter subnormal or zero, a quarter large */
static uint16_t rnd_scale(void)
{
    const uint32_t v = rnd();
    uint16_t h = (uint16_t)(v & 0x83ff);           /* sign and mantissa */
    uint32_t ex = (v >> 16) % 31;                  /* exponent 0..30 */
    if ((v >> 28) == 0 || (v >> 28) == 1) ex = 0;  /* subnormal or zero */
    if ((v >> 28) == 2) ex = 29 + ((v >> 27) & 1); /* 2^14 .. 2^16: q·d past 65504 */
    return (uint16_t)(h | ex << 10);
}

/* The kernel's block loop for thread tid of threads (gemv_split.cu,
 * dequantize_split_kernel<Q8, VEC, uint32_t>), on host memory. Counts loads
 * and stores off the alignment the path needs in *bad_align and values
 * written into seen[]. */
static void replay_thread(int q8, int vec, const uint8_t *w, size_t row_bytes, uint32_t nb, uint32_t blocks,
                          uint16_t *dst, uint32_t tid, uint32_t threads, uint8_t *seen, int64_t *bad_align)
{
    const int nq = q8 ? 8 : 4;
    const uintptr_t need = vec ? 16 : 2;
    for (uint32_t i = tid; i < blocks; i += threads) {
        const uint32_t r = i / nb, b = i - r * nb;
        const uint8_t *row = w + (size_t)r * row_bytes, *qp = row + ds_quants_at(q8, b),
                      *sp = row + ds_scale_at(q8, nb, b);
        uint32_t q[8], o[16];
        uint16_t h;
        memcpy(q, qp, (size_t)nq * 4);
        memcpy(&h, sp, 2);
        uint16_t *out = dst + 32 * (size_t)i;
        *bad_align += ((uintptr_t)qp % need != 0) + ((uintptr_t)sp % 2 != 0) + ((uintptr_t)out % need != 0);
        if (q8) ds_block_q8(q, ds_f16(h), o);
        else ds_block_q4(q, ds_f16(h), o);
        memcpy(out, o, sizeof o);
        for (int j = 0; j < 32; j++) seen[32 * (size_t)i + (size_t)j]++;
    }
}

/* 64-byte aligned bytes: C11's aligned_alloc takes a size that is a multiple of the alignment (ASan enforces it) */
static void *alloc64(size_t bytes) { return aligned_alloc(64, (bytes + 63) / 64 * 64); }

/* n GGUF rows of k, stride = the row's bytes rounded to 16, plus extra;
 * dst shifted by dshift bytes; threads: the simulated grid's (0: the
 * launcher's, lrun_k_grid(blocks, 256, 65536) CUDA blocks of 256). */
static void check_case(lrun_dtype t, int64_t n, int64_t k, size_t extra, size_t dshift, uint32_t threads)
{
    const int q8 = t == LRUN_DTYPE_Q8_0;
    size_t rb;
    lrun_dtype_row_bytes(t, k, &rb);
    const size_t stride = (rb + 15) / 16 * 16 + extra, bb = q8 ? 34 : 18;
    const int64_t nb = k / 32, blocks = n * nb, vals = n * k;
    uint8_t *g = alloc64((size_t)n * stride + 64), *s = alloc64((size_t)n * stride + 64);
    uint8_t *dbuf = alloc64((size_t)vals * 2 + 64), *seen = calloc((size_t)vals, 1);
    uint16_t *want = malloc((size_t)vals * 2);
    float *f = malloc((size_t)k * sizeof *f);
    for (size_t i = 0; i < (size_t)n * stride; i++) g[i] = (uint8_t)rnd();
    for (int64_t r = 0; r < n; r++)
        for (int64_t b = 0; b < nb; b++) {
            const uint16_t d = rnd_scale();
            memcpy(g + (size_t)r * stride + (size_t)b * bb, &d, 2);
        }
    if (lrun_quant_split_rows(t, g, s, stride, n, k) != LRUN_OK) {
        printf("Bail out! split: %s\n", lrun_last_error());
        exit(1);
    }
    for (int64_t r = 0; r < n; r++) {
        lrun_dequantize_row(t, g + (size_t)r * stride, f, k);
        for (int64_t j = 0; j < k; j++) want[r * k + j] = lrun_f32_to_f16(f[j]);
    }
    uint16_t *dst = (uint16_t *)(dbuf + dshift);
    memset(dst, 0xff, (size_t)vals * 2);
    const int vec = ds_vector_ok(s, stride, dst);
    if (threads == 0) {
        const int64_t cta = (blocks + 255) / 256;
        threads = (uint32_t)(cta < 65536 ? cta : 65536) * 256;
    }
    int64_t bad_align = 0;
    for (uint32_t tid = 0; tid < threads; tid++)
        replay_thread(q8, vec, s, stride, (uint32_t)nb, (uint32_t)blocks, dst, tid, threads, seen, &bad_align);
    int64_t off = 0, not_once = 0;
    for (int64_t i = 0; i < vals; i++) off += dst[i] != want[i], not_once += seen[i] != 1;
    char name[240];
    snprintf(name, sizeof name,
             "%s n %lld k %lld stride %zu dst+%zu, %u threads: %s path, lrun_dequantize_row's f16 bit for bit "
             "(%lld off, %lld not written once)",
             lrun_dtype_name(t), (long long)n, (long long)k, stride, dshift, threads, vec ? "16-byte" : "2-byte",
             (long long)off, (long long)not_once);
    CHECK(name, off == 0 && not_once == 0);
    snprintf(name, sizeof name, "%s n %lld k %lld stride %zu dst+%zu: the %s path (%lld accesses misaligned)",
             lrun_dtype_name(t), (long long)n, (long long)k, stride, dshift, vec ? "16-byte" : "2-byte",
             (long long)bad_align);
    CHECK(name, vec == (extra % 16 == 0 && dshift % 16 == 0) && bad_align == 0);
    free(g), free(s), free(dbuf), free(seen), free(want), free(f);
}

int main(void)
{
    static const int64_t ks[] = {32, 96, 4128};
    for (int ti = 0; ti < 2; ti++) {
        const lrun_dtype t = ti == 0 ? LRUN_DTYPE_Q8_0 : LRUN_DTYPE_Q4_0;
        for (int ki = 0; ki < 3; ki++) {
            check_case(t, 7, ks[ki], 0, 0, 0);    /* the engine's case: 16-byte rows and slot */
            check_case(t, 5, ks[ki], 16, 0, 256); /* padded stride; one CUDA block of threads */
            check_case(t, 3, ks[ki], 2, 0, 0);    /* rows 2 bytes off 16 */
            check_case(t, 3, ks[ki], 0, 2, 96);   /* dst 2 bytes off 16; a stride below the blocks */
        }
        check_case(t, 301, 4128, 0, 0, 0); /* 38829 blocks: the launcher's grid of 152 CUDA blocks */
    }
    return CHECK_DONE();
}
