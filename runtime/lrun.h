/* lrun.h — the public C API of lrun, an LLM inference runtime.
 *
 * This header is the catalogue of everything Lua (and C programs) may call.
 * The LuaJIT `ffi.cdef` text is generated from it (`cc -E -P -DLRUN_CDEF`),
 * so it must stay plain C declarations: no inline functions, no macros
 * that Lua needs to see.
 *
 * Conventions
 *   - names are lrun_<class>_<verb>; enum values carry their enum's name;
 *   - every fallible call returns lrun_status; on failure
 *     lrun_last_error() names what went wrong and where;
 *   - int64_t for element counts and shapes, size_t for bytes;
 *   - output arguments come first after the object they act on;
 *   - objects are opaque handles with _init/_free (or _open/_close) pairs;
 *   - every function is marked LRUN_API: the library is built with
 *     -fvisibility=hidden, so what this header declares is exactly what
 *     liblrun.so exports (tests/abi_check.sh keeps the two equal).
 */
#ifndef LRUN_H
#define LRUN_H

/* The export mark; empty in the ffi.cdef text, which must stay plain C. */
#if defined(LRUN_CDEF)
#define LRUN_API
#elif defined(__GNUC__)
#define LRUN_API __attribute__((visibility("default")))
#else
#define LRUN_API
#endif

#ifndef LRUN_CDEF
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
#endif

/* ---------------------------------------------------------------- errors */

typedef enum lrun_status {
    LRUN_OK = 0,
    LRUN_E_OOM = 1,         /* an allocation failed, or a budget would be exceeded */
    LRUN_E_FORMAT = 2,      /* a model file breaks a rule of its format */
    LRUN_E_IO = 3,          /* open/read/mmap/write failed */
    LRUN_E_ARG = 4,         /* a caller passed a bad argument */
    LRUN_E_UNSUPPORTED = 5, /* valid, but not something lrun implements */
    LRUN_E_DEVICE = 6,      /* the compute device failed or is absent */
    LRUN_E_INTERNAL = 7     /* a bug in lrun */
} lrun_status;

/* The message of the last failure on this thread: "what: where: why". */
LRUN_API const char *lrun_last_error(void);
/* "ok", "oom", "format", "io", "arg", "unsupported", "device", "internal". */
LRUN_API const char *lrun_status_name(lrun_status status);
/* Details of the last LRUN_E_OOM on this thread (bytes), 0 when unknown. */
LRUN_API size_t lrun_last_oom_requested(void);
LRUN_API size_t lrun_last_oom_free(void);
/* What was being allocated at the last LRUN_E_OOM on this thread: "load"
 * (weights while a model loads), "weights" (a residency move, or the
 * slots streamed weights pass through), "scratch" (engine scratch and its
 * pinned staging), "cache" (KV cache storage or its device slots, at
 * engine init or while a step grows it), or "unknown". */
LRUN_API const char *lrun_last_oom_phase(void);

/* ---------------------------------------------------------------- dtypes */

/* Values equal the GGUF (ggml) type ids, so the reader needs no table. */
typedef enum lrun_dtype {
    LRUN_DTYPE_F32 = 0,
    LRUN_DTYPE_F16 = 1,
    LRUN_DTYPE_Q4_0 = 2,
    LRUN_DTYPE_Q4_1 = 3,
    LRUN_DTYPE_Q5_0 = 6,
    LRUN_DTYPE_Q5_1 = 7,
    LRUN_DTYPE_Q8_0 = 8,
    LRUN_DTYPE_Q8_1 = 9,  /* activations only: q8 with the block sum, partner of Q4_1 */
    LRUN_DTYPE_Q2_K = 10,
    LRUN_DTYPE_Q3_K = 11,
    LRUN_DTYPE_Q4_K = 12,
    LRUN_DTYPE_Q5_K = 13,
    LRUN_DTYPE_Q6_K = 14,
    LRUN_DTYPE_Q8_K = 15, /* activations only: partner of the K-quants */
    LRUN_DTYPE_IQ4_NL = 20,
    LRUN_DTYPE_IQ4_XS = 23,
    LRUN_DTYPE_BF16 = 30,
    LRUN_DTYPE_MXFP4 = 39 /* blocks of 32: an E8M0 scale byte, 16 bytes of E2M1 codes (gpt-oss experts) */
} lrun_dtype;

/* 1 if lrun can store weights of this type, else 0. */
LRUN_API int lrun_dtype_is_supported(int type_id);
LRUN_API const char *lrun_dtype_name(lrun_dtype dtype);
/* Parses "f32", "q4_0", "Q4_K" …; returns LRUN_E_ARG for an unknown name. */
LRUN_API lrun_status lrun_dtype_from_name(const char *name, lrun_dtype *out);
LRUN_API int64_t lrun_dtype_block_elems(lrun_dtype dtype); /* elements per block (1 for float types) */
LRUN_API size_t lrun_dtype_block_bytes(lrun_dtype dtype);  /* bytes per block */
/* Bytes of a row of n elements; LRUN_E_ARG when n is not a multiple of the
 * block size, LRUN_E_FORMAT on overflow. */
LRUN_API lrun_status lrun_dtype_row_bytes(lrun_dtype dtype, int64_t n, size_t *out);

/* Conversions of whole rows, for tests, the REPL and the model generator. */
LRUN_API lrun_status lrun_dtype_to_f32(lrun_dtype dtype, const void *src, float *dst, int64_t n);
LRUN_API lrun_status lrun_dtype_from_f32(lrun_dtype dtype, const float *src, void *dst, int64_t n);

/* The host (CPU) dot-kernel level in use: "avx512", "avx2" or "scalar"; the
 * best this CPU runs, or what LRUN_CPU_ISA asks for (docs/cpu-kernels.md). */
LRUN_API const char *lrun_cpu_kernels(void);

/* ---------------------------------------------------------------- devices */

typedef struct lrun_device lrun_device;

typedef enum lrun_device_kind {
    LRUN_DEVICE_KIND_CPU = 0,
    LRUN_DEVICE_KIND_CUDA = 1
} lrun_device_kind;

/* spec: "cpu", "cuda" or "cuda:N". budget_bytes caps what lrun allocates on
 * the device (0 = its whole free memory; on "cpu" 0 = unlimited).
 * LRUN_E_DEVICE with a clear message when CUDA is absent. */
LRUN_API lrun_status lrun_device_open(lrun_device **out, const char *spec, size_t budget_bytes);
LRUN_API void lrun_device_free(lrun_device *device);
LRUN_API lrun_device_kind lrun_device_kind_of(const lrun_device *device);
LRUN_API const char *lrun_device_name(const lrun_device *device);   /* "cpu", "cuda:0" */
LRUN_API size_t lrun_device_capacity(const lrun_device *device);   /* bytes lrun may use */
LRUN_API size_t lrun_device_used(const lrun_device *device);       /* bytes lrun holds now */
LRUN_API size_t lrun_device_peak(const lrun_device *device);       /* high-water mark, bytes */
LRUN_API void lrun_device_reset_peak(lrun_device *device);          /* the high-water mark restarts at used */
/* Physical memory of the device (RAM on cpu, GPU memory on cuda), bytes, for
 * display: an unbudgeted cpu's capacity is SIZE_MAX. */
LRUN_API size_t lrun_device_total_memory(const lrun_device *device);
/* Number of CUDA devices visible (0 in a CPU-only build or without a GPU). */
LRUN_API int lrun_cuda_device_count(void);
/* 1 when this library was built with CUDA. */
LRUN_API int lrun_built_with_cuda(void);

/* ---------------------------------------------------------------- streams and events */

typedef struct lrun_stream lrun_stream;
typedef struct lrun_event lrun_event;

/* On cpu a stream runs work in the calling thread, in order; on cuda it is a
 * cudaStream_t. */
LRUN_API lrun_status lrun_stream_init(lrun_stream **out, lrun_device *device);
LRUN_API void lrun_stream_free(lrun_stream *stream);
LRUN_API lrun_status lrun_stream_sync(lrun_stream *stream);
LRUN_API lrun_status lrun_event_init(lrun_event **out, lrun_device *device);
LRUN_API void lrun_event_free(lrun_event *event);
LRUN_API lrun_status lrun_event_record(lrun_event *event, lrun_stream *stream);
/* Work queued on stream after this call waits for the event. */
LRUN_API lrun_status lrun_stream_wait_event(lrun_stream *stream, lrun_event *event);
LRUN_API lrun_status lrun_event_sync(lrun_event *event);

/* ---------------------------------------------------------------- tensors and residency */

/* Where a tensor's bytes live. */
typedef enum lrun_tier {
    LRUN_TIER_DEVICE = 0, /* memory of the compute device (counted in its budget) */
    LRUN_TIER_PINNED = 1, /* page-locked host memory (plain host memory without CUDA) */
    LRUN_TIER_HOST = 2,   /* ordinary host memory */
    LRUN_TIER_MMAP = 3,   /* still in the memory-mapped model file */
    LRUN_TIER_DISK = 4,   /* in the model file, read with direct I/O into a staging slot when
                           * compute needs it (no page cache); data = the mapping, for readers
                           * that are not staged (norms at init, gathered embedding rows) */
    LRUN_TIER_COUNT = 5
} lrun_tier;

LRUN_API const char *lrun_tier_name(lrun_tier tier); /* "device", "pinned", "host", "mmap", "disk" */
LRUN_API lrun_status lrun_tier_from_name(const char *name, lrun_tier *out);

/* Measures the copy rate of bytes from a buffer in from_tier to one in
 * to_tier through the runtime's own copy path (what residency moves and
 * weight streaming use), in bytes per second: one warm-up copy, then the
 * best of three. Device buffers are taken from the budget for the time of
 * the call (LRUN_E_OOM when they do not fit); mmap as a source is measured
 * as host memory (page cache); mmap is refused as a destination. bytes in
 * [4 KiB, 16 GiB]. Same-tier copies read and write every byte, so the read
 * rate of that memory is about twice the result. Not cached: callers keep
 * results (policies/smart.lua caches per process). */
