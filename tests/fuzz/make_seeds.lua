--- tests/fuzz/make_seeds.lua — writes the seed corpora of the fuzz targets
-- (tests/fuzz/corpus/<target>/) from lrun's own writer and generator, so the
-- committed seeds can be made again: build/lrun tests/fuzz/make_seeds.lua
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C

local dir = "tests/fuzz/corpus/"

local function write(path, bytes)
  os.execute("mkdir -p " .. path:match("^(.*)/"))
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function ok(st) assert(st == C.LRUN_OK, lf.last_error()) end

-- fuzz_gguf: a generated model with a tokenizer (tiny widths, 300 tokens),
-- and a file of every value kind with a few tensors and no tokenizer.
local tmp = os.tmpname()
local s = ffi.new("lrun_model_gen_spec")
s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 1, 8, 2, 1, 16
s.n_vocab, s.n_ctx = 300, 32
s.embd_dtype = C.LRUN_DTYPE_F32
s.weight_dtype = C.LRUN_DTYPE_F32
s.tied_embeddings, s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 1, 10000, 1e-5, 1, 1
ok(C.lrun_model_generate(tmp, s))
-- fuzz_model reads the same files through lrun_model_load
write(dir .. "fuzz_gguf/generated_model.gguf", read(tmp))
write(dir .. "fuzz_model/generated_model.gguf", read(tmp))

local w = ffi.new("lrun_gguf_writer *[1]")
ok(C.lrun_gguf_writer_open(w, tmp))
w = w[0]
ok(C.lrun_gguf_writer_set_str(w, "general.architecture", "llama"))
ok(C.lrun_gguf_writer_set_u32(w, "llama.block_count", 1))
ok(C.lrun_gguf_writer_set_i32(w, "a.i32", -5))
ok(C.lrun_gguf_writer_set_u64(w, "a.u64", 2 ^ 40))
ok(C.lrun_gguf_writer_set_f32(w, "a.f32", 0.5))
ok(C.lrun_gguf_writer_set_bool(w, "a.bool", 1))
local strs = ffi.new("const char *[3]", { "x", "", "\xc3\xa9" })
ok(C.lrun_gguf_writer_set_arr_str(w, "a.strs", strs, 3))
ok(C.lrun_gguf_writer_set_arr_f32(w, "a.f32s", ffi.new("float[2]", { 1, -1 }), 2))
ok(C.lrun_gguf_writer_set_arr_i32(w, "a.i32s", ffi.new("int32_t[2]", { 7, -7 }), 2))
ok(C.lrun_gguf_writer_add_tensor(w, "t.f32", C.LRUN_DTYPE_F32, 2, ffi.new("int64_t[2]", { 4, 2 })))
ok(C.lrun_gguf_writer_add_tensor(w, "t.f16", C.LRUN_DTYPE_F16, 1, ffi.new("int64_t[1]", { 8 })))
ok(C.lrun_gguf_writer_write_data(w, ffi.new("float[8]"), 32))
ok(C.lrun_gguf_writer_write_data(w, ffi.new("uint16_t[8]"), 16))
ok(C.lrun_gguf_writer_finish(w))
C.lrun_gguf_writer_free(w)
write(dir .. "fuzz_gguf/values.gguf", read(tmp))
write(dir .. "fuzz_model/values.gguf", read(tmp))
os.remove(tmp)

-- fuzz_tokenize: mode byte (even: encode, bits 1-2 add/parse special; odd:
-- decode int32 ids), then the text or ids
write(dir .. "fuzz_tokenize/plain", "\0Hello, world! It's 2026.\n\tTabs  and   spaces")
write(dir .. "fuzz_tokenize/specials", "\6<s>Hi</s><|im_end|>")
write(dir .. "fuzz_tokenize/unicode", "\0caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 \xff\xfe bad")
write(dir .. "fuzz_tokenize/ids", "\1" .. ffi.string(ffi.new("int32_t[6]", { 0, 1, 255, 258, 299, -1 }), 24))

-- fuzz_sampler: do_sample, T, top_k, top_p, min_p, penalty, n, n_history, history, logits
local function sampler_seed(name, f)
  local b = ffi.new("uint32_t[64]")
  local fl = ffi.cast("float *", b)
  b[0] = f.do_sample; fl[1] = f.t; b[2] = f.top_k; fl[3] = f.top_p; fl[4] = f.min_p; fl[5] = f.pen
  b[6] = f.n - 1; b[7] = 2; b[8] = 1; b[9] = 3
  for i = 0, f.n - 1 do fl[10 + i] = f.logits[i + 1] end
  write(dir .. "fuzz_sampler/" .. name, ffi.string(b, 4 * (10 + f.n + 1)))
end
sampler_seed("greedy", { do_sample = 0, t = 1, top_k = 0, top_p = 1, min_p = 0, pen = 1, n = 4, logits = { 1, 2, 3, 0 } })
sampler_seed("filters", { do_sample = 1, t = 0.7, top_k = 3, top_p = 0.9, min_p = 0.05, pen = 1.1, n = 6,
  logits = { 1, 2, 3, 0, -1, 2.5 } })
