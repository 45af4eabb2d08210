/* common.cuh — what every kernel file shares: half/bfloat16 bit conversions,
 * unaligned-safe loads, warp and block reductions, and the host-side checks
 * every launcher makes (arguments, grid limits, the launch itself).
 *
 * Device helpers are static and force-inlined: each kernels/<op>.cu is its
 * own translation unit (no relocatable device code), so nothing here may
 * need a definition elsewhere. */
#ifndef LRUN_KERNELS_COMMON_CUH
#define LRUN_KERNELS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels.h"
extern "C" {
#include "core/error.h" /* a C header without its own extern "C" */
}

// ---------------------------------------------------------------- limits

/* Largest gridDim.x a launch may ask for; grid-stride loops cover the rest. */
#define LRUN_K_MAX_GRID ((int64_t)0x7fffffff)
/* Grid size of element-wise grid-stride kernels: enough blocks to fill an
 * H100 many times over; more would only add scheduling. */
#define LRUN_K_ELTWISE_BLOCKS ((int64_t)65536)

// ---------------------------------------------------------------- f16 / bf16 bits

/* IEEE half bits → float (exact). */
static __device__ __forceinline__ float lrun_k_f16(uint16_t h) { return __half2float(__ushort_as_half(h)); }
/* bfloat16 bits → float (exact: the top half of a float). */
static __device__ __forceinline__ float lrun_k_bf16(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
/* float → IEEE half bits, round to nearest even (as lrun_f32_to_f16). */
static __device__ __forceinline__ uint16_t lrun_k_to_f16(float f) { return __half_as_ushort(__float2half_rn(f)); }
/* float → bfloat16 bits, round to nearest even (as lrun_f32_to_bf16 for every non-NaN). */
static __device__ __forceinline__ uint16_t lrun_k_to_bf16(float f)
{
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

/* Stores f as element i of dst in dtype D (LRUN_DTYPE_F32, F16 or BF16). */
template <int D> static __device__ __forceinline__ void lrun_k_store(void *dst, int64_t i, float f)
{
    if (D == LRUN_DTYPE_F32) ((float *)dst)[i] = f;
    else if (D == LRUN_DTYPE_F16) ((uint16_t *)dst)[i] = lrun_k_to_f16(f);
    else ((uint16_t *)dst)[i] = lrun_k_to_bf16(f);
}

/* Element i of a row of float dtype T (F32, F16 or BF16) as f32. */
template <int T> static __device__ __forceinline__ float lrun_k_load_float(const uint8_t *row, int64_t i)
{
    if (T == LRUN_DTYPE_F32) return __ldg((const float *)row + i);
    if (T == LRUN_DTYPE_F16) return lrun_k_f16(__ldg((const unsigned short *)row + i));
    return lrun_k_bf16(__ldg((const unsigned short *)row + i));
}

// ---------------------------------------------------------------- gpt-oss's gate

/* swiglu_oai (ggml's, alpha 1.702, limit 7), as the CPU's moe_cpu.c:
 * min(g, 7) / (1 + e^(1.702·-min(g, 7))) · (clamp(u, -7, 7) + 1). */
static __device__ __forceinline__ float lrun_k_swiglu_oai1(float g, float u)
{
    const float x = fminf(g, 7.0f), y = fminf(fmaxf(u, -7.0f), 7.0f);
    const float glu = __fdiv_rn(x, __fadd_rn(1.0f, expf(__fmul_rn(1.702f, -x))));
    return __fmul_rn(glu, __fadd_rn(y, 1.0f));
}

// ---------------------------------------------------------------- loads

/* Read-only loads through the non-coherent path. Blocks of 18, 34 and 210
 * bytes leave their fields only 2-byte aligned, so 32-bit words of them are
 * read as two halves. */
static __device__ __forceinline__ uint32_t lrun_k_ld16(const uint8_t *p) { return __ldg((const unsigned short *)p); }
static __device__ __forceinline__ uint32_t lrun_k_ld32_a2(const uint8_t *p)
{
    return lrun_k_ld16(p) | (lrun_k_ld16(p + 2) << 16);
}
static __device__ __forceinline__ uint32_t lrun_k_ld32(const uint8_t *p) { return __ldg((const unsigned int *)p); }

/* 16 bytes of weights that are read exactly once: no L1 allocation, so the
 * activations that every warp re-reads stay cached. p is 16-byte aligned. */
static __device__ __forceinline__ uint4 lrun_k_ld128_stream(const uint8_t *p)
{
    uint4 v;
    /* not volatile: a pure load of read-only memory, free to be scheduled early */
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// ---------------------------------------------------------------- reductions

static __device__ __forceinline__ float lrun_k_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float lrun_k_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum (MAX = 0) or max (MAX = 1) of v over a block of NT threads (a
 * multiple of 32), returned to every thread. scratch: 32 floats of shared
 * memory. Every thread of the block must call it (it synchronizes). */
template <int NT, int MAX> static __device__ __forceinline__ float lrun_k_block_reduce(float v, float *scratch)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = MAX ? lrun_k_warp_max(v) : lrun_k_warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < NT / 32 ? scratch[lane] : (MAX ? -INFINITY : 0.0f);
        v = MAX ? lrun_k_warp_max(v) : lrun_k_warp_sum(v);
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    v = scratch[0];
    __syncthreads(); /* the next call may overwrite scratch */
    return v;
}

// ---------------------------------------------------------------- programmatic dependent launch

/* Decode runs ~8 dependent kernels per layer; between two of them the GPU
 * idles while the first drains its last blocks and the second ramps up.
 * With programmatic dependent launch (sm_90+, lrun_k_set_pdl) a kernel is
 * started while its predecessor still runs: its blocks do what needs no
 * earlier result (a GEMV issues its weight loads) and then wait here for
 * the predecessor to complete, its writes visible. Every kernel launched
 * through lrun_k_launch must call lrun_k_pdl_wait before it reads anything
 * an earlier kernel writes or writes anything an earlier kernel reads, on
 * every path through the kernel; without PDL the wait is a no-op. */
static __device__ __forceinline__ void lrun_k_pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Lets the next kernel of the stream start (its blocks take SM slots as this
 * kernel's blocks exit). Called first thing: the dependent still waits for
 * this kernel's completion in its lrun_k_pdl_wait, so the trigger only
 * decides how early it may be scheduled, never what it sees. */
static __device__ __forceinline__ void lrun_k_pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Launches kernel on stream, as a programmatic dependent of the kernel
 * before it when lrun_k_pdl_enabled() (this thread's setting), else as an
 * ordinary launch. The kernel must follow lrun_k_pdl_wait's rule. */
template <typename... P, typename... A>
static inline cudaError_t lrun_k_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shmem, cudaStream_t st,
                                        A &&...args)
{
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = shmem;
    cfg.stream = st;
    cfg.attrs = &attr;
    cfg.numAttrs = lrun_k_pdl_enabled() ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, (P)args...);
}

// ---------------------------------------------------------------- host-side checks

/* Blocks of a grid-stride launch over `work` items, block_threads each: at
 * least 1, at most cap. */
static inline unsigned lrun_k_grid(int64_t work, int block_threads, int64_t cap)
{
    int64_t b = (work + block_threads - 1) / block_threads;
    if (b < 1) b = 1;
    return (unsigned)(b < cap ? b : cap);
}

/* The result of the launch just made: LRUN_E_DEVICE naming op and the CUDA
 * error (an invalid configuration, or an earlier asynchronous fault that
 * surfaced here). */
static inline lrun_status lrun_k_launched(const char *op)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return lrun_fail(LRUN_E_DEVICE, "%s: kernel launch failed: %s (%s)", op, cudaGetErrorString(e),
                         cudaGetErrorName(e));
    return LRUN_OK;
}

/* Elements per block of a weight dtype lrun's kernels read, or 0 for one
 * they do not (Q8_1 and Q8_K are activation formats); *block_bytes its bytes. */
static inline int64_t lrun_k_block(lrun_dtype t, size_t *block_bytes)
{
    switch (t) {
    case LRUN_DTYPE_F32: *block_bytes = 4; return 1;
    case LRUN_DTYPE_F16:
    case LRUN_DTYPE_BF16: *block_bytes = 2; return 1;
    case LRUN_DTYPE_Q4_0: *block_bytes = 18; return 32;
    case LRUN_DTYPE_Q4_1: *block_bytes = 20; return 32;
    case LRUN_DTYPE_Q8_0: *block_bytes = 34; return 32;
    case LRUN_DTYPE_Q4_K: *block_bytes = 144; return 256;
    case LRUN_DTYPE_Q6_K: *block_bytes = 210; return 256;
    case LRUN_DTYPE_Q5_0: *block_bytes = 22; return 32;
    case LRUN_DTYPE_Q5_1: *block_bytes = 24; return 32;
    case LRUN_DTYPE_IQ4_NL: *block_bytes = 18; return 32;
    case LRUN_DTYPE_Q2_K: *block_bytes = 84; return 256;
    case LRUN_DTYPE_Q3_K: *block_bytes = 110; return 256;
    case LRUN_DTYPE_Q5_K: *block_bytes = 176; return 256;
    case LRUN_DTYPE_IQ4_XS: *block_bytes = 136; return 256;
    case LRUN_DTYPE_MXFP4: *block_bytes = 17; return 32;
    default: *block_bytes = 0; return 0;
    }
}

/* Bytes of k elements of t (k a multiple of its block); SIZE_MAX on overflow. */
static inline size_t lrun_k_row_bytes(lrun_dtype t, int64_t k)
{
    size_t bb, out;
    const int64_t qk = lrun_k_block(t, &bb);
    if (qk <= 0 || k < 0 || __builtin_mul_overflow((size_t)(k / qk), bb, &out)) return SIZE_MAX;
    return out;
}

/* Byte alignment the kernels' loads need of a weight base and its row
 * stride: the widest field load each block layout allows. */
static inline size_t lrun_k_weight_align(lrun_dtype t)
{
    if (t == LRUN_DTYPE_MXFP4) return 1; /* 17-byte blocks: its unit reads bytes */
    return (t == LRUN_DTYPE_Q4_1 || t == LRUN_DTYPE_Q4_K || t == LRUN_DTYPE_F32 || t == LRUN_DTYPE_Q5_1 ||
            t == LRUN_DTYPE_Q2_K || t == LRUN_DTYPE_Q5_K || t == LRUN_DTYPE_IQ4_XS)
               ? 4
               : 2;
}

/* The checks every launcher that reads a weight matrix makes: a supported
 * dtype, k > 0 a multiple of its block, n > 0, row_bytes large enough,
 * base and stride aligned for the block's fields. LRUN_E_ARG naming op. */
static inline lrun_status lrun_k_check_weight(const char *op, lrun_dtype t, const void *w, size_t row_bytes,
                                              int64_t n, int64_t k)
{
    size_t bb, total;
    if (!w) return lrun_fail(LRUN_E_ARG, "%s: the weight pointer is NULL", op);
    if (n <= 0 || k <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n %lld, k %lld (both must be > 0)", op, (long long)n, (long long)k);
    const int64_t qk = lrun_k_block(t, &bb);
    if (qk == 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: weight dtype %s has no CUDA kernel", op, lrun_dtype_name(t));
    if (k % qk != 0)
        return lrun_fail(LRUN_E_ARG, "%s: k %lld is not a multiple of the %s block (%lld)", op, (long long)k,
                         lrun_dtype_name(t), (long long)qk);
    const size_t need = lrun_k_row_bytes(t, k);
    if (need == SIZE_MAX || row_bytes < need)
        return lrun_fail(LRUN_E_ARG, "%s: row_bytes %zu is less than the bytes of %lld %s elements", op, row_bytes,
                         (long long)k, lrun_dtype_name(t));
    if (__builtin_mul_overflow((size_t)n, row_bytes, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %zu bytes overflow size_t", op, (long long)n, row_bytes);
    const size_t a = lrun_k_weight_align(t);
    if ((uintptr_t)w % a != 0 || row_bytes % a != 0)
        return lrun_fail(LRUN_E_ARG, "%s: %s weights must start and stride on %zu-byte boundaries", op,
                         lrun_dtype_name(t), a);
    return LRUN_OK;
}

#endif
