/* safetensors_index.c — a model's tensors over one file or the shards that
 * model.safetensors.index.json names:
 *
 *   {"metadata": {"total_size": N, …}, "weight_map": {tensor: "model-00001-of-00002.safetensors", …}}
 *
 * Shard names are plain file names beside the index: no '/' or '\\', not
 * "." or "..", ending ".safetensors" (so no path leaves the directory).
 * Every shard is opened and validated (safetensors.c); every tensor the map
 * names must be in its shard, and every shard tensor must be in the map
 * under that shard, so the set is exactly what the index says. */
#include "formats/safetensors.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define MAX_INDEX_BYTES ((size_t)256 << 20) /* a weight map of ~1M tensors */

struct lrun_st_set {
    int n_files;
    lrun_safetensors **files;   /* (n_files), shards in sorted name order */
    int64_t n;
    lrun_st_tensor *t;          /* (n) copies of the shards' records, .file set */
    int64_t *by_name;           /* (n) indices of t sorted by name */
};

typedef struct entry {
    const char *tensor;
    const char *shard;
} entry;

static int entry_cmp(const void *a, const void *b) { return strcmp(((const entry *)a)->tensor, ((const entry *)b)->tensor); }
static int str_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static lrun_status bad(const char *path, const char *rule, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static lrun_status bad(const char *path, const char *rule, const char *fmt, ...)
{
    char detail[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return lrun_fail(LRUN_E_FORMAT, "safetensors index %s: %s: %s", path, rule, detail);
}

// ---------------------------------------------------------------- the index file

static char *read_text(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    char *buf = NULL;
    if (fseek(fp, 0, SEEK_END) == 0) {
        const long n = ftell(fp);
        if (n >= 0 && (size_t)n <= MAX_INDEX_BYTES && fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            *len = fread(buf, 1, (size_t)n, fp);
            buf[*len] = '\0';
        }
    }
    fclose(fp);
    return buf;
}

/* A shard name that stays in the index's directory. */
static int shard_name_ok(const char *s)
{
    const size_t n = strlen(s), ext = strlen(".safetensors");
    if (n <= ext || strcmp(s + n - ext, ".safetensors") != 0) return 0;
    if (strchr(s, '/') || strchr(s, '\\') || s[0] == '.') return 0;
    return 1;
}

/* The weight map as entries sorted by tensor name; its distinct shards sorted. */
static lrun_status read_map(const char *path, const cJSON *root, entry **out, int64_t *n_out, const char ***shards,
                            int *n_shards)
{
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) return bad(path, "weight-map", "no \"weight_map\" object");
    int64_t n = 0;
    for (const cJSON *c = map->child; c; c = c->next) n++;
    entry *e = calloc((size_t)(n ? n : 1), sizeof *e);
    const char **sh = calloc((size_t)(n ? n : 1), sizeof *sh);
    *out = e;
    *shards = sh;
    if (!e || !sh) return lrun_fail_oom((size_t)n * sizeof *e, 0, "safetensors index %s: %lld entries", path, (long long)n);
    int64_t i = 0;
    for (const cJSON *c = map->child; c; c = c->next, i++) {
        if (!cJSON_IsString(c)) return bad(path, "weight-map", "tensor '%.96s' maps to a non-string", c->string);
        if (!shard_name_ok(c->valuestring))
            return bad(path, "shard-name", "tensor '%.96s' maps to '%.96s', not a plain *.safetensors file name beside "
                       "the index", c->string, c->valuestring);
        e[i] = (entry){c->string, c->valuestring};
        sh[i] = c->valuestring;
    }
    qsort(e, (size_t)n, sizeof *e, entry_cmp);
    for (i = 1; i < n; i++)
        if (strcmp(e[i].tensor, e[i - 1].tensor) == 0)
            return bad(path, "duplicate", "tensor '%.96s' appears twice in weight_map", e[i].tensor);
    qsort(sh, (size_t)n, sizeof *sh, str_cmp);
    int k = 0;
    for (i = 0; i < n; i++)
        if (k == 0 || strcmp(sh[k - 1], sh[i]) != 0) sh[k++] = sh[i];
    *n_out = n;
    *n_shards = k;
    if (n == 0) return bad(path, "weight-map", "weight_map is empty");
    return LRUN_OK;
}

// ---------------------------------------------------------------- the set

static int named_cmp(const void *a, const void *b, void *t)
{
    const lrun_st_tensor *ts = t;
    return strcmp(ts[*(const int64_t *)a].name, ts[*(const int64_t *)b].name);
}

/* Copies the shards' records into s->t and sorts the name index. */
static lrun_status gather(lrun_st_set *s, const char *what)
{
    int64_t n = 0;
    for (int i = 0; i < s->n_files; i++) n += lrun_safetensors_count(s->files[i]);
    s->t = calloc((size_t)(n ? n : 1), sizeof *s->t);
    s->by_name = calloc((size_t)(n ? n : 1), sizeof *s->by_name);
    if (!s->t || !s->by_name) return lrun_fail_oom((size_t)n * sizeof *s->t, 0, "safetensors %s: tensor index", what);
    for (int i = 0; i < s->n_files; i++)
        for (int64_t j = 0; j < lrun_safetensors_count(s->files[i]); j++) {
            s->t[s->n] = *lrun_safetensors_tensor(s->files[i], j);
            s->t[s->n].file = i;
            s->by_name[s->n] = s->n;
            s->n++;
        }
    qsort_r(s->by_name, (size_t)n, sizeof *s->by_name, named_cmp, s->t);
    for (int64_t i = 1; i < n; i++) {
        const lrun_st_tensor *a = &s->t[s->by_name[i - 1]], *b = &s->t[s->by_name[i]];
        if (strcmp(a->name, b->name) == 0)
            return lrun_fail(LRUN_E_FORMAT, "safetensors %s: tensor '%.96s': duplicate: in shards %s and %s", what,
                             a->name, lrun_safetensors_path(s->files[a->file]), lrun_safetensors_path(s->files[b->file]));
    }
    return LRUN_OK;
}

lrun_status lrun_st_set_open_file(lrun_st_set **out, const char *path)
{
    *out = NULL;
    lrun_st_set *s = calloc(1, sizeof *s);
    if (!s || !(s->files = calloc(1, sizeof *s->files))) {
        free(s);
        return lrun_fail_oom(sizeof *s, 0, "safetensors %s: set", path);
    }
    lrun_status st = lrun_safetensors_open(&s->files[0], path);
    if (st == LRUN_OK) s->n_files = 1, st = gather(s, path);
    if (st != LRUN_OK) {
        lrun_st_set_close(s);
        return st;
    }
    *out = s;
    return LRUN_OK;
}

/* Each shard's tensors are mapped to it, and each mapped tensor is in its shard. */
static lrun_status check_map(const lrun_st_set *s, const char *path, const entry *e, int64_t n, const char **shards)
{
    for (int64_t i = 0; i < s->n; i++) {
        const lrun_st_tensor *t = &s->t[i];
        const entry key = {t->name, NULL};
        const entry *m = bsearch(&key, e, (size_t)n, sizeof *e, entry_cmp);
        if (!m || strcmp(m->shard, shards[t->file]) != 0)
            return bad(path, "shard-tensor", "tensor '%.96s' is in shard %s but weight_map %s%.96s%s", t->name,
                       shards[t->file], m ? "says '" : "does not name it", m ? m->shard : "", m ? "'" : "");
    }
    for (int64_t i = 0; i < n; i++)
        if (lrun_st_set_find(s, e[i].tensor) < 0)
            return bad(path, "index-missing", "tensor '%.96s' is mapped to %s, which does not hold it", e[i].tensor,
                       e[i].shard);
    return LRUN_OK;
}

static lrun_status open_shards(lrun_st_set *s, const char *path, const char **shards, int n_shards, lrun_st_open_cb cb,
                               void *ctx)
{
    const char *slash = strrchr(path, '/');
    const int dir_len = slash ? (int)(slash - path) : 1;
    const char *dir = slash ? path : ".";
    s->files = calloc((size_t)n_shards, sizeof *s->files);
    if (!s->files) return lrun_fail_oom((size_t)n_shards * sizeof *s->files, 0, "safetensors index %s: shards", path);
    for (int i = 0; i < n_shards; i++) {
        const size_t cap = (size_t)dir_len + strlen(shards[i]) + 2;
        char *p = malloc(cap);
        if (!p) return lrun_fail_oom(cap, 0, "safetensors index %s: shard path", path);
        snprintf(p, cap, "%.*s/%s", dir_len, dir, shards[i]);
        lrun_status st = lrun_safetensors_open(&s->files[i], p);
        free(p);
        if (st != LRUN_OK) return lrun_fail_context(st, "safetensors index %s: shard %d of %d", path, i + 1, n_shards);
        s->n_files = i + 1;
        if (cb) cb(ctx, i, n_shards, lrun_safetensors_path(s->files[i]), lrun_safetensors_file_bytes(s->files[i]));
    }
    return LRUN_OK;
}

lrun_status lrun_st_set_open_index(lrun_st_set **out, const char *path, lrun_st_open_cb cb, void *ctx)
{
    *out = NULL;
    size_t len = 0;
    char *text = read_text(path, &len);
    if (!text) return lrun_fail(LRUN_E_IO, "safetensors index %s: cannot read it (or larger than %zu bytes)", path,
                                MAX_INDEX_BYTES);
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    lrun_st_set *s = calloc(1, sizeof *s);
    entry *e = NULL;
    const char **shards = NULL;
    int64_t n = 0;
    int n_shards = 0;
    lrun_status st = LRUN_OK;
    if (!s) st = lrun_fail_oom(sizeof *s, 0, "safetensors index %s: set", path);
    else if (!cJSON_IsObject(root)) st = bad(path, "index-json", "not a JSON object");
    if (st == LRUN_OK) st = read_map(path, root, &e, &n, &shards, &n_shards);
    if (st == LRUN_OK) st = open_shards(s, path, shards, n_shards, cb, ctx);
    if (st == LRUN_OK) st = gather(s, path);
    if (st == LRUN_OK) st = check_map(s, path, e, n, shards);
    free(e);
    free(shards);
    cJSON_Delete(root); /* the records' names point into the shards' headers, not here */
    if (st != LRUN_OK) {
        lrun_st_set_close(s);
        return st;
    }
    *out = s;
    return LRUN_OK;
}

void lrun_st_set_close(lrun_st_set *s)
{
    if (!s) return;
    for (int i = 0; s->files && i < s->n_files; i++) lrun_safetensors_close(s->files[i]);
    free(s->files);
    free(s->t);
    free(s->by_name);
    free(s);
}

int64_t lrun_st_set_count(const lrun_st_set *s) { return s->n; }
int lrun_st_set_n_files(const lrun_st_set *s) { return s->n_files; }
const lrun_safetensors *lrun_st_set_file(const lrun_st_set *s, int i) { return i >= 0 && i < s->n_files ? s->files[i] : NULL; }
const lrun_st_tensor *lrun_st_set_tensor(const lrun_st_set *s, int64_t i) { return i >= 0 && i < s->n ? &s->t[i] : NULL; }

int64_t lrun_st_set_find(const lrun_st_set *s, const char *name)
{
    int64_t lo = 0, hi = s->n;
    while (name && lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(s->t[s->by_name[mid]].name, name);
        if (c == 0) return s->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}
