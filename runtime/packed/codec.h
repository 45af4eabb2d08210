/* codec.h — the lossless codec of bf16 and f16 weights (the "packed" form).
 *
 * A 16-bit float is split into its exponent (bf16: 8 bits, f16: 5 bits),
 * which carries about 2.6 bits of information in trained weights, and the
 * rest (sign and mantissa), kept as it is. The exponent is coded in three
 * tiers per tensor, chosen by measurement (docs/packed.md):
 *   tier 1: a 2-bit code per element: the 3 most frequent exponents, or 3 = "escape";
 *   tier 2: for each escape, a 3-bit code: the next 7 exponents, or 7 = "escape";
 *   tier 3: for each tier-2 escape, the exponent itself, one byte.
 * Elements are grouped in blocks of LRUN_PACKED_BLOCK; a block's tier-2 and
 * tier-3 entries start at offsets a table gives, so every block decodes
 * alone and in parallel (a GPU thread finds its entries with a prefix count).
 *
 * Layout of one packed tensor of n elements, nb = ceil(n / LRUN_PACKED_BLOCK)
 * blocks, every field little-endian, every section starting where the one
 * before ends (no padding):
 *   header   lrun_packed_header (32 bytes)
 *   rest     (n) bytes         bf16: sign << 7 | mantissa; f16: mantissa & 0xff
 *   hi       (ceil(3n/8)) bytes f16 only: 3 bits per element, sign << 2 | mantissa >> 8
 *   code1    (ceil(2n/8)) bytes 2-bit tier-1 codes, element i at bits 2i..2i+1
 *   table    (nb + 1) x 2 u64  block b: byte offsets of its tier-2 codes and tier-3
 *                               bytes in their streams; entry nb holds the totals
 *   code2    (table[nb].code2) bytes: per block, its tier-2 codes (3 bits each,
 *                               LSB first) padded with zero bits to a whole byte
 *   esc      (table[nb].esc) bytes: tier-3 exponents
 * Bit fields are LSB first: field j of width w is bits w*j .. w*j+w-1 of the
 * stream read as one little-endian integer. Blocks are 1024 elements, so
 * every block's code1 and hi fields start on a byte.
 */
#ifndef LRUN_PACKED_CODEC_H
#define LRUN_PACKED_CODEC_H

#include "lrun.h"
#include "packed/codec_pex2.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* kernels/packed_decode.cu reads the layout */
#endif

#define LRUN_PACKED_BLOCK 1024   /* elements per independent block */
#define LRUN_PACKED_MAGIC 0x31584550u /* "PEX1": the first 4 bytes of a packed tensor */
#define LRUN_PACKED_N1 3         /* tier-1 symbols (2-bit codes, 3 = escape) */
#define LRUN_PACKED_N2 7         /* tier-2 symbols (3-bit codes, 7 = escape) */

typedef struct lrun_packed_header {
    uint32_t magic;              /* LRUN_PACKED_MAGIC */
    uint8_t dtype;               /* LRUN_DTYPE_BF16 or LRUN_DTYPE_F16 */
    uint8_t reserved[3];         /* zero */
    uint64_t n;                  /* elements */
    uint8_t book1[LRUN_PACKED_N1]; /* tier-1 exponents, distinct */
    uint8_t book2[LRUN_PACKED_N2]; /* tier-2 exponents, distinct from each other and book1 */
    uint8_t pad[6];              /* zero */
} lrun_packed_header;            /* 32 bytes on the wire */

#define LRUN_PACKED_HEADER_BYTES 32

/* The codec of a packed tensor: a packed file's entry names it, a layout
 * records it (codec_pex2.h: PEX2, bf16 only; the CUDA kernels read both: kernels/packed_pex2.cu). */
enum { LRUN_PACKED_CODEC_RAW = 0, LRUN_PACKED_CODEC_EXP = 1, LRUN_PACKED_CODEC_PEX2 = 2 };

