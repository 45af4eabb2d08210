--- lrun.beam_slots — which engine sequence slot holds each beam's cache.
--
-- Beams move by index, not by copying: after a step each new beam names its
-- parent; the first child of a parent takes over the parent's slot as it is,
-- and only further children of the same parent get a copy, into a slot whose
-- beam left no child. A step that keeps every beam's line costs no copy; a
-- step where one beam spawns c children costs c - 1 copies (and the slots
-- of c - 1 dropped beams are reused). The copy is lrun.engine_rows' copy(),
-- the one place that touches the cache; with the paged store it shares
-- blocks instead of moving positions.
-- @module lrun.beam_slots
local M = {}

local Slots = {}
Slots.__index = Slots

--- Slots [first, first + n) of rows.
-- @tparam lrun.engine_rows rows
-- @tparam int first
-- @tparam int n
function M.new(rows, first, n)
  return setmetatable({ rows = rows, first = first, n = n, copies = 0 }, Slots)
end

--- The slots of the new beams, copying caches where two beams share a parent.
-- @tparam {int,...} parents the slot of each new beam's parent
-- @treturn[1] {int,...} the slot of each new beam
-- @treturn[2] nil
-- @treturn[2] table error
function Slots:assign(parents)
  local claimed, out = {}, {}
  for i, ps in ipairs(parents) do
    if not claimed[ps] then claimed[ps] = true; out[i] = ps end
  end
  local free = {}
  for s = self.first + self.n - 1, self.first, -1 do
    if not claimed[s] then free[#free + 1] = s end
  end
  for i, ps in ipairs(parents) do
    if out[i] == nil then
      local f = table.remove(free)
      if f == nil then error("beam_slots: more beams than slots") end
      local ok, err = self.rows:copy(f, ps)
      if not ok then return nil, err end
      self.copies = self.copies + 1
      out[i] = f
    end
  end
  return out
end

return M
