--- policies.experts_on_host — a mixture of experts' expert tensors off the
-- device and computed where they live; everything else on the device.
--
-- llama.cpp's `-ot "exps=CPU"`: the experts (blk.N.ffn_gate_exps,
-- ffn_up_exps, ffn_down_exps: most of a MoE model's bytes, of which each
-- token reads only n_expert_used / n_expert) stay in host memory and their
-- products run on the CPU; attention, norms, the router and the head stay
-- on the device. The whole set is taken whatever max_bytes says (the plan
-- is fixed, like llama.cpp's override); a model without experts gets an
-- all-device plan. Per-expert placement (n_cpu_moe, an expert cache) is
-- not this policy's (docs/moe.md).
--
--     local plan, off, extra = require("policies.experts_on_host").plan(m:tensors())
--     -- plan["blk.0.ffn_up_exps.weight"] == "host", extra.host_compute["blk.0.ffn_up_exps.weight"] == true
-- @module policies.experts_on_host
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local common = dofile(here .. "common.lua")
local P = common.sibling(here, "predicates")

local M = { name = "experts_on_host" }

--- @tparam {table,...} tensors descriptions (model:tensors())
-- @tparam[opt] number|table budget {tier=} (max_bytes is not a cap here)
-- @treturn table {[name] = "device"|tier}
-- @treturn int bytes kept off the device
-- @treturn table {host_compute = {[name] = true}, explain = text}
function M.plan(tensors, budget)
  local b = common.budget(budget, nil, "experts_on_host.plan")
  local list = common.ordered(tensors, "experts_on_host.plan")
  local sel = common.selection(math.huge)
  common.take(sel, list, P.is_expert)
  local host_compute, n = {}, 0
  for name in pairs(sel.off) do host_compute[name] = true; n = n + 1 end
  return common.plan(list, sel, b.tier), sel.bytes, { host_compute = host_compute,
    explain = string.format("experts_on_host: %d expert tensors (%.1f MiB) on the host, computed there",
      n, sel.bytes / 2 ^ 20) }
end

return M
