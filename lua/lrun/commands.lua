--- lrun.commands — the launcher's subcommands: `lrun pack IN OUT`, `lrun unpack IN OUT`.
-- The launcher runs a command when its first word is not an existing file
-- and names one here.
-- @module lrun.commands
local M = {}

local function usage(text)
  io.stderr:write("usage: lrun ", text, "\n")
  return 2
end

local function threads_of(args)
  local out, threads = {}, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-t" or a == "--threads" then
      threads = tonumber(args[i + 1])
      if not threads then return nil end
      i = i + 2
    else
      out[#out + 1] = a
      i = i + 1
    end
  end
  return out, threads
end

local commands = {}

function commands.pack(args)
  local words, threads = threads_of(args)
  if not words or #words ~= 2 then return usage("pack [-t THREADS] IN.gguf|HF_DIR OUT.lrpk") end
  local s, err = require("lrun.pack").pack(words[1], words[2], { threads = threads })
  if not s then
    io.stderr:write("lrun pack: ", err, "\n")
    return 1
  end
  io.write(string.format("%s: %d tensors packed (%.4f of their %.1f MB), %d as they were; %.1f MB -> %.1f MB in %.2f s (%.0f MB/s)\n",
    words[2], s.n_packed, s.ratio, s.plain_bytes / 1e6, s.n_raw, s.in_bytes / 1e6, s.out_bytes / 1e6, s.seconds, s.mb_per_s))
  return 0
end

function commands.unpack(args)
  local words, threads = threads_of(args)
  if not words or #words ~= 2 then return usage("unpack [-t THREADS] IN.lrpk OUT.gguf") end
  local ok, err = require("lrun.pack").unpack(words[1], words[2], { threads = threads })
  if not ok then
    io.stderr:write("lrun unpack: ", err, "\n")
    return 1
  end
  return 0
end

--- Is name a command?
function M.has(name) return commands[name] ~= nil end

--- Runs command name with its words; returns the exit status.
function M.run(name, ...)
  local fn = commands[name]
  if not fn then return usage("COMMAND ...: unknown command '" .. tostring(name) .. "'") end
  return fn({ ... })
end

return M