LRUN_API lrun_status lrun_device_measure_bandwidth(lrun_device *device, lrun_tier from_tier, lrun_tier to_tier,
                                          size_t bytes, double *bytes_per_s);

/* What a tensor is for, as policies see it. */
typedef enum lrun_role {
    LRUN_ROLE_OTHER = 0,
    LRUN_ROLE_EMBEDDING = 1,   /* token_embd */
    LRUN_ROLE_OUTPUT_NORM = 2,
    LRUN_ROLE_LM_HEAD = 3,     /* output (absent when tied to the embedding) */
    LRUN_ROLE_ATTN_NORM = 4,
    LRUN_ROLE_ATTN_Q = 5,
    LRUN_ROLE_ATTN_K = 6,
    LRUN_ROLE_ATTN_V = 7,
    LRUN_ROLE_ATTN_OUTPUT = 8,
    LRUN_ROLE_FFN_NORM = 9,
    LRUN_ROLE_FFN_GATE = 10,
    LRUN_ROLE_FFN_UP = 11,
    LRUN_ROLE_FFN_DOWN = 12,
    LRUN_ROLE_ROPE_FREQS = 13,
    LRUN_ROLE_BIAS = 14,
    LRUN_ROLE_FFN_GATE_INP = 15,  /* a mixture of experts' router {n_embd, n_expert} */
    LRUN_ROLE_FFN_GATE_EXPS = 16, /* the experts' stacked gate {n_embd, n_ff, n_expert} */
    LRUN_ROLE_FFN_UP_EXPS = 17,   /* up */
    LRUN_ROLE_FFN_DOWN_EXPS = 18, /* down {n_ff, n_embd, n_expert} */
    LRUN_ROLE_COUNT = 19
} lrun_role;

LRUN_API const char *lrun_role_name(lrun_role role); /* "embedding", "attn_q", … */

typedef struct lrun_tensor lrun_tensor;

#define LRUN_MAX_DIMS 4

/* A fresh tensor of zeros in tier, on device (device may be NULL for host tiers).
 * dims[0] is innermost (contiguous), as in GGUF. */
LRUN_API lrun_status lrun_tensor_init(lrun_tensor **out, lrun_device *device, const char *name,
                             lrun_dtype dtype, int ndim, const int64_t *dims, lrun_tier tier);
LRUN_API void lrun_tensor_free(lrun_tensor *tensor);
LRUN_API const char *lrun_tensor_name(const lrun_tensor *tensor);
LRUN_API lrun_dtype lrun_tensor_dtype(const lrun_tensor *tensor);
LRUN_API int lrun_tensor_ndim(const lrun_tensor *tensor);
LRUN_API int64_t lrun_tensor_dim(const lrun_tensor *tensor, int axis); /* 1 past ndim */
LRUN_API int64_t lrun_tensor_nelements(const lrun_tensor *tensor);
LRUN_API size_t lrun_tensor_bytes(const lrun_tensor *tensor);
LRUN_API lrun_role lrun_tensor_role(const lrun_tensor *tensor);
LRUN_API int lrun_tensor_layer(const lrun_tensor *tensor); /* block index, -1 outside blocks */
LRUN_API lrun_tier lrun_tensor_tier(const lrun_tensor *tensor);
/* Host-addressable bytes, or NULL while the tensor lives on a CUDA device. */
LRUN_API const void *lrun_tensor_host_data(const lrun_tensor *tensor);
/* Copies elements [first, first+n) of the flattened tensor to dst as f32;
 * first and n must be whole blocks. Works in every tier. */
LRUN_API lrun_status lrun_tensor_read_f32(const lrun_tensor *tensor, int64_t first, int64_t n, float *dst);
/* Converts src to the tensor's dtype and writes it at [first, first+n). */
LRUN_API lrun_status lrun_tensor_write_f32(lrun_tensor *tensor, int64_t first, int64_t n, const float *src);

/* Moves the tensor's bytes to another tier: allocate there, copy, release
 * the old copy (an mmap copy is simply dropped). LRUN_E_OOM leaves the
 * tensor where it was. Moving to LRUN_TIER_MMAP or LRUN_TIER_DISK is
 * allowed only for a tensor that came from a model file (both drop the
 * copy; an engine made after checks that a DISK tensor's bytes are in a
 * file it can open). */
LRUN_API lrun_status lrun_tensor_move(lrun_tensor *tensor, lrun_device *device, lrun_tier tier);

/* Marks a weight whose home is off the device as "compute on host": an engine
 * made with LRUN_WEIGHT_MODE_AS_PLACED then runs its matmul on the CPU where
 * the bytes live (llama.cpp's partial offload) instead of streaming it into a
 * device slot. Ignored for DEVICE-tier tensors. */
LRUN_API void lrun_tensor_set_host_compute(lrun_tensor *tensor, int on);
LRUN_API int lrun_tensor_host_compute(const lrun_tensor *tensor);

/* The packed form (docs/packed.md): a bf16/f16 weight may hold its lossless
 * codec bytes instead of the plain ones, in any tier; engines decode it
 * (bit for bit) where they compute. lrun_tensor_bytes stays the plain size;
 * lrun_tensor_stored_bytes is what its tier holds now (packed or plain). */
LRUN_API int lrun_tensor_packed(const lrun_tensor *tensor);
LRUN_API size_t lrun_tensor_stored_bytes(const lrun_tensor *tensor);
/* The packed size once known (packed now, or before: the layout is kept), else 0. */
LRUN_API size_t lrun_tensor_packed_bytes(const lrun_tensor *tensor);
/* 1 when the model file holds this tensor packed (a packed file's matrix):
 * its LRUN_TIER_MMAP form. */
LRUN_API int lrun_tensor_file_packed(const lrun_tensor *tensor);
/* The codec of the packed form once known (as lrun_tensor_packed_bytes): 1
 * PEX1, 2 PEX2 (a packed file entry's numbers, docs/packed.md); 0 unknown.
 * Packing at placement writes lrun pack's default: PEX2 for bf16 matrices of
 * a multiple of 8 values, PEX1 for f16 (and any other bf16). */
LRUN_API int lrun_tensor_packed_codec(const lrun_tensor *tensor);
/* Moves the tensor to tier (as lrun_tensor_move) in the form asked for
 * (packed 1: packed, 0: plain), converting on the host through a temporary
 * buffer: only the new form is allocated in tier. A packed file's tensor
 * packs to the file's bytes; any other encodes with the codec above. Packing anything but a
 * bf16/f16 matrix (2 dimensions) is LRUN_E_UNSUPPORTED; LRUN_TIER_MMAP only in the file's
 * own form (LRUN_E_ARG otherwise). On failure the tensor is unchanged. */
LRUN_API lrun_status lrun_tensor_move_form(lrun_tensor *tensor, lrun_device *device, lrun_tier tier, int packed);
/* Learns the packed size of a plain tensor without changing it (*packed_bytes;
 * the size and codec lrun_tensor_move_form would give it) and keeps the
 * layout (lrun_tensor_packed_bytes, _codec answer from then on). A tensor
 * PEX2 would hold (bf16, a multiple of 8 values) is measured from one read
 * of its exponents, nothing encoded; any other (PEX1) is encoded into a host
 * copy that is then freed. A tensor packed now or before answers at once.
 * What the planner sizes a packing it weighs by (lua/lrun/pack_choice.lua:
 * the sizes of never-packed tensors are otherwise the plain ones;
 * docs/packed.md "The automatic choice"). Anything but a bf16/f16 matrix is
 * LRUN_E_UNSUPPORTED, as for lrun_tensor_move_form. */
LRUN_API lrun_status lrun_tensor_measure_packed(lrun_tensor *tensor, size_t *packed_bytes);

/* ---------------------------------------------------------------- GGUF files */

/* A validated, memory-mapped GGUF file. Every rule of the format is checked
 * at open; accessors then never fail on a well-formed index. */
typedef struct lrun_gguf lrun_gguf;

typedef enum lrun_gguf_type {
    LRUN_GGUF_TYPE_U8 = 0,
    LRUN_GGUF_TYPE_I8 = 1,
    LRUN_GGUF_TYPE_U16 = 2,
    LRUN_GGUF_TYPE_I16 = 3,
    LRUN_GGUF_TYPE_U32 = 4,
    LRUN_GGUF_TYPE_I32 = 5,
    LRUN_GGUF_TYPE_F32 = 6,
    LRUN_GGUF_TYPE_BOOL = 7,
    LRUN_GGUF_TYPE_STRING = 8,
    LRUN_GGUF_TYPE_ARRAY = 9,
    LRUN_GGUF_TYPE_U64 = 10,
    LRUN_GGUF_TYPE_I64 = 11,
    LRUN_GGUF_TYPE_F64 = 12
} lrun_gguf_type;

LRUN_API lrun_status lrun_gguf_open(lrun_gguf **out, const char *path);
LRUN_API void lrun_gguf_close(lrun_gguf *gguf);
LRUN_API uint32_t lrun_gguf_version(const lrun_gguf *gguf);
LRUN_API size_t lrun_gguf_file_bytes(const lrun_gguf *gguf);
LRUN_API size_t lrun_gguf_alignment(const lrun_gguf *gguf);
LRUN_API size_t lrun_gguf_data_offset(const lrun_gguf *gguf); /* start of tensor data, bytes */

/* Key/value metadata. find returns the index or -1. */
LRUN_API int64_t lrun_gguf_kv_count(const lrun_gguf *gguf);
LRUN_API int64_t lrun_gguf_find_key(const lrun_gguf *gguf, const char *key);
LRUN_API const char *lrun_gguf_key(const lrun_gguf *gguf, int64_t kv);
LRUN_API lrun_gguf_type lrun_gguf_kv_type(const lrun_gguf *gguf, int64_t kv);
/* Typed reads: LRUN_E_ARG when the stored type does not convert
 * (integers convert among themselves when the value fits; f32/f64 to double). */
