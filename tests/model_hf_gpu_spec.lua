-- model_hf_gpu_spec: Hugging Face directories on the CUDA engine: the
-- generator's HF directory (bf16, 3 shards; f32) gives the same greedy
-- tokens on cuda:0 as its GGUF twin on cuda:0 and as itself on the CPU,
-- resident and with weights staged from the mapped shards (cpu_offload_gb).
-- gemma2 and gemma3 directories (transformers' f32 GELU, the (1 + w) norms,
-- query_pre_attn_scalar) give logits within 1e-2 of the CPU's on cuda:0
-- (arch_gpu_spec's f32 tolerance), staged runs the resident run's tokens.
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; pending without a GPU.
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

local has_gpu = C.lrun_cuda_device_count() > 0
local tmp = {}

package.path = "./?.lua;" .. package.path
local rel_diff = require("tests.compare").rel_diff

local function gen(dtype, shards, arch)
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 4, 256, 8, 4, 512
  s.n_vocab, s.n_ctx = 1000, 512
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = dtype, dtype, 1
  s.rope_freq_base, s.rms_eps, s.seed = 10000, 1e-5, 4243
  if arch then s.arch, s.head_dim, s.sliding_window, s.n_layer = arch, 64, 8, 7 end -- gemma3: block 5 global
  local base = os.tmpname()
  os.remove(base)
  tmp[#tmp + 1] = base
  assert(C.lrun_model_generate(base .. ".gguf", s) == C.LRUN_OK, lf.last_error())
  assert(C.lrun_model_generate_hf(base, s, shards) == C.LRUN_OK, lf.last_error())
  return base .. ".gguf", base
end

local function greedy(path, opts)
  opts.progress, opts.n_ctx = false, 256
  local m = assert(lrun.load(path, opts))
  local _, out = m:generate({ 1, 17, 300, 42, 999, 5 }, { max_new_tokens = 16, eos_token_id = {} })
  m:free()
  return assert(out)
end

describe("HF directories on CUDA", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  teardown(function()
    for _, p in ipairs(tmp) do os.execute("rm -rf '" .. p .. "' '" .. p .. ".gguf'") end
  end)
  for _, case in ipairs({ { "f32", C.LRUN_DTYPE_F32, 1 }, { "bf16, 3 shards", C.LRUN_DTYPE_BF16, 3 } }) do
    it("give the GGUF's tokens and the CPU's (" .. case[1] .. ")", function()
      local gguf, dir = gen(case[2], case[3])
      local want = greedy(gguf, { device = "cuda:0" })
      assert.are.same(want, greedy(dir, { device = "cuda:0" }))
      assert.are.same(greedy(dir, { device = "cpu" }), greedy(gguf, { device = "cpu" }))
      assert.are.same(want, greedy(dir, { device = "cuda:0", cpu_offload_gb = 0.002 }))
    end)
  end
  for _, arch in ipairs({ "gemma2", "gemma3" }) do
    it(arch .. ": the CPU's logits within 1e-2, staged as resident", function()
      local _, dir = gen(C.LRUN_DTYPE_F32, 2, arch)
      local prompt = { 1, 17, 300, 42, 999, 5, 7, 8, 9, 10, 11, 12 } -- past the window (8)
      local function logits(opts)
        opts.progress, opts.n_ctx = false, 256
        local m = assert(lrun.load(dir, opts))
        local l = assert(m:logits(prompt))
        m:free()
        return l
      end
      local d = rel_diff(logits({ device = "cpu" }), logits({ device = "cuda:0" }))
      print(string.format("# %s HF: rel diff CUDA to CPU %.2e", arch, d))
      assert.is_true(d <= 1e-2, "rel diff " .. d)
      assert.are.same(greedy(dir, { device = "cuda:0" }), greedy(dir, { device = "cuda:0", cpu_offload_gb = 0.002 }))
    end)
  end
end)
