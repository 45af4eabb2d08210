-- tokenize_spec: model:tokenize / model:detokenize on the default model —
-- round trips, the add_special and parse_special flags, and ids against
-- llama.cpp's tokenization of the same file (tests/golden/smollm2_greedy.json).
local path = os.getenv("LRUN_MODEL")

package.path = "./?.lua;" .. package.path
local function golden() return require("tests.golden").read("smollm2_greedy.json") end

local function golden_case(name)
  for _, c in ipairs(golden().cases) do if c.name == name then return c end end
  error("no golden case " .. name)
end

describe("lrun.load", function()
  local lrun = require("lrun")

  it("returns nil and an io error for a missing file", function()
    local m, err = lrun.load("/nonexistent/model.gguf")
    assert.is_nil(m)
    assert.are.equal("io", err.kind)
    assert.matches("^io: .*/nonexistent/model.gguf", tostring(err))
  end)

  it("returns nil and a format error for a file that is not GGUF", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w")); f:write("not a model at all, just text"); f:close()
    local m, err = lrun.load(path)
    os.remove(path)
    assert.is_nil(m)
    assert.are.equal("format", err.kind)
  end)

  it("rejects bad options with an error naming them", function()
    assert.has_error(function() lrun.load("x.gguf", { thread = 2 }) end, "lrun.load: unknown option 'thread'")
    assert.has_error(function() lrun.load("x.gguf", { threads = "2" }) end,
      "lrun.load: option 'threads' must be a number, got string")
    assert.has_error(function() lrun.load("x.gguf", { gpu_budget = "4X" }) end)
    assert.has_error(function() lrun.load("x.gguf", { cache_implementation = "paged" }) end,
      'lrun.load: cache_implementation must be one of "dynamic", "static", "offloaded", "offloaded_static", "quantized", got "paged"')
    assert.has_error(function() lrun.load(42) end, "lrun.load: path must be a string, got number")
  end)

  it("refuses whole numbers past INT_MAX in every whole-number option (they would wrap in C)", function()
    for _, k in ipairs({ "threads", "n_ctx", "prefetch_layers", "n_gpu_layers", "n_cpu_moe", "expert_cache_slots",
      "n_batch", "moe_prefill_stream_tokens", "host_stream_rows" }) do
      for _, bad in ipairs({ 2 ^ 31, 1e30, math.huge, 0 / 0 }) do
        local ok, err = pcall(lrun.load, "x.gguf", { [k] = bad })
        assert.is_false(ok, k .. " = " .. tostring(bad))
        assert.truthy(tostring(err):find("lrun.load: option '" .. k .. "' must be a whole number >= %d+ and <= "
          .. "2147483647"), tostring(err))
      end
    end
  end)

  if not path then return end

  it("frees idempotently and refuses use after free", function()
    local m = assert(lrun.load(path, { progress = false, gpu_budget = "1G", threads = 1 }))
    assert.matches("^lrun.model<llama, 30 layers, n_embd 576, vocab 49152", tostring(m))
    m:free()
    m:close()
    assert.are.equal("lrun.model<freed>", tostring(m))
    assert.has_error(function() m:tokenize("x") end, "model:tokenize: the model was freed")
  end)

  it("model:place and metadata refuse bad arguments by name, the model as it was", function()
    local m = assert(lrun.load(path, { progress = false, threads = 1 }))
    local ok, err = pcall(m.place, m, { prefetch_layers = 1e30 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("model:place: option 'prefetch_layers' must be a whole number", 1, true),
      tostring(err))
    -- a key that is no string: named, not the FFI's conversion error
    ok, err = pcall(m.metadata_ints, m, 1e30)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("model:metadata_ints: key must be a string, got number", 1, true), tostring(err))
    assert.has_error(function() m:metadata({}) end, "model:metadata: key must be a string, got table")
    assert(m:generate({ 1, 2 }, { max_new_tokens = 1 }))
    m:free()
  end)

  it("reports the hyper-parameters of the default model", function()
    local m = assert(lrun.load(path, { progress = false }))
    local info = m:info()
    m:free()
    assert.are.same({ "llama", 30, 576, 9, 3, 1536, 49152, true },
      { info.arch, info.n_layer, info.n_embd, info.n_head, info.n_head_kv, info.n_ff, info.n_vocab, info.tied_embeddings })
  end)
end)

