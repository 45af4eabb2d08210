-- gen_routing_spec: the generator's mixtures of experts route like trained
-- ones (runtime/model/model_gen.c, spec.collapsed_routing; docs/moe.md,
-- "Routing of generated models"): decoding teacher-forced random tokens on
-- the CPU, every block, not only the first, spreads them over most of its
-- experts. With the dense models' scales (collapsed_routing = 1) the blocks
-- past the first sent every token to the same few experts, which made every
-- expert-cache benchmark hit almost always.
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local lf = require("lrun.ffi")
local route_trace = require("tests.route_trace")
local ffi, C = lf.ffi, lf.C

local N_TOK, N_LAYER, N_EXPERT, K = 48, 6, 32, 4
-- Independent uniform routing reaches 32·(1 - (28/32)^48) ≈ 31.9 distinct
-- experts per block; the collapsed scales reach 5..24 past block 0 on
-- these shapes (seeds 5..7, measured when this was written), the realistic
-- ones 31..32.
local MIN_DISTINCT = 26

local function generate(path, arch, collapsed)
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.head_dim = N_LAYER, 128, 4, 2, 32
  s.n_ff, s.n_vocab, s.n_ctx = 32, 512, 256
  s.weight_dtype, s.embd_dtype = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads, s.tied_embeddings = 10000, 1e-6, 5, 2, 1
  s.arch, s.n_expert, s.n_expert_used, s.collapsed_routing = arch, N_EXPERT, K, collapsed and 1 or 0
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
end

-- The root mean square of the logits after one token (id 300 at position 0).
local function logit_rms(arch, collapsed)
  local path = os.tmpname()
  generate(path, arch, collapsed)
  local m = assert(lrun.load(path, { device = "cpu", threads = 2, progress = false, n_ctx = 256 }))
  local e = assert(m:engine({ n_batch = 1 }))
  local n = m.n_vocab
  local logits, n_out = ffi.new("float[?]", n), ffi.new("int64_t[1]")
  local tok, seq = ffi.new("int32_t[1]", 300), ffi.new("int32_t[1]")
  local st = C.lrun_engine_step(e, 1, tok, seq, nil, logits, 1, n_out)
  local err = st ~= C.LRUN_OK and lf.last_error() or nil
  m:free()
  os.remove(path)
  assert(not err, err)
  local sum = 0
  for i = 0, n - 1 do sum = sum + logits[i] * logits[i] end
  return math.sqrt(sum / n)
end

local function distinct_per_block(arch, collapsed)
  local path = os.tmpname()
  generate(path, arch, collapsed)
  local m = assert(lrun.load(path, { device = "cpu", threads = 2, progress = false, n_ctx = 256 }))
  local tr, err = route_trace.trace(m, N_TOK)
  m:free()
  os.remove(path)
  assert(tr, err)
  local st = route_trace.stats(tr, math.floor(N_EXPERT / 4))
  local d = {}
  for l = 0, N_LAYER - 1 do d[l + 1] = st.blocks[l].distinct end
  return d, st
end

for _, arch in ipairs({ "qwen3moe", "llama" }) do
  describe("generated " .. arch .. " MoE routing", function()
    it("spreads random tokens over at least " .. MIN_DISTINCT .. " of " .. N_EXPERT .. " experts in every block",
      function()
        local d, st = distinct_per_block(arch, false)
        for l, n in ipairs(d) do
          assert.is_true(n >= MIN_DISTINCT, string.format("block %d: %d distinct experts (all: %s)", l - 1, n,
            table.concat(d, " ")))
        end
        -- an LRU cache of a quarter of the experts: about 1/4 for independent routing, 0.9 when collapsed
        assert.is_true(st.lru_hit < 0.45, string.format("LRU hit rate %.3f", st.lru_hit))
      end)

    it("keeps the tied head's logits the size they had (the final norm's gain undoes the embedding's scale)",
      function()
        local now, before = logit_rms(arch, false), logit_rms(arch, true)
        assert.is_true(now > before / 2 and now < before * 2, string.format("logit RMS %.3g, was %.3g", now, before))
      end)

    it("collapses with collapsed_routing = 1 (the old scales), so the bound above tells them apart", function()
      local d = distinct_per_block(arch, true)
      local below = 0
      for l = 2, #d do if d[l] < MIN_DISTINCT then below = below + 1 end end
      assert.is_true(below >= 3, "blocks 1.. under the bound: " .. below .. " (" .. table.concat(d, " ") .. ")")
    end)
  end)
end
