/* random_fill.c — reproducible random tensor contents for generated models.
 *
 * Element i of a stream keyed by seed is a pure function of (seed, i): the
 * 64-bit splitmix64 output at counter i/4 gives four 16-bit lanes, lane i%4
 * becomes u in [0, 65536) and the value is ((u + 0.5) / 32768 - 1) * scale,
 * uniform in (-scale, scale). So any range of a tensor can be filled on any
 * thread, and the same seed gives the same values in every dtype (only the
 * final encoding differs): a bf16 model and a q4_0 model made with one seed
 * are the same model up to quantization.
 */
#include "error.h"
#include "lrun.h"

#include <string.h>

#define FILL_TILE 4096 /* f32 values staged per encode call: a multiple of every block size */

// ---------------------------------------------------------------- the generator

static inline uint64_t mix64(uint64_t z)
{
    /* splitmix64's finalizer (Steele, Lea, Flood 2014) */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#define GOLDEN 0x9e3779b97f4a7c15ull

/* dst (n) = values first .. first+n-1 of the stream keyed by key. */
static void fill_f32(float *dst, int64_t first, int64_t n, float scale, uint64_t key)
{
    const float mul = scale / 32768.0f, add = scale * (0.5f / 32768.0f - 1.0f);
    int64_t i = first, end = first + n;
    /* the unaligned head, one lane at a time */
    for (; i < end && (i & 3) != 0; i++) {
        uint64_t r = mix64(key + (uint64_t)(i >> 2) * GOLDEN);
        *dst++ = (float)((r >> (16 * (i & 3))) & 0xffff) * mul + add;
    }
    for (; i + 4 <= end; i += 4) {
        uint64_t r = mix64(key + (uint64_t)(i >> 2) * GOLDEN);
        dst[0] = (float)(r & 0xffff) * mul + add;
        dst[1] = (float)((r >> 16) & 0xffff) * mul + add;
        dst[2] = (float)((r >> 32) & 0xffff) * mul + add;
        dst[3] = (float)(r >> 48) * mul + add;
        dst += 4;
    }
    for (; i < end; i++) {
        uint64_t r = mix64(key + (uint64_t)(i >> 2) * GOLDEN);
        *dst++ = (float)((r >> (16 * (i & 3))) & 0xffff) * mul + add;
    }
}

static inline uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fff + ((u >> 16) & 1); /* round to nearest even; values here are finite */
    return (uint16_t)(u >> 16);
}

// ---------------------------------------------------------------- entry point

lrun_status lrun_random_fill(lrun_dtype dtype, void *dst, int64_t first, int64_t n, float scale, uint64_t seed)
{
    if (!lrun_dtype_is_supported((int)dtype))
        return lrun_fail(LRUN_E_ARG, "lrun_random_fill: dtype id %d is not a weight type", (int)dtype);
    int64_t block = lrun_dtype_block_elems(dtype);
    if (first < 0 || n < 0 || first % block != 0 || n % block != 0 || first > INT64_MAX - n)
        return lrun_fail(LRUN_E_ARG, "lrun_random_fill: first %lld and n %lld must be whole %s blocks of %lld",
                         (long long)first, (long long)n, lrun_dtype_name(dtype), (long long)block);
    if (n > 0 && !dst) return lrun_fail(LRUN_E_ARG, "lrun_random_fill: dst is NULL");
    if (!(scale >= 0.0f) || scale > 1e30f)
        return lrun_fail(LRUN_E_ARG, "lrun_random_fill: scale %g must be finite and >= 0", (double)scale);
    const uint64_t key = mix64(seed ^ 0x6c72756e2d726e67ull); /* "lrun-rng": seed 0 is not special */

    if (dtype == LRUN_DTYPE_F32) {
        fill_f32(dst, first, n, scale, key);
        return LRUN_OK;
    }
    float tile[FILL_TILE];          /* (FILL_TILE) staged values */
    const size_t tile_bytes = (size_t)(FILL_TILE / block) * lrun_dtype_block_bytes(dtype);
    uint8_t *out = dst;
    for (int64_t done = 0; done < n; done += FILL_TILE) {
        int64_t k = n - done < FILL_TILE ? n - done : FILL_TILE;
        fill_f32(tile, first + done, k, scale, key);
        if (dtype == LRUN_DTYPE_BF16) {
            uint16_t *h = (uint16_t *)out;
            for (int64_t j = 0; j < k; j++) h[j] = to_bf16(tile[j]);
        } else {
            lrun_status st = lrun_dtype_from_f32(dtype, tile, out, k);
            if (st != LRUN_OK) return st;
        }
        out += tile_bytes; /* only the last tile can be short */
    }
    return LRUN_OK;
}
