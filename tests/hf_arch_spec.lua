-- hf_arch_spec: the architectures whose HF directories need more than the
-- name tables (runtime/model/model_hf_arch.c), on the CPU: the generator's
-- GGUF and HF directory of the same weights (lrun_model_generate_hf) give
-- the same greedy tokens and logits within a stated tolerance.
--
--   * gemma2, gemma3: HF keeps norm weights as w of x·(1 + w) (the loader
--     adds 1, as llama.cpp's converter), query_pre_attn_scalar, the soft-caps
--     and the layer pattern in config.json. An HF gemma computes GELU in f32
--     as transformers does, a GGUF through llama.cpp's f16 table (measured
--     difference 9e-4), so the logits agree within 5e-3 (measured 9e-4), not bit for bit;
--   * phi3 LongRoPE from config.json's rope_scaling (type longrope, long and
--     short factors, original_max_position_embeddings): both branches (the
--     engine's context past the original one, and within it), bit for bit.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

local tmp = {}
local PROMPT = { 256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10, 300 } -- past the window (4)

local function spec(o)
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = o.n_layer or 2, 64, 4, 2, 128
  s.n_vocab, s.n_ctx = 320, 256
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32, 1
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = o.rope_freq_base or 10000, 1e-6, o.seed or 11, 1
  s.arch, s.head_dim = o.arch, o.head_dim or 0
  s.sliding_window, s.rope_orig_ctx = o.sliding_window or 0, o.rope_orig_ctx or 0
  return s
end

local function gen(o)
  local base = os.tmpname()
  tmp[#tmp + 1] = base
  local s = spec(o)
  assert(C.lrun_model_generate(base .. ".gguf", s) == C.LRUN_OK, lf.last_error())
  os.remove(base) -- the directory takes the name
  assert(C.lrun_model_generate_hf(base, s, 1) == C.LRUN_OK, lf.last_error())
  return base .. ".gguf", base
end

local function max_diff(a, b)
  local worst = 0
  for i = 1, #a do worst = math.max(worst, math.abs(a[i] - b[i])) end
  return worst
end

local function read(path)
  local f = assert(io.open(path, "r"))
  local t = f:read("*a")
  f:close()
  return t
end

local function write(path, text)
  local f = assert(io.open(path, "w")); f:write(text); f:close()
end

local CASES = {
  { "gemma2", { arch = "gemma2", n_layer = 4, head_dim = 32, sliding_window = 4 }, 5e-3 },
  { "gemma3 (7 blocks: 5 local, 1 global, 1 local)",
    { arch = "gemma3", n_layer = 7, head_dim = 32, sliding_window = 4, rope_freq_base = 1000000 }, 5e-3 },
  { "phi3 LongRoPE, long factors (context 256 > 64)", { arch = "phi3", rope_orig_ctx = 64 }, 0 },
  { "phi3 LongRoPE, short factors (context 256 < 4096)", { arch = "phi3", rope_orig_ctx = 4096 }, 0 },
}

describe("HF directories of gemma2, gemma3 and phi3 LongRoPE", function()
  teardown(function()
    for _, p in ipairs(tmp) do os.execute("rm -rf '" .. p .. "' '" .. p .. ".gguf'") end
  end)

  for _, case in ipairs(CASES) do
    it("give the GGUF's greedy tokens and logits: " .. case[1], function()
      local gguf, dir = gen(case[2])
      local a = assert(lrun.load(gguf, { threads = 1 }))
      local b = assert(lrun.load(dir, { threads = 1 }))
      assert.are.equal(case[2].arch, b:info().arch)
      local _, ia = assert(a:generate(PROMPT, { max_new_tokens = 12, eos_token_id = false }))
      local _, ib = assert(b:generate(PROMPT, { max_new_tokens = 12, eos_token_id = false }))
      assert.are.same(ia, ib)
      local d = max_diff(assert(a:logits(PROMPT)), assert(b:logits(PROMPT)))
      print(string.format("# %s: max |logit diff| GGUF vs HF %.3g", case[1], d))
      assert.is_true(d <= case[3], "max |diff| " .. d)
      a:free()
      b:free()
    end)
  end

  it("gemma2: the generator's config.json names what transformers' Gemma2Config reads", function()
    local _, dir = gen({ arch = "gemma2", n_layer = 2, head_dim = 32, sliding_window = 4 })
    local cfg = read(dir .. "/config.json")
    assert.is_truthy(cfg:find('"query_pre_attn_scalar"', 1, true))
    assert.is_truthy(cfg:find('"final_logit_softcapping"', 1, true))
    assert.is_truthy(cfg:find('"Gemma2ForCausalLM"', 1, true))
    assert.is_truthy(cfg:find('"gelu_pytorch_tanh"', 1, true))
  end)

  it("gemma3: a layer pattern or local RoPE base the description lacks is refused, naming the key", function()
    local _, dir = gen({ arch = "gemma3", n_layer = 2, head_dim = 32, sliding_window = 4 })
    local cfg = read(dir .. "/config.json")
    write(dir .. "/config.json", (cfg:gsub('"rope_local_base_freq":%s*[%d%.e+]+', '"rope_local_base_freq": 20000')))
    local m, err = lrun.load(dir, { threads = 1 })
    assert.is_nil(m)
    assert.is_truthy(err.message:find("rope_local_base_freq", 1, true), err.message)
    write(dir .. "/config.json", (cfg:gsub('"full_attention"', '"sliding_attention"'):gsub(
      '"layer_types":%s*%[%s*"sliding_attention"', '"layer_types": ["full_attention"')))
    m, err = lrun.load(dir, { threads = 1 })
    assert.is_nil(m)
    assert.is_truthy(err.message:find("layer_types", 1, true), err.message)
  end)

  it("gemma2: a soft-cap of null is none, as transformers", function()
    local _, dir = gen({ arch = "gemma2", n_layer = 2, head_dim = 32, sliding_window = 4 })
    local capped = assert(lrun.load(dir, { threads = 1 }))
    local la = assert(capped:logits(PROMPT))
    capped:free()
    local cfg = read(dir .. "/config.json")
    write(dir .. "/config.json", (cfg:gsub('"final_logit_softcapping":%s*[%d%.e+]+', '"final_logit_softcapping": null')))
    local plain = assert(lrun.load(dir, { threads = 1 }))
    local lb = assert(plain:logits(PROMPT))
    plain:free()
    -- capped logits are cap·tanh(l/cap) of the plain ones
    local worst = 0
    for i = 1, #la do worst = math.max(worst, math.abs(la[i] - 30 * math.tanh(lb[i] / 30))) end
    assert.is_true(worst < 1e-4, "max |diff| " .. worst)
  end)

  it("phi3: a LongRoPE rope_scaling without its factors is refused, naming the key", function()
    local _, dir = gen({ arch = "phi3", rope_orig_ctx = 64 })
    local cfg = read(dir .. "/config.json")
    write(dir .. "/config.json", (cfg:gsub('"short_factor"', '"shortish_factor"')))
    local m, err = lrun.load(dir, { threads = 1 })
    assert.is_nil(m)
    assert.is_truthy(err.message:find("short_factor", 1, true), err.message)
  end)
end)
