--- lrun.split_plan — a placement for a layer split that runs (one engine
-- per part, docs/multigpu.md): the single-device planner (lrun.residency.plan,
-- the same policies and auto-fit) applied to each device in turn, over that
-- device's tensors (its blocks; the embedding on the first, the output norm
-- and head on the last) and within that device's room, each part sized
-- alone by its engine's own layout code (lrun_engine_size_placement_part).
-- The parts' plans are joined into one placement, applied like any other
-- (lrun.residency.apply): a part's weights off its device are streamed into
-- its own slots, computed on the host or packed, as one engine's would be.
--
-- Not divided among the parts: the host budget (planned without; the
-- runtime still refuses host memory past it) and the expert cache (a
-- split's host experts are computed on the host); cpu_offload_gb applies to
-- each part.
-- @module lrun.split_plan
local errors = require("lrun.errors")
local size = require("lrun.size")

local M = {}

--- The tensors part reads, with their by-name index and total bytes: its
-- blocks', the embedding in the first part, what lies outside blocks in the
-- last (a tied head is the embedding, placed by the first part).
-- @tparam table tensors lrun.model:tensors() entries (t.layer, t.role, t.bytes)
-- @tparam table part {index = 0-based, first =, last =, last_part =}
function M.part_tensors(tensors, part)
  local out, by_name, total = {}, {}, 0
  for _, t in ipairs(tensors) do
    local mine
    if t.layer >= 0 then mine = t.layer >= part.first and t.layer <= part.last
    elseif t.role == "embedding" then mine = part.index == 0
    else mine = part.last_part end
    if mine then
      out[#out + 1], by_name[t.name], total = t, t, total + t.bytes
    end
  end
  return out, by_name, total
end

-- Norms, biases and RoPE factors: converted into the engine's memory at init wherever they are.
local function is_vector(t)
  return t.role == "bias" or t.role == "rope_freqs" or (t.role and t.role:find("norm", 1, true) ~= nil)
end

-- Bytes by where a part's plan put its tensors (vectors count as resident: the engine holds them).
local function where_bytes(r, tensors)
  local w = { resident = 0, streamed = 0, host = 0, n_streamed = 0, n_host = 0 }
  for _, t in ipairs(tensors) do
    local tier = r.plan[t.name] or "device"
    if tier == "device" or is_vector(t) then w.resident = w.resident + t.bytes
    elseif r.host_compute[t.name] then w.host, w.n_host = w.host + t.bytes, w.n_host + 1
    else w.streamed, w.n_streamed = w.streamed + t.bytes, w.n_streamed + 1 end
  end
  return w
end

local function indent(text) return "    " .. text:gsub("\n", "\n    ") end

--- Whether a split runs with every weight on its device (auto-fit's test,
-- per device): each part's engine init with its weights (lrun_engine_size_placement_part's
-- weights + init, as lrun.placement_size.fits for one device) within its
-- room, and no device short by lrun.multigpu's plan.
-- @tparam table model an lrun.model
-- @tparam table opts the placement options (the engine's: n_ctx, cache, …), with split as for M.plan
-- @tparam table devices lrun.multigpu.split's devices (short=)
-- @treturn[1] boolean fits
-- @treturn[1] number bytes the parts need
-- @treturn[1] number bytes of room (uncapped devices count 0)
-- @treturn[2] nil
-- @treturn[2] table error
function M.fits(model, opts, devices)
  local placement_size = require("lrun.placement_size")
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.split_layers = opts.split.layers
  local eo = placement_size.engine_opts(o)
  local fits, need, room = true, 0, 0
  for d = 1, #opts.split.layers do
    local sized, err = placement_size.size_with(model, eo, {}, nil, nil, d - 1)
    if not sized then return nil, err end
    local n, r = sized.weights + sized.init, opts.split.rooms[d] or nil
    fits = fits and not (devices[d] and devices[d].short) and not (r and n > r)
    need, room = need + n, room + (r or 0)
  end
  return fits, need, room
end

--- Plans every part and joins them.
-- @tparam table model an lrun.model
-- @tparam table opts lrun.residency.plan's, with split = {names = {…}, layers = {blocks of each part},
--   rooms = {bytes or false, …}}
-- @tparam function plan_one lrun.residency.plan (passed in: that module requires this one)
-- @treturn[1] table lrun.residency.plan's result for the whole model, with parts = {{name=, first=, last=,
--   room=, resident=, streamed=, host=, n_streamed=, n_host=, off_bytes=, slot_bytes=, device_bytes=}, …}
-- @treturn[2] nil
-- @treturn[2] table error naming the device and its layers
function M.plan(model, opts, plan_one)
  local split = opts.split
  local n = #split.layers
  local all = model:tensors()
  local joined = { plan = {}, host_compute = {}, packed = {}, parts = {}, off_bytes = 0, device_bytes = 0,
    slot_bytes = 0, extra_bytes = 0, reserve_bytes = 0, host_bytes = 0, disk_bytes = 0, budget = 0,
    cache_implementation = opts.cache_implementation or "dynamic", prefill_stream_block_tokens = nil }
  -- an override must match some tensor of the model (a part checks only its own, which another part may lack)
  local overrides, oerr = require("lrun.placement_opts").overrides({ overrides = opts.overrides }, all, nil)
  if not overrides then return nil, errors.new("arg", oerr) end
  for _, ov in ipairs(overrides) do
    local hit = false
    for _, t in ipairs(all) do hit = hit or t.name:find(ov[1]) ~= nil end
    if not hit then
      return nil, errors.new("arg", "override '" .. ov[1] .. "=" .. ov[2] .. "': the pattern matches no tensor")
    end
  end
  local size_sum, lines = {}, {}
  local first = 0
  for d = 1, n do
    local last = first + split.layers[d] - 1
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.split, o.split_layers, o.predict = nil, split.layers, false
    o.split_part = { index = d - 1, first = first, last = last, last_part = d == n, room = split.rooms[d] or nil,
      name = split.names[d] }
    local r, err = plan_one(model, o)
    if not r then
      return nil, errors.new(err and err.kind or "oom", string.format("layer split: %s (layers %d-%d): %s",
        split.names[d], first, last, tostring(err and err.message or err)), { requested = err and err.requested,
        free = err and err.free, device = split.names[d] })
    end
    for name, tier in pairs(r.plan) do joined.plan[name] = tier end
    for name in pairs(r.host_compute) do joined.host_compute[name] = true end
    for name, p in pairs(r.packed or {}) do joined.packed[name] = p end
    for _, key in ipairs({ "off_bytes", "device_bytes", "slot_bytes", "extra_bytes", "reserve_bytes", "host_bytes",
      "disk_bytes" }) do joined[key] = joined[key] + (r[key] or 0) end
    joined.budget = r.budget and joined.budget and joined.budget + r.budget or nil
    for k, v in pairs(r.size or {}) do if type(v) == "number" and k ~= "k" then size_sum[k] = (size_sum[k] or 0) + v end end
    size_sum.k = r.size and r.size.k
    joined.prefetch, joined.policy, joined.source = r.prefetch, r.policy, r.source
    if r.prefill_stream_block_tokens then
      joined.prefill_stream_block_tokens = joined.prefill_stream_block_tokens or {}
      for l, v in pairs(r.prefill_stream_block_tokens) do joined.prefill_stream_block_tokens[l] = v end
    end
    local w = where_bytes(r, M.part_tensors(all, o.split_part))
    joined.parts[d] = { name = split.names[d], first = first, last = last, room = split.rooms[d] or nil,
      resident = w.resident, streamed = w.streamed, host = w.host, n_streamed = w.n_streamed, n_host = w.n_host,
      off_bytes = r.off_bytes, slot_bytes = r.slot_bytes, device_bytes = r.device_bytes }
    lines[#lines + 1] = string.format("  %s (layers %d-%d): %s resident, %s streamed (%d tensors), %s computed on "
      .. "the host (%d tensors), %s of slots, room %s\n%s", split.names[d], first, last, size.format(w.resident),
      size.format(w.streamed), w.n_streamed, size.format(w.host), w.n_host, size.format(r.slot_bytes),
      split.rooms[d] and size.format(split.rooms[d]) or "no cap", indent(r.explain))
    first = last + 1
  end
  joined.size = size_sum
  -- the decode prediction of the joined placement: the parts run one after the other, as one engine's blocks
  local text = ""
  if opts.predict ~= false then
    local bw = require("lrun.bandwidth").bandwidths(model)
    if bw then
      local ok, d, f, ptext = pcall(require("lrun.predict_plan").predict, model, all, joined.plan,
        joined.host_compute, bw, opts, nil)
      if ok then joined.predicted, joined.prefill, text = d, f, "\n" .. ptext end
    end
  end
  joined.explain = string.format("placement per device of the layer split (%d parts):\n%s%s", n,
    table.concat(lines, "\n"), text)
  return joined
end

return M
