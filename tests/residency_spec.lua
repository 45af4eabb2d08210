-- residency_spec: placements applied to a model (lua/lrun/residency.lua,
-- lrun.load's placement options, runtime/residency/weight_ring.c through the CPU
-- engine): every built-in policy and several custom ones give tokens and
-- logits bit-identical to the fully resident run, on a tiny random model
-- and on the default model; budgets that cannot be met, broken policy
-- files, unknown tensors; the engine's streaming statistics; the REPL and
-- the command line.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same = compare.same
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")
local residency = require("lrun.residency")
local default_model = os.getenv("LRUN_MODEL")

local root = os.getenv("PWD")
local tmp_files = {}
local function tmpfile(text)
  local p = os.tmpname() .. ".lua"
  local f = assert(io.open(p, "w")); f:write(text); f:close()
  tmp_files[#tmp_files + 1] = p
  return p
end

-- 4 blocks, untied q8_0 weights and an f16 embedding table (so the LM head
-- and the table are distinct tensors); tied when asked.
local function gen_model(tied)
  local path = os.tmpname() .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 4, 64, 4, 2, 128
  s.n_vocab, s.n_ctx = 512, 256
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_F16, tied and 1 or 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 99, 1
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
  tmp_files[#tmp_files + 1] = path
  return path
end

local PROMPT = { 1, 300, 42, 7, 260, 99, 12 }

-- Greedy tokens and the logits of every step, as one flat list of numbers.
local function run(m, n)
  local _, ids = assert(m:generate(PROMPT, { max_new_tokens = n or 6 }))
  local logits = assert(m:logits(PROMPT))
  return ids, logits
end

local function load(path, opts)
  opts = opts or {}
  opts.progress = false
  opts.threads = opts.threads or 2
  return lrun.load(path, opts)
end

local function count(t) local n = 0; for _ in pairs(t) do n = n + 1 end; return n end

local tiny, tiny_tied
setup(function()
  tiny = gen_model(false)
  tiny_tied = gen_model(true)
end)
teardown(function() for _, p in ipairs(tmp_files) do os.remove(p) end end)

describe("placements are bit-identical to the resident run", function()
  local P = require("policies.predicates")
  local OffloadPolicy = require("policies.offload_policy")
  local configs = {
    { "conservative", { policy = "conservative" } },
    { "aggressive, 0.05 MiB off", { policy = "aggressive", cpu_offload_gb = 0.05 / 1024 } },
    { "aggressive, everything off, k = 1", { policy = "aggressive", cpu_offload_gb = 1, prefetch_layers = 1 } },
    { "layers, 2 on the device", { policy = "layers", n_gpu_layers = 2 } },
    { "layers, none on the device, k = 4", { policy = "layers", n_gpu_layers = 0, prefetch_layers = 4 } },
    { "smart, 0.1 MiB off", { smart_offload = true, cpu_offload_gb = 0.1 / 1024 } },
    { "predicates: embedding table and norms",
      { policy = OffloadPolicy{ predicates = { P.is_embedding_table, P.is_norm_vector } } } },
    { "layer range 1-2 in mmap, k = 2",
      { policy = OffloadPolicy{ predicates = { P.layer_range(1, 2) }, tier = "mmap" }, prefetch_layers = 2 } },
    { "name pattern ffn_ in pinned", { policy = OffloadPolicy{ predicates = { P.name_matches("ffn_") }, tier = "pinned" } } },
    { "-ot overrides after the policy",
      { policy = "conservative", overrides = { "blk%.[13]%.attn=host", { "output%.weight", "mmap" } } } },
    { "host compute (-ot =cpu) next to streaming",
      { policy = "layers", n_gpu_layers = 2, overrides = { "ffn_down=cpu", "token_embd=cpu" } } },
  }

  for _, variant in ipairs({ { "untied", function() return tiny end }, { "tied", function() return tiny_tied end } }) do
    describe(variant[1] .. " tiny model:", function()
      local ref_ids, ref_logits
      it("resident run", function()
        local m = assert(load(variant[2]()))
        ref_ids, ref_logits = run(m)
        assert.are.equal(6, #ref_ids)
        m:free()
      end)
      for _, c in ipairs(configs) do
        it(c[1], function()
          local m = assert(load(variant[2](), c[2]))
          local p = m:placement()
          assert.is_truthy(p.bytes.device + p.bytes.pinned + p.bytes.host + p.bytes.mmap > 0)
          local ids, logits = run(m)
          assert.is_true(same(ref_ids, ids), "tokens differ")
          assert.is_true(same(ref_logits, logits), "logits differ")
          m:free()
        end)
      end
    end)
  end

  it("a gpu_budget is met by offloading; device use stays under it", function()
    local m = assert(load(tiny))
    local ref_ids, ref_logits = run(m)
    local total = m:info().weight_bytes
    local probe = assert(residency.plan(m, { policy = "aggressive", threads = 2 }))
    m:free()
    local budget = probe.reserve_bytes + math.floor(total * 0.75)
    m = assert(load(tiny, { gpu_budget = budget, policy = "aggressive", prefetch_layers = 1 }))
    assert.are.equal(1, m.residency.attempts) -- sized by the engine's own layout: no retry
    local ids, logits = run(m)
    assert.is_true(same(ref_ids, ids) and same(ref_logits, logits))
    local dev = C.lrun_model_device(m.handle)
    assert.is_true(tonumber(C.lrun_device_peak(dev)) <= budget)
    assert.is_true(m:placement().bytes.device < total)
    assert.is_true(m:stats().slot_bytes > 0) -- blocks stream
    m:free()
  end)
end)

describe("the default model", function()
  local configs = {
    { "smart with cpu_offload_gb 0.03", { smart_offload = true, cpu_offload_gb = 0.03 } },
    { "aggressive under a 100M budget", { policy = "aggressive", gpu_budget = "100M" } },
    { "layers 10, k = 1", { policy = "layers", n_gpu_layers = 10, prefetch_layers = 1 } },
    { "conservative with host-compute MLPs", { policy = "conservative", overrides = { "ffn_=cpu" } } },
  }
  local ref_ids, ref_logits
  it("resident run", function()
    if not default_model then pending("LRUN_MODEL is not set") return end
    local m = assert(load(default_model))
    ref_ids, ref_logits = run(m, 4)
    m:free()
  end)
  for _, c in ipairs(configs) do
    it(c[1] .. ": bit-identical", function()
      if not default_model then pending("LRUN_MODEL is not set") return end
      local m = assert(load(default_model, c[2]))
      local ids, logits = run(m, 4)
      assert.is_true(same(ref_ids, ids), "tokens differ")
      assert.is_true(same(ref_logits, logits), "logits differ")
      m:free()
    end)
  end
end)

describe("streaming statistics", function()
  it("count the streamed bytes of every chunk, gathered rows, hits and misses", function()
    local m = assert(load(tiny, { policy = "layers", n_gpu_layers = 2, prefetch_layers = 1,
      overrides = { "blk%.3%.ffn_down=cpu" } }))
    local p = m:placement()
    local streamed, host, row = require("tests.placed_bytes").of(m)
    assert.is_truthy(row) -- the layers policy keeps the table off the device
    assert(m:logits(PROMPT))
    local s = assert(m:stats(true))
    assert.are.equal(1, s.steps)
    assert.are.equal(streamed + #PROMPT * row, s.bytes_streamed)
    assert.are.equal(host, s.host_compute_bytes)
    assert.are.same({ [3] = host }, s.host_compute_layers) -- all of it block 3's ffn_down
    -- blocks 2 and 3 and the head stream: three units a chunk
    assert.are.equal(3, s.prefetch_hits + s.prefetch_misses)
    assert.is_true(s.slot_bytes > 0 and s.copy_seconds >= 0 and s.stall_seconds >= 0)
    assert.are.equal(p.bytes.device, s.weight_device_bytes)
    assert.is_truthy(tostring(s):find("prefetch", 1, true))
    -- one stats record for every backend: the CUDA-only fields are 0 here
    assert.are.equal(1, s.prefetch_layers)
    assert.is_false(s.exact or s.graphs_enabled or s.pdl_enabled)
    assert.are.equal(0, s.graph_captures + s.graph_launches)
    local s2 = m:stats()
    assert.are.equal(0, s2.bytes_streamed) -- reset by stats(true)
    m:free()
  end)
end)

describe("the engine's own sizing (lrun_engine_estimate)", function()
  it("gives the scratch, KV cache and slots the CPU engine then takes", function()
    for _, k in ipairs({ 1, 2, 3 }) do
      local m = assert(load(tiny, { policy = "layers", n_gpu_layers = 1, prefetch_layers = k, n_ctx = 64,
        cache_implementation = "static" }))
      local p = m:placement()
      local r = m.residency
      assert(m:logits(PROMPT))
      local s = m:stats()
      assert.are.equal(r.slot_bytes, s.slot_bytes)
      assert.are.equal(r.reserve_bytes, s.scratch_bytes + s.kv_bytes)
      assert.are.equal(k, r.prefetch)
      assert.are.equal(0, r.extra_bytes) -- no pool and no gathered rows on cpu
      assert.are.equal(p.bytes.device, s.weight_device_bytes)
      m:free()
    end
  end)
  it("prefetch_layers 0 means the device's default, from one place", function()
    assert.are.equal(2, C.lrun_engine_default_prefetch(C.LRUN_DEVICE_KIND_CPU))
    assert.are.equal(1, C.lrun_engine_default_prefetch(C.LRUN_DEVICE_KIND_CUDA))
    local m = assert(load(tiny, { policy = "layers", n_gpu_layers = 0 }))
    assert.are.equal(2, m.residency.prefetch)
    m:free()
  end)
  it("refuses options the engine would refuse", function()
    local m = assert(load(tiny))
    local n, eo = ffi.new("lrun_engine_needs"), ffi.new("lrun_engine_opts")
    eo.prefetch_layers = 65
    assert.are.equal(C.LRUN_E_ARG, C.lrun_engine_estimate(n, m.handle, eo))
    assert.is_truthy(lf.last_error():find("prefetch_layers", 1, true))
    eo.prefetch_layers = 0
    assert.are.equal(C.LRUN_OK, C.lrun_engine_estimate(n, m.handle, eo))
    assert.are.equal(2, n.prefetch_layers)
    assert.is_true(tonumber(n.scratch_bytes) > 0 and tonumber(n.kv_bytes_per_position) > 0)
    m:free()
  end)
  it("measures the threaded host copy that stages streamed weights on cuda", function()
    local m = assert(load(tiny))
    local out = ffi.new("double[1]")
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_host_copy(m.handle, 2 ^ 20, out))
    assert.is_true(out[0] > 0)
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_host_copy(m.handle, 100, out))
    assert.are.equal(0, out[0]) -- refused calls zero the rate
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_host_copy(m.handle, 2 ^ 33, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_host_copy(nil, 2 ^ 20, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_host_copy(m.handle, 2 ^ 20, nil))
    -- beside copies: a cpu device has no copy engine to run them (the GPU spec measures it)
    local dma = ffi.new("double[1]", 7)
    assert.are.equal(C.LRUN_E_UNSUPPORTED, C.lrun_model_measure_host_copy_copying(m.handle, 2 ^ 20, 2 ^ 20, out, dma))
    assert.are.equal(0, out[0])
    assert.are.equal(0, dma[0])
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_host_copy_copying(m.handle, 2 ^ 20, 1024, out, nil))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_host_copy_copying(nil, 2 ^ 20, 2 ^ 20, out, nil))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_host_copy_copying(m.handle, 2 ^ 20, 2 ^ 20, nil, nil))
    m:free()
  end)
  it("measures the CPU's decode matmul for host compute", function()
    local m = assert(load(tiny))
    local out = ffi.new("double[1]")
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_host_matmul(m.handle, C.LRUN_DTYPE_Q8_0, 2 ^ 20, out))
    assert.is_true(out[0] > 0)
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_host_matmul(m.handle, C.LRUN_DTYPE_Q8_K, 2 ^ 20, out))
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_host_matmul(m.handle, C.LRUN_DTYPE_BF16, 100, out))
    local rates = residency.host_matmul_rates(m)
    assert.is_true(rates.q8_0 > 0) -- the tiny model's matrices
    m:free()
  end)
  it("measures the experts' dtype too where no other matrix has it (gpt-oss's MXFP4)", function()
    package.path = "tests/?.lua;" .. package.path
    local arch_models = require("arch_models")
    local entry
    for _, e in ipairs(arch_models.models) do if e.name == "gpt_oss_q8_0" then entry = e end end
    assert.is_not_nil(entry, "tests/arch_models.lua has gpt_oss_q8_0")
    local path = os.tmpname()
    tmp_files[#tmp_files + 1] = path
    arch_models.generate(entry, path)
    local m = assert(load(path))
    local rates = residency.host_matmul_rates(m)
    m:free()
    assert.is_true((rates.q8_0 or 0) > 0, "the attention's q8_0")
    -- without it the planner had no host rate for the experts, and so no
    -- prefill streaming thresholds (lrun.expert_plan.prefill_stream_tokens)
    assert.is_true((rates.mxfp4 or 0) > 0, "the experts' mxfp4")
  end)
end)

