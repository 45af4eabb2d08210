--- tests/predict_fixture.lua — what decode_predict_spec and
-- prefill_predict_spec share: a relative comparison for predicted seconds,
-- the one-block model their hand formulas describe (tensor descriptions,
-- as model:tensors() gives them), and a small generated model (2 blocks,
-- Q8_0 matrices, an f16 embedding and head) for the measurements.
local lf = require("lrun.ffi")
local lrun = require("lrun")
local assert = require("luassert") -- busted's assert, a global only in spec files
local ffi, C = lf.ffi, lf.C

local M = {}

--- Asserts got within 1e-9 of want, relative; what names the quantity.
function M.near(want, got, what)
  assert.is_true(math.abs(want - got) <= 1e-9 * math.abs(want), string.format("%s: want %.12g, got %.12g",
    what or "value", want, got))
end

-- One block and the head (shapes innermost first: k, n).
M.TENSORS = {
  { name = "token_embd.weight", role = "embedding", dtype = "f16", bytes = 1000 * 512, shape = { 500, 1000 } },
  { name = "output.weight", role = "lm_head", dtype = "q8_0", bytes = 4e6, shape = { 500, 1000 } },
  { name = "blk.0.attn_norm.weight", role = "attn_norm", dtype = "f32", bytes = 2000, shape = { 500 } },
  { name = "blk.0.attn_q.weight", role = "attn_q", dtype = "q8_0", bytes = 1e6, shape = { 500, 500 } },
  { name = "blk.0.ffn_up.weight", role = "ffn_up", dtype = "q8_0", bytes = 2e6, shape = { 500, 1000 } },
  { name = "blk.0.ffn_down.weight", role = "ffn_down", dtype = "q8_0", bytes = 2e6, shape = { 1000, 500 } },
}

--- A generated model (seed gives its weights) in a fresh temporary file,
-- loaded on the cpu with one thread.
-- @treturn string its path (the caller removes it)
-- @treturn table the lrun.model (the caller frees it)
function M.model(seed)
  local path = os.tmpname() .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 2, 64, 4, 2, 128
  s.n_vocab, s.n_ctx = 512, 256
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_F16, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, seed, 1
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
  return path, assert(lrun.load(path, { progress = false, threads = 1 }))
end

return M
