-- loader_budget_spec: the streaming loader's staging under the host budget
-- (runtime/residency/loader.c, docs/residency.md "The host budget"; issues
-- 13 and 11). An FP8 checkpoint's weights are widened to bf16 as they load,
-- through the loader's scratch chunks, which are charged to the model's host
-- account and sized from what the budget has left: unbudgeted the default
-- staging shows at the account's peak; with a budget just above the model's
-- host share the staging shrinks, the peak stays under the budget and the
-- model generates what the unbudgeted run does; a budget that holds the
-- weights but not the smallest staging fails at load naming the staging.
-- The FP8 directory is written by tests/fp8_hf_dir.py (numpy); pending
-- without python3 and numpy.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

local MiB = 2 ^ 20
local PROMPT = { 256, 72, 101, 108 }

local function have_numpy()
  return os.execute("python3 -c 'import numpy' >/dev/null 2>&1") == 0
    or os.execute("python3 -c 'import numpy' >/dev/null 2>&1") == true
end

local base
local function fp8_dir()
  if base then return base .. "/fp8" end
  base = os.tmpname()
  os.remove(base)
  assert(os.execute("mkdir -p '" .. base .. "'"))
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 2, 64, 4, 2, 128
  s.n_vocab, s.n_ctx = 320, 128
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32, 1
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 7, 1
  assert(C.lrun_model_generate_hf(base .. "/f32", s, 1) == C.LRUN_OK, lf.last_error())
  local ok = os.execute("python3 tests/fp8_hf_dir.py '" .. base .. "/f32' '" .. base .. "/fp8'")
  assert(ok == 0 or ok == true, "tests/fp8_hf_dir.py failed")
  return base .. "/fp8"
end

local function load(opts)
  local o = { progress = false, n_ctx = 64 }
  for k, v in pairs(opts) do o[k] = v end
  return lrun.load(fp8_dir(), o)
end

describe("the loader's staging under the host budget", function()
  teardown(function()
    if base then os.execute("rm -rf '" .. base .. "'") end
  end)

  if not have_numpy() then
    pending("python3 with numpy writes the FP8 directory (tests/fp8_hf_dir.py)")
    return
  end

  it("shrinks to fit a budget just above the model's host share and generates the same tokens", function()
    local ref = assert(load({}))
    local homes = ref:host_memory().weights -- the FP8 weights widened to bf16, charged as weights
    local ref_tokens = assert(ref:generate(PROMPT, { max_new_tokens = 6 }))
    local h = ref:host_memory()
    -- unbudgeted, the default staging showed at the peak: threads x 64 MiB scratch chunks from
    -- the disk, threads x 4 MiB from the page cache (the directory was just written, so warm)
    assert.is_true(homes > 0 and h.peak >= homes + 4 * MiB, tostring(h.peak))
    assert.are.equal(0, h.slots)
    ref:free()

    -- the share a budgeted run holds (the placement copies the f32 tensors too)
    local roomy = assert(load({ host_budget = "64M" }))
    assert(roomy:generate(PROMPT, { max_new_tokens = 6 }))
    local share = roomy:host_memory().held
    roomy:free()

    local budget = share + 64 * 1024
    local m = assert(load({ host_budget = budget }))
    local tokens = assert(m:generate(PROMPT, { max_new_tokens = 6 }))
    local b = m:host_memory()
    assert.are.same(ref_tokens, tokens)
    assert.are.equal(budget, b.budget)
    assert.is_true(b.peak <= budget, b.peak .. " > " .. budget)
    assert.are.equal(0, b.slots) -- the staging was given back when the load ended
    assert.are.equal(0, b.refused)
    m:free()
  end)

  it("fails at load naming the staging when the budget holds the weights but not one thread's smallest chunk", function()
    local ref = assert(load({}))
    local homes = ref:host_memory().weights
    ref:free()
    local m, err = load({ host_budget = homes + 512 * 1024 })
    assert.is_nil(m)
    assert.are.equal("oom", err.kind)
    assert.are.equal("loading", err.phase)
    assert.matches("loading: host budget [%d.]+ KiB: slots 1%.0 MiB asked %(model load staging: 1 thread x 1 chunk "
      .. "of 1%.0 MiB%), [%d.]+ KiB held %(weights [%d.]+ KiB%)", err.message)
  end)
end)
