--- lrun against llama.cpp on generated models of the GGUF quant types Q5_0,
-- Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS and a Q4_K_M-like mix
-- (tests/quant_models.lua). The reference is tests/golden/quant_llamacpp.json,
-- written by tests/golden/make_quant_llamacpp_golden.py through llama.cpp
-- (xllamacpp) on the same files; it is regenerated, never edited. Per model:
--   0. the file lrun writes is the one llama.cpp ran (size and Adler-32);
--   1. first step: log_softmax of lrun's logits against llama.cpp's top-20
--      log-probabilities, within LOGPROB_TOL, and the same greedy pick;
--   2. m:generate's own greedy tokens equal llama.cpp's continuation, up to
--      the first step where llama.cpp's raw argmax was a banned id (below);
--   3. every step of llama.cpp's greedy continuation, with llama.cpp's
--      tokens as the context: lrun's log-probs of llama.cpp's top-8 within
--      LOGPROB_TOL and lrun's greedy pick = llama.cpp's token, id for id.
--      Given the same context at every step, the same picks are the same
--      greedy continuation. llama.cpp's runs were made with the bytes
--      0x80..0xff biased away (its server withholds incomplete UTF-8, and
--      with it the probabilities), so lrun's pick is taken among the ids
--      the golden does not list as banned.
--
-- Why a tolerance rather than bits: both sides decode the same weight
-- blocks and multiply them with the same 8-bit activation quants (Q8_0,
-- Q8_1 or Q8_K: llama.cpp's vec_dot types), exactly in integers within a
-- block. What differs is the f32 order in which the block products are
-- added: lrun's kernels follow llama.cpp's x86 vec_dot kernels for Q5_0 and
-- Q5_1 lane for lane and add the K-quants' super-blocks in one chain, while
-- llama.cpp's CPU build (LLAMAFILE and REPACK on, see the golden's
-- system_info) may run prompt batches through other GEMM kernels and the
-- K-quants and IQ4_NL through repacked, interleaved layouts, each with its
-- own order. Those 1e-7 relative differences reach the next matmul's 8-bit
-- activation quantization, where a value on a rounding boundary moves a
-- quant by one step, so over 8 layers log-probs part by up to about 0.02
-- nats (Q5_1, whose kernel llama.cpp runs everywhere, agrees within 2e-3).
-- A wrong layout, scale or sign moves them by tenths of a nat and more.
-- When lrun sees llama.cpp's pick within TIE_TOL of its own, either is a
-- tie.
local LOGPROB_TOL = 0.05 -- nats, max over llama.cpp's top log-probs at each step
local TIE_TOL = 0.02     -- nats between lrun's log-probs of its pick and of llama.cpp's

package.path = "./?.lua;" .. package.path
local read_golden = require("tests.golden").read
local quant_models = require("tests.quant_models")

local function log_softmax(lg, n)
  local get = type(lg) == "table" and function(i) return lg[i + 1] end or function(i) return tonumber(lg[i]) end
  local mx = -math.huge
  for i = 0, n - 1 do mx = math.max(mx, get(i)) end
  local sum = 0
  for i = 0, n - 1 do sum = sum + math.exp(get(i) - mx) end
  local lse = mx + math.log(sum)
  local best, besti = -math.huge, -1
  for i = 0, n - 1 do
    if get(i) > best then best, besti = get(i), i end
  end
  return function(i) return get(i) - lse end, besti
end

-- lrun's greedy pick among the ids not in banned (a set)
local function pick(lp, n, banned)
  local best, besti = -math.huge, -1
  for i = 0, n - 1 do
    if not banned[i] and lp(i) > best then best, besti = lp(i), i end
  end
  return besti
end