describe("placement sized in C (lrun_engine_size_placement)", function()
  local N_CTX = 160
  local fixture = require("tests.placement_size_fixture")
  local engine_opts = function(kind, k, n_seq) return fixture.engine_opts(kind, k, n_seq, N_CTX, nil, 2) end

  for _, tied in ipairs({ false, true }) do
    it((tied and "tied" or "untied") .. " model, every placement and cache kind: the engine takes what was sized",
      function()
        local m = assert(load(tied and tiny_tied or tiny, { gpu_budget = "64M" }))
        fixture.sweep(m, { n_ctx = N_CTX, vocab = 512, threads = 2, off_tier = "host", stream_tier = "mmap",
          all_resident_first = true, check_freed = true, check = function(c)
            local size, s = c.size, c.stats
            if c.after_init then
              assert.are.equal(tonumber(size.weight_bytes), c.before)
              assert.are.equal(tonumber(size.kv_init_bytes), tonumber(s.kv_bytes), c.what)
              assert.are.equal(0, tonumber(size.embd_rows_bytes) + tonumber(size.pool_slack_bytes)) -- cpu
            else
              -- grown to n_ctx_max, the cache peaks where it was sized to
              assert.are.equal(tonumber(size.peak_bytes), tonumber(C.lrun_device_peak(c.dev)), c.what)
            end
          end })
        m:free()
      end)
  end

  it("refuses a tier out of range and options init would refuse", function()
    local m = assert(load(tiny))
    local n = tonumber(C.lrun_model_tensor_count(m.handle))
    local tiers = ffi.new("lrun_tier[?]", n)
    tiers[1] = 7
    local size, eo = ffi.new("lrun_placement_size"), engine_opts("dynamic", 0, 1)
    assert.are.equal(C.LRUN_E_ARG, C.lrun_engine_size_placement(size, m.handle, eo, tiers, nil))
    assert.is_truthy(lf.last_error():find("tiers[1]", 1, true), lf.last_error())
    eo.prefetch_layers = 65
    assert.are.equal(C.LRUN_E_ARG, C.lrun_engine_size_placement(size, m.handle, eo, nil, nil))
    eo.prefetch_layers, eo.cache_kind = 0, 9
    assert.are.equal(C.LRUN_E_ARG, C.lrun_engine_size_placement(size, m.handle, eo, nil, nil))
    eo.cache_kind = C.LRUN_CACHE_KIND_QUANTIZED
    eo.kv_quant_bits = 3
    assert.are.equal(C.LRUN_E_ARG, C.lrun_engine_size_placement(size, m.handle, eo, nil, nil))
    -- NULL arrays: the weights where they are (after a CPU load, in the file mapping: all streamed)
    eo.kv_quant_bits = 0
    assert.are.equal(C.LRUN_OK, C.lrun_engine_size_placement(size, m.handle, eo, nil, nil))
    assert.are.equal(0, tonumber(size.weight_bytes))
    assert.is_true(tonumber(size.slot_bytes) > 0)
    assert(residency.apply(m, { plan = {}, host_compute = {} }))
    assert.are.equal(C.LRUN_OK, C.lrun_engine_size_placement(size, m.handle, eo, nil, nil))
    assert.are.equal(m:info().weight_bytes, tonumber(size.weight_bytes))
    assert.are.equal(0, tonumber(size.slot_bytes))
    m:free()
  end)

  it("Model:place plans with the cache kind the model was loaded with", function()
    -- planned as dynamic, the reserve would be the growth peak of 256 positions (384), not 256
    local m = assert(load(tiny, { cache_implementation = "static", n_ctx = 256 }))
    local r = assert(m:place({ policy = "layers", n_gpu_layers = 1 }))
    assert.are.equal("static", r.cache_implementation)
    assert(m:logits(PROMPT))
    local s = m:stats()
    assert.are.equal(s.scratch_bytes + s.kv_bytes, r.reserve_bytes)
    m:free()
    -- and a quantized cache is planned with its own config, not as dynamic
    m = assert(load(tiny, { cache_implementation = "quantized", cache_config = { residual_length = 32 }, n_ctx = 160 }))
    r = assert(m:place({ policy = "layers", n_gpu_layers = 1 }))
    local q = assert(residency.size(m, nil, nil, { n_ctx = 160, cache_implementation = "quantized",
      cache_config = { residual_length = 32 }, threads = 2 }))
    local d = assert(residency.size(m, nil, nil, { n_ctx = 160, threads = 2 }))
    assert.are.equal(q.kv_max + q.scratch, r.reserve_bytes)
    assert.are_not.equal(d.kv_max, q.kv_max)
    m:free()
  end)

  it("plans with the sequences the load asked for (n_seq), and says so when an engine asks more", function()
    -- a batch of prompts grows every sequence's KV cache at once: the plan's reserve must hold all of them
    local m = assert(load(tiny, { n_ctx = 128, n_seq = 4 }))
    local r = assert(m:place({ policy = "layers", n_gpu_layers = 1 }))
    local s1 = assert(residency.size(m, nil, nil, { n_ctx = 128, threads = 2 }))
    local s4 = assert(residency.size(m, nil, nil, { n_ctx = 128, threads = 2, n_seq = 4 }))
    assert.is_true(s4.kv_max > s1.kv_max)
    assert.are.equal(s4.kv_max + s4.scratch, r.reserve_bytes)
    local log = require("lrun.log")
    local lines, sink = {}, log.sink
    log.sink = function(line) lines[#lines + 1] = line end
    local ok, err = pcall(function()
      assert(m:engine({ n_seq = 4 }))
      assert.are.equal(0, #lines)
      assert(m:engine({ n_seq = 6 }))
    end)
    log.sink = sink
    m:free()
    assert(ok, err)
    assert.are.equal(1, #lines)
    assert.matches("reserved KV cache for 4 sequences, 6 asked", lines[1], 1, true)
    for _, bad in ipairs({ 0, -1, 1.5, 2 ^ 31 }) do
      local okl, errl = pcall(lrun.load, tiny, { device = "cpu", progress = false, n_seq = bad })
      assert.is_false(okl)
      assert.matches("option 'n_seq' must be a whole number >= 1 and <= 2147483647", tostring(errl), 1, true)
    end
  end)

  for _, kind in ipairs({ "dynamic", "static", "offloaded", "quantized" }) do
    it(kind .. " cache under budgets: the first plan fits, and device use stays under the budget", function()
      local m = assert(load(tiny))
      local total = m:info().weight_bytes
      local ref_ids = run(m)
      local o = { n_ctx = 128, cache_implementation = kind, threads = 2 }
      local probe = assert(residency.plan(m, setmetatable({ policy = "aggressive", cpu_offload_gb = 1 },
        { __index = o })))
      m:free()
      for _, c in ipairs({ { "aggressive", 0.3 }, { "layers", 0.6, 2 }, { "smart", 0.5 }, { "conservative", 0.97 } }) do
        local budget = probe.reserve_bytes + probe.slot_bytes + math.floor(total * c[2])
        local opts = { gpu_budget = budget, policy = c[1], n_gpu_layers = c[3], prefetch_layers = 1 }
        for key, v in pairs(o) do opts[key] = v end
        m = assert(load(tiny, opts))
        assert.are.equal(1, m.residency.attempts, c[1])
        assert.is_true(same(ref_ids, (run(m))), c[1])
        assert.is_true(tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle))) <= budget, c[1])
        m:free()
      end
    end)
  end
end)