/* Where each section of a packed tensor is, from its first byte (bytes).
 * For a PEX2 tensor (codec LRUN_PACKED_CODEC_PEX2) only dtype, n, total and
 * pex2 are set: the PEX1 sections are 0. */
typedef struct lrun_packed_layout {
    int codec;                   /* LRUN_PACKED_CODEC_EXP (PEX1) or LRUN_PACKED_CODEC_PEX2; 0 before validation */
    int dtype;                   /* LRUN_DTYPE_BF16 or LRUN_DTYPE_F16 */
    uint64_t n;                  /* elements */
    uint64_t nb;                 /* blocks */
    size_t rest, hi, code1, table, code2, esc; /* section offsets */
    size_t code2_bytes, esc_bytes; /* the variable sections' sizes */
    size_t total;                /* bytes of the whole packed tensor */
    uint8_t book1[LRUN_PACKED_N1], book2[LRUN_PACKED_N2]; /* the codebooks, from the header */
    lrun_pex2_layout pex2;                                /* PEX2 only: its sections and codebooks */
} lrun_packed_layout;

/* Is dtype one the codec packs? */
int lrun_packed_dtype_ok(int dtype);

/* Upper bound of the packed size of n elements (every exponent in tier 3). */
size_t lrun_packed_bound(int dtype, uint64_t n);

/* Encodes src (n 16-bit values of dtype) into dst (cap bytes); *out_bytes
 * the packed size. n_threads <= 1 runs on the caller's thread only; pool
 * (may be NULL) runs the block passes in parallel. */
struct lrun_threadpool;
lrun_status lrun_packed_encode(void *dst, size_t cap, size_t *out_bytes, int dtype, const uint16_t *src, uint64_t n,
                               struct lrun_threadpool *pool);

/* The codec a packed tensor's first bytes name (PEX1 or PEX2), 0 for neither. */
int lrun_packed_codec_of(const void *src, size_t size);

/* *lay for a PEX2 tensor of layout *p (validated, or measured:
 * lrun_pex2_measure), as lrun_packed_validate fills it: the PEX1 sections 0. */
void lrun_packed_layout_pex2(lrun_packed_layout *lay, const lrun_pex2_layout *p);

/* The validate and decode functions below take either codec, by its magic
 * (validate) or the layout's codec (decode); encode writes PEX1.
 * Checks a packed tensor of size bytes completely (header, codebooks,
 * table, every block's counts, padding, tier-3 values) and fills *lay.
 * what names it in errors (a tensor name). */
lrun_status lrun_packed_validate(lrun_packed_layout *lay, const void *src, size_t size, const char *what);

/* Decodes elements [first, first + count) of a validated packed tensor into
 * dst (count 16-bit values). Any range decodes alone. */
void lrun_packed_decode_range(uint16_t *dst, const void *src, const lrun_packed_layout *lay, uint64_t first,
                              uint64_t count);

/* lrun_packed_validate over pool's threads (NULL: the caller's only). */
lrun_status lrun_packed_validate_mt(lrun_packed_layout *lay, const void *src, size_t size, const char *what,
                                    struct lrun_threadpool *pool);

/* lrun_packed_decode_range over pool's threads (NULL: the caller's only),
 * each thread a run of whole blocks: the host's decode-into-a-scratch. */
void lrun_packed_decode_range_mt(uint16_t *dst, const void *src, const lrun_packed_layout *lay, uint64_t first,
                                 uint64_t count, struct lrun_threadpool *pool);

/* Validates and decodes a whole tensor into dst (n values, want_dtype and
 * want_n must match the header). pool may be NULL. */
lrun_status lrun_packed_decode(uint16_t *dst, int want_dtype, uint64_t want_n, const void *src, size_t size,
                               const char *what, struct lrun_threadpool *pool);

#ifdef __cplusplus
}
#endif

#endif
