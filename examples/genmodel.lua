-- genmodel.lua — writes a random-weight model as GGUF (lrun_model_generate), of any
-- architecture lrun knows (--arch; docs/architectures.md), or as a Hugging Face
-- directory with --hf (lrun_model_generate_hf: the same weights in HF names and
-- layout; f32, f16 or bf16; --shards N).
--
--   lrun examples/genmodel.lua -o out-dir --hf --shards 3 --preset tiny --dtype bf16
--   lrun examples/genmodel.lua -o out.gguf --preset llama2-7b
--   lrun examples/genmodel.lua -o out.gguf --layers 32 --embd 4096 --ff 11008 \
--        --heads 32 --kv-heads 32 --vocab 32000 --dtype bf16 [--seed N] [--threads N]
--   lrun examples/genmodel.lua -o tiny.gguf --preset tiny --dtype q8_0
--   lrun examples/genmodel.lua -o moe.gguf --preset qwen3-30b-a3b --dtype q4_k [--router-skew 2]
--   lrun examples/genmodel.lua -o moe-dir --hf --preset tiny-moe --arch llama --dtype bf16   (Mixtral)
--   lrun examples/genmodel.lua -o oss.gguf --preset gpt-oss-tiny --dtype f32      (MXFP4 experts)
--   lrun examples/genmodel.lua -o oss-dir --hf --preset gpt-oss-20b [--expert-dtype bf16]
--
-- With --experts, --hf writes Qwen3MoeForCausalLM (--arch qwen3moe) or
-- MixtralForCausalLM (--arch llama) directories, one tensor per expert as
-- transformers saves them; gpt-oss (its presets) GptOssForCausalLM with the
-- experts fused, MXFP4 _blocks/_scales as the released checkpoints or
-- unquantized with --expert-dtype f32|f16|bf16 (docs/moe.md). --router-skew S multiplies the router's row of
-- expert e by 1 + S/(e+1) in both formats: expert popularity falls off with
-- e, Zipf-like, which a random router (near-uniform choices, a cache's worst
-- case) lacks (S = 8: about a trained router's popularity); docs/moe.md. Mixtures
-- of experts get an embedding scaled so that every block routes each token
-- differently, as trained models do (docs/moe.md, "Routing of generated
-- models"); --collapsed-routing writes the older scales, under which blocks
-- past the first send every token to the same few experts.
-- A preset fills every shape option; options given on the command line win.
-- The model loads in lrun and llama.cpp: same seed, same weights (in every
-- dtype, up to rounding). See docs/gguf.md.
local lrun = require("lrun.ffi")
local cli = require("lrun.cli")
local sys = require("lrun.sys")
local ffi, C = lrun.ffi, lrun.C

local presets = {
  tiny = { layers = 2, embd = 64, ff = 128, heads = 4, kv_heads = 2, vocab = 512, ctx = 256 },
  ["smollm2-135m"] = { layers = 30, embd = 576, ff = 1536, heads = 9, kv_heads = 3, vocab = 49152, ctx = 8192,
    rope_base = 100000 },
  ["tinyllama-1b"] = { layers = 22, embd = 2048, ff = 5632, heads = 32, kv_heads = 4, vocab = 32000, ctx = 2048 },
  ["llama2-7b"] = { layers = 32, embd = 4096, ff = 11008, heads = 32, kv_heads = 32, vocab = 32000, ctx = 4096 },
  ["llama3-8b"] = { layers = 32, embd = 4096, ff = 14336, heads = 32, kv_heads = 8, vocab = 128256, ctx = 8192,
    rope_base = 500000 },
  -- mixtures of experts (docs/moe.md): --ff is each expert's width; untied heads, as the released
  -- checkpoints (tie_word_embeddings false in both config.json files)
  ["qwen3-30b-a3b"] = { arch = "qwen3moe", layers = 48, embd = 2048, ff = 768, heads = 32, kv_heads = 4,
    head_dim = 128, experts = 128, experts_used = 8, vocab = 151936, ctx = 40960, rope_base = 1000000, untied = true },
  ["mixtral-8x7b"] = { arch = "llama", layers = 32, embd = 4096, ff = 14336, heads = 32, kv_heads = 8, experts = 8,
    experts_used = 2, vocab = 32000, ctx = 32768, rope_base = 1000000, untied = true },
  ["tiny-moe"] = { arch = "qwen3moe", layers = 2, embd = 64, ff = 64, heads = 4, kv_heads = 2, experts = 8,
    experts_used = 2, vocab = 512, ctx = 256 },
  -- gpt-oss (docs/moe.md): MXFP4 experts, YaRN RoPE (factor 32), a window of 128 on the even blocks, an
  -- untied head; the attention, router and head in --dtype (bf16 by default, as the released files)
  ["gpt-oss-20b"] = { arch = "gpt-oss", layers = 24, embd = 2880, ff = 2880, heads = 64, kv_heads = 8,
    head_dim = 64, experts = 32, experts_used = 4, vocab = 201088, ctx = 131072, rope_base = 150000,
    sliding_window = 128, yarn = 32, expert_dtype = "mxfp4", untied = true },
  ["gpt-oss-tiny"] = { arch = "gpt-oss", layers = 2, embd = 64, ff = 64, heads = 4, kv_heads = 2, head_dim = 32,
    experts = 8, experts_used = 4, vocab = 512, ctx = 256, rope_base = 150000, sliding_window = 8, yarn = 32,
    expert_dtype = "mxfp4", untied = true },
}
local preset_names = {}
for k in pairs(presets) do preset_names[#preset_names + 1] = k end
table.sort(preset_names)

local spec = {
  { "-o", "--output", key = "output", arg = "FILE", help = "where to write the GGUF file" },
  { "--preset", key = "preset", arg = "NAME", help = table.concat(preset_names, ", ") },
  { "--arch", key = "arch", arg = "NAME",
    help = "llama qwen2 qwen3 phi3 gemma2 gemma3 qwen3moe gpt-oss (default llama)" },
  { "--head-dim", key = "head_dim", type = "int", help = "key/value length per head (default --embd/--heads)" },
  { "--layers", key = "layers", type = "int", help = "blocks" },
  { "--embd", key = "embd", type = "int", help = "width" },
  { "--ff", key = "ff", type = "int", help = "feed-forward width (each expert's, with --experts)" },
  { "--experts", key = "experts", type = "int", help = "experts per block: qwen3moe, or llama for Mixtral" },
  { "--experts-used", key = "experts_used", type = "int", help = "experts each token takes (with --experts)" },
  { "--expert-dtype", key = "expert_dtype", arg = "TYPE", help = "the experts' type (default: --dtype; gpt-oss: mxfp4)" },
  { "--yarn", key = "yarn", type = "number", help = "YaRN RoPE scaling by this factor (gpt-oss: 32); 0: none" },
  { "--router-skew", key = "router_skew", type = "number",
    help = "synthetic skewed expert popularity: router row e times 1 + S/(e+1) (default 0: near-uniform)" },
  { "--collapsed-routing", key = "collapsed_routing", type = "flag",
    help = "MoE: the scales of before 2026-12, whose routing collapses (default: routes like trained models)" },
  { "--heads", key = "heads", type = "int", help = "attention heads" },
  { "--kv-heads", key = "kv_heads", type = "int", help = "key/value heads (default: --heads)" },
  { "--vocab", key = "vocab", type = "int", help = "vocabulary size, >= 259" },
  { "--ctx", key = "ctx", type = "int", help = "context length (default 4096)" },
  { "--dtype", key = "dtype", arg = "TYPE", default = "bf16", help = "f32 f16 bf16 q4_0 q4_1 q8_0 q4_k q6_k" },
  { "--embd-dtype", key = "embd_dtype", arg = "TYPE", help = "token_embd and output type (default: --dtype)" },
  { "--untied", key = "untied", type = "flag", help = "write output.weight (default: tied to token_embd)" },
  { "--rope-base", key = "rope_base", type = "number", help = "RoPE frequency base (default 10000)" },
  -- no default here: a preset's window (gpt-oss's) must win over it
  { "--sliding-window", key = "sliding_window", type = "int",
    help = "attention window in positions (Mistral; gemma2/3's and gpt-oss's local blocks); 0: none (default)" },
  { "--rope-orig-ctx", key = "rope_orig_ctx", type = "int", default = 0,
    help = "phi3: LongRoPE factors with this original context (config.json rope_scaling with --hf); 0: none" },
  { "--rms-eps", key = "rms_eps", type = "number", default = 1e-5, help = "RMSNorm epsilon" },
  { "--seed", key = "seed", type = "int", default = 1, help = "same seed, same weights" },
  { "--threads", key = "threads", type = "int", default = 0, help = "fill threads, 0 = all cores" },
  { "--trained", key = "trained", type = "flag",
    help = "matrices shaped like trained weights (synthetic: normal, per-tensor scales, outliers)" },
  { "-q", "--quiet", key = "quiet", type = "flag", help = "no progress bar" },
  { "--hf", key = "hf", type = "flag", help = "write an HF directory (config.json, safetensors) at -o" },
  { "--shards", key = "shards", type = "int", default = 1, help = "with --hf: safetensors files (default 1)" },
}
local synopsis = "lrun examples/genmodel.lua -o FILE (--preset NAME | --layers N --embd N --ff N --heads N "
  .. "--vocab N) [options]"
local opts = cli.parse_or_exit(arg, spec, synopsis)

local function fail(msg)
  io.stderr:write(arg[0], ": ", msg, "\n")
  os.exit(1)
end

if #opts.rest > 0 then fail("unexpected argument '" .. opts.rest[1] .. "'") end
if not opts.output then fail("-o/--output: no output file given") end
if opts.preset then
  local p = presets[opts.preset]
  if not p then fail("--preset: unknown preset '" .. opts.preset .. "' (" .. table.concat(preset_names, ", ") .. ")") end
  for k, v in pairs(p) do
    if opts[k] == nil then opts[k] = v end
  end
end
opts.kv_heads = opts.kv_heads or opts.heads
opts.arch = opts.arch or "llama"
opts.ctx = opts.ctx or 4096
opts.rope_base = opts.rope_base or 10000

-- Each shape option: present and positive; the message names the option.
for _, o in ipairs({ { "layers", "--layers" }, { "embd", "--embd" }, { "ff", "--ff" }, { "heads", "--heads" },
  { "kv_heads", "--kv-heads" }, { "vocab", "--vocab" }, { "ctx", "--ctx" } }) do
  local v = opts[o[1]]
  if v == nil then fail(o[2] .. ": missing (give it, or a --preset)") end
  if v < 1 or v > 2 ^ 31 - 1 then fail(o[2] .. ": must be in 1 .. 2^31-1, got " .. v) end
end
if opts.head_dim and (opts.head_dim < 2 or opts.head_dim % 2 ~= 0) then fail("--head-dim: must be even, >= 2") end
if not opts.head_dim and opts.embd % opts.heads ~= 0 then
  fail("--embd: " .. opts.embd .. " is not a multiple of --heads " .. opts.heads)
end
if not opts.head_dim and (opts.embd / opts.heads) % 2 ~= 0 then fail("--heads: head size --embd/--heads must be even (RoPE)") end
if opts.heads % opts.kv_heads ~= 0 then fail("--kv-heads: " .. opts.kv_heads .. " does not divide --heads " .. opts.heads) end
if opts.vocab < 259 then fail("--vocab: must be at least 259 (256 byte tokens and 3 specials), got " .. opts.vocab) end
if opts.seed < 0 then fail("--seed: must be >= 0") end
if opts.threads < 0 then fail("--threads: must be >= 0") end
if not (opts.rope_base > 0) then fail("--rope-base: must be > 0") end
if not (opts.rms_eps > 0 and opts.rms_eps < 1) then fail("--rms-eps: must be in (0, 1)") end

local function dtype(option, name)
  local out = ffi.new("lrun_dtype[1]")
  if C.lrun_dtype_from_name(name, out) ~= C.LRUN_OK then
    fail(option .. ": unknown type '" .. name .. "' (f32 f16 bf16 q4_0 q4_1 q8_0 q4_k q6_k mxfp4 …)")
  end
  return out[0]
end

local s = ffi.new("lrun_model_gen_spec")
s.n_layer, s.n_embd, s.n_head, s.n_head_kv = opts.layers, opts.embd, opts.heads, opts.kv_heads
s.n_ff, s.n_vocab, s.n_ctx = opts.ff, opts.vocab, opts.ctx
s.weight_dtype = dtype("--dtype", opts.dtype)
s.embd_dtype = dtype("--embd-dtype", opts.embd_dtype or opts.dtype)
s.tied_embeddings = opts.untied and 0 or 1
s.rope_freq_base, s.rms_eps = opts.rope_base, opts.rms_eps
s.seed, s.n_threads, s.progress = opts.seed, opts.threads, opts.quiet and 0 or 1
s.trained_stats = opts.trained and 1 or 0
s.arch, s.head_dim = opts.arch, opts.head_dim or 0 -- opts.arch stays referenced while s is used
s.sliding_window, s.rope_orig_ctx = opts.sliding_window or 0, opts.rope_orig_ctx
s.n_expert, s.n_expert_used, s.router_skew = opts.experts or 0, opts.experts_used or 0, opts.router_skew or 0
s.expert_dtype = opts.expert_dtype and dtype("--expert-dtype", opts.expert_dtype) or C.LRUN_DTYPE_F32
s.rope_yarn_factor = opts.yarn or 0
s.collapsed_routing = opts.collapsed_routing and 1 or 0

-- The C side names spec fields; say them as the options they came from.
local field_option = { n_layer = "--layers", n_embd = "--embd", n_head = "--heads", n_head_kv = "--kv-heads",
  n_ff = "--ff", n_vocab = "--vocab", n_ctx = "--ctx", weight_dtype = "--dtype", embd_dtype = "--embd-dtype",
  rope_freq_base = "--rope-base", rms_eps = "--rms-eps", n_threads = "--threads", arch = "--arch",
  head_dim = "--head-dim", sliding_window = "--sliding-window", rope_orig_ctx = "--rope-orig-ctx",
  n_expert = "--experts", n_expert_used = "--experts-used", router_skew = "--router-skew",
  expert_dtype = "--expert-dtype", rope_yarn_factor = "--yarn" }

local t0 = sys.now()
local ok, err
if opts.hf then ok, err = lrun.check(C.lrun_model_generate_hf(opts.output, s, opts.shards))
else ok, err = lrun.check(C.lrun_model_generate(opts.output, s)) end
if not ok then
  fail((err:gsub("spec%.([%w_]+)", function(f) return field_option[f] or ("spec." .. f) end)))
end
local seconds = sys.now() - t0
local bytes
if opts.hf then
  local p = io.popen("du -sb '" .. opts.output .. "' 2>/dev/null")
  bytes = tonumber((p:read("*a") or ""):match("^(%d+)")) or 0
  p:close()
else
  local f = io.open(opts.output, "rb")
  bytes = f and f:seek("end") or 0
  if f then f:close() end
end
io.stdout:write(string.format("wrote %s: %.2f GB in %.2f s (%.2f GB/s)\n", opts.output, bytes / 1e9, seconds,
  seconds > 0 and bytes / 1e9 / seconds or 0))
