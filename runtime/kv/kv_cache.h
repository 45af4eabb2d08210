/* kv_cache.h — the KV cache of an engine: per sequence slot, per layer, the
 * keys and values of every stored position, in f16 (llama.cpp's default) or
 * f32 (what llama.cpp's f32 cache computes with, bit for bit). Five kinds
 * (docs/kv-cache.md):
 *
 *   DYNAMIC, STATIC           the store is device memory and attention reads it
 *                             in place (resident)
 *   OFFLOADED, OFFLOADED_STATIC  the store is pinned host memory, not counted in
 *                             the device budget; attention reads two device
 *                             slots (kv_stage.c): the layer computed and the
 *                             next one, filled by a ring's fill thread (staged)
 *   QUANTIZED                 the store (kv_quant.c, device memory) holds int8
 *                             or int4 codes with per-group scales plus a window
 *                             of recent positions exact; slots are filled by
 *                             dequantizing (staged)
 *
 * Exact stores are paged (kv_blocks.h): blocks of LRUN_KV_BLOCK positions,
 * shared between sequences by reference count, each holding per layer
 *
 *   keys   (block, n_head_kv, head_dim)   a position's keys contiguous,
 *                                         positions kv_dim = n_head_kv*head_dim apart
 *   values (n_head_kv, head_dim, block)   transposed, as llama.cpp stores V without
 *                                         flash attention: each value dim's positions
 *                                         contiguous, dims a block apart
 *
 * A slot holds one layer of the sequences of a chunk contiguously, keys
 * (cap, kv_dim) then values (kv_dim, cap), each sequence with its own cap;
 * attention sums over blocks and over slots in the same order, to the bit.
 *
 * The attention reads the values of each dim up to the positions it sees
 * rounded up to LRUN_KV_PAD, as llama.cpp reads its zeroed cache cells (its
 * softmax gives them p = 0): blocks and caps are multiples of LRUN_KV_PAD,
 * and the values past a sequence's positions are zero (fresh blocks, slots
 * past what they load) or finite values of a sequence sharing the block.
 *
 * A step runs: step_begin (grow everything, or fail changing nothing), then
 * per chunk of tokens chunk_begin, per layer layer_begin / view / layer_end,
 * chunk_end; then step_end adds the step's positions to each length. */
#ifndef LRUN_KV_CACHE_H
#define LRUN_KV_CACHE_H

#include "lrun.h"

#define LRUN_KV_PAD 32
/* A dynamic sequence's first capacity, positions; it doubles from there (lrun_engine_estimate). */
#define LRUN_KV_MIN_CAP 32

/* One sequence's storage. Exact kinds use the block table (bid, blk, nb);
 * QUANTIZED uses data as its codes (cap positions of codes and group scales
 * per layer) and ring. */
typedef struct lrun_kv_seq {
    void *data;       /* QUANTIZED: codes (kv_quant.h), NULL while cap is 0 */
    int64_t len;      /* positions stored */
    int64_t cap;      /* positions allocated, a multiple of LRUN_KV_PAD */
    size_t bytes;     /* bytes of data */
    void *ring;       /* QUANTIZED: (n_layer, [keys, values], residual, kv_dim) exact elements;
                       * position p at row p % residual */
    size_t ring_bytes;
    int64_t q_lo;     /* QUANTIZED: positions below are read from codes, [q_lo, len) from the ring */
    /* exact kinds (kv_blocks.h): the block table; cap = nb · LRUN_KV_BLOCK */
    int32_t *bid;     /* (n_ctx_max / LRUN_KV_BLOCK, rounded up) block ids */
    void **blk;       /* (same) their memory, for attention */
    int64_t nb;       /* blocks in the table */
} lrun_kv_seq;

typedef struct lrun_kv_stage lrun_kv_stage;

/* What attention reads for one sequence and layer: contiguous (a slot) or
 * paged (a resident exact store), as blocks is NULL or not. */
typedef struct lrun_kv_view {
    void *k;          /* (cap, kv_dim) */
    void *v;          /* (kv_dim, cap) */
    int64_t cap;      /* elements between value dims */
    void *const *blocks;  /* paged: block b holds positions [b·block_pos, (b+1)·block_pos) */
    int64_t block_pos;
    size_t k_off, v_off;  /* paged: bytes from a block to the layer's keys, values */
} lrun_kv_view;

/* The options of the QUANTIZED kind. */
typedef struct lrun_kv_quant_opts {
    int bits;          /* 8 or 4; 0 = 8 */
    int64_t group;     /* elements per scale, along head_dim; 0 = 64 (or head_dim when smaller) */
    int64_t residual;  /* recent positions kept exact; 0 = 128 (HF's residual_length) */
} lrun_kv_quant_opts;

typedef struct lrun_kv_cache {
    lrun_device *device;
    lrun_cache_kind kind;
    lrun_dtype dtype;     /* LRUN_DTYPE_F16 or LRUN_DTYPE_F32 */
    size_t elem_bytes;    /* 2 or 4 */
    int64_t n_layer, n_head_kv, head_dim, kv_dim;
    int64_t n_seq;        /* sequence slots */
    int64_t n_ctx_max;    /* positions per sequence, at most */
    int store_on_device;  /* 1: the store counts in the device budget */
    int preallocated;     /* STATIC, OFFLOADED_STATIC: storage taken at init, never given back */
    lrun_kv_seq *seqs;    /* (n_seq) */
    lrun_kv_stage *stage; /* staged kinds: the device slots; NULL for resident kinds */
    struct lrun_kv_pool *pool; /* exact kinds: the blocks (kv_blocks.h) */
    /* QUANTIZED */
    int q_bits;               /* 8 or 4 */
    int64_t q_group;          /* elements per (scale, min) pair */
    int64_t q_residual;       /* ring positions */
    size_t q_pos_bytes;       /* codes and scales of one position, keys or values, one layer */
    /* accounting */
    uint64_t bytes_moved;     /* bytes between the store and the slots (both ways) */
    uint64_t bytes_copied;    /* bytes copied by copies, reorders and copy on write */
} lrun_kv_cache;

