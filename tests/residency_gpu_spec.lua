-- residency_gpu_spec: placements on the CUDA engine through lrun.load's
-- placement options (lua/lrun/residency.lua planning, applied to an
-- AS_PLACED engine: runtime/cuda/engine_cuda_offload.c streaming, host compute,
-- gathered embedding rows). Every built-in policy and several custom ones
-- (policy files, -ot overrides, host-compute marks, k = 1, 2) on random
-- bf16 and q8_0 models and, with LRUN_MODEL, on the default model:
--
--   * streamed placements give tokens and logits bit-identical to the fully
--     resident CUDA run: the streamed weights are views of the same bytes in
--     a slot, so every kernel and GEMV shape is the resident one;
--   * placements with host-computed matrices run those matmuls with the
--     CPU's arithmetic (f32 activations for bf16, 8-bit quantized
--     activations for q8_0 / q4_1, as llama.cpp does), so their logits are
--     compared within the tolerance test_stream_gpu measured on the H100
--     (max |diff| / max |logit|: bf16 3.5e-3, q8_0 9.0e-3 with 15 host
--     matmuls; asserted at 1e-2 and 5e-2), and greedy tokens are printed;
--   * with numerics = "exact", every placement, host compute included, is
--     bit-identical to the resident exact run and to the CPU engine;
--   * the engine takes what lrun_engine_size_placement sized for every
--     placement and cache kind (init bytes, slots, scratch, the cache's
--     peak at n_ctx_max), plans fit at the first attempt, the engine's
--     slots and scratch equal what the plan reserved for them, device use
--     stays under gpu_budget, and a
--     budget that cannot be met fails at load, before any generation,
--     saying how much is missing;
--   * m:stats() reports the CUDA engine's streaming.
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; `make test` runs it
-- too, where every case is pending without a GPU.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same, rel_diff = compare.same, compare.rel_diff
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")
local residency = require("lrun.residency")

-- LRUN_GPU_SPEC_DEVICE=cpu runs the same cases on the CPU engine: a dry run
-- of the spec itself on a machine without a GPU.
local DEVICE = os.getenv("LRUN_GPU_SPEC_DEVICE") or "cuda:0"
local has_gpu = DEVICE == "cpu" or C.lrun_cuda_device_count() > 0
local default_k = C.lrun_engine_default_prefetch(DEVICE == "cpu" and C.LRUN_DEVICE_KIND_CPU
  or C.LRUN_DEVICE_KIND_CUDA)
local default_model = os.getenv("LRUN_MODEL")

