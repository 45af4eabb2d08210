/* tensor.c — tensor records: shape, names of roles, element access
 * in any tier, and moves between tiers with their byte accounting.
 *
 * Invariant kept by every function here: t->tier says where t->data lives.
 * DEVICE: t->data is device memory counted on t->device (host memory on a
 * cpu device, a pool block on cuda). PINNED / HOST: t->data came from
 * lrun_host_alloc of that tier. MMAP: t->data == t->file_data, bytes in the
 * read-only model mapping, owned by the file. DISK: the same pointer (for
 * readers that are not staged); engines stage its bytes from the file with
 * direct I/O (residency/disk_reader.h). A packed tensor (t->packed) holds
 * lrun_tensor_stored_bytes = its codec bytes in its tier, and an MMAP or
 * DISK tensor has the file's form (t->file_packed). */
#include "core/tensor.h"

#include "core/checked.h"
#include "core/device.h"
#include "core/error.h"
#include "core/filemap.h"
#include "core/threadpool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// ---------------------------------------------------------------- names

/* Indexed by lrun_role; also the GGUF tensor-name stems of the block roles. */
static const char *const role_names[LRUN_ROLE_COUNT] = {
    "other",    "embedding", "output_norm", "lm_head", "attn_norm", "attn_q",   "attn_k",     "attn_v",
    "attn_output", "ffn_norm", "ffn_gate", "ffn_up",  "ffn_down",  "rope_freqs", "bias",
    "ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps",
};

const char *lrun_role_name(lrun_role role)
{
    return (unsigned)role < LRUN_ROLE_COUNT ? role_names[role] : "unknown";
}

void lrun_tensor_classify(const char *name, lrun_role *role, int *layer)
{
    *role = LRUN_ROLE_OTHER;
    *layer = -1;
    size_t len = strlen(name);
    if (len > 5 && strcmp(name + len - 5, ".bias") == 0) *role = LRUN_ROLE_BIAS;
    const char *stem = name;
    if (strncmp(name, "blk.", 4) == 0 && name[4] >= '0' && name[4] <= '9') {
        char *end;
        long n = strtol(name + 4, &end, 10);
        if (*end != '.' || n > 1000000) return;
        *layer = (int)n;
        stem = end + 1;
    } else {
        if (strcmp(name, "token_embd.weight") == 0) *role = LRUN_ROLE_EMBEDDING;
        else if (strcmp(name, "output_norm.weight") == 0) *role = LRUN_ROLE_OUTPUT_NORM;
        else if (strcmp(name, "output.weight") == 0) *role = LRUN_ROLE_LM_HEAD;
        else if (strcmp(name, "rope_freqs.weight") == 0) *role = LRUN_ROLE_ROPE_FREQS;
        return;
    }
    if (*role == LRUN_ROLE_BIAS) return;
    for (int r = LRUN_ROLE_ATTN_NORM; r < LRUN_ROLE_COUNT; r++) {
        if (r == LRUN_ROLE_ROPE_FREQS || r == LRUN_ROLE_BIAS) continue; /* not block stems */
        size_t n = strlen(role_names[r]);
        if (strncmp(stem, role_names[r], n) == 0 && strcmp(stem + n, ".weight") == 0) {
            *role = (lrun_role)r;
            return;
        }
    }
}

// ---------------------------------------------------------------- shape

