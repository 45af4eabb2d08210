--- lrun.generate — the generation loop: prefill, then sample one token per step.
-- Options follow HF GenerationConfig, with its defaults:
--
--   max_new_tokens     20     tokens to add at most (HF's max_length=20, counted here
--                             on the new tokens only)
--   do_sample          false  false: greedy (argmax)
--   temperature        1.0    > 0
--   top_k              50     0 = off
--   top_p              1.0    1.0 = off
--   min_p              0.0    keep tokens with p >= min_p * p_max; 0 = off
--   repetition_penalty 1.0    over the prompt and the output; 1.0 = off
--   seed               random the same seed gives the same sample
--   eos_token_id       the model's end-of-generation ids; a number, a list, or false
--   stop               a string or a list: generation ends when the text contains one,
--                      and the text returned is cut before it
--   on_token           function(piece, id): called once per token with the text
--                      it completes, in whole UTF-8 characters ("" while a
--                      character or a possible stop string is still open);
--                      return false to stop
--   add_special        when the prompt is a string: tokenize it with BOS (default true)
--   cache_implementation  "dynamic", "static", "offloaded", "offloaded_static" or
--                      "quantized" (default: the load option's; docs/kv-cache.md)
--   cache_config       for "quantized": {nbits = 8|4, q_group_size =, residual_length =}
--
-- An unknown option or a value of the wrong type is an error naming the option.
-- The sampling of each step is one lrun_sample call; the prefill is one
-- lrun_engine_step call.
-- @module lrun.generate
local lf = require("lrun.ffi")
local errors = require("lrun.errors")
local sys = require("lrun.sys")
local ffi, C = lf.ffi, lf.C

local M = {}

-- Ctrl-C under the launcher: its flag, polled once per step (debug hooks do
-- not reach JIT-compiled loops). Absent under plain luajit.
pcall(ffi.cdef, "extern volatile int lrun_launcher_interrupted;")
local can_interrupt = pcall(function() return ffi.C.lrun_launcher_interrupted end)

local function check_interrupt()
  if can_interrupt and ffi.C.lrun_launcher_interrupted ~= 0 then
    ffi.C.lrun_launcher_interrupted = 0
    error("interrupted!", 0)
  end
end

M.defaults = {
  max_new_tokens = 20, do_sample = false, temperature = 1.0, top_k = 50, top_p = 1.0,
  min_p = 0.0, repetition_penalty = 1.0,
}

-- ---------------------------------------------------------------- options

local function is_int(v) return type(v) == "number" and v % 1 == 0 and v == v end

-- Each checker returns nil when the value is fine, else what was expected.
local checks = {
  max_new_tokens = function(v) if not (is_int(v) and v >= 0) then return "a whole number >= 0" end end,
  do_sample = function(v) if type(v) ~= "boolean" then return "a boolean" end end,
  temperature = function(v) if not (type(v) == "number" and v > 0 and v < math.huge) then return "a number > 0" end end,
  top_k = function(v) if not (is_int(v) and v >= 0) then return "a whole number >= 0" end end,
  top_p = function(v) if not (type(v) == "number" and v > 0 and v <= 1) then return "a number in (0, 1]" end end,
  min_p = function(v) if not (type(v) == "number" and v >= 0 and v <= 1) then return "a number in [0, 1]" end end,
  repetition_penalty = function(v)
    if not (type(v) == "number" and v > 0 and v < math.huge) then return "a number > 0" end
  end,
  seed = function(v) if not (is_int(v) and v >= 0 and v < 2^53) then return "a whole number from 0 to 2^53" end end,
  eos_token_id = function(v)
    if v == false or is_int(v) then return end
    if type(v) == "table" then
      for _, id in ipairs(v) do if not is_int(id) then return "a token id or a list of them" end end
      return
    end
    return "a token id, a list of them, or false"
  end,
  stop = function(v)
    if type(v) == "string" then if v == "" then return "a non-empty string or a list of them" end return end
    if type(v) == "table" then
      for _, s in ipairs(v) do
        if type(s) ~= "string" or s == "" then return "a non-empty string or a list of them" end
      end
      return
    end
    return "a string or a list of strings"
  end,
  on_token = function(v) if type(v) ~= "function" then return "a function(piece, id)" end end,
  add_special = function(v) if type(v) ~= "boolean" then return "a boolean" end end,
  cache_implementation = function(v)
    if type(v) ~= "string" then return "one of \"" .. table.concat(require("lrun.cache").names, "\", \"") .. "\"" end
  end,
  cache_config = function(v) if type(v) ~= "table" then return "a table" end end,
}

-- Levenshtein distance, for "did you mean" on a misspelt option.
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

--- Checks generate options; raises an error at `level` naming a bad one.
-- @tparam table|nil opts
-- @tparam int level error level, as for error()
-- @treturn table opts with the defaults filled in (a new table)
function M.check_options(opts, level)
  level = (level or 1) + 1
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then error("generate: opts must be a table, got " .. type(opts), level) end
  local out = {}
  for k, v in pairs(opts) do
    local check = type(k) == "string" and checks[k]
    if not check then
      local hint, best = "", 3
      if type(k) == "string" then
        for name in pairs(checks) do
          local d = distance(k, name)
          if d < best then best, hint = d, " (did you mean '" .. name .. "'?)" end
        end
      end
      error("generate: unknown option '" .. tostring(k) .. "'" .. hint, level)
    end
    local want = check(v)
    if want then
      error("generate: option '" .. k .. "' must be " .. want .. ", got " .. tostring(v), level)
    end
    out[k] = v
  end
  require("lrun.cache").check("generate", out.cache_implementation, out.cache_config, level)
  for k, v in pairs(M.defaults) do if out[k] == nil then out[k] = v end end
  return out
end

-- ---------------------------------------------------------------- text

-- Length of the longest prefix of s that ends on a whole UTF-8 character;
-- the bytes after it wait for the next token. Bytes that can never complete
-- (a stray continuation byte, an invalid lead) are released as they are.
local function utf8_complete_len(s)
  local n = #s
  local i = n
  while i >= 1 and n - i < 3 do
    local b = s:byte(i)
    if b < 0x80 or b >= 0xC0 then break end
    i = i - 1
  end
  if i < 1 then return n end
  local b = s:byte(i)
  local need = b < 0x80 and 1 or (b >= 0xC0 and b < 0xE0) and 2 or (b >= 0xE0 and b < 0xF0) and 3
    or (b >= 0xF0 and b < 0xF8) and 4 or 1
  if n - i + 1 >= need then return n end
  return i - 1
end
M.utf8_complete_len = utf8_complete_len

-- Length of the longest suffix of text that begins some stop string (and
-- so may not be shown yet).
local function held_suffix(text, stops, max_stop)
  for len = math.min(#text, max_stop - 1), 1, -1 do
    local tail = text:sub(-len)
    for _, s in ipairs(stops) do
      if s:sub(1, len) == tail then return len end
    end
  end
  return 0
end

-- ---------------------------------------------------------------- engine

local function buffers(model)
  local b = model._buffers
  if b then return b end
  local n_vocab = model.n_vocab
  b = {
    logits = ffi.new("float[?]", n_vocab),                      -- (n_vocab,) last row
    work = ffi.new("uint8_t[?]", C.lrun_sample_work_bytes(n_vocab)),
    token = ffi.new("int32_t[1]"),
    seq = ffi.new("int32_t[1]"),
    n_out = ffi.new("int64_t[1]"),
    params = ffi.new("lrun_sampling_params"),
  }
  model._buffers = b
  return b
end

--- Starts a fresh sequence with ids and returns the last position's logits.
-- @tparam lrun.model model
-- @tparam {int,...} ids
-- @treturn[1] cdata float[n_vocab] (reused by the next call)
-- @treturn[2] nil
-- @treturn[2] table error
function M.prefill(model, ids, opts)
  opts = opts or {}
  local engine, err = model:engine(opts.cache_implementation, opts.cache_config)
  if not engine then return nil, err end
  local n = #ids
  local n_ctx = tonumber(C.lrun_engine_n_ctx_max(engine))
  if n > n_ctx then
    return nil, errors.new("arg", string.format("the prompt has %d tokens, more than the context of %d", n, n_ctx))
  end
  local b = buffers(model)
  local status = C.lrun_engine_seq_truncate(engine, 0, 0)
  if status ~= C.LRUN_OK then return nil, errors.from_status(status, "resetting the sequence") end
  local tokens = ffi.new("int32_t[?]", n)   -- (n,) the prompt
  local seq = ffi.new("int32_t[?]", n)      -- (n,) all in sequence 0
  for i = 1, n do
    local id = ids[i]
    if not is_int(id) or id < 0 or id >= model.n_vocab then
      error("generate: prompt[" .. i .. "] = " .. tostring(id) .. " is not a token id of this model", 3)
    end
    tokens[i - 1] = id
  end
  status = C.lrun_engine_step(engine, n, tokens, seq, nil, b.logits, 1, b.n_out)
  if status ~= C.LRUN_OK then return nil, errors.from_status(status, "prefill", model.device_name) end
  return b.logits
end

-- ---------------------------------------------------------------- the loop

--- Generates a continuation of prompt (see the module's options).
-- @tparam lrun.model model
-- @tparam string|{int,...} prompt
-- @tparam[opt] table opts
-- @tparam[opt=1] int level of the user's call above this function, for errors
-- @treturn[1] string new text
-- @treturn[1] {int,...} new ids (end-of-generation tokens excluded)
-- @treturn[1] table stats {n_prompt, n_generated, prompt_seconds, generate_seconds, stop_reason, seed}
-- @treturn[2] nil
-- @treturn[2] table error
function M.generate(model, prompt, opts, level)
  level = (level or 1) + 1
  opts = M.check_options(opts, level)
  local ids
  if type(prompt) == "string" then
    ids = model:tokenize(prompt, { add_special = opts.add_special ~= false })
  elseif type(prompt) == "table" then
    ids = {}
    for i = 1, #prompt do ids[i] = prompt[i] end
  else
    error("generate: prompt must be a string or a table of token ids, got " .. type(prompt), level)
  end
  if #ids == 0 then error("generate: the prompt has no tokens", level) end

  local eos = {}
  local eos_opt = opts.eos_token_id
  if eos_opt == nil then eos_opt = model.tokenizer:eog_ids() end
  if type(eos_opt) == "number" then eos[eos_opt] = true
  elseif type(eos_opt) == "table" then for _, id in ipairs(eos_opt) do eos[id] = true end end

  local stops = type(opts.stop) == "string" and { opts.stop } or opts.stop
  local max_stop = 0
  if stops then for _, s in ipairs(stops) do max_stop = math.max(max_stop, #s) end end
  if max_stop == 0 then stops = nil end

  local stats = { n_prompt = #ids, n_generated = 0, prompt_seconds = 0, generate_seconds = 0 }
  if opts.max_new_tokens == 0 then
    stats.stop_reason = "length"
    return "", {}, stats
  end

  local t0 = sys.now()
  local logits, err = M.prefill(model, ids, opts)
  if not logits then return nil, err end
  local t1 = sys.now()
  stats.prompt_seconds = t1 - t0

  local engine = model:engine(opts.cache_implementation, opts.cache_config)
  local b = buffers(model)
  local n_vocab = model.n_vocab
  local n_ctx = tonumber(C.lrun_engine_n_ctx_max(engine))

  local p = b.params
  p.do_sample = opts.do_sample and 1 or 0
  p.temperature = opts.temperature
  p.top_k = opts.top_k
  p.top_p = opts.top_p
  p.min_p = opts.min_p
  p.repetition_penalty = opts.repetition_penalty

  local rng = nil
  if opts.do_sample then
    stats.seed = opts.seed or sys.random_seed()
    local out = ffi.new("lrun_rng *[1]")
    local status = C.lrun_rng_init(out, stats.seed)
    if status ~= C.LRUN_OK then return nil, errors.from_status(status, "seeding") end
    rng = ffi.gc(out[0], C.lrun_rng_free)
  end

  -- The repetition penalty looks at the prompt and everything generated.
  local cap = #ids + opts.max_new_tokens
  local history = ffi.new("int32_t[?]", cap) -- (cap,) prompt ids, then new ids
  for i = 1, #ids do history[i - 1] = ids[i] end
  local n_history = #ids

  local new_ids = {}
  local text, pending, emitted = "", "", 0
  local on_token = opts.on_token
  local tok = ffi.new("int32_t[1]")
  local reason = "length"
  local last_id

  for step = 1, opts.max_new_tokens do
    check_interrupt()
    local status = C.lrun_sample(logits, n_vocab, p, history, n_history, rng, b.work, tok)
    if status ~= C.LRUN_OK then return nil, errors.from_status(status, "sampling") end
    local id = tok[0]
    if eos[id] then reason = "eos"; break end
    new_ids[#new_ids + 1] = id
    history[n_history] = id
    n_history = n_history + 1
    last_id = id

    -- Text: whole UTF-8 characters only; stop strings cut it.
    pending = pending .. model.tokenizer:piece(id, false)
    local k = utf8_complete_len(pending)
    local prev_len = #text
    text = text .. pending:sub(1, k)
    pending = pending:sub(k + 1)
    local stopped = false
    local releasable = #text
    if stops then
      local from = math.max(1, prev_len - max_stop + 2)
      local cut
      for _, s in ipairs(stops) do
        local at = text:find(s, from, true)
        if at and (not cut or at < cut) then cut = at end
      end
      if cut then
        text = text:sub(1, cut - 1)
        releasable = #text
        stopped = true
        pending = ""
      else
        releasable = #text - held_suffix(text, stops, max_stop)
      end
    end
    local piece = ""
    if releasable > emitted then
      piece = text:sub(emitted + 1, releasable)
      emitted = releasable
    end
    if on_token and on_token(piece, id) == false then
      text = text:sub(1, emitted) -- the caller saw exactly this
      pending = ""
      reason = "callback"
      break
    end
    if stopped then reason = "stop"; break end
    if step == opts.max_new_tokens then break end

    local pos = tonumber(C.lrun_engine_seq_len(engine, 0))
    if pos >= n_ctx then reason = "context"; break end
    b.token[0] = id
    b.seq[0] = 0
    status = C.lrun_engine_step(engine, 1, b.token, b.seq, nil, logits, 1, b.n_out)
    if status ~= C.LRUN_OK then return nil, errors.from_status(status, "decode step", model.device_name) end
  end

  -- What is still held back (an unfinished character at the very end, or
  -- the start of a stop string that never completed) belongs to the text.
  if reason ~= "callback" and reason ~= "stop" then
    text = text .. pending
    if on_token and #text > emitted then on_token(text:sub(emitted + 1), last_id) end
  end

  stats.n_generated = #new_ids
  stats.generate_seconds = sys.now() - t1
  stats.stop_reason = reason
  return text, new_ids, stats
end

return M
