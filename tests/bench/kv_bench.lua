--- kv_bench.lua — decode tokens/s and device memory of the five KV cache
-- kinds on cuda:0 at long contexts, against their physical limits and, with
-- --hf, HF transformers' same cache implementations (hf_kv_bench.py) run in
-- the same invocation.
--
-- Usage: build/lrun tests/bench/kv_bench.lua [--contexts 4096,16384,32768]
--          [--kinds dynamic,static,offloaded,offloaded_static,quantized]
--          [--n-gen 16] [--quant-bits 4] [--hf] [--out FILE] [MODEL]
--   MODEL: a GGUF path, or 7b:bf16 (the default): the random-weight
--   Llama-2-7B shape of tests/bench/llama7b.lua.
--
-- Per context L and kind, batch 1, f16 KV: an engine of n_ctx L + n_gen + 4;
-- lrun_engine_seq_fill_random puts L positions of random keys and values in
-- the cache (decode speed depends on the length, not the values; HF's side
-- fills its caches the same way), 2 warm-up steps, then n_gen greedy steps
-- (the step, its logits on the host, the host argmax) timed together.
--   peak_bytes  the device pool's high-water mark from engine creation to the
--               end (weights included; weight_bytes says how much they are)
--   kv_bytes    device bytes of the KV cache at the end (offloaded: the two
--               slots; quantized: codes, ring and slots)
--   limit_tps   the bytes one step must move over the slower link: HBM for
--               the resident kinds (weights + keys and values read), PCIe for
--               the offloaded kinds (every layer's keys and values, host to
--               device), each at the rate lrun_device_measure_bandwidth
--               measures here; none for quantized (its own kernels bound it)
-- quantized runs int4 (--quant-bits), group 64, the last 128 positions exact:
-- HF QuantizedCache's defaults, which hf_kv_bench.py uses.
-- Prints a markdown table; --out writes JSON lines (lrun rows, then HF's).
-- Environment: LRUN_HF_TIMEOUT (seconds) bounds the HF run; extra arguments
-- for hf_kv_bench.py go in LRUN_HF_ARGS.
package.path = "./?.lua;" .. package.path
local ffi = require("ffi")
local lrun = require("lrun")
local lf = require("lrun.ffi")
local sys = require("lrun.sys")
local C = lf.C

local KINDS = { "dynamic", "static", "offloaded", "offloaded_static", "quantized" }

local opts = { contexts = { 4096, 16384, 32768 }, kinds = KINDS, n_gen = 16, model = "7b:bf16", quant_bits = 4 }
local function list(s, num)
  local out = {}
  for x in s:gmatch("[^,]+") do out[#out + 1] = num and assert(tonumber(x), "not a number: " .. x) or x end
  return out
end
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--contexts" then i = i + 1; opts.contexts = list(arg[i], true)
  elseif a == "--kinds" then i = i + 1; opts.kinds = list(arg[i])
  elseif a == "--n-gen" then i = i + 1; opts.n_gen = assert(tonumber(arg[i]), "--n-gen needs a number")
  elseif a == "--quant-bits" then i = i + 1; opts.quant_bits = assert(tonumber(arg[i]), "--quant-bits needs 8 or 4")
  elseif a == "--hf" then opts.hf = true
  elseif a == "--out" then i = i + 1; opts.out = arg[i]
  elseif a:sub(1, 1) == "-" then io.stderr:write("kv_bench: unknown option " .. a .. "\n"); os.exit(2)
  else opts.model = a end
  i = i + 1
end
if C.lrun_cuda_device_count() == 0 then
  io.stderr:write("kv_bench: no CUDA device visible\n")
  os.exit(1)
end

-- ---------------------------------------------------------------- the model and the links

local path, generated = opts.model, false
local gen_dtype = opts.model:match("^7b:(.+)$")
if gen_dtype then path, generated = require("tests.bench.llama7b").generate(gen_dtype, "kv_bench"), true end
local max_ctx = 0
for _, L in ipairs(opts.contexts) do max_ctx = math.max(max_ctx, L + opts.n_gen + 4) end
local m = assert(lrun.load(path, { device = "cuda:0", progress = false, n_ctx = max_ctx }))
local h, dev = m.handle, C.lrun_model_device(m.handle)
local info = C.lrun_model_get_info(h)
local n_layer, kv_dim = tonumber(info.n_layer), tonumber(info.n_head_kv) * tonumber(info.head_dim)
local weight_bytes = tonumber(info.weight_bytes) -- all on the device once an engine is made

local function rate(from, to)
  local r = ffi.new("double[1]")
  local st = C.lrun_device_measure_bandwidth(dev, from, to, 1024 * 1024 * 1024, r)
  if st ~= C.LRUN_OK then error("measuring bandwidth: " .. lf.last_error(), 0) end
  return r[0]
end
-- a same-tier copy reads and writes every byte: the read rate is about twice the copy rate
local hbm_read = 2 * rate(C.LRUN_TIER_DEVICE, C.LRUN_TIER_DEVICE)
local pcie = rate(C.LRUN_TIER_PINNED, C.LRUN_TIER_DEVICE)
io.stderr:write(string.format("kv_bench: HBM read %.0f GB/s, PCIe host->device %.1f GB/s\n", hbm_read / 1e9, pcie / 1e9))

-- ---------------------------------------------------------------- one row

local n_vocab = m.n_vocab
local logits = ffi.new("float[?]", n_vocab)
local n_out = ffi.new("int64_t[1]")
local tok, seq0 = ffi.new("int32_t[1]", { 1 }), ffi.new("int32_t[1]", { 0 })

local function bench(kind, L)
  C.lrun_device_reset_peak(dev)
  local eo = ffi.new("lrun_engine_opts")
  eo.n_seq_max, eo.n_ctx_max = 1, L + opts.n_gen + 4
  local kv = ffi.new("lrun_cache_kind[1]")
  assert(C.lrun_cache_kind_from_name(kind, kv) == C.LRUN_OK)
  eo.cache_kind = kv[0]
  eo.kv_quant_bits = opts.quant_bits -- group 64 and window 128 by default: HF QuantizedCache's defaults
  local out = ffi.new("lrun_engine *[1]")
  if C.lrun_engine_init(out, h, eo) ~= C.LRUN_OK then return { error = lf.last_error() } end
  local e = out[0]
  local row
  local ok, err = pcall(function()
    local t0 = sys.now()
    if C.lrun_engine_seq_fill_random(e, 0, L, 1234) ~= C.LRUN_OK then error(lf.last_error(), 0) end
    local fill_s = sys.now() - t0
    local function step()
      if C.lrun_engine_step(e, 1, tok, seq0, nil, logits, 1, n_out) ~= C.LRUN_OK then error(lf.last_error(), 0) end
      tok[0] = C.lrun_logits_argmax(logits, n_vocab)
    end
    step(); step()
    C.lrun_engine_reset_stats(e)
    t0 = sys.now()
    for _ = 1, opts.n_gen do step() end
    local s = sys.now() - t0
    local st = ffi.new("lrun_engine_stats")
    C.lrun_engine_get_stats(e, st)
    row = { decode_tps = opts.n_gen / s, fill_s = fill_s, peak_bytes = tonumber(C.lrun_device_peak(dev)),
      kv_bytes = tonumber(st.kv_bytes), kv_moved_per_token = tonumber(st.kv_bytes_moved) / opts.n_gen }
  end)
  C.lrun_engine_free(e)
  if not ok then return { error = tostring(err) } end
  local kv_read = 2 * n_layer * (L + 2 + opts.n_gen / 2) * kv_dim * 2 -- f16 keys and values, mid-run length
  if kind == "offloaded" or kind == "offloaded_static" then row.limit_tps = pcie / kv_read
  elseif kind ~= "quantized" then row.limit_tps = hbm_read / (weight_bytes + kv_read) end
  return row
end

-- ---------------------------------------------------------------- run

local rows = {}
for _, L in ipairs(opts.contexts) do
  for _, kind in ipairs(opts.kinds) do
    local r = bench(kind, L)
    r.impl, r.context, r.engine, r.weight_bytes, r.n_gen = kind, L, "lrun", weight_bytes, opts.n_gen
    if kind == "quantized" then r.quant_bits = opts.quant_bits end
    rows[#rows + 1] = r
    io.stderr:write(string.format("kv_bench: %s at %d: %s\n", kind, L,
      r.error or string.format("%.2f tok/s, peak %.2f GB", r.decode_tps, r.peak_bytes / 1e9)))
  end
end
m:free()
if generated then os.remove(path) end

-- HF transformers after lrun has given the GPU back: same shape, contexts and kinds
local hf = {}
if opts.hf then
  local ctx = {}
  for _, L in ipairs(opts.contexts) do ctx[#ctx + 1] = tostring(L) end
  -- LRUN_HF_TIMEOUT=seconds bounds HF's whole run; the rows it printed by then are kept
  local limit = tonumber(os.getenv("LRUN_HF_TIMEOUT") or "")
  local cmd = string.format("%spython3 tests/bench/hf_kv_bench.py --contexts %s --impls %s --n-gen %d",
    limit and ("timeout " .. math.floor(limit) .. " ") or "", table.concat(ctx, ","), table.concat(opts.kinds, ","),
    opts.n_gen) .. " " .. (os.getenv("LRUN_HF_ARGS") or "")
  local p = io.popen(cmd)
  for line in p:lines() do
    if line:match("^{") then hf[#hf + 1] = line end
  end
  p:close()
end
local function hf_field(line, name) return line:match('"' .. name .. '": ([%d.eE+-]+)') end
local function hf_row(kind, L)
  for _, line in ipairs(hf) do
    if line:match('"impl": "' .. kind .. '"') and tonumber(line:match('"context": (%d+)')) == L then return line end
  end
end

-- ---------------------------------------------------------------- report

local function gb(b) return b and string.format("%.2f", b / 1e9) or "–" end
local function f2(v) return v and string.format("%.2f", v) or "–" end
print(string.format("cuda:0, batch 1, f16 KV, %d timed decode steps; HBM read %.0f GB/s, PCIe host->device %.1f GB/s; "
  .. "weights %.2f GB; quantized int%d", opts.n_gen, hbm_read / 1e9, pcie / 1e9, weight_bytes / 1e9, opts.quant_bits))
print("")
print("| context | cache | lrun tok/s | limit tok/s | % of limit | lrun peak GB | lrun KV on device GB | "
  .. "HF tok/s | HF peak GB | lrun / HF |")
print("|---|---|---|---|---|---|---|---|---|---|")
for _, r in ipairs(rows) do
  local line = hf_row(r.impl, r.context)
  local hf_tps = line and tonumber(hf_field(line, "decode_tps"))
  local hf_peak = line and tonumber(hf_field(line, "peak_bytes"))
  local hf_err = line and line:match('"error": "([^"]*)"')
  if r.error then
    print(string.format("| %d | %s | error: %s | | | | | %s | %s | |", r.context, r.impl, r.error:sub(1, 80),
      f2(hf_tps), gb(hf_peak)))
  else
    print(string.format("| %d | %s | %.2f | %s | %s | %s | %s | %s | %s | %s |", r.context, r.impl, r.decode_tps,
      f2(r.limit_tps), r.limit_tps and string.format("%.0f%%", 100 * r.decode_tps / r.limit_tps) or "–",
      gb(r.peak_bytes), gb(r.kv_bytes), hf_err and ("error: " .. hf_err:sub(1, 60)) or f2(hf_tps), gb(hf_peak),
      hf_tps and string.format("%.1fx", r.decode_tps / hf_tps) or "–"))
  end
end

if opts.out then require("tests.bench.json_lines").write(opts.out, rows, hf) end
