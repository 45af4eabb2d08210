--- lrun.jinja.lexer — template text to tokens, with jinja2's whitespace rules
-- as transformers configures them (trim_blocks, lstrip_blocks, and the last
-- newline of the template dropped: keep_trailing_newline=False).
--
-- Tokens: {type=, value=, pos=} with type one of
--   data                     text between tags
--   var_begin, var_end       {{ }}
--   block_begin, block_end   {% %}
--   name, string, int, float, op   inside a tag
-- Comments produce no token. pos is the byte offset in the normalised text;
-- M.where(src, pos) turns it into line and column.
-- @module lrun.jinja.lexer
local V = require("lrun.jinja.value")

local M = {}

local OPS2 = { ["**"] = true, ["//"] = true, ["=="] = true, ["!="] = true, [">="] = true, ["<="] = true }
local OPS1 = {}
for c in ("+-/*%~[](){}<>=.:|,;"):gmatch(".") do OPS1[c] = true end

--- Line and column (1-based) of byte offset pos in src.
function M.where(src, pos)
  local line, last = 1, 0
  local i = 0
  while true do
    i = src:find("\n", i + 1, true)
    if not i or i >= pos then break end
    line, last = line + 1, i
  end
  return line, pos - last
end

local function syntax(src, pos, msg)
  local line, col = M.where(src, pos)
  error(setmetatable({ msg = msg, line = line, col = col, kind = "syntax" }, V.Err), 0)
end

-- Jinja string literals take Python's escapes (lexer: unicode-escape).
local utf8 = V.utf8_char
local simple = { n = "\n", t = "\t", r = "\r", ["\\"] = "\\", ["'"] = "'", ['"'] = '"', a = "\a", b = "\b",
  f = "\f", v = "\v", ["\n"] = "" }
