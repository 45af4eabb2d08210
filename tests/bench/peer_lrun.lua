--- peer_lrun.lua — lrun's side of the same-run llama.cpp peer benchmarks
-- (tests/bench/cuda_peer.py and moe_bench.py run it): prefill and batch-1
-- decode tokens/s of one model under one placement, measured the way
-- llama-bench measures pp<N> and tg<N>.
--
-- Usage: build/lrun tests/bench/peer_lrun.lua MODEL [--device cuda:0] [--gpu-budget 8G]
--          [--policy experts_on_host] [--n-cpu-moe N] [--moe-host compute|cache|hybrid] [--slots N]
--          [--prefill 512,4096] [--ngen 128] [--ubatch 512|auto] [--label TEXT] [--decode-stream forced|greedy]
--          [--place-after N] [--packed true|false] [--offload-tier pinned|host|mmap] [--host-budget SIZE] [--explain]
--          [--info | --generate] [--trained]
--   --packed: the load's packed option (docs/packed.md): true packs every bf16/f16 matrix at placement,
--   false never packs; left out, auto-fit (smart) weighs packing by itself.
--   --offload-tier: the tier weights off the device go to (the load's offload_tier), e.g. pinned for mode 2 by DMA.
--   --host-budget: the load's host_budget (on the cpu what does not fit goes to the disk tier).
--   --trained: 7b:<dtype> written with values shaped like trained weights (what packed ratios need).
--   --place-after N: after loading, N random ids (a fixed seed, in prompts that fit the context) run so the engine counts the
--   routing, then m:place{policy = "smart"} places again with those counts (docs/moe.md "Weighing prefill":
--   smart's compute, cache or hybrid choice sees a router's popularity only from observed counts);
--   --explain: the placement's explanation (print(m:placement())) on stderr.
--   MODEL is a GGUF path, or 7b:<dtype> (tests/bench/llama7b.lua's shape,
--   written to $LRUN_BENCH_DIR and removed afterwards; with --generate it is
--   only written and kept, and the line is {"path": ..., "gen_s": ...}).
-- Prints a JSON object on stdout after each phase (decode, then each prefill
-- length), each with all the figures so far; the last line is the result:
--   info only (--info, the model loaded on the CPU, nothing run): the sizes
--     the drivers size llama.cpp's -ncmoe from: dtype (blk.0's ffn_down), n_layer, n_expert,
--     n_expert_used, weight_bytes, expert_bytes (the ffn_*_exps tensors, all
--     blocks), expert_layer_bytes (one block's), decode_bytes (what one dense
--     decode step reads: all but the embedding table unless it is the head)
--   otherwise: prefill_tps.<N> (N prompt tokens fed in steps of 512 from an
--     empty cache, best of 2 after a warm-up, once beyond 512), decode_tps (n_gen steps
--     after a 1-token prompt, each the engine step with its logits copied to
--     the host plus the host argmax; best of 2: llama-bench's tg at depth 0),
--     decode_stream: what each decode step is fed. "forced" (the default):
--     teacher-forced random token ids (a fixed seed, a different stretch per
--     run) instead of the argmax, so the routing of a mixture of experts
--     varies as over real text; "greedy": the argmax, which on a random
--     model soon repeats a few tokens and flatters an expert cache (hit rate
--     1.00 in session 5's run). The argmax is computed in both modes, so the
--     host work per step is the same,
--     predicted_decode_tps, predicted_prefill_tps (the planner's prediction
--     of a 512-token chunk, lrun.predict, from m:placement(); the resident
--     model's too) and their limits,
--     load_s, weight_device_bytes, host_compute_bytes, bytes_streamed per
--     decode token, per token the host products' seconds, the host's waits
--     for the device, the copy and stall seconds, the host's rate as run
--     (host_compute_rate), expert cache hit rate (when one is used),
--     prefill_stream_bytes and prefill_slot_bytes (host experts' bytes the
--     prefill runs streamed, and of a cached block's experts read from the
--     cache's slots instead: docs/moe.md "Prefill over a cached block"),
--     host_stream_bytes (host-computed matrices the prompts multiplied on
--     the device: docs/streaming.md "Prefill over host-computed matrices").
-- The engine: static KV cache of max(prefill)+n_gen+16 positions, batch 1.
package.path = "./?.lua;" .. package.path
local ffi = require("ffi")
local lrun = require("lrun")
local lf = require("lrun.ffi")
local sys = require("lrun.sys")
local C = lf.C

-- prompts go through in steps of this many tokens: llama-bench's default n_ubatch (512), or --ubatch N
-- (then compare with llama-bench -ub N -b N); the load's n_batch too, so the plan sizes that scratch;
-- --ubatch auto: no n_batch given at load, the plan's own step (m:placement().n_batch: lrun.prefill_batch)
local UBATCH = 512

-- ---------------------------------------------------------------- arguments

local opts = { device = "cuda:0", prefill = { 512 }, n_gen = 128, decode_stream = "forced" }
local FLAGS = { ["--device"] = "device", ["--gpu-budget"] = "gpu_budget", ["--policy"] = "policy",
  ["--n-cpu-moe"] = "n_cpu_moe", ["--moe-host"] = "moe_host", ["--slots"] = "slots", ["--label"] = "label",
  ["--prefill"] = "prefill", ["--ngen"] = "n_gen", ["--decode-stream"] = "decode_stream",
  ["--place-after"] = "place_after", ["--ubatch"] = "ubatch", ["--packed"] = "packed",
  ["--offload-tier"] = "offload_tier", ["--host-budget"] = "host_budget" }
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--info" then opts.info = true
  elseif a == "--explain" then opts.explain = true
  elseif a == "--generate" then opts.generate = true
  elseif a == "--trained" then opts.trained = true
  elseif FLAGS[a] and arg[i + 1] then
    local k, v = FLAGS[a], arg[i + 1]
    if k == "prefill" then
      opts.prefill = {}
      for n in v:gmatch("[^,]+") do opts.prefill[#opts.prefill + 1] = tonumber(n) end
    elseif k == "ubatch" and v == "auto" then opts.ubatch_auto = true
    elseif k == "packed" then
      if v ~= "true" and v ~= "false" then io.stderr:write("peer_lrun: --packed takes true or false\n"); os.exit(2) end
      opts.packed = v == "true"
    elseif k == "n_cpu_moe" or k == "slots" or k == "n_gen" or k == "place_after" or k == "ubatch" then
      opts[k] = tonumber(v)
      if not opts[k] then io.stderr:write("peer_lrun: " .. a .. " takes a number, not " .. v .. "\n"); os.exit(2) end
    else opts[k] = v end
    i = i + 1
  elseif a:sub(1, 1) == "-" then io.stderr:write("peer_lrun: unknown option " .. a .. "\n"); os.exit(2)
  else opts.model = a end
  i = i + 1
end
if not opts.model then
  io.stderr:write("usage: lrun tests/bench/peer_lrun.lua MODEL [--device D] [--gpu-budget G] [--policy P] "
    .. "[--n-cpu-moe N] [--moe-host compute|cache|hybrid] [--slots N] [--prefill 512,4096] [--ngen 128] [--ubatch 512|auto] "
    .. "[--label L] [--decode-stream forced|greedy] [--place-after N] [--packed true|false] "
    .. "[--offload-tier pinned|host|mmap] [--explain] [--info]\n")
  os.exit(2)
end

if opts.ubatch then
  if opts.ubatch < 1 or opts.ubatch % 1 ~= 0 then io.stderr:write("peer_lrun: --ubatch must be >= 1\n"); os.exit(2) end
  UBATCH = opts.ubatch
end
if opts.decode_stream ~= "forced" and opts.decode_stream ~= "greedy" then
  io.stderr:write("peer_lrun: --decode-stream must be forced or greedy, not " .. tostring(opts.decode_stream) .. "\n")
  os.exit(2)
end

local json = require("tests.bench.json_lines").encode

-- ---------------------------------------------------------------- sizes

local EXPERT_ROLE = { ffn_gate_exps = true, ffn_up_exps = true, ffn_down_exps = true }

-- The sizes a driver needs to place llama.cpp under the same budget.
local function sizes(m)
  local info = m:info()
  local total, embd, head, experts, per_layer, dtype = 0, 0, false, 0, {}, "?"
  for _, t in ipairs(m:tensors()) do
    total = total + t.bytes
    if t.role == "embedding" then embd = t.bytes end
    if t.role == "lm_head" then head = true end
    if t.layer == 0 and t.name:match("^blk%.0%.ffn_down") then dtype = t.dtype end
    if EXPERT_ROLE[t.role] or t.name:match("_exps%.weight$") then
      experts = experts + t.bytes
      per_layer[t.layer] = (per_layer[t.layer] or 0) + t.bytes
    end
  end
  local layer_bytes = 0
  for _, b in pairs(per_layer) do layer_bytes = math.max(layer_bytes, b) end
  return { n_layer = info.n_layer, n_expert = info.n_expert or 0, n_expert_used = info.n_expert_used or 0,
    dtype = dtype, weight_bytes = total, expert_bytes = experts, expert_layer_bytes = layer_bytes,
    decode_bytes = head and total - embd or total }
end

-- ---------------------------------------------------------------- timing

local function bench(m, r, emit)
  local max_prefill = 0
  for _, n in ipairs(opts.prefill) do max_prefill = math.max(max_prefill, n) end
  local e, err = m:engine({ cache_implementation = "static", n_batch = UBATCH })
  if not e then error("engine: " .. tostring(err), 0) end
  local n_vocab = m.n_vocab
  local ids = ffi.new("int32_t[?]", max_prefill)
  local seqs = ffi.new("int32_t[?]", UBATCH)
  local x = 12345
  for k = 0, max_prefill - 1 do
    x = (x * 1103515245 + 12345) % 2147483648
    ids[k] = 3 + x % (n_vocab - 3)
  end
  local logits = ffi.new("float[?]", n_vocab)
  local n_out = ffi.new("int64_t[1]")
  local function step(n, tokens)
    if C.lrun_engine_step(e, n, tokens, seqs, nil, logits, 1, n_out) ~= C.LRUN_OK then
      error("step: " .. lf.last_error(), 0)
    end
  end
  local function prompt(n)
    for off = 0, n - 1, UBATCH do step(math.min(UBATCH, n - off), ids + off) end
  end

  C.lrun_engine_seq_truncate(e, 0, 0)
  prompt(math.min(16, max_prefill)) -- warm-up: kernels loaded, graphs and caches made
  local tok = ffi.new("int32_t[1]")
  local st = ffi.new("lrun_engine_stats")
  local best = math.huge
  local forced = opts.decode_stream ~= "greedy"
  local y = 777 -- the forced stream's seed: the same ids every run of the bench
  for run = 0, 2 do -- run 0 warms the decode path (graph capture, expert cache)
    C.lrun_engine_seq_truncate(e, 0, 0)
    step(1, ids)
    C.lrun_engine_reset_stats(e)
    local a = sys.now()
    for _ = 1, opts.n_gen do
      tok[0] = C.lrun_logits_argmax(logits, n_vocab)
      if forced then -- the next random id, as if the text went on there
        y = (y * 1103515245 + 12345) % 2147483648
        tok[0] = 3 + y % (n_vocab - 3)
      end
      step(1, tok)
    end
    local dt = sys.now() - a
    if run > 0 then best = math.min(best, dt) end
  end
  r.decode_tps = opts.n_gen / best
  C.lrun_engine_get_stats(e, st)
  r.weight_device_bytes = tonumber(st.weight_device_bytes)
  r.host_compute_bytes = tonumber(st.host_compute_bytes)
  r.streamed_bytes_per_token = tonumber(st.bytes_streamed) / opts.n_gen
  -- where a hybrid token's time goes (the last run's): the host's products and its waits for the device
  r.host_compute_s_per_token = st.host_compute_seconds / opts.n_gen
  r.host_wait_s_per_token = st.host_wait_seconds / opts.n_gen
  r.host_compute_rate = st.host_compute_seconds > 0 and tonumber(st.host_compute_bytes) / st.host_compute_seconds
    or nil
  r.copy_s_per_token, r.stall_s_per_token = st.copy_seconds / opts.n_gen, st.stall_seconds / opts.n_gen
  local hits, misses = 0, 0
  local L = r.n_layer
  local h, mi, p = ffi.new("int64_t[?]", L), ffi.new("int64_t[?]", L), ffi.new("int64_t[?]", L)
  local copied, slots = ffi.new("uint64_t[1]"), ffi.new("int64_t[1]")
  if r.n_expert > 0 and C.lrun_engine_expert_cache_counts(e, h, mi, p, copied, slots) == C.LRUN_OK
      and slots[0] > 0 then
    for l = 0, L - 1 do hits, misses = hits + tonumber(h[l]), misses + tonumber(mi[l]) end
    r.cache_slots = tonumber(slots[0])
    r.cache_hit_rate = hits + misses > 0 and hits / (hits + misses) or 0
    -- a hybrid cache (moe_host = "hybrid"): misses computed on the host, and those admitted into slots
    local hc, adm = ffi.new("int64_t[?]", L), ffi.new("int64_t[?]", L)
    if opts.moe_host == "hybrid" and C.lrun_engine_expert_cache_hybrid_counts(e, hc, adm) == C.LRUN_OK then
      r.cache_host_computed, r.cache_admissions = 0, 0
      for l = 0, L - 1 do
        r.cache_host_computed = r.cache_host_computed + tonumber(hc[l])
        r.cache_admissions = r.cache_admissions + tonumber(adm[l])
      end
    end
  end
  emit(r) -- decode first: a step cut off by the driver's timeout keeps it

  r.prefill_tps = {}
  C.lrun_engine_reset_stats(e) -- the prefill runs' expert bytes below: streamed, and (a cached block) from slots
  for _, n in ipairs(opts.prefill) do
    local fastest = math.huge
    for _ = 1, n > UBATCH and 1 or 2 do -- long prompts once: with host experts one can take tens of seconds
      C.lrun_engine_seq_truncate(e, 0, 0)
      local a = sys.now()
      prompt(n)
      fastest = math.min(fastest, sys.now() - a)
    end
    r.prefill_tps[tostring(n)] = n / fastest
    C.lrun_engine_get_stats(e, st)
    r.prefill_stream_bytes, r.prefill_slot_bytes = tonumber(st.prefill_stream_bytes), tonumber(st.prefill_slot_bytes)
    r.host_stream_bytes = tonumber(st.host_stream_bytes) -- host-computed matrices the prompts multiplied on the GPU
    emit(r)
  end
end

-- ---------------------------------------------------------------- main

-- One line per finished phase, each with everything so far: the driver keeps the last.
local function emit(r)
  io.stdout:write(json(r), "\n")
  io.stdout:flush()
end

local path, generated = opts.model, false
local gen_dtype = path:match("^7b:(.+)$")
local ok, err = pcall(function()
  if opts.generate then
    local t0 = sys.now()
    path = require("tests.bench.llama7b").generate(assert(gen_dtype, "--generate needs 7b:<dtype>"), "peer_lrun",
      opts.trained)
    io.stdout:write(json({ path = path, gen_s = sys.now() - t0 }), "\n")
    return
  end
  if gen_dtype then path, generated = require("tests.bench.llama7b").generate(gen_dtype, "peer_lrun", opts.trained), true end
  local max_prefill = 0
  for _, n in ipairs(opts.prefill) do max_prefill = math.max(max_prefill, n) end
  local lo = { device = opts.info and "cpu" or opts.device, progress = false, n_ctx = max_prefill + opts.n_gen + 16,
    gpu_budget = opts.gpu_budget, policy = opts.policy, n_cpu_moe = opts.n_cpu_moe, moe_host = opts.moe_host,
    expert_cache_slots = opts.slots, n_batch = not opts.ubatch_auto and UBATCH or nil, packed = opts.packed,
    offload_tier = opts.offload_tier, host_budget = opts.host_budget }
  local t0 = sys.now()
  local m = assert(lrun.load(path, lo))
  if opts.ubatch_auto then -- the plan's own step (lrun.prefill_batch weighs 2048 against 512)
    local pl = m:placement()
    UBATCH = pl and pl.n_batch or 512
  end
  local r = sizes(m)
  r.model, r.label, r.device = gen_dtype and ("7b:" .. gen_dtype) or path:match("[^/]*$"), opts.label, lo.device
  r.gpu_budget, r.policy, r.n_cpu_moe, r.moe_host = opts.gpu_budget, opts.policy, opts.n_cpu_moe, opts.moe_host
  r.ubatch = UBATCH
  r.packed_option = opts.packed
  r.decode_stream = opts.decode_stream
  if not opts.info then
    if (opts.place_after or 0) > 0 then
      -- routing counts first (prompts of random ids, each within the engine's context), then smart again with
      -- them: a few thousand selections a block, since a small sample's busiest experts overstate LFU's hit rate
      local x, n_vocab, left = 4242, m:info().n_vocab, opts.place_after
      while left > 0 do
        local ids = {}
        for k = 1, math.min(left, lo.n_ctx - 8) do
          x = (x * 1103515245 + 12345) % 2147483648
          ids[k] = 3 + x % (n_vocab - 3)
        end
        assert(m:generate(ids, { max_new_tokens = 1, do_sample = false, eos_token_id = {} }))
        left = left - #ids
      end
      assert(m:place({ policy = "smart" }))
    end
    -- the planner's predictions (#15): the plan's, or the resident model's
    local pl = m:placement()
    if opts.explain then io.stderr:write(tostring(pl), "\n") end
    local c = pl.expert_choice -- smart's compute, cache or hybrid for host experts (lrun.expert_choice)
    if c then
      r.expert_choice = { how = c.how, slots = c.slots, hit_rate = c.hit_rate, source = c.source,
        traded = #c.trade, expert_ms = c.seconds * 1e3, prefill_chunk_ms = c.prefill_s and c.prefill_s * 1e3 }
    end
    -- packed weights (docs/packed.md): how many bytes the placement holds packed, and their ratio
    r.packed_bytes, r.packed_ratio = (pl.packed_bytes or 0) > 0 and pl.packed_bytes or nil, pl.packed_ratio
    r.predicted_decode_tps = pl.predicted and pl.predicted.tok_s or nil
    r.predicted_prefill_tps = pl.prefill and pl.prefill.tok_s or nil
    r.predicted_limits = pl.prefill and { decode = pl.predicted.limit, prefill = pl.prefill.limit } or nil
    r.load_s = sys.now() - t0
    bench(m, r, emit)
  else
    emit(r)
  end
  m:free()
end)
if generated then os.remove(path) end
if not ok then
  io.stderr:write("peer_lrun: " .. opts.model .. ": " .. tostring(err) .. "\n")
  os.exit(1)
end
