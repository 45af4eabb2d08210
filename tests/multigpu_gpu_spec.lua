-- multigpu_gpu_spec: the layer split over CUDA devices (lua/lrun/multigpu.lua,
-- docs/multigpu.md). One GPU named for every part (cuda:0,cuda:0) runs the
-- split as CUDA engines, one per part (runtime/engine_split.c); a list of
-- several GPUs is planned and runs on its first device. These cases check:
--
--   * each device's room comes from the CUDA device (free memory, or its
--     budget), shared evenly when one GPU is named twice (cuda:0,cuda:0);
--   * -ts and per-device budgets give the planned layer ranges;
--   * cuda:0,cuda:0 runs as 2 engines (split.runs, the explain line), with
--     logits bit-identical to one engine's, with exact and default numerics,
--     and greedy generation and beams (sequence copies and reorders in
--     every part) as one engine's;
--   * with two GPUs visible, cuda:0,cuda:1 gives logits bit-identical to the
--     single-device run (today it runs there, on cuda:0);
--   * offload on top of the split (D,D with D = LRUN_GPU_SPEC_DEVICE or
--     cuda:0): per-device budgets below each device's layers make every part
--     place weights off the device (streamed into its own slots or computed
--     on the host: lrun.split_plan), and the MoE experts of every block on
--     the host (n_cpu_moe: the host expert pass in each part); the split loads,
--     runs, and gives the logits of one engine with the same placement, bit
--     for bit. LRUN_GPU_SPEC_DEVICE=cpu dry-runs these on the CPU engine.
--
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; `make test` runs it
-- too, where every case is pending without a GPU.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")
local mg = require("lrun.multigpu")

local n_gpu = tonumber(C.lrun_cuda_device_count())
local PROMPT = { 1, 300, 42, 7, 260, 99, 12 }

-- A generated Q8_0 model (a Q8_0 head: exact numerics on CUDA need one) of n_layer blocks, written beside a
-- fresh temporary name; more(s) sets what differs (architecture, experts).
local function write_model(n_layer, n_ff, seed, more)
  local base = os.tmpname() -- made as an empty file: the model is written beside it
  os.remove(base)
  local p = base .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = n_layer, 64, 4, 2, n_ff
  s.n_vocab, s.n_ctx = 512, 256
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_Q8_0, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, seed, 1
  if more then more(s) end
  assert(C.lrun_model_generate(p, s) == C.LRUN_OK, lf.last_error())
  return p
end

local path
local function gen_model()
  path = path or write_model(6, 128, 7)
  return path
end

-- Each describe removes the model at its end; the next one writes it again.
local function remove_model()
  if path then os.remove(path) end
  path = nil
end

local function logits(opts)
  opts.progress, opts.n_ctx = false, 64
  if opts.numerics == nil then opts.numerics = "exact" end
  local m = assert(lrun.load(gen_model(), opts))
  local l = assert(m:logits(PROMPT))
  local split = m:placement().split
  m:free()
  return l, split
end

local function ranges(split)
  local out = {}
  for i, d in ipairs(split.devices) do out[i] = { d.first, d.last } end
  return out
end

describe("layer split over one GPU (cuda:0,cuda:0)", function()
  teardown(remove_model)

  it("shares the GPU's room and keeps logits bit-identical", function()
    if n_gpu < 1 then
      pending("no GPU visible")
      return
    end
    local rooms = mg.rooms({ "cuda:0", "cuda:0" })
    assert.truthy(rooms[1].room and rooms[1].room > 0)
    assert.equal(rooms[1].room, rooms[2].room)
    local one = mg.rooms({ "cuda:0" })
    assert.is_true(math.abs(one[1].room - 2 * rooms[1].room) <= 2 ^ 28, "free memory moved more than 256 MiB")
    local want = logits({ device = "cuda:0" })
    local got, split = logits({ device = "cuda:0,cuda:0" })
    assert.same({ { 0, 3 }, { 4, 5 } }, ranges(split)) -- equal rooms: 0.5 > il/7 for il 0..3
    assert.is_true(split.runs)
    assert.matches("runs as 2 engines on cuda:0", split.explain)
    assert.same(want, got)
    -- the default (fast) kernels too: the same device runs the same kernels in both
    assert.same(logits({ device = "cuda:0", numerics = "default" }),
      (logits({ device = "cuda:0,cuda:0", tensor_split = "1,2", numerics = "default" })))
    got, split = logits({ devices = { "cuda:0", "cuda:0" }, tensor_split = "2,1", gpu_budget = "1G,1G" })
    assert.same({ { 0, 4 }, { 5, 5 } }, ranges(split)) -- 2/3 > il/7 for il 0..4
    assert.equal(2 ^ 30, split.devices[1].room)
    assert.same(want, got)
  end)
end)

