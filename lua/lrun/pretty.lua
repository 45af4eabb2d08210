--- lrun.pretty — readable text for any Lua value: nested tables (with
-- cycles marked), strings quoted, cdata handles and lrun objects through
-- their __tostring.
--
--     pretty.format({1, 2, name = "x", nested = {a = true}})
--     --> { 1, 2, name = "x", nested = { a = true } }
-- @module lrun.pretty
local M = {}

local ffi_ok, ffi = pcall(require, "ffi")

local keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do keywords[w] = true end

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }
    return named[c] or string.format("\\%03d", c:byte())
  end) .. '"'
end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not keywords[k] then return k end
  if type(k) == "string" then return "[" .. quote(k) .. "]" end
  return "[" .. tostring(k) .. "]"
end

-- Order: the array part, then other keys sorted by type, then text.
local function sorted_keys(t, n_array)
  local keys = {}
  for k in pairs(t) do
    if not (type(k) == "number" and k >= 1 and k <= n_array and k % 1 == 0) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

-- An lrun_tensor handle: name, dtype, shape and tier, through the C API.
local function tensor_text(v)
  local lf = package.loaded["lrun.ffi"]
  if not lf or v == nil then return nil end
  local C = lf.C
  local dims = {}
  for axis = 0, C.lrun_tensor_ndim(v) - 1 do dims[#dims + 1] = tostring(tonumber(C.lrun_tensor_dim(v, axis))) end
  return string.format("lrun_tensor<%s %s [%s] %s>", ffi.string(C.lrun_tensor_name(v)),
    ffi.string(C.lrun_dtype_name(C.lrun_tensor_dtype(v))), table.concat(dims, ", "),
    ffi.string(C.lrun_tier_name(C.lrun_tensor_tier(v))))
end

local function scalar(v)
  local tv = type(v)
  if tv == "string" then return quote(v) end
  if tv == "number" then
    if v % 1 == 0 and v > -1e15 and v < 1e15 then return string.format("%d", v) end
    return string.format("%.14g", v)
  end
  if tv == "cdata" and ffi_ok then
    local mt_ok, s = pcall(tostring, v)
    local ct = tostring(ffi.typeof(v)):match("^ctype<(.*)>$") or "cdata"
    if mt_ok and s and not s:match("^cdata<") then return s end
    if ct:match("lrun_tensor %*") then
      local ok, text = pcall(tensor_text, v)
      if ok and text then return text end
    end
    if ct:match("%*") and v == nil then return "<" .. ct .. " NULL>" end
    return mt_ok and s or ("<" .. ct .. ">")
  end
  if tv == "table" or tv == "userdata" then
    local mt = getmetatable(v)
    if type(mt) == "table" and mt.__tostring then return tostring(v) end
  end
  return tostring(v)
end

--- Formats a value.
-- @param v any value
-- @tparam[opt] table opts indent (default "  "), width (80: wider tables
--   break over lines), depth (10), max_items (100 per table)
-- @treturn string
function M.format(v, opts)
  opts = opts or {}
  local indent = opts.indent or "  "
  local width = opts.width or 80
  local max_depth = opts.depth or 10
  local max_items = opts.max_items or 100
  local open = {} -- tables on the path from the root: a cycle points back at one

  local function fmt(x, level)
    if type(x) ~= "table" then return scalar(x) end
    local mt = getmetatable(x)
    if type(mt) == "table" and mt.__tostring then return tostring(x) end
    if open[x] then return "<cycle: " .. tostring(x) .. ">" end
    if level > max_depth then return "{ … }" end
    open[x] = true
    local n_array = 0
    while rawget(x, n_array + 1) ~= nil do n_array = n_array + 1 end
    local items, count = {}, 0
    for i = 1, n_array do
      count = count + 1
      if count > max_items then break end
      items[#items + 1] = fmt(rawget(x, i), level + 1)
    end
    for _, k in ipairs(sorted_keys(x, n_array)) do
      count = count + 1
      if count > max_items then break end
      items[#items + 1] = key_text(k) .. " = " .. fmt(rawget(x, k), level + 1)
    end
    if count > max_items then
      local total = n_array
      for _ in pairs(x) do total = total + 1 end
      total = total - n_array -- pairs counted the array part too
      items[#items + 1] = string.format("… %d more", total - max_items)
    end
    open[x] = nil
    if #items == 0 then return "{}" end
    local one_line = "{ " .. table.concat(items, ", ") .. " }"
    if #one_line + #indent * level <= width and not one_line:find("\n", 1, true) then return one_line end
    local pad = indent:rep(level + 1)
    return "{\n" .. pad .. table.concat(items, ",\n" .. pad) .. "\n" .. indent:rep(level) .. "}"
  end

  return fmt(v, 0)
end

-- ---------------------------------------------------------------- residency views

local function bytes_text(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i, v = 1, n or 0
  while v >= 1024 and i < #units do v, i = v / 1024, i + 1 end
  return i == 1 and string.format("%d B", v) or string.format("%.1f %s", v, units[i])
end

--- The host account (model:host_memory()) as one line: "host memory held
-- 3.1 GiB (weights 2.9 GiB, slots 0.2 GiB) of a host budget 4.0 GiB, peak 3.2 GiB".
function M.host_line(h)
  local parts = {}
  local labels = { weights = "weights", kv_cache = "KV cache", slots = "slots", scratch = "scratch",
    expert_cache = "expert cache" } -- the C account's names (core/host_account.c)
  for _, k in ipairs({ "weights", "kv_cache", "slots", "scratch", "expert_cache" }) do
    if (h[k] or 0) > 0 then parts[#parts + 1] = labels[k] .. " " .. bytes_text(h[k]) end
  end
  return string.format("host memory held %s%s %s, peak %s%s", bytes_text(h.held),
    #parts > 0 and (" (" .. table.concat(parts, ", ") .. ")") or "",
    h.budget > 0 and ("of a host budget " .. bytes_text(h.budget)) or ("with " .. bytes_text(h.available) .. " available"),
    bytes_text(h.peak), h.refused > 0 and string.format(", %d requests refused", h.refused) or "")
end

--- A placement (model:placement()) as text: bytes and tensor counts per
-- tier, the host-compute tensors, the policy and its explanation.
function M.placement(p)
  local order = { "device", "pinned", "host", "mmap", "disk" }
  local count, packed = {}, {}
  for name, tier in pairs(p.tensors) do
    count[tier] = (count[tier] or 0) + 1
    if p.packed and p.packed[name] then packed[tier] = (packed[tier] or 0) + 1 end
  end
  local parts = {}
  for _, tier in ipairs(order) do
    -- packed weights in a tier: "disk 1.2 GiB (22, packed)", or "(22, 7 packed)" when some are
    local n, np = count[tier] or 0, packed[tier] or 0
    local form = np == 0 and "" or np == n and ", packed" or string.format(", %d packed", np)
    parts[#parts + 1] = string.format("%s %s (%d%s)", tier, bytes_text(p.bytes[tier]), n, form)
  end
  local lines = { "placement: " .. table.concat(parts, ", ") }
  local hc = {}
  for name in pairs(p.host_compute or {}) do hc[#hc + 1] = name end
  table.sort(hc)
  if #hc > 0 then
    local shown = {}
    for i = 1, math.min(#hc, 6) do shown[i] = hc[i] end
    lines[#lines + 1] = string.format("host compute: %d tensors (%s%s)", #hc, table.concat(shown, ", "),
      #hc > 6 and ", …" or "")
  end
  if p.experts then
    local ex, where = p.experts, {}
    for _, tier in ipairs(order) do
      if ex.slices[tier] then where[#where + 1] = string.format("%s %d", tier, ex.slices[tier]) end
    end
    lines[#lines + 1] = string.format("experts: %d per block, %d used per token; expert slices (gate, up, down): "
      .. "%s; host compute %d", ex.n_expert, ex.n_expert_used, table.concat(where, ", "), ex.host_compute_slices)
  end
  local n_packed = 0
  for _ in pairs(p.packed or {}) do n_packed = n_packed + 1 end
  if n_packed > 0 then
    lines[#lines + 1] = string.format("packed: %d tensors, %s of %s plain (ratio %.3f)", n_packed,
      bytes_text(p.packed_bytes), bytes_text(p.packed_plain_bytes), p.packed_ratio or 1)
  end
  if p.policy then
    lines[#lines + 1] = string.format("policy %s, prefetch k = %s%s", p.policy, tostring(p.prefetch),
      p.auto_fit and " (auto-fit: the model did not fit the device)" or "")
  end
  if p.explain then lines[#lines + 1] = p.explain end
  if p.prediction then lines[#lines + 1] = p.prediction end -- nothing planned: the resident model's
  if p.host then lines[#lines + 1] = M.host_line(p.host) .. " (the runtime's account)" end
  if p.split then lines[#lines + 1] = p.split.explain end -- several devices (lrun.multigpu)
  lines[#lines + 1] = "(fields: tensors, bytes, host_compute, " .. (p.experts and "experts, " or "")
    .. "packed, packed_bytes, packed_ratio, policy, explain" .. (p.host and ", host" or "") .. (p.predicted and ", predicted" or "")
    .. (p.prefill and ", prefill" or "")
    .. (p.split and ", split" or "") .. ")"
  return table.concat(lines, "\n")
end

--- Engine statistics (model:stats()) as text.
function M.stats(s)
  local units = s.prefetch_hits + s.prefetch_misses
  local lines = {
    string.format("steps %d; streamed %s in %.3f s of copies, compute stalled %.3f s; prefetch %d hits, %d misses%s",
      s.steps, bytes_text(s.bytes_streamed), s.copy_seconds, s.stall_seconds, s.prefetch_hits, s.prefetch_misses,
      units > 0 and string.format(" (%.0f%%)", 100 * s.prefetch_hits / units) or ""),
    string.format("host compute read %s; device: weights %s, slots %s, KV cache %s, scratch %s",
      bytes_text(s.host_compute_bytes), bytes_text(s.weight_device_bytes), bytes_text(s.slot_bytes),
      bytes_text(s.kv_bytes), bytes_text(s.scratch_bytes)),
  }
  if s.host then lines[#lines + 1] = M.host_line(s.host) end
  if (s.host_compute_seconds or 0) > 0 then -- a CUDA engine's host products: their time, and the waits before them
    lines[#lines + 1] = string.format("host products %.3f s (%.1f GB/s as run), host waited %.3f s for the device",
      s.host_compute_seconds, s.host_compute_bytes / s.host_compute_seconds / 1e9, s.host_wait_seconds or 0)
  end
  if (s.host_stream_products or 0) > 0 then -- prompt chunks: host-computed matrices multiplied on the GPU
    lines[#lines + 1] = string.format("prompts multiplied %d host-computed matrices on the device, %s copied",
      s.host_stream_products, bytes_text(s.host_stream_bytes))
  end
  if (s.disk_bytes_read or 0) > 0 then
    lines[#lines + 1] = string.format("disk read %s in %.3f s (%.0f MB/s), %s, queue depth %d, %d stalls",
      bytes_text(s.disk_bytes_read), s.disk_read_seconds, (s.disk_read_bandwidth or 0) / 1e6,
      s.disk_direct and "O_DIRECT" or "buffered", s.disk_queue_depth, s.disk_stalls)
  end
  if (s.expert_store_hits or 0) + (s.expert_store_misses or 0) > 0 then -- disk-tier experts, per chosen expert
    lines[#lines + 1] = string.format("experts from the disk: %d read, %d found in the store's slots",
      s.expert_store_misses, s.expert_store_hits)
  end
  if s.experts then -- (block, expert) pairs ranked by their selections
    lines[#lines + 1] = string.format("experts: %d selections over %d tokens, the busiest 10%% of experts take %.0f%% of them",
      s.experts.selections, s.experts.tokens, 100 * s.experts.top10_share)
  end
  if (s.prefill_stream_experts or 0) > 0 then
    lines[#lines + 1] = string.format("prefill streamed %d host experts, %s (beside host compute's %s)",
      s.prefill_stream_experts, bytes_text(s.prefill_stream_bytes), bytes_text(s.host_compute_bytes))
  end
  if (s.prefill_slot_experts or 0) > 0 then
    lines[#lines + 1] = string.format("prefill ran %d experts from the expert cache's slots, %s not streamed",
      s.prefill_slot_experts, bytes_text(s.prefill_slot_bytes))
  end
  if s.expert_cache then
    local c = s.expert_cache
    if c.mode == "hybrid" then
      lines[#lines + 1] = string.format("expert cache (hybrid): %d slots, %d hits on the device, %d misses computed "
        .. "on the host (%.0f%% hits), %d admitted, %s copied", c.slots, c.hits, c.host_computed or 0,
        100 * c.hit_rate, c.admissions or 0, bytes_text(c.bytes_copied))
    else
      lines[#lines + 1] = string.format("expert cache: %d slots, %d hits, %d misses (%.0f%% hits), %d prefetched, %s copied",
        c.slots, c.hits, c.misses, 100 * c.hit_rate, c.prefetches, bytes_text(c.bytes_copied))
    end
  end
  return table.concat(lines, "\n")
end

--- Prints values like print, but each through format.
function M.print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = M.format((select(i, ...))) end
  io.write(table.concat(parts, "\t"), "\n")
end

return M
