-- hf_oss_load.lua — seconds lrun.load takes on an HF gpt-oss directory with
-- MXFP4 experts (runtime/model/model_hf_gpt_oss.c repacks every expert block
-- into ggml's order at load, on the model's thread pool), warm: one load
-- first puts the files in the page cache, then --runs timed loads, each
-- with --threads; prints one line per thread count with the best and the
-- median, and the repacked bytes (the MXFP4 expert tensors' bytes).
--
--   build/lrun examples/genmodel.lua -q --preset gpt-oss-20b --layers 12 --hf -o /tmp/oss12
--   build/lrun tests/bench/hf_oss_load.lua /tmp/oss12 [--runs 3] [--threads 1,2]
--
-- docs/moe.md ("gpt-oss HF directories") has the figures. lrun.load makes no
-- engine, so this is the config, the safetensors headers, the tokenizer and
-- the repack; the rest of the weights stay in the mapping.
local lrun = require("lrun")
local sys = require("lrun.sys")

local dir, runs, threads = nil, 3, { 1, 2 }
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--runs" then runs = assert(tonumber(arg[i + 1]), "--runs N"); i = i + 2
  elseif a == "--threads" then
    threads = {}
    for t in arg[i + 1]:gmatch("%d+") do threads[#threads + 1] = tonumber(t) end
    i = i + 2
  elseif not dir then dir = a; i = i + 1
  else error("unexpected argument '" .. a .. "'") end
end
assert(dir, "usage: lrun tests/bench/hf_oss_load.lua DIR [--runs N] [--threads 1,2]")

local function load_seconds(n)
  local t0 = sys.now()
  local m = assert(lrun.load(dir, { threads = n }))
  local dt = sys.now() - t0
  local mx = 0
  for _, t in ipairs(m:tensors()) do if t.dtype:lower() == "mxfp4" then mx = mx + t.bytes end end
  m:free()
  collectgarbage()
  return dt, mx
end

load_seconds(threads[#threads]) -- the page cache, warm
for _, n in ipairs(threads) do
  local times, mx = {}, 0
  for _ = 1, runs do
    local dt
    dt, mx = load_seconds(n)
    times[#times + 1] = dt
  end
  table.sort(times)
  print(string.format("threads %d: best %.2f s, median %.2f s over %d loads; %.2f GB of MXFP4 experts repacked "
    .. "(%.2f GB/s at best)", n, times[1], times[math.floor((#times + 1) / 2)],
    #times, mx / 1e9, mx / 1e9 / times[1]))
end
