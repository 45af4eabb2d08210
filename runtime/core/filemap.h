/* filemap.h — which file, if any, backs a mapped address: the kernel's own
 * record (/proc/self/maps), so code that only holds a pointer (a tensor's
 * file_data) can find its file without the loader's help. Used by the disk
 * tier (residency/disk_reader.c) and by moves out of the file's mapping
 * (core/tensor.c), which may drop pages only from a file mapping. */
#ifndef LRUN_FILEMAP_H
#define LRUN_FILEMAP_H

#include <stdint.h>

typedef struct lrun_filemap {
    char path[512];     /* the file; " (deleted)" appended by the kernel when it was removed */
    uintptr_t lo, hi;   /* the mapping holding the address: [lo, hi) */
    uint64_t offset;    /* file offset of lo */
} lrun_filemap;

/* 1 and *out when p lies in a mapping of a file (a path, an inode); 0 for
 * anonymous memory, the heap, stacks, or when /proc cannot be read. */
int lrun_filemap_find(const void *p, lrun_filemap *out);

#endif
