/* measure.h — what the CPU measurements (measure_matmul.c, measure_decode.c, measure_host_copy.c) share. */
#ifndef LRUN_CPU_MEASURE_H
#define LRUN_CPU_MEASURE_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of last-level cache of the whole machine (sysfs), 0 when unknown. */
size_t lrun_cpu_last_level_cache_bytes(void);

/* The bytes a host measurement reads so that they come from DRAM: bytes
 * raised to twice the last-level cache and at least 1 GiB (at most 4 GiB),
 * but never above 1/share of the free host memory. */
size_t lrun_measure_dram_bytes(size_t bytes, size_t share);

/* Fills bytes at p with synthetic weight contents that read as a model's do
 * (measure_fill.c says why not zeros): words differing page to page, each a
 * normal f16/bf16 number; the same seed gives the same bytes. */
void lrun_measure_fill(void *p, size_t bytes, uint64_t seed);

#endif
