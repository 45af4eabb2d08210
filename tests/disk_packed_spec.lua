-- disk_packed_spec: a packed file's weights in the disk tier through
-- lrun.load (runtime/residency/weight_ring.c): read packed from the file,
-- decoded in their slots, they give tokens and logits bit-identical to the
-- plain model; m:placement() and --explain show "disk, packed"; the stats
-- count the (packed) bytes read.
package.path = "./?.lua;" .. package.path
local compare = require("tests.compare")
local same = compare.same
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")

local gguf, lrpk, ref_ids, ref_logits
local PROMPT = { 1, 300, 42, 7, 260, 99, 12 }
local function run(m)
  local _, ids = assert(m:generate(PROMPT, { max_new_tokens = 5 }))
  return ids, assert(m:logits(PROMPT))
end
local function load(path, opts)
  opts = opts or {}
  opts.progress, opts.threads, opts.n_ctx = false, 2, 64
  return lrun.load(path, opts)
end

setup(function()
  gguf = os.tmpname() .. ".gguf"
  lrpk = gguf .. ".lrpk"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff, s.n_vocab, s.n_ctx = 4, 256, 4, 2, 512, 512, 256
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_BF16, C.LRUN_DTYPE_BF16, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads, s.trained_stats = 10000, 1e-5, 17, 1, 1
  assert(C.lrun_model_generate(gguf, s) == C.LRUN_OK, lf.last_error())
  assert(lrun.pack(gguf, lrpk, { threads = 2 }))
  local m = assert(load(gguf))
  ref_ids, ref_logits = run(m)
  m:free()
end)
teardown(function() os.remove(gguf); os.remove(lrpk) end)

describe("packed weights in the disk tier", function()
  it("are read packed and stay bit-identical to the plain model", function()
    local m = assert(load(lrpk, { overrides = { "blk%.[13]%.=disk" } }))
    local pl = m:placement()
    assert.are.equal("disk", pl.tensors["blk.1.ffn_up.weight"])
    assert.is_true(pl.packed["blk.1.ffn_up.weight"])
    assert.matches("disk [%d.]+ %a+ %(%d+, %d+ packed%)", tostring(pl))
    assert.matches("disk, packed: 14 tensors read packed", pl.explain)
    m:stats(true)
    local ids, logits = run(m)
    assert.are.same(ref_ids, ids)
    assert.is_true(same(ref_logits, logits), "logits differ")
    local st = m:stats()
    assert.is_true(st.disk_bytes_read > 0 and st.disk_read_bandwidth > 0 and st.disk_queue_depth >= 1)
    -- what was read is the packed bytes (aligned out to 4 KiB blocks), not the plain ones
    assert.is_true(st.disk_bytes_read < st.bytes_streamed / pl.packed_ratio, "fewer bytes than plain")
    m:free()
  end)
end)
