-- pack_choice_spec: the automatic packed choice (lua/lrun/pack_choice.lua,
-- docs/packed.md "The automatic choice") on tensor descriptions with given
-- bandwidths: a bf16 7B (Llama-2-7B's shape) under a 10 GiB room on cuda
-- packs the fewest whole blocks that keep it on the device; under 3 GiB with
-- the host computing beside the link, what streams goes packed and what the
-- host computes stays plain, unless the host's packed product is measured
-- faster than its plain one (then host-computed weights go packed too);
-- under 40 GiB it stays plain; a Q4_K model never packs; on cpu the decode
-- into the scratch is priced and plain streaming wins.
-- tests/pack_plan_spec.lua runs the planner itself on a generated model.
package.path = "./?.lua;" .. package.path
local pack_choice = require("lrun.pack_choice")
local predict = require("lrun.predict")

local GiB = 2 ^ 30

-- Llama-2-7B as model:tensors() describes it: 32 blocks, hidden 4096, FFN 11008, an untied 32000-row head.
local function llama7b(dtype)
  local per = dtype == "q4_k" and 144 / 256 or 2 -- bytes per value
  local out = {}
  local function add(name, role, layer, shape, dt)
    dt = dt or dtype
    local n = 1
    for _, d in ipairs(shape) do n = n * d end
    local b = math.floor(n * (dt == "f32" and 4 or per))
    out[#out + 1] = { name = name, role = role, layer = layer, dtype = dt, shape = shape, bytes = b, plain_bytes = b,
      packed = false }
  end
  add("token_embd.weight", "embedding", -1, { 4096, 32000 })
  for l = 0, 31 do
    local p = "blk." .. l .. "."
    add(p .. "attn_norm.weight", "attn_norm", l, { 4096 }, "f32")
    add(p .. "attn_q.weight", "attn_q", l, { 4096, 4096 })
    add(p .. "attn_k.weight", "attn_k", l, { 4096, 4096 })
    add(p .. "attn_v.weight", "attn_v", l, { 4096, 4096 })
    add(p .. "attn_output.weight", "attn_output", l, { 4096, 4096 })
    add(p .. "ffn_norm.weight", "ffn_norm", l, { 4096 }, "f32")
    add(p .. "ffn_gate.weight", "ffn_gate", l, { 4096, 11008 })
    add(p .. "ffn_up.weight", "ffn_up", l, { 4096, 11008 })
    add(p .. "ffn_down.weight", "ffn_down", l, { 11008, 4096 })
  end
  add("output_norm.weight", "output_norm", -1, { 4096 }, "f32")
  add("output.weight", "lm_head", -1, { 4096, 32000 })
  return out
end

-- An H100 host (tests/a3b_shape.lua's figures): pinned PCIe 25 GB/s, HBM read 3 TB/s, the host's DRAM 97.3
-- GB/s and its bf16 decode matmul 40 GB/s; the packed decode kernel 1.2 TB/s, the host decoder 3.6 GB/s.
local CUDA = { device = "cuda", device_read = 3e12, h2d_pinned = 25e9, h2d_pageable = 10e9, host_read = 97.3e9,
  host_matmul = { bf16 = 40e9, q4_k = 62.7e9 }, packed_decode = 1.2e12, host_decode = 3.6e9 }
-- A CPU machine: its memory read 40 GB/s, a memcpy 20 GB/s, the host decoder 1 GB/s.
local CPU = { device = "cpu", device_read = 40e9, h2d_pinned = 20e9, h2d_pageable = 20e9, host_read = 40e9,
  packed_decode = 1e9, host_decode = 1e9 }

local function total(tensors)
  local b = 0
  for _, t in ipairs(tensors) do b = b + t.bytes end
  return b
end

local function choose(tensors, room, bw)
  return pack_choice.choose(tensors, pack_choice.describe_evaluator(tensors, room, bw), { threads = 16 })
end

describe("pack_choice on a bf16 7B", function()
  local tensors = llama7b("bf16")

  it("is 12.6 GiB plain: a 10 GiB room keeps it off the device, 40 GiB holds it", function()
    local b = total(tensors)
    assert.is_true(b > 10 * GiB and b < 40 * GiB, tostring(b))
  end)

  it("cuda, 10 GiB: packs the fewest whole blocks that keep every weight on the device", function()
    local r = choose(tensors, 10 * GiB, CUDA)
    local c = r.chosen
    assert.are_not.equal(r.plain, c)
    assert.is_not_nil(c.blocks, c.label)
    assert.are.equal(0, c.eval.off_bytes)
    assert.is_true(c.eval.device_bytes <= 10 * GiB)
    -- one block fewer does not fit: the bisection found the least
    local fewer = pack_choice.describe_evaluator(tensors, 10 * GiB, CUDA)(pack_choice.options(tensors).blocks(
      c.blocks - 1))
    assert.is_true(fewer.off_bytes > 0)
    -- whole blocks: every matrix of blocks 0 .. j-1, nothing else
    for _, t in ipairs(tensors) do
      local want = pack_choice.options(tensors).all.packs[t.name] and t.layer >= 0 and t.layer < c.blocks
      assert.are.equal(want and true or nil, r.packed[t.name], t.name)
    end
    -- the prediction by hand: plain reads at 3 TB/s, packed blocks at the fused GEMV's speed
    local packed_plain, rest = 0, 0
    for _, t in ipairs(tensors) do
      if r.packed[t.name] then packed_plain = packed_plain + t.plain_bytes
      elseif t.role == "embedding" then rest = rest + t.bytes / 32000 -- one row a token
      elseif t.dtype ~= "f32" then rest = rest + t.bytes end
    end
    local want_s = rest / 3e12 + packed_plain / 3e12 / predict.fused_speed.pex2
    assert.is_true(math.abs(c.eval.decode.seconds - want_s) <= 1e-9 * want_s,
      string.format("want %.9f s, got %.9f", want_s, c.eval.decode.seconds))
    -- plain streams or host-computes 2.6 GiB a token: far slower
    assert.is_true(r.plain.eval.off_bytes > 2 * GiB)
    assert.is_true(c.eval.tok_s > 4 * r.plain.eval.tok_s, string.format("packed %.1f, plain %.1f tok/s",
      c.eval.tok_s, r.plain.eval.tok_s))
    -- the explanation says what was chosen, the bytes and both predictions, and the encode at load
    assert.matches("packed: chosen %(blocks 0%.%.%d+ packed%): [%d.]+ GiB %-> [%d.]+ GiB on the device, predicted "
      .. "decode %d+ tok/s against [%d.]+ tok/s streaming or host%-computing plain", r.text)
    assert.matches("encoded at load: [%d.]+ GiB at 3.60 GB/s %(assumed for 16 threads%)", r.text)
    assert.is_true(r.encode_s > 2 and r.encode_s < 4, tostring(r.encode_s))
  end)

  it("cuda, 40 GiB: plain fits and is faster than any packing", function()
    local r = choose(tensors, 40 * GiB, CUDA)
    assert.are.equal(r.plain, r.chosen)
    assert.are.equal(0, r.plain.eval.off_bytes)
    assert.is_nil(next(r.packed))
    assert.matches("^packed: not chosen: plain predicted decode", r.text)
    -- the options it weighed are slower, never faster (a packed weight decodes where it is read)
    for _, o in ipairs(r.options) do assert.is_true(o.eval.tok_s <= r.plain.eval.tok_s, o.label) end
  end)

  it("cuda, too small for even the packed model: packed blocks stream, fewer bytes off the device", function()
    local r = choose(tensors, 6 * GiB, CUDA)
    assert.are_not.equal(r.plain, r.chosen)
    assert.is_true(r.chosen.eval.off_bytes > 0 and r.chosen.eval.off_bytes < r.plain.eval.off_bytes)
    assert.is_true(r.chosen.eval.tok_s > 1.2 * r.plain.eval.tok_s)
    -- every packing weighed streams: none keeps the model on the device
    for _, o in ipairs(r.options) do assert.is_true(o.eval.off_bytes > 0, o.label) end
  end)

  it("cuda, 3 GiB with host compute: packs what streams, host-computes plain, and beats plain by a fifth", function()
    -- session 26's H100 host: pinned 54.6 GB/s, the host's bf16 products 110 GB/s alone, 83.8 beside copies
    local bw = { device = "cuda", device_read = 3e12, h2d_pinned = 54.6e9, h2d_pageable = 10e9, host_read = 97.3e9,
      host_matmul = { bf16 = 110e9 }, host_matmul_copying = { bf16 = 83.8e9 }, packed_decode = 1.2e12,
      host_decode = 3.6e9 }
    local r = choose(tensors, 3 * GiB, bw)
    local c = r.chosen
    assert.is_true(c.streamed, r.text)
    assert.matches("packed: chosen %(packed where streamed or resident, %d+ matrices%)", r.text)
    -- both packings the offer implies were weighed: what streams alone, and with what stays on the device
    local labels = {}
    for _, o in ipairs(r.options) do labels[#labels + 1] = o.label end
    labels = table.concat(labels, "\n")
    assert.matches("packed where streamed, %d+ matrices", labels)
    assert.matches("packed where streamed or resident, %d+ matrices", labels)
    local e = c.eval
    local streamed, host = 0, 0
    for _, t in ipairs(tensors) do
      local tier = e.plan[t.name] or "device"
      if e.host_compute[t.name] then
        host = host + 1
        assert.is_nil(r.packed[t.name], t.name .. " is host-computed: it stays plain")
      elseif tier ~= "device" and pack_choice.packable({ t })[1] then
        streamed = streamed + 1
        assert.is_true(r.packed[t.name], t.name .. " streams: it crosses packed")
      end
    end
    assert.is_true(streamed > 0 and host > 0, string.format("%d streamed, %d host-computed", streamed, host))
    -- the link carries packed bytes, so less of the model is host-computed and the token is shorter
    assert.is_true(e.tok_s > 1.2 * r.plain.eval.tok_s, string.format("%.2f against plain %.2f tok/s", e.tok_s,
      r.plain.eval.tok_s))
    assert.is_true(e.decode.host_s < r.plain.eval.decode.host_s)
    -- the offer (every matrix packed, host compute plain) is not an option: it only says what streams
    for _, o in ipairs(r.options) do assert.is_nil(o.host_plain, o.label) end
  end)

  it("packed where streamed: what the offer streams, never what it host-computes or reads in the file's form",
    function()
      local o = pack_choice.options(tensors)
      local plan, hc = {}, {}
      plan["blk.0.attn_q.weight"] = "pinned"
      plan["blk.0.attn_k.weight"] = "host"
      plan["blk.0.ffn_up.weight"], hc["blk.0.ffn_up.weight"] = "host", true
      plan["blk.0.ffn_gate.weight"] = "mmap"
      plan["blk.0.ffn_down.weight"] = "disk"
      local e = { plan = plan, host_compute = hc }
      local streamed = o.streamed(e, "none")
      assert.are.same({ ["blk.0.attn_q.weight"] = true, ["blk.0.attn_k.weight"] = true }, streamed.packs)
      assert.are.equal("packed where streamed, 2 matrices", streamed.label)
      -- with what stays on the device: every other candidate but the host-computed and file-form ones
      local with = o.streamed(e, "resident")
      assert.is_true(with.packs["blk.1.attn_q.weight"] and with.packs["token_embd.weight"])
      for _, name in ipairs({ "blk.0.ffn_up.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_down.weight" }) do
        assert.is_nil(with.packs[name], name)
      end
      -- with what the host computes: the streamed and the host-computed ones, never the file's form
      local off = o.streamed(e, "host")
      assert.are.same({ ["blk.0.attn_q.weight"] = true, ["blk.0.attn_k.weight"] = true,
        ["blk.0.ffn_up.weight"] = true }, off.packs)
      assert.are.equal("packed off the device (streamed or host-computed), 3 matrices", off.label)
      -- nothing streamed, or every candidate: options of their own
      for _, with_what in ipairs({ "none", "resident", "host" }) do
        assert.is_nil(o.streamed({ plan = {}, host_compute = {} }, with_what))
      end
    end)

  it("cuda, 3 GiB: where the host multiplies packed weights faster than plain, host-computed ones go packed too",
    function()
      -- session 26's H100 host as above, and lrun_model_measure_packed_host_matmul's pair: the packed product
      -- 1.25x the plain one on the same DRAM span (16 cores decoding beside DRAM's limit)
      local bw = { device = "cuda", device_read = 3e12, h2d_pinned = 54.6e9, h2d_pageable = 10e9, host_read = 97.3e9,
        host_matmul = { bf16 = 110e9 }, host_matmul_copying = { bf16 = 83.8e9 }, packed_decode = 1.2e12,
        host_decode = 3.6e9, host_packed_matmul = 125e9, host_packed_plain = 100e9 }
      local r = choose(tensors, 3 * GiB, bw)
      local c = r.chosen
      -- the offer's third packing was weighed, and the packing chosen host-computes packed weights
      local labels, kept_plain = {}, nil -- kept_plain: session 27's choice, the host's products plain
      for _, o in ipairs(r.options) do
        labels[#labels + 1] = o.label
        if o.resident then kept_plain = o end
      end
      assert.matches("packed off the device %(streamed or host%-computed%), %d+ matrices", table.concat(labels, "\n"))
      local host_packed = 0
      for _, t in ipairs(tensors) do
        if c.eval.host_compute[t.name] and r.packed[t.name] then host_packed = host_packed + 1 end
      end
      assert.is_true(host_packed > 0, r.text)
      -- faster than the packing whose host products stay plain
      assert.is_true(c.eval.tok_s > 1.05 * kept_plain.eval.tok_s, r.text)
      -- where the packed product is the slower (the build machine's 2 cores: 0.6x), the host's stay plain
      bw.host_packed_matmul = 60e9
      r = choose(tensors, 3 * GiB, bw)
      assert.is_falsy(r.chosen.host, r.text)
      for _, t in ipairs(tensors) do
        if r.chosen.eval.host_compute[t.name] then assert.is_nil(r.packed[t.name], t.name) end
      end
    end)

  it("cpu: a resident packed weight decodes into the scratch before each use; streaming plain wins", function()
    local room = 10 * GiB
    local r = choose(tensors, room, CPU)
    assert.are.equal(r.plain, r.chosen)
    local o
    for _, x in ipairs(r.options) do if x.blocks and not o then o = x end end
    assert.is_not_nil(o and o.eval, o and o.label)
    -- every packed weight on the device is priced at plain bytes / the host decoder on top of its read
    local dec = 0
    for _, t in ipairs(tensors) do
      if o.packs[t.name] and (o.eval.plan[t.name] or "device") == "device" then dec = dec + t.plain_bytes / 1e9 end
    end
    assert.is_true(dec > 0)
    assert.is_true(math.abs(o.eval.decode.packed_decode_s - dec) <= 1e-9 * dec)
    assert.is_true(o.eval.tok_s < r.plain.eval.tok_s)
  end)

  it("leaves out the tensors the caller placed (-ot)", function()
    local exclude = {}
    for _, t in ipairs(tensors) do if t.role == "ffn_down" then exclude[t.name] = true end end
    local r = pack_choice.choose(tensors, pack_choice.describe_evaluator(tensors, 10 * GiB, CUDA),
      { exclude = exclude })
    for name in pairs(r.packed) do assert.is_nil(exclude[name], name) end
  end)
end)

describe("pack_choice on a Q4_K 7B", function()
  it("never packs: quantized types are not candidates, whatever the room", function()
    local tensors = llama7b("q4_k")
    local r = choose(tensors, 2 * GiB, CUDA)
    assert.are.equal(r.plain, r.chosen)
    assert.are.equal(1, #r.options)
    assert.is_nil(next(pack_choice.packable(tensors)))
  end)
end)

describe("pack_choice's assumed encode rate", function()
  it("passes through the two measurements: one thread 0.56 GB/s, sixteen 3.6 GB/s", function()
    assert.are.equal(0.56e9, pack_choice.assumed_encode_rate(1))
    assert.is_true(math.abs(pack_choice.assumed_encode_rate(16) - 3.6e9) < 0.05e9)
    assert.are.equal(3.6e9, pack_choice.assumed_encode_rate(64))
  end)
end)
