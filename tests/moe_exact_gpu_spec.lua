-- moe_exact_gpu_spec: mixtures of experts on the CUDA engine's exact path
-- (docs/moe.md "Exact numerics on CUDA"; what numerics = "exact" does for
-- experts since this spec passed on the H200) against the CPU engine, bit for bit:
-- the router's float product (lrun_k_moe_router_exact), host routing
-- (lrun_moe_route), each chosen expert through the dense exact path's q8dot
-- products, SwiGLU and quantization, the slot-order weighted sum
-- (lrun_k_moe_combine_exact). The models are tests/arch_models.lua's
-- quantized MoE ones (qwen3moe: 8 experts, top-4; Mixtral: 4, top-2; f32
-- routers, Q8_0 experts). Per model and placement: the prompt's logits (a
-- prefill of 18 tokens) and 8 greedy decode steps' tokens identical to the
-- CPU engine's (numerics = "exact"):
--   * resident; experts host-computed (experts_on_host; n_cpu_moe 1, mixed);
--     experts streamed with their block (-ot exps=host); every block
--     streamed (layers 0); the expert cache (all host experts cached; 4
--     slots, evicting; n_cpu_moe 1 cached, the rest resident).
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; pending without a
-- GPU. LRUN_GPU_SPEC_DEVICE=cpu is a dry run on the CPU engine.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same, rel_diff, with = compare.same, compare.rel_diff, compare.with
local gpu = require("tests.gpu_spec_common")
local DEVICE = gpu.DEVICE

local PLACEMENTS = {
  { "resident", {} },
  { "experts_on_host (host compute)", { policy = "experts_on_host" } },
  { "n_cpu_moe 1 (block 0's experts host-computed)", { n_cpu_moe = 1 } },
  { "-ot exps=host (experts streamed with their block)", { overrides = { "exps=host" } } },
  { "every block streamed (layers 0, k = 1)", { policy = "layers", n_gpu_layers = 0, prefetch_layers = 1 } },
  { "experts_on_host, cached (moe_host = cache)", { policy = "experts_on_host", moe_host = "cache" } },
  { "experts_on_host, cached in 4 slots (evicting)", { policy = "experts_on_host", expert_cache_slots = 4 } },
  { "mixed: n_cpu_moe 1 cached, the rest resident", { n_cpu_moe = 1, moe_host = "cache" } },
}

local run = gpu.run

describe("mixtures of experts on cuda, exact numerics, against the CPU", function()
  if not gpu.has_gpu then
    pending("no GPU visible")
    return
  end
  local files = gpu.temp_files()
  teardown(function() files:remove() end)

  for _, e in ipairs(gpu.moe_models(function(x) return x.dtype ~= "f32" and not x.no_cuda_exact end)) do
    describe(e.name .. ":", function()
      local path, cpu_ids, cpu_logits
      setup(function()
        path = files:model(e)
        cpu_ids, cpu_logits = run(path, { device = "cpu", numerics = "exact" })
      end)

      for _, p in ipairs(PLACEMENTS) do
        it("exact, " .. p[1] .. ": the CPU's logits bit for bit and its greedy tokens", function()
          local ids, logits = run(path, with(p[2], { device = DEVICE, numerics = "exact" }))
          assert.is_true(same(cpu_ids, ids), "tokens differ")
          assert.is_true(same(cpu_logits, logits), "logits differ: rel " .. rel_diff(cpu_logits, logits))
        end)
      end
    end)
  end
end)
