/* test_packed_stream_gpu.c — packed weights in the CUDA engine
 * (runtime/cuda/engine_cuda_packed.c, engine_cuda_offload.c; docs/packed.md).
 *
 * A bf16 and an f16 model, each as its GGUF and as its packed file. For
 * every placement — all resident (ALL_DEVICE: packed on the device, decoded
 * into a scratch before the plain GEMV/GEMM, mode 3's engine path), every
 * matrix streamed from pinned, host or mmap memory (mode 2: packed bytes
 * across, decoded into the slot on the copy stream), a mix of resident
 * packed, resident plain and streamed packed weights, the embedding table
 * and head off the device, host compute — the packed model's logits (a
 * 20-token prompt through the GEMM path, then 8 greedy decode steps through
 * the GEMV path) equal the plain model's in the same placement to the bit:
 * the decode is bit-exact, so the same kernels see the same bytes. Streamed
 * steps must cross exactly the packed bytes. Also the decode's GB/s on the
 * copy stream's path (mode 2) is printed for the report. A PEX2 file
 * (its own kernels) passes the same placements, and a GGUF packed at
 * placement (bf16 PEX2, f16 PEX1) resident and streamed, its sizes measured
 * first (lrun_tensor_measure_packed) while plain on the device. Skipped without a GPU. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"

enum { L = 4, D = 256, H = 8, HK = 4, F = 512, V = 1000, CTX = 512, NP = 20, ND = 8 };

static void gen_model(lrun_dtype wdt, const char *gguf, const char *lrpk)
{
    lrun_model_gen_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.n_layer = L, spec.n_embd = D, spec.n_head = H, spec.n_head_kv = HK, spec.n_ff = F, spec.n_vocab = V;
    spec.n_ctx = CTX, spec.weight_dtype = wdt, spec.embd_dtype = wdt, spec.rope_freq_base = 10000.0;
    spec.rms_eps = 1e-5, spec.seed = 7, spec.trained_stats = 1;
    if (lrun_model_generate(gguf, &spec) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    if (lrun_pack(gguf, lrpk, NULL, NULL) != LRUN_OK) printf("# pack: %s\n", lrun_last_error());
}

typedef struct {
    lrun_tier tier;
    int host_compute;
} where;
typedef where (*placement_fn)(lrun_role role, int layer);

static int is_block_matrix(lrun_role r)
{
    return r == LRUN_ROLE_ATTN_Q || r == LRUN_ROLE_ATTN_K || r == LRUN_ROLE_ATTN_V || r == LRUN_ROLE_ATTN_OUTPUT ||
           r == LRUN_ROLE_FFN_GATE || r == LRUN_ROLE_FFN_UP || r == LRUN_ROLE_FFN_DOWN;
}

static const where DEV = {LRUN_TIER_DEVICE, 0}, PIN = {LRUN_TIER_PINNED, 0}, HOST = {LRUN_TIER_HOST, 0},
                   MMAP = {LRUN_TIER_MMAP, 0}, HOST_CPU = {LRUN_TIER_HOST, 1};

static where resident(lrun_role r, int l) { return (void)r, (void)l, DEV; }
static where blocks_pinned(lrun_role r, int l) { return (void)l, is_block_matrix(r) ? PIN : DEV; }
static where blocks_host(lrun_role r, int l) { return (void)l, is_block_matrix(r) ? HOST : DEV; }
static where all_mmap(lrun_role r, int l) { return (void)r, (void)l, MMAP; }
static where mixed(lrun_role r, int l) { return is_block_matrix(r) && l % 2 ? PIN : r == LRUN_ROLE_LM_HEAD ? HOST : DEV; }
static where embd_head_off(lrun_role r, int l)
{
    return (void)l, r == LRUN_ROLE_EMBEDDING || r == LRUN_ROLE_LM_HEAD ? PIN : DEV;
}
static where host_compute(lrun_role r, int l)
{
    if (!is_block_matrix(r)) return r == LRUN_ROLE_LM_HEAD ? HOST_CPU : DEV;
    return l == 1 ? HOST_CPU : PIN;
}

/* Places every tensor; packed_mode 1 keeps each in its form (a packed
 * file's matrices packed; mmap: the file's form), 2 also makes the
 * resident matrices of odd blocks plain (a mix of forms on the device).
 * Returns the bytes one decode step streams, or -1. */
