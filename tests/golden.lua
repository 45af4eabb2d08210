--- tests/golden.lua — reading the committed reference files in tests/golden/.
-- Shared by the specs that compare against llama.cpp and HF transformers.
local json = require("dkjson")

local M = {}

local dir = (debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$")) or "."

--- The decoded JSON of tests/golden/<name>; raises naming the file when it
-- cannot be opened or parsed.
-- @tparam string name e.g. "smollm2_greedy.json"
-- @treturn table
function M.read(name)
  local path = dir .. "/golden/" .. name
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  local text = f:read("*a")
  f:close()
  local doc, _, err = json.decode(text)
  assert(doc, "cannot parse " .. path .. ": " .. tostring(err))
  return doc
end

return M
