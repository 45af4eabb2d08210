/* model_fp8.c — an HF checkpoint's F8_E4M3 weights: their records, the
 * widening the streaming loader runs, and settling them into host memory
 * (model_fp8.h says when each happens). */
#include "model/model_fp8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "quant/fp8.h"
#include "quant/quant.h"
#include "residency/page_cache.h"

// ---------------------------------------------------------------- scales

/* One element of a scale tensor (F32, BF16 or F16) as a float. */
static float scale_at(const lrun_st_tensor *s, int64_t i)
{
    const uint8_t *p = s->data;
    if (s->dtype == LRUN_ST_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return s->dtype == LRUN_ST_BF16 ? lrun_bf16_to_f32(h) : lrun_f16_to_f32(h);
}

static int64_t numel(const lrun_st_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* The scale tensor of FP8 weight t: "<prefix>weight_scale" or
 * "<prefix>weight_scale_inv" (both multiply), or NULL. */
static const lrun_st_tensor *fp8_scale(const lrun_st_set *s, const char *weight)
{
    static const char *const suffix[] = {"_scale", "_scale_inv"};
    char name[256];
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "%s%s", weight, suffix[i]);
        const int64_t k = lrun_st_set_find(s, name);
        if (k >= 0) return lrun_st_set_tensor(s, k);
    }
    return NULL;
}

int lrun_fp8_is_companion(const lrun_st_set *s, const char *name)
{
    static const char *const suffix[] = {"weight_scale", "weight_scale_inv", "input_scale"};
    const size_t n = strlen(name);
    for (int i = 0; i < 3; i++) {
        const size_t k = strlen(suffix[i]);
        char base[256];
        if (n <= k || n - k + 6 >= sizeof base || strcmp(name + n - k, suffix[i]) != 0) continue;
        snprintf(base, sizeof base, "%.*sweight", (int)(n - k), name);
        const int64_t w = lrun_st_set_find(s, base);
        if (w >= 0 && lrun_st_set_tensor(s, w)->dtype == LRUN_ST_F8_E4M3) return 1;
    }
    return 0;
}

/* The loader's widening (residency/loader.h): n E4M3 bytes, elements at..,
 * into bf16(value × scale) at dst. Pieces cut rows anywhere. */
static void widen_piece(const void *ctx, uint64_t at, const void *src, size_t n, void *dst)
{
    const lrun_fp8_widen *w = ctx;
    const uint8_t *q = src;
    uint16_t *out = dst;
    for (size_t i = 0; i < n; i++) {
        const int64_t e = (int64_t)(at + i), r = e / w->cols, c = e % w->cols;
        const float s = !w->scale ? 1.0f : w->kind == LRUN_FP8_ONE ? scale_at(w->scale, 0)
                        : w->kind == LRUN_FP8_ROW ? scale_at(w->scale, r)
                        : scale_at(w->scale, r / w->block[0] * w->bcols + c / w->block[1]);
        out[i] = lrun_f32_to_bf16(lrun_fp8_e4m3_to_f32(q[i]) * s);
    }
}

// ---------------------------------------------------------------- records

int lrun_model_fp8_lazy_wanted(const char *device)
{
    const char *e = getenv("LRUN_FP8_LAZY");
    if (e && strcmp(e, "1") == 0) return 1;
    if (e && strcmp(e, "0") == 0) return 0;
    return device && strncmp(device, "cuda", 4) == 0;
}

/* How t's elements find their scale, checked against t's shape. */
static lrun_status widen_of(const lrun_model *m, const char *file, const lrun_st_tensor *t, const int block[2],
                            lrun_fp8_widen *w)
{
    const int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = t->ndim == 2 ? t->shape[1] : numel(t);
    const lrun_st_tensor *sc = fp8_scale(m->st, t->name);
    *w = (lrun_fp8_widen){.scale = sc, .kind = LRUN_FP8_ONE, .cols = cols > 0 ? cols : 1, .bcols = 1,
                          .block = {block[0], block[1]}};
    if (sc && (sc->dtype != LRUN_ST_F32 && sc->dtype != LRUN_ST_BF16 && sc->dtype != LRUN_ST_F16))
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: scale of '%s' is %s (F32, BF16 or F16 expected)", file, t->name,
                         lrun_st_dtype_name(sc->dtype));
    if (sc && numel(sc) == 1) w->kind = LRUN_FP8_ONE;
    else if (sc && numel(sc) == rows && sc->shape[0] == rows) w->kind = LRUN_FP8_ROW;
    else if (sc && sc->ndim == 2 && sc->shape[0] == (rows + block[0] - 1) / block[0] &&
             sc->shape[1] == (cols + block[1] - 1) / block[1])
        w->kind = LRUN_FP8_BLOCK, w->bcols = sc->shape[1];
    else if (sc)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: the scale of '%s' has a shape that is not per tensor, per row "
                         "or per %dx%d block", file, t->name, block[0], block[1]);
    return LRUN_OK;
}

/* The index in m->st of the shard whose path is path, or -1. */
static int shard_index(const lrun_model *m, const char *path)
{
    for (int i = 0; i < lrun_st_set_n_files(m->st); i++)
        if (strcmp(lrun_safetensors_path(lrun_st_set_file(m->st, i)), path) == 0) return i;
    return -1;
}

/* The tensors' maker (core/tensor.h): every pending weight widened. */
static lrun_status make_all(void *ctx, const char *why)
{
    return lrun_model_fp8_settle(ctx, 0, why);
}

