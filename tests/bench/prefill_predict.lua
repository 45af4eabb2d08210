--- prefill_predict.lua — the planner's predicted prefill and decode speeds
-- (lrun.predict, docs/residency.md "Predicted prefill") against the speeds
-- measured, for a few placements of one model on one device (#15).
--
-- Usage (not part of make test):
--   build/lrun tests/bench/prefill_predict.lua [MODEL] [--device cpu] [--tokens 512] [--ngen 16]
--       [--threads N] [--cases resident,mmap,disk,host] [--shape small|1b]
--   MODEL: a GGUF path; without one a random q8_0 model is written to
--   $LRUN_BENCH_DIR (default /tmp) and removed after: --shape small (the
--   default) ~110 MB (8 blocks, n_embd 768, n_ff 2048, vocab 32000), 1b
--   ~1 GB (16 blocks, n_embd 2048, n_ff 5632) for a GPU.
--
-- Cases (each a fresh lrun.load):
--   resident   nothing planned: m:placement()'s resident prediction
--   mmap       a device budget of half the weights (cpu: the rest streamed
--              from the file's mapping; cuda: from host memory)
--   disk       a host budget (cpu) or device + host budgets (cuda) that send
--              the off-device weights to the disk tier (direct I/O)
--   host       (cuda) half the weights off the device, computed on the host
--              (smart with host compute); (cpu) -ot ffn_up=host: copied from
--              host memory by the fill
-- Per case: a warm-up prefill, then the best of two timed prefills of
-- --tokens tokens (the sequence emptied between), then 2 warm-up and --ngen
-- timed decode steps. Prints one JSON line per case and a markdown table
-- with the prediction errors (predicted − measured) / measured.
package.path = "./?.lua;" .. package.path
local ffi = require("ffi")
local lrun = require("lrun")
local lf = require("lrun.ffi")
local sys = require("lrun.sys")
local C = lf.C

local path, device, T, n_gen, threads = nil, "cpu", 512, 16, nil
local cases = { "resident", "mmap", "disk", "host" }
local shape = "small"
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--device" then device = v; i = i + 1
  elseif a == "--tokens" then T = tonumber(v); i = i + 1
  elseif a == "--ngen" then n_gen = tonumber(v); i = i + 1
  elseif a == "--threads" then threads = tonumber(v); i = i + 1
  elseif a == "--shape" then shape = v; i = i + 1
  elseif a == "--cases" then
    cases = {}
    for c in v:gmatch("[^,]+") do cases[#cases + 1] = c end
    i = i + 1
  elseif a:sub(1, 2) ~= "--" then path = a
  else io.stderr:write("prefill_predict: unknown argument " .. a .. "\n"); os.exit(2) end
  i = i + 1
end

local generated = false
if not path then
  path = (os.getenv("LRUN_BENCH_DIR") or "/tmp") .. "/prefill_predict_" .. tostring(sys.now()):gsub("%.", "") .. ".gguf"
  local s = ffi.new("lrun_model_gen_spec")
  if shape == "1b" then s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 16, 2048, 16, 8, 5632
  else s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 8, 768, 12, 4, 2048 end
  s.n_vocab, s.n_ctx = 32000, 2048
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_Q8_0, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 11, 0
  assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
  generated = true
end

local json = require("tests.bench.json_lines").encode
local cuda = device:match("^cuda") ~= nil

local function load_opts(case, weights)
  local o = { device = device, progress = false, n_ctx = T + n_gen + 8, cache_implementation = "static",
    threads = threads }
  if case == "mmap" then o.gpu_budget, o.policy = math.floor(weights / 2) + 64 * 2 ^ 20, "aggressive"
  elseif case == "disk" then
    if cuda then o.gpu_budget, o.host_budget = math.floor(weights / 2), 256 * 2 ^ 20
    else o.host_budget = math.floor(weights / 4) + 64 * 2 ^ 20 end
  elseif case == "host" then
    if cuda then o.gpu_budget, o.policy = math.floor(weights / 2), "smart"
    else o.overrides = { "ffn_up=host" } end
  end
  return o
end

local function run(case, weights)
  local m, err = lrun.load(path, load_opts(case, weights))
  if not m then io.stderr:write("prefill_predict: " .. case .. ": " .. tostring(err) .. "\n") return nil end
  local p = m:placement()
  local e = assert(m:engine())
  local n_vocab = m:info().n_vocab
  local ids = ffi.new("int32_t[?]", T)
  for k = 0, T - 1 do ids[k] = (100 + 37 * k) % n_vocab end
  local seq = ffi.new("int32_t[?]", T)
  local logits, n_out, tok = ffi.new("float[?]", n_vocab), ffi.new("int64_t[1]"), ffi.new("int32_t[1]")
  local function step(n, t)
    if C.lrun_engine_step(e, n, t, seq, nil, logits, 1, n_out) ~= C.LRUN_OK then error("step: " .. lf.last_error(), 0) end
  end
  local best = math.huge
  for r = 1, 3 do
    assert(C.lrun_engine_seq_truncate(e, 0, 0) == C.LRUN_OK, lf.last_error())
    local t0 = sys.now()
    step(T, ids)
    local dt = sys.now() - t0
    if r > 1 then best = math.min(best, dt) end -- the first: warm-up
  end
  for _ = 1, 2 do tok[0] = C.lrun_logits_argmax(logits, n_vocab); step(1, tok) end
  local t1 = sys.now()
  for _ = 1, n_gen do tok[0] = C.lrun_logits_argmax(logits, n_vocab); step(1, tok) end
  local dec = n_gen / (sys.now() - t1)
  local row = { case = case, device = device, tokens = T, prefill_tps = T / best, decode_tps = dec,
    device_bytes = p.bytes.device, off_bytes = weights - p.bytes.device,
    predicted_prefill_tps = p.prefill and p.prefill.tok_s or nil, prefill_limit = p.prefill and p.prefill.limit,
    predicted_decode_tps = p.predicted and p.predicted.tok_s or nil }
  io.stderr:write(case, ":\n", tostring(p), "\n")
  m:free()
  collectgarbage()
  print(json(row))
  io.stdout:flush()
  return row
end

local probe = assert(lrun.load(path, { progress = false }))
local weights = probe:info().weight_bytes
probe:free()
local rows = {}
for _, c in ipairs(cases) do rows[#rows + 1] = run(c, weights) end

local function err(pred, got) return pred and string.format("%.1f (%+.0f%%)", pred, 100 * (pred - got) / got) or "-" end
print(string.format("\n%s, %s (%.0f MB), prefill of %d tokens, decode %d tokens\n", device, path, weights / 1e6, T,
  n_gen))
print("| case | off device MB | prefill tok/s | predicted (error) | limit | decode tok/s | predicted (error) |")
print("|---|---:|---:|---:|---|---:|---:|")
for _, r in ipairs(rows) do
  print(string.format("| %s | %.0f | %.1f | %s | %s | %.2f | %s |", r.case, r.off_bytes / 1e6, r.prefill_tps,
    err(r.predicted_prefill_tps, r.prefill_tps), r.prefill_limit or "-", r.decode_tps,
    err(r.predicted_decode_tps, r.decode_tps)))
end
if generated then os.remove(path) end
