/* bpe.h — byte-level BPE (tokenizer.ggml.model = "gpt2"), in bpe.c. Not part of the API. */
#ifndef LRUN_TEXT_BPE_H
#define LRUN_TEXT_BPE_H

#include "text/pieces.h"
#include "text/vocab.h"

#include "lrun.h"

#include <stddef.h>
#include <stdint.h>

#include "core/hash.h"

/* The merge table's key of the pair (left, right): never 0, which marks an empty slot. */
static inline uint64_t lrun_bpe_merge_key(int32_t left, int32_t right)
{
    return (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
}
/* Its slot hash, keyed (core/hash.h): the pairs come from the file's merge
 * list, and a fixed mix would let a crafted list collide in one chain. */
static inline size_t lrun_bpe_merge_hash(uint64_t key) { return (size_t)lrun_hash_keyed(&key, sizeof key); }

/* Merge lookup: rank and result piece of (left, right), or 0 when they do not merge. */
int lrun_bpe_merge_find(const struct lrun_tokenizer *tok, int32_t left, int32_t right, int32_t *rank, int32_t *result);
/* Reads tokenizer.ggml.merges into tok->merges (tokens already loaded). */
lrun_status lrun_bpe_load_merges(struct lrun_tokenizer *tok, const lrun_gguf *gguf);
/* Tokenizes one plain-text fragment (no specials inside) with byte-level BPE. */
lrun_status lrun_bpe_encode(const struct lrun_tokenizer *tok, const char *text, size_t len, lrun_ids *out);
/* UTF-8 of the byte-level character that stands for byte b (1 or 2 bytes); returns its length. */
size_t lrun_bpe_byte_to_utf8(uint8_t b, char out[2]);
/* Writes the raw bytes a byte-level token text stands for; a character
 * outside the byte map is copied through as its own UTF-8. Returns the bytes
 * written to out, never more than len. */
size_t lrun_bpe_unmap(const struct lrun_tokenizer *tok, const char *text, size_t len, char *out);

#endif
