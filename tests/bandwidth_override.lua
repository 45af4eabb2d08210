--- tests/bandwidth_override.lua — a bandwidths function for specs that need
-- the planner to see other rates: the measured ones (lrun.bandwidth's
-- bandwidths, as the planner calls it) with the given fields replaced.
--   bandwidth.bandwidths = require("tests.bandwidth_override").replace(measured, { h2d_pinned = 1e8 })
local M = {}

function M.replace(measured, fields)
  return function(model)
    local bw = assert(measured(model))
    local o = {}
    for k, v in pairs(bw) do o[k] = v end
    for k, v in pairs(fields) do o[k] = v end
    return o
  end
end

return M
