--- lrun.multigpu — the layer split over several devices (llama.cpp's
-- `-sm layer` and `-ts`): which consecutive layers each device holds.
--
--     local mg = require("lrun.multigpu")
--     local s = assert(mg.split({ n_layer = 32, layer_bytes = lb, kv_bytes = kb,
--       embed_bytes = e, head_bytes = h }, { { name = "cuda:0", room = 40e9 }, { name = "cuda:1", room = 40e9 } },
--       { proportions = { 3, 1 } }))
--     print(s.explain)
--
-- Planning only, and pure: the sizes come in (mg.shape reads them from a
-- loaded model), a plan comes out. Device 1 holds the embedding, the last
-- device the final norm and the head (and the embedding table again when
-- the head is tied to it); a layer's KV cache lives on its layer's device.
-- With proportions (-ts 3,1) layers go as llama.cpp assigns them: layer il
-- to the first device whose cumulative share exceeds il / (n_layer + 1).
-- A device that gets no layer (-ts 1,0) is left out. Without,
-- the shares are the devices' rooms (free memory, capped by each device's
-- budget), as llama.cpp splits by free memory, and a split that overflows a
-- device is refilled in order, each device taking layers while they fit.
-- With opts.offload (a split that runs, lrun.split_plan), a device whose
-- layers do not fit its room keeps them anyway (the split as above) and is
-- marked short: the planner then offloads on that device as it would on
-- one device (docs/multigpu.md).
-- @module lrun.multigpu
local size = require("lrun.size")
local errors = require("lrun.errors")

local M = {}