lrun_status lrun_tensor_set_shape(lrun_tensor *t, const char *name, lrun_dtype dtype, int ndim, const int64_t *dims)
{
    if (!name) return lrun_fail(LRUN_E_ARG, "tensor shape: name is NULL");
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof t->name)
        return lrun_fail(LRUN_E_ARG, "tensor \"%.80s\": name is %zu bytes (expected 1..%zu)", name, len,
                         sizeof t->name - 1);
    int64_t block = lrun_dtype_block_elems(dtype);
    if (block <= 0) return lrun_fail(LRUN_E_ARG, "tensor %s: unknown dtype %d", name, (int)dtype);
    if (ndim < 1 || ndim > LRUN_MAX_DIMS)
        return lrun_fail(LRUN_E_ARG, "tensor %s: %d dimensions (expected 1..%d)", name, ndim, LRUN_MAX_DIMS);
    if (!dims) return lrun_fail(LRUN_E_ARG, "tensor %s: dims is NULL", name);
    int64_t ne[LRUN_MAX_DIMS] = {1, 1, 1, 1}, n_elem = 1, n_rows = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] <= 0)
            return lrun_fail(LRUN_E_ARG, "tensor %s: dim %d is %lld (expected > 0)", name, i, (long long)dims[i]);
        ne[i] = dims[i];
        if (!lrun_i64_mul(n_elem, dims[i], &n_elem) || (i > 0 && !lrun_i64_mul(n_rows, dims[i], &n_rows)))
            return lrun_fail(LRUN_E_ARG, "tensor %s: the element count overflows", name);
    }
    if (ne[0] % block != 0)
        return lrun_fail(LRUN_E_ARG, "tensor %s: ne[0] = %lld is not a multiple of the %s block of %lld", name,
                         (long long)ne[0], lrun_dtype_name(dtype), (long long)block);
    size_t row, total;
    lrun_status st = lrun_dtype_row_bytes(dtype, ne[0], &row);
    if (st != LRUN_OK) return lrun_fail_context(st, "tensor %s", name);
    if (!lrun_size_mul(row, (size_t)n_rows, &total))
        return lrun_fail(LRUN_E_ARG, "tensor %s: the byte size overflows", name);
    memcpy(t->name, name, len + 1);
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->ne, ne, sizeof ne);
    t->row_bytes = row;
    t->nbytes = total;
    return LRUN_OK;
}

// ---------------------------------------------------------------- storage

/* Storage of nbytes in tier (DEVICE on device); what names it in errors. */
static lrun_status storage_alloc(lrun_device *device, lrun_tier tier, size_t nbytes, const char *what, void **out)
{
    if (tier == LRUN_TIER_DEVICE) return lrun_oom_phase(lrun_device_alloc(device, nbytes, what, out), "weights");
    return lrun_oom_phase(lrun_device_host_alloc(device, LRUN_HOST_CATEGORY_WEIGHTS, tier, nbytes, what, out),
                          "weights");
}

static void storage_release(lrun_device *device, lrun_tier tier, void *data, size_t nbytes)
{
    if (tier == LRUN_TIER_DEVICE) lrun_device_release(device, data, nbytes);
    else if (tier == LRUN_TIER_PINNED || tier == LRUN_TIER_HOST)
        lrun_device_host_release(device, LRUN_HOST_CATEGORY_WEIGHTS, tier, data, nbytes);
    /* MMAP, DISK: the file owns the bytes. */
}

/* 1 for the tiers whose bytes are the model file's (data = file_data, nothing owned). */
static int is_file_tier(lrun_tier tier) { return tier == LRUN_TIER_MMAP || tier == LRUN_TIER_DISK; }

/* After a copy out of the model file: the process's mapped pages of the
 * tensor are dropped (MADV_DONTNEED on a file mapping only unmaps them; the
 * page cache keeps them, reclaimable; a later read faults them back), so
 * resident memory holds the copy once, not twice: a model placed under a
 * budget stays at its own size. Only whole pages inside the tensor, and only
 * when the kernel says a file backs them: on anonymous memory (weights a
 * loader converted) DONTNEED would zero them. */
static void drop_file_pages(const lrun_tensor *t)
{
    const long pl = sysconf(_SC_PAGESIZE);
    const uintptr_t page = pl > 0 ? (uintptr_t)pl : 4096, a = (uintptr_t)t->file_data;
    const uintptr_t first = (a + page - 1) & ~(page - 1), end = (a + t->nbytes) & ~(page - 1);
    lrun_filemap m;
    if (!t->file_data || end <= first || !lrun_filemap_find(t->file_data, &m) || end > m.hi) return;
    (void)madvise((void *)first, end - first, MADV_DONTNEED);
}

/* 1 when the bytes of a tier on device are not host-addressable. */
static int on_gpu(const lrun_device *device, lrun_tier tier)
{
    return tier == LRUN_TIER_DEVICE && device && device->kind == LRUN_DEVICE_KIND_CUDA;
}

