-- hf_gpt_oss_spec: what a gpt-oss HF directory must be (runtime/model/model_hf_gpt_oss.c,
-- model_hf.c), on copies of the golden's tiny models (tests/golden/hf/gpt_oss and
-- gpt_oss-mxfp4, written by make_hf_golden.py) with one thing broken each: every
-- refusal names the file, the tensor or key, and the rule. The numbers themselves
-- are hf_golden_spec's (against transformers).
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")

local PLAIN, MXFP4 = "tests/golden/hf/gpt_oss", "tests/golden/hf/gpt_oss-mxfp4"
local tmp = {}

local function read(path)
  local f = assert(io.open(path, "rb"))
  local t = f:read("*a")
  f:close()
  return t
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- A copy of dir in a fresh temporary directory.
local function copy(dir)
  local base = os.tmpname()
  os.remove(base)
  os.execute("mkdir -p " .. base)
  for _, name in ipairs({ "config.json", "generation_config.json", "model.safetensors" }) do
    write(base .. "/" .. name, read(dir .. "/" .. name))
  end
  tmp[#tmp + 1] = base
  return base
end

-- Replaces the plain text old by new (same length: the safetensors header's size stays) in dir's file.
local function patch(dir, name, old, new)
  local path = dir .. "/" .. name
  local text = read(path)
  local at = text:find(old, 1, true)
  assert(at, name .. " has no " .. old)
  write(path, text:sub(1, at - 1) .. new .. text:sub(at + #old))
end

local function refused(dir, ...)
  local m, err = lrun.load(dir, { threads = 1 })
  assert.is_nil(m)
  local msg = type(err) == "table" and err.message or tostring(err)
  for _, part in ipairs({ ... }) do assert.is_truthy(msg:find(part, 1, true), msg) end
  return msg
end

describe("gpt-oss HF directories", function()
  local have = io.open(MXFP4 .. "/model.safetensors", "rb")
  if have then have:close() end
  if not have then
    it("(golden directories absent)", function()
      pending(MXFP4 .. " is absent: run tests/golden/make_hf_golden.py (torch, transformers)")
    end)
    return
  end

  teardown(function()
    for _, d in ipairs(tmp) do os.execute("rm -rf " .. d) end
  end)

  it("loads both layouts: the MXFP4 experts stay MXFP4, the unquantized ones keep their dtype", function()
    local q = assert(lrun.load(MXFP4, { threads = 1 }))
    local p = assert(lrun.load(PLAIN, { threads = 1 }))
    local function dtype_of(m, name)
      for _, t in ipairs(m:tensors()) do if t.name == name then return t.dtype end end
    end
    for _, name in ipairs({ "blk.0.ffn_gate_exps.weight", "blk.3.ffn_up_exps.weight", "blk.1.ffn_down_exps.weight" }) do
      assert.are.equal("mxfp4", dtype_of(q, name):lower())
      assert.are.equal("f32", dtype_of(p, name):lower())
    end
    assert.are.equal("f32", dtype_of(q, "blk.2.ffn_gate_exps.bias"):lower())
    q:free()
    p:free()
  end)

  it("refuses MXFP4 blocks without their scales, naming both", function()
    local dir = copy(MXFP4)
    patch(dir, "model.safetensors", "layers.1.mlp.experts.down_proj_scales", "layers.1.mlp.experts.down_proj_scalez")
    refused(dir, "model.safetensors", "model.layers.1.mlp.experts.down_proj_blocks", "down_proj_scales",
      "MXFP4 blocks need their scales")
  end)

  it("refuses MXFP4 blocks of the wrong shape, naming the tensor and the shape wanted", function()
    local dir = copy(MXFP4)
    patch(dir, "model.safetensors", '"shape":[4,64,1,16]', '"shape":[4,64,16,1]')
    refused(dir, "model.safetensors", "mlp.experts.down_proj_blocks' is U8 [4, 64, 16, 1]",
      "must be [4, 64, 1, 16]")
  end)

  it("refuses unquantized experts of the wrong shape (not transformers' experts × in × out)", function()
    local dir = copy(PLAIN)
    patch(dir, "model.safetensors", '"shape":[4,32,64]', '"shape":[4,64,32]')
    refused(dir, "model.safetensors", "down_proj", "must be [4, 32, 64]")
  end)

  it("refuses a quant_method it cannot read, naming it", function()
    local dir = copy(MXFP4)
    patch(dir, "config.json", '"quant_method": "mxfp4"', '"quant_method": "awq42"')
    refused(dir, "config.json", "quant_method 'awq42'", "mxfp4")
  end)

  it("refuses a swiglu_limit other than 7, naming the key", function()
    local dir = copy(PLAIN)
    patch(dir, "config.json", '"swiglu_limit": 7.0', '"swiglu_limit": 9.0')
    refused(dir, "config.json", '"swiglu_limit" must be 7', "it is 9")
  end)

  it("refuses a layer pattern that is not the window on the even blocks", function()
    local dir = copy(PLAIN)
    patch(dir, "config.json", '"sliding_attention",\n    "full_attention",\n    "sliding',
      '"full_attention",\n    "sliding_attention",\n    "sliding')
    refused(dir, "config.json", '"layer_types"[0]', "sliding_attention on the even blocks")
  end)

  -- the repacked copy is host memory the model owns (not the file's pages): a host budget sees it, and a
  -- copy larger than the host can give is refused by name before it is made (gpt-oss-120b: ~61 GB)
  it("charges the repacked MXFP4 experts to the host budget and refuses them by name when they do not fit", function()
    local m, err = lrun.load(MXFP4, { threads = 1, host_budget = "4K" })
    assert.is_nil(m)
    assert.truthy(tostring(err):find("gpt-oss MXFP4 experts repacked", 1, true), tostring(err))
    assert.truthy(tostring(err):find("host budget", 1, true), tostring(err))
    assert.truthy(tostring(err):find("ffn_gate_exps", 1, true), tostring(err))
    local ok = assert(lrun.load(MXFP4, { threads = 1 }))
    assert.is_true(ok:stats().host.weights > 0, "the repacked experts are not on the host account")
    ok:free()
  end)

  it("refuses a tied head, naming the key", function()
    local dir = copy(PLAIN)
    patch(dir, "config.json", '"tie_word_embeddings": false', '"tie_word_embeddings": true ')
    refused(dir, "config.json", "tie_word_embeddings")
  end)

  it("reads YaRN's truncate: true moves the logits (transformers' floor/ceil of the ramp)", function()
    local dir = copy(PLAIN)
    patch(dir, "config.json", '"truncate": false', '"truncate": true ')
    local prompt = { 250, 251, 7, 7, 7, 80, 81, 82, 83, 9, 10, 11 }
    local a = assert(lrun.load(PLAIN, { threads = 1, kv_dtype = "f32" }))
    local b = assert(lrun.load(dir, { threads = 1, kv_dtype = "f32" }))
    local la, lb = assert(a:logits(prompt)), assert(b:logits(prompt))
    local worst = 0
    for i = 1, #la do worst = math.max(worst, math.abs(la[i] - lb[i])) end
    assert.is_true(worst > 1e-5, "truncate made no difference: " .. worst)
    assert.are.equal(true, b:metadata("gpt-oss.rope.scaling.yarn_truncate"))
    assert.are.equal(false, a:metadata("gpt-oss.rope.scaling.yarn_truncate"))
    a:free()
    b:free()
  end)
end)
