/* safetensors_writer.c — see safetensors_writer.h. The header is built with
 * cJSON once every tensor is declared (on the first write or at finish). */
#include "formats/safetensors_writer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/checked.h"
#include "core/error.h"

struct lrun_st_writer {
    char *path;
    FILE *f;
    cJSON *header;              /* the object being declared */
    cJSON *meta;                /* its __metadata__, or NULL */
    uint64_t declared;          /* data bytes declared so far */
    uint64_t written;           /* data bytes written so far */
    int header_out;             /* the header is in the file */
    int finished;
};

lrun_status lrun_st_writer_open(lrun_st_writer **out, const char *path)
{
    *out = NULL;
    lrun_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path)) || !(w->header = cJSON_CreateObject())) {
        if (w) free(w->path);
        free(w);
        return lrun_fail_oom(sizeof *w, 0, "safetensors writer: %s", path);
    }
    w->f = fopen(path, "wb");
    if (!w->f) {
        const lrun_status st = lrun_fail(LRUN_E_IO, "safetensors writer: %s: cannot create: %s", path, strerror(errno));
        cJSON_Delete(w->header);
        free(w->path);
        free(w);
        return st;
    }
    *out = w;
    return LRUN_OK;
}

lrun_status lrun_st_writer_set_metadata(lrun_st_writer *w, const char *key, const char *value)
{
    if (w->header_out) return lrun_fail(LRUN_E_ARG, "safetensors writer: %s: metadata after the data began", w->path);
    if (!w->meta && !(w->meta = cJSON_AddObjectToObject(w->header, "__metadata__")))
        return lrun_fail_oom(0, 0, "safetensors writer: %s: metadata", w->path);
    if (!cJSON_AddStringToObject(w->meta, key, value)) return lrun_fail_oom(0, 0, "safetensors writer: metadata");
    return LRUN_OK;
}

lrun_status lrun_st_writer_add(lrun_st_writer *w, const char *name, lrun_st_dtype dtype, int ndim, const int64_t *shape)
{
    if (w->header_out) return lrun_fail(LRUN_E_ARG, "safetensors writer: %s: tensor '%s' after the data began", w->path, name);
    if (cJSON_GetObjectItemCaseSensitive(w->header, name))
        return lrun_fail(LRUN_E_ARG, "safetensors writer: %s: tensor '%s' declared twice", w->path, name);
    uint64_t bits = (uint64_t)lrun_st_dtype_bits(dtype);
    cJSON *e = cJSON_CreateObject(), *sh = cJSON_CreateArray(), *of = cJSON_CreateArray();
    int ok = e && sh && of;
    for (int i = 0; ok && i < ndim; i++) {
        ok = shape[i] >= 0 && !__builtin_mul_overflow(bits, (uint64_t)shape[i], &bits);
        if (ok) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)shape[i]));
    }
    if (!ok || bits % 8) {
        cJSON_Delete(e), cJSON_Delete(sh), cJSON_Delete(of);
        return lrun_fail(LRUN_E_ARG, "safetensors writer: %s: tensor '%s': bad shape or sub-byte size", w->path, name);
    }
    const uint64_t end = w->declared + bits / 8;
    cJSON_AddItemToArray(of, cJSON_CreateNumber((double)w->declared));
    cJSON_AddItemToArray(of, cJSON_CreateNumber((double)end));
    cJSON_AddStringToObject(e, "dtype", lrun_st_dtype_name(dtype));
    cJSON_AddItemToObject(e, "shape", sh);
    cJSON_AddItemToObject(e, "data_offsets", of);
    cJSON_AddItemToObject(w->header, name, e);
    w->declared = end;
    return LRUN_OK;
}

static lrun_status write_header(lrun_st_writer *w)
{
    char *text = cJSON_PrintUnformatted(w->header);
    if (!text) return lrun_fail_oom(0, 0, "safetensors writer: %s: header", w->path);
    const size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    uint8_t n[8];
    for (int i = 0; i < 8; i++) n[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(n, 1, 8, w->f) == 8 && fwrite(text, 1, len, w->f) == len;
    for (size_t i = len; ok && i < padded; i++) ok = fputc(' ', w->f) != EOF;
    free(text);
    w->header_out = 1;
    return ok ? LRUN_OK : lrun_fail(LRUN_E_IO, "safetensors writer: %s: write failed: %s", w->path, strerror(errno));
}

lrun_status lrun_st_writer_write(lrun_st_writer *w, const void *bytes, size_t n)
{
    lrun_status st = w->header_out ? LRUN_OK : write_header(w);
    if (st != LRUN_OK) return st;
    if (n > w->declared - w->written)
        return lrun_fail(LRUN_E_ARG, "safetensors writer: %s: %zu bytes past the declared tensors", w->path, n);
    if (fwrite(bytes, 1, n, w->f) != n)
        return lrun_fail(LRUN_E_IO, "safetensors writer: %s: write failed: %s", w->path, strerror(errno));
    w->written += n;
    return LRUN_OK;
}

lrun_status lrun_st_writer_finish(lrun_st_writer *w)
{
    lrun_status st = w->header_out ? LRUN_OK : write_header(w);
    if (st != LRUN_OK) return st;
    if (w->written != w->declared)
        return lrun_fail(LRUN_E_ARG, "safetensors writer: %s: %llu of %llu data bytes written", w->path,
                         (unsigned long long)w->written, (unsigned long long)w->declared);
    FILE *f = w->f;
    w->f = NULL;
    if (fclose(f) != 0) return lrun_fail(LRUN_E_IO, "safetensors writer: %s: close failed: %s", w->path, strerror(errno));
    w->finished = 1;
    return LRUN_OK;
}

void lrun_st_writer_free(lrun_st_writer *w)
{
    if (!w) return;
    if (w->f) fclose(w->f);
    if (!w->finished) unlink(w->path); /* a partial file would only mislead a reader */
    cJSON_Delete(w->header);
    free(w->path);
    free(w);
}
