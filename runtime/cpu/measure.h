/* measure.h — what the CPU measurements (measure_matmul.c, measure_decode.c) share. */
#ifndef LRUN_CPU_MEASURE_H
#define LRUN_CPU_MEASURE_H

#include <stddef.h>

/* Bytes of last-level cache of the whole machine (sysfs), 0 when unknown. */
size_t lrun_cpu_last_level_cache_bytes(void);

#endif
