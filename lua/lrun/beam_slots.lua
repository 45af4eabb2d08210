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

--- Puts the next step's beams in their slots (Slots:assign over each beam's
-- parent_slot) and writes their rows of the step: row n + i - 1 is beams[i]'s
-- last token in its slot; each beam's slot and row are set.
-- @tparam {table,...} beams {tokens=, parent_slot=}
-- @tparam int n the first row
-- @tparam cdata tokens int32_t[] the step's tokens
-- @tparam cdata slot_ids int32_t[] the step's slots
-- @treturn[1] int the next free row
-- @treturn[2] nil
-- @treturn[2] table error
function Slots:place(beams, n, tokens, slot_ids)
  local parents = {}
  for i, b in ipairs(beams) do parents[i] = b.parent_slot end
  local slots, err = self:assign(parents)
  if not slots then return nil, err end
  for i, b in ipairs(beams) do
    b.slot, b.row = slots[i], n
    tokens[n], slot_ids[n] = b.tokens[#b.tokens], b.slot
    n = n + 1
  end
  return n
end

return M
