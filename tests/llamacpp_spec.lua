--- lrun against llama.cpp on the same GGUF file (SmolLM2-135M-Instruct Q4_1).
-- The reference is tests/golden/smollm2_greedy.json, written by
-- tests/golden/make_generation_golden.py through llama.cpp (xllamacpp); it is
-- regenerated, never edited. Checks, per prompt:
--   1. tokenization, id for id (add_special true and false; for this model
--      llama.cpp adds no BOS because the file says add_bos_token = false);
--   2. the greedy 32-token continuation from m:generate (the decode path),
--      id for id, up to and including the step where llama.cpp's raw argmax
--      was an end-of-generation token (its ignore_eos biased it away; lrun
--      with eos_token_id = {} takes it), where lrun must take an EOG token too;
--   3. every one of those steps again with llama.cpp's tokens as the context
--      (teacher forcing through the engine), so a difference early on cannot
--      hide the steps after it;
--   4. the first step: log_softmax of lrun's logits against llama.cpp's top-20
--      log-probabilities, within LOGPROB_TOL, and the same top-1.
-- Pending when LRUN_MODEL is unset.

-- Why exact. SmolLM2-135M has massive activation outliers, and llama.cpp
-- quantizes every activation vector to 8 bits before each Q4_1/Q8_0 matmul: a
-- 1e-7 relative change in the inputs of that quantization moves log-probs by
-- 0.08 nats, so two engines that merely agree to float precision part ways
-- within a few tokens. lrun's CPU pass therefore follows llama.cpp's x86
-- arithmetic bit for bit (docs/numerics.md), with the KV cache type each
-- golden was made with. Then the tokens are identical and the
-- logits equal llama.cpp's; the only gap left is in how llama.cpp's server
-- reports log-probs (it normalizes with an f32 sum over the sorted
-- probabilities, about 1.5e-4 above the exact log_softmax), hence
-- LOGPROB_TOL. A real bug moves them by far more: RoPE with half-split pairs
-- by 1.8-4.4 nats, a RoPE base of 10000 instead of 100000 by 0.25-1.46.
local LOGPROB_TOL = 1e-3       -- nats, max over llama.cpp's top-20 (first step)

