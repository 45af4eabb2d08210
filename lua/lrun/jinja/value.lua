--- lrun.jinja.value — the values a template computes with, as Python has them.
-- Lua has one table type and one number type; templates need Python's: lists
-- and tuples apart from dicts (which keep insertion order, since tojson
-- prints keys in that order), ints apart from floats ("2.0" is not "2"),
-- None apart from a missing value, and jinja2's Undefined.
--
--   string, boolean      as in Lua
--   number               an int when integral and finite, else a float
--   Float {v=}           a float whose value is integral (2.0, 1e16)
--   NONE                 Python's None
--   Undef {name=, hint=} jinja2's Undefined: renders "", fails when used
--   List {...}, Tuple {...}  items 1..n (None is NONE, so no holes)
--   Dict {keys={...}, map={}}  insertion-ordered
--   Obj {attrs={}, kind=}      namespace() and loop: attributes only
--   Fn {name=, fn=}            a callable: fn(S, args, kwargs) → value
--   Markup {s=}                markupsafe's Markup, from safe and escape: a
--                              string, except that + and % escape the
--                              plain strings they meet
--   Gen {kind=, ...}           what a Python generator or iterator would be
--                              (map, select…, reverse): iterates as its items,
--                              is always true, has no len() and no JSON
-- @module lrun.jinja.value
local M = {}

local floor, huge = math.floor, math.huge
local concat, fmt = table.concat, string.format

-- ---------------------------------------------------------------- errors

local Err = {}
Err.__index = Err
Err.__tostring = function(e) return e.msg end
M.Err = Err

--- Raises a template error (a table the renderer fills with the position).
function M.fail(msg, kind)
  error(setmetatable({ msg = msg, kind = kind or "render" }, Err), 0)
end
local fail = M.fail

-- ---------------------------------------------------------------- work budget

-- Steps left in the render under way: expression evaluations, loop
-- iterations, and work inside filters and comparisons (an item compared, a
-- value printed, 64 bytes of string built or scanned), so that a template
-- cannot stall in a filter on a huge value either. lrun.jinja.eval sets it
-- per render.
M.budget = math.huge
M.max_steps = math.huge

function M.tick(n)
  local b = M.budget - n
  M.budget = b
  if b < 0 then
    fail("the template took more than " .. M.max_steps .. " steps (an endless loop?)", "limit")
  end
end
local tick = M.tick

-- ---------------------------------------------------------------- strings: trailing space

