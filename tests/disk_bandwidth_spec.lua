-- disk_bandwidth_spec: the disk tier's measured read speed
-- (lrun_model_measure_disk_read, lrun.residency.disk_read, cached per file
-- and device) and its use by lrun.predict and policies/smart for disk-tier
-- placements, with given bandwidths.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")
local predict = require("lrun.predict")
local smart = require("policies.smart")

local MiB = 2 ^ 20
local function mat(name, layer, bytes)
  return { name = name, role = "ffn_up", layer = layer, dtype = "q8_0", bytes = bytes, shape = { 1024, 1024 } }
end
local tensors = { mat("blk.0.ffn_up.weight", 0, 100 * MiB), mat("blk.1.ffn_up.weight", 1, 100 * MiB) }
local bw = { h2d_pinned = 25e9, h2d_pageable = 10e9, host_read = 50e9, device_read = 2000e9, device = "cuda",
  host_matmul = 1e9, disk_read = 2e9 }

describe("the disk tier's bandwidth in the predictions", function()
  it("predict: disk-tier weights cross at the disk's read speed", function()
    local p = predict.decode(tensors, { ["blk.0.ffn_up.weight"] = "disk" }, {}, bw)
    assert.are.equal("disk", p.limit)
    assert.is_true(math.abs(p.copy_s - 100 * MiB / 2e9) < 1e-9)
    assert.matches("limit: disk 2.0 GB/s", predict.text(p, bw))
    -- a host-computed disk weight is read from the disk first too
    local h = predict.decode(tensors, { ["blk.0.ffn_up.weight"] = "disk" }, { ["blk.0.ffn_up.weight"] = true },
      { h2d_pinned = 25e9, host_read = 50e9, device_read = 2000e9, device = "cpu", disk_read = 1e9 })
    assert.is_true(math.abs(h.host_s - 100 * MiB / 1e9) < 1e-9)
  end)

  it("smart: a disk-tier plan is costed at the disk's speed and says so", function()
    local cpu = { h2d_pinned = 25e9, host_read = 50e9, device_read = 100e9, device = "cpu", disk_read = 2e9 }
    local _, off, info = smart.plan(tensors, { max_bytes = 100 * MiB, tier = "disk", bandwidth = cpu })
    assert.are.equal(100 * MiB, off)
    -- on the cpu, computed where it lands beats a copy: read at the disk's speed, less the device read it saves
    local B = 100 * MiB
    assert.is_true(math.abs(info.seconds_per_token - (B / 2e9 - B / 100e9)) < 1e-9, tostring(info.seconds_per_token))
    assert.matches("disk tier: reads at 2.0 GB/s %(measured%)", info.explain)
    assert.is_true(math.abs(info.predicted.host_s - B / 2e9) < 1e-9, "predicted at the disk's speed")
    -- the same plan to pinned memory: the link's speed, not the disk's
    local _, _, pinned = smart.plan(tensors, { max_bytes = 100 * MiB, bandwidth = cpu })
    assert.is_true(pinned.seconds_per_token < info.seconds_per_token / 5)
    -- no disk figure given: lrun.predict's assumed one, and the explanation says so
    local nodisk = { h2d_pinned = 25e9, host_read = 50e9, device_read = 100e9, device = "cpu" }
    local _, _, a = smart.plan(tensors, { max_bytes = 100 * MiB, tier = "disk", bandwidth = nodisk })
    assert.matches("%(assumed%)", a.explain)
  end)
end)

describe("the disk's read speed", function()
  local path = os.tmpname() .. ".gguf"
  teardown(function() os.remove(path) end)
  it("is measured on the model's file, once per file and device", function()
    local s = ffi.new("lrun_model_gen_spec")
    s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff, s.n_vocab, s.n_ctx = 8, 256, 4, 2, 512, 512, 256
    s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_F16, 0
    s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 3, 1
    assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
    local m = assert(lrun.load(path, { progress = false, threads = 2 }))
    local out = ffi.new("double[1]")
    assert.are.equal(C.LRUN_OK, C.lrun_model_measure_disk_read(m.handle, 2 ^ 20, out))
    assert.is_true(out[0] > 0)
    assert.are.equal(C.LRUN_E_ARG, C.lrun_model_measure_disk_read(m.handle, 1000, out))
    local residency = require("lrun.residency")
    local r1 = residency.disk_read(m)
    assert.is_true(r1 > 0)
    assert.are.equal(r1, residency.disk_read(m)) -- cached
    -- a smart plan to the disk tier (a host budget on the cpu) weighs it and says so
    m:free()
    m = assert(lrun.load(path, { progress = false, threads = 2, n_ctx = 64, policy = "smart",
      host_budget = 9 * MiB }))
    assert.is_true(m:placement().bytes.disk > 0)
    assert.matches("disk tier: reads at [%d.]+ GB/s %(measured%)", m.residency.explain)
    m:free()
  end)
end)
