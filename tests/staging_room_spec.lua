-- staging_room_spec: the planner makes room for the prompts' staging before
-- it drops it (lua/lrun/residency.lua; docs/streaming.md "Prefill over
-- host-computed matrices", "Memory"). On cuda a prompt chunk multiplies
-- host-computed matrices on the device from two staging buffers, which the
-- engine's sizing counts as scratch; a plan that filled the budget with
-- weights used to find no room for them and keep the host's products
-- (session 27, H100: a 7B bf16 at 4 GiB prefilled 127 tok/s so, 2188-2398
-- with them). The cpu engine has no staging, so the spec adds it to the
-- engine's own sizes wherever cuda's would (prompts streamed, matrices
-- host-computed) and checks the planner's part: at budgets that leave room
-- the plan keeps the staging and still fits; at one that does not, it drops
-- it, says so, and fits without it.
package.path = "./?.lua;" .. package.path
local fixture = require("tests.bf16_model_fixture")
local residency = require("lrun.residency")
local placement_size = require("lrun.placement_size")

-- two buffers of the largest block matrix (ffn 128 x 384, bf16), as engine_cuda_host_stream.c sizes them
local STAGE = 2 * 128 * 384 * 2

local path, reserve, weights
local real = placement_size.size_with

setup(function()
  path = os.tmpname() .. ".gguf"
  fixture.generate(path, { n_layer = 6, n_embd = 128, n_head = 4, n_head_kv = 2, n_ff = 384, seed = 23 })
  local m = assert(fixture.load(path))
  reserve, weights = assert(residency.plan(m, { threads = 2 })).reserve_bytes, m:info().weight_bytes
  m:free()
  placement_size.size_with = function(model, eo, plan, hc, packed, part)
    local r, err = real(model, eo, plan, hc, packed, part)
    if r and eo.host_stream_rows >= 0 and hc and next(hc) then r.scratch = r.scratch + STAGE end
    return r, err
  end
end)
teardown(function()
  placement_size.size_with = real
  os.remove(path)
end)

-- smart's plan under a budget of the reserve and frac of the weights
local function plan(frac)
  local budget = reserve + math.floor(frac * weights)
  local m = assert(fixture.load(path, { gpu_budget = budget }))
  local r = assert(residency.plan(m, { threads = 2, policy = "smart", packed = false }))
  m:free()
  local n_hc = 0
  for _ in pairs(r.host_compute) do n_hc = n_hc + 1 end
  return r, budget, n_hc
end

describe("the prompts' staging under a tight budget", function()
  it("is kept, beside the slots, wherever the budget leaves room for it", function()
    for _, frac in ipairs({ 0.9, 0.6, 0.3 }) do
      local r, budget, n_hc = plan(frac)
      assert.is_true(n_hc > 0, "nothing host-computed at " .. frac)
      assert.is_nil(r.explain:find("no room in the budget for the staging", 1, true), r.explain)
      assert.is_true(r.extra_bytes >= STAGE, string.format("%.1f: %d bytes beside the slots", frac, r.extra_bytes))
      assert.is_true(r.device_bytes + r.slot_bytes + r.extra_bytes + r.reserve_bytes <= budget, tostring(frac))
    end
  end)

  it("is dropped, and the plan says so, where even the weights barely fit without it", function()
    local r, budget = plan(0.05)
    assert.matches("prompts: host%-computed matrices multiplied on the host %(no room in the budget for the "
      .. "staging", r.explain)
    assert.is_true(r.extra_bytes < STAGE)
    assert.is_true(r.device_bytes + r.slot_bytes + r.extra_bytes + r.reserve_bytes <= budget)
  end)
end)
