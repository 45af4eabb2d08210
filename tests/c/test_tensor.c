/* test_tensor.c — tensor shapes, names of roles and tiers, element access in
 * several dtypes, and moves through every tier on cpu with byte accounting. */
#include "check.h"
#include "core/device.h"
#include "core/tensor.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MiB ((size_t)1 << 20)

// ---------------------------------------------------------------- shapes and names

static void test_shape(void)
{
    lrun_tensor t;
    memset(&t, 0, sizeof t);
    int64_t w[2] = {576, 49152};
    CHECK("q4_1 {576, 49152}", lrun_tensor_set_shape(&t, "token_embd.weight", LRUN_DTYPE_Q4_1, 2, w) == LRUN_OK);
    CHECK("q4_1 row bytes: 18 blocks of 20", t.row_bytes == 18 * 20);
    CHECK("q4_1 total bytes", t.nbytes == (size_t)18 * 20 * 49152);
    CHECK("unused axes are 1", t.ne[2] == 1 && t.ne[3] == 1 && t.ndim == 2);
    int64_t v[1] = {576};
    CHECK("f32 vector", lrun_tensor_set_shape(&t, "output_norm.weight", LRUN_DTYPE_F32, 1, v) == LRUN_OK &&
                            t.nbytes == 576 * 4);
    int64_t d4[4] = {32, 2, 3, 4};
    CHECK("four dims of f16", lrun_tensor_set_shape(&t, "x", LRUN_DTYPE_F16, 4, d4) == LRUN_OK && t.nbytes == 32 * 24 * 2);

    char long_name[80];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    CHECK("name of 79 bytes is LRUN_E_ARG", lrun_tensor_set_shape(&t, long_name, LRUN_DTYPE_F32, 1, v) == LRUN_E_ARG);
    long_name[63] = 0;
    CHECK("name of 63 bytes fits", lrun_tensor_set_shape(&t, long_name, LRUN_DTYPE_F32, 1, v) == LRUN_OK);
    CHECK("empty name is LRUN_E_ARG", lrun_tensor_set_shape(&t, "", LRUN_DTYPE_F32, 1, v) == LRUN_E_ARG);
    CHECK("ndim 0 is LRUN_E_ARG", lrun_tensor_set_shape(&t, "x", LRUN_DTYPE_F32, 0, v) == LRUN_E_ARG);
    CHECK("ndim 5 is LRUN_E_ARG", lrun_tensor_set_shape(&t, "x", LRUN_DTYPE_F32, 5, d4) == LRUN_E_ARG);
    int64_t zero[2] = {32, 0}, neg[2] = {-32, 2};
    CHECK("a zero dim is LRUN_E_ARG", lrun_tensor_set_shape(&t, "x", LRUN_DTYPE_F32, 2, zero) == LRUN_E_ARG &&
                                          strstr(lrun_last_error(), "dim 1"));
    CHECK("a negative dim is LRUN_E_ARG", lrun_tensor_set_shape(&t, "x", LRUN_DTYPE_F32, 2, neg) == LRUN_E_ARG);
    int64_t odd[1] = {48};
    CHECK("ne[0] not whole q4_0 blocks is LRUN_E_ARG",
          lrun_tensor_set_shape(&t, "x", LRUN_DTYPE_Q4_0, 1, odd) == LRUN_E_ARG && strstr(lrun_last_error(), "block"));
    int64_t huge[4] = {1 << 30, 1 << 30, 1 << 30, 1 << 30};
    CHECK("an element count that overflows is refused", lrun_tensor_set_shape(&t, "x", LRUN_DTYPE_F32, 4, huge) != LRUN_OK);
    int64_t bytes_of[3] = {(int64_t)1 << 40, (int64_t)1 << 22, 1}; /* 2^62 elements, 2^64 bytes */
    CHECK("a byte size that overflows is refused", lrun_tensor_set_shape(&t, "x", LRUN_DTYPE_F32, 3, bytes_of) != LRUN_OK);
    CHECK("an unknown dtype is LRUN_E_ARG", lrun_tensor_set_shape(&t, "x", (lrun_dtype)77, 1, v) == LRUN_E_ARG);
}

