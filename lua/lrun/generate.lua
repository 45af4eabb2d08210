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
--                      and the text returned is cut before it (stop_strings, HF's name, too)
--   max_length         HF's: prompt + new tokens at most (max_new_tokens wins when both)
--   min_new_tokens     0      eos ids are masked until this many new tokens
--   min_length         0      as min_new_tokens, counting the prompt (HF)
--   no_repeat_ngram_size 0    no n-gram of this size occurs twice (prompt included)
--   bad_words_ids      {{ids…},…} token sequences that must not be generated
--   suppress_tokens    {ids…} tokens that are never generated
--   typical_p          1.0    locally typical sampling (with do_sample); 1.0 = off
--   presence_penalty   0.0    llama.cpp's: subtracted from tokens present in the sequence
--   frequency_penalty  0.0    llama.cpp's: subtracted once per occurrence
--   logits_processor   function(ids, scores, n_vocab) or a list of them: run over each
--                      step's scores (float[n_vocab] by token id, changed in place or
--                      returned) after the built-in processors, before the warpers (HF's order)
--   output_scores      per-step processed scores in stats.scores (float[n_vocab] each)
--   output_logits      per-step raw logits in stats.logits
--   return_dict_in_generate  return one table {text=, ids=, sequences=, scores=, logits=, stats=}
--   streamer           an object with put(self, ids) and end(self): put gets the prompt
--                      ids, then each new id ({id}), as HF's streamers do
--   max_time           seconds: generation stops (reason "time") once this much has passed
--
-- llama.cpp's samplers (lrun.logits_process; llama.cpp's names and defaults):
--
--   repeat_last_n      all    the penalties (repetition, presence, frequency) look at the
--                             last N tokens; -1 = all (HF), 0 = none; llama.cpp's default is 64
--   dry_multiplier     0.0    DRY: a token extending a repeat of L >= dry_allowed_length
--   dry_base           1.75   tokens loses dry_multiplier * dry_base^(L - dry_allowed_length)
--   dry_allowed_length 2
--   dry_penalty_last_n -1     tokens DRY looks back over; -1 = all, 0 = off
--   dry_sequence_breakers {"\n", ":", "\"", "*"}  repeats do not reach over these
--   top_n_sigma        -1     keep logits >= max - n * std; <= 0 = off
--   xtc_probability    0.0    XTC: with this chance, remove every token with
--   xtc_threshold      0.1    p >= threshold but the least likely of them
--   mirostat           0      1 or 2: mirostat v1/v2 instead of top_k/top_p/min_p/typical_p
--   mirostat_tau       5.0    target surprise (bits)
--   mirostat_eta       0.1    learning rate
--   on_token           function(piece, id): called once per token with the text
--                      it completes, in whole UTF-8 characters ("" while a
--                      character or a possible stop string is still open);
--                      return false to stop
--   add_special        when the prompt is a string: tokenize it with BOS (default true)
--   cache_implementation  "dynamic", "static", "offloaded", "offloaded_static" or
--                      "quantized" (default: the load option's; docs/kv-cache.md)
--   cache_config       for "quantized": {nbits = 8|4, q_group_size =, residual_length =}
--
-- Beams (HF semantics, lrun.beam and lrun.beam_groups; docs/generation.md):
--
--   num_beams          1      > 1: beam search
--   num_beam_groups    1      > 1: group (diverse) beam search
--   diversity_penalty  0.0    Hamming diversity between groups (> 0 with groups)
--   length_penalty     1.0    a finished beam scores sum log-prob / length^length_penalty
--   early_stopping     false  false, true or "never", as HF
--   num_return_sequences 1    sequences per prompt (<= num_beams; with do_sample, samples)
--   pad_token_id       the file's padding id, else the first eos id (what a
--                             finished group contributes to the diversity penalty)
--
-- Runs and memory:
--
--   cache_implementation  the model's   "dynamic", "static", "offloaded", "offloaded_static",
--                             "quantized" (docs/kv-cache.md)
--   cache_config       for "quantized": {nbits = 8|4, q_group_size =, residual_length =}
--   max_batch_rows     all    sequences in the engine at once; a larger batch of
--                             prompts runs in chunks (split_batch sets it)
--   n_batch            512    tokens per engine step before it is split
--   on_oom             a list of fallback strategies (names of policies/fallback/
--                             modules, tables or functions) tried in order when the
--                             run runs out of device memory (docs/fallbacks.md)
--
-- A prompt that is a list of prompts (strings or id lists) is a batch: each
-- prompt its own sequence, no padding; one engine step per token across them.
--
-- An unknown option or a value of the wrong type is an error naming the option.
-- The sampling of each step is one lrun_sample call; the prefill is one
-- lrun_engine_step call.
-- @module lrun.generate
local lf = require("lrun.ffi")
local errors = require("lrun.errors")
local sys = require("lrun.sys")
local ffi, C = lf.ffi, lf.C

