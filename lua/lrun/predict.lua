--- lrun.predict — a predicted decode speed (tokens/s) for a placement,
-- from a simple cost model over the plan and the machine's bandwidths
-- (docs/policies.md "Predicted speed"). Pure Lua: no measurement here, the
-- bandwidths come in (lrun.residency.bandwidths measures them), so the
-- numbers are unit-tested with given tables (tests/predict_spec.lua).
--
-- Per generated token (batch 1), every weight is read once:
--   t_device = bytes the device reads / device_read
--              (resident weights and streamed ones once they landed; on
--              / decode_matmul[dtype] when given: on cpu the CPU's decode
--              GEMV over the model's own weights, compute-bound on few
--              cores; docs/residency.md "Predicted decode on the CPU")
--   t_copy   = sum over streamed weights of bytes / the link of their tier:
--              pinned h2d_pinned, host and mmap h2d_pageable, disk disk_read
--   t_host   = sum over host-computed weights of plain bytes / the host's
--              matmul rate (cuda: host_matmul[dtype]; cpu: host_read),
--              plus on cuda each product's fixed costs (M.host_overhead_s:
--              a thread-pool call and a round trip over PCIe)
-- The embedding table (when the LM head is its own tensor) moves one row per
-- token wherever it is. Norms and biases are free (engine memory).
-- A mixture of experts (q.n_expert_used = k): a stacked expert tensor is read
-- k/E per token where it is computed (device or host) and streamed whole,
-- but on the cpu one in the disk tier is read k/E per token (the chosen
-- experts, expert_store.h), in turn with compute;
-- with an expert cache (q.expert_cache, cuda) a cached block's experts are
-- read on the device and the misses, (1 − hit rate) of them, cross the link
-- of their tier first: t_cache, which the device waits for. A hybrid cache
-- (expert_cache.mode = "hybrid"): per block max(the hits' device reads, the
-- misses' host products and one pass's fixed costs): t_hybrid, in compute.
-- cuda: the copy stream runs beside compute (docs/streaming.md) a unit at a
--   time through k+1 slots, so each block's copies (t_copy's share) and
--   compute (t_device + t_host + t_cache + t_hybrid's share) go through
--   lrun.predict_pipeline: max(t_copy, compute) when both are spread evenly
--   over the blocks, more when a plan puts them in stretches (a run of
--   host-computed blocks idles the link once k+1 units are in);
-- cpu: the copies are memcpys by the same threads, so
--   seconds = t_device + t_copy + t_host + t_attention,
-- t_attention = bw.decode_attention_s when given: a token's attention over
-- the cached context, every layer (lrun.predict_plan measures it on cpu at
-- the prefill chunk's 512 positions; 13% of a step of the bench's model).
-- Packed weights (t.packed, docs/packed.md "Predicted decode of packed
-- weights"): t.bytes are the packed bytes, t.plain_bytes the plain ones,
-- t.codec (or lrun.packed_form.codec's rule) the codec:
--   on the device (mode 3): cuda runs the fused decode+GEMV, which reads
--     the packed bytes but is compute-bound on the decode: its time is the
--     plain GEMV's over the plain bytes / M.fused_speed[codec] (or the
--     measured bw.packed_fused[codec]), slower than plain, never faster;
--     cpu decodes into a scratch, then the plain GEMV: plain bytes at the
--     GEMV's rate + plain bytes / bw.packed_decode (the host decoder)
--   streamed (mode 2): the packed bytes cross the link, and the decode
--     (plain bytes / bw.packed_decode) follows: on cuda the kernel runs on a
--     decode stream beside the copy stream (two staging buffers), so the
--     copies take the longer of the links' time and the decodes'; on cpu the
--     fill thread decodes, part of the copy; the device reads the plain
--     weight from its slot
--   host compute (and cpu's resident packed weights): the product decodes a
--     tile of rows at a time into the thread's cache before multiplying it
--     (lrun_cpu_matmul_packed), reading the packed bytes from DRAM: the
--     plain product's time over its measured relative speed, at most 1 /
--     the packed share faster (M.packed_host_s); without that measure, plain
--     bytes / bw.host_decode more
-- A packed weight without a decode rate is costed as plain after its copy.
-- Not modelled: attention on cuda, kernel launch overheads.
--
-- Prefill (M.prefill, docs/residency.md "Predicted prefill"): one chunk of
-- T tokens (from position 0) costs, per weight:
--   device:    max(2·params·T / device_matmul[dtype], bytes / device_read)
--              (the measured batched product: cuBLAS GEMM with its
--              dequantization on cuda, lrun_cpu_matmul on cpu)
--   streamed:  the same on the device, plus bytes / link once per chunk
--   host:      max(2·params·T / host_gemm[dtype], plain bytes / host_read)
--              (and at most the disk's speed for a disk weight); on cuda
--              from lrun.host_stream's rows on (a plain block matrix in
--              memory) streamed instead, over the bounce link for pageable
--              memory
--   LM head:   one row (the chunk's last token), as in decode
--   experts:   the chunk's T·k selections; a block touches
--              D = E·(1 − (1 − k/E)^T) distinct experts (uniform routing),
--              read or copied once each; host experts are computed on the
--              host or streamed per lrun.expert_plan.prefill_streams; in a
--              block of the expert cache (cuda, q.expert_cache) the share
--              lrun.expert_plan.prefill_held_share of them runs from its
--              slot on the device, neither copied nor host-computed
--   attention: 2·T²·q_dim flops per layer (causal QKᵀ and PV), at the
--              device's rate
--   elementwise (cuda, q.act_bytes given): the kernels between the
--              products (norms, RoPE and the KV store, SwiGLU, the residual
--              adds) stream T · act_bytes per block at device_read
-- combined as decode: cuda max(copies, device + host) (the copy stream runs
-- k units ahead, engine_cuda_offload.c); cpu the sum (the fill thread's
-- memcpys and the matmuls share the cores and the memory bus).
--
--     local p = predict.decode(m:tensors(), plan, host_compute, bw)
--     print(predict.text(p))   -- predicted decode ~41.3 tok/s (limit: PCIe pinned ...)
--     local f = predict.prefill(m:tensors(), plan, host_compute, bw, {tokens = 512})
--     print(predict.summary(f, p))   -- predicted: prefill 512 tok: 1830 tok/s, decode 9.6 tok/s
-- @module lrun.predict
local host_stream = require("lrun.host_stream")

local M = {}

--- Disk read bandwidth used when none is given (bytes/s): a PCIe 4 NVMe drive.
M.assumed_disk_read = 3e9

--- The fused decode+GEMV's speed relative to the plain GEMV (time-rate:
-- plain time / fused time) per codec, on cuda, until the planner measures
-- it on the device (bw.packed_fused = {pex1=, pex2=} overrides). Measured
-- on an H100 at 11008x4096 and 4096x11008 (docs/packed.md "Mode 3
-- kernels" and "A faster code for mode 3"): PEX1's lrun_k_packed_gemv_multi
-- at 0.41x and 0.44x (PDL on), 0.42 taken; PEX2's lrun_k_pex2_gemv_multi
-- (kernels/packed_pex2.cu, the 40-register kernel) at 0.95x and 0.86x, 0.90
-- their mean (session 17, tests/bench/packed_bench.sh; 0.50x before it).
M.fused_speed = { pex1 = 0.42, pex2 = 0.90 }

local expert_roles = { ffn_gate_exps = true, ffn_up_exps = true, ffn_down_exps = true }
local vector_roles = { attn_norm = true, ffn_norm = true, output_norm = true, rope_freqs = true, bias = true }

local function is_vector(t)
  return vector_roles[t.role] == true or (t.name and t.name:find("%.bias$") ~= nil) or #(t.shape or {}) < 2
end

-- Bytes/s the host's decode matmul reads t at.
local function host_rate(t, bw, copying)
  if bw.device ~= "cuda" then return bw.host_read end
  local c = copying and type(bw.host_matmul_copying) == "table" and bw.host_matmul_copying[t.dtype]
  if type(c) == "number" and c > 0 then return c end
  local h = bw.host_matmul
  if type(h) == "table" then h = h[t.dtype] or h.default end
  return type(h) == "number" and h > 0 and h or bw.host_read
end

-- Whether a cuda decode step copies weights beside the host's products (a weight streamed: off the device,
-- not host-computed, not an expert cache's): they then share the host's DRAM, and the products run at
-- bw.host_matmul_copying (lrun.bandwidth measures it with the copy engine busy).
local function copies_beside(tensors, plan, host_compute, cached, bw)
  if bw.device ~= "cuda" or type(bw.host_matmul_copying) ~= "table" then return false end
  for _, t in ipairs(tensors) do
    local tier = plan[t.name] or "device"
    if tier ~= "device" and not host_compute[t.name] and not cached[t.layer] and not is_vector(t) then return true end
  end
  return false
end

-- The fused GEMV's speed relative to plain for packed t's codec (cuda, mode 3).
local function fused_speed(t, bw)
  local c = require("lrun.packed_form").codec(t)
  local f = type(bw.packed_fused) == "table" and bw.packed_fused[c] or M.fused_speed[c] or M.fused_speed.pex1
  if type(f) ~= "number" or f <= 0 then
    error("predict.decode: bandwidth.packed_fused." .. c .. " must be a number > 0", 3)
  end
  return f
end

-- Seconds to decode packed t's plain bytes at rate (0 without a rate or for a plain t).
local function decode_s(t, plain, rate)
  if not t.packed or type(rate) ~= "number" or rate <= 0 then return 0 end
  return plain / rate
end

--- Seconds of the host's batch-1 product of packed t over plain of its plain
-- bytes, where the plain product runs at plain_rate (bytes/s: alone or
-- beside the device's copies, on the model's weights or over DRAM).
-- lrun_cpu_matmul_packed decodes a tile of rows at a time in the thread's
-- cache before multiplying it: it reads the packed bytes from DRAM and pays
-- the decode in compute. lrun.bandwidth measures it against the plain
-- product on the same weight and DRAM span (bw.host_packed_matmul,
-- bw.host_packed_plain); their ratio scales plain_rate, up to 1 / the packed
-- share (where DRAM bounds both, the packed product reads that much less).
-- Without the measure: a decode at decode_rate (plain bytes/s, or none),
-- then the plain product.
function M.packed_host_s(t, plain, plain_rate, bw, decode_rate)
  local fused, ref = bw.host_packed_matmul, bw.host_packed_plain
  if type(fused) == "number" and fused > 0 and type(ref) == "number" and ref > 0 then
    local share = t.bytes / (t.plain_bytes or t.bytes)
    return plain / (plain_rate * math.min(fused / ref, 1 / share))
  end
  return plain / plain_rate + decode_s(t, plain, decode_rate)
end

-- The staged link (cuda: the threads' copy into pinned buffers and the DMA from them, at once): the slower
-- of the two, each at its rate beside the other where measured (both read the host's DRAM: session 26,
-- H100, prefills staged that way ran 12-17% below the rates measured alone), else alone.
local function staged_rate(bw, copy)
  local c = tonumber(bw.host_copy_copying) or copy
  local d = tonumber(bw.h2d_copying) or bw.h2d_pinned
  return math.min(d, c)
end

-- The link a streamed weight of this tier crosses, and its name for the limit.
local function link(tier, bw)
  if tier == "pinned" then return bw.h2d_pinned, "PCIe pinned" end
  if tier == "disk" then return bw.disk_read or M.assumed_disk_read, "disk" end
  -- host, mmap on cuda: copied by every core into pinned staging buffers, then by DMA (copy_bytes in
  -- engine_cuda_offload.c), so at the slower of the two (issues #12/#15: 50.5 GB/s ran, 12.8 pageable)
  if bw.device == "cuda" and type(bw.host_copy) == "number" and bw.host_copy > 0 then
    return staged_rate(bw, bw.host_copy), "PCIe pinned (staged)"
  end
  return bw.h2d_pageable or bw.h2d_pinned, "PCIe pageable"
end

-- The link host experts stream over in a cuda prefill (engine_cuda_moe_stream.c): pinned ones by DMA;
-- pageable ones (host, mmap) copied by the model's threads into pinned bounce buffers, then by DMA, so
-- at the slower of the pinned link and a host memcpy (half the host's read: each byte read and
-- written), not the driver's pageable rate (session 13, H100: the 30B-A3B's 512-token prefill at 8 GiB
-- ran 2186 tok/s, predicted 844 at the pageable rate).
local function expert_stream_link(tier, bw)
  if tier == "pinned" or tier == "disk" then return link(tier, bw) end
  -- the threaded copy's measured rate (bw.host_copy) when known, else half the host's read
  local copy = type(bw.host_copy) == "number" and bw.host_copy > 0 and bw.host_copy
    or (bw.host_read or bw.h2d_pinned) / 2
  return staged_rate(bw, copy), "PCIe pinned (bounce)"
end
--- The two links above, for the planners that price a tier (lrun.expert_choice's cache misses take link).
-- @treturn number bytes/s
-- @treturn string the link's name
M.link, M.expert_stream_link = link, expert_stream_link
M.host_rate = host_rate -- bytes/s the host's decode matmul reads t at (lrun.host_stream's threshold)
M.decode_s = decode_s -- seconds to decode packed t's plain bytes at a rate (0 without one; lrun.host_stream)

-- Adds bytes streamed over a link (rate bytes/s, name as link's) to p's copy time, that link's share and the
-- streamed bytes.
local function add_streamed(p, bytes, rate, name)
  p.copy_s = p.copy_s + bytes / rate
  p.links[name] = (p.links[name] or 0) + bytes / rate
  p.bytes.streamed = p.bytes.streamed + bytes
end

-- The CPU engine's disk-tier experts (expert_store.h): read once the router has chosen them, and the block
-- waits for the reads, so their time is compute's (device_s), not beside it.
local function add_read_in_turn(p, bytes, rate, name)
  p.device_s = p.device_s + bytes / rate
  p.links[name] = (p.links[name] or 0) + bytes / rate
  p.bytes.streamed = p.bytes.streamed + bytes
end

-- The record of t's block in blocks: its layer, the token embedding before
-- the first (-1), the head and the other tensors of no block after the last.
local function block_of(blocks, t)
  local key = type(t.layer) == "number" and t.layer or (t.role == "embedding" and -1 or math.huge)
  local b = blocks[key]
  if not b then
    b = { key = key, copy = 0, decode = 0, compute = 0, host = 0 }
    blocks[key] = b
  end
  return b
end

-- cuda: a token's seconds with the blocks' copies (mode 2's decodes beside them on their own stream) and
-- compute overlapped unit by unit through k+1 slots (k: the engine's prefetch_layers, default 1); a slot
-- refills as soon as compute released it, or (staged: the CPU fills the staging buffers, so it issues a
-- copy only after it saw the release) once the CPU is past the block before.
local function pipeline_s(blocks, k, staged)
  local list = {}
  for _, b in pairs(blocks) do
    list[#list + 1] = { key = b.key, copy = math.max(b.copy, b.decode), compute = b.compute, host = b.host }
  end
  table.sort(list, function(x, y) return x.key < y.key end)
  return require("lrun.predict_pipeline").token_s(list, (k or 1) + 1, staged)
end

-- Raises, at who's caller, unless bw has the link and read rates every prediction divides by.
local function check_rates(bw, who)
  for _, key in ipairs({ "h2d_pinned", "host_read", "device_read" }) do
    if type(bw[key]) ~= "number" or bw[key] <= 0 then
      error(who .. ": bandwidth." .. key .. " must be a number of bytes/s > 0", 3)
    end
  end
end

--- The largest matrix (n, k) per dtype among the tensors keep(t) selects: the shape a rate is measured at.
-- @treturn table {[dtype] = {n=, k=}}
function M.largest_shapes(tensors, keep)
  local best = {}
  for _, t in ipairs(tensors) do
    if keep(t) and #(t.shape or {}) >= 2 then
      local k, n = t.shape[1], t.shape[2]
      local b = best[t.dtype]
      if not b or n * k > b.n * b.k then best[t.dtype] = { n = n, k = k } end
    end
  end
  return best
end

--- The distinct matrix shapes per dtype among the tensors keep accepts, with
-- the bytes of each: {[dtype] = {{n=, k=, bytes=}, ...}} (a stacked expert
-- tensor: one expert's shape, all its bytes), in first-seen order.
function M.shapes_by_dtype(tensors, keep)
  local out, seen = {}, {}
  for _, t in ipairs(tensors) do
    if keep(t) and #(t.shape or {}) >= 2 then
      local k, n = t.shape[1], t.shape[2]
      local key = string.format("%s %d %d", t.dtype, n, k)
      local e = seen[key]
      if not e then
        e = { n = n, k = k, bytes = 0 }
        seen[key] = e
        out[t.dtype] = out[t.dtype] or {}
        table.insert(out[t.dtype], e)
      end
      e.bytes = e.bytes + (t.bytes or 0)
    end
  end
  return out
end

--- One rate for bytes read at several rates: Σ bytes / Σ (bytes / rate)
-- over the {bytes=, rate=} entries with a rate; nil when none has one.
function M.combined_rate(parts)
  local bytes, seconds = 0, 0
  for _, p in ipairs(parts) do
    if p.rate and p.rate > 0 and p.bytes > 0 then
      bytes, seconds = bytes + p.bytes, seconds + p.bytes / p.rate
    end
  end
  return seconds > 0 and bytes / seconds or nil
end

-- Whether the embedding table doubles as the LM head (no lm_head tensor).
local function tied_head(tensors)
  for _, t in ipairs(tensors) do if t.role == "lm_head" then return false end end
  return true
end

--- The product op a block matrix's role belongs to: the weights that multiply
-- one input in one op of the architectures' tables (q, k and v; gate and up).
M.product_op = { attn_q = "qkv", attn_k = "qkv", attn_v = "qkv", ffn_gate = "gate_up", ffn_up = "gate_up" }

--- Whether the CUDA engine sends a decode op's host products down and up in
-- one round trip (its default; LRUN_CUDA_HOST_GROUP=0 makes one a weight).
function M.host_products_grouped() return os.getenv("LRUN_CUDA_HOST_GROUP") ~= "0" end

--- Seconds a decode step spends on host compute's fixed costs (cuda): each
-- host product is a thread-pool call (bw.host_call_s: lrun_model_measure_matmul
-- of a tiny product, the fork/join) and, unless batched, a round trip
-- (bw.round_trip_s: the activations down, a stream sync, the product up;
-- two 4 KiB copies measured with their syncs). A weight is one product, and
-- the host weights of one product op share a round trip; a
-- stacked expert tensor k of them (the chosen experts), which the host pass
-- (the default, engine_cuda_moe_host.c) runs as one grouped product with
-- one round trip per block. 0 without the measurements (cpu, or given rates without them).
-- @tparam table bw bandwidths
-- @tparam number calls products
-- @tparam number trips round trips
function M.host_overhead_s(bw, calls, trips)
  if bw.device ~= "cuda" then return 0 end
  local c, r = tonumber(bw.host_call_s) or 0, tonumber(bw.round_trip_s) or 0
  return calls * c + trips * r
end

--- Seconds per token of a block whose experts the hybrid cache serves (engine_cuda_moe.c ffn_hybrid): the
-- hits' device reads (dev_s) beside the misses' host products (host_s) and, when there are misses, one host
-- pass's fixed costs (a grouped product for each of its `parts` tensors, one round trip): the longer side.
-- lrun.expert_choice's options and M.decode both cost a hybrid block with it.
-- @treturn number seconds
-- @treturn number the fixed costs counted
function M.hybrid_block_s(bw, dev_s, host_s, parts)
  local fixed = host_s > 0 and M.host_overhead_s(bw, parts, 1) or 0
  return math.max(dev_s, host_s + fixed), fixed
end

--- The decode prediction of a placement.
-- @tparam {table,...} tensors descriptions (model:tensors())
-- @tparam table plan {[name] = tier} (names left out: device)
-- @tparam[opt] table host_compute {[name] = true}
-- @tparam table bw {h2d_pinned=, h2d_pageable=, host_read=, device_read=, device="cpu"|"cuda",
--   host_matmul= bytes/s or {[dtype]=}, host_matmul_copying= {[dtype]=} (cuda: the host's products beside the
--   device's copies, used when the plan streams), disk_read=, decode_matmul= {[dtype]=} (cpu)} bytes/s,
--   decode_attention_s= (cpu: seconds of one token's attention, every layer), packed_decode= (plain bytes/s of
--   the decode where the engine decodes: cuda the kernel, cpu the host decoder), host_decode= (plain bytes/s of
--   the host decoder), packed_fused= {pex1=, pex2=} (cuda: the fused GEMV's speed relative to plain, else
--   M.fused_speed)
-- @tparam[opt] table q a mixture of experts: n_expert_used= (k: a stacked expert tensor of E experts is read
--   k/E per token where it is computed, streamed whole), expert_cache= {slots=, hit_rate=, layers={…}} (cuda:
--   the host experts of those blocks go through the cache, lrun.expert_plan / lrun.expert_choice; mode =
--   "hybrid": per block max(hits on the device, misses on the host) instead of copies first), host_pass=
--   true (cuda: a block's host experts in one round trip, M.host_overhead_s), prefetch_layers= (cuda: the
--   engine's k, default 1: the ring's k+1 slots, lrun.predict_pipeline), refill_queued= (cuda: pinned units
--   refill behind a device wait, lrun.predict_pipeline.refill_queued() when nil)
-- @treturn table {seconds=, tok_s=, limit= text, overlapped= (cuda), device_s=, copy_s=, host_s=, attention_s=,
--   host_fixed_s= (host_s's share of M.host_overhead_s), cache_s= (expert cache misses),
--   packed_s= (device_s's share of packed weights on the device, mode 3), packed_decode_s= (decodes counted in
--   copy_s, host_s and packed_s by bw.packed_decode / host_decode),
--   hybrid_s= (hybrid cached blocks: each max(device hits, host misses + one pass's fixed costs)),
--   links = {[name] = seconds}, bytes = {device=, streamed=, host=, cache=, packed= (packed bytes read on the
--   device, of device)}}
function M.decode(tensors, plan, host_compute, bw, q)
  host_compute, q = host_compute or {}, q or {}
  local n_used = q.n_expert_used
  local ec = q.expert_cache
  local cached = {}
  if ec and (ec.slots or 0) > 0 and bw.device == "cuda" then
    for _, l in ipairs(ec.layers or {}) do cached[l] = true end
  end
  check_rates(bw, "predict.decode")
  local copying = copies_beside(tensors, plan, host_compute, cached, bw)
  local tied = tied_head(tensors)
  local host_pass_blocks = {} -- blocks whose host pass's round trip is counted
  local host_trips = {} -- ["block:op"]: a product op whose host weights' one round trip is counted
  local grouped = M.host_products_grouped()
  local p = { device_s = 0, copy_s = 0, host_s = 0, host_fixed_s = 0, cache_s = 0, hybrid_s = 0, links = {},
    packed_s = 0, packed_decode_s = 0, bytes = { device = 0, streamed = 0, host = 0, cache = 0, packed = 0 } }
  local hybrid = {} -- [layer] = {dev=, host=, parts=}: a hybrid cached block's two sides
  local stream_decode_s = 0 -- cuda: mode 2's decodes, on their own stream
  local blocks = {} -- cuda: [block] = {copy=, decode=, compute=}, for the ring's overlap (lrun.predict_pipeline)
  local staged = false -- a streamed weight crosses through the pinned staging buffers (host, mmap, disk)
  for _, t in ipairs(tensors) do
    local tier = plan[t.name] or "device"
    local copy0, dec0, compute0, host0 = p.copy_s, stream_decode_s, p.device_s + p.host_s + p.cache_s, p.host_s
    local bytes = t.bytes
    -- a stacked expert tensor: the k chosen of its E experts are read per token
    local E = expert_roles[t.role] and n_used and n_used > 0 and t.shape and t.shape[3]
    local share = E and E > 0 and math.min(1, n_used / E) or 1
    if t.role == "embedding" and not tied then bytes = bytes / ((t.shape and t.shape[2]) or 1) end
    if is_vector(t) then
      bytes = 0 -- converted into engine memory at init
    elseif tier ~= "device" and host_compute[t.name] and cached[t.layer] and ec.mode == "hybrid" then
      -- the hybrid cache: the hits read slots on the device while the host computes the misses (one host
      -- pass a block); the block takes the longer of the two, so both are summed per block below
      local h = ec.hit_rate or 0
      local b = hybrid[t.layer] or { dev = 0, host = 0 }
      hybrid[t.layer] = b
      local plain = share * bytes * (t.plain_bytes or t.bytes) / t.bytes
      b.dev = b.dev + h * share * bytes / bw.device_read
      b.host = b.host + (1 - h) * plain / host_rate(t, bw)
      b.parts = (b.parts or 0) + 1
      p.bytes.device = p.bytes.device + h * share * bytes
      p.bytes.host = p.bytes.host + (1 - h) * plain
      bytes = 0
    elseif tier ~= "device" and host_compute[t.name] and cached[t.layer] then
      -- the expert cache: hits read a slot; a miss copies the expert over the link of its tier first and the
      -- device waits for it (a demand miss; the prefetch hides some, not modelled)
      local rate = link(tier, bw)
      local miss = (1 - (ec.hit_rate or 0)) * share * bytes
      p.cache_s = p.cache_s + miss / rate
      p.bytes.cache = p.bytes.cache + miss
      bytes = share * bytes
    elseif tier ~= "device" and host_compute[t.name] then
      bytes = share * bytes
      local plain = bytes * (t.plain_bytes or t.bytes) / t.bytes
      local rate = host_rate(t, bw, copying)
      -- a disk weight computed on the host is read from the disk first
      if tier == "disk" then rate = math.min(rate, bw.disk_read or M.assumed_disk_read) end
      -- its products' fixed costs: one product a weight, k for an expert tensor; the host pass runs an
      -- expert tensor's k products as one grouped job (one pool call) and the block in one round trip
      -- (H200, session 12: counting k calls there predicted n_cpu_moe 29 at 49.8 tok/s against 61.1)
      local calls, trips = E and n_used or 1, E and n_used or 1
      if E and q.host_pass then
        calls = 1
        trips = host_pass_blocks[t.layer or -1] and 0 or 1
        host_pass_blocks[t.layer or -1] = true
      elseif not E and grouped then
        -- a product op's host weights (q, k, v; gate, up) share one round trip (engine_cuda_forward.c products)
        local key = (t.layer or -1) .. ":" .. (M.product_op[t.role] or t.name)
        trips = host_trips[key] and 0 or 1
        host_trips[key] = true
      end
      local fixed = M.host_overhead_s(bw, calls, trips)
      -- a packed weight decodes tile by tile as it is multiplied (M.packed_host_s)
      local product = t.packed and M.packed_host_s(t, plain, rate, bw, bw.host_decode or bw.packed_decode)
        or plain / rate
      p.packed_decode_s = p.packed_decode_s + math.max(0, product - plain / rate)
      p.host_fixed_s = p.host_fixed_s + fixed
      p.host_s = p.host_s + product + fixed
      p.bytes.host = p.bytes.host + plain
      bytes = 0
    elseif tier == "disk" and E and bw.device ~= "cuda" and not t.packed then
      bytes = share * bytes -- the k chosen of the block's E, read in turn with compute
      add_read_in_turn(p, bytes, link(tier, bw))
    elseif tier ~= "device" then
      add_streamed(p, bytes, link(tier, bw))
      staged = staged or tier ~= "pinned"
      if t.packed then
        -- mode 2: decoded after the copy, into the slot (cuda: the kernel on the decode stream, beside the
        -- next weight's copy; cpu: the fill thread), which then holds the plain weight the device reads
        local plain = bytes * (t.plain_bytes or t.bytes) / t.bytes
        local dec = decode_s(t, plain, bw.packed_decode)
        if bw.device == "cuda" then stream_decode_s = stream_decode_s + dec else p.copy_s = p.copy_s + dec end
        p.packed_decode_s = p.packed_decode_s + dec
        bytes = plain
      end
      bytes = share * bytes -- streamed whole with its block, read k/E there
    else
      bytes = share * bytes
    end
    -- the device's reads are the decode GEMV's, measured per dtype when known (decode_matmul: cpu, the
    -- host's GEMV over the model's weights; cuda, the engine's kernel over device memory)
    local dm = type(bw.decode_matmul) == "table" and bw.decode_matmul[t.dtype]
    if bytes > 0 and tier == "device" and t.packed then
      -- mode 3: priced from the plain bytes, never below the plain GEMV's time (docs/packed.md)
      local plain = bytes * (t.plain_bytes or t.bytes) / t.bytes -- bytes: already its share (or the row read)
      local s
      if bw.device == "cuda" then s = plain / (dm or bw.device_read) / fused_speed(t, bw)
      else -- cpu: the host's packed product, decoded tile by tile as it goes
        s = M.packed_host_s(t, plain, dm or bw.device_read, bw, bw.packed_decode)
        p.packed_decode_s = p.packed_decode_s + math.max(0, s - plain / (dm or bw.device_read))
      end
      p.packed_s = p.packed_s + s
      p.device_s = p.device_s + s
      p.bytes.packed = p.bytes.packed + bytes
    else
      p.device_s = p.device_s + bytes / (dm or bw.device_read)
    end
    p.bytes.device = p.bytes.device + bytes
    local b = block_of(blocks, t)
    b.copy = b.copy + p.copy_s - copy0
    b.decode = b.decode + stream_decode_s - dec0
    b.compute = b.compute + p.device_s + p.host_s + p.cache_s - compute0
    b.host = b.host + p.host_s - host0
  end
  -- cuda's mode 2 decodes overlap the copies (engine_cuda_offload.c: two staging buffers, two streams)
  if stream_decode_s > p.copy_s then p.copy_s = stream_decode_s end
  for layer, b in pairs(hybrid) do
    local s, fixed = M.hybrid_block_s(bw, b.dev, b.host, b.parts)
    p.host_fixed_s = p.host_fixed_s + fixed
    p.hybrid_s = p.hybrid_s + s
    local blk = block_of(blocks, { layer = layer })
    blk.compute = blk.compute + s
  end
  local compute = p.device_s + p.host_s + p.cache_s + p.hybrid_s
  if bw.device == "cuda" then
    -- block by block, as the ring overlaps them; never below the token-wide max
    local refill_queued = q.refill_queued
    if refill_queued == nil then refill_queued = require("lrun.predict_pipeline").refill_queued() end
    p.seconds = math.max(p.copy_s, compute, pipeline_s(blocks, q.prefetch_layers, staged or not refill_queued))
  else
    local a = bw.decode_attention_s
    p.attention_s = type(a) == "number" and a > 0 and a or 0
    p.seconds = compute + p.copy_s + p.attention_s
  end
  -- the limit: the term that sets the time (cuda: the copies when they are
  -- the slower side; cpu: the largest of the three), and for copies the
  -- link that takes longest
  local copies
  if bw.device == "cuda" then copies = p.copy_s > compute
  else copies = p.copy_s > p.device_s and p.copy_s > p.host_s and p.copy_s > p.attention_s end
  if copies then
    local best, worst = -1, nil
    for name, s in pairs(p.links) do
      if s > best or (s == best and name < worst) then best, worst = s, name end
    end
    p.limit = worst
  elseif p.cache_s > p.device_s and p.cache_s > p.host_s then p.limit = "expert cache misses"
  elseif p.hybrid_s > p.device_s and p.hybrid_s > p.host_s then p.limit = "hybrid experts"
  elseif p.host_s > p.device_s and p.host_s >= (p.attention_s or 0) then p.limit = "host matmul"
  elseif (p.attention_s or 0) > p.device_s then p.limit = "attention"
  elseif type(bw.decode_matmul) == "table" and next(bw.decode_matmul) then
    p.limit = "decode GEMV"
  else p.limit = "device read" end
  p.overlapped = bw.device == "cuda"
  p.tok_s = p.seconds > 0 and 1 / p.seconds or math.huge
  return p
end

local function gbs(b) return string.format("%.1f GB/s", b / 1e9) end

--- One line: "predicted decode ~41.3 tok/s (limit: PCIe pinned 25.0 GB/s; ...)".
-- @tparam table p M.decode's result
-- @tparam[opt] table bw the bandwidths, to name the limit's rate
function M.text(p, bw)
  local rate = ""
  if bw then
    local r = p.limit == "PCIe pinned" and bw.h2d_pinned
      or p.limit == "PCIe pageable" and (bw.h2d_pageable or bw.h2d_pinned)
      or p.limit == "PCIe pinned (staged)" and bw.host_copy and math.min(bw.h2d_pinned, bw.host_copy)
      or p.limit == "disk" and (bw.disk_read or M.assumed_disk_read)
      or p.limit == "device read" and bw.device_read
      or p.limit == "decode GEMV" and p.device_s > 0 and p.bytes.device / p.device_s or nil
    if r then rate = " " .. gbs(r) end
  end
  local attn = (p.attention_s or 0) > 0 and string.format(", %.3f ms attention", p.attention_s * 1e3) or ""
  local cache = (p.cache_s or 0) > 0 and string.format(", %.3f ms expert cache misses", p.cache_s * 1e3) or ""
  if (p.packed_s or 0) > 0 then
    cache = cache .. string.format(", %.3f ms of the device's for packed weights (decoded where used)",
      p.packed_s * 1e3)
  end
  if (p.hybrid_s or 0) > 0 then
    cache = cache .. string.format(", %.3f ms hybrid experts (hits on the device beside misses on the host)",
      p.hybrid_s * 1e3)
  end
  return string.format("predicted decode ~%.1f tok/s (limit: %s%s; per token %.3f ms device, %.3f ms copies, "
    .. "%.3f ms host compute%s%s%s; accuracy to be measured)", p.tok_s, p.limit, rate, p.device_s * 1e3,
    p.copy_s * 1e3, p.host_s * 1e3, cache, attn, p.overlapped and ", copies overlapped" or "")
end


-- ---------------------------------------------------------------- prefill

M.prefill_tokens = 512 -- the chunk predicted when none is given (the engines' n_batch_max default)

-- A rate (flop/s) from a number or a {[dtype] = rate, default = rate} table; nil when unknown.
local function rate_of(r, dtype)
  if type(r) == "table" then r = r[dtype] or r.default end
  return type(r) == "number" and r > 0 and r or nil
end

M.rate_of = rate_of -- (lrun.host_stream's threshold)

-- Elements of one matrix: the product of its first two dimensions.
local function params2(t) return (t.shape[1] or 1) * (t.shape[2] or 1) end

--- Distinct experts a chunk of T tokens touches in one block under uniform
-- routing, k of E per token: E·(1 − (1 − k/E)^T).
function M.distinct_experts(E, k, T)
  if E <= 0 or k <= 0 then return 0 end
  return E * (1 - (1 - math.min(k, E) / E) ^ T)
end

-- The batched product of one weight on the device: flop-bound, or read-bound for a small chunk.
local function device_time(flops, bytes, dtype, bw)
  local r = rate_of(bw.device_matmul, dtype)
  if not r then error("predict.prefill: bandwidth.device_matmul has no rate for " .. tostring(dtype), 3) end
  return math.max(flops / r, bytes / bw.device_read)
end

-- The host's batched product (cuda: host_gemm; cpu: the device's own rate).
local function host_time(flops, plain, t, tier, bw)
  local r = bw.device ~= "cuda" and rate_of(bw.device_matmul, t.dtype) or rate_of(bw.host_gemm, t.dtype)
    or rate_of(bw.device_matmul, t.dtype)
  local read = host_rate(t, bw)
  if tier == "disk" then read = math.min(read, bw.disk_read or M.assumed_disk_read) end
  return math.max(flops / r, plain / read)
end

-- Per block, the three expert tensors together: {bytes_e=, plain_e=, params_e=, E=, tier=, host=, dtype=, ts={}}.
local function expert_blocks(tensors)
  local blocks = {}
  for _, t in ipairs(tensors) do
    if expert_roles[t.role] and #(t.shape or {}) >= 3 then
      local l = t.layer or -1
      local b = blocks[l] or { layer = l, bytes_e = 0, plain_e = 0, params_e = 0, ts = {} }
      local E = t.shape[3]
      b.E = E
      b.bytes_e = b.bytes_e + t.bytes / E
      b.plain_e = b.plain_e + (t.plain_bytes or t.bytes) / E
      b.params_e = b.params_e + params2(t)
      b.ts[#b.ts + 1] = t
      blocks[l] = b
    end
  end
  return blocks
end

-- One block's experts for a chunk: adds to p's device_s, copy_s, host_s.
local function prefill_experts(p, b, plan, host_compute, bw, q)
  local T, k = q.tokens, q.n_expert_used or 1
  local D = M.distinct_experts(b.E, k, T)
  local touched = D * b.bytes_e
  local flops = 2 * T * k * b.params_e
  local first = b.ts[1]
  local tier = plan[first.name] or "device"
  local hc = tier ~= "device" and host_compute[first.name]
  if tier == "device" then
    p.device_s = p.device_s + device_time(flops, touched, first.dtype, bw)
    p.bytes.device = p.bytes.device + touched
    return
  end
  local rate, name = link(tier, bw)
  if not hc and tier == "disk" and bw.device ~= "cuda" and not first.packed then
    -- the CPU engine's disk-tier experts: the touched ones read, then computed, in turn
    add_read_in_turn(p, touched, rate, name)
    p.device_s = p.device_s + device_time(flops, touched, first.dtype, bw)
    p.bytes.device = p.bytes.device + touched
    return
  end
  if not hc then -- streamed whole, as decode: the block's unit holds the stacked tensors
    local bytes = 0
    for _, t in ipairs(b.ts) do bytes = bytes + t.bytes end
    add_streamed(p, bytes, rate, name)
    p.device_s = p.device_s + device_time(flops, touched, first.dtype, bw)
    p.bytes.device = p.bytes.device + touched
    return
  end
  -- host experts: computed on the host, or (cuda) the touched ones copied, per expert_plan; a cached block's
  -- share `held` of them is in the expert cache's slots and runs there (the engine neither copies nor
  -- host-computes those): that share of the products on the device, the rest as before
  local held = q.held and q.held[b.layer] or 0
  if held > 0 then
    p.device_s = p.device_s + device_time(held * flops, held * touched, first.dtype, bw)
    p.bytes.slots = p.bytes.slots + held * touched
  end
  local rest = 1 - held
  if bw.device == "cuda" then rate, name = expert_stream_link(tier, bw) end
  local per = T * k / math.max(D, 1e-9)
  -- the host's expert product at a chunk's few rows per expert: measured (host_batch), else the 512-row GEMM's
  local hflops = rate_of(bw.host_batch, first.dtype) or rate_of(bw.host_gemm, first.dtype)
    or rate_of(bw.device_matmul, first.dtype)
  local c = { bytes = b.bytes_e, flops_per_token = 2 * b.params_e, pcie = rate, host_read = host_rate(first, bw),
    host_flops = bw.device == "cuda" and hflops or rate_of(bw.device_matmul, first.dtype) }
  local n = math.max(1, math.floor(D + 0.5))
  local tokens = {}
  for i = 1, n do tokens[i] = per * D / n end
  local streams, _, host = require("lrun.expert_plan").prefill_streams(c, tokens)
  if q.expert_stream ~= nil then streams = q.expert_stream end
  if bw.device ~= "cuda" then streams = false end -- cpu: host compute is the device's own
  p.expert_streamed = p.expert_streamed or streams
  if streams then
    add_streamed(p, rest * touched, rate, name)
    p.device_s = p.device_s + device_time(rest * flops, rest * touched, first.dtype, bw)
  else
    if q.expert_stream == false or bw.device ~= "cuda" then
      host = math.max(flops / c.host_flops, D * b.plain_e / c.host_read)
    end
    p.host_s = p.host_s + rest * host
    p.bytes.host = p.bytes.host + rest * D * b.plain_e
  end
end

--- The prefill prediction of a placement: one chunk of q.tokens tokens.
-- @tparam {table,...} tensors descriptions (model:tensors())
-- @tparam table plan {[name] = tier} (names left out: device)
-- @tparam[opt] table host_compute {[name] = true}
-- @tparam table bw as M.decode, and device_matmul= (flop/s of the device's batched product: a number or
--   {[dtype]=}; cpu: the host's), host_gemm= (cuda: flop/s of host compute's batched product, same form),
--   host_batch= (cuda: flop/s of the host's expert product at 64 rows, {[dtype]=}; host experts prefer it),
--   prefill_attention_s= (seconds of a chunk's attention, every layer, measured at prefill_attention_tokens=
--   tokens, default M.prefill_tokens; scaled by (T / those)²; without it attention is 2·T²·q_dim flops per
--   layer at the matmul rate)
-- @tparam[opt] table q tokens= (T, default M.prefill_tokens), n_expert_used= (MoE: k),
--   q_dim= and n_layer= (attention: n_head · head_dim; omitted: attention not counted),
--   act_bytes= (cuda: bytes a token's elementwise kernels move per block, M.activation_bytes; omitted: not counted),
--   expert_stream= (nil: expert_plan decides; true/false: forced),
--   host_stream_rows= (cuda: the engine's option, lrun.host_stream.rows: host-computed matrices of a chunk of at
--   least that many rows are copied and multiplied on the device; nil: the engine's default),
--   expert_cache= (cuda: the planned cache, {slots=, hit_rate=, layers=}, as M.decode's: its blocks' touched
--   experts found in slots, lrun.expert_plan.prefill_held_share, run there and are not streamed)
-- @treturn table {tokens=, seconds=, tok_s=, limit=, overlapped=, device_s=, copy_s=, host_s=, attention_s=,
--   links={}, bytes={device=, streamed=, host=, slots= (cached blocks' expert bytes read from slots)},
--   expert_streamed= (host experts streamed), host_streamed= (bytes of host-computed matrices the chunk copies
--   to the device, lrun.host_stream), slot_share= (the held share of a cached block's touched experts,
--   nil without a cache)}
function M.prefill(tensors, plan, host_compute, bw, q)
  host_compute, q = host_compute or {}, q or {}
  check_rates(bw, "predict.prefill")
  if bw.device_matmul == nil then error("predict.prefill: bandwidth.device_matmul (flop/s) is missing", 2) end
  local T = q.tokens or M.prefill_tokens
  local qq = { tokens = T, n_expert_used = q.n_expert_used, expert_stream = q.expert_stream }
  local tied = tied_head(tensors)
  local p = { tokens = T, device_s = 0, copy_s = 0, host_s = 0, attention_s = 0, links = {},
    bytes = { device = 0, streamed = 0, host = 0, slots = 0 } }
  local ec = q.expert_cache
  if ec and (ec.slots or 0) > 0 and ec.layers and #ec.layers > 0 and bw.device == "cuda"
    and require("lrun.expert_plan").prefill_from_slots then
    -- the cache's blocks: the share of a chunk's touched experts already in slots, from the slots' share of
    -- the cached experts and the hit rate the planner expects for decode
    local blocks = expert_blocks(tensors)
    local E = (blocks[ec.layers[1]] or {}).E or 0
    if E > 0 then
      p.slot_share = require("lrun.expert_plan").prefill_held_share(ec.hit_rate or 0,
        math.min(1, ec.slots / (#ec.layers * E)), q.n_expert_used or 1, E, T)
      qq.held = {}
      for _, l in ipairs(ec.layers) do qq.held[l] = p.slot_share end
    end
  end
  local stream_decode_s = 0 -- cuda: streamed packed weights' decodes, on their own stream (as in decode)
  for _, t in ipairs(tensors) do
    local tier = plan[t.name] or "device"
    local bytes, flops = t.bytes, 0
    local head = t.role == "lm_head" or (t.role == "embedding" and tied)
    if t.role == "embedding" and not tied then
      bytes = math.min(bytes, T * bytes / ((t.shape and t.shape[2]) or 1)) -- the chunk's rows
    elseif not head then
      flops = 2 * T * params2(t)
    end
    if is_vector(t) or expert_roles[t.role] then
      bytes = 0 -- vectors: engine memory; experts: per block below
    elseif tier ~= "device" and host_compute[t.name] and bw.device == "cuda" and not head
        and host_stream.streams(t, tier, T, q.host_stream_rows) then
      -- a chunk this long copies it to the device and multiplies it there (lrun.host_stream); a packed one
      -- crosses packed and is decoded behind its copy, on the same stream
      add_streamed(p, bytes, expert_stream_link(tier, bw))
      p.copy_s = p.copy_s + decode_s(t, t.plain_bytes or t.bytes, bw.packed_decode)
      p.host_streamed = (p.host_streamed or 0) + bytes
    elseif tier ~= "device" and host_compute[t.name] then
      local plain = bytes * (t.plain_bytes or t.bytes) / t.bytes
      p.host_s = p.host_s + (head and plain / host_rate(t, bw) or host_time(flops, plain, t, tier, bw))
        + decode_s(t, plain, bw.host_decode or bw.packed_decode) -- a packed one decodes once, tile by tile, as it goes
      p.bytes.host = p.bytes.host + plain
      bytes = 0
    elseif tier ~= "device" then
      add_streamed(p, bytes, link(tier, bw))
      -- a packed one decodes after its copy (cuda: on the decode stream, beside the next copy; cpu: the fill
      -- thread)
      local dec = decode_s(t, t.plain_bytes or t.bytes, bw.packed_decode)
      if bw.device == "cuda" then stream_decode_s = stream_decode_s + dec else p.copy_s = p.copy_s + dec end
    elseif bytes > 0 and not head then
      -- resident packed: decoded into a weight slot before the batched product (docs/packed.md "Prefill")
      p.device_s = p.device_s + decode_s(t, t.plain_bytes or t.bytes, bw.packed_decode)
    end
    if bytes > 0 then
      p.device_s = p.device_s + (flops > 0 and device_time(flops, bytes, t.dtype, bw) or bytes / bw.device_read)
      p.bytes.device = p.bytes.device + bytes
    end
  end
  for _, b in pairs(expert_blocks(tensors)) do
    prefill_experts(p, b, plan, host_compute, bw, qq)
  end
  if type(bw.prefill_attention_s) == "number" and bw.prefill_attention_s > 0 then
    -- measured (cuda: the engine's attention kernel over every layer for a chunk of
    -- bw.prefill_attention_tokens, default M.prefill_tokens); the causal work grows as T²
    local T0 = bw.prefill_attention_tokens or M.prefill_tokens
    p.attention_s = bw.prefill_attention_s * (T / T0) ^ 2
  elseif q.q_dim and q.n_layer then
    local r = rate_of(bw.attention, "f32") or rate_of(bw.device_matmul, "f16") or rate_of(bw.device_matmul, "f32")
    if not r then
      for _, v in pairs(type(bw.device_matmul) == "table" and bw.device_matmul or { bw.device_matmul }) do
        r = math.max(r or 0, v)
      end
    end
    p.attention_s = 2 * q.n_layer * T * T * q.q_dim / r
  end
  -- cuda's elementwise kernels (the cpu's run inside its matmul threads' time, calibrated there)
  p.elementwise_s = 0
  if bw.device == "cuda" and q.act_bytes and q.n_layer then
    p.elementwise_s = T * q.n_layer * q.act_bytes / bw.device_read
  end
  if stream_decode_s > p.copy_s then p.copy_s = stream_decode_s end
  local compute = p.device_s + p.host_s + p.attention_s + p.elementwise_s
  if bw.device == "cuda" then p.seconds = math.max(p.copy_s, compute)
  else p.seconds = compute + p.copy_s end
  local copies
  if bw.device == "cuda" then copies = p.copy_s > compute
  else copies = p.copy_s > p.device_s and p.copy_s > p.host_s and p.copy_s > p.attention_s end
  if copies then
    local best, worst = -1, nil
    for name, sec in pairs(p.links) do
      if sec > best or (sec == best and name < worst) then best, worst = sec, name end
    end
    p.limit = worst
  elseif p.host_s >= p.device_s and p.host_s >= p.attention_s and p.host_s > 0 then p.limit = "host matmul"
  elseif p.attention_s > p.device_s then p.limit = "attention"
  else p.limit = "device matmul" end
  p.overlapped = bw.device == "cuda"
  p.tok_s = p.seconds > 0 and T / p.seconds or math.huge
  return p
end

local function rate_text(r)
  if r >= 100 then return string.format("%.0f", r) end
  if r >= 10 then return string.format("%.1f", r) end
  return string.format("%.2f", r)
end

--- Bytes one token's elementwise kernels move per block in the CUDA
-- engine's prefill (engine_cuda_forward.c, fast numerics): two RMS norms
-- (read and write n_embd f32 each: 16·d), the two residual adds (x += tmp:
-- read two, write one: 24·d), RoPE with the KV store (q read and written
-- back in f32: 8·q_dim; k and v read in f32 and stored in the f16 cache:
-- 6 bytes each, 12·kv_dim), and the FFN's activation (read gate and up,
-- write one: 12·ff, ff the width a token's FFN runs: n_ff, or k experts'
-- n_ff).
-- @tparam table i n_embd=, q_dim=, kv_dim=, ff=
function M.activation_bytes(i)
  return 40 * i.n_embd + 8 * i.q_dim + 12 * i.kv_dim + 12 * i.ff
end

--- One line beside the decode one: "predicted prefill ~1830 tok/s for a 512-token chunk (limit: ...)".
-- @tparam table p M.prefill's result
function M.prefill_text(p)
  local elt = (p.elementwise_s or 0) > 0 and string.format(", %.3f ms elementwise", p.elementwise_s * 1e3) or ""
  return string.format("predicted prefill ~%s tok/s for a %d-token chunk (limit: %s; per chunk %.3f ms device, "
    .. "%.3f ms copies, %.3f ms host compute, %.3f ms attention%s%s%s%s%s)", rate_text(p.tok_s), p.tokens, p.limit,
    p.device_s * 1e3, p.copy_s * 1e3, p.host_s * 1e3, p.attention_s * 1e3, elt,
    p.overlapped and ", copies overlapped" or "", p.expert_streamed and "; host experts streamed" or "",
    p.host_streamed and string.format("; %.2f GB of host-computed matrices multiplied on the device%s",
      p.host_streamed / 1e9, p.host_stream_from
        and string.format(" (chunks of %d tokens or more)", p.host_stream_from) or "") or "",
    p.slot_share and string.format("; %.0f%% of cached blocks' experts from the cache's slots", 100 * p.slot_share)
      or "")
end

--- The short line: "predicted: prefill 512 tok: 1830 tok/s, decode 9.6 tok/s" (either may be nil).
function M.summary(pre, dec)
  local parts = {}
  if pre then parts[#parts + 1] = string.format("prefill %d tok: %s tok/s", pre.tokens, rate_text(pre.tok_s)) end
  if dec then parts[#parts + 1] = string.format("decode %s tok/s", rate_text(dec.tok_s)) end
  if #parts == 0 then return nil end
  return "predicted: " .. table.concat(parts, ", ")
end

return M
