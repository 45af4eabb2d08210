-- disk_tier_spec: the disk tier and the host budget through lrun.load
-- (lua/lrun/residency.lua, runtime/residency/disk_reader.c): a host budget
-- places what does not fit on disk, reads it with direct I/O, and gives
-- tokens and logits bit-identical to the resident run; the stats report
-- the reads; budgets no placement meets fail at load naming what is
-- missing; -ot PATTERN=disk; a device budget on the CPU offloads to the
-- file's mapping, not to a second copy in host memory; the launcher's
-- --host-budget.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same = compare.same
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

local tmp_files = {}

-- 8 blocks of q8_0 with 256-wide matrices (5.3 MiB; the engine reserves 5.8 MiB), an f16 table and an untied head.
local function gen_model()
  local path = os.tmpname() .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 8, 256, 4, 2, 512
  s.n_vocab, s.n_ctx = 512, 256
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_F16, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 7, 1
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
  tmp_files[#tmp_files + 1] = path
  return path
end

local PROMPT = { 1, 300, 42, 7, 260, 99, 12 }

local function run(m)
  local _, ids = assert(m:generate(PROMPT, { max_new_tokens = 6 }))
  return ids, assert(m:logits(PROMPT))
end

local function load(path, opts)
  opts = opts or {}
  opts.progress, opts.threads, opts.n_ctx = false, 2, 64
  return lrun.load(path, opts)
end

local model, ref_ids, ref_logits, total
setup(function()
  model = gen_model()
  local m = assert(load(model))
  ref_ids, ref_logits = run(m)
  total = 0
  for _, t in ipairs(m:tensors()) do total = total + t.bytes end
  m:free()
end)
teardown(function() for _, p in ipairs(tmp_files) do os.remove(p) end end)

describe("host budget", function()
  it("places what does not fit on disk and stays bit-identical", function()
    local m = assert(load(model, { host_budget = 9 * 2 ^ 20 }))
    local pl = m:placement()
    assert.is_true(pl.bytes.disk > 0)
    assert.are.equal(0, pl.bytes.host + pl.bytes.pinned)
    local r = m.residency
    assert.is_true(r.host_bytes <= 9 * 2 ^ 20, tostring(r.explain))
    assert.is_truthy(r.explain:find("disk tier", 1, true))
    assert.is_truthy(tostring(pl):find("disk", 1, true))
    -- the default policy predicts too (measured bandwidths, the disk's included): #15
    assert.is_true(pl.predicted ~= nil and pl.predicted.tok_s > 0 and pl.predicted.bytes.streamed > 0)
    assert.is_truthy(r.explain:find("predicted decode", 1, true), r.explain)
    local ids, logits = run(m)
    assert.are.same(ref_ids, ids)
    assert.is_true(same(ref_logits, logits))
    local s = assert(m:stats())
    assert.is_true(s.disk_bytes_read >= s.bytes_streamed and s.disk_bytes_read > 0)
    assert.is_true(s.disk_read_bandwidth > 0 and s.disk_queue_depth >= 1 and s.disk_stalls >= 0)
    assert.is_truthy(tostring(s):find("disk read", 1, true))
    m:free()
  end)

  it("with room for everything keeps everything on the device", function()
    local m = assert(load(model, { host_budget = "1G" }))
    assert.are.equal(0, m:placement().bytes.disk)
    -- every plan predicts (#15): here nothing streams, so nothing is copied
    local pred = m:placement().predicted
    assert.is_true(pred ~= nil and pred.bytes.streamed == 0 and pred.copy_s == 0)
    m:free()
  end)

  it("that no placement meets fails at load, naming what is missing", function()
    local m, err = load(model, { host_budget = "64K" })
    assert.is_nil(m)
    assert.are.equal("oom", err.kind)
    assert.is_truthy(err.message:find("missing", 1, true), err.message)
  end)

  it("rejects a size that is not one", function()
    assert.has_error(function() load(model, { host_budget = "lots" }) end)
  end)

  it("moves pinned and host weights to disk until the budget holds", function()
    local m = assert(load(model, { policy = "layers", n_gpu_layers = 2, offload_tier = "host",
      host_budget = 10.5 * 2 ^ 20 }))
    local pl = m:placement()
    assert.is_true(pl.bytes.disk > 0)
    assert.is_true(m.residency.host_bytes <= 10.5 * 2 ^ 20)
    local ids, logits = run(m)
    assert.are.same(ref_ids, ids)
    assert.is_true(same(ref_logits, logits))
    m:free()
  end)
end)

describe("the disk tier", function()
  it("is a tier for -ot overrides, with the disk's counters in the stats", function()
    local m = assert(load(model, { overrides = { "blk%.[13]%.=disk" } }))
    local pl = m:placement()
    assert.are.equal("disk", pl.tensors["blk.1.ffn_up.weight"])
    assert.are.equal("device", pl.tensors["blk.2.ffn_up.weight"])
    m:stats(true)
    local ids, logits = run(m)
    assert.are.same(ref_ids, ids)
    assert.is_true(same(ref_logits, logits))
    -- m:stats(): disk bytes, read bandwidth, queue depth and stalls, and the summary says them
    local st = m:stats()
    assert.is_true(st.disk_bytes_read > 0 and st.disk_read_seconds > 0, "disk bytes and read time")
    assert.is_true(math.abs(st.disk_read_bandwidth - st.disk_bytes_read / st.disk_read_seconds) < 1, "bandwidth")
    assert.is_true(st.disk_queue_depth >= 1 and st.disk_stalls >= 0 and st.disk_stalls <= st.prefetch_misses)
    assert.matches("disk read [%d.]+ %a+ in [%d.]+ s %([%d.]+ [MGk]?B/s%), %S+, queue depth %d+, %d+ stalls", tostring(st))
    m:free()
  end)

  it("has a name and a number", function()
    local t = ffi.new("lrun_tier[1]")
    assert.are.equal(C.LRUN_OK, C.lrun_tier_from_name("disk", t))
    assert.are.equal(C.LRUN_TIER_DISK, t[0])
    assert.are.equal("disk", ffi.string(C.lrun_tier_name(C.LRUN_TIER_DISK)))
  end)
end)

describe("a device budget on the cpu", function()
  it("offloads to the file's mapping: host memory stays at the model's size", function()
    local m = assert(load(model, { gpu_budget = 9 * 2 ^ 20, policy = "aggressive" }))
    local pl = m:placement()
    assert.are.equal(0, pl.bytes.host + pl.bytes.pinned)
    assert.is_true(pl.bytes.mmap > 0)
    assert.is_true(pl.bytes.device + pl.bytes.host + pl.bytes.pinned <= total)
    local ids = run(m)
    assert.are.same(ref_ids, ids)
    m:free()
  end)
end)

describe("the launcher", function()
  it("takes --host-budget and shows the disk tier with --explain", function()
    local cmd = string.format("%s/lrun examples/generate.lua -m %s --host-budget 9M -c 64 --explain -n 4 --temp 0 "
      .. "-t 2 -p Hi 2>&1", os.getenv("LRUN_BUILD") or "build", model)
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    assert.is_truthy(out:find("disk tier", 1, true), out)
    assert.is_truthy(out:find("host budget", 1, true), out)
  end)
end)
