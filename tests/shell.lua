--- tests/shell.lua — running the launcher and other commands from a spec.
local M = {}

--- The launcher that runs the specs: build/lrun, or build-asan/lrun under
-- make asan (lrun.config.build is the launcher's own directory).
M.launcher = require("lrun.config").build .. "/lrun"

--- s quoted for sh.
function M.quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- A new temporary file holding text; its path.
function M.tmpfile(text)
  local p = os.tmpname()
  local f = assert(io.open(p, "w"))
  f:write(text)
  f:close()
  return p
end

--- Runs cmd with sh; stdin from the string input when given.
-- @treturn string stdout and stderr together
-- @treturn number the exit code
function M.run(cmd, input)
  local tmp
  if input then
    tmp = os.tmpname()
    local f = assert(io.open(tmp, "w")); f:write(input); f:close()
    cmd = cmd .. " < " .. M.quote(tmp)
  end
  local p = assert(io.popen(cmd .. " 2>&1; echo \"rc=$?\""))
  local out = p:read("*a")
  p:close()
  if tmp then os.remove(tmp) end
  local body, rc = out:match("^(.-)rc=(%d+)\n$")
  return body, tonumber(rc)
end

return M
