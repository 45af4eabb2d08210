-- autofit_moe_spec: auto-fit of a mixture of experts under a device budget
-- just above what it needs (docs/residency.md "Fragmentation", #14/#15):
-- every budget the planner accepts makes its engine at the first attempt,
-- stays under the budget while the KV cache grows to n_ctx, and leaves room
-- for the engine the benchmarks make next (static cache). The planner's
-- sizes are the engine's own (lrun_engine_size_placement): the sweep checks
-- the engine's stats against the plan's, not a copy of the arithmetic. On
-- the cpu device (weights_resident = true: the decision cuda makes); the
-- same sweep on cuda in autofit_gpu_spec.lua (tests/autofit_moe.lua).
package.path = "./?.lua;" .. package.path
local moe = require("tests.autofit_moe")

describe("auto-fit of a mixture of experts under a tight budget", function()
  local path, need, experts
  setup(function()
    path = os.tmpname() .. ".gguf"
    moe.generate(path)
    need, experts = moe.need(path, "cpu")
  end)
  teardown(function() if path then os.remove(path) end end)

  it("makes the engine at the first attempt at every budget it accepts, and stays under it", function()
    local accepted, refused, tightest = moe.sweep(path, "cpu", need, experts)
    print(string.format("# %d budgets accepted (the tightest %d bytes, %.0f%% of all-resident), %d refused",
      accepted, tightest or 0, 100 * (tightest or 0) / need, refused))
    assert.is_true(accepted >= 3 and refused >= 1) -- the tightest accepted is just above what the plan needs
  end)
end)
