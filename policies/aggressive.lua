--- policies.aggressive — conservative's norms and biases, then the
-- embedding table (to the disk on the cpu: then every expert stack of a
-- mixture of experts), and the LM head, then whole blocks from the last one.
--
-- The embedding table is only gathered (one row per token), so it is the
-- cheapest large tensor to keep off the device; with tied embeddings it is
-- also the LM head, and moving it moves that matmul off the device too.
-- Blocks go whole, last first, and stop at the first block that does not
-- fit, so the offloaded blocks stay a contiguous tail.
-- @module policies.aggressive
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local common = dofile(here .. "common.lua")
local P = common.sibling(here, "predicates")

local M = { name = "aggressive" }

--- @tparam {table,...} tensors descriptions (model:tensors())
-- @tparam[opt] number|table budget max_bytes, or {max_bytes=, tier=, experts_read_per_expert= (the
--   planner's, on the cpu: a disk expert stack is read per chosen expert)}
-- @treturn table {[name] = "device"|tier}
-- @treturn int bytes kept off the device
function M.plan(tensors, budget)
  local b = common.budget(budget, nil, "aggressive.plan")
  local list = common.ordered(tensors, "aggressive.plan")
  local sel = common.selection(b.max_bytes)
  common.take(sel, list, function(t) return P.is_norm_vector(t) or P.is_bias(t) end)
  common.take(sel, list, P.is_embedding_table)
  -- to the disk on the cpu, a mixture of experts' stacks next, and all of them once any must go: the CPU
  -- engine reads only a token's k chosen experts of each block from there, and keeps the last ones read in
  -- slots of the budget's room (docs/moe.md "Experts from the disk"), which serve a skewed router's hot
  -- experts better than whole blocks' stacks kept on the device
  local per_expert = type(budget) == "table" and budget.experts_read_per_expert -- the planner's: on the cpu
  if b.tier == "disk" and per_expert and sel.bytes < sel.max_bytes then
    for _, t in ipairs(list) do
      if P.is_expert(t) and not sel.off[t.name] then
        sel.off[t.name] = true
        sel.bytes = sel.bytes + t.bytes
      end
    end
  end
  common.take(sel, list, P.is_lm_head)
  common.take_layers_from_last(sel, list)
  return common.plan(list, sel, b.tier), sel.bytes
end

return M
