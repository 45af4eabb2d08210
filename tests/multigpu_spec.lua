-- multigpu_spec: the layer split's planning (lua/lrun/multigpu.lua) with
-- given device sizes: llama.cpp's -ts assignment, the split by room, the
-- embedding on the first device and the head on the last, per-device
-- budgets and KV cache, the errors; the flags (lrun.cli) and lrun.load's
-- devices / tensor_split / per-device gpu_budget options on a tiny model
-- over the cpu device, shown in m:placement() and --explain.
package.path = "./?.lua;" .. package.path
local lf = require("lrun.ffi")
local ffi, C = lf.ffi, lf.C
local mg = require("lrun.multigpu")

local MiB = 2 ^ 20

-- n layers of `each` MiB, kv MiB of KV cache per layer
local function shape(n, each, kv, extra)
  local s = { n_layer = n, layer_bytes = {}, kv_bytes = {}, embed_bytes = 0, head_bytes = 0, scratch_bytes = 0 }
  for i = 1, n do s.layer_bytes[i], s.kv_bytes[i] = each * MiB, (kv or 0) * MiB end
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

local function ranges(split)
  local out = {}
  for i, d in ipairs(split.devices) do out[i] = { d.first, d.last } end
  return out
end

describe("lrun.multigpu parsing", function()
  it("reads device lists as strings or tables", function()
    assert.same({ "cuda:0", "cuda:1" }, mg.parse_devices("cuda:0,cuda:1"))
    assert.same({ "cuda:0", "cuda:0" }, mg.parse_devices(" cuda:0 , cuda:0 "))
    assert.same({ "cuda:1" }, mg.parse_devices({ "cuda:1" }))
    assert.same({ "cpu", "cpu" }, mg.parse_devices("cpu,cpu"))
    local ok, err = mg.parse_devices("cuda:0,tpu")
    assert.is_nil(ok); assert.matches("device 2", err)
    ok, err = mg.parse_devices("cpu,cuda:0")
    assert.is_nil(ok); assert.matches("do not mix", err)
    assert.is_nil(mg.parse_devices("cuda:0,,cuda:1"))
    assert.is_nil(mg.parse_devices(3))
  end)

  it("reads -ts proportions as llama.cpp does (',' or '/')", function()
    assert.same({ 3, 1 }, mg.parse_split("3,1"))
    assert.same({ 0.75, 0.25 }, mg.parse_split("0.75/0.25"))
    assert.same({ 1, 0 }, mg.parse_split({ 1, 0 }))
    assert.is_nil(mg.parse_split("0,0"))
    assert.is_nil(mg.parse_split("3,-1"))
    assert.is_nil(mg.parse_split("a,1"))
  end)

  it("reads one budget for all devices or one each", function()
    assert.same({ 40 * 2 ^ 30, 40 * 2 ^ 30 }, mg.parse_budgets("40G", 2))
    assert.same({ 40 * 2 ^ 30, 2 ^ 30 }, mg.parse_budgets("40G,1G", 2))
    assert.same({ 4096, 8192 }, mg.parse_budgets({ 4096, "8K" }, 2))
    local ok, err = mg.parse_budgets("1G,2G,3G", 2)
    assert.is_nil(ok); assert.matches("3 budgets for 2 devices", err)
    assert.is_nil(mg.parse_budgets("1Q,2G", 2))
  end)
end)

