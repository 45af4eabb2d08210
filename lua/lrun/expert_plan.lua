--- lrun.expert_plan — the planner's sizing of the expert cache (docs/moe.md
-- "Sizing the cache"): with moe_host = "cache" on CUDA, the blocks whose
-- experts are host-computed copy the chosen experts into device slots; the
-- planner gives the cache what the device budget has left after the
-- placement (weights on the device, streaming slots, embedding rows, pool
-- slack, KV cache and scratch), and predicts its hit rate from the routing
-- counts observed so far (m:stats().experts after a warm-up), else from
-- uniform routing (what random routers do, the cache's worst case).
--
-- The prediction is LFU's steady state: the slots hold the most selected
-- (block, expert) pairs, so the hit rate is their share of the selections
-- in the cached blocks. The functions below take sizes and counts, not a
-- model, so tests/expert_plan_spec.lua checks them with given numbers.
-- @module lrun.expert_plan
local size = require("lrun.size")

local M = {}

M.margin = 1 / 16 -- of the room, left for the pool's rounding and the engine's own small buffers

local expert_parts = { ffn_gate_exps = 1, ffn_up_exps = 2, ffn_down_exps = 3 }

local function round256(b) return math.ceil(b / 256) * 256 end

--- The slot a block's expert takes (as runtime/cuda/engine_cuda_moe_cache.c
-- lays it out: each projection's slice 256-aligned, the largest cached
-- block's) and the blocks the cache covers: those whose gate, up and down
-- expert tensors are all host-computed and plain.
-- @tparam table tensors model:tensors() entries (name, role, layer, plain_bytes, packed)
-- @tparam table host_compute {[name] = true}
-- @tparam int n_expert experts per block
-- @tparam[opt] table packed {[name] = true|false}: the plan's forms (absent: the tensor's t.packed)
-- @treturn int slot bytes (0: no block is cached)
-- @treturn table the cached blocks' indices, ascending
function M.slot_layout(tensors, host_compute, n_expert, packed)
  local parts = {} -- [layer] = {count of host-computed plain parts, stride per part}
  for _, t in ipairs(tensors) do
    local p = expert_parts[t.role]
    local pk = packed and packed[t.name]
    if pk == nil then pk = t.packed end
    if p and t.layer and t.layer >= 0 and host_compute[t.name] and not pk then
      local b = parts[t.layer] or { n = 0 }
      b.n, b[p] = b.n + 1, round256(t.plain_bytes / n_expert)
      parts[t.layer] = b
    end
  end
  local stride, layers = { 0, 0, 0 }, {}
  for l, b in pairs(parts) do
    if b.n == 3 then
      layers[#layers + 1] = l
      for i = 1, 3 do stride[i] = math.max(stride[i], b[i]) end
    end
  end
  table.sort(layers)
  return stride[1] + stride[2] + stride[3], layers
end

--- The hit rate LFU settles at with slots slots over the cached blocks:
-- the share of their selections that the slots most selected pairs take.
-- @tparam table counts {[l] = {[x + 1] = selections}} (m:stats().experts.layers), or nil
-- @tparam table layers the cached blocks
-- @tparam int n_expert experts per block
-- @tparam int slots
-- @treturn number in [0, 1]
-- @treturn string "observed" (from counts with at least one selection) or "uniform"
function M.hit_rate(counts, layers, n_expert, slots)
  local all, total = {}, 0
  for _, l in ipairs(layers) do
    for _, c in ipairs(counts and counts[l] or {}) do
      all[#all + 1] = c
      total = total + c
    end
  end
  if total == 0 then return math.min(1, slots / math.max(1, #layers * n_expert)), "uniform" end
  table.sort(all, function(a, b) return a > b end)
  local top = 0
  for i = 1, math.min(slots, #all) do top = top + all[i] end
  return top / total, "observed"
end

--- The cache's size for the room the placement left.
-- @tparam table p room= (device bytes free after the placement; nil: no budget), slot_bytes=,
--   layers= (the cached blocks), n_expert=, counts= (as M.hit_rate; optional),
--   fixed= (slots the user asked for: kept, only explained; optional)
-- @treturn table {slots= (0: no room, host compute; -1: the engine's own, half the free memory),
--   slot_bytes=, bytes=, hit_rate=, source= ("observed"|"uniform"), text=}
function M.choose(p)
  local host = #p.layers * p.n_expert -- a slot per host expert at most
  local slots, why
  if p.fixed then
    slots, why = math.min(p.fixed, host), "as asked"
  elseif not p.room then
    return { slots = -1, slot_bytes = p.slot_bytes, bytes = 0, source = "none",
      text = string.format("expert cache: %d blocks cached, slots of %s; no device budget: the engine takes half "
        .. "the free device memory when it starts", #p.layers, size.format(p.slot_bytes)) }
  else
    local usable = math.max(0, p.room - math.ceil(p.room * M.margin))
    slots = math.min(math.floor(usable / p.slot_bytes), host)
    why = string.format("of %s left after the placement", size.format(p.room))
  end
  if slots < 1 then
    return { slots = 0, slot_bytes = p.slot_bytes, bytes = 0, hit_rate = 0, source = "none",
      text = string.format("expert cache: no room for one slot of %s (%s left after the placement): the %d "
        .. "cached blocks' experts are computed on the host", size.format(p.slot_bytes),
        size.format(math.max(0, p.room or 0)), #p.layers) }
  end
  local rate, source = M.hit_rate(p.counts, p.layers, p.n_expert, slots)
  return { slots = slots, slot_bytes = p.slot_bytes, bytes = slots * p.slot_bytes, hit_rate = rate, source = source,
    layers = p.layers, text = string.format("expert cache: %d slots × %s = %s %s, for %d experts of %d blocks; expected hit rate %.2f "
      .. "from %s", slots, size.format(p.slot_bytes), size.format(slots * p.slot_bytes), why, host, #p.layers, rate,
      source == "observed" and "observed frequencies" or "uniform routing (no counts observed yet)") }
end

--- Prefill's choice for a host expert (docs/moe.md "Prefill: streaming
-- host experts", the decision only: the engine does not stream yet): the
-- tokens of a chunk routed to one expert from which copying it to the
-- device beats computing it on the host. Host: max(bytes / host_read,
-- t · flops_per_token / host_flops); device: bytes / pcie (its products
-- are negligible beside the copy).
-- @tparam table c bytes= (the expert's three slices), flops_per_token= (2 · its parameters),
--   pcie= (bytes/s, host to device), host_read= (bytes/s, the host matmul's weight rate at one token),
--   host_flops= (flop/s of the host's batched products)
-- @treturn number the smallest such token count (math.huge: never; 1: always)
function M.prefill_stream_threshold(c)
  local copy = c.bytes / c.pcie
  if copy < c.bytes / c.host_read then return 1 end -- the copy is faster than one token's host read
  -- the host's time grows past the copy once t · flops_per_token / host_flops > copy
  if c.flops_per_token <= 0 or c.host_flops == math.huge then return math.huge end
  return math.floor(copy * c.host_flops / c.flops_per_token) + 1
end

--- Whether a chunk whose host experts take tokens[i] tokens each streams
-- them (per block: the copy of the touched experts against their host
-- products, summed, as the engine would run them one after another).
-- @tparam table c as M.prefill_stream_threshold
-- @tparam table tokens the chunk's token count per touched expert
-- @treturn boolean
-- @treturn number seconds streaming, @treturn number seconds on the host
function M.prefill_streams(c, tokens)
  local dev, host = 0, 0
  for _, t in ipairs(tokens) do
    dev = dev + c.bytes / c.pcie
    host = host + math.max(c.bytes / c.host_read, t * c.flops_per_token / c.host_flops)
  end
  return dev < host, dev, host
end

--- The share of a prefill chunk's touched experts in a cached (or hybrid)
-- block that a chunk finds in the expert cache's slots and runs from there
-- instead of streaming (engine_cuda_moe_stream.c; docs/moe.md "Prefill over
-- a cached block"). Two figures the planner already has for decode: f, the
-- slots over the cached blocks' experts (M.choose's slots / (#layers ·
-- n_expert)), and h, the selections' share the slots take (M.hit_rate: LFU's
-- steady state, observed or uniform). A block's f·E held experts are picked
-- per token with probability h·k/(f·E) each, the others (1−h)·k/((1−f)·E);
-- a chunk of T tokens touches an expert picked with probability p with
-- probability 1 − (1 − p)^T, so the held share of the touched experts is
-- between h (T = 1: each touched expert is a selection) and f (a long chunk
-- touches every expert, the popular and the rare alike). Uniform routing
-- (h = f) gives f at any T.
-- @tparam number h expected hit rate, [0, 1]
-- @tparam number f slots / cached experts, [0, 1]
-- @tparam int k experts per token
-- @tparam int E experts per block
-- @tparam int T the chunk's tokens
-- @treturn number in [0, 1]
-- Whether the engine runs a prefill chunk's slot-held experts from their slots: on unless
-- LRUN_CUDA_MOE_PREFILL_SLOTS=0 (engine_cuda_moe_stream.c reads the same variable), so the
-- prediction only counts held experts when the engine will use them.
M.prefill_from_slots = os.getenv("LRUN_CUDA_MOE_PREFILL_SLOTS") ~= "0"

function M.prefill_held_share(h, f, k, E, T)
  if f <= 0 or h <= 0 or E < 1 or T < 1 then return 0 end
  if f >= 1 or h >= 1 then return 1 end
  local held, rest = f * E, (1 - f) * E
  local ph, pu = math.min(1, h * k / held), math.min(1, (1 - h) * k / rest)
  local th, tu = held * (1 - (1 - ph) ^ T), rest * (1 - (1 - pu) ^ T)
  return th + tu > 0 and th / (th + tu) or 0
end

-- Without a measured batched rate (bw.host_batch, lrun.residency.bandwidths
-- measures it on cuda: lrun_model_measure_matmul at M.batch_rows rows over
-- one expert's slice) the host's batched flop rate is taken as this many
-- times its one-token rate (a batch re-reads each weight from cache).
M.host_batch_gain = 8
M.batch_rows = 64 -- rows of the measured batched product: a prefill chunk's tokens per expert

--- The thresholds the engine's AUTO prefill streaming takes for a plan
-- (lrun_engine_opts.moe_prefill_stream_block_tokens, and the smallest as
-- moe_prefill_stream_tokens): M.prefill_stream_threshold of each block whose
-- experts are host-computed,
-- from the measured bandwidths (pcie: pinned host to device, as the staging
-- sends; host_read: the host matmul's rate for the experts' dtype; host_flops:
-- the host's measured batched expert product, bw.host_batch, the slowest of
-- the block's dtypes, else the one-token rate's flops times
-- M.host_batch_gain). nil without host experts or without a measurement.
-- @tparam table tensors model:tensors() entries (role, layer, dtype, plain_bytes, shape)
-- @tparam table host_compute {[name] = true}
-- @tparam int n_expert experts per block
-- @tparam table bw lrun.residency.bandwidths (h2d_pinned=, host_matmul={[dtype]=}, host_batch={[dtype]=} flop/s)
-- @treturn int|nil the smallest threshold
-- @treturn table|nil {[layer] = threshold} (blocks whose host never loses: absent)
-- @treturn string|nil "measured" (every block's host flops from bw.host_batch) or "assumed"
function M.prefill_stream_tokens(tensors, host_compute, n_expert, bw)
  if not bw or not bw.h2d_pinned or not bw.host_matmul or n_expert < 1 then return nil end
  local batch = type(bw.host_batch) == "table" and bw.host_batch or {}
  local blocks = {} -- [layer] = {bytes=, params=, rate= (the slowest part's host rate), flops= (batched, or false)}
  for _, t in ipairs(tensors) do
    local rate = bw.host_matmul[t.dtype]
    if expert_parts[t.role] and t.layer and host_compute[t.name] and rate and rate > 0 then
      local b = blocks[t.layer] or { bytes = 0, params = 0, rate = math.huge, flops = math.huge }
      local params = 1
      for _, d in ipairs(t.shape or {}) do params = params * d end
      b.bytes, b.params = b.bytes + t.plain_bytes / n_expert, b.params + params / n_expert
      b.rate = math.min(b.rate, rate)
      local f = batch[t.dtype]
      b.flops = b.flops and type(f) == "number" and f > 0 and math.min(b.flops, f) or false
      blocks[t.layer] = b
    end
  end
  local best, per, measured = nil, {}, true
  for l, b in pairs(blocks) do
    local flops = 2 * b.params
    measured = measured and b.flops ~= false
    local thr = M.prefill_stream_threshold({ bytes = b.bytes, flops_per_token = flops, pcie = bw.h2d_pinned,
      host_read = b.rate, host_flops = b.flops or b.rate / b.bytes * flops * M.host_batch_gain })
    if thr ~= math.huge then
      best = math.min(best or thr, thr)
      per[l] = thr
    end
  end
  return best, best and per or nil, best and (measured and "measured" or "assumed") or nil
end

M.stream_group = 8 -- experts per staging buffer of the engine's prefill streaming (engine_cuda_moe_stream.c)

--- Device bytes the engine's prefill streaming takes for its staging: two
-- buffers of M.stream_group experts (fewer when the block has fewer), each
-- expert a slot of slot_bytes (the same three 256-aligned slices).
function M.stream_staging_bytes(slot_bytes, n_expert)
  return 2 * math.min(M.stream_group, n_expert) * slot_bytes
end

--- Whether the model's engine streams prefill experts: its moe_prefill_stream
-- option ("on" or "auto"), or unset, the engine's default
-- (engine_cuda_moe_stream.c: LRUN_CUDA_MOE_PREFILL_STREAM=off turns it off,
-- anything else is on or auto; auto since its H200 run).
function M.streams_prefill(model)
  local C = require("lrun.ffi").C
  local v = model.moe_prefill_stream
  if v == nil or v == C.LRUN_MOE_PREFILL_STREAM_DEFAULT then
    return os.getenv("LRUN_CUDA_MOE_PREFILL_STREAM") ~= "off"
  end
  return v == C.LRUN_MOE_PREFILL_STREAM_ON or v == C.LRUN_MOE_PREFILL_STREAM_AUTO
end

--- The routing counts to predict from: opts.expert_counts, else the model's
-- engine's (m:stats().experts.layers, when a warm-up ran), else nil.
function M.observed_counts(model, opts)
  local counts = opts and opts.expert_counts
  if not counts and model.owned and model.owned.engine ~= nil then
    local ok, st = pcall(model.stats, model)
    counts = ok and st and st.experts and st.experts.layers or nil
  end
  return counts
end

--- The cache for a plan (lrun.residency.plan), or nil when there is none:
-- a model on CUDA loaded with moe_host = "cache" (model.expert_cache_auto,
-- or model.expert_cache_slots fixed by the user) with cached blocks. Counts: opts.expert_counts, else the routing
-- counts of the model's engine when it has one (a warm-up ran).
-- @tparam table model an lrun.model
-- @tparam table q tensors=, host_compute=, packed=, room= (nil: no budget), cpu= (the device is not CUDA)
-- @tparam table opts the plan's options
-- With q.choice (lrun.expert_choice's, smart on cuda): "cache" and "hybrid"
-- size the cache as moe_host = "cache" would (hybrid: mode = "hybrid"),
-- "compute" gives none. A model whose
-- moe_host is the planner's (model.moe_host_auto) has a cache only by choice.
function M.for_plan(model, q, opts)
  if q.choice and q.choice.how == "compute" then return nil end
  local auto = model.expert_cache_auto or (q.choice ~= nil and q.choice.how ~= "compute")
  if q.cpu or (model.moe_host_auto and not auto)
    or (not auto and (model.expert_cache_slots or 0) == 0) then return nil end
  local n_expert = model:info().n_expert or 0
  if n_expert == 0 then return nil end
  local slot_bytes, layers = M.slot_layout(q.tensors, q.host_compute, n_expert, q.packed)
  if #layers == 0 then return nil end
  local counts = M.observed_counts(model, opts)
  -- prefill streaming's staging comes out of the room before the slots do
  local staging = M.streams_prefill(model) and M.stream_staging_bytes(slot_bytes, n_expert) or 0
  local c = M.choose({ room = q.room and math.max(0, q.room - staging), slot_bytes = slot_bytes, layers = layers,
    n_expert = n_expert, counts = counts,
    fixed = not auto and model.expert_cache_slots > 0 and model.expert_cache_slots or nil })
  if staging > 0 and q.room then
    c.staging_bytes = staging
    c.text = c.text .. string.format(" (%s kept for prefill streaming's staging)", size.format(staging))
  end
  -- hybrid (the user's moe_host, or smart's choice): the same slots; a miss is computed on the host
  if (q.choice and q.choice.how == "hybrid") or (not q.choice and model.moe_host == "hybrid") then
    c.mode = "hybrid"
    c.text = c.text:gsub("^expert cache:", "expert cache (hybrid: misses computed on the host):")
  end
  return c
end

return M