LRUN_API lrun_status lrun_gguf_get_i64(const lrun_gguf *gguf, int64_t kv, int64_t *out);
LRUN_API lrun_status lrun_gguf_get_f64(const lrun_gguf *gguf, int64_t kv, double *out);
LRUN_API lrun_status lrun_gguf_get_bool(const lrun_gguf *gguf, int64_t kv, int *out);
/* The string's bytes (not NUL-terminated in the file: *len gives the length). */
LRUN_API lrun_status lrun_gguf_get_str(const lrun_gguf *gguf, int64_t kv, const char **str, size_t *len);
/* Arrays: element type and count, then typed element reads. */
LRUN_API lrun_status lrun_gguf_get_arr(const lrun_gguf *gguf, int64_t kv, lrun_gguf_type *elem_type, int64_t *count);
LRUN_API lrun_status lrun_gguf_get_arr_i64(const lrun_gguf *gguf, int64_t kv, int64_t i, int64_t *out);
LRUN_API lrun_status lrun_gguf_get_arr_f64(const lrun_gguf *gguf, int64_t kv, int64_t i, double *out);
LRUN_API lrun_status lrun_gguf_get_arr_str(const lrun_gguf *gguf, int64_t kv, int64_t i, const char **str, size_t *len);

/* Tensor infos. find returns the index or -1. */
LRUN_API int64_t lrun_gguf_tensor_count(const lrun_gguf *gguf);
LRUN_API int64_t lrun_gguf_find_tensor(const lrun_gguf *gguf, const char *name);
LRUN_API const char *lrun_gguf_tensor_name(const lrun_gguf *gguf, int64_t t);
LRUN_API lrun_dtype lrun_gguf_tensor_dtype(const lrun_gguf *gguf, int64_t t);
LRUN_API int lrun_gguf_tensor_ndim(const lrun_gguf *gguf, int64_t t);
LRUN_API int64_t lrun_gguf_tensor_dim(const lrun_gguf *gguf, int64_t t, int axis); /* ne[axis], 1 past ndim */
LRUN_API size_t lrun_gguf_tensor_bytes(const lrun_gguf *gguf, int64_t t);
LRUN_API size_t lrun_gguf_tensor_offset(const lrun_gguf *gguf, int64_t t); /* from the data start */
LRUN_API const void *lrun_gguf_tensor_data(const lrun_gguf *gguf, int64_t t); /* into the mapping */

/* ---------------------------------------------------------------- GGUF writer */

/* Writes GGUF v3 files: metadata first, then tensor infos, then data streamed
 * tensor by tensor in the order they were declared. Used by the model
 * generator and by tests that craft files. */
typedef struct lrun_gguf_writer lrun_gguf_writer;

LRUN_API lrun_status lrun_gguf_writer_open(lrun_gguf_writer **out, const char *path);
/* Closes the file; on a writer that did not finish, the partial file is removed. */
LRUN_API void lrun_gguf_writer_free(lrun_gguf_writer *writer);
LRUN_API lrun_status lrun_gguf_writer_set_u32(lrun_gguf_writer *writer, const char *key, uint32_t value);
LRUN_API lrun_status lrun_gguf_writer_set_i32(lrun_gguf_writer *writer, const char *key, int32_t value);
LRUN_API lrun_status lrun_gguf_writer_set_u64(lrun_gguf_writer *writer, const char *key, uint64_t value);
LRUN_API lrun_status lrun_gguf_writer_set_f32(lrun_gguf_writer *writer, const char *key, float value);
LRUN_API lrun_status lrun_gguf_writer_set_bool(lrun_gguf_writer *writer, const char *key, int value);
LRUN_API lrun_status lrun_gguf_writer_set_str(lrun_gguf_writer *writer, const char *key, const char *value);
LRUN_API lrun_status lrun_gguf_writer_set_arr_str(lrun_gguf_writer *writer, const char *key, const char *const *values, int64_t count);
LRUN_API lrun_status lrun_gguf_writer_set_arr_f32(lrun_gguf_writer *writer, const char *key, const float *values, int64_t count);
LRUN_API lrun_status lrun_gguf_writer_set_arr_i32(lrun_gguf_writer *writer, const char *key, const int32_t *values, int64_t count);
/* Declares a tensor; all declarations come before the first write_tensor_data. */
LRUN_API lrun_status lrun_gguf_writer_add_tensor(lrun_gguf_writer *writer, const char *name, lrun_dtype dtype,
                                        int ndim, const int64_t *dims);
/* Appends the next declared tensor's bytes; may be called several times per
 * tensor (in order) until its size is reached. */
LRUN_API lrun_status lrun_gguf_writer_write_data(lrun_gguf_writer *writer, const void *bytes, size_t n);
/* Checks that every tensor was written in full, flushes and closes. */
LRUN_API lrun_status lrun_gguf_writer_finish(lrun_gguf_writer *writer);

/* Fills dst with n pseudo-random elements of dtype, values ~ U(-scale, scale)
 * before quantization, from a counter-based generator: the same (seed, first)
 * always gives the same bytes, so writers can split a tensor over threads.
 * first and n must be whole blocks. */
LRUN_API lrun_status lrun_random_fill(lrun_dtype dtype, void *dst, int64_t first, int64_t n, float scale, uint64_t seed);

/* ---------------------------------------------------------------- model generator */

/* The shape of a random-weight model (docs/gguf.md). Plain data: fill
 * every field (arch and head_dim may stay NULL/0). */
typedef struct lrun_model_gen_spec {
    int64_t n_layer;
    int64_t n_embd;             /* width; a multiple of n_head */
    int64_t n_head;
    int64_t n_head_kv;          /* divides n_head */
    int64_t n_ff;               /* feed-forward width */
    int64_t n_vocab;            /* >= 259: 256 byte tokens and 3 specials come first */
    int64_t n_ctx;              /* llama.context_length, positions */
    lrun_dtype weight_dtype;    /* attention and feed-forward matrices */
    lrun_dtype embd_dtype;      /* token_embd, and output when not tied */
    int tied_embeddings;        /* 1: no output.weight */
    double rope_freq_base;      /* e.g. 10000 */
    double rms_eps;             /* e.g. 1e-5 */
    uint64_t seed;              /* same seed, same weights (in every dtype, up to rounding) */
    int n_threads;              /* fill threads; 0 = all cores */
    int progress;               /* 1: progress bar on stderr when it is a terminal */
    const char *arch;           /* general.architecture ("llama", "qwen2", …, docs/architectures.md); NULL: llama */
    int64_t head_dim;           /* key/value length per head; 0: n_embd / n_head */
    double rope_llama3_factor;  /* 0: none; else rope_freqs.weight of Llama 3.1's rope_scaling with this factor
                                 * (low_freq_factor 1, high_freq_factor 4, original context 8192) */
    int64_t sliding_window;     /* <arch>.attention.sliding_window in positions; 0: none (not written;
                                 * gemma3, which requires the key: n_ctx) */
    int64_t rope_orig_ctx;      /* phi3 LongRoPE: rope_factors_long/short.weight (fixed ramps), and
                                 * rope.scaling.original_context_length = this, .attn_factor as Phi-3's
                                 * converter computes it; 0: none */
    int trained_stats;          /* 0: matrices U(-1/sqrt(fan_in), ..); 1: shaped like trained weights
                                 * (synthetic): normal, a per-tensor deviation 0.5..1.5 x 1/sqrt(3 fan_in),
                                 * about one outlier (8..15 x) per 1024 values; for packed ratios */
    /* A mixed recipe like llama.cpp's Q*_K_M: when not F32 (0), attn_v and
     * ffn_down of the layers llama.cpp's use_more_bits picks (the first and
     * last eighth, and every third between), and output.weight, are stored
     * in mix_dtype (Q6_K for Q4_K_M); 0 keeps one weight_dtype throughout. */
    lrun_dtype mix_dtype;
    /* A mixture of experts (arch "qwen3moe", or "llama" for Mixtral): n_expert > 0
     * experts per block, each token routed to n_expert_used of them; n_ff is each
     * expert's width. 0: a dense model. */
    int64_t n_expert;
    int64_t n_expert_used;
    /* > 0: skewed expert popularity (synthetic, for cache benchmarks): the
     * router's row of expert e is multiplied by 1 + router_skew/(e+1), so
     * low-numbered experts win the top-k more often (measured in docs/moe.md);
     * 0: a plain random router. */
    double router_skew;
    /* The experts' stacked matrices' dtype when not F32 (0): MXFP4 as gpt-oss ships them;
     * F32 (0): weight_dtype. */
    lrun_dtype expert_dtype;
    /* > 0: YaRN RoPE scaling by this factor (gpt-oss: 32): rope.scaling.type "yarn", .factor, and
     * .original_context_length = n_ctx / factor (at least 1); 0: none. */
    double rope_yarn_factor;
    /* A mixture of experts' scales (docs/moe.md, "Routing of generated models").
     * 0: the token embedding of deviation sqrt(2 n_layer): T5's and PaLM's
     * deviation-1 embedding with GPT-2's and Megatron's 1/sqrt(2 n_layer) on
     * the residual outputs, both on the embedding (the blocks' RMSNorms make
     * only the ratio matter), so the residual stream keeps the token's
     * identity and each block routes each token differently, as trained
     * models do; a tied head's output_norm gain is divided by the same
     * factor, so the logits keep their size; every other tensor as a dense
     * model's. 1: the embedding U(-1/sqrt(n_embd), ..) as a dense model's,
     * whose blocks past the first route every token to the same few experts
     * (the generator's models before 2026-12). Dense models ignore it. */
    int collapsed_routing;
} lrun_model_gen_spec;

/* Writes a complete GGUF of architecture spec.arch at path (the tensors and
 * keys its description in runtime/arch/ lists, as llama.cpp names them): standard metadata, a
 * byte-level BPE ("gpt2") vocabulary, f32 norms near 1 and weights
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)). LRUN_E_ARG names the field of a bad
 * spec (or the tensor whose row is not whole blocks of its dtype); on any
 * failure no file is left behind. */
LRUN_API lrun_status lrun_model_generate(const char *path, const lrun_model_gen_spec *spec);

