--- lrun.tokenizer — text to token ids and back, over an lrun_tokenizer.
-- A model's tokenizer belongs to its model (the wrapper keeps the model
-- alive while it is reachable); `lrun.tokenizer(path)` loads a Hugging Face
-- tokenizer.json on its own.
--
--     local tok = assert(lrun.tokenizer("dir/tokenizer.json", { config = "dir/tokenizer_config.json" }))
--     tok:encode("Hello")  --> ids as HF tokenizers gives them
-- @module lrun.tokenizer
local lf = require("lrun.ffi")
local errors = require("lrun.errors")
local ffi, C = lf.ffi, lf.C

local M = {}

local Tokenizer = {}
Tokenizer.__index = Tokenizer

--- Wraps a tokenizer handle.
-- @tparam cdata handle const lrun_tokenizer *
-- @param owner whatever owns the handle (kept alive by the wrapper)
-- @treturn lrun.tokenizer
function M.wrap(handle, owner)
  assert(handle ~= nil, "lrun.tokenizer.wrap: NULL handle")
  local t = setmetatable({ handle = handle, owner = owner }, Tokenizer)
  t.n_vocab = tonumber(C.lrun_tokenizer_vocab_size(handle))
  t.bos_id = C.lrun_tokenizer_bos(handle)
  t.eos_id = C.lrun_tokenizer_eos(handle)
  t.adds_bos = C.lrun_tokenizer_add_bos(handle) ~= 0
  return t
end

