--- tests/quant_models.lua — the small random-weight llamas, one per GGUF quant
-- type (and a Q4_K_M-like mix), that tests/golden/make_quant_llamacpp_golden.py
-- runs through llama.cpp and tests/llamacpp_quants_spec.lua through lrun.
-- Same spec, same seed, same quantizers: the same file, byte for byte (the
-- golden records each file's size and Adler-32, so a changed generator or
-- quantizer says "regenerate the golden" rather than failing obscurely).
--
-- As a script: build/lrun tests/quant_models.lua DIR writes DIR/<name>.gguf
-- for every model.
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C

local M = {}

-- 8 layers (so the mix has both kinds of layers: llama.cpp's use_more_bits
-- picks 0, 3, 6 and 7), rows of 256 and 512 (whole K-quant super-blocks),
-- grouped-query attention, an untied head in the weights' type.
M.spec = {
  n_layer = 8, n_embd = 256, n_head = 4, n_head_kv = 2, n_ff = 512, n_vocab = 512, n_ctx = 512,
  rope_freq_base = 10000, rms_eps = 1e-5, seed = 20261204,
}

-- name, weight (and embedding) dtype, mix dtype (nil: none)
M.models = {
  {name = "q5_0", dtype = "Q5_0"},
  {name = "q5_1", dtype = "Q5_1"},
  {name = "q2_k", dtype = "Q2_K"},
  {name = "q3_k", dtype = "Q3_K"},
  {name = "q5_k", dtype = "Q5_K"},
  {name = "iq4_nl", dtype = "IQ4_NL"},
  {name = "iq4_xs", dtype = "IQ4_XS"},
  {name = "q4_k_m", dtype = "Q4_K", mix = "Q6_K"},
}

--- Writes model `m` (an entry of M.models) to path.
function M.write(path, m)
  local s = ffi.new("lrun_model_gen_spec")
  local p = M.spec
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = p.n_layer, p.n_embd, p.n_head, p.n_head_kv, p.n_ff
  s.n_vocab, s.n_ctx = p.n_vocab, p.n_ctx
  s.weight_dtype = C["LRUN_DTYPE_" .. m.dtype]
  s.embd_dtype = C["LRUN_DTYPE_" .. m.dtype]
  s.mix_dtype = m.mix and C["LRUN_DTYPE_" .. m.mix] or C.LRUN_DTYPE_F32
  s.tied_embeddings = 0
  s.rope_freq_base, s.rms_eps, s.seed = p.rope_freq_base, p.rms_eps, p.seed
  s.n_threads, s.progress = 1, 0
  local st = C.lrun_model_generate(path, s)
  if st ~= C.LRUN_OK then error("quant_models " .. m.name .. ": " .. lf.last_error(), 2) end
end

--- Size in bytes and Adler-32 of the file at path (as Python's zlib.adler32).
function M.checksum(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  local a, b = 1, 0
  for i = 1, #data do
    a = (a + data:byte(i)) % 65521
    b = (b + a) % 65521
  end
  return #data, b * 65536 + a
end

if arg and arg[0] and arg[0]:match("quant_models%.lua$") then
  local dir = assert(arg[1], "usage: build/lrun tests/quant_models.lua DIR")
  for _, m in ipairs(M.models) do
    local path = dir .. "/" .. m.name .. ".gguf"
    M.write(path, m)
    print(path)
  end
end

return M
