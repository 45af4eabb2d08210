/* pack_hf.c — the input side of lrun pack for an HF directory (or a
 * .safetensors file): the model is opened as lrun_model_load opens it
 * (runtime/model/model_hf.c: config.json as GGUF metadata, tensors renamed
 * to GGUF names, FP8 widened to bf16, fused matrices split), and written
 * as a plain GGUF — the metadata, then every tensor — which pack.c then
 * packs like any GGUF. The GGUF goes to a temporary file next to the
 * output (disk for the plain size while packing, removed after). Q and K
 * rows go back to GGUF's order for an architecture whose GGUF rotates
 * adjacent pairs (llama.cpp's converter permutes them; the HF loader rotates
 * halves instead), so the file is the GGUF llama.cpp would write. The
 * directory's tokenizer.json and tokenizer_config.json go in as string keys
 * (tokenizer.huggingface.json, the GGUF specification's key, and
 * lrun.hf.tokenizer_config; text/tokjson.h), so the packed model loads with
 * its tokenizer and chat template. */
#include "lrun.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tensor.h"
#include "model/model.h"
#include "text/tokjson.h"

/* Integer array elements as i32 (the writer's integer array; config values fit). */
static lrun_status copy_array(lrun_gguf_writer *w, const lrun_gguf *g, int64_t kv, const char *key)
{
    lrun_gguf_type et;
    int64_t n = 0;
    lrun_status st = lrun_gguf_get_arr(g, kv, &et, &n);
    if (st != LRUN_OK) return st;
    if (et == LRUN_GGUF_TYPE_STRING) {
        const char **v = calloc(n ? (size_t)n : 1, sizeof *v);
        char **own = calloc(n ? (size_t)n : 1, sizeof *own);
        st = v && own ? LRUN_OK : lrun_fail_oom((size_t)n * sizeof *v, 0, "packing: key '%s'", key);
        for (int64_t i = 0; st == LRUN_OK && i < n; i++) {
            const char *s;
            size_t len;
            st = lrun_gguf_get_arr_str(g, kv, i, &s, &len);
            if (st == LRUN_OK && !(own[i] = malloc(len + 1))) st = lrun_fail_oom(len + 1, 0, "packing: key '%s'", key);
            if (st == LRUN_OK) {
                memcpy(own[i], s, len);
                own[i][len] = '\0';
                v[i] = own[i];
            }
        }
        if (st == LRUN_OK) st = lrun_gguf_writer_set_arr_str(w, key, v, n);
        for (int64_t i = 0; own && i < n; i++) free(own[i]);
        free(own);
        free(v);
        return st;
    }
    const int is_float = et == LRUN_GGUF_TYPE_F32 || et == LRUN_GGUF_TYPE_F64;
    float *f = is_float ? malloc((n ? (size_t)n : 1) * sizeof *f) : NULL;
    int32_t *x = is_float ? NULL : malloc((n ? (size_t)n : 1) * sizeof *x);
    st = f || x ? LRUN_OK : lrun_fail_oom((size_t)n * 4, 0, "packing: key '%s'", key);
    for (int64_t i = 0; st == LRUN_OK && i < n; i++) {
        double d;
        int64_t v;
        if (is_float) st = lrun_gguf_get_arr_f64(g, kv, i, &d), f[i] = (float)d;
        else st = lrun_gguf_get_arr_i64(g, kv, i, &v), x[i] = (int32_t)v;
    }
    if (st == LRUN_OK) st = is_float ? lrun_gguf_writer_set_arr_f32(w, key, f, n) : lrun_gguf_writer_set_arr_i32(w, key, x, n);
    free(f);
    free(x);
    return st;
}