/* The same model (the same values) as a Hugging Face directory at dir
 * (created when absent): config.json, generation_config.json,
 * tokenizer.json and tokenizer_config.json (the same vocabulary and chat
 * template), and model.safetensors, or n_shards > 1 files with
 * model.safetensors.index.json.
 * Weights and embeddings must be f32, f16 or bf16; q/k rows are in HF
 * layout (half-split RoPE), so the directory computes what the GGUF does.
 * With n_expert > 0: Qwen3MoeForCausalLM or MixtralForCausalLM, one tensor
 * per expert (in expert order), the router skewed as spec.router_skew says. */
LRUN_API lrun_status lrun_model_generate_hf(const char *dir, const lrun_model_gen_spec *spec, int n_shards);

/* ---------------------------------------------------------------- packed weights (docs/packed.md) */

/* The codec lrun_pack writes (docs/packed.md "The codec PEX2"). */
typedef enum lrun_pack_codec {
    LRUN_PACK_CODEC_PEX1 = 0, /* every bf16/f16 tensor PEX1 (a zeroed lrun_pack_opts; `lrun pack` and
                                 * lrun.pack default to PEX2) */
    LRUN_PACK_CODEC_PEX2 = 1, /* bf16 tensors of a multiple of 8 values PEX2 (stored as they are where PEX2
                                 * would grow them); f16 and the rest PEX1. Both engines read both codecs */
} lrun_pack_codec;

typedef struct lrun_pack_opts {
    int n_threads;              /* 0 = every core */
    int progress;               /* 1: progress bar on stderr when it is a terminal */
    int codec;                  /* lrun_pack_codec; 0: PEX1 */
} lrun_pack_opts;

typedef struct lrun_pack_stats {
    size_t in_bytes;            /* the input file */
    size_t out_bytes;           /* the packed file */
    size_t plain_bytes;         /* bf16/f16 tensors, plain */
    size_t packed_bytes;        /* the same tensors, packed */
    int64_t n_packed;           /* tensors packed */
    int64_t n_raw;              /* tensors stored as they are (f32, quantized; bf16 PEX2 would grow) */
    double seconds;
    int64_t n_pex2; /* of n_packed, those in PEX2 */
} lrun_pack_stats;

/* Writes the packed form of the GGUF file in to out: bf16 and f16 tensors
 * losslessly compressed, everything else as it is (stats may be NULL). in
 * may be an HF directory (or .safetensors file): its GGUF, as llama.cpp's
 * converter would write it, is packed (without the tokenizer, which stays
 * in tokenizer.json). A packed file loads with lrun_model_load like the
 * GGUF, its matrices kept packed (docs/packed.md). */
LRUN_API lrun_status lrun_pack(const char *in, const char *out, const lrun_pack_opts *opts, lrun_pack_stats *stats);
/* Writes the GGUF file a packed file came from, byte for byte. */
LRUN_API lrun_status lrun_unpack(const char *in, const char *out, const lrun_pack_opts *opts);

/* ---------------------------------------------------------------- tokenizer */

typedef struct lrun_tokenizer lrun_tokenizer;

typedef enum lrun_token_type {
    LRUN_TOKEN_TYPE_UNDEFINED = 0,
    LRUN_TOKEN_TYPE_NORMAL = 1,
    LRUN_TOKEN_TYPE_UNKNOWN = 2,
    LRUN_TOKEN_TYPE_CONTROL = 3,
    LRUN_TOKEN_TYPE_USER_DEFINED = 4,
    LRUN_TOKEN_TYPE_UNUSED = 5,
    LRUN_TOKEN_TYPE_BYTE = 6
} lrun_token_type;

/* Builds the tokenizer named by tokenizer.ggml.model ("gpt2" byte-level BPE
 * with the pre-tokenizer of tokenizer.ggml.pre, or "llama" SentencePiece BPE). */
LRUN_API lrun_status lrun_tokenizer_init_gguf(lrun_tokenizer **out, const lrun_gguf *gguf);
/* Builds a tokenizer from a Hugging Face tokenizer.json (BPE: byte-level or
 * SentencePiece-style; docs/models.md lists the normalizers, pre-tokenizers,
 * decoders and post-processors). config_path (may be NULL) names the
 * tokenizer_config.json that supplies bos_token, eos_token, add_bos_token,
 * add_eos_token and chat_template. Encoding and decoding then give HF
 * tokenizers' ids and text. Errors name the file and the field. */
LRUN_API lrun_status lrun_tokenizer_load_json(lrun_tokenizer **out, const char *path, const char *config_path);
/* The chat template of tokenizer_config.json; NULL when none (and for GGUF, whose template is metadata). */
LRUN_API const char *lrun_tokenizer_chat_template(const lrun_tokenizer *tokenizer);
LRUN_API void lrun_tokenizer_free(lrun_tokenizer *tokenizer);
LRUN_API int64_t lrun_tokenizer_vocab_size(const lrun_tokenizer *tokenizer);
LRUN_API int32_t lrun_tokenizer_bos(const lrun_tokenizer *tokenizer); /* -1 when none */
LRUN_API int32_t lrun_tokenizer_eos(const lrun_tokenizer *tokenizer); /* -1 when none */
/* Extra end-of-generation ids (eot, eom, <|im_end|> …), as llama.cpp finds them. */
LRUN_API int64_t lrun_tokenizer_eog_count(const lrun_tokenizer *tokenizer);
LRUN_API int32_t lrun_tokenizer_eog(const lrun_tokenizer *tokenizer, int64_t i);
LRUN_API int lrun_tokenizer_add_bos(const lrun_tokenizer *tokenizer); /* the file's add_bos_token */
LRUN_API lrun_token_type lrun_tokenizer_token_type(const lrun_tokenizer *tokenizer, int32_t id);
/* The vocabulary entry as stored (e.g. "Ġthe"); NULL for an id out of range. */
LRUN_API const char *lrun_tokenizer_token_text(const lrun_tokenizer *tokenizer, int32_t id);
/* Id of an exact vocabulary entry, or -1. */
LRUN_API int32_t lrun_tokenizer_find(const lrun_tokenizer *tokenizer, const char *text, size_t len);

/* Encodes len bytes of text. add_special: prepend BOS when the model asks
 * for it. parse_special: match control/user-defined token texts ("<|im_end|>")
 * as single tokens. Writes at most cap ids; *n_out is the full count, so a
 * caller whose cap was too small can retry with a larger buffer. */
LRUN_API lrun_status lrun_tokenizer_encode(const lrun_tokenizer *tokenizer, const char *text, size_t len,
                                  int add_special, int parse_special,
                                  int32_t *ids, int64_t cap, int64_t *n_out);
/* The bytes a token stands for (byte-level decoded; may be part of a UTF-8
 * character). Control tokens give their text when render_special, else "". */
LRUN_API lrun_status lrun_tokenizer_decode_token(const lrun_tokenizer *tokenizer, int32_t id, int render_special,
                                        char *buf, size_t cap, size_t *n_out);
/* Decodes n ids to text as a whole (HF decode: a tokenizer.json's decoders
 * run over the text, e.g. dropping the leading space of SentencePiece;
 * GGUF: the tokens' bytes one after the other). Control tokens are rendered
 * when render_special, else skipped. Writes at most cap bytes; *n_out is the
 * full length. */
LRUN_API lrun_status lrun_tokenizer_decode(const lrun_tokenizer *tokenizer, const int32_t *ids, int64_t n,
                                  int render_special, char *buf, size_t cap, size_t *n_out);

/* ---------------------------------------------------------------- models */

typedef struct lrun_model lrun_model;

typedef enum lrun_rope_style {
    LRUN_ROPE_STYLE_ADJACENT = 0, /* pairs (2i, 2i+1): GGUF llama */
    LRUN_ROPE_STYLE_HALF = 1      /* pairs (i, i+d/2): HF Llama safetensors, NeoX, Qwen2 */
} lrun_rope_style;

/* Hyper-parameters, read from the file. */
typedef struct lrun_model_info {
    char arch[32];           /* "llama" */
    int64_t n_vocab;
    int64_t n_ctx_train;     /* context length the model was trained for */
    int64_t n_embd;          /* width */
    int64_t n_layer;
    int64_t n_head;
    int64_t n_head_kv;
    int64_t head_dim;        /* n_embd / n_head unless the file says otherwise */
    int64_t n_ff;            /* feed-forward width */
    int64_t n_rot;           /* rotated dims per head */
    double rope_freq_base;
    double rms_eps;
    lrun_rope_style rope_style;
    int tied_embeddings;     /* 1 when there is no output.weight */
    size_t weight_bytes;     /* sum of all tensor bytes */
    int64_t n_expert;        /* experts per block of a mixture of experts; 0: dense */
    int64_t n_expert_used;   /* experts each token is routed to */
} lrun_model_info;

typedef struct lrun_load_opts {
    const char *device;      /* "cpu" (default when NULL), "cuda:0" */
    size_t device_budget;    /* bytes; 0 = no cap beyond the device itself */
    int n_threads;           /* CPU threads; 0 = all cores */
    int progress;            /* 1: print a progress bar to stderr when it is a terminal */
    int rope_style;          /* -1: from the file; else an lrun_rope_style to force */
    size_t host_budget;      /* bytes; 0 = none: the model's host account's budget from the start, so
                              * what the load itself holds (FP8 weights widened, the loader's staging)
                              * is under it (lrun_model_set_host_budget) */
} lrun_load_opts;

LRUN_API lrun_status lrun_model_load(lrun_model **out, const char *path, const lrun_load_opts *opts);
LRUN_API void lrun_model_free(lrun_model *model);
LRUN_API const lrun_model_info *lrun_model_get_info(const lrun_model *model);
LRUN_API lrun_device *lrun_model_device(lrun_model *model);
LRUN_API const lrun_tokenizer *lrun_model_tokenizer(const lrun_model *model);
LRUN_API const lrun_gguf *lrun_model_gguf(const lrun_model *model);
LRUN_API int64_t lrun_model_tensor_count(const lrun_model *model);
LRUN_API lrun_tensor *lrun_model_tensor(lrun_model *model, int64_t i);
LRUN_API lrun_tensor *lrun_model_find_tensor(lrun_model *model, const char *name); /* NULL when absent */
/* The model's host account (docs/residency.md "The host budget"): every
 * host allocation lrun makes for the model and its engines (a cpu device's
 * memory, pinned and host memory) is charged to it before it is made. With a
 * budget a charge past it is LRUN_E_OOM naming what was asked and what is
 * held; without one a large charge is checked against the host's available
 * memory (MemAvailable, or the memory cgroup's room when smaller). */
