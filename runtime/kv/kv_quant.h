/* kv_quant.h — the store of the QUANTIZED KV cache (kv_cache.h), after HF's
 * QuantizedCache: positions older than the last `residual` are kept as int8
 * or int4 codes with a (scale, min) pair per group of `group` elements along
 * head_dim; the last `residual` positions stay exact (the cache dtype) in a
 * ring. Each position is quantized once, when it leaves the ring, from its
 * exact values: unlike HF, which requantizes the whole cache each time the
 * residual fills, no error compounds.
 *
 * Per sequence (lrun_kv_seq): data holds, per layer, keys then values, each
 * (cap, q_pos_bytes): a position's codes (kv_dim bytes for int8, kv_dim/2
 * for int4, low nibble first) then its (scale, min) f32 pairs;
 * ring holds, per layer, keys then values, each (residual, kv_dim) elements
 * of the cache dtype, position p at row p % residual. Positions below q_lo
 * are read from codes, [q_lo, len) from the ring. Both count in the device
 * budget. */
#ifndef LRUN_KV_QUANT_H
#define LRUN_KV_QUANT_H

#include "kv/kv_cache.h"

/* Checks the options and sets kv's q_* fields (LRUN_E_ARG names a bad one). */
lrun_status lrun_kv_quant_setup(lrun_kv_cache *kv, const lrun_kv_quant_opts *opts);
/* Room for n_pos positions in rec: the ring on first use, codes for the
 * positions past the ring and at least n_codes (what a copy brings),
 * doubling. On failure rec is unchanged. */
lrun_status lrun_kv_quant_reserve(lrun_kv_cache *kv, lrun_kv_seq *rec, int64_t seq, int64_t n_pos, int64_t n_codes);
void lrun_kv_quant_release(lrun_kv_cache *kv, lrun_kv_seq *rec);
/* The sizes reserve takes, shared with lrun_kv_cache_size: the ring's bytes
 * (0 on overflow); the code capacity a record of cap positions grows to for
 * n_pos positions and n_codes copied (doubling from 32; cap when it is
 * enough, so 0 while the ring holds every position); the bytes of codes for
 * cap positions (0 on overflow). */
int lrun_kv_quant_ring_bytes(const lrun_kv_cache *kv, size_t *out);
int64_t lrun_kv_quant_code_cap(const lrun_kv_cache *kv, int64_t cap, int64_t n_pos, int64_t n_codes);
int lrun_kv_quant_codes_bytes(const lrun_kv_cache *kv, int64_t cap, size_t *out);
/* The capacity a record had before it doubled to cap (0: cap was its first). */
int64_t lrun_kv_quant_code_cap_before(const lrun_kv_cache *kv, int64_t cap);
/* dst (reserved for src->len) takes src's contents; returns the bytes copied. */
size_t lrun_kv_quant_copy(const lrun_kv_cache *kv, lrun_kv_seq *dst, const lrun_kv_seq *src);

size_t lrun_kv_quant_load(lrun_kv_cache *kv, const lrun_kv_seq *rec, int64_t layer, int64_t lo, void *k, void *v,
                          int64_t cap);
size_t lrun_kv_quant_write_back(lrun_kv_cache *kv, const lrun_kv_seq *rec, int64_t layer, int64_t lo, int64_t hi,
                                const void *k, const void *v, int64_t cap);
/* After every layer wrote back positions up to hi: those that left the ring are codes now. */
void lrun_kv_quant_chunk_done(const lrun_kv_cache *kv, lrun_kv_seq *rec, int64_t hi);

#endif
