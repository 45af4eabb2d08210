-- fallback_gpu_spec: the seed scenario of issue 5 on the GPU, with the
-- default model (LRUN_MODEL, SmolLM2-135M) on cuda:0: a 1000-token prompt,
-- 40 beams in 40 groups with diversity_penalty 1.0, 40 returned sequences of
-- 23 new tokens, under a device budget the dynamic cache does not fit:
--   - without a fallback it fails with the structured OOM error (phase
--     "cache") and the model stays usable with nothing held;
--   - with the chain {offload_kv, offload_weights} it succeeds through
--     offload_kv, and its output is the unconstrained run's, id for id (the
--     offloaded cache gives the dynamic one's logits bit for bit on the GPU,
--     tests/kv_cache_gpu_spec.lua).
-- The budget is taken between the two measured peaks (printed), so the test
-- follows the engine's real sizes rather than numbers written here.
-- Named *_gpu_spec.lua so that `make test-gpu` runs it.
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local with = require("tests.compare").with
local lf = require("lrun.ffi")
local C = lf.C
local errors = require("lrun.errors")
local log = require("lrun.log")

local path = os.getenv("LRUN_MODEL")
local has_gpu = C.lrun_cuda_device_count() > 0

local SEED_OPTS = { num_beams = 40, num_beam_groups = 40, diversity_penalty = 1.0, num_return_sequences = 40,
  max_new_tokens = 23 }

local function seed_prompt(m)
  local text = assert(io.open("tests/bench/prompt.txt")):read("*a")
  local ids = m:tokenize(text)
  while #ids < 1000 do
    for _, t in ipairs(m:tokenize(text)) do ids[#ids + 1] = t end
  end
  local p = {}
  for i = 1, 1000 do p[i] = ids[i] end
  return p
end


local function load(budget)
  return assert(lrun.load(path, { device = "cuda:0", progress = false, n_ctx = 1024, gpu_budget = budget }))
end

-- Peak device bytes of one seed run with this cache, on a fresh model.
local function peak_of(impl, prompt)
  local m = load()
  local _, ids = assert(m:generate(prompt, with(SEED_OPTS, { cache_implementation = impl })))
  local peak = tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle)))
  m:free()
  return peak, ids
end

describe("the seed scenario on cuda (SmolLM2, 1000-token prompt, 40 beams in 40 groups)", function()
  if not has_gpu or not path then
    pending(not has_gpu and "no CUDA device" or "LRUN_MODEL is not set")
    return
  end
  local prompt, free_ids, budget
  setup(function()
    local m = load()
    prompt = seed_prompt(m)
    m:free()
    local dyn_peak, ids = peak_of("dynamic", prompt)
    local off_peak = peak_of("offloaded", prompt)
    free_ids = ids
    budget = math.floor((dyn_peak + off_peak) / 2)
    print(string.format("# peaks: dynamic %.1f MB, offloaded %.1f MB; budget %.1f MB", dyn_peak / 1e6,
      off_peak / 1e6, budget / 1e6))
    assert(off_peak < dyn_peak, "the offloaded cache must need less device memory")
  end)

  it("runs unconstrained: 40 sequences of 23 tokens", function()
    assert.are.equal(40, #free_ids)
    for _, s in ipairs(free_ids) do assert.is_true(#s >= 1 and #s <= 23) end
  end)

  it("fails with a structured OOM error when no fallback is given, and the model stays usable", function()
    local m = load(budget)
    local dev = C.lrun_model_device(m.handle)
    local texts, err = m:generate(prompt, SEED_OPTS)
    assert.is_nil(texts)
    assert.is_true(errors.is_oom(err), tostring(err))
    assert.are.equal("cuda:0", err.device)
    assert.are.equal("cache", err.phase)
    assert.is_true(err.requested > err.free)
    assert.matches("out of memory", err.message)
    local used_after = tonumber(C.lrun_device_used(dev))
    local _, ids = assert(m:generate({ 1, 2, 3 }, { max_new_tokens = 4, eos_token_id = {} }))
    assert.are.equal(4, #ids)
    assert.are.equal(used_after, tonumber(C.lrun_device_used(dev)))
    m:free()
  end)

  it("succeeds with the chain {offload_kv, offload_weights}, identical to the unconstrained run", function()
    local m = load(budget)
    local lines, old = {}, log.sink
    log.sink = function(line) lines[#lines + 1] = line end
    local ok, texts, ids, stats = pcall(m.generate, m, prompt, with(SEED_OPTS, { on_oom = { "offload_kv", "offload_weights" } }))
    log.sink = old
    assert(ok, texts)
    assert.is_table(texts, tostring(ids))
    assert.are.same(free_ids, ids)
    assert.are.equal("offload_kv", stats.fallbacks[1].strategy)
    assert.is_true(stats.fallbacks[1].fired)
    assert.matches("fallback offload_kv fired: out of memory on cuda:0 %(cache phase", lines[1])
    assert.matches("dynamic %-> offloaded", lines[1])
    assert.is_true(tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle))) <= budget)
    m:free()
  end)
end)
