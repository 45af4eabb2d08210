--- tests/gpu_spec_common.lua — what the engine-level GPU specs share
-- (arch_gpu_spec, moe_gpu_spec, moe_exact_gpu_spec, moe_stream_gpu_spec):
-- the device they run on, the prompt and tolerances, one greedy run of a
-- model, an environment switch held for one call, and the temporary files
-- of tests/arch_models.lua's generated models.
--
-- LRUN_GPU_SPEC_DEVICE names the device (default cuda:0); "cpu" is a dry
-- run of a spec on the CPU engine where no GPU is. A spec stays pending
-- where has_gpu is false (busted's pending is the spec file's, not a
-- module's, so each spec says it):
--
--     local gpu = require("tests.gpu_spec_common")
--     describe("...", function()
--       if not gpu.has_gpu then
--         pending("no GPU visible")
--         return
--       end
--       local files = gpu.temp_files()
--       teardown(function() files:remove() end)
--       ...
local compare = require("tests.compare")
local lf = require("lrun.ffi")
local lrun = require("lrun")
local arch_models = require("tests.arch_models")
local ffi = require("ffi")
pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);")

local M = {}

M.DEVICE = os.getenv("LRUN_GPU_SPEC_DEVICE") or "cuda:0"
M.has_gpu = M.DEVICE == "cpu" or lf.C.lrun_cuda_device_count() > 0
M.ON_GPU = M.DEVICE ~= "cpu" -- false on the dry run: CUDA-only counters are not checked there

-- 18 tokens: longer than the sliding-window models' window (8); prefill takes
-- cuBLAS for the experts most tokens chose, the GEMV for the others
M.PROMPT = { 257, 84, 104, 101, 32, 99, 97, 112, 105, 116, 97, 108, 300, 42, 7, 260, 99, 12 }
M.N_NEW = 8 -- greedy tokens after the prompt
-- the fast path's relative tolerance to the CPU per weight dtype (test_engine_gpu's): f32 prefill
-- through cuBLAS with f16 activations; q8_0 with the CPU's 8-bit activations
M.TOL = { f32 = 1e-2, q8_0 = 5e-2 }

--- The fast path's tolerance for tests/arch_models.lua's entry e: its own
-- (gpt-oss: the CPU multiplies MXFP4 experts with 8-bit activations, as
-- llama.cpp does, the GPU with f32 ones) or its dtype's.
function M.tol(e) return e.tol or M.TOL[e.dtype] end
-- the load options every run starts from
M.LOAD = { progress = false, n_ctx = 256, threads = 2 }

local function pack(...) return { n = select("#", ...), ... } end

--- Loads path with opts over M.LOAD, generates n_new (default M.N_NEW) greedy
-- tokens after prompt (default M.PROMPT), then takes the prompt's logits.
-- @tparam[opt] function inspect called with the model before it is freed; its (up to two) results follow
-- @treturn {int,...} the prompt's and the new tokens' ids
-- @treturn {number,...} the prompt's logits
function M.run(path, opts, prompt, inspect, n_new)
  prompt = prompt or M.PROMPT
  local m = assert(lrun.load(path, compare.with(M.LOAD, opts)))
  local _, ids = assert(m:generate(prompt, { max_new_tokens = n_new or M.N_NEW, do_sample = false,
    eos_token_id = {} }))
  local logits = assert(m:logits(prompt))
  local a, b
  if inspect then a, b = inspect(m) end
  m:free()
  return ids, logits, a, b
end

--- fn(...) with the environment variable name set to value for this call
-- only (nil: left unset); name is unset after it, whatever it did, so other
-- cases see the default. Raises fn's error; returns its results.
function M.with_env(name, value, fn, ...)
  if value ~= nil then ffi.C.setenv(name, tostring(value), 1) end
  local r = pack(pcall(fn, ...))
  ffi.C.unsetenv(name)
  assert(r[1], r[2])
  return unpack(r, 2, r.n)
end

--- The temporary files of a spec's generated models: files:model(e) writes
-- tests/arch_models.lua's entry e to a fresh one and returns its path;
-- files:remove() removes them all (a describe's teardown).
function M.temp_files()
  local files = { paths = {} }
  function files:model(e)
    local path = os.tmpname()
    self.paths[#self.paths + 1] = path
    arch_models.generate(e, path)
    return path
  end
  function files:remove()
    for _, p in ipairs(self.paths) do os.remove(p) end
  end
  return files
end

--- tests/arch_models.lua's mixtures of experts, in order.
-- @tparam[opt] function keep a further test over an entry
function M.moe_models(keep)
  local out = {}
  for _, e in ipairs(arch_models.models) do
    if (e.n_expert or 0) > 0 and (not keep or keep(e)) then
      out[#out + 1] = e
    end
  end
  return out
end

return M
