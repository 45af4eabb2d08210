--- lrun.packed_form — which weights may be held packed and the form a
-- placement gives each tensor (docs/packed.md): the planner's choice of form,
-- apart from where the bytes live.
-- @module lrun.packed_form
local M = {}

-- the roles of a block's weight matrices (what host compute and the packed form apply to)
M.matrix_roles = { attn_q = true, attn_k = true, attn_v = true, attn_output = true, ffn_gate = true,
  ffn_up = true, ffn_down = true }
local matrix_roles = M.matrix_roles

local packable_dtypes = { bf16 = true, f16 = true }

--- Whether a tensor description may be held packed (docs/packed.md): a
-- bf16/f16 weight matrix (block matrices, the LM head, the embedding table).
function M.packable(t)
  return packable_dtypes[t.dtype] == true and (matrix_roles[t.role] or t.role == "lm_head" or t.role == "embedding")
    and #(t.shape or {}) == 2
end


--- The codec a tensor description is or would be packed in: its own when
-- known (t.codec, from lrun_tensor_packed_codec: packed now, or before, or
-- a packed file's), else the rule packing at placement follows
-- (lrun_tensor_move_form, as lrun pack): "pex2" for bf16 of a multiple of 8
-- values below 2^32, "pex1" for f16 and any other.
function M.codec(t)
  if t.codec then return t.codec end
  local n = 1
  for _, d in ipairs(t.shape or {}) do n = n * d end
  if t.dtype == "bf16" and n > 0 and n % 8 == 0 and n < 2 ^ 32 then return "pex2" end
  return "pex1"
end

--- opts.packed as a test over descriptions: true (every packable weight),
-- false (none), a predicate, or a list of predicates (any).
function M.selector(spec)
  if spec == nil then return nil end
  if spec == true or spec == false then return function() return spec end end
  if type(spec) == "function" then return spec end
  if type(spec) == "table" then
    for i, p in ipairs(spec) do
      if type(p) ~= "function" then return nil, "packed: predicate #" .. i .. " is a " .. type(p) end
    end
    return function(t)
      for _, p in ipairs(spec) do if p(t) then return true end end
      return false
    end
  end
  return nil, "packed: expected true, false, a predicate or a list of predicates, got " .. type(spec)
end

-- The form of every tensor: its form now, then the policy's extra.packed,
-- then opts.packed; a form the tensor cannot have is an error naming it
-- (explicit) or left out (selected by a predicate). The file's tiers (mmap,
-- disk) hold the file's form, whatever was asked.
function M.choose(tensors, by_name, extra_packed, select, final, where)
  local packed = {}
  for _, t in ipairs(tensors) do packed[t.name] = t.packed or false end
  if type(extra_packed) == "table" then
    for name, on in pairs(extra_packed) do
      local t = by_name[name]
      if not t then return nil, "policy " .. where .. ": packed names unknown tensor '" .. tostring(name) .. "'" end
      if on and not M.packable(t) then
        return nil, "policy " .. where .. ": tensor '" .. name .. "' (" .. t.dtype .. ", " .. t.role
          .. ") cannot be packed: only bf16/f16 weight matrices"
      end
      packed[name] = on and true or false
    end
  end
  if select then
    for _, t in ipairs(tensors) do
      local on = select(t)
      if on and M.packable(t) then packed[t.name] = true elseif not on then packed[t.name] = false end
    end
  end
  for _, t in ipairs(tensors) do
    if final[t.name] == "mmap" or final[t.name] == "disk" then packed[t.name] = t.file_packed end
  end
  return packed
end

return M
