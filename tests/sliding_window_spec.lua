-- sliding_window_spec: Mistral's sliding-window attention (llama with
-- llama.attention.sliding_window) on the CPU engine against a float64
-- forward with the window (tests/golden/swa_float64.json, written by
-- tests/golden/make_swa_golden.py from the models of tests/arch_models.lua's
-- M.float_models; llama.cpp ignores the key for llama, so it cannot be the
-- reference). The prompts are longer than the window, so most positions see
-- only part of the past. Checks: the first-step log-probabilities within
-- TOL of float64 (lrun computes in f32), the same greedy ids, and that the
-- same weights without the window are far from the golden (the window is
-- what the test measures). The CUDA engine against the CPU on this model:
-- tests/arch_gpu_spec.lua.
package.path = "./?.lua;" .. package.path
local read_golden = require("tests.golden").read
local arch_models = require("tests.arch_models")
local lrun = require("lrun")

local TOL = 1e-4 -- nats over float64's top 20; measured 6e-7 (f32 KV cache)

local function worst_diff(model, case)
  local lg = model:logits(case.prompt_ids)
  local mx = -math.huge
  for i = 1, #lg do mx = math.max(mx, lg[i]) end
  local s = 0
  for i = 1, #lg do s = s + math.exp(lg[i] - mx) end
  local lse = mx + math.log(s)
  local worst = 0
  for _, p in ipairs(case.first_step_top20) do worst = math.max(worst, math.abs(lg[p[1] + 1] - lse - p[2])) end
  return worst
end

describe("sliding-window attention (Mistral) against a float64 forward", function()
  local golden = read_golden("swa_float64.json")
  local by_name = {}
  for _, e in ipairs(arch_models.float_models) do by_name[e.name] = e end

  for _, gm in ipairs(golden.models) do
    describe(gm.name, function()
      local path, model
      setup(function()
        path = os.tmpname()
        arch_models.generate(by_name[gm.name], path)
        model = assert(lrun.load(path, { threads = 2, progress = false, kv_dtype = "f32" }))
      end)
      teardown(function()
        if model then model:free() end
        if path then os.remove(path) end
      end)

      for _, case in ipairs(gm.cases) do
        it(case.name .. ": first-step log-probs within " .. TOL .. " of float64, the same greedy ids", function()
          local d = worst_diff(model, case)
          assert(d <= TOL, string.format("max |log-prob difference| %.2e > %g", d, TOL))
          local _, ids = model:generate(case.prompt_ids, { max_new_tokens = golden.n_predict, do_sample = false,
                                                           eos_token_id = {} })
          local skip = #ids == #case.prompt_ids + golden.n_predict and #case.prompt_ids or 0
          local got = {}
          for k = 1, golden.n_predict do got[k] = ids[skip + k] end
          assert.are.same(case.continuation_ids, got)
        end)
      end

      it("without the window the same weights are far from the golden", function()
        local e = {}
        for k, v in pairs(by_name[gm.name]) do e[k] = v end
        e.sliding_window = 0
        local p2 = os.tmpname()
        arch_models.generate(e, p2)
        local m2 = assert(lrun.load(p2, { threads = 2, progress = false, kv_dtype = "f32" }))
        local d = worst_diff(m2, gm.cases[1])
        m2:free()
        os.remove(p2)
        assert(d > 100 * TOL, string.format("only %.2e apart", d))
      end)
    end)
  end
end)
