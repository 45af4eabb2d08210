-- keep_attention.lua: MLPs off the device from the last block down,
-- down-projections computed on the host; attention stays resident.
return {
  name = "keep_attention",
  plan = function(tensors, budget)
    local cap = budget.max_bytes or math.huge
    local plan, off, hc = {}, 0, {}
    table.sort(tensors, function(a, b) return a.layer > b.layer end)
    for _, t in ipairs(tensors) do
      if is_mlp(t) and off + t.bytes <= cap then
        plan[t.name], off = "pinned", off + t.bytes
        if t.role == "ffn_down" then plan[t.name], hc[t.name] = "host", true end
      end
    end
    return plan, off, {host_compute = hc, explain = "MLPs off, attention kept"}
  end,
}
