-- arch_gpu_spec: every architecture of tests/arch_models.lua on the CUDA
-- engine against the CPU engine, in every placement (docs/architectures.md):
--
--   * numerics = "exact" (quantized models: the exact path takes Q4_0/Q4_1/Q8_0
--     matrices): resident, streamed (every matrix through the slots),
--     host-computed matrices and an offloaded KV cache all give the CPU
--     engine's logits bit for bit, and its greedy tokens;
--   * the fast default: resident logits within the tolerance test_engine_gpu
--     states for f32 (prefill through cuBLAS with f16 activations: 1e-2) and
--     q8_0 (the CPU quantizes activations to 8 bits: 5e-2; so for gpt-oss's
--     MXFP4 experts whatever the attention's dtype, gpu.tol); streamed and
--     offloaded-KV runs bit-identical to the resident fast run; host compute
--     within the same tolerance.
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; every case is
-- pending without a GPU. LRUN_GPU_SPEC_DEVICE=cpu runs it on the CPU engine
-- (a dry run of the spec where no GPU is).
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same, rel_diff, with = compare.same, compare.rel_diff, compare.with
local arch_models = require("tests.arch_models")
local gpu = require("tests.gpu_spec_common")
local DEVICE = gpu.DEVICE

-- The placements: name, load options on top of the device's.
local PLACEMENTS = {
  { "resident", {} },
  { "streamed (every block off the device, k = 1)", { policy = "layers", n_gpu_layers = 0, prefetch_layers = 1 } },
  { "streamed (layers, one on the device, k = 2)", { policy = "layers", n_gpu_layers = 1, prefetch_layers = 2 } },
  { "host compute (-ot blk.1.ffn_down=cpu, blk.0.attn_k=cpu)",
    { policy = "conservative", overrides = { "blk%.1%.ffn_down=cpu", "blk%.0%.attn_k=cpu" } } },
  { "offloaded KV cache", { cache_implementation = "offloaded" } },
}

-- the host-computed tensors of m's placement
local function count_host(m)
  local host = m.placement and m:placement() and m:placement().host_compute
  local n_host = 0
  for _ in pairs(host or {}) do n_host = n_host + 1 end
  return n_host
end

-- ids, logits, the number of host-computed tensors
local function run(path, opts) return gpu.run(path, opts, nil, count_host) end

describe("every architecture on cuda against the CPU", function()
  if not gpu.has_gpu then
    pending("no GPU visible")
    return
  end
  local files = gpu.temp_files()
  teardown(function() files:remove() end)

  -- every model of the llama.cpp check, the sliding-window ones, and a
  -- quantized sliding-window model for the exact path
  local all = {}
  for _, e in ipairs(arch_models.models) do all[#all + 1] = e end
  for _, e in ipairs(arch_models.float_models) do all[#all + 1] = e end
  all[#all + 1] = { name = "mistral_swa_q8_0", arch = "llama", dtype = "q8_0", sliding_window = 8 }
  for _, e in ipairs(all) do
    describe(e.name .. ":", function()
      local path, cpu_ids, cpu_logits, fast_ids, fast_logits
      setup(function()
        path = files:model(e)
        cpu_ids, cpu_logits = run(path, { device = "cpu", numerics = "exact" })
      end)

      if e.no_cuda_exact and e.dtype ~= "f32" then
        it("exact: not on CUDA (the fast path runs it)", function() pending(e.no_cuda_exact) end)
      end
      for _, p in ipairs((e.dtype == "f32" or e.no_cuda_exact) and {} or PLACEMENTS) do
        it("exact, " .. p[1] .. ": the CPU's logits bit for bit and its greedy tokens", function()
          local ids, logits = run(path, with(p[2], { device = DEVICE, numerics = "exact" }))
          assert.is_true(same(cpu_ids, ids), "tokens differ")
          assert.is_true(same(cpu_logits, logits), "logits differ: rel " .. rel_diff(cpu_logits, logits))
        end)
      end

      for _, p in ipairs(PLACEMENTS) do
        it("fast, " .. p[1], function()
          local ids, logits, n_host = run(path, with(p[2], { device = DEVICE }))
          if p[1] == "resident" then fast_ids, fast_logits = ids, logits end
          local d = rel_diff(cpu_logits, logits)
          print(string.format("# %s fast %s: rel diff to the CPU %.2e, %d host-computed", e.name, p[1], d, n_host))
          assert.is_true(d <= gpu.tol(e), string.format("rel diff %.3e above %.0e", d, gpu.tol(e)))
          if n_host == 0 and fast_logits then
            assert.is_true(same(fast_ids, ids), "tokens differ from the resident fast run")
            assert.is_true(same(fast_logits, logits), "logits differ from the resident fast run")
          end
        end)
      end
    end)
  end
end)
