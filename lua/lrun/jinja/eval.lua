--- lrun.jinja.eval — runs a parsed template, as jinja2 would, within limits.
-- State S: buf (the output being written), out_bytes (counted against
-- limits.max_output), call_depth, node (the node being evaluated, for error
-- positions). Steps are counted in value.budget (value.tick), which filters
-- and comparisons pay into too. A scope is {vars=, parent=};
-- for-loop bodies get a fresh scope per iteration and macros one per call,
-- as in jinja2 (a set inside a loop does not outlive the iteration).
-- @module lrun.jinja.eval
local V = require("lrun.jinja.value")
local F = require("lrun.jinja.filters")
local O = require("lrun.jinja.ops")

local M = {}

local fail, truthy, vstr, plain = V.fail, V.truthy, V.str, V.plain
local getmetatable = getmetatable

local E, X = {}, {} -- expression and statement handlers, by node kind

local tick = V.tick

local function ev(S, n, sc)
  S.node = n
  tick(1)
  return E[n.k](S, n, sc)
end
M.ev = ev

local function write(S, s)
  local n = S.out_bytes + #s
  if n > S.limits.max_output then
    fail("the output grew past " .. S.limits.max_output .. " bytes", "limit")
  end
  S.out_bytes = n
  local buf = S.buf
  buf[#buf + 1] = s
end

local function exec(S, body, sc)
  for i = 1, #body do
    local n = body[i]
    S.node = n
    local sig = X[n.k](S, n, sc)
    if sig then return sig end
  end
end

local function capture(S, body, sc)
  local saved = S.buf
  S.buf = {}
  exec(S, body, sc)
  local out = table.concat(S.buf)
  S.buf = saved
  return out
end

local function lookup(S, sc, name)
  while sc do
    local v = sc.vars[name]
    if v ~= nil then return v end
    sc = sc.parent
  end
  local v = S.ctx[name]
  if v ~= nil then return v end
  v = S.globals[name]
  if v ~= nil then return v end
  return V.undef(name)
end

-- Arguments of a call, filter or test; a Markup passes as its string (only
-- + and % treat it apart).
local function args_of(S, n, sc)
  local args, kwargs = {}, {}
  for i, a in ipairs(n.args) do args[i] = plain(ev(S, a, sc)) end
  for i, kv in ipairs(n.kwargs) do kwargs[i] = { kv[1], plain(ev(S, kv[2], sc)) } end
  return args, kwargs
end

--- Calls a template value with args (list) and kwargs ({{name, value}...}).
function M.call(S, f, args, kwargs, caller)
  local m = getmetatable(f)
  if m == V.Fn then return f.fn(S, args, kwargs, caller) end
  if m == V.Undef then V.undef_fail(f) end
  fail("'" .. V.typename(f) .. "' object is not callable")
end

-- ---------------------------------------------------------------- expressions

E.lit = function(_, n) return n.v end
E.name = function(S, n, sc) return lookup(S, sc, n.n) end

E.list = function(S, n, sc)
  local out = V.list()
  for i, e in ipairs(n.items) do out[i] = ev(S, e, sc) end
  return out
end
E.tuple = function(S, n, sc)
  local out = V.tuple()
  for i, e in ipairs(n.items) do out[i] = ev(S, e, sc) end
  return out
end
E.dict = function(S, n, sc)
  local out = V.dict()
  for _, kv in ipairs(n.pairs) do
    local k = plain(ev(S, kv[1], sc))
    if getmetatable(k) == V.Undef then V.undef_fail(k) end
    V.dset(out, k, ev(S, kv[2], sc))
  end
  return out
end

E.getattr = function(S, n, sc)
  local o = plain(ev(S, n.o, sc))
  S.node = n
  return O.getattr(o, n.n)
end
E.getitem = function(S, n, sc)
  local o = plain(ev(S, n.o, sc))
  local key = plain(ev(S, n.key, sc))
  S.node = n
  return O.getitem(o, key)
end
E.slice = function(S, n, sc)
  local o = plain(ev(S, n.o, sc))
  local a = n.a and ev(S, n.a, sc)
  local b = n.b and ev(S, n.b, sc)
  local c = n.c and ev(S, n.c, sc)
  S.node = n
  return O.slice(o, a, b, c)
end

E.call = function(S, n, sc)
  local f = ev(S, n.f, sc)
  local args, kwargs = args_of(S, n, sc)
  S.node = n
  return M.call(S, f, args, kwargs)
end

-- Steps a filter or test pays for its input: its items, or 64 bytes a step.
local function size_cost(v)
  if type(v) == "string" then return #v / 64 end
  local m = getmetatable(v)
  if m == V.List or m == V.Tuple then return #v end
  if m == V.Dict then return #v.keys end
  return 0
end

-- The filters that see a Markup as a Markup.
local MARKUP_AWARE = { safe = true, escape = true, e = true }

E.filter = function(S, n, sc)
  local v = ev(S, n.e, sc)
  if not MARKUP_AWARE[n.name] then v = plain(v) end
  local args, kwargs = args_of(S, n, sc)
  S.node = n
  tick(size_cost(v))
  return F.filters[n.name](S, v, args, kwargs)
end

E.test = function(S, n, sc)
  local test = F.tests[n.name]
  if not test then
    S.node = n
    fail("no test named '" .. n.name .. "'")
  end
  local v = ev(S, n.e, sc)
  if n.name ~= "escaped" then v = plain(v) end
  local args, kwargs = args_of(S, n, sc)
  S.node = n
  local r = truthy(test(S, v, args, kwargs))
  if n.neg then return not r end
  return r
end

E.bin = function(S, n, sc)
  local a = ev(S, n.a, sc)
  local b = ev(S, n.b, sc)
  S.node = n
  return O.binop(S, n.op, a, b)
end

E["and"] = function(S, n, sc)
  local a = ev(S, n.a, sc)
  if not truthy(a) then return a end
  return ev(S, n.b, sc)
end
E["or"] = function(S, n, sc)
  local a = ev(S, n.a, sc)
  if truthy(a) then return a end
  return ev(S, n.b, sc)
end
E["not"] = function(S, n, sc) return not truthy(ev(S, n.e, sc)) end

E.neg = function(S, n, sc)
  local v = plain(ev(S, n.e, sc))
  local x, isf = V.num(v)
  S.node = n
  if not x then
    if getmetatable(v) == V.Undef then V.undef_fail(v) end
    fail("bad operand type for unary -: '" .. V.typename(v) .. "'")
  end
  return isf and V.float(-x) or -x
end
E.pos = function(S, n, sc)
  local v = ev(S, n.e, sc)
  if not V.num(v) then
    S.node = n
    if getmetatable(v) == V.Undef then V.undef_fail(v) end
    fail("bad operand type for unary +: '" .. V.typename(v) .. "'")
  end
  return v
end

local function compare(op, a, b)
  if op == "==" then return V.eq(a, b)
  elseif op == "!=" then return not V.eq(a, b)
  elseif op == "<" then return V.lt(a, b)
  elseif op == ">" then return V.lt(b, a)
  elseif op == "<=" then return V.lt(a, b) or V.eq(a, b)
  elseif op == ">=" then return V.lt(b, a) or V.eq(a, b)
  elseif op == "in" then return V.contains(b, a)
  else return not V.contains(b, a) end
end

E.cmp = function(S, n, sc)
  local a = ev(S, n.first, sc)
  for _, o in ipairs(n.ops) do
    local b = ev(S, o.e, sc)
    S.node = n
    if not compare(o.op, a, b) then return false end
    a = b
  end
  return true
end

E.concat = function(S, n, sc)
  local parts, size = {}, 0
  for i, e in ipairs(n.items) do
    parts[i] = vstr(ev(S, e, sc))
    size = size + #parts[i]
  end
  O.check_size(S, size)
  return table.concat(parts)
end

E.cond = function(S, n, sc)
  if truthy(ev(S, n.test, sc)) then return ev(S, n.a, sc) end
  if n.b then return ev(S, n.b, sc) end
  return V.undef("the inline if-expression evaluated to false and no else section was defined.")
end

-- ---------------------------------------------------------------- assignment

local function unpack_into(names, v, vars)
  local items = V.iter(v)
  if #items ~= #names then
    fail((#items > #names and "too many values to unpack" or "not enough values to unpack")
      .. " (expected " .. #names .. ", got " .. #items .. ")")
  end
  for i, name in ipairs(names) do vars[name] = items[i] end
end

local function assign(S, target, v, sc)
  if target.k == "name" then
    sc.vars[target.n] = v
  elseif target.k == "names" then
    unpack_into(target.names, v, sc.vars)
  else
    local ns = lookup(S, sc, target.ns)
    if getmetatable(ns) ~= V.Obj or ns.kind ~= "Namespace" then
      fail("cannot assign attribute on non-namespace object")
    end
    if ns.attrs[target.attr] == nil then ns.order[#ns.order + 1] = target.attr end
    ns.attrs[target.attr] = v
  end
end

-- ---------------------------------------------------------------- statements

X.text = function(S, n) write(S, n.s) end
X.out = function(S, n, sc) write(S, vstr(ev(S, n.e, sc))) end
X.block = function(S, n, sc) return exec(S, n.body, { vars = {}, parent = sc }) end
X["break"] = function() return "break" end
X.continue = function() return "continue" end

X["if"] = function(S, n, sc)
  for _, t in ipairs(n.tests) do
    if truthy(ev(S, t[1], sc)) then return exec(S, t[2], sc) end
  end
  if n.else_ then return exec(S, n.else_, sc) end
end

local function bind(target, item, vars)
  if target.k == "name" then vars[target.n] = item
  else unpack_into(target.names, item, vars) end
end

X["for"] = function(S, n, sc)
  local all = V.iter(ev(S, n.iter, sc))
  local items = all
  if n.cond then
    items = {}
    for _, item in ipairs(all) do
      local fsc = { vars = {}, parent = sc }
      bind(n.target, item, fsc.vars)
      if truthy(ev(S, n.cond, fsc)) then items[#items + 1] = item end
    end
  end
  local len = #items
  local loop_attrs
  local cycle = V.fn("cycle", function(_, args)
    if #args == 0 then fail("no items for cycling given") end
    return args[(loop_attrs.index0 % #args) + 1]
  end)
  local last_changed = {} -- loop.changed(*values): true when the values differ from the last call's
  local changed = V.fn("changed", function(_, args)
    local now = V.tuple(args)
    if last_changed.v ~= nil and V.eq(last_changed.v, now) then return false end
    last_changed.v = now
    return true
  end)
  for i = 1, len do
    S.node = n
    tick(1)
    local isc = { vars = {}, parent = sc }
    bind(n.target, items[i], isc.vars)
    loop_attrs = { index = i, index0 = i - 1, revindex = len - i + 1, revindex0 = len - i, first = i == 1,
      last = i == len, length = len, depth = 1, depth0 = 0, cycle = cycle, changed = changed,
      previtem = i > 1 and items[i - 1] or V.undef("there is no previous item"),
      nextitem = i < len and items[i + 1] or V.undef("there is no next item") }
    isc.vars.loop = V.obj("LoopContext", loop_attrs)
    if exec(S, n.body, isc) == "break" then break end
  end
  if len == 0 and n.else_ then return exec(S, n.else_, sc) end
end

X.set = function(S, n, sc) assign(S, n.target, ev(S, n.e, sc), sc) end

local function apply_filters(S, v, filters, sc)
  for _, f in ipairs(filters) do
    local args, kwargs = args_of(S, f, sc)
    S.node = f
    v = F.filters[f.name](S, v, args, kwargs)
  end
  return v
end

X.setblock = function(S, n, sc)
  local text = capture(S, n.body, { vars = {}, parent = sc })
  assign(S, n.target, apply_filters(S, text, n.filters, sc), sc)
end

X.filterblock = function(S, n, sc)
  local text = capture(S, n.body, { vars = {}, parent = sc })
  write(S, vstr(apply_filters(S, text, n.filters, sc)))
end

X.with = function(S, n, sc)
  local wsc = { vars = {}, parent = sc }
  for _, a in ipairs(n.assigns) do
    local v = ev(S, a[2], sc)
    if a[1].k == "name" then wsc.vars[a[1].n] = v else unpack_into(a[1].names, v, wsc.vars) end
  end
  return exec(S, n.body, wsc)
end

local function kwarg_index(params, name)
  for i, p in ipairs(params) do if p.name == name then return i end end
end

-- A macro (or a call block's caller) as a callable: binds arguments to the
-- parameters in a fresh scope under the defining one, renders the body.
local function macro(name, params, body, defscope, extra)
  extra = extra or {}
  return V.fn(name, function(S, args, kwargs, caller)
    if #args > #params and not extra.varargs then
      fail("macro '" .. name .. "' takes not more than " .. #params .. " argument(s)")
    end
    S.call_depth = S.call_depth + 1
    if S.call_depth > S.limits.max_depth then
      fail("macro calls nested more than " .. S.limits.max_depth .. " deep (endless recursion?)", "limit")
    end
    local msc = { vars = {}, parent = defscope }
    local given = {}
    local varargs, kwextra = V.tuple(), V.dict()
    for i, a in ipairs(args) do
      if i <= #params then given[i] = a else varargs[#varargs + 1] = a end
    end
    for _, kv in ipairs(kwargs) do
      local i = kwarg_index(params, kv[1])
      if not i and extra.kwargs then
        V.dset(kwextra, kv[1], kv[2])
        goto next_kwarg
      end
      if not i then fail("macro '" .. name .. "' takes no keyword argument '" .. kv[1] .. "'") end
      if given[i] ~= nil then fail("macro '" .. name .. "' got multiple values for argument '" .. kv[1] .. "'") end
      given[i] = kv[2]
      ::next_kwarg::
    end
    if extra.varargs then msc.vars.varargs = varargs end
    if extra.kwargs then msc.vars.kwargs = kwextra end
    for i, p in ipairs(params) do
      local v = given[i]
      if v == nil then
        if p.default then v = ev(S, p.default, msc)
        else v = V.undef(p.name, "parameter '" .. p.name .. "' was not provided") end
      end
      msc.vars[p.name] = v
    end
    if caller then msc.vars.caller = caller end
    local out = capture(S, body, msc)
    S.call_depth = S.call_depth - 1
    return out
  end)
end

X.macro = function(_, n, sc) sc.vars[n.name] = macro(n.name, n.params, n.body, sc, n) end

X.callblock = function(S, n, sc)
  local caller = macro("caller", n.params, n.body, sc)
  local f = ev(S, n.call.f, sc)
  local args, kwargs = args_of(S, n.call, sc)
  S.node = n
  write(S, vstr(M.call(S, f, args, kwargs, caller)))
end

-- ---------------------------------------------------------------- running

--- Renders a parsed template.
-- @tparam table body the parser's statement list
-- @tparam table ctx name → template value (the render variables)
-- @tparam table globals name → template value (range, namespace, ...)
-- @tparam table limits {max_steps=, max_output=, max_depth=}
-- @treturn string
function M.render(body, ctx, globals, limits)
  local S = { buf = {}, out_bytes = 0, call_depth = 0, ctx = ctx, globals = globals, limits = limits }
  -- a render inside a render (a Lua function passed as a value) keeps the outer budget
  local saved_budget, saved_max = V.budget, V.max_steps
  V.budget, V.max_steps = limits.max_steps, limits.max_steps
  local ok, err = pcall(exec, S, body, { vars = {}, parent = nil })
  V.budget, V.max_steps = saved_budget, saved_max
  if not ok then return nil, err, S.node end
  return table.concat(S.buf)
end

return M