static void test_names(void)
{
    lrun_role r;
    int layer;
    lrun_tensor_classify("blk.12.ffn_down.weight", &r, &layer);
    CHECK("blk.12.ffn_down.weight", r == LRUN_ROLE_FFN_DOWN && layer == 12);
    lrun_tensor_classify("blk.0.attn_output.weight", &r, &layer);
    CHECK("blk.0.attn_output.weight", r == LRUN_ROLE_ATTN_OUTPUT && layer == 0);
    lrun_tensor_classify("blk.3.attn_q.bias", &r, &layer);
    CHECK("blk.3.attn_q.bias", r == LRUN_ROLE_BIAS && layer == 3);
    lrun_tensor_classify("token_embd.weight", &r, &layer);
    CHECK("token_embd.weight", r == LRUN_ROLE_EMBEDDING && layer == -1);
    lrun_tensor_classify("output.weight", &r, &layer);
    CHECK("output.weight", r == LRUN_ROLE_LM_HEAD);
    lrun_tensor_classify("output_norm.weight", &r, &layer);
    CHECK("output_norm.weight", r == LRUN_ROLE_OUTPUT_NORM);
    lrun_tensor_classify("blk.1.attn_qkv.weight", &r, &layer);
    CHECK("unknown block tensor is other, with its layer", r == LRUN_ROLE_OTHER && layer == 1);
    CHECK("role names", !strcmp(lrun_role_name(LRUN_ROLE_ATTN_Q), "attn_q") &&
                            !strcmp(lrun_role_name(LRUN_ROLE_EMBEDDING), "embedding") &&
                            !strcmp(lrun_role_name(LRUN_ROLE_BIAS), "bias") &&
                            !strcmp(lrun_role_name((lrun_role)99), "unknown"));
    int ok = 1;
    for (int i = 0; i < LRUN_TIER_COUNT; i++) {
        lrun_tier back;
        ok &= lrun_tier_from_name(lrun_tier_name((lrun_tier)i), &back) == LRUN_OK && back == (lrun_tier)i;
    }
    CHECK("tier names round-trip", ok && !strcmp(lrun_tier_name(LRUN_TIER_PINNED), "pinned"));
    lrun_tier t;
    CHECK("unknown tier name is LRUN_E_ARG", lrun_tier_from_name("vram", &t) == LRUN_E_ARG &&
                                                 strstr(lrun_last_error(), "vram"));
}

// ---------------------------------------------------------------- element access

/* Writes values then reads them back; returns the largest error. */
static double roundtrip(lrun_device *d, lrun_dtype dtype, lrun_tier tier, int64_t n, float scale)
{
    lrun_tensor *t = NULL;
    int64_t dims[2] = {n / 2, 2};
    if (lrun_tensor_init(&t, d, "blk.0.attn_q.weight", dtype, 2, dims, tier) != LRUN_OK) return 1e30;
    float *src = malloc(n * sizeof *src), *dst = malloc(n * sizeof *dst);
    for (int64_t i = 0; i < n; i++) src[i] = scale * (float)((i * 37) % 64 - 32) / 32.0f;
    double err = 1e30;
    if (lrun_tensor_write_f32(t, 0, n, src) == LRUN_OK && lrun_tensor_read_f32(t, 0, n, dst) == LRUN_OK) {
        err = 0;
        for (int64_t i = 0; i < n; i++) err = fmax(err, fabs((double)dst[i] - src[i]));
    }
    free(src);
    free(dst);
    lrun_tensor_free(t);
    return err;
}

