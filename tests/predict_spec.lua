-- predict_spec: the predicted decode speed (lua/lrun/predict.lua) with
-- given bandwidth tables (nothing measured), computed by hand here from the
-- formula of docs/policies.md "Predicted speed"; smart's plans of a
-- generated model under budgets carry it; auto-fit (Model:auto_fit, as
-- lrun.load runs it) places a model that does not fit with smart and
-- leaves one that fits alone.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")
local predict = require("lrun.predict")
local residency = require("lrun.residency")
local smart = dofile("policies/smart.lua")

local function near(want, got, what)
  assert.is_true(math.abs(want - got) <= 1e-9 * math.abs(want), string.format("%s: want %.12g, got %.12g",
    what or "value", want, got))
end

-- Round bandwidths (bytes/s) so the hand arithmetic stays readable.
local CUDA = { device = "cuda", device_read = 1e12, h2d_pinned = 2e10, h2d_pageable = 1e10, host_read = 5e10,
  host_matmul = { q8_0 = 2e10 }, disk_read = 2e9 }
local CPU = { device = "cpu", device_read = 4e10, h2d_pinned = 2e10, h2d_pageable = 2e10, host_read = 4e10 }

-- One block and the head, by hand: every role the formula treats apart.
local TENSORS = {
  { name = "token_embd.weight", role = "embedding", dtype = "f16", bytes = 1000 * 512, shape = { 500, 512 } },
  { name = "output.weight", role = "lm_head", dtype = "q8_0", bytes = 4e6, shape = { 500, 512 } },
  { name = "blk.0.attn_norm.weight", role = "attn_norm", dtype = "f32", bytes = 2000, shape = { 500 } },
  { name = "blk.0.attn_q.weight", role = "attn_q", dtype = "q8_0", bytes = 1e6, shape = { 500, 500 } },
  { name = "blk.0.ffn_up.weight", role = "ffn_up", dtype = "q8_0", bytes = 2e6, shape = { 500, 1000 } },
  { name = "blk.0.ffn_gate.weight", role = "ffn_gate", dtype = "q8_0", bytes = 2e6, shape = { 500, 1000 } },
  { name = "blk.0.ffn_down.weight", role = "ffn_down", dtype = "q8_0", bytes = 2e6, shape = { 1000, 500 } },
}