typedef struct lrun_host_stats {
    size_t budget;       /* bytes; 0 = none (the host's available memory bounds) */
    size_t held;         /* bytes held now, the sum of the five below */
    size_t peak;         /* high-water mark of held, bytes */
    size_t weights;      /* weights copied off the mapping (cpu device, pinned, host tiers) */
    size_t kv_cache;     /* KV caches and offloaded KV stores */
    size_t slots;        /* streaming slots and staging buffers */
    size_t scratch;      /* engine scratch, host matmul buffers */
    size_t expert_cache; /* expert caches */
    size_t available;    /* host memory available now (MemAvailable or the cgroup's room), bytes */
    size_t refused;      /* charges refused so far */
} lrun_host_stats;
/* Sets the host budget (bytes; 0 removes it). Bytes already held stay; only later charges are refused. */
LRUN_API lrun_status lrun_model_set_host_budget(lrun_model *model, size_t bytes);
LRUN_API void lrun_model_host_stats(lrun_model *model, lrun_host_stats *out);
/* What the last streaming read of the model's weights did (lrun_model_move_tensors, a cuda engine's
 * upload; docs/models.md "Loading"); all zero before one ran. */
typedef struct lrun_load_stats {
    uint64_t bytes;      /* read from the model's files */
    double seconds;      /* wall time of the read */
    int n_threads;       /* reader threads */
    size_t chunk_bytes;  /* bytes per read (and per pinned staging chunk) */
    double cached;       /* share of the bytes in the page cache when it began, 0 to 1 (-1: unknown) */
    int warm;            /* 1: cached >= 0.9, a load from the page cache (its own defaults: 8 threads,
                          * 4 MiB, unless LRUN_LOAD_THREADS / LRUN_LOAD_CHUNK_MB say otherwise) */
    int kept_cache;      /* 1: the pages read stayed in the page cache (the model fits; no host budget) */
} lrun_load_stats;
LRUN_API void lrun_model_load_stats(const lrun_model *model, lrun_load_stats *out);
/* Bytes of weights in each tier right now. */
LRUN_API size_t lrun_model_tier_bytes(const lrun_model *model, lrun_tier tier);
/* Moves tensors index[i] (0 .. lrun_model_tensor_count) to tier[i] on the
 * model's device, as lrun_tensor_move would each, all or nothing (on failure
 * every tensor is where it was). The ones still in the model file are read
 * by the streaming loader: reader threads pread them into their host
 * destination, or through small pinned chunks onto the GPU, and drop the
 * page cache behind them unless the files fit in half of the host's
 * available memory and no host budget is set (then the next load is warm;
 * lrun_model_load_stats), so loading never holds the model twice (peak host
 * memory: the destinations plus a few tens of MiB of staging;
 * docs/models.md "Loading"). A progress bar shows when the model was loaded
 * with progress on and stderr is a terminal. */
LRUN_API lrun_status lrun_model_move_tensors(lrun_model *model, int64_t n, const int64_t *index,
                                             const lrun_tier *tier);

/* ---------------------------------------------------------------- engine */

/* Runs forward steps of one model over a batch of sequences, each with its
 * own KV cache slot. Scratch and cache memory are taken on the model's device
 * (counted in its budget) when the engine is made and when the dynamic cache
 * grows; never per layer per token. */
typedef struct lrun_engine lrun_engine;

typedef enum lrun_cache_kind {
    LRUN_CACHE_KIND_DYNAMIC = 0, /* grows as needed */
    LRUN_CACHE_KIND_STATIC = 1,  /* n_ctx_max positions per sequence, allocated up front */
    LRUN_CACHE_KIND_OFFLOADED = 2,        /* grows in pinned host memory (outside the device budget);
                                           * only the layer computed and the one prefetched are on
                                           * the device, in two slots */
    LRUN_CACHE_KIND_OFFLOADED_STATIC = 3, /* offloaded, host store and slots allocated up front */
    LRUN_CACHE_KIND_QUANTIZED = 4         /* int8/int4 codes with per-group scales, the last
                                           * kv_residual_len positions exact (HF QuantizedCache) */
} lrun_cache_kind;

/* "dynamic", "static", "offloaded", "offloaded_static", "quantized"; LRUN_E_ARG
 * listing them for any other name. */
LRUN_API lrun_status lrun_cache_kind_from_name(const char *name, lrun_cache_kind *out);
LRUN_API const char *lrun_cache_kind_name(lrun_cache_kind kind);

/* Element type of the KV cache. A type of its own rather than lrun_dtype,
 * whose 0 is f32: here 0 must mean the default. */
typedef enum lrun_kv_dtype {
    LRUN_KV_DTYPE_DEFAULT = 0, /* f16 */
    LRUN_KV_DTYPE_F16 = 1,     /* half the memory; llama.cpp's default */
    LRUN_KV_DTYPE_F32 = 2      /* llama.cpp's bits with its f32 cache (docs/numerics.md) */
} lrun_kv_dtype;

/* What an engine does with weights that are not in the DEVICE tier at init.
 *
 * The AS_PLACED contract, shared by the CPU and CUDA engines (details in
 * docs/residency.md):
 *   - a block's matrices (attn q/k/v/output, ffn gate/up/down) and the LM
 *     head that are off the device and not host-compute are *streamed*:
 *     copied, per forward chunk, into slots taken once at engine init from
 *     the device budget: on cpu prefetch_layers + 1 ring slots of the
 *     largest block's streamed bytes (fewer when fewer blocks stream) and
 *     one slot of the head's size when the head streams; on cuda
 *     prefetch_layers + 1 slots of the largest unit, the head being one
 *     unit of the cycle (lrun_engine_size_placement sizes them). The
 *     staging ring fills them (a fill thread on cpu, a copy stream on cuda)
 *     in compute order, up to prefetch_layers blocks ahead, continuing into
 *     the next step; compute waits for a slot's fill and releases it after
 *     the block. No allocation after init ("streamed" in these names means
 *     staged through the slots: docs/streaming.md). Slot bytes are reported in lrun_engine_stats.slot_bytes;
 *   - a host-compute matrix is never copied: its matmul reads it where it
 *     lives (on cuda: on the CPU, activations crossing instead);
 *   - an off-device embedding table is only gathered: the rows of the
 *     chunk's tokens cross (counted in bytes_streamed, or in
 *     host_compute_bytes when the table is host-compute);
 *   - norms, biases and RoPE factors are converted into engine memory at
 *     init whatever their tier (counted in scratch_bytes);
 *   - the engine reads the placement at init: moving weights of a model
 *     while an AS_PLACED engine of it exists is not allowed (make a new
 *     engine after a move);
 *   - results are bit-identical to the ALL_DEVICE engine on the same device. */
typedef enum lrun_weight_mode {
    LRUN_WEIGHT_MODE_ALL_DEVICE = 0, /* every weight computed as if resident (the default): cuda moves
                                      * them to the device first; cpu reads every tier in place */
    LRUN_WEIGHT_MODE_AS_PLACED = 1   /* keep each weight's tier, as a policy placed them (above) */
} lrun_weight_mode;

/* Which arithmetic an engine uses. The CPU engine always computes llama.cpp's
 * CPU bits (docs/numerics.md). On CUDA, DEFAULT takes the fast path (f32
 * activations, cuBLAS for prompts: close to the CPU, not equal) and EXACT
 * the exact path, bit-identical to the CPU engine but slower; it needs
 * Q4_0/Q4_1/Q8_0 matrices and all weights on the device, else engine init
 * fails with LRUN_E_UNSUPPORTED saying why. */
typedef enum lrun_numerics {
    LRUN_NUMERICS_DEFAULT = 0,
    LRUN_NUMERICS_EXACT = 1
} lrun_numerics;

/* The expert cache's replacement: DEFAULT is LFU (least frequently used,
 * counts halved as they age), which keeps the popular experts of skewed
 * routing; LRU evicts the least recently used. */
typedef enum lrun_expert_cache_replace {
    LRUN_EXPERT_CACHE_REPLACE_DEFAULT = 0,
    LRUN_EXPERT_CACHE_REPLACE_LRU = 1,
    LRUN_EXPERT_CACHE_REPLACE_LFU = 2
} lrun_expert_cache_replace;

/* What the expert cache does with a chosen expert that is not in a slot
 * (docs/moe.md "The expert cache", "Hybrid"): COPY (the default) copies it
 * into a slot over PCIe and the GPU computes it there once the copy is done;
 * HYBRID computes it on the host in the same step, beside the GPU's hits,
 * and copies it into a slot in the background only when its use count beats
 * the slot's expert (decode chunks; prefill chunks copy as COPY does). */
typedef enum lrun_expert_cache_mode {
    LRUN_EXPERT_CACHE_MODE_COPY = 0,
    LRUN_EXPERT_CACHE_MODE_HYBRID = 1
} lrun_expert_cache_mode;

/* Prefill over host experts on CUDA (docs/moe.md "Prefill: streaming host
 * experts"): a prefill chunk (more than 8 tokens) of a block whose experts
 * are host-computed or cached copies the experts it touches to device
 * staging, grouped, double-buffered on a copy stream, and runs them there
 * with the resident kernels, instead of computing them on the host (or
 * through the expert cache one by one). ON: every touched expert; AUTO: the
 * experts with at least moe_prefill_stream_tokens tokens in the chunk (the
 * rest stay on the host); OFF: never. DEFAULT is OFF until the path has run
 * on a GPU, or what the environment variable LRUN_CUDA_MOE_PREFILL_STREAM
 * says (on, off, auto). */
typedef enum lrun_moe_prefill_stream {
    LRUN_MOE_PREFILL_STREAM_DEFAULT = 0,
    LRUN_MOE_PREFILL_STREAM_OFF = 1,
    LRUN_MOE_PREFILL_STREAM_ON = 2,
    LRUN_MOE_PREFILL_STREAM_AUTO = 3
} lrun_moe_prefill_stream;

