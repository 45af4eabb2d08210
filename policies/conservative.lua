--- policies.conservative — offloads only norm vectors and biases.
--
-- They are read once per token and are tiny, so keeping them off the device
-- costs almost nothing; it also saves almost nothing. Order: norms and
-- biases outside blocks, then block by block (name order inside a block);
-- each is taken while it fits under max_bytes.
--
--     local plan = require("policies.conservative").plan(m:tensors(), {max_bytes = 1e6})
--     -- plan["blk.0.attn_norm.weight"] == "host", plan["blk.0.attn_q.weight"] == "device"
-- @module policies.conservative
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local common = dofile(here .. "common.lua")
local P = common.sibling(here, "predicates")

local M = { name = "conservative" }

--- @tparam {table,...} tensors descriptions (model:tensors())
-- @tparam[opt] number|table budget max_bytes, or {max_bytes=, tier=}
-- @treturn table {[name] = "device"|tier}
-- @treturn int bytes kept off the device
function M.plan(tensors, budget)
  local b = common.budget(budget, nil, "conservative.plan")
  local list = common.ordered(tensors, "conservative.plan")
  local sel = common.selection(b.max_bytes)
  common.take(sel, list, function(t) return P.is_norm_vector(t) or P.is_bias(t) end)
  return common.plan(list, sel, b.tier), sel.bytes
end

return M
