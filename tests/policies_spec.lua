-- policies_spec: the placement policies of policies/ (predicates,
-- conservative, aggressive, layers, OffloadPolicy) on a synthetic tensor
-- list and on the default model's tensors, and model:placement().
package.path = "./?.lua;" .. package.path
local path = os.getenv("LRUN_MODEL")

local P = require("policies.predicates")
local conservative = require("policies.conservative")
local aggressive = require("policies.aggressive")
local layers = require("policies.layers")
local OffloadPolicy = require("policies.offload_policy")

-- The names a plan keeps off the device, sorted.
local function off_names(plan)
  local out = {}
  for name, tier in pairs(plan) do if tier ~= "device" then out[#out + 1] = name end end
  table.sort(out)
  return out
end

local function sorted(list) table.sort(list); return list end

local function count(plan) local n = 0; for _ in pairs(plan) do n = n + 1 end; return n end

-- Two blocks with biases, an untied LM head and rope_freqs, listed out of
-- order (plans must not depend on the listing order). Sizes are distinct
-- powers-of-ten-ish so every expected sum below is easy to check by hand.
local function synthetic()
  local ts = {}
  local function add(name, role, layer, bytes, shape)
    ts[#ts + 1] = { name = name, role = role, layer = layer, dtype = "f32", bytes = bytes, shape = shape }
  end
  for l = 1, 0, -1 do
    local b = "blk." .. l .. "."
    add(b .. "ffn_down.weight", "ffn_down", l, 3000, { 30, 10 })
    add(b .. "attn_q.weight", "attn_q", l, 1000, { 10, 10 })
    add(b .. "attn_q.bias", "bias", l, 10, { 10 })
    add(b .. "attn_norm.weight", "attn_norm", l, 40, { 10 })
    add(b .. "ffn_up.weight", "ffn_up", l, 3000, { 10, 30 })
    add(b .. "ffn_norm.weight", "ffn_norm", l, 40, { 10 })
  end
  add("output.weight", "lm_head", -1, 20000, { 10, 500 })
  add("token_embd.weight", "embedding", -1, 20000, { 10, 500 })
  add("output_norm.weight", "output_norm", -1, 40, { 10 })
  add("rope_freqs.weight", "rope_freqs", -1, 20, { 5 })
  return ts
end
local BLOCK = 3000 + 1000 + 10 + 40 + 3000 + 40 -- 7090 bytes per block
local SMALL = 40 * 5 + 10 * 2 -- output_norm + 4 block norms + 2 biases = 220

local function find(ts, name) for _, t in ipairs(ts) do if t.name == name then return t end end end

describe("policies.predicates", function()
  local ts = synthetic()
  local function which(pred)
    local out = {}
    for _, t in ipairs(ts) do if pred(t) then out[#out + 1] = t.name end end
    return sorted(out)
  end

  it("pick the tensors of their kind", function()
    assert.same({ "token_embd.weight" }, which(P.is_embedding_table))
    assert.same({ "output.weight" }, which(P.is_lm_head))
    assert.same({ "blk.0.attn_q.bias", "blk.1.attn_q.bias" }, which(P.is_bias))
    assert.same({ "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "blk.1.attn_norm.weight",
      "blk.1.ffn_norm.weight", "output_norm.weight" }, which(P.is_norm_vector))
    assert.same({ "blk.0.attn_q.bias", "blk.0.attn_q.weight", "blk.1.attn_q.bias", "blk.1.attn_q.weight" },
      which(P.is_attention))
    assert.same({ "blk.0.ffn_down.weight", "blk.0.ffn_up.weight", "blk.1.ffn_down.weight",
      "blk.1.ffn_up.weight" }, which(P.is_mlp))
  end)

  it("layer_range and name_matches make predicates", function()
    assert.are.equal(6, #which(P.layer_range(1, 1)))
    assert.are.equal(6, #which(P.layer_range(1)))
    assert.are.equal(12, #which(P.layer_range(0, 5)))
    assert.are.equal(0, #which(P.layer_range(2, 3)))
    assert.is_false(P.layer_range(0, 99)(find(ts, "output_norm.weight"))) -- outside blocks
    assert.same({ "blk.0.ffn_down.weight", "blk.1.ffn_down.weight" }, which(P.name_matches("ffn_down")))
    assert.same({ "output.weight", "output_norm.weight" }, which(P.name_matches("^output")))
    assert.same({ "blk.0.attn_q.bias", "blk.1.attn_q.bias", "token_embd.weight" },
      which(P.any(P.is_bias, P.is_embedding_table)))
    assert.has_error(function() P.name_matches(3) end)
    assert.has_error(function() P.layer_range("a") end)
  end)
end)

describe("placement policies on a synthetic list", function()
  it("conservative takes norms and biases, capped by max_bytes", function()
    local plan, off = conservative.plan(synthetic())
    assert.are.equal(16, count(plan))
    assert.are.equal(SMALL, off)
    assert.same(sorted({ "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "blk.1.attn_norm.weight",
      "blk.1.ffn_norm.weight", "output_norm.weight", "blk.0.attn_q.bias", "blk.1.attn_q.bias" }),
      off_names(plan))
    assert.are.equal("host", plan["output_norm.weight"])
    assert.are.equal("device", plan["blk.0.attn_q.weight"])
    -- 100 bytes: output_norm (40), then block 0 in name order: attn_norm (40), attn_q.bias (10);
    -- ffn_norm (40) would pass 100, a later bias (10) still fits.
    plan, off = conservative.plan(synthetic(), 100)
    assert.same({ "blk.0.attn_norm.weight", "blk.0.attn_q.bias", "blk.1.attn_q.bias", "output_norm.weight" },
      off_names(plan))
    assert.are.equal(100, off)
    plan, off = conservative.plan(synthetic(), { max_bytes = 0, tier = "pinned" })
    assert.same({}, off_names(plan))
    assert.are.equal(0, off)
    plan = conservative.plan(synthetic(), { tier = "pinned" })
    assert.are.equal("pinned", plan["blk.1.ffn_norm.weight"])
  end)

  it("aggressive adds the embedding table, the LM head, then blocks from the last", function()
    local plan, off = aggressive.plan(synthetic())
    assert.are.equal(16, #off_names(plan) + 1) -- all but rope_freqs (not in any class)
    assert.are.equal("device", plan["rope_freqs.weight"])
    assert.are.equal(2 * BLOCK + 40000 + 40, off) -- blocks, embedding, LM head, output_norm
    -- Room for the small ones, both big ones and block 1 but not block 0.
    local cap = SMALL + 40000 + (BLOCK - 90) + 100
    plan, off = aggressive.plan(synthetic(), cap)
    assert.are.equal(SMALL + 40000 + BLOCK - 90, off)
    for _, t in ipairs(synthetic()) do
      local want = (t.layer == 1 or P.is_norm_vector(t) or P.is_bias(t) or P.is_embedding_table(t)
        or P.is_lm_head(t)) and "host" or "device"
      assert.are.equal(want, plan[t.name], t.name)
    end
    -- Only 25000: the small ones and the embedding table; the LM head does not fit.
    plan, off = aggressive.plan(synthetic(), 25000)
    assert.are.equal(SMALL + 20000, off)
    assert.are.equal("device", plan["output.weight"])
    assert.are.equal("host", plan["token_embd.weight"])
  end)

  it("layers puts the first N blocks on the device, like -ngl", function()
    local plan, off, n = layers.plan(synthetic(), { n_gpu_layers = 1 })
    assert.are.equal(1, n)
    assert.same(sorted({ "blk.1.attn_norm.weight", "blk.1.attn_q.bias", "blk.1.attn_q.weight",
      "blk.1.ffn_down.weight", "blk.1.ffn_norm.weight", "blk.1.ffn_up.weight", "output.weight",
      "output_norm.weight", "rope_freqs.weight", "token_embd.weight" }), off_names(plan))
    assert.are.equal(BLOCK + 20000 + 20000 + 40 + 20, off)
    plan, off = layers.plan(synthetic(), { n_gpu_layers = 3 }) -- blocks + output layer
    assert.same({ "token_embd.weight" }, off_names(plan)) -- untied: the input stays off
    assert.are.equal(20000, off)
    plan, off, n = layers.plan(synthetic(), { n_gpu_layers = 0, max_bytes = 20000 + 20060 + BLOCK })
    assert.are.equal(1, n) -- raised from 0 until the plan fits
    plan, off, n = layers.plan(synthetic(), { max_bytes = 45000 })
    assert.are.equal(2, n) -- every block on the device, the output layer (40060 bytes) off
    assert.are.equal(40060, off)
    plan, off, n = layers.plan(synthetic(), { max_bytes = 40000 })
    assert.are.equal(3, n)
    local none, why = layers.plan(synthetic(), { max_bytes = 100 })
    assert.is_nil(none)
    assert.matches("embedding table", why)
  end)

  it("OffloadPolicy takes predicates in priority order under its max_bytes", function()
    local pol = OffloadPolicy{ max_bytes = 20100, predicates = { P.is_embedding_table, P.is_norm_vector } }
    local plan, off = pol.plan(synthetic())
    -- token_embd (20000), then norms in order: output_norm (40), blk.0.attn_norm (40); 20 left.
    assert.same({ "blk.0.attn_norm.weight", "output_norm.weight", "token_embd.weight" }, off_names(plan))
    assert.are.equal(20080, off)
    plan, off = pol.plan(synthetic(), 90) -- the budget's cap is smaller
    assert.same({ "blk.0.attn_norm.weight", "output_norm.weight" }, off_names(plan))
    assert.are.equal(80, off)
    local mlp = OffloadPolicy.new{ predicates = { P.is_mlp, P.layer_range(1) } }
    plan, off = mlp.plan(synthetic())
    assert.are.equal(12000 + (BLOCK - 6000), off)
    assert.has_error(function() OffloadPolicy{ predicates = {} } end)
    assert.has_error(function() OffloadPolicy{ predicates = { "x" } } end)
  end)

  it("plans do not depend on the listing order and refuse bad input", function()
    local a = synthetic()
    local b = {}
    for i = #a, 1, -1 do b[#b + 1] = a[i] end
    for _, pol in ipairs({ conservative, aggressive }) do
      assert.same(pol.plan(a, 25000), pol.plan(b, 25000))
    end
    assert.same(layers.plan(a, { n_gpu_layers = 1 }), layers.plan(b, { n_gpu_layers = 1 }))
    local dup = synthetic(); dup[#dup + 1] = dup[1]
    assert.has_error(function() conservative.plan(dup) end)
    assert.has_error(function() conservative.plan(synthetic(), -1) end)
    assert.has_error(function() conservative.plan(synthetic(), { tier = "device" }) end)
  end)
end)

describe("placement policies on the default model", function()
  local m, ts, info
  setup(function()
    if not path then return end
    m = assert(require("lrun").load(path))
    ts, info = m:tensors(), m:info()
  end)
  teardown(function() if m then m:free() end end)

  local function need_model()
    if not path then pending("LRUN_MODEL is not set") return false end
    return true
  end

  it("model:placement() reports every tensor in mmap", function()
    if not need_model() then return end
    local p = m:placement()
    assert.are.equal(272, count(p.tensors))
    for name, tier in pairs(p.tensors) do assert.are.equal("mmap", tier, name) end
    assert.are.equal(info.weight_bytes, p.bytes.mmap)
    assert.are.equal(info.weight_bytes, p.bytes.device + p.bytes.pinned + p.bytes.host + p.bytes.mmap)
    assert.are.equal(0, p.bytes.device + p.bytes.pinned + p.bytes.host)
    local sum = 0
    for _, t in ipairs(ts) do sum = sum + t.bytes end
    assert.are.equal(info.weight_bytes, sum)
  end)

  it("each policy picks the expected tensors", function()
    if not need_model() then return end
    local NORM = 576 * 4
    local EMBD = find(ts, "token_embd.weight").bytes
    local layer = {}
    for _, t in ipairs(ts) do if t.layer >= 0 then layer[t.layer] = (layer[t.layer] or 0) + t.bytes end end
    assert.are.equal(30, #layer + 1)

    local plan, off = conservative.plan(ts)
    assert.are.equal(61, #off_names(plan)) -- 2 norms per block + output_norm; no biases
    assert.are.equal(61 * NORM, off)
    plan, off = conservative.plan(ts, 10 * NORM)
    assert.are.equal(10 * NORM, off)
    assert.are.equal("host", plan["output_norm.weight"])
    assert.are.equal("host", plan["blk.3.ffn_norm.weight"])
    assert.are.equal("host", plan["blk.4.attn_norm.weight"]) -- the tenth
    assert.are.equal("device", plan["blk.4.ffn_norm.weight"])

    plan, off = aggressive.plan(ts)
    assert.are.equal(272, #off_names(plan))
    assert.are.equal(info.weight_bytes, off)
    local cap = 61 * NORM + EMBD + (layer[29] - 2 * NORM) + (layer[28] - 2 * NORM) + 1000
    plan, off = aggressive.plan(ts, cap)
    assert.is_true(off <= cap)
    assert.are.equal(cap - 1000, off)
    for _, t in ipairs(ts) do
      local want = (t.layer >= 28 or t.layer < 0 or P.is_norm_vector(t)) and "host" or "device"
      assert.are.equal(want, plan[t.name], t.name)
    end

    local n
    plan, off, n = layers.plan(ts, { n_gpu_layers = 20 })
    assert.are.equal(20, n)
    for _, t in ipairs(ts) do
      assert.are.equal((t.layer >= 0 and t.layer < 20) and "device" or "host", plan[t.name], t.name)
    end
    plan, off = layers.plan(ts, { n_gpu_layers = 31 }) -- tied: the embedding is the LM head
    assert.same({}, off_names(plan))
    plan, off, n = layers.plan(ts, { max_bytes = EMBD + NORM + 5 * layer[0] })
    assert.are.equal(25, n)
    assert.are.equal(EMBD + NORM + 5 * layer[0], off)

    local pol = OffloadPolicy{ max_bytes = EMBD + 3 * NORM, predicates = { P.is_embedding_table, P.is_norm_vector } }
    plan, off = pol.plan(ts)
    assert.same({ "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight", "token_embd.weight" },
      off_names(plan))
    assert.are.equal(EMBD + 3 * NORM, off)
  end)
end)
