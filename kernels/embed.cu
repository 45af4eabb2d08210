/* embed.cu — out (n_tok, n_embd) f32 = rows tokens[i] of the embedding
 * table, dequantized exactly as lrun_dequantize_row does.
 *
 * The launcher cannot see n_vocab (kernels.h gives none), so it cannot
 * range-check token ids: the caller validates them on the host before they
 * are uploaded. A negative id reads nothing and gives a row of zeros. */
#include "embed.cuh"

extern "C" lrun_status lrun_k_embed(lrun_dtype dtype, const void *table, size_t row_bytes, int64_t n_embd,
                                    const int32_t *tokens, int64_t n_tok, float *out, void *stream)
{
    static const char op[] = "lrun_k_embed";
    /* one row is enough to check the table's dtype, block, stride and alignment */
    lrun_status st = lrun_k_check_weight(op, dtype, table, row_bytes, 1, n_embd);
    if (st != LRUN_OK) return st;
    int64_t total;
    if (!tokens || !out) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !tokens ? "tokens" : "out");
    if (n_tok <= 0) return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld (must be > 0)", op, (long long)n_tok);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    if (__builtin_mul_overflow(n_tok, n_embd, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld tokens of %lld elements overflow", op, (long long)n_tok,
                         (long long)n_embd);
    cudaError_t e = lrun_k_rows_launch<LRUN_DTYPE_F32>(dtype, table, row_bytes, tokens, n_tok, n_embd, out,
                                                        (cudaStream_t)stream);
    if (e != cudaSuccess) return lrun_fail(LRUN_E_INTERNAL, "%s: no kernel for %s", op, lrun_dtype_name(dtype));
    return lrun_k_launched(op);
}
