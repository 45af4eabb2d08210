-- moe_exact_gpu_spec: mixtures of experts on the CUDA engine's exact path
-- (docs/moe.md "Exact numerics on CUDA"; opt-in through LRUN_CUDA_MOE_EXACT=1
-- until this spec has passed on a GPU) against the CPU engine, bit for bit:
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
--     slots, evicting; n_cpu_moe 1 cached, the rest resident);
--   * without LRUN_CUDA_MOE_EXACT=1, numerics = "exact" is refused naming it.
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; pending without a
-- GPU. LRUN_GPU_SPEC_DEVICE=cpu is a dry run on the CPU engine.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same, rel_diff, with = compare.same, compare.rel_diff, compare.with
local lf = require("lrun.ffi")
local C = lf.C
local lrun = require("lrun")
local arch_models = require("tests.arch_models")

local ffi = require("ffi")
pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);")

local DEVICE = os.getenv("LRUN_GPU_SPEC_DEVICE") or "cuda:0"
local has_gpu = DEVICE == "cpu" or C.lrun_cuda_device_count() > 0

local PROMPT = { 257, 84, 104, 101, 32, 99, 97, 112, 105, 116, 97, 108, 300, 42, 7, 260, 99, 12 }
local N_NEW = 8

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

local function run(path, opts)
  local m = assert(lrun.load(path, with({ progress = false, n_ctx = 256, threads = 2 }, opts)))
  local _, ids = assert(m:generate(PROMPT, { max_new_tokens = N_NEW, do_sample = false, eos_token_id = {} }))
  local logits = assert(m:logits(PROMPT))
  m:free()
  return ids, logits
end

-- run with LRUN_CUDA_MOE_EXACT=1 for this call only (other specs see the default)
local function run_exact(path, opts)
  ffi.C.setenv("LRUN_CUDA_MOE_EXACT", "1", 1)
  local ok, ids, logits = pcall(run, path, opts)
  ffi.C.unsetenv("LRUN_CUDA_MOE_EXACT")
  assert(ok, ids)
  return ids, logits
end

describe("mixtures of experts on cuda, exact numerics, against the CPU", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  local tmp = {}
  teardown(function() for _, p in ipairs(tmp) do os.remove(p) end end)

  for _, e in ipairs(arch_models.models) do
    if (e.n_expert or 0) > 0 and e.dtype ~= "f32" and not e.cpu_only then
      describe(e.name .. ":", function()
        local path, cpu_ids, cpu_logits
        setup(function()
          path = os.tmpname()
          tmp[#tmp + 1] = path
          arch_models.generate(e, path)
          cpu_ids, cpu_logits = run(path, { device = "cpu", numerics = "exact" })
        end)

        for _, p in ipairs(PLACEMENTS) do
          it("exact, " .. p[1] .. ": the CPU's logits bit for bit and its greedy tokens", function()
            local ids, logits = run_exact(path, with(p[2], { device = DEVICE, numerics = "exact" }))
            assert.is_true(same(cpu_ids, ids), "tokens differ")
            assert.is_true(same(cpu_logits, logits), "logits differ: rel " .. rel_diff(cpu_logits, logits))
          end)
        end

        if DEVICE ~= "cpu" then
          it("without LRUN_CUDA_MOE_EXACT=1, exact numerics are refused naming it", function()
            ffi.C.unsetenv("LRUN_CUDA_MOE_EXACT")
            local ok, err = pcall(run, path, { device = DEVICE, numerics = "exact" })
            assert.is_false(ok)
            local msg = tostring(type(err) == "table" and err.message or err)
            assert.truthy(msg:find("LRUN_CUDA_MOE_EXACT", 1, true), msg)
          end)
        end
      end)
    end
  end
end)
