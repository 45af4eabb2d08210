--- disk_bench.lua — the disk tier against the disk: batch-1 greedy decode of a
-- model larger than both budgets, its off-device weights read from the file
-- with direct I/O (residency/disk_reader.c), beside the disk's own O_DIRECT
-- sequential read rate measured in the same run (dd iflag=direct).
--
-- Usage (on the GPU machine; not part of make test):
--   build/lrun tests/bench/disk_bench.lua [MODEL|7b:bf16] [--gpu-budget 2] [--host-budget 4]
--       [--ngen 8] [--depths 1,2,4,8] [--device cuda:0] [--prefill 512]
--   7b:bf16 (the default) is the Llama-2-7B shape in bf16 (13.5 GB), written
--   to $LRUN_BENCH_DIR (default /tmp; keep it on the disk to measure, not a
--   tmpfs) and removed after. Budgets in GiB.
--
-- For each queue depth (LRUN_DISK_THREADS, pread threads in flight):
--   load      lrun.load with gpu_budget, host_budget (placement: the default
--             policy; what does not fit either budget goes to disk), then the
--             first token of an 8-token prompt: "time to first token", set
--             against reading the whole file once at the dd rate;
--   decode    2 warm-up steps, then ngen timed greedy steps; disk bytes read
--             per token from the engine's stats; the disk limit is
--             dd bytes/s / disk bytes per token (what the tier could reach
--             if compute and PCIe were free); goal >= 90%.
--   prefill   (unless --prefill 0) one prompt of --prefill tokens (one chunk)
--             from an empty cache after decode, beside the planner's
--             predicted prefill (lrun.predict) and its error.
-- The file is dropped from the page cache before dd and before each run
-- (posix_fadvise DONTNEED), so neither reads from memory.
-- Prints one JSON line per run and a markdown table at the end.
package.path = "./?.lua;" .. package.path
local ffi = require("ffi")
local lrun = require("lrun")
local lf = require("lrun.ffi")
local sys = require("lrun.sys")
local C = lf.C

ffi.cdef [[ int setenv(const char *name, const char *value, int overwrite); ]]

local GiB = 1024 ^ 3
local N_CTX, N_PROMPT, N_WARM = 256, 8, 2

