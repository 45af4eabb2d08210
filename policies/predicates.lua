--- policies.predicates — tests over one tensor description.
--
-- A description is the table `model:tensors()` makes (and policies
-- receive): {name=, role=, layer=, dtype=, bytes=, shape=}. role is
-- lrun_role_name's ("embedding", "output_norm", "lm_head", "attn_norm",
-- "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
-- "ffn_up", "ffn_down", "rope_freqs", "bias", "other", and a mixture of
-- experts' "ffn_gate_inp" (the router), "ffn_gate_exps", "ffn_up_exps",
-- "ffn_down_exps" (every expert of the block stacked); layer is the block
-- index, -1 outside blocks. Each predicate is a plain function t → boolean,
-- so they compose: OffloadPolicy{predicates = {P.is_norm_vector, P.is_bias}}.
-- @module policies.predicates
local M = {}

local norm_roles = { attn_norm = true, ffn_norm = true, output_norm = true }
local attention_roles = { attn_q = true, attn_k = true, attn_v = true, attn_output = true }
local mlp_roles = { ffn_gate = true, ffn_up = true, ffn_down = true, ffn_gate_inp = true,
  ffn_gate_exps = true, ffn_up_exps = true, ffn_down_exps = true }
local expert_roles = { ffn_gate_exps = true, ffn_up_exps = true, ffn_down_exps = true }

-- Biases carry role "bias" whatever they belong to; the GGUF name says
-- which matrix ("blk.3.attn_q.bias"), so block membership is read from it.
local function bias_of(t, prefix)
  return t.role == "bias" and (t.name or ""):find("^blk%.%d+%." .. prefix) ~= nil
end

--- The token embedding table (also the LM head when the model ties them).
function M.is_embedding_table(t)
  return t.role == "embedding" or t.name == "token_embd.weight"
end

--- A normalisation weight vector (attention, MLP or output norm).
function M.is_norm_vector(t)
  return norm_roles[t.role] == true
end

--- Any bias vector.
function M.is_bias(t)
  return t.role == "bias" or (t.name or ""):find("%.bias$") ~= nil
end

--- The untied output projection ("output.weight"); absent when tied.
function M.is_lm_head(t)
  return t.role == "lm_head" or t.name == "output.weight"
end

--- Attention matrices of a block and their biases (not the norm).
function M.is_attention(t)
  return attention_roles[t.role] == true or bias_of(t, "attn_")
end

--- MLP matrices of a block and their biases (not the norm); a mixture of
-- experts' router and experts too.
function M.is_mlp(t)
  return mlp_roles[t.role] == true or bias_of(t, "ffn_")
end

--- The experts of a mixture-of-experts block (ffn_*_exps, each holding
-- every expert of the block; llama.cpp's -ot "exps" pattern), not the router.
function M.is_expert(t)
  return expert_roles[t.role] == true
end

--- A predicate: the tensor belongs to a block with index in [a, b].
-- @tparam int a first layer
-- @tparam[opt] int b last layer (default a)
function M.layer_range(a, b)
  if type(a) ~= "number" then error("layer_range: first layer must be a number", 2) end
  b = b or a
  return function(t)
    return t.layer ~= nil and t.layer >= 0 and t.layer >= a and t.layer <= b
  end
end

--- A predicate: the tensor's name matches a Lua pattern (string.find).
-- @tparam string pattern
function M.name_matches(pattern)
  if type(pattern) ~= "string" then error("name_matches: pattern must be a string", 2) end
  return function(t) return (t.name or ""):find(pattern) ~= nil end
end

--- A predicate true when any of the given predicates is.
function M.any(...)
  local ps = { ... }
  return function(t)
    for _, p in ipairs(ps) do if p(t) then return true end end
    return false
  end
end

return M
