--- lrun.beam_topk — the k best entries of a row of scores, and the
-- candidates of a beam step built from them.
--
-- A beam step keeps the K best of (beams × vocabulary) accumulated scores.
-- Those are always among the K best of each beam's own row, so each row is
-- scanned once for its top K (a min-heap, O(n log K)), and only beams × K
-- candidates are sorted. Equal scores rank by flat index (beam·n_vocab +
-- token), lowest first: torch.topk leaves that order unspecified, and exact
-- ties between different tokens do not occur with real logits.
-- @module lrun.beam_topk
local M = {}

-- Sifts the root of a min-heap (vals, ids; 1-based, n entries) down.
-- "Smaller" is worse: a lower value, or an equal value with a higher id.
local function sift_down(vals, ids, n)
  local i = 1
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and (vals[l] < vals[m] or (vals[l] == vals[m] and ids[l] > ids[m])) then m = l end
    if r <= n and (vals[r] < vals[m] or (vals[r] == vals[m] and ids[r] > ids[m])) then m = r end
    if m == i then return end
    vals[i], vals[m] = vals[m], vals[i]
    ids[i], ids[m] = ids[m], ids[i]
    i = m
  end
end

local function sift_up(vals, ids, i)
  while i > 1 do
    local p = math.floor(i / 2)
    if vals[i] < vals[p] or (vals[i] == vals[p] and ids[i] > ids[p]) then
      vals[i], vals[p] = vals[p], vals[i]
      ids[i], ids[p] = ids[p], ids[i]
      i = p
    else
      return
    end
  end
end

--- The k largest entries of row[0 .. n-1], best first.
-- @tparam cdata row float*
-- @tparam int n
-- @tparam int k
-- @treturn {int,...} ids (0-based positions)
-- @treturn {number,...} values
function M.row(row, n, k)
  if k > n then k = n end
  local vals, ids, m = {}, {}, 0
  for i = 0, n - 1 do
    local v = row[i]
    if m < k then
      m = m + 1
      vals[m], ids[m] = v, i
      sift_up(vals, ids, m)
    elseif v > vals[1] then
      vals[1], ids[1] = v, i
      sift_down(vals, ids, m)
    end
  end
  local order = {}
  for i = 1, m do order[i] = i end
  table.sort(order, function(a, b)
    if vals[a] ~= vals[b] then return vals[a] > vals[b] end
    return ids[a] < ids[b]
  end)
  local out_ids, out_vals = {}, {}
  for i, j in ipairs(order) do out_ids[i], out_vals[i] = ids[j], vals[j] end
  return out_ids, out_vals
end

--- Sorts candidates {score=, flat=} best first (score, then flat index).
function M.sort(cands)
  table.sort(cands, function(a, b)
    if a.score ~= b.score then return a.score > b.score end
    return a.flat < b.flat
  end)
  return cands
end

return M
