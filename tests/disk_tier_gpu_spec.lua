-- disk_tier_gpu_spec: the disk tier and the host budget on cuda through
-- lrun.load (make test-gpu): a GPU budget and a host budget both too small
-- for the model place what fits neither on disk, read with direct I/O into
-- the pinned staging buffers, with tokens and logits bit-identical to the
-- resident CUDA run; the host bytes the plan holds stay under the budget;
-- an impossible host budget fails at load naming what is missing. The
-- budgets are not fixed numbers (a fixed 40 MiB fell 325 KiB short on the
-- H200 once the pool's slack grew): the device's comes from the engine's
-- own sizing of this model (lrun.residency.size, lrun_engine_size_placement),
-- the host's from the plan that device budget gives.
-- Pending without a GPU (LRUN_GPU_SPEC_DEVICE=cpu dry-runs it on the CPU engine).
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same = compare.same
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")
local residency = require("lrun.residency")
local layers = require("policies.layers")
local size = require("lrun.size")

local DEVICE = os.getenv("LRUN_GPU_SPEC_DEVICE") or "cuda:0"
local has_gpu = DEVICE == "cpu" or C.lrun_cuda_device_count() > 0
local MiB = 2 ^ 20
local N_CTX = 64

local path
local PROMPT = { 1, 300, 42, 7, 260, 99, 12 }

local function gen_model()
  local p = os.tmpname() .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 8, 512, 8, 4, 1024
  s.n_vocab, s.n_ctx = 4096, 256
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_BF16, C.LRUN_DTYPE_BF16, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 5, 0
  assert(C.lrun_model_generate(p, s) == C.LRUN_OK, lf.last_error())
  return p
end

local function load(opts)
  opts.device, opts.progress, opts.n_ctx = DEVICE, false, N_CTX
  return lrun.load(path, opts)
end

local function run(m)
  local _, ids = assert(m:generate(PROMPT, { max_new_tokens = 6 }))
  return ids, assert(m:logits(PROMPT))
end

-- The device budget, from the engine's sizes for m (resident on the
-- device) as the planner adds them (lrun.residency.plan): the KV cache and
-- scratch of the resident engine, plus, for blocks 0 and 1 on the device
-- and the rest streamed (the layers policy at N = 2), their weights, the
-- slots, the gathered embedding rows and the pool's slack; the larger of
-- the streamed weights in host memory and on disk (disk regions are
-- aligned, so slots can grow when the host budget moves weights there).
-- 4 MiB more: the planner's first pass keeps more blocks on the device,
-- whose small blocks can round the pool's slack up by an arena's share
-- (runtime/cuda/engine_cuda.c pool_slack), and lrun.residency.place's
-- retry after an engine that did not fit raises the reserve by 1/16 of
-- what it asked (~2.5 MiB here). The device keeps a block or two.
local function gpu_budget_of(m)
  local opts = { n_ctx = N_CTX }
  local resident = assert(residency.size(m, {}, nil, opts))
  local reserve = resident.kv_max + resident.scratch
  local device = 0
  for _, tier in ipairs({ "host", "disk" }) do
    local plan = assert(layers.plan(m:tensors(), { n_gpu_layers = 2, tier = tier }))
    local s = assert(residency.size(m, plan, nil, opts))
    device = math.max(device, s.weights + s.slots + s.rows + s.slack)
  end
  print(string.format("# device budget %s: KV cache and scratch %s, weights, slots and slack %s, 4 MiB",
    size.format(reserve + device + 4 * MiB), size.format(reserve), size.format(device)))
  return reserve + device + 4 * MiB
end

-- The host budget, from the plan of the device budget alone (r, a model's
-- m.residency): the host bytes it holds (r.host_bytes: on cuda the two
-- pinned staging buffers and the streamed weights; on cpu the device's
-- memory too) less the largest streamed weight and half the next. The
-- planner moves streamed weights to disk largest first (here the head and
-- the embedding table, 4 MiB each) until the plan fits, so both go to disk
-- and half the second stays free (r.host_bytes counts the cuda engine's
-- own pinned staging, 64 logit rows of n_vocab floats and the token table,
-- ~1 MiB here: lrun.host_budget.engine_staging).
local function host_budget_of(r, tensors)
  local streamed = {}
  for _, t in ipairs(tensors) do
    local tier = r.plan[t.name]
    if (tier == "pinned" or tier == "host") and not r.host_compute[t.name] then streamed[#streamed + 1] = t end
  end
  table.sort(streamed, function(a, b) -- lrun.host_budget.fit's order
    if a.bytes ~= b.bytes then return a.bytes > b.bytes end
    return a.name < b.name
  end)
  assert(#streamed >= 2, "fewer than two streamed weights")
  local host = r.host_bytes - streamed[1].bytes - streamed[2].bytes / 2
  print(string.format("# host budget %s: the plan's %s less %s (%s) and half %s (%s)", size.format(host),
    size.format(r.host_bytes), streamed[1].name, size.format(streamed[1].bytes), streamed[2].name,
    size.format(streamed[2].bytes)))
  return host
end

describe("disk tier on cuda", function()
  if not has_gpu then
    it("runs", function() pending("no GPU visible") end)
    return
  end
  local ref_ids, ref_logits, gpu_budget, host_budget
  setup(function()
    path = gen_model()
    local ref = assert(load({}))
    ref_ids, ref_logits = run(ref)
    gpu_budget = gpu_budget_of(ref)
    ref:free()
    local m0 = assert(load({ gpu_budget = gpu_budget, policy = "layers", offload_tier = "host" }))
    host_budget = host_budget_of(m0.residency, m0:tensors())
    m0:free()
  end)
  teardown(function() os.remove(path) end)

  it("places what fits neither budget on disk, bit-identical to the resident run", function()
    -- 8 blocks of 4.5 MiB, a 4 MiB head and a 4 MiB embedding table in pageable host memory (staged);
    -- all of them pinned would need no staging and could fit: nothing on disk
    local m = assert(load({ gpu_budget = gpu_budget, host_budget = host_budget, policy = "layers",
      offload_tier = "host" }))
    local pl = m:placement()
    print("# " .. m.residency.explain:gsub("\n", "\n# "))
    assert.is_true(pl.bytes.disk > 0)
    assert.is_true(m.residency.host_bytes <= host_budget)
    local ids, logits = run(m)
    assert.are.same(ref_ids, ids)
    assert.is_true(same(ref_logits, logits))
    local s = assert(m:stats())
    assert.is_true(s.disk_bytes_read > 0 and s.disk_queue_depth >= 1)
    m:free()
  end)

  it("fails at load when the host budget cannot hold the pinned staging", function()
    local m, err = load({ gpu_budget = gpu_budget, host_budget = 1 * MiB, policy = "layers" })
    assert.is_nil(m)
    assert.are.equal("oom", err.kind)
    -- the host budget's failure, not the device budget's
    assert.is_truthy(err.message:find("host budget", 1, true), err.message)
    assert.is_truthy(err.message:find("missing", 1, true), err.message)
  end)
end)