describe("layer split over one GPU: generation", function()
  teardown(remove_model)
  it("generates greedily and with beams as one engine does", function()
    if n_gpu < 1 then
      pending("no GPU visible")
      return
    end
    local function run(opts, gen)
      opts.progress, opts.n_ctx = false, 128
      local m = assert(lrun.load(gen_model(), opts))
      local _, ids = m:generate("Once upon", gen)
      local st = m:stats()
      m:free()
      return ids, st
    end
    local greedy = { max_new_tokens = 8, do_sample = false }
    local want, one = run({ device = "cuda:0" }, greedy)
    local got, st = run({ device = "cuda:0,cuda:0", tensor_split = "1,1" }, greedy)
    assert.same(want, got)
    assert.is_true(st.kv_bytes == one.kv_bytes, "the parts' caches add up to one engine's")
    local beams = { max_new_tokens = 6, num_beams = 3, do_sample = false }
    assert.same(run({ device = "cuda:0" }, beams), (run({ device = "cuda:0,cuda:0", tensor_split = "1,3" }, beams)))
  end)
end)

describe("layer split over two GPUs (cuda:0,cuda:1)", function()
  teardown(remove_model)
  it("plans with both devices' rooms and keeps logits bit-identical to one GPU", function()
    if n_gpu < 2 then
      pending(string.format("needs two GPUs, %d visible", n_gpu))
      return
    end
    local rooms = mg.rooms({ "cuda:0", "cuda:1" })
    for _, r in ipairs(rooms) do assert.truthy(r.room and r.room > 0, r.name) end
    local want = logits({ device = "cuda:0" })
    local got, split = logits({ device = "cuda:0,cuda:1", tensor_split = "1,1" })
    assert.same({ { 0, 3 }, { 4, 5 } }, ranges(split))
    assert.same(want, got)
    print("# " .. split.explain:gsub("\n", "\n# "))
  end)
end)

-- ---------------------------------------------------------------- offload on top of the split

local DEVICE = os.getenv("LRUN_GPU_SPEC_DEVICE") or "cuda:0"
local has_device = DEVICE == "cpu" or n_gpu > 0

-- A qwen3moe model (4 experts, 2 used) for the host experts.
local moe_path
local function gen_moe()
  moe_path = moe_path or write_model(4, 96, 11, function(s) s.arch, s.n_expert, s.n_expert_used = "qwen3moe", 4, 2 end)
  return moe_path
end

-- A dense model of 12 blocks for the offload case: each part holds 6, so a quarter of its weights off the device
-- saves more than the streaming slots it then needs (with 6 blocks a part of 2 could not).
local deep_path
local function gen_deep()
  deep_path = deep_path or write_model(12, 128, 13)
  return deep_path
end

-- What auto-fit tests each part against its room (lrun.split_plan.fits): the part's engine with every
-- weight on its device, weights + init, from the engine's own sizing (lrun.placement_size).
local function part_needs(m)
  local ps = require("lrun.placement_size")
  local o = m:place_opts()
  o.split_layers = o.split.layers
  local eo = ps.engine_opts(o)
  local out = {}
  for d = 1, #o.split.layers do
    local sized = assert(ps.size_with(m, eo, {}, nil, nil, d - 1))
    out[d] = { need = sized.weights + sized.init, weights = sized.weights }
  end
  return out
