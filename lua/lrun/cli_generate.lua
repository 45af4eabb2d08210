--- lrun.cli_generate — the generate tool: `lrun examples/generate.lua -m FILE -p TEXT`
-- and `lrun FILE.gguf -p TEXT` (llama.cpp's llama-cli/llama-simple flags, lrun.cli).
--
-- Tokens stream to stdout as they come; the prompt and generation rates go
-- to stderr at the end (--log-disable drops them). --json prints one JSON
-- object instead: text, ids, stop reason, timings and placement.
-- A bad flag is one line and status 2 before anything reaches stdout; a
-- failed load or run is one line and status 1.
-- @module lrun.cli_generate
local cli = require("lrun.cli")

local M = {}

-- ---------------------------------------------------------------- JSON

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return named[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

--- JSON text of a Lua value: tables with [1] (or empty with is_array) are
-- arrays, others objects with sorted keys; functions and cdata are left out.
function M.json(v)
  local t = type(v)
  if t == "nil" then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or math.abs(v) == math.huge then return "null" end
    if v % 1 == 0 and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  if t == "string" then return json_string(v) end
  if t ~= "table" then return "null" end
  if v[1] ~= nil then
    local parts = {}
    for i = 1, #v do parts[i] = M.json(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k, x in pairs(v) do
    if type(k) == "string" and type(x) ~= "function" and type(x) ~= "cdata" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = json_string(k) .. ":" .. M.json(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- ---------------------------------------------------------------- the tool

local function prompt_of(opts)
  if opts.file then
    local f = io.open(opts.file, "rb")
    if not f then cli.die("-f " .. opts.file .. ": cannot open it") end
    local text = f:read("*a")
    f:close()
    return text, "-f " .. opts.file
  end
  if opts.prompt then return opts.prompt, "-p" end
  if #opts.rest > 0 then return table.concat(opts.rest, " "), "the prompt" end
  return nil
end

-- The placement as JSON wants it: bytes per tier, the policy, counts.
local function placement_summary(m)
  local p = m:placement()
  local tiers, host_compute = {}, 0
  for _, tier in pairs(p.tensors) do tiers[tier] = (tiers[tier] or 0) + 1 end
  for _ in pairs(p.host_compute) do host_compute = host_compute + 1 end
  return { bytes = p.bytes, tensors = tiers, host_compute_tensors = host_compute,
    policy = p.policy, prefetch = p.prefetch, device = m.device_name }
end

local function rate(n, s) return s > 0 and n / s or 0 end

--- Runs the tool over args; returns the exit status.
-- @tparam {string,...} args
-- @tparam[opt] string synopsis for --help
-- @treturn int
function M.main(args, synopsis)
  local spec = cli.generate_spec()
  local opts = cli.parse_or_exit(args, spec, synopsis or "lrun examples/generate.lua -m FILE -p TEXT [options]")
  local bad = cli.check_combination(opts)
  if bad then cli.die(bad) end
  local prompt, from = prompt_of(opts)
  if not prompt then cli.die("no prompt: pass -p TEXT or -f FILE") end
  if not prompt:find("%S") and not opts.chat then
    cli.die(from .. " " .. (prompt == "" and "''" or "(blank)") .. ": the prompt is empty; give some text")
  end

  local m = cli.load_or_exit(opts)
  local gen = cli.generate_options(opts)
  local n_ctx = m.n_ctx > 0 and m.n_ctx or m:info().n_ctx_train
  if not gen.max_new_tokens then
    local n_prompt = #m:tokenize(prompt)
    gen.max_new_tokens = math.max(0, n_ctx - n_prompt)
  end
  if not opts.json then
    gen.on_token = function(piece)
      io.stdout:write(piece)
      io.stdout:flush()
    end
  end

  local ok, text, ids, stats = pcall(function()
    if opts.chat then
      local messages = {}
      if opts.system then messages[1] = { role = "system", content = opts.system } end
      messages[#messages + 1] = { role = "user", content = prompt }
      return m:chat(messages, gen)
    end
    if not opts.json then io.stdout:write(prompt) end
    return m:generate(prompt, gen)
  end)
  if not ok then
    io.stdout:write("\n")
    cli.die(cli.message(text), 1)
  end
  if not text then
    if not opts.json then io.stdout:write("\n") end
    cli.die(tostring(ids), 1)
  end
  if opts.json then
    io.stdout:write(M.json({
      model = opts.model, prompt = prompt, chat = opts.chat or false, text = text, ids = ids,
      n_prompt = stats.n_prompt, n_generated = stats.n_generated, stop_reason = stats.stop_reason,
      seed = stats.seed,
      timings = { prompt_seconds = stats.prompt_seconds, generate_seconds = stats.generate_seconds,
        prompt_per_second = rate(stats.n_prompt, stats.prompt_seconds),
        predicted_per_second = rate(stats.n_generated, stats.generate_seconds) },
      placement = placement_summary(m),
    }), "\n")
  else
    io.stdout:write("\n")
    if not opts.log_disable then
      io.stderr:write(string.format(
        "\nprompt: %d tokens in %.3f s (%.1f tokens/s)\ngeneration: %d tokens in %.3f s (%.1f tokens/s), stopped by %s%s\n",
        stats.n_prompt, stats.prompt_seconds, rate(stats.n_prompt, stats.prompt_seconds),
        stats.n_generated, stats.generate_seconds, rate(stats.n_generated, stats.generate_seconds),
        stats.stop_reason, stats.seed and (", seed " .. string.format("%d", stats.seed)) or ""))
    end
  end
  io.stdout:flush()
  m:free()
  return 0
end

return M