describe("failures", function()
  it("a budget that cannot be met fails at load, saying how much is missing", function()
    local m = assert(load(tiny))
    local probe = assert(residency.plan(m, { policy = "conservative", threads = 2 }))
    local total = m:info().weight_bytes
    m:free()
    local budget = probe.reserve_bytes + 4096
    local m2, err = load(tiny, { policy = "conservative", gpu_budget = budget })
    assert.is_nil(m2)
    assert.are.equal("oom", err.kind)
    assert.is_truthy(err.message:find("conservative", 1, true))
    -- conservative keeps only the norms off: total - 4096 must leave, norms can
    local need, missing = total - 4096, total - 4096 - probe.off_bytes
    local size = require("lrun.size")
    assert.is_truthy(err.message:find(size.format(need) .. " must leave it: " .. size.format(missing) .. " missing",
      1, true), err.message)
    local m3, err3 = load(tiny, { policy = "aggressive", gpu_budget = 1000 })
    assert.is_nil(m3)
    assert.is_truthy(err3.message:find("below the engine's KV cache and scratch", 1, true))
    assert.is_truthy(err3.message:find("missing", 1, true))
  end)

  it("cpu_offload_gb more than a policy offloads says what is missing", function()
    local m, err = load(tiny, { policy = "conservative", cpu_offload_gb = 1 })
    assert.is_nil(m)
    assert.is_truthy(err.message:find("missing", 1, true))
  end)

  it("a policy file that does not compile names its file and line", function()
    local p = tmpfile("local x = 1\nreturn {plan = function(ts) return {} end\n")
    local m, err = load(tiny, { policy = p })
    assert.is_nil(m)
    assert.is_truthy(err.message:find(p .. ":3:", 1, true), err.message)
  end)

  it("a policy that raises names its file and line", function()
    local p = tmpfile("return {\n  plan = function(ts, b)\n    error('no plan today')\n  end,\n}\n")
    local m, err = load(tiny, { policy = p })
    assert.is_nil(m)
    assert.is_truthy(err.message:find(p .. ":3: no plan today", 1, true), err.message)
  end)

  it("a policy naming an unknown tensor names it, and its file and line", function()
    local p = tmpfile("-- a typo\nreturn {plan = function(ts)\n  return {['blk.0.atn_q.weight'] = 'host'}, 0\nend}\n")
    local m, err = load(tiny, { policy = p })
    assert.is_nil(m)
    assert.is_truthy(err.message:find("unknown tensor 'blk.0.atn_q.weight'", 1, true), err.message)
    assert.is_truthy(err.message:find(p .. ":2", 1, true), err.message)
  end)

  it("a policy file that cannot meet the budget names its file", function()
    local p = tmpfile("return OffloadPolicy{predicates = {is_norm_vector}}\n")
    local m, err = load(tiny, { policy = p, cpu_offload_gb = 1 })
    assert.is_nil(m)
    assert.is_truthy(err.message:find(p, 1, true) and err.message:find("missing", 1, true), err.message)
  end)

  it("an override that matches nothing, or a bad tier, is an error naming it", function()
    local m, err = load(tiny, { policy = "conservative", overrides = { "nosuchtensor=host" } })
    assert.is_nil(m)
    assert.is_truthy(err.message:find("'nosuchtensor=host'", 1, true))
    m, err = load(tiny, { policy = "conservative", overrides = { "ffn=gpu" } })
    assert.is_nil(m)
    assert.is_truthy(err.message:find("tier must be", 1, true))
  end)

  it("an unknown policy name is an error", function()
    local m, err = load(tiny, { policy = "fastest" })
    assert.is_nil(m)
    assert.is_truthy(err.message:find("'fastest'", 1, true))
  end)

  it("a model that failed to place can be loaded again, and re-placed at runtime", function()
    local m = assert(load(tiny, { policy = "conservative" }))
    local ref_ids = run(m)
    assert(m:place({ policy = "layers", n_gpu_layers = 1, prefetch_layers = 2 }))
    local ids = run(m)
    assert.is_true(same(ref_ids, ids))
    assert.are.equal("layers", m:placement().policy)
    local ok, err = m:place({ policy = "nope.lua" })
    assert.is_nil(ok)
    assert.is_truthy(err.message:find("nope.lua", 1, true))
    assert.is_true(same(ref_ids, (run(m)))) -- still works after a failed re-place
    m:free()
  end)
end)

