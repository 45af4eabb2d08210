-- packed_moe_spec: a mixture of experts packed by `lrun pack` (its stacked
-- expert matrices too: mode 1, docs/packed.md) and run on the CPU engine,
-- whose weight ring decodes a block's packed expert stacks into its scratch
-- and multiplies the other matrices packed where they are: the tokens and
-- logits are the plain file's bit for bit. Two shapes: rows of 64 (the
-- packed products decoded in registers at the avx512 level,
-- lrun_pex2_gemv_avx512) and rows of 96 and 80 (decoded a tile at a time).
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local compare = require("tests.compare")
local fixture = require("tests.bf16_model_fixture")

local function check(shape)
  local path, packed = os.tmpname() .. ".gguf", os.tmpname() .. ".lrpk"
  fixture.generate(path, shape)
  local stats = assert(lrun.pack(path, packed, { threads = 2 }))
  local ref = assert(fixture.load(path))
  local ref_ids, ref_logits = fixture.run(ref)
  ref:free()
  local m = assert(fixture.load(packed))
  local experts = 0
  for _, t in ipairs(m:tensors()) do
    if t.name:match("_exps%.weight$") and t.packed then experts = experts + 1 end
  end
  local ids, logits = fixture.run(m)
  m:free()
  os.remove(path)
  os.remove(packed)
  assert.is_true(stats.n_pex2 > 0, "no PEX2 tensor")
  assert.are.equal(3 * shape.n_layer, experts, "packed expert stacks")
  assert.are.same(ref_ids, ids)
  assert.is_true(compare.same(ref_logits, logits), "logits differ")
end

describe("a packed file of a mixture of experts on the cpu engine", function()
  it("qwen3moe, rows of 64: the plain file's tokens and logits bit for bit", function()
    check({ arch = "qwen3moe", n_layer = 2, n_embd = 64, n_head = 4, n_head_kv = 2, n_ff = 64, n_expert = 8,
      n_expert_used = 2, seed = 5 })
  end)
  it("qwen3moe, rows of 96 and 80: the plain file's tokens and logits bit for bit", function()
    check({ arch = "qwen3moe", n_layer = 2, n_embd = 96, n_head = 4, n_head_kv = 2, n_ff = 80, n_expert = 6,
      n_expert_used = 3, seed = 6 })
  end)
end)
