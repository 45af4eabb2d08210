-- moe_prefill_stream.lua — prefill speed of a mixture of experts whose
-- experts live on the host, with prefill streaming them to the GPU or not
-- (docs/moe.md "Prefill: streaming host experts"):
--
--   lrun tests/bench/moe_prefill_stream.lua MODEL [--device cuda:0] [--gpu-budget 8G]
--        [--policy experts_on_host] [--moe-host compute|cache] [--stream off,on]
--        [--prefill 512,4096] [--n-batch 512]
--
-- For each streaming mode (moe_prefill_stream: off, on, auto) one load,
-- one engine of n_batch tokens per chunk (a prompt of N tokens runs in
-- ceil(N / n_batch) chunks, each streaming its touched experts once), a
-- 16-token warm-up, then each prompt length timed (best of 2 up to 512
-- tokens, once beyond). One line per (mode, length): tok/s, the experts
-- streamed and their bytes, the bytes computed on the host.
local ffi = require("ffi")
local lrun = require("lrun")
local lf = require("lrun.ffi")
local C = lf.C
local sys = require("lrun.sys")

local opts = { device = "cuda:0", policy = "experts_on_host", stream = { "off", "on" }, prefill = { 512, 4096 },
  n_batch = 512 }
local i = 1
local function list(v, num)
  local out = {}
  for x in v:gmatch("[^,]+") do out[#out + 1] = num and tonumber(x) or x end
  return out
end
while i <= #arg do
  local a, v = arg[i], arg[i + 1]
  if a == "--device" then opts.device = v
  elseif a == "--gpu-budget" then opts.gpu_budget = v
  elseif a == "--policy" then opts.policy = v
  elseif a == "--moe-host" then opts.moe_host = v
  elseif a == "--stream" then opts.stream = list(v)
  elseif a == "--prefill" then opts.prefill = list(v, true)
  elseif a == "--n-batch" then opts.n_batch = tonumber(v)
  elseif not opts.model then opts.model, v = a, nil
  else error("unknown argument " .. a) end
  i = i + (v and 2 or 1)
end
if not opts.model then
  io.stderr:write("usage: lrun tests/bench/moe_prefill_stream.lua MODEL [--gpu-budget 8G] [--stream off,on,auto] "
    .. "[--prefill 512,4096] [--n-batch 512]\n")
  os.exit(2)
end

local function bench(mode)
  local max_n = 16
  for _, n in ipairs(opts.prefill) do max_n = math.max(max_n, n) end
  -- the KV cache of the longest prompt only (the model's n_ctx_train would take GBs of the budget)
  local m = assert(lrun.load(opts.model, { device = opts.device, gpu_budget = opts.gpu_budget, policy = opts.policy,
    moe_host = opts.moe_host, moe_prefill_stream = mode, progress = false, n_ctx = max_n + 16 }))
  local e = assert(m:engine({ cache_implementation = "static", n_batch = opts.n_batch }))
  local ids, seqs = ffi.new("int32_t[?]", max_n), ffi.new("int32_t[?]", opts.n_batch)
  local x = 12345
  for k = 0, max_n - 1 do
    x = (x * 1103515245 + 12345) % 2147483648
    ids[k] = 3 + x % (m.n_vocab - 3)
  end
  local logits, n_out = ffi.new("float[?]", m.n_vocab), ffi.new("int64_t[1]")
  local function prompt(n)
    for off = 0, n - 1, opts.n_batch do
      if C.lrun_engine_step(e, math.min(opts.n_batch, n - off), ids + off, seqs, nil, logits, 1, n_out) ~= C.LRUN_OK then
        error("step: " .. lf.last_error(), 0)
      end
    end
  end
  C.lrun_engine_seq_truncate(e, 0, 0)
  prompt(16)
  for _, n in ipairs(opts.prefill) do
    local best = math.huge
    C.lrun_engine_reset_stats(e)
    for _ = 1, n > 512 and 1 or 2 do
      C.lrun_engine_seq_truncate(e, 0, 0)
      local a = sys.now()
      prompt(n)
      best = math.min(best, sys.now() - a)
    end
    local st = m:stats(true)
    print(string.format("moe prefill %-4s n_batch %d: %5d tokens %8.1f tok/s; streamed %d experts, %.2f GB; "
      .. "host compute %.2f GB", mode, opts.n_batch, n, n / best, st.prefill_stream_experts or 0,
      (st.prefill_stream_bytes or 0) / 1e9, (st.host_compute_bytes or 0) / 1e9))
  end
  m:free()
end

for _, mode in ipairs(opts.stream) do bench(mode) end