local tmp_files = {}
local function tmpfile(text)
  local p = os.tmpname() .. ".lua"
  local f = assert(io.open(p, "w")); f:write(text); f:close()
  tmp_files[#tmp_files + 1] = p
  return p
end

-- The shape test_stream_gpu runs on the H100: 4 blocks, width 256, GQA 8/4,
-- FFN 512, vocab 1000; untied unless asked, table in the weights' dtype.
local function gen_model(dtype, tied, seed, n_layer)
  local path = os.tmpname() .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = n_layer or 4, 256, 8, 4, 512
  s.n_vocab, s.n_ctx = 1000, 512
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = dtype, dtype, tied and 1 or 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, seed, 0
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
  tmp_files[#tmp_files + 1] = path
  return path
end

local PROMPT = { 1, 300, 42, 7, 260, 99, 12 }
local N_NEW = 8

local function load(path, opts)
  local o = { device = DEVICE, progress = false, n_ctx = 256 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return lrun.load(path, o)
end

-- Greedy tokens, and the prompt's last-row logits.
local function run(m, prompt)
  prompt = prompt or PROMPT
  local _, ids = assert(m:generate(prompt, { max_new_tokens = N_NEW, do_sample = false, eos_token_id = {} }))
  local logits = assert(m:logits(prompt))
  return ids, logits
end

local function count(t) local n = 0; for _ in pairs(t) do n = n + 1 end; return n end

local function agree(a, b)
  local n = 0
  while a[n + 1] ~= nil and a[n + 1] == b[n + 1] do n = n + 1 end
  return n
end

-- Compares a placed run with the resident one: bit-identical, or within tol
-- when some matmul runs on the host. Returns the number of host-computed tensors.
local function check_against(label, m, ref_ids, ref_logits, tol, prompt)
  local ids, logits = run(m, prompt)
  local n_host = count(m:placement().host_compute)
  if n_host == 0 then
    assert.is_true(same(ref_ids, ids), label .. ": tokens differ")
    assert.is_true(same(ref_logits, logits), label .. ": logits differ")
  else
    local d = rel_diff(ref_logits, logits)
    print(string.format("# %s: %d host-computed tensors, logits rel diff %.2e (tolerance %.0e), greedy agrees "
      .. "on %d of %d", label, n_host, d, tol, agree(ref_ids, ids), #ref_ids))
    assert.is_true(d <= tol, string.format("%s: rel diff %.3e above %.0e", label, d, tol))
    assert.are.equal(#ref_ids, #ids)
  end
  return n_host
end

teardown(function() for _, p in ipairs(tmp_files) do os.remove(p) end end)

describe("placements on cuda", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  local P = require("policies.predicates")
  local OffloadPolicy = require("policies.offload_policy")
  local keep_attention = os.getenv("PWD") .. "/examples/keep_attention.lua"
  local configs = {
    { "conservative", { policy = "conservative" } },
    { "aggressive, 0.5 MiB off", { policy = "aggressive", cpu_offload_gb = 0.5 / 1024 } },
    { "aggressive, everything off, k = 1", { policy = "aggressive", cpu_offload_gb = 1, prefetch_layers = 1 } },
    { "aggressive, everything off, k = 2", { policy = "aggressive", cpu_offload_gb = 1, prefetch_layers = 2 } },
    { "layers, 2 on the device (default k)", { policy = "layers", n_gpu_layers = 2 } },
    { "layers, none on the device, k = 2", { policy = "layers", n_gpu_layers = 0, prefetch_layers = 2 } },
    { "smart, 1 MiB off (measured bandwidths)", { smart_offload = true, cpu_offload_gb = 1 / 1024 } },
    { "smart, everything off", { policy = "smart", cpu_offload_gb = 1 } },
    { "OffloadPolicy: embedding table and norms",
      { policy = OffloadPolicy{ predicates = { P.is_embedding_table, P.is_norm_vector } } } },
    { "OffloadPolicy: layers 1-2 in mmap (staged), k = 2",
      { policy = OffloadPolicy{ predicates = { P.layer_range(1, 2) }, tier = "mmap" }, prefetch_layers = 2 } },
    { "OffloadPolicy: MLPs in pinned memory, k = 1",
      { policy = OffloadPolicy{ predicates = { P.is_mlp }, tier = "pinned" }, prefetch_layers = 1 } },
    { "policy file: attention and the head in host memory",
      { policy = "@attn_head" } },
    { "policy file with host compute (examples/keep_attention.lua)", { policy = keep_attention } },
    -- output.weight exists only in untied models
    { "-ot overrides after the policy",
      { policy = "conservative", overrides = { "blk%.[13]%.attn=host", { "output%.weight", "mmap" } } }, "untied" },
    { "-ot host compute next to streaming",
      { policy = "layers", n_gpu_layers = 2, overrides = { "blk%.3%.ffn_down=cpu", "output%.weight=cpu" } },
      "untied" },
    { "-ot streaming next to host compute, k = 2",
      { policy = "layers", n_gpu_layers = 1, prefetch_layers = 2, overrides = { "blk%.2%.ffn_up=cpu" } } },
    { "-ot host-computed table (only its rows cross)",
      { policy = "layers", n_gpu_layers = 4, overrides = { "token_embd=cpu" } } },
  }
  local function resolve(opts)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if o.policy == "@attn_head" then
      o.policy = tmpfile("return OffloadPolicy{predicates = {is_attention, is_lm_head}, tier = 'host'}\n")
    end
    return o
  end

  local variants = {
    { "bf16", C.LRUN_DTYPE_BF16, false, 1e-2 },
    { "q8_0", C.LRUN_DTYPE_Q8_0, false, 5e-2 },
    { "bf16 tied", C.LRUN_DTYPE_BF16, true, 1e-2 },
  }
  for vi, v in ipairs(variants) do
    describe(v[1] .. " model:", function()
      local path, ref_ids, ref_logits
      setup(function() path = gen_model(v[2], v[3], 500 + vi) end)
      it("resident run", function()
        local m = assert(load(path))
        ref_ids, ref_logits = run(m)
        assert.are.equal(N_NEW, #ref_ids)
        m:free()
      end)
      for _, c in ipairs(configs) do
        if c[3] == "untied" and v[3] then goto next end
        it(c[1], function()
          local m = assert(load(path, resolve(c[2])))
          local r = assert(m.residency, "a placement was applied")
          check_against(v[1] .. " " .. c[1], m, ref_ids, ref_logits, v[4])
          local s = assert(m:stats())
          -- the slots the engine took are the ones the plan reserved
          assert.are.equal(r.slot_bytes, s.slot_bytes)
          assert.are.equal(m:placement().bytes.device, s.weight_device_bytes)
          if r.slot_bytes > 0 then
            assert.is_true(s.bytes_streamed > 0 and s.prefetch_hits + s.prefetch_misses > 0)
          end
          m:free()
        end)
        ::next::
      end
    end)
  end
end)

-- numerics = "exact" (runtime/cuda/engine_cuda_exact.c) with placed weights:
-- streamed matrices are the same bytes in a slot, and host-computed ones run
-- the CPU engine's own matmul on the f32 input the GPU would have quantized,
-- so every placement, host compute included, is bit-identical to the
-- resident exact run and to the CPU engine (no tolerance).
describe("placements on cuda with numerics = \"exact\"", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  local keep_attention = os.getenv("PWD") .. "/examples/keep_attention.lua"
  local configs = {
    { "aggressive, everything off, k = 1", { policy = "aggressive", cpu_offload_gb = 1, prefetch_layers = 1 } },
    { "smart, everything off", { policy = "smart", cpu_offload_gb = 1 } },
    { "smart, 1 MiB off (measured bandwidths)", { smart_offload = true, cpu_offload_gb = 1 / 1024 } },
    { "policy file with host compute (examples/keep_attention.lua)", { policy = keep_attention } },
    { "-ot host compute next to streaming",
      { policy = "layers", n_gpu_layers = 2, overrides = { "blk%.3%.ffn_down=cpu", "output%.weight=cpu" } } },
    { "-ot host-computed table and Q projection",
      { policy = "layers", n_gpu_layers = 4, overrides = { "token_embd=cpu", "blk%.1%.attn_q=cpu" } } },
  }
  for vi, v in ipairs({ { "q8_0", C.LRUN_DTYPE_Q8_0 }, { "q4_1", C.LRUN_DTYPE_Q4_1 } }) do
    describe(v[1] .. " model:", function()
      local path, ref_ids, ref_logits, n_host = nil, nil, nil, 0
      setup(function() path = gen_model(v[2], false, 900 + vi) end)
      it("resident exact run, bit-identical to the CPU engine", function()
        local m = assert(load(path, { numerics = "exact" }))
        ref_ids, ref_logits = run(m)
        m:free()
        local c = assert(lrun.load(path, { device = "cpu", progress = false, n_ctx = 256, numerics = "exact" }))
        local ids, logits = run(c)
        c:free()
        assert.is_true(same(ref_ids, ids), "tokens differ from the CPU engine's")
        assert.is_true(same(ref_logits, logits), "logits differ from the CPU engine's")
      end)
      for _, c in ipairs(configs) do
        it(c[1] .. ": bit-identical to the resident exact run", function()
          local o = { numerics = "exact" }
          for k, x in pairs(c[2]) do o[k] = x end
          local m = assert(load(path, o))
          assert(m.residency, "a placement was applied")
          local ids, logits = run(m)
          local host = count(m:placement().host_compute)
          n_host = n_host + host
          print(string.format("# exact %s %s: %d host-computed tensors", v[1], c[1], host))
          assert.is_true(same(ref_ids, ids), c[1] .. ": tokens differ")
          assert.is_true(same(ref_logits, logits), c[1] .. ": logits differ")
          m:free()
        end)
      end
      it("some of those placements computed matrices on the host", function()
        assert.is_true(n_host > 0)
      end)
      it("the plan reserves exactly the exact engine's scratch, static KV cache and slots", function()
        local m = assert(load(path, { numerics = "exact", policy = "layers", n_gpu_layers = 1,
          cache_implementation = "static" }))
        assert(m:logits(PROMPT))
        local s = m:stats()
        assert.are.equal(m.residency.reserve_bytes, s.scratch_bytes + s.kv_bytes)
        assert.are.equal(m.residency.slot_bytes, s.slot_bytes)
        m:free()
      end)
    end)
  end
end)

describe("m:stats() on cuda", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  local path
  setup(function() path = gen_model(C.LRUN_DTYPE_Q8_0, false, 4242) end)
  it("counts the streamed bytes of a chunk, gathered rows, host-compute bytes, hits and misses", function()
    local m = assert(load(path, { policy = "layers", n_gpu_layers = 2, prefetch_layers = 1,
      overrides = { "blk%.3%.ffn_down=cpu" } }))
    local p = m:placement()
    local streamed, host, row = require("tests.placed_bytes").of(m)
    assert.is_truthy(row) -- the layers policy keeps the table off the device
    assert(m:logits(PROMPT))
    local s = assert(m:stats(true))
    assert.are.equal(1, s.steps)
    assert.are.equal(streamed + #PROMPT * row, s.bytes_streamed)
    assert.are.equal(host, s.host_compute_bytes)
    -- blocks 2 and 3 and the head stream: three units a chunk
    assert.are.equal(3, s.prefetch_hits + s.prefetch_misses)
    assert.is_true(s.slot_bytes > 0 and s.copy_seconds > 0 and s.stall_seconds >= 0)
    assert.are.equal(p.bytes.device, s.weight_device_bytes)
    assert.is_true(s.scratch_bytes > 0 and s.kv_bytes > 0)
    local text = tostring(s)
    assert.is_truthy(text:find("prefetch", 1, true) and text:find("slots", 1, true), text)
    assert.are.equal(0, m:stats().bytes_streamed) -- reset by stats(true)
    m:free()
  end)
end)

describe("placement sized in C on cuda (lrun_engine_size_placement)", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  -- past the CUDA cache's first capacity (256), so a growing cache grows once, copying
  local N_CTX = 320
  local fixture = require("tests.placement_size_fixture")
  local tiny, tiny_tied
  setup(function()
    tiny = gen_model(C.LRUN_DTYPE_Q8_0, false, 4243)
    tiny_tied = gen_model(C.LRUN_DTYPE_Q8_0, true, 4244)
  end)

  for _, tied in ipairs({ false, true }) do
    it((tied and "tied" or "untied") .. " model, every placement and cache kind: the engine takes what was sized",
      function()
        local m = assert(load(tied and tiny_tied or tiny, { gpu_budget = "512M" }))
        fixture.sweep(m, { n_ctx = N_CTX, vocab = 1000, off_tier = "pinned", stream_tier = "host", check = function(c)
          if not c.after_init then
            -- the budget counts bytes asked for; the pool's slack is room for holes, not bytes taken
            local size = c.size
            local peak = tonumber(C.lrun_device_peak(c.dev)) - c.before
            local predicted = tonumber(size.init_bytes) - tonumber(size.kv_init_bytes) + tonumber(size.kv_max_bytes)
            assert.are.equal(predicted, peak, c.what)
          end
        end })
        m:free()
      end)
  end

  it("budgets: the plan fits at the first attempt (the retry is a safety net)", function()
    local m = assert(load(tiny))
    local total = m:info().weight_bytes
    local probe = assert(residency.plan(m, { policy = "aggressive", cpu_offload_gb = 1, n_ctx = 256 }))
    m:free()
    for _, c in ipairs({ { "aggressive", 0.3 }, { "layers", 0.6, 2 }, { "smart", 0.5 } }) do
      local budget = probe.reserve_bytes + probe.slot_bytes + probe.extra_bytes + math.floor(total * c[2])
      m = assert(load(tiny, { gpu_budget = budget, policy = c[1], n_gpu_layers = c[3], prefetch_layers = 1 }))
      print(string.format("# %s under %d bytes: %d attempt(s)", c[1], budget, m.residency.attempts))
      assert.are.equal(1, m.residency.attempts, c[1])
      assert(m:logits(PROMPT))
      assert.is_true(tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle))) <= budget, c[1])
      m:free()
    end
  end)
end)

describe("budgets on cuda", function()
  if not has_gpu then
    pending("no GPU visible")
    return
  end
  -- 16 blocks, so that k+1 slots are a small part of the weights and a
  -- budget between "all resident" and "all streamed" exists for every policy
  local path, ref_ids, ref_logits, total
  setup(function() path = gen_model(C.LRUN_DTYPE_BF16, false, 777, 16) end)

  it("resident run", function()
    local m = assert(load(path))
    ref_ids, ref_logits = run(m)
    total = m:info().weight_bytes
    m:free()
  end)

  it("the plan reserves exactly the engine's scratch and static KV cache (lrun_engine_estimate)", function()
    local m = assert(load(path, { policy = "layers", n_gpu_layers = 1, cache_implementation = "static" }))
    assert(m:logits(PROMPT))
    local s = m:stats()
    assert.are.equal(m.residency.reserve_bytes, s.scratch_bytes + s.kv_bytes)
    assert.are.equal(m.residency.slot_bytes, s.slot_bytes)
    assert.are.equal(default_k, m.residency.prefetch) -- prefetch_layers 0: the device's default (cuda: 1)
    m:free()
  end)

  -- A budget with room for half the weights next to the engine's reserve
  -- and the most the plan can add: aggressive without a cap streams every
  -- block and the head, so its slots (and pool slack) bound any plan's.
  local function budget_for(m, k, share)
    -- measured now, on an unbudgeted device, and cached: smart's plan under
    -- the budget then takes no measurement buffers from it
    assert(residency.bandwidths(m))
    local probe = assert(residency.plan(m, { policy = "aggressive", n_ctx = 256, prefetch_layers = k }))
    return probe.reserve_bytes + probe.slot_bytes + probe.extra_bytes + math.floor(total * share)
  end

  for _, c in ipairs({ { "aggressive", 1 }, { "layers", 2 }, { "smart", 0 } }) do
    it(string.format("%s under a budget with room for half the weights: fits, device use stays under it", c[1]),
      function()
        local m = assert(load(path))
        local budget = budget_for(m, c[2], 0.5)
        m:free()
        m = assert(load(path, { gpu_budget = budget, policy = c[1], prefetch_layers = c[2] }))
        check_against(c[1] .. " budget", m, ref_ids, ref_logits, 1e-2)
        local dev = C.lrun_model_device(m.handle)
        assert.is_true(tonumber(C.lrun_device_peak(dev)) <= budget)
        assert.is_true(m:placement().bytes.device < total)
        assert.is_truthy(tostring(m:stats()):find("streamed", 1, true))
        m:free()
      end)
  end

  it("a budget that cannot be met fails at load, before generation, saying how much is missing", function()
    local m = assert(load(path))
    local probe = assert(residency.plan(m, { policy = "conservative", n_ctx = 256 }))
    m:free()
    local m2, err = load(path, { policy = "conservative", gpu_budget = probe.reserve_bytes + 4096 })
    assert.is_nil(m2)
    assert.are.equal("oom", err.kind)
    assert.is_truthy(err.message:find("conservative", 1, true), err.message)
    assert.is_truthy(err.message:find("missing", 1, true), err.message)
  end)

  it("a budget below the engine's KV cache and scratch fails the same way", function()
    local m, err = load(path, { policy = "aggressive", gpu_budget = "1M" })
    assert.is_nil(m)
    assert.are.equal("oom", err.kind)
    assert.is_truthy(err.message:find("missing", 1, true), err.message)
  end)
end)

describe("the default model on cuda", function()
  if not has_gpu or not default_model then
    pending(not has_gpu and "no GPU visible" or "LRUN_MODEL is not set")
    return
  end
  local ref_ids, ref_logits, total
  it("resident run", function()
    local m = assert(load(default_model))
    ref_ids, ref_logits = run(m)
    total = m:info().weight_bytes
    m:free()
  end)
  local configs = {
    { "conservative", { policy = "conservative" } },
    { "aggressive, 30 MiB off", { policy = "aggressive", cpu_offload_gb = 30 / 1024 } },
    { "layers 10, k = 1", { policy = "layers", n_gpu_layers = 10, prefetch_layers = 1 } },
    { "layers 0, k = 2", { policy = "layers", n_gpu_layers = 0, prefetch_layers = 2 } },
    { "smart with cpu_offload_gb 0.02", { smart_offload = true, cpu_offload_gb = 0.02 } },
    { "-ot: one host-computed down projection", { policy = "layers", n_gpu_layers = 20,
      overrides = { "blk%.29%.ffn_down=cpu" } } },
  }
  for _, c in ipairs(configs) do
    -- q4_1 host compute quantizes activations to 8 bits on the CPU: the q8_0 tolerance
    it(c[1], function()
      local m = assert(load(default_model, c[2]))
      check_against("default model " .. c[1], m, ref_ids, ref_logits, 5e-2)
      assert.are.equal(m.residency.slot_bytes, m:stats().slot_bytes)
      m:free()
    end)
  end
  it("under a budget with room for 70% of its weights", function()
    local m = assert(load(default_model))
    local probe = assert(residency.plan(m, { policy = "aggressive", n_ctx = 256 }))
    m:free()
    local budget = probe.reserve_bytes + probe.slot_bytes + probe.extra_bytes + math.floor(total * 0.7)
    m = assert(load(default_model, { policy = "aggressive", gpu_budget = budget }))
    check_against("default model budget", m, ref_ids, ref_logits, 5e-2)
    assert.is_true(tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle))) <= budget)
    m:free()
  end)
end)
