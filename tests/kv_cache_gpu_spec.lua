-- kv_cache_gpu_spec: the five KV cache kinds on the CUDA engine
-- (runtime/cuda/engine_cuda_kv.c, docs/kv-cache.md "On the GPU"), on the default
-- model (LRUN_MODEL) with three sequences of different lengths, prompts in
-- several chunks, copies, truncation and beam reordering:
--   static, offloaded and offloaded_static give the dynamic cache's logits
--   bit for bit; quantized (int8, int4) reports its deviation from them,
--   and its fused decode attention agrees with the slot path;
--   offloaded holds two layers on the device; lrun_engine_seq_reorder equals
--   the same reordering done with seq_copy and copies only repeated sources;
--   lrun_engine_seq_fill_random builds long contexts for every kind.
-- Named *_gpu_spec.lua so that `make test-gpu` runs it; `make test` skips it
-- where no GPU is visible.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same, rel_diff = compare.same, compare.rel_diff
local lrun = require("lrun")
local lf = require("lrun.ffi")
local ffi = require("ffi")
local C = lf.C

local path = os.getenv("LRUN_MODEL")
local has_gpu = C.lrun_cuda_device_count() > 0

local N_SEQ, N_BATCH, N_CTX = 3, 64, 512

-- Steps of a script over an engine: prompts of 150, 90 and 20 tokens (the
-- first two in several chunks of N_BATCH), 12 decode steps of all three, a
-- copy of sequence 0 into 2, a truncation of 1, 6 more steps. Returns every
-- logit row in order, as one Lua array.
local function script(engine, n_vocab)
  local out = {}
  local logits = ffi.new("float[?]", N_SEQ * n_vocab)
  local n_out = ffi.new("int64_t[1]")
  for s = 0, N_SEQ - 1 do assert(C.lrun_engine_seq_truncate(engine, s, 0) == C.LRUN_OK) end
  local function step(tokens, seqs)
    local n = #tokens
    local t, s = ffi.new("int32_t[?]", n), ffi.new("int32_t[?]", n)
    for i = 1, n do t[i - 1], s[i - 1] = tokens[i], seqs[i] end
    local st = C.lrun_engine_step(engine, n, t, s, nil, logits, N_SEQ, n_out)
    assert(st == C.LRUN_OK, lf.last_error())
    for i = 0, tonumber(n_out[0]) * n_vocab - 1 do out[#out + 1] = logits[i] end
  end
  for seq, len in ipairs({ 150, 90, 20 }) do
    local t, s = {}, {}
    for i = 1, len do t[i], s[i] = 100 + (i * 37 + seq * 101) % 20000, seq - 1 end
    step(t, s)
  end
  local function decode(k)
    for i = 1, k do step({ 500 + i, 700 + i, 900 + i }, { 0, 1, 2 }) end
  end
  decode(12)
  -- 150 more prompt tokens for sequence 0: the cache grows from 256 positions with what it holds
  local t, q = {}, {}
  for i = 1, 150 do t[i], q[i] = 300 + (i * 53) % 20000, 0 end
  step(t, q)
  assert(C.lrun_engine_seq_copy(engine, 2, 0) == C.LRUN_OK, lf.last_error())
  assert(C.lrun_engine_seq_truncate(engine, 1, 50) == C.LRUN_OK, lf.last_error())
  decode(6)
  return out
end

local function stats(engine)
  local s = ffi.new("lrun_engine_stats")
  C.lrun_engine_get_stats(engine, s)
  return s
end

describe("KV cache kinds on cuda", function()
  if not has_gpu or not path then
    pending(not has_gpu and "no CUDA device" or "LRUN_MODEL is not set")
    return
  end
  local m, ref, info
  setup(function()
    m = assert(lrun.load(path, { device = "cuda:0", progress = false, n_ctx = N_CTX }))
    ref = script(assert(m:engine({ n_seq = N_SEQ, n_batch = N_BATCH, cache_implementation = "dynamic" })), m.n_vocab)
    info = C.lrun_model_get_info(m.handle)
  end)
  teardown(function() if m then m:free() end end)

  for _, impl in ipairs({ "static", "offloaded", "offloaded_static" }) do
    it(impl .. " gives the dynamic cache's logits bit for bit", function()
      local e = assert(m:engine({ n_seq = N_SEQ, n_batch = N_BATCH, cache_implementation = impl }))
      local got = script(e, m.n_vocab)
      assert.are.equal(#ref, #got)
      assert.is_true(same(ref, got), impl .. ": rel diff " .. rel_diff(ref, got))
      local s = stats(e)
      if impl:match("offloaded") then
        -- two slots of one layer each: (2 slots) x (keys, values) x n_seq x cap x kv_dim x f16
        local kv_dim = tonumber(info.n_head_kv) * tonumber(info.head_dim)
        local cap = impl == "offloaded_static" and N_CTX or 512 -- grown from 256
        assert.are.equal(2 * 2 * N_SEQ * cap * kv_dim * 2, tonumber(s.kv_bytes))
        assert.is_true(tonumber(s.kv_bytes_moved) > 0)
        print(string.format("# %s: device KV %.1f MB, %.1f MB moved host <-> device", impl,
          tonumber(s.kv_bytes) / 1e6, tonumber(s.kv_bytes_moved) / 1e6))
      end
    end)
  end

  for _, bits in ipairs({ 8, 4 }) do
    it("quantized int" .. bits .. " reports its deviation from dynamic", function()
      local e = assert(m:engine({ n_seq = N_SEQ, n_batch = N_BATCH, cache_implementation = "quantized",
        cache_config = { nbits = bits, residual_length = 32 } }))
      local got = script(e, m.n_vocab)
      assert.are.equal(#ref, #got)
      local d = rel_diff(ref, got)
      -- top-1 agreement over every row
      local n_vocab, rows, agree = m.n_vocab, #ref / m.n_vocab, 0
      for r = 0, rows - 1 do
        local ba, bb, ia, ib = -math.huge, -math.huge, 0, 0
        for j = 1, n_vocab do
          local a, b = ref[r * n_vocab + j], got[r * n_vocab + j]
          if a > ba then ba, ia = a, j end
          if b > bb then bb, ib = b, j end
        end
        if ia == ib then agree = agree + 1 end
      end
      print(string.format("# quantized int%d (residual 32): logits rel diff %.3e, top-1 agrees on %d of %d rows",
        bits, d, agree, rows))
      assert.is_true(d == d and d < (bits == 8 and 0.1 or 0.5), "rel diff " .. d)
      assert.is_true(agree >= rows * (bits == 8 and 0.9 or 0.6))
      assert.is_true(d > 0, "codes are read: the prompts are longer than the residual window")
    end)
  end

  -- Decode chunks of the quantized cache read codes and ring in one kernel
  -- (lrun_k_attention_quant); LRUN_CUDA_QUANT_FUSED=0, read at engine init,
  -- keeps them on the slot path (dequantize into a slot, then attention).
  -- Both see the same values (codes rounded to f16, the ring's exact rows);
  -- only the order of the f32 sums differs. The two engines take the same
  -- prompts (chunks past 8 tokens: the slot path in both, so the same
  -- codes), then 16 decode steps of all three sequences: fewer than the
  -- residual window, so what the decodes write is read from the ring only.
  -- (Over the whole script above the two drift further apart: a decode's
  -- f32-level differences flip a code now and then once its rows are
  -- quantized, and later positions build on those codes.)
  for _, bits in ipairs({ 8, 4 }) do
    it("quantized int" .. bits .. ": the fused decode attention gives the slot path's logits", function()
      pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);")
      local n_vocab = m.n_vocab
      local function run(fused)
        m:release_engine() -- a kept engine of the same shape would be reused, its choice made at init
        if fused then ffi.C.unsetenv("LRUN_CUDA_QUANT_FUSED") else ffi.C.setenv("LRUN_CUDA_QUANT_FUSED", "0", 1) end
        local e = assert(m:engine({ n_seq = N_SEQ, n_batch = N_BATCH, cache_implementation = "quantized",
          cache_config = { nbits = bits, residual_length = 32 } }))
        ffi.C.unsetenv("LRUN_CUDA_QUANT_FUSED")
        local logits, n_out = ffi.new("float[?]", N_SEQ * n_vocab), ffi.new("int64_t[1]")
        local function step(tokens, seqs)
          local n = #tokens
          local t, q = ffi.new("int32_t[?]", n), ffi.new("int32_t[?]", n)
          for i = 1, n do t[i - 1], q[i - 1] = tokens[i], seqs[i] end
          assert(C.lrun_engine_step(e, n, t, q, nil, logits, N_SEQ, n_out) == C.LRUN_OK, lf.last_error())
        end
        for s = 0, N_SEQ - 1 do assert(C.lrun_engine_seq_truncate(e, s, 0) == C.LRUN_OK) end
        for seq, len in ipairs({ 150, 90, 20 }) do
          local t, q = {}, {}
          for i = 1, len do t[i], q[i] = 100 + (i * 37 + seq * 101) % 20000, seq - 1 end
          step(t, q)
        end
        local moved, out = tonumber(stats(e).kv_bytes_moved), {}
        for i = 1, 16 do
          step({ 500 + i, 700 + i, 900 + i }, { 0, 1, 2 })
          for j = 0, N_SEQ * n_vocab - 1 do out[#out + 1] = logits[j] end
        end
        return out, tonumber(stats(e).kv_bytes_moved) - moved
      end
      local slot, slot_moved = run(false)
      local fused, fused_moved = run(true)
      assert.are.equal(#slot, #fused)
      local a, b = {}, {}
      for j = 1, N_SEQ * n_vocab do a[j], b[j] = slot[j], fused[j] end
      local first = rel_diff(a, b)
      local d = rel_diff(slot, fused)
      print(string.format("# quantized int%d (residual 32): fused decode vs slot path, logits rel diff %.3e at the "
        .. "first step, %.3e over 16; the decodes moved %.2f MB to and from slots, fused %.2f MB", bits, first, d,
        slot_moved / 1e6, fused_moved / 1e6))
      assert.is_true(d == d and d <= 1e-3, "rel diff " .. d)
      -- fused: only the new rows' write into codes and ring, no fills
      local kv_dim = tonumber(info.n_head_kv) * tonumber(info.head_dim)
      assert.are.equal(16 * N_SEQ * 2 * kv_dim * 2 * tonumber(info.n_layer), fused_moved)
      assert.is_true(slot_moved > fused_moved)
    end)
  end

  for _, impl in ipairs({ "dynamic", "offloaded", "quantized" }) do
    it(impl .. ": seq_reorder equals the same reordering by seq_copy, copying only repeated sources", function()
      local function prepare()
        local e = assert(m:engine({ n_seq = 4, n_batch = N_BATCH, cache_implementation = impl }))
        for s = 0, 3 do assert(C.lrun_engine_seq_truncate(e, s, 0) == C.LRUN_OK) end
        local n = 0
        for s = 0, 3 do
          local len = 30 + 11 * s
          local t, q = ffi.new("int32_t[?]", len), ffi.new("int32_t[?]", len)
          for i = 0, len - 1 do t[i], q[i] = 200 + (i * 13 + s * 7) % 5000, s end
          local lg = ffi.new("float[?]", m.n_vocab)
          local no = ffi.new("int64_t[1]")
          assert(C.lrun_engine_step(e, len, t, q, nil, lg, 1, no) == C.LRUN_OK, lf.last_error())
          n = n + len
        end
        return e
      end
      local function next_logits(e)
        local t, q = ffi.new("int32_t[4]", { 11, 12, 13, 14 }), ffi.new("int32_t[4]", { 0, 1, 2, 3 })
        local lg = ffi.new("float[?]", 4 * m.n_vocab)
        local no = ffi.new("int64_t[1]")
        assert(C.lrun_engine_step(e, 4, t, q, nil, lg, 4, no) == C.LRUN_OK, lf.last_error())
        local out = {}
        for i = 0, 4 * m.n_vocab - 1 do out[i + 1] = lg[i] end
        return out
      end
      -- sequences 0..2 become 1, 1, 3; 3 (a source past n) keeps its own
      local src = { 1, 1, 3 }
      local e = prepare()
      local lens = {}
      for d = 1, 3 do lens[d] = tonumber(C.lrun_engine_seq_len(e, src[d])) end
      C.lrun_engine_reset_stats(e)
      assert(C.lrun_engine_seq_reorder(e, ffi.new("int64_t[3]", src), 3) == C.LRUN_OK, lf.last_error())
      local copied = tonumber(stats(e).kv_bytes_copied)
      for d = 1, 3 do assert.are.equal(lens[d], tonumber(C.lrun_engine_seq_len(e, d - 1))) end
      local a = next_logits(e)
      -- the same by copies, through a spare order: 0 <- 1 first would lose nothing here
      e = prepare()
      assert(C.lrun_engine_seq_copy(e, 0, 1) == C.LRUN_OK)
      assert(C.lrun_engine_seq_copy(e, 2, 3) == C.LRUN_OK)
      local b = next_logits(e)
      assert.is_true(same(a, b), "rel diff " .. rel_diff(a, b))
      -- 1 moves to 0 free; the second taker of 1 and the taker of 3 (past n) are copied
      local kv_dim = tonumber(info.n_head_kv) * tonumber(info.head_dim)
      -- bytes per position in the store: f16 rows, or int8 codes and a (scale, min) pair per group of 64
      local per_pos = 2 * tonumber(info.n_layer) * (impl == "quantized" and kv_dim + kv_dim / 64 * 8 or kv_dim * 2)
      assert.are.equal((lens[2] + lens[3]) * per_pos, copied)
      assert.is_true(copied > 0)
    end)
  end

  it("offloaded with numerics = \"exact\" gives the CPU engine's logits bit for bit", function()
    -- the exact path's kernels read the offloaded slots as they read a resident cache
    local cpu = assert(lrun.load(path, { device = "cpu", progress = false, n_ctx = N_CTX }))
    local want = script(assert(cpu:engine({ n_seq = N_SEQ, n_batch = N_BATCH, cache_implementation = "dynamic" })),
      cpu.n_vocab)
    cpu:free()
    local gx = assert(lrun.load(path, { device = "cuda:0", progress = false, n_ctx = N_CTX, numerics = "exact" }))
    local got = script(assert(gx:engine({ n_seq = N_SEQ, n_batch = N_BATCH, cache_implementation = "offloaded" })),
      gx.n_vocab)
    gx:free()
    assert.are.equal(#want, #got)
    assert.is_true(same(want, got), "rel diff " .. rel_diff(want, got))
  end)

  for _, impl in ipairs({ "offloaded", "quantized" }) do
    it(impl .. ": a growth past the budget is an OOM of phase cache that changes nothing", function()
      -- two sequences of up to 8192 positions; what 250 positions take, measured
      local one = assert(lrun.load(path, { device = "cuda:0", progress = false, n_ctx = 8192 }))
      local dev = C.lrun_model_device(one.handle)
      local e = assert(one:engine({ n_seq = 2, n_batch = N_BATCH, cache_implementation = impl }))
      assert.are.equal(C.LRUN_OK, C.lrun_engine_seq_fill_random(e, 0, 250, 5), lf.last_error()) -- cap 256
      local used = tonumber(C.lrun_device_used(dev))
      one:free()
      -- the same again under a budget of that plus 20 MiB (room for the pool's
      -- arena rounding); growing to 8192 positions needs more: slots of 25 MB
      -- (offloaded), codes of 200 MB (quantized)
      local m2 = assert(lrun.load(path, { device = "cuda:0", progress = false, n_ctx = 8192,
        gpu_budget = used + 20 * 2 ^ 20 }))
      local e2 = assert(m2:engine({ n_seq = 2, n_batch = N_BATCH, cache_implementation = impl }))
      assert.are.equal(C.LRUN_OK, C.lrun_engine_seq_fill_random(e2, 0, 250, 5), lf.last_error())
      local before = tonumber(C.lrun_device_used(C.lrun_model_device(m2.handle)))
      assert.are.equal(C.LRUN_E_OOM, C.lrun_engine_seq_fill_random(e2, 0, 7000, 6))
      assert.are.equal("cache", ffi.string(C.lrun_last_oom_phase()))
      assert.matches("out of memory", lf.last_error())
      assert.are.equal(250, tonumber(C.lrun_engine_seq_len(e2, 0)))
      assert.are.equal(before, tonumber(C.lrun_device_used(C.lrun_model_device(m2.handle))))
      -- still usable: a step within the capacity
      local lg = ffi.new("float[?]", m2.n_vocab)
      local no = ffi.new("int64_t[1]")
      assert.are.equal(C.LRUN_OK, C.lrun_engine_step(e2, 1, ffi.new("int32_t[1]", { 42 }), ffi.new("int32_t[1]", { 0 }),
        nil, lg, 1, no), lf.last_error())
      m2:free()
    end)
  end

  it("offloaded: the pinned store is charged to the host account, and a growth past the host budget "
    .. "is an OOM of phase cache that changes nothing", function()
    local one = assert(lrun.load(path, { device = "cuda:0", progress = false, n_ctx = 8192 }))
    local e = assert(one:engine({ n_seq = 2, n_batch = N_BATCH, cache_implementation = "offloaded" }))
    assert.are.equal(C.LRUN_OK, C.lrun_engine_seq_fill_random(e, 0, 250, 5), lf.last_error())
    local h = one:host_memory()
    assert.is_true(h.kv_cache > 0 and h.scratch > 0, require("lrun.pretty").format(h))
    assert.are.equal(h.held, h.weights + h.kv_cache + h.slots + h.scratch + h.expert_cache)
    print(string.format("# offloaded: host account %.1f MB (KV cache %.1f MB, scratch %.1f MB)", h.held / 1e6,
      h.kv_cache / 1e6, h.scratch / 1e6))
    -- a budget 1 MiB above what is held: growing to 7000 positions needs far more pinned store
    assert.are.equal(C.LRUN_OK, C.lrun_model_set_host_budget(one.handle, h.held + 2 ^ 20))
    assert.are.equal(C.LRUN_E_OOM, C.lrun_engine_seq_fill_random(e, 0, 7000, 6))
    assert.are.equal("cache", ffi.string(C.lrun_last_oom_phase()))
    assert.matches("host budget [%d.]+ MiB: KV cache [%d.]+ [KMG]iB asked %(.*KV.*%), [%d.]+ [KMG]iB held", lf.last_error())
    assert.are.equal(250, tonumber(C.lrun_engine_seq_len(e, 0)))
    assert.are.equal(h.held, one:host_memory().held)
    local lg = ffi.new("float[?]", one.n_vocab)
    local no = ffi.new("int64_t[1]")
    assert.are.equal(C.LRUN_OK, C.lrun_engine_step(e, 1, ffi.new("int32_t[1]", { 42 }), ffi.new("int32_t[1]", { 0 }),
      nil, lg, 1, no), lf.last_error())
    one:free()
  end)

  for _, impl in ipairs({ "dynamic", "quantized" }) do
    it(impl .. ": a growth holds one layer twice at most", function()
      -- a batch size of its own: a fresh engine of one sequence, not one kept from the tests above
      local e = assert(m:engine({ n_seq = 1, n_batch = 32, cache_implementation = impl }))
      local dev = C.lrun_model_device(m.handle)
      assert(C.lrun_engine_seq_truncate(e, 0, 0) == C.LRUN_OK)
      assert.are.equal(C.LRUN_OK, C.lrun_engine_seq_fill_random(e, 0, 200, 3), lf.last_error()) -- 256 positions
      local before = tonumber(stats(e).kv_bytes)
      C.lrun_device_reset_peak(dev)
      assert.are.equal(C.LRUN_OK, C.lrun_engine_seq_fill_random(e, 0, 100, 4), lf.last_error()) -- grows to 512
      local after = tonumber(stats(e).kv_bytes)
      local extra = tonumber(C.lrun_device_peak(dev)) - tonumber(C.lrun_device_used(dev))
      -- one layer of the store at 256 positions (f16 rows, or int8 records), plus for
      -- quantized the old slots (4 planes of 256 rows), released once the new ones are in
      local kv_dim = tonumber(info.n_head_kv) * tonumber(info.head_dim)
      local layer = impl == "quantized" and 2 * 256 * (kv_dim + kv_dim / 64 * 8) + 4 * 256 * kv_dim * 2
        or 2 * 256 * kv_dim * 2
      print(string.format("# %s: KV %.2f -> %.2f MB; the growth held %.2f MB more at its peak (allowed %.2f MB)", impl,
        before / 1e6, after / 1e6, extra / 1e6, layer / 1e6))
      assert.is_true(after > before)
      assert.is_true(extra <= layer, "peak above one layer held twice")
    end)
  end

  for _, impl in ipairs({ "dynamic", "static", "offloaded", "offloaded_static", "quantized" }) do
    it(impl .. ": seq_fill_random builds a context that decode then reads", function()
      local e = assert(m:engine({ n_seq = 1, n_batch = N_BATCH, cache_implementation = impl }))
      assert(C.lrun_engine_seq_truncate(e, 0, 0) == C.LRUN_OK)
      assert.are.equal(C.LRUN_OK, C.lrun_engine_seq_fill_random(e, 0, 300, 7), lf.last_error())
      assert.are.equal(300, tonumber(C.lrun_engine_seq_len(e, 0)))
      local lg = ffi.new("float[?]", m.n_vocab)
      local no = ffi.new("int64_t[1]")
      assert(C.lrun_engine_step(e, 1, ffi.new("int32_t[1]", { 42 }), ffi.new("int32_t[1]", { 0 }), nil, lg, 1, no)
        == C.LRUN_OK, lf.last_error())
      assert.are.equal(301, tonumber(C.lrun_engine_seq_len(e, 0)))
      for i = 0, m.n_vocab - 1 do assert(lg[i] == lg[i], "NaN logit") end
      -- past n_ctx is refused, naming the sizes
      assert.are.equal(C.LRUN_E_ARG, C.lrun_engine_seq_fill_random(e, 0, N_CTX, 7))
      assert.matches("n_ctx_max", lf.last_error())
    end)
  end
end)