describe("lrun.multigpu.split", function()
  local two = { { name = "cuda:0" }, { name = "cuda:1" } }

  it("assigns layers with -ts as llama.cpp does", function()
    -- layer il to the first device whose cumulative share exceeds il / (n_layer + 1), as llama.cpp with -ngl 99:
    -- 3,1 on 32 layers: 0.75 > il/33 for il 0..24 (llama.cpp's log: layers 0-24 on the first device)
    assert.same({ { 0, 24 }, { 25, 31 } }, ranges(assert(mg.split(shape(32, 10), two, { proportions = { 3, 1 } }))))
    assert.same({ { 0, 16 }, { 17, 31 } }, ranges(assert(mg.split(shape(32, 10), two, { proportions = { 1, 1 } }))))
    -- 7 layers in halves: cumulative share 0.5 > il/8 for il 0..3
    assert.same({ { 0, 3 }, { 4, 6 } }, ranges(assert(mg.split(shape(7, 10), two, { proportions = { 1, 1 } }))))
    local three = { { name = "cuda:0" }, { name = "cuda:1" }, { name = "cuda:2" } }
    assert.same({ { 0, 4 }, { 5, 8 }, { 9, 11 } }, ranges(assert(mg.split(shape(12, 1), three,
      { proportions = { 1, 1, 1 } }))))
  end)

  it("leaves out a device whose share takes no layer (-ts 1,0 / 0,1), the head and embedding with the rest", function()
    local s = assert(mg.split(shape(8, 10, 0, { head_bytes = 5 * MiB, embed_bytes = 3 * MiB }), two,
      { proportions = { 1, 0 } }))
    assert.equal(1, #s.devices)
    assert.same({ "cuda:0", 0, 7 }, { s.devices[1].name, s.devices[1].first, s.devices[1].last })
    assert.equal(80 * MiB + 5 * MiB + 3 * MiB, s.devices[1].weight_bytes)
    assert.same({ "cuda:1" }, s.unused)
    assert.matches("cuda:0: layers 0%-7 %(8%).*embedding, final norm and head", s.explain)
    assert.matches("cuda:1: no layers %(its share rounds to none%): not used", s.explain)
    local three = { { name = "cuda:0" }, { name = "cuda:1" }, { name = "cuda:2" } }
    s = assert(mg.split(shape(8, 10, 0, { head_bytes = 5 * MiB, embed_bytes = 3 * MiB }), three,
      { proportions = { 0, 1, 1 } }))
    assert.same({ { 0, 4 }, { 5, 7 } }, ranges(s)) -- 0.5 > il/9 for il 0..4
    assert.same({ "cuda:1", "cuda:2" }, { s.devices[1].name, s.devices[2].name })
    assert.equal(50 * MiB + 3 * MiB, s.devices[1].weight_bytes) -- the embedding on the first device used
    assert.same({ "cuda:0" }, s.unused)
    -- -ts 32,1 on 32 layers: llama.cpp gives the second device only the output; lrun leaves it out
    s = assert(mg.split(shape(32, 10, 0, { head_bytes = 5 * MiB }), two, { proportions = { 32, 1 } }))
    assert.same({ { 0, 31 } }, ranges(s))
    assert.equal(320 * MiB + 5 * MiB, s.devices[1].weight_bytes)
  end)

  it("puts the embedding on the first device, the head on the last, KV with its layer", function()
    local s = assert(mg.split(shape(4, 10, 2, { embed_bytes = 7 * MiB, head_bytes = 9 * MiB, scratch_bytes = MiB }),
      two, { proportions = { 1, 1 } }))
    -- 0.5 > il/5 for il 0..2: three layers and the embedding on the first, one and the head on the second
    assert.equal(37 * MiB, s.devices[1].weight_bytes)
    assert.equal(19 * MiB, s.devices[2].weight_bytes)
    assert.equal(6 * MiB, s.devices[1].kv_bytes)
    assert.equal(37 * MiB + 6 * MiB + MiB, s.devices[1].need)
    assert.matches("cuda:0: layers 0%-2 %(3%).*embedding", s.explain)
    assert.matches("cuda:1: layers 3%-3 %(1%).*final norm and head", s.explain)
  end)

  it("splits by room when no proportions are given", function()
    local s = assert(mg.split(shape(40, 10), { { name = "cuda:0", room = 300 * MiB }, { name = "cuda:1", room = 100 * MiB } }))
    assert.equal("room", s.by)
    assert.same({ { 0, 29 }, { 30, 39 } }, ranges(s))
    assert.matches("by free memory", s.explain)
    -- an uncapped device counts as the largest capped one
    s = assert(mg.split(shape(8, 10), { { name = "cuda:0", room = 100 * MiB }, { name = "cuda:1" } }))
    assert.same({ { 0, 4 }, { 5, 7 } }, ranges(s))
  end)

  it("refills in order when the proportional split overflows a device", function()
    -- equal rooms, but the first device also holds a large embedding
    local s = assert(mg.split(shape(10, 10, 0, { embed_bytes = 30 * MiB }),
      { { name = "cuda:0", room = 80 * MiB }, { name = "cuda:1", room = 80 * MiB } }))
    assert.same({ { 0, 4 }, { 5, 9 } }, ranges(s)) -- proportional: 80 MiB each, fits
    s = assert(mg.split(shape(10, 10, 0, { embed_bytes = 35 * MiB }),
      { { name = "cuda:0", room = 80 * MiB }, { name = "cuda:1", room = 80 * MiB } }))
    assert.same({ { 0, 3 }, { 4, 9 } }, ranges(s))
    for _, d in ipairs(s.devices) do assert.is_true(d.need <= d.room) end
  end)

  it("counts the KV cache and scratch against each device's room", function()
    local devs = { { name = "cuda:0", room = 100 * MiB }, { name = "cuda:1", room = 100 * MiB } }
    assert.truthy(mg.split(shape(10, 10, 0), devs))
    local ok, err = mg.split(shape(10, 10, 11), devs) -- 210 MiB for 200
    assert.is_nil(ok)
    assert.equal("oom", err.kind)
    assert.matches("no split fits every device", err.message)
    ok, err = mg.split(shape(10, 10, 0, { scratch_bytes = 60 * MiB }), devs) -- 50 + 60 on each
    assert.is_nil(ok); assert.equal("oom", err.kind)
  end)

  it("fails naming the device when -ts overflows it", function()
    local ok, err = mg.split(shape(10, 10), { { name = "cuda:0", room = 50 * MiB }, { name = "cuda:1", room = 500 * MiB } },
      { proportions = { 9, 1 } })
    assert.is_nil(ok)
    assert.matches("cuda:0 needs 100", err.message) -- 0.9 > il/11 for every layer: all ten on cuda:0
    assert.matches("missing; change %-ts", err.message)
    assert.equal("cuda:0", err.device)
  end)

  it("rejects bad input with a message", function()
    local ok, err = mg.split(shape(4, 1), two, { proportions = { 1, 1, 1 } })
    assert.is_nil(ok); assert.matches("3 proportions for 2 devices", err.message)
    ok, err = mg.split({ n_layer = 4, layer_bytes = { 1 } }, two)
    assert.is_nil(ok); assert.matches("1 layer sizes for 4 layers", err.message)
    assert.is_nil(mg.split(shape(4, 1), {}))
    assert.is_nil(mg.split({ n_layer = 0, layer_bytes = {} }, two))
  end)
end)

describe("lrun.cli flags for several devices", function()
  local cli = require("lrun.cli")
  it("checks --device lists, -ts and per-device --gpu-budget", function()
    assert.truthy(cli.check_value("device", "--device", "cuda:0,cuda:1"))
    assert.is_nil(cli.check_value("device", "--device", "cuda:0,tpu"))
    assert.truthy(cli.check_value("tensor_split", "-ts", "3,1"))
    assert.is_nil(cli.check_value("tensor_split", "-ts", "0,0"))
    assert.truthy(cli.check_value("gpu_budget", "--gpu-budget", "40G,40G"))
    assert.is_nil(cli.check_value("gpu_budget", "--gpu-budget", "40G,x"))
    local o = cli.load_options({ device = "cuda:0,cuda:1", tensor_split = "3,1", gpu_budget = "4G,4G" })
    assert.equal("cuda:0,cuda:1", o.device)
    assert.equal("3,1", o.tensor_split)
  end)
end)

describe("lrun.load over several devices (planned on cpu)", function()
  local lrun = require("lrun")
  local path

  setup(function()
    path = os.tmpname() .. ".gguf"
    local s = ffi.new("lrun_model_gen_spec")
    s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 4, 64, 4, 2, 128
    s.n_vocab, s.n_ctx = 512, 256
    s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_Q8_0, C.LRUN_DTYPE_F16, 0
    s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 99, 1
    assert(C.lrun_model_generate(path, s) == C.LRUN_OK, lf.last_error())
  end)
  teardown(function() os.remove(path) end)

  it("plans the split and shows it in m:placement(), tokens unchanged", function()
    local prompt = { 1, 300, 42, 7 }
    local ref = assert(lrun.load(path, { device = "cpu", progress = false }))
    local want = assert(ref:logits(prompt))
    ref:free()
    -- 1,1 on 4 blocks: 0.5 > il/5 for il 0..2 (llama.cpp counts the output as a fifth layer)
    local m = assert(lrun.load(path, { devices = { "cpu", "cpu" }, tensor_split = "1,1", progress = false }))
    local p = m:placement()
    assert.truthy(p.split)
    assert.same({ { 0, 2 }, { 3, 3 } }, ranges(p.split))
    assert.matches("layer split over 2 devices", tostring(p))
    -- one device named for both parts: the engine runs the split, part by part, bit for bit
    assert.is_true(p.split.runs)
    assert.matches("runs as 2 engines on cpu", tostring(p))
    assert.same(want, assert(m:logits(prompt)))
    m:free()
    m = assert(lrun.load(path, { device = "cpu,cpu", gpu_budget = "1G,1G", progress = false }))
    assert.same({ { 0, 2 }, { 3, 3 } }, ranges(m:placement().split))
    m:free()
    -- 3,1 on 4 blocks: 0.75 > il/5 for every block, so the second device takes none and is left out
    m = assert(lrun.load(path, { devices = "cpu,cpu", tensor_split = "3,1", progress = false }))
    p = m:placement()
    assert.same({ { 0, 3 } }, ranges(p.split))
    assert.matches("cpu: no layers %(its share rounds to none%): not used", tostring(p))
    assert.same(want, assert(m:logits(prompt)))
    m:free()
  end)

  it("runs the split part by part on cpu,cpu: generation as one engine's", function()
    local ref = assert(lrun.load(path, { device = "cpu", progress = false }))
    local want_text, want_ids = ref:generate("Once upon", { max_new_tokens = 8, do_sample = false })
    local one = ref:stats()
    ref:free()
    local m = assert(lrun.load(path, { devices = "cpu,cpu", tensor_split = "1,1", progress = false }))
    local text, ids = m:generate("Once upon", { max_new_tokens = 8, do_sample = false })
    assert.same(want_ids, ids)
    assert.equal(want_text, text)
    local st = m:stats()
    assert.equal(one.steps, st.steps)
    assert.is_true(st.scratch_bytes > one.scratch_bytes, "two engines, a scratch each")
    m:free()
  end)

  it("runs beams (sequence copies and reorders in every part) as one engine does", function()
    local function beams(opts)
      local m = assert(lrun.load(path, opts))
      local _, ids = m:generate("Once upon", { max_new_tokens = 6, num_beams = 3, do_sample = false })
      m:free()
      return ids
    end
    assert.same(beams({ progress = false }), beams({ devices = "cpu,cpu", tensor_split = "1,3", progress = false }))
  end)

  it("offloads per device when a device's layers do not fit its room: loads and runs as one engine", function()
    local prompt = { 1, 300, 42, 7 }
    local ref = assert(lrun.load(path, { device = "cpu", progress = false }))
    local want = assert(ref:logits(prompt))
    ref:free()
    -- each device's room between its KV cache and scratch and its whole need (sizes of this model on cpu)
    local fits = assert(lrun.load(path, { devices = "cpu,cpu", gpu_budget = "1G,1G", progress = false }))
    local full = fits:placement().split.devices
    fits:free()
    local budget = {}
    for i, d in ipairs(full) do budget[i] = d.need - math.floor(d.weight_bytes / 2) end
    local m = assert(lrun.load(path, { devices = "cpu,cpu", gpu_budget = budget, progress = false }))
    local p = m:placement()
    assert.is_true(p.split.runs)
    for i, d in ipairs(p.split.devices) do
      assert.is_true(d.short and d.short > 0, "device " .. i .. " is short of room")
      local part = p.parts[i]
      assert.equal(d.first, part.first)
      assert.is_true(part.streamed + part.host > 0, "device " .. i .. " keeps weights off it")
      assert.is_true(part.device_bytes + part.slot_bytes <= budget[i], "device " .. i .. " within its room")
    end
    assert.matches("placement per device of the layer split", p.explain)
    assert.matches("cpu %(layers 0%-2%): .- resident, .- streamed", p.explain)
    assert.matches("offloads on this device", p.split.explain)
    assert.same(want, assert(m:logits(prompt)))
    local _, ids = m:generate("Once upon", { max_new_tokens = 6, do_sample = false })
    m:free()
    ref = assert(lrun.load(path, { device = "cpu", progress = false }))
    local _, want_ids = ref:generate("Once upon", { max_new_tokens = 6, do_sample = false })
    ref:free()
    assert.same(want_ids, ids)
  end)

  it("places a policy's plan per device, packed weights included (bf16)", function()
    local base = os.tmpname() -- made as an empty file: the model is written beside it
    os.remove(base)
    local bf = base .. ".gguf"
    local s = ffi.new("lrun_model_gen_spec")
    s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff = 4, 64, 4, 2, 128
    s.n_vocab, s.n_ctx = 512, 256
    s.weight_dtype, s.embd_dtype, s.tied_embeddings = C.LRUN_DTYPE_BF16, C.LRUN_DTYPE_BF16, 0
    s.rope_freq_base, s.rms_eps, s.seed, s.n_threads = 10000, 1e-5, 5, 1
    assert(C.lrun_model_generate(bf, s) == C.LRUN_OK, lf.last_error())
    local prompt = { 1, 300, 42, 7 }
    local ref = assert(lrun.load(bf, { device = "cpu", progress = false }))
    local want = assert(ref:logits(prompt))
    ref:free()
    -- every part packs its weights and, by the aggressive policy, keeps half of them off its device
    local m = assert(lrun.load(bf, { devices = "cpu,cpu", gpu_budget = "1G,1G", packed = true, policy = "aggressive",
      cpu_offload_gb = 40000 / 2 ^ 30, progress = false }))
    local p = m:placement()
    assert.truthy(p.parts and #p.parts == 2)
    local n_packed = 0
    for _ in pairs(p.packed) do n_packed = n_packed + 1 end
    assert.is_true(n_packed > 0, "packed tensors")
    for i, part in ipairs(p.parts) do
      assert.is_true(part.off_bytes >= 40000, "part " .. i .. ": cpu_offload_gb applies to each part")
    end
    assert.same(want, assert(m:logits(prompt)))
    m:free()
    os.remove(bf)
  end)

  it("applies -ot overrides per device: a pattern of one part's tensors, none matching is an error", function()
    local m = assert(lrun.load(path, { devices = "cpu,cpu", gpu_budget = "1G,1G", progress = false,
      overrides = { "blk%.0%.ffn_up=cpu", "output%.weight=pinned" } }))
    local p = m:placement()
    assert.is_true(p.host_compute["blk.0.ffn_up.weight"])
    assert.equal("pinned", p.tensors["output.weight"])
    m:free()
    local bad, err = lrun.load(path, { devices = "cpu,cpu", gpu_budget = "1G,1G", progress = false,
      overrides = { "nothing=cpu" } })
    assert.is_nil(bad)
    assert.matches("the pattern matches no tensor", err.message)
  end)

  it("fails at load when the split cannot fit, naming what is missing", function()
    local m, err = lrun.load(path, { devices = "cpu,cpu", gpu_budget = "64K,64K", progress = false })
    assert.is_nil(m)
    assert.matches("layer split: cpu %(layers 0%-2%)", err.message) -- even with every weight off the device
  end)

  it("fails when a device of the list does not open", function()
    local rooms, err = mg.rooms({ "cpu", "cuda:99" })
    assert.is_nil(rooms)
    assert.matches("layer split: opening cuda:99", err.message)
    rooms = assert(mg.rooms({ "cpu", "cpu" }, { 0, 4096 }))
    assert.is_true(rooms[1].room == nil or rooms[1].room > 4096) -- cpu: the host memory available, shared
    assert.equal(4096, rooms[2].room)
  end)

  it("rejects bad options", function()
    assert.has_error(function() lrun.load(path, { devices = "cpu,cpu", tensor_split = "1,1,1" }) end,
      "lrun.load: option 'tensor_split': 3 proportions for 2 devices")
    assert.has_error(function() lrun.load(path, { devices = "cpu,tpu" }) end)
    assert.has_error(function() lrun.load(path, { devices = "cpu,cpu", gpu_budget = "1G,1G,1G" }) end)
  end)

  it("prints the split with --explain", function()
    local cmd = string.format("%s/lrun examples/generate.lua -m %s -p Hi -n 1 --temp 0 -t 2 --device cpu,cpu -ts 1,1 "
      .. "--explain 2>&1", os.getenv("LRUN_BUILD") or "build", path)
    local f = io.popen(cmd)
    local out = f:read("*a"); f:close()
    assert.is_truthy(out:find("layer split over 2 devices", 1, true), out)
    assert.is_truthy(out:find("runs as 2 engines on cpu", 1, true), out)
    assert.matches("cpu: layers 0%-2 %(3%)", out)
    -- rooms below the layers' needs (this model's sizes with 2 threads): --explain shows each device's placement
    local m = assert(lrun.load(path, { devices = "cpu,cpu", tensor_split = "1,1", gpu_budget = "1G,1G", threads = 2,
      progress = false }))
    local b = {}
    for i, d in ipairs(m:placement().split.devices) do b[i] = d.need - math.floor(d.weight_bytes / 2) end
    m:free()
    cmd = string.format("%s/lrun examples/generate.lua -m %s -p Hi -n 1 --temp 0 -t 2 --device cpu,cpu -ts 1,1 "
      .. "--gpu-budget %d,%d --smart-offload --explain 2>&1", os.getenv("LRUN_BUILD") or "build", path, b[1], b[2])
    f = io.popen(cmd)
    out = f:read("*a"); f:close()
    assert.is_truthy(out:find("placement per device of the layer split", 1, true), out)
    assert.matches("cpu %(layers 3%-3%): [^\n]* resident", out)
  end)
end)
