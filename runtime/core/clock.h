/* clock.h — the monotonic clock the measurements, the staging ring, the
 * loader and the disk reader time themselves with. */
#ifndef LRUN_CORE_CLOCK_H
#define LRUN_CORE_CLOCK_H

#include <time.h>

/* Seconds on CLOCK_MONOTONIC (differences only: the origin is arbitrary). */
static inline double lrun_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
