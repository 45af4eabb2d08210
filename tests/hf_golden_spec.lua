-- hf_golden_spec: lrun against transformers on tiny random models (llama,
-- llama3 rope_scaling, qwen2, qwen3, phi3, gemma2, gemma3, and the mixtures
-- of experts qwen3moe, mixtral, qwen3moe-fused: transformers 5's fused
-- expert layout, and gpt_oss: unquantized, and gpt_oss-mxfp4: the same model's
-- experts in MXFP4 as the released checkpoints keep them, kept MXFP4 by lrun
-- and multiplied with f32 activations as transformers does with their
-- dequantized values)
-- saved with save_pretrained (tests/golden/make_hf_golden.py writes the
-- directories under tests/golden/hf/ and tests/golden/hf_models.json on a
-- machine with torch): the last position's f32 logits within 1e-4 (absolute,
-- logits of order 1) and the greedy continuations identical, on the CPU. A
-- model the script writes but the committed golden lacks (a family added to
-- the script after its last run), or whose directory is absent, is pending.
-- An HF gemma computes GELU in f32 as transformers does (not llama.cpp's f16
-- table), so the same tolerance holds.
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")

local GOLDEN = "tests/golden/hf_models.json"
local TOL = 1e-4
local EXPECTED = { "gemma2", "gemma3", "gpt_oss", "gpt_oss-mxfp4", "llama", "llama3-tied", "mixtral", "phi3",
  "qwen2", "qwen3", "qwen3moe", "qwen3moe-fused" }

local function read_golden()
  local f = io.open(GOLDEN, "r")
  if not f then return nil end
  f:close()
  return require("tests.golden").read("hf_models.json")
end

describe("HF models against transformers", function()
  local golden = read_golden()
  if not golden then
    it("(golden absent)", function()
      pending(GOLDEN .. " is absent: run tests/golden/make_hf_golden.py where torch and transformers are installed")
    end)
    return
  end
  local have = {}
  for _, m in ipairs(golden.models) do have[m.name] = true end
  for _, name in ipairs(EXPECTED) do
    if not have[name] then
      it(name .. ": (golden absent)", function()
        pending(name .. " is not in " .. GOLDEN .. ": rerun tests/golden/make_hf_golden.py (torch, transformers)")
      end)
    end
  end
  for _, m in ipairs(golden.models) do
    local dir = "tests/golden/" .. m.dir
    local cfg = io.open(dir .. "/config.json", "r")
    if cfg then cfg:close() end
    it(m.name .. ": logits and greedy tokens", function()
      if not cfg then
        pending(dir .. " is absent: commit the directories make_hf_golden.py wrote with the golden")
        return
      end
      local model = assert(lrun.load(dir, { threads = 1, kv_dtype = "f32" })) -- f16 KV alone moves logits ~5e-4
      for _, c in ipairs(m.cases) do
        local got = assert(model:logits(c.prompt))
        local worst = 0
        for i = 1, #c.logits do worst = math.max(worst, math.abs(got[i] - c.logits[i])) end
        assert.is_true(worst <= TOL, m.name .. ": max |logit diff| " .. worst)
        local _, ids = assert(model:generate(c.prompt, { max_new_tokens = golden.n_greedy, eos_token_id = false }))
        assert.are.same(c.greedy, ids)
      end
    end)
  end
end)
