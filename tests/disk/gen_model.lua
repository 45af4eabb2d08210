-- gen_model.lua PATH MIB [moe]: a random q8_0 model of about MIB MiB (the
-- block count sets the size), for the disk tier's memory-limit test
-- (tests/disk/cgroup_test.sh): llama-shaped (1024 wide, 2816 FFN, 4096
-- tokens), or with "moe" a qwen3moe of 64 experts of 512, top-8 (1024 wide,
-- 4096 tokens), whose disk-tier experts are read per chosen expert.
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local path, mib = assert(arg[1], "usage: gen_model.lua PATH MIB [moe]"), tonumber(arg[2] or "600")
local moe = arg[3] == "moe"
local q8 = 34 / 32 -- q8_0: 34 bytes per 32 weights
local s = ffi.new("lrun_model_gen_spec")
s.n_embd, s.n_head = 1024, 8
s.n_vocab, s.n_ctx = 4096, 256
local block
if moe then
  s.arch, s.n_head_kv, s.n_ff, s.n_expert, s.n_expert_used = "qwen3moe", 4, 512, 64, 8
  block = (2 * 1024 * 1024 + 2 * 1024 * 512 + 3 * 1024 * 512 * 64) * q8 + 1024 * 64 * 4 -- the router is f32
else
  s.n_head_kv, s.n_ff = 8, 2816
  block = (4 * 1024 * 1024 + 3 * 1024 * 2816) * q8
end
s.n_layer = math.max(1, math.floor((mib * 2 ^ 20 - 2 * 4096 * 1024 * 2) / block + 0.5))
s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_F16, 0
s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 13, 0
assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
print(string.format("%s: %d blocks%s", path, tonumber(s.n_layer), moe and " of 64 experts (top-8)" or ""))
