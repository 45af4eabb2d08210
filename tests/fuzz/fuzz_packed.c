/* fuzz_packed.c — libFuzzer target for packed model files and packed tensors
 * (runtime/packed/): any input bytes must be rejected with a status or
 * accepted, never crash, read out of bounds or leak. Not part of `make test`:
 *
 *   S="runtime/packed/packed_file.c runtime/packed/codec.c runtime/packed/codec_pex2.c runtime/core/error.c runtime/core/threadpool.c \
 *      runtime/core/progress.c runtime/core/hash.c runtime/core/mapguard.c runtime/formats/gguf.c \
 *      runtime/quant/dtype.c runtime/quant/quant.c runtime/quant/quant_more.c runtime/quant/quant_mxfp4.c runtime/quant/fp8.c"
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -pthread -Iruntime -fsanitize=fuzzer,address,undefined \
 *      tests/fuzz/fuzz_packed.c $S -o build/fuzz_packed -lm
 *   cp -r tests/fuzz/corpus/fuzz_packed /tmp/c && build/fuzz_packed -max_total_time=60 -max_len=65536 /tmp/c
 *   (or make fuzz; the seeds: tests/fuzz/make_seeds.lua, PEX1 and PEX2 files and tensors)
 *
 * The first input byte picks the target: even, the input is a packed file
 * (opened, checked, unpacked and opened as a GGUF; and opened as a load
 * does, its packed entries checked in place); odd, the rest is
 * one packed tensor, PEX1 or PEX2 by its magic (validated and decoded with
 * the CPU decoder, whole and a range). */
#include "packed/codec.h"
#include "packed/packed_file.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static void fuzz_file(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-packed", 0);
    if (fd < 0) return;
    if (write(fd, data, size) == (ssize_t)size) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        lrun_gguf *g = NULL;
        if (lrun_packed_open_gguf(&g, path, 1, 0) == LRUN_OK) lrun_gguf_close(g);
        /* the load's way (tensors kept packed): the head opened, each packed entry checked */
        lrun_packed_file *f = NULL;
        if (lrun_packed_open_lazy(&g, &f, path) == LRUN_OK) {
            for (int64_t i = 0; i < f->n_entries; i++) {
                const lrun_packed_entry *e = &f->entries[i];
                lrun_packed_layout lay;
                if (e->codec != LRUN_PACKED_CODEC_RAW && lrun_packed_file_check_codec(f, e, "fuzz") == LRUN_OK)
                    (void)lrun_packed_validate_mt(&lay, f->packed + e->packed_offset, (size_t)e->packed_size, "fuzz", NULL);
            }
            lrun_gguf_close(g);
            lrun_packed_file_close(f);
        }
    }
    close(fd);
}

static void fuzz_tensor(const uint8_t *data, size_t size)
{
    lrun_packed_layout lay;
    if (lrun_packed_validate(&lay, data, size, "fuzz") != LRUN_OK || lay.n > ((uint64_t)1 << 22)) return;
    uint16_t *out = malloc(lay.n ? lay.n * 2 : 2);
    if (out && lrun_packed_decode(out, lay.dtype, lay.n, data, size, "fuzz", NULL) == LRUN_OK && lay.n)
        lrun_packed_decode_range(out, data, &lay, lay.n / 3, lay.n - lay.n / 3);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if (data[0] & 1) fuzz_tensor(data + 1, size - 1);
    else fuzz_file(data + 1, size - 1);
    return 0;
}
