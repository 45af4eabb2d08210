--- policies.n_cpu_moe — the expert tensors of the first N blocks off the
-- device and computed where they live; everything else on the device.
--
-- llama.cpp's `--n-cpu-moe N`: blk.0 .. blk.N-1's ffn_gate_exps,
-- ffn_up_exps and ffn_down_exps stay in host memory and their products run
-- on the CPU; the later blocks' experts, attention, norms, routers and the
-- head stay on the device. N >= n_layer is experts_on_host; N = 0 keeps
-- everything on the device. The plan is fixed (max_bytes is not a cap),
-- like llama.cpp's flag.
--
-- budget.n_cpu_moe gives N (lrun.load's n_cpu_moe, `--n-cpu-moe N`);
-- without it every block's experts leave the device.
--
--     local plan, off, extra = require("policies.n_cpu_moe").plan(m:tensors(), {n_cpu_moe = 4})
--     -- plan["blk.3.ffn_up_exps.weight"] == "host", plan["blk.4.ffn_up_exps.weight"] == "device"
-- @module policies.n_cpu_moe
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local common = dofile(here .. "common.lua")
local P = common.sibling(here, "predicates")

local M = { name = "n_cpu_moe" }

--- @tparam {table,...} tensors descriptions (model:tensors())
-- @tparam[opt] table budget {tier=, n_cpu_moe=} (max_bytes is not a cap here)
-- @treturn table {[name] = "device"|tier}
-- @treturn int bytes kept off the device
-- @treturn table {host_compute = {[name] = true}, explain = text}
function M.plan(tensors, budget)
  local b = common.budget(budget, nil, "n_cpu_moe.plan")
  local n = type(budget) == "table" and budget.n_cpu_moe or math.huge
  if type(n) ~= "number" or n < 0 or (n ~= math.huge and n % 1 ~= 0) then
    error("n_cpu_moe.plan: n_cpu_moe must be a whole number >= 0, got " .. tostring(n), 2)
  end
  local list = common.ordered(tensors, "n_cpu_moe.plan")
  local sel = common.selection(math.huge)
  common.take(sel, list, function(t) return P.is_expert(t) and (t.layer or -1) >= 0 and t.layer < n end)
  local host_compute, count = {}, 0
  for name in pairs(sel.off) do host_compute[name] = true; count = count + 1 end
  return common.plan(list, sel, b.tier), sel.bytes, { host_compute = host_compute,
    explain = string.format("n_cpu_moe: the experts of the first %s blocks: %d tensors (%.1f MiB) on the host, "
      .. "computed there", n == math.huge and "all" or tostring(n), count, sel.bytes / 2 ^ 20) }
end

return M
