/* pieces.c — the tokenizer's string table ("pieces") and id lists.
 *
 * Pieces are interned byte strings found through an open-addressing hash
 * table, so that text → id is one hash and one memcmp: tokenization looks up
 * every candidate merge this way, and a 1000-token prompt must take well
 * under 10 ms.
 */
#include "text/pieces.h"

#include "core/checked.h"
#include "core/error.h"
#include "core/hash.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- id lists */

lrun_status lrun_ids_push(lrun_ids *ids, int32_t id)
{
    if (ids->n == ids->cap) {
        int64_t cap = ids->cap ? ids->cap * 2 : 64;
        size_t bytes;
        if (!lrun_size_mul((size_t)cap, sizeof *ids->v, &bytes)) return lrun_fail(LRUN_E_OOM, "tokenizer: too many ids");
        int32_t *v = realloc(ids->v, bytes);
        if (v == NULL) return lrun_fail_oom(bytes, 0, "tokenizer: ids: out of memory");
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return LRUN_OK;
}

void lrun_ids_free(lrun_ids *ids)
{
    free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

/* ---------------------------------------------------------------- hashing */

/* Keyed (SipHash-1-3 under a per-process key, core/hash.h): the pieces come
 * from the model file, and under a fixed hash a crafted vocabulary can put
 * every piece in one chain (issue #16 measured 11 s to open 1.1 MB). */
static uint64_t hash_bytes(const char *s, size_t len) { return lrun_hash_keyed(s, len); }

/* ---------------------------------------------------------------- pieces */

int64_t lrun_pieces_find(const lrun_pieces *p, const char *s, size_t len)
{
    if (p->slot_cap == 0) return -1;
    size_t mask = p->slot_cap - 1;
    for (size_t i = (size_t)hash_bytes(s, len) & mask;; i = (i + 1) & mask) {
        uint32_t slot = p->slots[i];
        if (slot == 0) return -1;
        int64_t id = (int64_t)slot - 1;
        if (p->len[id] == len && memcmp(p->bytes + p->off[id], s, len) == 0) return id;
    }
}

/* Points the slot of this text at id (replacing an older id with the same text). */
static void slots_put(lrun_pieces *p, int64_t id)
{
    const char *s = p->bytes + p->off[id];
    size_t len = p->len[id], mask = p->slot_cap - 1;
    for (size_t i = (size_t)hash_bytes(s, len) & mask;; i = (i + 1) & mask) {
        p->probes++;
        uint32_t slot = p->slots[i];
        if (slot == 0 || (p->len[slot - 1] == len && memcmp(p->bytes + p->off[slot - 1], s, len) == 0)) {
            p->slots[i] = (uint32_t)(id + 1);
            return;
        }
    }
}

static lrun_status slots_grow(lrun_pieces *p)
{
    size_t cap = p->slot_cap ? p->slot_cap * 2 : 1024, bytes;
    if (!lrun_size_mul(cap, sizeof *p->slots, &bytes)) return lrun_fail(LRUN_E_OOM, "tokenizer: vocabulary too large");
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (slots == NULL) return lrun_fail_oom(bytes, 0, "tokenizer: vocabulary index: out of memory");
    free(p->slots);
    p->slots = slots;
    p->slot_cap = cap;
    /* Re-inserting in id order keeps "newest id wins" for duplicate texts. */
    for (int64_t id = 0; id < p->n; ++id) slots_put(p, id);
    return LRUN_OK;
}

lrun_status lrun_pieces_add(lrun_pieces *p, const char *s, size_t len, int64_t *id)
{
    if (len > UINT32_MAX || p->n >= (int64_t)UINT32_MAX - 1)
        return lrun_fail(LRUN_E_FORMAT, "tokenizer: vocabulary: piece of %zu bytes or %lld pieces is too large", len,
                         (long long)p->n);
    if (p->n == p->cap) {
        int64_t cap = p->cap ? p->cap * 2 : 1024;
        size_t *off = realloc(p->off, (size_t)cap * sizeof *off);
        if (off == NULL) return lrun_fail_oom((size_t)cap * sizeof *off, 0, "tokenizer: vocabulary: out of memory");
        p->off = off;
        uint32_t *l = realloc(p->len, (size_t)cap * sizeof *l);
        if (l == NULL) return lrun_fail_oom((size_t)cap * sizeof *l, 0, "tokenizer: vocabulary: out of memory");
        p->len = l;
        p->cap = cap;
    }
    size_t need;
    if (!lrun_size_add(p->bytes_len, len, &need) || !lrun_size_add(need, 1, &need))
        return lrun_fail(LRUN_E_FORMAT, "tokenizer: vocabulary text too large");
    if (need > p->bytes_cap) {
        size_t cap = p->bytes_cap ? p->bytes_cap : 65536;
        while (cap < need) {
            if (!lrun_size_mul(cap, 2, &cap)) return lrun_fail(LRUN_E_FORMAT, "tokenizer: vocabulary text too large");
        }
        char *b = realloc(p->bytes, cap);
        if (b == NULL) return lrun_fail_oom(cap, 0, "tokenizer: vocabulary text: out of memory");
        p->bytes = b;
        p->bytes_cap = cap;
    }
    if (len) memcpy(p->bytes + p->bytes_len, s, len);
    p->bytes[p->bytes_len + len] = '\0';
    p->off[p->n] = p->bytes_len;
    p->len[p->n] = (uint32_t)len;
    p->bytes_len = need;
    *id = p->n++;
    if ((size_t)p->n * 2 > p->slot_cap) return slots_grow(p); /* also indexes the new piece */
    slots_put(p, *id);
    return LRUN_OK;
}

lrun_status lrun_pieces_intern(lrun_pieces *p, const char *s, size_t len, int64_t *id)
{
    int64_t found = lrun_pieces_find(p, s, len);
    if (found >= 0) {
        *id = found;
        return LRUN_OK;
    }
    return lrun_pieces_add(p, s, len, id);
}

void lrun_pieces_free(lrun_pieces *p)
{
    free(p->bytes);
    free(p->off);
    free(p->len);
    free(p->slots);
    memset(p, 0, sizeof *p);
}
