-- generate.lua — text generation from the command line, llama.cpp style.
--
--   lrun examples/generate.lua -m model.gguf -p "Once upon a time" -n 64
--   lrun examples/generate.lua -m model.gguf --chat -p "What is the capital of France?"
--
-- Tokens stream to stdout as they come; the prompt and generation rates go
-- to stderr at the end. --temp 0 is greedy decoding.
local cli = require("lrun.cli")

local spec = cli.model_spec()
table.insert(spec, 2, { "-p", "--prompt", key = "prompt", arg = "TEXT", help = "the prompt" })
table.insert(spec, { "--chat", key = "chat", type = "flag", help = "wrap the prompt in the model's chat template" })
local opts = cli.parse_or_exit(arg, spec, "lrun examples/generate.lua -m FILE -p TEXT [options]")
if not opts.prompt then
  opts.prompt = #opts.rest > 0 and table.concat(opts.rest, " ") or nil
end
if not opts.prompt then
  io.stderr:write(arg[0], ": no prompt: pass -p TEXT\n")
  os.exit(1)
end

local m = cli.load_or_exit(opts)
local gen = cli.generate_options(opts)
gen.on_token = function(piece)
  io.stdout:write(piece)
  io.stdout:flush()
end

local text, err, stats
if opts.chat then
  local messages = {}
  if opts.system then messages[1] = { role = "system", content = opts.system } end
  messages[#messages + 1] = { role = "user", content = opts.prompt }
  text, err, stats = m:chat(messages, gen)
else
  io.stdout:write(opts.prompt)
  text, err, stats = m:generate(opts.prompt, gen)
end
io.stdout:write("\n")
if not text then
  io.stderr:write(arg[0], ": ", tostring(err), "\n")
  os.exit(1)
end

local function rate(n, s) return s > 0 and n / s or 0 end
io.stderr:write(string.format(
  "\nprompt: %d tokens in %.3f s (%.1f tokens/s)\ngeneration: %d tokens in %.3f s (%.1f tokens/s), stopped by %s%s\n",
  stats.n_prompt, stats.prompt_seconds, rate(stats.n_prompt, stats.prompt_seconds),
  stats.n_generated, stats.generate_seconds, rate(stats.n_generated, stats.generate_seconds),
  stats.stop_reason, stats.seed and (", seed " .. string.format("%d", stats.seed)) or ""))
m:free()
