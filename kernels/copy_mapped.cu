/* copy_mapped.cu — a device buffer filled by the SMs' own loads from pinned
 * host memory (mapped: UVA makes cudaHostAlloc'd pointers readable in a
 * kernel).
 *
 * Why not cudaMemcpyAsync: a host product's result (hybrid decode, issue
 * #15) goes up while the copy stream streams weights host-to-device, and a
 * copy engine takes its copies in order, so a 16 KB result queued behind a
 * 90 MB weight waits for the weight (about 1.6 ms at 55 GB/s). The SMs'
 * reads share the link with the DMA packet by packet instead. */
#include "copy_mapped.cuh"

__global__ void copy_mapped_elems(float *__restrict__ dst, const float *__restrict__ src, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

extern "C" lrun_status lrun_k_copy_mapped(float *dst, const float *src, int64_t n, void *stream)
{
    static const char op[] = "lrun_k_copy_mapped";
    if (!dst || !src) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !dst ? "dst" : "src");
    if (n <= 0) return lrun_fail(LRUN_E_ARG, "%s: n %lld (must be > 0)", op, (long long)n);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const unsigned g = lrun_k_grid(n, LRUN_K_COPY_MAPPED_THREADS, LRUN_K_ELTWISE_BLOCKS);
    copy_mapped_elems<<<g, LRUN_K_COPY_MAPPED_THREADS, 0, (cudaStream_t)stream>>>(dst, src, n);
    return lrun_k_launched(op);
}
