-- gen_model.lua PATH MIB: a random llama-shaped q8_0 model of about MIB
-- MiB (1024 wide, 2816 FFN, 4096 tokens; the block count sets the size),
-- for the disk tier's memory-limit test (tests/disk/cgroup_test.sh).
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local path, mib = assert(arg[1], "usage: gen_model.lua PATH MIB"), tonumber(arg[2] or "600")
local block = (4 * 1024 * 1024 + 3 * 1024 * 2816) * 34 / 32 -- q8_0: 34 bytes per 32 weights
local s = ffi.new("lrun_model_gen_spec")
s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 1024, 8, 8, 2816
s.n_vocab, s.n_ctx = 4096, 256
s.n_layer = math.max(1, math.floor((mib * 2 ^ 20 - 2 * 4096 * 1024 * 2) / block + 0.5))
s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_F16, 0
s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 13, 0
assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
print(string.format("%s: %d blocks", path, tonumber(s.n_layer)))
