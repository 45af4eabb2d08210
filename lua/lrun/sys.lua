--- lrun.sys — the few libc calls the Lua side needs: isatty, a monotonic
-- clock, random seeds. Declared here once, since ffi.cdef refuses a second
-- declaration of the same name.
-- @module lrun.sys
local ffi = require("ffi")

local M = {}

-- pcall: another module (or a user script) may have declared them first.
pcall(ffi.cdef, "int isatty(int fd);")
pcall(ffi.cdef, "typedef struct lrun_sys_timespec { long tv_sec; long tv_nsec; } lrun_sys_timespec;")
pcall(ffi.cdef, "int clock_gettime(int clk_id, lrun_sys_timespec *tp);")

--- True when file descriptor fd is a terminal.
-- @tparam int fd 0 stdin, 1 stdout, 2 stderr
function M.isatty(fd)
  local ok, r = pcall(function() return ffi.C.isatty(fd) end)
  return ok and r == 1
end

local ts = ffi.new("lrun_sys_timespec")
local CLOCK_MONOTONIC = 1

--- Seconds on a monotonic clock (for rates, not dates).
function M.now()
  local ok = pcall(function() return ffi.C.clock_gettime(CLOCK_MONOTONIC, ts) end)
  if not ok then return os.clock() end
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

--- A fresh random 53-bit seed from /dev/urandom (the clock when it is missing).
function M.random_seed()
  local f = io.open("/dev/urandom", "rb")
  if f then
    local b = f:read(7)
    f:close()
    if b and #b == 7 then
      local n = 0
      for i = 1, 7 do n = n * 256 + b:byte(i) end
      return n % 2^53
    end
  end
  return (os.time() * 1000003 + math.floor(M.now() * 1e6)) % 2^53
end

return M
