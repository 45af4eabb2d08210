--- tests/placed_bytes.lua — what a placed model should stream per chunk,
-- from its own tensor list and placement: the bytes of off-device matrices
-- (attention, feed-forward, LM head) split into streamed and host-computed,
-- and the bytes of one embedding row when the table is off the device. The
-- residency specs check m:stats() against these on either engine.
local M = {}

--- streamed, host_compute, row (nil when the table is on the device).
function M.of(m)
  local p = m:placement()
  local streamed, host, row = 0, 0, nil
  for _, t in ipairs(m:tensors()) do
    local matrix = t.role:match("^attn_[qkvo]") or t.role:match("^ffn_[gud]") or t.role == "lm_head"
    if matrix and t.tier ~= "device" then
      if p.host_compute[t.name] then host = host + t.bytes else streamed = streamed + t.bytes end
    end
    if t.role == "embedding" and t.tier ~= "device" then row = t.bytes / t.shape[2] end
  end
  return streamed, host, row
end

return M
