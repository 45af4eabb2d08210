-- tests/chat_template_spec.lua — lrun.jinja against jinja2, and its bounds.
-- The cases (tests/chat_templates: templates of every supported family ×
-- conversations × add_generation_prompt, and snippets for the corners of
-- the subset) must render character for character as jinja2 renders them
-- in transformers' environment: against the committed golden file
-- (tests/golden/make_chat_template_golden.py), and live against the jinja2
-- installed here when python3 can import it (tests/chat_template_jinja2.py).
local jinja = require("lrun.jinja")
local chat = require("lrun.chat")
local log = require("lrun.log")
local cases = require("tests.chat_template_cases")
local shell = require("tests.shell")

local all = cases.all()

-- One case against one expectation: the same text, or an error when
-- jinja2 had one (the same message when the template raised it).
local function check(case, want)
  local out, err = jinja.render(case.text, case.vars)
  if want.output ~= nil then
    assert(out, case.id .. ": " .. tostring(err))
    assert.are.equal(want.output, out)
  else
    assert.is_nil(out, case.id .. ": jinja2 failed (" .. tostring(want.error) .. ") but lrun rendered")
    assert.are.equal("template", err.kind)
    if want.kind == "raised" then
      assert.are.equal("raised", err.reason)
      assert.are.equal(want.error, err.detail)
    end
    assert.is_number(err.line)
  end
end

