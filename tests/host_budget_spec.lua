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

-- The cuda engine takes pinned staging at init whatever the placement (the
-- step's token table, 28 bytes a token of n_batch_max, and 64 logit rows of
-- n_vocab floats); the planner counts it from the C side
-- (lrun_engine_host_staging_bytes), so a plan that fits on paper fits at init.
describe("the planner's count of the cuda engine's own staging", function()
  local host_budget = require("lrun.host_budget")
  local ffi = require("lrun.ffi").ffi
  local MiB = 2 ^ 20

  it("is the step table and 64 logit rows of the model's vocabulary, from lrun.h", function()
    local m = load({})
    local n_vocab = m:info().n_vocab
    assert.is_true(n_vocab > 0)
    assert.are.equal(512 * 28 + 64 * n_vocab * 4, host_budget.engine_staging(m, "cuda"))
    local eo = ffi.new("lrun_engine_opts")
    eo.n_batch_max = 8
    assert.are.equal(8 * 28 + 64 * n_vocab * 4, host_budget.engine_staging(m, "cuda", eo))
    assert.are.equal(0, host_budget.engine_staging(m, "cpu"))
    eo.n_batch_max = -1
    local none, err = host_budget.engine_staging(m, "cuda", eo)
    assert.is_nil(none)
    assert.are.equal("arg", err.kind)
    assert.matches("n_batch_max %-1 is negative", err.message)
    m:free()
  end)

  -- a cuda placement: one weight on the device, two streamed from host memory (so the 64 MiB
  -- of offload staging is held), one computed on the host in place
  local function placement()
    local tensors = {
      { name = "blk.0.ffn_up.weight", bytes = 1 * MiB },
      { name = "blk.1.ffn_up.weight", bytes = 3 * MiB },
      { name = "blk.2.ffn_up.weight", bytes = 2 * MiB },
      { name = "output.weight", bytes = 5 * MiB },
    }
    local final = { ["blk.0.ffn_up.weight"] = "device", ["blk.1.ffn_up.weight"] = "host",
      ["blk.2.ffn_up.weight"] = "host", ["output.weight"] = "host" }
    return tensors, final, { ["output.weight"] = true }
  end
  -- the test model's figure (its vocabulary), as the planner would take it on cuda
  local function cuda_staging()
    local m = load({})
    local staging = assert(host_budget.engine_staging(m, "cuda"))
    m:free()
    return staging
  end
  local sized = { weights = 1 * MiB, slots = 3 * MiB, rows = 0, slack = 0 } -- device bytes: not host memory on cuda

  it("is in the plan's host bytes on cuda", function()
    local staging = cuda_staging()
    local tensors, final, hc = placement()
    local ctx = { cpu = false, reserve = 0, kv_host = 0, tensors = tensors, engine_staging = staging }
    local fixed, held = host_budget.held(ctx, final, hc, sized)
    assert.are.equal(staging + host_budget.cuda_staging_bytes, fixed)
    assert.are.equal(10 * MiB, held)
    ctx.engine_staging = nil -- the count before: the staging missing
    assert.are.equal(host_budget.cuda_staging_bytes, (host_budget.held(ctx, final, hc, sized)))
  end)

  it("counts the pinned staging buffers when prompts copy a pageable host-computed matrix (lrun.host_stream)",
    function()
      local tensors = {
        { name = "blk.0.ffn_up.weight", role = "ffn_up", layer = 0, bytes = 4 * MiB, shape = { 1024, 2048 } },
        { name = "blk.1.ffn_up.weight", role = "ffn_up", layer = 1, bytes = 4 * MiB, shape = { 1024, 2048 } },
      }
      local final = { ["blk.0.ffn_up.weight"] = "pinned", ["blk.1.ffn_up.weight"] = "host" }
      local hc = { ["blk.1.ffn_up.weight"] = true }
      local ctx = { cpu = false, reserve = 0, kv_host = 0, tensors = tensors, engine_staging = 0,
        host_stream_rows = 32 }
      assert.are.equal(host_budget.cuda_staging_bytes, (host_budget.held(ctx, final, hc, sized)))
      ctx.host_stream_rows = -1 -- prompts keep it on the host: every streamed weight pinned, nothing staged
      assert.are.equal(0, (host_budget.held(ctx, final, hc, sized)))
      ctx.host_stream_rows, final["blk.1.ffn_up.weight"] = 32, "pinned" -- pinned: copied by DMA
      assert.are.equal(0, (host_budget.held(ctx, final, hc, sized)))
    end)

  it("re-plans a budget that fits only without it: the largest streamed weight goes to disk", function()
    local staging = cuda_staging()
    local tensors, final, hc = placement()
    local ctx = { cpu = false, reserve = 0, kv_host = 0, tensors = tensors, engine_staging = staging }
    local without = host_budget.cuda_staging_bytes + 10 * MiB
    local budget = without + staging - 1 -- all of it fits without the staging, not with it
    local bytes, moved = host_budget.fit(ctx, final, hc, sized, budget)
    assert.are.equal(3 * MiB, moved)
    assert.are.equal("disk", final["blk.1.ffn_up.weight"])
    assert.are.equal("host", final["blk.2.ffn_up.weight"])
    assert.are.equal("host", final["output.weight"]) -- host compute reads it in place: it stays
    assert.are.equal(without + staging - 3 * MiB, bytes)
    assert.is_true(bytes <= budget)
  end)

  it("refuses a budget that fits only without it when nothing can move, naming the staging", function()
    local staging = cuda_staging()
    local tensors = { { name = "output.weight", bytes = 5 * MiB } }
    local final, hc = { ["output.weight"] = "host" }, { ["output.weight"] = true }
    local ctx = { cpu = false, reserve = 0, kv_host = 0, tensors = tensors, engine_staging = staging }
    local budget = 5 * MiB + staging - 1
    assert.is_truthy(host_budget.fit({ cpu = false, reserve = 0, kv_host = 0, tensors = tensors }, final, hc,
      sized, budget)) -- the count without the staging took it
    local bytes, err = host_budget.fit(ctx, final, hc, sized, budget)
    assert.is_nil(bytes)
    assert.matches("cannot be met: the engine's staging %(step table and logits%)", err)
    assert.matches(": 1 B missing", err)
  end)
end)