local function fail(msg, fields) return nil, errors.new("arg", msg, fields) end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- Splits "a,b,c" (llama.cpp also accepts '/') into trimmed items; nil on an empty item.
local function items(text)
  local out = {}
  for item in (text .. ","):gmatch("([^,/]*)[,/]") do
    item = trim(item)
    if item == "" then return nil end
    out[#out + 1] = item
  end
  return out
end

--- Devices from --device / the load option device or devices.
-- @tparam string|table spec "cuda:0,cuda:1", "cuda:0" or {"cuda:0", "cuda:1"}
-- @treturn[1] {string,...} device names ("cuda" is kept as written)
-- @treturn[2] nil
-- @treturn[2] string what was wrong
function M.parse_devices(spec)
  local list
  if type(spec) == "string" then list = items(spec)
  elseif type(spec) == "table" then list = spec
  else return nil, "expected a device or a list of devices, got a " .. type(spec) end
  if not list or #list == 0 then return nil, "expected devices such as cuda:0,cuda:1" end
  for i, d in ipairs(list) do
    if type(d) ~= "string" or not (d == "cpu" or d == "cuda" or d:match("^cuda:%d+$")) then
      return nil, string.format("device %d: expected cpu, cuda or cuda:N, got %s", i, tostring(d))
    end
  end
  -- cpu,cpu plans a split over the cpu device (tests on machines with no GPU); cpu with cuda does not mix
  local n_cpu = 0
  for _, d in ipairs(list) do if d == "cpu" then n_cpu = n_cpu + 1 end end
  if n_cpu > 0 and n_cpu < #list then
    return nil, "a layer split is over cuda devices (or cpu only): cpu and cuda do not mix"
  end
  return list
end

--- Proportions from -ts / tensor_split: "3,1", "3/1" or {3, 1}.
-- @treturn[1] {number,...} each >= 0, at least one > 0
-- @treturn[2] nil
-- @treturn[2] string what was wrong
function M.parse_split(spec)
  local list = spec
  if type(spec) == "string" then list = items(spec) end
  if type(list) ~= "table" or #list == 0 then return nil, "expected proportions such as 3,1" end
  local out, sum = {}, 0
  for i, v in ipairs(list) do
    local n = tonumber(v)
    if not n or n ~= n or n < 0 or n == math.huge then
      return nil, string.format("proportion %d: expected a number >= 0, got %s", i, tostring(v))
    end
    out[i], sum = n, sum + n
  end
  if sum <= 0 then return nil, "expected at least one proportion above 0" end
  return out
end

--- Budgets from --gpu-budget / gpu_budget: one size for every device, or
-- one per device ("40G,40G" or {"40G", 40e9}).
-- @tparam string|number|table spec
-- @tparam number n the number of devices
-- @treturn[1] {number,...} n budgets in bytes
-- @treturn[2] nil
-- @treturn[2] string what was wrong
function M.parse_budgets(spec, n)
  local list = spec
  if type(spec) == "string" then list = items(spec) end
  if type(spec) == "number" then list = { spec } end
  if type(list) ~= "table" or #list == 0 then return nil, "expected a size such as 40G or one per device" end
  if #list ~= 1 and #list ~= n then
    return nil, string.format("%d budgets for %d devices: give one for all or one for each", #list, n)
  end
  local out = {}
  for i = 1, n do
    local b, err = size.parse(list[#list == 1 and 1 or i])
    if not b then return nil, string.format("budget %d: %s", i, err) end
    out[i] = b
  end
  return out
end

-- ---------------------------------------------------------------- the split

-- llama.cpp's assignment (llama-model.cpp, -sm layer, every layer on the
-- GPUs): shares made cumulative, layer il to the first device whose
-- cumulative share exceeds il / (n_layer + 1) (llama.cpp counts the output
-- as layer n_layer: -ngl 99 offloads n_layer + 1 "layers"). Its output goes
-- to that of position n_layer, which is the last device with layers but in
-- one case: a share too small for any layer but above the rest (-ts 32,1 on
-- 32 layers), where llama.cpp puts the output alone on that device and lrun
-- leaves the device out (a part of no block runs nothing). Returns the owner
-- of each layer.
local function by_proportions(n_layer, props)
  local sum, cum = 0, {}
  for _, p in ipairs(props) do sum = sum + p end
  local acc = 0
  for d, p in ipairs(props) do acc = acc + p; cum[d] = acc / sum end
  local owner = {}
  for il = 0, n_layer - 1 do
    local d = #props
    for i = 1, #props do
      if cum[i] > il / (n_layer + 1) then d = i; break end
    end
    owner[il] = d
  end
  return owner
end

-- Bytes device d needs for layers first..last: weights, their KV cache,
-- its scratch, the embedding on device 1, the head on the last.
local function need_of(shape, d, n_dev, first, last)
  local w, kv = 0, 0
  for il = first, last do
    w = w + shape.layer_bytes[il + 1]
    kv = kv + (shape.kv_bytes and shape.kv_bytes[il + 1] or 0)
  end
  if d == 1 then w = w + (shape.embed_bytes or 0) end
  if d == n_dev then w = w + (shape.head_bytes or 0) end
  return w, kv, w + kv + (shape.scratch_bytes or 0)
end

-- The owner list as ranges per device, with their bytes.
local function ranges(shape, devices, owner)
  local n_dev, out = #devices, {}
  for d = 1, n_dev do out[d] = { name = devices[d].name, room = devices[d].room, first = nil, last = nil } end
  for il = 0, shape.n_layer - 1 do
    local r = out[owner[il]]
    r.first = r.first or il
    r.last = il
  end
  for d, r in ipairs(out) do
    local first, last = r.first or 0, r.last or -1
    r.first, r.last, r.n_layers = first, last, last - first + 1
    r.weight_bytes, r.kv_bytes, r.need = need_of(shape, d, n_dev, first, last)
  end
  return out
end

-- Refills in order: each device takes layers while they fit its room; the
-- last takes the rest. nil when the layers cannot all be placed.
local function by_room(shape, devices)
  local owner, il, n_dev = {}, 0, #devices
  for d = 1, n_dev do
    local first = il
    while il < shape.n_layer do
      local _, _, need = need_of(shape, d, n_dev, first, il)
      if need > devices[d].room then break end
      owner[il] = d
      il = il + 1
    end
  end
  if il < shape.n_layer then return nil end
  return owner
end

local function over(r) return r.room and r.need > r.room end

-- ranges() over the devices that own a layer: one given no layer (-ts 1,0, or
-- a device with no room) is left out as llama.cpp leaves it, so the first
-- device that owns one holds the embedding and the last the head; a part of
-- no block would be an engine with nothing to run. Returns the ranges and
-- the names left out (nil when none).
local function used_ranges(shape, devices, owner)
  local has = {}
  for il = 0, shape.n_layer - 1 do has[owner[il]] = true end
  local kept, index, unused = {}, {}, nil
  for d, dev in ipairs(devices) do
    if has[d] then
      kept[#kept + 1] = dev
      index[d] = #kept
    else
      unused = unused or {}
      unused[#unused + 1] = dev.name
    end
  end
  local remapped = {}
  for il = 0, shape.n_layer - 1 do remapped[il] = index[owner[il]] end
  return ranges(shape, kept, remapped), unused
end

--- Plans the layer split.
-- @tparam table shape {n_layer=, layer_bytes = {bytes per layer, 1-based by layer+1}, kv_bytes = {…} or nil,
--   embed_bytes=, head_bytes= (the final norm and head; a tied head counts the embedding again),
--   scratch_bytes= (each device's engine scratch)}
-- @tparam table devices {{name=, room= (bytes it may take: free memory, capped by its budget; nil: no cap)},...}
-- @tparam[opt] table opts {proportions = {…} (-ts; nil: by room), offload = true (a device over its room is
--   marked short instead of failing the split)}
-- @treturn[1] table {devices = {{name=, first=, last= (0-based; last < first: no layers), n_layers=,
--   weight_bytes=, kv_bytes=, need=, room=, short= (bytes over its room, offload only)},...},
--   by = "proportions"|"room", offload = true when a device is short, explain = text}
-- @treturn[2] nil
-- @treturn[2] table error (kind "arg" for bad input, "oom" when no split fits)
function M.split(shape, devices, opts)
  opts = opts or {}
  if type(shape) ~= "table" or type(shape.n_layer) ~= "number" or shape.n_layer < 1 then
    return fail("layer split: expected a shape with n_layer >= 1")
  end
  if type(shape.layer_bytes) ~= "table" or #shape.layer_bytes ~= shape.n_layer then
    return fail(string.format("layer split: %d layer sizes for %d layers", type(shape.layer_bytes) == "table"
      and #shape.layer_bytes or 0, shape.n_layer))
  end
  if type(devices) ~= "table" or #devices == 0 then return fail("layer split: no devices") end
  local props, by = opts.proportions, "proportions"
  if props then
    if #props ~= #devices then
      return fail(string.format("tensor split: %d proportions for %d devices", #props, #devices))
    end
  else
    -- by room: llama.cpp splits by free memory; an uncapped device counts as the largest capped one
    by, props = "room", {}
    local biggest = 0
    for _, d in ipairs(devices) do if d.room and d.room > biggest then biggest = d.room end end
    for i, d in ipairs(devices) do props[i] = d.room or (biggest > 0 and biggest or 1) end
    local any = false
    for _, p in ipairs(props) do if p > 0 then any = true end end
    if not any then for i = 1, #props do props[i] = 1 end end
  end
  local out, unused = used_ranges(shape, devices, by_proportions(shape.n_layer, props))
  local bad
  for _, r in ipairs(out) do if over(r) then bad = r end end
  if bad and by == "room" then
    local owner = by_room(shape, devices)
    if owner then
      out, unused = used_ranges(shape, devices, owner)
      bad = nil
    end
  end
  if bad and opts.offload then -- each device short of room offloads its own layers' weights (lrun.split_plan)
    for _, r in ipairs(out) do if over(r) then r.short = r.need - r.room end end
    local s = { devices = out, by = by, offload = true, unused = unused }
    s.explain = M.explain(s)
    return s
  end
  if bad then
    return nil, errors.new("oom", string.format("layer split: %s needs %s (layers %d-%d: %s of weights, %s of KV "
      .. "cache, %s of scratch) but has room for %s: %s missing%s", bad.name, size.format(bad.need), bad.first,
      bad.last, size.format(bad.weight_bytes), size.format(bad.kv_bytes), size.format(shape.scratch_bytes or 0),
      size.format(bad.room), size.format(bad.need - bad.room),
      by == "proportions" and "; change -ts or leave it out to split by room" or "; no split fits every device"),
      { requested = bad.need, free = bad.room, device = bad.name })
  end
  local s = { devices = out, by = by, unused = unused }
  s.explain = M.explain(s)
  return s
end

--- A split as text, one line per device.
function M.explain(s)
  local lines = { string.format("layer split over %d devices (%s):", #s.devices,
    s.by == "proportions" and "by -ts proportions" or "by free memory and budgets") }
  for d, r in ipairs(s.devices) do
    local extra = {}
    if d == 1 then extra[#extra + 1] = "embedding" end
    if d == #s.devices then extra[#extra + 1] = "final norm and head" end
    lines[#lines + 1] = string.format("  %s: %s, %s of weights, %s of KV cache, %s of %s%s%s", r.name,
      r.n_layers > 0 and string.format("layers %d-%d (%d)", r.first, r.last, r.n_layers) or "no layers",
      size.format(r.weight_bytes), size.format(r.kv_bytes), size.format(r.need),
      r.room and size.format(r.room) or "no cap", #extra > 0 and (" + " .. table.concat(extra, ", ")) or "",
      r.short and string.format("; %s over: offloads on this device", size.format(r.short)) or "")
  end
  for _, name in ipairs(s.unused or {}) do
    lines[#lines + 1] = string.format("  %s: no layers (its share rounds to none): not used", name)
  end
  return table.concat(lines, "\n")
end

-- ---------------------------------------------------------------- from a model

--- A loaded model's shape for M.split: bytes per layer from m:tensors(),
-- the embedding, the head (the embedding again when tied), the KV cache at
-- its highest spread evenly over the layers, and the engine's scratch.
-- @tparam table model an lrun.model
-- @tparam[opt] table sized lrun.residency.size's answer (kv_max=, scratch=)
function M.shape(model, sized)
  local n_layer = 0
  local tensors = model:tensors()
  for _, t in ipairs(tensors) do if t.layer + 1 > n_layer then n_layer = t.layer + 1 end end
  local shape = { n_layer = n_layer, layer_bytes = {}, kv_bytes = {}, embed_bytes = 0, head_bytes = 0,
    scratch_bytes = sized and sized.scratch or 0 }
  for il = 1, n_layer do shape.layer_bytes[il] = 0 end
  local has_head = false
  for _, t in ipairs(tensors) do
    if t.layer >= 0 then shape.layer_bytes[t.layer + 1] = shape.layer_bytes[t.layer + 1] + t.plain_bytes
    elseif t.role == "embedding" then shape.embed_bytes = shape.embed_bytes + t.plain_bytes
    else
      shape.head_bytes = shape.head_bytes + t.plain_bytes
      if t.role == "lm_head" then has_head = true end
    end
  end
  if not has_head then shape.head_bytes = shape.head_bytes + shape.embed_bytes end -- tied: the last device reads it too
  local kv = sized and sized.kv_max or 0
  for il = 1, n_layer do shape.kv_bytes[il] = n_layer > 0 and math.floor(kv / n_layer) or 0 end
  return shape
end

--- Each device's room: what lrun may take there: its free memory (from
-- lrun_device_open, less the backend's headroom), shared evenly by a device
-- named twice (cuda:0,cuda:0, the split over one GPU), and capped by the
-- entry's budget. A device with no cap (cpu) has its budget as room, or
-- none (nil).
-- @tparam {string,...} names
-- @tparam[opt] {number,...} budgets bytes per device (0: none)
-- @treturn[1] {{name=, room=},...}
-- @treturn[2] nil
-- @treturn[2] table error (a device that does not open: no such GPU, a build without CUDA)
function M.rooms(names, budgets)
  local lf = require("lrun.ffi")
  local ffi, C = lf.ffi, lf.C
  local count, out = {}, {}
  for _, n in ipairs(names) do count[n] = (count[n] or 0) + 1 end
  for i, n in ipairs(names) do
    local room
    local dp = ffi.new("lrun_device *[1]")
    local budget = budgets and budgets[i] or 0
    local st = C.lrun_device_open(dp, n, 0)
    if st ~= C.LRUN_OK then
      return nil, errors.from_status(st, "layer split: opening " .. n, { device = n })
    end
    local cap = tonumber(C.lrun_device_capacity(dp[0])) - tonumber(C.lrun_device_used(dp[0]))
    if cap < 2 ^ 62 then room = math.floor(cap / count[n]) end
    C.lrun_device_free(dp[0])
    if budget > 0 and (not room or budget < room) then room = budget end
    out[i] = { name = n, room = room }
  end
  return out
end

--- The split for a loaded model (lrun.load with several devices).
-- @tparam table model an lrun.model
-- @tparam {string,...} names devices
-- @tparam table opts {budgets = {bytes,...} or nil, proportions = {…} or nil, sized = lrun.residency.size's answer}
function M.plan(model, names, opts)
  local rooms, err = M.rooms(names, opts.budgets)
  if not rooms then return nil, err end
  return M.split(M.shape(model, opts.sized), rooms, { proportions = opts.proportions, offload = opts.offload })
end

--- What lrun.split_plan needs of a split: {names=, layers = {blocks of each part}, rooms = {bytes or false}}.
function M.parts(s)
  local out = { names = {}, layers = {}, rooms = {} }
  for i, r in ipairs(s.devices) do
    out.names[i], out.layers[i], out.rooms[i] = r.name, r.n_layers, r.room or false
  end
  return out
end

return M