local text_stream = require("lrun.text_stream")

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
  min_p = 0.0, repetition_penalty = 1.0, num_beams = 1, num_beam_groups = 1, diversity_penalty = 0.0,
  length_penalty = 1.0, early_stopping = false, num_return_sequences = 1,
}

-- ---------------------------------------------------------------- options

local INT_MAX = require("lrun.size").INT_MAX
-- A whole number a C int holds (counts and sizes reach the engine as int: a larger one would wrap); the seed,
-- a 53-bit whole number, is checked on its own.
local function is_int(v) return type(v) == "number" and v % 1 == 0 and v == v and math.abs(v) <= INT_MAX end
-- A checker for a whole number from lo to INT_MAX.
local function whole_from(lo)
  local want = string.format("a whole number >= %d and <= %d", lo, INT_MAX)
  return function(v) if not (is_int(v) and v >= lo) then return want end end
end

-- Each checker returns nil when the value is fine, else what was expected.
local checks = {
  max_new_tokens = whole_from(0),
  do_sample = function(v) if type(v) ~= "boolean" then return "a boolean" end end,
  temperature = function(v) if not (type(v) == "number" and v > 0 and v < math.huge) then return "a number > 0" end end,
  top_k = whole_from(0),
  top_p = function(v) if not (type(v) == "number" and v > 0 and v <= 1) then return "a number in (0, 1]" end end,
  min_p = function(v) if not (type(v) == "number" and v >= 0 and v <= 1) then return "a number in [0, 1]" end end,
  repetition_penalty = function(v)
    if not (type(v) == "number" and v > 0 and v < math.huge) then return "a number > 0" end
  end,
  seed = function(v)
    if not (type(v) == "number" and v % 1 == 0 and v >= 0 and v < 2^53) then return "a whole number from 0 to 2^53" end
  end,
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
  num_beams = whole_from(1),
  num_beam_groups = whole_from(1),
  diversity_penalty = function(v) if not (type(v) == "number" and v >= 0 and v < math.huge) then return "a number >= 0" end end,
  length_penalty = function(v) if not (type(v) == "number" and v == v and math.abs(v) < math.huge) then return "a finite number" end end,
  early_stopping = function(v) if not (type(v) == "boolean" or v == "never") then return 'true, false or "never"' end end,
  num_return_sequences = whole_from(1),
  pad_token_id = function(v) if not (is_int(v) and v >= 0) then return "a token id" end end,
  max_batch_rows = whole_from(1),
  n_batch = whole_from(1),
  on_oom = function(v) if type(v) ~= "table" then return "a list of fallback strategies" end end,
  cache_implementation = function(v)
    if type(v) ~= "string" then return "one of \"" .. table.concat(require("lrun.cache").names, "\", \"") .. "\"" end
  end,
  cache_config = function(v) if type(v) ~= "table" then return "a table" end end,
  max_length = whole_from(0),
  min_new_tokens = whole_from(0),
  min_length = whole_from(0),
  no_repeat_ngram_size = whole_from(0),
  bad_words_ids = function(v)
    local want = "a list of lists of token ids"
    if type(v) ~= "table" or #v == 0 then return want end
    for _, seq in ipairs(v) do
      if type(seq) ~= "table" or #seq == 0 then return want end
      for _, id in ipairs(seq) do if not (is_int(id) and id >= 0) then return want end end
    end
  end,
  suppress_tokens = function(v)
    if type(v) ~= "table" then return "a list of token ids" end
    for _, id in ipairs(v) do if not (is_int(id) and id >= 0) then return "a list of token ids" end end
  end,
  typical_p = function(v) if not (type(v) == "number" and v > 0 and v <= 1) then return "a number in (0, 1]" end end,
  presence_penalty = function(v)
    if not (type(v) == "number" and math.abs(v) < math.huge) then return "a finite number" end
  end,
  frequency_penalty = function(v)
    if not (type(v) == "number" and math.abs(v) < math.huge) then return "a finite number" end
  end,
  logits_processor = function(v)
    if type(v) == "function" then return end
    if type(v) == "table" then
      for _, f in ipairs(v) do if type(f) ~= "function" then return "a function or a list of functions" end end
      return
    end
    return "a function(ids, scores, n_vocab) or a list of them"
  end,
  output_scores = function(v) if type(v) ~= "boolean" then return "a boolean" end end,
  output_logits = function(v) if type(v) ~= "boolean" then return "a boolean" end end,
  return_dict_in_generate = function(v) if type(v) ~= "boolean" then return "a boolean" end end,
  streamer = function(v)
    local ok = (type(v) == "table" or type(v) == "userdata") and type(v.put) == "function"
      and type(v["end"]) == "function"
    if not ok then return "an object with put(self, ids) and end(self)" end
  end,
  max_time = function(v) if not (type(v) == "number" and v > 0) then return "a number of seconds > 0" end end,
  -- llama.cpp's samplers (lrun.logits_process)
  repeat_last_n = whole_from(-1),
  top_n_sigma = function(v) if not (type(v) == "number" and math.abs(v) < math.huge) then return "a finite number" end end,
  xtc_probability = function(v) if not (type(v) == "number" and v >= 0 and v <= 1) then return "a number in [0, 1]" end end,
  xtc_threshold = function(v) if not (type(v) == "number" and v >= 0 and v <= 1) then return "a number in [0, 1]" end end,
  dry_multiplier = function(v) if not (type(v) == "number" and v >= 0 and v < math.huge) then return "a number >= 0" end end,
  dry_base = function(v) if not (type(v) == "number" and v > 0 and v < math.huge) then return "a number > 0" end end,
  dry_allowed_length = whole_from(0),
  dry_penalty_last_n = whole_from(-1),
  dry_sequence_breakers = function(v)
    if type(v) ~= "table" then return "a list of strings" end
    for _, x in ipairs(v) do if type(x) ~= "string" or x == "" then return "a list of non-empty strings" end end
  end,
  mirostat = function(v) if not (v == 0 or v == 1 or v == 2) then return "0, 1 or 2" end end,
  mirostat_tau = function(v) if not (type(v) == "number" and v >= 0 and v < math.huge) then return "a number >= 0" end end,
  mirostat_eta = function(v) if not (type(v) == "number" and v >= 0 and v < math.huge) then return "a number >= 0" end end,
}

