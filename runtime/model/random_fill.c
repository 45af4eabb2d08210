/* random_fill.c — reproducible random tensor contents for generated models.
 *
 * Element i of a stream keyed by seed is a pure function of (seed, i): pair
 * p = i/2 hashes to 32 bits, h = fmix32(p * 0x9e3779b9 + k) with k derived
 * from the seed (and from p's high 32 bits), and element i takes the low or
 * high 16 bits as u in [0, 65536); the value is (u - 32767.5) * (scale /
 * 32768), uniform in (-scale, scale): one rounding, so the AVX2 and scalar
 * paths give the same bits. So any range of a tensor can be filled on
 * any thread, and the same seed gives the same values in every dtype (only
 * the final encoding differs): a bf16 model and a q4_0 model made with one
 * seed are the same model up to quantization. 32-bit lanes let the compiler
 * vectorize the hash (a 64-bit mixer per element ran at ~1 GB/s of bf16 per
 * core; the generator is meant to keep up with a disk).
 */
#include "core/error.h"
#include "lrun.h"
#include "model/random_fill.h"
#include "quant/quant.h"

#include <math.h>
#include <string.h>
#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#define FILL_TILE 4096 /* f32 values staged per encode call: a multiple of every block size */

// ---------------------------------------------------------------- the generator

static inline uint64_t mix64(uint64_t z)
{
    /* splitmix64's finalizer (Steele, Lea, Flood 2014) */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint32_t fmix32(uint32_t h)
{
    /* MurmurHash3's finalizer: every input bit reaches every output bit */
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    return h ^ (h >> 16);
}

/* The 32-bit key of pairs whose index has high word hi. */
static inline uint32_t pair_key(uint64_t key, uint64_t hi) { return (uint32_t)mix64(key ^ (hi * 0x9e3779b97f4a7c15ull)); }

static inline float value_of(uint32_t u, float mul) { return ((float)u - 32767.5f) * mul; }

/* dst (2 np) = the values of pairs lo .. lo+np-1 (same high word, key k). */
static void fill_pairs(float *restrict dst, uint32_t lo, size_t np, uint32_t k, float mul)
{
    size_t j = 0;
#ifdef __AVX2__
    const __m256i vk = _mm256_set1_epi32((int)k), gold = _mm256_set1_epi32((int)0x9e3779b9u),
                  c1 = _mm256_set1_epi32((int)0x85ebca6bu), c2 = _mm256_set1_epi32((int)0xc2b2ae35u),
                  low16 = _mm256_set1_epi32(0xffff), step = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 vmul = _mm256_set1_ps(mul), mid = _mm256_set1_ps(32767.5f);
    for (; j + 8 <= np; j += 8) {
        __m256i h = _mm256_add_epi32(_mm256_set1_epi32((int)(lo + (uint32_t)j)), step);
        h = _mm256_add_epi32(_mm256_mullo_epi32(h, gold), vk);
        h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
        h = _mm256_mullo_epi32(h, c1);
        h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13));
        h = _mm256_mullo_epi32(h, c2);
        h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
        __m256 a = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(h, low16)), mid), vmul);
        __m256 b = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(h, 16)), mid), vmul);
        /* interleave: element 2j is pair j's low half, 2j+1 its high half */
        __m256 x = _mm256_unpacklo_ps(a, b), y = _mm256_unpackhi_ps(a, b);
        _mm256_storeu_ps(dst + 2 * j, _mm256_permute2f128_ps(x, y, 0x20));
        _mm256_storeu_ps(dst + 2 * j + 8, _mm256_permute2f128_ps(x, y, 0x31));
    }
#endif
    for (; j < np; j++) {
        uint32_t h = fmix32((lo + (uint32_t)j) * 0x9e3779b9u + k);
        dst[2 * j] = value_of(h & 0xffff, mul);
        dst[2 * j + 1] = value_of(h >> 16, mul);
    }
}

/* dst (n) = values first .. first+n-1 of the stream keyed by key. */
static void fill_f32(float *restrict dst, int64_t first, int64_t n, float scale, uint64_t key)
{
    const float mul = scale / 32768.0f;
    uint64_t i = (uint64_t)first, end = (uint64_t)(first + n);
    if ((i & 1) && i < end) { /* odd start: the high half of a pair */
        uint64_t p = i >> 1;
        *dst++ = value_of(fmix32((uint32_t)p * 0x9e3779b9u + pair_key(key, p >> 32)) >> 16, mul);
        i++;
    }
    while (i + 2 <= end) {
        /* a run of whole pairs sharing one high word */
        uint64_t p0 = i >> 1, p1 = end >> 1;
        if ((p1 - 1) >> 32 != p0 >> 32) p1 = ((p0 >> 32) + 1) << 32;
        const size_t np = (size_t)(p1 - p0);
        fill_pairs(dst, (uint32_t)p0, np, pair_key(key, p0 >> 32), mul);
        dst += 2 * np;
        i += 2 * np;
    }
    if (i < end) { /* odd end: the low half of a pair */
        uint64_t p = i >> 1;
        *dst = value_of(fmix32((uint32_t)p * 0x9e3779b9u + pair_key(key, p >> 32)) & 0xffff, mul);
    }
}

