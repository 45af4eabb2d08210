--- offload_lrun.lua — lrun's side of the offload benchmark (tests/bench/offload_bench.py
-- runs it): batch-1 greedy decode of a Llama-2-7B-shape bf16 model under GPU
-- budgets too small for it, with the weights that do not fit streamed through
-- device slots (LRUN_WEIGHT_MODE_AS_PLACED) or computed on the host.
--
-- Usage: build/lrun tests/bench/offload_lrun.lua MODEL [--budgets 2,4,8,12] [--ngen N] [--prefill 512] [--quick]
--   MODEL is a GGUF path, or 7b:bf16: the random-weight Llama-2-7B shape of
--   gpu_bench.lua, written to $LRUN_BENCH_DIR (default /tmp) and removed after.
-- Prints one JSON object per line and configuration: decode tok/s, then (unless
-- --prefill 0) one prefill of a --prefill-token prompt (one chunk) from an
-- empty cache, each beside the planner's prediction (lrun.predict).
--
-- Every configuration is placed the way users place a model: lrun.load's
-- options (gpu_budget, policy, offload_tier, prefetch_layers, cpu_offload_gb,
-- smart_offload), which plan under the budget with the engine's own sizes
-- (lrun_engine_size_placement) and apply the plan (docs/residency.md):
--   stream k=N          policy "layers" (llama.cpp's -ngl: the first blocks on
--                       the device, as many as the budget holds), the rest in
--                       pinned memory (offload_tier), streamed k ahead
--   stream ... mmap     the same, streamed from the file mapping (staged)
--   hybrid: smart       policy "smart": on cuda it splits the offloaded
--                       matrices between the copy engine and the CPU's matmul
--                       from the measured rates (policies/smart.lua)
--   hybrid 1/n host     a custom policy: "layers", with every n-th offloaded
--                       block computed on the host (for comparison with smart)
--   auto                the budget alone: what `lrun --gpu-budget B` does with
--                       no placement flag (auto-fit, docs/residency.md)
--   auto, plain         the same with packed = false: no weight packed
--   cpu-offload-gb 4    no budget, 4 GiB of weights off the device: lrun's
--                       default policy (aggressive) and --smart-offload
-- --quick: per budget only auto, "auto, plain" and "hybrid: smart, k=2", and no unbudgeted rows (a short
-- device call).
-- Each row also carries the rates the planner measured (lrun.residency.bandwidths): pinned host->device,
-- and the host's bf16 decode matmul alone and beside the device's copies, from which offload_bench.py
-- draws the PCIe+DRAM limit.
package.path = "./?.lua;" .. package.path
local ffi = require("ffi")
local lrun = require("lrun")
local lf = require("lrun.ffi")
local sys = require("lrun.sys")
local C = lf.C

local GiB = 1024 ^ 3
local N_CTX, N_PROMPT, N_WARM = 256, 8, 2
local n_prefill = 512

