/* format_bytes.h — byte counts as people read them, for messages and
 * explanations ("512 B", "3.1 MiB", "4.0 GiB"). Its own file because the
 * lowest layers (the host account, the device) both print sizes. */
#ifndef LRUN_FORMAT_BYTES_H
#define LRUN_FORMAT_BYTES_H

#include <stddef.h>

/* "512 B", "3.1 MiB", "4.0 GiB" into buf (cap >= 16); returns buf. */
const char *lrun_format_bytes(size_t bytes, char *buf, size_t cap);

#endif
