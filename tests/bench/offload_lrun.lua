--- offload_lrun.lua — lrun's side of the offload benchmark (tests/bench/offload_bench.py
-- runs it): batch-1 greedy decode of a Llama-2-7B-shape bf16 model under GPU
-- budgets too small for it, with the weights that do not fit streamed through
-- device slots (LRUN_WEIGHT_MODE_AS_PLACED) or computed on the host.
--
-- Usage: build/lrun tests/bench/offload_lrun.lua MODEL [--budgets 2,4,8,12] [--ngen N]
--   MODEL is a GGUF path, or 7b:bf16: the random-weight Llama-2-7B shape of
--   gpu_bench.lua, written to $LRUN_BENCH_DIR (default /tmp) and removed after.
-- Prints one JSON object per line and configuration.
--
-- Placement (applied here with lrun_tensor_move / lrun_tensor_set_host_compute;
-- lrun.load's policy options will do the same): norms on the device, the
-- embedding table in pinned memory (only the step's row crosses), the LM head
-- on the device, then as many whole layers from the first as the budget
-- leaves after the KV cache, the scratch and k+1 slots (found by trying: an
-- engine that does not fit fails at init with LRUN_E_OOM, and one more layer
-- goes off). Offloaded layers are in pinned memory; with host compute every
-- n-th of them has its matmuls run on the CPU instead of crossing the bus.
local ffi = require("ffi")
local lrun = require("lrun")
local lf = require("lrun.ffi")
local sys = require("lrun.sys")
local C = lf.C

local GiB = 1024 ^ 3
local N_CTX, N_PROMPT, N_WARM = 256, 8, 2

local path = arg[1]
local budgets, n_gen = { 2, 4, 8, 12 }, 12
local i = 2
while i <= #arg do
  if arg[i] == "--budgets" then
    budgets = {}
    for b in arg[i + 1]:gmatch("[^,]+") do budgets[#budgets + 1] = tonumber(b) end
    i = i + 1
  elseif arg[i] == "--ngen" then n_gen = tonumber(arg[i + 1]); i = i + 1
  else io.stderr:write("offload_lrun: unknown argument " .. arg[i] .. "\n"); os.exit(2) end
  i = i + 1
end
if not path then
  io.stderr:write("usage: lrun tests/bench/offload_lrun.lua MODEL.gguf [--budgets 2,4,8,12] [--ngen N]\n")
  os.exit(2)
end

local generated = false
if path == "7b:bf16" then
  path = (os.getenv("LRUN_BENCH_DIR") or "/tmp") .. "/lrun-offload-llama2-7b-bf16.gguf"
  local s = ffi.new("lrun_model_gen_spec")
  s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 32, 4096, 32, 32, 11008
  s.n_vocab, s.n_ctx = 32000, 4096
  s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_BF16, C.LRUN_DTYPE_BF16, 0
  s.rope_freq_base, s.rms_eps, s.seed, s.n_threads, s.progress = 10000, 1e-5, 7, 0, 0
  local t0 = sys.now()
  if C.lrun_model_generate(path, s) ~= C.LRUN_OK then error("generating " .. path .. ": " .. lf.last_error(), 0) end
  io.stderr:write(string.format("offload_lrun: wrote %s in %.1f s\n", path, sys.now() - t0))
  generated = true
end

-- ---------------------------------------------------------------- json

local function json(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    local s = type(v) == "string" and string.format("%q", v) or type(v) == "boolean" and tostring(v)
      or v == nil and "null" or string.format("%.10g", v)
    parts[#parts + 1] = string.format("%q: %s", k, s)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- ---------------------------------------------------------------- placement

local MATRIX = {
  [C.LRUN_ROLE_ATTN_Q] = true, [C.LRUN_ROLE_ATTN_K] = true, [C.LRUN_ROLE_ATTN_V] = true,
  [C.LRUN_ROLE_ATTN_OUTPUT] = true, [C.LRUN_ROLE_FFN_GATE] = true, [C.LRUN_ROLE_FFN_UP] = true,
  [C.LRUN_ROLE_FFN_DOWN] = true,
}

--- p: {layer_on_device = fn(l), head = bool, embd = bool, host_every = n|0, src = tier}
-- Returns the bytes per step that stream and that the host reads.
local function place(h, p)
  local dev = C.lrun_model_device(h)
  local moves = {}
  local off_index, streamed, host = 0, 0, 0
  for t = 0, tonumber(C.lrun_model_tensor_count(h)) - 1 do
    local tensor = C.lrun_model_tensor(h, t)
    local role, layer = tonumber(C.lrun_tensor_role(tensor)), C.lrun_tensor_layer(tensor)
    local on_dev, hc = true, 0
    if role == C.LRUN_ROLE_EMBEDDING then on_dev = p.embd
    elseif role == C.LRUN_ROLE_LM_HEAD then on_dev = p.head
    elseif MATRIX[role] then on_dev = p.layer_on_device(layer) end
    local bytes = tonumber(C.lrun_tensor_bytes(tensor))
    if not on_dev and MATRIX[role] then
      if role == C.LRUN_ROLE_ATTN_Q then off_index = off_index + 1 end
      if p.host_every > 0 and off_index % p.host_every == 0 then hc, host = 1, host + bytes
      else streamed = streamed + bytes end
    elseif not on_dev and role == C.LRUN_ROLE_LM_HEAD then streamed = streamed + bytes end
    moves[#moves + 1] = { tensor, on_dev and C.LRUN_TIER_DEVICE or p.src, hc }
  end
  -- off the device first, so the device side has room for what comes on
  table.sort(moves, function(a, b) return (a[2] ~= C.LRUN_TIER_DEVICE) and (b[2] == C.LRUN_TIER_DEVICE) end)
  for _, m in ipairs(moves) do
    local tensor, tier = m[1], m[2]
    if C.lrun_tensor_tier(tensor) ~= tier then
      local st = C.lrun_tensor_move(tensor, tier == C.LRUN_TIER_DEVICE and dev or nil, tier)
      if st ~= C.LRUN_OK then return nil, lf.last_error() end
    end
    C.lrun_tensor_set_host_compute(tensor, m[3])
  end
  return streamed, host
end

-- ---------------------------------------------------------------- runs

local function engine(h, k)
  local eo = ffi.new("lrun_engine_opts")
  eo.n_seq_max, eo.n_ctx_max, eo.n_batch_max, eo.cache_kind = 1, N_CTX, 8, C.LRUN_CACHE_KIND_STATIC
  eo.weight_mode, eo.prefetch_layers = C.LRUN_WEIGHT_MODE_AS_PLACED, k
  local out = ffi.new("lrun_engine *[1]")
  local st = C.lrun_engine_init(out, h, eo)
  if st ~= C.LRUN_OK then return nil, st, lf.last_error() end
  return out[0]
end

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

--- One configuration: finds the most resident layers that fit, runs, prints.
local function bench(m, budget_label, name, cfg)
  local h = m.handle
  local info = C.lrun_model_get_info(h)
  local n_layer = tonumber(info.n_layer)
  local n_dev = cfg.n_dev or n_layer
  local e, err
  while true do
    local on = cfg.layer_on_device or function(l) return l < n_dev end
    local streamed, host = place(h, {
      layer_on_device = on, head = cfg.head ~= false, embd = cfg.embd or false,
      host_every = cfg.host_every or 0, src = cfg.src or C.LRUN_TIER_PINNED,
    })
    if not streamed then err = host
    else
      local st
      e, st, err = engine(h, cfg.k or 0)
      if e then
        local tps, s = decode(e, tonumber(info.n_vocab))
        local row = {
          budget_gib = budget_label, config = name, k = tonumber(cfg.k or 0), tps = tps,
          n_dev_layers = cfg.layer_on_device and -1 or n_dev, streamed_bytes = streamed, host_bytes = host,
          offloaded_bytes = streamed + host,
          bytes_streamed_per_tok = tonumber(s.bytes_streamed) / n_gen,
          host_compute_bytes_per_tok = tonumber(s.host_compute_bytes) / n_gen,
          copy_s_per_tok = s.copy_seconds / n_gen, stall_s_per_tok = s.stall_seconds / n_gen,
          hits = tonumber(s.prefetch_hits), misses = tonumber(s.prefetch_misses),
          weight_device_bytes = tonumber(s.weight_device_bytes), slot_bytes = tonumber(s.slot_bytes),
          kv_bytes = tonumber(s.kv_bytes), scratch_bytes = tonumber(s.scratch_bytes),
          device_used_bytes = tonumber(s.weight_device_bytes + s.slot_bytes + s.kv_bytes + s.scratch_bytes),
          weight_bytes = tonumber(info.weight_bytes),
        }
        C.lrun_engine_free(e)
        print(json(row))
        io.stdout:flush()
        return row
      end
      if st ~= C.LRUN_E_OOM then break end
    end
    if cfg.layer_on_device or n_dev == 0 then break end
    n_dev = n_dev - 1
  end
  io.stderr:write(string.format("offload_lrun: %s GiB %s: %s\n", tostring(budget_label), name, tostring(err)))
end

local function load(budget_gib)
  local t0 = sys.now()
  local m = assert(lrun.load(path, { device = os.getenv("LRUN_BENCH_DEVICE") or "cuda:0", gpu_budget = budget_gib and math.floor(budget_gib * GiB) or nil,
    progress = false }))
  io.stderr:write(string.format("offload_lrun: loaded for %s GiB in %.1f s\n", tostring(budget_gib), sys.now() - t0))
  return m
end

-- A first guess of the resident layers: the budget less slots, head and
-- about 200 MiB of cache and scratch, in whole layers; bench() lowers it.
local function guess(m, budget_gib, k, head)
  local h = m.handle
  local layer = 0
  for _, nm in ipairs({ "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down" }) do
    layer = layer + tonumber(C.lrun_tensor_bytes(C.lrun_model_find_tensor(h, "blk.0." .. nm .. ".weight")))
  end
  local head_b = head and tonumber(C.lrun_tensor_bytes(C.lrun_model_find_tensor(h, "output.weight"))) or 0
  local free = budget_gib * GiB - (k + 1) * layer - head_b - 200 * 2 ^ 20
  return math.max(0, math.min(32, math.floor(free / layer))), layer
end

-- ---------------------------------------------------------------- budgets

local best_hybrid = 3
for _, b in ipairs(budgets) do
  local m = load(b)
  if b == 4 then
    -- prefetch depth, source tier, and host-compute share, at the headline budget
    for _, k in ipairs({ 1, 2, 3 }) do
      bench(m, b, "stream k=" .. k, { k = k, n_dev = guess(m, b, k, true) })
    end
    bench(m, b, "stream k=1 from mmap", { k = 1, n_dev = guess(m, b, 1, true), src = C.LRUN_TIER_MMAP })
    -- while the CPU computes a layer the copy engine works through the k
    -- copies already issued, so hybrid wants k >= 2
    bench(m, b, "hybrid 1/3 host, k=1", { k = 1, n_dev = guess(m, b, 1, true), host_every = 3 })
    local best = 0
    for _, every in ipairs({ 2, 3, 4 }) do
      local r = bench(m, b, "hybrid 1/" .. every .. " host, k=2", { k = 2, n_dev = guess(m, b, 2, true),
        host_every = every })
      if r and r.tps > best then best, best_hybrid = r.tps, every end
    end
  else
    bench(m, b, "stream k=1", { k = 1, n_dev = guess(m, b, 1, true) })
    bench(m, b, "hybrid 1/" .. best_hybrid .. " host, k=2", { k = 2, n_dev = guess(m, b, 2, true),
      host_every = best_hybrid })
  end
  m:free()
  collectgarbage()
end

-- ---------------------------------------------------------------- --cpu-offload-gb 4

-- No budget: every weight could be resident. vLLM's --cpu-offload-gb 4 takes
-- 4 GiB of whole layers from the first; "smart" (emulated, as vLLM's order
-- suggests: embedding, norms, head first) starts with the embedding table
-- (free: one row a step crosses) and the head, then layers.
local m = load(nil)
local _, layer = guess(m, 4, 1, true)
local n_naive = math.ceil(4 * GiB / layer)
bench(m, "none", "resident", { k = 1, embd = true, n_dev = 32 })
bench(m, "none", "cpu-offload-gb 4: first layers", { k = 2, embd = true,
  layer_on_device = function(l) return l >= n_naive end })
local head_b = tonumber(C.lrun_tensor_bytes(C.lrun_model_find_tensor(m.handle, "output.weight")))
local embd_b = tonumber(C.lrun_tensor_bytes(C.lrun_model_find_tensor(m.handle, "token_embd.weight")))
local n_smart = math.ceil((4 * GiB - head_b - embd_b) / layer)
bench(m, "none", "cpu-offload-gb 4: smart (embedding, head, then layers)", { k = 2, head = false,
  layer_on_device = function(l) return l >= n_smart end })
bench(m, "none", "cpu-offload-gb 4: smart + hybrid 1/" .. best_hybrid, { k = 2, head = false,
  host_every = best_hybrid, layer_on_device = function(l) return l >= n_smart end })
m:free()
if generated then os.remove(path) end
