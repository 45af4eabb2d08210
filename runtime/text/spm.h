/* spm.h — SentencePiece BPE (tokenizer.ggml.model = "llama"), in spm.c. Not part of the API. */
#ifndef LRUN_TEXT_SPM_H
#define LRUN_TEXT_SPM_H

#include "text/pieces.h"
#include "text/vocab.h"

#include "lrun.h"

#include <stddef.h>

/* Tokenizes one plain-text fragment with SentencePiece BPE; prefix_space
 * prepends "▁" (the caller decides, per llama.cpp's is_prev_special rule). */
lrun_status lrun_spm_encode(const struct lrun_tokenizer *tok, const char *text, size_t len, int prefix_space,
                            lrun_ids *out);
/* Fills tok->byte_token from the vocabulary. */
void lrun_spm_init_bytes(struct lrun_tokenizer *tok);

#endif
