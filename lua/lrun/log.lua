--- lrun.log — one line per event worth telling the user (a fallback that
-- fired or declined), to stderr by default. Set `sink` to a function(line)
-- to capture the lines, or to false to silence them.
-- @module lrun.log
local M = {}

M.sink = function(line) io.stderr:write(line, "\n") end

--- Writes "lrun: <formatted>" to the sink.
function M.info(fmt, ...)
  if M.sink then M.sink("lrun: " .. string.format(fmt, ...)) end
end

return M
