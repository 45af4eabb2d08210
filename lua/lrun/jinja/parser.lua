--- lrun.jinja.parser — tokens to a tree, with jinja2's grammar and operator
-- precedence (jinja2/parser.py): ternary < or < and < not < comparisons
-- (chained; in, not in) < + - < ~ < * / // % < ** < unary - + < filters
-- and tests (|f, is t) < postfix (.a, [k], [a:b:c], calls) < primaries.
--
-- Statement nodes: text, out, if, for, set, setblock, macro, callblock,
-- filterblock, with, block (generation), break, continue. Expression
-- nodes: lit, name, list, tuple, dict, getattr, getitem, slice, call,
-- filter, test, bin, and, or, not, neg, pos, cmp, concat, cond. Every node
-- has pos, the byte offset it starts at.
-- @module lrun.jinja.parser
local V = require("lrun.jinja.value")
local lexer = require("lrun.jinja.lexer")
local builtin = require("lrun.jinja.filters")

local M = {}

local MAX_DEPTH = 200 -- nesting of expressions and blocks; deeper fails cleanly

local P = {}
P.__index = P

function P:fail(msg, tok)
  tok = tok or self.toks[self.i]
  local line, col = lexer.where(self.src, tok.pos)
  error(setmetatable({ msg = msg, line = line, col = col, kind = "syntax" }, V.Err), 0)
end

function P:peek(k) return self.toks[self.i + (k or 0)] end
function P:next()
  local t = self.toks[self.i]
  self.i = self.i + 1
  return t
end
function P:is(ty, v, k)
  local t = self.toks[self.i + (k or 0)]
  return t.type == ty and (v == nil or t.value == v)
end
function P:skip(ty, v)
  if self:is(ty, v) then return self:next() end
end
local TOKEN_TEXT = { var_begin = "'{{'", var_end = "'}}'", block_begin = "'{%'", block_end = "'%}'",
  data = "template text", eof = "end of template" }
local function describe(t)
  if TOKEN_TEXT[t.type] then return TOKEN_TEXT[t.type] end
  if t.value ~= nil then return "'" .. V.str(t.value) .. "'" end
  return t.type
end
function P:expect(ty, v)
  if self:is(ty, v) then return self:next() end
  self:fail("expected " .. (v and ("'" .. v .. "'") or ty) .. ", got " .. describe(self:peek()))
end
function P:enter()
  self.depth = self.depth + 1
  if self.depth > MAX_DEPTH then self:fail("template nested more than " .. MAX_DEPTH .. " levels deep") end
end
function P:leave() self.depth = self.depth - 1 end

-- ---------------------------------------------------------------- expressions

local COMPARE = { ["=="] = true, ["!="] = true, ["<"] = true, ["<="] = true, [">"] = true, [">="] = true }

function P:expression(no_cond)
  self:enter()
  local pos = self:peek().pos
  local e = self:or_()
  if not no_cond then
    while self:skip("name", "if") do
      local test = self:or_()
      local other
      if self:skip("name", "else") then other = self:expression() end
      e = { k = "cond", test = test, a = e, b = other, pos = pos }
    end
  end
  self:leave()
  return e
end

function P:or_()
  local e = self:and_()
  while self:is("name", "or") do
    local pos = self:next().pos
    e = { k = "or", a = e, b = self:and_(), pos = pos }
  end
  return e
end

function P:and_()
  local e = self:not_()
  while self:is("name", "and") do
    local pos = self:next().pos
    e = { k = "and", a = e, b = self:not_(), pos = pos }
  end
  return e
end

function P:not_()
  if self:is("name", "not") then
    local pos = self:next().pos
    self:enter()
    local e = { k = "not", e = self:not_(), pos = pos }
    self:leave()
    return e
  end
  return self:compare()
end

