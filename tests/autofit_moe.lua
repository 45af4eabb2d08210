--- tests/autofit_moe.lua — what autofit_moe_spec (cpu) and autofit_gpu_spec
-- (cuda) share: a mixture of experts generated for auto-fit under tight
-- budgets, and the sweep of budgets (docs/residency.md "Fragmentation").
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local lrun = require("lrun")
local residency = require("lrun.residency")
local shell = require("tests.shell")

local M = {}

M.n_ctx = 96

local function peak(m) return tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle))) end

--- The shapes: tiny-moe widened (4 blocks of 16 experts, top-4, q8_0: ~13 MB of
-- weights), and a larger one for cuda, whose budgets stay above one pool arena (16 MiB).
M.small = "--layers 4 --embd 256 --ff 256 --experts 16 --experts-used 4 --vocab 1024"
M.large = "--layers 4 --embd 512 --ff 512 --experts 32 --experts-used 4 --vocab 4096"

--- Writes the model of shape (M.small by default) to path.
function M.generate(path, shape)
  local out, code = shell.run(shell.launcher .. " examples/genmodel.lua -o " .. shell.quote(path)
    .. " --preset tiny-moe --dtype q8_0 " .. (shape or M.small))
  assert(code == 0, out)
end

--- What engine init takes with every weight on device (residency.fits), and the experts' bytes.
function M.need(path, device)
  local probe = assert(lrun.load(path, { device = device, progress = false, threads = 1, gpu_budget = "1G",
    n_ctx = M.n_ctx }))
  local fits, need = residency.fits(probe, { weights_resident = true, threads = 1, n_ctx = M.n_ctx })
  assert(fits, "the model does not fit 1 GiB")
  local experts = 0
  for _, t in ipairs(probe:tensors()) do
    if t.role:match("_exps$") then experts = experts + t.bytes end
  end
  probe:free()
  return need, experts
end

--- Loads the model at budgets from a fifth of the experts short of resident
-- down to well below its KV cache and scratch; where auto-fit places it, the
-- engine must come at the first attempt with the plan's scratch and slots,
-- stay under the budget while the cache grows to n_ctx, and leave room for
-- a static cache's engine with 512-token steps. Returns accepted, refused
-- and the tightest accepted budget.
function M.sweep(path, device, need, experts)
  local accepted, refused, tightest = 0, 0, nil
  local log = require("lrun.log")
  local sink = log.sink
  log.sink = function() end
  for i = 0, 21 do
    local budget = math.floor(need - experts / 5 - need * 0.035 * i)
    local m = assert(lrun.load(path, { device = device, progress = false, threads = 1, gpu_budget = budget,
      n_ctx = M.n_ctx }))
    local result, err = m:auto_fit({ weights_resident = true })
    if type(result) == "table" then
      accepted, tightest = accepted + 1, budget
      assert(result.attempts == 1, "budget " .. budget .. ": the plan's engine needed a retry")
      local st = ffi.new("lrun_engine_stats")
      C.lrun_engine_get_stats(assert(m:engine()), st)
      assert(result.size.scratch == tonumber(st.scratch_bytes), string.format("budget %d: scratch %d planned, %d "
        .. "made", budget, result.size.scratch, tonumber(st.scratch_bytes)))
      assert(result.size.slots == tonumber(st.slot_bytes), "budget " .. budget .. ": slots differ from the plan")
      local prompt = {}
      for k = 1, M.n_ctx - 8 do prompt[k] = 3 + (k * 37) % 1000 end
      local _, ids = assert(m:generate(prompt, { max_new_tokens = 8, eos_token_id = {} }))
      assert(#ids == 8)
      assert(peak(m) <= budget, string.format("budget %d: peak %d over it", budget, peak(m)))
      assert(m:engine({ cache_implementation = "static", n_batch = 512 }))
      assert(peak(m) <= budget, string.format("budget %d: the static engine's peak %d over it", budget, peak(m)))
    else
      assert(result == true, tostring(err and err.message or err)) -- no placement: the model is left as it was
      refused = refused + 1
    end
    m:free()
  end
  log.sink = sink
  return accepted, refused, tightest
end

return M
