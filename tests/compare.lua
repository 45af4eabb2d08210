--- tests/compare.lua — comparisons of number lists the specs share
-- (logit rows, token ids): exact equality and the relative difference the
-- C GPU tests use (test_stream_gpu's rel_diff).
local M = {}

--- True when a and b have the same length and the same values, element by element.
function M.same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

--- max |a - b| / max |a| over the elements of a.
function M.rel_diff(a, b)
  local d, s = 0, 1e-30
  for i = 1, #a do
    d = math.max(d, math.abs(a[i] - b[i]))
    s = math.max(s, math.abs(a[i]))
  end
  return d / s
end

--- A shallow copy of t with the fields of extra set over it.
function M.with(t, extra)
  local o = {}
  for k, v in pairs(t) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

return M
