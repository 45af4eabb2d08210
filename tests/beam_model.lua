--- tests/beam_model.lua — the tiny random-weight llama that the beam goldens
-- (tests/golden/make_beam_golden.py) and the beam specs share. f32 weights and,
-- on the lrun side, an f32 KV cache, so lrun and HF transformers compute the
-- same function in f32 and differ only by summation order (~1e-6).
-- Same spec, same seed: the same file, byte for byte.
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C

local M = {}

-- 2 layers, grouped-query attention (4 heads, 2 KV heads), an untied LM head,
-- 512 tokens; n_ctx 2048 holds the seed scenario's ~1000-token prompt.
M.spec = {
  n_layer = 2, n_embd = 64, n_head = 4, n_head_kv = 2, n_ff = 128, n_vocab = 512, n_ctx = 2048,
  tied_embeddings = false, rope_freq_base = 10000, rms_eps = 1e-5, seed = 20261122,
}

--- Writes the model to path.
-- @tparam string path
-- @tparam[opt] table changes fields of M.spec to change (n_layer = 32: the
--   deep variant the seed scenario's OOM test uses)
function M.write(path, changes)
  local s = ffi.new("lrun_model_gen_spec")
  local p = {}
  for k, v in pairs(M.spec) do p[k] = v end
  for k, v in pairs(changes or {}) do p[k] = v end
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = p.n_layer, p.n_embd, p.n_head, p.n_head_kv, p.n_ff
  s.n_vocab, s.n_ctx = p.n_vocab, p.n_ctx
  s.weight_dtype, s.embd_dtype = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32
  s.tied_embeddings = p.tied_embeddings and 1 or 0
  s.rope_freq_base, s.rms_eps, s.seed = p.rope_freq_base, p.rms_eps, p.seed
  s.n_threads, s.progress = 1, 0
  local st = C.lrun_model_generate(path, s)
  if st ~= C.LRUN_OK then error("beam_model: " .. lf.last_error(), 2) end
end

--- A temporary file holding the model, written once per process and
-- removed when the process ends.
local cached
function M.path()
  if cached then return cached end
  cached = os.tmpname()
  M.write(cached)
  local sentinel = newproxy(true)
  getmetatable(sentinel).__gc = function() os.remove(cached) end
  M._sentinel = sentinel
  return cached
end

return M
