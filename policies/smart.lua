--- policies.smart — offloads the tensors that save the most device bytes
-- per unit of added decode latency, choosing per tensor between streaming
-- it and computing it on the host, from bandwidths measured on the machine.
--
-- Cost model, per generated token (docs/policies.md "smart"):
--   norms, biases, RoPE factors   0 (converted into engine memory at init)
--   embedding table (untied)      one row crosses: row bytes / H2D
-- and for a matrix, by the device the engine runs on:
--   cpu (budgeted host memory)    streamed: bytes / H2D (a memcpy into a slot);
--                                 host compute: bytes / host_read - bytes / device_read
--                                 (the read moves from one memory to the other);
--                                 each takes the cheaper way
--   cuda                          streamed: bytes / H2D on the copy engine (pinned
--                                 DMA); host compute: bytes / host_matmul on the
--                                 CPU (its decode matmul, measured). The two run
--                                 at the same time block by block (the copy stream
--                                 fills the next block's unit while the CPU computes
--                                 this block's host matrices, docs/streaming.md), so
--                                 the matrices are split between the two either
--                                 block by block (each block's, largest first, to
--                                 the side that then finishes it sooner) or in
--                                 whole blocks alternating between the sides,
--                                 whichever lrun.predict.decode times faster as a
--                                 whole plan, with the engine's refill order and
--                                 prefetch depth (balance below).
--                                 A split balanced over the whole token (the rule
--                                 before session 19) left stretches of streamed
--                                 and of host-computed blocks, which ran one after
--                                 the other: 6.57 tok/s on the H100 where 12.9 was
--                                 predicted (a 7B bf16 at 4 GiB).
-- Mixtures of experts (budget.n_expert_used = k): a stacked expert tensor
-- of E experts costs k/E of its host compute per token (only the chosen
-- experts are multiplied) but streams whole (the block's slot holds the
-- stacked tensor), so it is host-computed, ranked far ahead of dense
-- matrices (bytes / cost = E/k × the host's rate), and not balanced: its
-- host time is on the host side the dense matrices balance against. What
-- the host experts then do on cuda (computed, or copied into an expert
-- cache) is lrun.expert_choice's, after the plan (docs/moe.md).
-- Packed weights (t.packed, docs/packed.md): bytes are the packed ones (what
-- crosses and what the device holds); a packed weight decodes before each
-- use wherever it is, so on cpu the decode cancels out, and on cuda the
-- copy stream adds plain bytes / packed_decode (the decode kernel runs
-- there after the copy, where a resident weight decodes on the compute
-- stream) and host compute multiplies it decoding a tile at a time
-- (lrun.predict.packed_host_s: host_packed_matmul over host_packed_plain,
-- measured by lrun.bandwidth.decode_rates, scales the plain product's rate).
-- Tensors are ranked by bytes / cost (zero cost first, larger first among
-- equals, then by name) and taken while they fit under max_bytes; on cuda a
-- matrix's cost for ranking is bytes / (H2D + host_matmul), its share of the
-- balanced pair.
--
-- budget.bandwidth = {h2d_pinned=, h2d_pageable=, host_read=, device_read=,
-- device = "cpu"|"cuda", host_matmul = bytes/s or {[dtype] = bytes/s},
-- disk_read=} in bytes/s (lrun.bandwidth measures them; disk_read bounds a
-- plan with tier = "disk"); without it the figures of
-- M.assumed are used and the explanation says so. budget.whole_blocks =
-- false keeps every block split (smaller streamed units, smaller slots).
-- budget.prefetch_layers =
-- k, the engine's prefetch depth (lrun.residency passes the load's): the
-- ring's k + 1 slots in the pipeline timing on cuda (1 when not given).
--
--     local plan, off, info = smart.plan(m:tensors(), {max_bytes = 2^28, bandwidth = bw})
--     print(info.explain)
-- @module policies.smart
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local common = dofile(here .. "common.lua")
local P = common.sibling(here, "predicates")
local has_predict, predict = pcall(require, "lrun.predict") -- absent when run outside lrun

local M = { name = "smart" }

--- Bandwidths used when none are given (bytes/s): PCIe 4 x16 and a
-- server's memory, for explanation only.
M.assumed = { h2d_pinned = 25e9, h2d_pageable = 10e9, host_read = 50e9, device_read = 2000e9 }

local vector_roles = { attn_norm = true, ffn_norm = true, output_norm = true, rope_freqs = true, bias = true }

local function is_vector(t) return vector_roles[t.role] == true or P.is_bias(t) end

-- Seconds to decode packed t at rate (0 for a plain one or no rate).
local function decode_s(t, rate)
  if not t.packed or type(rate) ~= "number" or rate <= 0 then return 0 end
  return (t.plain_bytes or t.bytes) / rate
end

-- Bytes/s at which the CPU's decode matmul reads t (cuda host compute): beside the device's copies where
-- measured so (bw.host_matmul_copying, lrun.bandwidth), since smart shares a block's bytes between the copies
-- and the host products that run beside them, both reading the host's DRAM.
local function host_matmul_rate(t, bw)
  local c = type(bw.host_matmul_copying) == "table" and bw.host_matmul_copying[t.dtype]
  if type(c) == "number" and c > 0 then return c end
  local h = bw.host_matmul
  if type(h) == "table" then h = h[t.dtype] or h.default end
  return type(h) == "number" and h > 0 and h or bw.host_read
end

-- cuda: seconds per token t adds to the copy stream (a packed t's decode runs on its own stream beside the
-- copies: the longer of the two), and to the host.
local function copy_s(t, bw) return math.max(t.bytes / bw.h2d_pinned, decode_s(t, bw.packed_decode)) end
-- (t.host_plain: a packed weight offered so, computed on the host in its plain form: no host decode; see
-- lrun.pack_choice's "packed where streamed")
local function host_s(t, bw)
  local plain, rate = t.plain_bytes or t.bytes, host_matmul_rate(t, bw)
  if t.host_plain or not t.packed then return plain / rate end
  if has_predict then return predict.packed_host_s(t, plain, rate, bw, bw.host_decode or bw.host_read) end
  return plain / rate + decode_s(t, bw.host_decode or bw.host_read)
end

local expert_roles = { ffn_gate_exps = true, ffn_up_exps = true, ffn_down_exps = true }

-- A mixture's stacked expert tensor (k of its E experts read per token): k / E, else nil.
local function expert_share(t, k)
  local E = t.shape and t.shape[3]
  if not (k and k > 0 and expert_roles[t.role] and E and E > 0) then return nil end
  return math.min(1, k / E)
end

-- The cost of keeping t off the device (seconds per token) and how; on
-- cuda a matrix's way is decided later, by balancing ("either"). A stacked
-- expert tensor (budget.n_expert_used given) is read k/E per token where it
-- is computed, but streamed whole with its block: host compute unless the
-- link beats that, never balanced.
local function cost_of(t, bw, tied, k)
  if is_vector(t) then return 0, "stream" end
  local share = expert_share(t, k)
  if share then
    local stream = bw.device == "cuda" and copy_s(t, bw) or t.bytes / bw.h2d_pinned
    local host = bw.device == "cuda" and share * host_s(t, bw)
      or share * math.max(0, t.bytes / bw.host_read - t.bytes / bw.device_read)
    if host <= stream then return host, "host_compute" end
    return stream, "stream"
  end
  if P.is_embedding_table(t) and not tied then
    local rows = (t.shape and t.shape[2]) or 1
    return (t.bytes / rows) / bw.h2d_pinned, "stream"
  end
  if bw.device == "cuda" then
    if not t.packed then return t.bytes / (bw.h2d_pinned + host_matmul_rate(t, bw)), "either" end
    local c, h = copy_s(t, bw), host_s(t, bw)
    return c * h / (c + h), "either" -- its share of the balanced pair
  end
  local stream = t.bytes / bw.h2d_pinned
  local host = math.max(0, t.bytes / bw.host_read - t.bytes / bw.device_read)
  if host < stream then return host, "host_compute" end
  return stream, "stream"
end

-- cuda: splits the chosen matrices between the copy engine and the CPU,
-- two ways, and keeps the one lrun.predict_pipeline finishes sooner with
-- the engine's refill order (docs/streaming.md "The pipeline"):
--   split  each block's matrices, largest first, each to the side that then
--          finishes its block sooner: both sides in every block, which
--          overlaps only where a slot is refilled behind a device wait
--          (the default; with LRUN_CUDA_REFILL_QUEUED=0 a block's copy waits
--          for the host products of the block before, and they run in turn);
--   whole  each block's matrices together, to the side that is behind over
--          the blocks so far: streamed and host-computed blocks alternate,
--          and a streamed block's copy runs beside the host blocks before
--          it in either order.
-- Matrices of no block (the head) form a block of their own.
-- @treturn number seconds per token of copies, summed
-- @treturn number seconds per token of host compute, summed
-- @treturn number seconds per token, as the ring overlaps the two
-- k: the engine's prefetch depth (the ring's k + 1 slots; 1 when not given).
-- price(how): seconds per token of the whole plan with the matrices shared
-- as how says (lrun.predict.decode: device reads, the host's fixed costs,
-- the ring), or nil; the two ways are compared by it when it answers, else
-- by their copies and host products alone.
-- split_only: never whole blocks (budget.whole_blocks = false: lrun.residency asks so when a whole block's
-- slots leave no room).
-- @treturn string "split" or "whole"
local function balance(chosen, bw, staged, k, price, split_only)
  local blocks, keys = {}, {}
  local function block(r)
    local key = r.t.layer or math.huge
    if not blocks[key] then
      blocks[key] = { list = {}, copy = 0, host = 0 }
      keys[#keys + 1] = key
    end
    return blocks[key]
  end
  for _, r in ipairs(chosen) do
    if r.how == "either" then
      local b = block(r)
      b.list[#b.list + 1] = r
    elseif r.expert then -- experts' way is fixed; the dense matrices balance against their time
      r.balanced = true
      local b = block(r)
      if r.how == "host_compute" then b.host = b.host + r.cost else b.copy = b.copy + r.cost end
    end
  end
  table.sort(keys)
  for _, key in ipairs(keys) do
    table.sort(blocks[key].list, function(x, y)
      if x.t.bytes ~= y.t.bytes then return x.t.bytes > y.t.bytes end
      return x.t.name < y.t.name
    end)
  end
  -- each way: {[r] = "stream"|"host_compute"} and the blocks' times in order
  local function split()
    local how, times = {}, {}
    for i, key in ipairs(keys) do
      local b = blocks[key]
      local c_b, h_b = b.copy, b.host
      for _, r in ipairs(b.list) do
        local c, h = copy_s(r.t, bw), host_s(r.t, bw)
        if c_b + c <= h_b + h then c_b, how[r] = c_b + c, "stream" else h_b, how[r] = h_b + h, "host_compute" end
      end
      times[i] = { copy = c_b, host = h_b }
    end
    return how, times
  end
  local function whole()
    local how, times, c_all, h_all = {}, {}, 0, 0
    for i, key in ipairs(keys) do
      local b = blocks[key]
      local c, h = 0, 0
      for _, r in ipairs(b.list) do c, h = c + copy_s(r.t, bw), h + host_s(r.t, bw) end
      local to_copy = c_all + b.copy + c <= h_all + b.host + h
      for _, r in ipairs(b.list) do how[r] = to_copy and "stream" or "host_compute" end
      times[i] = { copy = b.copy + (to_copy and c or 0), host = b.host + (to_copy and 0 or h) }
      c_all, h_all = c_all + times[i].copy, h_all + times[i].host
    end
    return how, times
  end
  local ok_pipe, pipe = pcall(require, "lrun.predict_pipeline") -- absent when run outside lrun
  local function token_s(times)
    if ok_pipe then
      local list = {}
      for i, t in ipairs(times) do list[i] = { copy = t.copy, compute = t.host, host = t.host } end
      return pipe.token_s(list, (k or 1) + 1, staged or not pipe.refill_queued())
    end
    local s = 0
    for _, t in ipairs(times) do s = s + math.max(t.copy, t.host) end
    return s
  end
  local how_s, times_s = split()
  local how_w, times_w = whole()
  local ts, tw = token_s(times_s), token_s(times_w)
  local ps, pw = price and price(how_s), price and price(how_w)
  if not (ps and pw) then ps, pw = ts, tw end
  local how, times, way = how_s, times_s, "split"
  if pw < ps * (1 - 1e-9) and not split_only then how, times, way = how_w, times_w, "whole" end
  local t_copy, t_host = 0, 0
  for _, key in ipairs(keys) do
    for _, r in ipairs(blocks[key].list) do
      r.balanced = true
      r.how = how[r]
      r.cost = r.how == "stream" and copy_s(r.t, bw) or host_s(r.t, bw)
    end
  end
  for _, t in ipairs(times) do t_copy, t_host = t_copy + t.copy, t_host + t.host end
  return t_copy, t_host, way == "whole" and tw or ts, way
end

-- A disk-tier plan: every byte kept off the device is read from the disk
-- first, so its read speed (bw.disk_read, measured by
-- lrun.bandwidth.disk_read; else lrun.predict's assumed figure) bounds both
-- the copy and a host-computed read.
-- A copy of the bandwidth table bw with the fields of `with` in place.
local function with_rates(bw, with)
  local d = {}
  for k, v in pairs(bw) do d[k] = v end
  for k, v in pairs(with) do d[k] = v end
  return d
end

local function through_disk(bw)
  local disk = bw.disk_read or (has_predict and predict.assumed_disk_read) or 3e9
  return with_rates(bw, { h2d_pinned = math.min(bw.h2d_pinned, disk), host_read = math.min(bw.host_read, disk),
    disk_read = disk })
end

-- A host or mmap plan on cuda: its streamed weights are copied by the model's threads into pinned staging
-- buffers before the DMA, so copies run at lrun.predict's staged link (the slower of the two), not the
-- pinned link's rate.
local function through_staging(bw, tier)
  if bw.device ~= "cuda" or not has_predict then return bw end
  return with_rates(bw, { h2d_pinned = (predict.link(tier, bw)) })
end

local function ms(s) return string.format("%.3f ms", s * 1e3) end
local function gbs(b) return string.format("%.1f GB/s", b / 1e9) end

--- @tparam {table,...} tensors descriptions (model:tensors())
-- @tparam[opt] number|table budget max_bytes, or {max_bytes=, tier=, bandwidth=}
-- @treturn table {[name] = "device"|tier}
-- @treturn int bytes kept off the device
-- @treturn table {host_compute = {[name] = true}, explain = text, seconds_per_token = added latency,
--   split_way = (cuda) "split" or "whole" (how the balanced matrices were shared),
--   predicted = lrun.predict.decode of the plan (tok_s=, limit=, ...)}
function M.plan(tensors, budget)
  local explicit_tier = type(budget) == "table" and budget.tier or nil
  local b = common.budget(budget, nil, "smart.plan")
  local bw = type(budget) == "table" and budget.bandwidth or nil
  local measured = bw ~= nil
  bw = bw or M.assumed
  for _, k in ipairs({ "h2d_pinned", "host_read", "device_read" }) do
    if type(bw[k]) ~= "number" or bw[k] <= 0 then
      error("smart.plan: bandwidth." .. k .. " must be a number of bytes/s > 0", 2)
    end
  end
  if bw.device ~= nil and bw.device ~= "cpu" and bw.device ~= "cuda" then
    error("smart.plan: bandwidth.device must be \"cpu\" or \"cuda\", got " .. tostring(bw.device), 2)
  end
  local orig_bw = bw -- lrun.predict handles the disk tier itself
  if explicit_tier == "disk" then bw = through_disk(bw)
  elseif explicit_tier == "host" or explicit_tier == "mmap" then bw = through_staging(bw, explicit_tier) end
  local list = common.ordered(tensors, "smart.plan")
  local tied = true
  for _, t in ipairs(list) do if P.is_lm_head(t) then tied = false end end

  local n_used = type(budget) == "table" and budget.n_expert_used or nil
  local ranked = {}
  for _, t in ipairs(list) do
    local cost, how = cost_of(t, bw, tied, n_used)
    ranked[#ranked + 1] = { t = t, cost = cost, how = how, score = cost > 0 and t.bytes / cost or math.huge,
      expert = expert_share(t, n_used) ~= nil }
  end
  table.sort(ranked, function(x, y)
    if x.score ~= y.score then return x.score > y.score end
    if x.t.bytes ~= y.t.bytes then return x.t.bytes > y.t.bytes end
    return x.t.name < y.t.name
  end)

  local sel = common.selection(b.max_bytes)
  local host_compute, chosen, added = {}, {}, 0
  for _, r in ipairs(ranked) do
    if sel.bytes + r.t.bytes <= sel.max_bytes then
      sel.off[r.t.name] = true
      sel.bytes = sel.bytes + r.t.bytes
      added = added + r.cost
      if r.how == "host_compute" then host_compute[r.t.name] = true end
      chosen[#chosen + 1] = r
    end
  end

  -- the tiers of the selection, its host-computed tensors (hc) on the host
  local function tiers(hc)
    local plan = {}
    for _, t in ipairs(list) do
      if not sel.off[t.name] then plan[t.name] = "device"
      elseif hc[t.name] then plan[t.name] = explicit_tier or "host"
      else plan[t.name] = explicit_tier or (is_vector(t) and "host" or "pinned") end
    end
    return plan
  end

  local t_copy, t_host, split_way
  if bw.device == "cuda" then
    local k = type(budget) == "table" and tonumber(budget.prefetch_layers) or nil
    -- a way of sharing the balanced matrices, priced as the whole plan by lrun.predict
    local function price(how)
      if not has_predict then return nil end
      local hc = {}
      for _, r in ipairs(chosen) do
        if (how[r] or r.how) == "host_compute" then hc[r.t.name] = true end
      end
      local ok, d = pcall(predict.decode, list, tiers(hc), hc, orig_bw, { n_expert_used = n_used, prefetch_layers = k })
      return ok and d.seconds or nil
    end
    local t_token
    t_copy, t_host, t_token, split_way = balance(chosen, bw, explicit_tier ~= nil and explicit_tier ~= "pinned", k,
      price, type(budget) == "table" and budget.whole_blocks == false)
    for _, r in ipairs(chosen) do if r.how == "host_compute" then host_compute[r.t.name] = true end end
    -- the two sides overlap block by block: the token pays each block's slower one (and the gathered rows)
    added = t_token
    for _, r in ipairs(chosen) do if not r.balanced then added = added + r.cost end end
  end

  local plan = tiers(host_compute)

  local n_stream, n_host, b_stream, b_host = 0, 0, 0, 0
  for _, r in ipairs(chosen) do
    if r.how == "host_compute" then n_host, b_host = n_host + 1, b_host + r.t.bytes
    else n_stream, b_stream = n_stream + 1, b_stream + r.t.bytes end
  end
  local lines = {
    string.format("smart: %s bandwidths: host->device pinned %s%s, host read %s, device read %s",
      measured and "measured" or "assumed (none given)", gbs(bw.h2d_pinned),
      bw.h2d_pageable and (", pageable " .. gbs(bw.h2d_pageable)) or "", gbs(bw.host_read), gbs(bw.device_read)),
    string.format("smart: %d tensors (%d bytes) off the device, cap %s: %d streamed (%d bytes), "
      .. "%d computed on the host (%d bytes); added latency about %s per token",
      #chosen, sel.bytes, b.max_bytes == math.huge and "none" or string.format("%d", b.max_bytes),
      n_stream, b_stream, n_host, b_host, ms(added)),
  }
  if explicit_tier == "disk" then
    lines[#lines + 1] = string.format("smart: disk tier: reads at %s (%s) bound the copies and host reads",
      gbs(bw.disk_read), orig_bw.disk_read and "measured" or "assumed")
  end
  if bw.packed_decode then
    local n_packed = 0
    for _, r in ipairs(chosen) do if r.t.packed then n_packed = n_packed + 1 end end
    local products = bw.host_packed_matmul and bw.host_packed_plain
      and string.format("%s against %s plain", gbs(bw.host_packed_matmul), gbs(bw.host_packed_plain)) or "unmeasured"
    lines[#lines + 1] = string.format("smart: packed decode %s on the %s, %s on the host (its products %s); %d "
      .. "packed tensors off the device", gbs(bw.packed_decode), bw.device or "device",
      gbs(bw.host_decode or bw.packed_decode), products, n_packed)
  end
  if t_copy then
    local rates = {}
    if type(bw.host_matmul) == "table" then
      local copying = type(bw.host_matmul_copying) == "table" and bw.host_matmul_copying or {}
      for k, v in pairs(bw.host_matmul) do
        rates[#rates + 1] = k .. " " .. gbs(v) .. (copying[k] and (", " .. gbs(copying[k]) .. " beside copies") or "")
      end
      table.sort(rates)
    elseif type(bw.host_matmul) == "number" then rates[1] = gbs(bw.host_matmul) end
    lines[#lines + 1] = string.format("smart: on cuda copies and host matmuls overlap: %s of copies, %s of host "
      .. "compute per token (host matmul %s), %s", ms(t_copy), ms(t_host),
      #rates > 0 and table.concat(rates, ", ") or ("host read " .. gbs(bw.host_read)),
      split_way == "whole" and "whole blocks streamed or host-computed in turn (the copies run beside the host blocks)"
        or "each block's matrices split so the two finish it together")
  end
  if n_used then
    local n_e, b_e, s_e = 0, 0, 0
    for _, r in ipairs(chosen) do
      if r.expert then n_e, b_e, s_e = n_e + 1, b_e + r.t.bytes, s_e + r.cost end
    end
    if n_e > 0 then
      lines[#lines + 1] = string.format("smart: mixture of experts, %d used per token: %d stacked expert tensors "
        .. "(%d bytes) off the device, read k/E per token where computed (%s per token)", n_used, n_e, b_e, ms(s_e))
    end
  end
  -- the free ones (norms, biases) in one line, then the largest others
  local free_n, free_b, big = 0, 0, {}
  for _, r in ipairs(chosen) do
    if r.cost == 0 and is_vector(r.t) then free_n, free_b = free_n + 1, free_b + r.t.bytes
    else big[#big + 1] = r end
  end
  if free_n > 0 then
    lines[#lines + 1] = string.format("  %d norms/biases, %d bytes: no cost (converted into engine memory at init)",
      free_n, free_b)
  end
  table.sort(big, function(x, y)
    if x.t.bytes ~= y.t.bytes then return x.t.bytes > y.t.bytes end
    return x.t.name < y.t.name
  end)
  for i = 1, math.min(#big, 10) do
    local r = big[i]
    lines[#lines + 1] = string.format("  %-28s %10d bytes  %-12s +%s/token", r.t.name, r.t.bytes, r.how, ms(r.cost))
  end
  if #big > 10 then lines[#lines + 1] = string.format("  … %d more", #big - 10) end
  return plan, sel.bytes, { host_compute = host_compute, explain = table.concat(lines, "\n"), split_way = split_way,
    seconds_per_token = added, predicted = has_predict and predict.decode(list, plan, host_compute, orig_bw, { n_expert_used = n_used })
      or nil }
end

return M
