-- tokjson_spec: tokenizer.json (runtime/text/tokjson.c, hf_*.c) through
-- lrun.tokenizer(path), id for id against HF `tokenizers`: the committed
-- goldens of tests/golden/make_tokenizer_json_golden.py, and, when Python's
-- `tokenizers` is importable (CI), the same script run live into a temporary
-- directory. Also malformed files, each refused with a message naming the field.
local json = require("dkjson")
local lrun = require("lrun")

local golden_dir = "tests/golden/tokjson"
local families = {
  "gpt2", "gpt2-prefix", "llama3", "qwen2", "nfkc", "nfkd", "nfd-lower", "llama2", "metaspace", "metaspace-split",
  "words", "words2", "words3",
}

local function read_json(path)
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  local doc, _, err = json.decode(f:read("*a"))
  f:close()
  assert(doc, "cannot parse " .. path .. ": " .. tostring(err))
  return doc
end

local function plain(t)
  local out = {}
  for i = 1, #t do out[i] = t[i] end
  return out
end

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local function show(t) return "{" .. table.concat(t, ",") .. "}" end

-- Every case of one family: ids (add_special on/off, specials parsed or not)
-- and decoded text; decoded text of id lists that are not valid UTF-8.
-- Returns the list of mismatches.
local function compare(dir, name)
  local g = read_json(dir .. "/" .. name .. ".golden.json")
  local tok = assert(lrun.tokenizer(dir .. "/" .. name .. ".tokenizer.json"))
  local bad = {}
  for _, c in ipairs(g.cases) do
    do
      local function check(what, want, got)
        if not same(want, got) then
          bad[#bad + 1] = string.format("%s %q: %s: HF %s, lrun %s", name, c.text, what, show(want), show(got))
        end
      end
      check("ids", plain(c.ids), tok:encode(c.text, { add_special = true, parse_special = true }))
      check("ids_plain", plain(c.ids_plain), tok:encode(c.text, { add_special = false, parse_special = true }))
      check("ids_nospecial", plain(c.ids_nospecial), tok:encode(c.text, { add_special = true, parse_special = false }))
      local dec = tok:decode(c.ids, { special = true })
      if dec ~= c.decoded then bad[#bad + 1] = string.format("%s %q: decode: HF %q, lrun %q", name, c.text, c.decoded, dec) end
      local skip = tok:decode(c.ids, { special = false })
      if skip ~= c.decoded_skip then
        bad[#bad + 1] = string.format("%s %q: decode skip_special: HF %q, lrun %q", name, c.text, c.decoded_skip, skip)
      end
    end
  end
  for _, c in ipairs(g.invalid_decodes or {}) do
    local dec = tok:decode(c.ids, { special = true })
    if dec ~= c.decoded then
      bad[#bad + 1] = string.format("%s %s: decode of invalid UTF-8: HF %q, lrun %q", name, show(c.ids), c.decoded, dec)
    end
  end
  return bad
end

local function assert_family(dir, name)
  local bad = compare(dir, name)
  if #bad > 0 then
    local shown = {}
    for i = 1, math.min(#bad, 12) do shown[i] = bad[i] end
    error(#bad .. " mismatches against HF tokenizers:\n" .. table.concat(shown, "\n"), 0)
  end
end

describe("tokenizer.json against the committed HF goldens", function()
  for _, name in ipairs(families) do
    it(name, function() assert_family(golden_dir, name) end)
  end

  it("byte-level goldens carry invalid UTF-8 decodes", function()
    assert.is_true(#read_json(golden_dir .. "/gpt2.golden.json").invalid_decodes >= 8)
  end)
end)

local function have_tokenizers()
  return os.execute("python3 -c 'import tokenizers' >/dev/null 2>&1") == 0
end

describe("tokenizer.json against HF tokenizers, live", function()
  if not have_tokenizers() then
    pending("python3 cannot import tokenizers")
    return
  end
  local tmp = os.tmpname()
  os.remove(tmp)
  setup(function()
    assert(os.execute("python3 tests/golden/make_tokenizer_json_golden.py " .. tmp .. " >/dev/null") == 0,
      "make_tokenizer_json_golden.py failed")
  end)
  teardown(function() os.execute("rm -rf " .. tmp) end)
  for _, name in ipairs(families) do
    it(name, function() assert_family(tmp, name) end)
  end
end)

describe("lrun.tokenizer", function()
  it("loads a tokenizer.json alone and knows its specials", function()
    local tok = assert(lrun.tokenizer(golden_dir .. "/llama2.tokenizer.json"))
    assert.are.equal(1, tok.bos_id)
    assert.are.equal(2, tok.eos_id)
    assert.is_true(tok.adds_bos)
    assert.are.same({ 1 }, tok:encode(""))
    assert.are.equal("<s>", tok:decode(tok:encode("")))
    assert.are.equal("", tok:decode(tok:encode(""), { special = false }))
    assert.are.equal("Hello world", tok:decode(tok:encode("Hello world"), { special = false }))
  end)

  it("reads bos, eos, add_bos_token and chat_template from tokenizer_config.json", function()
    local cfg = os.tmpname()
    local f = assert(io.open(cfg, "w"))
    f:write('{"bos_token": {"content": "<|endoftext|>"}, "eos_token": "<|endoftext|>", "add_bos_token": true,'
      .. ' "chat_template": "{{ messages }}"}')
    f:close()
    local tok = assert(lrun.tokenizer(golden_dir .. "/gpt2.tokenizer.json", { config = cfg }))
    os.remove(cfg)
    local eot = tok:find("<|endoftext|>")
    assert.are.equal(eot, tok.bos_id)
    assert.are.equal(eot, tok.eos_id)
    assert.are.equal("{{ messages }}", tok.chat_template)
    assert.are.equal(eot, tok:encode("hi")[1])
    assert.are.same({ eot }, tok:eog_ids())
  end)

  it("streams byte-level pieces that join to the decoded text", function()
    local tok = assert(lrun.tokenizer(golden_dir .. "/gpt2.tokenizer.json"))
    local text = "Hello, y'all! 🦙 Cửa Việt <|endoftext|>\n 333"
    local ids = tok:encode(text, { parse_special = true })
    local parts = {}
    for i, id in ipairs(ids) do parts[i] = tok:piece(id, true) end
    assert.are.equal(text, table.concat(parts))
    assert.are.equal(text, tok:decode(ids))
  end)

  it("streams SentencePiece pieces with their spaces (the decoder drops only the first)", function()
    local tok = assert(lrun.tokenizer(golden_dir .. "/llama2.tokenizer.json"))
    local ids = tok:encode("Hello world", { add_special = false })
    local parts = {}
    for i, id in ipairs(ids) do parts[i] = tok:piece(id) end
    assert.are.equal(" Hello world", table.concat(parts))
    assert.are.equal("Hello world", tok:decode(ids))
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() lrun.tokenizer(42) end, "lrun.tokenizer: path must be a string, got number")
    assert.has_error(function() lrun.tokenizer("x", { conf = "y" }) end, "lrun.tokenizer: unknown option 'conf'")
  end)
end)

-- ---------------------------------------------------------------- malformed files

local write_tmp = require("tests.shell").tmpfile

local function load_text(text)
  local path = write_tmp(text)
  local tok, err = lrun.tokenizer(path)
  os.remove(path)
  return tok, err
end

-- A valid little file, with one part replaced.
local function doc(parts)
  local d = {
    model = { type = "BPE", vocab = { a = 0, b = 1, ab = 2 }, merges = { "a b" } },
    added_tokens = json.null, normalizer = json.null, pre_tokenizer = json.null,
    post_processor = json.null, decoder = json.null,
  }
  for k, v in pairs(parts) do d[k] = v end
  return json.encode(d)
end

describe("malformed tokenizer.json", function()
  it("loads the valid base file", function()
    local tok = assert(load_text(doc({})))
    assert.are.same({ 2, 0 }, tok:encode("aba"))
  end)

  local cases = {
    { "not JSON", "{\"model\": ", "not valid JSON" },
    { "top level not an object", "[1, 2]", "top level is not an object" },
    { "no model", '{"added_tokens": []}', "model is missing" },
    { "unknown model type", doc({ model = { type = "WordPiece", vocab = { a = 0 } } }), 'model.type = "WordPiece" is not supported' },
    { "vocab not an object", doc({ model = { type = "BPE", vocab = { "a" } } }), "model.vocab is missing or not an object" },
    { "vocab id not a number", doc({ model = { type = "BPE", vocab = { a = "0" } } }), 'model.vocab%["a"%] is not an integer id' },
    { "huge id", doc({ model = { type = "BPE", vocab = { a = 0, b = 4000000000 } } }), 'model.vocab%["b"%] is not an integer id' },
    { "negative id", doc({ model = { type = "BPE", vocab = { a = -1 } } }), 'model.vocab%["a"%] is not an integer id' },
    { "fractional id", doc({ model = { type = "BPE", vocab = { a = 0.5 } } }), 'model.vocab%["a"%] is not an integer id' },
    { "duplicate id", doc({ model = { type = "BPE", vocab = { a = 0, b = 0 } } }), "model.vocab: id 0 is given to both" },
    { "merge of an unknown token", doc({ model = { type = "BPE", vocab = { a = 0, b = 1, ab = 2 }, merges = { "a c" } } }),
      'model.merges%[0%]: "c" is not in the vocabulary' },
    { "merge result unknown", doc({ model = { type = "BPE", vocab = { a = 0, b = 1 }, merges = { { "a", "b" } } } }),
      'model.merges%[0%]: "ab" is not in the vocabulary' },
    { "merge without a space", doc({ model = { type = "BPE", vocab = { a = 0 }, merges = { "ab" } } }),
      "model.merges%[0%] = \"ab\" is not two tokens" },
    { "merge of a wrong type", doc({ model = { type = "BPE", vocab = { a = 0 }, merges = { 7 } } }),
      "model.merges%[0%] is neither" },
    { "merges not an array", doc({ model = { type = "BPE", vocab = { a = 0 }, merges = "a b" } }), "model.merges is not an array" },
    { "unk not in vocab", doc({ model = { type = "BPE", vocab = { a = 0 }, unk_token = "<unk>" } }), "model.unk_token is not" },
    { "byte_fallback not a boolean", doc({ model = { type = "BPE", vocab = { a = 0 }, byte_fallback = 1 } }),
      "model.byte_fallback is not a boolean" },
    { "dropout", doc({ model = { type = "BPE", vocab = { a = 0 }, dropout = 0.1 } }), "model.dropout is not supported" },
    { "added token without id", doc({ added_tokens = { { content = "x" } } }), "added_tokens%[0%] needs an integer \"id\"" },
    { "added token flag not a boolean", doc({ added_tokens = { { id = 3, content = "x", special = "yes" } } }),
      "added_tokens%[0%].special is not a boolean" },
    { "unknown pre-tokenizer", doc({ pre_tokenizer = { type = "BertPreTokenizer" } }),
      'pre_tokenizer.type = "BertPreTokenizer" is not supported' },
    { "pre-tokenizer without type", doc({ pre_tokenizer = { foo = 1 } }), "pre_tokenizer.type is missing" },
    { "bad regex", doc({ pre_tokenizer = { type = "Sequence", pretokenizers = { { type = "Split",
      pattern = { Regex = "(unclosed" }, behavior = "Isolated", invert = false } } } }),
      "pre_tokenizer.pretokenizers%[0%].pattern.Regex: the regex does not compile" },
    { "bad behavior", doc({ pre_tokenizer = { type = "Split", pattern = { String = "x" }, behavior = "Sideways" } }),
      "pre_tokenizer.behavior is not one of" },
    { "pattern neither", doc({ pre_tokenizer = { type = "Split", pattern = { Glob = "x" } } }),
      "pre_tokenizer.pattern has neither a String nor a Regex" },
    { "sequence not a list", doc({ normalizer = { type = "Sequence", normalizers = 3 } }), "normalizer.normalizers is not an array" },
    { "unknown normalizer", doc({ normalizer = { type = "StripAccents" } }), 'normalizer.type = "StripAccents" is not supported' },
    { "replace without content", doc({ normalizer = { type = "Replace", pattern = { String = " " } } }),
      "normalizer.content is missing" },
    { "unknown decoder", doc({ decoder = { type = "WordPiece" } }), 'decoder.type = "WordPiece" is not supported' },
    { "strip of two chars", doc({ decoder = { type = "Strip", content = "ab", start = 1, stop = 0 } }),
      "decoder.content is not one character" },
    { "metaspace scheme", doc({ pre_tokenizer = { type = "Metaspace", replacement = "_", prepend_scheme = "sometimes" } }),
      "pre_tokenizer.prepend_scheme is not one of" },
    { "unknown post-processor", doc({ post_processor = { type = "Magic" } }), 'post_processor.type = "Magic" is not supported' },
    { "template id out of range", doc({ post_processor = { type = "TemplateProcessing",
      single = { { SpecialToken = { id = "<s>", type_id = 0 } }, { Sequence = { id = "A", type_id = 0 } } },
      special_tokens = { ["<s>"] = { id = "<s>", ids = { 99 }, tokens = { "<s>" } } } } }),
      "post_processor.single%[0%]: id 99 is outside the vocabulary of 3" },
    { "template special missing", doc({ post_processor = { type = "TemplateProcessing",
      single = { { SpecialToken = { id = "<s>", type_id = 0 } } }, special_tokens = {} } }),
      'post_processor.special_tokens%["<s>"%].ids is missing' },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[1], function()
      local tok, err = load_text(c[2])
      assert.is_nil(tok)
      assert.matches(c[3], tostring(err))
    end)
  end

  it("refuses a missing file with an io error", function()
    local tok, err = lrun.tokenizer("/nonexistent/tokenizer.json")
    assert.is_nil(tok)
    assert.are.equal("io", err.kind)
  end)

  it("refuses a bad tokenizer_config.json naming the key", function()
    local cfg = write_tmp('{"bos_token": "<nope>"}')
    local tok, err = lrun.tokenizer(golden_dir .. "/gpt2.tokenizer.json", { config = cfg })
    os.remove(cfg)
    assert.is_nil(tok)
    assert.matches('bos_token = "<nope>" is not a token', tostring(err))
  end)
end)

-- ---------------------------------------------------------------- the default model as tokenizer.json

describe("the default model's tokenizer as tokenizer.json (hf_tokenizer_from_gguf.py)", function()
  local model_path = os.getenv("LRUN_MODEL")
  if not model_path then
    pending("LRUN_MODEL is not set")
    return
  end
  if os.execute("python3 -c 'import tokenizers, gguf' >/dev/null 2>&1") ~= 0 then
    pending("python3 cannot import tokenizers and gguf")
    return
  end
  local tmp = os.tmpname()
  os.remove(tmp)
  local m, tok, hf
  setup(function()
    assert(os.execute("python3 tests/golden/hf_tokenizer_from_gguf.py " .. model_path .. " " .. tmp .. " >/dev/null") == 0,
      "hf_tokenizer_from_gguf.py failed")
    m = assert(lrun.load(model_path, { progress = false }))
    tok = assert(lrun.tokenizer(tmp .. "/tokenizer.json", { config = tmp .. "/tokenizer_config.json" }))
    hf = read_json(tmp .. "/hf_ids.json")
  end)
  teardown(function()
    if m then m:free() end
    os.execute("rm -rf " .. tmp)
  end)

  it("has the GGUF's vocabulary and special ids", function()
    assert.are.equal(m.tokenizer.n_vocab, tok.n_vocab)
    assert.are.equal(m.tokenizer.bos_id, tok.bos_id)
    assert.are.equal(m.tokenizer.eos_id, tok.eos_id)
    assert.are.equal(m.tokenizer.adds_bos, tok.adds_bos)
    assert.truthy(tok.chat_template:find("<|im_start|>", 1, true))
  end)

  it("gives HF's ids and the GGUF tokenizer's ids on every string", function()
    local bad = {}
    for _, c in ipairs(hf.cases) do
      local want = plain(c.ids)
      local from_json = tok:encode(c.text, { add_special = true, parse_special = true })
      local from_gguf = m:tokenize(c.text, { add_special = true, parse_special = true })
      if not same(want, from_json) then bad[#bad + 1] = string.format("%q: json %s, HF %s", c.text, show(from_json), show(want)) end
      if not same(want, from_gguf) then bad[#bad + 1] = string.format("%q: gguf %s, HF %s", c.text, show(from_gguf), show(want)) end
      local dec = tok:decode(c.ids)
      if dec ~= c.decoded then bad[#bad + 1] = string.format("%q: decode %q, HF %q", c.text, dec, c.decoded) end
    end
    assert(#bad == 0, table.concat(bad, "\n"))
  end)
end)
