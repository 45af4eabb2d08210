/* test_arch_tables.c — every architecture description's tables (hparams,
 * tensors, ops, splits and the scalar fields) against tests/c/arch_tables.txt,
 * a dump this program wrote before the tables' shared rows moved to
 * runtime/arch/arch_rows.h: sharing rows must not change any table.
 *
 *   build/tests/test_arch_tables                 compare (a TAP line per architecture)
 *   build/tests/test_arch_tables --write FILE    write the dump (only when a table changes on purpose) */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "check.h"

#define DUMP_PATH "tests/c/arch_tables.txt"

// ---------------------------------------------------------------- the dump

/* One architecture's tables as text, every field, into f. */
static void dump_arch(FILE *f, const char *label, const lrun_arch *a)
{
    fprintf(f, "arch %s name=%s rope_style=%d embd_scale=%d swa_pattern=%d big_attn_scale_layers=%d "
               "rope_base_local=%.17g moe_oai=%d\n",
            label, a->name, (int)a->rope_style, a->embd_scale, a->swa_pattern, a->big_attn_scale_layers,
            a->rope_base_local, a->moe_oai);
    for (int i = 0; i < a->n_hparams; i++) {
        const lrun_arch_hparam_desc *h = &a->hparams[i];
        fprintf(f, "  hparam %d %s kind=%d def=%d value=%.17g same_as=%d\n", (int)h->id, h->key, (int)h->kind,
                (int)h->def, h->value, (int)h->same_as);
    }
    for (int i = 0; i < a->n_tensors; i++) {
        const lrun_arch_tensor_desc *t = &a->tensors[i];
        fprintf(f, "  tensor %d %s role=%d required=%d ne=%d,%d,%d f32_only=%d\n", (int)t->id, t->name,
                (int)t->role, t->required, (int)t->ne[0], (int)t->ne[1], (int)t->ne[2], t->f32_only);
    }
    for (int i = 0; i < a->n_ops; i++) {
        const lrun_arch_op *o = &a->ops[i];
        fprintf(f, "  op %d w=%d,%d,%d in=%d out=%d,%d,%d\n", (int)o->kind, (int)o->w[0], (int)o->w[1],
                (int)o->w[2], (int)o->in, (int)o->out[0], (int)o->out[1], (int)o->out[2]);
    }
    for (int i = 0; i < a->n_splits; i++) {
        const lrun_arch_split *s = &a->splits[i];
        fprintf(f, "  split %d parts=%d,%d,%d\n", (int)s->fused, (int)s->parts[0], (int)s->parts[1],
                (int)s->parts[2]);
    }
}

/* Every known architecture, then llama's mixture-of-experts description
 * (found by expert count, not in the known list). */
static void dump_all(FILE *f)
{
    const lrun_arch *a;
    for (int i = 0; (a = lrun_arch_known(i)) != NULL; i++) dump_arch(f, a->name, a);
    dump_arch(f, "llama_moe", &lrun_arch_llama_moe);
}

// ---------------------------------------------------------------- compare

/* The whole of file path into a malloc'd string, or NULL. */
static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (int c; (c = fgetc(f)) != EOF;) {
        if (n + 2 > cap) {
            cap = cap ? 2 * cap : 4096;
            char *nb = realloc(buf, cap);
            if (nb == NULL) break;
            buf = nb;
        }
        buf[n++] = (char)c;
    }
    fclose(f);
    if (buf != NULL) buf[n] = '\0';
    return buf;
}

/* The section of a dump that starts at "arch <label> " up to the next "arch ", as a copy. */
static char *section(const char *dump, const char *label)
{
    char head[64];
    snprintf(head, sizeof head, "arch %s ", label);
    const char *s = strstr(dump, head);
    if (s == NULL) return NULL;
    const char *e = strstr(s + 1, "\narch ");
    size_t len = e ? (size_t)(e + 1 - s) : strlen(s);
    char *out = malloc(len + 1);
    if (out == NULL) return NULL;
    memcpy(out, s, len);
    out[len] = '\0';
    return out;
}

static void check_one(const char *want_all, const char *label, const lrun_arch *a)
{
    char *got = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&got, &len);
    if (f == NULL) return;
    dump_arch(f, label, a);
    fclose(f);
    char *want = section(want_all, label);
    char name[96];
    snprintf(name, sizeof name, "%s: tables as dumped in " DUMP_PATH, label);
    const int same = want != NULL && strcmp(want, got) == 0;
    if (!same) printf("# got:\n%s", got);
    CHECK(name, same);
    free(want);
    free(got);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write") == 0) {
        FILE *f = fopen(argv[2], "w");
        if (f == NULL) return 1;
        dump_all(f);
        return fclose(f) == 0 ? 0 : 1;
    }
    char *want = read_all(DUMP_PATH);
    CHECK("the dump " DUMP_PATH " reads", want != NULL);
    if (want != NULL) {
        const lrun_arch *a;
        int n = 0;
        for (int i = 0; (a = lrun_arch_known(i)) != NULL; i++, n++) check_one(want, a->name, a);
        check_one(want, "llama_moe", &lrun_arch_llama_moe);
        /* no architecture lost or added without the dump knowing */
        int sections = 0;
        for (const char *s = want; (s = strstr(s, "arch ")) != NULL; s++)
            if (s == want || s[-1] == '\n') sections++;
        CHECK("the dump has as many architectures as the runtime", sections == n + 1);
    }
    free(want);
    return CHECK_DONE();
}