describe("tokenize", function()
  if not path then
    pending("LRUN_MODEL is not set")
    return
  end
  local m
  setup(function() m = assert(require("lrun").load(path, { progress = false })) end)
  teardown(function() if m then m:free() end end)

  local samples = {
    "Hello world",
    "",
    " leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n",
    "digits 3 33 333 3333 333333333",
    "Cửa Việt, naïve café, Ελληνικά, русский, 日本語, 한국어, ខ្មែរ",
    "emoji 🚀🦙 and a ZWJ family 👨‍👩‍👧",
    "code: def f(x):\n    return x ** 2  # comment",
    "'s 't 're 've 'm 'll 'd ' era",
  }
  for _, s in ipairs(samples) do
    it("round-trips '" .. s:gsub("%c", " "):sub(1, 32) .. "'", function()
      local ids = m:tokenize(s, { add_special = false })
      assert.are.equal(s, m:detokenize(ids))
    end)
  end

  it("gives llama.cpp's ids, with and without add_special", function()
    for _, name in ipairs({ "short", "unicode_digits", "whitespace" }) do
      local c = golden_case(name)
      assert.are.same(c.prompt_ids, m:tokenize(c.text))
      assert.are.same(c.prompt_ids_add_special_false, m:tokenize(c.text, { add_special = false }))
    end
  end)

  it("adds no BOS on the default model, whose add_bos_token is false", function()
    assert.is_false(m:info().add_bos)
    local with = m:tokenize("Hello")
    local without = m:tokenize("Hello", { add_special = false })
    assert.are.same(without, with)
    assert.are_not.equal(m:info().bos_token_id, with[1])
  end)

  it("matches special tokens only with parse_special", function()
    local im_start = m.tokenizer:find("<|im_start|>")
    assert.is_number(im_start)
    local parsed = m:tokenize("<|im_start|>user", { parse_special = true })
    assert.are.equal(im_start, parsed[1])
    local plain = m:tokenize("<|im_start|>user")
    assert.is_true(#plain > #parsed)
    for _, id in ipairs(plain) do assert.are_not.equal(im_start, id) end
    -- both read back as the same text
    assert.are.equal("<|im_start|>user", m:detokenize(parsed))
    assert.are.equal("<|im_start|>user", m:detokenize(plain))
  end)

  it("drops control tokens from text when special = false", function()
    local ids = m:tokenize("<|im_start|>user\nHi<|im_end|>", { parse_special = true })
    assert.are.equal("user\nHi", m:detokenize(ids, { special = false }))
  end)

  it("gives the end-of-generation ids llama.cpp finds", function()
    local eog = m:info().eog_token_ids
    table.sort(eog)
    local want = golden().model.eog_ids
    table.sort(want)
    assert.are.same(want, eog)
  end)

  it("rejects misuse with an error naming it", function()
    assert.has_error(function() m:tokenize(42) end, "tokenize: text must be a string, got number")
    assert.has_error(function() m:tokenize("x", { add_bos = true }) end, "tokenize: unknown option 'add_bos'")
    assert.has_error(function() m:tokenize("x", { add_special = 1 }) end,
      "tokenize: option 'add_special' must be a boolean")
    assert.has_error(function() m:detokenize({ -1 }) end,
      "detokenize: ids[1] = -1 is not a token id of this vocabulary")
    assert.has_error(function() m:detokenize({ 49152 }) end,
      "detokenize: ids[1] = 49152 is not a token id of this vocabulary")
  end)
end)