describe("policy files", function()
  it("see the predicates, OffloadPolicy, sizes and built-in policies", function()
    local p = tmpfile([[
local base = OffloadPolicy{predicates = {is_embedding_table, layer_range(3, 3)}, max_bytes = 1 * GiB}
return {name = "mine", plan = function(ts, budget)
  local plan, off = base.plan(ts, budget)
  return plan, off, {host_compute = {["blk.3.ffn_down.weight"] = true}}
end}
]])
    local m = assert(load(tiny, { policy = p }))
    local pl = m:placement()
    assert.are.equal("host", pl.tensors["token_embd.weight"])
    assert.are.equal("host", pl.tensors["blk.3.attn_q.weight"])
    assert.are.equal("device", pl.tensors["blk.2.attn_q.weight"])
    assert.is_true(pl.host_compute["blk.3.ffn_down.weight"])
    assert.are.equal("mine", pl.policy)
    m:free()
  end)

  it("cannot reach io or os", function()
    local p = tmpfile("io.write('x')\nreturn {plan = function() return {} end}\n")
    local m, err = load(tiny, { policy = p })
    assert.is_nil(m)
    assert.is_truthy(err.message:find(p .. ":1:", 1, true))
  end)
end)

describe("smart", function()
  local smart = require("policies.smart")
  local ts = {
    { name = "token_embd.weight", role = "embedding", layer = -1, bytes = 1000000, shape = { 100, 10000 } },
    { name = "output.weight", role = "lm_head", layer = -1, bytes = 1000000, shape = { 100, 10000 } },
    { name = "blk.0.attn_norm.weight", role = "attn_norm", layer = 0, bytes = 400, shape = { 100 } },
    { name = "blk.0.ffn_up.weight", role = "ffn_up", layer = 0, bytes = 500000, shape = { 100, 5000 } },
    { name = "blk.0.ffn_down.weight", role = "ffn_down", layer = 0, bytes = 500000, shape = { 5000, 100 } },
  }
  it("offloads what is cheapest per byte first: norms, the gathered table, then matrices", function()
    local bw = { h2d_pinned = 10e9, h2d_pageable = 5e9, host_read = 40e9, device_read = 1000e9 }
    local plan, off, info = smart.plan(ts, { max_bytes = 1000400, bandwidth = bw })
    assert.are.equal("host", plan["blk.0.attn_norm.weight"])
    assert.are.equal("pinned", plan["token_embd.weight"])
    assert.are.equal("device", plan["output.weight"])
    assert.are.equal(1000400, off)
    assert.is_truthy(info.explain:find("measured", 1, true))
  end)
  it("chooses host compute when host memory is faster than the link, streaming otherwise", function()
    local fast_host = { h2d_pinned = 10e9, host_read = 100e9, device_read = 1000e9 }
    local _, _, info = smart.plan(ts, { bandwidth = fast_host })
    assert.is_true(info.host_compute["blk.0.ffn_up.weight"])
    local slow_host = { h2d_pinned = 50e9, host_read = 20e9, device_read = 1000e9 }
    local plan2, _, info2 = smart.plan(ts, { bandwidth = slow_host })
    assert.is_nil(info2.host_compute["blk.0.ffn_up.weight"])
    assert.are.equal("pinned", plan2["blk.0.ffn_up.weight"])
  end)
  -- the engine's refill order (docs/streaming.md "The pipeline"): smart weighs its two ways of splitting with
  -- lrun.predict_pipeline under the switch the engine reads (LRUN_CUDA_REFILL_QUEUED), set here for the case
  local pipe = require("lrun.predict_pipeline")
  local function with_refill(queued, f)
    local was = pipe.refill_queued
    pipe.refill_queued = function() return queued end
    local ok, err = pcall(f)
    pipe.refill_queued = was
    if not ok then error(err, 0) end
  end
  it("on cuda splits the matrices between copies and host matmuls so the two finish together", function()
   with_refill(true, function()
    local mats = {}
    for l = 0, 3 do
      for _, r in ipairs({ "ffn_up", "ffn_down", "ffn_gate" }) do
        mats[#mats + 1] = { name = string.format("blk.%d.%s.weight", l, r), role = r, layer = l, bytes = 1000000,
          dtype = "bf16", shape = { 1000, 500 } }
      end
    end
    -- copies at 50 GB/s, the CPU's matmul at 25 GB/s: a third of the bytes go to the CPU
    local bw = { h2d_pinned = 50e9, host_read = 60e9, device_read = 2000e9, device = "cuda",
      host_matmul = { bf16 = 25e9 } }
    local plan, off, info = smart.plan(mats, { bandwidth = bw })
    assert.are.equal(12e6, off)
    local host, streamed = 0, 0
    for name, tier in pairs(plan) do
      if info.host_compute[name] then host = host + 1; assert.are.equal("host", tier)
      else streamed = streamed + 1; assert.are.equal("pinned", tier) end
    end
    assert.are.equal(4, host)
    assert.are.equal(8, streamed)
    -- 8 MB / 50 GB/s = 0.16 ms of copies, 4 MB / 25 GB/s = 0.16 ms on the CPU: the token pays one
    assert.is_true(math.abs(info.seconds_per_token - 0.16e-3) < 1e-9, tostring(info.seconds_per_token))
    assert.is_truthy(info.explain:find("overlap", 1, true), info.explain)
    -- a CPU slower than a tenth of the link gets nothing of 12 equal matrices
    bw.host_matmul = { bf16 = 3e9 }
    local _, _, slow = smart.plan(mats, { bandwidth = bw })
    assert.are.equal(0, count(slow.host_compute))
    assert.has_error(function() smart.plan(mats, { bandwidth = { h2d_pinned = 1, host_read = 1, device_read = 1,
      device = "tpu" } }) end)
   end)
  end)
  -- per block a 2 MB ffn_up and a 2 MB attn_q; copies and the CPU both at 50 GB/s
  local function two_per_block()
    local mats = {}
    for l = 0, 3 do
      mats[#mats + 1] = { name = string.format("blk.%d.ffn_up.weight", l), role = "ffn_up", layer = l,
        bytes = 2000000, dtype = "bf16", shape = { 1000, 1000 } }
      mats[#mats + 1] = { name = string.format("blk.%d.attn_q.weight", l), role = "attn_q", layer = l,
        bytes = 2000000, dtype = "bf16", shape = { 1000, 1000 } }
    end
    return mats, { h2d_pinned = 50e9, host_read = 60e9, device_read = 2000e9, device = "cuda",
      host_matmul = { bf16 = 50e9 } }
  end
  it("on cuda splits each block's matrices where slots refill behind a device wait", function()
    -- each block streams one matrix and host-computes the other, 40 µs each side, overlapped block by block
    with_refill(true, function()
      local mats, bw = two_per_block()
      local plan, off, info = smart.plan(mats, { bandwidth = bw })
      assert.are.equal(16e6, off)
      for l = 0, 3 do
        local a = plan[string.format("blk.%d.ffn_up.weight", l)] == "pinned" and 1 or 0
        local b = info.host_compute[string.format("blk.%d.attn_q.weight", l)] and 1 or 0
        local c = info.host_compute[string.format("blk.%d.ffn_up.weight", l)] and 1 or 0
        local d = plan[string.format("blk.%d.attn_q.weight", l)] == "pinned" and 1 or 0
        assert.are.equal(2, math.max(a + b, c + d), "block " .. l .. " split")
      end
      assert.is_true(math.abs(info.seconds_per_token - 4 * 40e-6) < 1e-12, tostring(info.seconds_per_token))
      assert.is_truthy(info.explain:find("each block's matrices split", 1, true), info.explain)
    end)
  end)
  it("on cuda alternates whole blocks where a copy waits for the block before (the default refill)", function()
    -- split, a block's copy would wait for the host products of the block before and the two run in turn
    -- (session 19: 6.57 tok/s for 12.9 predicted); whole blocks alternating overlap a streamed block's copy
    -- with the host-computed block before it
    with_refill(false, function()
      local mats, bw = two_per_block()
      local plan, _, info = smart.plan(mats, { bandwidth = bw })
      for l = 0, 3 do
        local up, q = string.format("blk.%d.ffn_up.weight", l), string.format("blk.%d.attn_q.weight", l)
        assert.are.equal(info.host_compute[up], info.host_compute[q], "block " .. l .. " whole")
        assert.are.equal(l % 2 == 1, info.host_compute[up] == true, "block " .. l .. " alternates")
        if not info.host_compute[up] then assert.are.equal("pinned", plan[up]) end
      end
      -- 160 µs of copies beside 160 µs on the CPU, overlapped; split in turn would take 320
      assert.is_true(info.seconds_per_token < 200e-6, tostring(info.seconds_per_token))
      assert.is_truthy(info.explain:find("whole blocks", 1, true), info.explain)
    end)
  end)
  it("on cuda times the ring with the engine's prefetch depth (budget.prefetch_layers)", function()
    -- two large blocks in a row: with k = 1 the second one's copy waits for the first's slot, with k = 3
    -- it is in before; the token time follows k (lrun.predict_pipeline with k + 1 slots)
    with_refill(false, function()
      local mats, bw = {}, { h2d_pinned = 50e9, host_read = 60e9, device_read = 2000e9, device = "cuda",
        host_matmul = { bf16 = 50e9 } }
      for l, bytes in ipairs({ 1e6, 1e6, 8e6, 8e6, 1e6, 1e6 }) do
        for _, role in ipairs({ "ffn_up", "attn_q" }) do
          mats[#mats + 1] = { name = string.format("blk.%d.%s.weight", l - 1, role), role = role, layer = l - 1,
            bytes = bytes, dtype = "bf16", shape = { 1000, 1000 } }
        end
      end
      local _, _, k_nil = smart.plan(mats, { bandwidth = bw })
      local _, _, k1 = smart.plan(mats, { bandwidth = bw, prefetch_layers = 1 })
      local _, _, k3 = smart.plan(mats, { bandwidth = bw, prefetch_layers = 3 })
      assert.are.equal(k1.seconds_per_token, k_nil.seconds_per_token)
      assert.is_true(k3.seconds_per_token < 0.8 * k1.seconds_per_token,
        string.format("k=3 %.3g s, k=1 %.3g s", k3.seconds_per_token, k1.seconds_per_token))
    end)
  end)
  it("on cuda keeps the way of sharing that lrun.predict times faster, as the whole plan", function()
    -- both ways of two_per_block written out (split: each block's attn_q streamed, its ffn_up host-computed;
    -- whole: even blocks streamed, odd ones host-computed), each priced by predict.decode with device reads
    -- slow enough to count; smart's choice is the faster of the two under either refill order
    local predict = require("lrun.predict")
    for _, queued in ipairs({ false, true }) do
      with_refill(queued, function()
        local mats, bw = two_per_block()
        bw.device_read = 20e9
        local function priced(host_of)
          local plan, hc = {}, {}
          for _, t in ipairs(mats) do
            hc[t.name] = host_of(t) or nil
            plan[t.name] = hc[t.name] and "host" or "pinned"
          end
          return predict.decode(mats, plan, hc, bw, { prefetch_layers = 1 }).seconds
        end
        local split = priced(function(t) return t.role == "ffn_up" end)
        local whole = priced(function(t) return t.layer % 2 == 1 end)
        local _, _, info = smart.plan(mats, { bandwidth = bw, prefetch_layers = 1 })
        local chosen_whole = info.explain:find("whole blocks", 1, true) ~= nil
        local want_whole = whole < split * (1 - 1e-9)
        assert.are.equal(want_whole, chosen_whole, string.format("queued %s: split %.3g s, whole %.3g s: %s",
          tostring(queued), split, whole, info.explain))
        assert.is_true(math.abs(info.predicted.seconds - math.min(split, whole)) < 1e-12,
          string.format("predicted %.6g s for %.6g", info.predicted.seconds, math.min(split, whole)))
      end)
    end
  end)
  it("plans again with every block split when whole blocks' slots leave no room (budget.whole_blocks = false)",
    function()
    -- a policy shaped like smart on cuda: whole blocks streamed (a unit a block) unless asked not to, then each
    -- block's feed-forward host-computed and its attention streamed (smaller units, smaller slots)
    local p = tmpfile([[
return {name = "wholeish", plan = function(ts, budget)
  local split = budget.whole_blocks == false
  local plan, hc, off = {}, {}, 0
  for _, t in ipairs(ts) do
    if t.layer and t.layer >= 0 and t.shape and #t.shape >= 2 then
      local host = split and t.role:find("ffn") ~= nil
      plan[t.name], hc[t.name], off = host and "host" or "pinned", host or nil, off + t.bytes
    end
  end
  return plan, off, {host_compute = hc, split_way = split and "split" or "whole"}
end}
]])
    local function placed(kib)
      local m, err = load(tiny, { policy = p, gpu_budget = kib * 1024, n_ctx = 64, threads = 1 })
      if not m then return nil, err end
      local hc = count(m:placement().host_compute)
      m:free()
      return hc
    end
    -- room for whole blocks' slots: the policy's first plan stands
    assert.are.equal(0, (placed(2000)))
    -- not, but for the split's: planned again split, instead of failing
    local hc, err = placed(1650)
    assert.is_truthy(hc, tostring(err))
    assert.is_true(hc > 0)
  end)
  it("hands the load's prefetch depth to the policy", function()
    local p = tmpfile([[
return {name = "sees_k", plan = function(ts, budget)
  if budget.prefetch_layers ~= 2 then error("prefetch_layers " .. tostring(budget.prefetch_layers)) end
  return {}, 0
end}
]])
    local m = assert(load(tiny, { policy = p, prefetch_layers = 2 }))
    m:free()
  end)
  it("explains itself in the placement of a loaded model", function()
    local m = assert(load(tiny, { smart_offload = true, cpu_offload_gb = 0.05 / 1024 }))
    local text = tostring(m:placement())
    assert.is_truthy(text:find("smart: measured bandwidths", 1, true), text)
    m:free()
  end)
end)

