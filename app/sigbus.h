/* sigbus.h — what the launcher says when a memory-mapped file goes away
 * under it (issue 16). Included once, by launcher.c (header-only so that
 * tests/fuzz/fuzz_cli.c, which includes launcher.c, links as it is).
 *
 * Weights in the mmap tier are read through the model file's mapping; a
 * read past the end of a file truncated or replaced while it is in use
 * raises SIGBUS, which by default kills the process with "Bus error" and
 * nothing else. Inside an engine step (and engine init) the library's own
 * handler, installed after this one when the first file is mapped, makes
 * the fault an LRUN_E_IO error from the step (runtime/core/mapguard.h); the
 * faults it does not take (outside a step, in a mapping it does not know)
 * come here. The handler names the file whose mapping faulted (looked up
 * in /proc/self/maps) and says what to do, then exits with 128 + SIGBUS as
 * the default action would. It uses only async-signal-safe calls (open,
 * read, write, close, _exit) and static memory. Weights in the disk tier are
 * read with pread instead and report a truncation as an ordinary error
 * (docs/reliability.md). */
#ifndef LRUN_APP_SIGBUS_H
#define LRUN_APP_SIGBUS_H

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static const char *sigbus_progname = "lrun";
static size_t sigbus_progname_len = 4;

static void sigbus_write(const char *s, size_t n)
{
    while (n > 0) {
        const ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w, n -= (size_t)w;
    }
}

static void sigbus_puts(const char *s) { sigbus_write(s, strlen(s)); }

/* start-end of a /proc/self/maps line, hex; 0 when the line does not parse. */
static int sigbus_range(const char *line, uintptr_t *lo, uintptr_t *hi)
{
    uintptr_t v[2] = {0, 0};
    const char *p = line;
    for (int i = 0; i < 2; i++) {
        int digits = 0;
        for (;; p++, digits++) {
            const char c = *p;
            const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) break;
            v[i] = v[i] * 16 + (uintptr_t)d;
        }
        if (!digits || (i == 0 && *p++ != '-')) return 0;
    }
    *lo = v[0], *hi = v[1];
    return 1;
}

/* Writes the path of the file mapped at addr, if /proc/self/maps has one. */
static void sigbus_name_file(uintptr_t addr)
{
    static char buf[8192], line[4096];
    size_t len = 0;
    const int fd = open("/proc/self/maps", O_RDONLY);
    if (fd < 0) return;
    for (;;) {
        const ssize_t got = read(fd, buf, sizeof buf);
        if (got <= 0) break;
        for (ssize_t i = 0; i < got; i++) {
            if (buf[i] != '\n') {
                if (len < sizeof line - 1) line[len++] = buf[i];
                continue;
            }
            line[len] = '\0';
            len = 0;
            uintptr_t lo, hi;
            const char *path = strchr(line, '/');
            if (!sigbus_range(line, &lo, &hi) || addr < lo || addr >= hi || !path) continue;
            sigbus_puts(" (");
            sigbus_puts(path);
            sigbus_puts(")");
            close(fd);
            return;
        }
    }
    close(fd);
}

static void sigbus_handler(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    sigbus_write(sigbus_progname, sigbus_progname_len);
    sigbus_puts(": bus error reading a memory-mapped file");
    if (info) sigbus_name_file((uintptr_t)info->si_addr);
    sigbus_puts(": it was truncated or replaced while in use. Load the model again; weights placed in the disk "
                "tier (-ot PATTERN=disk, --host-budget) read the file with pread and report this as an error.\n");
    _exit(128 + sig);
}

/* Installs the handler; progname prefixes the message. */
static void sigbus_install(const char *progname)
{
    sigbus_progname = progname;
    sigbus_progname_len = strlen(progname);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = sigbus_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

#endif
