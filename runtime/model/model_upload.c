/* model_upload.c — the weights' first moves out of the model file: the
 * placement a policy chose (lua/lrun/residency.lua), or every weight onto
 * the GPU (cuda engine init), and the prefault of what stays in the file.
 *
 * A tensor still in its file (tier MMAP, bytes inside a shard's or the
 * GGUF's mapping) is read by the streaming loader (residency/loader.h):
 * several threads pread it straight into its host destination, or through
 * small pinned chunks into device memory, and drop the page cache behind
 * them. The mapping itself is never touched, so no page of the file counts
 * in the process's RSS, and the model is never held twice: peak host
 * memory is the destinations plus n_threads × 2 × chunk of staging, which
 * is charged to the model's host account and shrinks to fit its budget.
 * Where pages of the mapping were faulted in before (a prefault, a CPU
 * run), madvise(MADV_DONTNEED) on the moved tensor's whole pages gives them
 * back; that is only ever done on the file's read-only mapping (dropping
 * file-backed pages loses nothing: a later read faults them in again),
 * never on memory the model owns (FP8 weights widened to bf16, RoPE
 * factors), which DONTNEED would zero.
 *
 * Tensors that are not in a file (those owned buffers, a packed model
 * decoded into memory) move one by one with lrun_tensor_move. An FP8
 * weight not widened yet (model_fp8.h) is a loader range too: its FP8
 * bytes, widened piece by piece into the destination (into the pinned
 * chunk before each copy to a GPU), so no bf16 copy is made on the host. */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/device.h"
#include "core/error.h"
#include "core/mapguard.h"
#include "core/progress.h"
#include "model/model_fp8.h"
#include "residency/loader.h"
#include "residency/page_cache.h"

// ---------------------------------------------------------------- where tensors are in files

/* One file the weights are read from, and where the model maps it. */
typedef struct weight_file {
    const char *path;
    const char *map;           /* the mapping of its weight bytes */
    size_t len;                /* bytes of that mapping */
    uint64_t file_offset;      /* where map[0] is in the file */
} weight_file;

/* The model's weight files: the shards of an HF model, or its GGUF (none
 * when the GGUF was decoded into memory from a packed file). */
static int weight_files(const lrun_model *m, weight_file *w, int cap)
{
    if (m->st) {
        const int n = lrun_st_set_n_files(m->st) < cap ? lrun_st_set_n_files(m->st) : cap;
        for (int i = 0; i < n; i++) {
            const lrun_safetensors *f = lrun_st_set_file(m->st, i);
            w[i].path = lrun_safetensors_path(f);
            w[i].map = lrun_safetensors_data(f, &w[i].len);
            w[i].file_offset = lrun_safetensors_file_bytes(f) - w[i].len;
        }
        return n;
    }
    const lrun_gguf *g = m->gguf;
    if (!m->weights_path || !g || lrun_gguf_tensor_count(g) == 0 || cap < 1) return 0;
    const size_t file = lrun_gguf_file_bytes(g), off = lrun_gguf_data_offset(g);
    const char *start = (const char *)lrun_gguf_tensor_data(g, 0) - lrun_gguf_tensor_offset(g, 0);
    if (!start || off >= file) return 0;
    w[0] = (weight_file){m->weights_path, start, file - off, off};
    return 1;
}

/* The file of t's bytes (-1 when they are not in one) and their offset in it. */
static int tensor_file(const lrun_tensor *t, const weight_file *w, int n, uint64_t *offset)
{
    const char *p = t->file_data;
    for (int i = 0; p && i < n; i++)
        if (p >= w[i].map && (size_t)(p - w[i].map) <= w[i].len && t->nbytes <= w[i].len - (size_t)(p - w[i].map)) {
            *offset = w[i].file_offset + (uint64_t)(p - w[i].map);
            return i;
        }
    return -1;
}

