-- moe_stream_gpu_spec: prefill chunks that stream their host experts to the
-- GPU (docs/moe.md "Prefill: streaming host experts";
-- runtime/cuda/engine_cuda_moe_stream.c), against the all-resident run and
-- the host-compute run, on tests/arch_models.lua's MoE models. With
-- moe_prefill_stream not off every host-routed chunk runs its experts
-- through the gathering kernels (one gather, one weighted scatter per
-- expert), so the references here run with it too:
--   * resident, moe_prefill_stream = "on": the reference (no expert is off the device, nothing streams);
--   * experts_on_host / n_cpu_moe 1 / cached, "on": the 18-token prompt's chunk
--     streams every touched expert (groups of 8, and of 1 and 3 experts to
--     cycle both staging buffers several times per block): logits and greedy
--     tokens bit-identical to the resident run, prefill_stream_experts and
--     _bytes counted;
--   * a chunk below the threshold: "auto" with moe_prefill_stream_tokens
--     1000 streams nothing (host compute); a decode-sized prompt (5 tokens)
--     never streams; "auto" with 2 streams some experts and computes the
--     rest on the host: within the fast tolerance of the host-compute run
--     (moe_prefill_stream = "off") and of the CPU, the same first token;
--   * the host-compute run ("off") against the streamed one: the fast tolerance.
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; pending without a
-- GPU. LRUN_GPU_SPEC_DEVICE=cpu is a dry run on the CPU engine (the options
-- are CUDA's: nothing streams there, and the stream counts are not checked).
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same, rel_diff, with = compare.same, compare.rel_diff, compare.with
local lrun = require("lrun")
local gpu = require("tests.gpu_spec_common")
local DEVICE, ON_GPU, PROMPT = gpu.DEVICE, gpu.ON_GPU, gpu.PROMPT

local SHORT = { 257, 84, 104, 101, 32 } -- a decode-sized chunk (<= 8 tokens): never streams

-- ids, logits, m:stats() of prompt (default PROMPT)
local function run(path, opts, prompt)
  return gpu.run(path, opts, prompt, function(m) return m:stats() end)
end

-- run with LRUN_CUDA_MOE_STREAM_GROUP=group (nil: the default)
local function run_group(group, path, opts, prompt)
  return gpu.with_env("LRUN_CUDA_MOE_STREAM_GROUP", group, run, path, opts, prompt)
end

local STREAMED = {
  { "experts_on_host", { policy = "experts_on_host" } },
  { "experts_on_host, groups of 1 expert", { policy = "experts_on_host" }, 1 },
  { "experts_on_host, groups of 3 experts", { policy = "experts_on_host" }, 3 },
  { "n_cpu_moe 1", { n_cpu_moe = 1 } },
  { "experts_on_host, cached (decode through the cache)", { policy = "experts_on_host", moe_host = "cache" } },
}

describe("mixtures of experts on cuda: prefill streams host experts", function()
  if not gpu.has_gpu then
    pending("no GPU visible")
    return
  end
  local files = gpu.temp_files()
  teardown(function() files:remove() end)

  for _, e in ipairs(gpu.moe_models()) do
    describe(e.name .. ":", function()
      local path, cpu_ids, cpu_logits, res_ids, res_logits, host_ids, host_logits
      setup(function()
        path = files:model(e)
        cpu_ids, cpu_logits = run(path, { device = "cpu" })
        res_ids, res_logits = run(path, { device = DEVICE, moe_prefill_stream = "on" })
        host_ids, host_logits = run(path, { device = DEVICE, policy = "experts_on_host", moe_prefill_stream = "off" })
      end)

      it("the resident and host-compute references agree with the CPU", function()
        for name, l in pairs({ resident = res_logits, host = host_logits }) do
          local d = rel_diff(cpu_logits, l)
          print(string.format("# %s %s (stream on/off): rel diff to the CPU %.2e", e.name, name, d))
          assert.is_true(d <= gpu.tol(e), string.format("%s: rel diff %.3e above %.0e", name, d, gpu.tol(e)))
        end
        assert.are.equal(cpu_ids[#PROMPT + 1], res_ids[#PROMPT + 1], "first greedy token, resident")
        assert.are.equal(cpu_ids[#PROMPT + 1], host_ids[#PROMPT + 1], "first greedy token, host compute")
      end)

      for _, p in ipairs(STREAMED) do
        it("streams " .. p[1] .. ": bit-identical to the resident run", function()
          local ids, logits, st = run_group(p[3], path, with(p[2], { device = DEVICE, moe_prefill_stream = "on" }))
          print(string.format("# %s %s: %d experts streamed, %d bytes; host compute %d bytes", e.name, p[1],
            st.prefill_stream_experts, st.prefill_stream_bytes, st.host_compute_bytes))
          if ON_GPU then
            assert.is_true(st.prefill_stream_experts > 0 and st.prefill_stream_bytes > 0, "nothing streamed")
          end
          assert.is_true(same(res_logits, logits), "logits differ from the resident run")
          assert.is_true(same(res_ids, ids), "greedy tokens differ from the resident run")
          local d = rel_diff(host_logits, logits)
          print(string.format("# %s %s: rel diff to host compute %.2e", e.name, p[1], d))
          assert.is_true(d <= gpu.tol(e), string.format("rel diff %.3e to host compute above %.0e", d, gpu.tol(e)))
        end)
      end

      it("streams nothing below the threshold (auto, 1000 tokens per expert)", function()
        local ids, logits, st = run(path, { device = DEVICE, policy = "experts_on_host", moe_prefill_stream = "auto",
          moe_prefill_stream_tokens = 1000 })
        assert.are.equal(0, st.prefill_stream_experts)
        assert.is_true(st.host_compute_bytes > 0, "nothing was computed on the host")
        local d = rel_diff(host_logits, logits)
        print(string.format("# %s below the threshold: rel diff to host compute %.2e", e.name, d))
        assert.is_true(d <= gpu.tol(e), string.format("rel diff %.3e above %.0e", d, gpu.tol(e)))
        assert.are.equal(host_ids[#PROMPT + 1], ids[#PROMPT + 1], "first greedy token")
      end)

      it("takes the planner's per-block thresholds (auto, no threshold given)", function()
        local m = assert(lrun.load(path, with(gpu.LOAD, { device = DEVICE, policy = "experts_on_host",
          moe_prefill_stream = "auto" })))
        local per = m.residency and m.residency.prefill_stream_block_tokens
        print(string.format("# %s: planner's threshold %s", e.name, tostring(m.residency
          and m.residency.prefill_stream_tokens)))
        if ON_GPU then assert.is_not_nil(per, "the plan has no per-block thresholds") end
        local logits = assert(m:logits(PROMPT))
        m:free()
        local d = rel_diff(host_logits, logits)
        assert.is_true(d <= gpu.tol(e), string.format("rel diff %.3e to host compute above %.0e", d, gpu.tol(e)))
      end)

      it("never streams a decode-sized chunk", function()
        local _, _, st = run(path, { device = DEVICE, policy = "experts_on_host", moe_prefill_stream = "on" }, SHORT)
        assert.are.equal(0, st.prefill_stream_experts)
      end)

      it("streams the busy experts and computes the rest on the host (auto, 2 tokens)", function()
        local ids, logits, st = run(path, { device = DEVICE, policy = "experts_on_host", moe_prefill_stream = "auto",
          moe_prefill_stream_tokens = 2 })
        print(string.format("# %s auto 2: %d experts streamed, host compute %d bytes", e.name,
          st.prefill_stream_experts, st.host_compute_bytes))
        if ON_GPU then assert.is_true(st.prefill_stream_experts > 0, "nothing streamed") end
        for name, ref in pairs({ cpu = cpu_logits, host = host_logits }) do
          local d = rel_diff(ref, logits)
          assert.is_true(d <= gpu.tol(e), string.format("%s: rel diff %.3e above %.0e", name, d, gpu.tol(e)))
        end
        assert.are.equal(cpu_ids[#PROMPT + 1], ids[#PROMPT + 1], "first greedy token")
      end)
    end)
  end
end)