local SPACE_BYTE = { [9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [32] = true,
  [28] = true, [29] = true, [30] = true, [31] = true }

--- s without trailing whitespace (a byte loop: "%s+$" would be quadratic
-- on long runs of spaces).
function M.rstrip(s)
  local i = #s
  while i > 0 and SPACE_BYTE[s:byte(i)] do i = i - 1 end
  return s:sub(1, i)
end

-- ---------------------------------------------------------------- types

M.NONE = setmetatable({}, { __tostring = function() return "None" end })
local NONE = M.NONE
local Undef, Float, List, Tuple, Dict, Obj, Fn, Gen, Markup = {}, {}, {}, {}, {}, {}, {}, {}, {}
M.Undef, M.Float, M.List, M.Tuple, M.Dict, M.Obj, M.Fn, M.Gen = Undef, Float, List, Tuple, Dict, Obj, Fn, Gen
M.Markup = Markup

function M.undef(name, hint) return setmetatable({ name = name, hint = hint }, Undef) end
function M.list(t) return setmetatable(t or {}, List) end
function M.tuple(t) return setmetatable(t or {}, Tuple) end
function M.dict() return setmetatable({ keys = {}, map = {} }, Dict) end
-- order: the attribute names in the order they were set (for printing)
function M.obj(kind, attrs, order) return setmetatable({ kind = kind, attrs = attrs or {}, order = order }, Obj) end
function M.fn(name, f) return setmetatable({ name = name, fn = f }, Fn) end
function M.markup(s) return setmetatable({ s = s }, Markup) end

local HTML = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&#34;", ["'"] = "&#39;" }
--- s with & < > " ' as HTML entities (markupsafe.escape).
function M.escape(s) return (s:gsub("[&<>\"']", HTML)) end

--- A Markup as its plain string; any other value as it is.
function M.plain(v)
  if getmetatable(v) == Markup then return v.s end
  return v
end
local plain = M.plain

--- A generator (kind: its Python type name) over the items of list t.
function M.gen(t, kind)
  t.kind = kind or "generator"
  return setmetatable(t, Gen)
end

--- A shallow copy of the array part of t, with metatable mt (no unpack:
-- lists may be longer than unpack's limit).
function M.copy(t, mt)
  local out = {}
  for i = 1, #t do out[i] = t[i] end
  return setmetatable(out, mt)
end

function M.is_undef(x) return getmetatable(x) == Undef end
function M.is_list(x) local m = getmetatable(x) return m == List or m == Tuple end
function M.is_dict(x) return getmetatable(x) == Dict end

--- Fails with the message jinja2 gives when an Undefined is used.
function M.undef_fail(u)
  fail(u.hint or ("'" .. tostring(u.name) .. "' is undefined"), "undefined")
end

function M.dset(d, k, v)
  if getmetatable(k) == Float then k = k.v end
  if d.map[k] == nil then d.keys[#d.keys + 1] = k end
  d.map[k] = v
end
function M.dget(d, k)
  if getmetatable(k) == Float then k = k.v end
  return d.map[k]
end

-- ---------------------------------------------------------------- numbers

local function finite_int(x) return x == floor(x) and x ~= huge and x ~= -huge end

--- A float result: boxed when integral so that it still prints as a float.
function M.float(x)
  if x == x and finite_int(x) then return setmetatable({ v = x }, Float) end
  return x
end

--- n (a Lua number) and whether it is a float; nil for a non-number.
-- Booleans count as ints, as in Python.
function M.num(x)
  local t = type(x)
  if t == "number" then return x, not finite_int(x) end
  if t == "boolean" then return x and 1 or 0, false end
  if getmetatable(x) == Float then return x.v, true end
  return nil
end

function M.is_int(x) return type(x) == "number" and finite_int(x) end

local function int_str(x)
  if x > -9.2e18 and x < 9.2e18 then return fmt("%d", x) end
  return fmt("%.0f", x)
end

--- Python's repr of a float: the shortest digits that read back the same.
function M.float_repr(x)
  if x ~= x then return "nan" end
  if x == huge then return "inf" elseif x == -huge then return "-inf" end
  if x == 0 then return 1 / x < 0 and "-0.0" or "0.0" end
  local s
  for p = 0, 16 do
    s = fmt("%." .. p .. "e", x)
    if tonumber(s) == x then break end
  end
  local sign, d1, rest, e = s:match("^(-?)(%d)%.?(%d*)e([-+]%d+)$")
  rest = rest:gsub("0+$", "")
  local exp = tonumber(e)
  if exp < -4 or exp >= 16 then
    return sign .. d1 .. (rest ~= "" and "." .. rest or "") .. "e" .. (exp < 0 and "-" or "+") .. fmt("%02d", math.abs(exp))
  end
  local digits = d1 .. rest
  if exp >= 0 then
    if #digits <= exp + 1 then return sign .. digits .. string.rep("0", exp + 1 - #digits) .. ".0" end
    return sign .. digits:sub(1, exp + 1) .. "." .. digits:sub(exp + 2)
  end
  return sign .. "0." .. string.rep("0", -exp - 1) .. digits
end

local function num_str(x)
  if finite_int(x) then return int_str(x) end
  return M.float_repr(x)
end

-- ---------------------------------------------------------------- strings (code points)

--- The code points of s as a table of UTF-8 strings (bytes that are not
-- UTF-8 count one each).
function M.chars(s)
  tick(#s / 4)
  local out = {}
  if not s:find("[\128-\255]") then
    for i = 1, #s do out[i] = s:sub(i, i) end
    return out
  end
  for c in s:gmatch("[%z\1-\127\192-\255][\128-\191]*") do out[#out + 1] = c end
  return out
end

function M.strlen(s)
  if not s:find("[\128-\255]") then return #s end
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end

--- The UTF-8 bytes of code point cp.
function M.utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64,
    0x80 + cp % 64)
end

-- Upper and lower case beyond ASCII, for the alphabets chat text meets most
-- (Latin-1, Latin Extended-A, Vietnamese's Latin Extended Additional, Greek,
-- Cyrillic); other code points keep their case.
local function pair_range(cp, lo, hi, upper_even)
  if cp < lo or cp > hi then return nil end
  return (cp % 2 == 0) == upper_even
end

local function cp_upper(cp)
  if cp >= 0xE0 and cp <= 0xFE and cp ~= 0xF7 then return cp - 0x20 end
  if cp == 0xFF then return 0x178 end
  for _, r in ipairs({ { 0x100, 0x12F, true }, { 0x132, 0x137, true }, { 0x139, 0x148, false },
    { 0x14A, 0x177, true }, { 0x179, 0x17E, false }, { 0x1E00, 0x1E95, true }, { 0x1EA0, 0x1EFF, true } }) do
    local is_upper = pair_range(cp, r[1], r[2], r[3])
    if is_upper ~= nil then return is_upper and cp or cp - 1 end
  end
  if (cp >= 0x3B1 and cp <= 0x3C9 and cp ~= 0x3C2) or (cp >= 0x430 and cp <= 0x44F) then return cp - 0x20 end
  if cp == 0x3C2 then return 0x3A3 end
  if cp >= 0x450 and cp <= 0x45F then return cp - 0x50 end
  return cp
end

local function cp_lower(cp)
  if cp >= 0xC0 and cp <= 0xDE and cp ~= 0xD7 then return cp + 0x20 end
  if cp == 0x178 then return 0xFF end
  for _, r in ipairs({ { 0x100, 0x12F, true }, { 0x132, 0x137, true }, { 0x139, 0x148, false },
    { 0x14A, 0x177, true }, { 0x179, 0x17E, false }, { 0x1E00, 0x1E95, true }, { 0x1EA0, 0x1EFF, true } }) do
    local is_upper = pair_range(cp, r[1], r[2], r[3])
    if is_upper ~= nil then return is_upper and cp + 1 or cp end
  end
  if (cp >= 0x391 and cp <= 0x3A9 and cp ~= 0x3A2) or (cp >= 0x410 and cp <= 0x42F) then return cp + 0x20 end
  if cp >= 0x400 and cp <= 0x40F then return cp + 0x50 end
  return cp
end

local utf8_cp

local function recase(s, ascii, map)
  if not s:find("[\128-\255]") then return ascii(s) end
  return (s:gsub("[%z\1-\127\192-\255][\128-\191]*", function(c)
    if #c == 1 then return ascii(c) end
    return M.utf8_char(map(utf8_cp(c)))
  end))
end

M.codepoint = function(c) return utf8_cp(c) end

function M.upper(s) return recase(s, string.upper, cp_upper) end
function M.lower(s) return recase(s, string.lower, cp_lower) end

-- ---------------------------------------------------------------- type names, truth

function M.typename(x)
  local t = type(x)
  if t == "string" then return "str" elseif t == "boolean" then return "bool"
  elseif t == "number" then return finite_int(x) and "int" or "float" end
  if x == NONE then return "NoneType" end
  local m = getmetatable(x)
  if m == Float then return "float" elseif m == List then return "list" elseif m == Tuple then return "tuple"
  elseif m == Dict then return "dict" elseif m == Undef then return "Undefined"
  elseif m == Obj or m == Gen then return x.kind elseif m == Fn then return "function"
  elseif m == Markup then return "Markup" end
  return t
end

function M.truthy(x)
  local t = type(x)
  if t == "boolean" then return x elseif t == "string" then return x ~= ""
  elseif t == "number" then return x ~= 0 end
  if x == NONE then return false end
  local m = getmetatable(x)
  if m == Undef then return false elseif m == Float then return x.v ~= 0
  elseif m == List or m == Tuple then return #x > 0 elseif m == Dict then return #x.keys > 0
  elseif m == Markup then return x.s ~= "" end
  return true
end

-- ---------------------------------------------------------------- str() and repr()

local repr

local function str_repr(s)
  local q = (s:find("'", 1, true) and not s:find('"', 1, true)) and '"' or "'"
  local body = s:gsub("[%c\\'\"]", function(c)
    if c == "\\" then return "\\\\" elseif c == "\n" then return "\\n" elseif c == "\r" then return "\\r"
    elseif c == "\t" then return "\\t" elseif c == q then return "\\" .. q
    elseif c == "'" or c == '"' then return c end
    return fmt("\\x%02x", c:byte())
  end)
  return q .. body .. q
end

local function check_depth(depth)
  if depth > 200 then fail("value nested more than 200 levels deep") end
end

repr = function(x, depth)
  tick(1)
  depth = (depth or 0) + 1
  check_depth(depth)
  if type(x) == "string" then return str_repr(x) end
  local m = getmetatable(x)
  if m == Markup then return "Markup(" .. str_repr(x.s) .. ")" end
  if m == List or m == Tuple then
    local parts = {}
    for i = 1, #x do parts[i] = repr(x[i], depth) end
    if m == List then return "[" .. concat(parts, ", ") .. "]" end
    return "(" .. concat(parts, ", ") .. (#x == 1 and ",)" or ")")
  elseif m == Dict then
    local parts = {}
    for i, k in ipairs(x.keys) do parts[i] = repr(k, depth) .. ": " .. repr(x.map[k], depth) end
    return "{" .. concat(parts, ", ") .. "}"
  end
  return M.str(x)
end
M.repr = repr

-- <Namespace {'a': 1}> and <LoopContext 2/5>, as jinja2 prints them.
function M.obj_str(x)
  if x.kind == "LoopContext" then return "<LoopContext " .. x.attrs.index .. "/" .. x.attrs.length .. ">" end
  if not x.order then return "<" .. x.kind .. ">" end
  local parts = {}
  for i, k in ipairs(x.order) do parts[i] = repr(k) .. ": " .. repr(x.attrs[k]) end
  return "<" .. x.kind .. " {" .. concat(parts, ", ") .. "}>"
end

--- Python's str() of a value, as {{ }} prints it (Undefined prints "").
function M.str(x)
  local t = type(x)
  if t == "string" then return x elseif t == "number" then return num_str(x)
  elseif t == "boolean" then return x and "True" or "False" end
  if x == NONE then return "None" end
  local m = getmetatable(x)
  if m == Undef then return "" elseif m == Float then return M.float_repr(x.v) elseif m == Markup then return x.s
  elseif m == List or m == Tuple or m == Dict then return repr(x)
  elseif m == Obj then return M.obj_str(x) elseif m == Fn then return "<function " .. x.name .. ">"
  elseif m == Gen then return "<" .. x.kind .. " object>" end
  return tostring(x)
end

-- ---------------------------------------------------------------- JSON out (Python json.dumps)

local json_esc = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\b"] = "\\b", ["\f"] = "\\f" }

utf8_cp = function(c)
  local b = c:byte(1)
  if b < 0x80 or #c == 1 then return b end
  local n = b >= 0xF0 and 4 or b >= 0xE0 and 3 or 2
  local cp = b % (2 ^ (7 - n))
  for i = 2, #c do cp = cp * 64 + c:byte(i) % 64 end
  return cp
end

function M.json_string(s, ascii)
  s = s:gsub('[%c"\\]', function(c) return json_esc[c] or fmt("\\u%04x", c:byte()) end)
  if ascii and s:find("[\128-\255]") then
    s = s:gsub("[\192-\255][\128-\191]*", function(c)
      local cp = utf8_cp(c)
      if cp < 0x10000 then return fmt("\\u%04x", cp) end
      cp = cp - 0x10000
      return fmt("\\u%04x\\u%04x", 0xD800 + floor(cp / 1024), 0xDC00 + cp % 1024)
    end)
  end
  return '"' .. s .. '"'
end

local function json_key(k, o)
  if type(k) == "string" then return M.json_string(k, o.ascii) end
  if type(k) == "boolean" then return k and '"true"' or '"false"' end
  if k == NONE then return '"null"' end
  if type(k) == "number" then return '"' .. num_str(k) .. '"' end
  fail("keys must be str, int, float, bool or None, not " .. M.typename(k))
end

local function dump(x, o, level)
  tick(1)
  check_depth(level)
  local t = type(x)
  if t == "string" then return M.json_string(x, o.ascii)
  elseif t == "boolean" then return x and "true" or "false"
  elseif t == "number" then
    if x ~= x then return "NaN" elseif x == huge then return "Infinity" elseif x == -huge then return "-Infinity" end
    return num_str(x)
  end
  if x == NONE then return "null" end
  local m = getmetatable(x)
  if m == Float then return M.float_repr(x.v) elseif m == Markup then return M.json_string(x.s, o.ascii) end
  local nl = o.indent and "\n" .. string.rep(o.indent, level + 1) or nil
  local close = o.indent and "\n" .. string.rep(o.indent, level) or ""
  local sep = nl and (o.item_sep .. nl) or o.item_sep
  if m == List or m == Tuple then
    if #x == 0 then return "[]" end
    local parts = {}
    for i = 1, #x do parts[i] = dump(x[i], o, level + 1) end
    return "[" .. (nl or "") .. concat(parts, sep) .. close .. "]"
  elseif m == Dict then
    if #x.keys == 0 then return "{}" end
    local keys = x.keys
    if o.sort_keys then
      keys = M.copy(keys)
      table.sort(keys, function(a, b) return M.lt(a, b) end)
    end
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = json_key(k, o) .. o.key_sep .. dump(x.map[k], o, level + 1) end
    return "{" .. (nl or "") .. concat(parts, sep) .. close .. "}"
  end
  fail("Object of type " .. M.typename(x) .. " is not JSON serializable")
end

--- json.dumps(x, ensure_ascii=, indent=, separators=, sort_keys=) as
-- transformers' tojson filter calls it (ensure_ascii False by default).
-- @tparam table o {ascii=bool, indent=string|nil, item_sep=, key_sep=, sort_keys=bool}
function M.to_json(x, o)
  o.item_sep = o.item_sep or (o.indent and "," or ", ")
  o.key_sep = o.key_sep or ": "
  return dump(x, o, 0)
end

-- ---------------------------------------------------------------- equality and order

local function eq(a, b)
  tick(1)
  a, b = plain(a), plain(b)
  if a == b then return true end
  local na, nb = M.num(a), M.num(b)
  if na and nb then return na == nb end
  local ma, mb = getmetatable(a), getmetatable(b)
  if ma ~= mb or ma == nil then return false end
  if ma == List or ma == Tuple then
    if #a ~= #b then return false end
    for i = 1, #a do if not eq(a[i], b[i]) then return false end end
    return true
  elseif ma == Dict then
    if #a.keys ~= #b.keys then return false end
    for _, k in ipairs(a.keys) do
      local v = b.map[k]
      if v == nil or not eq(a.map[k], v) then return false end
    end
    return true
  elseif ma == Undef then
    return true
  end
  return false
end
M.eq = eq

function M.lt(a, b)
  tick(1)
  a, b = plain(a), plain(b)
  local na, nb = M.num(a), M.num(b)
  if na and nb then return na < nb end
  if type(a) == "string" and type(b) == "string" then return a < b end
  local ma = getmetatable(a)
  if (ma == List or ma == Tuple) and getmetatable(b) == ma then
    for i = 1, math.min(#a, #b) do
      if not eq(a[i], b[i]) then return M.lt(a[i], b[i]) end
    end
    return #a < #b
  end
  if ma == Undef then M.undef_fail(a) end
  if getmetatable(b) == Undef then M.undef_fail(b) end
  fail("'<' not supported between instances of '" .. M.typename(a) .. "' and '" .. M.typename(b) .. "'")
end

-- ---------------------------------------------------------------- containers

--- The items a for loop sees: list/tuple items, dict keys, string
-- characters; nothing for Undefined.
function M.iter(x)
  x = plain(x)
  if type(x) == "string" then return M.chars(x) end
  local m = getmetatable(x)
  if m == List or m == Tuple or m == Gen then
    tick(#x)
    return x
  elseif m == Dict then
    tick(#x.keys)
    return x.keys
  elseif m == Undef then return {} end
  fail("'" .. M.typename(x) .. "' object is not iterable")
end

function M.len(x)
  x = plain(x)
  if type(x) == "string" then return M.strlen(x) end
  local m = getmetatable(x)
  if m == List or m == Tuple then return #x
  elseif m == Dict then return #x.keys
  elseif m == Undef then return 0 end
  fail("object of type '" .. M.typename(x) .. "' has no len()")
end

function M.contains(c, item)
  c, item = plain(c), plain(item)
  if type(c) == "string" then
    tick(#c / 64)
    if type(item) ~= "string" then fail("'in <string>' requires string as left operand, not " .. M.typename(item)) end
    return c:find(item, 1, true) ~= nil
  end
  local m = getmetatable(c)
  if m == List or m == Tuple or m == Gen then
    for i = 1, #c do if eq(c[i], item) then return true end end
    return false
  elseif m == Dict then
    return M.dget(c, item) ~= nil
  elseif m == Undef then
    return false
  end
  fail("argument of type '" .. M.typename(c) .. "' is not iterable")
end

-- ---------------------------------------------------------------- from Lua

--- A template value from a Lua value: arrays become lists, other tables
-- dicts with their keys sorted (Lua tables have no order), nil None.
-- Values already made here (value.dict(), from_json) pass as they are.
function M.from_lua(x, depth)
  depth = (depth or 0) + 1
  if depth > 100 then error("jinja: a value is nested more than 100 levels deep (a cycle?)", 0) end
  local t = type(x)
  if x == nil then return NONE end
  if t == "string" or t == "number" or t == "boolean" then return x end
  if t == "function" then
    return M.fn("function", function(_, args)
      local lua_args = {}
      for i = 1, #args do lua_args[i] = M.to_lua(args[i]) end
      return M.from_lua(x(unpack(lua_args, 1, #args)), 0)
    end)
  end
  if t ~= "table" then error("jinja: cannot pass a " .. t .. " to a template", 0) end
  local m = getmetatable(x)
  if m ~= nil then
    if m == List or m == Tuple then
      local out = setmetatable({}, m)
      for i = 1, #x do out[i] = M.from_lua(x[i], depth) end
      return out
    elseif m == Dict then
      local out = M.dict()
      for _, k in ipairs(x.keys) do M.dset(out, k, M.from_lua(x.map[k], depth)) end
      return out
    end
    return x
  end
  local n, count = #x, 0
  for _ in pairs(x) do count = count + 1 end
  if count == n then
    local out = M.list()
    for i = 1, n do out[i] = M.from_lua(x[i], depth) end
    return out
  end
  local keys = {}
  for k in pairs(x) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) < type(b)
  end)
  local out = M.dict()
  for _, k in ipairs(keys) do M.dset(out, k, M.from_lua(x[k], depth)) end
  return out
end

--- A Lua value from a template value (lists as arrays, dicts as tables,
-- None as nil).
function M.to_lua(x)
  if x == NONE or getmetatable(x) == Undef then return nil end
  local m = getmetatable(x)
  if m == Float then return x.v elseif m == Markup then return x.s end
  if m == List or m == Tuple or m == Gen then
    local out = {}
    for i = 1, #x do out[i] = M.to_lua(x[i]) end
    return out
  elseif m == Dict then
    local out = {}
    for _, k in ipairs(x.keys) do out[k] = M.to_lua(x.map[k]) end
    return out
  end
  return x
end

return M
