-- hf_golden_spec: lrun against transformers on tiny random models (llama,
-- llama3 rope_scaling, qwen2, qwen3, phi3)
-- saved with save_pretrained (tests/golden/make_hf_golden.py writes the
-- directories under tests/golden/hf/ and tests/golden/hf_models.json on a
-- machine with torch): the last position's f32 logits within 1e-4 (absolute,
-- logits of order 1) and the greedy continuations identical, on the CPU.
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")

local GOLDEN = "tests/golden/hf_models.json"
local TOL = 1e-4

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
  for _, m in ipairs(golden.models) do
    it(m.name .. ": logits and greedy tokens", function()
      local dir = "tests/golden/" .. m.dir
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
