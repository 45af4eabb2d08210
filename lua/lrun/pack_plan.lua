--- lrun.pack_plan — the planner's side of the automatic packed choice
-- (lrun.pack_choice, docs/packed.md "The automatic choice"): when smart
-- (auto-fit's policy) must move weights off the device, plans the packed
-- options with lrun.residency.plan itself (sized by the engine's layout
-- code, predicted by lrun.predict) and returns the one lrun.pack_choice
-- takes, its explain text saying why.
--
-- Steps, each only when the one before leaves the question open:
--   1. the plain plan (what the planner makes without this module);
--      weighed further only when it is smart's, under a device budget that
--      keeps weights off the device (not cpu_offload_gb: that is the
--      caller's), with a prediction, and bf16/f16 matrices no override places;
--   2. a check on descriptions at the assumed ratio (0.70): when even that
--      does not beat plain, nothing is encoded (cpu: a packed weight decodes
--      into the scratch at the host decoder's speed before every use, which
--      streaming plain from memory beats);
--   3. the packed sizes measured (lrun_tensor_measure_packed: a bf16
--      candidate, PEX2, from one read of its exponents, nothing encoded, so
--      placement's encode is the only one; an f16 one, PEX1, by an encode
--      that placement repeats), then the options planned for real and chosen.
-- @module lrun.pack_plan
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local pack_choice = require("lrun.pack_choice")
local placement_opts = require("lrun.placement_opts")

local M = {}

pcall(ffi.cdef, "long sysconf(int name);")
-- The cores the encode runs on (lrun_tensor_move_form takes a pool of every core): sysconf(_SC_NPROCESSORS_ONLN),
-- 84 in glibc's and musl's Linux headers.
local function cores()
  local ok, n = pcall(function() return tonumber(C.sysconf(84)) end)
  return ok and n and n > 0 and n or 1
end

-- Names of the tensors the caller's overrides (-ot, n_cpu_moe's) match: their form is not weighed.
local function overridden(opts, tensors)
  local out = {}
  local list = placement_opts.overrides(opts, tensors, opts.policy) or {}
  for _, o in ipairs(list) do
    for _, t in ipairs(tensors) do if t.name:find(o[1]) then out[t.name] = true end end
  end
  return out
end

-- Whether the plain plan leaves packing to weigh.
local function weighable(opts, plain)
  -- packed asked (false: never), cpu_offload_gb (bytes off the device the user asked for, vLLM's meaning)
  if opts.packed ~= nil or opts.cpu_offload_gb ~= nil or opts.split_part or opts.predict == false then return false end
  if opts.policy ~= nil and opts.policy ~= "smart" then return false end
  return plain.policy == "smart" and plain.budget ~= nil and plain.off_bytes > 0 and plain.predicted ~= nil
end

-- The evaluation of a plan result as lrun.pack_choice reads it.
local function evaluation(result, tensors, packs)
  local pb, pp = 0, 0
  for _, t in ipairs(tensors) do
    if packs[t.name] then pb, pp = pb + t.packed_bytes, pp + t.plain_bytes end
  end
  return { tok_s = result.predicted.tok_s, prefill_tok_s = result.prefill and result.prefill.tok_s or nil,
    off_bytes = result.off_bytes, device_bytes = result.device_bytes, packed_bytes = pb, packed_plain = pp,
    plan = result.plan, host_compute = result.host_compute, result = result }
end

--- Plans with the automatic packed choice.
-- @tparam table model an lrun.model
-- @tparam table opts lrun.residency.plan's
-- @tparam function plan lrun.residency.plan (called with opts.pack_option set: no recursion)
-- @treturn[1] table the plan result; result.pack_choice = lrun.pack_choice's result when weighed
-- @treturn[2] nil
-- @treturn[2] table error (the plain plan's)
function M.plan(model, opts, plan)
  local function with(packs, label, host_plain)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.pack_option = label
    o.pack_host_plain = host_plain -- lrun.pack_choice's offer: packed weights host-computed plain
    if packs then o.packed = function(t) return packs[t.name] == true or t.packed end end
    return o
  end
  local plain, err = plan(model, with(nil, "plain"))
  if not plain or not weighable(opts, plain) then return plain, err end
  local tensors = model:tensors()
  local exclude = overridden(opts, tensors)
  if not next(pack_choice.packable(tensors, exclude)) then return plain end

  -- 2. at the assumed ratio, on descriptions: worth measuring?
  local base = require("lrun.bandwidth").bandwidths(model)
  if not base then return plain end
  require("lrun.bandwidth").host_packed_rates(model, base) -- the options pack host-computed weights too
  if plain.disk_bytes > 0 then base = require("lrun.bandwidth").with_disk(model, base) end
  -- the rates the plan's own prediction measured (cached), so the check's figures read like the plan's
  local predict_plan = require("lrun.predict_plan")
  local bw = setmetatable({}, { __index = base })
  predict_plan.matmul_rates(model, bw, nil, opts.decode_context)
  local room = plain.budget - plain.reserve_bytes - plain.extra_bytes - plain.slot_bytes
  local k = model:info().n_expert_used or 0
  local q = { n_expert_used = k > 0 and k or nil, prefill = predict_plan.query(model, opts.prefill_tokens) }
  local guess = pack_choice.choose(tensors, pack_choice.describe_evaluator(tensors, room, bw, q),
    { exclude = exclude, threads = cores() })
  if guess.chosen == guess.plain then
    plain.pack_choice = guess
    plain.explain = plain.explain .. "\n" .. guess.text:gsub("^packed: not chosen:",
      string.format("packed: not chosen (at the assumed ratio %.2f, not measured):", pack_choice.assumed_ratio))
    return plain
  end

  -- 3. the sizes measured, the options planned as they would run (both timed for the explanation: on a
  -- 7B at 4 GiB the packed load took 10.6 s to place against plain's 2.0, session 27)
  local now = require("lrun.sys").now
  local t_measure = now()
  local out = ffi.new("size_t[1]")
  for _, t in ipairs(pack_choice.packable(tensors, exclude)) do
    if C.lrun_tensor_measure_packed(C.lrun_model_find_tensor(model.handle, t.name), out) ~= C.LRUN_OK then
      plain.explain = plain.explain .. "\npacked: not weighed: " .. lf.last_error()
      return plain
    end
  end
  tensors = model:tensors()
  for _, t in ipairs(tensors) do
    local h = C.lrun_model_find_tensor(model.handle, t.name)
    t.packed_bytes = tonumber(C.lrun_tensor_packed_bytes(h))
    if t.packed_bytes == 0 then t.packed_bytes = t.plain_bytes end
  end
  local t_plans, n_plans = now(), 0
  local choice = pack_choice.choose(tensors, function(option)
    if option.label == "plain" then return evaluation(plain, tensors, option.packs) end
    n_plans = n_plans + 1
    local r, perr = plan(model, with(option.packs, option.label, option.host_plain))
    if not r then return nil, type(perr) == "table" and perr.message or tostring(perr) end
    if not r.predicted then return nil, "no prediction" end
    return evaluation(r, tensors, option.packs)
  end, { exclude = exclude, threads = cores() })
  local result = choice.chosen and choice.chosen.eval and choice.chosen.eval.result or plain
  result.pack_choice = choice
  choice.measure_s, choice.plans_s, choice.n_plans = t_plans - t_measure, now() - t_plans, n_plans
  result.explain = result.explain .. "\n" .. choice.text .. string.format("\n  (weighed in %.2f s: the packed sizes "
    .. "measured in %.2f s, %d plans in %.2f s)", choice.measure_s + choice.plans_s, choice.measure_s, n_plans,
    choice.plans_s)
  return result
end

return M