void lrun_tensor_release_data(lrun_tensor *t)
{
    if (!is_file_tier(t->tier)) storage_release(t->device, t->tier, t->data, lrun_tensor_stored_bytes(t));
    if (t->file_data) {
        t->tier = LRUN_TIER_MMAP;
        t->data = (void *)t->file_data;
        t->packed = t->file_packed;
    } else {
        t->data = NULL;
        t->packed = 0;
    }
}

lrun_status lrun_tensor_init(lrun_tensor **out, lrun_device *device, const char *name, lrun_dtype dtype, int ndim,
                             const int64_t *dims, lrun_tier tier)
{
    *out = NULL;
    if ((unsigned)tier >= LRUN_TIER_COUNT)
        return lrun_fail(LRUN_E_ARG, "tensor %.64s: tier %d (expected device, pinned or host)", name ? name : "?",
                         (int)tier);
    if (is_file_tier(tier))
        return lrun_fail(LRUN_E_ARG, "tensor %.64s: a new tensor cannot live in the %s tier (only a model "
                         "file's tensors do)", name ? name : "?", lrun_tier_name(tier));
    if (tier == LRUN_TIER_DEVICE && !device)
        return lrun_fail(LRUN_E_ARG, "tensor %.64s: the device tier needs a device (got NULL)", name ? name : "?");
    lrun_tensor *t = calloc(1, sizeof *t);
    if (!t) return lrun_fail_oom(sizeof *t, 0, "tensor %.64s: host memory for the record", name ? name : "?");
    lrun_status st = lrun_tensor_set_shape(t, name, dtype, ndim, dims);
    if (st == LRUN_OK) st = storage_alloc(device, tier, t->nbytes, t->name, &t->data);
    if (st != LRUN_OK) {
        free(t);
        return st;
    }
    lrun_tensor_classify(t->name, &t->role, &t->layer);
    t->tier = tier;
    t->device = device;
    if (on_gpu(device, tier)) st = device->iface->memset(device, t->data, 0, t->nbytes);
    else memset(t->data, 0, t->nbytes);
    if (st != LRUN_OK) {
        lrun_tensor_free(t);
        return st;
    }
    *out = t;
    return LRUN_OK;
}

void lrun_tensor_free(lrun_tensor *tensor)
{
    if (!tensor) return;
    lrun_tensor_release_data(tensor);
    free(tensor);
}

// ---------------------------------------------------------------- accessors

const char *lrun_tensor_name(const lrun_tensor *tensor) { return tensor->name; }
lrun_dtype lrun_tensor_dtype(const lrun_tensor *tensor) { return tensor->dtype; }
int lrun_tensor_ndim(const lrun_tensor *tensor) { return tensor->ndim; }
size_t lrun_tensor_bytes(const lrun_tensor *tensor) { return tensor->nbytes; }
lrun_role lrun_tensor_role(const lrun_tensor *tensor) { return tensor->role; }
int lrun_tensor_layer(const lrun_tensor *tensor) { return tensor->layer; }
lrun_tier lrun_tensor_tier(const lrun_tensor *tensor) { return tensor->tier; }
void lrun_tensor_set_host_compute(lrun_tensor *tensor, int on) { tensor->host_compute = on != 0; }
int lrun_tensor_host_compute(const lrun_tensor *tensor) { return tensor->host_compute; }
int lrun_tensor_packed(const lrun_tensor *tensor) { return tensor->packed; }
size_t lrun_tensor_stored_bytes(const lrun_tensor *tensor) { return tensor->packed ? tensor->pk.total : tensor->nbytes; }
size_t lrun_tensor_packed_bytes(const lrun_tensor *tensor) { return tensor->pk.total; }
int lrun_tensor_file_packed(const lrun_tensor *tensor) { return tensor->file_packed; }
int lrun_tensor_packed_codec(const lrun_tensor *tensor) { return tensor->pk.total ? tensor->pk.codec : 0; }