int lrun_model_tensor_location(const lrun_model *m, const lrun_tensor *t, const char **path, uint64_t *offset)
{
    const int cap = m->st ? lrun_st_set_n_files(m->st) : 1;
    weight_file *w = malloc((size_t)cap * sizeof *w);
    const int f = w ? tensor_file(t, w, weight_files(m, w, cap), offset) : -1;
    if (f >= 0) *path = w[f].path;
    free(w);
    return f >= 0;
}

/* The whole pages inside [p, p + len) of a file mapping as [*begin, *begin + *n). */
static int inner_pages(const void *p, size_t len, uintptr_t *begin, size_t *n)
{
    const long pg = sysconf(_SC_PAGESIZE);
    const uintptr_t page = pg > 0 ? (uintptr_t)pg : 4096, a = (uintptr_t)p;
    const uintptr_t b = (a + page - 1) / page * page, e = (a + len) / page * page;
    *begin = b;
    *n = e > b ? (size_t)(e - b) : 0;
    return e > b;
}

/* Gives the pages of t's bytes in the file mapping back (see the top). */
static void release_file_pages(const lrun_tensor *t)
{
    uintptr_t b;
    size_t n;
    if (t->file_data && inner_pages(t->file_data, t->nbytes, &b, &n)) (void)madvise((void *)b, n, MADV_DONTNEED);
}

// ---------------------------------------------------------------- progress

typedef struct upload_progress {
    lrun_progress bar;
    const weight_file *files;
    int n_files;
    int last_file;             /* the file the label names, -1 at first */
    const char *name;          /* the model's name on the label */
} upload_progress;

static void on_progress(void *ctx, size_t done, int file)
{
    upload_progress *u = ctx;
    if (file != u->last_file && u->n_files > 1) {
        char label[96]; /* cut to the bar's label below */
        snprintf(label, sizeof label, "loading %.24s %d/%d", u->name, file + 1, u->n_files);
        const size_t len = strnlen(label, sizeof u->bar.label - 1);
        memcpy(u->bar.label, label, len);
        u->bar.label[len] = '\0';
        u->last_file = file;
    }
    lrun_progress_update(&u->bar, done);
}

// ---------------------------------------------------------------- moves

/* One tensor of a batch move. */
typedef struct move {
    lrun_tensor *t;
    lrun_tier to;
    lrun_tier from;            /* its tier before, for a rollback */
    lrun_device *from_device;
    void *dst;                 /* the loader's destination, NULL for a plain move */
    int file;                  /* its weight file, -1 for a plain move */
    uint64_t offset;           /* bytes from that file's start */
    int done;                  /* 1 once moved (plain moves) */
    int fp8;                   /* 1: a pending FP8 weight (model_fp8.h), widened by the loader into dst */
    lrun_load_range range;     /* its range (file bytes, widening) when fp8 */
} move;

static int by_file_offset(const void *a, const void *b)
{
    const lrun_load_range *x = a, *y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int on_gpu(const lrun_device *d, lrun_tier tier)
{
    return tier == LRUN_TIER_DEVICE && d && d->kind == LRUN_DEVICE_KIND_CUDA;
}

static void release_dst(lrun_device *dev, const move *mv)
{
    if (!mv->dst) return;
    if (mv->to == LRUN_TIER_DEVICE) lrun_device_release(dev, mv->dst, mv->t->nbytes);
    else lrun_device_host_release(dev, LRUN_HOST_CATEGORY_WEIGHTS, mv->to, mv->dst, mv->t->nbytes);
}

/* Puts back what the plain moves of a failed batch moved (as engine init always has). */
static void rollback(lrun_device *dev, move *mv, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        release_dst(dev, &mv[i]);
        mv[i].dst = NULL;
        if (!mv[i].done) continue;
        lrun_tensor *t = mv[i].t;
        if (mv[i].from == LRUN_TIER_DEVICE && t->device == mv[i].from_device) continue;
        (void)lrun_tensor_move(t, mv[i].from_device, t->file_data && mv[i].from == LRUN_TIER_MMAP
                                                         ? LRUN_TIER_MMAP : mv[i].from);
    }
}