/* dst (n) = bf16 of src, round to nearest even (values here are finite). */
static void to_bf16(uint16_t *restrict dst, const float *restrict src, int64_t n)
{
    int64_t j = 0;
#ifdef __AVX2__
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    for (; j + 16 <= n; j += 16) {
        __m256i a = _mm256_castps_si256(_mm256_loadu_ps(src + j)), b = _mm256_castps_si256(_mm256_loadu_ps(src + j + 8));
        a = _mm256_srli_epi32(_mm256_add_epi32(a, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(a, 16), one))), 16);
        b = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(b, 16), one))), 16);
        /* packus works within 128-bit lanes: put the quarters back in order */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(dst + j), p);
    }
#endif
    for (; j < n; j++) {
        uint32_t u;
        memcpy(&u, &src[j], sizeof u);
        dst[j] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
    }
}

static void to_f16(uint16_t *restrict dst, const float *restrict src, int64_t n)
{
    int64_t j = 0;
#ifdef __F16C__
    for (; j + 8 <= n; j += 8)
        _mm_storeu_si128((__m128i *)(dst + j), _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; j < n; j++) dst[j] = lrun_f32_to_f16(src[j]);
}

// ---------------------------------------------------------------- trained-like values (synthetic)

/* dst (n) = values first .. first+n-1 of a normal stream of deviation std,
 * with about one element in 1024 an outlier 8..15 times larger: the shape of
 * trained weights (per-tensor normal scales, a few large values per row),
 * for the packed codec's ratio. Synthetic: not a real checkpoint. */
static void fill_trained_f32(float *restrict dst, int64_t first, int64_t n, float std, uint64_t key)
{
    for (int64_t j = 0; j < n; j++) {
        const uint64_t z = mix64(key ^ ((uint64_t)(first + j) * 0x9e3779b97f4a7c15ull));
        const double u1 = ((double)(z >> 40) + 0.5) / 16777216.0, u2 = (double)((z >> 16) & 0xffffff) / 16777216.0;
        double v = (double)std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        if ((z & 0x3ff) == 0) v *= (double)(8 + ((z >> 10) & 7));
        dst[j] = (float)v;
    }
}

// ---------------------------------------------------------------- entry points

typedef void (*fill_fn)(float *restrict dst, int64_t first, int64_t n, float scale, uint64_t key);

static lrun_status check_args(const char *fn, lrun_dtype dtype, const void *dst, int64_t first, int64_t n, float scale)
{
    if (!lrun_dtype_is_supported((int)dtype))
        return lrun_fail(LRUN_E_ARG, "%s: dtype id %d is not a weight type", fn, (int)dtype);
    int64_t block = lrun_dtype_block_elems(dtype);
    if (first < 0 || n < 0 || first % block != 0 || n % block != 0 || first > INT64_MAX - n)
        return lrun_fail(LRUN_E_ARG, "%s: first %lld and n %lld must be whole %s blocks of %lld", fn,
                         (long long)first, (long long)n, lrun_dtype_name(dtype), (long long)block);
    if (n > 0 && !dst) return lrun_fail(LRUN_E_ARG, "%s: dst is NULL", fn);
    if (!(scale >= 0.0f) || scale > 1e30f)
        return lrun_fail(LRUN_E_ARG, "%s: scale %g must be finite and >= 0", fn, (double)scale);
    return LRUN_OK;
}

/* Values of fill, staged FILL_TILE at a time and encoded to dtype. */
static lrun_status fill_encode(fill_fn fill, lrun_dtype dtype, void *dst, int64_t first, int64_t n, float scale, uint64_t key)
{
    if (dtype == LRUN_DTYPE_F32) {
        fill(dst, first, n, scale, key);
        return LRUN_OK;
    }
    float tile[FILL_TILE];          /* (FILL_TILE) staged values */
    const int64_t block = lrun_dtype_block_elems(dtype);
    const size_t tile_bytes = (size_t)(FILL_TILE / block) * lrun_dtype_block_bytes(dtype);
    uint8_t *out = dst;
    for (int64_t done = 0; done < n; done += FILL_TILE) {
        int64_t k = n - done < FILL_TILE ? n - done : FILL_TILE;
        fill(tile, first + done, k, scale, key);
        if (dtype == LRUN_DTYPE_BF16) {
            to_bf16((uint16_t *)out, tile, k);
        } else if (dtype == LRUN_DTYPE_F16) {
            to_f16((uint16_t *)out, tile, k);
        } else {
            lrun_status st = lrun_dtype_from_f32(dtype, tile, out, k);
            if (st != LRUN_OK) return st;
        }
        out += tile_bytes; /* only the last tile can be short */
    }
    return LRUN_OK;
}

lrun_status lrun_random_fill(lrun_dtype dtype, void *dst, int64_t first, int64_t n, float scale, uint64_t seed)
{
    lrun_status st = check_args("lrun_random_fill", dtype, dst, first, n, scale);
    if (st != LRUN_OK) return st;
    const uint64_t key = mix64(seed ^ 0x6c72756e2d726e67ull); /* "lrun-rng": seed 0 is not special */
    return fill_encode(fill_f32, dtype, dst, first, n, scale, key);
}

lrun_status lrun_random_fill_trained(lrun_dtype dtype, void *dst, int64_t first, int64_t n, float std, uint64_t seed)
{
    lrun_status st = check_args("lrun_random_fill_trained", dtype, dst, first, n, std);
    if (st != LRUN_OK) return st;
    return fill_encode(fill_trained_f32, dtype, dst, first, n, std, mix64(seed ^ 0x747261696e6564ull)); /* "trained" */
}