int64_t lrun_tensor_dim(const lrun_tensor *tensor, int axis)
{
    return axis >= 0 && axis < tensor->ndim ? tensor->ne[axis] : 1;
}

int64_t lrun_tensor_nelements(const lrun_tensor *tensor)
{
    /* set_shape checked that this product fits. */
    return tensor->ne[0] * tensor->ne[1] * tensor->ne[2] * tensor->ne[3];
}

const void *lrun_tensor_host_data(const lrun_tensor *tensor)
{
    if (on_gpu(tensor->device, tensor->tier)) return NULL;
    return is_file_tier(tensor->tier) ? tensor->file_data : tensor->data;
}

// ---------------------------------------------------------------- element access

/* Byte range of elements [first, first+n); both must be whole blocks inside the tensor. */
static lrun_status elem_range(const lrun_tensor *t, const char *what, int64_t first, int64_t n, size_t *off,
                              size_t *len)
{
    int64_t total = lrun_tensor_nelements(t), block = lrun_dtype_block_elems(t->dtype);
    if (first < 0 || n < 0 || first > total || n > total - first)
        return lrun_fail(LRUN_E_ARG, "%s of tensor %s: elements [%lld, %lld+%lld) outside its %lld", what, t->name,
                         (long long)first, (long long)first, (long long)n, (long long)total);
    if (first % block || n % block)
        return lrun_fail(LRUN_E_ARG, "%s of tensor %s: first %lld and n %lld must be whole %s blocks of %lld", what,
                         t->name, (long long)first, (long long)n, lrun_dtype_name(t->dtype), (long long)block);
    size_t bb = lrun_dtype_block_bytes(t->dtype);
    /* Both fit: they are at most nbytes, which set_shape computed without overflow. */
    *off = (size_t)(first / block) * bb;
    *len = (size_t)(n / block) * bb;
    return LRUN_OK;
}

/* Elements [first, first + n) of a packed tensor, decoded (its packed
 * bytes come to the host whole when they live on a GPU). */
static lrun_status read_packed_f32(const lrun_tensor *t, int64_t first, int64_t n, float *dst)
{
    const size_t stored = lrun_tensor_stored_bytes(t);
    const void *src = lrun_tensor_host_data(t);
    void *tmp = NULL;
    uint16_t *vals = malloc((size_t)n * sizeof *vals);
    lrun_status st = vals ? LRUN_OK : lrun_fail_oom((size_t)n * 2, 0, "read of packed tensor %s: decode buffer", t->name);
    if (st == LRUN_OK && !src) {
        tmp = malloc(stored);
        st = tmp ? lrun_copy_bytes(t->device, tmp, LRUN_TIER_HOST, t->data, LRUN_TIER_DEVICE, stored)
                 : lrun_fail_oom(stored, 0, "read of packed tensor %s: host staging", t->name);
        src = tmp;
    }
    if (st == LRUN_OK) {
        lrun_packed_decode_range(vals, src, &t->pk, (uint64_t)first, (uint64_t)n);
        st = lrun_dtype_to_f32(t->dtype, vals, dst, n);
    }
    free(tmp);
    free(vals);
    return st == LRUN_OK ? st : lrun_fail_context(st, "read of tensor %s", t->name);
}

/* An FP8 weight not widened yet has no bytes to read: the model widens it
 * (lrun_model_move_tensors, an engine's start, or a move of it alone). */
static lrun_status pending_fail(const lrun_tensor *t, const char *what)
{
    return lrun_fail(LRUN_E_ARG, "%s tensor %s: an FP8 weight not widened yet; move it with lrun_model_move_tensors "
                     "or start an engine first (docs/models.md)", what, t->name);
}

/* A tensor moved alone (a change of form, a plain move) gets its bytes
 * first: its maker widens it into host memory its model owns (tier mmap). */
static lrun_status make_pending(lrun_tensor *t)
{
    if (!t->fp8_pending) return LRUN_OK;
    if (!t->maker) return pending_fail(t, "moving");
    char why[128];
    snprintf(why, sizeof why, "moving tensor %s", t->name);
    const lrun_status st = t->maker->make(t->maker->ctx, why);
    return st != LRUN_OK ? st : t->fp8_pending ? pending_fail(t, "moving") : LRUN_OK;
}

