-- moe_spec: mixtures of experts on the CPU (docs/moe.md). The models are
-- tests/arch_models.lua's (checked against llama.cpp in llamacpp_spec); here:
-- what the loader and generator make of them, and that every placement of
-- the experts (resident, on the host and computed there as llama.cpp's
-- -ot exps=CPU, streamed through the staging ring) gives the same logits,
-- bit for bit, in a prompt and in decode steps.
package.path = "./?.lua;" .. package.path
local arch_models = require("tests.arch_models")
local lrun = require("lrun")
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C

local function entry(name)
  for _, e in ipairs(arch_models.models) do if e.name == name then return e end end
  error("no model " .. name)
end

local PROMPT = { 84, 104, 101, 32, 99, 97, 112, 10, 72, 105, 258, 10, 257, 97, 300, 301, 302 }

local function same_logits(a, b)
  if #a ~= #b then return false, "lengths differ" end
  for i = 1, #a do
    if a[i] ~= b[i] then return false, string.format("logit %d: %.9g vs %.9g", i - 1, a[i], b[i]) end
  end
  return true
end

for _, name in ipairs({ "qwen3moe_q8_0", "mixtral_f32", "gpt_oss_f32" }) do
  describe("mixture of experts " .. name, function()
    local path, base
    setup(function()
      path = os.tmpname()
      arch_models.generate(entry(name), path)
      base = assert(lrun.load(path, { threads = 2, progress = false }))
    end)
    teardown(function()
      if base then base:free() end
      if path then os.remove(path) end
    end)

    it("loads with its expert counts, and each expert tensor stacks n_expert slices", function()
      local e, info = entry(name), base:info()
      assert.are.equal(e.n_expert, info.n_expert)
      assert.are.equal(e.n_expert_used, info.n_expert_used)
      assert.are.equal(e.arch, info.arch)
      local n = 0
      for _, t in ipairs(base:tensors()) do
        if t.role:match("_exps$") then
          n = n + 1
          assert.are.equal(3, #t.shape)
          assert.are.equal(e.n_expert, t.shape[3])
        elseif t.role == "ffn_gate_inp" then
          assert.are.same({ info.n_embd, e.n_expert }, t.shape)
          assert.are.equal("f32", t.dtype) -- llama.cpp never quantizes the router
        end
      end
      assert.are.equal(3 * info.n_layer, n)
    end)

    for _, how in ipairs({ { "experts_on_host", { policy = "experts_on_host" } },
                           { "-ot exps=cpu", { overrides = { "exps=cpu" } } },
                           { "experts streamed (-ot exps=host)", { overrides = { "exps=host" } } } }) do
      it(how[1] .. ": the same logits as resident, prompt and decode", function()
        local opts = { threads = 2, progress = false }
        for k, v in pairs(how[2]) do opts[k] = v end
        local m = assert(lrun.load(path, opts))
        local ok, why = same_logits(base:logits(PROMPT), m:logits(PROMPT))
        assert(ok, why)
        local _, ia = base:generate(PROMPT, { max_new_tokens = 6, do_sample = false })
        local _, ib = m:generate(PROMPT, { max_new_tokens = 6, do_sample = false })
        assert.are.same(ia, ib)
        local p = m:placement()
        local ex = assert(p.experts, "placement has no experts field")
        local slices = entry(name).n_expert * 3 * base:info().n_layer
        assert.are.equal(slices, ex.slices.host)
        assert.are.equal(how[2].policy and slices or (how[2].overrides[1] == "exps=cpu" and slices or 0),
          ex.host_compute_slices)
        assert.truthy(tostring(p):find("experts: ", 1, true))
        m:free()
      end)
    end
    it("n_cpu_moe = 0, 1, all: the same logits as resident; the first N blocks' experts on the host", function()
      local n_layer = base:info().n_layer
      local want = base:logits(PROMPT)
      local _, ia = base:generate(PROMPT, { max_new_tokens = 4, do_sample = false })
      for _, n in ipairs({ 0, 1, n_layer }) do
        local m = assert(lrun.load(path, { threads = 2, progress = false, n_cpu_moe = n }))
        local ok, why = same_logits(want, m:logits(PROMPT))
        assert(ok, "n_cpu_moe " .. n .. ": " .. tostring(why))
        local _, ib = m:generate(PROMPT, { max_new_tokens = 4, do_sample = false })
        assert.are.same(ia, ib)
        local p = m:placement()
        assert.are.equal("n_cpu_moe", p.policy)
        for l = 0, n_layer - 1 do
          for _, part in ipairs({ "gate", "up", "down" }) do
            assert.are.equal(l < n and "host" or "device", p.experts.layers[l][part], "block " .. l .. " " .. part)
            assert.are.equal(l < n or nil, p.host_compute["blk." .. l .. ".ffn_" .. part .. "_exps.weight"])
          end
        end
        assert.are.equal(n * 3 * entry(name).n_expert, p.experts.host_compute_slices)
        for _, t in ipairs(m:tensors()) do -- nothing but experts leaves the device
          if not t.role:match("_exps$") then assert.are.equal("device", p.tensors[t.name], t.name) end
        end
        m:free()
      end
    end)

    it("n_cpu_moe beside another placement request: its blocks as overrides", function()
      local m = assert(lrun.load(path, { threads = 2, progress = false, n_cpu_moe = 1, policy = "conservative" }))
      local p = m:placement()
      assert.are.equal("host", p.experts.layers[0].up)
      assert.is_true(p.host_compute["blk.0.ffn_up_exps.weight"])
      assert.are.equal("device", p.experts.layers[1].up)
      local ok, why = same_logits(base:logits(PROMPT), m:logits(PROMPT))
      assert(ok, why)
      m:free()
    end)

    it("counts each block's expert selections: tokens x top-k per block, prompt and decode", function()
      local m = assert(lrun.load(path, { threads = 2, progress = false, n_cpu_moe = 1 }))
      local info = m:info()
      m:stats(true)
      local _, ids = m:generate(PROMPT, { max_new_tokens = 3, do_sample = false })
      local s = m:stats(true)
      local ex = assert(s.experts, "stats have no experts field")
      local tokens = #PROMPT + #ids - 1 -- the last generated token is never run
      assert.are.equal(tokens, ex.tokens)
      assert.are.equal(tokens * info.n_expert_used * info.n_layer, ex.selections)
      for l = 0, info.n_layer - 1 do
        local sum = 0
        assert.are.equal(info.n_expert, #ex.layers[l])
        for _, c in ipairs(ex.layers[l]) do
          assert.is_true(c <= tokens) -- an expert is chosen at most once per token
          sum = sum + c
        end
        assert.are.equal(tokens * info.n_expert_used, sum)
      end
      assert.is_true(ex.top1_share > 0 and ex.top1_share <= 1)
      assert.is_true(ex.top10_share >= 0.1 - 1e-9 and ex.top10_share <= 1)
      assert.truthy(tostring(s):find("experts: " .. ex.selections .. " selections", 1, true))
      assert.are.equal(0, m:stats().experts.selections) -- the reset cleared them
      m:free()
    end)

    it("experts_on_host: host compute counts only the chosen experts' slices", function()
      local m = assert(lrun.load(path, { threads = 2, progress = false, policy = "experts_on_host" }))
      local info = m:info()
      local slice = 0 -- bytes of one expert's gate + up + down slices
      for _, t in ipairs(m:tensors()) do
        if t.layer == 0 and t.role:match("_exps$") then slice = slice + t.bytes / info.n_expert end
      end
      assert.is_true(m:logits({ 84 }) ~= nil) -- one token: k experts per block
      local s = m:stats(true)
      assert.are.equal(info.n_layer * info.n_expert_used * slice, s.host_compute_bytes)
      -- per block: each block's k chosen slices, summing to the total
      for l = 0, info.n_layer - 1 do
        assert.are.equal(info.n_expert_used * slice, s.host_compute_layers[l], "block " .. l)
      end
      assert.are.same({}, m:stats().host_compute_layers) -- the reset cleared them
      m:free()
    end)

    it("experts on disk (-ot exps=disk): the resident logits; a token reads only its chosen experts", function()
      local m = assert(lrun.load(path, { threads = 2, progress = false, overrides = { "exps=disk" } }))
      local info = m:info()
      local ok, why = same_logits(base:logits(PROMPT), m:logits(PROMPT))
      assert(ok, why)
      local _, ia = base:generate(PROMPT, { max_new_tokens = 6, do_sample = false })
      local _, ib = m:generate(PROMPT, { max_new_tokens = 6, do_sample = false })
      assert.are.same(ia, ib)
      local ex = m:placement().experts
      assert.are.equal(info.n_expert * 3 * info.n_layer, ex.slices.disk)
      assert.truthy(m:placement().explain:find(3 * info.n_layer .. " expert stacks read per chosen expert", 1, true))
      local stacks, slice = 0, 0 -- all the experts' bytes; one expert's gate + up + down in block 0
      for _, t in ipairs(m:tensors()) do
        if t.role:match("_exps$") then
          stacks = stacks + t.bytes
          if t.layer == 0 then slice = slice + t.bytes / info.n_expert end
        end
      end
      m:stats(true)
      assert.is_true(m:logits({ 84 }) ~= nil) -- one token: each block fetches its k chosen experts
      local s = m:stats(true)
      assert.are.equal(info.n_layer * info.n_expert_used, s.expert_store_hits + s.expert_store_misses)
      -- what was read: the missed experts' slices, each in whole 4 KiB blocks (three per expert), never a stack
      assert.is_true(s.disk_bytes_read <= s.expert_store_misses * (slice + 3 * 2 * 4096), "disk bytes " .. s.disk_bytes_read)
      if info.n_expert_used < info.n_expert then assert.is_true(s.disk_bytes_read < stacks) end
      assert.truthy(tostring(s):find("experts from the disk: " .. s.expert_store_misses .. " read", 1, true))
      m:free()
    end)

    it("experts on disk, the file truncated after load: generate returns nil and an error naming it", function()
      local copy = os.tmpname() .. ".gguf"
      assert(os.execute(string.format("cp %q %q", path, copy)))
      local m = assert(lrun.load(copy, { threads = 2, progress = false, overrides = { "exps=disk" } }))
      local f = assert(io.open(copy, "rb"))
      local size = f:seek("end")
      f:close()
      assert(os.execute(string.format("truncate -s %d %q", math.floor(size / 2), copy)))
      for _ = 1, 2 do -- and again: the store claims no expert it failed to read
        local text, err = m:generate({ 84, 300 }, { max_new_tokens = 2, do_sample = false })
        assert.is_nil(text)
        assert.matches("short read of tensor blk%.%d+%.ffn_%a+_exps%.weight from " .. copy:gsub("%p", "%%%0"), tostring(err))
      end
      m:free()
      os.remove(copy)
    end)
  end)
end

describe("policies.n_cpu_moe", function()
  local pol = require("policies.n_cpu_moe")
  local function t(name, layer, role, bytes) return { name = name, layer = layer, role = role, bytes = bytes } end
  local list = { t("token_embd.weight", -1, "token_embd", 10), t("blk.0.ffn_up_exps.weight", 0, "ffn_up_exps", 100),
    t("blk.0.ffn_gate_inp.weight", 0, "ffn_gate_inp", 5), t("blk.1.ffn_down_exps.weight", 1, "ffn_down_exps", 100) }

  it("takes the first N blocks' experts, all without N, none of a dense model", function()
    local plan, off, extra = pol.plan(list, { n_cpu_moe = 1 })
    assert.are.equal("host", plan["blk.0.ffn_up_exps.weight"])
    assert.are.equal("device", plan["blk.1.ffn_down_exps.weight"])
    assert.are.equal("device", plan["blk.0.ffn_gate_inp.weight"])
    assert.are.equal(100, off)
    assert.is_true(extra.host_compute["blk.0.ffn_up_exps.weight"])
    local _, all = pol.plan(list)
    assert.are.equal(200, all)
    local _, none = pol.plan({ t("blk.0.ffn_up.weight", 0, "ffn_up", 50) }, { n_cpu_moe = 4 })
    assert.are.equal(0, none)
  end)

  it("refuses an N that is not a whole number >= 0", function()
    for _, n in ipairs({ -1, 1.5, "2" }) do
      local ok, err = pcall(pol.plan, list, { n_cpu_moe = n })
      assert.is_false(ok)
      assert.truthy(tostring(err):find("n_cpu_moe must be a whole number", 1, true), tostring(err))
    end
  end)
end)

describe("mixture-of-experts generator", function()
  local function spec(arch, n_expert, used)
    local s = ffi.new("lrun_model_gen_spec")
    s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff, s.n_vocab, s.n_ctx = 1, 64, 2, 1, 64, 300, 64
    s.weight_dtype, s.embd_dtype = C.LRUN_DTYPE_F32, C.LRUN_DTYPE_F32
    s.rope_freq_base, s.rms_eps, s.seed, s.n_threads, s.tied_embeddings = 10000, 1e-5, 5, 1, 1
    s.arch, s.n_expert, s.n_expert_used = arch, n_expert, used
    return s
  end

  it("refuses experts on a dense architecture, none on qwen3moe, and more used than there are", function()
    local path = os.tmpname()
    for _, c in ipairs({ { "qwen3", 4, 2, "n_expert" }, { "qwen3moe", 0, 0, "n_expert" },
                         { "qwen3moe", 4, 5, "n_expert_used" }, { "llama", 4, 0, "n_expert_used" } }) do
      assert.are.equal(C.LRUN_E_ARG, C.lrun_model_generate(path, spec(c[1], c[2], c[3])))
      assert.truthy(lf.last_error():find("spec." .. c[4], 1, true), lf.last_error())
    end
    os.remove(path)
  end)

  it("a router skew scales router row e by 1 + skew/(e+1) (synthetic popularity)", function()
    local a, b = os.tmpname(), os.tmpname()
    local s = spec("qwen3moe", 8, 2)
    assert.are.equal(C.LRUN_OK, C.lrun_model_generate(a, s), lf.last_error())
    s.router_skew = 3
    assert.are.equal(C.LRUN_OK, C.lrun_model_generate(b, s), lf.last_error())
    local ma, mb = assert(lrun.load(a, { progress = false })), assert(lrun.load(b, { progress = false }))
    local ta = C.lrun_model_find_tensor(ma.handle, "blk.0.ffn_gate_inp.weight")
    local tb = C.lrun_model_find_tensor(mb.handle, "blk.0.ffn_gate_inp.weight")
    local fa = ffi.cast("const float *", C.lrun_tensor_host_data(ta))
    local fb = ffi.cast("const float *", C.lrun_tensor_host_data(tb))
    for e = 0, 7 do
      local i = e * 64 + 5
      assert(math.abs(fb[i] - fa[i] * (1 + 3 / (e + 1))) <= 1e-6 * math.abs(fb[i]) + 1e-12,
        string.format("row %d: %.9g vs %.9g", e, fb[i], fa[i]))
    end
    ma:free(); mb:free()
    os.remove(a); os.remove(b)
  end)

  it("an HF directory of experts holds the GGUF's router, skew included (model_hf_spec: the logits)", function()
    local gguf, dir = os.tmpname(), os.tmpname()
    os.remove(dir)
    local s = spec("qwen3moe", 4, 2)
    s.router_skew = 3
    assert.are.equal(C.LRUN_OK, C.lrun_model_generate(gguf, s), lf.last_error())
    assert.are.equal(C.LRUN_OK, C.lrun_model_generate_hf(dir, s, 1), lf.last_error())
    local ma, mb = assert(lrun.load(gguf, { progress = false })), assert(lrun.load(dir, { progress = false }))
    local ta = C.lrun_model_find_tensor(ma.handle, "blk.0.ffn_gate_inp.weight")
    local tb = C.lrun_model_find_tensor(mb.handle, "blk.0.ffn_gate_inp.weight")
    local fa = ffi.cast("const float *", C.lrun_tensor_host_data(ta))
    local fb = ffi.cast("const float *", C.lrun_tensor_host_data(tb))
    for i = 0, 4 * 64 - 1 do assert.are.equal(fa[i], fb[i]) end
    ma:free(); mb:free()
    os.remove(gguf); os.execute("rm -rf '" .. dir .. "'")
  end)
end)
