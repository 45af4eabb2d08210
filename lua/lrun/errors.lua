--- lrun.errors — the error values of expected failures.
-- An error is a table {kind=, message=, …} that prints as "kind: message";
-- kind is "oom", "format", "io", "arg", "unsupported", "device",
-- "internal" (the core's statuses) or a Lua-side kind such as "context".
-- OOM errors are {kind="oom", device=, requested=, free=, phase=, message=}:
-- the device's name when the caller knows it, the bytes asked for and free
-- when the core knows them, and what was being allocated ("load",
-- "weights", "scratch", "cache" or "unknown"), so a fallback strategy
-- can choose what to change.
-- @module lrun.errors
local M = {}

local Error = {}
Error.__index = Error
Error.__tostring = function(e) return e.kind .. ": " .. e.message end

--- Makes an error value.
-- @tparam string kind
-- @tparam string message
-- @tparam[opt] table fields extra fields
-- @treturn table
function M.new(kind, message, fields)
  local e = { kind = kind, message = message }
  if fields then for k, v in pairs(fields) do e[k] = v end end
  return setmetatable(e, Error)
end

--- True when v is an lrun error value.
function M.is(v)
  return getmetatable(v) == Error
end

--- The error of a failed core call, from its status and lrun_last_error().
-- @tparam cdata status an lrun_status other than LRUN_OK
-- @tparam[opt] string context prefixed to the message ("loading x.gguf")
-- @tparam[opt] string device the device's name ("cpu", "cuda:0"), for OOM errors
-- @treturn table
function M.from_status(status, context, device)
  local lf = require("lrun.ffi")
  local C, ffi = lf.C, lf.ffi
  local kind = ffi.string(C.lrun_status_name(status))
  local msg = lf.last_error()
  if context then msg = context .. ": " .. msg end
  local fields
  if status == C.LRUN_E_OOM then
    local req, free = tonumber(C.lrun_last_oom_requested()), tonumber(C.lrun_last_oom_free())
    fields = { phase = ffi.string(C.lrun_last_oom_phase()), device = device }
    if req > 0 or free > 0 then fields.requested, fields.free = req, free end
  end
  return M.new(kind, msg, fields)
end

return M
