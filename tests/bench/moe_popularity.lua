-- moe_popularity: how skewed the generator's router_skew makes expert
-- popularity (docs/moe.md, "The generator"). Synthetic: real models' routing
-- is not like this. For each shape and skew: a random model (f32, small
-- width, the real expert count and top-k) and N uniformly random token ids,
-- run on the CPU two ways: as one prompt (one prefill), and each token alone
-- (a one-token prompt at position 0, N times); then m:stats().experts: the
-- share of all selections taken by the busiest 10% of (block, expert) pairs,
-- and by each block's busiest expert. Uniform routing gives about 10% and 1/E.
--
--   lrun tests/bench/moe_popularity.lua [TOKENS] [SKEW,SKEW,...]
-- Prints one markdown table row per (shape, skew).
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C

local N_TOK = tonumber(arg[1]) or 384
local SKEWS = {}
for s in (arg[2] or "0,0.5,1,2,4,8"):gmatch("[^,]+") do SKEWS[#SKEWS + 1] = tonumber(s) end

-- the two benchmark shapes' routing (expert count, top-k, arch), at a small width
local SHAPES = {
  { name = "30B-A3B routing (128 experts, top-8)", arch = "qwen3moe", n_expert = 128, used = 8 },
  { name = "Mixtral routing (8 experts, top-2)", arch = "llama", n_expert = 8, used = 2 },
}

local function generate(path, shape, skew)
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff, s.n_vocab, s.n_ctx = 4, 256, 4, 2, 32, 1024, N_TOK + 8
  s.weight_dtype, s.embd_dtype = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads, s.tied_embeddings = 10000, 1e-5, 11, 0, 1
  s.arch, s.n_expert, s.n_expert_used, s.router_skew = shape.arch, shape.n_expert, shape.used, skew
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
end

-- uniformly random ids, the same for every model (MINSTD: its products stay exact in a double)
local prompt, x = {}, 12345
for i = 1, N_TOK do
  x = (48271 * x) % 2147483647
  prompt[i] = 256 + x % 768
end

print("| routing | router_skew | tokens run | busiest 10% of experts | busiest expert per block |")
print("|---|---|---|---|---|")
for _, shape in ipairs(SHAPES) do
  for _, skew in ipairs(SKEWS) do
    local path = os.tmpname()
    generate(path, shape, skew)
    local m = assert(lrun.load(path, { progress = false, n_ctx = N_TOK + 8 }))
    for _, how in ipairs({ "one prompt", "each alone" }) do
      m:stats(true)
      if how == "one prompt" then assert(m:logits(prompt))
      else for _, t in ipairs(prompt) do assert(m:logits({ t })) end end
      local ex = m:stats().experts
      print(string.format("| %s | %g | %d, %s | %.1f%% | %.1f%% (uniform %.1f%%) |", shape.name, skew, ex.tokens, how,
        100 * ex.top10_share, 100 * ex.top1_share, 100 / shape.n_expert))
    end
    m:free()
    os.remove(path)
  end
end
