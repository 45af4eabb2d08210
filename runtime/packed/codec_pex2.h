/* codec_pex2.h — PEX2, the fixed-width lossless code of bf16 weights
 * ("pfor-2p" of the session-14 study, docs/packed.md "The codec PEX2").
 *
 * Every element has a 3-bit code. An ordinary element's exponent is
 * book1[code] (the tensor's 8 most frequent exponents); an exception's is
 * book2[code] (the next 7) or, where code is 7, a byte of the far stream.
 * Exceptions are listed by position, so 8 elements decode from their index
 * alone (no prefix count, no escape symbol) and a block's few exceptions are
 * patched after (PFOR-style): a GPU lane decodes 8 elements with one 3-byte
 * load and four byte permutes (tests/bench/codec2_lane.h, the prototype).
 *
 * bf16 only, n a positive multiple of 8 below 2^32 (32-bit superblock bases):
 * f16 and every other tensor stay PEX1 (codec.h). The bytes are the
 * prototype's (tests/bench/codec2_encode.h, A = 8) but for the magic, the
 * dtype number and the table, which is smaller here (superblock bases and
 * 16-bit offsets, not 32-bit firsts): the same entries, read another way.
 *
 * Layout of one tensor of n elements, nb = ceil(n / 1024) blocks, every
 * field little-endian, align16(x) = x rounded up to a multiple of 16, every
 * gap zero:
 *   header  32 bytes   "PEX2", u32 dtype (LRUN_DTYPE_BF16), u64 n,
 *                      u8 book1[8] (distinct), u8 book2[8] (book2[0..6]
 *                      distinct and not in book1, book2[7] = 0)
 *   rest    n bytes    at 32: sign << 7 | mantissa, element order
 *   code    3n/8 bytes at align16(32 + n): element i's code at bit 3i
 *           (8 elements = 3 bytes); then 8 zero bytes (a lane's second
 *           word), zeros to a multiple of 16
 *   table   (nb+1) x 8 at align16(code + 3n/8 + 8): per block, u16 exc
 *           offset, u16 far offset (its first exception and first far byte,
 *           from its superblock's bases), u32 ends: the cumulative
 *           exceptions of the block's groups 0, 1, 2 of 256 elements, 10 bits
 *           each (bits 30-31 zero); entry nb: the totals' offsets, ends 0
 *   super   ceil((nb+1) / 64) x 8 at table + 8(nb+1): per superblock of
 *           64 entries (65536 elements), u32 exc base, u32 far base: entry
 *           64s's first exception and first far byte (so its offsets are 0)
 *   Block b's first exception is super[b / 64].exc + its exc offset, its
 *   first far byte likewise; its exception count is block b + 1's first
 *   less its own. An offset is at most 63 blocks' elements (64512), so
 *   u16 holds it. The table was 12 bytes a block (u32 firsts) before
 *   packed file version 2: 8 + 8/64 bytes per 1024 elements is 0.0040 of
 *   the plain bytes, not 0.0059.
 *   exc     n_exc      per exception, its position in its group, ascending
 *   far     n_far      per exception with code 7, its exponent (in neither book)
 *   zeros to align16: the tensor's size.
 */
#ifndef LRUN_PACKED_CODEC_PEX2_H
#define LRUN_PACKED_CODEC_PEX2_H

#include "lrun.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LRUN_PEX2_MAGIC 0x32584550u /* "PEX2": the first 4 bytes */
#define LRUN_PEX2_HEADER 32         /* bytes */
#define LRUN_PEX2_BLOCK 1024        /* elements per table entry (a GPU warp's unit) */
#define LRUN_PEX2_GROUP 256         /* elements per group (32 lanes of 8) */
#define LRUN_PEX2_TABLE_ENTRY 8     /* bytes of a block's table entry */
#define LRUN_PEX2_SUPER 64          /* table entries per superblock entry (u16 offsets reach 64 blocks) */
#define LRUN_PEX2_SUPER_ENTRY 8     /* bytes of a superblock entry */
#define LRUN_PEX2_CODES 8           /* book1 entries; book2 has 7, code 7 = far */

