--- gpu_bench.lua — prefill and decode tokens/s of the CUDA engine, against the
-- HBM limit and HF transformers (eager, bf16) on the same shape.
--
-- Usage: build/lrun tests/bench/gpu_bench.lua [--no-hf] [--out FILE] MODEL...
--   MODEL is a GGUF path, or 7b:bf16, 7b:q8_0, 7b:q4_0: a random-weight
--   Llama-2-7B shape (32 layers, width 4096, FFN 11008, 32 heads, vocab 32000,
--   untied head, every matrix in that dtype) written to $LRUN_BENCH_DIR
--   (default /tmp) by lrun_model_generate and removed afterwards.
--
-- Per model, on cuda:0, static KV cache of 1024 positions, batch 1:
--   prefill_tps  512 prompt tokens in one step (cuBLAS), best of 3
--   decode_tps   128 greedy steps after a 128-token prompt (one step = the
--                engine step with its logits copied to the host, plus the host
--                argmax), best of 2; with CUDA graphs (the default for a static
--                cache) and without (LRUN_CUDA_GRAPHS=0), and with graphs but
--                without programmatic dependent launch (LRUN_CUDA_PDL=0)
--   hbm_tps      measured read bandwidth / bytes of weights one decode step
--                reads (all tensors but the embedding table, which is read
--                only when it doubles as the LM head)
-- The bandwidth, and HF transformers' figures for the 7B shape, come from
-- tests/bench/hf_bench.py (torch), run first. Prints a markdown table; --out
-- also writes one JSON line per model.
package.path = "./?.lua;" .. package.path
local ffi = require("ffi")
local lrun = require("lrun")
local lf = require("lrun.ffi")
local sys = require("lrun.sys")
local C = lf.C

pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")

local N_CTX, N_PREFILL, N_DPROMPT, N_GEN = 1024, 512, 128, 128

-- ---------------------------------------------------------------- arguments

