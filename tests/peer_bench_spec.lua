-- peer_bench_spec.lua — a cheap smoke test of the same-run peer benchmark
-- drivers (tests/bench/cuda_peer.py, ngl_peer.py, offload_bench.py's llama.cpp points, moe_bench.py;
-- docs/benchmarks.md): on
-- the CPU, with tiny generated models and tests/bench/fake_llama_bench.py
-- standing in for llama-bench, they run both sides, parse llama-bench's JSON
-- and lrun's, size -ncmoe from the budget and write their JSON lines. The
-- figures are not checked (the fake's are made up); the real run is on the
-- GPU machine.
local build = os.getenv("LRUN_BUILD") or "build"

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok = p:close()
  return ok, out
end

local function read_lines(path)
  local t = {}
  for l in io.lines(path) do t[#t + 1] = l end
  return t
end

describe("peer benchmark drivers (fake llama-bench, CPU)", function()
  local dir

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'"))
  end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("cuda_peer.py: one row and one JSON line per model with both sides, a missing file costs only its row",
    function()
      local model = dir .. "/dense.gguf"
      local ok, out = sh(build .. "/lrun examples/genmodel.lua -q --preset tiny --dtype q8_0 -o '" .. model .. "'")
      assert.is_true(ok, out)
      ok, out = sh("python3 tests/bench/cuda_peer.py --llama-bench tests/bench/fake_llama_bench.py --lrun "
        .. build .. "/lrun --device cpu --read-gbps 10 --out '" .. dir .. "/peer.jsonl' '" .. model .. "' '"
        .. dir .. "/missing.gguf'")
      assert.is_true(ok, out)
      assert.truthy(out:find("| dense.gguf | q8_0 |", 1, true), out)
      assert.truthy(out:find("flash_attn: auto", 1, true), out)
      local lines = read_lines(dir .. "/peer.jsonl")
      assert.are.equal(3, #lines) -- bandwidth, dense, missing
      assert.truthy(lines[2]:find('"pp": {"512": 1512.0}', 1, true), lines[2])
      assert.truthy(lines[2]:find('"decode_tps": %d'), lines[2])
      assert.truthy(lines[3]:find('"error": "rc 1', 1, true), lines[3])
    end)

  it("ngl_peer.py: a row per -ngl, llama-bench given that -ngl, lrun under the device memory it took", function()
    local model = dir .. "/ngl.gguf"
    local ok, out = sh(build .. "/lrun examples/genmodel.lua -q --preset tiny --dtype q8_0 -o '" .. model .. "'")
    assert.is_true(ok, out)
    -- no GPU here: the budget is the estimate (N/n_layer of the weights + 512 MiB), and the row says so
    ok, out = sh("PATH=/nonexistent:$PATH python3 tests/bench/ngl_peer.py --llama-bench tests/bench/fake_llama_bench.py"
      .. " --lrun " .. build .. "/lrun --device cpu --ngl 0,2 --prefill 64 --ngen 4 --out '" .. dir
      .. "/ngl.jsonl' '" .. model .. "'")
    assert.is_true(ok, out)
    assert.truthy(out:find("| 2 | 512 (estimated) | 1064 | 100.00 | 512M |", 1, true), out)
    local lines = read_lines(dir .. "/ngl.jsonl")
    assert.are.equal(2, #lines)
    assert.truthy(lines[2]:find('"cmd": "-m ' .. model .. ' -ngl 2 -p 64', 1, true), lines[2])
    assert.truthy(lines[2]:find('"gpu_budget": "512M"', 1, true), lines[2])
    assert.truthy(lines[2]:find('"decode_tps": %d'), lines[2])
    -- a bad --ngl is refused by name
    out = select(2, sh("(python3 tests/bench/ngl_peer.py --llama-bench x --ngl 4,a '" .. model .. "' 2>&1; echo rc=$?)"))
    assert.truthy(out:find("error: --ngl 4,a: comma-separated whole numbers", 1, true), out)
    assert.truthy(out:find("rc=2", 1, true), out)
  end)

  it("offload_bench.py's llama.cpp points: llama-bench -ngl N on the same file, its tg and device memory", function()
    local model = dir .. "/offload.gguf"
    local ok, out = sh(build .. "/lrun examples/genmodel.lua -q --preset tiny --dtype q8_0 -o '" .. model .. "'")
    assert.is_true(ok, out)
    ok, out = sh("(python3 -c 'import json, sys, types; sys.path.insert(0, \"tests/bench\"); import offload_bench as ob; "
      .. "a = types.SimpleNamespace(llama_bench=\"tests/bench/fake_llama_bench.py\", ngl=\"0,2\", ngen=4); "
      .. "print(json.dumps(ob.llama_ngl(a, sys.argv[1]), sort_keys=True))' '" .. model .. "' 2>/dev/null)")
    assert.is_true(ok, out)
    local points = assert(require("dkjson").decode(out))
    assert.are.equal(2, #points)
    assert.are.same({ 0, 2 }, { points[1].ngl, points[2].ngl })
    assert.are.equal(100, points[2].tg) -- the fake's tg
    assert.are.equal(1512, points[2].pp) -- and its pp512
  end)

  it("moe_bench.py: -ncmoe sized to the budget, llama.cpp, auto and hand-picked rows", function()
    local model = dir .. "/moe.gguf"
    local ok, out = sh(build .. "/lrun examples/genmodel.lua -q --preset tiny-moe --embd 256 --ff 512 --experts 16 "
      .. "--experts-used 4 --layers 4 --ctx 4096 --dtype q4_k -o '" .. model .. "'")
    assert.is_true(ok, out)
    ok, out = sh("python3 tests/bench/moe_bench.py --llama-bench tests/bench/fake_llama_bench.py --lrun " .. build
      .. "/lrun --model '" .. model .. "' --device cpu --budgets 0.012 --prefill 64 --ngen 8 --pcie-gbps 50 "
      .. "--dram-gbps 100 --reserve-gib 0.0075 --hand eoh --out '" .. dir .. "/moe.jsonl'")
    assert.is_true(ok, out)
    assert.truthy(out:find("-ncmoe 3 (", 1, true), out)
    assert.truthy(out:find("| file | 0.012 | llama.cpp | -ncmoe 3 | llama-bench | 97.0 |", 1, true), out)
    -- lrun's rows say their decode stream (forced: random ids) and carry the planner's prediction
    assert.truthy(out:find("| file | 0.012 | lrun | auto | forced | %d"), out)
    assert.truthy(out:find("| file | 0.012 | lrun | eoh | forced | %d[^\n]*| [%d.]+ %([+-]%d+%%%) |"), out)
    assert.are.equal(5, #read_lines(dir .. "/moe.jsonl")) -- bandwidth, info, 3 rows
  end)
end)
