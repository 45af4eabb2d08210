--- lrun.placement_opts — the placement options as lrun.load and the CLI
-- give them: whether a placement is asked for, and "-ot" overrides.
-- @module lrun.placement_opts
local policy_file = require("lrun.policy_file")

local M = {}

M.tiers = { device = true, pinned = true, host = true, mmap = true, disk = true }
local tiers = M.tiers


--- Parses "-ot" text "PATTERN=TIER" (TIER device, pinned, host, mmap, disk, or
-- cpu = host with host compute, llama.cpp's buffer name).
-- @treturn[1] table {pattern, tier}
-- @treturn[2] nil
-- @treturn[2] string
function M.parse_override(text)
  if type(text) ~= "string" then return nil, "override: expected PATTERN=TIER, got a " .. type(text) end
  local pattern, tier = text:match("^(.+)=([%w_]+)$")
  if not pattern then return nil, "override '" .. text .. "': expected PATTERN=TIER" end
  tier = tier:lower()
  if not tiers[tier] and tier ~= "cpu" then
    return nil, "override '" .. text .. "': tier must be device, pinned, host, mmap, disk or cpu"
  end
  return { pattern, tier }
end

--- True when opts ask for a placement (any of the placement options).
function M.wanted(opts)
  local cfg = require("lrun.config")
  return opts.policy ~= nil or opts.smart_offload or opts.cpu_offload_gb ~= nil or opts.overrides ~= nil
    or opts.n_gpu_layers ~= nil or opts.n_cpu_moe ~= nil or opts.prefetch_layers ~= nil or opts.host_budget ~= nil or opts.packed ~= nil
    or (cfg.policies ~= nil and #cfg.policies > 0)
end

--- True when opts ask for a placement by something other than `packed`
-- (which chooses the form only).
function M.wanted_besides_packed(opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.packed = nil
  return M.wanted(o)
end

--- The "-ot" overrides a plan applies after its policy, in order: n_cpu_moe's
-- expert blocks when another policy plans (llama.cpp writes --n-cpu-moe as
-- -ot patterns too), then opts.overrides ({pattern, tier} or "pattern=tier"),
-- which win.
-- @tparam table opts the placement options
-- @tparam table tensors the model's tensor descriptions
-- @tparam string|table|nil spec the policy asked for
-- @treturn[1] table {{pattern, tier}, ...}
-- @treturn[2] nil
-- @treturn[2] string what is wrong
function M.overrides(opts, tensors, spec)
  local overrides = {}
  if opts.n_cpu_moe and spec ~= "n_cpu_moe" then
    for _, t in ipairs(tensors) do
      if policy_file.module("predicates").is_expert(t) and (t.layer or -1) >= 0 and t.layer < opts.n_cpu_moe then
        overrides[#overrides + 1] = { "^" .. t.name:gsub("%p", "%%%0") .. "$", "cpu" }
      end
    end
  end
  for i, o in ipairs(opts.overrides or {}) do
    if type(o) == "string" then
      local parsed, err = M.parse_override(o)
      if not parsed then return nil, err end
      o = parsed
    end
    if type(o) ~= "table" or type(o[1]) ~= "string" or type(o[2]) ~= "string" then
      return nil, "override #" .. i .. ": expected {pattern, tier} or \"pattern=tier\""
    end
    local tier = o[2]:lower()
    if not tiers[tier] and tier ~= "cpu" then
      return nil, "override '" .. o[1] .. "=" .. o[2] .. "': tier must be device, pinned, host, mmap, disk or cpu"
    end
    overrides[#overrides + 1] = { o[1], tier }
  end
  return overrides
end

return M
