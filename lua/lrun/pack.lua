--- lrun.pack — packed weights (docs/packed.md): bf16/f16 tensors of a model
-- file losslessly compressed; a packed file loads with lrun.load like the
-- GGUF it came from.
--
--     local stats = assert(lrun.pack("model.gguf", "model.lrpk", {threads = 8}))
--     print(stats.ratio)
-- @module lrun.pack
local lrun_ffi = require("lrun.ffi")
local ffi, C = lrun_ffi.ffi, lrun_ffi.C

local M = {}

local function pack_opts(opts, fn)
  opts = opts or {}
  if type(opts) ~= "table" then error(fn .. ": opts must be a table", 3) end
  local o = ffi.new("lrun_pack_opts")
  o.n_threads = opts.threads or 0
  local progress = opts.progress
  if progress == nil then progress = require("lrun.sys").isatty(2) end
  o.progress = progress and 1 or 0
  local codec = opts.codec or "pex2"
  if codec == "pex1" then o.codec = C.LRUN_PACK_CODEC_PEX1
  elseif codec == "pex2" then o.codec = C.LRUN_PACK_CODEC_PEX2
  else error(fn .. ": opts.codec must be \"pex1\" or \"pex2\", not " .. tostring(codec), 3) end
  return o
end

--- Packs the GGUF file (or HF directory) at input into output.
-- @tparam string input a GGUF file (bf16, f16, f32 or quantized tensors), or an HF directory
--   (written as its GGUF first; the tokenizer stays in the directory)
-- @tparam string output the packed file to write
-- @tparam[opt] table opts threads (default: every core), progress (bar on stderr), codec
--   ("pex2", the default: bf16 tensors of a multiple of 8 values PEX2, f16 and the rest PEX1,
--   docs/packed.md "The codec PEX2"; or "pex1": every bf16/f16 tensor PEX1). Both engines read both.
-- @treturn[1] table stats: in_bytes, out_bytes, plain_bytes, packed_bytes,
--   ratio (packed/plain of the bf16/f16 tensors), n_packed, n_pex2 (of them PEX2), n_raw, seconds, mb_per_s
-- @treturn[2] nil
-- @treturn[2] string error
function M.pack(input, output, opts)
  if type(input) ~= "string" or type(output) ~= "string" then error("lrun.pack(input, output[, opts]): paths must be strings", 2) end
  local o = pack_opts(opts, "lrun.pack")
  local s = ffi.new("lrun_pack_stats")
  local ok, err = lrun_ffi.check(C.lrun_pack(input, output, o, s))
  if not ok then return nil, err end
  local plain, packed = tonumber(s.plain_bytes), tonumber(s.packed_bytes)
  return {
    in_bytes = tonumber(s.in_bytes), out_bytes = tonumber(s.out_bytes),
    plain_bytes = plain, packed_bytes = packed, ratio = plain > 0 and packed / plain or 1,
    n_packed = tonumber(s.n_packed), n_pex2 = tonumber(s.n_pex2), n_raw = tonumber(s.n_raw), seconds = s.seconds,
    mb_per_s = s.seconds > 0 and tonumber(s.in_bytes) / 1e6 / s.seconds or 0,
  }
end

--- Writes the GGUF file a packed file came from, byte for byte.
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] string error
function M.unpack(input, output, opts)
  if type(input) ~= "string" or type(output) ~= "string" then error("lrun.unpack(input, output[, opts]): paths must be strings", 2) end
  return lrun_ffi.check(C.lrun_unpack(input, output, pack_opts(opts, "lrun.unpack")))
end

return setmetatable(M, { __call = function(_, ...) return M.pack(...) end })
