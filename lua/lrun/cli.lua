--- lrun.cli — command-line flags for lrun's tools and example scripts, llama.cpp style.
--
--     local cli = require("lrun.cli")
--     local opts = cli.parse_or_exit(arg, {
--       { "-m", "--model", key = "model", arg = "FILE", help = "model file" },
--       { "-n", "--n-predict", key = "n_predict", type = "int", default = 64 },
--       { "--chat", key = "chat", type = "flag" },
--     }, "generate.lua -m FILE -p TEXT")
--
-- A spec is a list of flags: {names…, key=, type=, default=, arg=, help=,
-- list=, check=, allowed=, llama=, values=, unsupported=}. Types: "string"
-- (default), "int", "number", "flag"; list = true collects every
-- occurrence (repeatable flags); a flag with `values` (a set) takes one of
-- them as an optional value (llama.cpp's "-fa [on|off|auto]"); an
-- `unsupported` flag is a one-line error saying why. check(value) → true, or false and (optionally) what is wrong;
-- `allowed` says what values are allowed, for the message. "--name=value"
-- works too; "-h"/"--help" prints the usage. Words that are not flags are
-- collected in opts.rest.
--
-- A bad value is one line naming the flag, the value and what is allowed
-- ("--top-p 2: expected a number in (0, 1]"); parse_or_exit prints it and
-- exits with status 2 before anything reaches stdout.
--
-- M.flags is the one table of the generation tools' flags (model_spec
-- returns a copy); docs/cli.md lists them with their llama.cpp equivalents.
-- @module lrun.cli
local M = {}

-- ---------------------------------------------------------------- checks

local function whole(v) return v % 1 == 0 end
local INT_MAX = require("lrun.size").INT_MAX

--- Checks for flag values, each function(v) → true, or false and what is wrong.
M.checks = {}

function M.checks.device(v)
  if v == "cpu" or v == "cuda" or v:match("^cuda:%d+$") ~= nil or v == "none" or v:match("^CUDA%d+$") ~= nil then
    return true
  end
  if not v:find("[,/]") then return false end -- one device: the flag's own message
  return M.checks.devices(v)
end

-- ---- several devices (lrun.multigpu): --device cuda:0,cuda:1, -ts 3,1, --gpu-budget 40G,40G

--- A list of devices for a layer split: "cuda:0,cuda:1".
function M.checks.devices(v)
  local ok, err = require("lrun.multigpu").parse_devices(v)
  if not ok then return false, err end
  return true
end

