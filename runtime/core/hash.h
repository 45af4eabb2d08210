/* hash.h — a keyed hash for tables indexed by names that come from files.
 *
 * A table keyed by file content (GGUF keys and tensor names, vocabularies)
 * with a fixed hash lets a crafted file put every name in one bucket and
 * make loading quadratic. lrun_hash_keyed is SipHash-1-3 (Aumasson and
 * Bernstein; the variant Python and Rust's HashMap use) under a 128-bit key
 * drawn once per process from getrandom: without the key a file cannot
 * choose colliding names. Thread-safe. */
#ifndef LRUN_CORE_HASH_H
#define LRUN_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-1-3 of n bytes at p under the process key. */
uint64_t lrun_hash_keyed(const void *p, size_t n);

#endif
