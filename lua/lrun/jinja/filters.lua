--- lrun.jinja.filters — jinja2's built-in filters and tests that chat
-- templates use, transformers' tojson (json.dumps with ensure_ascii=False,
-- keys in insertion order), and the globals of transformers' environment:
-- range (at most 100,000 items, as the sandbox allows), dict, namespace,
-- raise_exception, strftime_now.
-- Each filter is fn(S, value, args, kwargs) with kwargs {{name, value}...}.
-- @module lrun.jinja.filters
local V = require("lrun.jinja.value")
local O = require("lrun.jinja.ops")

local M = {}

local NONE, fail, undef, truthy, vstr = V.NONE, V.fail, V.undef, V.truthy, V.str
local getmetatable, concat = getmetatable, table.concat
local arg, want_int = O.arg, O.want_int

local filters, tests = {}, {}
M.filters, M.tests = filters, tests

local function seq(v) return V.iter(v) end
local function opt(x) if x == NONE then return nil end return x end

-- Attribute lookup for map/selectattr/sort(attribute=): "a.b" and "0" work.
local function attr_getter(path)
  local parts = {}
  for p in vstr(path):gmatch("[^.]+") do parts[#parts + 1] = tonumber(p) or p end
  return function(x)
    for _, p in ipairs(parts) do x = O.getitem(x, p) end
    return x
  end
end

-- ---------------------------------------------------------------- strings

filters.trim = function(_, v, a, k)
  local chars = arg(a, k, 1, "chars")
  local s = vstr(v)
  local strip = O.getattr(s, "strip")
  return strip.fn(nil, chars and { chars } or {}, {})
end
filters.upper = function(_, v) return V.upper(vstr(v)) end
filters.lower = function(_, v) return V.lower(vstr(v)) end
-- jinja2's title filter (not str.title): words begin after -, space, ( { [ <
filters.title = function(_, v)
  return (vstr(v):gsub("([^-%s({%[<]+)", function(w) return w:sub(1, 1):upper() .. V.lower(w:sub(2)) end))
end
filters.capitalize = function(_, v) return O.capitalize(vstr(v)) end
filters.string = function(_, v) return vstr(v) end
filters.center = function(S, v, a, k)
  return O.getattr(vstr(v), "center").fn(S, { arg(a, k, 1, "width", 80) }, {})
end
filters.safe = function(_, v)
  if getmetatable(v) == V.Markup then return v end
  return V.markup(vstr(v))
end
filters.replace = function(S, v, a, k)
  return O.replace(S, vstr(v), vstr(arg(a, k, 1, "old")), vstr(arg(a, k, 2, "new")), opt(arg(a, k, 3, "count")))
end
-- Python's \w beyond ASCII, roughly: letters of the alphabetic scripts and
-- CJK count, symbols and emoji do not.
local function word_cp(c)
  if #c == 1 then return c:match("[%w_]") ~= nil end
  local cp = V.codepoint(c)
  return (cp >= 0xC0 and cp < 0x2000 and cp ~= 0xD7 and cp ~= 0xF7) or (cp >= 0x3040 and cp < 0xD7A4)
    or (cp >= 0xF900 and cp < 0xFB00)
end
filters.wordcount = function(_, v)
  local n, inword = 0, false
  for _, c in ipairs(V.chars(vstr(v))) do
    local w = word_cp(c)
    if w and not inword then n = n + 1 end
    inword = w
  end
  return n
end
filters.escape = function(_, v)
  if getmetatable(v) == V.Markup then return v end
  return V.markup(V.escape(vstr(v)))
end
filters.e = filters.escape
filters.format = function(S, v, a) return O.percent_format(S, vstr(v), a) end

-- indent(width=4, first=False, blank=False), as jinja2 3.1 does it
filters.indent = function(S, v, a, k)
  local width = arg(a, k, 1, "width", 4)
  local first, blank = truthy(arg(a, k, 2, "first", false)), truthy(arg(a, k, 3, "blank", false))
  local ind = type(width) == "string" and width or string.rep(" ", want_int(width, "width"))
  local s = vstr(v) .. "\n"
  local lines = O.getattr(s, "splitlines").fn(S, {}, {})
  local rv
  if blank then
    rv = concat(lines, "\n" .. ind)
  else
    rv = lines[1] or ""
    if #lines > 1 then
      local rest = {}
      for i = 2, #lines do rest[#rest + 1] = lines[i] ~= "" and ind .. lines[i] or lines[i] end
      rv = rv .. "\n" .. concat(rest, "\n")
    end
  end
  if first then rv = ind .. rv end
  O.check_size(S, #rv)
  return rv
end

filters.tojson = function(S, v, a, k)
  local ascii = truthy(arg(a, k, 1, "ensure_ascii", false))
  local indent = opt(arg(a, k, 2, "indent"))
  local seps = opt(arg(a, k, 3, "separators"))
  local sort_keys = truthy(arg(a, k, 4, "sort_keys", false))
  local o = { ascii = ascii, sort_keys = sort_keys }
  if indent ~= nil then
    if type(indent) == "string" then o.indent = indent
    else o.indent = string.rep(" ", math.max(0, want_int(indent, "indent"))) end
  end
  if seps ~= nil then
    if not V.is_list(seps) or #seps ~= 2 then fail("tojson: separators must be a pair (item, key)") end
    o.item_sep, o.key_sep = vstr(seps[1]), vstr(seps[2])
  end
  local out = V.to_json(v, o)
  O.check_size(S, #out)
  return out
end

-- ---------------------------------------------------------------- numbers

filters.int = function(_, v, a, k)
  local default = arg(a, k, 1, "default", 0)
  local base = arg(a, k, 2, "base", 10)
  if type(v) == "string" and base ~= 10 then
    base = want_int(base, "base")
    local s = V.rstrip((v:gsub("^%s+", ""))):gsub("_", ""):lower()
    local sign = s:match("^[-+]") or ""
    s = s:sub(#sign + 1)
    local prefix = ({ [16] = "0x", [8] = "0o", [2] = "0b" })[base]
    if prefix and s:sub(1, 2) == prefix then s = s:sub(3) end
    local n = base >= 2 and base <= 36 and s:match("^%w+$") and tonumber(s, base)
    if not n then return default end
    return sign == "-" and -n or n
  end
  if type(v) == "string" then
    local s = V.rstrip((v:gsub("^%s+", ""))):gsub("_", "")
    local n = s:match("^[-+]?%d+$") and tonumber(s) or tonumber(s:match("^[-+]?%d*%.?%d*[eE]?[-+]?%d*$") or "")
    if not n then return default end
    return n < 0 and math.ceil(n) or math.floor(n)
  end
  local n = V.num(v)
  if not n or n ~= n or n == math.huge or n == -math.huge then return default end
  return n < 0 and math.ceil(n) or math.floor(n)
end
filters.float = function(_, v, a, k)
  local n = type(v) == "string" and tonumber(V.rstrip((v:gsub("^%s+", "")))) or V.num(v)
  if not n then return arg(a, k, 1, "default", V.float(0)) end
  return V.float(n)
end
filters.abs = function(_, v)
  local n, isf = V.num(v)
  if not n then fail("bad operand type for abs(): '" .. V.typename(v) .. "'") end
  return isf and V.float(math.abs(n)) or math.abs(n)
end
filters.round = function(_, v, a, k)
  local precision = want_int(arg(a, k, 1, "precision", 0), "precision")
  local method = arg(a, k, 2, "method", "common")
  local n = V.num(v)
  if not n then fail("round: a number is required, not " .. V.typename(v)) end
  local m = 10 ^ precision
  local r
  if method == "common" then
    -- Python's round(): halves go to the even neighbour
    local x = n * m
    local f = math.floor(x)
    local d = x - f
    if d > 0.5 or (d == 0.5 and f % 2 == 1) then f = f + 1 end
    r = f / m
  elseif method == "ceil" then r = math.ceil(n * m) / m
  elseif method == "floor" then r = math.floor(n * m) / m
  else fail("method must be 'common', 'ceil' or 'floor'") end
  return V.float(r)
end

-- ---------------------------------------------------------------- sequences

filters.length = function(_, v) return V.len(v) end
filters.count = filters.length
filters.first = function(_, v)
  local items = seq(v)
  if items[1] == nil then return undef("first", "No first item, sequence was empty.") end
  return items[1]
end
filters.last = function(_, v)
  if getmetatable(v) == V.Gen then fail("'" .. v.kind .. "' object is not reversible") end
  local items = seq(v)
  if #items == 0 then return undef("last", "No last item, sequence was empty.") end
  return items[#items]
end
filters.list = function(_, v)
  local out = V.list()
  for i, x in ipairs(seq(v)) do out[i] = x end
  return out
end
-- a string reversed; a list's reversed() iterator; anything else a list
filters.reverse = function(_, v)
  if type(v) == "string" then return concat(O.slice(V.list(V.chars(v)), nil, nil, -1)) end
  local r = O.slice(filters.list(nil, v), nil, nil, -1)
  if V.is_list(v) then return V.gen(r, "list_reverseiterator") end
  return r
end
filters.join = function(S, v, a, k)
  local sep = vstr(arg(a, k, 1, "d", ""))
  local attribute = arg(a, k, 2, "attribute")
  local get = attribute and attr_getter(attribute)
  local parts, size = {}, 0
  for i, x in ipairs(seq(v)) do
    local y = x
    if get then y = get(x) end
    parts[i] = vstr(y)
    size = size + #parts[i] + #sep
  end
  O.check_size(S, size)
  return concat(parts, sep)
end
filters.items = function(_, v)
  if getmetatable(v) == V.Undef then return V.list() end
  if not V.is_dict(v) then fail("can only get item pairs from a mapping, not " .. V.typename(v)) end
  return V.gen(O.items_of(v))
end
filters.default = function(_, v, a, k)
  local d = arg(a, k, 1, "default_value", "")
  local boolean = truthy(arg(a, k, 2, "boolean", false))
  if getmetatable(v) == V.Undef or (boolean and not truthy(v)) then return d end
  return v
end
filters.d = filters.default
filters.batch = function(_, v, a, k)
  local n = want_int(arg(a, k, 1, "linecount"), "linecount")
  if n <= 0 then fail("batch: linecount must be positive") end
  local fill = arg(a, k, 2, "fill_with")
  local out, cur = V.gen({}), V.list()
  for _, x in ipairs(seq(v)) do
    if #cur == n then out[#out + 1] = cur; cur = V.list() end
    cur[#cur + 1] = x
  end
  if #cur > 0 then
    if fill ~= nil then while #cur < n do cur[#cur + 1] = fill end end
    out[#out + 1] = cur
  end
  return out
end

local function sort_key(case_sensitive, attribute)
  local get = attribute and attr_getter(attribute)
  return function(x)
    if get then x = get(x) end
    if not case_sensitive and type(x) == "string" then x = x:lower() end
    return x
  end
end

local function stable_sort(items, key, reverse)
  local keyed = {}
  for i, x in ipairs(items) do keyed[i] = { key(x), i, x } end
  table.sort(keyed, function(p, q)
    if V.lt(p[1], q[1]) then return not reverse end
    if V.lt(q[1], p[1]) then return reverse end
    return p[2] < q[2]
  end)
  local out = V.list()
  for i, p in ipairs(keyed) do out[i] = p[3] end
  return out
end

filters.sort = function(_, v, a, k)
  local reverse = truthy(arg(a, k, 1, "reverse", false))
  local cs = truthy(arg(a, k, 2, "case_sensitive", false))
  return stable_sort(seq(v), sort_key(cs, opt(arg(a, k, 3, "attribute"))), reverse)
end
filters.dictsort = function(_, v, a, k)
  local cs = truthy(arg(a, k, 1, "case_sensitive", false))
  local by = arg(a, k, 2, "by", "key")
  local reverse = truthy(arg(a, k, 3, "reverse", false))
  local pos = by == "key" and 1 or by == "value" and 2 or fail("You can only sort by either 'key' or 'value'")
  local key = sort_key(cs)
  return stable_sort(filters.items(nil, v), function(p) return key(p[pos]) end, reverse)
end
filters.unique = function(_, v, a, k)
  local cs = truthy(arg(a, k, 1, "case_sensitive", false))
  local key = sort_key(cs, opt(arg(a, k, 2, "attribute")))
  local out, seen = V.gen({}), {}
  for _, x in ipairs(seq(v)) do
    local kx = key(x)
    local dup = false
    for _, s in ipairs(seen) do if V.eq(s, kx) then dup = true; break end end
    if not dup then seen[#seen + 1] = kx; out[#out + 1] = x end
  end
  return out
end

local function extreme(v, a, k, want_max)
  local cs = truthy(arg(a, k, 1, "case_sensitive", false))
  local key = sort_key(cs, opt(arg(a, k, 2, "attribute")))
  local best, bk
  for _, x in ipairs(seq(v)) do
    local kx = key(x)
    if best == nil or (want_max and V.lt(bk, kx)) or (not want_max and V.lt(kx, bk)) then best, bk = x, kx end
  end
  if best == nil then return undef(want_max and "max" or "min", "No aggregated item, sequence was empty.") end
  return best
end
filters.max = function(_, v, a, k) return extreme(v, a, k, true) end
filters.min = function(_, v, a, k) return extreme(v, a, k, false) end
filters.sum = function(S, v, a, k)
  local attribute = opt(arg(a, k, 1, "attribute"))
  local get = attribute and attr_getter(attribute)
  local total = arg(a, k, 2, "start", 0)
  for _, x in ipairs(seq(v)) do
    local y = x
    if get then y = get(x) end
    total = O.binop(S, "+", total, y)
  end
  return total
end

-- select/reject(test, args...), selectattr/rejectattr(attr, test, args...)
local function select(S, v, a, k, by_attr, keep)
  local get = by_attr and attr_getter(a[1])
  local first = by_attr and 2 or 1
  local name = a[first]
  local targs = {}
  for i = first + 1, #a do targs[#targs + 1] = a[i] end
  local test
  if name == nil then test = function(_, x) return truthy(x) end
  else
    test = tests[vstr(name)]
    if not test then fail("no test named '" .. vstr(name) .. "'") end
  end
  local out = V.gen({})
  if not truthy(v) then return out end -- jinja2: "if value:", so None selects nothing
  for _, x in ipairs(seq(v)) do
    local y = x
    if get then y = get(x) end
    if truthy(test(S, y, targs, k)) == keep then out[#out + 1] = x end
  end
  return out
end
filters.select = function(S, v, a, k) return select(S, v, a, k, false, true) end
filters.reject = function(S, v, a, k) return select(S, v, a, k, false, false) end
filters.selectattr = function(S, v, a, k) return select(S, v, a, k, true, true) end
filters.rejectattr = function(S, v, a, k) return select(S, v, a, k, true, false) end

filters.map = function(S, v, a, k)
  local out = V.gen({})
  if not truthy(v) then return out end -- jinja2: "if value:", so None maps to nothing
  local attribute = arg({}, k, 1, "attribute")
  if attribute ~= nil then
    local get = attr_getter(attribute)
    local default = arg({}, k, 1, "default")
    for i, x in ipairs(seq(v)) do
      local y = get(x)
      if default ~= nil and getmetatable(y) == V.Undef then y = default end
      out[i] = y
    end
    return out
  end
  local name = a[1]
  if name == nil then fail("map requires a filter argument") end
  local f = filters[vstr(name)]
  if not f then fail("no filter named '" .. vstr(name) .. "'") end
  local fargs = {}
  for i = 2, #a do fargs[#fargs + 1] = a[i] end
  for i, x in ipairs(seq(v)) do out[i] = f(S, x, fargs, k) end
  return out
end
filters.attr = function(_, v, a) return O.getattr(v, vstr(a[1])) end

-- ---------------------------------------------------------------- tests

local function isnum(v) return type(v) == "number" or getmetatable(v) == V.Float end
tests.defined = function(_, v) return getmetatable(v) ~= V.Undef end
tests.undefined = function(_, v) return getmetatable(v) == V.Undef end
tests.none = function(_, v) return v == NONE end
tests.boolean = function(_, v) return type(v) == "boolean" end
tests["true"] = function(_, v) return v == true end
tests["false"] = function(_, v) return v == false end
tests.string = function(_, v) return type(v) == "string" end
tests.number = function(_, v) return isnum(v) end
tests.integer = function(_, v) return type(v) == "number" and V.is_int(v) end
tests.float = function(_, v) return isnum(v) and not V.is_int(v) or getmetatable(v) == V.Float end
tests.mapping = function(_, v) return V.is_dict(v) end
-- jinja2's Undefined has __len__, __getitem__ and __iter__: a sequence, iterable
tests.sequence = function(_, v)
  return type(v) == "string" or V.is_list(v) or V.is_dict(v) or getmetatable(v) == V.Undef
end
tests.iterable = function(S, v) return tests.sequence(S, v) or getmetatable(v) == V.Gen end
tests.callable = function(_, v) return getmetatable(v) == V.Fn end
tests.odd = function(_, v) return want_int(v, "odd test value") % 2 == 1 end
tests.even = function(_, v) return want_int(v, "even test value") % 2 == 0 end
tests.divisibleby = function(_, v, a)
  local d = want_int(a[1], "divisibleby arg")
  if d == 0 then fail("integer division or modulo by zero") end
  return want_int(v, "divisibleby value") % d == 0
end
tests.lower = function(_, v) return type(v) == "string" and v == v:lower() end
tests.upper = function(_, v) return type(v) == "string" and v == v:upper() end
tests.sameas = function(_, v, a) return v == a[1] end
tests.escaped = function(_, v) return getmetatable(v) == V.Markup end
tests["in"] = function(_, v, a) return V.contains(a[1], v) end
local function cmp(f) return function(_, v, a) return f(v, a[1]) end end
tests["=="] = cmp(V.eq)
tests.eq, tests.equalto = tests["=="], tests["=="]
tests["!="] = cmp(function(x, y) return not V.eq(x, y) end)
tests.ne = tests["!="]
tests["<"] = cmp(V.lt)
tests.lt, tests.lessthan = tests["<"], tests["<"]
tests[">"] = cmp(function(x, y) return V.lt(y, x) end)
tests.gt, tests.greaterthan = tests[">"], tests[">"]
tests["<="] = cmp(function(x, y) return V.lt(x, y) or V.eq(x, y) end)
tests.le = tests["<="]
tests[">="] = cmp(function(x, y) return V.lt(y, x) or V.eq(x, y) end)
tests.ge = tests[">="]
tests.filter = function(_, v) return type(v) == "string" and filters[v] ~= nil end
tests.test = function(_, v) return type(v) == "string" and tests[v] ~= nil end

-- ---------------------------------------------------------------- globals

local MAX_RANGE = 100000 -- jinja2.sandbox.MAX_RANGE

local function range(_, a)
  if #a == 0 then fail("range expected at least 1 argument, got 0") end
  local start, stop, step
  if #a == 1 then start, stop = 0, want_int(a[1], "range arg")
  else start, stop = want_int(a[1], "range arg 1"), want_int(a[2], "range arg 2") end
  step = 1
  if a[3] ~= nil then step = want_int(a[3], "range arg 3") end
  if step == 0 then fail("range() arg 3 must not be zero") end
  local n = step > 0 and math.ceil((stop - start) / step) or math.ceil((start - stop) / -step)
  if n > MAX_RANGE then
    fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (" .. MAX_RANGE .. ").", "limit")
  end
  V.tick(math.max(n, 0))
  local out = V.list()
  for i = 0, n - 1 do out[i + 1] = start + i * step end
  return out
end

local function namespace(_, a, k)
  local attrs, order = {}, {}
  local function set(name, v)
    if attrs[name] == nil then order[#order + 1] = name end
    attrs[name] = v
  end
  if a[1] ~= nil then
    if not V.is_dict(a[1]) then fail("namespace() takes a mapping or keyword arguments") end
    for _, key in ipairs(a[1].keys) do set(vstr(key), a[1].map[key]) end
  end
  for _, kv in ipairs(k) do set(kv[1], kv[2]) end
  return V.obj("Namespace", attrs, order)
end

local function dict(_, a, k)
  local d = V.dict()
  if a[1] ~= nil then
    if V.is_dict(a[1]) then for _, key in ipairs(a[1].keys) do V.dset(d, key, a[1].map[key]) end
    else for _, p in ipairs(seq(a[1])) do local kv = seq(p); V.dset(d, kv[1], kv[2]) end end
  end
  for _, kv in ipairs(k) do V.dset(d, kv[1], kv[2]) end
  return d
end

local function strftime_now(_, a)
  local f = a[1]
  if type(f) ~= "string" then fail("strftime_now: the format must be a string") end
  local ok, s = pcall(os.date, f)
  if not ok then fail("strftime_now: bad format " .. V.repr(f)) end
  return s
end

--- The globals a template sees besides its render variables.
function M.globals()
  return {
    range = V.fn("range", range),
    namespace = V.fn("namespace", namespace),
    dict = V.fn("dict", dict),
    raise_exception = V.fn("raise_exception", function(_, a) fail(vstr(a[1] or ""), "raised") end),
    strftime_now = V.fn("strftime_now", strftime_now),
  }
end

return M
