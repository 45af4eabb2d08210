-- chat.lua — a multi-turn chat with a model, keeping the conversation.
--
--   lrun examples/chat.lua -m model.gguf [--system TEXT] [-n 256] [--temp 0.7]
--   printf 'Hi!\nWhat did I just say?\n' | lrun examples/chat.lua -m model.gguf --temp 0
--
-- Commands: /reset forgets the conversation, /quit (or end of input) leaves.
-- Works with a terminal (readline, history) and with piped input alike.
local cli = require("lrun.cli")
local repl = require("lrun.repl")

local spec = cli.model_spec()
local opts = cli.parse_or_exit(arg, spec, "lrun examples/chat.lua -m FILE [options]")
local m = cli.load_or_exit(opts)
local gen = cli.generate_options(opts)
local read, tty = repl.reader()

local function fresh()
  local msgs = {}
  if opts.system then msgs[1] = { role = "system", content = opts.system } end
  return msgs
end
local messages = fresh()

if tty then io.write("chat with ", opts.model, " - /reset, /quit\n") end
while true do
  local line = read(tty and "you> " or "")
  if line == nil or line:match("^%s*/quit%s*$") then break end
  if line:match("^%s*/reset%s*$") then
    messages = fresh()
    io.write("(conversation reset)\n")
  elseif line:find("%S") then
    messages[#messages + 1] = { role = "user", content = line }
    if tty then io.write("bot> ") end
    gen.on_token = function(piece) io.write(piece); io.flush() end
    local reply, err = m:chat(messages, gen)
    io.write("\n")
    if not reply then
      io.stderr:write("error: ", tostring(err), "\n")
      messages[#messages] = nil
    else
      messages[#messages + 1] = { role = "assistant", content = reply }
    end
  end
  io.flush()
end
m:free()