--- -ts proportions: "3,1" (llama.cpp's --tensor-split).
function M.checks.tensor_split(v)
  local ok, err = require("lrun.multigpu").parse_split(v)
  if not ok then return false, err end
  return true
end

--- --gpu-budget: one size, or one per device ("40G,40G").
function M.checks.budgets(v)
  for item in (v .. ","):gmatch("([^,]*),") do
    if require("lrun.size").parse(item) == nil then return false end
  end
  return true
end

function M.checks.size(v)
  return require("lrun.size").parse(v) ~= nil
end

M.builtin_policies = { "conservative", "aggressive", "layers", "smart", "experts_on_host", "n_cpu_moe" }

function M.checks.policy(v)
  for _, n in ipairs(M.builtin_policies) do if v == n then return true end end
  local f = io.open(v, "rb")
  if f then
    local ok = f:read(0) ~= nil or f:seek("end") == 0 -- a directory opens but cannot be read
    f:close()
    if ok then return true end
  end
  return false
end

function M.checks.override(v)
  local pattern, tier = v:match("^(.+)=([%w_]+)$")
  if not pattern then return false, "expected PATTERN=TIER (TIER device, pinned, host, mmap, disk or cpu)" end
  local tiers = { device = true, pinned = true, host = true, mmap = true, disk = true, cpu = true }
  if not tiers[tier:lower()] then return false, "expected TIER to be device, pinned, host, mmap, disk or cpu" end
  if not pcall(string.find, "", pattern) then return false, "'" .. pattern .. "' is not a valid Lua pattern" end
  return true
end

function M.checks.readable(v)
  local f = io.open(v, "rb")
  if not f then return false, "no readable file of that name" end
  local ok = f:read(0) ~= nil or f:seek("end") == 0
  f:close()
  if not ok then return false, "not a readable file" end
  return true
end

-- ---------------------------------------------------------------- parsing

local function show(value)
  if value ~= "" and value:match("^[%w%p]+$") and not value:find("'", 1, true) then return value end
  return "'" .. value:gsub("'", "'\\''") .. "'"
end

local type_allowed = { int = "a whole number", number = "a number" }

-- The value of a flag, converted and checked; nil and the message when bad.
local function convert(spec, name, value)
  local ty = spec.type or "string"
  local allowed = spec.allowed or type_allowed[ty]
  local function bad(detail)
    return nil, name .. " " .. show(value) .. ": " .. (detail or ("expected " .. (allowed or "another value")))
  end
  local v = value
  if ty == "int" then
    v = tonumber(value)
    if not v or not whole(v) or v ~= v then return bad() end
    -- past a C int (the counts and sizes the engine takes), unless the flag takes wider (the seed)
    if math.abs(v) > (spec.max or INT_MAX) then return bad("expected " .. (allowed or "a whole number") .. ", at most "
      .. string.format("%.0f", spec.max or INT_MAX)) end
  elseif ty == "number" then
    v = tonumber(value)
    if not v or v ~= v or math.abs(v) == math.huge then return bad() end
  end
  if spec.check then
    local ok, detail = spec.check(v)
    if not ok then return bad(detail) end
  end
  return v
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
    if s.type ~= "flag" then left = left .. " " .. (s.arg or (s.type == "int" and "N" or "VALUE"))
    elseif s.arg then left = left .. " " .. s.arg end
    local help = s.help or ""
    if s.default ~= nil and s.type ~= "flag" then help = help .. " (default " .. tostring(s.default) .. ")" end
    lines[#lines + 1] = string.format("  %-26s %s", left, help)
  end
  lines[#lines + 1] = string.format("  %-26s %s", "-h, --help", "print this help")
  return table.concat(lines, "\n")
end

--- Parses args against spec.
-- @tparam {string,...} args usually the script's `arg`
-- @tparam table spec a list of {names…, key=, type=, default=, arg=, help=, check=, allowed=}
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
    if s and s.unsupported then
      return nil, name .. ": not supported by lrun (" .. s.unsupported .. ")", "final"
    end
    if s then
      if s.type == "flag" and s.values then
        -- a flag with an optional value (llama.cpp's "-fa [on|off|auto]")
        local value = inline
        if value == nil and args[i + 1] and s.values[args[i + 1]] then
          i = i + 1
          value = args[i]
        end
        if value ~= nil and not s.values[value] then
          return nil, name .. " " .. show(value) .. ": expected " .. (s.allowed or "another value")
        end
        opts[s.key] = value or true
      elseif s.type == "flag" then
        if inline then return nil, name .. " takes no value" end
        opts[s.key] = true
      else
        local value = inline
        if value == nil then
          i = i + 1
          value = args[i]
          if value == nil then return nil, name .. ": missing value" .. (s.arg and (" (" .. s.arg .. ")") or "") end
        end
        local v, err = convert(s, name, value)
        if v == nil then return nil, err end
        if s.list then
          if opts[s.key] == s.default then opts[s.key] = {} end
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

--- The program's name for messages: M.progname when set, else the script (arg[0]), else "lrun".
function M.prog()
  return M.progname or (arg and arg[0]) or "lrun"
end

--- Prints "prog: msg" to stderr and exits with status code (default 2, a usage error).
function M.die(msg, code)
  io.stdout:flush()
  io.stderr:write(M.prog(), ": ", msg, "\n")
  os.exit(code or 2)
end

--- As parse, but on --help prints the usage and exits 0; on an error prints
-- one line and exits 2.
function M.parse_or_exit(args, spec, synopsis)
  local opts, err, final = M.parse(args, spec)
  if opts then return opts end
  if err == "help" then
    io.stdout:write(M.usage(spec, synopsis), "\n")
    os.exit(0)
  end
  if final == "final" then M.die(err) end
  M.die(err .. " (see --help)")
end

-- ---------------------------------------------------------------- the generation tools' flags

local function between(lo, hi, open_lo)
  return function(v)
    if open_lo then return v > lo and v <= hi end
    return v >= lo and v <= hi
  end
end
local function at_least(lo) return function(v) return v >= lo end end

--- The flags of a llama.cpp-style generation tool, with llama.cpp's
-- defaults (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05). Each has
-- `llama`: its llama.cpp name (docs/cli.md), or false where llama.cpp has none.
M.flags = {
  { "-m", "--model", key = "model", arg = "PATH", llama = "-m, --model",
    help = "GGUF file, HF model directory or .safetensors ($LRUN_MODEL)" },
  { "-p", "--prompt", key = "prompt", arg = "TEXT", llama = "-p, --prompt", help = "the prompt" },
  { "-f", "--file", key = "file", arg = "FILE", llama = "-f, --file", check = M.checks.readable,
    help = "read the prompt from FILE" },
  { "-n", "--n-predict", key = "n_predict", type = "int", default = 128, llama = "-n, --n-predict",
    check = at_least(-1), allowed = "a whole number >= -1",
    help = "tokens to generate at most; -1 = until the context is full" },
  { "-c", "--ctx-size", key = "ctx_size", type = "int", default = 0, llama = "-c, --ctx-size",
    check = at_least(0), allowed = "a whole number >= 0", help = "context length, 0 = the model's" },
  { "-b", "--batch-size", key = "batch_size", type = "int", llama = "-b, --batch-size",
    check = at_least(1), allowed = "a whole number >= 1",
    help = "prompt tokens per engine step (default 512; 2048 for a MoE whose host experts stream)" },
  { "-ub", "--ubatch-size", key = "ubatch_size", type = "int", llama = "-ub, --ubatch-size",
    check = at_least(1), allowed = "a whole number >= 1", help = "as -b (lrun has one batch size; the smaller wins)" },
  { "--temp", key = "temp", type = "number", default = 0.8, llama = "--temp",
    check = at_least(0), allowed = "a number >= 0", help = "temperature, 0 = greedy" },
  { "--top-k", key = "top_k", type = "int", default = 40, llama = "--top-k",
    check = at_least(0), allowed = "a whole number >= 0", help = "0 = off" },
  { "--top-p", key = "top_p", type = "number", default = 0.95, llama = "--top-p",
    check = between(0, 1, true), allowed = "a number in (0, 1]", help = "1.0 = off" },
  { "--min-p", key = "min_p", type = "number", default = 0.05, llama = "--min-p",
    check = between(0, 1), allowed = "a number in [0, 1]", help = "0.0 = off" },
  { "--typical", key = "typical_p", type = "number", default = 1.0, llama = "--typical",
    check = between(0, 1, true), allowed = "a number in (0, 1]", help = "locally typical sampling, 1.0 = off" },
  { "--repeat-penalty", key = "repeat_penalty", type = "number", default = 1.0, llama = "--repeat-penalty",
    check = function(v) return v > 0 end, allowed = "a number > 0", help = "1.0 = off" },
  { "--presence-penalty", key = "presence_penalty", type = "number", default = 0.0, llama = "--presence-penalty",
    help = "subtracted from the logit of every token already present; 0.0 = off" },
  { "--frequency-penalty", key = "frequency_penalty", type = "number", default = 0.0,
    llama = "--frequency-penalty", help = "subtracted once per occurrence of a token; 0.0 = off" },
  { "--repeat-last-n", key = "repeat_last_n", type = "int", default = 64, llama = "--repeat-last-n",
    check = at_least(-1), allowed = "a whole number >= -1",
    help = "the penalties look at the last N tokens; -1 = all, 0 = none (generate()'s default: all)" },
  { "--dry-multiplier", key = "dry_multiplier", type = "number", default = 0.0, llama = "--dry-multiplier",
    check = at_least(0), allowed = "a number >= 0", help = "DRY repetition penalty; 0.0 = off" },
  { "--dry-base", key = "dry_base", type = "number", default = 1.75, llama = "--dry-base",
    check = function(v) return v > 0 end, allowed = "a number > 0", help = "DRY: the penalty grows as base^(length - allowed)" },
  { "--dry-allowed-length", key = "dry_allowed_length", type = "int", default = 2, llama = "--dry-allowed-length",
    check = at_least(0), allowed = "a whole number >= 0", help = "DRY: repeats up to this long go unpenalised" },
  { "--dry-penalty-last-n", key = "dry_penalty_last_n", type = "int", default = -1, llama = "--dry-penalty-last-n",
    check = at_least(-1), allowed = "a whole number >= -1", help = "DRY looks at the last N tokens; -1 = all, 0 = off" },
  { "--dry-sequence-breaker", key = "dry_sequence_breaker", arg = "TEXT", list = true,
    llama = "--dry-sequence-breaker", check = function(v) return v ~= "" end, allowed = "a non-empty text",
    help = "DRY: repeats do not reach over TEXT ('none' = no breakers; default \\n : \" *); repeatable" },
  { "--top-nsigma", "--top-n-sigma", key = "top_n_sigma", type = "number", default = -1, llama = "--top-nsigma",
    help = "keep logits >= max - N standard deviations; <= 0 = off" },
  { "--xtc-probability", key = "xtc_probability", type = "number", default = 0.0, llama = "--xtc-probability",
    check = between(0, 1), allowed = "a number in [0, 1]", help = "XTC: the chance of removing the top choices; 0.0 = off" },
  { "--xtc-threshold", key = "xtc_threshold", type = "number", default = 0.1, llama = "--xtc-threshold",
    check = between(0, 1), allowed = "a number in [0, 1]", help = "XTC: tokens with p >= this are the top choices (> 0.5 = off)" },
  { "--mirostat", key = "mirostat", type = "int", default = 0, llama = "--mirostat",
    check = function(v) return v == 0 or v == 1 or v == 2 end, allowed = "0, 1 or 2",
    help = "mirostat sampling 1 or 2 (top-k, top-p, min-p, typical and XTC are then unused); 0 = off" },
  { "--mirostat-lr", key = "mirostat_eta", type = "number", default = 0.1, llama = "--mirostat-lr",
    check = at_least(0), allowed = "a number >= 0", help = "mirostat learning rate (eta)" },
  { "--mirostat-ent", key = "mirostat_tau", type = "number", default = 5.0, llama = "--mirostat-ent",
    check = at_least(0), allowed = "a number >= 0", help = "mirostat target entropy (tau)" },
  { "-s", "--seed", key = "seed", type = "int", llama = "-s, --seed",
    check = function(v) return v >= -1 and v < 2 ^ 53 end, allowed = "a whole number from -1 to 2^53", max = 2 ^ 53,
    help = "sampling seed; -1 = random (the default)" },
  { "-r", "--reverse-prompt", "--stop", key = "stop", arg = "TEXT", list = true, llama = "-r, --reverse-prompt",
    check = function(v) return v ~= "" end, allowed = "a non-empty text",
    help = "stop when the output contains TEXT (cut before it); repeatable" },
  { "--ignore-eos", key = "ignore_eos", type = "flag", llama = "--ignore-eos",
    help = "go on past end-of-generation tokens" },
  { "-t", "--threads", key = "threads", type = "int", llama = "-t, --threads",
    check = between(0, 4096), allowed = "a thread count from 0 to 4096", help = "CPU threads (default: all cores)" },
  { "--device", "-dev", key = "device", arg = "SPEC", llama = "-dev, --device", check = M.checks.device,
    allowed = "cpu, cuda, cuda:N, llama.cpp's CUDA0 or none, or a list: cuda:0,cuda:1",
    help = "cpu, cuda, cuda:N (llama.cpp's CUDA0 = cuda:0, none = cpu); cuda:0,cuda:1 plans a layer split" },
  { "-sm", "--split-mode", key = "split_mode", arg = "MODE", llama = "-sm, --split-mode",
    check = function(v) return v == "none" or v == "layer" or v == "row" end, allowed = "none, layer or row",
    help = "accepted: a --device list plans a layer split (docs/multigpu.md); nothing else is split" },
  { "-mg", "--main-gpu", key = "main_gpu", type = "int", llama = "-mg, --main-gpu",
    check = at_least(0), allowed = "a GPU index >= 0", help = "the GPU to run on (= --device cuda:N)" },
  { "-ts", "--tensor-split", key = "tensor_split", arg = "N0,N1,...", llama = "-ts, --tensor-split",
    check = M.checks.tensor_split, allowed = "proportions such as 3,1",
    help = "one non-zero part: the GPU to run on; with a --device list, the layer split's proportions" },
  { "--exact", key = "exact", type = "flag", llama = false,
    help = "on cuda: the CPU engine's arithmetic bit for bit (Q4_0/Q4_1/Q8_0 models; slower)" },
  { "--gpu-budget", key = "gpu_budget", arg = "SIZE", llama = false, check = M.checks.budgets,
    allowed = "a size such as 512M, 4G or 4GiB, or one per device: 40G,40G",
    help = "cap on device memory (weights, KV cache, scratch): 512M, 4G; weights beyond it are offloaded" },
  { "--host-budget", key = "host_budget", arg = "SIZE", llama = false, check = M.checks.size,
    allowed = "a size such as 512M, 4G or 4GiB",
    help = "cap on host memory lrun holds (pinned, host, slots, KV): weights beyond it are read from disk" },
  { "--cpu-offload-gb", key = "cpu_offload_gb", type = "number", arg = "N", llama = false,
    check = between(0, 1e6), allowed = "a number of GiB >= 0",
    help = "keep N GiB of weights off the device (vLLM's --cpu-offload-gb)" },
  { "--smart-offload", key = "smart_offload", type = "flag", llama = false,
    help = "choose what to offload with the smart policy" },
  { "--no-packed", key = "no_packed", type = "flag", llama = false,
    help = "never hold weights packed (smart packs bf16/f16 weights by itself when that is predicted faster)" },
  { "--policy", key = "policy", arg = "FILE|NAME", llama = false, check = M.checks.policy,
    allowed = "conservative, aggressive, layers, smart, experts_on_host, n_cpu_moe or a readable .lua file",
    help = "placement policy: conservative, aggressive, layers, smart, experts_on_host, n_cpu_moe or a .lua file" },
  { "-ot", "--override-tensor", key = "overrides", arg = "PATTERN=TIER", list = true,
    llama = "-ot, --override-tensor", check = M.checks.override,
    help = "place tensors matching a Lua pattern: device, pinned, host, mmap, disk, cpu (host compute); repeatable" },
  { "-ngl", "--n-gpu-layers", key = "n_gpu_layers", type = "int", llama = "-ngl, --n-gpu-layers",
    check = at_least(0), allowed = "a whole number >= 0", help = "layers on the device (policy layers)" },
  { "-cmoe", "--cpu-moe", key = "cpu_moe", type = "flag", llama = "-cmoe, --cpu-moe",
    help = "MoE: every expert on the host, computed there (policy experts_on_host)" },
  { "--n-cpu-moe", key = "n_cpu_moe", type = "int", arg = "N", llama = "--n-cpu-moe",
    check = at_least(0), allowed = "a whole number >= 0",
    help = "MoE: the experts of the first N blocks on the host, computed there (policy n_cpu_moe)" },
  { "--moe-host", key = "moe_host", arg = "MODE", llama = false,
    check = function(v) return v == "compute" or v == "cache" or v == "hybrid" end,
    allowed = "compute, cache or hybrid",
    help = "MoE on cuda: host experts computed on the host, copied into device slots (cache), or both (hybrid)" },
  { "--prefetch", key = "prefetch", type = "int", arg = "K", llama = false,
    check = between(1, 64), allowed = "a layer count from 1 to 64",
    help = "streamed layers copied ahead (default: 2 on cpu, 1 on cuda)" },
  { "--no-mmap", key = "no_mmap", type = "flag", llama = "--no-mmap",
    help = "read the weights into host memory instead of serving them from the mapped file" },
  { "--no-op-offload", key = "no_op_offload", type = "flag", llama = "--no-op-offload",
    help = "cuda: prompts compute host-computed matrices on the host instead of copying them to the GPU" },
  { "--mlock", key = "mlock", type = "flag", llama = "--mlock",
    help = "lock the model's host memory in RAM (mlockall; warns when not allowed)" },
  { "--cache-type", key = "cache_type", arg = "KIND", llama = false,
    check = function(v)
      for _, n in ipairs(require("lrun.cache_kinds").names) do if v == n then return true end end
      return false
    end, allowed = "dynamic, static, offloaded, offloaded_static or quantized",
    help = "the KV cache: dynamic, static, offloaded, offloaded_static, quantized (docs/kv-cache.md)" },
  { "--cache-bits", key = "cache_bits", type = "int", arg = "N", llama = false,
    check = function(v) return v == 8 or v == 4 end, allowed = "8 or 4",
    help = "bits of the quantized KV cache (implies --cache-type quantized; default 8)" },
  { "-ctk", "--cache-type-k", key = "cache_type_k", arg = "TYPE", llama = "-ctk, --cache-type-k",
    check = function(v) return v == "f16" or v == "f32" or v == "q8_0" or v == "q4_0" end,
    allowed = "f16, f32, q8_0 or q4_0", help = "KV cache element type: f16, f32; q8_0/q4_0 = the quantized cache" },
  { "-ctv", "--cache-type-v", key = "cache_type_v", arg = "TYPE", llama = "-ctv, --cache-type-v",
    check = function(v) return v == "f16" or v == "f32" or v == "q8_0" or v == "q4_0" end,
    allowed = "f16, f32, q8_0 or q4_0", help = "as -ctk (keys and values share one type in lrun)" },
  { "--explain", key = "explain", type = "flag", llama = false, help = "print the placement and why to stderr" },
  { "-sys", "--system-prompt", "--system", key = "system", arg = "TEXT", llama = "-sys, --system-prompt",
    help = "the system message of a conversation (-cnv, -st)" },
  { "--chat-template", key = "chat_template", arg = "NAME|TEXT|FILE", llama = "--chat-template",
    help = "a built-in template by llama.cpp's name (chatml, llama3, ...), Jinja text, or a file" },
  { "--chat-template-file", key = "chat_template_file", arg = "FILE", llama = "--chat-template-file",
    check = M.checks.readable, help = "a Jinja chat template file to use instead of the model's" },
  { "--jinja", key = "jinja", type = "flag", llama = "--jinja",
    help = "accepted for llama.cpp's sake: lrun always renders chat templates with Jinja" },
  { "--json", key = "json", type = "flag", llama = false,
    help = "print one JSON object of the run (text, ids, timings, placement) instead of the text" },
  { "--log-disable", key = "log_disable", type = "flag", llama = "--log-disable",
    help = "print nothing but the output (no timings, no notes, no progress)" },
  { "-v", "--verbose", key = "verbose", type = "flag", llama = "-v, --verbose",
    help = "also print the model's facts and the placement to stderr" },
  { "-lv", "--log-verbosity", key = "log_verbosity", type = "int", llama = "-lv, --log-verbosity",
    allowed = "a whole number", help = "0 = as --log-disable; 4 and more = as -v; otherwise the default" },
  { "--verbose-prompt", key = "verbose_prompt", type = "flag", llama = "--verbose-prompt",
    help = "print the prompt's tokens (id and text) to stderr before generating" },
  { "--no-display-prompt", key = "no_display_prompt", type = "flag", llama = "--no-display-prompt",
    help = "print only the generated text, not the prompt before it" },
  { "--escape", key = "escape", type = "flag", llama = "-e, --escape",
    help = "process \\n \\r \\t \\' \\\" \\\\ \\xHH in the prompt, -r and --in-prefix/--in-suffix (the default)" },
  { "--no-escape", key = "no_escape", type = "flag", llama = "--no-escape", help = "take those texts as written" },
  -- conversation mode (lrun.cli_chat)
  { "-cnv", "--conversation", key = "conversation", type = "flag", llama = "-cnv, --conversation",
    help = "chat on the terminal with the model's template (the default with no prompt)" },
  { "-no-cnv", "--no-conversation", key = "no_conversation", type = "flag", llama = "-no-cnv, --no-conversation",
    help = "never start a conversation: with no prompt, an error" },
  { "-mli", "--multiline-input", key = "multiline", type = "flag", llama = "-mli, --multiline-input",
    help = "conversation: a message goes on until a line ending in \\ (which is dropped)" },
  { "--in-prefix", key = "in_prefix", arg = "TEXT", llama = "--in-prefix",
    help = "conversation: text put before each message you type" },
  { "--in-suffix", key = "in_suffix", arg = "TEXT", llama = "--in-suffix",
    help = "conversation: text put after each message you type" },
  -- accepted for llama.cpp's sake; lrun has no use for them
  { "-fa", "--flash-attn", key = "flash_attn", type = "flag", arg = "[on|off|auto]",
    values = { on = true, off = true, auto = true }, allowed = "on, off or auto", llama = "-fa, --flash-attn",
    help = "accepted: lrun's attention kernels are fused already" },
  { "--no-warmup", key = "no_warmup", type = "flag", llama = "--no-warmup",
    help = "accepted: lrun runs no warm-up pass" },
  { "-co", "--color", key = "color", type = "flag", arg = "[on|off|auto]",
    values = { on = true, off = true, auto = true }, allowed = "on, off or auto", llama = "-co, --color",
    help = "accepted: lrun prints plain text" },
  { "-cb", "--cont-batching", key = "cont_batching", type = "flag", llama = "-cb, --cont-batching",
    help = "accepted: generate() batches its sequences in each step already" },
  { "-nocb", "--no-cont-batching", key = "no_cont_batching", type = "flag", llama = "-nocb, --no-cont-batching",
    help = "accepted; no effect" },
  { "--numa", key = "numa", arg = "TYPE", llama = "--numa",
    check = function(v) return v == "distribute" or v == "isolate" or v == "numactl" end,
    allowed = "distribute, isolate or numactl", help = "accepted: lrun leaves NUMA placement to the OS (numactl)" },
  { "--keep", key = "keep", type = "int", llama = "--keep", check = at_least(-1), allowed = "a whole number >= -1",
    help = "accepted: lrun ends a run at the context's end (no context shift), so nothing is kept" },
  -- not supported: one line saying so
  { "--grammar", key = "grammar", arg = "GRAMMAR", llama = "--grammar",
    unsupported = "no constrained decoding; a logits_processor in generate() can mask tokens",
    help = "not supported" },
  { "--grammar-file", key = "grammar_file", arg = "FILE", llama = "--grammar-file",
    unsupported = "no constrained decoding; a logits_processor in generate() can mask tokens",
    help = "not supported" },
  { "-j", "--json-schema", key = "json_schema", arg = "SCHEMA", llama = "-j, --json-schema",
    unsupported = "no constrained decoding; a logits_processor in generate() can mask tokens",
    help = "not supported" },
  { "--lora", key = "lora", arg = "FILE", llama = "--lora",
    unsupported = "no LoRA adapters; merge the adapter into the weights first", help = "not supported" },
  { "--override-kv", key = "override_kv", arg = "KEY=TYPE:VALUE", llama = "--override-kv",
    unsupported = "GGUF metadata is read as written; edit the file with gguf's gguf_set_metadata.py",
    help = "not supported" },
}

-- Flags that only the generate tool uses (model_spec leaves them out for
-- the other examples, which take their prompts otherwise).
local generate_only = { prompt = true, file = true }

--- The flags of a llama.cpp-style generation tool (a copy of M.flags,
-- less -p and -f, which generate_spec adds).
-- @treturn table a spec for parse
function M.model_spec()
  local spec = {}
  for _, s in ipairs(M.flags) do
    if not generate_only[s.key] then
      local c = {}
      for k, v in pairs(s) do c[k] = v end
      spec[#spec + 1] = c
    end
  end
  spec[1].default = os.getenv("LRUN_MODEL")
  return spec
end

--- The flags of the generate tool: model_spec plus -p, -f and -st (--chat).
function M.generate_spec()
  local spec = M.model_spec()
  table.insert(spec, 2, M.flag("prompt"))
  table.insert(spec, 3, M.flag("file"))
  spec[#spec + 1] = { "-st", "--single-turn", "--chat", key = "chat", type = "flag", llama = "-st, --single-turn",
    help = "answer the prompt once in chat form (the model's template) and exit" }
  return spec
end

--- The entry of M.flags with this key (a copy).
function M.flag(key)
  for _, s in ipairs(M.flags) do
    if s.key == key then
      local c = {}
      for k, v in pairs(s) do c[k] = v end
      return c
    end
  end
end

--- Checks one value of a flag of M.flags by its key: the converted value,
-- or nil and the one-line message ("--device tpu: expected …").
-- @tparam string key
-- @tparam string name the flag as the user wrote it
-- @tparam string value
function M.check_value(key, name, value)
  return convert(M.flag(key), name, value)
end

--- lrun's device for a --device value: llama.cpp's CUDA0 is cuda:0, none is cpu.
function M.device_of(v)
  if v == nil then return nil end
  if v == "none" then return "cpu" end
  local n = v:match("^CUDA(%d+)$")
  if n then return "cuda:" .. n end
  return v
end

-- The GPU a -ts value names: the index of its one non-zero part, or nil.
local function tensor_split_gpu(v)
  local i, found = -1, nil
  for part in (v .. ","):gmatch("([^,/]*)[,/]") do
    i = i + 1
    if (tonumber(part) or 0) > 0 then
      if found then return nil end -- several: a layer split's proportions
      found = i
    end
  end
  return found
end

--- llama.cpp's escapes (common's string_process_escapes): \n \r \t \' \" \\
-- and \xHH (two hex digits); any other backslash stays as written.
function M.escapes(s)
  if s == nil or not s:find("\\", 1, true) then return s end
  local out, i, n = {}, 1, #s
  local named = { n = "\n", r = "\r", t = "\t", ["'"] = "'", ['"'] = '"', ["\\"] = "\\" }
  while i <= n do
    local c = s:sub(i, i)
    if c == "\\" and i < n then
      local e = s:sub(i + 1, i + 1)
      local hex = e == "x" and s:sub(i + 2, i + 3) or ""
      if named[e] then
        out[#out + 1] = named[e]
        i = i + 2
      elseif hex:match("^%x%x$") then
        out[#out + 1] = string.char(tonumber(hex, 16))
        i = i + 4
      else
        out[#out + 1] = "\\" .. e
        i = i + 2
      end
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return table.concat(out)
end

--- The escape-processed texts of the flags (llama.cpp's default; --no-escape
-- leaves them): the prompt, -r, --in-prefix, --in-suffix, DRY's breakers.
function M.apply_escapes(opts)
  if opts.no_escape then return end
  opts.prompt = M.escapes(opts.prompt)
  opts.in_prefix = M.escapes(opts.in_prefix)
  opts.in_suffix = M.escapes(opts.in_suffix)
  for _, key in ipairs({ "stop", "dry_sequence_breaker" }) do
    if opts[key] then
      local t = {}
      for i, x in ipairs(opts[key]) do t[i] = M.escapes(x) end
      opts[key] = t
    end
  end
end

--- Checks the launcher's options (lrun.config, as the launcher builds it)
-- with the same checks as the tools' flags: nil, or a one-line message.
-- llama.cpp's device names become lrun's (CUDA0 → cuda:0).
function M.check_config(c)
  if c.device then
    local ok, err = M.check_value("device", "--device", c.device)
    if not ok then return err end
    c.device = M.device_of(c.device)
  end
  for _, o in ipairs(c.overrides or {}) do
    local ok, err = M.check_value("overrides", "-ot", o)
    if not ok then return err end
  end
  return nil
end

--- Checks the flags that depend on one another; nil, or the message.
function M.check_combination(opts)
  local k, v = opts.cache_type_k, opts.cache_type_v
  if k and v and k ~= v then
    return "-ctk " .. k .. " -ctv " .. v .. ": lrun keeps keys and values in one type; give the same type to both"
  end
  local t = k or v
  if t == "q8_0" or t == "q4_0" then
    if opts.cache_type and opts.cache_type ~= "quantized" then
      return "-ctk " .. t .. " --cache-type " .. opts.cache_type .. ": a quantized type needs the quantized cache"
    end
    local bits = t == "q8_0" and 8 or 4
    if opts.cache_bits and opts.cache_bits ~= bits then
      return "-ctk " .. t .. " --cache-bits " .. opts.cache_bits .. ": the type says " .. bits .. " bits"
    end
  end
  if opts.cache_bits and opts.cache_type and opts.cache_type ~= "quantized" then
    return "--cache-bits " .. opts.cache_bits .. " --cache-type " .. opts.cache_type
      .. ": bits are for the quantized cache only"
  end
  if opts.file and opts.prompt then return "-f and -p: give the prompt one way" end
  local ct = opts.chat_template
  if ct and not ct:find("{", 1, true) and not M.template_name(ct) then
    local ok, why = M.checks.readable(ct)
    if not ok then
      if ct:match("^[%w_.-]+$") and not ct:find("[/.]") then
        return "--chat-template " .. show(ct) .. ": not a template lrun has built in (it has "
          .. table.concat(require("lrun.chat").names(), ", ") .. "); or give Jinja text or a file"
      end
      return "--chat-template " .. show(ct) .. ": expected a Jinja template, a built-in name or a readable file ("
        .. why .. ")"
    end
  end
  if opts.conversation and opts.no_conversation then return "-cnv and -no-cnv: choose one" end
  if opts.json and opts.conversation then return "--json and -cnv: --json prints one run, not a conversation" end
  if opts.main_gpu then
    local d = M.device_of(opts.device)
    if d and d ~= "cuda:" .. opts.main_gpu and not (d == "cuda" and opts.main_gpu == 0) then
      return "-mg " .. opts.main_gpu .. " --device " .. opts.device .. ": they name different devices"
    end
  end
  local list = opts.device and opts.device:find("[,/]")
  if opts.tensor_split and not list then
    if not tensor_split_gpu(opts.tensor_split) then
      return "-ts " .. opts.tensor_split .. ": lrun runs a model on one GPU unless --device lists several"
        .. " (cuda:0,cuda:1 plans a layer split, docs/multigpu.md); give one non-zero part"
    end
    if opts.device or opts.main_gpu then
      return "-ts " .. opts.tensor_split .. ": give the GPU one way (--device cuda:N)"
    end
  end
  return nil
end

--- The built-in chat template (lrun.chat's, by llama.cpp's names) that a
-- --chat-template value names, or nil.
function M.template_name(v)
  if v and require("lrun.chat").templates[v] then return v end
  return nil
end

--- lrun.load options from parsed flags.
function M.load_options(opts)
  local device = M.device_of(opts.device)
  if opts.main_gpu then device = "cuda:" .. opts.main_gpu end
  local split = opts.tensor_split
  -- one device and one non-zero part: llama.cpp's way of picking a GPU
  if split and not (device or ""):find("[,/]") and tensor_split_gpu(split) then
    device, split = "cuda:" .. tensor_split_gpu(split), nil
  end
  local o = { threads = opts.threads, device = device, gpu_budget = opts.gpu_budget,
    host_budget = opts.host_budget, tensor_split = split,
    n_ctx = opts.ctx_size ~= 0 and opts.ctx_size or nil, numerics = opts.exact and "exact" or nil,
    policy = opts.policy, cpu_offload_gb = opts.cpu_offload_gb, smart_offload = opts.smart_offload or nil,
    overrides = opts.overrides, n_gpu_layers = opts.n_gpu_layers, prefetch_layers = opts.prefetch,
    n_cpu_moe = opts.n_cpu_moe, moe_host = opts.moe_host }
  if opts.no_op_offload then o.host_stream_rows = -1 end -- lrun.host_stream: prompts keep host products on the host
  if opts.no_packed then o.packed = false end -- never packed: smart does not weigh packing (lrun.pack_plan)
  -- -b / -ub: the engine's chunk (the smaller, as generate's n_batch below); unset: the plan's (lrun.prefill_batch)
  local nb = opts.batch_size
  if opts.ubatch_size and (not nb or opts.ubatch_size < nb) then nb = opts.ubatch_size end
  o.n_batch = nb
  if opts.cpu_moe and not o.policy then o.policy = "experts_on_host" end
  if o.n_gpu_layers and not o.policy then o.policy = "layers" end -- with --n-cpu-moe: its blocks as overrides
  -- a host budget on the command line means: plan the weights into it (the default policy, which sends what
  -- does not fit to the disk tier); a device budget alone is auto-fit's (lrun.load: left alone when the model
  -- fits, else placed by smart, which weighs a mixture's experts as llama.cpp's --n-cpu-moe would)
  if o.host_budget and not o.policy and not o.smart_offload then o.policy = "aggressive" end
  if opts.no_mmap then
    -- every weight read into host memory; -ot flags after it still win
    local ov = { ".=host" }
    for _, x in ipairs(opts.overrides or {}) do ov[#ov + 1] = x end
    o.overrides = ov
  end
  -- the KV cache
  local t = opts.cache_type_k or opts.cache_type_v
  if t == "f32" or t == "f16" then o.kv_dtype = t end
  local bits = opts.cache_bits or (t == "q8_0" and 8) or (t == "q4_0" and 4) or nil
  o.cache_implementation = opts.cache_type or (bits and "quantized") or nil
  if bits then o.cache_config = { nbits = bits } end
  if not o.progress and (opts.log_disable or opts.json or opts.log_verbosity == 0) then o.progress = false end
  return o
end

--- generate options from parsed flags (temperature 0 means greedy).
function M.generate_options(opts)
  local g = { max_new_tokens = opts.n_predict, repetition_penalty = opts.repeat_penalty }
  if opts.n_predict and opts.n_predict < 0 then g.max_new_tokens = nil end -- the caller fills it in
  if opts.temp and opts.temp > 0 then
    g.do_sample = true
    g.temperature = opts.temp
    g.top_k = opts.top_k
    g.top_p = opts.top_p
    g.min_p = opts.min_p
    if opts.typical_p and opts.typical_p < 1 then g.typical_p = opts.typical_p end
    if opts.seed and opts.seed >= 0 then g.seed = opts.seed end
  end
  if opts.presence_penalty and opts.presence_penalty ~= 0 then g.presence_penalty = opts.presence_penalty end
  if opts.frequency_penalty and opts.frequency_penalty ~= 0 then g.frequency_penalty = opts.frequency_penalty end
  if opts.stop and #opts.stop > 0 then g.stop = opts.stop end
  -- llama.cpp's samplers: passed when on, so that generate() keeps its fast path
  if opts.repeat_last_n then g.repeat_last_n = opts.repeat_last_n end
  if (opts.dry_multiplier or 0) > 0 then
    g.dry_multiplier, g.dry_base = opts.dry_multiplier, opts.dry_base
    g.dry_allowed_length, g.dry_penalty_last_n = opts.dry_allowed_length, opts.dry_penalty_last_n
    local b = opts.dry_sequence_breaker
    if b and #b > 0 then
      g.dry_sequence_breakers = {}
      for _, x in ipairs(b) do if x ~= "none" then table.insert(g.dry_sequence_breakers, x) end end
    end
  end
  if g.do_sample then
    if (opts.top_n_sigma or -1) > 0 then g.top_n_sigma = opts.top_n_sigma end
    if (opts.xtc_probability or 0) > 0 then
      g.xtc_probability, g.xtc_threshold = opts.xtc_probability, opts.xtc_threshold
    end
    if (opts.mirostat or 0) > 0 then
      g.mirostat, g.mirostat_tau, g.mirostat_eta = opts.mirostat, opts.mirostat_tau, opts.mirostat_eta
    end
  end
  if opts.ignore_eos then g.eos_token_id = false end
  local b = opts.batch_size
  if opts.ubatch_size and (not b or opts.ubatch_size < b) then b = opts.ubatch_size end
  g.n_batch = b
  return g
end

-- The message of an error raised by the library, without its Lua location.
local function message(e)
  local s = tostring(e)
  return (s:gsub("^[^\n:]*%.lua:%d+: ", ""))
end
M.message = message

--- Loads the model named by the flags, or prints why not and exits (1).
function M.load_or_exit(opts)
  local err = M.check_combination(opts)
  if err then M.die(err) end
  if not opts.model then M.die("no model: pass -m PATH or set LRUN_MODEL") end
  if opts.log_verbosity == 0 then opts.log_disable = true end
  if (opts.log_verbosity or 0) >= 4 then opts.verbose = true end
  if opts.log_disable or opts.json then require("lrun.log").sink = false end
  local ok, m
  ok, m, err = pcall(require("lrun").load, opts.model, M.load_options(opts))
  if not ok then M.die(message(m), 1) end
  if not m then M.die(tostring(err), 1) end
  if opts.mlock then
    local ffi = require("ffi")
    pcall(ffi.cdef, "int mlockall(int flags);")
    if ffi.C.mlockall(1) ~= 0 then -- MCL_CURRENT
      require("lrun.log").info("warning: --mlock: mlockall failed (errno %d); raise ulimit -l", ffi.errno())
    end
  end
  if opts.explain then
    io.stderr:write(tostring(m:placement()), "\n")
    -- the host dot kernels' level (AVX-512, AVX2, scalar; LRUN_CPU_ISA forces one)
    io.stderr:write("host kernels: ", require("ffi").string(require("lrun.ffi").C.lrun_cpu_kernels()), "\n")
  end
  if opts.verbose then
    io.stderr:write(require("lrun.pretty").format(m:info()), "\n")
    if not opts.explain then io.stderr:write(tostring(m:placement()), "\n") end
  end
  local template = opts.chat_template
  local file = opts.chat_template_file
  if M.template_name(template) then
    opts.template_name, template = template, nil -- m:chat's template option (cli_chat passes it)
  end
  if template and not template:find("{", 1, true) then file, template = template, nil end
  if file then
    local f, ferr = io.open(file, "rb")
    if not f then M.die("--chat-template " .. file .. ": " .. tostring(ferr), 1) end
    template = f:read("*a")
    f:close()
  end
  if template then m.chat_template = template end
  return m
end

return M
