-- kv_cache_spec: the cache_implementation option through lrun.load and
-- generate (lua/lrun/cache.lua, runtime/kv/kv_cache.c): validation, the exact
-- caches giving the same greedy tokens, quantized running, and an OOM of the
-- cache as a structured error that an offloaded cache then avoids.
local path = os.getenv("LRUN_MODEL")
local VALID = '"dynamic", "static", "offloaded", "offloaded_static", "quantized"'

describe("cache_implementation", function()
  local lrun = require("lrun")

  it("rejects an unknown load value, listing the valid ones", function()
    assert.has_error(function() lrun.load("x.gguf", { cache_implementation = "paged" }) end,
      'lrun.load: cache_implementation must be one of ' .. VALID .. ', got "paged"')
  end)

  it("rejects a bad cache_config", function()
    assert.has_error(function() lrun.load("x.gguf", { cache_config = { nbits = 3 } }) end,
      "lrun.load: cache_config.nbits must be 8 or 4, got 3")
    assert.has_error(function() lrun.load("x.gguf", { cache_config = { bits = 4 } }) end,
      "lrun.load: cache_config: unknown key 'bits' (nbits, q_group_size, residual_length)")
    -- past a C int: it wrapped to -2^63 on its way to the engine
    assert.has_error(function() lrun.load("x.gguf", { cache_config = { residual_length = 1e30 } }) end,
      "lrun.load: cache_config.residual_length must be a whole number > 0 and <= 2147483647")
  end)

  it("rejects an unknown generate value", function()
    local gen = require("lrun.generate")
    assert.has_error(function() gen.check_options({ cache_implementation = "paged" }) end,
      'generate: cache_implementation must be one of ' .. VALID .. ', got "paged"')
  end)
end)

describe("cache_implementation on the default model", function()
  if not path then
    pending("LRUN_MODEL is not set")
    return
  end
  local lrun = require("lrun")
  local lf = require("lrun.ffi")
  local C = lf.C
  local PROMPT = "The capital of France is"

  it("gives the same greedy ids with every exact cache", function()
    local m = assert(lrun.load(path, { progress = false }))
    local _, ref = m:generate(PROMPT, { max_new_tokens = 6 })
    for _, impl in ipairs({ "static", "offloaded", "offloaded_static" }) do
      local _, ids = m:generate(PROMPT, { max_new_tokens = 6, cache_implementation = impl })
      assert.are.same(ref, ids, impl)
    end
    local text, ids = m:generate(PROMPT, { max_new_tokens = 6, cache_implementation = "quantized",
      cache_config = { nbits = 4, residual_length = 4 } })
    assert.are.equal(6, #ids)
    assert.are.equal(m:detokenize(ids), text)
    m:free()
  end)

  it("takes cache_implementation as a load option", function()
    local m = assert(lrun.load(path, { progress = false, cache_implementation = "offloaded" }))
    local _, ids = m:generate(PROMPT, { max_new_tokens = 3 })
    assert.are.equal(3, #ids)
    m:free()
  end)

  it("reports a cache OOM as {kind='oom', phase='cache', device=, requested=, free=}, then runs offloaded", function()
    -- the budget: the engine's scratch plus 2 MiB, less than a 200-token dynamic cache (5.6 MiB)
    local probe = assert(lrun.load(path, { progress = false }))
    assert(probe:engine())
    local scratch = tonumber(C.lrun_device_used(C.lrun_model_device(probe.handle)))
    probe:free()
    local m = assert(lrun.load(path, { progress = false, gpu_budget = scratch + 2 * 1024 * 1024 }))
    local ids = {}
    for i = 1, 200 do ids[i] = 100 + i end
    local text, err = m:generate(ids, { max_new_tokens = 2 })
    assert.is_nil(text)
    assert.are.equal("oom", err.kind)
    assert.are.equal("cache", err.phase)
    assert.are.equal("cpu", err.device)
    assert.is_true(err.requested > err.free)
    -- the model is still usable: the same prompt with the cache offloaded fits
    local _, out = m:generate(ids, { max_new_tokens = 2, cache_implementation = "offloaded" })
    assert.are.equal(2, #out)
    m:free()
  end)
end)