/* A little-endian u32 (u16) of the table or header, at any alignment. */
static inline uint32_t lrun_pex2_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint32_t lrun_pex2_u16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }

/* Where each section is, from the tensor's first byte (bytes), and its codebooks. */
typedef struct lrun_pex2_layout {
    uint64_t n;                         /* elements */
    uint64_t nb;                        /* blocks of LRUN_PEX2_BLOCK */
    uint64_t n_exc, n_far;              /* exceptions, of which far */
    size_t rest, code, table, super;    /* section offsets */
    size_t exc, far;                    /* section offsets */
    size_t total;                       /* bytes of the whole tensor */
    uint8_t book1[LRUN_PEX2_CODES];     /* exponent of each ordinary code */
    uint8_t book2[LRUN_PEX2_CODES];     /* exponent of each exception code 0..6 (7: far) */
} lrun_pex2_layout;

/* Block b's first exception (index into the exc section) and first far
 * byte (into far) of a validated tensor P, b <= nb (entry nb: the totals):
 * its superblock's bases plus its offsets. The sums cannot wrap: validation
 * checked every first against the totals, below 2^32. */
static inline uint32_t lrun_pex2_first_exc(const uint8_t *P, const lrun_pex2_layout *lay, uint64_t b)
{
    return lrun_pex2_u32(P + lay->super + LRUN_PEX2_SUPER_ENTRY * (b / LRUN_PEX2_SUPER)) +
           lrun_pex2_u16(P + lay->table + LRUN_PEX2_TABLE_ENTRY * b);
}
static inline uint32_t lrun_pex2_first_far(const uint8_t *P, const lrun_pex2_layout *lay, uint64_t b)
{
    return lrun_pex2_u32(P + lay->super + LRUN_PEX2_SUPER_ENTRY * (b / LRUN_PEX2_SUPER) + 4) +
           lrun_pex2_u16(P + lay->table + LRUN_PEX2_TABLE_ENTRY * b + 2);
}
/* Block b's group ends (b <= nb; entry nb's are 0): the cumulative
 * exceptions of its groups 0, 1, 2, 10 bits each. */
static inline uint32_t lrun_pex2_ends(const uint8_t *P, const lrun_pex2_layout *lay, uint64_t b)
{
    return lrun_pex2_u32(P + lay->table + LRUN_PEX2_TABLE_ENTRY * b + 4);
}

/* What the table says of block b < nb: its exceptions and far bytes. */
typedef struct lrun_pex2_block {
    uint32_t exc, count;     /* its exceptions: [exc, exc + count) of the exc section */
    uint32_t far, far_count; /* its far bytes: [far, far + far_count) of the far section */
    uint32_t ends;           /* cumulative exceptions of its groups 0, 1, 2: 10 bits each */
} lrun_pex2_block;

/* Block b of a validated tensor P: its counts are the next block's firsts
 * less its own. Inlined, the fields a caller leaves unread cost no load. */
static inline lrun_pex2_block lrun_pex2_block_at(const uint8_t *P, const lrun_pex2_layout *lay, uint64_t b)
{
    lrun_pex2_block r;
    r.exc = lrun_pex2_first_exc(P, lay, b);
    r.far = lrun_pex2_first_far(P, lay, b);
    r.ends = lrun_pex2_ends(P, lay, b);
    r.count = lrun_pex2_first_exc(P, lay, b + 1) - r.exc;
    r.far_count = lrun_pex2_first_far(P, lay, b + 1) - r.far;
    return r;
}

/* 1 when PEX2 can hold n values of dtype (bf16, n a positive multiple of 8 below 2^32). */
int lrun_pex2_fits(int dtype, uint64_t n);

/* Upper bound of the size of n elements (every exponent far); 0 when it does not fit. */
size_t lrun_pex2_bound(uint64_t n);

