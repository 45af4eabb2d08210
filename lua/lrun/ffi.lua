--- lrun.ffi — the C library and its declarations.
-- The cdef text is generated from runtime/lrun.h at build time
-- (build/lua/lrun/cdef.lua), never written by hand.
-- @module lrun.ffi
local ffi = require("ffi")

local M = {}

-- The checkout's root: this file is <root>/lua/lrun/ffi.lua.
local function root_dir()
  local src = debug.getinfo(1, "S").source:sub(2)
  local dir = src:match("^(.*)/lua/lrun/ffi%.lua$")
  if dir == nil or dir == "" then return "." end
  return dir
end

M.root = root_dir()

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

local lib_path = os.getenv("LRUN_LIB") or (M.root .. "/build/liblrun.so")
local ok, lib = pcall(ffi.load, lib_path)
if not ok then error("lrun: cannot load " .. lib_path .. ": " .. tostring(lib) .. " (run make)", 0) end

M.C = lib
M.ffi = ffi

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
