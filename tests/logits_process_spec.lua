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
