--- tests/chat_template_cases.lua — the chat-template cases of
-- tests/chat_templates (templates × conversations × add_generation_prompt,
-- and the snippets), with the variables transformers' apply_chat_template
-- passes, built the same way as tests/golden/make_chat_template_golden.py
-- builds them. Shared by tests/chat_template_spec.lua.
local json = require("lrun.jinja.json")
local V = require("lrun.jinja.value")

local M = {}

M.dir = (debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or ".")

local function read(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local text = f:read("*a")
  f:close()
  return text
end
M.read = read

function M.json(path) return assert(json.decode(read(path))) end

local function data(name) return M.json(M.dir .. "/chat_templates/" .. name) end

--- The template text of a templates.json entry.
function M.template_text(name, spec)
  local file = V.dget(spec, "file") or name
  return read(M.dir .. "/chat_templates/" .. file .. ".jinja")
end

--- The render variables of a case (as make_chat_template_golden.variables).
function M.variables(spec, conv, tools, add_generation_prompt)
  local v = {
    messages = V.dget(conv, "messages"),
    tools = V.dget(conv, "tools") and tools or V.NONE,
    documents = V.NONE,
    add_generation_prompt = add_generation_prompt,
  }
  for _, tok in ipairs({ "bos_token", "eos_token" }) do
    local t = V.dget(spec, tok)
    if t ~= nil and t ~= V.NONE then v[tok] = t end
  end
  local extra = V.dget(spec, "vars")
  if extra then for _, k in ipairs(extra.keys) do v[k] = extra.map[k] end end
  return v
end

--- Every case: {id=, text=, vars=} in the golden file's order.
function M.all()
  local templates = V.dget(data("templates.json"), "templates")
  local convs = data("conversations.json")
  local tools = V.dget(convs, "tools")
  local conversations = V.dget(convs, "conversations")
  local out = {}
  for _, name in ipairs(templates.keys) do
    local spec = templates.map[name]
    local text = M.template_text(name, spec)
    for _, cname in ipairs(conversations.keys) do
      for _, agp in ipairs({ true, false }) do
        out[#out + 1] = { id = name .. " / " .. cname .. " / add_generation_prompt=" .. tostring(agp), text = text,
          vars = M.variables(spec, conversations.map[cname], tools, agp) }
      end
    end
  end
  for _, snip in ipairs(V.dget(data("snippets.json"), "snippets")) do
    local vars = {}
    local sv = V.dget(snip, "vars")
    for _, k in ipairs(sv.keys) do vars[k] = sv.map[k] end
    out[#out + 1] = { id = "snippet " .. V.dget(snip, "name"), text = V.dget(snip, "template"), vars = vars }
  end
  return out
end

--- The cases of a golden document (the golden file or the live helper's
-- output), in the same order as M.all().
function M.expected(doc)
  local out = {}
  for i, c in ipairs(V.dget(doc, "cases")) do
    out[i] = { output = V.dget(c, "output"), error = V.dget(c, "error"), kind = V.dget(c, "kind") }
  end
  return out
end

return M