typedef struct lrun_engine_opts {
    int64_t n_seq_max;       /* sequences (cache slots); default 1 */
    int64_t n_ctx_max;       /* positions per sequence; 0 = the model's n_ctx_train */
    int64_t n_batch_max;     /* tokens per step before it is split; 0 = 512 */
    lrun_cache_kind cache_kind;
    int n_threads;           /* 0 = the model's */
    lrun_kv_dtype kv_dtype;  /* 0 = f16 */
    lrun_weight_mode weight_mode;
    int prefetch_layers;     /* k: streamed blocks copied ahead of the one computing, [0, 64]; 0 = the
                              * device's default (lrun_engine_estimate: 2 on cpu, 1 on cuda; measured,
                              * docs/residency.md and docs/streaming.md) */
    int kv_quant_bits;       /* QUANTIZED: 8 or 4; 0 = 8 */
    int64_t kv_quant_group;  /* QUANTIZED: elements per scale along head_dim; 0 = 64 (or head_dim) */
    int64_t kv_residual_len; /* QUANTIZED: recent positions kept exact; 0 = 128 */
    lrun_numerics numerics;  /* DEFAULT: the device's fastest arithmetic; EXACT: the CPU engine's bits */
    int64_t expert_cache_slots; /* cuda, a mixture of experts: blocks whose experts are host-computed copy the
                                 * chosen experts into this many device slots (replaced by expert_cache_policy)
                                 * and compute them there instead; -1 = as many as half the free device budget
                                 * holds; 0 = off (host compute). The CPU backend computes host experts in place
                                 * either way. */
    lrun_expert_cache_replace expert_cache_policy; /* which slot a miss takes (docs/moe.md "Replacement") */
    lrun_expert_cache_mode expert_cache_mode;      /* a miss copied in (COPY) or computed on the host (HYBRID) */
    lrun_moe_prefill_stream moe_prefill_stream; /* cuda: prefill chunks stream host experts to the device */
    int64_t moe_prefill_stream_tokens; /* AUTO: an expert streams from this many of the chunk's tokens routed
                                        * to it (the planner's lrun.expert_plan.prefill_stream_threshold);
                                        * 0 = 16 */
    const int64_t *moe_prefill_stream_block_tokens; /* AUTO: NULL, or (n_layer) block l's own threshold where
                                                     * > 0 (else moe_prefill_stream_tokens); read at init */
    int64_t host_stream_rows; /* cuda, AS_PLACED: a product over at least this many rows (a prompt chunk) copies
                               * its host-computed matrix to the device and multiplies it there instead (docs/
                               * streaming.md "Prefill over host-computed matrices"); 0 = LRUN_CUDA_HOST_STREAM_ROWS
                               * or 32; -1 = never (every host product on the host); at least 9 (decode steps'
                               * host products stay the planner's) */
    /* A layer split (docs/multigpu.md): the blocks in n_split parts of consecutive blocks, each run by
     * an engine of its own on the model's device, the hidden state (n_tokens, n_embd) handed from
     * one part to the next; logits bit-identical to one engine's. 0 or 1 = no split. The CPU backend
     * runs parts; a backend that cannot is LRUN_E_UNSUPPORTED at init. */
    int64_t n_split;
    const int64_t *split_layers; /* (n_split) blocks of each part, in order: each >= 1, summing to n_layer */
    /* Set by the split for each of its parts (the blocks [layer_first, layer_first + layer_count)),
     * never by callers: 0, 0 is the whole model, anything else is LRUN_E_ARG at the facade. */
    int64_t layer_first, layer_count;
} lrun_engine_opts;

/* What an engine made with these options would take from the device budget
 * besides the weights, computed by the engine's own sizing code without
 * allocating anything. For a whole placement (slots, rows, pool slack) see
 * lrun_engine_size_placement. */
typedef struct lrun_engine_needs {
    size_t scratch_bytes;         /* the step scratch (norms in f32 and the CUDA exact path's block included), bytes */
    size_t kv_bytes_per_position; /* KV cache, every layer's k and v for n_seq_max sequences, bytes */
    int prefetch_layers;          /* k the engine uses: opts->prefetch_layers, or the device's default */
} lrun_engine_needs;

/* Fills out for model on its device; LRUN_E_ARG for options init would refuse. */
LRUN_API lrun_status lrun_engine_estimate(lrun_engine_needs *out, lrun_model *model, const lrun_engine_opts *opts);
/* The device bytes an AS_PLACED engine made with opts would take were the
 * model's weights placed as proposed, broken down, without moving a weight
 * or allocating device memory: the engines' own layout code (the functions
 * their init runs) sizes it, so a placement planned with it fits when the
 * engine is made (lrun.residency plans with it; docs/residency.md). */
typedef struct lrun_placement_size {
    size_t weight_bytes;     /* weights the placement leaves on the device */
    size_t slot_bytes;       /* streaming slots: cpu, k+1 ring slots of the largest streamed block and
                              * one of the head's size; cuda, k+1 slots of the largest unit (a block's
                              * streamed matrices, or the head); with packed weights, the scratch they
                              * decode into (docs/packed.md) */
    size_t embd_rows_bytes;  /* cuda: rows gathered from an off-device embedding table, and their
                              * index; 0 on cpu, which reads the table in place */
    size_t scratch_bytes;    /* the step scratch (norms in f32, the CUDA exact path's block) */
    size_t kv_init_bytes;    /* the KV cache right after init: static kinds' whole store or slots */
    size_t kv_max_bytes;     /* the KV cache at its highest while every sequence grows to n_ctx_max:
                              * the store when it is on the device (not an offloaded one), staging
                              * slots, quantized rings, and what the last growth holds twice */
    size_t pool_slack_bytes; /* cuda: the most the device pool can strand in arena tails
                              * (docs/residency.md "Fragmentation"); 0 on cpu */
    size_t init_bytes;       /* what engine init takes: slots + rows + scratch + kv_init */
    size_t peak_bytes;       /* weights + slots + rows + scratch + kv_max + pool slack: the budget
                              * the placement needs */
    int prefetch_layers;     /* k the engine uses: opts->prefetch_layers, or the device's default */
} lrun_placement_size;

/* tiers and host_compute: (lrun_model_tensor_count) indexed like
 * lrun_model_tensor; NULL = each tensor's tier and host-compute flag now.
 * opts as for lrun_engine_init (weight_mode is taken as AS_PLACED).
 * LRUN_E_ARG for options init would refuse or a tier out of range. */
LRUN_API lrun_status lrun_engine_size_placement(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                       const lrun_tier *tiers, const int8_t *host_compute);
/* The same with packed (indexed the same; NULL = each tensor's form now): 1
 * sizes the tensor packed (its known packed size; the plain size when it was
 * never packed), and the slots with the scratch packed weights decode into. */
LRUN_API lrun_status lrun_engine_size_placement_packed(lrun_placement_size *out, lrun_model *model,
                                                       const lrun_engine_opts *opts, const lrun_tier *tiers,
                                                       const int8_t *host_compute, const int8_t *packed);
/* One part of the layer split opts asks for (n_split > 1; part in [0, n_split)), sized
 * alone as lrun_engine_size_placement sizes an engine: its engine's slots, rows, scratch,
 * KV cache and pool slack, and weight_bytes the weights it reads left on the device (its
 * blocks', the embedding in the first part, the output norm and head in the last). What
 * the planner fits into each device's room (lrun.multigpu, docs/multigpu.md).
 * LRUN_E_ARG for options without a split or a part out of range. */
LRUN_API lrun_status lrun_engine_size_placement_part(lrun_placement_size *out, lrun_model *model,
                                                     const lrun_engine_opts *opts, int64_t part,
                                                     const lrun_tier *tiers, const int8_t *host_compute,
                                                     const int8_t *packed);
/* k that prefetch_layers = 0 means on a device of this kind: the one place both engines take it from. */
LRUN_API int lrun_engine_default_prefetch(lrun_device_kind kind);
/* The pinned host memory an engine of this kind takes at init for its own
 * staging, whatever the placement, bytes: on cuda the per-step token table
 * (28 bytes a token of n_batch_max) and the logits' host copy (64 rows of
 * n_vocab floats), charged to the host budget as scratch; 0 on cpu. The
 * planner counts it against the host budget (lrun.host_budget), so a plan
 * that fits on paper fits at init. LRUN_E_ARG for a NULL out or model or a
 * negative n_batch_max. */
LRUN_API lrun_status lrun_engine_host_staging_bytes(size_t *out, const lrun_model *model, lrun_device_kind kind,
                                                    const lrun_engine_opts *opts);
/* How fast host compute reads weights: bytes of a synthetic weight of dtype
 * (rows of 4096 elements; varied words, normal numbers: a zeroed one read
 * at cache speed in a VM) over the seconds of one-row lrun_cpu_matmul on
 * the model's threads; one warm-up, then the best of three. bytes in
 * [1 MiB, 4 GiB], taken from host memory for the call, and raised to twice
 * the machine's last-level cache and at least 1 GiB (at most a quarter of
 * free memory) so that the figure is DRAM's, as a model's weights are read. */
LRUN_API lrun_status lrun_model_measure_host_matmul(lrun_model *model, lrun_dtype dtype, size_t bytes,
                                           double *bytes_per_s);
/* How fast the runtime's threaded host copy (lrun_threadpool_memcpy on the
 * model's threads) moves a written buffer into another: bytes over the
 * seconds of one copy (of varied words); one warm-up, then the best of three. What a weight
 * streamed from the host or mmap tier on cuda crosses before the pinned
 * link (staging buffers). bytes in [1 MiB, 4 GiB], raised as
 * lrun_model_measure_host_matmul's (twice the last-level cache, at least
 * 1 GiB), with source and destination at most a quarter of free memory. */