local opts = { models = {} }
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--no-hf" then opts.no_hf = true
  elseif a == "--out" then i = i + 1; opts.out = arg[i]
  elseif a:sub(1, 1) == "-" then io.stderr:write("gpu_bench: unknown option " .. a .. "\n"); os.exit(2)
  else opts.models[#opts.models + 1] = a end
  i = i + 1
end
if #opts.models == 0 then
  io.stderr:write("usage: lrun tests/bench/gpu_bench.lua [--no-hf] [--out FILE] MODEL... (a path, or 7b:bf16, "
    .. "7b:q8_0, 7b:q4_0)\n")
  os.exit(2)
end
if C.lrun_cuda_device_count() == 0 then
  io.stderr:write("gpu_bench: no CUDA device visible\n")
  os.exit(1)
end

-- ---------------------------------------------------------------- references

local root = lf.root or "."
local cmd = "python3 " .. root .. "/tests/bench/hf_bench.py" .. (opts.no_hf and " --no-hf" or "")
local p = io.popen(cmd)
local ref_line = p and p:read("*a") or ""
if p then p:close() end
local function field(text, name) return tonumber(text:match('"' .. name .. '": ([%d.eE+-]+)')) end
local read_gbps = field(ref_line, "read_gbps")
local copy_gbps = field(ref_line, "copy_gbps")
local hf_text = ref_line:match('"hf": (%b{})') or ""
local hf_decode, hf_prefill = field(hf_text, "decode_tps"), field(hf_text, "prefill_tps")
local gpu_name = ref_line:match('"device": "([^"]*)"') or "?"
if not read_gbps then io.stderr:write("gpu_bench: hf_bench.py gave no bandwidth (" .. cmd .. ")\n") end

-- ---------------------------------------------------------------- models

-- Bytes one decode step reads from the weights.
local function decode_bytes(h)
  local total, embd, head = 0, 0, false
  for t = 0, tonumber(C.lrun_model_tensor_count(h)) - 1 do
    local tensor = C.lrun_model_tensor(h, t)
    local b = tonumber(C.lrun_tensor_bytes(tensor))
    total = total + b
    local role = C.lrun_tensor_role(tensor)
    if role == C.LRUN_ROLE_EMBEDDING then embd = b end
    if role == C.LRUN_ROLE_LM_HEAD then head = true end
  end
  return head and total - embd or total, total
end

local function engine(h, graphs, pdl)
  C.setenv("LRUN_CUDA_GRAPHS", graphs and "1" or "0", 1)
  C.setenv("LRUN_CUDA_PDL", pdl == false and "0" or "1", 1)
  local eo = ffi.new("lrun_engine_opts")
  eo.n_seq_max, eo.n_ctx_max, eo.n_batch_max, eo.cache_kind = 1, N_CTX, 512, C.LRUN_CACHE_KIND_STATIC
  local out = ffi.new("lrun_engine *[1]")
  if C.lrun_engine_init(out, h, eo) ~= C.LRUN_OK then error("engine: " .. lf.last_error(), 0) end
  return ffi.gc(out[0], C.lrun_engine_free)
end

local function bench_model(spec)
  local path, generated = spec, false
  local gen_dtype = spec:match("^7b:(.+)$")
  if gen_dtype then path, generated = require("tests.bench.llama7b").generate(gen_dtype, "gpu_bench"), true end
  local t0 = sys.now()
  local m = assert(lrun.load(path, { device = "cuda:0", progress = false }))
  local h = m.handle
  local n_vocab = m.n_vocab
  local ids = ffi.new("int32_t[?]", N_PREFILL)
  local seqs = ffi.new("int32_t[?]", N_PREFILL)
  local x = 12345
  for k = 0, N_PREFILL - 1 do
    x = (x * 1103515245 + 12345) % 2147483648
    ids[k] = 3 + x % (n_vocab - 3)
  end
  local logits = ffi.new("float[?]", n_vocab)
  local n_out = ffi.new("int64_t[1]")
  local function step(e, n, tokens)
    if C.lrun_engine_step(e, n, tokens, seqs, nil, logits, 1, n_out) ~= C.LRUN_OK then
      error("step: " .. lf.last_error(), 0)
    end
  end

  local eg = engine(h, true)
  local load_s = sys.now() - t0
  local ee = engine(h, false)
  local enp = engine(h, true, false)

  -- prefill
  step(eg, 16, ids)
  local best = math.huge
  for _ = 1, 3 do
    C.lrun_engine_seq_truncate(eg, 0, 0)
    local a = sys.now()
    step(eg, N_PREFILL, ids)
    best = math.min(best, sys.now() - a)
  end
  local prefill_tps = N_PREFILL / best

  -- decode
  local tok = ffi.new("int32_t[1]")
  local function decode(e)
    local b = math.huge
    for _ = 1, 2 do
      C.lrun_engine_seq_truncate(e, 0, 0)
      step(e, N_DPROMPT, ids)
      local a = sys.now()
      for _ = 1, N_GEN do
        tok[0] = C.lrun_logits_argmax(logits, n_vocab)
        step(e, 1, tok)
      end
      b = math.min(b, sys.now() - a)
    end
    return N_GEN / b
  end
  local decode_tps = decode(eg)
  local decode_eager_tps = decode(ee)
  local decode_nopdl_tps = decode(enp)

  local bytes, total = decode_bytes(h)
  local info = C.lrun_model_get_info(h)
  local dtype = gen_dtype or ffi.string(C.lrun_dtype_name(C.lrun_tensor_dtype(C.lrun_model_find_tensor(h,
    "blk.0.ffn_down.weight"))))
  for _, e in ipairs({ eg, ee, enp }) do
    ffi.gc(e, nil)
    C.lrun_engine_free(e)
  end
  m:free()
  if generated then os.remove(path) end
  local hbm = read_gbps and read_gbps * 1e9 / bytes or nil
  return {
    model = gen_dtype and "llama2-7b-shape" or path:match("[^/]*$"), dtype = dtype,
    n_layer = tonumber(info.n_layer), n_embd = tonumber(info.n_embd), weight_bytes = total,
    decode_bytes = bytes, load_s = load_s, prefill_tps = prefill_tps, decode_tps = decode_tps,
    decode_eager_tps = decode_eager_tps, decode_nopdl_tps = decode_nopdl_tps, hbm_tps = hbm,
  }
end

-- ---------------------------------------------------------------- report

local rows = {}
for _, spec in ipairs(opts.models) do
  local ok, r = pcall(bench_model, spec)
  if ok then rows[#rows + 1] = r
  else io.stderr:write("gpu_bench: " .. spec .. ": " .. tostring(r) .. "\n") end
end

local function f1(v) return v and string.format("%.1f", v) or "–" end
print(string.format("GPU: %s; read bandwidth %s GB/s (copy %s GB/s); batch 1, static cache of %d positions",
  gpu_name, f1(read_gbps), f1(copy_gbps), N_CTX))
print("")
print("| model | weights | GB read / token | prefill tok/s (512) | decode tok/s | decode, no graphs | "
  .. "decode, no PDL | HBM limit tok/s | % of limit |")
print("|---|---|---|---|---|---|---|---|---|")
for _, r in ipairs(rows) do
  print(string.format("| %s | %s | %.3f | %.0f | %.1f | %.1f | %.1f | %s | %s |", r.model, r.dtype,
    r.decode_bytes / 1e9, r.prefill_tps, r.decode_tps, r.decode_eager_tps, r.decode_nopdl_tps, f1(r.hbm_tps),
    r.hbm_tps and string.format("%.0f%%", 100 * r.decode_tps / r.hbm_tps) or "–"))
end
if hf_decode then
  print("")
  print(string.format("HF transformers %s, eager bf16, Llama-2-7B shape, random weights: prefill %.0f tok/s, "
    .. "decode %.1f tok/s", hf_text:match('"transformers": "([^"]*)"') or "?", hf_prefill or 0, hf_decode))
  for _, r in ipairs(rows) do
    if r.model == "llama2-7b-shape" then
      print(string.format("lrun %s / HF eager bf16: decode %.1fx, prefill %.1fx", r.dtype, r.decode_tps / hf_decode,
        r.prefill_tps / (hf_prefill or math.huge)))
    end
  end
end

if opts.out then
  require("tests.bench.json_lines").write(opts.out, rows, ref_line ~= "" and { (ref_line:gsub("\n$", "")) } or nil)
end
