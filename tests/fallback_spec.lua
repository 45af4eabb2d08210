-- fallback_spec: out-of-memory errors as values and the fallback strategies
-- of policies/fallback/ (lrun.resilient, generate{on_oom=}), on a budgeted
-- CPU device. The seed scenario of issue 5 runs on the tiny model of
-- tests/beam_model.lua (HF's golden of it is checked in beam_search_spec): a
-- 1000-token prompt, 40 beams in 40 groups, diversity_penalty 1.0, 40
-- sequences of 23 tokens, under a budget the dynamic cache does not fit.
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local lf = require("lrun.ffi")
local C = lf.C
local beam_model = require("tests.beam_model")
local resilient = require("lrun.resilient")
local errors = require("lrun.errors")
local cache_kinds = require("lrun.cache_kinds")
local log = require("lrun.log")

-- The seed scenario's prompt and options.
local SEED_OPTS = { num_beams = 40, num_beam_groups = 40, diversity_penalty = 1.0, num_return_sequences = 40,
  max_new_tokens = 23, eos_token_id = { 256 } }
local function seed_prompt()
  local p = {}
  for i = 1, 1000 do p[i] = 259 + (i * 7) % 253 end
  return p
end
local copy = require("tests.compare").with

-- Captures lrun.log lines while fn runs.
local function logged(fn)
  local lines, old = {}, log.sink
  log.sink = function(line) lines[#lines + 1] = line end
  local ok, a, b, c = pcall(fn)
  log.sink = old
  if not ok then error(a, 0) end
  return lines, a, b, c
end

local function oom(fields)
  return errors.new("oom", "test", fields or { device = "cpu", requested = 300 * 2 ^ 20, free = 100 * 2 ^ 20,
    phase = "cache", stage = "decode" })
end

-- The deep variant of the tiny model (32 layers): with the paged KV store
-- the 40 beams share the prompt's blocks, so what does not fit is the
-- prompt's 32 layers plus each beam's copied last block; the offloaded cache
-- keeps two layers on the device. Measured peaks on the CPU device:
-- dynamic 30.2 MB, offloaded 22.9 MB; the budget lies between.
local SEED_BUDGET = 26 * 2 ^ 20

describe("the seed scenario (32-layer tiny model, 26 MiB budget)", function()
  local path, prompt, free_run, free_peak
  setup(function()
    path = os.tmpname()
    beam_model.write(path, { n_layer = 32 })
    prompt = seed_prompt()
    local m = assert(lrun.load(path, { kv_dtype = "f32", progress = false, n_ctx = 1024 }))
    local _, ids = m:generate(prompt, SEED_OPTS)
    free_run = ids
    free_peak = tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle)))
    m:free()
  end)
  teardown(function() os.remove(path) end)

  it("needs more than the budget with the dynamic cache", function()
    assert.are.equal(40, #free_run)
    assert.is_true(free_peak > SEED_BUDGET, "unconstrained peak " .. free_peak)
  end)

  it("fails with a structured OOM error when no fallback is given, and the model stays usable", function()
    local m = assert(lrun.load(path, { kv_dtype = "f32", progress = false, n_ctx = 1024, gpu_budget = SEED_BUDGET }))
    local dev = C.lrun_model_device(m.handle)
    local texts, err = m:generate(prompt, SEED_OPTS)
    assert.is_nil(texts)
    assert.is_true(errors.is_oom(err), tostring(err))
    assert.are.equal("cpu", err.device)
    assert.are.equal("cache", err.phase)
    assert.is_truthy(err.stage == "reorder" or err.stage == "prefill" or err.stage == "decode")
    assert.is_true(err.requested > err.free)
    assert.matches("out of memory on cpu", err.message)
    -- nothing held: every slot was released
    local used_after = tonumber(C.lrun_device_used(dev))
    local _, ids = m:generate({ 300, 301, 302 }, { max_new_tokens = 4, eos_token_id = {} })
    assert.are.equal(4, #ids)
    assert.are.equal(used_after, tonumber(C.lrun_device_used(dev)))
    m:free()
  end)

  it("succeeds with the chain {offload_kv, offload_weights}, identical to the unconstrained run", function()
    local m = assert(lrun.load(path, { kv_dtype = "f32", progress = false, n_ctx = 1024, gpu_budget = SEED_BUDGET }))
    local o = copy(SEED_OPTS, { on_oom = { "offload_kv", "offload_weights" } })
    local lines, texts, ids, stats = logged(function() return m:generate(prompt, o) end)
    if cache_kinds.available("offloaded") then
      assert.is_table(texts, tostring(ids))
      assert.are.same(free_run, ids)
      assert.are.equal(1, #stats.fallbacks)
      assert.are.equal("offload_kv", stats.fallbacks[1].strategy)
      assert.is_true(stats.fallbacks[1].fired)
      assert.matches("fallback offload_kv fired: out of memory on cpu %(cache phase", lines[1])
      assert.matches("dynamic %-> offloaded", lines[1])
      -- the timings are the successful attempt's; the failed one is counted apart
      assert.is_true(stats.failed_seconds > 0 and stats.prompt_seconds > 0)
    else
      -- a build without the offloaded cache: both decline, saying why
      local err = ids
      assert.is_nil(texts)
      assert.is_true(errors.is_oom(err))
      assert.are.same({ "offload_kv", "offload_weights" }, { err.fallbacks[1].strategy, err.fallbacks[2].strategy })
      assert.matches('no "offloaded" cache', err.fallbacks[1].reason)
      assert.matches("fallback offload_kv declined", lines[1])
    end
    m:free()
  end)
end)

describe("split_batch on a batch of prompts", function()
  it("fires until the batch fits, with the same output as an unconstrained run", function()
    local path = beam_model.path()
    local prompts = {}
    for p = 1, 4 do
      prompts[p] = {}
      for i = 1, 1000 do prompts[p][i] = 259 + (i * 7 + p * 13) % 253 end
    end
    local gen = { max_new_tokens = 5, eos_token_id = {} }
    local m = assert(lrun.load(path, { kv_dtype = "f32", progress = false }))
    local _, want = m:generate(prompts, gen)
    -- the scratch of an engine for 4 sequences, then room for 2.5 sequences of 1024 positions
    local dev = C.lrun_model_device(m.handle)
    assert(m:engine({ n_seq = 4 }))
    local scratch = tonumber(C.lrun_device_used(dev))
    m:free()
    local per_seq = 2 * 2 * 32 * 4 * 1024 -- layers x (K, V) x kv_dim x f32 x positions
    local budget = scratch + math.floor(2.5 * per_seq)
    m = assert(lrun.load(path, { kv_dtype = "f32", progress = false, gpu_budget = budget }))
    local _, err = m:generate(prompts, gen)
    assert.is_true(errors.is_oom(err), tostring(err))
    local o = { on_oom = { "split_batch" } }
    for k, v in pairs(gen) do o[k] = v end
    local lines, texts, ids, stats = logged(function() return m:generate(prompts, o) end)
    assert.is_table(texts, tostring(ids))
    assert.are.same(want, ids)
    local fired = {}
    for _, e in ipairs(stats.fallbacks) do if e.fired then fired[#fired + 1] = e.strategy .. ": " .. e.reason end end
    assert.are.same({ "split_batch: max_batch_rows 4 -> 2 (2 of 4 sequences at a time)" }, fired)
    local seen = false
    for _, l in ipairs(lines) do if l:find("fallback split_batch fired", 1, true) then seen = true end end
    assert.is_true(seen)
    m:free()
  end)
end)

describe("fallback strategies", function()
  local function strategy(name) return resilient.resolve({ name })[1] end

  it("offload_kv picks the offloaded kind of the cache, or declines", function()
    local s = strategy("offload_kv")
    local cfg = { cache_implementation = "dynamic", num_beams = 4 }
    local new, why = s.apply(oom(), cfg)
    if cache_kinds.available("offloaded") then
      assert.are.equal("offloaded", new.cache_implementation)
      assert.are.equal(4, new.num_beams)
      assert.matches("dynamic %-> offloaded", why)
    else
      assert.is_nil(new)
      assert.matches('no "offloaded" cache', why)
    end
    assert.are.equal("dynamic", cfg.cache_implementation) -- the input is not changed
    local n2, w2 = s.apply(oom(), { cache_implementation = "offloaded" })
    assert.is_nil(n2)
    assert.matches("already offloaded", w2)
    local n3, w3 = s.apply(oom({ phase = "load" }), {})
    assert.is_nil(n3)
    assert.matches("weights", w3)
  end)

  it("quantize_kv switches to the quantized cache, or declines", function()
    local s = strategy("quantize_kv")
    local new, why = s.apply(oom(), { cache_implementation = "static" })
    if cache_kinds.available("quantized") then
      assert.are.equal("quantized", new.cache_implementation)
    else
      assert.is_nil(new)
      assert.matches('no "quantized" cache', why)
    end
    assert.is_nil((s.apply(oom(), { cache_implementation = "quantized" })))
    assert.is_nil((s.apply(oom(), { cache_implementation = "offloaded" })))
  end)

  it("offload_weights raises cpu_offload_gb by what was missing", function()
    local s = strategy("offload_weights")
    local function model(device_bytes, can_place)
      return { placement = function() return { bytes = { device = device_bytes } } end,
               place = can_place and function() return true end or nil }
    end
    assert.matches("no model", select(2, s.apply(oom(), {})))
    assert.matches("no weights are on the device", select(2, s.apply(oom(), { model = model(0, true) })))
    assert.matches("cannot move weights", select(2, s.apply(oom(), { model = model(2 ^ 30, false) })))
    local cfg = { model = model(2 ^ 30, true), place = { cpu_offload_gb = 0.5 } }
    local new, why = s.apply(oom(), cfg) -- lacks 200 MiB; at least 1/8 of 1 GiB
    assert.are.equal(0.5 + 200 / 1024, new.place.cpu_offload_gb)
    assert.are.equal(0.5, cfg.place.cpu_offload_gb)
    assert.matches("cpu_offload_gb 0.500 %-> 0.695", why)
    local small = s.apply(oom({ requested = 10, free = 0 }), { model = model(2 ^ 30, true) })
    assert.are.equal(1 / 8, small.place.cpu_offload_gb)
  end)

  it("split_batch halves the prompts at a time and never splits one prompt's beams", function()
    local s = strategy("split_batch")
    local new = s.apply(oom(), { rows = 8, num_return_sequences = 1 })
    assert.are.equal(4, new.max_batch_rows)
    new = s.apply(oom(), { rows = 12, num_beams = 4, num_return_sequences = 2, max_batch_rows = 12 })
    assert.are.equal(4, new.max_batch_rows)
    assert.matches("cannot run apart", select(2, s.apply(oom(), { rows = 40, num_beams = 40 })))
    assert.matches("one prompt at a time", select(2, s.apply(oom(), { rows = 8, num_beams = 4, max_batch_rows = 4 })))
  end)
end)

describe("lrun.resilient", function()
  it("asks the strategies in order, retries with the first that fires, and logs it", function()
    local calls = {}
    local lines, a, b = logged(function()
      return lrun.resilient(function(cfg)
        calls[#calls + 1] = cfg.size
        -- each retry asks for less (a retry that changed nothing stops the chain)
        if cfg.size > 2 then
          return nil, oom({ device = "cpu", requested = cfg.size * 37.5 * 2 ^ 20, free = 100 * 2 ^ 20, phase = "cache" })
        end
        return "done", cfg.size
      end, {
        { name = "never", apply = function() return nil, "not my case" end },
        function(_, cfg) return resilient.with(cfg, { size = cfg.size / 2 }), "halved" end,
      }, { size = 8 })
    end)
    assert.are.equal("done", a)
    assert.are.equal(2, b)
    assert.are.same({ 8, 4, 2 }, calls)
    assert.matches("fallback never declined: not my case", lines[1])
    assert.matches("fallback function #2 fired: out of memory on cpu %(cache phase, needs 300.0 MiB, 100.0 MiB free%); halved", lines[2])
  end)

  it("returns other errors at once, and the OOM when all decline", function()
    local n = 0
    local _, err = lrun.resilient(function() n = n + 1; return nil, errors.new("io", "gone") end, { "split_batch" })
    assert.are.equal("io", err.kind)
    assert.are.equal(1, n)
    local lines, _, err2 = logged(function()
      return lrun.resilient(function() return nil, oom() end, { "split_batch" }, {})
    end)
    assert.is_true(errors.is_oom(err2))
    assert.are.equal(1, #err2.fallbacks)
    assert.matches("unknown", err2.fallbacks[1].reason)
    assert.are.equal(1, #lines)
  end)

  it("stops after max_retries", function()
    local n = 0
    local lines, res, err = logged(function()
      -- each retry changes the configuration and the failing request
      return lrun.resilient(function(c)
        n = n + 1
        return nil, oom({ device = "cpu", requested = 300 * 2 ^ 20 + c.k, free = 100 * 2 ^ 20, phase = "cache" })
      end, { function(_, c) return resilient.with(c, { k = c.k + 1 }), "again" end }, { k = 0 })
    end)
    assert.are.equal(resilient.max_retries + 1, n)
    assert.is_nil(res)
    assert.is_true(errors.is_oom(err))
    assert.are.equal(resilient.max_retries, #err.fallbacks)
    assert.matches("giving up after 8 retries", lines[#lines])
  end)

  -- Issue 16: under --gpu-budget 100M with 40 beams the chain retried 8
  -- times, five of them with nothing changed. These failed before.
  it("never runs a configuration twice: a strategy proposing one already tried declines", function()
    local n = 0
    local lines, res, err = logged(function()
      return lrun.resilient(function() n = n + 1; return nil, oom() end,
        { function(_, c) return resilient.with(c, {}), "again" end })
    end)
    assert.are.equal(1, n)
    assert.is_nil(res)
    assert.is_true(errors.is_oom(err))
    assert.matches("tried already", err.fallbacks[1].reason)
    assert.matches("fallback function #1 declined: its configuration was tried already", lines[1])
  end)

  it("stops when a retry changed nothing: same request, free memory and placement, and says why", function()
    -- a model whose placement cannot move: offload_weights raises
    -- cpu_offload_gb each time, and nothing that memory sees changes
    local placed = 0
    local model = {
      placement = function() return { bytes = { device = 80 * 2 ^ 20, host = 4 * 2 ^ 20 } } end,
      place = function() placed = placed + 1; return true end,
    }
    local n = 0
    local lines, res, err = logged(function()
      return resilient.run(function() n = n + 1; return nil, oom() end,
        { "offload_kv", "offload_weights", "split_batch" },
        { model = model, rows = 40, num_beams = 40, cache_implementation = "offloaded" })
    end)
    assert.is_nil(res)
    assert.is_true(errors.is_oom(err))
    assert.are.equal(2, n)
    local last = err.fallbacks[#err.fallbacks]
    assert.are.equal("offload_weights", last.strategy)
    assert.is_false(last.fired)
    assert.matches("changed nothing", last.reason)
    assert.matches("fallback: stopping: the retry after offload_weights changed nothing %(out of memory on cpu",
      lines[#lines])
    local keys = {}
    for _, e in ipairs(err.fallbacks) do
      if e.fired then
        assert.is_nil(keys[e.reason], "fired twice with " .. e.reason)
        keys[e.reason] = true
      end
    end
  end)

  it("names a strategy that does not exist", function()
    assert.has_error(function() lrun.resilient(function() end, { "no_such_strategy" }) end)
    assert.has_error(function() lrun.resilient(function() end, { 42 }) end,
      "fallback: strategy #1 must be a name, a function or a table with apply, got number")
  end)
end)