lrun_status lrun_model_fp8_add(lrun_model *m, const char *file, const lrun_st_tensor *t, const int block[2],
                               int64_t index, int settle)
{
    m->fp8_maker = (lrun_tensor_maker){make_all, m};
    lrun_fp8_weight x = {.tensor = index, .bytes = t->nbytes, .settle_at_load = settle || !m->fp8_lazy};
    lrun_status st = widen_of(m, file, t, block, &x.w);
    if (st != LRUN_OK) return st;
    const lrun_tensor where = {.file_data = t->data, .nbytes = t->nbytes};
    const char *path;
    if (!lrun_model_tensor_location(m, &where, &path, &x.offset) || (x.file = shard_index(m, path)) < 0)
        return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s' is not inside a shard's data", file, t->name);
    if (m->n_fp8 == m->cap_fp8) {
        const int64_t cap = m->cap_fp8 ? 2 * m->cap_fp8 : 64;
        lrun_fp8_weight *r = realloc(m->fp8, (size_t)cap * sizeof *r);
        if (!r) return lrun_fail_oom((size_t)cap * sizeof *r, 0, "%s: FP8 weight records", file);
        m->fp8 = r, m->cap_fp8 = cap;
    }
    m->fp8[m->n_fp8++] = x;
    return LRUN_OK;
}

int lrun_model_fp8_range(const lrun_model *m, const struct lrun_tensor *t, lrun_load_range *r)
{
    if (!t->fp8_pending) return 0;
    const int64_t index = t - m->tensors;
    for (int64_t i = 0; i < m->n_fp8; i++) {
        const lrun_fp8_weight *x = &m->fp8[i];
        if (x->tensor != index) continue;
        *r = (lrun_load_range){.file = x->file, .offset = x->offset, .bytes = x->bytes, .widen = widen_piece,
                               .widen_ctx = &x->w, .widen_ratio = (int)sizeof(uint16_t)};
        return 1;
    }
    return 0;
}

int lrun_model_fp8_repend(lrun_model *m, struct lrun_tensor *t)
{
    if (t->fp8_pending || t->file_data) return 0;
    const int64_t index = t - m->tensors;
    for (int64_t i = 0; i < m->n_fp8; i++)
        if (m->fp8[i].tensor == index) {
            lrun_tensor_release_data(t);
            t->tier = LRUN_TIER_MMAP;
            t->device = NULL;
            t->fp8_pending = 1;
            return 1;
        }
    return 0;
}

// ---------------------------------------------------------------- settling

/* The home of record x: host memory the model owns, charged as weights. */
static lrun_status make_home(lrun_model *m, const lrun_fp8_weight *x, void **out)
{
    const struct lrun_tensor *t = &m->tensors[x->tensor];
    char what[160];
    snprintf(what, sizeof what, "FP8 weight %s widened to bf16", t->name);
    /* lrun_model_own charges the model's host account (weights) */
    if (!(*out = lrun_model_own(m, t->nbytes, what)))
        return lrun_oom_phase(lrun_fail_context(LRUN_E_OOM, "loading"), "loading");
    return LRUN_OK;
}

/* The shards' paths, in m->st's order (the loader's file indices). */
static const char **shard_paths(const lrun_model *m)
{
    const int n = lrun_st_set_n_files(m->st);
    const char **p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    for (int i = 0; p && i < n; i++) p[i] = lrun_safetensors_path(lrun_st_set_file(m->st, i));
    return p;
}

static int by_file_offset(const void *a, const void *b)
{
    const lrun_load_range *x = a, *y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

lrun_status lrun_model_fp8_settle(lrun_model *m, int only_at_load, const char *why)
{
    int64_t n = 0;
    for (int64_t i = 0; i < m->n_fp8; i++)
        n += m->tensors[m->fp8[i].tensor].fp8_pending && (!only_at_load || m->fp8[i].settle_at_load);
    if (n == 0) return LRUN_OK;
    lrun_load_range *r = malloc((size_t)n * sizeof *r);
    struct lrun_tensor **tt = malloc((size_t)n * sizeof *tt);
    void **homes = malloc((size_t)n * sizeof *homes);
    const char **paths = shard_paths(m);
    lrun_status st = r && tt && homes && paths ? LRUN_OK
                                      : lrun_fail_oom((size_t)n * sizeof *r, 0, "%s: FP8 widening ranges", why);
    int64_t k = 0;
    for (int64_t i = 0; st == LRUN_OK && i < m->n_fp8; i++) {
        const lrun_fp8_weight *x = &m->fp8[i];
        struct lrun_tensor *t = &m->tensors[x->tensor];
        if (!t->fp8_pending || (only_at_load && !x->settle_at_load)) continue;
        void *home = NULL;
        if ((st = make_home(m, x, &home)) != LRUN_OK) break;
        (void)lrun_model_fp8_range(m, t, &r[k]);
        r[k].dst = homes[k] = home;
        tt[k++] = t;
    }
    if (st == LRUN_OK) {
        qsort(r, (size_t)k, sizeof *r, by_file_offset); /* tt and homes stay in record order */
        size_t file_bytes = 0;
        for (int64_t i = 0; i < k; i++) file_bytes += r[i].bytes;
        const lrun_loader_opts o = {.drop_cache = lrun_page_cache_drop(file_bytes, m->host.budget > 0),
                                    .account = &m->host};
        st = lrun_loader_read(paths, lrun_st_set_n_files(m->st), r, k, &o, NULL);
    }
    /* the homes of a failed run stay owned (freed with the model) and charged; their tensors stay pending */
    for (int64_t i = 0; st == LRUN_OK && i < k; i++) {
        tt[i]->file_data = tt[i]->data = homes[i];
        tt[i]->fp8_pending = 0;
    }
    free(r);
    free(tt);
    free(homes);
    free(paths);
    return st == LRUN_OK ? st : lrun_fail_context(st, "%s: widening %lld FP8 weights", why, (long long)k);
}