/* Destination storage of every tensor the loader reads; plain moves for the others. */
static lrun_status prepare(lrun_model *m, move *mv, int64_t n)
{
    lrun_status st = LRUN_OK;
    for (int64_t i = 0; st == LRUN_OK && i < n; i++) {
        if (mv[i].file < 0 && !mv[i].fp8) {
            st = lrun_tensor_move(mv[i].t, m->device, mv[i].to);
            mv[i].done = st == LRUN_OK;
            continue;
        }
        char what[96];
        snprintf(what, sizeof what, "tensor %s", mv[i].t->name);
        st = mv[i].to == LRUN_TIER_DEVICE ? lrun_device_alloc(m->device, mv[i].t->nbytes, what, &mv[i].dst)
                                          : lrun_device_host_alloc(m->device, LRUN_HOST_CATEGORY_WEIGHTS, mv[i].to, mv[i].t->nbytes, what,
                                                                   &mv[i].dst);
        st = lrun_oom_phase(st, "weights");
    }
    return st;
}

/* The loader's ranges of the batch, in file order. */
static lrun_status read_all(lrun_model *m, const move *mv, int64_t n, const weight_file *w, int n_files)
{
    int64_t k = 0;
    size_t total = 0;
    lrun_load_range *r = malloc((size_t)(n ? n : 1) * sizeof *r);
    const char **paths = malloc((size_t)(n_files ? n_files : 1) * sizeof *paths);
    if (!r || !paths) {
        free(r);
        free(paths);
        return lrun_fail_oom((size_t)n * sizeof *r, 0, "loading weights: %lld ranges", (long long)n);
    }
    for (int i = 0; i < n_files; i++) paths[i] = w[i].path;
    for (int64_t i = 0; i < n; i++) {
        if (!mv[i].dst) continue;
        r[k] = mv[i].fp8 ? mv[i].range : (lrun_load_range){.file = mv[i].file, .offset = mv[i].offset,
                                                           .bytes = mv[i].t->nbytes};
        r[k].dst = mv[i].dst;
        r[k].on_device = on_gpu(m->device, mv[i].to);
        total += r[k++].bytes; /* file bytes: an FP8 weight's are half its bf16 ones */
    }
    qsort(r, (size_t)k, sizeof *r, by_file_offset);
    const char *slash = m->weights_path ? strrchr(m->weights_path, '/') : NULL;
    upload_progress up = {.files = w, .n_files = n_files, .last_file = -1,
                          .name = slash ? slash + 1 : m->weights_path ? m->weights_path : "weights"};
    lrun_progress_begin(&up.bar, m->progress && total >= ((size_t)64 << 20), up.name, total);
    /* the page cache of what was read stays when the files fit the host's memory twice over and no host
     * budget governs the model (the next load is then warm), else it goes (page_cache.h) */
    const lrun_loader_opts o = {.device = m->device, .drop_cache = lrun_page_cache_drop(total, m->host.budget > 0),
                                .progress = on_progress, .progress_ctx = &up, .account = &m->host};
    lrun_loader_stats stats;
    lrun_status st = lrun_loader_read(paths, n_files, r, k, &o, &stats);
    if (st == LRUN_OK && k > 0) { /* a move that read nothing keeps the last read's figures */
        m->load_stats = stats;
        m->load_kept_cache = !o.drop_cache;
    }
    if (st == LRUN_OK) lrun_progress_end(&up.bar);
    else if (up.bar.active) fprintf(stderr, "\n");
    free(r);
    free(paths);
    return st;
}

/* FP8 weights bound for a file tier (mmap, disk) need bf16 bytes in host
 * memory to point at, as at a load that is not lazy: one widened straight
 * into its placement is released and pending again (model_fp8.h), then
 * every pending one is widened into host memory the model owns. */
