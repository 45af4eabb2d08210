--- lrun.cli_chat — conversation mode of the generate tool (llama-cli's -cnv):
-- a multi-turn chat on the terminal, or over piped stdin, with the model's
-- chat template.
--
--     lrun -m model.gguf                       (a model with a chat template: a conversation)
--     lrun -m model.gguf -cnv -sys "Be brief." -p "Hi!"
--     printf 'Hi!\nWhat did I just say?\n' | lrun -m model.gguf -cnv --temp 0
--     lrun -m model.gguf -st -p "Hi!"          (one answer, then exit)
--
-- Each message is one line; a line ending in \ goes on to the next (with
-- -mli, the other way round: lines gather until one ends in \). --in-prefix
-- and --in-suffix wrap what you type. /reset forgets the conversation,
-- /quit or /exit (or end of input, or Ctrl-C at the prompt) leaves; Ctrl-C
-- while the model answers stops the answer and returns to the prompt.
-- examples/chat.lua is this loop with the model flags.
-- @module lrun.cli_chat
local cli = require("lrun.cli")
local repl = require("lrun.repl")

local M = {}

--- One message from read(prompt): lines joined with "\n" by the
-- continuation rule; nil at the end of input (or Ctrl-C at the prompt).
-- @tparam function read repl.reader's
-- @tparam boolean tty whether to show prompts
-- @tparam boolean multiline -mli
function M.read_message(read, tty, multiline)
  local parts = {}
  while true do
    local line, interrupted = read(tty and (#parts == 0 and "> " or "") or "")
    if interrupted then return nil end -- Ctrl-C at the prompt ends the conversation, as llama-cli's
    if line == nil then
      if #parts > 0 and not interrupted then return table.concat(parts, "\n") end
      return nil
    end
    local cont = line:sub(-1) == "\\"
    if cont then line = line:sub(1, -2) end
    parts[#parts + 1] = line
    if (multiline and true or false) == cont then return table.concat(parts, "\n") end
  end
end

local ffi = require("ffi")
pcall(ffi.cdef, [[
extern volatile int lrun_launcher_interrupted;
typedef void (*lrun_chat_sighandler)(int);
lrun_chat_sighandler signal(int sig, lrun_chat_sighandler handler);
]])
local SIGINT = 2

-- The SIGINT handler in force (the launcher's, which stops the running
-- chunk once and then falls back to the default), or nil.
local function sigint_handler()
  local ok, h = pcall(function()
    local cur = ffi.C.signal(SIGINT, nil) -- nil is SIG_DFL; put back at once
    ffi.C.signal(SIGINT, cur)
    return cur
  end)
  if ok and h ~= nil then return h end
  return nil
end

-- After a Ctrl-C that stopped an answer: the launcher's flag down again
-- (the error may have come from its hook, before generate saw the flag),
-- and its handler back, so that the next answer can be stopped too.
local function clear_interrupt(handler)
  pcall(function() ffi.C.lrun_launcher_interrupted = 0 end)
  if handler then pcall(ffi.C.signal, SIGINT, handler) end
end

-- The conversation's opening: the system message, if any.
local function fresh(opts)
  if opts.system then return { { role = "system", content = opts.system } } end
  return {}
end

-- The generate options of a chat turn: gen plus the built-in template named
-- by --chat-template, and on_token writing the answer as it comes.
local function turn_options(gen, opts)
  local o = {}
  for k, v in pairs(gen) do o[k] = v end
  o.template = opts.template_name
  o.on_token = function(piece)
    io.stdout:write(piece)
    io.stdout:flush()
  end
  return o
end

--- Runs the conversation; returns the exit status.
-- @tparam lrun.model m
-- @tparam table opts the parsed flags (lrun.cli)
-- @tparam table gen generate options (cli.generate_options)
-- @tparam[opt] string first the first message (-p or -f), sent before reading
-- @tparam[opt] boolean single answer one message, then return (-st)
-- @treturn int
function M.run(m, opts, gen, first, single)
  local read, tty = repl.reader()
  local handler = sigint_handler()
  local messages = fresh(opts)
  local o = turn_options(gen, opts)
  if tty and not single and not opts.log_disable then
    io.stderr:write("conversation with ", tostring(opts.model),
      ": type a message; \\ at the end of a line goes on; /reset, /quit, Ctrl-C or Ctrl-D end\n")
  end
  while true do
    local text = first
    if text then
      first = nil
      if tty then io.stdout:write("> ", text, "\n") end
    else
      text = M.read_message(read, tty, opts.multiline)
    end
    if text == nil or text:match("^%s*/quit%s*$") or text:match("^%s*/exit%s*$") then break end
    if text:match("^%s*/reset%s*$") then
      messages = fresh(opts)
      io.stdout:write("(conversation reset)\n")
    elseif text:find("%S") then
      messages[#messages + 1] = { role = "user", content = (opts.in_prefix or "") .. text .. (opts.in_suffix or "") }
      local ok, reply, err = pcall(m.chat, m, messages, o)
      io.stdout:write("\n")
      io.stdout:flush()
      if not ok then
        local msg = cli.message(reply)
        if msg ~= "interrupted!" then m:free(); cli.die(msg, 1) end
        messages[#messages] = nil -- Ctrl-C: the answer is dropped, the prompt comes back
        clear_interrupt(handler)
      elseif not reply then
        io.stderr:write("error: ", tostring(err), "\n") -- this turn fails; the conversation goes on
        messages[#messages] = nil
      else
        messages[#messages + 1] = { role = "assistant", content = reply }
      end
      if single then break end
    elseif single then
      break
    end
  end
  io.stdout:flush()
  m:free()
  return 0
end

return M