-- Two goldens: f32 KV (the fewest roundings) and f16 KV (llama.cpp's and
-- lrun's default); lrun loads with the golden's cache type.
local GOLDENS = {"smollm2_greedy.json", "smollm2_greedy_f16.json"}

local N_THREADS = 2

package.path = "./?.lua;" .. package.path
local read_golden = require("tests.golden").read

-- lrun may hand back a Lua array (1-based) or a cdata float array (0-based);
-- get(i) is 0-based either way.
local function vec_accessor(v, n_fallback)
  if type(v) == "table" then
    return function(i) return v[i + 1] end, #v
  end
  return function(i) return tonumber(v[i]) end, n_fallback
end

-- log_softmax in double precision; returns a 0-based getter.
local function log_softmax(logits, n_vocab)
  local get, n = vec_accessor(logits, n_vocab)
  local mx = -math.huge
  for i = 0, n - 1 do
    local x = get(i)
    if x > mx then mx = x end
  end
  local sum = 0
  for i = 0, n - 1 do sum = sum + math.exp(get(i) - mx) end
  local lse = mx + math.log(sum)
  return function(i) return get(i) - lse end, n
end

local function argmax(logits, n_vocab)
  local get, n = vec_accessor(logits, n_vocab)
  local best, besti = -math.huge, -1
  for i = 0, n - 1 do
    local x = get(i)
    if x > best then best, besti = x, i end
  end
  return besti, n
end

local function copy_ids(ids, n)
  local out = {}
  for i = 1, (n or #ids) do out[i] = ids[i] end
  return out
end

local function fmt_ids(ids, from, to)
  local parts = {}
  for i = math.max(1, from), math.min(#ids, to) do parts[#parts + 1] = tostring(ids[i]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

-- lrun's view of every step of a golden continuation with llama.cpp's tokens
-- as the context: the prompt is run once, then each of llama.cpp's tokens one
-- at a time, through the engine (the same lrun_engine_step the generator
-- uses). Returns, for steps 1..n, {argmax = id, logit = function(id)} with
-- the logits kept only for the ids a report needs. Falls back to a fresh
-- m:logits call per step when the model does not expose its engine.
local function forced_steps(model, n_vocab, prompt, want, n, keep_ids)
  local steps = {}
  local function record(get, k)
    local best, besti = -math.huge, -1
    for i = 0, n_vocab - 1 do
      local x = get(i)
      if x > best then best, besti = x, i end
    end
    local kept = {[besti] = best}
    for _, id in ipairs(keep_ids(k, besti)) do kept[id] = get(id) end
    steps[k] = {argmax = besti, logit = function(id) return kept[id] end}
  end
  local ok_ffi, lf = pcall(require, "lrun.ffi")
  local engine = ok_ffi and type(model.engine) == "function" and model:engine()
  if not engine then
    for k = 1, n do
      local ctx = copy_ids(prompt)
      for j = 1, k - 1 do ctx[#ctx + 1] = want[j] end
      record(vec_accessor(model:logits(ctx), n_vocab), k)
    end
    return steps
  end
  local ffi, C = lf.ffi, lf.C
  local n_max = #prompt
  local tokens = ffi.new("int32_t[?]", n_max) -- (n_max,) the tokens of one step
  local seq = ffi.new("int32_t[?]", n_max)    -- (n_max,) all in sequence 0
  local logits = ffi.new("float[?]", n_vocab) -- (n_vocab,) the last position's
  local n_out = ffi.new("int64_t[1]")
  local function check(status, what)
    assert(status == C.LRUN_OK, what .. ": " .. lf.last_error())
  end
  check(C.lrun_engine_seq_truncate(engine, 0, 0), "resetting sequence 0")
  for i = 1, #prompt do tokens[i - 1] = prompt[i] end
  check(C.lrun_engine_step(engine, #prompt, tokens, seq, nil, logits, 1, n_out), "prefill")
  local get = function(i) return tonumber(logits[i]) end
  for k = 1, n do
    record(get, k)
    if k < n then
      tokens[0] = want[k]
      check(C.lrun_engine_step(engine, 1, tokens, seq, nil, logits, 1, n_out), "decode step " .. k)
    end
  end
  return steps
end

-- Judges lrun's choice at one step against llama.cpp's record of that step
-- (step.top2: llama.cpp's two best ids with their log-probs, from the raw
-- logits). Returns "same" or "diff"; any two end-of-generation ids count as
-- the same choice (the step where generation would end).
local function judge(step, lrun_id, eog_ids)
  local want = step.top2[1][1]
  if lrun_id == want then return "same" end
  if eog_ids and contains(eog_ids, want) and contains(eog_ids, lrun_id) then return "same" end
  return "diff"
end

local function step_report(case, k, lrun_id, lrun_logit)
  local step = case.steps[k]
  local want = step.top2[1][1]
  return string.format(
    "%s: generated token %d (0-based %d): lrun %d, llama.cpp %d; lrun logits [%d]=%.5f "
    .. "[%d]=%.5f (gap %.5f); llama.cpp log-probs top1 [%d]=%.5f top2 [%d]=%.5f (gap %.5f); "
    .. "llama.cpp's tokens before it %s",
    case.name, k, k - 1, lrun_id, want, lrun_id, lrun_logit(lrun_id) or 0 / 0, want,
    lrun_logit(want) or 0 / 0, (lrun_logit(lrun_id) or 0 / 0) - (lrun_logit(want) or 0 / 0),
    want, step.top2[1][2], step.top2[2][1], step.top2[2][2], step.top2[1][2] - step.top2[2][2],
    fmt_ids(case.continuation_ids, 1, k - 1))
end

local model_path = os.getenv("LRUN_MODEL")

for _, golden_name in ipairs(GOLDENS) do
describe("lrun against llama.cpp (SmolLM2-135M-Instruct Q4_1, " .. golden_name .. ")", function()
  if not model_path or model_path == "" then
    pending("LRUN_MODEL is not set")
    return
  end

  local golden = read_golden(golden_name)
  local KV_DTYPE = golden.settings.cache_type_k
  local lrun, model, n_vocab

  setup(function()
    lrun = require("lrun")
    local err
    model, err = lrun.load(model_path, {threads = N_THREADS, kv_dtype = KV_DTYPE})
    assert(model, "lrun.load(" .. model_path .. "): " .. tostring(err))
    n_vocab = model.n_vocab
    if not n_vocab and type(model.info) == "function" then n_vocab = model:info().n_vocab end
    n_vocab = tonumber(n_vocab) or 49152
  end)

  teardown(function()
    if model and model.free then model:free() end
    model = nil
  end)

  it("reads a golden file made by llama.cpp with the settings it states", function()
    assert.are.equal("xllamacpp", golden.reference.package)
    assert.are.equal(32, golden.n_predict)
    assert.are.equal(0.0, golden.settings.temperature)
    assert.are.equal(1, golden.settings.top_k)
    assert.are.equal(1.0, golden.settings.repeat_penalty)
    assert.are.equal(golden.settings.cache_type_k, golden.settings.cache_type_v)
    assert.are.equal("disabled", golden.settings.flash_attn)
    assert.is_true(#golden.cases >= 6)
  end)

  for _, case in ipairs(golden.cases) do
    describe("prompt '" .. case.name .. "'", function()
      -- Steps that compare: all 32, or those up to and including the one
      -- where llama.cpp's raw argmax was an EOG token (eog_at is 0-based).
      local n_cmp = case.eog_at and case.eog_at + 1 or golden.n_predict
      local forced -- lrun's view of each step with llama.cpp's context, made once
      local function forced_view()
        if not forced then
          forced = forced_steps(model, n_vocab, case.prompt_ids, case.continuation_ids, n_cmp,
            function(k, _) return {case.steps[k].top2[1][1], case.steps[k].top2[2][1]} end)
        end
        return forced
      end

      it("tokenizes id for id", function()
        for _, add_special in ipairs({false, true}) do
          local want = add_special and case.prompt_ids or case.prompt_ids_add_special_false
          local got = model:tokenize(case.text, {add_special = add_special,
                                                 parse_special = case.parse_special})
          assert.is_table(got)
          local first_diff
          for i = 1, math.max(#got, #want) do
            if got[i] ~= want[i] then first_diff = i; break end
          end
          assert(first_diff == nil, string.format(
            "%s (add_special=%s, parse_special=%s): first difference at token %d: "
            .. "lrun %s, llama.cpp %s (lrun %d ids, llama.cpp %d)",
            case.name, tostring(add_special), tostring(case.parse_special), first_diff or 0,
            fmt_ids(got, (first_diff or 1) - 2, (first_diff or 1) + 4),
            fmt_ids(want, (first_diff or 1) - 2, (first_diff or 1) + 4), #got, #want))
        end
      end)

      it("generates the same greedy continuation id for id", function()
        local prompt = copy_ids(case.prompt_ids)
        local text, ids = model:generate(prompt, {max_new_tokens = golden.n_predict,
                                                  do_sample = false, eos_token_id = {}})
        assert(text, "generate: " .. tostring(ids))
        assert.is_table(ids)
        -- Accept either the new tokens alone or prompt + new tokens.
        if #ids == #prompt + golden.n_predict then
          local gen = {}
          for i = #prompt + 1, #ids do gen[#gen + 1] = ids[i] end
          ids = gen
        end
        assert.are.equal(golden.n_predict, #ids)
        for k = 1, n_cmp do
          -- Up to here lrun's tokens were llama.cpp's, so the forced view is
          -- lrun's own context too.
          local st = forced_view()[k]
          assert(judge(case.steps[k], ids[k], golden.model.eog_ids) == "same",
                 "m:generate diverges at " .. step_report(case, k, ids[k], st.logit))
        end
      end)

      it("picks llama.cpp's token at every step given llama.cpp's context", function()
        local steps = forced_view()
        local bad = {}
        for k = 1, n_cmp do
          local st = steps[k]
          if judge(case.steps[k], st.argmax, golden.model.eog_ids) == "diff" then
            bad[#bad + 1] = step_report(case, k, st.argmax, st.logit)
          end
        end
        assert(#bad == 0, #bad .. " step(s) differ:\n" .. table.concat(bad, "\n"))
      end)

      it("agrees on the first-step log-probabilities (top-20 within tolerance, same top-1)", function()
        local lg = model:logits(copy_ids(case.prompt_ids))
        local top1, n = argmax(lg, n_vocab)
        assert.are.equal(n_vocab, n)
        local lp = log_softmax(lg, n_vocab)
        local worst, worst_id = 0, -1
        for _, pair in ipairs(case.first_step_top20) do
          local d = math.abs(lp(pair[1]) - pair[2])
          if d > worst then worst, worst_id = d, pair[1] end
        end
        assert(worst <= LOGPROB_TOL, string.format(
          "%s: max |log-prob difference| over llama.cpp's top-20 is %.6f (token %d) > %g",
          case.name, worst, worst_id, LOGPROB_TOL))
        assert(top1 == case.first_step_top20[1][1], string.format(
          "%s: top-1 lrun %d (log-prob %.5f), llama.cpp %d (log-prob %.5f)", case.name, top1,
          lp(top1), case.first_step_top20[1][1], case.first_step_top20[1][2]))
      end)
    end)
  end
end)
end

-- Every architecture against llama.cpp: the random-weight model of each entry
-- of tests/arch_models.lua (regenerated here by lrun's generator; the golden
-- tests/golden/arch_greedy.json was made by make_generation_golden.py --archs
-- from the same files). lrun's CPU pass follows llama.cpp's arithmetic for
-- every op the architectures use (docs/numerics.md, docs/architectures.md),
-- so the tolerance is the one above (LOGPROB_TOL, 1e-3 nats); measured: 1e-6.
-- A wrong op moves log-probs by far more (the other RoPE pairs: 0.28 on
-- qwen2, 0.50 on llama). Needs no model file.
describe("lrun against llama.cpp on each architecture (random weights, arch_greedy.json)", function()
  local golden = read_golden("arch_greedy.json")
  local arch_models = require("tests.arch_models")
  local lrun = require("lrun")
  local by_name = {}
  for _, e in ipairs(arch_models.models) do by_name[e.name] = e end

  it("reads a golden made by llama.cpp for every model of tests/arch_models.lua", function()
    assert.are.equal("xllamacpp", golden.reference.package)
    assert.are.equal("f32", golden.settings.cache_type_k)
    assert.are.equal(#arch_models.models, #golden.models)
    for _, m in ipairs(golden.models) do assert.truthy(by_name[m.name], m.name) end
  end)

  for _, gm in ipairs(golden.models) do
    describe(gm.name, function()
      local model, path, n_vocab
      setup(function()
        path = os.tmpname()
        arch_models.generate(by_name[gm.name], path)
        local err
        model, err = lrun.load(path, {threads = N_THREADS, kv_dtype = "f32", progress = false})
        assert(model, "lrun.load(" .. gm.name .. "): " .. tostring(err))
        n_vocab = tonumber(model:info().n_vocab)
      end)
      teardown(function()
        if model then model:free() end
        if path then os.remove(path) end
      end)

      for _, case in ipairs(gm.cases) do
        it(case.name .. ": first-step log-probs within tolerance, and the same greedy ids", function()
          local lp = log_softmax(model:logits(copy_ids(case.prompt_ids)), n_vocab)
          local worst, worst_id = 0, -1
          for _, pair in ipairs(case.first_step_top20) do
            local d = math.abs(lp(pair[1]) - pair[2])
            if d > worst then worst, worst_id = d, pair[1] end
          end
          assert(worst <= LOGPROB_TOL, string.format("%s/%s: max |log-prob difference| over llama.cpp's top-20 is "
            .. "%.6f (token %d) > %g", gm.name, case.name, worst, worst_id, LOGPROB_TOL))
          -- the same ids up to the step where llama.cpp's raw argmax was an
          -- end-of-generation token (eog_at, 0-based; its ignore_eos biased it
          -- away), where lrun (eos_token_id = {}) must take one too
          local _, ids = model:generate(copy_ids(case.prompt_ids), {max_new_tokens = golden.n_predict,
            do_sample = false, eos_token_id = {}})
          local skip = #ids == #case.prompt_ids + golden.n_predict and #case.prompt_ids or 0
          local n_cmp = case.eog_at and case.eog_at or golden.n_predict
          local got, want = {}, {}
          for k = 1, n_cmp do got[k], want[k] = ids[skip + k], case.continuation_ids[k] end
          assert.are.same(want, got)
          if case.eog_at then
            local at = ids[skip + case.eog_at + 1]
            assert(contains(case.eog_ids, at), string.format("%s/%s: step %d: lrun took %s, llama.cpp's raw argmax "
              .. "was end-of-generation", gm.name, case.name, case.eog_at, tostring(at)))
          end
        end)
      end
    end)
  end
end)
