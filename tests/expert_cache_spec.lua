-- expert_cache_spec: the expert cache's options and stats where no GPU is
-- needed (docs/moe.md "The expert cache", "Hybrid"): lrun.load's moe_host and
-- expert_cache_slots are checked; on the CPU backend the option changes
-- nothing (host experts are computed in place) and m:stats() has no
-- expert_cache. The cache itself runs on CUDA: tests/moe_gpu_spec.lua, and
-- its bookkeeping in tests/c/test_expert_cache.c.
package.path = "./?.lua;" .. package.path
local arch_models = require("tests.arch_models")
local lrun = require("lrun")
local compare = require("tests.compare")

local function entry(name)
  for _, e in ipairs(arch_models.models) do if e.name == name then return e end end
  error("no model " .. name)
end

local PROMPT = { 84, 104, 101, 32, 99, 97, 112, 10, 72, 105 }

describe("the expert cache's options", function()
  it("refuses a moe_host other than compute, cache or hybrid, naming the option and the choices", function()
    local ok, err = pcall(lrun.load, "none.gguf", { moe_host = "gpu" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("moe_host", 1, true))
    assert.truthy(tostring(err):find('"hybrid"', 1, true))
    assert.truthy(tostring(err):find('got "gpu"', 1, true))
  end)

  it("refuses expert_cache_policy lru with moe_host = hybrid (its admissions compare LFU counts)", function()
    local ok, err = pcall(lrun.load, "none.gguf", { expert_cache_policy = "lru", moe_host = "hybrid" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("expert_cache_policy", 1, true))
    assert.truthy(tostring(err):find("hybrid", 1, true))
  end)

  it("refuses expert_cache_slots below 1, and with moe_host = compute", function()
    local ok, err = pcall(lrun.load, "none.gguf", { expert_cache_slots = 0 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("expert_cache_slots", 1, true))
    ok, err = pcall(lrun.load, "none.gguf", { expert_cache_slots = 8, moe_host = "compute" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("moe_host", 1, true))
  end)

  it("refuses an expert_cache_policy other than lfu or lru, and with moe_host = compute", function()
    local ok, err = pcall(lrun.load, "none.gguf", { expert_cache_policy = "fifo" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("expert_cache_policy", 1, true))
    ok, err = pcall(lrun.load, "none.gguf", { expert_cache_policy = "lru", moe_host = "compute" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("moe_host", 1, true))
  end)

  describe("on the CPU backend", function()
    local path
    setup(function()
      path = os.tmpname()
      arch_models.generate(entry("qwen3moe_q8_0"), path)
    end)
    teardown(function() os.remove(path) end)

    it("computes host experts in place: the same logits, no expert_cache in m:stats()", function()
      local function run(opts)
        local m = assert(lrun.load(path, compare.with({ threads = 2, progress = false, device = "cpu",
                                                        policy = "experts_on_host" }, opts)))
        local logits = assert(m:logits(PROMPT))
        local st = m:stats()
        m:free()
        return logits, st
      end
      local plain = run({})
      local cached, st = run({ moe_host = "cache", expert_cache_slots = 4 })
      assert.is_true(compare.same(plain, cached), "logits differ with moe_host = cache on the CPU")
      assert.is_nil(st.expert_cache)
      local lru = run({ moe_host = "cache", expert_cache_slots = 4, expert_cache_policy = "lru" })
      assert.is_true(compare.same(plain, lru), "logits differ with expert_cache_policy = lru on the CPU")
      local hybrid, hst = run({ moe_host = "hybrid", expert_cache_slots = 4 })
      assert.is_true(compare.same(plain, hybrid), "logits differ with moe_host = hybrid on the CPU")
      assert.is_nil(hst.expert_cache)
    end)
  end)
end)
