--- lrun.size — byte sizes written by people: "512M", "4G", "4GiB", "1.5G".
-- One parser for the launcher's --gpu-budget and lrun.load's gpu_budget.
-- K, M, G, T and KiB … TiB are powers of 1024 (as llama.cpp and the
-- launcher's help mean them); KB, MB, GB, TB are powers of 1000, as in
-- HF accelerate's max_memory strings. A bare number is bytes.
-- @module lrun.size
local M = {}

--- The largest C int: whole-number options (counts, token sizes) reach the engine as int, so a larger one
-- would wrap on its way there (lrun.load, generate, cache_config and the command-line flags refuse it).
M.INT_MAX = 2147483647

local binary = { [""] = 1, B = 1, K = 2^10, M = 2^20, G = 2^30, T = 2^40 }
local decimal = { KB = 1e3, MB = 1e6, GB = 1e9, TB = 1e12 }

-- Largest byte count a size_t keeps exactly through a double.
local max_bytes = 2^53

--- Parses a size.
-- @tparam string|number s "4G", "512MiB", "1.5g", "1000000" or a number of bytes
-- @treturn[1] number bytes (an integer)
-- @treturn[2] nil
-- @treturn[2] string what was wrong
function M.parse(s)
  if type(s) == "number" then
    if s ~= s or s < 0 or s >= max_bytes or s ~= math.floor(s) then
      return nil, "expected a whole number of bytes from 0 to 2^53, got " .. tostring(s)
    end
    return s
  end
  if type(s) ~= "string" then
    return nil, "expected a size such as 512M or 4G, got a " .. type(s)
  end
  local num, unit = s:match("^%s*(%d+%.?%d*)%s*(%a*)%s*$")
  if not num then num, unit = s:match("^%s*(%.%d+)%s*(%a*)%s*$") end
  if not num then
    return nil, "expected a size such as 512M, 4G or 4GiB, got '" .. s .. "'"
  end
  unit = unit:upper()
  local scale = binary[unit] or decimal[unit]
  if not scale and unit:match("^[KMGT]IB$") then scale = binary[unit:sub(1, 1)] end
  if not scale then
    return nil, "unknown unit '" .. unit .. "' in '" .. s .. "' (use K, M, G, T, KiB … TiB, KB … TB)"
  end
  local bytes = math.floor(tonumber(num) * scale + 0.5)
  if bytes >= max_bytes then return nil, "size '" .. s .. "' is too large" end
  return bytes
end

--- Formats bytes for people: 1536 → "1.5 KiB".
-- @tparam number bytes
-- @treturn string
function M.format(bytes)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i, v = 1, bytes
  while v >= 1024 and i < #units do v, i = v / 1024, i + 1 end
  if i == 1 then return string.format("%d B", v) end
  return string.format("%.1f %s", v, units[i])
end

return M
