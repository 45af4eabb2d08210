-- moe_gpu_spec: mixtures of experts on the CUDA engine against the CPU
-- engine (docs/moe.md), fast numerics only: router on the device; decode
-- chunks (≤ 8 tokens) of blocks whose experts are on the device are routed
-- on the device (lrun_k_moe_route, the CPU's bits) and their experts
-- multiplied from the device-side ids (lrun_k_moe_gemv); prefill and host
-- experts are routed on the host, each expert's slice through the existing
-- GEMV or cuBLAS (the expert's tokens gathered). Models with n_expert not
-- a multiple of 8 (the Mixtral ones here: 4) always route on the host. The models are tests/arch_models.lua's MoE ones (checked
-- against llama.cpp on the CPU). Per model and placement:
--   * resident, experts on the host computed there (experts_on_host, -ot
--     exps=CPU), experts streamed with their block (-ot exps=host), every
--     block streamed (layers 0): the prompt's logits within test_engine_gpu's
--     fast tolerances of the CPU's (f32 1e-2, q8_0 5e-2) and the same first
--     greedy token; streamed runs bit-identical to the resident fast run;
--   * the expert counts (m:stats().experts): each block's sum to tokens x top-k;
--   * the expert cache (moe_host = "cache": host experts copied into device
--     slots, LRU): all host experts cached, 4 slots (evicting), and mixed
--     (block 0 cached, the rest resident): bit-identical to the resident
--     run (the same kernels read the slots; the prefetch of the next
--     block's likely experts changes no bit), hits/misses/bytes in m:stats();
--   * device routing against host routing (LRUN_CUDA_MOE_DEVICE_ROUTE=0):
--     the same greedy tokens, logits within the fast tolerance; decode
--     counts summing to tokens x top-k; with a static cache and every
--     expert resident, decode steps replayed from CUDA graphs;
--   * the hybrid cache (moe_host = "hybrid", half the host experts' slots): a 6-token prompt's logits after 32
--     decode steps (hits from slots and misses from the host pass in one chunk) within the fast tolerance of
--     the CPU's and the resident run's, the same first greedy token; hits, host-computed misses and admissions
--     all counted, admissions at most the slots plus a quarter of the misses (no thrash); Mixtral's 4 experts
--     and gpt-oss fall back to copying;
--   * prefill over a cached and a hybrid block (moe_prefill_stream = "on", half the slots, after 32 decode
--     steps filled them): the experts in slots run from there (m:stats().prefill_slot_experts > 0), the others
--     streamed; the prompt's logits bit-identical to the resident run's; prefill counts no cache hit or miss;
--   * smart with block 0's experts on the host (-ot) and skewed counts chooses the expert cache itself
--     (lrun.expert_choice, each option's prefill weighed) and the engine takes the planner's slots; with
--     moe_host = "compute" it makes no choice and the engine no cache;
--   * the host pass (the default; a decode chunk's host experts in one pass, LRUN_CUDA_MOE_HOST_PASS=0 off): experts_on_host and
--     n_cpu_moe 1 give the product-by-product run's tokens, the prompt's logits within the fast tolerance;
--   * numerics = "exact" on f32 experts is refused naming the types it takes (tests/moe_exact_gpu_spec.lua
--     runs the quantized ones), and on gpt-oss naming gpt-oss.
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; pending without a
-- GPU. LRUN_GPU_SPEC_DEVICE=cpu is a dry run on the CPU engine.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same, rel_diff, with = compare.same, compare.rel_diff, compare.with
local lrun = require("lrun")
local gpu = require("tests.gpu_spec_common")
local DEVICE, PROMPT, N_NEW = gpu.DEVICE, gpu.PROMPT, gpu.N_NEW

local PLACEMENTS = {
  { "resident", {}, false },
  { "experts_on_host (host compute)", { policy = "experts_on_host" }, true },
  { "n_cpu_moe 1 (block 0's experts host-computed)", { n_cpu_moe = 1 }, true },
  { "-ot exps=host (experts streamed with their block)", { overrides = { "exps=host" } }, false },
  { "every block streamed (layers 0, k = 1)", { policy = "layers", n_gpu_layers = 0, prefetch_layers = 1 }, false },
  -- the expert cache: host experts copied into device slots and run there with the resident kernels
  { "experts_on_host, cached (moe_host = cache)", { policy = "experts_on_host", moe_host = "cache" }, false, true },
  { "experts_on_host, cached in 4 slots (evicting)", { policy = "experts_on_host", expert_cache_slots = 4 }, false,
    true },
  { "experts_on_host, cached in 4 slots, LRU replacement", { policy = "experts_on_host", expert_cache_slots = 4,
    expert_cache_policy = "lru" }, false, true },
  { "mixed: n_cpu_moe 1 cached, the rest resident", { n_cpu_moe = 1, moe_host = "cache" }, false, true },
}

-- ids, logits, m:placement(), m:stats()
local function run(path, opts)
  return gpu.run(path, opts, nil, function(m) return m:placement(), m:stats() end)
end

describe("mixtures of experts on cuda against the CPU", function()
  if not gpu.has_gpu then
    pending("no GPU visible")
    return
  end
  local files = gpu.temp_files()
  teardown(function() files:remove() end)

  for _, e in ipairs(gpu.moe_models()) do
    describe(e.name .. ":", function()
      local path, cpu_ids, cpu_logits, fast_ids, fast_logits
      setup(function()
        path = files:model(e)
        cpu_ids, cpu_logits = run(path, { device = "cpu" })
      end)

      for _, p in ipairs(PLACEMENTS) do
        it("fast, " .. p[1], function()
          local ids, logits, placement, st = run(path, with(p[2], { device = DEVICE }))
          if p[1] == "resident" then fast_ids, fast_logits = ids, logits end
          local d = rel_diff(cpu_logits, logits)
          print(string.format("# %s fast %s: rel diff to the CPU %.2e", e.name, p[1], d))
          assert.is_true(d <= gpu.tol(e), string.format("rel diff %.3e above %.0e", d, gpu.tol(e)))
          assert.are.equal(cpu_ids[#PROMPT + 1], ids[#PROMPT + 1], "first greedy token")
          if p[3] then assert.is_true(placement.experts.host_compute_slices > 0, "no expert host-computed") end
          -- the blocks' host-computed bytes: the total's share of blocks (an off-device embedding's rows are none's)
          local host_blocks = 0
          for _, b in pairs(st.host_compute_layers) do host_blocks = host_blocks + b end
          assert.is_true(host_blocks <= st.host_compute_bytes and (host_blocks > 0) == (st.host_compute_bytes > 0),
            string.format("blocks %d bytes, total %d", host_blocks, st.host_compute_bytes))
          if p[4] and DEVICE ~= "cpu" then
            local c = st.expert_cache
            assert.is_not_nil(c, "no expert cache in m:stats() although moe_host = cache")
            print(string.format("# %s %s: %d slots, %d hits, %d misses, %d prefetched, %d bytes copied", e.name, p[1],
              c.slots, c.hits, c.misses, c.prefetches, c.bytes_copied))
            assert.is_true(c.misses > 0 and c.bytes_copied > 0, "nothing was copied into the cache")
            assert.are.equal(0, st.host_compute_bytes, "cached experts were computed on the host")
            local per_block = 0
            for _, b in pairs(c.layers) do per_block = per_block + b.bytes_copied end
            assert.are.equal(c.bytes_copied, per_block, "the blocks' bytes copied do not sum to the total")
            -- the planner sized the cache (lrun.expert_plan) unless the slots were given
            local pe = placement.expert_cache
            if p[2].moe_host == "cache" and not p[2].expert_cache_slots then
              assert.is_not_nil(pe, "the planner did not size the expert cache")
              print("# " .. e.name .. " " .. p[1] .. ": " .. pe.text)
              if pe.slots > 0 then assert.are.equal(pe.slots, c.slots, "the engine's slots are not the planner's") end
            end
          end
          if not p[3] and fast_logits then
            assert.is_true(same(fast_ids, ids), "tokens differ from the resident fast run")
            assert.is_true(same(fast_logits, logits), "logits differ from the resident fast run")
          end
        end)
      end

      -- the default: a decode chunk's host-computed experts in one host pass (engine_cuda_moe_host.c;
      -- LRUN_CUDA_MOE_HOST_PASS=0 goes product by product); the prompt (longer than 8 tokens) goes product by product
      for _, p in ipairs({ PLACEMENTS[2], PLACEMENTS[3] }) do
        it("host experts in one pass per block, " .. p[1] .. ": the same tokens as product by product", function()
          local ids0 = gpu.with_env("LRUN_CUDA_MOE_HOST_PASS", "0", run, path, with(p[2], { device = DEVICE }))
          local ids, logits, _, st = run(path, with(p[2], { device = DEVICE }))
          assert.is_true(rel_diff(cpu_logits, logits) <= gpu.tol(e))
          assert.are.equal(cpu_ids[#PROMPT + 1], ids[#PROMPT + 1], "first greedy token")
          assert.is_true(same(ids0, ids), "decode tokens differ from the product-by-product run")
          if DEVICE ~= "cpu" then assert.is_true(st.host_compute_bytes > 0, "nothing computed on the host") end
        end)
      end

      -- moe_host = "hybrid" (docs/moe.md "Hybrid"): a decode-sized chunk's hits run on the GPU from their slots,
      -- the misses in the host pass, admissions copied in the background. A prompt of 6 tokens is such a chunk,
      -- so the prompt's logits after 32 decode steps come from slots and the host at once.
      it("hybrid (moe_host = hybrid): logits within the fast tolerance with hits and misses mixed; hits, "
        .. "host-computed misses and admissions counted; uniform routing does not thrash", function()
        local short = { unpack(PROMPT, 1, 6) }
        local function logits_of(opts, inspect) return gpu.run(path, opts, short, inspect, 32) end
        local _, cpu_l = logits_of({ device = "cpu" })
        local res_ids, res_l = logits_of({ device = DEVICE })
        local slots = math.max(1, math.floor(e.n_expert * (e.n_layer or 2) / 2))
        local ids, l, st, placement = logits_of({ device = DEVICE, policy = "experts_on_host", moe_host = "hybrid",
          expert_cache_slots = slots }, function(m) return m:stats(), m:placement() end)
        local d, dr = rel_diff(cpu_l, l), rel_diff(res_l, l)
        print(string.format("# %s hybrid: rel diff to the CPU %.2e, to the resident run %.2e", e.name, d, dr))
        assert.is_true(d <= gpu.tol(e), string.format("rel diff to the CPU %.3e above %.0e", d, gpu.tol(e)))
        assert.is_true(dr <= gpu.tol(e), string.format("rel diff to the resident run %.3e above %.0e", dr, gpu.tol(e)))
        assert.are.equal(res_ids[#short + 1], ids[#short + 1], "first greedy token")
        assert.is_true(placement.experts.host_compute_slices > 0, "no expert host-computed")
        if DEVICE == "cpu" then return end -- the CPU computes host experts in place: no cache
        local c = assert(st.expert_cache, "no expert cache in m:stats() although moe_host = hybrid")
        print(string.format("# %s hybrid, %d slots: %d hits, %d host-computed misses, %d admissions, %d bytes copied",
          e.name, c.slots, c.hits, c.host_computed, c.admissions, c.bytes_copied))
        assert.are.equal("hybrid", c.mode)
        if e.n_expert % 8 ~= 0 or e.arch == "gpt-oss" then
          -- outside the device-id kernels (n_expert % 8) or the host pass (gpt-oss): decode copies as "cache" does
          assert.are.equal(0, c.host_computed, "a chunk outside hybrid's reach was computed on the host")
          assert.is_true(c.misses > 0 and c.bytes_copied > 0, "nothing was copied into the cache")
          return
        end
        assert.is_true(c.hits > 0, "no chosen expert ran from a slot")
        assert.is_true(c.host_computed > 0 and st.host_compute_bytes > 0, "no miss was computed on the host")
        assert.is_true(c.admissions > 0 and c.bytes_copied > 0, "no miss was admitted into a slot")
        local copied, host_bytes = 0, 0
        for _, b in pairs(c.layers) do copied, host_bytes = copied + b.bytes_copied, host_bytes + b.host_computed_bytes end
        assert.are.equal(c.bytes_copied, copied, "the blocks' bytes copied do not sum to the total")
        assert.is_true(host_bytes > 0, "no block says what its host-computed misses read")
        assert.are.equal(c.misses, c.host_computed, "a hybrid decode miss that was not computed on the host")
        -- no thrash: past filling the free slots, an admission needs a count over twice the victim's; the copying
        -- cache would copy every miss (admissions = host_computed)
        assert.is_true(c.admissions <= c.slots + c.host_computed / 4,
          string.format("%d admissions for %d slots and %d misses", c.admissions, c.slots, c.host_computed))
      end)

      -- a prefill chunk over a cached or hybrid block (docs/moe.md "Prefill over a cached block"): the experts
      -- decode left in slots run from there, the rest stream (moe_prefill_stream = "on": every other touched
      -- expert). gpu.run decodes 32 steps (filling slots) before it takes the prompt's logits in a fresh 18-token
      -- chunk; both products come from the same kernels in ascending expert order, so the logits are the
      -- resident run's bits.
      for _, how in ipairs({ "cache", "hybrid" }) do
        it("prefill over a " .. how .. " block: experts in slots run from there, the rest streamed; the resident "
          .. "run's logits", function()
          if os.getenv("LRUN_CUDA_MOE_PREFILL_SLOTS") == "0" then
            -- turned off by the environment (docs/moe.md "Prefill over a cached block")
            pending("slot prefill is off (LRUN_CUDA_MOE_PREFILL_SLOTS=0)")
            return
          end
          local function prompt_logits(opts, inspect) return gpu.run(path, opts, nil, inspect, 32) end
          local _, res_l = prompt_logits({ device = DEVICE, moe_prefill_stream = "on" })
          local slots = math.max(1, math.floor(e.n_expert * (e.n_layer or 2) / 2))
          local _, l, st = prompt_logits({ device = DEVICE, policy = "experts_on_host", moe_host = how,
            expert_cache_slots = slots, moe_prefill_stream = "on" }, function(m) return m:stats() end)
          local d = rel_diff(res_l, l)
          print(string.format("# %s prefill over %s (%d slots): rel diff to the resident run %.2e; %d experts "
            .. "from slots (%d bytes), %d streamed", e.name, how, slots, d, st.prefill_slot_experts,
            st.prefill_slot_bytes, st.prefill_stream_experts))
          assert.is_true(d <= gpu.tol(e), string.format("rel diff to the resident run %.3e above %.0e", d, gpu.tol(e)))
          if not gpu.ON_GPU then return end -- the CPU computes host experts in place: no slots, nothing streamed
          assert.is_true(same(res_l, l), "logits differ from the resident run's")
          assert.is_true(st.prefill_slot_experts > 0 and st.prefill_slot_bytes > 0, "no prefill expert ran from a slot")
          local c = assert(st.expert_cache, "no expert cache in m:stats()")
          -- prefill reads slots without using them: no hit or miss beside the decode steps' (and the first
          -- prompt's, which found none in slots, streamed every touched expert)
          assert.is_true(c.hits + c.misses <= (32 + 1) * (e.n_layer or 2) * e.n_expert_used,
            string.format("%d hits and %d misses: more than the decode steps' choices", c.hits, c.misses))
        end)
      end

      it("counts each block's expert selections where the host routes", function()
        local m = assert(lrun.load(path, with(gpu.LOAD, { device = DEVICE })))
        assert(m:logits(PROMPT))
        local ex = assert(m:stats(true).experts, "no experts in the stats")
        assert.are.equal(#PROMPT, ex.tokens)
        for l = 0, m:info().n_layer - 1 do
          local sum = 0
          for _, c in ipairs(ex.layers[l]) do sum = sum + c end
          assert.are.equal(#PROMPT * e.n_expert_used, sum)
        end
        m:free()
      end)

      it("counts decode steps' selections too (device-routed where the shape allows)", function()
        local m = assert(lrun.load(path, with(gpu.LOAD, { device = DEVICE })))
        assert(m:generate(PROMPT, { max_new_tokens = N_NEW, do_sample = false, eos_token_id = {} }))
        local ex = assert(m:stats(true).experts, "no experts in the stats")
        assert.is_true(ex.tokens >= #PROMPT + N_NEW - 1,
          string.format("%d tokens counted after a prompt of %d and %d new", ex.tokens, #PROMPT, N_NEW))
        for l = 0, m:info().n_layer - 1 do
          local sum = 0
          for _, c in ipairs(ex.layers[l]) do sum = sum + c end
          assert.are.equal(ex.tokens * e.n_expert_used, sum, "block " .. l .. "'s selections")
        end
        m:free()
      end)

      if DEVICE ~= "cpu" then
        it("routes decode on the device as the host does (LRUN_CUDA_MOE_DEVICE_ROUTE=0 for the host)", function()
          local dev_ids, dev_logits = run(path, { device = DEVICE })
          local host_ids, host_logits = gpu.with_env("LRUN_CUDA_MOE_DEVICE_ROUTE", "0", run, path, { device = DEVICE })
          assert.is_true(same(host_ids, dev_ids), "greedy tokens differ between device and host routing")
          local d = rel_diff(host_logits, dev_logits)
          print(string.format("# %s: device vs host routing, rel diff of the prompt's logits %.2e", e.name, d))
          assert.is_true(d <= gpu.tol(e), string.format("rel diff %.3e above %.0e", d, gpu.tol(e)))
        end)

        it("prefetches the next cached block's likely experts without changing a bit", function()
          local opts = { device = DEVICE, policy = "experts_on_host", expert_cache_slots = 2 * e.n_expert_used + 2 }
          local ids, logits, _, st = run(path, opts)
          local ids0, logits0, _, st0 = gpu.with_env("LRUN_CUDA_MOE_PREFETCH", "0", run, path, opts)
          local c, c0 = assert(st.expert_cache, "no expert cache"), assert(st0.expert_cache, "no expert cache")
          print(string.format("# %s: %d slots; prefetch on: %d hits, %d misses, %d prefetched; off: %d hits, %d misses",
            e.name, c.slots, c.hits, c.misses, c.prefetches, c0.hits, c0.misses))
          assert.are.equal(0, c0.prefetches, "LRUN_CUDA_MOE_PREFETCH=0 still prefetched")
          assert.is_true(same(ids0, ids), "greedy tokens differ with prefetch on and off")
          assert.is_true(same(logits0, logits), "logits differ with prefetch on and off")
        end)

        it("replays decode steps from CUDA graphs with a static cache when every expert is resident", function()
          local function greedy(cache)
            local m = assert(lrun.load(path, with(gpu.LOAD, { device = DEVICE, cache_implementation = cache })))
            local _, ids = assert(m:generate(PROMPT, { max_new_tokens = N_NEW, do_sample = false, eos_token_id = {} }))
            local st = m:stats()
            m:free()
            return ids, st
          end
          local dyn = greedy(nil)
          local ids, st = greedy("static")
          assert.is_true(same(dyn, ids), "a static cache's greedy tokens differ from a dynamic one's")
          if e.n_expert % 8 == 0 then
            assert.is_true(st.graphs_enabled, "graphs are off although every expert is device-routed")
            assert.is_true(st.graph_launches + st.graph_captures > 0, "no decode step ran from a graph")
          else
            print("# " .. e.name .. ": n_expert not a multiple of 8, routed on the host, no graphs")
          end
        end)

        -- lrun.expert_choice: smart (auto-fit) chooses compute or cache for host experts itself
        it("smart under a budget chooses the expert cache from skewed counts; the engine takes its slots", function()
          local m = assert(lrun.load(path, { device = DEVICE, progress = false, n_ctx = 256, threads = 2,
            gpu_budget = "1G" }))
          local counts = {}
          for l = 0, m:info().n_layer - 1 do
            counts[l] = {}
            for x = 1, e.n_expert do counts[l][x] = math.floor(1000 / x) end
          end
          -- block 0's experts host-computed (-ot), the rest resident: smart chooses for block 0
          local r = assert(m:place({ policy = "smart", overrides = { "blk%.0%.ffn_%a+_exps=cpu" },
            expert_counts = counts }))
          local c = assert(r.expert_choice, "smart made no choice for the host experts")
          print("# " .. e.name .. ": " .. c.text)
          print("# " .. e.name .. ": " .. tostring(r.predicted and require("lrun.predict").text(r.predicted)))
          -- 1 GiB holds every host expert: all hits beat the host's product (and no trade can do better); the
          -- hybrid (weighed by default) ties with it at a hit rate of 1, and a tie keeps the copying cache
          assert.are.equal("cache", c.how)
          -- each option's prefill weighed, from the engine's measured rates (docs/moe.md "Weighing prefill")
          assert.is_number(c.prefill_s, "the options' prefill was not weighed")
          assert.truthy(c.text:find("weighed on a 512-token prompt and 128 generated tokens", 1, true), c.text)
          -- the prediction is of one chunk of the plan's step (2048 here, below)
          assert.truthy(r.explain:find(("predicted: prefill %d tok:"):format(r.n_batch), 1, true), r.explain)
          local pe = assert(r.expert_cache, "no cache sized for the choice")
          assert.is_true(pe.slots > 0)
          assert.are.same({}, c.trade)
          assert.is_true(r.predicted.cache_s ~= nil)
          -- host experts stream in prefill: chunks of 2048 tokens (lrun.prefill_batch), said in the explanation
          assert.are.equal(2048, r.n_batch)
          assert.are.equal(2048, m:placement().n_batch)
          assert.matches("prefill: chunks of up to 2048 tokens", r.explain, 1, true)
          local _, ids = assert(m:generate(PROMPT, { max_new_tokens = N_NEW, do_sample = false, eos_token_id = {} }))
          local logits = assert(m:logits(PROMPT))
          local st = m:stats()
          m:free()
          local ec = assert(st.expert_cache, "the engine made no expert cache")
          assert.are.equal(pe.slots, ec.slots, "the engine's slots are not the planner's")
          assert.is_true(ec.misses > 0, "nothing was copied into the cache")
          local d = rel_diff(cpu_logits, logits)
          print(string.format("# %s smart-cached: rel diff to the CPU %.2e; %d hits, %d misses", e.name, d, ec.hits,
            ec.misses))
          assert.is_true(d <= gpu.tol(e), string.format("rel diff %.3e above %.0e", d, gpu.tol(e)))
          assert.are.equal(cpu_ids[#PROMPT + 1], ids[#PROMPT + 1], "first greedy token")
        end)

        it("smart keeps host compute when moe_host = compute is asked, and the engine has no cache", function()
          local m = assert(lrun.load(path, { device = DEVICE, progress = false, n_ctx = 256, threads = 2,
            gpu_budget = "1G", moe_host = "compute" }))
          local r = assert(m:place({ policy = "smart", overrides = { "blk%.0%.ffn_%a+_exps=cpu" } }))
          assert.is_nil(r.expert_choice)
          assert.is_nil(r.expert_cache)
          assert(m:logits(PROMPT))
          assert.is_nil(m:stats().expert_cache)
          m:free()
        end)

        -- quantized experts take the exact path (tests/moe_exact_gpu_spec.lua); float ones are refused,
        -- and gpt-oss's (no exact variant of its ops) by the architecture's name
        if e.dtype == "f32" or e.no_cuda_exact then
          local want = e.no_cuda_exact and e.arch or "Q4_0/Q4_1/Q8_0"
          it("exact numerics are refused, naming " .. want, function()
            local ok, err = pcall(run, path, { device = DEVICE, numerics = "exact" })
            assert.is_false(ok)
            local msg = tostring(type(err) == "table" and err.message or err)
            assert.truthy(msg:find(want, 1, true), msg)
          end)
        end
      end
    end)
  end
end)