/* One metadata key of g into w, with its type (or the writer's nearest). */
static lrun_status copy_kv(lrun_gguf_writer *w, const lrun_gguf *g, int64_t kv)
{
    const char *key = lrun_gguf_key(g, kv);
    int64_t i = 0;
    double d = 0;
    int b = 0;
    lrun_status st = LRUN_OK;
    switch (lrun_gguf_kv_type(g, kv)) {
    case LRUN_GGUF_TYPE_F32:
    case LRUN_GGUF_TYPE_F64:
        st = lrun_gguf_get_f64(g, kv, &d);
        return st == LRUN_OK ? lrun_gguf_writer_set_f32(w, key, (float)d) : st;
    case LRUN_GGUF_TYPE_BOOL:
        st = lrun_gguf_get_bool(g, kv, &b);
        return st == LRUN_OK ? lrun_gguf_writer_set_bool(w, key, b) : st;
    case LRUN_GGUF_TYPE_STRING: {
        const char *s;
        size_t len;
        st = lrun_gguf_get_str(g, kv, &s, &len);
        char *z = st == LRUN_OK ? malloc(len + 1) : NULL;
        if (st == LRUN_OK && !z) return lrun_fail_oom(len + 1, 0, "packing: key '%s'", key);
        if (z) {
            memcpy(z, s, len);
            z[len] = '\0';
            st = lrun_gguf_writer_set_str(w, key, z);
            free(z);
        }
        return st;
    }
    case LRUN_GGUF_TYPE_ARRAY: return copy_array(w, g, kv, key);
    case LRUN_GGUF_TYPE_I8:
    case LRUN_GGUF_TYPE_I16:
    case LRUN_GGUF_TYPE_I32:
        st = lrun_gguf_get_i64(g, kv, &i);
        return st == LRUN_OK ? lrun_gguf_writer_set_i32(w, key, (int32_t)i) : st;
    case LRUN_GGUF_TYPE_U64:
    case LRUN_GGUF_TYPE_I64:
        st = lrun_gguf_get_i64(g, kv, &i);
        return st == LRUN_OK ? lrun_gguf_writer_set_u64(w, key, (uint64_t)i) : st;
    default: /* u8, u16, u32 */
        st = lrun_gguf_get_i64(g, kv, &i);
        return st == LRUN_OK ? lrun_gguf_writer_set_u32(w, key, (uint32_t)i) : st;
    }
}

/* Writes the plain GGUF of the HF directory (or .safetensors file) dir at gguf_path. */
/* dir/name's text, NUL-terminated, into *out (NULL, LRUN_OK when the file is absent). */
static lrun_status read_text(const char *dir, const char *name, char **out)
{
    char path[4096];
    *out = NULL;
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return lrun_fail(LRUN_E_ARG, "packing %s: the directory's path is too long", dir);
    FILE *f = fopen(path, "rb");
    if (f == NULL) return LRUN_OK;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || size > (1L << 30) || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return lrun_fail(LRUN_E_IO, "packing %s: cannot find its size or it is over 1 GiB", path);
    }
    char *buf = malloc((size_t)size + 1);
    if (buf == NULL) {
        fclose(f);
        return lrun_fail_oom((size_t)size + 1, 0, "packing %s: reading %s", dir, name);
    }
    const size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        free(buf);
        return lrun_fail(LRUN_E_IO, "packing %s: short read (%zu of %ld bytes)", path, got, size);
    }
    buf[size] = '\0';
    if (memchr(buf, '\0', (size_t)size) != NULL) {
        free(buf);
        return lrun_fail(LRUN_E_FORMAT, "packing %s: a NUL byte in a JSON text", path);
    }
    *out = buf;
    return LRUN_OK;
}

/* The directory's tokenizer.json and tokenizer_config.json as string keys
 * (text/tokjson.h), so that the packed model loads with its tokenizer. */
static lrun_status write_tokenizer_keys(lrun_gguf_writer *w, const char *dir)
{
    static const struct {
        const char *file, *key;
    } keys[] = {{"tokenizer.json", LRUN_GGUF_KEY_HF_TOKENIZER}, {"tokenizer_config.json", LRUN_GGUF_KEY_HF_TOKENIZER_CONFIG}};
    lrun_status st = LRUN_OK;
    for (size_t i = 0; st == LRUN_OK && i < sizeof keys / sizeof keys[0]; i++) {
        char *text = NULL;
        st = read_text(dir, keys[i].file, &text);
        if (st == LRUN_OK && text) st = lrun_gguf_writer_set_str(w, keys[i].key, text);
        free(text);
        if (i == 0 && st == LRUN_OK && !text) break; /* no tokenizer: its config alone is no use */
    }
    return st;
}