lrun_status lrun_tensor_read_f32(const lrun_tensor *tensor, int64_t first, int64_t n, float *dst)
{
    size_t off, len;
    lrun_status st = elem_range(tensor, "read", first, n, &off, &len);
    if (st != LRUN_OK || n == 0) return st;
    if (tensor->fp8_pending) return pending_fail(tensor, "read of");
    if (!dst) return lrun_fail(LRUN_E_ARG, "read of tensor %s: dst is NULL", tensor->name);
    if (tensor->packed) return read_packed_f32(tensor, first, n, dst);
    if (!on_gpu(tensor->device, tensor->tier)) {
        st = lrun_dtype_to_f32(tensor->dtype, (const char *)lrun_tensor_host_data(tensor) + off, dst, n);
        return st == LRUN_OK ? st : lrun_fail_context(st, "read of tensor %s", tensor->name);
    }
    /* On a GPU: bring just the blocks asked for to the host, then convert. */
    void *tmp = malloc(len);
    if (!tmp) return lrun_fail_oom(len, 0, "read of tensor %s: %zu bytes of host staging", tensor->name, len);
    st = lrun_copy_bytes(tensor->device, tmp, LRUN_TIER_HOST, (const char *)tensor->data + off, LRUN_TIER_DEVICE, len);
    if (st == LRUN_OK) st = lrun_dtype_to_f32(tensor->dtype, tmp, dst, n);
    free(tmp);
    return st == LRUN_OK ? st : lrun_fail_context(st, "read of tensor %s", tensor->name);
}

lrun_status lrun_tensor_write_f32(lrun_tensor *tensor, int64_t first, int64_t n, const float *src)
{
    size_t off, len;
    lrun_status st = elem_range(tensor, "write", first, n, &off, &len);
    if (st != LRUN_OK || n == 0) return st;
    if (!src) return lrun_fail(LRUN_E_ARG, "write of tensor %s: src is NULL", tensor->name);
    if (is_file_tier(tensor->tier))
        return lrun_fail(LRUN_E_ARG, "write of tensor %s: it lives in the read-only model file (%s tier); "
                         "move it to another tier first", tensor->name, lrun_tier_name(tensor->tier));
    if (tensor->packed)
        return lrun_fail(LRUN_E_UNSUPPORTED, "write of tensor %s: it is packed; unpack it first "
                         "(lrun_tensor_move_form)", tensor->name);
    if (!on_gpu(tensor->device, tensor->tier)) {
        st = lrun_dtype_from_f32(tensor->dtype, src, (char *)tensor->data + off, n);
        return st == LRUN_OK ? st : lrun_fail_context(st, "write of tensor %s", tensor->name);
    }
    void *tmp = malloc(len);
    if (!tmp) return lrun_fail_oom(len, 0, "write of tensor %s: %zu bytes of host staging", tensor->name, len);
    st = lrun_dtype_from_f32(tensor->dtype, src, tmp, n);
    if (st == LRUN_OK)
        st = lrun_copy_bytes(tensor->device, (char *)tensor->data + off, LRUN_TIER_DEVICE, tmp, LRUN_TIER_HOST, len);
    free(tmp);
    return st == LRUN_OK ? st : lrun_fail_context(st, "write of tensor %s", tensor->name);
}

// ---------------------------------------------------------------- moves

/* The tier a copy should treat a side as: device memory of a cpu device is host memory. */
static lrun_tier copy_tier(const lrun_device *device, lrun_tier tier)
{
    return tier == LRUN_TIER_DEVICE && !on_gpu(device, tier) ? LRUN_TIER_HOST : tier;
}