local path, gpu_gib, host_gib, n_gen, depths = "7b:bf16", 2, 4, 8, { 1, 2, 4, 8 }
local n_prefill = 512
local device = os.getenv("LRUN_BENCH_DEVICE") or "cuda:0"
local i = 1
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--gpu-budget" then gpu_gib = tonumber(v); i = i + 1
  elseif a == "--host-budget" then host_gib = tonumber(v); i = i + 1
  elseif a == "--ngen" then n_gen = tonumber(v); i = i + 1
  elseif a == "--prefill" then n_prefill = tonumber(v); i = i + 1
  elseif a == "--device" then device = v; i = i + 1
  elseif a == "--depths" then
    depths = {}
    for d in v:gmatch("[^,]+") do depths[#depths + 1] = tonumber(d) end
    i = i + 1
  elseif a:sub(1, 2) ~= "--" then path = a
  else io.stderr:write("disk_bench: unknown argument " .. a .. "\n"); os.exit(2) end
  i = i + 1
end

N_CTX = math.max(N_CTX, n_prefill + 16)

local generated = false
if path == "7b:bf16" then -- gpu_bench's random Llama-2-7B shape (tests/bench/llama7b.lua)
  path, generated = require("tests.bench.llama7b").generate("bf16", "disk_bench"), true
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  return out
end

-- The model's files: the GGUF, or an HF directory's safetensors shards (what the disk tier reads).
local function model_files()
  local files = {}
  local f = io.open(path .. "/config.json", "rb")
  if not f then return { path } end
  f:close()
  for name in sh(string.format("ls -1 '%s'", path)):gmatch("[^\n]+") do
    if name:match("%.safetensors$") then files[#files + 1] = path .. "/" .. name end
  end
  return files
end
local FILES = model_files()

local function drop_cache()
  for _, file in ipairs(FILES) do
    sh(string.format("python3 -c \"import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); "
      .. "os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)\" '%s'", file))
  end
end

local function size_of(file)
  local f = assert(io.open(file, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

local function file_bytes()
  local n = 0
  for _, file in ipairs(FILES) do n = n + size_of(file) end
  return n
end

-- ---------------------------------------------------------------- the disk alone

--- dd iflag=direct over the (largest) file (at most 16 GiB), 4 MiB blocks: bytes/s.
local function dd_rate()
  drop_cache()
  local file = FILES[1]
  for _, f in ipairs(FILES) do if size_of(f) > size_of(file) then file = f end end
  local count = math.min(4096, math.floor(size_of(file) / (4 * 2 ^ 20)))
  local t0 = sys.now()
  local out = sh(string.format("dd if='%s' of=/dev/null bs=4M count=%d iflag=direct", file, count))
  local dt = sys.now() - t0
  local bytes = tonumber(out:match("(%d+) bytes")) or count * 4 * 2 ^ 20
  io.stderr:write("disk_bench: " .. (out:match("[^\n]*copied[^\n]*") or out) .. "\n")
  return bytes / dt, bytes
end

local json = require("tests.bench.json_lines").encode

-- ---------------------------------------------------------------- one run

local function run(depth, dd_bps)
  ffi.C.setenv("LRUN_DISK_THREADS", tostring(depth), 1)
  drop_cache()
  local t0 = sys.now()
  local m, err = lrun.load(path, { device = device, progress = false, n_ctx = N_CTX, cache_implementation = "static",
    gpu_budget = math.floor(gpu_gib * GiB), host_budget = math.floor(host_gib * GiB) })
  if not m then
    io.stderr:write("disk_bench: depth " .. depth .. ": " .. tostring(err) .. "\n")
    return nil
  end
  local e = assert(m:engine())
  local n_vocab = m:info().n_vocab
  local seq, ids = ffi.new("int32_t[?]", N_PROMPT), ffi.new("int32_t[?]", N_PROMPT)
  for k = 0, N_PROMPT - 1 do ids[k] = 100 + 37 * k end
  local logits, n_out, tok = ffi.new("float[?]", n_vocab), ffi.new("int64_t[1]"), ffi.new("int32_t[1]")
  local function step(n, t)
    if C.lrun_engine_step(e, n, t, seq, nil, logits, 1, n_out) ~= C.LRUN_OK then error("step: " .. lf.last_error(), 0) end
  end
  step(N_PROMPT, ids)
  local ttft = sys.now() - t0
  for _ = 1, N_WARM do tok[0] = C.lrun_logits_argmax(logits, n_vocab); step(1, tok) end
  C.lrun_engine_reset_stats(e)
  local t1 = sys.now()
  for _ = 1, n_gen do tok[0] = C.lrun_logits_argmax(logits, n_vocab); step(1, tok) end
  local dt = sys.now() - t1
  local s = ffi.new("lrun_engine_stats")
  C.lrun_engine_get_stats(e, s)
  local prefill_tps
  if n_prefill > 0 then -- one chunk from an empty cache (#15: beside the predicted prefill)
    local pids, pseq = ffi.new("int32_t[?]", n_prefill), ffi.new("int32_t[?]", n_prefill)
    for k = 0, n_prefill - 1 do pids[k] = (100 + 37 * k) % n_vocab end
    assert(C.lrun_engine_seq_truncate(e, 0, 0) == C.LRUN_OK, lf.last_error())
    local t2 = sys.now()
    if C.lrun_engine_step(e, n_prefill, pids, pseq, nil, logits, 1, n_out) ~= C.LRUN_OK then
      error("prefill: " .. lf.last_error(), 0)
    end
    prefill_tps = n_prefill / (sys.now() - t2)
  end
  local per_tok = tonumber(s.disk_bytes_read) / n_gen
  local limit = per_tok > 0 and dd_bps / per_tok or 0
  local p = m:placement()
  local row = {
    depth = depth, tps = n_gen / dt, disk_bytes_per_tok = per_tok, disk_limit_tps = limit,
    pct_of_limit = limit > 0 and 100 * (n_gen / dt) / limit or 0,
    reader_bps = s.disk_read_seconds > 0 and tonumber(s.disk_bytes_read) / s.disk_read_seconds or 0,
    dd_bps = dd_bps, direct = s.disk_direct ~= 0, stalls_per_tok = tonumber(s.disk_stalls) / n_gen,
    stall_s_per_tok = s.stall_seconds / n_gen, ttft_s = ttft, file_read_s = file_bytes() / dd_bps,
    device_bytes = p.bytes.device, host_bytes = p.bytes.host + p.bytes.pinned, disk_bytes = p.bytes.disk,
    mmap_bytes = p.bytes.mmap, gpu_budget_gib = gpu_gib, host_budget_gib = host_gib,
    host_held = m.residency and m.residency.host_bytes or 0,
    -- the planner's prediction for this placement (lrun.predict), to report its error (#15)
    predicted_tps = p.predicted and p.predicted.tok_s or nil,
    prefill_tps = prefill_tps, predicted_prefill_tps = prefill_tps and p.prefill and p.prefill.tok_s or nil,
  }
  if m.residency then io.stderr:write(m.residency.explain, "\n") end
  m:free()
  collectgarbage()
  print(json(row))
  io.stdout:flush()
  return row
end

-- ---------------------------------------------------------------- main

local dd_bps = dd_rate()
local rows = {}
for _, d in ipairs(depths) do rows[#rows + 1] = run(d, dd_bps) end
print(string.format("\n%s, GPU budget %g GiB, host budget %g GiB; dd iflag=direct %.2f GB/s; file %.2f GB\n",
  device, gpu_gib, host_gib, dd_bps / 1e9, file_bytes() / 1e9))
print("| queue depth | tok/s | disk GB/token | disk limit tok/s | % of limit | reader GB/s | stalls/token | "
  .. "time to first token s | file at dd rate s | predicted tok/s (error) | prefill tok/s | predicted (error) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for _, r in ipairs(rows) do
  local pred = r.predicted_tps and string.format("%.3f (%+.0f%%)", r.predicted_tps,
    100 * (r.predicted_tps - r.tps) / r.tps) or "-"
  local pf = r.predicted_prefill_tps and string.format("%.1f (%+.0f%%)", r.predicted_prefill_tps,
    100 * (r.predicted_prefill_tps - r.prefill_tps) / r.prefill_tps) or "-"
  print(string.format("| %d | %.3f | %.2f | %.3f | %.0f%% | %.2f | %.1f | %.1f | %.1f | %s | %s | %s |", r.depth,
    r.tps, r.disk_bytes_per_tok / 1e9, r.disk_limit_tps, r.pct_of_limit, r.reader_bps / 1e9, r.stalls_per_tok,
    r.ttft_s, r.file_read_s, pred, r.prefill_tps and string.format("%.1f", r.prefill_tps) or "-", pf))
end
if generated then os.remove(path) end
