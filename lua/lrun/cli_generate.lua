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

--- The chat prompt of messages as the model's template (or --chat-template's
-- built-in one) renders it, with the generation prompt.
function M.rendered(m, messages, opts)
  local text = require("lrun.chat").apply(m, messages, { template = opts.template_name })
  return text or ""
end

--- --verbose-prompt: the prompt's tokens to stderr, one "id -> 'text'" a
-- line, as llama-cli prints them; chat = tokenized as m:chat does.
function M.show_tokens(m, prompt, chat)
  local ids
  if chat then
    ids = m:tokenize(prompt, { add_special = not require("lrun.chat").starts_with_bos(m, prompt),
      parse_special = true })
  else
    ids = m:tokenize(prompt)
  end
  io.stderr:write(string.format("prompt: '%s'\nnumber of tokens in prompt = %d\n", prompt, #ids))
  for _, id in ipairs(ids) do
    io.stderr:write(string.format("%6d -> '%s'\n", id, m:detokenize({ id }, { special = true }) or ""))
  end
  io.stderr:write("\n")
end

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
  if prompt and not opts.no_escape then prompt = cli.escapes(prompt) end
  cli.apply_escapes(opts)
  -- the mode: llama-cli's, except that a prompt without -cnv is completed
  -- (llama-cli would chat); with no prompt, a model with a chat template
  -- starts a conversation
  local mode = opts.chat and "single" or opts.conversation and "conversation" or "complete"
  if not prompt and mode == "complete" then
    if opts.no_conversation then cli.die("no prompt: pass -p TEXT or -f FILE") end
    mode = "auto"
  end
  if mode == "complete" and not prompt:find("%S") then
    cli.die(from .. " " .. (prompt == "" and "''" or "(blank)") .. ": the prompt is empty; give some text")
  end
  if opts.json and mode ~= "complete" and not (mode == "single" and prompt) then
    cli.die("--json: one run with a prompt (-p or -f), not a conversation")
  end

  local m = cli.load_or_exit(opts)
  local gen = cli.generate_options(opts)
  local n_ctx = m.n_ctx > 0 and m.n_ctx or m:info().n_ctx_train
  if mode == "auto" then
    if not require("lrun.chat").model_template(m) and not opts.template_name and not opts.chat_template then
      m:free()
      cli.die("no prompt: pass -p TEXT or -f FILE (the model has no chat template for a conversation)")
    end
    mode = "conversation"
  end
  if mode == "conversation" or (mode == "single" and not prompt) then
    gen.max_new_tokens = gen.max_new_tokens or n_ctx
    return require("lrun.cli_chat").run(m, opts, gen, prompt, mode == "single")
  end
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
    if mode == "single" then
      local messages = {}
      if opts.system then messages[1] = { role = "system", content = opts.system } end
      messages[#messages + 1] = { role = "user", content = prompt }
      if opts.verbose_prompt then M.show_tokens(m, M.rendered(m, messages, opts), true) end
      gen.template = opts.template_name
      return m:chat(messages, gen)
    end
    if opts.verbose_prompt then M.show_tokens(m, prompt) end
    if not opts.json and not opts.no_display_prompt then io.stdout:write(prompt) end
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
      model = opts.model, prompt = prompt, chat = mode == "single", text = text, ids = ids,
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
