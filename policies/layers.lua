--- policies.layers — the first N blocks on the device, the rest off it,
-- like llama.cpp's -ngl (--n-gpu-layers).
--
-- As in llama.cpp, N counts the blocks plus one for the output layer:
-- N <= n_layer puts blocks 0..N-1 on the device and keeps the output norm,
-- the LM head and everything else outside blocks off it; N > n_layer puts
-- every block and the output layer on the device. The token embedding table
-- stays off the device (it is only gathered), except when the model ties it
-- to the LM head and the output layer is on the device.
--
-- budget.n_gpu_layers gives N. max_bytes caps the bytes kept off the
-- device: N is raised until the plan fits; without n_gpu_layers, N is the
-- smallest that fits, i.e. as much as possible is offloaded.
--
--     local plan, off, n = require("policies.layers").plan(m:tensors(), {n_gpu_layers = 20})
-- @module policies.layers
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local common = dofile(here .. "common.lua")
local P = common.sibling(here, "predicates")

local M = { name = "layers" }

local function off_for(list, n, n_layer, tied)
  local sel = common.selection(math.huge)
  local output_on = n > n_layer
  for _, t in ipairs(list) do
    local l = t.layer or -1
    local off
    if l >= 0 then off = l >= n
    elseif P.is_embedding_table(t) then off = not (tied and output_on)
    else off = not output_on end
    if off then sel.off[t.name] = true; sel.bytes = sel.bytes + t.bytes end
  end
  return sel
end

--- @tparam {table,...} tensors descriptions (model:tensors())
-- @tparam[opt] number|table budget max_bytes, or {max_bytes=, tier=, n_gpu_layers=}
-- @treturn[1] table {[name] = "device"|tier}
-- @treturn[1] int bytes kept off the device
-- @treturn[1] int N, the number of layers on the device (blocks + output)
-- @treturn[2] nil
-- @treturn[2] string why no N fits max_bytes
function M.plan(tensors, budget)
  local b = common.budget(budget, nil, "layers.plan")
  local list = common.ordered(tensors, "layers.plan")
  local n_layer, tied = 0, true
  for _, t in ipairs(list) do
    if (t.layer or -1) + 1 > n_layer then n_layer = t.layer + 1 end
    if P.is_lm_head(t) then tied = false end
  end
  local n = b.n_gpu_layers or 0
  if type(n) ~= "number" or n < 0 or n % 1 ~= 0 then
    error("layers.plan: n_gpu_layers must be a whole number >= 0, got " .. tostring(n), 2)
  end
  n = math.min(n, n_layer + 1)
  local sel = off_for(list, n, n_layer, tied)
  while sel.bytes > b.max_bytes and n <= n_layer do
    n = n + 1
    sel = off_for(list, n, n_layer, tied)
  end
  if sel.bytes > b.max_bytes then
    return nil, string.format("layers.plan: even with all %d layers on the device %d bytes stay off it "
      .. "(the embedding table), over max_bytes %d", n_layer + 1, sel.bytes, b.max_bytes)
  end
  return common.plan(list, sel, b.tier), sel.bytes, n
end

return M
