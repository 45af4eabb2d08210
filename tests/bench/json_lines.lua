--- json_lines.lua — the benchmark drivers' --out files: one JSON object per
-- row (flat tables of numbers, strings and booleans, keys sorted), then any
-- lines already in JSON (a reference tool's own output), as they are.
local M = {}

local function value(v)
  if type(v) ~= "string" then return tostring(v) end
  return '"' .. v:gsub('[%c"\\]', function(c)
    return c == '"' and '\\"' or c == "\\" and "\\\\" or string.format("\\u%04x", c:byte())
  end) .. '"'
end

--- One JSON object on one line: keys sorted, numbers with 10 significant
-- digits, nested tables as objects (the drivers' stdout rows).
function M.encode(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    local s
    if type(v) == "table" then s = M.encode(v)
    elseif type(v) == "number" then s = string.format("%.10g", v)
    else s = value(v) end
    parts[#parts + 1] = value(tostring(k)) .. ": " .. s
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

--- Writes rows, then extra (a list of JSON lines), to path.
function M.write(path, rows, extra)
  local f = assert(io.open(path, "w"))
  for _, r in ipairs(rows) do
    local parts = {}
    for k, v in pairs(r) do parts[#parts + 1] = string.format('"%s": %s', k, value(v)) end
    table.sort(parts)
    f:write("{" .. table.concat(parts, ", ") .. "}\n")
  end
  for _, line in ipairs(extra or {}) do f:write(line, "\n") end
  f:close()
end

return M