end

-- The logits of model file p placed exactly as a split model's placement pl, on one engine of DEVICE.
local function one_engine_like(p, pl)
  local one = assert(lrun.load(p, { device = DEVICE, progress = false, n_ctx = 64, numerics = "default" }))
  assert(require("lrun.residency").apply(one, { plan = pl.tensors, host_compute = pl.host_compute,
    packed = pl.packed, prefetch = pl.prefetch }))
  local l = assert(one:logits(PROMPT))
  local st = one:stats()
  one:free()
  return l, st
end

describe("offload on top of the split (" .. DEVICE .. "," .. DEVICE .. ")", function()
  setup(function() -- an earlier describe's teardown may have removed the model: it is written again
    local f = path and io.open(path, "rb")
    if f then f:close() else path = nil end
  end)
  teardown(function()
    if path then os.remove(path) end
    if moe_path then os.remove(moe_path) end
    if deep_path then os.remove(deep_path) end
    path, moe_path, deep_path = nil, nil, nil
  end)

  it("places each device's layers within its room, streamed or on the host, as one engine's logits", function()
    if not has_device then
      pending("no GPU visible")
      return
    end
    local devs = DEVICE .. "," .. DEVICE
    local base = { devices = devs, tensor_split = "1,1", progress = false, n_ctx = 64, numerics = "default" }
    local o = {}
    for k, v in pairs(base) do o[k] = v end
    o.gpu_budget = "4G,4G"
    -- below both the split's estimate of each device's need (lrun.multigpu: short) and what auto-fit
    -- tests the part against (its engine's weights + init: it must plan), by a quarter of that part's
    -- weights: what then leaves the device also pays for its two streaming slots (about another quarter;
    -- by half, the H100 in session 24 found 16 KiB missing even with every weight off the device)
    local fits = assert(lrun.load(gen_deep(), o))
    local full = fits:placement().split.devices
    local needs = part_needs(fits)
    fits:free()
    local budget = {}
    for i, n in ipairs(needs) do
      budget[i] = math.min(full[i].need, n.need) - math.floor(n.weights / 4)
      print(string.format("# part %d: weights + init %d, weights %d, the split's estimate %d: budget %d", i, n.need,
        n.weights, full[i].need, budget[i]))
    end
    o.gpu_budget = budget
    local m = assert(lrun.load(gen_deep(), o))
    local p = m:placement()
    print("# " .. p.explain:gsub("\n", "\n# "))
    assert.is_true(p.split.runs)
    for i, d in ipairs(p.split.devices) do
      assert.is_true(d.short and d.short > 0, "device " .. i .. " is short of room")
      assert.is_true(p.parts[i].streamed + p.parts[i].host > 0, "device " .. i .. " keeps weights off it")
    end
    local got = assert(m:logits(PROMPT))
    local st = m:stats()
    m:free()
    local want, one = one_engine_like(gen_deep(), p)
    assert.same(want, got)
    assert.equal(one.host_compute_bytes, st.host_compute_bytes)
  end)

  it("puts every block's experts on the host in each part (the host expert pass), as one engine's logits", function()
    if not has_device then
      pending("no GPU visible")
      return
    end
    local m = assert(lrun.load(gen_moe(), { devices = DEVICE .. "," .. DEVICE, tensor_split = "1,1", n_cpu_moe = 4,
      progress = false, n_ctx = 64, numerics = "default" }))
    local p = m:placement()
    for i, part in ipairs(p.parts) do assert.is_true(part.host > 0, "part " .. i .. " computes experts on the host") end
    local n_host = 0
    for name in pairs(p.host_compute) do
      assert.matches("ffn_%a+_exps", name)
      n_host = n_host + 1
    end
    assert.equal(12, n_host) -- gate, up and down of 4 blocks
    local got = assert(m:logits(PROMPT))
    m:free()
    assert.same((one_engine_like(gen_moe(), p)), got)
  end)
end)
