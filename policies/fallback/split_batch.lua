--- split_batch — on OOM, run fewer sequences at once: a batch of prompts
-- (or of samples) runs in chunks of whole prompts, half as many each time
-- (max_batch_rows). Exact: each prompt is its own sequence whether it runs
-- with others or alone; a sampled row keeps its seed (seed + row).
-- Declines when the run is one prompt (its beams are coupled at every step
-- and cannot run apart) or already runs one prompt at a time.
local resilient = require("lrun.resilient")

local M = { name = "split_batch", exact = true }

function M.apply(err, config)
  local rows = config.rows
  if not rows then return nil, "the run's size is unknown (config.rows)" end
  local per = config.num_beams and config.num_beams > 1 and config.num_beams or (config.num_return_sequences or 1)
  if rows <= per then
    return nil, per > 1 and ("one prompt's " .. per .. " sequences step together; they cannot run apart")
      or "the run is a single sequence"
  end
  local cur = math.min(config.max_batch_rows or rows, rows)
  local prompts = math.floor(cur / per)
  if prompts <= 1 then return nil, "already one prompt at a time" end
  local new = math.floor(prompts / 2) * per
  return resilient.with(config, { max_batch_rows = new }),
    string.format("max_batch_rows %d -> %d (%d of %d sequences at a time)", cur, new, new, rows)
end

return M