--- Loads a Hugging Face tokenizer.json (no model needed).
-- @tparam string path the tokenizer.json
-- @tparam[opt] table opts config (path of a tokenizer_config.json: bos/eos
--   tokens, add_bos_token, chat_template)
-- @treturn[1] lrun.tokenizer
-- @treturn[2] nil
-- @treturn[2] table error {kind=, message=} naming the file and the field
function M.load(path, opts)
  if type(path) ~= "string" then error("lrun.tokenizer: path must be a string, got " .. type(path), 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("lrun.tokenizer: opts must be a table", 2) end
  for k in pairs(opts) do
    if k ~= "config" then error("lrun.tokenizer: unknown option '" .. tostring(k) .. "'", 2) end
  end
  if opts.config ~= nil and type(opts.config) ~= "string" then
    error("lrun.tokenizer: option 'config' must be a string", 2)
  end
  local out = ffi.new("lrun_tokenizer *[1]")
  local status = C.lrun_tokenizer_load_json(out, path, opts.config)
  if status ~= C.LRUN_OK then return nil, errors.from_status(status, "tokenizer") end
  local handle = ffi.gc(out[0], C.lrun_tokenizer_free)
  local t = M.wrap(handle, handle)
  local tpl = C.lrun_tokenizer_chat_template(handle)
  if tpl ~= nil then t.chat_template = ffi.string(tpl) end
  return t
end

setmetatable(M, { __call = function(_, path, opts) return M.load(path, opts) end })

local allowed = {
  tokenize = { add_special = true, parse_special = true },
  detokenize = { special = true },
}

local function check_opts(opts, fn, level)
  level = level or 3
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(fn .. ": opts must be a table", level) end
  for k, v in pairs(opts) do
    if not allowed[fn][k] then error(fn .. ": unknown option '" .. tostring(k) .. "'", level) end
    if type(v) ~= "boolean" then error(fn .. ": option '" .. k .. "' must be a boolean", level) end
  end
  return opts
end

--- Encodes text.
-- @tparam string text
-- @tparam[opt] table opts add_special (default true: BOS when the model asks
--   for it, as HF does), parse_special (default false: "<|im_end|>" stays text)
-- @treturn {int,...} token ids
function Tokenizer:encode(text, opts)
  local ids, err = self:try_encode(text, opts, 3)
  if not ids then error(tostring(err), 2) end
  return ids
end

--- Encodes text like encode, but a failure of the core (out of memory) is
-- returned, not raised, for calls that answer nil, err (generate, chat).
-- Bad arguments are still raised.
-- @tparam string text
-- @tparam[opt] table opts as encode's
-- @tparam[opt=2] int level error level of the argument errors
-- @treturn[1] {int,...} token ids
-- @treturn[2] nil
-- @treturn[2] table error
function Tokenizer:try_encode(text, opts, level)
  level = level or 2
  if type(text) ~= "string" then error("tokenize: text must be a string, got " .. type(text), level) end
  opts = check_opts(opts, "tokenize", level + 1)
  local add_special = opts.add_special ~= false
  local parse_special = opts.parse_special == true
  -- Byte-level BPE never yields more tokens than bytes; + 2 for BOS/EOS.
  local cap = #text + 2
  local n_out = ffi.new("int64_t[1]")
  for _ = 1, 2 do
    local ids = ffi.new("int32_t[?]", cap)
    local status = C.lrun_tokenizer_encode(self.handle, text, #text, add_special and 1 or 0,
      parse_special and 1 or 0, ids, cap, n_out)
    if status ~= C.LRUN_OK then return nil, errors.from_status(status, "tokenize") end
    local n = tonumber(n_out[0])
    if n <= cap then
      local out = {}
      for i = 0, n - 1 do out[i + 1] = ids[i] end
      return out
    end
    cap = n
  end
  return nil, errors.new("internal", "tokenize: the token count changed between two encodings of the same text")
end

local piece_buf_cap = 256
local piece_buf = ffi.new("char[?]", piece_buf_cap)
local piece_len = ffi.new("size_t[1]")

--- The bytes of one token (possibly part of a UTF-8 character).
-- @tparam int id
-- @tparam[opt=false] boolean special render control tokens as their text
-- @treturn string
function Tokenizer:piece(id, special)
  local status = C.lrun_tokenizer_decode_token(self.handle, id, special and 1 or 0, piece_buf,
    piece_buf_cap, piece_len)
  if status ~= C.LRUN_OK then error(tostring(errors.from_status(status, "detokenize")), 2) end
  local n = tonumber(piece_len[0])
  if n > piece_buf_cap then
    -- a longer piece than any seen so far: grow the shared buffer and retry
    piece_buf_cap = n
    piece_buf = ffi.new("char[?]", piece_buf_cap)
    return self:piece(id, special)
  end
  return ffi.string(piece_buf, n)
end

--- Decodes ids to text.
-- @tparam {int,...} ids
-- @tparam[opt] table opts special (default true: control tokens appear as
--   their text, like HF decode without skip_special_tokens)
-- @treturn string
function Tokenizer:decode(ids, opts)
  local text, err = self:try_decode(ids, opts, 3)
  if not text then error(tostring(err), 2) end
  return text
end

--- Decodes like decode, but a failure of the core (out of memory) is
-- returned, not raised; bad arguments are still raised.
-- @tparam {int,...} ids
-- @tparam[opt] table opts as decode's
-- @tparam[opt=2] int level error level of the argument errors
-- @treturn[1] string
-- @treturn[2] nil
-- @treturn[2] table error
function Tokenizer:try_decode(ids, opts, level)
  level = level or 2
  if type(ids) ~= "table" then error("detokenize: ids must be a table of token ids", level) end
  opts = check_opts(opts, "detokenize", level + 1)
  local special = opts.special ~= false
  local n = #ids
  local arr = ffi.new("int32_t[?]", n > 0 and n or 1)
  for i = 1, n do
    local id = ids[i]
    if type(id) ~= "number" or id < 0 or id >= self.n_vocab or id % 1 ~= 0 then
      error("detokenize: ids[" .. i .. "] = " .. tostring(id) .. " is not a token id of this vocabulary", level)
    end
    arr[i - 1] = id
  end
  -- The whole text at once: a tokenizer.json's decoders act on it as HF's decode does.
  local len = ffi.new("size_t[1]")
  local cap = 4 * n + 64
  for _ = 1, 2 do
    local buf = ffi.new("char[?]", cap)
    local status = C.lrun_tokenizer_decode(self.handle, arr, n, special and 1 or 0, buf, cap, len)
    if status ~= C.LRUN_OK then return nil, errors.from_status(status, "detokenize") end
    if tonumber(len[0]) <= cap then return ffi.string(buf, len[0]) end
    cap = tonumber(len[0])
  end
  return nil, errors.new("internal", "detokenize: the text length changed between two decodings")
end

--- The vocabulary entry of an id as stored ("Ġthe"), or nil.
function Tokenizer:token_text(id)
  local p = C.lrun_tokenizer_token_text(self.handle, id)
  if p == nil then return nil end
  return ffi.string(p)
end

--- The id of an exact vocabulary entry, or nil.
function Tokenizer:find(text)
  local id = C.lrun_tokenizer_find(self.handle, text, #text)
  if id < 0 then return nil end
  return id
end

--- True for control tokens ("<|im_end|>", "<s>").
function Tokenizer:is_control(id)
  return C.lrun_tokenizer_token_type(self.handle, id) == C.LRUN_TOKEN_TYPE_CONTROL
end

--- The end-of-generation ids: EOS and the file's other EOG tokens.
-- @treturn {int,...}
function Tokenizer:eog_ids()
  local seen, out = {}, {}
  local function add(id)
    if id >= 0 and not seen[id] then seen[id] = true; out[#out + 1] = id end
  end
  add(self.eos_id)
  for i = 0, tonumber(C.lrun_tokenizer_eog_count(self.handle)) - 1 do
    add(C.lrun_tokenizer_eog(self.handle, i))
  end
  return out
end

-- ---------------------------------------------------------------- no tokenizer

-- A model loaded without a tokenizer (an HF directory without
-- tokenizer.json, or a GGUF without tokenizer metadata): ids in and out
-- work; text does not, and says why.
local Missing = {}
Missing.__index = Missing

--- A stand-in for a model without a tokenizer.
-- @tparam string path the model's path, for the messages
-- @tparam int n_vocab
-- @tparam[opt] {int,...} eog end-of-generation ids (from the model's config)
-- @treturn table
function M.missing(path, n_vocab, eog)
  return setmetatable({ path = path, n_vocab = n_vocab, bos_id = -1, eos_id = eog and eog[1] or -1,
    adds_bos = false, eog = eog or {}, missing = true }, Missing)
end

function Missing:why()
  return "model " .. self.path .. " has no tokenizer (an HF directory needs its tokenizer.json, a GGUF its "
    .. "tokenizer.ggml.* metadata); pass token ids"
end

function Missing:encode() error("tokenize: " .. self:why(), 2) end
function Missing:try_encode() error("tokenize: " .. self:why(), 3) end -- text without a tokenizer is the caller's mistake
function Missing:decode() error("detokenize: " .. self:why(), 2) end
function Missing:try_decode() error("detokenize: " .. self:why(), 3) end
--- Text of a token: none without a tokenizer (generation from ids still runs).
function Missing.piece() return "" end
function Missing.token_text() return nil end
function Missing.find() return nil end
function Missing.is_control() return false end
function Missing:eog_ids() return self.eog end
Missing.__tostring = function(t) return "lrun.tokenizer<none: " .. t:why() .. ">" end

Tokenizer.__tostring = function(t)
  return string.format("lrun.tokenizer<%d tokens, bos=%d, eos=%d>", t.n_vocab, t.bos_id, t.eos_id)
end

return M
