/* launch_trace: stubs that log each kernel launch and staging/KV hook with its arguments (run.sh). */
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_offload.h"

char arena[1 << 24];
static long P(const void *p) { if (!p) return -1; const char *c = p; return c >= arena && c < arena + sizeof arena ? (long)(c - arena) : -2; }
#define L printf
lrun_status lrun_fail(lrun_status st, const char *fmt, ...) { (void)fmt; L("FAIL %d\n", st); return st; }
void lrun_k_set_pdl(int on) { L("set_pdl %d\n", on); }
lrun_status lrun_k_gemv(lrun_dtype d, const void *w, size_t rb, int64_t n, int64_t k, const float *x, int64_t m, float *y, void *s)
{ L("gemv %d %ld %zu %ld %ld %ld %ld %ld %ld\n", d, P(w), rb, (long)n, (long)k, P(x), (long)m, P(y), P(s)); return 0; }
lrun_status lrun_k_gemv_multi(lrun_dtype d, const lrun_k_gemv_part *p, int np, int64_t k, const float *x, int64_t m, int mode, void *s)
{ L("gemv_multi %d np=%d k=%ld x=%ld m=%ld mode=%d s=%ld:", d, np, (long)k, P(x), (long)m, mode, P(s));
  for (int i = 0; i < np; i++) L(" [%ld %zu %ld %ld]", P(p[i].w), p[i].row_bytes, (long)p[i].n, P(p[i].y)); L("\n"); return 0; }
lrun_status lrun_k_gemm(void *cb, lrun_dtype d, const void *w, size_t rb, int64_t n, int64_t k, const float *x, int64_t m, float *y, lrun_dtype sd, void *ws, void *xs, void *s)
{ L("gemm %ld %d %ld %zu %ld %ld %ld %ld %ld %d %ld %ld %ld\n", P(cb), d, P(w), rb, (long)n, (long)k, P(x), (long)m, P(y), sd, P(ws), P(xs), P(s)); return 0; }
lrun_status lrun_k_embed(lrun_dtype d, const void *t, size_t rb, int64_t ne, const int32_t *tok, int64_t n, float *out, void *s)
{ L("embed %d %ld %zu %ld %ld %ld %ld %ld\n", d, P(t), rb, (long)ne, P(tok), (long)n, P(out), P(s)); return 0; }
lrun_status lrun_k_rms_norm(const float *x, const float *w, float *y, int64_t r, int64_t n, float eps, void *s)
{ L("rms_norm %ld %ld %ld %ld %ld %g %ld\n", P(x), P(w), P(y), (long)r, (long)n, eps, P(s)); return 0; }
lrun_status lrun_k_rope(float *x, const int32_t *pos, int64_t nt, int64_t nh, int64_t hd, int64_t nr, float b, float fs, const float *ff, int st, void *s)
{ L("rope %ld %ld %ld %ld %ld %ld %g %g %ld %d %ld\n", P(x), P(pos), (long)nt, (long)nh, (long)hd, (long)nr, b, fs, P(ff), st, P(s)); return 0; }
lrun_status lrun_k_swiglu(const float *g, const float *u, float *o, int64_t n, void *s)
{ L("swiglu %ld %ld %ld %ld %ld\n", P(g), P(u), P(o), (long)n, P(s)); return 0; }
lrun_status lrun_k_add(float *y, const float *x, int64_t n, void *s) { L("add %ld %ld %ld %ld\n", P(y), P(x), (long)n, P(s)); return 0; }
lrun_status lrun_k_add_bias(float *y, const float *b, int64_t r, int64_t n, void *s)
{ L("add_bias %ld %ld %ld %ld %ld\n", P(y), P(b), (long)r, (long)n, P(s)); return 0; }
lrun_status lrun_k_rope_kv_store(float *q, float *k, const float *v, const int32_t *pos, int64_t nt, int64_t nh, int64_t nhk, int64_t hd, int64_t nr, float b, float fs, const float *ff, int st, lrun_dtype kd, void *ck, void *cv, const int64_t *ro, void *s)
{ L("rope_kv_store %ld %ld %ld %ld %ld %ld %ld %ld %ld %g %g %ld %d %d %ld %ld %ld %ld\n", P(q), P(k), P(v), P(pos), (long)nt, (long)nh, (long)nhk, (long)hd, (long)nr, b, fs, P(ff), st, kd, P(ck), P(cv), P(ro), P(s)); return 0; }
lrun_status lrun_k_kv_store(lrun_dtype kd, void *ck, void *cv, const int64_t *ro, const float *k, const float *v, int64_t nt, int64_t kvd, void *s)
{ L("kv_store %d %ld %ld %ld %ld %ld %ld %ld %ld\n", kd, P(ck), P(cv), P(ro), P(k), P(v), (long)nt, (long)kvd, P(s)); return 0; }
lrun_status lrun_k_attention(lrun_dtype kd, const float *q, const void *ck, const void *cv, const int64_t *kb, const int64_t *vb, const int32_t *nkv, int64_t nt, int64_t nh, int64_t nhk, int64_t hd, int64_t mk, float sc, float *o, void *w, void *s)
{ L("attention %d %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %g %ld %ld %ld\n", kd, P(q), P(ck), P(cv), P(kb), P(vb), P(nkv), (long)nt, (long)nh, (long)nhk, (long)hd, (long)mk, sc, P(o), P(w), P(s)); return 0; }
lrun_status lrun_k_quantize_q8(lrun_dtype p, const float *x, int64_t m, int64_t k, int8_t *qs, float *d, float *sm, void *s)
{ L("quantize_q8 %d %ld %ld %ld %ld %ld %ld %ld\n", p, P(x), (long)m, (long)k, P(qs), P(d), P(sm), P(s)); return 0; }
lrun_status lrun_k_q8dot(lrun_dtype d, const lrun_k_q8dot_part *p, int np, int64_t k, const int8_t *xq, const float *xd, const float *xs, int64_t m, void *s)
{ L("q8dot %d np=%d k=%ld %ld %ld %ld m=%ld %ld:", d, np, (long)k, P(xq), P(xd), P(xs), (long)m, P(s));
  for (int i = 0; i < np; i++) L(" [%ld %zu %ld %ld]", P(p[i].w), p[i].row_bytes, (long)p[i].n, P(p[i].y)); L("\n"); return 0; }
