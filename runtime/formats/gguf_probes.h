/* gguf_probes.h — how hard the GGUF reader's name index worked, for tests.
 *
 * The reader indexes keys and tensor names in open-addressed tables hashed
 * with a per-process key (core/hash.h), so a file cannot choose names that
 * collide. Tests bound the work without timing it: the slots looked at
 * while indexing a file stay near one per name, never the n²/2 of names
 * that all land in one cluster. */
#ifndef LRUN_GGUF_PROBES_H
#define LRUN_GGUF_PROBES_H

#include "lrun.h"

#include <stddef.h>

/* Slots looked at while lrun_gguf_open indexed the keys and tensor names. */
size_t lrun_gguf_index_probes(const lrun_gguf *gguf);

#endif
