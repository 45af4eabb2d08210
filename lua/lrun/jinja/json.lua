--- lrun.jinja.json — JSON text to template values, keeping the order of
-- object keys (Python's json.loads does, and tojson prints them in that
-- order): objects become value.dict(), arrays value.list(), null NONE,
-- numbers with a fraction or exponent floats.
-- @module lrun.jinja.json
local V = require("lrun.jinja.value")

local M = {}

local esc = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local utf8 = V.utf8_char

local function decoder(s)
  local pos = 1
  local function err(what) error("json: " .. what .. " at byte " .. pos, 0) end
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value

  local function str()
    pos = pos + 1
    local parts = {}
    while true do
      local a, b = s:find('["\\]', pos)
      if not a then err("unterminated string") end
      parts[#parts + 1] = s:sub(pos, a - 1)
      if s:sub(a, a) == '"' then pos = b + 1; break end
      local c = s:sub(a + 1, a + 1)
      if c == "u" then
        local cp = tonumber(s:sub(a + 2, a + 5), 16) or err("bad \\u escape")
        pos = a + 6
        if cp >= 0xD800 and cp < 0xDC00 and s:sub(pos, pos + 1) == "\\u" then
          local lo = tonumber(s:sub(pos + 2, pos + 5), 16)
          if lo and lo >= 0xDC00 and lo < 0xE000 then
            cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
            pos = pos + 6
          end
        end
        parts[#parts + 1] = utf8(cp)
      else
        parts[#parts + 1] = esc[c] or err("bad escape")
        pos = a + 2
      end
    end
    return table.concat(parts)
  end

  local function num()
    local text = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if not text or text == "" or text == "-" then err("unexpected character") end
    pos = pos + #text
    local n = tonumber(text) or err("bad number")
    if text:find("[.eE]") then return V.float(n) end
    return n
  end

  value = function(depth)
    if depth > 200 then err("nesting deeper than 200") end
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      pos = pos + 1
      local d = V.dict()
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return d end
      while true do
        ws()
        if s:sub(pos, pos) ~= '"' then err("expected a key") end
        local k = str()
        ws()
        if s:sub(pos, pos) ~= ":" then err("expected ':'") end
        pos = pos + 1
        V.dset(d, k, value(depth + 1))
        ws()
        c = s:sub(pos, pos)
        pos = pos + 1
        if c == "}" then return d end
        if c ~= "," then err("expected ',' or '}'") end
      end
    elseif c == "[" then
      pos = pos + 1
      local l = V.list()
      ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1; return l end
      while true do
        l[#l + 1] = value(depth + 1)
        ws()
        c = s:sub(pos, pos)
        pos = pos + 1
        if c == "]" then return l end
        if c ~= "," then err("expected ',' or ']'") end
      end
    elseif c == '"' then return str()
    elseif s:sub(pos, pos + 3) == "true" then pos = pos + 4; return true
    elseif s:sub(pos, pos + 4) == "false" then pos = pos + 5; return false
    elseif s:sub(pos, pos + 3) == "null" then pos = pos + 4; return V.NONE
    end
    return num()
  end

  return function()
    local v = value(0)
    ws()
    if pos <= #s then err("trailing text") end
    return v
  end
end

--- Decodes JSON text into template values.
-- @treturn[1] value
-- @treturn[2] nil
-- @treturn[2] string what is wrong and where
function M.decode(text)
  if type(text) ~= "string" then error("json.decode: text must be a string", 2) end
  local ok, v = pcall(decoder(text))
  if not ok then return nil, v end
  return v
end

return M
