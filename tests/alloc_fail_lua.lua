--- alloc_fail_lua.lua — the Lua half of tests/c/test_alloc_fail_lua.c (issue
-- 16): steps an allocation failure through every host allocation of
-- lrun.load, model:generate and model:chat on a generated model. Each run
-- with the Nth allocation failing must return nil and an error with a
-- message (a Lua error thrown out of the call, or an error of kind
-- "internal", is a finding), or, when the library absorbed the failure,
-- the reference tokens; after it, once the collector has run, the library
-- holds no more blocks than before; and a model loaded before still
-- generates the same tokens. Prints TAP and returns the failure count.
local ffi = require("ffi")
ffi.cdef([[
void lrun_test_alloc_arm(long n);
long lrun_test_alloc_calls(void);
long lrun_test_alloc_live(void);
]])
local T = ffi.C
local lrun = require("lrun")
local C = require("lrun.ffi").C

local stride = tonumber(os.getenv("LRUN_ALLOC_STRIDE") or "1") or 1
local verbose = os.getenv("LRUN_ALLOC_VERBOSE") ~= nil
local n_checks, n_failed = 0, 0
local function check(name, cond, why)
  n_checks = n_checks + 1
  if cond then print(string.format("ok %d - %s", n_checks, name))
  else
    n_failed = n_failed + 1
    print(string.format("not ok %d - %s%s", n_checks, name, why and (" (" .. why .. ")") or ""))
  end
end

local function collect()
  collectgarbage("collect")
  collectgarbage("collect") -- finalizers of the first pass free, the second frees what they held
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" or #a ~= #b then return false end
  for i = 1, #a do
    if type(a[i]) == "table" then
      if not same(a[i], b[i]) then return false end
    elseif a[i] ~= b[i] then return false end
  end
  return true
end

-- ---------------------------------------------------------------- the model

local path = os.tmpname() .. ".gguf"
local spec = ffi.new("lrun_model_gen_spec")
spec.n_layer, spec.n_embd, spec.n_head, spec.n_head_kv, spec.n_ff = 2, 64, 4, 2, 96
spec.n_vocab, spec.n_ctx = 320, 128
spec.weight_dtype, spec.embd_dtype = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_F16
spec.rope_freq_base, spec.rms_eps, spec.seed, spec.n_threads = 10000, 1e-5, 16, 1
check("a tiny model is generated", C.lrun_model_generate(path, spec) == C.LRUN_OK)

local LOAD = { device = "cpu", threads = 2, progress = false }
local GEN = { max_new_tokens = 4, eos_token_id = {} } -- greedy, never stopping early
local MESSAGES = { { role = "user", content = "Hi, allocations!" } }

-- ---------------------------------------------------------------- scenarios

-- Each returns a table of token id lists, or nil and the error.
local function generate_and_chat(m)
  local text, ids = m:generate("Hello, allocations!", GEN)
  if not text then return nil, ids end
  local ctext, cids = m:chat(MESSAGES, GEN)
  if not ctext then return nil, cids end
  return { ids, cids }
end

local function load_generate_chat()
  local m, err = lrun.load(path, LOAD)
  if not m then return nil, err end
  local got, gerr = generate_and_chat(m)
  if got then m:free() end -- a failed run leaves the model to the collector: its finalizer must free it all
  return got, gerr
end

local loaded -- the model loaded before, for the other scenarios
local function on_loaded_model()
  loaded:release_engine() -- the engine is made again inside the run
  return generate_and_chat(loaded)
end

-- generate with other options on the loaded model: other caches, beams
local function generating(extra)
  local o = {}
  for k, v in pairs(GEN) do o[k] = v end
  for k, v in pairs(extra) do o[k] = v end
  return function()
    loaded:release_engine()
    local text, ids = loaded:generate("Hello, allocations!", o)
    if not text then return nil, ids end
    return { ids }
  end
end

-- ---------------------------------------------------------------- stepping

-- What one run gave: "error" (nil, err with a message), "ok" (results) or a
-- finding ("threw", "internal", "silent"), and the message or results.
local function outcome(ok, a, b)
  if not ok then return "threw", tostring(a) end
  if a ~= nil then return "ok", a end
  local msg = type(b) == "table" and b.message or b
  if type(msg) ~= "string" or msg == "" then return "silent", "nil without a message (" .. tostring(b) .. ")" end
  if type(b) == "table" and b.kind == "internal" or msg:find("internal", 1, true) then return "internal", tostring(b) end
  return "error", tostring(b)
end

-- Steps the failure through every allocation of run(); after each, check()
-- (when given) must give want again.
local function step_through(label, run, after)
  collect()
  T.lrun_test_alloc_arm(0)
  local want = run()
  local total = tonumber(T.lrun_test_alloc_calls())
  check(label .. ": the reference run succeeds", want ~= nil)
  if not want then return end
  local counts = { error = 0, ok = 0, bad = 0, leaked = 0, unusable = 0, tried = 0 }
  local first
  for k = 1, total, stride do
    if loaded then loaded:release_engine() end -- measured without the kept engine, before and after
    collect()
    local before = tonumber(T.lrun_test_alloc_live())
    T.lrun_test_alloc_arm(k)
    local kind, got = outcome(pcall(run))
    T.lrun_test_alloc_arm(0)
    if loaded then loaded:release_engine() end
    collect()
    local leaked = tonumber(T.lrun_test_alloc_live()) - before
    counts.tried = counts.tried + 1
    if verbose then print(string.format("# %s, allocation %d: %s %s", label, k, kind,
      kind == "ok" and "" or tostring(got))) end
    local why
    if kind == "error" then counts.error = counts.error + 1
    elseif kind == "ok" then
      counts.ok = counts.ok + 1
      if not same(got, want) then why = "ok but other tokens" end
    else why = kind .. ": " .. got end
    if why then counts.bad = counts.bad + 1 end
    if leaked ~= 0 then
      counts.leaked = counts.leaked + 1
      why = why or string.format("%d blocks leaked (%s)", leaked, tostring(got))
    end
    if after and kind ~= "ok" then
      local again = after()
      if not same(again, want) then
        counts.unusable = counts.unusable + 1
        why = why or "the model then gave other tokens"
      end
    end
    if why and not first then first = string.format("allocation %d: %s", k, why) end
  end
  print(string.format("# %s: %d allocations, %d tried (stride %d); %d failed with an error, %d absorbed, "
    .. "%d findings, %d leaking, %d leaving the model unusable%s", label, total, counts.tried, stride,
    counts.error, counts.ok, counts.bad, counts.leaked, counts.unusable, first and ("; first: " .. first) or ""))
  check(label .. ": each failure is nil, err (no Lua error, no 'internal') or the same tokens", counts.bad == 0, first)
  check(label .. ": no failure leaks a block", counts.leaked == 0, first)
  if after then check(label .. ": the loaded model then generates the same tokens", counts.unusable == 0, first) end
end

step_through("lrun.load, generate, chat", load_generate_chat)
loaded = lrun.load(path, LOAD)
check("the model loads", loaded ~= nil)
if loaded then
  step_through("generate and chat on a loaded model", on_loaded_model, on_loaded_model)
  for _, impl in ipairs({ "static", "offloaded", "quantized" }) do
    local run = generating({ cache_implementation = impl })
    step_through("generate on a loaded model, " .. impl .. " cache", run, run)
  end
  local beams = generating({ num_beams = 2 })
  step_through("beam search (2 beams) on a loaded model", beams, beams)
  loaded:free()
end
os.remove(path)
print("1.." .. n_checks)
return n_failed
