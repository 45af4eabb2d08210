/* fuzz_safetensors.c — libFuzzer target for the safetensors reader
 * (runtime/formats/safetensors*.c): any input must be accepted or rejected
 * with a status, never crash, read out of bounds, hang or leak.
 *
 * The first input byte picks what the rest is: even, one .safetensors file
 * (opened, every tensor looked up by name, its first and last data bytes
 * read); odd, a model.safetensors.index.json in a directory that holds two
 * small valid shards, a.safetensors and b.safetensors (the index's shard
 * names, paths and tensor map are the input). Seeds: tests/fuzz/make_seeds.lua. */
#include "formats/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static int write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    const int ok = size == 0 || fwrite(data, 1, size, f) == size;
    fclose(f);
    return ok;
}

/* A valid shard holding one f32 tensor of two elements named name. */
static void write_shard(const char *file, const char *name)
{
    char head[160], path[128];
    const int n = snprintf(head, sizeof head, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", name);
    uint8_t buf[8 + 160 + 8] = {0};
    const uint64_t len = (uint64_t)n;
    memcpy(buf, &len, 8); /* little-endian host */
    memcpy(buf + 8, head, (size_t)n);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    write_file(path, buf, 8 + (size_t)n + 8);
}

static void touch(const lrun_st_tensor *t)
{
    if (!t || t->nbytes == 0 || !t->data) return;
    const uint8_t *d = t->data;
    volatile uint8_t sink = d[0] ^ d[t->nbytes - 1];
    (void)sink;
}

static void fuzz_file(const uint8_t *data, size_t size)
{
    char path[96];
    snprintf(path, sizeof path, "%s/one.safetensors", dir);
    if (!write_file(path, data, size)) return;
    lrun_safetensors *f = NULL;
    if (lrun_safetensors_open(&f, path) == LRUN_OK) {
        for (int64_t i = 0; i < lrun_safetensors_count(f); i++) {
            const lrun_st_tensor *t = lrun_safetensors_tensor(f, i);
            if (lrun_safetensors_find(f, t->name) != i) abort(); /* names are unique and found */
            touch(t);
        }
        (void)lrun_safetensors_metadata(f, "format");
        lrun_safetensors_close(f);
    }
    unlink(path);
}

static void fuzz_index(const uint8_t *data, size_t size)
{
    char path[96];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!write_file(path, data, size)) return;
    lrun_st_set *s = NULL;
    if (lrun_st_set_open_index(&s, path, NULL, NULL) == LRUN_OK) {
        for (int64_t i = 0; i < lrun_st_set_count(s); i++) {
            if (lrun_st_set_find(s, lrun_st_set_tensor(s, i)->name) != i) abort();
            touch(lrun_st_set_tensor(s, i));
        }
        lrun_st_set_close(s);
    }
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/dev/shm/lrun-fuzz-st-%d", (int)getpid());
        mkdir(dir, 0700);
        write_shard("a.safetensors", "x");
        write_shard("b.safetensors", "y");
    }
    if (size < 1) return 0;
    if (data[0] & 1) fuzz_index(data + 1, size - 1);
    else fuzz_file(data + 1, size - 1);
    return 0;
}
