/* model_guard.h — whether a model's file was truncated under its mapping
 * (core/mapguard.h): the engine asks after each step. */
#ifndef LRUN_MODEL_GUARD_H
#define LRUN_MODEL_GUARD_H

#include "lrun.h"

/* LRUN_E_IO naming the file when a mapping of m's GGUF file (or of an HF
 * model's shards) lost pages; LRUN_OK otherwise, at once when none did. */
lrun_status lrun_model_check_file(const lrun_model *m, const char *who);

#endif
