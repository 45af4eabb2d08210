-- host_budget_spec: the host budget as a runtime limit (issue 13, docs/residency.md
-- "The host budget"). Every host allocation of a model and its engines is
-- charged to the model's host account before it is made: a later allocation
-- past the budget the plan met is a clean oom naming what was asked and what
-- is held, nothing leaks, and the model stays usable; the account's sums are
-- what the planner predicted.
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local beam_model = require("tests.beam_model")

local function load(opts)
  local o = { progress = false, n_ctx = 256 }
  for k, v in pairs(opts) do o[k] = v end
  return assert(lrun.load(beam_model.path(), o))
end

describe("the host budget at run time", function()
  it("is the planner's prediction, byte for byte, once a static cache's engine is made", function()
    -- 1.9M sends some weights to the disk tier; the others keep every weight in memory
    for _, hb in ipairs({ "1.9M", "2M", "3M", "64M" }) do
      local m = load({ host_budget = hb, cache_implementation = "static" })
      assert(m:engine())
      local h = m:host_memory()
      assert.are.equal(m.residency.host_bytes, h.held, hb)
      assert.are.equal(h.held, h.weights + h.kv_cache + h.slots + h.scratch + h.expert_cache)
      assert.is_true(h.weights > 0 and h.kv_cache > 0 and h.scratch > 0, hb)
      assert.are.equal(require("lrun.size").parse(hb), h.budget)
      if hb == "1.9M" then assert.is_true(m:placement().bytes.disk > 0) end
      m:free()
    end
  end)

  it("refuses a later engine past the budget with a clean oom, and the model stays usable", function()
    local m = load({ host_budget = "2M", cache_implementation = "static" })
    local ref = assert(m:generate({ 1, 2, 3 }, { max_new_tokens = 4 }))
    local held = m:host_memory().held
    -- eight beams need eight sequences' KV cache: past the 2 MiB the plan met
    local t, err = m:generate({ 1, 2, 3 }, { max_new_tokens = 3, num_beams = 8 })
    assert.is_nil(t)
    assert.are.equal("oom", err.kind)
    assert.are.equal("cache", err.phase)
    assert.matches("host budget 2%.0 MiB: KV cache [%d.]+ KiB asked %(KV cache block%), [%d.]+ MiB held "
      .. "%(weights [%d.]+ KiB, KV cache [%d.]+ KiB, scratch [%d.]+ MiB%)", err.message)
    assert.is_true(m:host_memory().refused >= 1)
    -- nothing leaked: the account is back where it was, and the model generates the same tokens
    local again = assert(m:generate({ 1, 2, 3 }, { max_new_tokens = 4 }))
    assert.are.same(ref, again)
    assert.are.equal(held, m:host_memory().held)
    m:free()
  end)

  it("shows in stats() and in the placement (--explain)", function()
    local m = load({ host_budget = "3M" })
    assert(m:generate({ 1, 2, 3 }, { max_new_tokens = 2 }))
    local s = m:stats()
    assert.are.equal(3 * 2 ^ 20, s.host.budget)
    assert.is_true(s.host.peak >= s.host.held and s.host.held > 0)
    assert.matches("host memory held [%d.]+ MiB %(weights [%d.]+ KiB, scratch [%d.]+ MiB%) of a host budget 3%.0 MiB, "
      .. "peak [%d.]+ MiB", tostring(s))
    assert.matches("host memory held .* of a host budget 3%.0 MiB.*%(the runtime's account%)", tostring(m:placement()))
    m:free()
  end)

  it("counts nothing without a copy: a model left in its file holds only its engine", function()
    local m = load({})
    assert(m:engine())
    local h = m:host_memory()
    assert.are.equal(0, h.budget)
    assert.are.equal(0, h.weights)
    assert.is_true(h.scratch > 0 and h.available > 0)
    m:free()
  end)
end)