checks.stop_strings = checks.stop

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
-- @tparam[opt] table model_defaults the model's own defaults (an HF
--   directory's generation_config.json), under opts and over M.defaults;
--   a value the checks refuse is left out, as transformers warns and ignores
-- @treturn table opts with the defaults filled in (a new table)
function M.check_options(opts, level, model_defaults)
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
  if out.stop_strings ~= nil then
    if out.stop ~= nil then error("generate: give stop or stop_strings, not both", level) end
    out.stop, out.stop_strings = out.stop_strings, nil
  end
  -- max_length (HF: prompt + new) applies when max_new_tokens is not given
  if out.max_length ~= nil and out.max_new_tokens ~= nil then out.max_length = nil end
  for k, v in pairs(model_defaults or {}) do
    if out[k] == nil and checks[k] and not checks[k](v) then out[k] = v end
  end
  for k, v in pairs(M.defaults) do if out[k] == nil then out[k] = v end end
  return out
end

-- ---------------------------------------------------------------- text

M.utf8_complete_len = text_stream.utf8_complete_len

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

-- ---------------------------------------------------------------- sampling rows

-- A copy of one row of logits: float[n_vocab] by token id.
local function copy_row(row, n_vocab)
  local c = ffi.new("float[?]", n_vocab)
  ffi.copy(c, row, n_vocab * 4)
  return c
end

-- The sampling parameters of the options.
local function sampling_params(opts)
  local p = ffi.new("lrun_sampling_params")
  p.do_sample = opts.do_sample and 1 or 0
  p.temperature = opts.temperature
  p.top_k = opts.top_k
  p.top_p = opts.top_p
  p.min_p = opts.min_p
  p.repetition_penalty = opts.repetition_penalty
  return p
end

