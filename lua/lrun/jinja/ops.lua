--- lrun.jinja.ops — what templates do to values: attributes and items (as
-- jinja2's sandboxed getattr/getitem: an attribute that is missing is
-- Undefined; a method that would change a list or dict is refused, as
-- ImmutableSandboxedEnvironment refuses it), slices, arithmetic, and the
-- Python methods of str, dict and list that chat templates call.
-- @module lrun.jinja.ops
local V = require("lrun.jinja.value")

local M = {}

local NONE, fail, undef = V.NONE, V.fail, V.undef
local getmetatable, floor, concat = getmetatable, math.floor, table.concat
local List, Tuple, Dict, Obj, Undef = V.List, V.Tuple, V.Dict, V.Obj, V.Undef

--- Fails when a string being built would pass the output limit.
function M.check_size(S, n)
  if n > S.limits.max_output then fail("a value grew past " .. S.limits.max_output .. " bytes", "limit") end
  V.tick(n / 64)
end

-- ---------------------------------------------------------------- argument helpers

--- The argument at position i or keyword name, else default.
local function arg(args, kwargs, i, name, default)
  if args[i] ~= nil then return args[i] end
  for _, kv in ipairs(kwargs) do if kv[1] == name then return kv[2] end end
  return default
end
M.arg = arg

local function opt(x) if x == NONE then return nil end return x end

local function want_str(x, what)
  if type(x) ~= "string" then
    if getmetatable(x) == Undef then V.undef_fail(x) end
    fail(what .. " must be str, not " .. V.typename(x))
  end
  return x
end

local function want_int(x, what)
  local n = V.num(x)
  if not n or not V.is_int(n) or getmetatable(x) == V.Float then
    if getmetatable(x) == Undef then V.undef_fail(x) end
    fail(what .. " must be an integer, not " .. V.typename(x))
  end
  return n
end
M.want_int = want_int

-- ---------------------------------------------------------------- str methods

local SPACE = "[ \t\n\r\f\v\28-\31]"

local function strip(s, chars, left, right)
  chars = opt(chars)
  if chars == nil then
    if left then s = s:gsub("^" .. SPACE .. "+", "") end
    if right then s = V.rstrip(s) end
    return s
  end
  want_str(chars, "strip arg")
  if chars == "" then return s end
  local set = {}
  for _, c in ipairs(V.chars(chars)) do set[c] = true end
  local cs = V.chars(s)
  local a, b = 1, #cs
  if left then while a <= b and set[cs[a]] do a = a + 1 end end
  if right then while b >= a and set[cs[b]] do b = b - 1 end end
  return concat(cs, "", a, b)
end