LRUN_API lrun_status lrun_model_measure_host_copy(lrun_model *model, size_t bytes, double *bytes_per_s);
/* lrun_model_measure_host_copy with the model's device copying pinned host
 * memory to it the whole time (a buffer of copy_bytes, over and over): a
 * weight staged from the host or mmap tier is copied by the threads into
 * pinned buffers while the DMA engine reads the ones filled before, both
 * on the host's DRAM. *copy_bytes_per_s (may be NULL): the DMA's own rate
 * meanwhile. LRUN_E_UNSUPPORTED on a device without asynchronous copies
 * (cpu); the copy buffer is taken from the device budget for the call.
 * copy_bytes in [1 MiB, 1 GiB]. */
LRUN_API lrun_status lrun_model_measure_host_copy_copying(lrun_model *model, size_t bytes, size_t copy_bytes,
                                                          double *bytes_per_s, double *copy_bytes_per_s);
/* How fast a batched product runs (prefill, docs/residency.md "Predicted
 * prefill"): flop/s (2 · n · k · rows over the seconds) of y (rows, n) =
 * x (rows, k) · Wᵀ over a synthetic weight of dtype, on_device 1: where the
 * model's engine computes it (cuda: lrun_k_gemm, the weight dequantized
 * into an f16/bf16 slot and one cuBLAS GEMM; cpu: lrun_cpu_matmul on the
 * model's threads), 0: lrun_cpu_matmul on the model's threads (host compute
 * on cuda). n, k in [1, 65536], k a whole number of the dtype's blocks, rows
 * in [1, 8192]; on the host n is lowered so one product is at most 2 GFLOP
 * (a rate, not a model's shape). One warm-up, then the best of three. */
LRUN_API lrun_status lrun_model_measure_matmul(lrun_model *model, int on_device, lrun_dtype dtype, int64_t n,
                                               int64_t k, int64_t rows, double *flops_per_s);
/* How fast the engine's batch-1 decode GEMV reads weights of dtype from the
 * device's memory (decode, docs/residency.md "Predicted decode on CUDA"):
 * bytes/s of lrun_k_gemv_multi at m = 1, with the kernel the CUDA engine
 * picks for dtype under fast numerics (dp4a or not), over copies of one
 * (n, k) weight of a fixed non-zero pattern laid end to end across bytes,
 * raised to 4x the GPU's L2 and lowered to half the free budget, one launch
 * per copy. n, k in [1, 65536], k a whole number of the dtype's blocks,
 * bytes in [1 MiB, 16 GiB]. One warm-up, then the best of three.
 * LRUN_E_DEVICE on a model whose device is not CUDA (on the CPU,
 * lrun_model_measure_weights_gemv measures the decode GEMV). */
LRUN_API lrun_status lrun_model_measure_device_gemv(lrun_model *model, lrun_dtype dtype, int64_t n, int64_t k,
                                                    size_t bytes, double *bytes_per_s);
/* How fast packed weights decode (docs/packed.md): plain bytes of synthetic
 * trained-like bf16 per second, on_device 1: where the model's engine
 * decodes them (cuda: lrun_k_packed_decode, device memory to device memory;
 * cpu: the host decoder), 0: the host decoder on the model's threads (host
 * compute). One warm-up, then the best of three; bytes in [1 MiB, 4 GiB]. */
LRUN_API lrun_status lrun_model_measure_packed_decode(lrun_model *model, int on_device, size_t bytes,
                                                      double *bytes_per_s);
/* How fast host compute multiplies packed weights at batch 1, against the
 * same weights plain: *packed_per_s, plain bytes per second of
 * lrun_cpu_matmul_packed (decoded a tile at a time before each tile's
 * product) on the model's threads over copies of one synthetic trained-like
 * bf16 weight of 2048 rows of 4096, packed with the codec the model's
 * weights have or will have, laid end to end across bytes raised to twice
 * the last-level cache (1 GiB at least, a quarter of the free memory at
 * most) so that they come from DRAM as a model's would; *plain_per_s, the
 * same span of that weight's plain copies through lrun_cpu_matmul. One
 * warm-up, then the best of two, each; bytes in [1 MiB, 4 GiB]. */
LRUN_API lrun_status lrun_model_measure_packed_host_matmul(lrun_model *model, size_t bytes, double *packed_per_s,
                                                           double *plain_per_s);
/* How fast the CPU's decode GEMV reads the model's own matrices of dtype
 * (docs/residency.md "Predicted decode on the CPU"): bytes over the mean
 * seconds of five passes (after a warm-up) of one-row lrun_cpu_matmul on
 * the model's threads over its matrices in file order, where the host reads
 * them (the engine's copy, else the file mapping), until bytes, raised to
 * twice the last-level cache, are covered (a smaller model: all of them).
 * bytes in [1 MiB, 4 GiB]; LRUN_E_UNSUPPORTED when no matrix of dtype is
 * readable by the host (packed, or on a GPU only). */
LRUN_API lrun_status lrun_model_measure_weights_gemv(lrun_model *model, lrun_dtype dtype, size_t bytes,
                                                     double *bytes_per_s);
/* lrun_model_measure_weights_gemv with the model's device copying pinned
 * host memory to it the whole time (a buffer of copy_bytes, over and over:
 * what a decode step's streamed weights do beside the host's products, both
 * reading the host's DRAM). *copy_bytes_per_s (may be NULL): the copies' own
 * rate meanwhile. LRUN_E_UNSUPPORTED on a device without asynchronous copies
 * (cpu); the copy buffer is taken from the device budget for the call
 * (LRUN_E_OOM when it does not fit). copy_bytes in [1 MiB, 1 GiB]. */
LRUN_API lrun_status lrun_model_measure_weights_gemv_copying(lrun_model *model, lrun_dtype dtype, size_t bytes,
                                                             size_t copy_bytes, double *bytes_per_s,
                                                             double *copy_bytes_per_s);
/* Seconds of one layer's one-token attention over n_pos cached positions
 * (f16 cache, the model's heads) on the model's threads, the cache cold (a
 * buffer of twice the last-level cache read before each run, as a decode
 * step's weights evict it): the median of five runs after a warm-up.
 * n_pos in [1, 2^20]. */
LRUN_API lrun_status lrun_model_measure_decode_attention(lrun_model *model, int64_t n_pos, double *seconds);
/* Seconds one layer of the engine's attention takes in a prefill chunk of
 * n_tok tokens from an empty cache (token i against positions [0, i + 1)),
 * on the model's CUDA device: lrun_k_attention with the model's heads, KV
 * heads and head_dim over an f16 cache (the default KV dtype), a fixed
 * non-zero pattern; the model's layers timed back to back (at most 64), a
 * warm-up, then the best of three, per layer (docs/residency.md "Predicted
 * prefill"). n_tok in [1, 8192]. LRUN_E_DEVICE on a model whose device is
 * not CUDA (the CPU's prefill attention is costed from its matmul rate). */
LRUN_API lrun_status lrun_model_measure_prefill_attention(lrun_model *model, int64_t n_tok, double *seconds);
/* How fast the disk tier reads the model's file (docs/residency.md): bytes
 * per second of direct reads (O_DIRECT, the tier's request size and queue
 * depth; buffered where the filesystem refuses it) over up to bytes of the
 * model's weights in file order, the second of two passes over them (decode
 * re-reads the tier every token), bytes in [1 MiB, 16 GiB]. LRUN_E_UNSUPPORTED
 * when no weight is a file mapping. */
LRUN_API lrun_status lrun_model_measure_disk_read(lrun_model *model, size_t bytes, double *bytes_per_s);

/* What an engine has done since it was made (or last reset): residency
 * traffic for m:stats(), tests and benchmarks. Times are wall seconds. */
typedef struct lrun_engine_stats {
    int64_t steps;               /* forward chunks run */
    uint64_t bytes_streamed;     /* weight bytes brought to the device for compute: per chunk, every
                                  * streamed unit's bytes (counted when compute takes it) plus
                                  * gathered embedding rows (n_tokens * row bytes) */
    uint64_t kv_bytes_moved;     /* KV cache bytes moved between its store and device slots
                                  * (offloaded: host <-> device; quantized: codes <-> slots) */
    double copy_seconds;         /* time the staging ring spent filling weight slots (cpu: its fill
                                  * thread; cuda: the copy stream) */
    double stall_seconds;        /* time compute waited for a slot's fill */
    int64_t prefetch_hits;       /* streamed units (blocks, head) ready when compute reached them */
    int64_t prefetch_misses;     /* streamed units compute had to wait for */
    uint64_t host_compute_bytes; /* weight bytes read by matmuls run on the host (per chunk, each
                                  * host-compute matrix's bytes; gathered rows of a host-compute table) */
    size_t weight_device_bytes;  /* weights resident on the device */
    size_t slot_bytes;           /* device bytes of the streaming slots */
    size_t kv_bytes;             /* device bytes of the KV cache now (an offloaded store is not) */
    size_t scratch_bytes;        /* device bytes of the step scratch (the exact path's block included) */
    uint64_t kv_bytes_copied;    /* KV cache bytes copied by seq_copy, seq_reorder and copy on write */
    lrun_kv_dtype kv_dtype;      /* the cache's element type: LRUN_KV_DTYPE_F16 or _F32 (never DEFAULT) */
    int prefetch_layers;         /* k: streamed units issued ahead of the one computing (0: nothing streams) */
    /* The CUDA backend's own; 0 on backends without them (the CPU). */
    int64_t graph_captures;      /* decode shapes captured into a CUDA graph */
    int64_t graph_launches;      /* forward chunks run by replaying a graph */
    int graphs_enabled;          /* 1: decode steps may run as graphs (a STATIC cache, LRUN_CUDA_GRAPHS not 0,
                                  * no capture failed, nothing streamed) */
    int pdl_enabled;             /* 1: kernels start while their predecessor drains (sm_90+, LRUN_CUDA_PDL not 0) */
    int exact;                   /* 1: the exact path, bit-identical to the CPU engine (LRUN_NUMERICS_EXACT) */
    /* The disk tier's reads (residency/disk_reader.c); 0 when no weight is in LRUN_TIER_DISK. */
    uint64_t disk_bytes_read;    /* bytes read from the model file(s), aligned spans included */
    double disk_read_seconds;    /* wall time spent in disk reads (bandwidth = bytes / seconds) */
    int disk_queue_depth;        /* reads in flight at once: the reader's threads (pread pool) */
    int disk_direct;             /* 1: O_DIRECT (page cache bypassed); 0: buffered (the filesystem refused) */
    int64_t disk_stalls;         /* acquires of a unit with disk-tier weights that waited for its fill */
    /* The CPU engine's disk-tier expert stacks, read per chosen expert (docs/moe.md "Experts from the disk");
     * their reads count in disk_bytes_read and disk_read_seconds. */
    int64_t expert_store_hits;   /* chosen experts found in a slot of the expert store */
    int64_t expert_store_misses; /* chosen experts read from the disk */
    /* Prefill chunks' host experts streamed to the device (lrun_moe_prefill_stream); 0 without. */
    uint64_t prefill_stream_bytes;  /* expert bytes copied to the staging buffers (gate, up and down slices) */
    int64_t prefill_stream_experts; /* (block, chunk, expert) triples streamed */
    /* Of a cached or hybrid block's prefill chunks: experts found in the expert cache's slots, run from there
     * instead of streamed (docs/moe.md "Prefill over a cached block"). */
    uint64_t prefill_slot_bytes;  /* expert bytes read from slots, so not streamed (gate, up and down slices) */
    int64_t prefill_slot_experts; /* (block, chunk, expert) triples run from slots */
    /* A CUDA engine's host compute (weights computed where they sit): where the decode's host time goes,
     * for predictions to be checked against (host_compute_bytes / host_compute_seconds is the host's rate
     * as the engine ran it); 0 on the CPU backend, whose compute is all on the host. */
    double host_compute_seconds; /* wall time in host products (their threads' work, decoding packed weights) */
    double host_wait_seconds;    /* wall time the host waited for the device before a host product: its
                                  * input coming down, behind the stream's queued work and weight waits */
    /* Chunks of many rows (prompts) that multiplied a host-computed matrix on the device instead
     * (lrun_engine_opts.host_stream_rows): the matrices' bytes copied, and the products. */
    uint64_t host_stream_bytes;
    int64_t host_stream_products;
} lrun_engine_stats;