static lrun_status settle_for_file_tiers(lrun_model *m, int64_t n, const int64_t *index, const lrun_tier *tier)
{
    int need = 0;
    for (int64_t i = 0; i < n; i++) {
        lrun_tensor *t = &m->tensors[index[i]];
        if (tier[i] != LRUN_TIER_MMAP && tier[i] != LRUN_TIER_DISK) continue;
        if (t->tier != LRUN_TIER_MMAP && t->tier != LRUN_TIER_DISK) (void)lrun_model_fp8_repend(m, t);
        need |= t->fp8_pending && (tier[i] == LRUN_TIER_DISK || t->tier != tier[i]);
    }
    return need ? lrun_model_fp8_settle(m, 0, "moving FP8 weights to a file tier") : LRUN_OK;
}

static lrun_status move_tensors(lrun_model *model, int64_t n, const int64_t *index, const lrun_tier *tier)
{
    if (!model || n < 0 || (n > 0 && (!index || !tier)))
        return lrun_fail(LRUN_E_ARG, "lrun_model_move_tensors: model, index and tier must be given (n = %lld)",
                         (long long)n);
    lrun_model *m = model;
    for (int64_t i = 0; i < n; i++)
        if (index[i] < 0 || index[i] >= m->n_tensors || (unsigned)tier[i] >= LRUN_TIER_COUNT)
            return lrun_fail(LRUN_E_ARG, "lrun_model_move_tensors: entry %lld: tensor %lld of %lld, tier %d",
                             (long long)i, (long long)index[i], (long long)m->n_tensors, (int)tier[i]);
    const int cap = m->st ? lrun_st_set_n_files(m->st) : 1;
    weight_file *w = malloc((size_t)cap * sizeof *w);
    move *mv = calloc((size_t)(n ? n : 1), sizeof *mv);
    unsigned char *seen = calloc((size_t)(m->n_tensors ? m->n_tensors : 1), 1);
    if (!w || !mv || !seen) {
        free(w);
        free(mv);
        free(seen);
        return lrun_fail_oom((size_t)n * sizeof *mv, 0, "moving %lld tensors: records", (long long)n);
    }
    int64_t dup = -1;
    for (int64_t i = 0; i < n && dup < 0; i++) {
        if (seen[index[i]]) dup = index[i];
        seen[index[i]] = 1;
    }
    free(seen);
    if (dup >= 0) {
        free(w);
        free(mv);
        return lrun_fail(LRUN_E_ARG, "lrun_model_move_tensors: tensor %lld (%s) is listed twice", (long long)dup,
                         m->tensors[dup].name);
    }
    const int n_files = weight_files(m, w, cap);
    lrun_status st = settle_for_file_tiers(m, n, index, tier);
    int64_t k = 0;
    for (int64_t i = 0; st == LRUN_OK && i < n; i++) {
        lrun_tensor *t = &m->tensors[index[i]];
        const lrun_tier to = tier[i];
        if (t->tier == to && (to != LRUN_TIER_DEVICE || t->device == m->device)) continue;
        move *x = &mv[k++];
        *x = (move){.t = t, .to = to, .from = t->tier, .from_device = t->device, .file = -1};
        /* out of the file (mmap, or disk, whose bytes are the file's too) into memory: the loader reads it */
        const int in_file = t->tier == LRUN_TIER_MMAP || t->tier == LRUN_TIER_DISK;
        if (in_file && to != LRUN_TIER_MMAP && to != LRUN_TIER_DISK) x->file = tensor_file(t, w, n_files, &x->offset);
        /* a pending FP8 weight: widened by the loader straight into its destination */
        x->fp8 = lrun_model_fp8_range(m, t, &x->range);
    }
    if (st == LRUN_OK) st = prepare(m, mv, k);
    if (st == LRUN_OK) st = read_all(m, mv, k, w, n_files);
    if (st != LRUN_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", lrun_last_error());
        rollback(m->device, mv, k);
        st = lrun_fail(st, "%s", msg); /* the failure's message, not a rollback's */
    } else {
        for (int64_t i = 0; i < k; i++) {
            if (!mv[i].dst) continue;
            lrun_tensor *t = mv[i].t;
            t->tier = mv[i].to;
            t->data = mv[i].dst;
            t->device = m->device;
            t->fp8_pending = 0;
            release_file_pages(t);
        }
    }
    free(mv);
    free(w);
    return st;
}