local path = arg[1]
local budgets, n_gen = { 2, 4, 8, 12 }, 12
local quick = false
local i = 2
while i <= #arg do
  if arg[i] == "--budgets" then
    budgets = {}
    for b in arg[i + 1]:gmatch("[^,]+") do budgets[#budgets + 1] = tonumber(b) end
    i = i + 1
  elseif arg[i] == "--ngen" then n_gen = tonumber(arg[i + 1]); i = i + 1
  elseif arg[i] == "--prefill" then n_prefill = tonumber(arg[i + 1]); i = i + 1
  elseif arg[i] == "--quick" then quick = true
  else io.stderr:write("offload_lrun: unknown argument " .. arg[i] .. "\n"); os.exit(2) end
  i = i + 1
end
if not path then
  io.stderr:write("usage: lrun tests/bench/offload_lrun.lua MODEL.gguf [--budgets 2,4,8,12] [--ngen N]\n")
  os.exit(2)
end

N_CTX = math.max(N_CTX, n_prefill + 16)

local generated = false
if path == "7b:bf16" then -- gpu_bench's random Llama-2-7B shape (tests/bench/llama7b.lua)
  path, generated = require("tests.bench.llama7b").generate("bf16", "offload_lrun"), true
end

local json = require("tests.bench.json_lines").encode

-- ---------------------------------------------------------------- placement

local MATRIX = { attn_q = true, attn_k = true, attn_v = true, attn_output = true, ffn_gate = true, ffn_up = true,
  ffn_down = true }

-- Bytes per token the placement streams and the host reads, and the blocks
-- whose matrices are all on the device.
local function describe_placement(m)
  local p = m:placement()
  local streamed, host, off_layer = 0, 0, {}
  local n_layer = m:info().n_layer
  local packed = { streamed_plain = 0, n = 0 } -- streamed weights' plain bytes; tensors packed anywhere
  for _, t in ipairs(m:tensors()) do
    if t.packed then packed.n = packed.n + 1 end
    if (MATRIX[t.role] or t.role == "lm_head") and t.tier ~= "device" then
      if p.host_compute[t.name] then host = host + t.bytes
      else streamed, packed.streamed_plain = streamed + t.bytes, packed.streamed_plain + t.plain_bytes end
      if t.layer >= 0 then off_layer[t.layer] = true end
    end
  end
  local n_dev = 0
  for l = 0, n_layer - 1 do if not off_layer[l] then n_dev = n_dev + 1 end end
  return streamed, host, n_dev, packed
end

--- "layers" with every n-th offloaded block computed on the host: a custom
-- policy (one table, one plan function) as docs/policies.md teaches.
local function hybrid_layers(every)
  local layers = require("lrun.policy_file").module("layers")
  return {
    name = "layers, 1/" .. every .. " host",
    plan = function(tensors, budget)
      local plan, off, n = layers.plan(tensors, budget)
      if not plan then return plan, off end
      local hc = {}
      for _, t in ipairs(tensors) do
        if MATRIX[t.role] and plan[t.name] ~= "device" and (t.layer - n) % every == every - 1 then
          hc[t.name] = true
          plan[t.name] = "host"
        end
      end
      return plan, off, { host_compute = hc }
    end,
  }
end

-- ---------------------------------------------------------------- runs

local function decode(e, n_vocab)
  local seq = ffi.new("int32_t[?]", N_PROMPT)
  local ids = ffi.new("int32_t[?]", N_PROMPT)
  for k = 0, N_PROMPT - 1 do ids[k] = 100 + 37 * k end
  local logits = ffi.new("float[?]", n_vocab)
  local n_out = ffi.new("int64_t[1]")
  local tok = ffi.new("int32_t[1]")
  local function step(n, t)
    if C.lrun_engine_step(e, n, t, seq, nil, logits, 1, n_out) ~= C.LRUN_OK then error("step: " .. lf.last_error(), 0) end
  end
  step(N_PROMPT, ids)
  for _ = 1, N_WARM do tok[0] = C.lrun_logits_argmax(logits, n_vocab); step(1, tok) end
  C.lrun_engine_reset_stats(e)
  local t0 = sys.now()
  for _ = 1, n_gen do tok[0] = C.lrun_logits_argmax(logits, n_vocab); step(1, tok) end
  local dt = sys.now() - t0
  local s = ffi.new("lrun_engine_stats")
  C.lrun_engine_get_stats(e, s)
  return n_gen / dt, s
end

-- One prompt of n_prefill tokens (one chunk) from an empty cache, after the
-- decode run warmed the path: tokens/s.
local function prefill(e, n_vocab)
  if n_prefill <= 0 then return nil end
  local seq, ids = ffi.new("int32_t[?]", n_prefill), ffi.new("int32_t[?]", n_prefill)
  for k = 0, n_prefill - 1 do ids[k] = (100 + 37 * k) % n_vocab end
  local logits, n_out = ffi.new("float[?]", n_vocab), ffi.new("int64_t[1]")
  assert(C.lrun_engine_seq_truncate(e, 0, 0) == C.LRUN_OK, lf.last_error())
  local t0 = sys.now()
  if C.lrun_engine_step(e, n_prefill, ids, seq, nil, logits, 1, n_out) ~= C.LRUN_OK then
    error("prefill: " .. lf.last_error(), 0)
  end
  return n_prefill / (sys.now() - t0)
end

--- One configuration: lrun.load with the placement options, decode, print.
local function bench(budget_gib, name, opts)
  local o = { device = os.getenv("LRUN_BENCH_DEVICE") or "cuda:0", progress = false, n_ctx = N_CTX,
    cache_implementation = "static", gpu_budget = budget_gib and math.floor(budget_gib * GiB) or nil }
  for k, v in pairs(opts) do o[k] = v end
  local t0 = sys.now()
  local m, err = lrun.load(path, o)
  local e
  if m then e, err = m:engine() end
  if not e then
    io.stderr:write(string.format("offload_lrun: %s GiB %s: %s\n", tostring(budget_gib), name,
      tostring(err and err.message or err)))
    if m then m:free() end
    collectgarbage()
    return nil
  end
  io.stderr:write(string.format("offload_lrun: %s GiB %s: placed in %.1f s\n", tostring(budget_gib), name,
    sys.now() - t0))
  if m.residency then io.stderr:write(m.residency.explain, "\n") end
  local info = m:info()
  local streamed, host, n_dev, packed = describe_placement(m)
  local tps, s = decode(e, info.n_vocab)
  local prefill_tps = prefill(e, info.n_vocab)
  local pl = m:placement() -- the plan's predictions, or the resident model's
  local bw = require("lrun.residency").bandwidths(m) or {} -- measured once per device and process
  local function bf16(rates) return type(rates) == "table" and rates.bf16 or nil end
  local row = {
    budget_gib = budget_gib or "none", config = name, k = m.residency and m.residency.prefetch or 0, tps = tps,
    policy = m.residency and m.residency.policy or "resident",
    n_dev_layers = n_dev, streamed_bytes = streamed, host_bytes = host, offloaded_bytes = streamed + host,
    streamed_plain_bytes = packed.streamed_plain, packed_tensors = packed.n,
    bytes_streamed_per_tok = tonumber(s.bytes_streamed) / n_gen,
    host_compute_bytes_per_tok = tonumber(s.host_compute_bytes) / n_gen,
    copy_s_per_tok = s.copy_seconds / n_gen, stall_s_per_tok = s.stall_seconds / n_gen,
    hits = tonumber(s.prefetch_hits), misses = tonumber(s.prefetch_misses),
    weight_device_bytes = tonumber(s.weight_device_bytes), slot_bytes = tonumber(s.slot_bytes),
    kv_bytes = tonumber(s.kv_bytes), scratch_bytes = tonumber(s.scratch_bytes),
    device_used_bytes = tonumber(s.weight_device_bytes + s.slot_bytes + s.kv_bytes + s.scratch_bytes),
    device_peak_bytes = tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle))),
    weight_bytes = info.weight_bytes,
    -- the planner's prediction (lrun.predict) for this placement, to report its error (#15)
    predicted_tps = pl.predicted and pl.predicted.tok_s or nil,
    prefill_tokens = n_prefill, prefill_tps = prefill_tps,
    predicted_prefill_tps = prefill_tps and pl.prefill and pl.prefill.tok_s or nil,
    h2d_pinned = bw.h2d_pinned, host_matmul_bf16 = bf16(bw.host_matmul),
    host_matmul_copying_bf16 = bf16(bw.host_matmul_copying),
  }
  m:free()
  collectgarbage()
  print(json(row))
  io.stdout:flush()
  return row
