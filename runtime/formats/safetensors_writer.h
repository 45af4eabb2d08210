/* safetensors_writer.h — writes safetensors files (layout in safetensors.h):
 * declare every tensor, then stream their bytes in declaration order. The
 * header is padded with spaces to a multiple of 8 bytes, as the reference
 * writer does, so every tensor of 8-byte elements or smaller starts aligned
 * to its size when the sizes before it are multiples of it. */
#ifndef LRUN_SAFETENSORS_WRITER_H
#define LRUN_SAFETENSORS_WRITER_H

#include "formats/safetensors.h"

typedef struct lrun_st_writer lrun_st_writer;

lrun_status lrun_st_writer_open(lrun_st_writer **out, const char *path);
/* A __metadata__ entry (string to string). */
lrun_status lrun_st_writer_set_metadata(lrun_st_writer *w, const char *key, const char *value);
/* Declares the next tensor: shape row-major (shape[0] outermost). */
lrun_status lrun_st_writer_add(lrun_st_writer *w, const char *name, lrun_st_dtype dtype, int ndim, const int64_t *shape);
/* Appends bytes of the declared tensors, in order; any split. */
lrun_status lrun_st_writer_write(lrun_st_writer *w, const void *bytes, size_t n);
/* Checks every declared byte was written, closes the file. */
lrun_status lrun_st_writer_finish(lrun_st_writer *w);
/* Frees the writer; removes the file unless finish succeeded. */
void lrun_st_writer_free(lrun_st_writer *w);

#endif
