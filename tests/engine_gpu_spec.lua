-- engine_gpu_spec: the CUDA engine through the Lua API — lrun.load(path,
-- {device = "cuda:0"}) generates the same greedy tokens as the CPU on a
-- random-weight f32 model (dynamic and static caches: the static one replays
-- CUDA graphs); on the default model, exactly with numerics = "exact" and as
-- far as the two agree with the fast default (docs/gpu.md: the CPU quantizes
-- activations like llama.cpp, the fast GPU path does not). Without a GPU, asking for cuda fails with a clear device error.
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; `make test` runs it too.
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

local has_gpu = C.lrun_cuda_device_count() > 0
local model_path = os.getenv("LRUN_MODEL")

-- A random-weight llama (f32 weights, so both engines compute in f32).
local function gen_model(path)
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 4, 256, 8, 4, 512
  s.n_vocab, s.n_ctx = 1000, 512
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32, 1
  s.rope_freq_base, s.rms_eps, s.seed = 10000, 1e-5, 4242
  local st = C.lrun_model_generate(path, s)
  assert(st == C.LRUN_OK, lf.last_error())
end

local function greedy(path, device, ids, n, cache, numerics)
  local m = assert(lrun.load(path, { device = device, progress = false, n_ctx = 256,
                                     cache_implementation = cache, numerics = numerics }))
  local _, out = m:generate(ids, { max_new_tokens = n, do_sample = false, eos_token_id = {} })
  m:free()
  assert(out, "generate on " .. device .. " failed")
  return out
end

local function common_prefix(a, b)
  local n = 0
  while a[n + 1] ~= nil and a[n + 1] == b[n + 1] do n = n + 1 end
  return n
end

describe("cuda device without a GPU", function()
  if has_gpu then
    pending("a GPU is visible")
    return
  end
  it("lrun.load with device cuda fails with a device error that names cuda", function()
    local path = os.tmpname()
    gen_model(path)
    local m, err = lrun.load(path, { device = "cuda", progress = false })
    os.remove(path)
    assert.is_nil(m)
    assert.are.equal("device", err.kind)
    assert.truthy(err.message:find("cuda"))
  end)
end)

describe("CUDA engine", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  local path
  setup(function()
    path = os.tmpname()
    gen_model(path)
  end)
  teardown(function() if path then os.remove(path) end end)

  local prompt = { 3, 141, 59, 265, 358, 979, 323, 846, 264, 338, 327, 950, 288, 419, 716, 939 }

  it("generates the CPU's greedy tokens on a random f32 model (dynamic cache)", function()
    local cpu = greedy(path, "cpu", prompt, 24)
    local gpu = greedy(path, "cuda:0", prompt, 24)
    assert.are.same(cpu, gpu)
  end)

  it("and with a static cache, decode steps replayed from CUDA graphs", function()
    local cpu = greedy(path, "cpu", prompt, 24, "static")
    local gpu = greedy(path, "cuda:0", prompt, 24, "static")
    assert.are.same(cpu, gpu)
  end)

  it("LRUN_CUDA_PROFILE=1 prints where each chunk class's GPU time went, and changes no token", function()
    local shell = require("tests.shell")
    local script, err = os.tmpname(), os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(string.format([[
local lrun = require("lrun")
local m = assert(lrun.load(%q, { device = "cuda:0", progress = false, n_ctx = 256, cache_implementation = "static" }))
local _, out = m:generate({ %s }, { max_new_tokens = 12, do_sample = false, eos_token_id = {} })
m:free()
io.write(table.concat(out, " "), "\n")
]], path, table.concat(prompt, ", ")))
    f:close()
    local function run(env)
      local p = assert(io.popen(env .. " " .. shell.quote(shell.launcher) .. " " .. shell.quote(script) .. " 2>"
        .. shell.quote(err)))
      local out = p:read("*a")
      p:close()
      local e = assert(io.open(err)):read("*a")
      return out, e
    end
    local plain = run("LRUN_CUDA_PROFILE=0")
    local out, table_text = run("LRUN_CUDA_PROFILE=1")
    os.remove(script); os.remove(err)
    assert.are.equal(plain, out)
    assert.truthy(#out > 0)
    -- one prefill chunk (16 tokens) and the decode steps, each with the ops of a llama block
    assert.truthy(table_text:find("lrun profile %(cuda:0, prefill chunks: 1%)"), table_text)
    assert.truthy(table_text:find("lrun profile %(cuda:0, decode chunks: 1[12]%)"), table_text)
    for _, op in ipairs({ "norm", "matmul", "rope%+kv store", "attention", "matmul%+add", "matmul swiglu",
                          "norm%+lm head", "embedding" }) do
      assert.truthy(table_text:find("\n  " .. op .. " +%d+ +[%d.]+"), op .. " in\n" .. table_text)
    end
    local total = tonumber(table_text:match("\n  total +([%d.]+)"))
    assert.truthy(total and total > 0, table_text)
  end)

  it("reports an engine that does not fit as an oom error with the bytes", function()
    local m = assert(lrun.load(path, { device = "cuda:0", gpu_budget = "2M", progress = false }))
    local e, err = m:engine()
    m:free()
    assert.is_nil(e)
    assert.are.equal("oom", err.kind)
    assert.truthy(err.requested > 2 * 1024 * 1024)
    assert.truthy(err.message:find("cuda:0"))
  end)
end)

describe("CUDA engine on the default model", function()
  if not has_gpu or not model_path then
    pending(not has_gpu and "no GPU visible" or "LRUN_MODEL is not set")
    return
  end
  it("with numerics = \"exact\", continues exactly as the CPU for 32 greedy tokens", function()
    local m = assert(lrun.load(model_path, { progress = false }))
    local ids = m:tokenize("The capital of France is")
    m:free()
    local cpu = greedy(model_path, "cpu", ids, 32)
    local gpu = greedy(model_path, "cuda:0", ids, 32, "static", "exact")
    assert.are.same(cpu, gpu)
  end)

  it("the default (fast) numerics start like the CPU's greedy continuation (prints how far they agree)", function()
    local m = assert(lrun.load(model_path, { progress = false }))
    local ids = m:tokenize("The capital of France is")
    m:free()
    local cpu = greedy(model_path, "cpu", ids, 32)
    local gpu = greedy(model_path, "cuda:0", ids, 32, "static")
    local n = common_prefix(cpu, gpu)
    print(string.format("# default model, fast numerics: CUDA and CPU greedy agree on %d of 32 tokens", n))
    assert.truthy(n >= 1)
  end)
end)