LRUN_API lrun_status lrun_engine_init(lrun_engine **out, lrun_model *model, const lrun_engine_opts *opts);
LRUN_API void lrun_engine_free(lrun_engine *engine);
LRUN_API int64_t lrun_engine_n_seq_max(const lrun_engine *engine);
LRUN_API int64_t lrun_engine_n_ctx_max(const lrun_engine *engine);
/* Positions stored for a sequence (its next token goes at this position). */
LRUN_API int64_t lrun_engine_seq_len(const lrun_engine *engine, int64_t seq);
/* Forgets the sequence's cache from position len onward (0 = all of it). */
LRUN_API lrun_status lrun_engine_seq_truncate(lrun_engine *engine, int64_t seq, int64_t len);
/* Makes dst's cache a copy of src's (for forks and beams). On the CPU
 * engine the exact caches share src's blocks of 64 positions: no bytes
 * move, and a sequence writing into a shared, partly filled block copies
 * that block first (docs/kv-cache.md). */
LRUN_API lrun_status lrun_engine_seq_copy(lrun_engine *engine, int64_t dst, int64_t src);
/* Beam reordering in one call: sequences [0, n) become what sequences
 * src_of_dst[0..n) were (sources may repeat and may lie past n). Exact
 * caches swap block tables (no bytes move; the next step copies at most one
 * block per repeated source); quantized moves records and copies only
 * repeated sources. On failure nothing changes. kv_bytes_copied in the
 * stats counts what was copied. The CUDA engine remaps each sequence's
 * physical row (no bytes move) and copies only repeated sources or sources
 * past n, one sequence of every layer each. */
LRUN_API lrun_status lrun_engine_seq_reorder(lrun_engine *engine, const int64_t *src_of_dst, int64_t n);

/* Appends n_pos positions of pseudo-random keys and values in [-1, 1) (a
 * function of seed) to seq in every layer, as if a prompt had been run,
 * without computing one: decode benchmarks at long contexts, whose speed
 * depends on the length and not on the values (tests/bench/kv_bench.lua).
 * CUDA engine only (LRUN_E_UNSUPPORTED on a backend without it, the CPU's). */
LRUN_API lrun_status lrun_engine_seq_fill_random(lrun_engine *engine, int64_t seq, int64_t n_pos, uint64_t seed);

/* One forward step over n_tokens tokens. Token i belongs to sequence seq[i]
 * and goes at that sequence's next position; a sequence's tokens appear in
 * order. For each i with want_logits[i] != 0 (want_logits NULL = only the
 * last token of each sequence in this step), one row of n_vocab logits is
 * written to logits, in token order: logits is (n_out, n_vocab) and *n_out
 * says how many rows were written. On any failure no sequence is changed. */
LRUN_API lrun_status lrun_engine_step(lrun_engine *engine, int64_t n_tokens, const int32_t *tokens,
                             const int32_t *seq, const int8_t *want_logits,
                             float *logits, int64_t logits_rows_cap, int64_t *n_out);

LRUN_API void lrun_engine_get_stats(const lrun_engine *engine, lrun_engine_stats *out);
LRUN_API void lrun_engine_reset_stats(lrun_engine *engine);
/* A mixture of experts' routing since the engine was made (or its stats
 * last reset), counted where the router's top-k runs (both backends):
 * counts (n_layer * n_expert, row l = block l) = how many tokens chose
 * expert x in block l; tokens (n_layer) = tokens routed through block l
 * (prompt and decode alike, every chunk). Row l sums to tokens[l] *
 * n_expert_used. Either pointer may be NULL; sizes are the model's
 * (lrun_model_info). A dense model writes nothing. LRUN_E_ARG on a NULL
 * engine. */
LRUN_API lrun_status lrun_engine_expert_counts(const lrun_engine *engine, int64_t *counts, int64_t *tokens);
/* The expert cache (lrun_engine_opts.expert_cache_slots; CUDA only) since
 * the engine was made or its stats last reset: hits and misses (n_layer
 * each, row l = block l's acquires of a slot that held its expert or had to
 * be filled), prefetches (n_layer: slots filled ahead with the block's
 * likely experts, the previous token's choices), bytes copied into slots
 * (all blocks, prefetches included) and the slot count. Any pointer may be
 * NULL. An engine without a cache sets *slots to 0 and writes nothing
 * else. LRUN_E_ARG on a NULL engine. */
LRUN_API lrun_status lrun_engine_expert_cache_counts(const lrun_engine *engine, int64_t *hits, int64_t *misses,
                                                     int64_t *prefetches, uint64_t *bytes_copied, int64_t *slots);
/* A hybrid expert cache's (LRUN_EXPERT_CACHE_MODE_HYBRID) counts since the
 * engine was made or its stats last reset, per block (n_layer each):
 * host_computed = chosen experts computed on the host because no ready slot
 * held them (also counted in misses), admitted = such misses copied into a
 * slot in the background after their step. Either pointer may be NULL; an
 * engine without a cache writes nothing. LRUN_E_ARG on a NULL engine. */
LRUN_API lrun_status lrun_engine_expert_cache_hybrid_counts(const lrun_engine *engine, int64_t *host_computed,
                                                            int64_t *admitted);
/* The expert cache's bytes copied into slots per block (n_layer of them),
 * misses, prefetches and admissions alike, since the engine was made or its
 * stats last reset: they sum to lrun_engine_expert_cache_counts' total. An
 * engine without a cache writes nothing. LRUN_E_ARG on a NULL engine or
 * bytes_copied. */
LRUN_API lrun_status lrun_engine_expert_cache_layer_bytes(const lrun_engine *engine, uint64_t *bytes_copied);
/* Bytes of weights multiplied on the host per block (n_layer of them: each
 * block's host-computed matrices and expert slices, its share of
 * lrun_engine_stats.host_compute_bytes; the head's and the embedding's are
 * no block's) since the engine was made or its stats last reset. LRUN_E_ARG
 * on a NULL engine or bytes. */
LRUN_API lrun_status lrun_engine_host_compute_layer_bytes(const lrun_engine *engine, uint64_t *bytes);

/* ---------------------------------------------------------------- sampling */

/* A seeded random generator (xoshiro256**): the same seed, the same draws. */
typedef struct lrun_rng lrun_rng;
LRUN_API lrun_status lrun_rng_init(lrun_rng **out, uint64_t seed);
LRUN_API void lrun_rng_free(lrun_rng *rng);
LRUN_API double lrun_rng_uniform(lrun_rng *rng); /* [0, 1) */

/* HF GenerationConfig semantics; the defaults are HF's. */
typedef struct lrun_sampling_params {
    int do_sample;              /* 0: greedy (argmax) */
    float temperature;          /* 1.0 */
    int32_t top_k;              /* 50; 0 = off */
    float top_p;                /* 1.0 = off */
    float min_p;                /* 0.0 = off */
    float repetition_penalty;   /* 1.0 = off */
} lrun_sampling_params;

/* Index of the largest logit (the first of equals). */
LRUN_API int32_t lrun_logits_argmax(const float *logits, int64_t n_vocab);
/* For each distinct id in history: a logit < 0 is multiplied by penalty, else divided. */
LRUN_API lrun_status lrun_logits_repetition_penalty(float *logits, int64_t n_vocab, const int32_t *history,
                                           int64_t n_history, float penalty);
/* Applies repetition penalty, then temperature, top-k, top-p, min-p (HF order),
 * then draws one token (or takes the argmax when !do_sample). logits is
 * modified. work must hold n_vocab floats and n_vocab int32 (see
 * lrun_sample_work_bytes). */
LRUN_API size_t lrun_sample_work_bytes(int64_t n_vocab);
LRUN_API lrun_status lrun_sample(float *logits, int64_t n_vocab, const lrun_sampling_params *params,
                        const int32_t *history, int64_t n_history, lrun_rng *rng, void *work,
                        int32_t *out_token);
/* log-softmax in place; used by beams and by tests comparing distributions. */
LRUN_API void lrun_logits_log_softmax(float *logits, int64_t n_vocab);

#ifndef LRUN_CDEF
#ifdef __cplusplus
}
#endif
#endif

#endif /* LRUN_H */
