--- policies.aggressive — conservative's norms and biases, then the
-- embedding table (to the disk: then a mixture of experts' stacks), and the
-- LM head, then whole blocks from the last one.
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
-- @tparam[opt] number|table budget max_bytes, or {max_bytes=, tier=}
-- @treturn table {[name] = "device"|tier}
-- @treturn int bytes kept off the device
function M.plan(tensors, budget)
  local b = common.budget(budget, nil, "aggressive.plan")
  local list = common.ordered(tensors, "aggressive.plan")
  local sel = common.selection(b.max_bytes)
  common.take(sel, list, function(t) return P.is_norm_vector(t) or P.is_bias(t) end)
  common.take(sel, list, P.is_embedding_table)
  -- to the disk, a mixture of experts' stacks next: the CPU engine reads only a token's k chosen experts of
  -- each block from there (docs/moe.md "Experts from the disk"), k/E of their bytes where a block goes whole
  if b.tier == "disk" then common.take(sel, list, P.is_expert) end
  common.take(sel, list, P.is_lm_head)
  common.take_layers_from_last(sel, list)
  return common.plan(list, sel, b.tier), sel.bytes
end

return M
