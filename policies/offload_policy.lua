--- policies.offload_policy — a custom policy from predicates.
--
--     local OffloadPolicy = require("policies.offload_policy")
--     local P = require("policies.predicates")
--     local pol = OffloadPolicy{max_bytes = 3 * 2^30, predicates = {P.is_embedding_table, P.is_norm_vector}}
--     local plan, off = pol.plan(m:tensors())
--
-- Tensors are offloaded predicate by predicate, in the order given (the
-- first predicate is the highest priority), each predicate's tensors in the
-- common order (outside blocks first, then by layer, then by name), each
-- taken while it fits under max_bytes. The cap is the smaller of the
-- policy's max_bytes and the budget's. spec.packed (true, or a list of
-- predicates) holds the bf16/f16 weight matrices it selects packed
-- (docs/packed.md), wherever they are placed.
-- @module policies.offload_policy
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local common = dofile(here .. "common.lua")

--- Makes a policy.
-- @tparam table spec {max_bytes=number (optional), predicates={function,...}, tier= (optional), name=,
--   packed= (optional: true, or {function,...})}
-- @treturn table {name=, plan=function(tensors, budget)}
local function OffloadPolicy(spec)
  if type(spec) ~= "table" then error("OffloadPolicy: spec must be a table", 2) end
  local preds = spec.predicates
  if type(preds) ~= "table" or #preds == 0 then
    error("OffloadPolicy: predicates must be a non-empty list of functions", 2)
  end
  for i, p in ipairs(preds) do
    if type(p) ~= "function" then error("OffloadPolicy: predicate #" .. i .. " is a " .. type(p), 2) end
  end
  if spec.max_bytes ~= nil and (type(spec.max_bytes) ~= "number" or spec.max_bytes < 0) then
    error("OffloadPolicy: max_bytes must be a number >= 0", 2)
  end
  local packed = spec.packed
  if packed ~= nil and packed ~= true and type(packed) ~= "table" then
    error("OffloadPolicy: packed must be true or a list of predicates", 2)
  end
  for i, p in ipairs(type(packed) == "table" and packed or {}) do
    if type(p) ~= "function" then error("OffloadPolicy: packed predicate #" .. i .. " is a " .. type(p), 2) end
  end
  local preds_copy = { unpack(preds) }
  local policy = { name = spec.name or "offload_policy" }
  function policy.plan(tensors, budget)
    if budget == nil and spec.tier then budget = { tier = spec.tier } end
    local b = common.budget(budget, spec.max_bytes, policy.name .. ".plan")
    local list = common.ordered(tensors, policy.name .. ".plan")
    local sel = common.selection(b.max_bytes)
    for _, p in ipairs(preds_copy) do common.take(sel, list, p) end
    if packed == nil then return common.plan(list, sel, b.tier), sel.bytes end
    return common.plan(list, sel, b.tier), sel.bytes, { packed = common.packed(list, packed) }
  end
  return policy
end

-- The module is callable (OffloadPolicy{...}) and also offers .new.
return setmetatable({ new = OffloadPolicy }, {
  __call = function(_, spec) return OffloadPolicy(spec) end,
})
