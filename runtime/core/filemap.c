/* filemap.c — /proc/self/maps lookups (filemap.h). */
#include "core/filemap.h"

#include <stdio.h>
#include <string.h>

int lrun_filemap_find(const void *p, lrun_filemap *out)
{
    const uintptr_t a = (uintptr_t)p;
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return 0;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, maps)) {
        unsigned long lo, hi, off, inode;
        char perms[8], dev[32];
        int path_at = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %31s %lu %n", &lo, &hi, perms, &off, dev, &inode, &path_at) < 6) continue;
        if (a < lo || a >= hi) continue;
        char *path = line + path_at;
        path[strcspn(path, "\n")] = '\0';
        if (inode == 0 || path[0] != '/') break; /* anonymous memory: not a file */
        snprintf(out->path, sizeof out->path, "%s", path);
        out->lo = lo;
        out->hi = hi;
        out->offset = off;
        found = 1;
    }
    fclose(maps);
    return found;
}
