-- gen_hf_gpt_oss_spec: examples/genmodel.lua --hf writes gpt-oss directories
-- (runtime/model/model_gen_hf_gpt_oss.c) that lrun and transformers both read.
-- The preset gpt-oss-tiny (a window of 8 on the even blocks, YaRN factor 32,
-- sinks, biased attention, router and experts) as a GGUF and as a directory
-- of the same seed, with unquantized and MXFP4 experts: lrun's logits from
-- the directory are the GGUF's (bit for bit unquantized; MXFP4 within the
-- q8_0 activations' difference, test_model_gen_hf_gpt_oss.c says why), and
-- transformers' GptOssForCausalLM, loading the same directory
-- (tests/gpt_oss_transformers.py), computes lrun's logits: the reference
-- nobody here wrote. Pending where python3 lacks torch or transformers (CI
-- installs neither; the development machine and the GPU machine have both).
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local json = require("dkjson")

local build = require("lrun.config").build or "build"
-- longer than the window (8): the sliding blocks drop positions
local PROMPT = { 256, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 10, 65, 66 }
local TOL_TRANSFORMERS = 1e-4 -- f32 both; seen ~1e-6 (sums in another order)
local TOL_MXFP4 = 0.05        -- the GGUF's q8_0 activations against the directory's f32 ones

local made = {}
local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  local ok = p:close()
  return ok == true or ok == 0, out
end

-- The GGUF and the directory (2 shards) of gpt-oss-tiny with experts in dtype.
local function gen(experts)
  local base = os.tmpname()
  os.remove(base)
  made[#made + 1] = base
  local args = " -q --preset gpt-oss-tiny --dtype f32 --expert-dtype " .. experts .. " --seed 3"
  local ok, out = sh(build .. "/lrun examples/genmodel.lua" .. args .. " -o '" .. base .. ".gguf' && " .. build
    .. "/lrun examples/genmodel.lua" .. args .. " --hf --shards 2 -o '" .. base .. "'")
  assert.is_true(ok, out)
  return base .. ".gguf", base
end

local function logits(path)
  local m = assert(lrun.load(path, { threads = 1, kv_dtype = "f32" }))
  local l = assert(m:logits(PROMPT))
  m:free()
  return l
end

local function worst(a, b)
  assert.are.equal(#a, #b)
  local w = 0
  for i = 1, #a do w = math.max(w, math.abs(a[i] - b[i])) end
  return w
end

local function argmax(l)
  local best = 1
  for i = 2, #l do if l[i] > l[best] then best = i end end
  return best
end

describe("genmodel's gpt-oss HF directories", function()
  teardown(function()
    for _, p in ipairs(made) do os.execute("rm -rf '" .. p .. "' '" .. p .. ".gguf'") end
  end)

  local dirs = {}
  for _, case in ipairs({ { "f32", 0 }, { "mxfp4", TOL_MXFP4 } }) do
    it(case[1] .. " experts: GptOssForCausalLM's config, and the GGUF's logits", function()
      local gguf, dir = gen(case[1])
      dirs[case[1]] = dir
      local f = assert(io.open(dir .. "/config.json"))
      local cfg = json.decode(f:read("*a"))
      f:close()
      assert.are.same({ "GptOssForCausalLM" }, cfg.architectures)
      assert.are.equal("gpt_oss", cfg.model_type)
      assert.are.equal(8, cfg.sliding_window)
      assert.are.same({ "sliding_attention", "full_attention" }, cfg.layer_types)
      assert.are.equal("yarn", cfg.rope_scaling.rope_type)
      assert.are.equal(8, cfg.rope_scaling.original_max_position_embeddings) -- 256 / 32
      assert.are.equal(case[1] == "mxfp4", cfg.quantization_config ~= nil)
      local w = worst(logits(gguf), logits(dir))
      assert.is_true(w <= case[2], "max |diff| " .. w)
    end)
  end

  it("transformers computes lrun's logits from the same directories", function()
    local have = os.execute("python3 -c 'import torch, transformers' >/dev/null 2>&1")
    if not (have == true or have == 0) then
      pending("python3 with torch and transformers is not available (CI installs neither)")
      return
    end
    for _, experts in ipairs({ "f32", "mxfp4" }) do
      local dir = dirs[experts] or select(2, gen(experts))
      -- stdout alone: transformers draws progress bars on stderr
      local p = io.popen("python3 tests/gpt_oss_transformers.py '" .. dir .. "' '" .. json.encode(PROMPT)
        .. "' 2>'" .. dir .. ".log'")
      local out = p:read("*a")
      p:close()
      local r = json.decode(out)
      local f = io.open(dir .. ".log")
      local log = f and f:read("*a") or ""
      if f then f:close() end
      os.remove(dir .. ".log")
      assert.is_table(r, out .. log)
      assert.are.equal("GptOssForCausalLM", r.class)
      local want, got = r.logits, logits(dir)
      local w = worst(want, got)
      assert.is_true(w <= TOL_TRANSFORMERS, experts .. ": max |diff| against transformers " .. w)
      assert.are.equal(argmax(want), argmax(got))
    end
  end)
end)
