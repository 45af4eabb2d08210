--- One lrun measurement for tests/bench/run.sh: prefill and decode tokens/s.
-- Usage: build/lrun tests/bench/lrun_bench.lua MODEL THREADS IDS_FILE N_GEN
-- Loads the model through the Lua API, reads the prompt ids (the same ids
-- llama.cpp was fed), runs a short warm-up, then one greedy generation of
-- N_GEN tokens with no end-of-generation ids, and prints one line of JSON:
--   prefill_tps = n_prompt / (time from the call to the first token),
--   decode_tps  = N_GEN / (time from the first token to the last).
-- That is llama.cpp's server accounting, copied so the ratio is fair: its
-- prompt time ends when the first token has been sampled, its generation time
-- runs from there to the last token (N_GEN - 1 forward steps) and is divided
-- by N_GEN. Token times come from the on_token callback; if generate never
-- calls it, a prefill-only run (m:logits) is timed separately and the decode
-- time is the rest of the call.
local ffi = require("ffi")
local lrun = require("lrun")

pcall(ffi.cdef, [[
typedef struct { long sec; long nsec; } lrun_bench_timespec;
int clock_gettime(int clk, lrun_bench_timespec *ts);
]])
local CLOCK_MONOTONIC = 1
local ts = ffi.new("lrun_bench_timespec")
local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end

local model_path, threads, ids_file, n_gen = arg[1], tonumber(arg[2]), arg[3], tonumber(arg[4])
if not (model_path and threads and ids_file and n_gen) then
  io.stderr:write("usage: lrun tests/bench/lrun_bench.lua MODEL THREADS IDS_FILE N_GEN\n")
  os.exit(2)
end

local f = assert(io.open(ids_file, "r"))
local ids = {}
for w in f:read("*a"):gmatch("%d+") do ids[#ids + 1] = tonumber(w) end
f:close()

local m, err = lrun.load(model_path, {threads = threads})
if not m then
  io.stderr:write("lrun.load: " .. tostring(err) .. "\n")
  os.exit(1)
end

local function copy(t, n)
  local out = {}
  for i = 1, (n or #t) do out[i] = t[i] end
  return out
end

local function run(prompt, n)
  local t_first, t_last, n_seen = nil, nil, 0
  local t0 = now()
  local text, out = m:generate(prompt, {max_new_tokens = n, do_sample = false, eos_token_id = {},
                                        on_token = function()
                                          n_seen = n_seen + 1
                                          t_last = now()
                                          if n_seen == 1 then t_first = t_last end
                                        end})
  local t1 = now()
  if not text then error("generate: " .. tostring(out), 0) end
  if n_seen ~= n then t_last = t1 end
  return t0, t_first, t_last, n_seen
end

run(copy(ids, 16), 8) -- warm-up: page in the weights, grow the caches

local t0, t_first, t1, n_seen = run(copy(ids), n_gen)
if not t_first then
  -- No callback: time the prefill alone.
  local p0 = now()
  m:logits(copy(ids))
  t_first = t0 + (now() - p0)
end
local prefill_s = t_first - t0
local decode_s = t1 - t_first
io.write(string.format('{"engine": "lrun", "n_prompt": %d, "n_gen": %d, "prefill_tps": %.6f, '
  .. '"decode_tps": %.6f, "on_token_calls": %d}\n', #ids, n_gen, #ids / prefill_s,
  n_gen / decode_s, n_seen))
if m.free then m:free() end