lrun_status lrun_tensor_move(lrun_tensor *t, lrun_device *device, lrun_tier tier)
{
    if (!t) return lrun_fail(LRUN_E_ARG, "lrun_tensor_move: tensor is NULL");
    if (t->split)
        return lrun_fail(LRUN_E_ARG,
                         "moving tensor %s: a CUDA engine holds it in the split-row layout "
                         "(Q8_0/Q4_0 decode; LRUN_CUDA_GEMV_Q8X=0 keeps GGUF's); free that engine first",
                         t->name);
    if ((unsigned)tier >= LRUN_TIER_COUNT)
        return lrun_fail(LRUN_E_ARG, "moving tensor %s: tier %d (expected device, pinned, host, mmap or disk)", t->name,
                         (int)tier);
    lrun_device *dev = device ? device : t->device;
    if (tier == LRUN_TIER_DEVICE && !dev)
        return lrun_fail(LRUN_E_ARG, "moving tensor %s to the device tier: no device given", t->name);
    if (t->tier == tier && (tier != LRUN_TIER_DEVICE || dev == t->device)) return LRUN_OK;
    const lrun_status made = make_pending(t);
    if (made != LRUN_OK) return made;

    if (is_file_tier(tier)) {
        if (!t->file_data)
            return lrun_fail(LRUN_E_ARG, "moving tensor %s to %s: it did not come from a model file", t->name,
                             lrun_tier_name(tier));
        /* The file still holds the bytes: dropping this copy is the whole move
         * (and for disk, which reads the file directly, the mapped pages too). */
        if (!is_file_tier(t->tier)) storage_release(t->device, t->tier, t->data, lrun_tensor_stored_bytes(t));
        if (tier == LRUN_TIER_DISK) drop_file_pages(t);
        t->tier = tier;
        t->data = (void *)t->file_data;
        t->packed = t->file_packed;
        return LRUN_OK;
    }

    char what[96];
    snprintf(what, sizeof what, "tensor %s", t->name);
    void *dst = NULL;
    const size_t bytes = lrun_tensor_stored_bytes(t); /* a move keeps the form */
    lrun_status st = storage_alloc(dev, tier, bytes, what, &dst);
    if (st != LRUN_OK) return st; /* nothing changed yet */

    const void *src = is_file_tier(t->tier) ? t->file_data : t->data;
    lrun_tier st_src = copy_tier(t->device, t->tier), st_dst = copy_tier(dev, tier);
    if (st_src == LRUN_TIER_DEVICE && st_dst == LRUN_TIER_DEVICE && t->device != dev) {
        storage_release(dev, tier, dst, bytes);
        return lrun_fail(LRUN_E_UNSUPPORTED, "moving tensor %s from %s to %s: copies between two GPUs are not "
                         "supported yet (move it to host first)", t->name, t->device->name, dev->name);
    }
    lrun_device *copy_dev = st_src == LRUN_TIER_DEVICE ? t->device : dev;
    st = lrun_copy_bytes(copy_dev, dst, st_dst, src, st_src, bytes);
    if (st != LRUN_OK) {
        storage_release(dev, tier, dst, bytes);
        return lrun_fail_context(st, "moving tensor %s from %s to %s", t->name, lrun_tier_name(t->tier),
                                 lrun_tier_name(tier));
    }
    if (!is_file_tier(t->tier)) storage_release(t->device, t->tier, t->data, bytes);
    else drop_file_pages(t);
    t->tier = tier;
    t->data = dst;
    if (device || tier == LRUN_TIER_DEVICE) t->device = dev;
    return LRUN_OK;
}

// ---------------------------------------------------------------- form (packed or plain)

/* The tensor's stored bytes on the host (*src): where they are, or copied
 * from its GPU into *tmp (malloc'ed, else NULL; the caller frees it). */
static lrun_status host_bytes(const lrun_tensor *t, const void **src, void **tmp)
{
    const size_t stored = lrun_tensor_stored_bytes(t);
    *tmp = NULL;
    if ((*src = lrun_tensor_host_data(t))) return LRUN_OK;
    if (!(*tmp = malloc(stored ? stored : 1)))
        return lrun_fail_oom(stored, 0, "tensor %s: host staging to convert it", t->name);
    *src = *tmp;
    return lrun_copy_bytes(t->device, *tmp, LRUN_TIER_HOST, t->data, LRUN_TIER_DEVICE, stored);
}

