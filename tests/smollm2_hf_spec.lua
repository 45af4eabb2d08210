-- smollm2_hf_spec: the default model as a Hugging Face directory
-- (tests/golden/make_smollm2_hf.py writes models/SmolLM2-135M-Instruct-hf/
-- and models/SmolLM2-135M-Instruct.f32.gguf from the Q4_1 GGUF): lrun's
-- greedy output from the directory (HF layout, half-split RoPE) equals its
-- output from the f32 GGUF of the same values (permuted q/k, adjacent RoPE),
-- and the first-step logits agree within f32 rounding (30 blocks whose q/k
-- rows come in another order: measured 4e-4 of the largest logit; a layout
-- error gives differences of the logits' own size).
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")

local DIR = "models/SmolLM2-135M-Instruct-hf"
local GGUF = "models/SmolLM2-135M-Instruct.f32.gguf"

local function exists(p)
  local f = io.open(p .. (p == DIR and "/config.json" or ""), "r")
  if f then f:close() end
  return f ~= nil
end

describe("SmolLM2 as an HF directory", function()
  if not (exists(DIR) and exists(GGUF)) then
    it("(files absent)", function()
      pending(DIR .. " or " .. GGUF .. " is absent: run tests/golden/make_smollm2_hf.py")
    end)
    return
  end
  it("gives the f32 GGUF's greedy tokens and logits", function()
    local g = assert(lrun.load(GGUF, { threads = 2 }))
    local prompt = g:tokenize("The capital of France is")
    local h = assert(lrun.load(DIR, { threads = 2 }))
    assert.are.equal("half", h:info().rope_style)
    assert.are.equal(g:info().n_vocab, h:info().n_vocab)
    local la, lb = assert(g:logits(prompt)), assert(h:logits(prompt))
    local worst, big = 0, 0
    for i = 1, #la do
      worst = math.max(worst, math.abs(la[i] - lb[i]))
      big = math.max(big, math.abs(la[i]))
    end
    assert.is_true(worst < 2e-3 * big, "max |logit diff| " .. worst .. " of max |logit| " .. big)
    local _, ia = assert(g:generate(prompt, { max_new_tokens = 16, eos_token_id = false }))
    local _, ib = assert(h:generate(prompt, { max_new_tokens = 16, eos_token_id = false }))
    assert.are.same(ia, ib)
  end)
end)
