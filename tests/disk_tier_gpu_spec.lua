-- disk_tier_gpu_spec: the disk tier and the host budget on cuda through
-- lrun.load (make test-gpu): a GPU budget and a host budget both too small
-- for the model place what fits neither on disk, read with direct I/O into
-- the pinned staging buffers, with tokens and logits bit-identical to the
-- resident CUDA run; the host bytes the plan holds stay under the budget;
-- an impossible host budget fails at load naming what is missing. Pending
-- without a GPU (LRUN_GPU_SPEC_DEVICE=cpu dry-runs it on the CPU engine).
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same = compare.same
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

local DEVICE = os.getenv("LRUN_GPU_SPEC_DEVICE") or "cuda:0"
local has_gpu = DEVICE == "cpu" or C.lrun_cuda_device_count() > 0
local MiB = 2 ^ 20

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
  opts.device, opts.progress, opts.n_ctx = DEVICE, false, 64
  return lrun.load(path, opts)
end

local function run(m)
  local _, ids = assert(m:generate(PROMPT, { max_new_tokens = 6 }))
  return ids, assert(m:logits(PROMPT))
end

describe("disk tier on cuda", function()
  if not has_gpu then
    it("runs", function() pending("no GPU visible") end)
    return
  end
  setup(function() path = gen_model() end)
  teardown(function() os.remove(path) end)

  it("places what fits neither budget on disk, bit-identical to the resident run", function()
    local ref = assert(load({}))
    local ref_ids, ref_logits = run(ref)
    ref:free()
    -- 8 blocks of 4.5 MiB and a 4 MiB head in pageable host memory (staged): on cuda 80 MiB of
    -- host hold the 64 MiB of pinned staging and a few blocks, the rest is read from disk.
    -- (All of them pinned would need no staging and fit 80 MiB: nothing on disk.)
    -- (the cpu dry run holds its device in host memory: 60 MiB there)
    local host = DEVICE == "cpu" and 60 * MiB or 80 * MiB
    local m = assert(load({ gpu_budget = 40 * MiB, host_budget = host, policy = "layers",
      offload_tier = "host" }))
    local pl = m:placement()
    print("# " .. m.residency.explain:gsub("\n", "\n# "))
    assert.is_true(pl.bytes.disk > 0)
    assert.is_true(m.residency.host_bytes <= host)
    local ids, logits = run(m)
    assert.are.same(ref_ids, ids)
    assert.is_true(same(ref_logits, logits))
    local s = assert(m:stats())
    assert.is_true(s.disk_bytes_read > 0 and s.disk_queue_depth >= 1)
    m:free()
  end)

  it("fails at load when the host budget cannot hold the pinned staging", function()
    local m, err = load({ gpu_budget = 40 * MiB, host_budget = 1 * MiB, policy = "layers" })
    assert.is_nil(m)
    assert.are.equal("oom", err.kind)
    assert.is_truthy(err.message:find("missing", 1, true), err.message)
  end)
end)