lrun_status lrun_pack_hf_write_gguf(const char *dir, const char *gguf_path, int n_threads);

/* 1 when t's rows (a vector's elements) are per-head halves to interleave. */
static int permuted(const lrun_model *m, const struct lrun_tensor *t)
{
    if (m->arch->rope_style != LRUN_ROPE_STYLE_ADJACENT) return 0;
    return strstr(t->name, ".attn_q.") != NULL || strstr(t->name, ".attn_k.") != NULL;
}

/* Writes t's bytes in GGUF order: GGUF row h*hd + 2i + j is HF row
 * h*hd + j*hd/2 + i (the inverse of model_gen_hf.c's source_row); a
 * vector's elements likewise. */
static lrun_status write_permuted(lrun_gguf_writer *w, const lrun_model *m, const struct lrun_tensor *t)
{
    const int vec = t->ndim == 1;
    const int64_t hd = m->info.head_dim, half = hd / 2, rows = vec ? t->ne[0] : t->ne[1];
    const size_t unit = vec ? t->nbytes / (size_t)t->ne[0] : t->row_bytes;
    if (hd < 2 || hd % 2 || rows % hd || (vec && t->nbytes % (size_t)t->ne[0]))
        return lrun_fail(LRUN_E_FORMAT, "packing: tensor '%s' is not whole heads of %lld", t->name, (long long)hd);
    uint8_t *buf = malloc(t->nbytes ? t->nbytes : 1);
    if (!buf) return lrun_fail_oom(t->nbytes, 0, "packing: tensor '%s' reordered", t->name);
    const uint8_t *src = lrun_tensor_host_data(t);
    for (int64_t g = 0; g < rows; g++) {
        const int64_t h = g / hd, rem = g % hd, i = rem / 2, j = rem % 2;
        memcpy(buf + (size_t)g * unit, src + (size_t)(h * hd + j * half + i) * unit, unit);
    }
    const lrun_status st = lrun_gguf_writer_write_data(w, buf, t->nbytes);
    free(buf);
    return st;
}

lrun_status lrun_pack_hf_write_gguf(const char *dir, const char *gguf_path, int n_threads)
{
    const lrun_load_opts lo = {.device = "cpu", .n_threads = n_threads, .rope_style = -1};
    lrun_model *m = NULL;
    lrun_status st = lrun_model_load(&m, dir, &lo);
    if (st == LRUN_OK) st = lrun_model_settle_weights(m); /* FP8 weights left lazy (LRUN_FP8_LAZY=1) get their bytes */
    if (st != LRUN_OK) {
        lrun_model_free(m);
        return st;
    }
    lrun_gguf_writer *w = NULL;
    st = lrun_gguf_writer_open(&w, gguf_path);
    const lrun_gguf *g = m->gguf;
    for (int64_t kv = 0; st == LRUN_OK && kv < lrun_gguf_kv_count(g); kv++) {
        st = copy_kv(w, g, kv);
        if (st != LRUN_OK) lrun_fail_context(st, "packing %s: metadata key '%s'", dir, lrun_gguf_key(g, kv));
    }
    if (st == LRUN_OK && lrun_gguf_find_key(g, "tokenizer.ggml.model") < 0) st = write_tokenizer_keys(w, dir);
    for (int64_t i = 0; st == LRUN_OK && i < m->n_tensors; i++) {
        const struct lrun_tensor *t = &m->tensors[i];
        st = lrun_gguf_writer_add_tensor(w, t->name, t->dtype, t->ndim, t->ne);
    }
    for (int64_t i = 0; st == LRUN_OK && i < m->n_tensors; i++) {
        const struct lrun_tensor *t = &m->tensors[i];
        st = permuted(m, t) ? write_permuted(w, m, t) : lrun_gguf_writer_write_data(w, lrun_tensor_host_data(t), t->nbytes);
    }
    if (st == LRUN_OK) st = lrun_gguf_writer_finish(w);
    lrun_gguf_writer_free(w);
    lrun_model_free(m);
    return st;
}
