--- policies.common — what every placement policy shares: reading the
-- budget, a deterministic order, greedy selection under a byte cap, and
-- the plan table.
--
-- A plan maps every tensor name to a tier name: "device" for tensors kept
-- on the compute device, the off-device tier (budget.tier, default "host")
-- for the ones a policy offloads. Policies offload *up to* a byte target:
-- max_bytes caps the bytes they keep off the device.
-- @module policies.common
local M = {}

local tiers = { device = true, pinned = true, host = true, mmap = true, disk = true }

--- Reads the budget argument of plan(tensors, budget).
-- budget is nil (no cap), a number (max_bytes) or a table
-- {max_bytes=, tier=, n_gpu_layers=}; cap is the policy's own max_bytes,
-- and the smaller of the two wins.
-- @treturn table {max_bytes=number (math.huge when none), tier=string, n_gpu_layers=int|nil}
function M.budget(budget, cap, who)
  local b
  if budget == nil then b = {}
  elseif type(budget) == "number" then b = { max_bytes = budget }
  elseif type(budget) == "table" then b = budget
  else error(who .. ": budget must be nil, a number of bytes or a table, got " .. type(budget), 3) end
  local max = b.max_bytes or math.huge
  if type(max) ~= "number" or max < 0 then
    error(who .. ": max_bytes must be a number >= 0, got " .. tostring(max), 3)
  end
  if cap ~= nil then max = math.min(max, cap) end
  local tier = b.tier or "host"
  if not tiers[tier] or tier == "device" then
    error(who .. ": tier must be \"pinned\", \"host\", \"mmap\" or \"disk\", got " .. tostring(tier), 3)
  end
  return { max_bytes = max, tier = tier, n_gpu_layers = b.n_gpu_layers }
end

--- Checks the tensor descriptions and returns a copy of the list in a
-- fixed order (tensors outside blocks first, then by layer, then by name),
-- so a plan never depends on the order the caller listed them in.
function M.ordered(tensors, who)
  if type(tensors) ~= "table" then error(who .. ": tensors must be a list of descriptions", 3) end
  local seen, out = {}, {}
  for i, t in ipairs(tensors) do
    if type(t) ~= "table" or type(t.name) ~= "string" or type(t.bytes) ~= "number" then
      error(who .. ": tensor #" .. i .. " needs a string name and a number of bytes", 3)
    end
    if seen[t.name] then error(who .. ": tensor '" .. t.name .. "' is listed twice", 3) end
    seen[t.name] = true
    out[#out + 1] = t
  end
  table.sort(out, function(a, b)
    local la, lb = a.layer or -1, b.layer or -1
    if la ~= lb then return la < lb end
    return a.name < b.name
  end)
  return out
end

--- A selection: which tensors are off the device, and how many bytes.
function M.selection(max_bytes)
  return { off = {}, bytes = 0, max_bytes = max_bytes }
end

--- Takes each tensor of list that pred accepts and that still fits under
-- max_bytes, in list order; a tensor that does not fit is skipped, so a
-- smaller one after it may still be taken.
function M.take(sel, list, pred)
  for _, t in ipairs(list) do
    if not sel.off[t.name] and pred(t) and sel.bytes + t.bytes <= sel.max_bytes then
      sel.off[t.name] = true
      sel.bytes = sel.bytes + t.bytes
    end
  end
end

--- Takes whole blocks from the last one down while each still fits
-- entirely; stops at the first that does not, so the offloaded blocks are
-- always a contiguous tail (what a layer-streaming engine wants).
function M.take_layers_from_last(sel, list)
  local by_layer, top = {}, -1
  for _, t in ipairs(list) do
    local l = t.layer or -1
    if l >= 0 then
      by_layer[l] = by_layer[l] or {}
      table.insert(by_layer[l], t)
      if l > top then top = l end
    end
  end
  for l = top, 0, -1 do
    local need = 0
    for _, t in ipairs(by_layer[l] or {}) do
      if not sel.off[t.name] then need = need + t.bytes end
    end
    if sel.bytes + need > sel.max_bytes then break end
    for _, t in ipairs(by_layer[l] or {}) do sel.off[t.name] = true end
    sel.bytes = sel.bytes + need
  end
end

--- The plan: every tensor → "device" or the off-device tier.
function M.plan(list, sel, tier)
  local plan = {}
  for _, t in ipairs(list) do plan[t.name] = sel.off[t.name] and tier or "device" end
  return plan
end

--- The packed set of a policy (its third value's packed): every bf16/f16
-- weight matrix (which = true), or those any of the predicates accepts.
-- Vectors and other dtypes are left out: only those matrices pack.
function M.packed(list, which)
  local roles = { embedding = true, lm_head = true, attn_q = true, attn_k = true, attn_v = true, attn_output = true,
    ffn_gate = true, ffn_up = true, ffn_down = true }
  local out = {}
  for _, t in ipairs(list) do
    local ok = (t.dtype == "bf16" or t.dtype == "f16") and roles[t.role] and #(t.shape or {}) == 2
    if ok and which ~= true then
      ok = false
      for _, p in ipairs(which) do if p(t) then ok = true break end end
    end
    if ok then out[t.name] = true end
  end
  return out
end

--- Loads a sibling module of policies/ whether or not policies/ is on
-- package.path (scripts may load a policy file by path).
function M.sibling(dir, name)
  local ok, mod = pcall(require, "policies." .. name)
  if ok then return mod end
  return dofile(dir .. name .. ".lua")
end

return M