local function unescape(s)
  if not s:find("\\", 1, true) then return s end
  local out, i = {}, 1
  while i <= #s do
    local a = s:find("\\", i, true)
    if not a then out[#out + 1] = s:sub(i); break end
    out[#out + 1] = s:sub(i, a - 1)
    local c = s:sub(a + 1, a + 1)
    local hexlen = (c == "x" and 2) or (c == "u" and 4) or (c == "U" and 8)
    if simple[c] then
      out[#out + 1] = simple[c]; i = a + 2
    elseif hexlen then
      local h = s:sub(a + 2, a + 1 + hexlen)
      if #h == hexlen and h:match("^%x+$") then
        out[#out + 1] = utf8(tonumber(h, 16)); i = a + 2 + hexlen
      else
        error("truncated \\" .. c .. " escape", 0)
      end
    elseif c:match("[0-7]") then
      local o = s:match("^[0-7][0-7]?[0-7]?", a + 1)
      out[#out + 1] = utf8(tonumber(o, 8)); i = a + 1 + #o
    else
      out[#out + 1] = "\\"; i = a + 1
    end
  end
  return table.concat(out)
end

-- A float literal's value as Python's float() gives it: LuaJIT's tonumber
-- returns nil where the exponent overflows or underflows a double
-- ("1e999"), which Python reads as inf or 0.0 (fuzz_jinja found
-- "{{88888888e888…}}" reaching math.floor with nil).
local function float_literal(text)
  local n = tonumber(text)
  if n then return n end
  local mantissa, exp_sign = text:match("^([%d.]*)[eE]([-+]?)")
  if not mantissa or not mantissa:find("[1-9]") or exp_sign == "-" then return 0.0 end
  return math.huge
end

-- One token inside a tag at pos: returns type, value, next pos.
local function expr_token(src, pos)
  local s = src:match("^%d[%d_]*%.%d[%d_]*[eE][-+]?%d[%d_]*", pos) or src:match("^%d[%d_]*[eE][-+]?%d[%d_]*", pos)
    or src:match("^%d[%d_]*%.%d[%d_]*", pos)
  if s then return "float", V.float(float_literal((s:gsub("_", "")))), pos + #s end
  s = src:match("^%d[%d_]*", pos)
  if s then return "int", tonumber((s:gsub("_", ""))), pos + #s end
  s = src:match("^[%a_][%w_]*", pos)
  if s then return "name", s, pos + #s end
  local q = src:sub(pos, pos)
  if q == "'" or q == '"' then
    local i = pos + 1
    while true do
      local a = src:find("[\\" .. q .. "]", i)
      if not a then syntax(src, pos, "unterminated string") end
      if src:sub(a, a) == q then
        local ok, v = pcall(unescape, src:sub(pos + 1, a - 1))
        if not ok then syntax(src, pos, v) end
        return "string", v, a + 1
      end
      i = a + 2
    end
  end
  local two = src:sub(pos, pos + 1)
  if OPS2[two] then return "op", two, pos + 2 end
  if OPS1[q] then return "op", q, pos + 1 end
  syntax(src, pos, "unexpected char '" .. q .. "'")
end

-- Tokens of one tag from pos (just after "{{"/"{%" and its sign) up to its
-- end; returns the position after the end (and after trimmed whitespace),
-- and whether the consumed text ended with a newline.
local function lex_tag(src, pos, kind, toks)
  local balance = {}
  local closer = kind == "{" and "}}" or "%}"
  local start = pos
  while true do
    if pos > #src then syntax(src, start, "unexpected end of template: the tag has no '" .. closer .. "'") end
    if #balance == 0 then
      local e
      if src:sub(pos, pos + 2) == "-" .. closer then
        e = src:find("[^%s]", pos + 3) or #src + 1
      elseif kind == "%" and src:sub(pos, pos + 2) == "+%}" then
        e = pos + 3
      elseif src:sub(pos, pos + 1) == closer then
        e = pos + 2
        if kind == "%" and src:sub(e, e) == "\n" then e = e + 1 end
      end
      if e then
        toks[#toks + 1] = { type = kind == "{" and "var_end" or "block_end", pos = pos }
        return e, src:sub(e - 1, e - 1) == "\n"
      end
    end
    local ws = src:match("^%s+", pos)
    if ws then
      pos = pos + #ws
    else
      local ty, v, nxt = expr_token(src, pos)
      if ty == "op" then
        if v == "(" or v == "[" or v == "{" then
          balance[#balance + 1] = v == "(" and ")" or v == "[" and "]" or "}"
        elseif v == ")" or v == "]" or v == "}" then
          local want = table.remove(balance)
          if want ~= v then
            syntax(src, pos, want and ("unexpected '" .. v .. "', expected '" .. want .. "'") or ("unexpected '" .. v .. "'"))
          end
        end
      end
      toks[#toks + 1] = { type = ty, value = v, pos = pos }
      pos = nxt
    end
  end
end

-- The end of a comment or a raw block's end tag: returns the position
-- after it (trim rules applied), nil when absent.
local function tag_end(src, pos, closer)
  local a = src:find(closer, pos, true)
  if not a then return nil end
  local sign = a > pos and src:sub(a - 1, a - 1) or ""
  local e = a + #closer
  if sign == "-" then e = src:find("[^%s]", e) or #src + 1
  elseif sign ~= "+" and src:sub(e, e) == "\n" then e = e + 1 end
  return e, a - ((sign == "-" or sign == "+") and 1 or 0)
end

--- The tokens of a template.
-- @tparam string src the template text
-- @treturn table tokens
-- @treturn string the normalised text (\r\n and \r as \n, one trailing \n dropped)
function M.tokenize(src)
  src = src:gsub("\r\n?", "\n")
  if src:sub(-1) == "\n" then src = src:sub(1, -2) end
  local toks, pos, line_starting = {}, 1, true
  while pos <= #src do
    local s = src:find("{[{%%#]", pos)
    if not s then
      toks[#toks + 1] = { type = "data", value = src:sub(pos), pos = pos }
      break
    end
    local kind = src:sub(s + 1, s + 1)
    local sign = src:sub(s + 2, s + 2)
    if sign ~= "-" and sign ~= "+" then sign = "" end
    local text = src:sub(pos, s - 1)
    if sign == "-" then
      text = V.rstrip(text)
    elseif sign ~= "+" and kind ~= "{" then
      local l_pos = 0
      for i = #text, 1, -1 do if text:byte(i) == 10 then l_pos = i; break end end
      if (l_pos > 0 or line_starting) and text:sub(l_pos + 1):match("^%s+$") then text = text:sub(1, l_pos) end
    end
    if text ~= "" then toks[#toks + 1] = { type = "data", value = text, pos = pos } end
    local after = s + 2 + #sign
    local raw = kind == "%" and src:match("^%s*raw%s*%-?%%}", after)
    if raw then
      local body = after + #raw
      if raw:sub(-3, -3) == "-" then body = src:find("[^%s]", body) or #src + 1 end
      local a, b, esign = src:find("{%%([-+]?)%s*endraw%s*[-+]?%%}", body)
      if not a then syntax(src, s, "missing end of raw directive") end
      local content = src:sub(body, a - 1)
      if esign == "-" then content = V.rstrip(content)
      elseif esign ~= "+" then
        local l_pos = 0
        for i = #content, 1, -1 do if content:byte(i) == 10 then l_pos = i; break end end
        if l_pos > 0 and content:sub(l_pos + 1):match("^%s+$") then content = content:sub(1, l_pos) end
      end
      if content ~= "" then toks[#toks + 1] = { type = "data", value = content, pos = body } end
      local e = tag_end(src, b - 1, "%}")
      pos, line_starting = e, src:sub(e - 1, e - 1) == "\n"
    elseif kind == "#" then
      local e = tag_end(src, after, "#}")
      if not e then syntax(src, s, "missing end of comment tag") end
      pos, line_starting = e, src:sub(e - 1, e - 1) == "\n"
    else
      toks[#toks + 1] = { type = kind == "{" and "var_begin" or "block_begin", pos = s }
      pos, line_starting = lex_tag(src, after, kind, toks)
    end
  end
  toks[#toks + 1] = { type = "eof", pos = #src + 1 }
  return toks, src
end

return M