-- lrun's log-probs at every step of llama.cpp's continuation, with
-- llama.cpp's tokens as the context: the prompt once, then each token, one
-- engine step each (as m:generate decodes). Calls fn(k, lp) for k = 1..n.
local function forced_steps(model, n_vocab, prompt, cont, n, fn)
  local lf = require("lrun.ffi")
  local ffi, C = lf.ffi, lf.C
  local engine = assert(model:engine())
  local tokens = ffi.new("int32_t[?]", #prompt) -- (#prompt,) the tokens of one step
  local seq = ffi.new("int32_t[?]", #prompt)    -- (#prompt,) all in sequence 0
  local logits = ffi.new("float[?]", n_vocab)   -- (n_vocab,) the last position's
  local n_out = ffi.new("int64_t[1]")
  local function check(st, what) assert(st == C.LRUN_OK, what .. ": " .. lf.last_error()) end
  check(C.lrun_engine_seq_truncate(engine, 0, 0), "resetting sequence 0")
  for i = 1, #prompt do tokens[i - 1] = prompt[i] end
  check(C.lrun_engine_step(engine, #prompt, tokens, seq, nil, logits, 1, n_out), "prefill")
  for k = 1, n do
    fn(k, (log_softmax(logits, n_vocab)))
    if k < n then
      tokens[0] = cont[k]
      check(C.lrun_engine_step(engine, 1, tokens, seq, nil, logits, 1, n_out), "decode step " .. k)
    end
  end
end

local golden = read_golden("quant_llamacpp.json")

describe("lrun against llama.cpp on generated quant-type models", function()
  it("reads a golden made by llama.cpp with the settings it states", function()
    assert.are.equal("xllamacpp", golden.reference.package)
    assert.are.equal("f32", golden.settings.cache_type_k)
    assert.are.equal(#quant_models.models, #golden.models)
  end)

  for mi, gm in ipairs(golden.models) do
    describe(gm.name, function()
      local lrun, model, path, n_vocab
      setup(function()
        lrun = require("lrun")
        path = os.tmpname()
        quant_models.write(path, quant_models.models[mi])
        local err
        model, err = lrun.load(path, {threads = 2, kv_dtype = "f32"})
        assert(model, "lrun.load: " .. tostring(err))
        n_vocab = quant_models.spec.n_vocab
      end)
      teardown(function()
        if model and model.free then model:free() end
        model = nil
        if path then os.remove(path) end
      end)

      it("is the file llama.cpp ran (same size and Adler-32)", function()
        assert.are.equal(gm.name, quant_models.models[mi].name)
        local size, sum = quant_models.checksum(path)
        assert(size == gm.bytes and sum == gm.adler32, string.format(
          "%s: lrun writes %d bytes (adler32 %d), the golden ran %d (%d): the generator or a quantizer "
          .. "changed; regenerate with python3 tests/golden/make_quant_llamacpp_golden.py",
          gm.name, size, sum, gm.bytes, gm.adler32))
      end)

      local banned = {}
      for _, id in ipairs(gm.banned) do banned[id] = true end

      for _, case in ipairs(gm.cases) do
        it(case.name .. ": every step of llama.cpp's greedy continuation: log-probs within " .. LOGPROB_TOL
           .. ", the same pick", function()
          local worst, worst_at = 0, ""
          forced_steps(model, n_vocab, case.prompt_ids, case.continuation_ids, #case.steps, function(k, lp)
            local step = case.steps[k]
            for _, pair in ipairs(step.top) do
              local d = math.abs(lp(pair[1]) - pair[2])
              if d > worst then worst, worst_at = d, string.format("step %d, token %d", k, pair[1]) end
            end
            local got = pick(lp, n_vocab, banned)
            assert(got == step.id or math.abs(lp(got) - lp(step.id)) < TIE_TOL, string.format(
              "%s/%s: step %d: lrun picks %d (log-prob %.5f), llama.cpp %d (lrun's log-prob %.5f, llama.cpp's %.5f)",
              gm.name, case.name, k, got, lp(got), step.id, lp(step.id), step.logprob))
          end)
          assert(worst <= LOGPROB_TOL, string.format("%s/%s: max |log-prob difference| %.6f (%s)",
            gm.name, case.name, worst, worst_at))
        end)

        -- Free-running: m:generate's own greedy tokens, up to the first step
        -- where llama.cpp's raw argmax was a banned id (lrun, unbiased, takes it).
        local n_free = #case.steps
        for k, step in ipairs(case.steps) do
          if step.top[1][1] ~= step.id then n_free = k - 1; break end
        end
        if n_free > 0 then
          it(case.name .. ": m:generate's greedy continuation is llama.cpp's (" .. n_free .. " tokens)", function()
            local prompt = {}
            for i, v in ipairs(case.prompt_ids) do prompt[i] = v end
            local text, ids = model:generate(prompt, {max_new_tokens = n_free, do_sample = false, eos_token_id = {}})
            assert(text, "generate: " .. tostring(ids))
            for k = 1, n_free do
              local step = case.steps[k]
              if ids[k] ~= step.id then
                -- a tie in llama.cpp's own log-probs ends the comparison
                local other
                for _, pair in ipairs(step.top) do if pair[1] == ids[k] then other = pair[2] end end
                assert(other and step.logprob - other < TIE_TOL, string.format(
                  "%s/%s: generated token %d: lrun %s, llama.cpp %d", gm.name, case.name, k, tostring(ids[k]), step.id))
                break
              end
            end
          end)
        end
      end
    end)
  end
end)