describe("predict.decode with given bandwidths", function()
  it("all on the device: bytes read once per token at device_read (one embedding row)", function()
    local p = predict.decode(TENSORS, {}, nil, CUDA)
    local bytes = 1000 + 4e6 + 1e6 + 2e6 + 2e6 + 2e6 -- a row of the table, the norm free
    near(bytes / 1e12, p.seconds, "seconds")
    near(1e12 / bytes, p.tok_s, "tok/s")
    assert.are.equal("device read", p.limit)
    assert.are.equal(0, p.copy_s)
    assert.matches("^predicted decode ~%d+%.%d tok/s %(limit: device read 1000%.0 GB/s", predict.text(p, CUDA))
  end)

  it("cuda: copies by tier overlap device + host compute; the slower side is the limit", function()
    local plan = { ["blk.0.ffn_up.weight"] = "pinned", ["blk.0.ffn_gate.weight"] = "disk",
      ["blk.0.ffn_down.weight"] = "host", ["blk.0.attn_q.weight"] = "mmap" }
    local hc = { ["blk.0.ffn_down.weight"] = true }
    local p = predict.decode(TENSORS, plan, hc, CUDA)
    local copy = 2e6 / 2e10 + 2e6 / 2e9 + 1e6 / 1e10 -- pinned, disk, mmap (pageable)
    local device = (1000 + 4e6 + 1e6 + 2e6 + 2e6) / 1e12 -- resident + streamed, read on the device
    local host = 2e6 / 2e10 -- q8_0 host matmul
    near(copy, p.copy_s, "copy")
    near(device, p.device_s, "device")
    near(host, p.host_s, "host")
    -- one streamed unit: the engine's k is at most units - 1, so its one slot is refilled after the
    -- token's compute released it, and the copies and the compute take turns (lrun.predict_pipeline)
    -- (the embedding row, before the block, is read while the copy runs)
    near(copy + device + host - 1000 / 1e12, p.seconds, "seconds")
    assert.are.equal("disk", p.limit) -- 1 ms of the 1.2 ms of copies
    near(2e6 / 2e9, p.links.disk, "disk link")
    assert.is_true(p.overlapped)
  end)

  it("cuda: host and mmap stream staged at min(pinned, host_copy) when host_copy is known", function()
    local plan = { ["blk.0.ffn_up.weight"] = "host", ["blk.0.ffn_gate.weight"] = "mmap",
      ["blk.0.ffn_down.weight"] = "host" }
    local bw = {}
    for k, v in pairs(CUDA) do bw[k] = v end
    bw.host_copy = 1.5e10 -- below the pinned link's 2e10: the copy into staging is the limit
    local p = predict.decode(TENSORS, plan, nil, bw)
    near(6e6 / 1.5e10, p.copy_s, "staged copy")
    assert.are.equal("PCIe pinned (staged)", p.limit)
    bw.host_copy = 4e10 -- above it: the pinned link
    near(6e6 / 2e10, predict.decode(TENSORS, plan, nil, bw).copy_s, "pinned-bound staged copy")
    local old = predict.decode(TENSORS, plan, nil, CUDA) -- no host_copy: the driver's pageable rate
    near(6e6 / 1e10, old.copy_s, "pageable copy")
    assert.are.equal("PCIe pageable", old.limit)
    bw.device = "cpu" -- cpu devices keep their own rates whatever host_copy says
    near(predict.decode(TENSORS, plan, nil, CPU).seconds, predict.decode(TENSORS, plan, nil,
      setmetatable({ host_copy = 1.5e10 }, { __index = CPU })).seconds, "cpu unchanged")
  end)

  it("the expert links: pinned and disk as streamed weights, pageable through bounce buffers", function()
    local bw = {}
    for k, v in pairs(CUDA) do bw[k] = v end
    assert.are.equal(bw.h2d_pinned, (predict.expert_stream_link("pinned", bw)))
    assert.are.equal(predict.link("disk", bw), predict.expert_stream_link("disk", bw))
    -- no host_copy: half the host's read (each byte read and written), capped by the pinned link
    local rate, name = predict.expert_stream_link("host", bw)
    assert.are.equal(math.min(bw.h2d_pinned, bw.host_read / 2), rate)
    assert.are.equal("PCIe pinned (bounce)", name)
    bw.host_copy = 1.5e10 -- measured: the threaded copy's rate
    assert.are.equal(1.5e10, (predict.expert_stream_link("mmap", bw)))
    bw.host_copy = 1e12
    assert.are.equal(bw.h2d_pinned, (predict.expert_stream_link("host", bw)))
  end)

  it("cuda: a staged link at the copy's and the DMA's rates beside each other, where measured", function()
    local bw = {}
    for k, v in pairs(CUDA) do bw[k] = v end
    bw.host_copy = 4e10 -- alone: above the pinned link (2e10)
    bw.host_copy_copying, bw.h2d_copying = 1.6e10, 1.8e10 -- beside each other: the copy is the slower
    assert.are.equal(1.6e10, (predict.link("host", bw)))
    assert.are.equal(1.6e10, (predict.expert_stream_link("mmap", bw)))
    bw.host_copy_copying = 3e10 -- the DMA beside the copy is the slower
    assert.are.equal(1.8e10, (predict.link("mmap", bw)))
    assert.are.equal(1.8e10, (predict.expert_stream_link("host", bw)))
    assert.are.equal(bw.h2d_pinned, (predict.link("pinned", bw))) -- a pinned weight has no copy beside it
    local plan = { ["blk.0.ffn_up.weight"] = "host", ["blk.0.ffn_gate.weight"] = "mmap",
      ["blk.0.ffn_down.weight"] = "host" }
    near(6e6 / 1.8e10, predict.decode(TENSORS, plan, nil, bw).copy_s, "staged copy beside the DMA")
  end)

  it("cuda: host compute as the limit, falling back to host_read for an unmeasured dtype", function()
    local plan = { ["output.weight"] = "host" }
    local bw = {}
    for k, v in pairs(CUDA) do bw[k] = v end
    bw.host_matmul = {}
    local p = predict.decode(TENSORS, plan, { ["output.weight"] = true }, bw)
    near(4e6 / 5e10, p.host_s, "host")
    near((1000 + 7e6) / 1e12 + 4e6 / 5e10, p.seconds, "seconds")
    assert.are.equal("host matmul", p.limit)
  end)

  it("cuda: host products beside streamed weights run at the rate measured beside copies", function()
    local bw = {}
    for k, v in pairs(CUDA) do bw[k] = v end
    bw.host_matmul_copying = { q8_0 = 1.6e10 }
    -- the head host-computed while ffn_up streams: both read the host's DRAM at once
    local p = predict.decode(TENSORS, { ["output.weight"] = "host", ["blk.0.ffn_up.weight"] = "pinned" },
      { ["output.weight"] = true }, bw)
    near(4e6 / 1.6e10, p.host_s, "host beside copies")
    -- nothing streamed: the products run alone, at host_matmul
    p = predict.decode(TENSORS, { ["output.weight"] = "host" }, { ["output.weight"] = true }, bw)
    near(4e6 / 2e10, p.host_s, "host alone")
    -- an unmeasured dtype beside copies: host_matmul's rate, then host_read
    bw.host_matmul_copying = { bf16 = 1e9 }
    p = predict.decode(TENSORS, { ["output.weight"] = "host", ["blk.0.ffn_up.weight"] = "pinned" },
      { ["output.weight"] = true }, bw)
    near(4e6 / 2e10, p.host_s, "no copying rate for q8_0")
  end)

  it("cpu: the copies are the engine's own memcpys, so the terms add up", function()
    local plan = { ["blk.0.ffn_up.weight"] = "pinned", ["blk.0.ffn_down.weight"] = "host" }
    local p = predict.decode(TENSORS, plan, { ["blk.0.ffn_down.weight"] = true }, CPU)
    local device = (1000 + 4e6 + 1e6 + 2e6 + 2e6) / 4e10
    local copy = 2e6 / 2e10
    local host = 2e6 / 4e10 -- host_read on cpu
    near(device + copy + host, p.seconds, "seconds")
    assert.are.equal("device read", p.limit)
    assert.is_falsy(p.overlapped)
  end)

  it("tied embeddings: the table is the head, read whole", function()
    local tied = {}
    for _, t in ipairs(TENSORS) do if t.role ~= "lm_head" then tied[#tied + 1] = t end end
    local p = predict.decode(tied, {}, nil, CUDA)
    near((512000 + 7e6) / 1e12, p.seconds, "seconds")
  end)

  it("refuses a bandwidth table without the rates it needs", function()
    assert.has_error(function() predict.decode(TENSORS, {}, nil, { device_read = 1 }) end)
  end)
end)

-- 4 blocks of q8_0, an f16 embedding table and a q8_0 head.
local function gen_model()
  local path = os.tmpname() .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 4, 64, 4, 2, 128
  s.n_vocab, s.n_ctx = 512, 256
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_F16, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 7, 1
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
  return path
end

-- The formula's bounds again, written out over a plan (tests the module, not
-- itself: the sums here are by tier and role, the module's per tensor): the
-- copies and compute fully overlapped (tok/s at most this), and one after the
-- other (at least this); lrun.predict_pipeline's cases below place the ring
-- between the two.
local function by_hand(tensors, plan, hc, bw)
  local device, copy, host = 0, 0, 0
  for _, t in ipairs(tensors) do
    local tier = plan[t.name] or "device"
    if #t.shape == 2 then
      local b = t.role == "embedding" and t.bytes / t.shape[2] or t.bytes
      if tier ~= "device" and hc[t.name] then host = host + b / bw.host_matmul[t.dtype]
      else
        device = device + b / bw.device_read
        if tier == "pinned" then copy = copy + b / bw.h2d_pinned
        elseif tier ~= "device" then copy = copy + b / bw.h2d_pageable end
      end
    end
  end
  return 1 / math.max(copy, device + host), 1 / (copy + device + host)
end

describe("lrun.predict_pipeline (cuda's ring, block by block)", function()
  local pp = require("lrun.predict_pipeline")
  local function blocks(spec)
    local list = {}
    for _, cc in ipairs(spec) do list[#list + 1] = { copy = cc[1], compute = cc[2] } end
    return list
  end

  it("overlaps copies and compute spread evenly: the token-wide max", function()
    local even = blocks({ { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 } })
    assert.are.equal(8, pp.token_s(even, 2))
    local alternating = blocks({ { 0, 2 }, { 2, 0 }, { 0, 2 }, { 2, 0 }, { 0, 2 }, { 2, 0 }, { 0, 2 }, { 2, 0 } })
    assert.are.equal(8, pp.token_s(alternating, 2))
    -- one streamed unit: one slot (the engine's k is at most units - 1), so copy and compute take turns
    assert.are.equal(3.5, pp.token_s(blocks({ { 3, 0.5 } }), 2))
    assert.are.equal(0.5, pp.token_s(blocks({ { 0, 0.5 } }), 2)) -- nothing streamed: compute
  end)

  it("leaves the link idle through a stretch of host blocks once k+1 units are in", function()
    -- four streamed blocks then four host-computed ones: 8 s of copies and 8 of host compute, of which
    -- the ring hides what its slots hold ahead (2 slots: two units, 4 s)
    local stretch = blocks({ { 2, 0 }, { 2, 0 }, { 2, 0 }, { 2, 0 }, { 0, 2 }, { 0, 2 }, { 0, 2 }, { 0, 2 } })
    assert.are.equal(12, pp.token_s(stretch, 2))
    assert.are.equal(10, pp.token_s(stretch, 3))
    assert.are.equal(8, pp.token_s(stretch, 5))
  end)

  it("staged copies wait for the host products of the block before (the CPU issues them after)", function()
    local hybrid, streamed = {}, {}
    for i = 1, 8 do
      hybrid[i] = { copy = 1, compute = 1, host = 0.9 }
      streamed[i] = { copy = 1, compute = 0.1, host = 0 }
    end
    assert.are.equal(8, pp.token_s(hybrid, 2)) -- pinned: refilled behind a device wait
    assert.are.equal(16, pp.token_s(hybrid, 2, true)) -- in turn (H100, session 19: 152 ms for 72 + 78)
    assert.are.equal(8, pp.token_s(streamed, 2, true)) -- nothing on the host: the link
  end)

  it("decides predict.decode's cuda time: the stretched plan slower than the same bytes interleaved", function()
    local bw = { device = "cuda", device_read = 1e15, h2d_pinned = 1e9, host_read = 1e9, host_matmul = 1e9 }
    local tensors, stretch, inter, hc = {}, {}, {}, {}
    for l = 0, 7 do
      local name = "blk." .. l .. ".ffn_down.weight"
      tensors[#tensors + 1] = { name = name, role = "ffn_down", layer = l, dtype = "f16", bytes = 1e9,
        shape = { 1000, 500000 } }
      stretch[name] = "pinned"
      inter[name] = "pinned"
      if l >= 4 then hc[name] = true end
    end
    local hci = {}
    for l = 0, 7, 2 do hci["blk." .. l .. ".ffn_down.weight"] = true end
    local ps = predict.decode(tensors, stretch, hc, bw)
    local pi = predict.decode(tensors, inter, hci, bw)
    near(4, pi.copy_s, "copies")
    assert.is_true(pi.seconds < 4.1, "interleaved: " .. pi.seconds)
    assert.is_true(ps.seconds > 5.9, "stretched: " .. ps.seconds)
  end)

  it("a block split between copies and host products overlaps only when pinned units refill behind a device wait",
    function()
      local bw = { device = "cuda", device_read = 1e15, h2d_pinned = 1e9, host_read = 1e9, host_matmul = 1e9 }
      local tensors, plan, hc = {}, {}, {}
      for l = 0, 7 do
        for _, role in ipairs({ "ffn_up", "ffn_down" }) do
          local name = "blk." .. l .. "." .. role .. ".weight"
          tensors[#tensors + 1] = { name = name, role = role, layer = l, dtype = "f16", bytes = 1e9,
            shape = { 1000, 500000 } }
          plan[name] = "pinned"
          if role == "ffn_down" then hc[name] = true end
        end
      end
      local queued = predict.decode(tensors, plan, hc, bw, { refill_queued = true })
      local in_turn = predict.decode(tensors, plan, hc, bw, { refill_queued = false })
      -- 8 s of copies beside 8 s of host products: overlapped block by block, or in turn (the engine's
      -- default refill, H100 session 19: 71.8 ms of copies and 77.8 ms of host products took 152 ms)
      assert.is_true(queued.seconds < 8.1, "queued: " .. queued.seconds)
      assert.is_true(in_turn.seconds > 15.9, "in turn: " .. in_turn.seconds)
    end)
end)

describe("smart's plans of a generated model under budgets", function()
  local path, m, tensors, total
  setup(function()
    path = gen_model()
    m = assert(lrun.load(path, { progress = false, threads = 1 }))
    tensors = m:tensors()
    total = m:info().weight_bytes
  end)
  teardown(function()
    if m then m:free() end
    os.remove(path)
  end)

  it("carry the prediction of their plan; more off the device is never faster", function()
    local bw = { device = "cuda", device_read = 1e12, h2d_pinned = 2e10, h2d_pageable = 1e10, host_read = 5e10,
      host_matmul = { q8_0 = 1e10, f16 = 1e10 } }
    local last = math.huge
    for _, frac in ipairs({ 0, 0.25, 0.5, 0.9 }) do
      local plan, _, info = smart.plan(tensors, { max_bytes = math.floor(total * frac), bandwidth = bw })
      local fastest, slowest = by_hand(tensors, plan, info.host_compute, bw)
      local got = info.predicted.tok_s
      assert.is_true(got <= fastest * (1 + 1e-9) and got >= slowest * (1 - 1e-9),
        string.format("tok/s at %g: %g outside [%g, %g]", frac, got, slowest, fastest))
      assert.is_true(info.predicted.tok_s <= last * (1 + 1e-12), "slower with more off at " .. frac)
      last = info.predicted.tok_s
    end
    -- nothing off: every byte read on the device
    local _, _, info0 = smart.plan(tensors, { max_bytes = 0, bandwidth = bw })
    assert.are.equal("device read", info0.predicted.limit)
  end)

  it("lrun.load with smart shows the prediction in m:placement() and its explanation", function()
    local probe = assert(residency.plan(m, { policy = "smart", threads = 1 }))
    local budget = probe.reserve_bytes + math.floor(total * 0.6)
    local m2 = assert(lrun.load(path, { progress = false, threads = 1, gpu_budget = budget, policy = "smart" }))
    local p = m2:placement()
    assert.is_table(p.predicted)
    assert.is_true(p.predicted.tok_s > 0)
    assert.matches("predicted decode ~[%d.]+ tok/s %(limit: ", tostring(p))
    m2:free()
  end)
end)

describe("auto-fit", function()
  local path
  setup(function() path = gen_model() end)
  teardown(function() os.remove(path) end)

  local function run(model)
    local _, ids = assert(model:generate({ 1, 300, 42, 7 }, { max_new_tokens = 6 }))
    return ids
  end

  it("a model that fits is left alone", function()
    local m = assert(lrun.load(path, { progress = false, threads = 1, gpu_budget = "256M" }))
    assert.is_nil(m.residency) -- a cpu device reads the weights in place: nothing to fit
    assert.is_true(m:auto_fit({ weights_resident = true }))
    assert.is_nil(m.residency)
    assert.is_nil(m:placement().policy)
    m:free()
  end)

  it("a model that does not fit is placed with smart, says so, and gives the same tokens", function()
    local ref_m = assert(lrun.load(path, { progress = false, threads = 1 }))
    local ref = run(ref_m)
    local total = ref_m:info().weight_bytes
    ref_m:free()
    local probe = assert(lrun.load(path, { progress = false, threads = 1, gpu_budget = "256M" }))
    local _, need = residency.fits(probe, { weights_resident = true, threads = 1 })
    probe:free()
    assert.is_true(need > total)
    -- a budget a quarter of the weights short of engine init
    local budget = need - math.floor(total / 4)
    local m = assert(lrun.load(path, { progress = false, threads = 1, gpu_budget = budget }))
    assert.is_false((residency.fits(m, { weights_resident = true, threads = 1 })))
    local log = require("lrun.log")
    local lines, sink = {}, log.sink
    log.sink = function(line) lines[#lines + 1] = line end
    local result = m:auto_fit({ weights_resident = true })
    log.sink = sink
    assert.is_table(result)
    assert.are.equal("smart", result.policy)
    assert.matches("^lrun: auto%-fit: .* does not fit cpu %(.* free%): placed with smart, see %-%-explain; "
      .. "predicted decode ~[%d.]+ tok/s", lines[1])
    local p = m:placement()
    assert.is_true(p.auto_fit)
    assert.is_true(p.bytes.device < total)
    assert.matches("auto%-fit", tostring(p))
    assert.is_true(compare.same(ref, run(m)), "tokens differ")
    m:free()
  end)
end)