/* Encodes src (n bf16 values) into dst (cap bytes, at least
 * lrun_pex2_bound(n)); *out_bytes its size. pool (may be NULL) runs the
 * histogram and the blocks' passes in parallel. */
struct lrun_threadpool;
lrun_status lrun_pex2_encode(void *dst, size_t cap, size_t *out_bytes, const uint16_t *src, uint64_t n,
                             struct lrun_threadpool *pool);

/* The layout lrun_pex2_encode would give src (n bf16 values, n as for the
 * encoder), lay->total its size in bytes, from the exponent histogram alone:
 * one read of src, nothing encoded (the same codebook choice as the
 * encoder's, so the same bytes count). Every field is what
 * lrun_pex2_validate reads from the encoded tensor. pool (may be NULL) runs
 * the histogram in parallel. */
lrun_status lrun_pex2_measure(lrun_pex2_layout *lay, const uint16_t *src, uint64_t n, struct lrun_threadpool *pool);

/* Checks a PEX2 tensor of size bytes completely (header, codebooks, size,
 * padding, table, every exception's position, every far byte) and fills
 * *lay; what names it in errors. pool (may be NULL) checks the blocks in parallel. */
lrun_status lrun_pex2_validate(lrun_pex2_layout *lay, const void *src, size_t size, const char *what,
                               struct lrun_threadpool *pool);

/* Decodes elements [first, first + count) of a validated tensor into dst
 * (whole lanes at the host kernel level: AVX-512 VBMI or AVX2 where the
 * build and CPU have it and LRUN_CPU_ISA allows, codec_pex2_avx512.c and
 * codec_pex2_avx2.c; the same bits at every level). */
void lrun_pex2_decode_range(uint16_t *dst, const void *src, const lrun_pex2_layout *lay, uint64_t first,
                            uint64_t count);

/* n_lanes whole lanes of 8 ordinary elements (the exceptions not patched):
 * dst, rest at the first lane's first element, code at its 3 bytes, hi[c]
 * book1[c] << 7. The scalar loop, AVX2's where the build has it, and
 * AVX-512 VBMI's (codec_pex2_avx512.c) on x86-64 builds, run only where
 * lrun_pex2_avx512_supported(). */
void lrun_pex2_lanes_scalar(uint16_t *dst, const uint8_t *rest, const uint8_t *code, const uint16_t hi[8],
                            uint64_t n_lanes);
void lrun_pex2_lanes_avx2(uint16_t *dst, const uint8_t *rest, const uint8_t *code, const uint16_t hi[8],
                          uint64_t n_lanes);
void lrun_pex2_lanes_avx512(uint16_t *dst, const uint8_t *rest, const uint8_t *code, const uint16_t hi[8],
                            uint64_t n_lanes);
/* Whole blocks [b0, b1) of a validated tensor into dst (element
 * b0 * LRUN_PEX2_BLOCK at dst[0]), exceptions included: each 64 elements'
 * exceptions as a mask, their book2 exponents blended into the permutes
 * (code 7's far bytes put in after). AVX-512 VBMI (codec_pex2_avx512.c),
 * only where lrun_pex2_avx512_supported(). */
void lrun_pex2_blocks_avx512(uint16_t *dst, const void *src, const lrun_pex2_layout *lay, uint64_t b0, uint64_t b1);
/* 1 where the CPU has AVX-512 F, BW and VBMI (decided once). */
int lrun_pex2_avx512_supported(void);

/* y[r] = row row0 + r of a PEX2 weight of rows of k · x (k), r < rows,
 * decoded in registers (pex2_gemv_avx512.c): the bits of the plain bf16
 * product at the avx512 kernel level (lrun_cpu_matmul with m = 1). Only
 * where lrun_pex2_gemv_fits(k) (k a positive multiple of 64; 0 in a build
 * without AVX-512) and lrun_pex2_avx512_supported(). */
int lrun_pex2_gemv_fits(int64_t k);
void lrun_pex2_gemv_avx512(const void *src, const lrun_pex2_layout *lay, int64_t k, int64_t row0, int64_t rows,
                           const float *x, float *y);

#endif
