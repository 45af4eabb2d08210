--- fuzz_jinja.lua — the Lua half of tests/fuzz/fuzz_jinja.c: compiles the
-- fuzzed text as a chat template and renders it on a conversation, as
-- lrun.chat does. The engine must answer every input with a template or
-- an lrun error of kind "template"; an "internal" error (a Lua error the
-- engine did not expect) is a finding, and so is any error thrown out of
-- compile or render. Bounds are smaller than the defaults so that each
-- input stays fast.
local jinja = require("lrun.jinja")

local vars = {
  messages = {
    { role = "system", content = "Be brief." },
    { role = "user", content = "Hi <b>there</b> \u{e9}" },
    { role = "assistant", content = "Hello!", tool_calls = { { ["function"] = { name = "f", arguments = { x = 1 } } } } },
    { role = "tool", content = "42" },
  },
  tools = { { type = "function", ["function"] = { name = "f", description = "d", parameters = { type = "object" } } } },
  add_generation_prompt = true,
  bos_token = "<s>",
  eos_token = "</s>",
}
local opts = { limits = { max_steps = 200000, max_output = 2 ^ 16, max_depth = 32 } }

return function(src)
  local t, err = jinja.compile(src)
  if not t then
    if type(err) ~= "table" or err.kind ~= "template" or err.reason == "internal" then
      error("compile: " .. tostring(err and err.message or err), 0)
    end
    return
  end
  local out, rerr = t:render(vars, opts)
  if out == nil and (type(rerr) ~= "table" or rerr.kind ~= "template" or rerr.reason == "internal") then
    error("render: " .. tostring(rerr and rerr.message or rerr), 0)
  end
  if out ~= nil and type(out) ~= "string" then error("render returned a " .. type(out), 0) end
end
