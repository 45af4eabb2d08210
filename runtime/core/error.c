/* error.c — the thread-local last error. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_message[1024] = "no error";
static _Thread_local size_t last_oom_requested;
static _Thread_local size_t last_oom_free;
static _Thread_local char last_oom_phase[16]; /* "" until a site names it */

static void set_message(const char *fmt, va_list ap)
{
    vsnprintf(last_message, sizeof last_message, fmt, ap);
}

lrun_status lrun_fail(lrun_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    return status;
}

lrun_status lrun_fail_oom(size_t requested, size_t free_bytes, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    last_oom_requested = requested;
    last_oom_free = free_bytes;
    last_oom_phase[0] = '\0';
    return LRUN_E_OOM;
}

lrun_status lrun_oom_phase(lrun_status status, const char *phase)
{
    if (status == LRUN_E_OOM && last_oom_phase[0] == '\0' && phase)
        snprintf(last_oom_phase, sizeof last_oom_phase, "%s", phase);
    return status;
}

lrun_status lrun_fail_context(lrun_status status, const char *fmt, ...)
{
    char prefix[512], old[sizeof last_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_message, sizeof old);
    /* Keep the prefix whole and cut the old message if the two do not fit. */
    size_t n = strlen(prefix);
    if (n > sizeof last_message - 3) n = sizeof last_message - 3;
    memcpy(last_message, prefix, n);
    memcpy(last_message + n, ": ", 2);
    size_t room = sizeof last_message - n - 3;
    size_t m = strnlen(old, room);
    memcpy(last_message + n + 2, old, m);
    last_message[n + 2 + m] = '\0';
    return status;
}

const char *lrun_last_error(void) { return last_message; }
size_t lrun_last_oom_requested(void) { return last_oom_requested; }
size_t lrun_last_oom_free(void) { return last_oom_free; }
const char *lrun_last_oom_phase(void) { return last_oom_phase[0] ? last_oom_phase : "unknown"; }

const char *lrun_status_name(lrun_status status)
{
    switch (status) {
    case LRUN_OK: return "ok";
    case LRUN_E_OOM: return "oom";
    case LRUN_E_FORMAT: return "format";
    case LRUN_E_IO: return "io";
    case LRUN_E_ARG: return "arg";
    case LRUN_E_UNSUPPORTED: return "unsupported";
    case LRUN_E_DEVICE: return "device";
    case LRUN_E_INTERNAL: return "internal";
    }
    return "unknown";
}