describe("chat templates against jinja2 (golden file)", function()
  local expected = cases.expected(cases.json(cases.dir .. "/golden/chat_templates.json"))
  it("has one golden case per case", function() assert.are.equal(#all, #expected) end)
  for i, case in ipairs(all) do
    it(case.id, function() check(case, expected[i]) end)
  end
end)

describe("chat templates against jinja2 (live)", function()
  local probe = shell.run("python3 -c 'import jinja2' 2>&1")
  if probe ~= "" then
    pending("python3 cannot import jinja2 (pip install jinja2)")
    return
  end
  local out, rc = shell.run("python3 " .. shell.quote(cases.dir .. "/chat_template_jinja2.py") .. " 2>/dev/null")
  it("runs the jinja2 helper", function() assert.are.equal(0, rc) end)
  if rc ~= 0 then return end
  local expected = cases.expected(assert(require("lrun.jinja.json").decode(out)))
  for i, case in ipairs(all) do
    it(case.id, function() check(case, expected[i]) end)
  end
end)

describe("hostile templates", function()
  -- template, reason, line, what the message says
  local hostile = {
    { "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "limit", 1, "steps" },
    { "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "limit", 1, "macro calls nested" },
    { "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}", "limit", 1, "nested" },
    { "{{ " .. string.rep("(", 5000) .. "1" .. string.rep(")", 5000) .. " }}", "syntax", 1, "nested more than" },
    { string.rep("{% if true %}", 1000) .. string.rep("{% endif %}", 1000), "syntax", 1, "nested more than" },
    { "{{ " .. string.rep("-", 5000) .. "1 }}", "syntax", 1, "nested more than" },
    { "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "limit", 1, "output grew past" },
    { "{{ 'x' * 10 ** 10 }}", "limit", 1, "grew past" },
    { "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "limit", 1, "grew past" },
    { "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "limit", 1, "grew past" },
    { "{{ [0] * 100000000 }}", "limit", 1, "grew past" },
    { "{{ 'a'.center(100000000) }}", "limit", 1, "grew past" },
    { "x\n{% for i in range(10 ** 9) %}{% endfor %}", "limit", 2, "Range too big" },
    { "a\nb\n  {% if x %}\n {{ x + }}", "syntax", 4, "expected an expression" },
    { "{% for x in y %}\n{{ x }}", "syntax", 1, "never closed" },
    { "{% if x %}{% endfor %}", "syntax", 1, "unexpected 'endfor'" },
    { "{{ 'abc }}", "syntax", 1, "unterminated string" },
    { "{# never closed", "syntax", 1, "comment" },
    { "{% include 'other.jinja' %}", "syntax", 1, "unknown tag 'include'" },
    { "{% do x.append(1) %}", "syntax", 1, "unknown tag 'do'" },
    { "{% for x in y recursive %}{% endfor %}", "syntax", 1, "recursive" },
    { "{{ x | nosuchfilter }}", "syntax", 1, "no filter named 'nosuchfilter'" },
    { "\n\n   {{ nope() }}", "undefined", 3, "'nope' is undefined" },
    { "{{ foo.bar }}", "undefined", 1, "'foo' is undefined" },
    { "{% set l = [] %}{{ l.append(1) }}", "undefined", 1, "unsafe" },
    { "{{ ''.__class__.__mro__ }}", "undefined", 1, "unsafe" },
    { "{{ 1 / 0 }}", "render", 1, "division by zero" },
    { "{{ raise_exception('nope: ' ~ 42) }}", "raised", 1, "nope: 42" },
    { "{% break %}", "syntax", 1, "outside a loop" },
    -- work inside filters, methods and operators counts too
    { "{% set s = 'x' * 4000000 %}{% for i in range(100000) %}{% if 'y' in s %}{% endif %}{% endfor %}", "limit", 1, "steps" },
    { "{% set l = range(100000)|list %}{% for i in range(100000) %}{% set x = l|sort %}{% endfor %}", "limit", 1, "steps" },
    { "{% set s = 'x' * 4000000 %}{% for i in range(100000) %}{% set c = s[5] %}{% endfor %}", "limit", 1, "steps" },
    { "{% set s = 'x ' * 2000000 %}{% for i in range(100000) %}{% set c = s.split() %}{% endfor %}", "limit", 1, "steps" },
    { "{% set l = range(100000)|list %}{% for i in range(100000) %}{% set c = l[::-1] %}{% endfor %}", "limit", 1, "steps" },
    { "{% set a = range(100000)|list %}{% set b = range(100000)|list %}{% for i in range(100000) %}{% set c = a == b %}{% endfor %}",
      "limit", 1, "steps" },
    { "{% set l = [range(100000)|list] * 40 %}{{ l|tojson }}", "limit", 1, "steps" },
  }
  for _, h in ipairs(hostile) do
    it("fails cleanly: " .. h[1]:sub(1, 70):gsub("\n", "\\n"), function()
      local t0 = os.clock()
      local out, err = jinja.render(h[1], { y = { 1 } })
      assert.is_nil(out)
      assert.are.equal("template", err.kind)
      assert.are.equal(h[2], err.reason)
      assert.are.equal(h[3], err.line)
      assert.is_number(err.col)
      assert.matches(h[4], tostring(err), 1, true)
      assert.matches("^template: line %d+, column %d+: ", tostring(err))
      assert.is_true(os.clock() - t0 < 10, "took " .. (os.clock() - t0) .. " s")
    end)
  end

  it("lexes long runs of spaces in linear time", function()
    local t0 = os.clock()
    local text = string.rep(" ", 2000000) .. "x" .. string.rep(" ", 2000000) .. "{%- if true %}y{% endif %}"
    assert.are.equal(string.rep(" ", 2000000) .. "xy", jinja.render(text, {}))
    assert.are.equal("a", jinja.render("{{ s|trim }}{{ s.rstrip()|length }}", { s = "a" .. string.rep(" ", 100000) .. "b" }):sub(1, 1))
    assert.is_true(os.clock() - t0 < 5, "took " .. (os.clock() - t0) .. " s")
  end)

  it("sees no Lua globals, modules or FFI", function()
    local names = { "os", "io", "_G", "string", "require", "load", "loadstring", "ffi", "jit", "debug", "package",
      "getmetatable", "print", "dofile", "setfenv", "rawget" }
    for _, n in ipairs(names) do
      assert.are.equal("False", jinja.render("{{ " .. n .. " is defined }}", {}), n)
    end
    assert.are.equal("", jinja.render("{{ range.fn }}{{ messages.map }}{{ messages.keys.fn }}{{ loop }}",
      { messages = { a = 1 } }))
    local out, err = jinja.render("{{ messages.__index }}{{ x.fn(1) }}", { messages = { a = 1 }, x = {} })
    assert.is_nil(out)
    assert.matches("no attribute 'fn'", tostring(err), 1, true)
  end)

  it("keeps limits that the caller sets", function()
    local out, err = jinja.render("{% for i in range(100) %}x{% endfor %}", {}, { limits = { max_output = 50 } })
    assert.is_nil(out)
    assert.are.equal("limit", err.reason)
    assert.are.equal(string.rep("x", 100), jinja.render("{% for i in range(100) %}x{% endfor %}", {}))
  end)

  it("rejects values nested too deeply to pass", function()
    local v = {}
    for _ = 1, 200 do v = { v } end
    local out, err = jinja.render("{{ v }}", { v = v })
    assert.is_nil(out)
    assert.are.equal("arg", err.kind)
  end)
end)

describe("lrun.chat with Jinja templates", function()
  local tools = require("lrun.jinja.json").decode([[
    [{"type": "function", "function": {"name": "get_time", "description": "Now", "parameters": {"type": "object", "properties": {}}}}]
  ]])
  local qwen = cases.read(cases.dir .. "/chat_templates/qwen2.5.jinja")

  it("renders a model's template through the engine, tools and all", function()
    local out = assert(chat.render({ { role = "user", content = "Time?" } }, { chat_template = qwen, tools = tools }))
    assert.matches('<tools>\n{"type": "function", "function": {"name": "get_time", "description": "Now", '
      .. '"parameters": {"type": "object", "properties": {}}}}\n</tools>', out, 1, true)
    local tail = "<|im_start|>user\nTime?<|im_end|>\n<|im_start|>assistant\n"
    assert.are.equal(tail, out:sub(-#tail))
  end)

  it("passes tool calls with no content (chat.null) and special tokens", function()
    local msgs = {
      { role = "user", content = "Time?" },
      { role = "assistant", content = chat.null, tool_calls = { { type = "function",
        ["function"] = { name = "get_time", arguments = { tz = "UTC" } } } } },
      { role = "tool", content = "12:00" },
    }
    local out = assert(chat.render(msgs, { chat_template = qwen, add_generation_prompt = false }))
    local tail = '<|im_start|>assistant\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>'
      .. "<|im_end|>\n<|im_start|>user\n<tool_response>\n12:00\n</tool_response><|im_end|>\n"
    assert.are.equal(tail, out:sub(-#tail))
    assert.are.equal("<s>|</s>", chat.render({}, { chat_template = "{{ bos_token }}|{{ eos_token }}",
      bos_token = "<s>", eos_token = "</s>" }))
  end)

  it("takes tools as JSON text, keeping the key order", function()
    local text = '[{"type": "function", "function": {"name": "f", "parameters": {"z": 1, "a": 2}}}]'
    local out = assert(chat.render({ { role = "user", content = "Hi" } }, { chat_template = "{{ tools|tojson }}", tools = text }))
    assert.are.equal(text, out)
    local none, err = chat.render({}, { chat_template = "{{ tools }}", tools = "[1," })
    assert.is_nil(none)
    assert.are.equal("unsupported", err.kind)
  end)

  it("passes extra variables (enable_thinking)", function()
    local qwen3 = cases.read(cases.dir .. "/chat_templates/qwen3.jinja")
    local out = chat.render({ { role = "user", content = "Hi" } }, { chat_template = qwen3, vars = { enable_thinking = false } })
    assert.are.equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", out)
  end)

  it("falls back to the built-in format when the engine cannot run the template, and says so once", function()
    local lines = {}
    local saved = log.sink
    log.sink = function(line) lines[#lines + 1] = line end
    local tmpl = "{% include 'x' %}<|im_start|>"
    local out = chat.render({ { role = "user", content = "Hi" } }, { chat_template = tmpl })
    chat.render({ { role = "user", content = "Hi" } }, { chat_template = tmpl })
    log.sink = saved
    assert.are.equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", out)
    assert.are.equal(1, #lines)
    assert.matches("chat template: template: line 1, column 4: unknown tag 'include'; using lrun's built-in chatml format",
      lines[1], 1, true)
  end)

  it("falls back when the template raises, and gives the error when nothing else fits", function()
    local saved = log.sink
    log.sink = false
    local gemma = cases.read(cases.dir .. "/chat_templates/gemma2.jinja")
    local msgs = { { role = "system", content = "Be brief." }, { role = "user", content = "Hi" } }
    local out = chat.render(msgs, { chat_template = gemma, bos_token = "<bos>" })
    assert.are.equal("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n", out)
    local none, err = chat.render(msgs, { chat_template = "{{ raise_exception('no system role') }}" })
    log.sink = saved
    assert.is_nil(none)
    assert.are.equal("unsupported", err.kind)
    assert.matches("no system role", tostring(err), 1, true)
  end)
end)

describe("the chat example with a template that fails", function()
  local model = os.getenv("LRUN_MODEL")
  if not model then
    pending("LRUN_MODEL is not set")
    return
  end
  it("reports the error for each turn and keeps going", function()
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, "w"))
    f:write("{{ raise_exception('this template refuses ' ~ messages|length ~ ' messages') }}")
    f:close()
    local out, rc = shell.run(shell.launcher .. " examples/chat.lua -m " .. shell.quote(model)
      .. " --temp 0 -n 4 --chat-template " .. shell.quote(tmp), "Hi\nAgain\n")
    os.remove(tmp)
    assert.are.equal(0, rc)
    assert.matches("error: unsupported: the model's chat template cannot be rendered (template: line 1, column 4: "
      .. "this template refuses 1 messages)", out, 1, true)
    local _, n = out:gsub("this template refuses 1 messages", "")
    assert.are.equal(2, n)
  end)
end)
