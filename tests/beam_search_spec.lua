-- beam_search_spec: beam search and group beam search against HF
-- transformers (tests/golden/beam_search.json, made by
-- tests/golden/make_beam_golden.py on tests/beam_model.lua's model): the same
-- ids for every returned sequence, the same eos/length ending, and sequence
-- scores within 1e-4 (lrun and HF compute the same f32 function in another
-- summation order; the logits agree to ~5e-7, and no decision of these cases
-- is closer than that). Also: batches equal their prompts run alone, beam
-- reordering copies caches only for duplicated parents, and option errors.
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local beam_model = require("tests.beam_model")

local SCORE_TOL = 1e-4

local function golden(name) return require("tests.golden").read(name or "beam_search.json") end

-- beam_processors.json: beams with HF's logits processors on the log-probs
-- (make_beam_golden.py --processors)
for _, file in ipairs({ "beam_search.json", "beam_processors.json" }) do
describe("beam search against HF transformers (" .. file .. ")", function()
  local m, doc
  setup(function()
    doc = golden(file)
    m = assert(lrun.load(beam_model.path(), { kv_dtype = "f32", progress = false }))
  end)
  teardown(function() if m then m:free() end end)

  it("starts from the same logits", function()
    local l = m:logits(doc.prompts.a)
    local worst = 0
    for i, v in ipairs(doc.logits_a) do worst = math.max(worst, math.abs(v - l[i])) end
    assert.is_true(worst < 1e-5, "max logit difference " .. worst)
  end)

  for _, case in ipairs(golden(file).cases) do
    it("case " .. case.name, function()
      local prompts = {}
      for i, name in ipairs(case.prompts) do prompts[i] = doc.prompts[name] end
      local opts = {}
      for k, v in pairs(case.options) do opts[k] = v end
      if opts.eos_token_id == nil then opts.eos_token_id = {} end
      local prompt = #prompts == 1 and prompts[1] or prompts
      local texts, ids, stats = m:generate(prompt, opts)
      assert.is_table(ids, tostring(texts))
      if type(ids[1]) == "number" or #case.expected == 1 then ids = { ids } end
      assert.are.equal(#case.expected, #ids)
      for i, want in ipairs(case.expected) do
        assert.are.same(want.ids, ids[i], "sequence " .. i)
        local score = stats.sequences_scores and stats.sequences_scores[i] or stats.sequence_score
        assert.is_true(math.abs(score - want.score) < SCORE_TOL,
          string.format("sequence %d: score %.7f, HF %.7f", i, score, want.score))
        local reason = stats.stop_reasons and stats.stop_reasons[i] or stats.stop_reason
        assert.are.equal(want.eos and "eos" or "length", reason, "sequence " .. i)
      end
    end)
  end
end)
end

describe("beam reordering", function()
  it("copies no cache per step: the seed scenario copies the prompt's slot once per beam, sharing blocks", function()
    local lf = require("lrun.ffi")
    local doc = golden()
    local case
    for _, c in ipairs(doc.cases) do if c.name == "seed" then case = c end end
    local m = assert(lrun.load(beam_model.path(), { kv_dtype = "f32", progress = false }))
    local _, ids, stats = m:generate(doc.prompts.seed, case.options)
    assert.are.equal(40, #ids)
    assert.are.equal(39, stats.beam_copies) -- 40 groups of one beam: only the first step forks
    local s = lf.ffi.new("lrun_engine_stats")
    lf.C.lrun_engine_get_stats(m:engine(), s)
    -- bytes copied: at most one 64-position block per beam and layer (copy
    -- on write of the prompt's last, shared block), not 39 prompts
    local per_pos = 2 * 32 * 4 -- K and V, kv_dim 32, f32
    local bound = 40 * beam_model.spec.n_layer * 64 * per_pos
    assert.is_true(tonumber(s.kv_bytes_copied) <= bound, "copied " .. tostring(s.kv_bytes_copied))
    assert.is_true(bound < 39 * 1000 * beam_model.spec.n_layer * per_pos / 10)
    m:free()
  end)
end)

describe("batches", function()
  local m
  setup(function() m = assert(lrun.load(beam_model.path(), { kv_dtype = "f32", progress = false })) end)
  teardown(function() if m then m:free() end end)

  it("gives each prompt of a greedy batch what it gets alone", function()
    local prompts = { { 300, 301, 302 }, { 400, 401, 402, 403, 404, 405, 406 }, { 259 } }
    local texts, ids, stats = m:generate(prompts, { max_new_tokens = 12, eos_token_id = {} })
    assert.are.equal(3, #ids)
    assert.are.same({ 3, 7, 1 }, stats.n_prompt)
    for i, p in ipairs(prompts) do
      local t, alone = m:generate(p, { max_new_tokens = 12, eos_token_id = {} })
      assert.are.same(alone, ids[i])
      assert.are.equal(t, texts[i])
    end
  end)

  it("samples row r of a batch with seed + r, so a row alone gives the same", function()
    local prompts = { { 300, 301, 302 }, { 400, 401 } }
    local _, ids, stats = m:generate(prompts, { max_new_tokens = 8, do_sample = true, seed = 7, eos_token_id = {} })
    assert.are.equal(7, stats.seed)
    local _, first = m:generate(prompts[1], { max_new_tokens = 8, do_sample = true, seed = 7, eos_token_id = {} })
    local _, second = m:generate(prompts[2], { max_new_tokens = 8, do_sample = true, seed = 8, eos_token_id = {} })
    assert.are.same(first, ids[1])
    assert.are.same(second, ids[2])
    local _, many = m:generate(prompts[1], { max_new_tokens = 8, do_sample = true, seed = 7,
      num_return_sequences = 3, eos_token_id = {} })
    assert.are.equal(3, #many)
    assert.are.same(first, many[1])
  end)

  it("runs in chunks with max_batch_rows, with the same output", function()
    local prompts = { { 300, 301 }, { 310, 311 }, { 320, 321 } }
    local _, all = m:generate(prompts, { max_new_tokens = 6, eos_token_id = {} })
    local _, chunked = m:generate(prompts, { max_new_tokens = 6, eos_token_id = {}, max_batch_rows = 1 })
    assert.are.same(all, chunked)
  end)
end)

describe("beam slots", function()
  local beam_slots = require("lrun.beam_slots")
  local function fake()
    local rows = { log = {} }
    function rows:copy(dst, src) self.log[#self.log + 1] = src .. "->" .. dst; return true end
    return rows
  end

  it("copies only for a parent's second and later children", function()
    local rows = fake()
    local s = beam_slots.new(rows, 0, 4)
    assert.are.same({ 0, 1, 2, 3 }, s:assign({ 0, 0, 0, 0 })) -- the first step: all from the prompt
    assert.are.same({ "0->1", "0->2", "0->3" }, rows.log)
    rows.log = {}
    assert.are.same({ 3, 1, 2, 0 }, s:assign({ 3, 1, 2, 0 })) -- every line continues: no copy
    assert.are.same({}, rows.log)
    assert.are.same({ 1, 0, 2, 3 }, s:assign({ 1, 0, 1, 3 })) -- beam 1 twice, beam 2 dropped
    assert.are.same({ "1->2" }, rows.log)
    assert.are.equal(4, s.copies)
  end)

  it("works on its own range of slots", function()
    local rows = fake()
    local s = beam_slots.new(rows, 8, 2)
    assert.are.same({ 8, 9 }, s:assign({ 8, 8 }))
    assert.are.same({ "8->9" }, rows.log)
  end)
end)

describe("beam options", function()
  local m
  setup(function() m = assert(lrun.load(beam_model.path(), { progress = false })) end)
  teardown(function() if m then m:free() end end)
  local p = { 300, 301 }

  it("are checked as HF checks them", function()
    assert.has_error(function() m:generate(p, { num_beams = 2, num_return_sequences = 3 }) end,
      "generate: num_return_sequences (3) must be <= num_beams (2)")
    assert.has_error(function() m:generate(p, { num_return_sequences = 2 }) end,
      "generate: num_return_sequences > 1 needs num_beams > 1 or do_sample (greedy gives one sequence)")
    assert.has_error(function() m:generate(p, { num_beams = 6, num_beam_groups = 4, diversity_penalty = 1 }) end,
      "generate: num_beams (6) must be a multiple of num_beam_groups (4)")
    assert.has_error(function() m:generate(p, { num_beams = 4, num_beam_groups = 2 }) end,
      "generate: num_beam_groups > 1 needs diversity_penalty > 0")
    assert.has_error(function() m:generate(p, { num_beams = 4, do_sample = true }) end,
      "generate: beam sampling (num_beams > 1 with do_sample) is not supported")
    assert.has_error(function() m:generate(p, { num_beams = 2, stop = "x" }) end,
      "generate: stop strings are not supported with beams (use eos_token_id)")
    assert.has_error(function() m:generate(p, { num_beams = 2, on_token = print }) end,
      "generate: on_token streams one sequence; it does not work with beams")
    assert.has_error(function() m:generate(p, { early_stopping = "sometimes" }) end,
      "generate: option 'early_stopping' must be true, false or \"never\", got sometimes")
    assert.has_error(function() m:generate(p, { cache_implementation = "paged" }) end)
    assert.has_error(function() m:generate(p, { on_oom = { "no_such_strategy" } }) end)
  end)

  it("returns one sequence as text, ids, stats with its score", function()
    local text, ids, stats = m:generate(p, { num_beams = 3, max_new_tokens = 4, eos_token_id = {} })
    assert.is_string(text)
    assert.are.equal(4, #ids)
    assert.is_number(stats.sequence_score)
    assert.are.equal("length", stats.stop_reason)
    assert.are.equal(m:detokenize(ids, { special = false }), text)
  end)
end)

describe("the REPL after an OOM", function()
  it("prints the error and goes on", function()
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, "w"))
    f:write(string.format([[
m = lrun.load(%q, {gpu_budget = "2M", progress = false})
print(m:generate({300, 301}, {num_beams = 8, max_new_tokens = 3, n_batch = 4096}))
print(#select(2, m:generate({300, 301}, {max_new_tokens = 2, eos_token_id = {}})))
]], beam_model.path()))
    f:close()
    local shell = require("tests.shell")
    local pipe = assert(io.popen(shell.quote(shell.launcher) .. " < " .. shell.quote(tmp) .. " 2>&1"))
    local out = pipe:read("*a")
    pipe:close()
    os.remove(tmp)
    assert.matches("nil\toom: [^\n]*out of memory on cpu", out)
    assert.matches("\n2\n", out)
  end)
end)
