/* error.h — how the core reports failure: a status plus a thread-local message. */
#ifndef LRUN_ERROR_H
#define LRUN_ERROR_H

#include "lrun.h"

/* Formats the thread's last-error message ("what: where: why") and returns
 * status, so a failing path reads `return lrun_fail(LRUN_E_ARG, "...", ...);`. */
lrun_status lrun_fail(lrun_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* As lrun_fail(LRUN_E_OOM, …), also recording the bytes asked for and the
 * bytes that were free, for the structured OOM error Lua builds. */
lrun_status lrun_fail_oom(size_t requested, size_t free_bytes, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Names the phase of the last OOM ("load", "weights", "scratch", "cache")
 * when status is LRUN_E_OOM and no inner site named it yet; returns status,
 * so a call site reads `return lrun_oom_phase(st, "cache");`. The innermost
 * site that knows what it was allocating wins. */
lrun_status lrun_oom_phase(lrun_status status, const char *phase);

/* Prefixes the current message with more context: "loading x.gguf: <old>". */
lrun_status lrun_fail_context(lrun_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
