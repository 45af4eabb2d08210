-- placement.lua — experiment with weight placement: try policies and
-- budgets on a model, see where every byte went, what it cost, and check
-- that the tokens do not change.
--
--   lrun examples/placement.lua -m model.gguf
--   lrun examples/placement.lua -m model.gguf --gpu-budget 80M --policy smart
--   lrun examples/placement.lua -m model.gguf --policy my_policy.lua -ot "ffn_down=cpu"
--
-- With no --policy it runs a tour: resident, then conservative, aggressive
-- (half the weights off), layers (-ngl half), smart (half off), printing
-- m:placement() and m:stats() for each, and the decode speed.
local lrun = require("lrun")
local cli = require("lrun.cli")

local spec = cli.model_spec()
table.insert(spec, { "-p", "--prompt", key = "prompt", default = "The capital of France is", help = "prompt" })
local opts = cli.parse_or_exit(arg, spec, "placement.lua -m FILE [--policy NAME|FILE] [--gpu-budget SIZE] [-ot P=T]")
if not opts.model then
  io.stderr:write("placement.lua: no model: pass -m FILE or set LRUN_MODEL\n")
  os.exit(1)
end
local n = math.min(opts.n_predict, 16)

local function try(label, load_opts)
  load_opts.progress = false
  load_opts.threads = opts.threads
  local m, err = lrun.load(opts.model, load_opts)
  if not m then
    print(string.format("== %s: %s\n", label, tostring(err)))
    return nil
  end
  local text, ids, st = m:generate(opts.prompt, { max_new_tokens = n })
  print("== " .. label)
  print(m:placement())
  print(m:stats())
  print(string.format("%.1f tokens/s: %q\n", st.n_generated / math.max(st.generate_seconds, 1e-9), text))
  m:free()
  return ids
end

local function same(a, b)
  if not a or not b or #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local ref = try("resident", {})
local custom = cli.load_options(opts)
if custom.policy or custom.smart_offload or custom.cpu_offload_gb or custom.overrides then
  local ids = try("your placement", custom)
  print("same tokens as resident: " .. tostring(same(ref, ids)))
  return
end

local half = (function()
  local m = assert(lrun.load(opts.model, { progress = false }))
  local gb = m:info().weight_bytes / 2 / 2 ^ 30
  local layers = math.floor(m:info().n_layer / 2)
  m:free()
  return { gb = gb, layers = layers }
end)()
for _, c in ipairs({
  { "conservative", { policy = "conservative" } },
  { "aggressive, half off", { policy = "aggressive", cpu_offload_gb = half.gb } },
  { "layers, -ngl " .. half.layers, { policy = "layers", n_gpu_layers = half.layers } },
  { "smart, half off", { smart_offload = true, cpu_offload_gb = half.gb } },
}) do
  local ids = try(c[1], c[2])
  print("same tokens as resident: " .. tostring(same(ref, ids)) .. "\n")
end