// ---------------------------------------------------------------- prefault

static int by_address(const void *a, const void *b)
{
    const lrun_tensor *x = *(const lrun_tensor *const *)a, *y = *(const lrun_tensor *const *)b;
    return (const char *)x->file_data < (const char *)y->file_data ? -1 : x->file_data != y->file_data;
}

/* The tensors still read from the file mapping, in file order. */
static int64_t mapped_tensors(const lrun_model *m, const weight_file *w, int n_files, lrun_tensor **out,
                              size_t *total)
{
    int64_t k = 0;
    *total = 0;
    for (int64_t i = 0; i < m->n_tensors; i++) {
        lrun_tensor *t = &m->tensors[i];
        uint64_t off;
        if (t->tier != LRUN_TIER_MMAP || tensor_file(t, w, n_files, &off) < 0) continue;
        out[k++] = t;
        *total += t->nbytes;
    }
    qsort(out, (size_t)k, sizeof *out, by_address);
    return k;
}

/* Moves read the file's mapping (or pread it, with a fallback to the
 * mapping): a file truncated meanwhile is an error, not SIGBUS. */
lrun_status lrun_model_move_tensors(lrun_model *model, int64_t n, const int64_t *index, const lrun_tier *tier)
{
    const unsigned long g0 = lrun_mapguard_begin();
    const lrun_status st = move_tensors(model, n, index, tier);
    return lrun_mapguard_end(g0, st, "moving tensors out of the model file");
}

void lrun_model_prefault(lrun_model *m)
{
    if (m->prefaulted) return;
    m->prefaulted = 1;
    const int cap = m->st ? lrun_st_set_n_files(m->st) : 1;
    weight_file *w = malloc((size_t)cap * sizeof *w);
    lrun_tensor **list = malloc((size_t)(m->n_tensors ? m->n_tensors : 1) * sizeof *list);
    size_t total = 0;
    const int64_t n = w && list ? mapped_tensors(m, w, weight_files(m, w, cap), list, &total) : 0;
    const long page_l = sysconf(_SC_PAGESIZE), phys = sysconf(_SC_PHYS_PAGES);
    const size_t page = page_l > 0 ? (size_t)page_l : 4096;
    /* larger than physical memory: touching would only evict earlier pages */
    if (n > 0 && !(phys > 0 && total / page > (size_t)phys)) {
        for (int64_t i = 0; i < n; i++) {
            const uintptr_t a = (uintptr_t)list[i]->file_data & ~(uintptr_t)(page - 1);
            (void)madvise((void *)a, list[i]->nbytes + ((uintptr_t)list[i]->file_data - a), MADV_WILLNEED);
        }
        const char *slash = m->weights_path ? strrchr(m->weights_path, '/') : NULL;
        lrun_progress bar;
        lrun_progress_begin(&bar, m->progress, slash ? slash + 1 : m->weights_path ? m->weights_path : "weights",
                            total);
        volatile unsigned char sink = 0;
        size_t done = 0;
        for (int64_t i = 0; i < n; i++) {
            const unsigned char *p = list[i]->file_data;
            for (size_t o = 0; o < list[i]->nbytes; o += page) sink ^= p[o];
            done += list[i]->nbytes;
            lrun_progress_update(&bar, done);
        }
        (void)sink;
        lrun_progress_end(&bar);
    }
    free(list);
    free(w);
}
