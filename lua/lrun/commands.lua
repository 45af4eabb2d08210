--- lrun.commands — the launcher's subcommands: `lrun pack IN OUT`, `lrun unpack IN OUT`.
-- The launcher runs a command when its first word is not an existing file
-- and names one here.
-- @module lrun.commands
local M = {}

local function usage(text)
  io.stderr:write("usage: lrun ", text, "\n")
  return 2
end

-- The words of args less the options: -t/--threads N, and (pack) --codec pex1|pex2.
local function threads_of(args)
  local out, threads, codec = {}, nil, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-t" or a == "--threads" then
      threads = tonumber(args[i + 1])
      if not threads then return nil end
      i = i + 2
    elseif a == "--codec" then
      codec = args[i + 1]
      if codec ~= "pex1" and codec ~= "pex2" then return nil end
      i = i + 2
    else
      out[#out + 1] = a
      i = i + 1
    end
  end
  return out, threads, codec
end

local commands = {}

function commands.pack(args)
  local words, threads, codec = threads_of(args)
  if not words or #words ~= 2 then return usage("pack [-t THREADS] [--codec pex1|pex2] IN.gguf|HF_DIR OUT.lrpk") end
  local s, err = require("lrun.pack").pack(words[1], words[2], { threads = threads, codec = codec })
  if not s then
    io.stderr:write("lrun pack: ", err, "\n")
    return 1
  end
  io.write(string.format("%s: %d tensors packed (%d PEX2; %.4f of their %.1f MB), %d as they were; "
    .. "%.1f MB -> %.1f MB in %.2f s (%.0f MB/s)\n", words[2], s.n_packed, s.n_pex2, s.ratio, s.plain_bytes / 1e6,
    s.n_raw, s.in_bytes / 1e6, s.out_bytes / 1e6, s.seconds, s.mb_per_s))
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

--- `lrun MODEL [flags]`: with flags, the generate tool on MODEL
-- (lrun.cli_generate, as `lrun examples/generate.lua -m MODEL …`); with
-- none, loads it as the global `m` and asks the launcher for the REPL.
-- @treturn int exit status
-- @treturn boolean whether to open the REPL
function M.model(path, ...)
  local args = { ... }
  local cli = require("lrun.cli")
  cli.progname = "lrun"
  if #args > 0 then
    local words = { "-m", path }
    for _, a in ipairs(args) do words[#words + 1] = a end
    return require("lrun.cli_generate").main(words, "lrun MODEL -p TEXT [options]"), false
  end
  local ok, m, err = pcall(require("lrun").load, path)
  if not ok then err = cli.message(m); m = nil end
  if not m then
    io.stderr:write("lrun: ", tostring(err), "\n",
      "  (to generate: lrun ", path, " -p TEXT [-n N] [--temp T]; lrun --help and docs/cli.md list the flags)\n")
    return 1, false
  end
  rawset(_G, "m", m)
  if require("lrun.sys").isatty(0) then
    io.write("m = lrun.load(\"", path, "\") - try m:generate(\"Once upon a time\") or\n",
      "  m:chat({{role = \"user\", content = \"Hi!\"}}); help() for more; lrun ", path, " -p TEXT generates directly\n")
  end
  return 0, true
end

--- llama-cli's form, `lrun [launcher options] -m MODEL -p TEXT [flags]`: the
-- words from the first generate flag on, run as `lrun MODEL ...` runs them.
-- @treturn int exit status
function M.generate(...)
  require("lrun.cli").progname = "lrun"
  return require("lrun.cli_generate").main({ ... }, "lrun -m MODEL -p TEXT [options]")
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
