/* cut_on_map_preload.c — cut_on_map.h as an LD_PRELOAD object for the
 * launcher (tests/sigbus_spec.lua): LRUN_TEST_CUT_FILE names the file and
 * LRUN_TEST_CUT_BYTES its size after the cut, done right after the library
 * first maps it read-only. Built as build/tests/cut_on_map.so; not part of
 * the library. */
#include <stdlib.h>

#include "cut_on_map.h"

__attribute__((constructor)) static void cut_on_map_from_env(void)
{
    const char *path = getenv("LRUN_TEST_CUT_FILE"), *bytes = getenv("LRUN_TEST_CUT_BYTES");
    if (path && bytes) cut_on_map_arm(path, (off_t)strtoll(bytes, NULL, 10));
}
