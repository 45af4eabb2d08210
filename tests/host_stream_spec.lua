-- host_stream_spec: prompts over host-computed matrices (lua/lrun/host_stream.lua,
-- the rule of runtime/cuda/engine_cuda_host_stream.c): which matrices a
-- chunk streams and from how many rows, the planner's threshold from given
-- rates (computed by hand here), and what lrun.predict.prefill charges for
-- them (packed ones at their packed bytes and a decode); then the load option and the plan's threshold on a generated model
-- (cpu: nothing streams there, the engine's option is only carried).
package.path = "./?.lua;" .. package.path
local hs = require("lrun.host_stream")
local predict = require("lrun.predict")
local near = require("tests.predict_fixture").near

-- one 7B-shaped block (bf16), shapes innermost first
local function block(l)
  local ts = {}
  local function add(role, k, n)
    ts[#ts + 1] = { name = string.format("blk.%d.%s.weight", l, role), role = role, layer = l, dtype = "bf16",
      bytes = k * n * 2, shape = { k, n } }
  end
  add("attn_q", 4096, 4096)
  add("ffn_up", 4096, 11008)
  add("ffn_down", 11008, 4096)
  return ts
end

local BW = { device = "cuda", h2d_pinned = 55e9, host_copy = 30e9, host_read = 95e9, device_read = 3e12,
  host_matmul = { bf16 = 88e9 }, host_gemm = { bf16 = 1e12 }, device_matmul = { bf16 = 6e14 } }

local function host_all(ts, tier)
  local plan, hc = {}, {}
  for _, t in ipairs(ts) do plan[t.name], hc[t.name] = tier, true end
  return plan, hc
end

describe("lrun.host_stream", function()
  it("the engine's rows: the option, never at a decode chunk's size, -1 off", function()
    assert.are.equal(64, hs.rows(64))
    assert.are.equal(hs.gemv_max_rows + 1, hs.rows(4))
    assert.is_nil(hs.rows(-1))
    local env = tonumber(os.getenv("LRUN_CUDA_HOST_STREAM_ROWS") or "")
    if env == nil then assert.are.equal(hs.default_rows, hs.rows(0)) end
  end)

  it("streams 2-D block matrices in memory only, plain or packed", function()
    local t = block(0)[2]
    assert.is_true(hs.coverable(t, "host"))
    assert.is_true(hs.coverable(t, "pinned"))
    assert.is_true(hs.coverable(t, "mmap"))
    assert.is_false(hs.coverable(t, "disk"))
    assert.is_false(hs.coverable(t, "device"))
    -- packed: it crosses packed and is decoded on the device (session 28)
    local packed = setmetatable({ packed = true }, { __index = t })
    assert.is_true(hs.coverable(packed, "host"))
    local head = { name = "output.weight", role = "lm_head", layer = -1, shape = { 4096, 32000 } }
    assert.is_false(hs.coverable(head, "host"))
    local exps = { name = "blk.0.ffn_up_exps.weight", role = "ffn_up_exps", layer = 0, shape = { 2048, 768, 128 } }
    assert.is_false(hs.coverable(exps, "host"))
    assert.is_true(hs.streams(t, "host", 512, 32))
    assert.is_false(hs.streams(t, "host", 31, 32))
    assert.is_false(hs.streams(t, "host", 512, -1))
  end)

  it("threshold: where the host's products outlast the copies", function()
    local ts = block(0)
    -- pageable: copies at min(PCIe, the threaded copy) = 30 GB/s; each matrix's host time at r rows is
    -- max(bytes / 88e9, r · 2 · params / 1e12), params = bytes / 2: r · bytes / 1e12 passes bytes / 30e9
    -- at r = 1e12 / 30e9 = 33.3
    local plan, hc = host_all(ts, "host")
    assert.are.equal(34, hs.threshold(ts, plan, hc, BW))
    -- pinned: by DMA at 55 GB/s, so from 1e12 / 55e9 = 18.2
    plan = host_all(ts, "pinned")
    assert.are.equal(19, hs.threshold(ts, plan, hc, BW))
    -- a host slower than its copies at any chunk streams from the smallest chunk the rule allows
    local slow = setmetatable({ host_gemm = { bf16 = 1e11 } }, { __index = BW })
    assert.are.equal(hs.gemv_max_rows + 1, hs.threshold(ts, plan, hc, slow))
    -- a host that never loses (a copy slower than any plausible chunk's flops): -1
    local fast = setmetatable({ host_gemm = { bf16 = 1e30 } }, { __index = BW })
    assert.are.equal(-1, hs.threshold(ts, plan, hc, fast))
    -- no batched host rate, or nothing host-computed: nil (the engine's default)
    local none = setmetatable({ host_gemm = false }, { __index = BW })
    assert.is_nil(hs.threshold(ts, plan, hc, none))
    assert.is_nil(hs.threshold(ts, plan, {}, BW))
    -- packed (0.70 of the bytes cross, a 1.2 TB/s decode behind them): pageable copies of 0.7 · bytes / 30e9 +
    -- bytes / 1.2e12 against r · bytes / 1e12 on the host: from r = 1e12 · (0.7 / 30e9 + 1 / 1.2e12) = 24.2
    local packed = {}
    for i, t in ipairs(ts) do
      packed[i] = setmetatable({ packed = true, codec = "pex2", plain_bytes = t.bytes, bytes = 0.7 * t.bytes },
        { __index = t })
    end
    plan = host_all(ts, "host")
    assert.are.equal(25, hs.threshold(packed, plan, hc, setmetatable({ packed_decode = 1.2e12 }, { __index = BW })))
  end)
end)

describe("predict.prefill with host-computed matrices on cuda", function()
  local ts = block(0)
  local plan, hc = host_all(ts, "host")
  local bytes = 0
  for _, t in ipairs(ts) do bytes = bytes + t.bytes end

  it("a long chunk copies them over the bounce link and multiplies them on the device", function()
    local p = predict.prefill(ts, plan, hc, BW, { tokens = 512, host_stream_rows = 32 })
    near(bytes, p.host_streamed, "bytes multiplied on the device")
    assert.are.equal(0, p.host_s)
    near(bytes / 30e9, p.copy_s, "copies at min(PCIe, host copy)")
    near(bytes, p.bytes.streamed, "streamed bytes")
    near(2 * 512 * (bytes / 2) / 6e14, p.device_s, "device products")
    near(math.max(p.copy_s, p.device_s), p.seconds, "seconds")
    assert.truthy(predict.prefill_text(p):find("host-computed matrices multiplied on the device", 1, true))
  end)

  it("packed ones cross at their packed bytes and are decoded behind the copies", function()
    local packed = {}
    for i, t in ipairs(ts) do
      packed[i] = setmetatable({ packed = true, codec = "pex2", plain_bytes = t.bytes,
        bytes = math.floor(0.7 * t.bytes) }, { __index = t })
    end
    local pb = 0
    for _, t in ipairs(packed) do pb = pb + t.bytes end
    local bw = setmetatable({ packed_decode = 1.2e12 }, { __index = BW })
    local p = predict.prefill(packed, plan, hc, bw, { tokens = 512, host_stream_rows = 32 })
    near(pb, p.host_streamed, "packed bytes streamed")
    near(pb / 30e9 + bytes / 1.2e12, p.copy_s, "copies, then the decode on the same stream")
    assert.are.equal(0, p.host_s)
  end)

  it("a chunk below the rows, or the option off, computes them on the host", function()
    for _, q in ipairs({ { tokens = 16, host_stream_rows = 32 }, { tokens = 512, host_stream_rows = -1 } }) do
      local p = predict.prefill(ts, plan, hc, BW, q)
      assert.is_nil(p.host_streamed)
      near(2 * q.tokens * (bytes / 2) / 1e12, p.host_s, "host products at " .. q.tokens .. " rows")
      assert.are.equal(0, p.copy_s)
    end
  end)

  it("the cpu never streams (its compute is the host's)", function()
    local cpu = setmetatable({ device = "cpu", device_matmul = { bf16 = 1e12 } }, { __index = BW })
    local p = predict.prefill(ts, plan, hc, cpu, { tokens = 512, host_stream_rows = 32 })
    assert.is_nil(p.host_streamed)
  end)
end)

describe("the load option host_stream_rows", function()
  local lrun = require("lrun")
  local fixture = require("tests.predict_fixture")

  it("refuses what is neither a whole number >= 1 nor -1", function()
    local path, m = fixture.model(7)
    m:free()
    for _, bad in ipairs({ 0, -2, 1.5 }) do
      local ok, err = pcall(lrun.load, path, { progress = false, host_stream_rows = bad })
      assert.is_false(ok)
      assert.truthy(tostring(err):find("host_stream_rows", 1, true), tostring(err))
    end
    local m2 = assert(lrun.load(path, { progress = false, threads = 1, host_stream_rows = -1 }))
    assert.are.equal(-1, m2.host_stream_rows)
    m2:free()
    os.remove(path)
  end)
end)