/* STATIC and OFFLOADED_STATIC allocate n_ctx_max positions for every slot
 * (and OFFLOADED_STATIC its two slots) here; the others allocate as
 * sequences grow. dtype: LRUN_DTYPE_F16 or LRUN_DTYPE_F32. quant may be
 * NULL (defaults); it matters only for QUANTIZED. */
lrun_status lrun_kv_cache_init(lrun_kv_cache *kv, lrun_device *device, lrun_cache_kind kind, lrun_dtype dtype,
                               int64_t n_layer, int64_t n_head_kv, int64_t head_dim, int64_t n_seq,
                               int64_t n_ctx_max, const lrun_kv_quant_opts *quant);
void lrun_kv_cache_free(lrun_kv_cache *kv);
/* The device bytes a cache of this shape takes right after init
 * (*init_bytes) and at its highest while every sequence grows to n_ctx_max
 * (*max_bytes: the store when on the device, the slots, and what the last
 * growth holds twice), from the sizes init and the growth use; allocates
 * nothing (lrun_engine_size_placement). */
lrun_status lrun_kv_cache_size(lrun_cache_kind kind, lrun_dtype dtype, int64_t n_layer, int64_t n_head_kv,
                               int64_t head_dim, int64_t n_seq, int64_t n_ctx_max, const lrun_kv_quant_opts *quant,
                               size_t *init_bytes, size_t *max_bytes);

/* Makes room for n_pos positions in seq: new blocks, a private copy of a
 * shared block it will write into (quantized: a doubling of its codes). On
 * failure the sequence is unchanged. LRUN_E_ARG when n_pos > n_ctx_max. */
lrun_status lrun_kv_cache_reserve(lrun_kv_cache *kv, int64_t seq, int64_t n_pos);

/* ---------------------------------------------------------------- a step */

/* Reserves seq_count[s] more positions for every sequence s (n_seq counts)
 * and, for staged kinds, slots big enough for the step. On failure (an OOM
 * with phase "cache") no sequence's contents change. */
lrun_status lrun_kv_cache_step_begin(lrun_kv_cache *kv, const int64_t *seq_count);
/* The chunk's n tokens: sequence and position of each (positions of a
 * sequence increasing, all at or past its len). */
void lrun_kv_cache_chunk_begin(lrun_kv_cache *kv, int64_t n, const int64_t *tok_seq, const int64_t *tok_pos);
/* Before a layer's keys and values are stored and read: waits for the
 * layer's slot and starts loading the next one. */
void lrun_kv_cache_layer_begin(lrun_kv_cache *kv, int64_t layer);
/* Where seq's keys and values of layer are read and the chunk's are written. */
lrun_kv_view lrun_kv_cache_view(const lrun_kv_cache *kv, int64_t seq, int64_t layer);
/* After the layer's attention: writes the chunk's new entries back to the store. */
void lrun_kv_cache_layer_end(lrun_kv_cache *kv, int64_t layer);
void lrun_kv_cache_chunk_end(lrun_kv_cache *kv);
/* Adds seq_count[s] to every length. */
void lrun_kv_cache_step_end(lrun_kv_cache *kv, const int64_t *seq_count);

/* ---------------------------------------------------------------- sequences */

/* Forgets positions from len on; a dynamic sequence emptied to 0 gives its memory back. */
lrun_status lrun_kv_cache_truncate(lrun_kv_cache *kv, int64_t seq, int64_t len);
/* dst becomes a copy of src: exact kinds share src's blocks (no bytes move);
 * quantized copies (growing dst as needed; on failure dst is unchanged). */
lrun_status lrun_kv_cache_copy(lrun_kv_cache *kv, int64_t dst, int64_t src);
/* Sequences [0, n) become copies of src_of_dst[0..n) at once (beam
 * reordering): exact kinds swap block tables (no bytes move); quantized
 * moves the first taker's record and copies for further takers. On failure
 * nothing changes. */
lrun_status lrun_kv_cache_reorder(lrun_kv_cache *kv, const int64_t *src_of_dst, int64_t n);

/* Device bytes held now: the store when on the device (blocks with memory,
 * codes and rings), plus the slots. */
size_t lrun_kv_cache_device_bytes(const lrun_kv_cache *kv);

/* ---------------------------------------------------------------- stores (kv_cache.c, kv_quant.c)
 * What the stage (kv_stage.c) calls, through kv_cache.c: load fills a slot's keys rows [0, lo)
 * and value columns [0, lo) of seq's layer from the store and zeroes value
 * columns [lo, cap); write_back copies rows and columns [lo, hi) to the store.
 * Both return the bytes they moved. */
size_t lrun_kv_store_load(lrun_kv_cache *kv, int64_t seq, int64_t layer, int64_t lo, void *k, void *v, int64_t cap);
size_t lrun_kv_store_write_back(lrun_kv_cache *kv, int64_t seq, int64_t layer, int64_t lo, int64_t hi,
                                const void *k, const void *v, int64_t cap);
/* After every layer of a chunk wrote back seq's positions up to hi. */
void lrun_kv_store_chunk_done(lrun_kv_cache *kv, int64_t seq, int64_t hi);

#endif
