-- model_hf_spec: Hugging Face directories through lrun.load
-- (runtime/model/model_hf.c, lua/lrun/model.lua): the generator's GGUF and
-- HF directory of the same weights give the same greedy tokens and logits;
-- without tokenizer.json support the model says so when asked for text;
-- generation_config.json supplies generate()'s defaults; the launcher's -m
-- takes a directory; the directory's tokenizer.json, read by HF `tokenizers`
-- (PyPI; pending without it), gives the GGUF tokenizer's ids. Mixtures of
-- experts (qwen3_moe, mixtral; runtime/model/model_hf_moe.c): the
-- directory examples/genmodel.lua --hf writes gives the GGUF's logits (bit
-- for bit for qwen3moe) and greedy tokens, resident and with its experts on
-- the host (computed there, or streamed).
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

local tmp = {}
local function spec(dtype)
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 2, 64, 4, 2, 128
  s.n_vocab, s.n_ctx = 320, 128
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = dtype, dtype, 1
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 7, 1
  return s
end

local function gen(dtype, shards)
  local base = os.tmpname()
  tmp[#tmp + 1] = base
  local s = spec(dtype)
  assert(C.lrun_model_generate(base .. ".gguf", s) == C.LRUN_OK, lf.last_error())
  os.remove(base) -- the directory takes the name
  assert(C.lrun_model_generate_hf(base, s, shards or 1) == C.LRUN_OK, lf.last_error())
  return base .. ".gguf", base
end

local function write(path, text)
  local f = assert(io.open(path, "w")); f:write(text); f:close()
end

local PROMPT = { 256, 72, 101, 108, 108, 111 }

describe("HF directories", function()
  teardown(function()
    for _, p in ipairs(tmp) do os.execute("rm -rf '" .. p .. "' '" .. p .. ".gguf'") end
  end)

  for _, case in ipairs({ { "f32", C.LRUN_DTYPE_F32, 1 }, { "bf16, 2 shards", C.LRUN_DTYPE_BF16, 2 } }) do
    it("give the GGUF's greedy tokens and logits (" .. case[1] .. ")", function()
      local gguf, dir = gen(case[2], case[3])
      local a = assert(lrun.load(gguf, { threads = 1 }))
      local b = assert(lrun.load(dir, { threads = 1 }))
      assert.are.equal("half", b:info().rope_style)
      assert.are.equal("adjacent", a:info().rope_style)
      local _, ia = assert(a:generate(PROMPT, { max_new_tokens = 8 }))
      local _, ib = assert(b:generate(PROMPT, { max_new_tokens = 8 }))
      assert.are.same(ia, ib)
      local la, lb = assert(a:logits(PROMPT)), assert(b:logits(PROMPT))
      local worst = 0
      for i = 1, #la do worst = math.max(worst, math.abs(la[i] - lb[i])) end
      assert.is_true(worst < 1e-4, "max |diff| " .. worst)
    end)
  end

  it("read the directory's tokenizer.json: the GGUF tokenizer's ids and text", function()
    local gguf, dir = gen(C.LRUN_DTYPE_F32)
    local a = assert(lrun.load(gguf, { threads = 1 }))
    local b = assert(lrun.load(dir, { threads = 1 }))
    for _, text in ipairs({ "hello world", " leading space", "digits 12345 and\nnewlines", "ünïcödé ✓" }) do
      local ia, ib = a:tokenize(text), b:tokenize(text)
      assert.are.same(ia, ib, text)
      assert.are.equal(a:detokenize(ia), b:detokenize(ib))
    end
  end)

  it("without a tokenizer, say that text needs tokenizer.json, and still generate from ids", function()
    local _, dir = gen(C.LRUN_DTYPE_F32)
    os.remove(dir .. "/tokenizer.json")
    local m = assert(lrun.load(dir, { threads = 1 }))
    local ok, err = pcall(m.tokenize, m, "hello")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("tokenizer.json", 1, true))
    assert.truthy(tostring(err):find(dir, 1, true))
    local _, ids = assert(m:generate(PROMPT, { max_new_tokens = 3 }))
    assert.are.equal(3, #ids)
    assert.are.same({ 256 }, m.tokenizer:eog_ids()) -- config.json's eos_token_id
  end)

  it("take generate() defaults from generation_config.json", function()
    local _, dir = gen(C.LRUN_DTYPE_F32)
    write(dir .. "/generation_config.json", [[{"do_sample": true, "temperature": 0.6, "top_p": 0.9,
      "top_k": 20, "max_new_tokens": 5, "repetition_penalty": 1.1, "eos_token_id": [300, 301]}]])
    local m = assert(lrun.load(dir, { threads = 1 }))
    local g = m.generation_config
    assert.are.same({ 300, 301 }, g.eos_token_id)
    assert.are.equal(0.6, g.temperature)
    assert.are.equal(0.9, g.top_p)
    assert.are.equal(20, g.top_k)
    assert.is_true(g.do_sample)
    local opts = require("lrun.generate").check_options({ top_k = 3 }, 1, g)
    assert.are.equal(3, opts.top_k)          -- the caller's option wins
    assert.are.equal(0.6, opts.temperature)  -- then the model's
    assert.are.equal(5, opts.max_new_tokens)
    assert.are.equal(1.0, opts.length_penalty) -- then HF's defaults
    local _, ids = assert(m:generate(PROMPT, { seed = 1 }))
    assert.is_true(#ids <= 5)
  end)

  it("carry a tokenizer.json that HF tokenizers reads as the GGUF's vocabulary", function()
    local have = os.execute("python3 -c 'import tokenizers' >/dev/null 2>&1")
    if not (have == true or have == 0) then
      pending("python3 with the tokenizers package is not available")
      return
    end
    local gguf, dir = gen(C.LRUN_DTYPE_F32)
    local json = require("dkjson")
    local texts = { "Hello world", " abc xyz<|im_end|>", "h\195\169llo\n\n  a", "the cat sat on the mat" }
    local base = os.tmpname()
    tmp[#tmp + 1] = base
    write(base, json.encode(texts))
    write(base .. ".py", "import json, sys\nfrom tokenizers import Tokenizer\n"
      .. "t = Tokenizer.from_file(sys.argv[1])\n"
      .. "print(json.dumps([t.encode(s).ids for s in json.load(open(sys.argv[2]))]))\n")
    local p = io.popen("python3 '" .. base .. ".py' '" .. dir .. "/tokenizer.json' '" .. base .. "'")
    local out = p:read("*a")
    p:close()
    os.remove(base .. ".py")
    local want = json.decode(out)
    assert.is_table(want, out)
    local m = assert(lrun.load(gguf, { threads = 1 }))
    for i, t in ipairs(texts) do assert.are.same(want[i], m:tokenize(t, { parse_special = true }), t) end
  end)

  it("load from a .safetensors file beside its config.json, and from the launcher's -m", function()
    local _, dir = gen(C.LRUN_DTYPE_F32)
    local m = assert(lrun.load(dir .. "/model.safetensors", { threads = 1 }))
    assert.are.equal("llama", m:info().arch)
    assert.are.equal(64, m:metadata("llama.embedding_length"))
    local build = require("lrun.config").build or "build"
    -- examples/genmodel.lua --hf writes a directory; examples/generate.lua -m loads it
    local out = dir .. "-cli"
    tmp[#tmp + 1] = out
    local p = io.popen(build .. "/lrun examples/genmodel.lua -q --hf --shards 2 --preset tiny --dtype f16 -o '"
      .. out .. "' 2>&1 && rm '" .. out .. "/tokenizer.json' && " .. build .. "/lrun examples/generate.lua -m '"
      .. out .. "' -p hi 2>&1")
    local text = p:read("*a")
    p:close()
    assert.truthy(text:find("wrote " .. out, 1, true), text)
    assert.truthy(text:find("tokenizer.json", 1, true), text) -- loaded, then asked for text
  end)
end)

describe("HF mixtures of experts", function()
  local build = require("lrun.config").build or "build"
  local made = {}
  teardown(function()
    for _, p in ipairs(made) do os.execute("rm -rf '" .. p .. "' '" .. p .. ".gguf'") end
  end)

  -- genmodel's GGUF and HF directory (2 shards, a skewed router) of the same weights
  local function genmoe(arch, dtype)
    local base = os.tmpname()
    os.remove(base)
    made[#made + 1] = base
    local args = " -q --preset tiny-moe --arch " .. arch .. " --dtype " .. dtype .. " --router-skew 2 --seed 5"
    local p = io.popen(build .. "/lrun examples/genmodel.lua" .. args .. " -o '" .. base .. ".gguf' 2>&1 && "
      .. build .. "/lrun examples/genmodel.lua" .. args .. " --hf --shards 2 -o '" .. base .. "' 2>&1")
    local text = p:read("*a")
    p:close()
    assert.truthy(text:find("wrote " .. base, 1, true), text)
    return base .. ".gguf", base
  end

  for _, case in ipairs({ { "qwen3moe", "bf16", 0, "Qwen3MoeForCausalLM" },
                          { "llama", "f32", 1e-5, "MixtralForCausalLM" } }) do
    it(case[4] .. ": the GGUF's logits and greedy tokens, resident and with experts on the host", function()
      local gguf, dir = genmoe(case[1], case[2])
      local f = assert(io.open(dir .. "/config.json"))
      assert.truthy(f:read("*a"):find(case[4], 1, true))
      f:close()
      local a = assert(lrun.load(gguf, { threads = 1 }))
      local want = assert(a:logits(PROMPT))
      local _, ia = assert(a:generate(PROMPT, { max_new_tokens = 6, do_sample = false }))
      for _, opts in ipairs({ {}, { policy = "experts_on_host" }, { overrides = { "exps=host" } } }) do
        opts.threads = 1
        local b = assert(lrun.load(dir, opts))
        assert.are.equal(a:info().n_expert, b:info().n_expert)
        assert.are.equal(a:info().n_expert_used, b:info().n_expert_used)
        local got = assert(b:logits(PROMPT))
        local worst = 0
        for i = 1, #want do worst = math.max(worst, math.abs(want[i] - got[i])) end
        assert.is_true(worst <= case[3], "max |diff| " .. worst)
        local _, ib = assert(b:generate(PROMPT, { max_new_tokens = 6, do_sample = false }))
        assert.are.same(ia, ib)
        b:free()
      end
      a:free()
    end)
  end
end)
