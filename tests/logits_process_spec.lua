-- logits_process_spec: lrun.logits_process against transformers' logits
-- processors and warpers (tests/golden/generate_processors.json, from
-- tests/golden/make_generate_golden.py), and generate()'s HF options on
-- the default model.
package.path = "./?.lua;" .. package.path
local ffi = require("ffi")

describe("logits_process against transformers", function()
  local lp = require("lrun.logits_process")
  local ok, doc = pcall(require("tests.golden").read, "generate_processors.json")
  if not ok then
    pending("tests/golden/generate_processors.json is missing (make_generate_golden.py)")
    return
  end
  local eos, eos_list = {}, {}
  for _, id in ipairs(doc.eos) do eos[id] = true; eos_list[#eos_list + 1] = id end
  local n = #doc.ids
  local ids = ffi.new("int32_t[?]", n)
  for i, id in ipairs(doc.ids) do ids[i - 1] = id end

  for _, case in ipairs(doc.cases) do
    it(case.name, function()
      local scores = ffi.new("float[?]", doc.vocab)
      for i, v in ipairs(doc.logits) do scores[i - 1] = v end
      local o = { repetition_penalty = 1.0, temperature = 1.0, top_k = 50, top_p = 1.0, min_p = 0.0 }
      for k, v in pairs(case.options) do o[k] = v end
      lp.apply(o, scores, doc.vocab, ids, n, doc.n_prompt, eos, eos_list)
      for i = 1, doc.vocab do -- not ipairs: a masked entry (JSON null) decodes to nil
        local want, got = case.expect[i], scores[i - 1]
        if want == require("dkjson").null or want == nil then
          assert.are.equal(-math.huge, got, case.name .. ": id " .. (i - 1) .. " should be masked")
        else
          assert.is_true(got > -math.huge, case.name .. ": id " .. (i - 1) .. " should not be masked")
          assert.is_true(math.abs(got - want) <= 1e-5 * math.max(1, math.abs(want)),
            case.name .. ": id " .. (i - 1) .. ": " .. got .. " vs " .. want)
        end
      end
    end)
  end
end)

describe("logits_process edge cases", function()
  local lp = require("lrun.logits_process")
  local function arr(t)
    local a = ffi.new("float[?]", #t)
    for i, v in ipairs(t) do a[i - 1] = v end
    return a
  end

  it("top_k keeps every tie of the k-th score, as torch.topk's threshold does", function()
    local s = arr({ 1, 2, 2, 2, 0, -math.huge })
    lp.top_k(s, 6, 2)
    assert.are.same({ -math.huge, 2, 2, 2, -math.huge, -math.huge }, { s[0], s[1], s[2], s[3], s[4], s[5] })
    local t = arr({ 3, -math.huge, 1 })
    lp.top_k(t, 3, 5) -- fewer finite scores than k: nothing goes
    assert.are.same({ 3, -math.huge, 1 }, { t[0], t[1], t[2] })
  end)

  it("typical_p with one finite score keeps it", function()
    local s = arr({ -math.huge, 0.5, -math.huge })
    lp.typical(s, 3, 0.5)
    assert.are.equal(0.5, s[1])
  end)
end)

describe("generate's HF options", function()
  local path = os.getenv("LRUN_MODEL")
  if not path then
    pending("LRUN_MODEL is not set")
    return
  end
  local P = "The capital of France is"
  local m, base_ids
  setup(function()
    m = assert(require("lrun").load(path, { progress = false }))
    local _
    _, base_ids = m:generate(P, { max_new_tokens = 12 })
  end)
  teardown(function() if m then m:free() end end)

  it("max_length counts the prompt; max_new_tokens wins", function()
    local n_prompt = #m:tokenize(P)
    local _, ids = m:generate(P, { max_length = n_prompt + 3 })
    assert.are.same({ base_ids[1], base_ids[2], base_ids[3] }, ids)
    local _, ids2 = m:generate(P, { max_length = n_prompt + 3, max_new_tokens = 5 })
    assert.are.equal(5, #ids2)
  end)

  it("keeps greedy ids unchanged when a Lua option changes nothing", function()
    local _, ids = m:generate(P, { max_new_tokens = 12, suppress_tokens = {}, output_scores = true })
    assert.are.same(base_ids, ids)
  end)

  it("min_new_tokens masks eos until then", function()
    local eos = m.tokenizer:eog_ids()
    local _, ids, stats = m:generate(P, { max_new_tokens = 40, min_new_tokens = 30,
      logits_processor = function(_, scores) for _, id in ipairs(eos) do scores[id] = scores[id] + 100 end end })
    -- the processor runs after min_new_tokens' mask (HF's order): eos is forced from step 31 on
    assert.are.equal(30, #ids)
    assert.are.equal("eos", stats.stop_reason)
  end)

  it("min_length counts the prompt", function()
    local eos = m.tokenizer:eog_ids()
    local n_prompt = #m:tokenize(P)
    local _, ids = m:generate(P, { max_new_tokens = 40, min_length = n_prompt + 4,
      logits_processor = function(_, scores) for _, id in ipairs(eos) do scores[id] = scores[id] + 100 end end })
    assert.are.equal(4, #ids)
  end)

  it("suppress_tokens and bad_words_ids keep tokens out", function()
    local _, ids = m:generate(P, { max_new_tokens = 12, suppress_tokens = { base_ids[1] } })
    assert.are_not.equal(base_ids[1], ids[1])
    for _, id in ipairs(ids) do assert.are_not.equal(base_ids[1], id) end
    local _, ids2 = m:generate(P, { max_new_tokens = 12, bad_words_ids = { { base_ids[1] } } })
    assert.are.same(ids, ids2)
    -- a two-token entry bans its last token only after the first
    local _, ids3 = m:generate(P, { max_new_tokens = 12, bad_words_ids = { { base_ids[1], base_ids[2] } } })
    assert.are.equal(base_ids[1], ids3[1])
    assert.are_not.equal(base_ids[2], ids3[2])
  end)

  it("no_repeat_ngram_size leaves no n-gram twice", function()
    local prompt_ids = m:tokenize(P)
    local _, ids = m:generate(P, { max_new_tokens = 30, no_repeat_ngram_size = 2, repetition_penalty = 1.0 })
    local all = {}
    for _, id in ipairs(prompt_ids) do all[#all + 1] = id end
    for _, id in ipairs(ids) do all[#all + 1] = id end
    local seen = {}
    for i = 1, #all - 1 do
      local key = all[i] .. " " .. all[i + 1]
      assert.is_nil(seen[key], "bigram " .. key .. " repeats")
      seen[key] = true
    end
  end)

  it("typical_p samples reproducibly", function()
    local o = { max_new_tokens = 12, do_sample = true, seed = 7, typical_p = 0.3 }
    local _, a = m:generate(P, o)
    local _, b = m:generate(P, o)
    assert.are.same(a, b)
  end)

  it("presence and frequency penalties change repeated tokens' scores", function()
    local r = m:generate(P, { max_new_tokens = 2, output_scores = true, output_logits = true,
      presence_penalty = 1.5, frequency_penalty = 0.5, return_dict_in_generate = true })
    local prompt_ids = m:tokenize(P)
    local id = prompt_ids[#prompt_ids] -- once in the prompt
    assert.is_true(math.abs(r.logits[1][id] - 2.0 - r.scores[1][id]) < 1e-4)
  end)

  it("returns scores, logits and sequences with return_dict_in_generate", function()
    local r = m:generate(P, { max_new_tokens = 4, output_scores = true, output_logits = true,
      return_dict_in_generate = true, repetition_penalty = 1.3 })
    assert.are.equal(4, #r.scores)
    assert.are.equal(4, #r.logits)
    assert.are.equal(#m:tokenize(P) + 4, #r.sequences)
    assert.are.equal("string", type(r.text))
    assert.are.equal(4, r.stats.n_generated)
    -- greedy: each id is the argmax of its step's processed scores
    for step, id in ipairs(r.ids) do
      local best = 0
      for i = 1, m.n_vocab - 1 do if r.scores[step][i] > r.scores[step][best] then best = i end end
      assert.are.equal(best, id)
    end
    local _, _, stats = m:generate(P, { max_new_tokens = 2, output_scores = true })
    assert.are.equal(2, #stats.scores)
  end)

  it("calls logits_processor functions in order, with the ids so far", function()
    local seen = {}
    local n_prompt = #m:tokenize(P)
    local text = m:generate(P, { max_new_tokens = 3, logits_processor = {
      function(ids) seen[#seen + 1] = #ids end,
      function(_, scores, n_vocab) -- forces token 42
        for i = 0, n_vocab - 1 do scores[i] = -math.huge end
        scores[42] = 0
      end } })
    assert.are.same({ n_prompt, n_prompt + 1, n_prompt + 2 }, seen)
    assert.are.equal(m:detokenize({ 42, 42, 42 }), text)
  end)

  it("feeds a streamer the prompt, then each id, then end", function()
    local got, ended = {}, false
    local streamer = { put = function(_, ids) got[#got + 1] = ids end }
    streamer["end"] = function() ended = true end
    local _, ids = m:generate(P, { max_new_tokens = 3, streamer = streamer })
    assert.are.same(m:tokenize(P), got[1])
    assert.are.same({ { ids[1] }, { ids[2] }, { ids[3] } }, { got[2], got[3], got[4] })
    assert.is_true(ended)
  end)

  it("stops at max_time", function()
    local _, ids, stats = m:generate(P, { max_new_tokens = 2000, max_time = 0.05, eos_token_id = false })
    assert.are.equal("time", stats.stop_reason)
    assert.is_true(#ids < 2000)
  end)

  it("takes stop_strings as stop", function()
    local a = m:generate(P, { max_new_tokens = 12, stop_strings = "." })
    local b = m:generate(P, { max_new_tokens = 12, stop = "." })
    assert.are.equal(b, a)
    assert.has_error(function() m:generate(P, { stop = ".", stop_strings = "." }) end)
  end)

  it("checks the new options", function()
    for k, v in pairs({ min_new_tokens = -1, max_length = 1.5, no_repeat_ngram_size = "2", bad_words_ids = { 3 },
      suppress_tokens = 3, typical_p = 0, logits_processor = 3, streamer = {}, max_time = 0,
      output_scores = 1 }) do
      local ok, err = pcall(m.generate, m, P, { [k] = v })
      assert.is_false(ok, k)
      assert.matches("option '" .. k .. "'", err, 1, true)
    end
    assert.has_error(function() m:generate(P, { num_beams = 2, streamer = { put = function() end, ["end"] = function() end } }) end,
      "generate: a streamer follows one sequence; it does not work with beams")
    assert.has_error(function() m:generate(P, { num_beams = 2, output_scores = true }) end)
    assert.has_error(function()
      m:generate(P, { num_beams = 4, num_beam_groups = 2, diversity_penalty = 1, no_repeat_ngram_size = 2 })
    end, "generate: group beam search takes only repetition_penalty of the logits processors")
  end)

  it("runs the processors on beams (no repeated 2-gram in any returned sequence)", function()
    local _, ids = m:generate(P, { num_beams = 3, num_return_sequences = 3, max_new_tokens = 16,
      no_repeat_ngram_size = 2, eos_token_id = {} })
    assert.are.equal(3, #ids)
    local prompt = m:tokenize(P)
    for _, seq in ipairs(ids) do
      local all, seen = {}, {}
      for _, v in ipairs(prompt) do all[#all + 1] = v end
      for _, v in ipairs(seq) do all[#all + 1] = v end
      for i = 1, #all - 1 do
        local key = all[i] .. " " .. all[i + 1]
        assert.is_nil(seen[key], "2-gram " .. key .. " repeated")
        seen[key] = true
      end
    end
  end)
end)

describe("llama.cpp's samplers (tests/golden/llama_samplers.json)", function()
  local lp = require("lrun.logits_process")
  local ok, doc = pcall(require("tests.golden").read, "llama_samplers.json")
  if not ok then
    pending("tests/golden/llama_samplers.json is missing (make_llama_sampler_golden.py)")
    return
  end
  local n = #doc.ids
  local ids = ffi.new("int32_t[?]", n)
  for i, id in ipairs(doc.ids) do ids[i - 1] = id end
  local null = require("dkjson").null

  for _, case in ipairs(doc.cases) do
    it(case.name, function()
      local scores = ffi.new("float[?]", doc.vocab)
      for i, v in ipairs(doc.logits) do scores[i - 1] = v end
      local o = { repetition_penalty = 1.0, temperature = 1.0, top_k = 0, top_p = 1.0, min_p = 0.0 }
      for k, v in pairs(case.options) do o[k] = v end
      local st = { mu = case.mu }
      if case.breakers then
        st.breakers = {}
        for _, id in ipairs(case.breakers) do st.breakers[id] = true end
      end
      if case.u then st.uniform = function() return case.u end end
      lp.apply(o, scores, doc.vocab, ids, n, n, {}, {}, st)
      for i = 1, doc.vocab do
        local want, got = case.expect[i], scores[i - 1]
        if want == null or want == nil then
          assert.are.equal(-math.huge, got, case.name .. ": id " .. (i - 1) .. " should be masked")
        else
          assert.is_true(math.abs(got - want) <= 1e-5 * math.max(1, math.abs(want)),
            case.name .. ": id " .. (i - 1) .. ": " .. got .. " vs " .. want)
        end
      end
      if case.mu_after then
        lp.accept(o, st, case.token)
        assert.is_true(math.abs(st.mu - case.mu_after) < 1e-4, case.name .. ": mu " .. st.mu .. " vs " .. case.mu_after)
      end
    end)
  end
end)

describe("llama.cpp's samplers by hand", function()
  local lp = require("lrun.logits_process")
  local function arr(t)
    local a = ffi.new("float[?]", #t)
    for i, v in ipairs(t) do a[i - 1] = v end
    return a
  end
  local function ints(t)
    local a = ffi.new("int32_t[?]", #t)
    for i, v in ipairs(t) do a[i - 1] = v end
    return a
  end

  it("windows the penalties: last 2 of {1, 2, 1, 3}", function()
    assert.are.same({ 2, 2 }, { lp.window(4, 2) })
    assert.are.same({ 0, 4 }, { lp.window(4, -1) })
    assert.are.same({ 0, 4 }, { lp.window(4, nil) })
    assert.are.same({ 4, 0 }, { lp.window(4, 0) })
    local s = arr({ 0, 2, 2, 2 })
    lp.apply({ repetition_penalty = 2, repeat_last_n = 2 }, s, 4, ints({ 1, 2, 1, 3 }), 4, 4, {}, {})
    assert.are.same({ 0, 1, 2, 1 }, { s[0], s[1], s[2], s[3] }) -- 2 is outside the window
  end)

  it("DRY: after 'a b' with 'a b c' before, c loses multiplier * base^(2 - allowed)", function()
    -- ids a=1 b=2 c=3: 1 2 3 1 2 → 3 would extend a repeat of 2
    local s = arr({ 0, 0, 0, 0 })
    lp.dry(s, ints({ 1, 2, 3, 1, 2 }), 0, 5, { dry_multiplier = 1, dry_base = 2, dry_allowed_length = 1 }, {})
    assert.are.same({ 0, 0, 0, -2 }, { s[0], s[1], s[2], s[3] }) -- 1 * 2^(2-1)
    local t = arr({ 0, 0, 0, 0 })
    lp.dry(t, ints({ 1, 2, 3, 1, 2 }), 0, 5, { dry_multiplier = 1, dry_base = 2, dry_allowed_length = 1 },
      { [1] = true }) -- a breaker at the last 'a': repeats are at most 1 long
    assert.are.same({ 0, 0, 0, -1 }, { t[0], t[1], t[2], t[3] })
  end)

  it("top-n-sigma keeps logits within n population deviations of the max", function()
    local s = arr({ 0, 2, 4, -math.huge }) -- mean 2, std sqrt(8/3) = 1.633
    lp.top_n_sigma(s, 4, 1)               -- cut 4 - 1.633 = 2.367
    assert.are.same({ -math.huge, -math.huge, 4, -math.huge }, { s[0], s[1], s[2], s[3] })
  end)

  it("XTC removes the top choices but the least likely of them", function()
    local s = arr({ math.log(0.5), math.log(0.3), math.log(0.15), math.log(0.05) })
    lp.xtc(s, 4, 1, 0.1, 0)
    assert.are.equal(-math.huge, s[0])
    assert.are.equal(-math.huge, s[1])
    assert.is_true(s[2] > -math.huge and s[3] > -math.huge)
    local t = arr({ math.log(0.5), math.log(0.3), math.log(0.2) })
    lp.xtc(t, 3, 0.5, 0.1, 0.6) -- the draw is over the probability: nothing goes
    assert.is_true(t[0] > -math.huge)
  end)

  it("mirostat v2 keeps the tokens of surprise <= mu and learns from the drawn one", function()
    local s = arr({ math.log(0.5), math.log(0.25), math.log(0.125), math.log(0.125) })
    local kept = lp.mirostat_v2(s, 4, 2.5) -- surprises 1, 2, 3, 3 bits: keeps two
    assert.are.equal(-math.huge, s[2])
    assert.is_true(math.abs(kept[0] - 2 / 3) < 1e-6)
    -- drawn id 1 (p 1/3): surprise log2 3; mu - 0.1 * (log2 3 - 3)
    local mu = lp.mirostat_update(2, kept[1], 3, 0.1)
    assert.is_true(math.abs(mu - (2 - 0.1 * (math.log(3) / math.log(2) - 3))) < 1e-6)
  end)
end)

describe("llama.cpp's samplers in generate()", function()
  local path = os.getenv("LRUN_MODEL")
  if not path then
    pending("LRUN_MODEL is not set")
    return
  end
  local m
  setup(function() m = assert(require("lrun").load(path, { progress = false })) end)
  teardown(function() if m then m:free() end end)
  local P = "The the the the the the the"

  it("repeat_last_n 0 turns the penalty off; -1 is the whole sequence (the default)", function()
    local plain = { m:generate(P, { max_new_tokens = 8 }) }
    local off = { m:generate(P, { max_new_tokens = 8, repetition_penalty = 1.5, repeat_last_n = 0 }) }
    assert.are.same(plain[2], off[2])
    local all = { m:generate(P, { max_new_tokens = 8, repetition_penalty = 1.5 }) }
    local minus1 = { m:generate(P, { max_new_tokens = 8, repetition_penalty = 1.5, repeat_last_n = -1 }) }
    assert.are.same(all[2], minus1[2])
  end)

  it("runs DRY, top-n-sigma, XTC and mirostat with a seed, the same twice", function()
    for _, o in ipairs({ { dry_multiplier = 0.8 }, { do_sample = true, top_n_sigma = 1.0 },
      { do_sample = true, xtc_probability = 0.5, xtc_threshold = 0.05 }, { do_sample = true, mirostat = 1 },
      { do_sample = true, mirostat = 2, mirostat_tau = 3 } }) do
      o.max_new_tokens, o.seed = 8, 5
      local _, a = m:generate(P, o)
      local _, b = m:generate(P, o)
      assert.are.same(a, b)
      assert.are.equal(8, #a)
    end
  end)

  it("DRY with a strong multiplier breaks a greedy loop", function()
    local _, plain = m:generate(P, { max_new_tokens = 12 })
    local _, dry = m:generate(P, { max_new_tokens = 12, dry_multiplier = 5, dry_allowed_length = 1 })
    assert.are_not.same(plain, dry)
  end)

  it("refuses the llama.cpp samplers with beams, and bad values", function()
    assert.has_error(function() m:generate(P, { num_beams = 2, dry_multiplier = 1 }) end)
    assert.has_error(function() m:generate(P, { mirostat = 3 }) end)
    assert.has_error(function() m:generate(P, { xtc_probability = 2 }) end)
    assert.has_error(function() m:generate(P, { repeat_last_n = -2 }) end)
  end)
end)

describe("llama.cpp's penalties window and DRY against llama.cpp (llama_samplers_greedy.json)", function()
  local path = os.getenv("LRUN_MODEL")
  local ok, doc = pcall(require("tests.golden").read, "llama_samplers_greedy.json")
  if not path or not ok then
    pending("LRUN_MODEL is not set, or llama_samplers_greedy.json is missing (make_llama_sampler_golden.py --model)")
    return
  end
  local m
  setup(function() m = assert(require("lrun").load(path, { progress = false })) end)
  teardown(function() if m then m:free() end end)
  -- llama.cpp's option names → generate()'s
  local names = { repeat_penalty = "repetition_penalty" }

  for _, case in ipairs(doc.cases) do
    it(case.name .. ": the same greedy ids", function()
      local o = { max_new_tokens = doc.n_predict, suppress_tokens = doc.eog_ids, eos_token_id = {} }
      for k, v in pairs(case.options) do o[names[k] or k] = v end
      local _, ids = m:generate(case.prompt, o)
      assert.are.same(case.ids, ids)
    end)
  end
end)
