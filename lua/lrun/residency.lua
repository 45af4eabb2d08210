--- lrun.residency — turning a policy and a budget into a placement, and
-- applying it to a loaded model (docs/policies.md, docs/residency.md).
--
--     local r = require("lrun.residency")
--     local result = assert(r.plan(m, {policy = "smart", cpu_offload_gb = 0.05}))
--     print(result.explain)
--     assert(r.apply(m, result))    -- moves tensors; the next engine is AS_PLACED
--
-- The device budget (lrun.load's gpu_budget) caps weights + KV cache +
-- scratch + streaming slots (+ on cuda gathered embedding rows and the
-- pool's fragmentation bound): the bytes that must leave the device are
-- total weights - (budget - reserve - slots), at least cpu_offload_gb GiB.
-- Every size (slots, rows, scratch, KV cache, pool slack) comes from the
-- engine's own layout code for the device the model is on
-- (lrun.placement_size): this module searches and explains, it does not copy
-- the engine's arithmetic.
-- Policies offload *up to* a cap (max_bytes); the cap is raised until the
-- policy offloads at least what is needed, or it can offload no more, which
-- is an error that says how much is missing.
--
-- The host budget (host_budget, --host-budget) caps the host memory lrun
-- holds (lrun.host_budget says what counts). On cpu the budget lowers the
-- device's room and what leaves the device goes to disk; on cuda the
-- off-device weights that do not fit move from pinned/host to disk (streamed
-- ones, largest first; host-computed ones stay, since the CPU reads them in
-- place). A budget no placement meets fails at planning, naming what is
-- missing.
--
-- The parts, each its own module, re-exported here for callers:
-- lrun.bandwidth (the measured rates), lrun.placement_size (sizes by the
-- engine's layout code, auto-fit's test), lrun.host_budget (host memory held),
-- lrun.packed_form (which weights may be packed), lrun.placement_opts (the
-- options and -ot overrides), lrun.plan_explain (the explain text);
-- lrun.pack_plan wraps a plan with smart's automatic packed choice.
-- @module lrun.residency
local lf = require("lrun.ffi")
local errors = require("lrun.errors")
local size = require("lrun.size")
local policy_file = require("lrun.policy_file")
local predict = require("lrun.predict")
local bandwidth = require("lrun.bandwidth")
local placement_size = require("lrun.placement_size")
local host_mem = require("lrun.host_budget")
local packed_form = require("lrun.packed_form")
local placement_opts = require("lrun.placement_opts")
local plan_explain = require("lrun.plan_explain")
local ffi, C = lf.ffi, lf.C

local M = {}

-- the public table, as before the split (lua/, policies/, tests/ and the docs call these through it)
M.host_matmul_rates = bandwidth.host_matmul_rates
M.decode_rates = bandwidth.decode_rates
M.host_batch_rates = bandwidth.host_batch_rates
M.bandwidths = bandwidth.bandwidths
M.measure_links = bandwidth.measure_links
M.disk_read = bandwidth.disk_read
M.parse_override = placement_opts.parse_override
M.wanted = placement_opts.wanted
M.size = placement_size.size
M.size_with = placement_size.size_with
M.fits = placement_size.fits
M.cuda_staging_bytes = host_mem.cuda_staging_bytes
M.loader_staging_min = host_mem.loader_staging_min
M.packable = packed_form.packable

local GiB = 2 ^ 30
local unlimited = 2 ^ 62

local function fail(kind, msg, fields) return nil, errors.new(kind, msg, fields) end

-- Weight bytes a placement keeps off the device.
local function off_device_bytes(tensors, final)
  local off = 0
  for _, t in ipairs(tensors) do
    if final[t.name] ~= "device" then off = off + t.bytes end
  end
  return off
end

-- Device bytes a placement takes beyond its weights, slots and the reserve (KV cache and the scratch of the
-- model as it is, all on the device): embedding rows, the pool's slack, and the scratch the placement adds,
-- the packed scratch its device-packed weights decode into (prefill, and shapes the fused GEMV refuses). The
-- reserve was sized before the plan chose forms; a plan that packs weights on the device needs this too, or
-- the engine fails at init where the plan said it fits.
local function added_scratch(sized, resident) return math.max(0, sized.scratch - resident.scratch) end
local function beyond_reserve(sized, resident) return sized.rows + sized.slack + added_scratch(sized, resident) end

-- ---------------------------------------------------------------- planning

-- Runs policy.plan, raising its cap until at least need bytes are off.
local function run_policy(policy, tensors, need, base, total)
  local where = policy.source and policy_file.where(policy) or (policy.name or "policy")
  -- an error raised inside the policy ends the search: it is the policy's bug
  local function call(budget)
    local ok, plan, off, extra = pcall(policy.plan, tensors, budget)
    if not ok then return false, "policy " .. where .. ": " .. tostring(plan) end
    return true, plan, off, extra
  end
  local budget = {}
  for k, v in pairs(base) do budget[k] = v end
  if need <= 0 then
    local ok, plan, off, extra = call(budget)
    if not ok then return nil, plan end
    if plan == nil then return nil, "policy " .. where .. ": " .. tostring(off) end
    return plan, off, extra
  end
  local cap, last_off, last_msg = need, 0, nil
  for step = 0, 62 do
    budget.max_bytes = cap
    local ok, plan, off, extra = call(budget)
    if not ok then return nil, plan end
    if type(plan) == "table" then
      off = tonumber(off) or 0
      if off >= need then return plan, off, extra end
      last_off = math.max(last_off, off)
    else
      last_msg = off
    end
    if cap >= total then break end
    cap = math.min(total, cap + math.max(need - (tonumber(off) or 0), 1) * 2 ^ step)
  end
  return nil, string.format("policy %s: keeps at most %s of weights off the device, but %s must leave it: "
    .. "%s missing%s", where, size.format(last_off), size.format(need), size.format(need - last_off),
    last_msg and (" (" .. tostring(last_msg) .. ")") or "")
end

--- Computes a placement for model.
-- @tparam table model an lrun.model
-- @tparam table opts policy (name, file or table), smart_offload, cpu_offload_gb,
--   overrides ({{pattern, tier}, ...} or {"pattern=tier", ...}), n_gpu_layers,
--   prefetch_layers, offload_tier, host_budget (bytes or "4G"), and the load options n_ctx, kv_dtype,
--   cache_implementation, cache_config, threads, numerics; reserve_extra (bytes, internal)
-- @treturn[1] table {plan={[name]=tier}, host_compute={[name]=true}, policy=name,
--   explain=text, off_bytes=, device_bytes=, slot_bytes=, extra_bytes= (cuda: embedding rows, pool
--   slack, the packed decode scratch of device-packed weights), reserve_bytes= (KV cache, scratch),
--   prefetch=k (the engine's), budget=,
--   size= (M.size of the placement), cache_implementation=, attempts= (M.place: plans made),
--   host_bytes=, host_budget=, disk_bytes= (weights in the disk tier),
--   predicted= (lrun.predict.decode of the plan, unless opts.predict == false), prefill= (lrun.predict.prefill
--   of a chunk of opts.prefill_tokens, default 512; nil when opts.predict == false or no rate was measured),
--   pack_choice= (lrun.pack_choice's result when smart weighed packing: opts.packed nil, weights off the device)}
-- A layer split that runs (opts.split, lrun.split_plan) is planned part by
-- part, each part with this function over its own tensors (opts.split_part).
-- @treturn[2] nil
-- @treturn[2] table error
function M.plan(model, opts)
  opts = opts or {}
  if opts.split and not opts.split_part then return require("lrun.split_plan").plan(model, opts, M.plan) end
  -- smart's automatic packed choice weighs the packed options around the plain plan (lrun.pack_plan)
  if not opts.pack_option and not opts.split_part then return require("lrun.pack_plan").plan(model, opts, M.plan) end
  -- a split's part: {index = 0-based, first =, last = (its blocks), last_part =, room = bytes or nil, name =}
  local part = opts.split_part
  local pidx = part and part.index or nil
  local tensors = model:tensors()
  local select, serr0 = packed_form.selector(opts.packed)
  if serr0 then return fail("arg", serr0) end
  local by_name, total = {}, 0
  for i, t in ipairs(tensors) do
    local h = C.lrun_model_tensor(model.handle, i - 1)
    t.file_packed = C.lrun_tensor_file_packed(h) ~= 0
    -- the bytes a policy weighs are those of the form asked for (a size known
    -- from an earlier packing, else the plain size: never under the truth)
    local want = t.packed
    if select and packed_form.packable(t) then want = select(t) and true or false end
    if want ~= t.packed then
      local pb = tonumber(C.lrun_tensor_packed_bytes(h))
      -- a weight PEX2 will hold is measured from one read of its exponents, nothing encoded (the size its
      -- packing will have), so the policy fits and lrun.predict prices packed bytes, not plain ones
      -- (session 19: --packed true on a 7B bf16 at 4 GiB was predicted at the plain bytes, 4.7 tok/s for
      -- 7.0); a PEX1 one would be encoded to be measured, so it keeps the plain size until packed
      if want and pb == 0 and packed_form.codec(t) == "pex2" then
        local out = ffi.new("size_t[1]")
        if C.lrun_tensor_measure_packed(h, out) == C.LRUN_OK then pb = tonumber(out[0]) end
      end
      t.bytes = want and pb > 0 and pb or t.plain_bytes
    end
    t.packed = want -- the form the policy weighs
    -- lrun.pack_choice's offer: a packed weight the policy may host-compute in its plain form
    t.host_plain = want and opts.pack_host_plain or nil
    if want then t.codec = packed_form.codec(t) end -- what lrun.predict prices its decode by
    t.file_form = t.file_packed
    by_name[t.name] = t
    total = total + t.bytes
  end
  if part then -- the part's tensors only: the policy places those, its device's room holds them
    tensors, by_name, total = require("lrun.split_plan").part_tensors(tensors, part)
  end

  -- the policy
  local spec = opts.policy
  if spec == nil and opts.smart_offload then spec = "smart" end
  -- n_cpu_moe alone is its policy's; beside another placement request, overrides (below)
  if spec == nil and opts.n_cpu_moe and opts.n_gpu_layers == nil and opts.cpu_offload_gb == nil then
    spec = "n_cpu_moe"
  end
  if spec == nil then
    local cfg = require("lrun.config")
    if cfg.policies and #cfg.policies > 0 then spec = cfg.policies[#cfg.policies] end
  end
  -- `packed` alone chooses a form, not a placement: the plan is auto-fit's (smart), as without it (session
  -- 19: `--packed true --gpu-budget 4G` took the default policy's pageable host tier, 6.48 tok/s, where
  -- pinned streaming ran 7.01)
  if spec == nil and opts.packed ~= nil and not placement_opts.wanted_besides_packed(opts) then spec = "smart" end
  -- with nothing that must leave the device, the default policy and smart
  -- (which only ranks) keep everything on it; an explicit policy has its say
  local only_if_needed = spec == nil or spec == "smart"
  if spec == nil then spec = "aggressive" end
  local policy, perr = policy_file.resolve(spec)
  if not policy then return fail("arg", perr) end
  local pname = policy.source or policy.name or "policy"

  -- overrides: n_cpu_moe's blocks when another policy plans, then the caller's, which win
  local overrides, oerr = placement_opts.overrides(opts, tensors, spec)
  if not overrides then return fail("arg", oerr) end

  -- the budget
  local dev = C.lrun_model_device(model.handle)
  local capacity = tonumber(C.lrun_device_capacity(dev))
  if capacity >= unlimited then capacity = nil end
  local cpu = C.lrun_device_kind_of(dev) ~= C.LRUN_DEVICE_KIND_CUDA
  local host_budget
  if opts.host_budget ~= nil then
    local hb, herr = size.parse(opts.host_budget)
    if not hb then return fail("arg", "host_budget: " .. tostring(herr)) end
    host_budget = hb
  end
  -- a cpu device's memory is host memory: the host budget is its room too
  local device_capped = false
  if cpu and host_budget and (not capacity or host_budget < capacity) then
    capacity, device_capped = host_budget, true
  end
  -- a split's part: its device's room (lrun.multigpu.rooms); the host budget is not divided among the
  -- parts (lrun.split_plan plans without it; the runtime still refuses host memory past it)
  if part then capacity, device_capped, host_budget = part.room, false, nil end
  -- the engine's scratch and KV cache do not depend on the placement: sized for all on the device
  local eo = placement_size.engine_opts(opts)
  local resident, serr = placement_size.size_with(model, eo, {}, nil, nil, pidx)
  if not resident then return nil, serr end
  -- the prefill chunk (lrun.prefill_batch): larger for a mixture of experts whose host experts stream
  -- experts asked off the device (a policy or -ot for them) stream in prefill whether or not the model fits
  local experts_off = spec == "experts_on_host" or spec == "n_cpu_moe"
  for _, o in ipairs(overrides) do -- {pattern, tier}: n_cpu_moe's and -ot's
    if o[2] ~= "device" and o[1]:find("exps", 1, true) then experts_off = true end
  end
  local n_batch, batch_why = require("lrun.prefill_batch").choose(opts, { cpu = cpu,
    n_expert = model:info().n_expert or 0,
    fits = not experts_off and (not capacity or total + resident.scratch <= capacity) })
  if n_batch > 0 and n_batch ~= (opts.n_batch or 0) then
    local o = {}
    for key, v in pairs(opts) do o[key] = v end
    o.n_batch, o.prefill_tokens = n_batch, opts.prefill_tokens or n_batch
    local eo2 = placement_size.engine_opts(o)
    local r2, serr2 = placement_size.size_with(model, eo2, {}, nil, nil, pidx)
    if not r2 then return nil, serr2 end
    -- not asked: only while its scratch costs little of the budget (else the default)
    if batch_why == "asked" or require("lrun.prefill_batch").affordable(r2.scratch - resident.scratch, capacity) then
      opts, eo, resident = o, eo2, r2
    else
      n_batch = 0
    end
  end
  -- the same options without the host stream's staging: a plan that fits only so keeps the host's products
  local opts_nostream = {}
  for key, v in pairs(opts) do opts_nostream[key] = v end
  opts_nostream.host_stream_rows = -1
  local eo_nostream = placement_size.engine_opts(opts_nostream)
  local kv, kerr = placement_size.kv_reserve(model, opts, resident, pidx)
  if not kv then return nil, kerr end
  local reserve = kv + resident.scratch + (opts.reserve_extra or 0)
  local forced = opts.cpu_offload_gb and math.floor(opts.cpu_offload_gb * GiB) or 0
  if forced > total then forced = total end
  local k = resident.k -- prefetch_layers, or the device's default (lrun_engine_default_prefetch)

  local bw
  if policy.name == "smart" or opts.smart_offload then
    local err
    bw, err = bandwidth.bandwidths(model)
    if not bw then return nil, err end
  end
  -- where offloaded weights go unless asked: on cpu with a host budget the
  -- disk (it holds no host memory); on cpu with a device budget the file's
  -- mapping (a copy in host memory would hold the model twice, docs/residency.md);
  -- else the policy's own (host)
  local off_tier = opts.offload_tier
  if off_tier == nil and cpu and host_budget then off_tier = "disk"
  elseif off_tier == nil and cpu and opts.gpu_budget ~= nil then off_tier = "mmap" end
  if bw and off_tier == "disk" then -- disk placements: the disk's measured read speed (lrun.predict, smart)
    bw = bandwidth.with_disk(model, bw)
  end
  -- a weight weighed packed: what the host's product of it costs (measured once, not at every load)
  local any_packed = false
  for _, t in ipairs(tensors) do any_packed = any_packed or t.packed end
  if bw and any_packed then bandwidth.host_packed_rates(model, bw) end
  -- a mixture of experts: smart weighs its experts' k/E read per token
  local n_used = model:info().n_expert_used or 0
  -- experts_read_per_expert: on the cpu a disk expert stack is read per chosen expert (residency/expert_store.c)
  local base = { tier = off_tier, n_gpu_layers = opts.n_gpu_layers, n_cpu_moe = opts.n_cpu_moe, bandwidth = bw,
    experts_read_per_expert = cpu or nil,
    n_expert_used = n_used > 0 and n_used or nil, prefetch_layers = k }
  -- the cuda engine's own pinned staging (step table, logits): held whatever the placement
  local staging, gerr = host_mem.engine_staging(model, cpu and "cpu" or "cuda", eo)
  if not staging then return nil, gerr end
  local host_ctx = { cpu = cpu, reserve = reserve, tensors = tensors, engine_staging = staging,
    host_stream_rows = opts.host_stream_rows,
    kv_host = (opts.cache_implementation == "offloaded" or opts.cache_implementation == "offloaded_static")
      and kv or 0 }

  local slots = 0
  -- smart on cuda may stream whole blocks in turn with the host-computed ones (a unit a block: larger slots);
  -- when those slots leave no room, it plans again sharing each block's matrices (smaller units)
  local last_way, split_only = nil, false
  local function split_instead()
    if split_only or last_way ~= "whole" then return false end
    split_only, slots, base.whole_blocks = true, 0, false
    return true
  end
  for attempt = 1, 16 do
    local need = forced
    if capacity and (capacity - reserve - slots < 0 or attempt == 9) then split_instead() end
    if capacity then
      local room = capacity - reserve - slots
      if room < 0 then
        return fail("oom", string.format("%s %s is below the engine's KV cache and scratch (%s) and "
          .. "streaming slots (%s): %s missing even with every weight off the device",
          device_capped and "host budget (the cpu device's room)" or "budget", size.format(capacity),
          size.format(reserve), size.format(slots), size.format(-room)), { requested = reserve + slots, free = capacity })
      end
      need = math.max(need, total - room)
    end
    local run_base = base
    if need <= 0 and only_if_needed then
      run_base = {}
      for key, v in pairs(base) do run_base[key] = v end
      run_base.max_bytes = 0
    end
    local plan, off, extra = run_policy(policy, tensors, need, run_base, total)
    if plan then last_way = type(extra) == "table" and extra.split_way or nil end
    if not plan and capacity and split_instead() then goto next_attempt end
    if not plan then
      return fail(capacity and need > forced and "oom" or "arg", tostring(off) .. (capacity and string.format(
        " (budget %s: %s of weights, %s reserved for KV cache and scratch, %s of slots)", size.format(capacity),
        size.format(total), size.format(reserve), size.format(slots)) or ""))
    end
    if type(plan) ~= "table" then return fail("arg", "policy " .. pname .. ": plan returned " .. type(plan)) end
    local host_compute = {}
    if type(extra) == "table" and type(extra.host_compute) == "table" then
      for name, on in pairs(extra.host_compute) do if on then host_compute[name] = true end end
    end

    -- the plan must name only real tensors and tiers
    local where = policy.source and policy_file.where(policy) or pname
    for name, tier in pairs(plan) do
      if not by_name[name] then
        return fail("arg", "policy " .. where .. ": unknown tensor '" .. tostring(name) .. "'")
      end
      if not placement_opts.tiers[tier] then
        return fail("arg", "policy " .. where .. ": tensor '" .. name .. "' has tier '" .. tostring(tier)
          .. "' (expected device, pinned, host, mmap or disk)")
      end
    end
    for name in pairs(host_compute) do
      if not by_name[name] then
        return fail("arg", "policy " .. where .. ": host_compute names unknown tensor '" .. tostring(name) .. "'")
      end
    end
    local final = {}
    for _, t in ipairs(tensors) do final[t.name] = plan[t.name] or "device" end

    -- -ot overrides, after the policy, in order
    for _, o in ipairs(overrides) do
      local hit = false
      for _, t in ipairs(tensors) do
        if t.name:find(o[1]) then
          hit = true
          if o[2] == "cpu" then final[t.name] = "host"; host_compute[t.name] = true
          else final[t.name] = o[2]; host_compute[t.name] = nil end
        end
      end
      if not hit and not part then -- a split's part: another part's tensors may be the ones it matches
        return fail("arg", "override '" .. o[1] .. "=" .. o[2] .. "': the pattern matches no tensor")
      end
    end
    for name in pairs(host_compute) do
      if final[name] == "device" then host_compute[name] = nil end
    end
    local packed, perr2 = packed_form.choose(tensors, by_name, type(extra) == "table" and extra.packed, select, final, where)
    if not packed then return fail("arg", perr2) end
    -- a weight the policy weighed packed but placed in a file's tier (mmap, disk) keeps the file's form:
    -- the sizes and the prediction below price that form (they priced the packed bytes before, session 27)
    for _, t in ipairs(tensors) do
      local want = packed[t.name] and true or false
      if want ~= (t.packed and true or false) then
        t.packed = want
        t.bytes = want and tonumber(C.lrun_tensor_packed_bytes(C.lrun_model_find_tensor(model.handle, t.name)))
          or t.plain_bytes
        t.host_plain = nil
        t.codec = want and packed_form.codec(t) or nil
      end
    end

    local off_bytes = off_device_bytes(tensors, final)
    local eo_plan, stream_off = eo, false
    local sized, zerr = placement_size.size_with(model, eo_plan, final, host_compute, packed, pidx)
    if not sized then return nil, zerr end
    local dev_bytes, slot_b, other_b = sized.weights, sized.slots, beyond_reserve(sized, resident)
    -- the host stream's staging (prompt chunks multiply host-computed matrices on the device,
    -- docs/streaming.md) is an option, not a need: a plan that fits only without it keeps the host's products
    if capacity and dev_bytes + slot_b + other_b + reserve > capacity and next(host_compute) then
      local s2 = placement_size.size_with(model, eo_nostream, final, host_compute, packed, pidx)
      if s2 and s2.scratch < sized.scratch then
        -- first, room for it: planned again with the staging counted beside the slots, it costs its bytes of
        -- resident weights (a few % of the decode) where a prompt's products on the host take seconds
        -- (session 27, H100, a 7B bf16 at 4 GiB: prefill 127 tok/s on the host, 2349 with the staging in
        -- session 26); dropped only when even that leaves no room. Again while the plan's slots and scratch
        -- outgrow the room made (a plan with less on the device may stream larger units): the room only
        -- shrinks, so this ends; the last attempts keep the host's products, as does a plan whose slots and
        -- scratch did not grow (planning again would give it again)
        if attempt < 12 and slot_b + other_b > slots and capacity - reserve - (slot_b + other_b) > 0 then
          slots = math.max(slots, slot_b + other_b)
          goto next_attempt
        end
        eo_plan, stream_off, sized = eo_nostream, true, s2
        dev_bytes, slot_b, other_b = sized.weights, sized.slots, beyond_reserve(sized, resident)
      end
    end
    local need_slots = slot_b + other_b
    local fits = not capacity or dev_bytes + need_slots + reserve <= capacity
    if fits or need_slots <= slots then
      if not fits then
        local missing = dev_bytes + need_slots + reserve - capacity
        return fail("oom", string.format("policy %s cannot meet the budget %s: weights on the device %s + "
          .. "slots %s + embedding rows and pool slack %s + KV cache and scratch %s: %s missing", where,
          size.format(capacity), size.format(dev_bytes), size.format(slot_b), size.format(other_b),
          size.format(reserve), size.format(missing)),
          { requested = dev_bytes + need_slots + reserve, free = capacity })
      end
      -- smart on cuda: host experts computed or cached, resident expert blocks traded for slots
      -- (not per part: the engine's expert cache is one setting for every part; a split's host experts are computed)
      local choice = not part and require("lrun.expert_choice").for_plan(model, { policy = policy.name, cpu = cpu, bw = bw,
        room = capacity and capacity - (dev_bytes + need_slots + reserve), tensors = tensors, plan = final,
        host_compute = host_compute, packed = packed, tier = off_tier or "host" }, opts) or nil
      if choice and #choice.trade > 0 then -- traded blocks left the device: the placement's sizes again
        sized, zerr = placement_size.size_with(model, eo_plan, final, host_compute, packed, pidx)
        if not sized then return nil, zerr end
        dev_bytes, slot_b, other_b = sized.weights, sized.slots, beyond_reserve(sized, resident)
        need_slots, off_bytes = slot_b + other_b, off_device_bytes(tensors, final)
      end
      local host_bytes, moved = nil, 0
      host_ctx.host_stream_rows = (stream_off and opts_nostream or opts).host_stream_rows
      if host_budget then
        -- disk regions are aligned, so a move can grow the slots: size again until nothing moves
        for _ = 1, 4 do
          local held, mv = host_mem.fit(host_ctx, final, host_compute, sized, host_budget)
          if not held then return fail("oom", mv, { requested = host_budget, free = host_budget }) end
          host_bytes = held
          if mv == 0 then break end
          moved = moved + mv
          sized, zerr = placement_size.size_with(model, eo_plan, final, host_compute, packed, pidx)
          if not sized then return nil, zerr end
          dev_bytes, slot_b, other_b = sized.weights, sized.slots, beyond_reserve(sized, resident)
          local f, h = host_mem.held(host_ctx, final, host_compute, sized)
          host_bytes = f + h
          local total_dev = dev_bytes + slot_b + other_b + reserve
          if capacity and total_dev > capacity then
            return fail("oom", string.format("policy %s: moving weights to disk for the host budget %s grew the "
              .. "slots to %s: the device budget %s is %s short", where, size.format(host_budget),
              size.format(slot_b), size.format(capacity), size.format(total_dev - capacity)),
              { requested = total_dev, free = capacity })
          end
        end
        if host_bytes > host_budget then
          return fail("oom", string.format("host budget %s cannot be met: %s held after moving %s to disk: %s missing",
            size.format(host_budget), size.format(host_bytes), size.format(moved),
            size.format(host_bytes - host_budget)), { requested = host_bytes, free = host_budget })
        end
      else
        local f, h = host_mem.held(host_ctx, final, host_compute, sized)
        host_bytes = f + h
      end
      local disk_bytes, disk_packed, disk_experts = 0, 0, 0
      for _, t in ipairs(tensors) do
        if final[t.name] == "disk" then
          disk_bytes = disk_bytes + t.bytes
          -- a packed file's weights are read packed from it (fewer bytes from the disk)
          if packed[t.name] then disk_packed = disk_packed + 1 end
          -- cpu: a plain expert stack is read per chosen expert (residency/expert_store.c)
          if cpu and not packed[t.name] and not host_compute[t.name] and t.role:match("_exps$") then
            disk_experts = disk_experts + 1
          end
        end
      end
      if off_bytes < forced then
        return fail("arg", string.format("policy %s: cpu_offload_gb asks for %s off the device, overrides left "
          .. "%s: %s missing", where, size.format(forced), size.format(off_bytes), size.format(forced - off_bytes)))
      end
      local explain = type(extra) == "table" and extra.explain or nil
      local summary = plan_explain.summary(model, { policy = policy.name or pname, tensors = tensors,
        host_compute = host_compute, packed = packed, device_bytes = dev_bytes, off_bytes = off_bytes,
        slot_bytes = slot_b, extra_bytes = other_b, packed_scratch = added_scratch(sized, resident),
        k = k, reserve = reserve,
        cache_implementation = opts.cache_implementation, budget = capacity, device_capped = device_capped,
        host_bytes = host_bytes, host_budget = host_budget, moved = moved, disk_bytes = disk_bytes,
        disk_packed = disk_packed, disk_experts = disk_experts })
      -- the predicted decode speed of the final plan (lrun.predict): smart measured the
      -- bandwidths already; any other policy measures them now (once per device per process,
      -- well under a second), so that every plan says what it should reach before it runs
      -- (#15); opts.predict = false skips it
      local pbw = bw
      if not pbw and opts.predict ~= false then
        pbw = bandwidth.bandwidths(model)
        if pbw and disk_bytes > 0 then pbw = bandwidth.with_disk(model, pbw) end
        if pbw and any_packed then bandwidth.host_packed_rates(model, pbw) end
      end
      -- moe_host = "cache" or smart's choice: the expert cache gets what the placement left (lrun.expert_plan)
      local ec = not part and require("lrun.expert_plan").for_plan(model, { tensors = tensors,
        host_compute = host_compute, packed = packed, cpu = cpu,
        room = capacity and capacity - (dev_bytes + need_slots + reserve), choice = choice }, opts) or nil
      local moe_q = { n_expert_used = n_used > 0 and n_used or nil, expert_cache = ec,
        prefetch_layers = tonumber(opts.prefetch_layers) }
      -- and a prefill chunk's (lrun.predict_plan: the batched product's rate measured once per device)
      local predicted, prefill, ptext
      if pbw and opts.predict ~= false then
        -- a prediction never fails a plan: on an error, decode alone (and the error in the text)
        local ok, d, f, text = pcall(require("lrun.predict_plan").predict, model, tensors, final, host_compute, pbw,
          stream_off and opts_nostream or opts, ec)
        if ok then predicted, prefill, ptext = d, f, text
        else
          predicted = predict.decode(tensors, final, host_compute, pbw, moe_q)
          ptext = predict.text(predicted, pbw) .. "\nno prefill prediction: " .. tostring(d)
        end
      elseif pbw and not part then -- a part's blocks alone predict nothing: lrun.split_plan predicts the whole
        predicted = predict.decode(tensors, final, host_compute, pbw, moe_q)
        ptext = predict.text(predicted, pbw)
      end
      if stream_off then
        summary = summary .. "\nprompts: host-computed matrices multiplied on the host (no room in the budget "
          .. "for the staging that would copy them to the device)"
      end
      if ptext then summary = summary .. "\n" .. ptext end
      if choice then summary = summary .. "\n" .. choice.text end
      if ec then summary = summary .. "\n" .. ec.text end
      local btext = require("lrun.prefill_batch").text(n_batch, batch_why)
      if btext then summary = summary .. "\n" .. btext end
      -- prefill streaming of host experts (AUTO): the planner's threshold from the bandwidths
      local n_expert = cpu and 0 or (model:info().n_expert or 0)
      local stream_tokens, block_tokens
      if n_expert > 0 and pbw then
        stream_tokens, block_tokens = require("lrun.expert_plan").prefill_stream_tokens(tensors, host_compute,
          n_expert, pbw)
      end
      return {
        plan = final, host_compute = host_compute, packed = packed, policy = policy.name or pname, source = policy.source,
        explain = explain and (summary .. "\n" .. explain) or summary, predicted = predicted, prefill = prefill,
        off_bytes = off_bytes, device_bytes = dev_bytes, slot_bytes = slot_b, extra_bytes = other_b,
        reserve_bytes = reserve, prefetch = k, budget = capacity, size = sized,
        host_bytes = host_bytes, host_budget = host_budget, disk_bytes = disk_bytes,
        cache_implementation = opts.cache_implementation or "dynamic", expert_cache = ec, expert_choice = choice,
        prefill_stream_tokens = stream_tokens, prefill_stream_block_tokens = block_tokens,
        n_batch = n_batch > 0 and n_batch or nil,
        -- the rows from which prompt chunks stream host-computed matrices (lrun.host_stream.threshold; nil:
        -- the engine's default), -1 never
        host_stream_rows = stream_off and -1 or (prefill and prefill.host_stream_rows or nil),
      }
    end
    slots = need_slots
    ::next_attempt::
  end
  return fail("oom", "policy " .. pname .. ": no placement fits the budget with its streaming slots")
end

-- ---------------------------------------------------------------- applying

--- Moves every tensor to the tier of result.plan in the form of
-- result.packed (converted on the host on the way) and marks host-compute
-- tensors; the model's engine is remade (weight mode AS_PLACED, k =
-- result.prefetch) on next use. Off-device moves go first, so device
-- bytes are given back before others are taken.
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] table error
function M.apply(model, result)
  local h = model.handle
  if model.owned.engine ~= nil then
    C.lrun_engine_free(model.owned.engine)
    model.owned.engine = nil
  end
  local n = tonumber(C.lrun_model_tensor_count(h))
  local index, to = ffi.new("int64_t[?]", math.max(n, 1)), ffi.new("lrun_tier[?]", math.max(n, 1))
  local now = require("lrun.sys").now
  local t_apply, form_s, form_bytes, n_form = now(), 0, 0, 0 -- the changes of form, timed for the explanation
  for pass = 1, 2 do
    -- one batch per pass: tensors still in the file are read by the streaming loader
    local k = 0
    for i = 0, n - 1 do
      local t = C.lrun_model_tensor(h, i)
      local name = ffi.string(C.lrun_tensor_name(t))
      local tier = result.plan[name] or "device"
      if (tier == "device") == (pass == 2) then
        local want = result.packed and result.packed[name]
        if want ~= nil and tier ~= "mmap" and want ~= (C.lrun_tensor_packed(t) ~= 0) then
          -- a change of form: converted on the host on the way, one tensor at a time
          local t0, plain_b = now(), tonumber(C.lrun_tensor_bytes(t))
          local st = C.lrun_tensor_move_form(t, C.lrun_model_device(h), placement_size.tier_enum[tier], want and 1 or 0)
          if st ~= C.LRUN_OK then return nil, errors.from_status(st, "placing " .. name .. " in " .. tier) end
          form_s, form_bytes, n_form = form_s + now() - t0, form_bytes + plain_b, n_form + 1
        else
          index[k], to[k] = i, placement_size.tier_enum[tier]
          k = k + 1
        end
        C.lrun_tensor_set_host_compute(t, result.host_compute[name] and 1 or 0)
      end
    end
    local st = C.lrun_model_move_tensors(h, k, index, to)
    if st ~= C.LRUN_OK then
      return nil, errors.from_status(st, "placing " .. (pass == 1 and "the off-device" or "the device") .. " weights")
    end
  end
  if n_form > 0 and type(result.explain) == "string" and not result.explain:find("\nplaced: ", 1, true) then
    result.explain = result.explain .. string.format("\nplaced: %d tensors changed form (%s plain) in %.2f s "
      .. "(%.2f GB/s), everything in %.2f s", n_form, size.format(form_bytes), form_s,
      form_s > 0 and form_bytes / form_s / 1e9 or 0, now() - t_apply)
  end
  model.residency = result
  -- the planner's slots for an expert cache the user left to it (moe_host = "cache" without expert_cache_slots)
  if result.expert_cache and model.expert_cache_auto then model.expert_cache_slots = result.expert_cache.slots end
  -- moe_host left to the planner: the cache's slots when smart chose it, else host compute
  if model.moe_host_auto then
    model.expert_cache_slots = result.expert_cache and result.expert_cache.slots or 0
    -- and what the engine's cache does with a miss: smart's choice (hybrid: the host computes it)
    local hybrid = result.expert_cache and result.expert_cache.mode == "hybrid"
    model.expert_cache_mode = hybrid and C.LRUN_EXPERT_CACHE_MODE_HYBRID or C.LRUN_EXPERT_CACHE_MODE_COPY
  end
  return true
end

--- Plans, applies and makes the engine. The plan is sized by the engine's
-- own layout code (lrun_engine_size_placement), so it fits at the first
-- attempt (result.attempts is 1; the CPU specs check it). The retry below is
-- only a safety net, for a hole in the CUDA pool larger than the bound
-- placement reserves for fragmentation: the plan is made again with the
-- reserve raised by what was missing, at least 1/16 of the block that failed.
-- @treturn[1] table the plan result
-- @treturn[2] nil
-- @treturn[2] table error
function M.place(model, opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  local last
  for attempt = 1, 4 do
    local result, err = M.plan(model, o)
    if not result then return nil, err end
    result.attempts = attempt
    local ok, aerr = M.apply(model, result)
    if ok then
      local engine
      engine, aerr = model:engine()
      if engine then return result end
    end
    -- the model now holds this attempt's placement (callers say so: Model:auto_fit)
    if type(aerr) == "table" then aerr.applied = true end
    if aerr.kind ~= "oom" or not result.budget or not aerr.requested then return nil, aerr end
    last = aerr
    o.reserve_extra = (o.reserve_extra or 0)
      + math.max(aerr.requested - (aerr.free or 0), math.ceil(aerr.requested / 16), 4096)
  end
  return fail("oom", "placement: the engine does not fit the budget after raising the reserve ("
    .. tostring(last and last.message) .. ")", { applied = true })
end

return M
