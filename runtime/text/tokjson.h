/* tokjson.h — a tokenizer.json held in memory rather than in a file: a GGUF
 * written from an HF directory (lrun pack) carries the directory's
 * tokenizer.json as the string key tokenizer.huggingface.json (the key the
 * GGUF specification names for it) and tokenizer_config.json as
 * lrun.hf.tokenizer_config, and model.c builds the tokenizer from them when
 * the file has no tokenizer.ggml.* vocabulary. The path-based
 * lrun_tokenizer_load_json (lrun.h) reads the files and comes here too. */
#ifndef LRUN_TEXT_TOKJSON_H
#define LRUN_TEXT_TOKJSON_H

#include <stddef.h>

#include "lrun.h"

/* The GGUF keys (above). */
#define LRUN_GGUF_KEY_HF_TOKENIZER "tokenizer.huggingface.json"
#define LRUN_GGUF_KEY_HF_TOKENIZER_CONFIG "lrun.hf.tokenizer_config"

/* A tokenizer from tokenizer.json text (len bytes) and, when cfg_json is not
 * NULL, tokenizer_config.json text (cfg_len bytes). name and cfg_name are what
 * errors call them (e.g. "model.lrpk: key tokenizer.huggingface.json"). */
lrun_status lrun_tokenizer_load_json_text(lrun_tokenizer **out, const char *name, const char *json, size_t len,
                                          const char *cfg_name, const char *cfg_json, size_t cfg_len);

#endif
