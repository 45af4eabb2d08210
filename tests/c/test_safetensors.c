/* test_safetensors.c — the safetensors reader (formats/safetensors.h): one
 * crafted bad file per rule, each rejected with LRUN_E_FORMAT and a message
 * naming the rule, the file and the tensor; good files, one and sharded. The
 * files are written here, into a fresh temporary directory. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "formats/safetensors.h"
#include "lrun.h"

static char dir[256];

static void path_of(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

/* Writes u64 len(header) + header + data_len bytes (0, 1, 2, … mod 251) to dir/name. */
static void write_raw(const char *name, const void *head, size_t head_len, uint64_t declared, size_t data_len)
{
    char p[512];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    if (!f) return;
    uint8_t n[8];
    for (int i = 0; i < 8; i++) n[i] = (uint8_t)(declared >> (8 * i));
    fwrite(n, 1, 8, f);
    fwrite(head, 1, head_len, f);
    for (size_t i = 0; i < data_len; i++) fputc((int)(i % 251), f);
    fclose(f);
}

static void write_st(const char *name, const char *header, size_t data_len)
{
    write_raw(name, header, strlen(header), strlen(header), data_len);
}

/* Opens dir/name; 1 when it fails with FORMAT and the message holds rule, name and tensor (NULL: not checked). */
static int rejects(const char *name, const char *rule, const char *tensor)
{
    char p[512];
    path_of(p, sizeof p, name);
    lrun_safetensors *f = NULL;
    const lrun_status st = lrun_safetensors_open(&f, p);
    lrun_safetensors_close(f);
    const char *msg = lrun_last_error();
    char want[64];
    snprintf(want, sizeof want, ": %s: ", rule);
    const int ok = st == LRUN_E_FORMAT && strstr(msg, want) && strstr(msg, name) &&
                   (!tensor || strstr(msg, tensor));
    if (!ok) printf("# %s: status %d, message: %s\n", name, (int)st, msg);
    return ok;
}

