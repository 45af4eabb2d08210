--- lrun.cli — command-line flags for example scripts, llama.cpp style.
--
--     local cli = require("lrun.cli")
--     local opts = cli.parse_or_exit(arg, {
--       { "-m", "--model", key = "model", arg = "FILE", help = "model file" },
--       { "-n", "--n-predict", key = "n_predict", type = "int", default = 64 },
--       { "--chat", key = "chat", type = "flag" },
--     }, "generate.lua -m FILE -p TEXT")
--
-- Types: "string" (default), "int", "number", "flag"; list = true collects
-- every occurrence into a list (repeatable flags). "--name=value" works
-- too; "-h"/"--help" prints the usage. Words that are not flags are
-- collected in opts.rest.
-- @module lrun.cli
local M = {}

local function convert(spec, name, value)
  local ty = spec.type or "string"
  if ty == "int" then
    local n = tonumber(value)
    if not n or n % 1 ~= 0 then return nil, name .. ": expected a whole number, got '" .. value .. "'" end
    return n
  elseif ty == "number" then
    local n = tonumber(value)
    if not n then return nil, name .. ": expected a number, got '" .. value .. "'" end
    return n
  end
  return value
end

--- The usage text of a spec.
-- @tparam table spec
-- @tparam string synopsis first line
-- @treturn string
function M.usage(spec, synopsis)
  local lines = { "usage: " .. synopsis }
  for _, s in ipairs(spec) do
    local names = {}
    for _, n in ipairs(s) do names[#names + 1] = n end
    local left = table.concat(names, ", ")
    if s.type ~= "flag" then left = left .. " " .. (s.arg or (s.type == "int" and "N" or "VALUE")) end
    local help = s.help or ""
    if s.default ~= nil then help = help .. " (default " .. tostring(s.default) .. ")" end
    lines[#lines + 1] = string.format("  %-26s %s", left, help)
  end
  lines[#lines + 1] = string.format("  %-26s %s", "-h, --help", "print this help")
  return table.concat(lines, "\n")
end

--- Parses args against spec.
-- @tparam {string,...} args usually the script's `arg`
-- @tparam table spec a list of {names…, key=, type=, default=, arg=, help=}
-- @treturn[1] table options by key, defaults filled in, plus rest = {…}
-- @treturn[2] nil
-- @treturn[2] string what was wrong ("help" when help was asked for)
function M.parse(args, spec)
  local by_name = {}
  for _, s in ipairs(spec) do
    if not s.key then error("cli.parse: a spec entry has no key", 2) end
    for _, n in ipairs(s) do by_name[n] = s end
  end
  local opts = { rest = {} }
  for _, s in ipairs(spec) do
    if s.default ~= nil then opts[s.key] = s.default end
  end
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then return nil, "help" end
    if a == "--" then
      for j = i + 1, #args do opts.rest[#opts.rest + 1] = args[j] end
      break
    end
    local name, inline = a:match("^(%-%-[^=]+)=(.*)$")
    name = name or a
    local s = by_name[name]
    if s then
      if s.type == "flag" then
        if inline then return nil, name .. " takes no value" end
        opts[s.key] = true
      else
        local value = inline
        if value == nil then
          i = i + 1
          value = args[i]
          if value == nil then return nil, name .. ": missing value" end
        end
        local v, err = convert(s, name, value)
        if v == nil then return nil, err end
        if s.list then
          opts[s.key] = opts[s.key] or {}
          table.insert(opts[s.key], v)
        else
          opts[s.key] = v
        end
      end
    elseif a:sub(1, 1) == "-" and #a > 1 and not tonumber(a) then
      return nil, "unknown option '" .. a .. "'"
    else
      opts.rest[#opts.rest + 1] = a
    end
    i = i + 1
  end
  return opts
end

--- As parse, but prints the usage and exits on an error or on --help.
function M.parse_or_exit(args, spec, synopsis)
  local opts, err = M.parse(args, spec)
  if opts then return opts end
  if err == "help" then
    io.stdout:write(M.usage(spec, synopsis), "\n")
    os.exit(0)
  end
  io.stderr:write((arg and arg[0] or "lrun") .. ": " .. err .. "\n" .. M.usage(spec, synopsis) .. "\n")
  os.exit(1)
end

-- ---------------------------------------------------------------- shared by the examples

--- The flags of a llama.cpp-style generation tool, with llama.cpp's
-- defaults (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05).
-- @treturn table a spec for parse
function M.model_spec()
  return {
    { "-m", "--model", key = "model", arg = "PATH", default = os.getenv("LRUN_MODEL"),
      help = "GGUF file, HF model directory or .safetensors ($LRUN_MODEL)" },
    { "-n", "--n-predict", key = "n_predict", type = "int", default = 128, help = "tokens to generate at most" },
    { "-c", "--ctx-size", key = "ctx_size", type = "int", default = 0, help = "context length, 0 = the model's" },
    { "--temp", key = "temp", type = "number", default = 0.8, help = "temperature, 0 = greedy" },
    { "--top-k", key = "top_k", type = "int", default = 40, help = "0 = off" },
    { "--top-p", key = "top_p", type = "number", default = 0.95, help = "1.0 = off" },
    { "--min-p", key = "min_p", type = "number", default = 0.05, help = "0.0 = off" },
    { "--repeat-penalty", key = "repeat_penalty", type = "number", default = 1.0, help = "1.0 = off" },
    { "-s", "--seed", key = "seed", type = "int", help = "sampling seed (default: random)" },
    { "-t", "--threads", key = "threads", type = "int", help = "CPU threads (default: all cores)" },
    { "--device", key = "device", arg = "SPEC", help = "cpu, cuda, cuda:N" },
    { "--exact", key = "exact", type = "flag",
      help = "on cuda: the CPU engine's arithmetic bit for bit (Q4_0/Q4_1/Q8_0 models; slower)" },
    { "--gpu-budget", key = "gpu_budget", arg = "SIZE",
      help = "cap on device memory (weights, KV cache, scratch): 512M, 4G; weights beyond it are offloaded" },
    { "--host-budget", key = "host_budget", arg = "SIZE",
      help = "cap on host memory lrun holds (pinned, host, slots, KV): weights beyond it are read from disk" },
    { "--cpu-offload-gb", key = "cpu_offload_gb", type = "number", arg = "N",
      help = "keep N GiB of weights off the device (vLLM's --cpu-offload-gb)" },
    { "--smart-offload", key = "smart_offload", type = "flag", help = "choose what to offload with the smart policy" },
    { "--policy", key = "policy", arg = "FILE|NAME",
      help = "placement policy: conservative, aggressive, layers, smart, experts_on_host or a .lua file" },
    { "-ot", "--override-tensor", key = "overrides", arg = "PATTERN=TIER", list = true,
      help = "place tensors matching a Lua pattern: device, pinned, host, mmap, disk, cpu (host compute); repeatable" },
    { "-ngl", "--n-gpu-layers", key = "n_gpu_layers", type = "int", help = "layers on the device (policy layers)" },
    { "--prefetch", key = "prefetch", type = "int", arg = "K",
      help = "streamed layers copied ahead (default: 2 on cpu, 1 on cuda)" },
    { "--explain", key = "explain", type = "flag", help = "print the placement and why to stderr" },
    { "--system", key = "system", arg = "TEXT", help = "system prompt for chat" },
    { "--chat-template", key = "chat_template", arg = "FILE",
      help = "a Jinja chat template file to use instead of the model's" },
  }
end

--- lrun.load options from parsed flags.
function M.load_options(opts)
  local o = { threads = opts.threads, device = opts.device, gpu_budget = opts.gpu_budget,
    host_budget = opts.host_budget,
    n_ctx = opts.ctx_size ~= 0 and opts.ctx_size or nil, numerics = opts.exact and "exact" or nil,
    policy = opts.policy, cpu_offload_gb = opts.cpu_offload_gb, smart_offload = opts.smart_offload or nil,
    overrides = opts.overrides, n_gpu_layers = opts.n_gpu_layers, prefetch_layers = opts.prefetch }
  if o.n_gpu_layers and not o.policy then o.policy = "layers" end
  -- a budget on the command line means: plan the weights into it (the default policy)
  if (o.gpu_budget or o.host_budget) and not o.policy and not o.smart_offload then o.policy = "aggressive" end
  return o
end

--- generate options from parsed flags (temperature 0 means greedy).
function M.generate_options(opts)
  local g = { max_new_tokens = opts.n_predict, repetition_penalty = opts.repeat_penalty }
  if opts.temp > 0 then
    g.do_sample = true
    g.temperature = opts.temp
    g.top_k = opts.top_k
    g.top_p = opts.top_p
    g.min_p = opts.min_p
    g.seed = opts.seed
  end
  return g
end

--- Loads the model named by the flags, or prints why not and exits.
function M.load_or_exit(opts)
  if not opts.model then
    io.stderr:write((arg and arg[0] or "lrun") .. ": no model: pass -m PATH or set LRUN_MODEL\n")
    os.exit(1)
  end
  local m, err = require("lrun").load(opts.model, M.load_options(opts))
  if not m then
    io.stderr:write((arg and arg[0] or "lrun") .. ": " .. tostring(err) .. "\n")
    os.exit(1)
  end
  if opts.explain then io.stderr:write(tostring(m:placement()), "\n") end
  if opts.chat_template then
    local f, ferr = io.open(opts.chat_template, "rb")
    if not f then
      io.stderr:write((arg and arg[0] or "lrun") .. ": --chat-template: " .. tostring(ferr) .. "\n")
      os.exit(1)
    end
    m.chat_template = f:read("*a")
    f:close()
  end
  return m
end

return M
