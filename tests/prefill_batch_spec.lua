-- prefill_batch_spec: prompt tokens per engine step (lrun.prefill_batch,
-- docs/moe.md "Prefill chunks"): the engine's 512 unless asked, or a mixture
-- of experts on CUDA that does not fit its device (host experts stream once
-- per chunk: 2048); the load option and -b/-ub reach the plan and the engine.
-- On the cpu device the choice stays the engine's default; the CUDA choice
-- on a GPU is checked in moe_gpu_spec.lua.
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local pb = require("lrun.prefill_batch")
local cli = require("lrun.cli")
local moe = require("tests.autofit_moe")

describe("prefill chunks", function()
  it("keeps the engine's default for the cpu, dense models and MoE models that fit", function()
    assert.are.equal(0, (pb.choose({}, { cpu = true, n_expert = 128, fits = false })))
    assert.are.equal(0, (pb.choose({}, { cpu = false, n_expert = 0, fits = false })))
    assert.are.equal(0, (pb.choose({}, { cpu = false, n_expert = 128, fits = true })))
    assert.is_nil(pb.text(0))
  end)

  it("takes 2048 tokens for a MoE on CUDA that does not fit, and says why", function()
    local n, why = pb.choose({}, { cpu = false, n_expert = 128, fits = false })
    assert.are.equal(2048, n)
    assert.are.equal("prefill: chunks of up to 2048 tokens (host experts stream once per chunk)", pb.text(n, why))
  end)

  it("takes the larger chunk only while its extra scratch is at most 1/32 of the budget", function()
    local GiB = 2 ^ 30
    assert.is_true(pb.affordable(0.25 * GiB, 8 * GiB))
    assert.is_false(pb.affordable(0.3 * GiB, 8 * GiB))
    assert.is_true(pb.affordable(10 * GiB, nil)) -- no budget: nothing to trade
  end)

  it("takes what the caller asked, wherever", function()
    assert.are.equal(64, (pb.choose({ n_batch = 64 }, { cpu = true, n_expert = 0 })))
    assert.are.equal(4096, (pb.choose({ n_batch = 4096 }, { cpu = false, n_expert = 128, fits = false })))
  end)

  it("maps -b / -ub to the load option (the smaller wins), unset when neither is given", function()
    assert.are.equal(256, cli.load_options({ batch_size = 1024, ubatch_size = 256 }).n_batch)
    assert.are.equal(1024, cli.load_options({ batch_size = 1024 }).n_batch)
    assert.is_nil(cli.load_options({}).n_batch)
  end)

  describe("on a loaded mixture of experts (cpu)", function()
    local path
    setup(function()
      path = os.tmpname() .. ".gguf"
      moe.generate(path)
    end)
    teardown(function() if path then os.remove(path) end end)

    it("refuses a bad n_batch at load, naming the option", function()
      for _, bad in ipairs({ 0, -3, 1.5 }) do
        local ok, err = pcall(lrun.load, path, { device = "cpu", progress = false, n_batch = bad })
        assert.is_false(ok)
        assert.matches("option 'n_batch' must be a whole number >= 1", tostring(err))
      end
    end)

    it("refuses a bad n_seq or n_batch at model:engine, naming it, and keeps the engine it had", function()
      local m = assert(lrun.load(path, { device = "cpu", progress = false, n_ctx = 64 }))
      local e = assert(m:engine())
      for _, k in ipairs({ "n_seq", "n_batch" }) do
        for _, bad in ipairs({ 0, -1, 2.5, 2 ^ 31, 2 ^ 32 + 1, "4" }) do
          local ok, err = pcall(m.engine, m, { [k] = bad })
          assert.is_false(ok)
          assert.matches("model:engine: option '" .. k .. "' must be a whole number >= 1 and <= 2147483647, got "
            .. tostring(bad):gsub("%p", "%%%0"), tostring(err))
        end
      end
      assert.has_error(function() m:engine(42) end, "model:engine: req must be a table or a cache_implementation, got number")
      assert.are.equal(e, m:engine())
      m:free()
    end)

    it("gives the same logits whatever the chunk: n_batch 7 against the default", function()
      local prompt = {}
      for i = 1, 29 do prompt[i] = (i * 37) % 1000 + 1 end
      local function run(opts)
        opts.device, opts.progress, opts.n_ctx, opts.threads = "cpu", false, 64, 1
        local m = assert(lrun.load(path, opts))
        local _, ids = assert(m:generate(prompt, { max_new_tokens = 5, do_sample = false, eos_token_id = {} }))
        local p, scratch = m:placement(), m:stats().scratch_bytes
        m:free()
        return ids, p, scratch
      end
      local ref, pref, sref = run({})
      assert.is_nil(pref.n_batch)
      for _, policy in ipairs({ false, "aggressive" }) do -- unplanned (the load's), planned (the plan's)
        local small, psmall, ssmall = run({ n_batch = 7, policy = policy or nil })
        assert.are.equal(7, psmall.n_batch)
        -- the engine took it: its step scratch is sized for 7 tokens, not 512
        assert.is_true(ssmall < sref, ssmall .. " >= " .. sref)
        assert.are.same(ref, small)
      end
    end)
  end)
end)
