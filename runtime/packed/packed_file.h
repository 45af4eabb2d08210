/* packed_file.h — the packed model file: a GGUF file whose bf16/f16 tensors
 * are stored packed (codec.h), read back bit for bit.
 *
 * File layout (every integer little-endian):
 *   magic        8 bytes "LRUNPACK"
 *   version      u32 = 2 (1: before PEX2's block table became 8 bytes a
 *                block, codec_pex2.h; such a file is read when it holds no
 *                PEX2 entry, since stored and PEX1 tensors did not change,
 *                and refused, naming a PEX2 tensor, when it does)
 *   reserved     u32 = 0
 *   head_bytes   u64 H: the original GGUF up to its tensor data (header,
 *                metadata, tensor infos, alignment padding), kept verbatim
 *   data_bytes   u64 D: the original GGUF's tensor data section
 *   n_entries    u64 N: one per tensor of the GGUF, by increasing data offset
 *   packed_bytes u64 P: the packed section
 *   entries      N x 40 bytes: u64 plain_offset, u64 plain_bytes (the tensor's
 *                place in the GGUF data section), u64 packed_offset, u64
 *                packed_size (its place in the packed section), u32 codec
 *                (0 stored as is, 1 packed PEX1, 2 packed PEX2: codec_pex2.h),
 *                u32 dtype (LRUN_DTYPE_*)
 *   head         H bytes
 *   packed       P bytes; each tensor starts at a multiple of 64 from the
 *                section's start; the bytes between tensors are zero
 * The file is exactly 48 + 40 N + H + P bytes. The GGUF padding before,
 * between and after the tensors' plain ranges is under 1 MiB each, so a
 * small file cannot make the reader size a huge output. Unpacking writes the head,
 * then each tensor at its plain offset (the GGUF's own padding is zeros):
 * the original GGUF file, byte for byte. Mode 1 loads a packed file by
 * unpacking it into an anonymous memory file and opening that with the GGUF
 * reader, which checks the head as strictly as any GGUF; every entry must
 * then match one GGUF tensor exactly (offset, bytes, dtype).
 */
#ifndef LRUN_PACKED_FILE_H
#define LRUN_PACKED_FILE_H

#include "lrun.h"
#include "packed/codec.h" /* LRUN_PACKED_CODEC_* */

#include <stddef.h>
#include <stdint.h>

#define LRUN_PACKED_FILE_MAGIC "LRUNPACK"
#define LRUN_PACKED_FILE_VERSION 2
#define LRUN_PACKED_FILE_VERSION_OLDEST 1 /* read when it holds no PEX2 tensor */
#define LRUN_PACKED_FILE_HEADER 48  /* bytes before the entries */
#define LRUN_PACKED_ENTRY_BYTES 40
#define LRUN_PACKED_ALIGN 64        /* packed tensors start on this, from the section start */
#define LRUN_PACKED_MAX_GAP ((uint64_t)1 << 20) /* bytes of GGUF padding before, between or after tensors, at most */

typedef struct lrun_packed_entry {
    uint64_t plain_offset;      /* bytes from the GGUF data start */
    uint64_t plain_bytes;
    uint64_t packed_offset;     /* bytes from the packed section start */
    uint64_t packed_size;
    uint32_t codec;             /* LRUN_PACKED_CODEC_* */
    uint32_t dtype;             /* LRUN_DTYPE_* of the plain tensor */
} lrun_packed_entry;

typedef struct lrun_packed_file {
    const char *path;
    uint32_t version;           /* LRUN_PACKED_FILE_VERSION_OLDEST .. LRUN_PACKED_FILE_VERSION */
    const uint8_t *map;         /* (size) the whole file, read-only */
    size_t size;
    uint64_t head_bytes, data_bytes, packed_bytes;
    int64_t n_entries;
    lrun_packed_entry *entries; /* (n_entries) */
    const uint8_t *head;        /* (head_bytes) into map */
    const uint8_t *packed;      /* (packed_bytes) into map */
} lrun_packed_file;

/* 1 when the file at path starts with the packed magic (0 on any error). */
int lrun_packed_file_sniff(const char *path);

/* Maps and checks the frame and every entry (not yet the packed bytes);
 * refuses a version-1 file with a PEX2 entry, naming its tensor. */
lrun_status lrun_packed_file_open(lrun_packed_file **out, const char *path);
void lrun_packed_file_close(lrun_packed_file *f);

/* Writes the plain GGUF into fd (truncated to its size), decoding every
 * packed tensor (which checks it); n_threads <= 0: every core. */
lrun_status lrun_packed_file_unpack_fd(const lrun_packed_file *f, int fd, int n_threads, int progress);

/* Mode 1: the plain GGUF of a packed file, unpacked into anonymous memory
 * and opened with the GGUF reader; the entries are checked against it. */
lrun_status lrun_packed_open_gguf(lrun_gguf **out, const char *path, int n_threads, int progress);

/* Mode 1 keeping tensors packed: the GGUF head (and the stored tensors)
 * in a sized anonymous memory file whose packed tensors' ranges stay holes
 * (no memory), opened with the GGUF reader and matched to the entries as
 * lrun_packed_open_gguf does. *file stays open: the model points its packed
 * tensors into f->packed, and decodes the ones it keeps plain
 * (model.c, keep_packed). */
lrun_status lrun_packed_open_lazy(lrun_gguf **out, lrun_packed_file **file, const char *path);
/* "stored", "PEX1", "PEX2" (or "unknown") for a LRUN_PACKED_CODEC_*. */
const char *lrun_packed_codec_name(uint32_t codec);
/* LRUN_E_FORMAT unless e's packed bytes start with its codec's magic (the
 * decoders choose by the magic; the entry must agree). what names it. */
lrun_status lrun_packed_file_check_codec(const lrun_packed_file *f, const lrun_packed_entry *e, const char *what);
/* The entry whose plain range holds plain_offset, or NULL. */
const lrun_packed_entry *lrun_packed_file_entry_at(const lrun_packed_file *f, uint64_t plain_offset);

#endif
