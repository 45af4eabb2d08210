-- no_tokenizer_spec: a GGUF file without tokenizer metadata (issue 16)
-- loads through lrun.load as a model usable with token ids; text in or out
-- is a clean error naming the file, not an assertion traceback.
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C

-- A 1-layer llama with f32 weights and no tokenizer.* keys.
local D, F, V, H = 16, 32, 64, 2
local function write(path)
  local w = ffi.new("lrun_gguf_writer *[1]")
  assert(C.lrun_gguf_writer_open(w, path) == C.LRUN_OK, lf.last_error())
  w = w[0]
  local function ok(st) assert(st == C.LRUN_OK, lf.last_error()) end
  ok(C.lrun_gguf_writer_set_str(w, "general.architecture", "llama"))
  for k, v in pairs({ context_length = 128, embedding_length = D, block_count = 1, feed_forward_length = F,
    ["attention.head_count"] = H, ["attention.head_count_kv"] = H }) do
    ok(C.lrun_gguf_writer_set_u32(w, "llama." .. k, v))
  end
  ok(C.lrun_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5))
  local tensors = { { "token_embd.weight", D, V }, { "output_norm.weight", D } }
  for _, s in ipairs({ { "attn_norm.weight", D }, { "attn_q.weight", D, D }, { "attn_k.weight", D, D },
    { "attn_v.weight", D, D }, { "attn_output.weight", D, D }, { "ffn_norm.weight", D },
    { "ffn_gate.weight", D, F }, { "ffn_up.weight", D, F }, { "ffn_down.weight", F, D } }) do
    tensors[#tensors + 1] = { "blk.0." .. s[1], s[2], s[3] }
  end
  for _, t in ipairs(tensors) do
    local dims = ffi.new("int64_t[2]", t[2], t[3] or 0)
    ok(C.lrun_gguf_writer_add_tensor(w, t[1], C.LRUN_DTYPE_F32, t[3] and 2 or 1, dims))
  end
  for _, t in ipairs(tensors) do
    local n = t[2] * (t[3] or 1)
    local data = ffi.new("float[?]", n)
    for i = 0, n - 1 do data[i] = ((i * 37) % 17 - 8) / 64 end
    ok(C.lrun_gguf_writer_write_data(w, data, n * 4))
  end
  ok(C.lrun_gguf_writer_finish(w))
  C.lrun_gguf_writer_free(w)
end

describe("a GGUF without tokenizer metadata", function()
  local path
  setup(function()
    path = os.tmpname()
    write(path)
  end)
  teardown(function() os.remove(path) end)

  it("loads through lrun.load and generates from token ids", function()
    local m, err = lrun.load(path, { progress = false })
    assert.is_table(m, tostring(err))
    assert.is_true(m.tokenizer.missing)
    local _, ids = m:generate({ 1, 2, 3 }, { max_new_tokens = 3, eos_token_id = {} })
    assert.are.equal(3, #ids)
    for _, id in ipairs(ids) do assert.is_true(id >= 0 and id < V) end
    m:free()
  end)

  it("answers text with a clean error naming the file", function()
    local m = assert(lrun.load(path, { progress = false }))
    local ok, err = pcall(m.generate, m, "hello", { max_new_tokens = 2 })
    assert.is_false(ok)
    assert.matches("has no tokenizer", tostring(err))
    assert.matches(path:gsub("%p", "%%%0"), tostring(err))
    assert.not_matches("NULL handle", tostring(err))
    ok, err = pcall(m.tokenizer.decode, m.tokenizer, { 1 })
    assert.is_false(ok)
    assert.matches("has no tokenizer", tostring(err))
    m:free()
  end)
end)