lrun_status lrun_k_rms_norm_exact(const float *x, const float *w, float *y, int64_t r, int64_t n, float eps, void *s)
{ L("rms_norm_exact %ld %ld %ld %ld %ld %g %ld\n", P(x), P(w), P(y), (long)r, (long)n, eps, P(s)); return 0; }
lrun_status lrun_k_add_rms_norm_exact(float *x, const float *a, const float *b, const float *w, float *y, int64_t r, int64_t n, float eps, lrun_dtype p, int8_t *qs, float *qd, float *qsum, void *s)
{ L("add_rms_norm_exact %ld %ld %ld %ld %ld %ld %ld %g %d %ld %ld %ld %ld\n", P(x), P(a), P(b), P(w), P(y), (long)r, (long)n, eps, p, P(qs), P(qd), P(qsum), P(s)); return 0; }
lrun_status lrun_k_rope_store_exact(float *q, float *k, const float *v, const float *cs, int64_t nt, int64_t nh, int64_t nhk, int64_t hd, int64_t nr, int st, lrun_dtype kd, void *ck, void *cv, const int64_t *ro, void *s)
{ L("rope_store_exact %ld %ld %ld %ld %ld %ld %ld %ld %ld %d %d %ld %ld %ld %ld\n", P(q), P(k), P(v), P(cs), (long)nt, (long)nh, (long)nhk, (long)hd, (long)nr, st, kd, P(ck), P(cv), P(ro), P(s)); return 0; }
lrun_status lrun_k_swiglu_exact(float *g, const float *u, int64_t r, int64_t n, lrun_dtype p, int8_t *qs, float *qd, float *qsum, void *s)
{ L("swiglu_exact %ld %ld %ld %ld %d %ld %ld %ld %ld\n", P(g), P(u), (long)r, (long)n, p, P(qs), P(qd), P(qsum), P(s)); return 0; }
lrun_status lrun_k_attention_exact(lrun_dtype kd, const float *q, const void *ck, const void *cv, const int64_t *kb, const int32_t *nkv, const int32_t *nv, int64_t nt, int64_t nh, int64_t nhk, int64_t hd, int64_t mk, float sc, int c8, float *o, void *s)
{ L("attention_exact %d %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %g %d %ld %ld\n", kd, P(q), P(ck), P(cv), P(kb), P(nkv), P(nv), (long)nt, (long)nh, (long)nhk, (long)hd, (long)mk, sc, c8, P(o), P(s)); return 0; }
/* sliding-window variants: no scenario has a window (a call would show up in the log) */
lrun_status lrun_k_attention_window(lrun_dtype kd, const float *q, const void *ck, const void *cv, const int64_t *kb, const int64_t *vb, const int32_t *nkv, int64_t nt, int64_t nh, int64_t nhk, int64_t hd, int64_t mk, float sc, int64_t swa, float *o, void *w, void *s)
{ L("attention_window %d %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %g %ld %ld %ld %ld\n", kd, P(q), P(ck), P(cv), P(kb), P(vb), P(nkv), (long)nt, (long)nh, (long)nhk, (long)hd, (long)mk, sc, (long)swa, P(o), P(w), P(s)); return 0; }
lrun_status lrun_k_attention_exact_window(lrun_dtype kd, const float *q, const void *ck, const void *cv, const int64_t *kb, const int32_t *nkv, const int32_t *nv, int64_t nt, int64_t nh, int64_t nhk, int64_t hd, int64_t mk, float sc, int c8, int64_t swa, float *o, void *s)
{ L("attention_exact_window %d %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %g %d %ld %ld %ld\n", kd, P(q), P(ck), P(cv), P(kb), P(nkv), P(nv), (long)nt, (long)nh, (long)nhk, (long)hd, (long)mk, sc, c8, (long)swa, P(o), P(s)); return 0; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind k, cudaStream_t st)
{ L("memcpy %ld %ld %zu %d %ld\n", P(d), P(s), n, (int)k, P(st)); return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { (void)e; return "?"; }
const char *cudaGetErrorName(cudaError_t e) { (void)e; return "?"; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
/* kv and offload hooks */
char *g_kc, *g_vc;
lrun_status lrun_cuda_kv_layer(lrun_cuda_engine *e, int64_t l, char **k, char **v) { (void)e; L("kv_layer %ld\n", (long)l); *k = g_kc + l * 64; *v = g_vc + l * 64; return 0; }
lrun_status lrun_cuda_kv_layer_end(lrun_cuda_engine *e, int64_t l, int64_t n) { (void)e; L("kv_layer_end %ld %ld\n", (long)l, (long)n); return 0; }
lrun_status lrun_cuda_kv_fused_attention(lrun_cuda_engine *e, int64_t l, int64_t n, int64_t mk) { (void)e; L("kv_fused_attention %ld %ld %ld\n", (long)l, (long)n, (long)mk); return 0; }
int g_embd_host;
struct lrun_model_layer *g_views; const struct lrun_tensor *g_head;
lrun_status lrun_cuda_offload_layer_begin(lrun_cuda_engine *e, int64_t l, const struct lrun_model_layer **out) { (void)e; L("offload_layer_begin %ld\n", (long)l); *out = &g_views[l]; return 0; }
lrun_status lrun_cuda_offload_layer_end(lrun_cuda_engine *e, int64_t l) { (void)e; L("offload_layer_end %ld\n", (long)l); return 0; }
lrun_status lrun_cuda_offload_head_begin(lrun_cuda_engine *e, const struct lrun_tensor **out) { (void)e; L("offload_head_begin\n"); if (out) *out = g_head; return 0; }
lrun_status lrun_cuda_offload_head_end(lrun_cuda_engine *e) { (void)e; L("offload_head_end\n"); return 0; }
const struct lrun_tensor *lrun_cuda_offload_head(const lrun_cuda_engine *e) { (void)e; return g_head; }
int lrun_cuda_offload_embeds_on_host(const lrun_cuda_engine *e) { (void)e; return g_embd_host; }
lrun_status lrun_cuda_offload_embed(lrun_cuda_engine *e, int64_t n) { (void)e; L("offload_embed %ld\n", (long)n); return 0; }
int lrun_cuda_offload_on_host(const lrun_cuda_engine *e, const struct lrun_tensor *w) { return e->offload && w->host_compute && w->tier != LRUN_TIER_DEVICE; }
lrun_status lrun_cuda_offload_host_matmul(lrun_cuda_engine *e, const struct lrun_tensor *w, const float *x, int64_t m, float *y)
{ (void)e; L("host_matmul %s %ld %ld %ld\n", w->name, P(x), (long)m, P(y)); return 0; }
/* gemma2/3's kernels: no scenario is a gemma model (a call would show up in the log) */
lrun_status lrun_k_attention_softcap(lrun_dtype kd, const float *q, const void *ck, const void *cv, const int64_t *kb, const int64_t *vb, const int32_t *nkv, int64_t nt, int64_t nh, int64_t nhk, int64_t hd, int64_t mk, float sc, int64_t swa, float cap, float *o, void *w, void *s)
{ L("attention_softcap %d %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %g %ld %g %ld %ld %ld\n", kd, P(q), P(ck), P(cv), P(kb), P(vb), P(nkv), (long)nt, (long)nh, (long)nhk, (long)hd, (long)mk, sc, (long)swa, cap, P(o), P(w), P(s)); return 0; }
lrun_status lrun_k_geglu(const float *g, const float *u, float *o, int64_t n, int t, void *s)
{ L("geglu %ld %ld %ld %ld %d %ld\n", P(g), P(u), P(o), (long)n, t, P(s)); return 0; }
lrun_status lrun_k_scale(float *x, float f, int64_t n, void *s) { L("scale %ld %g %ld %ld\n", P(x), f, (long)n, P(s)); return 0; }
lrun_status lrun_k_softcap(float *x, int64_t n, float cap, void *s) { L("softcap %ld %ld %g %ld\n", P(x), (long)n, cap, P(s)); return 0; }
