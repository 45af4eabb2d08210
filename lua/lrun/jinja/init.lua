--- lrun.jinja — a sandboxed Jinja engine for chat templates, rendering them
-- as transformers' apply_chat_template does: jinja2's
-- ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and the
-- loopcontrols extension, transformers' tojson and its raise_exception and
-- strftime_now globals (docs/chat.md lists the subset).
--
--     local jinja = require("lrun.jinja")
--     local t = assert(jinja.compile("{% for m in messages %}{{ m.content }}{% endfor %}"))
--     t:render({messages = {{role = "user", content = "Hi"}}})  --> "Hi"
--
-- A template sees only the values it is given and these globals: no Lua
-- globals, no FFI, no files. Every render is bounded: steps (loop
-- iterations and expression evaluations), output size, nesting of macro
-- calls; a template past a bound fails with an error naming its line, never
-- hangs. Errors are lrun errors of kind "template" with line, col and
-- reason ("syntax", "render", "undefined", "limit" or "raised", the last
-- from the template's own raise_exception).
-- @module lrun.jinja
local V = require("lrun.jinja.value")
local parser = require("lrun.jinja.parser")
local eval = require("lrun.jinja.eval")
local filters = require("lrun.jinja.filters")
local lexer = require("lrun.jinja.lexer")
local errors = require("lrun.errors")

local M = {}

--- Default bounds of a render; pass opts.limits to change them.
M.limits = {
  max_steps = 2000000,     -- evaluations, loop iterations, work in filters (value.tick)
  max_output = 4 * 2 ^ 20, -- bytes of output, and of any string built
  max_depth = 64,          -- nested macro calls
}

M.value = V

local Template = {}
Template.__index = Template

local function template_error(e, src, node)
  local msg, reason, line, col
  if getmetatable(e) == V.Err then
    msg, reason, line, col = e.msg, e.kind, e.line, e.col
  else
    local s = tostring(e)
    reason = "internal"
    if s:find("stack overflow", 1, true) then
      msg, reason = "the template nests too deeply (stack overflow)", "limit"
    else
      msg = "internal error: " .. s
    end
  end
  if not line and node and node.pos then line, col = lexer.where(src, node.pos) end
  local where = line and ("line " .. line .. ", column " .. col .. ": ") or ""
  return errors.new("template", where .. msg, { line = line, col = col, reason = reason, detail = msg })
end

--- Parses a template.
-- @tparam string src
-- @treturn[1] table a template, with :render(vars, opts)
-- @treturn[2] nil
-- @treturn[2] table error {kind="template", reason="syntax", line=, col=}
function M.compile(src)
  if type(src) ~= "string" then error("jinja.compile: the template must be a string", 2) end
  local ok, body, norm = pcall(parser.parse, src)
  if not ok then return nil, template_error(body, src) end
  return setmetatable({ body = body, src = norm }, Template)
end

--- Renders the template with vars (Lua values: arrays are lists, other
-- tables dicts with their keys sorted; jinja.value.dict() and
-- jinja.json.decode() keep an order).
-- @tparam table vars name → value
-- @tparam[opt] table opts limits (overrides of jinja.limits)
-- @treturn[1] string
-- @treturn[2] nil
-- @treturn[2] table error {kind="template", reason=, line=, col=}
function Template:render(vars, opts)
  local limits = {}
  for k, v in pairs(M.limits) do limits[k] = v end
  if opts and opts.limits then for k, v in pairs(opts.limits) do limits[k] = v end end
  local ctx = {}
  local ok, err = pcall(function()
    for k, v in pairs(vars or {}) do
      if type(k) ~= "string" then error("jinja: variable names must be strings", 0) end
      ctx[k] = V.from_lua(v)
    end
  end)
  if not ok then return nil, errors.new("arg", tostring(err)) end
  local out, e, node = eval.render(self.body, ctx, filters.globals(), limits)
  if not out then return nil, template_error(e, self.src, node) end
  return out
end

--- compile and render in one call.
function M.render(src, vars, opts)
  local t, err = M.compile(src)
  if not t then return nil, err end
  return t:render(vars, opts)
end

return M
