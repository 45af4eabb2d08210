--- batch_offload.lua — throughput under offload (#15 "Throughput under
-- offload"): batched greedy decode of a model larger than the GPU budget,
-- B sequences per step, so that each streamed weight crosses PCIe once per
-- step for all B rows. Aggregate tok/s against the batch-1 limit × B.
--
-- Usage (on the GPU machine; not part of make test):
--   build/lrun tests/bench/batch_offload.lua [MODEL|7b:bf16] [--budget 4] [--batches 1,8,32,64]
--       [--ngen 8] [--n-ctx 64] [--device cuda:0] [--cache offloaded|dynamic|static]
--   7b:bf16 (the default) is gpu_bench.lua's random Llama-2-7B shape in bf16,
--   written to $LRUN_BENCH_DIR (default /tmp) and removed after.
--
-- For each batch size B: lrun.load with gpu_budget, n_seq = B and n_batch = B × 8 (the default placement:
-- auto-fit's smart plan), the KV cache offloaded to pinned host memory by
-- default (B sequences' caches would not fit a small budget beside the
-- weights' slots), one prefill step of B × 8 tokens (8 per sequence), 2
-- warm-up decode steps, then ngen timed steps of B tokens (one per sequence).
--   tok/s        B · ngen / seconds (aggregate)
--   streamed     weight bytes brought to the device per step (engine stats)
--   limit        the batch-1 limit × B: pinned PCIe bandwidth (measured by
--                lrun.residency.bandwidths) / bytes off the device per step,
--                times B — what perfect overlap of copies and compute gives
--                when compute is free; the GPU's own work grows with B, so a
--                large batch ends up compute-bound instead
--   predicted    the planner's prediction: batch 1's decode (lrun.predict) × B up to 8 rows; beyond, a
--                step of B rows as a chunk of B tokens (lrun.predict.prefill: the batched products, the
--                host's at B rows or streamed from lrun.host_stream's rows on), B / its seconds
-- Prints one JSON line per batch size and a markdown table at the end.
-- accelerate's figure at batch 32 comes from
--   python3 tests/bench/offload_bench.py --accelerate-one 4 --accel-batch 32 --accel-ngen 4
package.path = "./?.lua;" .. package.path
local ffi = require("ffi")
local lrun = require("lrun")
local lf = require("lrun.ffi")
local sys = require("lrun.sys")
local C = lf.C

local GiB = 1024 ^ 3
local N_PROMPT, N_WARM = 8, 2

local path, budget, batches, n_gen, n_ctx, cache = "7b:bf16", 4, { 1, 8, 32, 64 }, 8, 64, "offloaded"
local device = os.getenv("LRUN_BENCH_DEVICE") or "cuda:0"
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--budget" then budget = tonumber(v); i = i + 1
  elseif a == "--ngen" then n_gen = tonumber(v); i = i + 1
  elseif a == "--n-ctx" then n_ctx = tonumber(v); i = i + 1
  elseif a == "--device" then device = v; i = i + 1
  elseif a == "--cache" then cache = v; i = i + 1
  elseif a == "--batches" then
    batches = {}
    for b in v:gmatch("[^,]+") do batches[#batches + 1] = tonumber(b) end
    i = i + 1
  elseif a:sub(1, 2) ~= "--" then path = a
  else io.stderr:write("batch_offload: unknown argument " .. a .. "\n"); os.exit(2) end
  i = i + 1
end

local generated = false
if path == "7b:bf16" then -- gpu_bench's random Llama-2-7B shape (tests/bench/llama7b.lua)
  path, generated = require("tests.bench.llama7b").generate("bf16", "batch_offload"), true
end

-- The planner's prediction of a step of B rows (B > 8): a chunk of B tokens (lrun.predict.prefill: the
-- device's batched product, the host's at B rows or, from lrun.host_stream's rows on, the host-computed
-- matrices copied and multiplied on the device, the streamed copies once), B / its seconds; nil at B <= 8
-- (the decode GEMV's prediction, × B, stands) or without a plan.
local function batched_prediction(m, bw, B)
  local r = m.residency
  if B <= 8 or not r or not bw then return nil end
  local ok, _, pre = pcall(require("lrun.predict_plan").predict, m, m:tensors(), r.plan, r.host_compute, bw,
    { prefill_tokens = B, host_stream_rows = r.host_stream_rows })
  return ok and pre and pre.tok_s or nil
end

local function run(B)
  -- planned for B sequences and their prompt step: the budget's room holds B sequences' KV cache
  local m, err = lrun.load(path, { device = device, progress = false, n_ctx = n_ctx, cache_implementation = cache,
    gpu_budget = math.floor(budget * GiB), n_seq = B, n_batch = B * N_PROMPT })
  if not m then
    io.stderr:write(string.format("batch_offload: B=%d: %s\n", B, tostring(err)))
    return nil
  end
  local e, eerr = m:engine({ n_seq = B, n_batch = B * N_PROMPT })
  if not e then
    io.stderr:write(string.format("batch_offload: B=%d: %s\n", B, tostring(eerr and eerr.message or eerr)))
    m:free()
    return nil
  end
  local n_vocab = m:info().n_vocab
  local n_tok = B * N_PROMPT
  local ids, seq = ffi.new("int32_t[?]", n_tok), ffi.new("int32_t[?]", n_tok)
  for s = 0, B - 1 do
    for k = 0, N_PROMPT - 1 do
      ids[s * N_PROMPT + k], seq[s * N_PROMPT + k] = (100 + 37 * k + 11 * s) % n_vocab, s
    end
  end
  local logits, n_out = ffi.new("float[?]", B * n_vocab), ffi.new("int64_t[1]")
  local function step(n, t, sq)
    if C.lrun_engine_step(e, n, t, sq, nil, logits, B, n_out) ~= C.LRUN_OK then
      error("step: " .. lf.last_error(), 0)
    end
  end
  step(n_tok, ids, seq)
  local tok, dseq = ffi.new("int32_t[?]", B), ffi.new("int32_t[?]", B)
  for s = 0, B - 1 do dseq[s] = s end
  local function next_tokens()
    for s = 0, B - 1 do tok[s] = C.lrun_logits_argmax(logits + s * n_vocab, n_vocab) end
  end
  for _ = 1, N_WARM do next_tokens(); step(B, tok, dseq) end
  C.lrun_engine_reset_stats(e)
  local t0 = sys.now()
  for _ = 1, n_gen do next_tokens(); step(B, tok, dseq) end
  local dt = sys.now() - t0
  local st = ffi.new("lrun_engine_stats")
  C.lrun_engine_get_stats(e, st)
  local bw = require("lrun.residency").bandwidths(m)
  local p = m:placement()
  local off = (p.bytes.pinned or 0) + (p.bytes.host or 0) + (p.bytes.mmap or 0) + (p.bytes.disk or 0)
  local limit1 = off > 0 and bw and bw.h2d_pinned / off or nil
  local row = {
    batch = B, tps = B * n_gen / dt, step_ms = 1e3 * dt / n_gen,
    streamed_per_step = tonumber(st.bytes_streamed) / n_gen,
    host_compute_per_step = tonumber(st.host_compute_bytes) / n_gen,
    off_device_bytes = off, h2d_pinned = bw and bw.h2d_pinned or nil,
    limit_tps = limit1 and limit1 * B or nil,
    predicted_tps = batched_prediction(m, bw, B) or (p.predicted and p.predicted.tok_s * B) or nil,
    budget_gib = budget, cache = cache, n_ctx = n_ctx,
  }
  m:free()
  collectgarbage()
  print(require("tests.bench.json_lines").encode(row))
  io.stdout:flush()
  return row
end

local rows = {}
for _, B in ipairs(batches) do
  local ok, r = pcall(run, B)
  if ok and r then rows[#rows + 1] = r
  elseif not ok then io.stderr:write("batch_offload: B=" .. B .. ": " .. tostring(r) .. "\n") end
end
if generated then os.remove(path) end

print(string.format("\n%s, GPU budget %g GiB, KV cache %s, n_ctx %d; decode steps of B tokens\n", device, budget,
  cache, n_ctx))
print("| batch | aggregate tok/s | ms/step | streamed GB/step | host-computed GB/step | limit × B tok/s | % of it |"
  .. " predicted tok/s |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for _, r in ipairs(rows) do
  print(string.format("| %d | %.2f | %.1f | %.2f | %.2f | %s | %s | %s |", r.batch, r.tps, r.step_ms,
    r.streamed_per_step / 1e9, r.host_compute_per_step / 1e9,
    r.limit_tps and string.format("%.2f", r.limit_tps) or "-",
    r.limit_tps and string.format("%.0f%%", 100 * r.tps / r.limit_tps) or "-",
    r.predicted_tps and string.format("%.2f", r.predicted_tps) or "-"))
end
