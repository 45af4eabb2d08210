/* launch_trace: a fake CUDA engine (2 blocks) driven through lrun_cuda_enqueue_chunk and lrun_cuda_lm_head
 * in every scenario; built once against the old tree and once with -DNEW (run.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_offload.h"
/* model.h without the named block fields (e02a51d on): the names as ids */
#ifdef LRUN_TRACE_IDS
#define wq t[LRUN_ARCH_TENSOR_Q]
#define wk t[LRUN_ARCH_TENSOR_K]
#define wv t[LRUN_ARCH_TENSOR_V]
#define wo t[LRUN_ARCH_TENSOR_O]
#define w_gate t[LRUN_ARCH_TENSOR_GATE]
#define w_up t[LRUN_ARCH_TENSOR_UP]
#define w_down t[LRUN_ARCH_TENSOR_DOWN]
#endif

extern char arena[];
extern char *g_kc, *g_vc;
extern int g_embd_host;
extern struct lrun_model_layer *g_views;
extern const struct lrun_tensor *g_head;
static size_t cur = 64;
static void *A(size_t n) { void *p = arena + cur; cur += (n + 63) & ~(size_t)63; return p; }

/* A block vector of the engine's layer: by id where the tree keeps them by
 * id (cuda_layer.vec), else by its old field name. */
#ifdef LRUN_ARCH_N_BLOCK_VECTORS
#define CL(l, field, id) cl[l].vec[LRUN_ARCH_TENSOR_##id]
#else
#define CL(l, field, id) cl[l].field
#endif

#ifdef NEW
struct lrun_tensor *lrun_model_arch_tensor(const lrun_model *m, int64_t layer, lrun_arch_tensor id)
{
    if (id < LRUN_ARCH_TENSOR_BLOCK_COUNT) return layer >= 0 && layer < m->info.n_layer ? m->layers[layer].t[id] : NULL;
    if (id == LRUN_ARCH_TENSOR_OUTPUT) return m->output;
    if (id == LRUN_ARCH_TENSOR_TOKEN_EMBD) return m->tok_embd;
    return NULL;
}
#endif

enum { NL = 2, D = 64, H = 4, HK = 2, HD = 16, F = 96, V = 300 };

