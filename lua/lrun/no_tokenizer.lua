--- lrun.no_tokenizer — the tokenizer of a model whose file has none (a
-- GGUF without tokenizer.ggml.* keys). Such a model still generates from
-- token ids, and its texts are empty; anything that needs text (encode,
-- decode, a text prompt, a chat) raises a clean error naming the file.
-- @module lrun.no_tokenizer
local M = {}

local None = {}
None.__index = None

--- The stand-in for model (an lrun.model with path and n_vocab).
-- @tparam string path the model file, for messages
-- @tparam int n_vocab
function M.new(path, n_vocab)
  return setmetatable({ path = path, n_vocab = n_vocab, bos_id = -1, eos_id = -1, adds_bos = false,
    missing = true }, None)
end

function None:fail(what, level)
  error(string.format("%s: the model %s has no tokenizer (no tokenizer.ggml.* keys in the file); pass token ids",
    what, self.path), level + 1)
end

function None:encode() self:fail("tokenize", 2) end
function None:decode() self:fail("detokenize", 2) end

--- Output text while generating: none (the ids are the output).
function None.piece() return "" end
function None.token_text() return nil end
function None.find() return nil end
function None.is_control() return false end
function None.eog_ids() return {} end

return M