static void test_access(void)
{
    lrun_device *d = NULL;
    lrun_device_open(&d, "cpu", 16 * MiB);
    lrun_tensor *t = NULL;
    int64_t dims[2] = {64, 4};
    CHECK("init in the device tier", lrun_tensor_init(&t, d, "blk.2.ffn_up.weight", LRUN_DTYPE_F32, 2, dims,
                                                      LRUN_TIER_DEVICE) == LRUN_OK);
    CHECK("init counts on the device", lrun_device_used(d) == 64 * 4 * 4);
    CHECK("accessors", lrun_tensor_ndim(t) == 2 && lrun_tensor_dim(t, 1) == 4 && lrun_tensor_dim(t, 2) == 1 &&
                           lrun_tensor_nelements(t) == 256 && lrun_tensor_bytes(t) == 1024 &&
                           lrun_tensor_dtype(t) == LRUN_DTYPE_F32 && !strcmp(lrun_tensor_name(t), "blk.2.ffn_up.weight"));
    CHECK("init classifies by name", lrun_tensor_role(t) == LRUN_ROLE_FFN_UP && lrun_tensor_layer(t) == 2);
    float buf[256];
    int zeros = lrun_tensor_read_f32(t, 0, 256, buf) == LRUN_OK;
    for (int i = 0; i < 256; i++) zeros &= buf[i] == 0.0f;
    CHECK("a fresh tensor is zeros", zeros);
    for (int i = 0; i < 64; i++) buf[i] = (float)i;
    CHECK("write a row in the middle", lrun_tensor_write_f32(t, 128, 64, buf) == LRUN_OK);
    float back[64];
    CHECK("read it back", lrun_tensor_read_f32(t, 128, 64, back) == LRUN_OK && back[5] == 5.0f && back[63] == 63.0f);
    CHECK("through the host pointer too", ((const float *)lrun_tensor_host_data(t))[128 + 7] == 7.0f);
    CHECK("read past the end is LRUN_E_ARG", lrun_tensor_read_f32(t, 200, 64, back) == LRUN_E_ARG);
    CHECK("negative first is LRUN_E_ARG", lrun_tensor_read_f32(t, -1, 1, back) == LRUN_E_ARG);
    lrun_tensor_free(t);
    CHECK("free gives the budget back", lrun_device_used(d) == 0);

    int64_t q[1] = {64};
    lrun_tensor_init(&t, d, "q", LRUN_DTYPE_Q8_0, 1, q, LRUN_TIER_HOST);
    CHECK("q8_0 reads whole blocks only", lrun_tensor_read_f32(t, 16, 32, back) == LRUN_E_ARG &&
                                              strstr(lrun_last_error(), "block"));
    CHECK("host tier takes nothing from the device", lrun_device_used(d) == 0);
    lrun_tensor_free(t);
    CHECK("mmap is not a tier for a new tensor", lrun_tensor_init(&t, d, "x", LRUN_DTYPE_F32, 1, q, LRUN_TIER_MMAP) ==
                                                     LRUN_E_ARG && t == NULL);
    CHECK("device tier needs a device", lrun_tensor_init(&t, NULL, "x", LRUN_DTYPE_F32, 1, q, LRUN_TIER_DEVICE) ==
                                            LRUN_E_ARG);

    CHECK_NEAR("f32 round trip is exact", roundtrip(d, LRUN_DTYPE_F32, LRUN_TIER_DEVICE, 256, 3.0f), 0, 0);
    CHECK_NEAR("f16 round trip of k/32 values is exact", roundtrip(d, LRUN_DTYPE_F16, LRUN_TIER_HOST, 256, 1.0f), 0, 0);
    CHECK_NEAR("bf16 round trip of k/32 values is exact", roundtrip(d, LRUN_DTYPE_BF16, LRUN_TIER_PINNED, 256, 1.0f), 0, 0);
    /* q8_0: |x| <= 1, step d = max/127: error at most d/2. */
    CHECK_NEAR("q8_0 round trip within half a step", roundtrip(d, LRUN_DTYPE_Q8_0, LRUN_TIER_DEVICE, 256, 1.0f), 0,
               0.5 / 127 + 1e-3);
    CHECK_NEAR("q4_0 round trip within a step", roundtrip(d, LRUN_DTYPE_Q4_0, LRUN_TIER_HOST, 256, 1.0f), 0, 1.0 / 8 + 1e-3);
    CHECK_NEAR("q4_k round trip within a coarse step", roundtrip(d, LRUN_DTYPE_Q4_K, LRUN_TIER_DEVICE, 512, 1.0f), 0, 0.2);
    CHECK_NEAR("q6_k round trip within a fine step", roundtrip(d, LRUN_DTYPE_Q6_K, LRUN_TIER_HOST, 512, 1.0f), 0, 0.05);
    lrun_device_free(d);
}

// ---------------------------------------------------------------- moves

static int same_values(const lrun_tensor *t, const float *want, int64_t n)
{
    float got[256];
    if (n > 256 || lrun_tensor_read_f32(t, 0, n, got) != LRUN_OK) return 0;
    return memcmp(got, want, n * sizeof *got) == 0;
}

