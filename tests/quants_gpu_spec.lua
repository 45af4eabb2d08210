-- quants_gpu_spec: the CUDA engine on the generated models of the quant types
-- Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS and the Q4_K_M-like mix
-- (tests/quant_models.lua) against the CPU engine on the same files. Two
-- prompt lengths: 5 tokens (m ≤ 8: the fused dequantize-GEMV) and 40 (the
-- prefill GEMM: dequantize into an f16/bf16 slot, then cuBLAS); then 8
-- greedy tokens (decode steps: GEMV).
--
-- Why a tolerance: the CPU multiplies with 8-bit activation quants, as
-- llama.cpp does; the CUDA engine's fast numerics multiply the dequantized
-- weights with f32 (GEMV) or f16/bf16 (GEMM) activations (docs/gpu.md), so
-- the two differ by the activations' quantization noise, about 1e-2 nats
-- on these models; a wrong block layout moves log-probs by tenths.
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; pending without a GPU.
local lf = require("lrun.ffi")
local C = lf.C
local lrun = require("lrun")
package.path = "./?.lua;" .. package.path
local quant_models = require("tests.quant_models")

local LOGPROB_TOL = 0.05 -- nats, max over the CPU's top-20
local TIE_TOL = 0.05     -- nats between the CPU's top two: either pick is a tie

local has_gpu = C.lrun_cuda_device_count() > 0

-- log_softmax of the logits and the ids of the 20 largest (descending)
local function top20(lg, n)
  local get = type(lg) == "table" and function(i) return lg[i + 1] end or function(i) return tonumber(lg[i]) end
  local mx = -math.huge
  for i = 0, n - 1 do mx = math.max(mx, get(i)) end
  local sum = 0
  for i = 0, n - 1 do sum = sum + math.exp(get(i) - mx) end
  local lse = mx + math.log(sum)
  local ids = {}
  for i = 0, n - 1 do ids[#ids + 1] = i end
  table.sort(ids, function(a, b) return get(a) > get(b) end)
  local top = {}
  for i = 1, 20 do top[i] = ids[i] end
  return function(i) return get(i) - lse end, top
end

describe("CUDA engine on the quant-type models", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  local n_vocab = quant_models.spec.n_vocab
  local prompts = {
    gemv = {72, 101, 108, 108, 111},
    gemm = {},
  }
  for i = 1, 40 do prompts.gemm[i] = (37 * i + 11) % 500 end

  for _, m in ipairs(quant_models.models) do
    describe(m.name, function()
      local path, cpu, gpu
      setup(function()
        path = os.tmpname()
        quant_models.write(path, m)
        cpu = assert(lrun.load(path, {device = "cpu", progress = false, threads = 2}))
        gpu = assert(lrun.load(path, {device = "cuda:0", progress = false}))
      end)
      teardown(function()
        if cpu then cpu:free() end
        if gpu then gpu:free() end
        if path then os.remove(path) end
      end)

      for what, ids in pairs(prompts) do
        it(what .. " (" .. #ids .. "-token prompt): log-probs within " .. LOGPROB_TOL .. " of the CPU's", function()
          local lc, top = top20(cpu:logits(ids), n_vocab)
          local lg, gtop = top20(gpu:logits(ids), n_vocab)
          local worst, worst_id = 0, -1
          for _, id in ipairs(top) do
            local d = math.abs(lc(id) - lg(id))
            if d > worst then worst, worst_id = d, id end
          end
          assert(worst <= LOGPROB_TOL, string.format("%s %s: max |log-prob difference| %.5f (token %d)",
            m.name, what, worst, worst_id))
          assert(gtop[1] == top[1] or (gtop[1] == top[2] and lc(top[1]) - lc(top[2]) < TIE_TOL),
            string.format("%s %s: top-1 cuda %d, cpu %d", m.name, what, gtop[1], top[1]))
        end)
      end

      it("numerics = \"exact\" (Q4_0/Q4_1/Q8_0 only) is refused as unsupported, saying why", function()
        -- the refusal comes from load or from the engine's creation
        local mx, err = lrun.load(path, {device = "cuda:0", progress = false, numerics = "exact"})
        if mx then
          local e
          e, err = mx:engine()
          mx:free()
          assert.is_nil(e)
        end
        assert.is_table(err)
        assert.are.equal("unsupported", err.kind)
        assert.truthy(err.message:find("exact"))
      end)

      it("greedy decode (GEMV) follows the CPU's tokens up to a near-tie", function()
        local _, c = cpu:generate(prompts.gemv, {max_new_tokens = 8, do_sample = false, eos_token_id = {}})
        local _, g = gpu:generate(prompts.gemv, {max_new_tokens = 8, do_sample = false, eos_token_id = {}})
        assert.is_table(c)
        assert.is_table(g)
        for k = 1, #c do
          if c[k] ~= g[k] then
            -- the CPU's log-probs at that step, given the context both shared
            local ctx = {}
            for i, v in ipairs(prompts.gemv) do ctx[i] = v end
            for i = 1, k - 1 do ctx[#ctx + 1] = c[i] end
            local lc = top20(cpu:logits(ctx), n_vocab)
            assert(math.abs(lc(c[k]) - lc(g[k])) < TIE_TOL, string.format(
              "%s: token %d: cpu %d, cuda %d (cpu log-probs %.5f, %.5f)", m.name, k, c[k], g[k], lc(c[k]), lc(g[k])))
            break
          end
        end
      end)
    end)
  end
end)
