--- lrun.errors — the error values of expected failures.
-- An error is a table {kind=, message=, …} that prints as "kind: message";
-- kind is "oom", "format", "io", "arg", "unsupported", "device",
-- "internal" (the core's statuses) or a Lua-side kind such as "context".
--
-- An out-of-memory error is what fallback strategies (policies/fallback/,
-- docs/fallbacks.md) read:
--
--     {kind = "oom", message = "...", device = "cpu" | "cuda:0" | nil,
--      requested = bytes, free = bytes, phase = "load" | "weights" | "scratch" | "cache" | "unknown",
--      stage = "load" | "engine" | "prefill" | "decode" | "reorder" | nil}
--
-- `phase` says what was being allocated: the core's own word
-- (lrun_last_oom_phase) when it names one, else what the call site knew.
-- `stage` says where in a run it happened.
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

--- True when v is an lrun out-of-memory error.
function M.is_oom(v)
  return getmetatable(v) == Error and v.kind == "oom"
end

-- The core's phase of the last OOM, when this library has the getter and
-- the failing site named one; nil otherwise.
local function core_phase(C, ffi)
  local ok, fn = pcall(function() return C.lrun_last_oom_phase end)
  if not ok or fn == nil then return nil end
  local p = ffi.string(fn())
  if p == "" or p == "unknown" then return nil end
  return p
end

--- The error of a failed core call, from its status and lrun_last_error().
-- @tparam cdata status an lrun_status other than LRUN_OK
-- @tparam[opt] string context prefixed to the message ("loading x.gguf")
-- @tparam[opt] table|string where for an OOM: {device=, phase=, stage=} as the
--   caller knows them (phase is used when the core does not name one), or
--   just the device's name
-- @treturn table
function M.from_status(status, context, where)
  local lf = require("lrun.ffi")
  local C, ffi = lf.C, lf.ffi
  local kind = ffi.string(C.lrun_status_name(status))
  local msg = lf.last_error()
  if context then msg = context .. ": " .. msg end
  local fields
  if status == C.LRUN_E_OOM then
    if type(where) == "string" then where = { device = where } end
    where = where or {}
    fields = {
      requested = tonumber(C.lrun_last_oom_requested()),
      free = tonumber(C.lrun_last_oom_free()),
      device = where.device,
      phase = core_phase(C, ffi) or where.phase or "unknown",
      stage = where.stage,
    }
  end
  return M.new(kind, msg, fields)
end

return M
