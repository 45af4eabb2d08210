-- generate_spec: model:generate on the default model — greedy determinism
-- (and llama.cpp's greedy ids), seeds, stop strings, eos ids, limits,
-- streaming in whole UTF-8 characters, and option validation.
local path = os.getenv("LRUN_MODEL")
local PROMPT = "The capital of France is"

-- Each piece a valid UTF-8 string (whole characters).
local function valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local b = s:byte(i)
    local len = b < 0x80 and 1 or (b >= 0xC2 and b < 0xE0) and 2 or (b >= 0xE0 and b < 0xF0) and 3
      or (b >= 0xF0 and b < 0xF5) and 4 or nil
    if not len or i + len - 1 > n then return false end
    for j = i + 1, i + len - 1 do
      local c = s:byte(j)
      if c < 0x80 or c > 0xBF then return false end
    end
    i = i + len
  end
  return true
end

describe("generate.utf8_complete_len", function()
  local complete
  setup(function() complete = require("lrun.generate").utf8_complete_len end)

  it("keeps whole characters and holds back a split one", function()
    assert.are.equal(3, complete("abc"))
    assert.are.equal(0, complete("\240\159"))          -- first half of 🚀
    assert.are.equal(1, complete("a\240\159\154"))     -- "a" + three bytes of 🚀
    assert.are.equal(5, complete("a\240\159\154\128")) -- "a🚀"
    assert.are.equal(1, complete("a\195"))             -- "a" + half of "é"
    assert.are.equal(3, complete("a\195\169"))
    assert.are.equal(0, complete(""))
  end)

  it("releases bytes that can never complete", function()
    assert.are.equal(2, complete("\128\128"))          -- stray continuation bytes
    assert.are.equal(1, complete("\255"))              -- not a lead byte
  end)
end)

describe("generate", function()
  if not path then
    pending("LRUN_MODEL is not set")
    return
  end
  local m, golden_ids
  setup(function()
    m = assert(require("lrun").load(path, { progress = false }))
    for _, c in ipairs(require("tests.golden").read("smollm2_greedy.json").cases) do
      if c.name == "short" then golden_ids = c.continuation_ids end
    end
  end)
  teardown(function() if m then m:free() end end)

  describe("greedy", function()
    it("is deterministic", function()
      local t1, ids1 = m:generate(PROMPT, { max_new_tokens = 8 })
      local t2, ids2 = m:generate(PROMPT, { max_new_tokens = 8 })
      assert.are.equal(t1, t2)
      assert.are.same(ids1, ids2)
      assert.are.equal(8, #ids1)
    end)

    it("takes llama.cpp's greedy tokens", function()
      -- the first steps, where llama.cpp's top-1 leads by > 1 nat
      local _, ids = m:generate(PROMPT, { max_new_tokens = 5 })
      assert.are.same({ golden_ids[1], golden_ids[2], golden_ids[3], golden_ids[4], golden_ids[5] }, ids)
    end)

    it("returns text that is the detokenized ids", function()
      local text, ids = m:generate(PROMPT, { max_new_tokens = 6 })
      assert.are.equal(m:detokenize(ids), text)
    end)

    it("accepts a prompt of ids", function()
      local t1, ids1 = m:generate(PROMPT, { max_new_tokens = 4 })
      local t2, ids2 = m:generate(m:tokenize(PROMPT), { max_new_tokens = 4 })
      assert.are.equal(t1, t2)
      assert.are.same(ids1, ids2)
    end)

    it("agrees with the argmax of model:logits", function()
      local logits = m:logits(PROMPT)
      assert.are.equal(m:info().n_vocab, #logits)
      local best = 1
      for i = 2, #logits do if logits[i] > logits[best] then best = i end end
      local _, ids = m:generate(PROMPT, { max_new_tokens = 1 })
      assert.are.equal(best - 1, ids[1])
    end)
  end)

  describe("sampling", function()
    local opts = function(seed) return { max_new_tokens = 8, do_sample = true, temperature = 1.5, top_k = 0, seed = seed } end

    it("gives the same sample for the same seed", function()
      local t1, ids1, s1 = m:generate("Once upon a time", opts(1234))
      local t2, ids2 = m:generate("Once upon a time", opts(1234))
      assert.are.equal(t1, t2)
      assert.are.same(ids1, ids2)
      assert.are.equal(1234, s1.seed)
    end)

    it("gives a different sample for a different seed", function()
      local _, ids1 = m:generate("Once upon a time", opts(1))
      local _, ids2 = m:generate("Once upon a time", opts(2))
      assert.are_not.same(ids1, ids2)
    end)

    it("draws a random seed when none is given, and reports it", function()
      local _, ids, stats = m:generate("Once upon a time", { max_new_tokens = 4, do_sample = true })
      assert.is_number(stats.seed)
      local _, again = m:generate("Once upon a time", { max_new_tokens = 4, do_sample = true, seed = stats.seed })
      assert.are.same(ids, again)
    end)
  end)

  describe("stopping", function()
    it("honours max_new_tokens", function()
      local text, ids, stats = m:generate(PROMPT, { max_new_tokens = 3, eos_token_id = false })
      assert.are.equal(3, #ids)
      assert.are.equal("length", stats.stop_reason)
      text, ids = m:generate(PROMPT, { max_new_tokens = 0 })
      assert.are.equal("", text)
      assert.are.same({}, ids)
    end)

    it("cuts the text before a stop string", function()
      -- greedy continuation: " Paris.\n\nThe answer is: …"
      local full = m:generate(PROMPT, { max_new_tokens = 8 })
      assert.are.equal(" Paris.", full:sub(1, 7))
      local text, ids, stats = m:generate(PROMPT, { max_new_tokens = 8, stop = { "\n\n", "." } })
      assert.are.equal(" Paris", text)
      assert.are.equal("stop", stats.stop_reason)
      assert.are.equal(2, #ids) -- " Paris" and "." (the token that completed the stop string)
      assert.are.equal(" Paris", (m:generate(PROMPT, { max_new_tokens = 8, stop = "." })))
    end)

    it("finds a stop string split over tokens, and never streams it", function()
      local streamed = {}
      local text = m:generate(PROMPT, {
        max_new_tokens = 8, stop = "s.\n",
        on_token = function(piece) streamed[#streamed + 1] = piece end,
      })
      assert.are.equal(" Pari", text)
      assert.are.equal(text, table.concat(streamed))
    end)

    it("stops at any id of an eos list, leaving it out", function()
      local dot = m:tokenize(".", { add_special = false })[1]
      local text, ids, stats = m:generate(PROMPT, { max_new_tokens = 8, eos_token_id = { 9999, dot } })
      assert.are.equal(" Paris", text)
      assert.are.equal(1, #ids)
      assert.are.equal("eos", stats.stop_reason)
      text, ids = m:generate(PROMPT, { max_new_tokens = 8, eos_token_id = golden_ids[1] })
      assert.are.equal("", text)
      assert.are.same({}, ids)
    end)

    it("stops at the model's end-of-generation ids by default", function()
      local prompt = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\nHi!<|im_end|>\n"
      local ids = m:tokenize(prompt, { parse_special = true })
      local im_end = m.tokenizer:find("<|im_end|>")
      -- with no eos ids the model goes on; with the defaults it never emits <|im_end|>
      local _, free = m:generate(ids, { max_new_tokens = 12, eos_token_id = false })
      local _, out = m:generate(ids, { max_new_tokens = 12 })
      for _, id in ipairs(out) do assert.are_not.equal(im_end, id) end
      assert.is_true(#out <= #free)
    end)
  end)

  describe("on_token", function()
    it("streams pieces that concatenate to the returned text", function()
      local pieces, n = {}, 0
      local text, ids = m:generate(PROMPT, {
        max_new_tokens = 8,
        on_token = function(piece, id) n = n + 1; pieces[#pieces + 1] = piece; assert.is_number(id) end,
      })
      assert.are.equal(#ids, n)
      assert.are.equal(text, table.concat(pieces))
    end)

    it("stops early when it returns false", function()
      local pieces = {}
      local text, ids, stats = m:generate(PROMPT, {
        max_new_tokens = 8,
        on_token = function(piece) pieces[#pieces + 1] = piece; return #pieces < 2 end,
      })
      assert.are.equal(2, #ids)
      assert.are.equal("callback", stats.stop_reason)
      assert.are.equal(text, table.concat(pieces))
    end)

    it("holds back the bytes of a character split across tokens", function()
      -- this model spells 🚀 as three byte-level tokens and repeats it
      local prompt = "Rockets: 🚀🚀🚀🚀🚀🚀 Emojis: 🚀🚀"
      local pieces, empty = {}, 0
      local text, ids = m:generate(prompt, {
        max_new_tokens = 6,
        on_token = function(piece)
          pieces[#pieces + 1] = piece
          if piece == "" then empty = empty + 1 end
        end,
      })
      assert.are.equal(6, #ids)
      assert.are.equal("🚀🚀", text)
      assert.are.equal(text, table.concat(pieces))
      for _, p in ipairs(pieces) do assert.is_true(valid_utf8(p)) end
      assert.are.equal(4, empty)
    end)

    it("hands over an unfinished character at the very end", function()
      local pieces = {}
      local text, ids = m:generate("Rockets: 🚀🚀🚀🚀🚀🚀 Emojis: 🚀🚀", {
        max_new_tokens = 4, on_token = function(piece) pieces[#pieces + 1] = piece end,
      })
      assert.are.equal(m:detokenize(ids), text)
      assert.are.equal(text, table.concat(pieces))
    end)
  end)

  describe("options", function()
    local function err_of(opts)
      local ok, err = pcall(m.generate, m, PROMPT, opts)
      assert.is_false(ok)
      return err
    end

    it("rejects an unknown option, suggesting the right one", function()
      local err = err_of({ max_new_token = 5 })
      assert.matches("generate: unknown option 'max_new_token' (did you mean 'max_new_tokens'?)", err, 1, true)
    end)

    it("names the option of a wrong type or value", function()
      local cases = {
        { { temperature = "hot" }, "option 'temperature' must be a number > 0" },
        { { temperature = 0 }, "option 'temperature' must be a number > 0" },
        { { max_new_tokens = 2.5 }, "option 'max_new_tokens' must be a whole number >= 0" },
        { { top_p = 2 }, "option 'top_p' must be a number in (0, 1]" },
        { { top_k = -1 }, "option 'top_k' must be a whole number >= 0" },
        { { min_p = "x" }, "option 'min_p' must be a number in [0, 1]" },
        { { do_sample = 1 }, "option 'do_sample' must be a boolean" },
        { { stop = 5 }, "option 'stop' must be a string or a list of strings" },
        { { stop = { "" } }, "option 'stop' must be a non-empty string or a list of them" },
        { { eos_token_id = "eos" }, "option 'eos_token_id' must be a token id, a list of them, or false" },
        { { on_token = true }, "option 'on_token' must be a function(piece, id)" },
        { { seed = -1 }, "option 'seed' must be a whole number from 0 to 2^53" },
        -- past a C int: counts reach the engine as int and would wrap
        { { max_new_tokens = 1e30 }, "option 'max_new_tokens' must be a whole number >= 0 and <= 2147483647" },
        { { top_k = 2 ^ 31 }, "option 'top_k' must be a whole number >= 0 and <= 2147483647" },
      }
      for _, c in ipairs(cases) do assert.matches(c[2], err_of(c[1]), 1, true) end
    end)

    it("blames the caller's line", function()
      local ok, err = pcall(function() return m:generate(PROMPT, { bogus = 1 }) end)
      assert.is_false(ok)
      assert.matches("generate_spec.lua:%d+: generate: unknown option 'bogus'", err)
    end)

    it("rejects a prompt that is neither text nor ids", function()
      assert.has_error(function() m:generate(42) end, "generate: prompt must be a string or a table of token ids, got number")
      assert.has_error(function() m:generate("") end, "generate: the prompt has no tokens")
    end)
  end)

  describe("the examples", function()
    local root = (debug.getinfo(1, "S").source:match("^@(.*)/tests/[^/]*$"))
    if root == nil or root == "." then root = os.getenv("PWD") end
    local shell = require("tests.shell")
    local function sh(cmd) return shell.run("cd " .. shell.quote(root) .. " && " .. cmd) end

    it("generate.lua streams the greedy continuation and reports rates", function()
      local out, rc = sh(shell.launcher .. " examples/generate.lua -m '" .. path .. "' -p '"
        .. PROMPT .. "' -n 6 --temp 0")
      assert.are.equal(0, rc)
      assert.are.equal(PROMPT .. m:generate(PROMPT, { max_new_tokens = 6 }) .. "\n", out:match("^(.-\n)\n?prompt:"))
      assert.matches("prompt: 5 tokens in [%d.]+ s %([%d.]+ tokens/s%)", out)
      assert.matches("generation: 6 tokens in [%d.]+ s %([%d.]+ tokens/s%)", out)
    end)

    it("chat.lua answers piped turns, /reset and /quit", function()
      local out, rc = sh("printf 'Say hello.\\n/reset\\n/quit\\nnot sent\\n' | " .. shell.launcher
        .. " examples/chat.lua -m '" .. path .. "' --temp 0 -n 48")
      assert.are.equal(0, rc)
      local reply = m:chat({ { role = "user", content = "Say hello." } }, { max_new_tokens = 48 })
      assert.are.equal(reply .. "\n(conversation reset)\n", out)
    end)
  end)
end)