sampler_seed("subnormal_t", { do_sample = 1, t = 1e-45, top_k = 0, top_p = 1, min_p = 0.5, pen = 1, n = 4,
  logits = { 0.5, 3, 1, 3 } })

-- fuzz_cli: argv split at NUL bytes
write(dir .. "fuzz_cli/script", "--gpu-budget=4G\0-t\0" .. "8\0--policy\0tests/fuzz/make_seeds.lua\0x.lua\0arg")
write(dir .. "fuzz_cli/options", "-ot\0blk\\.0=host\0--prefetch\0" .. "2\0--cpu-offload-gb\0" .. "1.5\0-e\0print(1)\0-i")
write(dir .. "fuzz_cli/end", "--device\0cuda:0\0--smart-offload\0--\0-v")
-- fuzz_safetensors: mode byte (even: one .safetensors file; odd: an index
-- beside the target's two shards a.safetensors {x} and b.safetensors {y});
-- fuzz_hfdir: config.json, tokenizer.json, tokenizer_config.json joined by
-- NUL bytes, of an HF directory generated with fuzz_hfdir.c's spec
local hf = os.tmpname()
os.remove(hf)
local h = ffi.new("lrun_model_gen_spec")
h.n_layer, h.n_embd, h.n_head, h.n_head_kv, h.n_ff = 1, 8, 2, 1, 16
h.n_vocab, h.n_ctx = 300, 32
h.embd_dtype, h.weight_dtype = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32
h.tied_embeddings, h.rope_freq_base, h.rms_eps, h.seed, h.n_threads = 1, 10000, 1e-5, 1, 1
ok(C.lrun_model_generate_hf(hf, h, 1))
write(dir .. "fuzz_safetensors/generated.safetensors", "\0" .. read(hf .. "/model.safetensors"))
write(dir .. "fuzz_safetensors/index", "\1" .. '{"metadata":{"total_size":16},"weight_map":{"x":"a.safetensors","y":"b.safetensors"}}')
write(dir .. "fuzz_hfdir/generated", read(hf .. "/config.json") .. "\0" .. read(hf .. "/tokenizer.json") .. "\0" ..
  read(hf .. "/tokenizer_config.json"))
write(dir .. "fuzz_hfdir/no_tokenizer", read(hf .. "/config.json"))
os.execute("rm -rf " .. hf)

-- fuzz_jinja: the real-format chat templates of tests/chat_templates/
for _, name in ipairs({ "chatml", "llama3", "gemma3", "deepseek_r1", "features" }) do
  write(dir .. "fuzz_jinja/" .. name, read("tests/chat_templates/" .. name .. ".jinja"))
end

-- fuzz_packed: mode byte (even: a packed file; odd: one packed tensor);
-- a tiny model (bf16 matrices, f16 embedding) packed with PEX1 and with
-- PEX2, and the first packed tensor of each codec from the second file
local pg, pk1, pk2 = os.tmpname(), os.tmpname(), os.tmpname()
local p = ffi.new("lrun_model_gen_spec")
p.n_layer, p.n_embd, p.n_head, p.n_head_kv, p.n_ff, p.n_vocab, p.n_ctx = 1, 16, 2, 1, 32, 260, 16
p.weight_dtype, p.embd_dtype, p.tied_embeddings = C.LRUN_DTYPE_BF16, C.LRUN_DTYPE_F16, 1
p.rope_freq_base, p.rms_eps, p.seed, p.n_threads, p.trained_stats = 10000, 1e-5, 3, 1, 1
ok(C.lrun_model_generate(pg, p))
local po = ffi.new("lrun_pack_opts")
po.n_threads = 1
ok(C.lrun_pack(pg, pk1, po, nil))
po.codec = C.LRUN_PACK_CODEC_PEX2
ok(C.lrun_pack(pg, pk2, po, nil))
write(dir .. "fuzz_packed/pex1.lrpk", "\0" .. read(pk1))
local f2 = read(pk2)
write(dir .. "fuzz_packed/pex2.lrpk", "\0" .. f2)
local function u64(s, at) return tonumber(ffi.cast("const uint64_t *", ffi.cast("const char *", s) + at)[0]) end
local n_entries = u64(f2, 32)
local packed_at = 48 + 40 * n_entries + u64(f2, 16)
local seen = {}
for i = 0, n_entries - 1 do
  local e = 48 + 40 * i
  local codec = tonumber(ffi.cast("const uint32_t *", ffi.cast("const char *", f2) + e + 32)[0])
  if codec ~= 0 and not seen[codec] then
    seen[codec] = true
    local at, size = packed_at + u64(f2, e + 16), u64(f2, e + 24)
    write(dir .. "fuzz_packed/tensor_codec" .. codec, "\1" .. f2:sub(at + 1, at + size))
  end
end
os.remove(pg)
os.remove(pk1)
os.remove(pk2)

print("seeds written under " .. dir)
