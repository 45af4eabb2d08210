/* cut_on_map.h — truncates a file right after the library maps it, so that
 * a test can make the library's own reads of that mapping fault (issue 16:
 * SIGBUS while loading, packing or reading a packed file).
 *
 * The including program defines mmap itself: the library's calls (linked
 * statically, or a shared library when this is built as an LD_PRELOAD
 * object, tests/c/cut_on_map_preload.c) reach it instead of libc's. It maps
 * with the system call and, when armed, truncates the armed file after the
 * first read-only mapping of it (the same inode), once. Include in one
 * file only. */
#ifndef LRUN_TEST_CUT_ON_MAP_H
#define LRUN_TEST_CUT_ON_MAP_H

#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static char cut_path[512];     /* the file to cut; "" when disarmed */
static off_t cut_bytes;        /* its size after the cut, bytes */
static volatile int cut_done;  /* 1 once it was cut */

/* Arms the cut: the next read-only mapping of path leaves it bytes long. */
static void cut_on_map_arm(const char *path, off_t bytes)
{
    snprintf(cut_path, sizeof cut_path, "%s", path);
    cut_bytes = bytes;
    cut_done = 0;
}

static int cut_is_armed_file(int fd)
{
    struct stat a, b;
    return cut_path[0] && fstat(fd, &a) == 0 && stat(cut_path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* The library's mmap: the system call, then the cut. The SIGBUS handler's
 * own call (anonymous) passes straight through. */
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    void *r = (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
    if (r != MAP_FAILED && fd >= 0 && !(flags & MAP_ANONYMOUS) && !(prot & PROT_WRITE) && !cut_done &&
        cut_is_armed_file(fd)) {
        cut_done = truncate(cut_path, cut_bytes) == 0;
        cut_path[0] = '\0';
    }
    return r;
}

#endif
