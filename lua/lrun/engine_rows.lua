--- lrun.engine_rows — several sequences of one engine, as generation and
-- beam search use them: prefill prompts into slots, step one token per
-- slot, copy a slot onto another (beam reordering), release slots.
--
-- Every failure comes back as `nil, err` with the OOM fields of lrun.errors
-- (device, phase, stage); nothing here raises for a runtime failure.
-- @module lrun.engine_rows
local lf = require("lrun.ffi")
local errors = require("lrun.errors")
local sys = require("lrun.sys")
local ffi, C = lf.ffi, lf.C

local M = {}

local Rows = {}
Rows.__index = Rows

--- Opens n_seq slots on the model's engine (remade when it has fewer, or
-- another cache kind or step size).
-- @tparam lrun.model model
-- @tparam int n_seq
-- @tparam[opt] table opts {cache_implementation=, cache_config=, n_batch=}
-- @treturn[1] Rows
-- @treturn[2] nil
-- @treturn[2] table error
function M.open(model, n_seq, opts)
  opts = opts or {}
  local engine, err = model:engine({ n_seq = n_seq, cache_implementation = opts.cache_implementation,
    cache_config = opts.cache_config, n_batch = opts.n_batch })
  if not engine then return nil, err end
  local self = setmetatable({
    model = model, engine = engine, n_seq = n_seq, n_vocab = model.n_vocab,
    n_ctx = tonumber(C.lrun_engine_n_ctx_max(engine)),
    device = model.device_name,
    n_out = ffi.new("int64_t[1]"),
    cap = 0,
  }, Rows)
  for s = 0, n_seq - 1 do
    local st = C.lrun_engine_seq_truncate(engine, s, 0)
    if st ~= C.LRUN_OK then return nil, self:fail(st, "resetting sequence " .. s, "reorder") end
  end
  return self
end

function Rows:fail(status, context, stage)
  return errors.from_status(status, context, { device = self.device, phase = "cache", stage = stage })
end

-- The logits buffer, (rows, n_vocab), grown as needed and reused.
function Rows:logits(rows)
  if rows > self.cap then
    self.buf = ffi.new("float[?]", rows * self.n_vocab)
    self.cap = rows
  end
  return self.buf
end

--- Runs prompts into slots in one engine step (the engine splits it into
-- chunks of n_batch tokens). Logits row i is the last position of entries[i].
-- The step's wall time is added to stats.prompt_seconds when stats is given.
-- @tparam {{slot=int, ids={int,...}},...} entries
-- @tparam[opt] table stats
-- @treturn[1] cdata float[#entries * n_vocab]
-- @treturn[2] nil
-- @treturn[2] table error
function Rows:prefill(entries, stats)
  local t0 = sys.now()
  local n = 0
  for _, e in ipairs(entries) do
    if #e.ids > self.n_ctx then
      return nil, errors.new("arg", string.format("the prompt has %d tokens, more than the context of %d",
        #e.ids, self.n_ctx))
    end
    n = n + #e.ids
  end
  local tokens = ffi.new("int32_t[?]", n) -- (n,) every prompt, one after another
  local seq = ffi.new("int32_t[?]", n)    -- (n,) the slot of each token
  local i = 0
  for _, e in ipairs(entries) do
    for _, id in ipairs(e.ids) do
      tokens[i], seq[i] = id, e.slot
      i = i + 1
    end
  end
  local out = self:logits(#entries)
  local st = C.lrun_engine_step(self.engine, n, tokens, seq, nil, out, #entries, self.n_out)
  if st ~= C.LRUN_OK then return nil, self:fail(st, "prefill", "prefill") end
  if stats then stats.prompt_seconds = stats.prompt_seconds + (sys.now() - t0) end
  return out
end

--- One token for each of n slots; logits row i belongs to slots[i].
-- @tparam int n
-- @tparam cdata tokens int32_t[n]
-- @tparam cdata slots int32_t[n]
-- @treturn[1] cdata float[n * n_vocab]
-- @treturn[2] nil
-- @treturn[2] table error
function Rows:step(n, tokens, slots)
  local out = self:logits(n)
  local st = C.lrun_engine_step(self.engine, n, tokens, slots, nil, out, n, self.n_out)
  if st ~= C.LRUN_OK then return nil, self:fail(st, "decode step", "decode") end
  return out
end

--- Positions stored in a slot.
function Rows:len(slot)
  return tonumber(C.lrun_engine_seq_len(self.engine, slot))
end

--- Makes slot dst's cache a copy of slot src's. The one place beam
-- reordering touches the cache. With the paged store (kv-caches) an exact
-- cache's copy shares src's blocks (reference counts, copy on write), so no
-- positions move until a beam writes into a shared, partly filled block.
-- (lrun_engine_seq_reorder does a whole permutation in one call; the slot
-- remapping of lrun.beam_slots already makes only the copies that are
-- needed, so it is not used.)
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] table error
function Rows:copy(dst, src)
  local st = C.lrun_engine_seq_copy(self.engine, dst, src)
  if st ~= C.LRUN_OK then return nil, self:fail(st, "beam reorder: copying sequence " .. src .. " to " .. dst, "reorder") end
  return true
end

--- Forgets every slot's cache (a dynamic cache gives its memory back).
function Rows:release_all()
  for s = 0, self.n_seq - 1 do C.lrun_engine_seq_truncate(self.engine, s, 0) end
end

--- Opens n_seq rows, runs fn(rows) and releases every row whatever fn does:
-- fn's results are returned as they are; an error it raises is raised again
-- after the release, so the model stays usable (beam.lua, beam_groups.lua).
function M.with_rows(model, n_seq, opts, fn)
  local rows, err = M.open(model, n_seq, opts)
  if not rows then return nil, err end
  local ok, out, err2 = pcall(fn, rows)
  rows:release_all()
  if not ok then error(out, 0) end
  return out, err2
end

return M