local function split_ws(s, maxsplit)
  local out = V.list()
  local pos = s:find("[^ \t\n\r\f\v\28-\31]") or #s + 1
  while pos <= #s do
    if maxsplit >= 0 and #out >= maxsplit then
      out[#out + 1] = s:sub(pos)
      return out
    end
    V.tick(1)
    local a, b = s:find(SPACE .. "+", pos)
    if not a then out[#out + 1] = s:sub(pos); break end
    out[#out + 1] = s:sub(pos, a - 1)
    pos = b + 1
  end
  return out
end

local function split(s, sep, maxsplit)
  sep, maxsplit = opt(sep), maxsplit and want_int(maxsplit, "maxsplit") or -1
  if sep == nil then return split_ws(s, maxsplit) end
  want_str(sep, "separator")
  if sep == "" then fail("empty separator") end
  local out, pos = V.list(), 1
  while true do
    if maxsplit >= 0 and #out >= maxsplit then break end
    V.tick(1)
    local a, b = s:find(sep, pos, true)
    if not a then break end
    out[#out + 1] = s:sub(pos, a - 1)
    pos = b + 1
  end
  out[#out + 1] = s:sub(pos)
  return out
end

-- str.rsplit(None, maxsplit): words from the right; what is left keeps its
-- leading text and loses its trailing space.
local function rsplit_ws(s, maxsplit)
  V.tick(#s / 8)
  local rev = {}
  local e = #s
  while true do
    while e > 0 and s:sub(e, e):match(SPACE) do e = e - 1 end
    if e == 0 then break end
    if #rev >= maxsplit then rev[#rev + 1] = s:sub(1, e); break end
    V.tick(1)
    local b = e
    while b > 0 and not s:sub(b, b):match(SPACE) do b = b - 1 end
    rev[#rev + 1] = s:sub(b + 1, e)
    e = b
  end
  local out = V.list()
  for i = #rev, 1, -1 do out[#out + 1] = rev[i] end
  return out
end

local function rsplit(s, sep, maxsplit)
  maxsplit = maxsplit and want_int(maxsplit, "maxsplit") or -1
  if maxsplit < 0 then return split(s, sep) end
  if opt(sep) == nil then return rsplit_ws(s, maxsplit) end
  local parts = split(s, sep)
  local keep = #parts - maxsplit
  if keep <= 1 then return parts end
  local out = V.list({ concat(parts, sep, 1, keep) })
  for i = keep + 1, #parts do out[#out + 1] = parts[i] end
  return out
end

local function title(s)
  local prev_letter = false
  return (s:gsub(".", function(c)
    local letter = c:match("%a") ~= nil
    local r = letter and (prev_letter and c:lower() or c:upper()) or c
    prev_letter = letter or (c:byte() >= 128 and prev_letter)
    return r
  end))
end
M.title = title

local function capitalize(s) return s:sub(1, 1):upper() .. V.lower(s:sub(2)) end
M.capitalize = capitalize

local function replace(S, s, old, new, count)
  want_str(old, "replace arg 1"); want_str(new, "replace arg 2")
  count = count and want_int(count, "count") or -1
  local out, pos, n = {}, 1, 0
  if old == "" then
    local cs = V.chars(s)
    for i, c in ipairs(cs) do
      if count < 0 or n < count then out[#out + 1] = new; n = n + 1 end
      out[#out + 1] = c
      local _ = i
    end
    if count < 0 or n < count then out[#out + 1] = new end
  else
    while count < 0 or n < count do
      local a, b = s:find(old, pos, true)
      if not a then break end
      out[#out + 1] = s:sub(pos, a - 1)
      out[#out + 1] = new
      pos, n = b + 1, n + 1
    end
    out[#out + 1] = s:sub(pos)
  end
  local size = 0
  for _, p in ipairs(out) do size = size + #p end
  M.check_size(S, size)
  return concat(out)
end
M.replace = replace

local function starts(s, prefix, at_end)
  local function one(p)
    p = want_str(p, at_end and "endswith arg" or "startswith arg")
    if at_end then return p == "" or s:sub(-#p) == p end
    return s:sub(1, #p) == p
  end
  if V.is_list(prefix) then
    for _, p in ipairs(prefix) do if one(p) then return true end end
    return false
  end
  return one(prefix)
end

-- A byte offset as a code point index.
local function cp_index(s, byte) return V.strlen(s:sub(1, byte - 1)) end

local function format(s, args, kwargs)
  local auto = 0
  local out = s:gsub("{([^{}]*)}", function(field)
    local v
    if field == "" then auto = auto + 1; v = args[auto]
    elseif field:match("^%d+$") then v = args[tonumber(field) + 1]
    else v = arg({}, kwargs, 1, field) end
    if v == nil then fail("format: no value for {" .. field .. "}") end
    return V.str(v)
  end)
  return out
end

local STR = {}
STR.strip = function(_, s, a) return strip(s, a[1], true, true) end
STR.lstrip = function(_, s, a) return strip(s, a[1], true, false) end
STR.rstrip = function(_, s, a) return strip(s, a[1], false, true) end
STR.split = function(_, s, a, k) return split(s, arg(a, k, 1, "sep"), arg(a, k, 2, "maxsplit")) end
STR.rsplit = function(_, s, a, k) return rsplit(s, arg(a, k, 1, "sep"), arg(a, k, 2, "maxsplit")) end
STR.splitlines = function(_, s)
  local out = V.list()
  for line in (s:gsub("\r\n?", "\n") .. "\n"):gmatch("(.-)\n") do out[#out + 1] = line end
  if s == "" or s:sub(-1) == "\n" or s:sub(-1) == "\r" then out[#out] = nil end
  return out
end
STR.startswith = function(_, s, a) return starts(s, a[1], false) end
STR.endswith = function(_, s, a) return starts(s, a[1], true) end
STR.upper = function(_, s) return V.upper(s) end
STR.lower = function(_, s) return V.lower(s) end
STR.casefold = STR.lower
STR.title = function(_, s) return title(s) end
STR.capitalize = function(_, s) return capitalize(s) end
STR.swapcase = function(_, s) return (s:gsub("%a", function(c) return c == c:upper() and c:lower() or c:upper() end)) end
STR.replace = function(S, s, a, k) return replace(S, s, arg(a, k, 1, "old"), arg(a, k, 2, "new"), arg(a, k, 3, "count")) end
STR.find = function(_, s, a)
  local i = s:find(want_str(a[1], "find arg"), 1, true)
  return i and cp_index(s, i) or -1
end
STR.rfind = function(_, s, a)
  local sub, last = want_str(a[1], "rfind arg"), nil
  local i = s:find(sub, 1, true)
  while i do last = i; i = s:find(sub, i + 1, true) end
  return last and cp_index(s, last) or -1
end
STR.index = function(S, s, a)
  local i = STR.find(S, s, a)
  if i < 0 then fail("substring not found") end
  return i
end
STR.count = function(_, s, a)
  local sub, n, pos = want_str(a[1], "count arg"), 0, 1
  if sub == "" then return V.strlen(s) + 1 end
  while true do
    local i, j = s:find(sub, pos, true)
    if not i then return n end
    n, pos = n + 1, j + 1
  end
end
STR.join = function(S, s, a)
  local parts = {}
  for i, x in ipairs(V.iter(a[1])) do parts[i] = want_str(x, "sequence item " .. (i - 1)) end
  local out = concat(parts, s)
  M.check_size(S, #out)
  return out
end
STR.format = function(_, s, a, k) return format(s, a, k) end
STR.isdigit = function(_, s) return s ~= "" and not s:find("%D") end
STR.isnumeric = STR.isdigit
STR.isdecimal = STR.isdigit
STR.isalpha = function(_, s) return s ~= "" and not s:find("%A") end
STR.isalnum = function(_, s) return s ~= "" and not s:find("%W") end
STR.isspace = function(_, s) return s ~= "" and not s:find("[^ \t\n\r\f\v\28-\31]") end
STR.isupper = function(_, s) return s:find("%a") ~= nil and not s:find("%l") end
STR.islower = function(_, s) return s:find("%a") ~= nil and not s:find("%u") end
STR.removeprefix = function(_, s, a)
  local p = want_str(a[1], "prefix")
  return s:sub(1, #p) == p and s:sub(#p + 1) or s
end
STR.removesuffix = function(_, s, a)
  local p = want_str(a[1], "suffix")
  return (p ~= "" and s:sub(-#p) == p) and s:sub(1, #s - #p) or s
end
STR.partition = function(_, s, a)
  local sep = want_str(a[1], "separator")
  local i, j = s:find(sep, 1, true)
  if not i then return V.tuple({ s, "", "" }) end
  return V.tuple({ s:sub(1, i - 1), sep, s:sub(j + 1) })
end
local function pad(S, s, a, where)
  local width = want_int(a[1], "width")
  local fill = a[2] and want_str(a[2], "fillchar") or " "
  local n = width - V.strlen(s)
  if n <= 0 then return s end
  M.check_size(S, #s + n * #fill)
  if where == "left" then return s .. fill:rep(n) elseif where == "right" then return fill:rep(n) .. s end
  local l = floor(n / 2) + ((n % 2 == 1 and width % 2 == 1) and 1 or 0)
  return fill:rep(l) .. s .. fill:rep(n - l)
end
STR.ljust = function(S, s, a) return pad(S, s, a, "left") end
STR.rjust = function(S, s, a) return pad(S, s, a, "right") end
STR.center = function(S, s, a) return pad(S, s, a, "center") end

-- ---------------------------------------------------------------- dict and list methods

local function items_of(d)
  local out = V.list()
  for i, k in ipairs(d.keys) do out[i] = V.tuple({ k, d.map[k] }) end
  return out
end
M.items_of = items_of

local DICT = {}
DICT.items = function(_, d) return items_of(d) end
DICT.keys = function(_, d) return V.copy(d.keys, List) end
DICT.values = function(_, d)
  local out = V.list()
  for i, k in ipairs(d.keys) do out[i] = d.map[k] end
  return out
end
DICT.get = function(_, d, a, k)
  local v = V.dget(d, a[1])
  if v == nil then return arg(a, k, 2, "default", NONE) end
  return v
end
DICT.copy = function(_, d) return V.from_lua(d) end

local LIST = {}
LIST.index = function(_, l, a)
  for i = 1, #l do if V.eq(l[i], a[1]) then return i - 1 end end
  fail(V.repr(a[1]) .. " is not in list")
end
LIST.count = function(_, l, a)
  local n = 0
  for i = 1, #l do if V.eq(l[i], a[1]) then n = n + 1 end end
  return n
end
LIST.copy = function(_, l) return V.copy(l, List) end

-- What ImmutableSandboxedEnvironment refuses (modifies_known_mutable).
local UNSAFE = {
  dict = { clear = true, pop = true, popitem = true, setdefault = true, update = true },
  list = { append = true, clear = true, extend = true, insert = true, pop = true, remove = true, reverse = true,
    sort = true },
}

-- A method bound to its object; a call costs steps by the object's size.
local function bound(name, self, m)
  local size = type(self) == "string" and #self / 64 or (getmetatable(self) == Dict and #self.keys) or #self
  return V.fn(name, function(S, args, kwargs)
    V.tick(size)
    return m(S, self, args, kwargs)
  end)
end

-- ---------------------------------------------------------------- attributes, items, slices

local function no_attr(o, name)
  return undef(name, "'" .. V.typename(o) .. " object' has no attribute '" .. name .. "'")
end

local function method(o, name)
  local tn = V.typename(o)
  if name:sub(1, 1) == "_" then
    return undef(name, "access to attribute '" .. name .. "' of '" .. tn .. "' object is unsafe.")
  end
  local unsafe = UNSAFE[tn == "tuple" and "list" or tn]
  if unsafe and unsafe[name] then
    return undef(name, "access to attribute '" .. name .. "' of '" .. tn .. "' object is unsafe.")
  end
  local t = type(o) == "string" and STR or tn == "dict" and DICT or (tn == "list" or tn == "tuple") and LIST
  local m = t and t[name]
  if m then return bound(name, o, m) end
end

--- o.name as jinja2 resolves it: an attribute (method), then an item.
function M.getattr(o, name)
  local m = getmetatable(o)
  if m == Undef then V.undef_fail(o) end
  if m == Obj then
    local v = o.attrs[name]
    if v == nil then return no_attr(o, name) end
    return v
  end
  local meth = method(o, name)
  if meth then return meth end
  if m == Dict then
    local v = V.dget(o, name)
    if v ~= nil then return v end
  end
  return no_attr(o, name)
end

local function index(n, key)
  local i = V.num(key)
  if i == nil or getmetatable(key) == V.Float or not V.is_int(i) then return nil end
  if i < 0 then i = n + i end
  if i < 0 or i >= n then return nil end
  return i + 1
end

--- o[key] as jinja2 resolves it: an item, then an attribute named key.
function M.getitem(o, key)
  local m = getmetatable(o)
  if m == Undef then V.undef_fail(o) end
  if m == Dict then
    local v = V.dget(o, key)
    if v ~= nil then return v end
  elseif m == List or m == Tuple then
    local i = index(#o, key)
    if i then return o[i] end
  elseif type(o) == "string" then
    local cs = V.chars(o)
    local i = index(#cs, key)
    if i then return cs[i] end
  elseif m == Obj then
    local v = type(key) == "string" and o.attrs[key]
    if v then return v end
  end
  if type(key) == "string" then return M.getattr(o, key) end
  return undef(V.str(key), "'" .. V.typename(o) .. " object' has no element " .. V.repr(key))
end

--- o[a:b:c] with Python's slice rules (a, b, c nil or None for absent).
function M.slice(o, a, b, c)
  local m = getmetatable(o)
  if m == Undef then V.undef_fail(o) end
  local items = o
  if type(o) == "string" then items = V.chars(o)
  elseif m ~= List and m ~= Tuple then
    -- jinja2's getitem turns the TypeError into an Undefined
    return undef("slice", "'" .. V.typename(o) .. "' object is not subscriptable")
  end
  a, b, c = opt(a), opt(b), opt(c)
  local step = c and want_int(c, "slice step") or 1
  if step == 0 then fail("slice step cannot be zero") end
  local n = #items
  V.tick(n)
  local lower, upper = 0, n
  if step < 0 then lower, upper = -1, n - 1 end
  local function bound_of(x, default)
    if x == nil then return default end
    x = want_int(x, "slice index")
    if x < 0 then return math.max(x + n, lower) end
    return math.min(x, upper)
  end
  local start = bound_of(a, step > 0 and lower or upper)
  local stop = bound_of(b, step > 0 and upper or lower)
  local out = {}
  if step > 0 then
    for i = start, stop - 1, step do out[#out + 1] = items[i + 1] end
  else
    for i = start, stop + 1, step do out[#out + 1] = items[i + 1] end
  end
  if type(o) == "string" then return concat(out) end
  return setmetatable(out, m)
end

-- ---------------------------------------------------------------- operators

local function check_undef(a, b)
  if getmetatable(a) == Undef then V.undef_fail(a) end
  if getmetatable(b) == Undef then V.undef_fail(b) end
end

local function unsupported(op, a, b)
  check_undef(a, b)
  if op == "+" and type(a) == "string" then
    fail('can only concatenate str (not "' .. V.typename(b) .. '") to str')
  end
  fail("unsupported operand type(s) for " .. op .. ": '" .. V.typename(a) .. "' and '" .. V.typename(b) .. "'")
end

local function repeat_seq(S, seq, n)
  if getmetatable(n) == V.Float or not V.is_int(V.num(n)) then return nil end
  n = V.num(n)
  if type(seq) == "string" then
    if n <= 0 then return "" end
    M.check_size(S, #seq * n)
    return seq:rep(n)
  end
  local out = setmetatable({}, getmetatable(seq))
  if n <= 0 then return out end
  M.check_size(S, #seq * n)
  for _ = 1, n do for i = 1, #seq do out[#out + 1] = seq[i] end end
  return out
end

-- "%s" % x (printf-style string formatting, as the format filter too).
function M.percent_format(S, s, args)
  local i = 0
  local out = s:gsub("%%([-+ #0]*%d*%.?%d*)([sdirfgexXo%%])", function(flags, conv)
    if conv == "%" then return "%" end
    i = i + 1
    local v = args[i]
    if v == nil then fail("not enough arguments for format string") end
    if conv == "s" or conv == "r" then
      return string.format("%" .. flags:gsub("[^-%d]", "") .. "s", conv == "s" and V.str(v) or V.repr(v))
    end
    local x = V.num(v)
    if not x then fail("%" .. conv .. " format: a real number is required, not " .. V.typename(v)) end
    if conv == "d" or conv == "i" then conv = "d"; x = x < 0 and math.ceil(x) or floor(x) end
    return string.format("%" .. flags .. conv, x)
  end)
  if i < #args then fail("not all arguments converted during string formatting") end
  M.check_size(S, #out)
  return out
end

-- Markup + str escapes the str (either side); Markup % args escapes the
-- string args; a Markup is a plain string to every other operator.
local function markup_binop(S, op, a, b)
  local ma, mb = getmetatable(a) == V.Markup, getmetatable(b) == V.Markup
  if op == "+" and (ma or type(a) == "string") and (mb or type(b) == "string") then
    local x, y = ma and a.s or V.escape(a), mb and b.s or V.escape(b)
    M.check_size(S, #x + #y)
    return V.markup(x .. y)
  elseif op == "%" and ma then
    local args = getmetatable(b) == Tuple and b or { b }
    local esc = {}
    for i = 1, #args do
      local v = args[i]
      esc[i] = type(v) == "string" and V.escape(v) or V.plain(v)
    end
    return V.markup(M.percent_format(S, a.s, esc))
  end
end

--- a op b for + - * / // % **.
function M.binop(S, op, a, b)
  if getmetatable(a) == V.Markup or getmetatable(b) == V.Markup then
    local r = markup_binop(S, op, a, b)
    if r then return r end
    a, b = V.plain(a), V.plain(b)
  end
  local x, xf = V.num(a)
  local y, yf = V.num(b)
  local isf = xf or yf
  if x and y then
    if op == "+" then local r = x + y return isf and V.float(r) or r
    elseif op == "-" then local r = x - y return isf and V.float(r) or r
    elseif op == "*" then local r = x * y return isf and V.float(r) or r
    elseif op == "/" then
      if y == 0 then fail("division by zero") end
      return V.float(x / y)
    elseif op == "//" then
      if y == 0 then fail(isf and "float floor division by zero" or "integer division or modulo by zero") end
      local r = floor(x / y)
      return isf and V.float(r) or r
    elseif op == "%" then
      if y == 0 then fail(isf and "float modulo" or "integer division or modulo by zero") end
      local r = x % y
      return isf and V.float(r) or r
    else
      local r = x ^ y
      if isf or y < 0 then return V.float(r) end
      return r
    end
  end
  local ta, tb = type(a), type(b)
  if op == "+" then
    if ta == "string" and tb == "string" then
      M.check_size(S, #a + #b)
      return a .. b
    end
    local ma = getmetatable(a)
    if (ma == List or ma == Tuple) and getmetatable(b) == ma then
      M.check_size(S, (#a + #b) * 8)
      local out = V.copy(a, ma)
      for i = 1, #b do out[#out + 1] = b[i] end
      return out
    end
  elseif op == "*" then
    local r
    if ta == "string" or V.is_list(a) then r = repeat_seq(S, a, b)
    elseif tb == "string" or V.is_list(b) then r = repeat_seq(S, b, a) end
    if r then return r end
  elseif op == "%" and ta == "string" then
    return M.percent_format(S, a, getmetatable(b) == Tuple and b or { b })
  end
  return unsupported(op, a, b)
end

return M