describe("command line", function()
  local cli = require("lrun.cli")
  it("parses the placement flags, -ot repeatable", function()
    local o = assert(cli.parse({ "--cpu-offload-gb", "2", "--smart-offload", "-ot", "ffn=cpu", "-ot", "attn=host",
      "--prefetch", "3", "--policy", "layers", "-ngl", "5" }, cli.model_spec()))
    local lo = cli.load_options(o)
    assert.are.equal(2, lo.cpu_offload_gb)
    assert.is_true(lo.smart_offload)
    assert.same({ "ffn=cpu", "attn=host" }, lo.overrides)
    assert.are.equal(3, lo.prefetch_layers)
    assert.are.equal("layers", lo.policy)
    assert.are.equal(5, lo.n_gpu_layers)
    -- a device budget alone is auto-fit's (smart when the model does not fit); a host budget plans (aggressive)
    assert.is_nil(cli.load_options(assert(cli.parse({ "--gpu-budget", "1G" }, cli.model_spec()))).policy)
    assert.are.equal("aggressive", cli.load_options(assert(cli.parse({ "--host-budget", "1G" }, cli.model_spec()))).policy)
  end)

  local shell = require("tests.shell")
  local sh, launcher = shell.run, shell.launcher

  it("generate.lua runs with a budget and -ot, and prints the placement", function()
    local out, rc = sh(launcher .. " " .. root .. "/examples/generate.lua -m " .. tiny
      .. " -p hello -n 3 --temp 0 --policy layers -ngl 2 -ot ffn_down=cpu --prefetch 1 --explain")
    assert.are.equal(0, rc, out)
    assert.is_truthy(out:find("placement: device", 1, true), out)
    assert.is_truthy(out:find("host compute: 4 tensors", 1, true), out)
  end)

  it("the REPL survives a bad --policy file and reports its file and line", function()
    local p = tmpfile("return {plan = function(ts)\n  return nil +\nend}\n")
    local input = tmpfile(string.format("m, err = lrun.load(%q, {progress = false})\nprint(m, err)\n= 1 + 1\n", tiny))
    local out, rc = sh(launcher .. " --policy " .. p .. " < " .. input)
    assert.are.equal(0, rc, out)
    assert.is_truthy(out:find(p .. ":3:", 1, true), out)  -- at startup, and again from lrun.load
    assert.is_truthy(out:find("nil\targ:", 1, true), out)
    assert.is_truthy(out:find("\n2\n", 1, true), out)
  end)

  it("the launcher passes --cpu-offload-gb, --smart-offload, -ot and --prefetch to lrun.load", function()
    local input = tmpfile(string.format(
      "m = assert(lrun.load(%q, {progress = false}))\nprint(m:placement().policy, m:placement().prefetch)\n", tiny))
    local out, rc = sh(launcher .. " --smart-offload --cpu-offload-gb 0.00001 -ot output=cpu --prefetch 3 < " .. input)
    assert.are.equal(0, rc, out)
    assert.is_truthy(out:find("smart\t3", 1, true), out)
  end)
end)

describe("the policy of docs/policies.md (examples/keep_attention.lua)", function()
  it("keeps attention, offloads MLPs with host-computed down projections, bit-identically", function()
    local m = assert(load(tiny))
    local ref_ids, ref_logits = run(m)
    m:free()
    m = assert(load(tiny, { policy = root .. "/examples/keep_attention.lua", cpu_offload_gb = 0.05 / 1024 }))
    local p = m:placement()
    assert.are.equal("keep_attention", p.policy)
    assert.are.equal("device", p.tensors["blk.3.attn_q.weight"])
    assert.are.equal("pinned", p.tensors["blk.3.ffn_up.weight"])
    assert.is_true(p.host_compute["blk.3.ffn_down.weight"])
    local ids, logits = run(m)
    assert.is_true(same(ref_ids, ids) and same(ref_logits, logits))
    m:free()
  end)
end)

describe("defaults", function()
  it("with nothing that must leave the device, the default policy and smart keep all on it", function()
    for _, o in ipairs({ { prefetch_layers = 2 }, { smart_offload = true } }) do
      local m = assert(load(tiny, o))
      local p = m:placement()
      assert.are.equal(m:info().weight_bytes, p.bytes.device)
      m:free()
    end
  end)
end)
