/* fuzz_cli.c — libFuzzer target: the launcher's option parsing
 * (parse_options in app/launcher.c, which is static: the file is included
 * with its main renamed). The input is split at NUL bytes into argv.
 * Usage errors go to stderr, thousands a second: fuzz_cli.options passes
 * -close_fd_mask=2, which closes the target's stderr (libFuzzer keeps its
 * own). */
#define main lrun_launcher_main
#include "../../app/launcher.c"
#undef main

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum { MAX_ARGS = 96 };
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = 0;
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = "lrun";
    for (size_t i = 0; i < size && argc < MAX_ARGS;) {
        argv[argc++] = copy + i;
        i += strlen(copy + i) + 1;
    }
    argv[argc] = NULL;
    options o;
    if (parse_options(argc, argv, &o) == 0) {
        /* what it accepted is in range */
        if (o.script < 1 || o.script > argc) __builtin_trap();
        if (o.n_policies > MAX_POLICIES || o.n_chunks > MAX_CHUNKS || o.n_overrides > MAX_OVERRIDES) __builtin_trap();
    }
    free(copy);
    return 0;
}
