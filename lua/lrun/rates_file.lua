--- lrun.rates_file — the planner's measured rates kept in a file and given
-- back: the same plan on every run of a benchmark or an A/B (each process
-- measures afresh, and near-equal choices flip with the noise: session 26,
-- four 7B runs at 4 GiB streamed 3.1 to 4.0 GB a token), and no probes
-- at load.
--
--   LRUN_RATES_OUT=rates.lua lrun --gpu-budget 4G ...   -- writes what was measured (after any LRUN_RATES)
--   LRUN_RATES=rates.lua lrun --gpu-budget 4G ...       -- its fields replace the measured ones
--
-- The file is a Lua chunk returning a table (lrun.bandwidth's fields: bytes
-- per second, seconds, and per-dtype tables), run in lrun.sandbox (no io,
-- os or require, an instruction limit); a field it leaves out keeps its
-- measured value. lrun.bandwidth.bandwidths applies both switches.
-- @module lrun.rates_file
local sandbox = require("lrun.sandbox")

local M = {}

local function check(v, where, depth)
  local t = type(v)
  if t == "number" then
    if v ~= v or v < 0 then error(where .. ": must be a number >= 0, got " .. tostring(v), 0) end
  elseif t == "table" then
    if depth > 3 then error(where .. ": tables nest too deep", 0) end
    for k, x in pairs(v) do
      if type(k) ~= "string" and type(k) ~= "number" then error(where .. ": a key of type " .. type(k), 0) end
      check(x, where .. "." .. tostring(k), depth + 1)
    end
  elseif t ~= "string" and t ~= "boolean" then
    error(where .. ": a " .. t .. " (expected a number, string, boolean or table)", 0)
  end
end

--- The table a rates file returns, checked: every value a number >= 0, a
-- string, a boolean or a table of those; a field also in bw of another type
-- is an error naming it.
-- @treturn[1] table
-- @treturn[2] nil
-- @treturn[2] string why, naming the file (and the field)
function M.read(path, bw)
  local rates, err = sandbox.dofile(path)
  if rates == nil and type(err) == "string" then return nil, "rates file " .. err end
  if type(rates) ~= "table" then return nil, "rates file " .. path .. ": returns a " .. type(rates) .. ", not a table" end
  local ok, cerr = pcall(function()
    for k, v in pairs(rates) do
      local where = path .. ": " .. tostring(k)
      if type(k) ~= "string" then error(where .. ": field names are strings", 0) end
      check(v, where, 1)
      if bw and bw[k] ~= nil and type(bw[k]) ~= type(v) then
        error(where .. ": a " .. type(v) .. " where lrun measures a " .. type(bw[k]), 0)
      end
    end
  end)
  if not ok then return nil, "rates file " .. tostring(cerr) end
  return rates
end

--- bw with the file's fields in place (bw is changed and returned).
function M.apply(bw, path)
  local rates, err = M.read(path, bw)
  if not rates then return nil, err end
  for k, v in pairs(rates) do bw[k] = v end
  return bw
end

local function keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

local function literal(v, indent)
  local t = type(v)
  if t == "number" then return string.format("%.17g", v) end
  if t == "string" then return string.format("%q", v) end
  if t ~= "table" then return tostring(v) end
  local parts = {}
  for _, k in ipairs(keys(v)) do
    local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. literal(k) .. "]"
    parts[#parts + 1] = indent .. "  " .. key .. " = " .. literal(v[k], indent .. "  ") .. ","
  end
  if #parts == 0 then return "{}" end
  return "{\n" .. table.concat(parts, "\n") .. "\n" .. indent .. "}"
end

--- The Lua text of a rates file holding bw's numbers, strings, booleans and tables.
function M.text(bw)
  local kept = {}
  for k, v in pairs(bw) do
    local t = type(v)
    if type(k) == "string" and (t == "number" or t == "string" or t == "boolean" or t == "table") then kept[k] = v end
  end
  return "-- lrun's measured rates (lrun.rates_file): bytes/s, seconds; LRUN_RATES=this file uses them\nreturn "
    .. literal(kept, "") .. "\n"
end

--- Writes M.text(bw) to path.
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] string why
function M.write(bw, path)
  local f, err = io.open(path, "w")
  if not f then return nil, "rates file: " .. tostring(err) end
  local ok, werr = f:write(M.text(bw))
  f:close()
  if not ok then return nil, "rates file " .. path .. ": " .. tostring(werr) end
  return true
end

--- What LRUN_RATES and LRUN_RATES_OUT ask, on bw (lrun.bandwidth.bandwidths calls it).
function M.from_env(bw)
  local given = os.getenv("LRUN_RATES")
  if given and given ~= "" then
    local ok, err = M.apply(bw, given)
    if not ok then return nil, err end
  end
  local out = os.getenv("LRUN_RATES_OUT")
  if out and out ~= "" then
    local ok, err = M.write(bw, out)
    if not ok then return nil, err end
  end
  return bw
end

return M