static struct lrun_tensor tensors[64];
static int nt;
static struct lrun_tensor *T(const char *name, lrun_dtype dt, int64_t k, int64_t n)
{
    struct lrun_tensor *t = &tensors[nt++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt; t->ndim = 2; t->ne[0] = k; t->ne[1] = n; t->ne[2] = t->ne[3] = 1;
    t->row_bytes = (size_t)k; t->nbytes = (size_t)(k * n); t->tier = LRUN_TIER_DEVICE;
    t->data = A(64);
    return t;
}

int main(int argc, char **argv)
{
    (void)argc; (void)argv;
    for (int exact = 0; exact < 2; exact++)
    for (int off = 0; off < 2; off++)
    for (int bias = 0; bias < 2; bias++)
    for (int mixed = 0; mixed < 2; mixed++)
    for (int fused = 0; fused < 2 - exact; fused++)
    for (int odd = 0; odd < 2 - exact; odd++)
    for (int ni = 0; ni < 3; ni++)
    for (int ident = 0; ident < 2; ident++) {
        cur = 64; nt = 0;
        memset(arena, 0, 1 << 20);
        static lrun_model m;
        static lrun_cuda_engine e;
        static struct lrun_model_layer layers[NL], views[NL];
        static struct cuda_layer cl[NL];
        static int64_t out_rows[64];
        memset(&m, 0, sizeof m); memset(&e, 0, sizeof e);
        m.info.n_layer = NL; m.info.n_embd = D; m.info.n_head = H; m.info.n_head_kv = HK;
        m.info.head_dim = odd ? 15 : HD; m.info.n_rot = odd ? 14 : HD; m.info.n_ff = F; m.info.n_vocab = V;
        m.info.rope_freq_base = 10000; m.rope_freq_scale = 0.5; m.info.rope_style = 1;
#ifdef NEW
        m.arch = &lrun_arch_llama;
#endif
        const lrun_dtype q = LRUN_DTYPE_Q4_0;
        m.tok_embd = T("tok", LRUN_DTYPE_Q8_0, D, V);
        m.output = T("out", LRUN_DTYPE_Q8_0, D, V);
        for (int l = 0; l < NL; l++) {
            struct lrun_model_layer *L = &layers[l];
            memset(L, 0, sizeof *L);
            L->wq = T("wq", q, D, D); L->wk = T("wk", mixed && l == 0 ? LRUN_DTYPE_Q8_0 : q, D, HK * HD);
            L->wv = T("wv", q, D, HK * HD); L->wo = T("wo", q, D, D);
            L->w_gate = T("wg", q, D, F); L->w_up = T("wu", mixed && l == 1 ? LRUN_DTYPE_Q4_1 : q, D, F);
            L->w_down = T("wd", mixed && l == 0 ? LRUN_DTYPE_Q8_0 : q, F, D);
            CL(l, attn_norm, ATTN_NORM) = A(64); CL(l, ffn_norm, FFN_NORM) = A(64);
            if (bias) {
                CL(l, bq, Q_BIAS) = A(64); CL(l, bk, K_BIAS) = l ? NULL : A(64);
                CL(l, bv, V_BIAS) = A(64); CL(l, bo, O_BIAS) = A(64);
            } else CL(l, bq, Q_BIAS) = CL(l, bk, K_BIAS) = CL(l, bv, V_BIAS) = CL(l, bo, O_BIAS) = NULL;
        }
        m.layers = layers;
        e.model = &m; e.layers = cl;
        e.n_layer = NL; e.n_embd = D; e.q_dim = D; e.kv_dim = HK * HD; e.n_ff = F; e.n_vocab = V;
        e.eps = 1e-5f; e.attn_scale = 0.25f; e.kv_dtype = LRUN_DTYPE_F16;
        e.stream = A(64); e.cublas = A(64);
        e.x = A(64); e.xn = A(64); e.tmp = A(64); e.q = A(64); e.attn = A(64); e.k = A(64); e.v = A(64);
        e.gate = A(64); e.up = A(64); e.logits = A(64); e.attn_work = A(64); e.w_slot = A(64); e.x_slot = A(64);
        e.d_table.row_off = A(64); e.d_table.kv_base = A(64); e.d_table.tokens = A(64); e.d_table.pos = A(64);
        e.d_table.n_kv = A(64);
        e.output_norm = A(64); e.freq_factors = A(64);
        e.out_rows = out_rows; out_rows[0] = 2; out_rows[1] = 0; out_rows[2] = 1;
        e.pdl_enabled = 1;
        e.kv.fused_chunk = fused;
        g_kc = A(256); g_vc = A(256);
        e.exact = exact ? A(4096) : NULL;
        g_embd_host = 0;
        if (off) {
            e.offload = A(64);
            g_embd_host = 1;
            layers[1].wk->host_compute = 1; layers[1].wk->tier = LRUN_TIER_HOST;
            layers[0].w_up->host_compute = 1; layers[0].w_up->tier = LRUN_TIER_HOST;
            for (int l = 0; l < NL; l++) {
                views[l] = layers[l];
                struct lrun_tensor *vq = T("vq", layers[l].wq->dtype, D, D); *vq = *layers[l].wq; vq->data = A(64);
                struct lrun_tensor *vd = T("vd", layers[l].w_down->dtype, F, D); *vd = *layers[l].w_down; vd->data = A(64);
                views[l].wq = vq; views[l].w_down = vd;
            }
            g_views = views;
            struct lrun_tensor *h = T("vh", m.output->dtype, D, V); *h = *m.output; h->data = A(64);
            g_head = h;
        }
        const int64_t ns[3] = {1, 3, 16};
        const int64_t n = ns[ni], n_want = ident ? n : (n < 3 ? n : 3);
        printf("=== exact %d off %d bias %d mixed %d fused %d odd %d n %ld ident %d\n", exact, off, bias, mixed, fused, odd, (long)n, ident);
        lrun_status st = lrun_cuda_enqueue_chunk(&e, n, n_want, ident, 128);
        printf("-> %d\n", st);
        st = lrun_cuda_lm_head(&e, 64, 5);
        printf("lm_head -> %d\n", st);
    }
    return 0;
}
