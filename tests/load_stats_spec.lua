-- load_stats_spec: m:load_stats() (lrun_model_load_stats): what the last
-- streaming read of the weights did (runtime/residency/loader.c and
-- page_cache.c, docs/models.md "Loading"). Nothing before a read; after
-- the weights move from the file to the host tier: their bytes, the reader
-- threads and piece size, the page cache's share when it began (the file
-- was just written, so warm: the warm defaults), and the pages kept in
-- the cache (a tiny model, no host budget) — or dropped under a budget.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

describe("m:load_stats()", function()
  local path
  setup(function()
    path = os.tmpname() .. ".gguf"
    local s = ffi.new("lrun_model_gen_spec")
    s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 2, 64, 4, 2, 128
    s.n_vocab, s.n_ctx = 320, 128
    s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32, 1
    s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 3, 1
    assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
  end)
  teardown(function() os.remove(path) end)

  -- every tensor of m from the file to the host tier, through the loader
  local function move_all(m)
    local n = tonumber(C.lrun_model_tensor_count(m.handle))
    local idx, tiers = ffi.new("int64_t[?]", n), ffi.new("lrun_tier[?]", n)
    for i = 0, n - 1 do idx[i], tiers[i] = i, C.LRUN_TIER_HOST end
    assert(C.lrun_model_move_tensors(m.handle, n, idx, tiers) == C.LRUN_OK, lf.last_error())
  end

  it("is nil before a read, then says what the read did: warm, kept", function()
    local f = assert(io.open(path, "rb")); f:read("*a"); f:close() -- every page in the cache
    local m = assert(lrun.load(path, { progress = false }))
    assert.is_nil(m:load_stats())
    move_all(m)
    local s = assert(m:load_stats())
    assert.is_true(s.bytes > 0 and s.seconds >= 0 and s.threads >= 1)
    assert.is_true(s.cached > 0.9, tostring(s.cached))
    assert.is_true(s.warm)
    assert.are.equal(4 * 2 ^ 20, s.chunk_bytes) -- the warm piece size (LRUN_LOADER_WARM_CHUNK)
    assert.is_true(s.kept_cache)
    m:free()
  end)

  it("drops the pages under a host budget", function()
    -- the budget's placement reads every weight at load (onto the cpu device); a later move
    -- that reads nothing (device to host tier) keeps that read's figures
    local m = assert(lrun.load(path, { progress = false, host_budget = "512M" }))
    assert.is_false(assert(m:load_stats()).kept_cache)
    move_all(m)
    assert.is_false(assert(m:load_stats()).kept_cache)
    m:free()
  end)

  it("LRUN_LOAD_THREADS and LRUN_LOAD_CHUNK_MB are taken as given, not the warm pair", function()
    local f = assert(io.open(path, "rb")); f:read("*a"); f:close()
    local out = io.popen(string.format("LRUN_LOAD_THREADS=1 LRUN_LOAD_CHUNK_MB=2 %s/lrun -e %q 2>&1",
      os.getenv("LRUN_BUILD") or "build", string.format([[
        local lf = require("lrun.ffi"); local ffi, C = lf.ffi, lf.C
        local m = assert(require("lrun").load(%q, { progress = false }))
        local n = tonumber(C.lrun_model_tensor_count(m.handle))
        local idx, tiers = ffi.new("int64_t[?]", n), ffi.new("lrun_tier[?]", n)
        for i = 0, n - 1 do idx[i], tiers[i] = i, C.LRUN_TIER_HOST end
        assert(C.lrun_model_move_tensors(m.handle, n, idx, tiers) == C.LRUN_OK)
        local s = m:load_stats()
        print("threads=" .. s.threads .. " chunk=" .. s.chunk_bytes .. " warm=" .. tostring(s.warm))]], path))):read("*a")
    assert.matches("threads=1 chunk=2097152 warm=true", out, 1, true) -- warm all the same
  end)
end)