function P:compare()
  local pos = self:peek().pos
  local e = self:math1()
  local ops = {}
  while true do
    local t = self:peek()
    if t.type == "op" and COMPARE[t.value] then
      self:next()
      ops[#ops + 1] = { op = t.value, e = self:math1() }
    elseif self:is("name", "in") then
      self:next()
      ops[#ops + 1] = { op = "in", e = self:math1() }
    elseif self:is("name", "not") and self:is("name", "in", 1) then
      self.i = self.i + 2
      ops[#ops + 1] = { op = "notin", e = self:math1() }
    else
      break
    end
  end
  if #ops == 0 then return e end
  return { k = "cmp", first = e, ops = ops, pos = pos }
end

function P:binary(sub, ops)
  local e = sub(self)
  while self:peek().type == "op" and ops[self:peek().value] do
    local t = self:next()
    e = { k = "bin", op = t.value, a = e, b = sub(self), pos = t.pos }
  end
  return e
end

local MATH1, MATH2, POW = { ["+"] = true, ["-"] = true }, { ["*"] = true, ["/"] = true, ["//"] = true, ["%"] = true },
  { ["**"] = true }

function P:math1() return self:binary(P.concat, MATH1) end

function P:concat()
  local pos = self:peek().pos
  local e = self:math2()
  if not self:is("op", "~") then return e end
  local items = { e }
  while self:skip("op", "~") do items[#items + 1] = self:math2() end
  return { k = "concat", items = items, pos = pos }
end

function P:math2() return self:binary(P.pow, MATH2) end
function P:pow() return self:binary(P.unary, POW) end

function P:unary(no_filter)
  self:enter()
  local t = self:peek()
  local e
  if self:is("op", "-") then
    self:next()
    e = { k = "neg", e = self:unary(true), pos = t.pos }
  elseif self:is("op", "+") then
    self:next()
    e = { k = "pos", e = self:unary(true), pos = t.pos }
  else
    e = self:postfix(self:primary())
  end
  if not no_filter then e = self:filter_expr(e) end
  self:leave()
  return e
end

function P:primary()
  local t = self:next()
  if t.type == "name" then
    local v = t.value
    if v == "true" or v == "True" then return { k = "lit", v = true, pos = t.pos } end
    if v == "false" or v == "False" then return { k = "lit", v = false, pos = t.pos } end
    if v == "none" or v == "None" then return { k = "lit", v = V.NONE, pos = t.pos } end
    self.names[v] = true
    return { k = "name", n = v, pos = t.pos }
  elseif t.type == "string" then
    local parts = { t.value }
    while self:is("string") do parts[#parts + 1] = self:next().value end
    return { k = "lit", v = table.concat(parts), pos = t.pos }
  elseif t.type == "int" or t.type == "float" then
    return { k = "lit", v = t.value, pos = t.pos }
  elseif t.type == "op" and t.value == "(" then
    return self:tuple(t, ")")
  elseif t.type == "op" and t.value == "[" then
    local items = {}
    while not self:is("op", "]") do
      if #items > 0 then self:expect("op", ",") end
      if self:is("op", "]") then break end
      items[#items + 1] = self:expression()
    end
    self:next()
    return { k = "list", items = items, pos = t.pos }
  elseif t.type == "op" and t.value == "{" then
    local pairs_ = {}
    while not self:is("op", "}") do
      if #pairs_ > 0 then self:expect("op", ",") end
      if self:is("op", "}") then break end
      local key = self:expression()
      self:expect("op", ":")
      pairs_[#pairs_ + 1] = { key, self:expression() }
    end
    self:next()
    return { k = "dict", pairs = pairs_, pos = t.pos }
  end
  self.i = self.i - 1
  self:fail("expected an expression, got " .. describe(t))
end

-- A parenthesised expression or tuple, after "(" (opener) up to ")".
function P:tuple(opener, closer)
  local items, comma = {}, false
  while not self:is("op", closer) do
    if #items > 0 then
      self:expect("op", ",")
      comma = true
      if self:is("op", closer) then break end
    end
    items[#items + 1] = self:expression()
  end
  self:next()
  if #items == 1 and not comma then return items[1] end
  return { k = "tuple", items = items, pos = opener.pos }
end

function P:postfix(e)
  while true do
    local t = self:peek()
    if t.type == "op" and t.value == "." then
      self:next()
      local n = self:next()
      if n.type == "name" then e = { k = "getattr", o = e, n = n.value, pos = n.pos }
      elseif n.type == "int" then e = { k = "getitem", o = e, key = { k = "lit", v = n.value, pos = n.pos }, pos = n.pos }
      else self.i = self.i - 1; self:fail("expected a name after '.'") end
    elseif t.type == "op" and t.value == "[" then
      self:next()
      e = self:subscript(e, t)
    elseif t.type == "op" and t.value == "(" then
      e = self:call(e)
    else
      return e
    end
  end
end

function P:subscript(e, t)
  local parts, cur = {}, nil
  local is_slice = false
  while true do
    if self:is("op", ":") then
      self:next()
      parts[#parts + 1] = cur or false
      cur = nil
      is_slice = true
    elseif self:is("op", "]") then
      self:next()
      break
    else
      if cur then self:fail("expected ':' or ']'") end
      cur = self:expression()
    end
  end
  if not is_slice then
    if not cur then self:fail("empty subscript", t) end
    return { k = "getitem", o = e, key = cur, pos = t.pos }
  end
  parts[#parts + 1] = cur or false
  if #parts > 3 then self:fail("too many ':' in a slice", t) end
  return { k = "slice", o = e, a = parts[1] or nil, b = parts[2] or nil, c = parts[3] or nil, pos = t.pos }
end

-- Call arguments "(a, b, k=v)" → args, kwargs {{name, expr}...}.
function P:call_args()
  self:expect("op", "(")
  local args, kwargs = {}, {}
  while not self:is("op", ")") do
    if #args + #kwargs > 0 then
      self:expect("op", ",")
      if self:is("op", ")") then break end
    end
    if self:is("op", "*") or self:is("op", "**") then self:fail("*args and **kwargs are not supported") end
    if self:is("name") and self:is("op", "=", 1) then
      local name = self:next().value
      self:next()
      kwargs[#kwargs + 1] = { name, self:expression() }
    else
      if #kwargs > 0 then self:fail("positional argument after keyword argument") end
      args[#args + 1] = self:expression()
    end
  end
  self:next()
  return args, kwargs
end

function P:call(e)
  local args, kwargs = self:call_args()
  return { k = "call", f = e, args = args, kwargs = kwargs, pos = e.pos }
end

function P:filter_call(e)
  local t = self:expect("name")
  local name = t.value
  while self:skip("op", ".") do name = name .. "." .. self:expect("name").value end
  if not builtin.filters[name] then self:fail("no filter named '" .. name .. "'", t) end
  local args, kwargs = {}, {}
  if self:is("op", "(") then args, kwargs = self:call_args() end
  return { k = "filter", e = e, name = name, args = args, kwargs = kwargs, pos = t.pos }
end

local TEST_ARG = { name = true, string = true, int = true, float = true }

function P:filter_expr(e)
  while true do
    if self:is("op", "|") then
      self:next()
      e = self:filter_call(e)
    elseif self:is("name", "is") then
      local pos = self:next().pos
      local neg = self:skip("name", "not") ~= nil
      local name = self:expect("name").value
      while self:skip("op", ".") do name = name .. "." .. self:expect("name").value end
      local args, kwargs = {}, {}
      local t = self:peek()
      if self:is("op", "(") then
        args, kwargs = self:call_args()
      elseif (TEST_ARG[t.type] or (t.type == "op" and (t.value == "[" or t.value == "{")))
        and not (t.type == "name" and (t.value == "else" or t.value == "or" or t.value == "and")) then
        if self:is("name", "is") then self:fail("you cannot chain multiple tests with 'is'") end
        args = { self:postfix(self:primary()) }
      end
      e = { k = "test", e = e, name = name, args = args, kwargs = kwargs, neg = neg, pos = pos }
    elseif self:is("op", "(") then
      e = self:call(e)
    else
      return e
    end
  end
end

-- ---------------------------------------------------------------- statements

-- Assignment targets: a name, names "a, b", or "ns.attr".
function P:target(allow_attr)
  local t = self:expect("name")
  if allow_attr and self:is("op", ".") then
    self:next()
    local attr = self:expect("name")
    return { k = "nsattr", ns = t.value, attr = attr.value, pos = t.pos }
  end
  if not self:is("op", ",") then return { k = "name", n = t.value, pos = t.pos } end
  local names = { t.value }
  while self:skip("op", ",") do names[#names + 1] = self:expect("name").value end
  return { k = "names", names = names, pos = t.pos }
end

function P:for_target()
  if self:skip("op", "(") then
    local names = {}
    repeat names[#names + 1] = self:expect("name").value until not self:skip("op", ",") or self:is("op", ")")
    self:expect("op", ")")
    return { k = "names", names = names }
  end
  return self:target(false)
end

-- A tuple without parentheses where a statement allows one: "set x = 1, 2".
function P:bare_tuple(no_cond)
  local pos = self:peek().pos
  local e = self:expression(no_cond)
  if not self:is("op", ",") then return e end
  local items = { e }
  while self:skip("op", ",") do
    if self:is("block_end") then break end
    items[#items + 1] = self:expression(no_cond)
  end
  return { k = "tuple", items = items, pos = pos }
end

-- The body of a block up to one of the end tags; returns body, the tag
-- name that ended it (its block_end not yet consumed).
function P:body(ends, opener)
  self:enter()
  local body = {}
  while true do
    local t = self:peek()
    if t.type == "eof" and not opener then
      self:leave()
      return body, nil
    elseif t.type == "eof" then
      local want = {}
      for k in pairs(ends) do want[#want + 1] = "'" .. k .. "'" end
      table.sort(want)
      self:fail("unexpected end of template: '" .. opener.value .. "' was never closed (looking for "
        .. table.concat(want, " or ") .. ")", opener)
    elseif t.type == "data" then
      self:next()
      body[#body + 1] = { k = "text", s = t.value, pos = t.pos }
    elseif t.type == "var_begin" then
      self:next()
      body[#body + 1] = { k = "out", e = self:bare_tuple(), pos = t.pos }
      self:expect("var_end")
    elseif t.type == "block_begin" then
      local n = self:peek(1)
      if n.type == "name" and ends[n.value] then
        self.i = self.i + 2
        self:leave()
        return body, n.value
      end
      self:next()
      body[#body + 1] = self:statement()
    else
      self:fail("unexpected " .. describe(t))
    end
  end
end

function P:end_tag() self:expect("block_end") end

local S = {}

function S.if_(self, t)
  local node = { k = "if", tests = {}, pos = t.pos }
  local cond = self:expression()
  self:end_tag()
  while true do
    local body, tag = self:body({ elif = true, ["else"] = true, endif = true }, t)
    node.tests[#node.tests + 1] = { cond, body }
    if tag == "elif" then
      cond = self:expression()
      self:end_tag()
    elseif tag == "else" then
      self:end_tag()
      node.else_ = self:body({ endif = true }, t)
      self:end_tag()
      return node
    else
      self:end_tag()
      return node
    end
  end
end

function S.for_(self, t)
  local target = self:for_target()
  self:expect("name", "in")
  local iter = self:bare_tuple(true)
  local cond
  if self:skip("name", "if") then cond = self:expression() end
  if self:is("name", "recursive") then self:fail("recursive loops are not supported") end
  self:end_tag()
  local body, tag = self:body({ ["else"] = true, endfor = true }, t)
  local else_
  self:end_tag()
  if tag == "else" then
    else_ = self:body({ endfor = true }, t)
    self:end_tag()
  end
  return { k = "for", target = target, iter = iter, cond = cond, body = body, else_ = else_, pos = t.pos }
end

function S.set(self, t)
  local target = self:target(true)
  if self:skip("op", "=") then
    local e = self:bare_tuple()
    self:end_tag()
    return { k = "set", target = target, e = e, pos = t.pos }
  end
  local filters = {}
  while self:skip("op", "|") do filters[#filters + 1] = self:filter_call(nil) end
  self:end_tag()
  local body = self:body({ endset = true }, t)
  self:end_tag()
  return { k = "setblock", target = target, body = body, filters = filters, pos = t.pos }
end

-- "(a, b=default, ...)" of a macro or call block.
function P:params()
  local params = {}
  if not self:skip("op", "(") then return params end
  while not self:is("op", ")") do
    if #params > 0 then self:expect("op", ",") end
    local name = self:expect("name").value
    local default
    if self:skip("op", "=") then default = self:expression() end
    params[#params + 1] = { name = name, default = default }
  end
  self:next()
  return params
end

function S.macro(self, t)
  local name = self:expect("name").value
  if not self:is("op", "(") then self:fail("expected '(' after the macro's name") end
  local params = self:params()
  self:end_tag()
  -- as jinja2: a macro takes extra arguments only when its body reads
  -- varargs (extra positional ones) or kwargs (extra keyword ones)
  local outer = self.names
  self.names = {}
  local body = self:body({ endmacro = true }, t)
  local uses = self.names
  self.names = outer
  for k in pairs(uses) do outer[k] = true end
  self:end_tag()
  return { k = "macro", name = name, params = params, body = body, varargs = uses.varargs, kwargs = uses.kwargs,
    pos = t.pos }
end

function S.call(self, t)
  local params = self:is("op", "(") and self:params() or {}
  local e = self:expression()
  if e.k ~= "call" then self:fail("expected a call after 'call'") end
  self:end_tag()
  local body = self:body({ endcall = true }, t)
  self:end_tag()
  return { k = "callblock", call = e, params = params, body = body, pos = t.pos }
end

function S.filter(self, t)
  local filters = { self:filter_call(nil) }
  while self:skip("op", "|") do filters[#filters + 1] = self:filter_call(nil) end
  self:end_tag()
  local body = self:body({ endfilter = true }, t)
  self:end_tag()
  return { k = "filterblock", filters = filters, body = body, pos = t.pos }
end

function S.with(self, t)
  local assigns = {}
  while not self:is("block_end") do
    if #assigns > 0 then self:expect("op", ",") end
    local target = self:target(false)
    self:expect("op", "=")
    assigns[#assigns + 1] = { target, self:expression() }
  end
  self:end_tag()
  local body = self:body({ endwith = true }, t)
  self:end_tag()
  return { k = "with", assigns = assigns, body = body, pos = t.pos }
end

-- transformers' AssistantTracker: {% generation %} marks the assistant's
-- text for masks; rendering is unchanged.
function S.generation(self, t)
  self:end_tag()
  local body = self:body({ endgeneration = true }, t)
  self:end_tag()
  return { k = "block", body = body, pos = t.pos }
end

function S.break_(self, t)
  if self.loop_depth == 0 then self:fail("'break' outside a loop", t) end
  self:end_tag()
  return { k = "break", pos = t.pos }
end
function S.continue_(self, t)
  if self.loop_depth == 0 then self:fail("'continue' outside a loop", t) end
  self:end_tag()
  return { k = "continue", pos = t.pos }
end

local STATEMENTS = { ["if"] = S.if_, ["for"] = S.for_, set = S.set, macro = S.macro, call = S.call,
  filter = S.filter, with = S.with, generation = S.generation, ["break"] = S.break_, continue = S.continue_ }

function P:statement()
  local t = self:expect("name")
  local fn = STATEMENTS[t.value]
  if not fn then
    if t.value:match("^end") or t.value == "else" or t.value == "elif" then
      self:fail("unexpected '" .. t.value .. "': no block to close here", t)
    end
    self:fail("unknown tag '" .. t.value .. "'", t)
  end
  if t.value == "for" then
    self.loop_depth = self.loop_depth + 1
    local node = fn(self, t)
    self.loop_depth = self.loop_depth - 1
    return node
  elseif t.value == "macro" then
    -- a loop outside the macro does not reach into it
    local saved = self.loop_depth
    self.loop_depth = 0
    local node = fn(self, t)
    self.loop_depth = saved
    return node
  end
  return fn(self, t)
end

--- Parses a template.
-- @tparam string src
-- @treturn table the statement list
-- @treturn string the normalised text (for positions)
function M.parse(src)
  local toks, norm = lexer.tokenize(src)
  local p = setmetatable({ toks = toks, i = 1, src = norm, depth = 0, loop_depth = 0, names = {} }, P)
  return p:body({}, nil), norm
end

return M