static void test_bad_files(void)
{
    write_raw("short.safetensors", "", 0, 0, 0);
    {
        char p[512];
        path_of(p, sizeof p, "short.safetensors");
        FILE *f = fopen(p, "wb");
        if (f) fwrite("\x02\0\0", 1, 3, f), fclose(f);
    }
    CHECK("size: fewer than 8 bytes", rejects("short.safetensors", "size", NULL));
    write_raw("huge.safetensors", "{}", 2, 100000001ull, 0);
    CHECK("header-size: N > 100,000,000", rejects("huge.safetensors", "header-size", NULL));
    write_raw("past.safetensors", "{}", 2, 50, 0);
    CHECK("header-bounds: 8 + N past the end", rejects("past.safetensors", "header-bounds", NULL));
    write_st("utf8.safetensors", "{\"a\xff\":{}}", 0);
    CHECK("utf8: an invalid byte", rejects("utf8.safetensors", "utf8", NULL));
    write_st("overlong.safetensors", "{\"\xc0\xaf\":{}}", 0);
    CHECK("utf8: an overlong encoding", rejects("overlong.safetensors", "utf8", NULL));
    write_st("start.safetensors", "\n{}", 0);
    CHECK("header-start: not '{' after spaces", rejects("start.safetensors", "header-start", NULL));
    write_st("json.safetensors", "{\"a\": ", 0);
    CHECK("json: not JSON", rejects("json.safetensors", "json", NULL));
    write_st("trail.safetensors", "{} x", 0);
    CHECK("json: bytes after the object", rejects("trail.safetensors", "json", NULL));
    write_st("meta.safetensors", "{\"__metadata__\":{\"k\":1}}", 0);
    CHECK("metadata: a non-string value", rejects("meta.safetensors", "metadata", NULL));
    write_st("dup.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                                "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2);
    CHECK("duplicate: a name twice", rejects("dup.safetensors", "duplicate", "'w'"));
    write_st("entry.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1);
    CHECK("entry: no data_offsets", rejects("entry.safetensors", "entry", "'w'"));
    write_st("dtype.safetensors", "{\"w\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    CHECK("dtype: unknown", rejects("dtype.safetensors", "dtype", "'w'"));
    write_st("shape.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1);
    CHECK("shape: a negative dimension", rejects("shape.safetensors", "shape", "'w'"));
    write_st("order.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,2]}}", 0);
    CHECK("offsets: end before begin", rejects("order.safetensors", "offsets", "'w'"));
    write_st("ovf.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                                "\"data_offsets\":[0,4]}}", 4);
    CHECK("overflow: shape × dtype bits", rejects("ovf.safetensors", "overflow", "'w'"));
    write_st("f4.safetensors", "{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2);
    CHECK("sub-byte: F4 ×3 ends mid-byte", rejects("f4.safetensors", "sub-byte", "'w'"));
    write_st("bytes.safetensors", "{\"w\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,4]}}", 4);
    CHECK("byte-size: end - begin != elements × size", rejects("bytes.safetensors", "byte-size", "'w'"));
    write_st("hole.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                                 "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}", 6);
    CHECK("contiguous: a hole", rejects("hole.safetensors", "contiguous", "'b'"));
    write_st("overlap.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                                    "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4);
    CHECK("contiguous: an overlap", rejects("overlap.safetensors", "contiguous", "'b'"));
    write_st("first.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4);
    CHECK("contiguous: not from 0", rejects("first.safetensors", "contiguous", "'a'"));
    write_st("extra.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 3);
    CHECK("file-length: trailing bytes", rejects("extra.safetensors", "file-length", "'a'"));
    write_st("cut.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 1);
    CHECK("file-length: missing bytes", rejects("cut.safetensors", "file-length", "'a'"));
    write_st("notobj.safetensors", "{\"a\":3}", 0);
    CHECK("entry: not an object", rejects("notobj.safetensors", "entry", "'a'"));
}

static void test_good_file(void)
{
    /* spaces before and after the object are allowed padding */
    write_st("good.safetensors",
             "  {\"__metadata__\":{\"format\":\"pt\"},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
             "\"s\":{\"dtype\":\"F4\",\"shape\":[0],\"data_offsets\":[32,32]}}   ", 32);
    char p[512];
    path_of(p, sizeof p, "good.safetensors");
    lrun_safetensors *f = NULL;
    const lrun_status st = lrun_safetensors_open(&f, p);
    CHECK("a good file opens", st == LRUN_OK);
    if (st != LRUN_OK) {
        printf("# %s\n", lrun_last_error());
        return;
    }
    CHECK("three tensors", lrun_safetensors_count(f) == 3);
    const lrun_st_tensor *a = lrun_safetensors_tensor(f, lrun_safetensors_find(f, "a"));
    const lrun_st_tensor *b = lrun_safetensors_tensor(f, lrun_safetensors_find(f, "b"));
    CHECK("a: F32 [2, 3], 24 bytes at the data start", a && a->dtype == LRUN_ST_F32 && a->ndim == 2 &&
          a->shape[0] == 2 && a->shape[1] == 3 && a->nbytes == 24 && ((const uint8_t *)a->data)[1] == 1);
    CHECK("b: BF16 at byte 24", b && b->dtype == LRUN_ST_BF16 && ((const uint8_t *)b->data)[0] == 24);
    CHECK("tensors in data order", lrun_safetensors_tensor(f, 0) == a);
    CHECK("unknown name: -1", lrun_safetensors_find(f, "zz") == -1);
    const char *fmt = lrun_safetensors_metadata(f, "format");
    CHECK("__metadata__ format = pt", fmt && strcmp(fmt, "pt") == 0);
    lrun_safetensors_close(f);

    write_st("empty.safetensors", "{}", 0);
    path_of(p, sizeof p, "empty.safetensors");
    CHECK("an empty file of no tensors opens", lrun_safetensors_open(&f, p) == LRUN_OK && lrun_safetensors_count(f) == 0);
    lrun_safetensors_close(f);
}

static void write_text(const char *name, const char *text)
{
    char p[512];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    if (f) fputs(text, f), fclose(f);
}

static int index_rejects(const char *name, const char *rule)
{
    char p[512];
    path_of(p, sizeof p, name);
    lrun_st_set *s = NULL;
    const lrun_status st = lrun_st_set_open_index(&s, p, NULL, NULL);
    lrun_st_set_close(s);
    char want[64];
    snprintf(want, sizeof want, "%s: ", rule);
    const int ok = st == LRUN_E_FORMAT && strstr(lrun_last_error(), want) && strstr(lrun_last_error(), name);
    if (!ok) printf("# %s: status %d: %s\n", name, (int)st, lrun_last_error());
    return ok;
}

static int n_opened;
static void on_open(void *ctx, int i, int n, const char *path, size_t bytes)
{
    (void)ctx, (void)i, (void)n, (void)path, (void)bytes;
    n_opened++;
}

static void test_sharded(void)
{
    write_st("m-1.safetensors", "{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                                "\"y\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[4,5]}}", 5);
    write_st("m-2.safetensors", "{\"z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    write_text("good.index.json", "{\"metadata\":{\"total_size\":9},\"weight_map\":{\"z\":\"m-2.safetensors\","
                                  "\"x\":\"m-1.safetensors\",\"y\":\"m-1.safetensors\"}}");
    char p[512];
    path_of(p, sizeof p, "good.index.json");
    lrun_st_set *s = NULL;
    const lrun_status st = lrun_st_set_open_index(&s, p, on_open, NULL);
    CHECK("a sharded model opens", st == LRUN_OK);
    if (st == LRUN_OK) {
        CHECK("two shards, three tensors", lrun_st_set_n_files(s) == 2 && lrun_st_set_count(s) == 3 && n_opened == 2);
        const lrun_st_tensor *z = lrun_st_set_tensor(s, lrun_st_set_find(s, "z"));
        CHECK("z is in shard 2", z && z->file == 1 && z->dtype == LRUN_ST_F32 && z->nbytes == 4);
        CHECK("shard order, then data order", strcmp(lrun_st_set_tensor(s, 0)->name, "x") == 0);
    } else {
        printf("# %s\n", lrun_last_error());
    }
    lrun_st_set_close(s);

    write_text("trav.index.json", "{\"weight_map\":{\"x\":\"../m-1.safetensors\"}}");
    CHECK("shard-name: ../ is refused", index_rejects("trav.index.json", "shard-name"));
    write_text("sub.index.json", "{\"weight_map\":{\"x\":\"d/m-1.safetensors\"}}");
    CHECK("shard-name: a sub-directory is refused", index_rejects("sub.index.json", "shard-name"));
    write_text("ext.index.json", "{\"weight_map\":{\"x\":\"m-1.bin\"}}");
    CHECK("shard-name: not .safetensors", index_rejects("ext.index.json", "shard-name"));
    write_text("miss.index.json", "{\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-1.safetensors\","
                                  "\"w\":\"m-1.safetensors\"}}");
    CHECK("index-missing: a mapped tensor not in its shard", index_rejects("miss.index.json", "index-missing"));
    write_text("extra.index.json", "{\"weight_map\":{\"x\":\"m-1.safetensors\"}}");
    CHECK("shard-tensor: a shard tensor the map does not name", index_rejects("extra.index.json", "shard-tensor"));
    write_text("wrong.index.json", "{\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-1.safetensors\","
                                   "\"z\":\"m-1.safetensors\"}}");
    CHECK("index-missing: a tensor mapped to the wrong shard", index_rejects("wrong.index.json", "index-missing"));
    write_text("dupk.index.json", "{\"weight_map\":{\"x\":\"m-1.safetensors\",\"x\":\"m-1.safetensors\"}}");
    CHECK("duplicate: a weight_map key twice", index_rejects("dupk.index.json", "duplicate"));
    write_text("nomap.index.json", "{\"metadata\":{}}");
    CHECK("weight-map: missing", index_rejects("nomap.index.json", "weight-map"));
    write_text("bad.index.json", "[1,2]");
    CHECK("index-json: not an object", index_rejects("bad.index.json", "index-json"));
    write_text("badshard.index.json", "{\"weight_map\":{\"a\":\"hole.safetensors\"}}");
    path_of(p, sizeof p, "badshard.index.json");
    CHECK("a bad shard fails with its own rule", lrun_st_set_open_index(&s, p, NULL, NULL) == LRUN_E_FORMAT &&
          strstr(lrun_last_error(), "contiguous") && strstr(lrun_last_error(), "hole.safetensors"));

    path_of(p, sizeof p, "good.safetensors");
    CHECK("one file as a set", lrun_st_set_open_file(&s, p) == LRUN_OK && lrun_st_set_count(s) == 3 &&
          lrun_st_set_find(s, "b") >= 0);
    lrun_st_set_close(s);
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s/lrun_st_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        printf("not ok 1 - mkdtemp\n1..1\n");
        return 1;
    }
    test_bad_files();
    test_good_file();
    test_sharded();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return CHECK_DONE();
}
