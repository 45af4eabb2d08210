-- placement_size_fixture: the sweep that residency_spec (CPU) and
-- residency_gpu_spec (CUDA) both run over lrun_engine_size_placement: for
-- each of four placements by tensor and each cache kind, size the placement
-- while every weight is still on the device (nothing may be taken), apply
-- it, make the engine with the same options, fill every sequence to n_ctx
-- positions, and hand the sizes, the engine's stats and the device's
-- counters to the spec's own checks (the CPU and CUDA engines account a
-- few things differently: pool slack, the cache's growth).
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local residency = require("lrun.residency")
local assert = require("luassert")

local M = {}

M.KINDS = { "dynamic", "static", "offloaded", "offloaded_static", "quantized" }

--- The lrun_engine_opts of a placed engine of this shape; the quantized
-- cache keeps 32 positions exact so that n_ctx positions also grow its codes.
function M.engine_opts(kind, k, n_seq, n_ctx, kv_dtype, threads)
  local eo = ffi.new("lrun_engine_opts")
  eo.n_seq_max, eo.n_ctx_max = n_seq, n_ctx
  if threads then eo.n_threads = threads end
  eo.cache_kind = C["LRUN_CACHE_KIND_" .. kind:upper()]
  eo.weight_mode = C.LRUN_WEIGHT_MODE_AS_PLACED
  eo.prefetch_layers = k
  eo.kv_dtype = kv_dtype or C.LRUN_KV_DTYPE_F16
  if kind == "quantized" then eo.kv_residual_len = 32 end
  return eo
end

--- Tiers and host-compute flags of a plan, indexed like the model's tensors.
function M.arrays(m, plan, host)
  local n = tonumber(C.lrun_model_tensor_count(m.handle))
  local tiers, hc = ffi.new("lrun_tier[?]", n), ffi.new("int8_t[?]", n)
  local tier_of = { device = 0, pinned = 1, host = 2, mmap = 3 }
  for i = 0, n - 1 do
    local name = ffi.string(C.lrun_tensor_name(C.lrun_model_tensor(m.handle, i)))
    tiers[i], hc[i] = tier_of[plan[name] or "device"], host[name] and 1 or 0
  end
  return tiers, hc
end

--- Every sequence to n_ctx positions: a prompt of 64 tokens, then chunks of
-- 24 (under the CPU slots' 32-position padding, so that a CPU engine regrows
-- its slots where the size expects); token ids below vocab.
function M.fill(e, n_seq, n_ctx, vocab)
  local logits, n_out = ffi.new("float[?]", 64 * vocab), ffi.new("int64_t[1]")
  local pos = 0
  while pos < n_ctx do
    local n = math.min(pos == 0 and 64 or 24, n_ctx - pos)
    local toks, seqs = ffi.new("int32_t[?]", n * n_seq), ffi.new("int32_t[?]", n * n_seq)
    for s = 0, n_seq - 1 do
      for i = 0, n - 1 do toks[s * n + i], seqs[s * n + i] = (pos + 7 * i + s) % (vocab - 12) + 3, s end
    end
    assert(C.lrun_engine_step(e, n * n_seq, toks, seqs, nil, logits, 64, n_out) == C.LRUN_OK, lf.last_error())
    pos = pos + n
  end
end

--- Placements by tensor: nothing off; blocks 1-3 and the head streamed from
-- stream_tier; all off in off_tier, the down projections and the head
-- computed on the host; the table and block 2 in host memory, block 3 pinned.
function M.placements(m, off_tier, stream_tier)
  local all_off, streamed, mixed = {}, {}, {}
  local host_all, host_mixed = {}, {}
  for _, t in ipairs(m:tensors()) do
    all_off[t.name] = off_tier
    if t.layer >= 1 or t.role == "lm_head" then streamed[t.name] = stream_tier end
    if t.role == "ffn_down" or t.role == "lm_head" then host_all[t.name] = true end
    if t.role == "embedding" or t.layer == 2 then mixed[t.name] = "host" end
    if t.layer == 3 then mixed[t.name] = "pinned" end
    if t.layer == 2 and t.role == "attn_v" then host_mixed[t.name] = true end
  end
  return {
    { "all on the device", {}, {} },
    { "blocks 1-3 and the head streamed", streamed, {} },
    { "all off, down projections and head on the host", all_off, host_all },
    { "table and block 2 off, block 3 pinned", mixed, host_mixed },
  }
end

--- The sweep over m's placements and the cache kinds. o: n_ctx, vocab,
-- threads (optional), off_tier, stream_tier, all_resident_first (check
-- that the unplaced model is all on the device), check_freed (the engine's
-- free gives back all it took), and check(c), called after the
-- engine is made (c.after_init = true) and again after the fill, with
-- c = { size, stats, dev, before (device bytes in use before init), what,
-- k, n_seq, engine }.
function M.sweep(m, o)
  local dev = C.lrun_model_device(m.handle)
  for pi, p in ipairs(M.placements(m, o.off_tier, o.stream_tier)) do
    for ki, kind in ipairs(M.KINDS) do
      local k, n_seq = 1 + (pi + ki) % 3, 1 + ki % 2
      local eo = M.engine_opts(kind, k, n_seq, o.n_ctx, ki == 4 and C.LRUN_KV_DTYPE_F32 or nil, o.threads)
      assert(residency.apply(m, { plan = {}, host_compute = {} }))
      -- sized while every weight is still on the device: nothing moves, nothing is taken
      local tiers, hc = M.arrays(m, p[2], p[3])
      local used0 = tonumber(C.lrun_device_used(dev))
      local size = ffi.new("lrun_placement_size")
      assert.are.equal(C.LRUN_OK, C.lrun_engine_size_placement(size, m.handle, eo, tiers, hc))
      assert.are.equal(used0, tonumber(C.lrun_device_used(dev)))
      if o.all_resident_first then assert.are.equal(m:info().weight_bytes, m:placement().bytes.device) end
      -- the same placement applied, and the engine made with the same options
      assert(residency.apply(m, { plan = p[2], host_compute = p[3] }))
      local c = { size = size, dev = dev, k = k, n_seq = n_seq,
        what = string.format("%s, %s, k = %d, %d sequences", p[1], kind, k, n_seq) }
      c.before = tonumber(C.lrun_device_used(dev))
      C.lrun_device_reset_peak(dev)
      local e = ffi.new("lrun_engine *[1]")
      assert(C.lrun_engine_init(e, m.handle, eo) == C.LRUN_OK, lf.last_error())
      c.engine, c.stats = e[0], ffi.new("lrun_engine_stats")
      C.lrun_engine_get_stats(e[0], c.stats)
      assert.are.equal(tonumber(size.init_bytes), tonumber(C.lrun_device_used(dev)) - c.before, c.what)
      assert.are.equal(tonumber(size.weight_bytes), tonumber(c.stats.weight_device_bytes), c.what)
      assert.are.equal(tonumber(size.slot_bytes), tonumber(c.stats.slot_bytes), c.what)
      assert.are.equal(tonumber(size.scratch_bytes), tonumber(c.stats.scratch_bytes), c.what)
      assert.are.equal(k, size.prefetch_layers)
      c.after_init = true
      o.check(c)
      M.fill(e[0], n_seq, o.n_ctx, o.vocab)
      c.after_init = false
      o.check(c)
      C.lrun_engine_free(e[0])
      if o.check_freed then assert.are.equal(c.before, tonumber(C.lrun_device_used(dev)), c.what) end
    end
  end
end

return M
