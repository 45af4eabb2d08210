--- lrun.ffi — the C library and its declarations.
-- The cdef text is generated from runtime/lrun.h at build time
-- (build/lua/lrun/cdef.lua), never written by hand. The library path comes
-- from lrun.config (set by the launcher; LRUN_LIB overrides it).
-- @module lrun.ffi
local ffi = require("ffi")
local config = require("lrun.config")

local M = {}

M.root = config.root

local function read_cdef()
  local ok, text = pcall(require, "lrun.cdef")
  if ok then return text end
  local f = io.open(M.root .. "/build/lua/lrun/cdef.lua", "r")
  if not f then error("lrun: build/lua/lrun/cdef.lua is missing; run make", 0) end
  local chunk = assert(loadstring(f:read("*a"), "=cdef.lua"))
  f:close()
  return chunk()
end

ffi.cdef(read_cdef())

-- config.lib = false: the library is linked into the running program and
-- its symbols are global (tests/c/test_alloc_fail_lua.c).
local lib_path, ok, lib
if config.lib == false then
  lib_path, ok, lib = "(this program)", true, ffi.C
else
  lib_path = os.getenv("LRUN_LIB") or config.lib or (M.root .. "/build/liblrun.so")
  ok, lib = pcall(ffi.load, lib_path)
end
if not ok then error("lrun: cannot load " .. lib_path .. ": " .. tostring(lib) .. " (run make)", 0) end

M.C = lib
M.ffi = ffi
M.lib_path = lib_path

--- The last error of the core as a Lua string.
function M.last_error()
  return ffi.string(lib.lrun_last_error())
end

--- Turns a failing status into (nil, message); a success into true.
-- @treturn boolean|nil
-- @treturn string|nil "<status>: <message>"
function M.check(status)
  if status == lib.LRUN_OK then return true end
  return nil, ffi.string(lib.lrun_status_name(status)) .. ": " .. M.last_error()
end

return M