--- Greedy or sampled decoding of rows, each row its own sequence in slot
-- row-1, one engine step per token across the rows still running.
-- @tparam table run {model=, rows={{ids=, seed=},...}, opts=, eos=, stops=}
-- @treturn[1] {{text=, ids=, reason=},...} one per row
-- @treturn[2] nil
-- @treturn[2] table error
local function sample_rows(run, stats)
  local model, opts, eos = run.model, run.opts, run.eos
  local n_rows = #run.rows
  local rows, err = require("lrun.engine_rows").open(model, n_rows, opts)
  if not rows then return nil, err end
  local n_vocab = model.n_vocab
  local p = sampling_params(opts)
  local work = ffi.new("uint8_t[?]", C.lrun_sample_work_bytes(n_vocab))
  local tok = ffi.new("int32_t[1]")
  local on_token = opts.on_token
  -- the Lua processors (lrun.logits_process) when an option needs them;
  -- the C sampler then only samples (or takes the argmax)
  local lp = require("lrun.logits_process")
  if lp.wanted(opts) then
    p = sampling_params({ do_sample = opts.do_sample, temperature = 1, top_k = 0, top_p = 1, min_p = 0,
      repetition_penalty = 1 })
  else
    lp = nil
  end
  local streamer = opts.streamer
  local deadline = opts.max_time and (run.t0 + opts.max_time)

  local state = {}
  -- the rows' sampler states hold C generators (XTC's draws): freed on every
  -- way out, not left to the collector (a script that calls os.exit leaks them)
  local function release_all()
    for _, s in pairs(state) do
      if s.lp and s.lp.free then s.lp.free() end
      if s.rng then ffi.gc(s.rng, nil); C.lrun_rng_free(s.rng); s.rng = nil end
    end
    rows:release_all()
  end
  local entries = {}
  for r, row in ipairs(run.rows) do
    local cap = #row.ids + opts.max_new_tokens
    local s = {
      history = ffi.new("int32_t[?]", cap), -- (cap,) prompt ids, then new ids (repetition penalty)
      n_history = #row.ids, n_prompt = #row.ids, new_ids = {}, reason = "length", running = true,
      stream = text_stream.new(model.tokenizer, run.stops),
      max_new = opts.max_length and math.max(0, opts.max_length - #row.ids) or opts.max_new_tokens,
      scores = opts.output_scores and {} or nil, logits = opts.output_logits and {} or nil,
    }
    for i = 1, #row.ids do s.history[i - 1] = row.ids[i] end
    if opts.do_sample then
      local out = ffi.new("lrun_rng *[1]")
      local st = C.lrun_rng_init(out, row.seed)
      if st ~= C.LRUN_OK then release_all(); return nil, errors.from_status(st, "seeding") end
      s.rng = ffi.gc(out[0], C.lrun_rng_free)
    end
    if lp then s.lp = lp.state(model, opts, row.seed) end
    state[r] = s
    entries[r] = { slot = r - 1, ids = row.ids }
  end

  if streamer then streamer:put(run.rows[1].ids) end
  local logits
  logits, err = rows:prefill(entries, stats)
  if not logits then release_all(); return nil, err end
  local t1 = sys.now()

  local live = {} -- row of each logits row
  for r = 1, n_rows do live[r] = r end
  local tokens = ffi.new("int32_t[?]", n_rows)
  local slots = ffi.new("int32_t[?]", n_rows)
  for step = 1, opts.max_new_tokens do
    check_interrupt()
    local n_next = 0
    for i, r in ipairs(live) do
      local s = state[r]
      local row_logits = logits + (i - 1) * n_vocab
      if lp then
        if s.logits then s.logits[#s.logits + 1] = copy_row(row_logits, n_vocab) end
        lp.apply(opts, row_logits, n_vocab, s.history, s.n_history, s.n_prompt, eos, run.eos_list, s.lp)
        if s.scores then s.scores[#s.scores + 1] = copy_row(row_logits, n_vocab) end
      end
      -- the C sampler's repetition penalty over its window (repeat_last_n)
      local wfirst, wn = 0, s.n_history
      if not lp then wfirst, wn = require("lrun.logits_process").window(s.n_history, opts.repeat_last_n) end
      local status = C.lrun_sample(row_logits, n_vocab, p, s.history + wfirst, wn, s.rng, work, tok)
      if status ~= C.LRUN_OK then release_all(); return nil, errors.from_status(status, "sampling") end
      local id = tok[0]
      if lp then lp.accept(opts, s.lp, id) end
      if streamer then streamer:put({ id }) end
      if eos[id] then
        s.reason, s.running = "eos", false
      else
        s.new_ids[#s.new_ids + 1] = id
        s.history[s.n_history] = id
        s.n_history = s.n_history + 1
        s.last_id = id
        local piece, stopped = s.stream:push(id)
        if on_token and on_token(piece, id) == false then
          s.stream:cut_to_shown()
          s.reason, s.running = "callback", false
        elseif stopped then
          s.reason, s.running = "stop", false
        elseif step >= s.max_new then
          s.running = false
        elseif deadline and sys.now() >= deadline then
          s.reason, s.running = "time", false
        elseif rows:len(r - 1) >= rows.n_ctx then
          s.reason, s.running = "context", false
        end
      end
      if s.running then
        tokens[n_next], slots[n_next] = s.last_id, r - 1
        n_next = n_next + 1
      end
    end
    if n_next == 0 then break end
    local next_live = {}
    for i = 0, n_next - 1 do next_live[i + 1] = slots[i] + 1 end
    live = next_live
    logits, err = rows:step(n_next, tokens, slots)
    if not logits then release_all(); return nil, err end
  end
  release_all()
  stats.generate_seconds = stats.generate_seconds + (sys.now() - t1)

  local out = {}
  for r, s in ipairs(state) do
    -- What is still held back belongs to the text, unless a stop string or
    -- the callback ended it.
    if s.reason ~= "callback" and s.reason ~= "stop" then
      local rest = s.stream:finish()
      if on_token and rest ~= "" then on_token(rest, s.last_id) end
    end
    out[r] = { text = s.stream.text, ids = s.new_ids, reason = s.reason, scores = s.scores, logits = s.logits }
  end
  if streamer then streamer["end"](streamer) end
  return out
end

-- ---------------------------------------------------------------- the entry point

-- Prompts as lists of ids, and whether the caller gave a batch.
local function prompt_ids(model, prompt, opts, level)
  local function one(p, where)
    local ids
    if type(p) == "string" then
      local err
      ids, err = model.tokenizer:try_encode(p, { add_special = opts.add_special ~= false }, level + 2)
      if not ids then return nil, err end
    elseif type(p) == "table" then
      ids = {}
      for i = 1, #p do
        local id = p[i]
        if not is_int(id) or id < 0 or id >= model.n_vocab then
          error("generate: " .. where .. "[" .. i .. "] = " .. tostring(id) .. " is not a token id of this model", level + 1)
        end
        ids[i] = id
      end
    else
      error("generate: " .. where .. " must be a string or a table of token ids, got " .. type(p), level + 1)
    end
    if #ids == 0 then
      error("generate: " .. (where == "prompt" and "the prompt" or where) .. " has no tokens", level + 1)
    end
    return ids
  end
  if type(prompt) == "table" and (type(prompt[1]) == "table" or type(prompt[1]) == "string") then
    local out = {}
    for i = 1, #prompt do
      local ids, err = one(prompt[i], "prompt " .. i)
      if not ids then return nil, err end -- the core failed to encode (out of memory)
      out[i] = ids
    end
    return out, true
  end
  local ids, err = one(prompt, "prompt")
  if not ids then return nil, err end
  return { ids }, false
end

-- HF's checks of the beam options, as errors naming them.
local function check_beam_options(opts, batched, level)
  local nb, ng = opts.num_beams, opts.num_beam_groups
  local function bad(msg) error("generate: " .. msg, level + 1) end
  if opts.num_return_sequences > 1 and nb == 1 and not opts.do_sample then
    bad("num_return_sequences > 1 needs num_beams > 1 or do_sample (greedy gives one sequence)")
  end
  if nb > 1 and opts.num_return_sequences > nb then
    bad("num_return_sequences (" .. opts.num_return_sequences .. ") must be <= num_beams (" .. nb .. ")")
  end
  if ng > 1 then
    if nb % ng ~= 0 then bad("num_beams (" .. nb .. ") must be a multiple of num_beam_groups (" .. ng .. ")") end
    if not (opts.diversity_penalty > 0) then bad("num_beam_groups > 1 needs diversity_penalty > 0") end
    if opts.do_sample then bad("group beam search does not sample (do_sample must be false)") end
  end
  if nb > 1 then
    if opts.do_sample then bad("beam sampling (num_beams > 1 with do_sample) is not supported") end
    if opts.on_token then bad("on_token streams one sequence; it does not work with beams") end
    if opts.stop then bad("stop strings are not supported with beams (use eos_token_id)") end
    -- transformers refuses a streamer with beams too
    if opts.streamer then bad("a streamer follows one sequence; it does not work with beams") end
    if opts.output_scores or opts.output_logits then
      bad("output_scores and output_logits are not supported with beams (sequences_scores are in the stats)")
    end
    if require("lrun.logits_process").llama_wanted(opts) or (opts.repeat_last_n or -1) >= 0 then
      bad("llama.cpp's samplers (repeat_last_n, DRY, XTC, top_n_sigma, mirostat) are for sampling and greedy runs, not beams")
    end
    if ng > 1 and require("lrun.logits_process").wanted(opts) then
      bad("group beam search takes only repetition_penalty of the logits processors")
    end
  elseif batched or opts.num_return_sequences > 1 then
    if opts.on_token then bad("on_token streams one sequence; it does not work with a batch") end
    if opts.streamer then bad("a streamer follows one sequence; it does not work with a batch") end
  end
end

-- One run: every prompt, under opts; a batch larger than max_batch_rows runs
-- in chunks of whole prompts.
local function run_once(model, prompts, opts, eos, eos_list, stats)
  local nb = opts.num_beams
  local per_prompt = nb > 1 and nb or opts.num_return_sequences
  local max_rows = opts.max_batch_rows or math.huge
  local chunk = math.max(1, math.floor(max_rows / per_prompt))
  local results = {}
  for first = 1, #prompts, chunk do
    local part = {}
    for i = first, math.min(#prompts, first + chunk - 1) do part[#part + 1] = prompts[i] end
    local out, err
    if nb > 1 then
      local run = { model = model, prompts = part, opts = opts, eos = eos, eos_list = eos_list,
        pad = opts.pad_token_id, check_interrupt = check_interrupt, t0 = stats.t0 }
      local search = opts.num_beam_groups > 1 and require("lrun.beam_groups") or require("lrun.beam")
      out, err = search.run(run, stats)
    else
      local rows = {}
      for i, ids in ipairs(part) do
        for k = 1, opts.num_return_sequences do
          local global = ((first + i - 2) * opts.num_return_sequences) + (k - 1)
          rows[#rows + 1] = { ids = ids, seed = stats.seed and (stats.seed + global) % 2 ^ 53 }
        end
      end
      local stops = type(opts.stop) == "string" and { opts.stop } or opts.stop
      out, err = sample_rows({ model = model, rows = rows, opts = opts, eos = eos, eos_list = eos_list,
        stops = stops, t0 = stats.t0 or sys.now() }, stats)
    end
    if not out then return nil, err end
    for _, r in ipairs(out) do
      if not r.text then
        local derr
        r.text, derr = model.tokenizer:try_decode(r.ids, { special = false })
        if not r.text then return nil, derr end
      end
      results[#results + 1] = r
    end
  end
  return results
end

--- Generates continuations (see the module's options).
-- One prompt and one sequence: text, ids, stats. A batch of prompts or
-- num_return_sequences > 1: lists of texts and of ids, prompt after prompt
-- (HF's order), and stats with per-sequence stop_reasons (and
-- sequences_scores for beams).
-- @tparam lrun.model model
-- @tparam string|{int,...}|{string|{int,...},...} prompt
-- @tparam[opt] table opts
-- @tparam[opt=1] int level of the user's call above this function, for errors
-- @treturn[1] string|{string,...} new text
-- @treturn[1] {int,...}|{{int,...},...} new ids (end-of-generation tokens excluded)
-- @treturn[1] table stats {n_prompt, n_generated, prompt_seconds, generate_seconds, stop_reason, seed, …;
--   with on_oom: fallbacks, and failed_seconds (the attempts that ran out of memory)}
-- @treturn[2] nil
-- @treturn[2] table error
function M.generate(model, prompt, opts, level)
  level = (level or 1) + 1
  opts = M.check_options(opts, level, model.generation_config)
  local prompts, batched = prompt_ids(model, prompt, opts, level)
  if not prompts then return nil, batched end
  check_beam_options(opts, batched, level)
  if opts.max_length then
    local shortest = math.huge
    for _, p in ipairs(prompts) do shortest = math.min(shortest, #p) end
    opts.max_new_tokens = math.max(0, opts.max_length - shortest)
  end
  if opts.on_oom then require("lrun.resilient").resolve(opts.on_oom, level) end

  local eos, eos_list = {}, {}
  local eos_opt = opts.eos_token_id
  if eos_opt == nil then eos_opt = model.tokenizer:eog_ids() end
  if type(eos_opt) == "number" then eos_opt = { eos_opt } end
  if type(eos_opt) == "table" then
    for _, id in ipairs(eos_opt) do
      if not eos[id] then eos[id] = true; eos_list[#eos_list + 1] = id end
    end
  end
  if opts.num_beams > 1 and opts.pad_token_id == nil then
    local pad = model:metadata("tokenizer.ggml.padding_token_id")
    opts.pad_token_id = type(pad) == "number" and pad or eos_list[1]
  end

  local n_out = #prompts * opts.num_return_sequences
  local stats = { n_prompt = #prompts[1], n_generated = 0, prompt_seconds = 0, generate_seconds = 0, t0 = sys.now() }
  if batched then
    stats.n_prompt = {}
    for i, p in ipairs(prompts) do stats.n_prompt[i] = #p end
  end
  if opts.do_sample then stats.seed = opts.seed or sys.random_seed() end

  local results, err
  if opts.max_new_tokens == 0 then
    results = {}
    for i = 1, n_out do results[i] = { text = "", ids = {}, reason = "length" } end
  elseif opts.on_oom then
    -- Strategies see the generate options plus model (to inspect), rows
    -- (sequences in the run) and place (placement options to apply).
    local config = {}
    for k, v in pairs(opts) do if k ~= "on_oom" then config[k] = v end end
    config.model = model
    config.rows = #prompts * (opts.num_beams > 1 and opts.num_beams or opts.num_return_sequences)
    local log = {}
    local placed = nil
    local attempts = 0
    results, err = require("lrun.resilient").run(function(cfg)
      -- the timings are the attempt that answers; the ones that ran out of
      -- memory before it are summed in failed_seconds
      attempts = attempts + 1
      if attempts > 1 then
        stats.failed_seconds = (stats.failed_seconds or 0) + stats.prompt_seconds + stats.generate_seconds
        stats.prompt_seconds, stats.generate_seconds = 0, 0
      end
      local o = {}
      for k, v in pairs(cfg) do if k ~= "model" and k ~= "rows" and k ~= "place" then o[k] = v end end
      if cfg.place and cfg.place ~= placed then
        local ok, perr = model:place(cfg.place)
        if not ok then return nil, perr end
        placed = cfg.place
      end
      return run_once(model, prompts, o, eos, eos_list, stats)
    end, opts.on_oom, config, { log = log })
    stats.fallbacks = log
    if not results then
      if type(err) == "table" then err.fallbacks = log end
      return nil, err
    end
  else
    results, err = run_once(model, prompts, opts, eos, eos_list, stats)
    if not results then return nil, err end
  end

  stats.t0 = nil
  for _, r in ipairs(results) do stats.n_generated = stats.n_generated + #r.ids end
  local texts, ids
  local one = not batched and n_out == 1
  if one then
    local r = results[1]
    stats.stop_reason = r.reason
    stats.sequence_score = r.score
    stats.scores, stats.logits = r.scores, r.logits
    texts, ids = r.text, r.ids
  else
    texts, ids = {}, {}
    stats.stop_reasons = {}
    if opts.num_beams > 1 then stats.sequences_scores = {} end
    if opts.output_scores then stats.scores = {} end
    if opts.output_logits then stats.logits = {} end
    for i, r in ipairs(results) do
      texts[i], ids[i], stats.stop_reasons[i] = r.text, r.ids, r.reason
      if stats.sequences_scores then stats.sequences_scores[i] = r.score end
      if stats.scores then stats.scores[i] = r.scores end
      if stats.logits then stats.logits[i] = r.logits end
    end
  end
  if opts.return_dict_in_generate then
    -- HF's GenerateDecoderOnlyOutput: sequences are prompt + new ids
    local function seq(p, new)
      local out = {}
      for i = 1, #p do out[i] = p[i] end
      for i = 1, #new do out[#p + i] = new[i] end
      return out
    end
    local sequences
    if one then
      sequences = seq(prompts[1], ids)
    else
      sequences = {}
      local per = #results / #prompts
      for i = 1, #results do sequences[i] = seq(prompts[math.floor((i - 1) / per) + 1], ids[i]) end
    end
    return { text = texts, ids = ids, sequences = sequences, scores = stats.scores, logits = stats.logits,
      stats = stats }
  end
  return texts, ids, stats
end

return M