end

-- ---------------------------------------------------------------- budgets

local function stream(k, tier) return { policy = "layers", offload_tier = tier or "pinned", prefetch_layers = k } end

for _, b in ipairs(budgets) do
  bench(b, "auto", {})
  -- auto-fit without packing (before session 27 its only way): what "packed where streamed" adds
  bench(b, "auto, plain", { packed = false })
  if not quick then bench(b, "stream k=1", stream(1)) end
  if b == 4 and not quick then
    -- prefetch depth, source tier, and smart's split against fixed host shares, at the headline budget
    bench(b, "stream k=2", stream(2))
    bench(b, "stream k=3", stream(3))
    bench(b, "stream k=1 from mmap", stream(1, "mmap"))
    bench(b, "hybrid: smart, k=1", { policy = "smart", prefetch_layers = 1 })
    for _, every in ipairs({ 2, 3 }) do
      bench(b, "hybrid 1/" .. every .. " host, k=2", { policy = hybrid_layers(every), offload_tier = "pinned",
        prefetch_layers = 2 })
    end
  end
  -- while the CPU computes a layer the copy engine works through the k
  -- copies already issued, so hybrid wants k >= 2
  bench(b, "hybrid: smart, k=2", { policy = "smart", prefetch_layers = 2 })
end

-- ---------------------------------------------------------------- --cpu-offload-gb 4

-- No budget: every weight could be resident. --cpu-offload-gb 4 keeps 4 GiB
-- of weights off the device: lrun's default policy (aggressive: norms, the
-- embedding table, the LM head, then blocks from the last), and with
-- --smart-offload the smart policy; k is the device's default.
if not quick then
  bench(nil, "resident", {})
  bench(nil, "cpu-offload-gb 4 (default policy)", { cpu_offload_gb = 4 })
  bench(nil, "cpu-offload-gb 4 --smart-offload", { cpu_offload_gb = 4, smart_offload = true })
end
if generated then os.remove(path) end