static void test_moves(void)
{
    lrun_device *d = NULL;
    lrun_device_open(&d, "cpu", 4096);
    float v[256];
    for (int i = 0; i < 256; i++) v[i] = (float)i - 100.5f;
    int64_t dims[1] = {256};
    lrun_tensor *t = NULL;
    lrun_tensor_init(&t, d, "scratch", LRUN_DTYPE_F32, 1, dims, LRUN_TIER_HOST);
    lrun_tensor_write_f32(t, 0, 256, v);
    static const lrun_tier path[] = {LRUN_TIER_DEVICE, LRUN_TIER_PINNED, LRUN_TIER_HOST, LRUN_TIER_PINNED,
                                     LRUN_TIER_DEVICE, LRUN_TIER_HOST};
    static const size_t used[] = {1024, 0, 0, 0, 1024, 0};
    for (size_t i = 0; i < sizeof path / sizeof path[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "move %zu to %s: tier, bytes and accounting", i, lrun_tier_name(path[i]));
        lrun_status st = lrun_tensor_move(t, d, path[i]);
        CHECK(name, st == LRUN_OK && lrun_tensor_tier(t) == path[i] && same_values(t, v, 256) &&
                        lrun_device_used(d) == used[i]);
    }
    CHECK("moving to the tier it is in changes nothing", lrun_tensor_move(t, d, LRUN_TIER_HOST) == LRUN_OK &&
                                                             lrun_tensor_tier(t) == LRUN_TIER_HOST);
    CHECK("a tensor not from a file cannot move to mmap", lrun_tensor_move(t, d, LRUN_TIER_MMAP) == LRUN_E_ARG &&
                                                              lrun_tensor_tier(t) == LRUN_TIER_HOST);

    // OOM leaves the tensor as it was
    lrun_tensor *big = NULL;
    int64_t bd[1] = {2048}; /* 8 KiB > the 4 KiB budget */
    lrun_tensor_init(&big, d, "blk.7.ffn_gate.weight", LRUN_DTYPE_F32, 1, bd, LRUN_TIER_PINNED);
    float *bv = malloc(2048 * sizeof *bv);
    for (int i = 0; i < 2048; i++) bv[i] = (float)i;
    lrun_tensor_write_f32(big, 0, 2048, bv);
    const void *before = lrun_tensor_host_data(big);
    lrun_status st = lrun_tensor_move(big, d, LRUN_TIER_DEVICE);
    CHECK("move beyond the budget is LRUN_E_OOM", st == LRUN_E_OOM);
    CHECK("the OOM names the tensor", strstr(lrun_last_error(), "blk.7.ffn_gate.weight") != NULL);
    CHECK("the OOM records request and free", lrun_last_oom_requested() == 8192 && lrun_last_oom_free() == 4096);
    CHECK("OOM leaves tier, data and accounting", lrun_tensor_tier(big) == LRUN_TIER_PINNED &&
                                                      lrun_tensor_host_data(big) == before && lrun_device_used(d) == 0);
    float back[2048];
    CHECK("OOM leaves the values", lrun_tensor_read_f32(big, 0, 2048, back) == LRUN_OK && !memcmp(back, bv, sizeof back));
    lrun_tensor_free(big);
    free(bv);

    // a tensor of a model file: MMAP with file_data, as the loader makes them
    float *file = malloc(256 * sizeof *file); /* stands in for the mapping */
    for (int i = 0; i < 256; i++) file[i] = 0.25f * (float)i;
    lrun_tensor *m = calloc(1, sizeof *m);
    lrun_tensor_set_shape(m, "blk.0.attn_norm.weight", LRUN_DTYPE_F32, 1, dims);
    lrun_tensor_classify(m->name, &m->role, &m->layer);
    m->tier = LRUN_TIER_MMAP;
    m->file_data = file;
    m->data = file;
    CHECK("mmap tensor reads the file", same_values(m, file, 256) && lrun_tensor_host_data(m) == file);
    CHECK("writing the read-only file is LRUN_E_ARG", lrun_tensor_write_f32(m, 0, 256, v) == LRUN_E_ARG);
    CHECK("mmap to device", lrun_tensor_move(m, d, LRUN_TIER_DEVICE) == LRUN_OK && lrun_device_used(d) == 1024 &&
                                lrun_tensor_host_data(m) != file && same_values(m, file, 256));
    CHECK("a device copy can be written", lrun_tensor_write_f32(m, 0, 256, v) == LRUN_OK && same_values(m, v, 256));
    CHECK("device back to mmap drops the copy", lrun_tensor_move(m, NULL, LRUN_TIER_MMAP) == LRUN_OK &&
                                                    lrun_tensor_tier(m) == LRUN_TIER_MMAP && lrun_device_used(d) == 0 &&
                                                    same_values(m, file, 256) && m->data == file);
    CHECK("mmap to host", lrun_tensor_move(m, NULL, LRUN_TIER_HOST) == LRUN_OK && same_values(m, file, 256));
    CHECK("host to mmap", lrun_tensor_move(m, NULL, LRUN_TIER_MMAP) == LRUN_OK && m->data == file);
    CHECK("mmap to pinned", lrun_tensor_move(m, NULL, LRUN_TIER_PINNED) == LRUN_OK && same_values(m, file, 256));
    lrun_tensor_move(m, d, LRUN_TIER_DEVICE);
    lrun_tensor_release_data(m);
    CHECK("release_data returns a file tensor to mmap", m->tier == LRUN_TIER_MMAP && m->data == file &&
                                                            lrun_device_used(d) == 0);
    CHECK("the device pointer of a moved tensor is remembered", lrun_tensor_move(m, NULL, LRUN_TIER_DEVICE) == LRUN_OK &&
                                                                    lrun_device_used(d) == 1024);
    lrun_tensor_release_data(m);
    free(m);
    free(file);
    lrun_tensor_free(t);
    CHECK("peak saw at most the budget", lrun_device_peak(d) <= 4096);
    lrun_device_free(d);
}

int main(void)
{
    test_shape();
    test_names();
    test_access();
    test_moves();
    return CHECK_DONE();
}