/* Does packing plain tensor t write PEX2? lrun pack's rule (pack.c
 * codec_for): PEX2 where it holds the tensor (bf16, a multiple of 8 values),
 * else PEX1; the CUDA fused GEMV reads PEX2 at about twice PEX1's speed
 * (docs/packed.md). A packed file's tensor keeps the file's codec. */
static int packs_pex2(const lrun_tensor *t)
{
    return !t->file_packed && lrun_pex2_fits(t->dtype, (uint64_t)lrun_tensor_nelements(t));
}

/* The tensor's bytes in the other form, in malloc'ed host memory (*out,
 * *out_bytes; *pk the layout of a packed result). A packed file's tensor
 * packs by taking the file's bytes (its layout is already t->pk). */
static lrun_status convert_on_host(const lrun_tensor *t, int packed, void **out, size_t *out_bytes, lrun_threadpool *pool,
                                   lrun_packed_layout *pk)
{
    const void *src = packed && t->file_packed ? t->file_data : NULL;
    void *tmp = NULL, *buf = NULL;
    lrun_status st = src ? LRUN_OK : host_bytes(t, &src, &tmp); /* on a GPU: its bytes to the host first */
    const uint64_t n = (uint64_t)lrun_tensor_nelements(t);
    if (st == LRUN_OK && packed && t->file_packed) {
        *pk = t->pk;
        buf = malloc(pk->total);
        if (buf) memcpy(buf, src, pk->total);
        *out_bytes = pk->total;
    } else if (st == LRUN_OK && packed) {
        const int pex2 = packs_pex2(t);
        const size_t cap = pex2 ? lrun_pex2_bound(n) : lrun_packed_bound(t->dtype, n);
        buf = malloc(cap);
        if (buf && pex2) st = lrun_pex2_encode(buf, cap, out_bytes, src, n, pool);
        else if (buf) st = lrun_packed_encode(buf, cap, out_bytes, t->dtype, src, n, pool);
        if (buf && st == LRUN_OK) st = lrun_packed_validate_mt(pk, buf, *out_bytes, t->name, pool);
    } else if (st == LRUN_OK) {
        buf = malloc(t->nbytes);
        if (buf) lrun_packed_decode_range_mt(buf, src, &t->pk, 0, n, pool);
        *out_bytes = t->nbytes;
    }
    if (st == LRUN_OK && !buf) st = lrun_fail_oom(t->nbytes, 0, "tensor %s: host buffer to convert it", t->name);
    free(tmp);
    if (st != LRUN_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    return LRUN_OK;
}

lrun_status lrun_tensor_move_form(lrun_tensor *t, lrun_device *device, lrun_tier tier, int packed)
{
    if (!t) return lrun_fail(LRUN_E_ARG, "lrun_tensor_move_form: tensor is NULL");
    if (t->split)
        return lrun_fail(LRUN_E_ARG,
                         "moving tensor %s: a CUDA engine holds it in the split-row layout "
                         "(Q8_0/Q4_0 decode; LRUN_CUDA_GEMV_Q8X=0 keeps GGUF's); free that engine first",
                         t->name);
    const lrun_status made = make_pending(t);
    if (made != LRUN_OK) return made;
    packed = packed != 0;
    if (packed && (!lrun_packed_dtype_ok(t->dtype) || t->ndim != 2))
        return lrun_fail(LRUN_E_UNSUPPORTED, "packing tensor %s: only bf16 and f16 matrices pack, it is %s with %d "
                         "dimensions", t->name, lrun_dtype_name(t->dtype), t->ndim);
    if (packed == t->packed) return lrun_tensor_move(t, device, tier);
    if (is_file_tier(tier)) {
        if (!t->file_data || packed != t->file_packed)
            return lrun_fail(LRUN_E_ARG, "moving tensor %s to %s %s: the file holds it %s", t->name,
                             lrun_tier_name(tier), packed ? "packed" : "plain", t->file_packed ? "packed" : "plain");
        return lrun_tensor_move(t, device, tier);
    }
    if ((unsigned)tier >= LRUN_TIER_COUNT)
        return lrun_fail(LRUN_E_ARG, "moving tensor %s: tier %d (expected device, pinned, host, mmap or disk)",
                         t->name, (int)tier);
    lrun_device *dev = device ? device : t->device;
    if (tier == LRUN_TIER_DEVICE && !dev)
        return lrun_fail(LRUN_E_ARG, "moving tensor %s to the device tier: no device given", t->name);
    lrun_threadpool *pool = NULL; /* every core for a large one; a failed pool only makes it slower */
    if (t->nbytes >= ((size_t)1 << 20) && lrun_threadpool_init(&pool, 0) != LRUN_OK) pool = NULL;
    void *buf = NULL, *dst = NULL;
    size_t bytes = 0;
    lrun_packed_layout pk = t->pk;
    lrun_status st = convert_on_host(t, packed, &buf, &bytes, pool, &pk);
    if (pool) lrun_threadpool_free(pool);
    char what[96];
    snprintf(what, sizeof what, "tensor %s (%s)", t->name, packed ? "packed" : "plain");
    if (st == LRUN_OK) st = storage_alloc(dev, tier, bytes, what, &dst);
    if (st == LRUN_OK) {
        st = lrun_copy_bytes(dev, dst, copy_tier(dev, tier), buf, LRUN_TIER_HOST, bytes);
        if (st != LRUN_OK) storage_release(dev, tier, dst, bytes);
    }
    free(buf);
    if (st != LRUN_OK)
        return lrun_fail_context(st, "converting tensor %s to %s in %s", t->name, packed ? "packed" : "plain",
                                 lrun_tier_name(tier));
    if (!is_file_tier(t->tier)) storage_release(t->device, t->tier, t->data, lrun_tensor_stored_bytes(t));
    t->tier = tier;
    t->data = dst;
    t->packed = packed;
    if (packed) t->pk = pk;
    if (device || tier == LRUN_TIER_DEVICE) t->device = dev;
    return LRUN_OK;
}

lrun_status lrun_tensor_measure_packed(lrun_tensor *t, size_t *packed_bytes)
{
    if (!t || !packed_bytes)
        return lrun_fail(LRUN_E_ARG, "lrun_tensor_measure_packed: %s is NULL", t ? "packed_bytes" : "tensor");
    *packed_bytes = 0;
    if (!lrun_packed_dtype_ok(t->dtype) || t->ndim != 2)
        return lrun_fail(LRUN_E_UNSUPPORTED,
                         "measuring the packed size of tensor %s: only bf16 and f16 matrices "
                         "pack, it is %s with %d dimensions",
                         t->name, lrun_dtype_name(t->dtype), t->ndim);
    if (t->packed || t->pk.total) { /* packed now, or before: the layout is kept */
        *packed_bytes = t->pk.total;
        return LRUN_OK;
    }
    const lrun_status made = make_pending(t);
    if (made != LRUN_OK) return made;
    lrun_threadpool *pool = NULL; /* as lrun_tensor_move_form: every core for a large one */
    if (t->nbytes >= ((size_t)1 << 20) && lrun_threadpool_init(&pool, 0) != LRUN_OK) pool = NULL;
    lrun_packed_layout pk = t->pk;
    lrun_status st;
    if (packs_pex2(t)) { /* PEX2's size follows from the exponent histogram: one read, no encode */
        const void *src = NULL;
        void *tmp = NULL;
        lrun_pex2_layout p;
        st = host_bytes(t, &src, &tmp);
        if (st == LRUN_OK) st = lrun_pex2_measure(&p, src, (uint64_t)lrun_tensor_nelements(t), pool);
        if (st == LRUN_OK) lrun_packed_layout_pex2(&pk, &p);
        free(tmp);
    } else { /* PEX1 (f16, a count not a multiple of 8): encoded into a copy, freed */
        void *buf = NULL;
        size_t bytes = 0;
        st = convert_on_host(t, 1, &buf, &bytes, pool, &pk);
        free(buf);
    }
    if (pool) lrun_threadpool_free(pool);
    if (st != LRUN_OK) return lrun_fail_context(st, "measuring the packed size of tensor %s", t->name);
    t->pk = pk;
    *packed_bytes = pk.total;
    return LRUN_OK;
}
