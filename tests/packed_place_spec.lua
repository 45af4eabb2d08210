-- packed_place_spec: packed weights as a placement choice (docs/packed.md,
-- lua/lrun/residency.lua, policies/offload_policy.lua): a packed file loads
-- packed and m:placement() shows its packed bytes and ratio; lrun.load's and
-- m:place's `packed` option (true, false, predicates) and a policy's
-- extra.packed choose each weight's form; every choice gives tokens and
-- logits bit-identical to the plain model on the CPU; a budget that only
-- the packed weights fit is planned at the first attempt.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same = compare.same
local lrun = require("lrun")
local P = require("policies.predicates")
local OffloadPolicy = require("policies.offload_policy")

local tmp = {}
local fixture = require("tests.bf16_model_fixture")
local function gen(path)
  fixture.generate(path, { n_layer = 4, n_embd = 64, n_head = 4, n_head_kv = 2, n_ff = 160, seed = 17 })
end
local run, load = fixture.run, fixture.load
local function count(t) local n = 0; for _ in pairs(t) do n = n + 1 end; return n end

local gguf, lrpk, ref_ids, ref_logits
setup(function()
  gguf = os.tmpname() .. ".gguf"
  lrpk = gguf .. ".lrpk"
  tmp[#tmp + 1], tmp[#tmp + 2] = gguf, lrpk
  gen(gguf)
  assert(lrun.pack(gguf, lrpk, { threads = 2 }))
  local m = assert(load(gguf))
  ref_ids, ref_logits = run(m)
  m:free()
end)
teardown(function() for _, p in ipairs(tmp) do os.remove(p) end end)

describe("packed weights as a placement", function()
  it("a packed file loads packed: m:placement() shows its packed bytes and ratio", function()
    local m = assert(load(lrpk))
    local p = m:placement()
    assert.are.equal(4 * 7 + 2, count(p.packed)) -- every block matrix, the head and the table
    assert.is_true(p.packed_ratio < 0.72, "ratio " .. tostring(p.packed_ratio))
    assert.are.equal(p.packed_bytes + (p.bytes.mmap - p.packed_bytes), p.bytes.mmap)
    assert.matches("packed: 30 tensors", tostring(p))
    for _, t in ipairs(m:tensors()) do
      if p.packed[t.name] then assert.is_true(t.packed and t.bytes < t.plain_bytes, t.name) end
    end
    local ids, logits = run(m)
    assert.is_true(same(ref_ids, ids) and same(ref_logits, logits), "logits differ")
    m:free()
  end)

  for _, case in ipairs({
    { "packed = false: plain again", lrpk, { packed = false, policy = "aggressive", cpu_offload_gb = 0.0002 }, 0 },
    { "packed = true on a GGUF", gguf, { packed = true, policy = "aggressive", cpu_offload_gb = 0.0002 }, 30 },
    { "packed by predicates", gguf, { packed = { P.is_mlp }, policy = "layers", n_gpu_layers = 2 }, 12 },
    { "packed by the policy's extra.packed", gguf,
      { policy = OffloadPolicy { predicates = { P.layer_range(2, 3) }, packed = { P.is_attention } } }, 16 },
    { "host compute on packed weights", lrpk, { overrides = { "ffn_=cpu", "output=cpu" } }, 30 },
  }) do
    it(case[1] .. ": logits bit-identical to the plain model", function()
      local m = assert(load(case[2], case[3]))
      local p = m:placement()
      assert.are.equal(case[4], count(p.packed))
      if case[4] > 0 then assert.matches("packed tensors", p.explain) end
      local ids, logits = run(m)
      assert.is_true(same(ref_ids, ids) and same(ref_logits, logits), "logits differ")
      m:free()
    end)
  end

  it("packs on m:place and unpacks again", function()
    local m = assert(load(gguf))
    assert(m:place { packed = true, policy = "conservative" })
    assert.are.equal(30, count(m:placement().packed))
    local ids, logits = run(m)
    assert.is_true(same(ref_ids, ids) and same(ref_logits, logits), "logits differ")
    assert(m:place { packed = false, policy = "conservative" })
    assert.are.equal(0, count(m:placement().packed))
    m:free()
  end)

  it("a budget only the packed weights fit keeps them all on the device, at the first attempt", function()
    local m = assert(load(lrpk))
    local all = m:placement().bytes.mmap -- packed matrices and plain vectors
    local size = assert(require("lrun.residency").size(m, {}, nil, { n_ctx = 64 }))
    m:free()
    local budget = size.peak + 4096 -- all packed on the device, and nothing more
    m = assert(load(lrpk, { gpu_budget = budget, n_ctx = 64, packed = true }))
    local p = m:placement()
    assert.are.equal(all, p.bytes.device)
    assert.are.equal(1, m.residency.attempts)
    local ids, logits = run(m)
    assert.is_true(same(ref_ids, ids) and same(ref_logits, logits), "logits differ")
    m:free()
  end)

  it("packed = true on a plain GGUF weighs the packed sizes (measured, not encoded) in its first plan", function()
    local m = assert(load(lrpk))
    local size = assert(require("lrun.residency").size(m, {}, nil, { n_ctx = 64 }))
    m:free()
    -- the packed file's budget: before the sizes were measured the plan weighed the plain ones, so the
    -- policy moved weights off a device they fit packed (and lrun.predict priced plain bytes)
    m = assert(load(gguf, { gpu_budget = size.peak + 4096, n_ctx = 64, packed = true }))
    local p = m:placement()
    -- `packed` alone chooses the form; the plan is auto-fit's (smart), not the default policy's
    assert.are.equal("smart", p.policy)
    assert.are.equal(0, p.bytes.host + p.bytes.pinned + p.bytes.mmap, "every weight on the device")
    assert.are.equal(1, m.residency.attempts)
    for _, t in ipairs(m:tensors()) do
      if p.packed[t.name] then assert.is_true(t.bytes < t.plain_bytes, t.name) end
    end
    local ids, logits = run(m)
    assert.is_true(same(ref_ids, ids) and same(ref_logits, logits), "logits differ")
    m:free()
  end)

  it("smart knows the packed decode: measured with the bandwidths, weighed and explained", function()
    local m = assert(load(lrpk))
    local bw = assert(require("lrun.residency").bandwidths(m))
    assert.is_true(bw.packed_decode > 0 and bw.host_decode > 0, "decode rates measured")
    local smart = require("policies.smart")
    local _, off, info = smart.plan(m:tensors(), { max_bytes = 2 ^ 17, bandwidth = bw })
    assert.is_true(off > 0)
    assert.matches("packed decode [%d.]+ GB/s", info.explain)
    -- a packed matrix costs more than its packed bytes' copy on cuda: the decode follows it on the copy stream
    local t = { name = "blk.0.ffn_up.weight", role = "ffn_up", layer = 0, dtype = "bf16", bytes = 700, plain_bytes = 1000,
      packed = true, shape = { 10, 50 } }
    local cuda_bw = { h2d_pinned = 1e3, host_read = 1e3, device_read = 1e6, device = "cuda", host_matmul = 1e3,
      packed_decode = 1e3, host_decode = 1e3 }
    local _, _, i2 = smart.plan({ t }, { max_bytes = 1e9, bandwidth = cuda_bw })
    local plain = { name = t.name, role = t.role, layer = 0, dtype = "bf16", bytes = 1000, shape = t.shape }
    local _, _, i3 = smart.plan({ plain }, { max_bytes = 1e9, bandwidth = cuda_bw })
    assert.is_true(i2.seconds_per_token > i3.seconds_per_token * 0.99, "decode counted")
    m:free()
  end)

  it("refuses a form a tensor cannot have, naming it", function()
    local m = assert(load(gguf))
    local bad = function() return {}, 0, { packed = { ["output_norm.weight"] = true } } end
    local ok, err = m:place { policy = { name = "bad", plan = bad } }
    assert.is_nil(ok)
    assert.matches("output_norm.weight.*cannot be packed", err.message)
    ok, err = m:place { packed = 3 }
    assert.is_nil(ok)
    assert.matches("packed: expected", err.message)
    m:free()
  end)
end)