static double apply(lrun_model *m, placement_fn place, int unpack_odd)
{
    double streamed = 0;
    lrun_device *dev = lrun_model_device(m);
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        const lrun_role r = lrun_tensor_role(t);
        const int layer = lrun_tensor_layer(t);
        const where w = place(r, layer);
        int packed = lrun_tensor_packed(t);
        if (unpack_odd && w.tier != LRUN_TIER_MMAP && layer % 2 == 1) packed = 0;
        if (lrun_tensor_move_form(t, w.tier == LRUN_TIER_DEVICE ? dev : NULL, w.tier, packed) != LRUN_OK) {
            printf("# move %s: %s\n", lrun_tensor_name(t), lrun_last_error());
            return -1;
        }
        lrun_tensor_set_host_compute(t, w.host_compute);
        if (w.tier == LRUN_TIER_DEVICE || r == LRUN_ROLE_EMBEDDING || w.host_compute) continue;
        if (is_block_matrix(r) || r == LRUN_ROLE_LM_HEAD) streamed += (double)lrun_tensor_stored_bytes(t);
    }
    return streamed;
}

struct run {
    float logits[(NP + ND) * V];
    lrun_engine_stats decode;
};

static int run(lrun_model *m, lrun_weight_mode mode, struct run *out)
{
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = 256, .n_batch_max = 32, .weight_mode = mode,
                                .prefetch_layers = 1};
    lrun_engine *e = NULL;
    if (lrun_engine_init(&e, m, &o) != LRUN_OK) {
        printf("# engine: %s\n", lrun_last_error());
        return 0;
    }
    int32_t prompt[NP], seq[NP] = {0};
    for (int i = 0; i < NP; i++) prompt[i] = (int32_t)((i * 37 + 11) % V);
    int8_t want[NP];
    memset(want, 1, sizeof want);
    int64_t n_out = 0;
    int ok = lrun_engine_step(e, NP, prompt, seq, want, out->logits, NP, &n_out) == LRUN_OK;
    lrun_engine_reset_stats(e);
    const float *last = out->logits + (NP - 1) * V;
    for (int i = 0; ok && i < ND; i++) {
        int32_t tok = lrun_logits_argmax(last, V);
        float *row = out->logits + (NP + i) * V;
        ok = lrun_engine_step(e, 1, &tok, seq, NULL, row, 1, &n_out) == LRUN_OK;
        last = row;
    }
    if (!ok) printf("# step: %s\n", lrun_last_error());
    lrun_engine_get_stats(e, &out->decode);
    lrun_engine_free(e);
    return ok;
}

static void one(const char *gguf, const char *lrpk, const char *dname, const char *pname, placement_fn place,
                lrun_weight_mode mode, int unpack_odd)
{
    static struct run a, b;
    char label[192];
    lrun_model *mp = fixture_load(gguf, "cuda", 0, 0, -1), *mk = fixture_load(lrpk, "cuda", 0, 0, -1);
    const double sp = mp ? apply(mp, place, 0) : -1, sk = mk ? apply(mk, place, unpack_odd) : -1;
    const int ok = sp >= 0 && sk >= 0 && run(mp, mode, &a) && run(mk, mode, &b);
    snprintf(label, sizeof label, "%s %s: packed logits bit-identical to plain (prompt and %d decode steps)", dname,
             pname, ND);
    CHECK(label, ok && !memcmp(a.logits, b.logits, sizeof a.logits));
    if (ok && mode == LRUN_WEIGHT_MODE_AS_PLACED && sk > 0) {
        /* ND steps, each streaming every streamed matrix once (plus gathered embedding rows when off) */
        const double rows = place(LRUN_ROLE_EMBEDDING, -1).tier != LRUN_TIER_DEVICE ? (double)ND * D * 2 : 0;
        snprintf(label, sizeof label, "%s %s: decode streams the packed bytes (%.0f per step, plain %.0f)", dname,
                 pname, sk, sp);
        CHECK(label, (double)b.decode.bytes_streamed == sk * ND + rows && sk < sp);
    }
    lrun_model_free(mp);
    lrun_model_free(mk);
}

static void test_dtype(lrun_dtype dt, const char *dname)
{
    char gguf[96], lrpk[112];
    snprintf(gguf, sizeof gguf, "/tmp/lrun_test_packed_stream_gpu_%d_%s.gguf", (int)getpid(), dname);
    snprintf(lrpk, sizeof lrpk, "%s.lrpk", gguf);
    gen_model(dt, gguf, lrpk);
    const lrun_weight_mode AD = LRUN_WEIGHT_MODE_ALL_DEVICE, AP = LRUN_WEIGHT_MODE_AS_PLACED;
    one(gguf, lrpk, dname, "ALL_DEVICE (packed resident: decode + plain kernel)", resident, AD, 0);
    one(gguf, lrpk, dname, "AS_PLACED resident, mixed forms", resident, AP, 1);
    one(gguf, lrpk, dname, "blocks streamed from pinned (mode 2)", blocks_pinned, AP, 0);
    one(gguf, lrpk, dname, "blocks streamed from host (staged)", blocks_host, AP, 0);
    one(gguf, lrpk, dname, "everything streamed from mmap", all_mmap, AP, 0);
    one(gguf, lrpk, dname, "mixed streamed and resident", mixed, AP, 1);
    one(gguf, lrpk, dname, "embedding and head off the device", embd_head_off, AP, 0);
    one(gguf, lrpk, dname, "host compute", host_compute, AP, 0);
    unlink(gguf);
    unlink(lrpk);
}

/* A PEX2 packed file (kernels/packed_pex2.cu, reached through the same
 * launchers by the tensors' codec): in every placement of test_dtype, and
 * with the embedding gather, its logits equal the GGUF's bit for bit and the
 * streamed steps cross its packed bytes; its matrices made plain on the way
 * to the device (decoded on the host), too. */
static void pex2(void)
{
    static struct run a, b;
    char gguf[96], lrpk[112];
    snprintf(gguf, sizeof gguf, "/tmp/lrun_test_packed_stream_gpu_%d_pex2.gguf", (int)getpid());
    snprintf(lrpk, sizeof lrpk, "%s.lrpk", gguf);
    gen_model(LRUN_DTYPE_BF16, gguf, lrpk);
    const lrun_pack_opts po = {.codec = LRUN_PACK_CODEC_PEX2};
    lrun_pack_stats ps = {0};
    CHECK("PEX2: lrun_pack --codec pex2 packs every matrix PEX2",
          lrun_pack(gguf, lrpk, &po, &ps) == LRUN_OK && ps.n_pex2 > 0 && ps.n_pex2 == ps.n_packed);
    const lrun_weight_mode AD = LRUN_WEIGHT_MODE_ALL_DEVICE, AP = LRUN_WEIGHT_MODE_AS_PLACED;
    const char *dn = "PEX2 bf16";
    one(gguf, lrpk, dn, "ALL_DEVICE (packed resident: fused GEMV, decode_rows + GEMM)", resident, AD, 0);
    one(gguf, lrpk, dn, "AS_PLACED resident, mixed forms", resident, AP, 1);
    one(gguf, lrpk, dn, "blocks streamed from pinned (mode 2)", blocks_pinned, AP, 0);
    one(gguf, lrpk, dn, "blocks streamed from host (staged)", blocks_host, AP, 0);
    one(gguf, lrpk, dn, "everything streamed from mmap", all_mmap, AP, 0);
    one(gguf, lrpk, dn, "mixed streamed and resident", mixed, AP, 1);
    one(gguf, lrpk, dn, "embedding and head off the device", embd_head_off, AP, 0);
    one(gguf, lrpk, dn, "host compute", host_compute, AP, 0);
    setenv("LRUN_PACKED_EMBED_GATHER", "1", 1); /* read at engine init */
    one(gguf, lrpk, dn, "ALL_DEVICE with the embedding gather (lrun_k_pex2_embed)", resident, AD, 0);
    unsetenv("LRUN_PACKED_EMBED_GATHER");
    /* LRUN_PACKED_FUSED is read once per process: run the test again with
     * LRUN_PACKED_FUSED=0 for the decode-into-the-scratch path */
    lrun_model *mp = fixture_load(gguf, "cuda", 0, 0, -1), *mk = fixture_load(lrpk, "cuda", 0, 0, -1);
    int ok = mp && mk && apply(mp, resident, 0) >= 0;
    for (int64_t i = 0; ok && i < lrun_model_tensor_count(mk); i++)
        ok = lrun_tensor_move_form(lrun_model_tensor(mk, i), lrun_model_device(mk), LRUN_TIER_DEVICE, 0) == LRUN_OK;
    ok = ok && run(mp, LRUN_WEIGHT_MODE_ALL_DEVICE, &a) && run(mk, LRUN_WEIGHT_MODE_ALL_DEVICE, &b);
    CHECK("PEX2 decoded on the host to plain resident weights: the GGUF's logits bit for bit",
          ok && !memcmp(a.logits, b.logits, sizeof a.logits));
    lrun_model_free(mp);
    lrun_model_free(mk);
    unlink(gguf);
    unlink(lrpk);
}

/* A GGUF packed at placement (lrun_tensor_move_form(…, packed = 1)): lrun
 * pack's codec (bf16 PEX2, f16 PEX1), resident on the device (the fused
 * GEMV, ALL_DEVICE) and streamed from pinned memory (mode 2), each with
 * the plain model's logits bit for bit. Resident, each matrix is first
 * moved plain to the device and measured there (bf16: the exponent
 * histogram of its bytes staged to the host; f16: an encode): the size its
 * packing then takes. */
static void packed_at_placement(lrun_dtype dt, const char *dname, int want_codec)
{
    static struct run a, b;
    char gguf[96], lrpk[112], label[160];
    snprintf(gguf, sizeof gguf, "/tmp/lrun_test_packed_stream_gpu_%d_place_%s.gguf", (int)getpid(), dname);
    snprintf(lrpk, sizeof lrpk, "%s.lrpk", gguf);
    gen_model(dt, gguf, lrpk);
    const placement_fn places[2] = {resident, blocks_pinned};
    const lrun_weight_mode modes[2] = {LRUN_WEIGHT_MODE_ALL_DEVICE, LRUN_WEIGHT_MODE_AS_PLACED};
    for (int k = 0; k < 2; k++) {
        lrun_model *mp = fixture_load(gguf, "cuda", 0, 0, -1), *mk = fixture_load(gguf, "cuda", 0, 0, -1);
        int ok = mp && mk && apply(mp, places[k], 0) >= 0, codec_ok = ok, n_measured = 0, measured_ok = 1;
        for (int64_t i = 0; ok && i < lrun_model_tensor_count(mk); i++) {
            lrun_tensor *t = lrun_model_tensor(mk, i);
            const lrun_role r = lrun_tensor_role(t);
            const int matrix = is_block_matrix(r) || r == LRUN_ROLE_LM_HEAD || r == LRUN_ROLE_EMBEDDING;
            const where w = places[k](r, lrun_tensor_layer(t));
            size_t measured = 0; /* a resident matrix measured while plain on the device: staged to the host */
            if (k == 0 && matrix) {
                ok = lrun_tensor_move(t, lrun_model_device(mk), LRUN_TIER_DEVICE) == LRUN_OK &&
                     lrun_tensor_measure_packed(t, &measured) == LRUN_OK && !lrun_tensor_packed(t);
                n_measured += ok;
                if (!ok) printf("# measure %s on the device: %s\n", lrun_tensor_name(t), lrun_last_error());
            }
            ok = ok && lrun_tensor_move_form(t, w.tier == LRUN_TIER_DEVICE ? lrun_model_device(mk) : NULL, w.tier,
                                             matrix) == LRUN_OK;
            if (!ok) printf("# move %s: %s\n", lrun_tensor_name(t), lrun_last_error());
            codec_ok = codec_ok && (!matrix || lrun_tensor_packed_codec(t) == want_codec);
            measured_ok = measured_ok && (!measured || lrun_tensor_packed_bytes(t) == measured);
        }
        if (k == 0) {
            snprintf(label, sizeof label,
                     "%s: lrun_tensor_measure_packed of plain matrices on the device gives the size packing gives",
                     dname);
            CHECK(label, ok && n_measured > 0 && measured_ok);
        }
        ok = ok && run(mp, modes[k], &a) && run(mk, modes[k], &b);
        snprintf(label, sizeof label, "%s packed at placement, %s: codec %s", dname, k ? "blocks pinned" : "resident",
                 want_codec == 2 ? "PEX2" : "PEX1");
        CHECK(label, ok && codec_ok);
        snprintf(label, sizeof label, "%s packed at placement, %s: logits bit-identical to plain", dname,
                 k ? "blocks pinned" : "resident");
        CHECK(label, ok && !memcmp(a.logits, b.logits, sizeof a.logits));
        lrun_model_free(mp);
        lrun_model_free(mk);
    }
    unlink(gguf);
    unlink(lrpk);
}

/* The decode speed smart plans with (lrun_model_measure_packed_decode), on the device and on the host. */
static void decode_rates(void)
{
    char gguf[96], lrpk[112];
    snprintf(gguf, sizeof gguf, "/tmp/lrun_test_packed_stream_gpu_%d_rate.gguf", (int)getpid());
    snprintf(lrpk, sizeof lrpk, "%s.lrpk", gguf);
    gen_model(LRUN_DTYPE_BF16, gguf, lrpk);
    lrun_model *m = fixture_load(lrpk, "cuda", 0, 0, -1);
    double dev = 0, host = 0;
    const int ok = m && lrun_model_measure_packed_decode(m, 1, (size_t)256 << 20, &dev) == LRUN_OK &&
                   lrun_model_measure_packed_decode(m, 0, (size_t)256 << 20, &host) == LRUN_OK;
    if (!ok) printf("# measure: %s\n", lrun_last_error());
    printf("# packed decode of 256 MiB trained-like bf16: %.1f GB/s on the device, %.1f GB/s on the host\n", dev / 1e9,
           host / 1e9);
    CHECK("lrun_model_measure_packed_decode measures the kernel and the host decoder", ok && dev > 0 && host > 0);
    lrun_model_free(m);
    unlink(gguf);
    unlink(lrpk);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - packed streaming tests # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    test_dtype(LRUN_DTYPE_BF16, "bf16");
    test_dtype(LRUN_DTYPE_F16, "f16");
    decode_rates();
    pex2();
    packed_at_placement(LRUN_DTYPE_BF16, "bf16", 2);
    packed_at_placement(LRUN_DTYPE_F16, "f16", 1);
    return CHECK_DONE();
}
