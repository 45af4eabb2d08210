--- lrun.text_stream — one sequence's text as its tokens arrive: whole UTF-8
-- characters only, stop strings cut it, and what could begin a stop string
-- is held back until it is clear (docs/scripting.md, "Streaming").
-- @module lrun.text_stream
local M = {}

-- Length of the longest prefix of s that ends on a whole UTF-8 character;
-- the bytes after it wait for the next token. Bytes that can never complete
-- (a stray continuation byte, an invalid lead) are released as they are.
function M.utf8_complete_len(s)
  local n = #s
  local i = n
  while i >= 1 and n - i < 3 do
    local b = s:byte(i)
    if b < 0x80 or b >= 0xC0 then break end
    i = i - 1
  end
  if i < 1 then return n end
  local b = s:byte(i)
  local need = b < 0x80 and 1 or (b >= 0xC0 and b < 0xE0) and 2 or (b >= 0xE0 and b < 0xF0) and 3
    or (b >= 0xF0 and b < 0xF8) and 4 or 1
  if n - i + 1 >= need then return n end
  return i - 1
end
local utf8_complete_len = M.utf8_complete_len

-- Length of the longest suffix of text that begins some stop string (and
-- so may not be shown yet).
local function held_suffix(text, stops, max_stop)
  for len = math.min(#text, max_stop - 1), 1, -1 do
    local tail = text:sub(-len)
    for _, s in ipairs(stops) do
      if s:sub(1, len) == tail then return len end
    end
  end
  return 0
end

local Stream = {}
Stream.__index = Stream

--- A new stream.
-- @tparam table tokenizer lrun.tokenizer (for piece(id))
-- @tparam {string,...}|nil stops
-- @treturn Stream
function M.new(tokenizer, stops)
  local max_stop = 0
  if stops then for _, s in ipairs(stops) do max_stop = math.max(max_stop, #s) end end
  if max_stop == 0 then stops = nil end
  return setmetatable({ tokenizer = tokenizer, stops = stops, max_stop = max_stop,
    text = "", pending = "", emitted = 0 }, Stream)
end

--- Adds a token. Returns the text now safe to show (maybe "") and whether
-- a stop string ended the text.
-- @tparam int id
-- @treturn string piece
-- @treturn boolean stopped
function Stream:push(id)
  self.pending = self.pending .. self.tokenizer:piece(id, false)
  local k = utf8_complete_len(self.pending)
  local prev_len = #self.text
  self.text = self.text .. self.pending:sub(1, k)
  self.pending = self.pending:sub(k + 1)
  local stopped = false
  local releasable = #self.text
  local stops = self.stops
  if stops then
    local from = math.max(1, prev_len - self.max_stop + 2)
    local cut
    for _, s in ipairs(stops) do
      local at = self.text:find(s, from, true)
      if at and (not cut or at < cut) then cut = at end
    end
    if cut then
      self.text = self.text:sub(1, cut - 1)
      releasable = #self.text
      stopped = true
      self.pending = ""
    else
      releasable = #self.text - held_suffix(self.text, stops, self.max_stop)
    end
  end
  local piece = ""
  if releasable > self.emitted then
    piece = self.text:sub(self.emitted + 1, releasable)
    self.emitted = releasable
  end
  return piece, stopped
end

--- Cuts the text to what was shown (a callback stopped the run).
function Stream:cut_to_shown()
  self.text = self.text:sub(1, self.emitted)
  self.pending = ""
end

--- Ends the stream: what is still held back (an unfinished character, the
-- start of a stop string that never completed) joins the text.
-- @treturn string the rest not shown yet ("" when none)
function Stream:finish()
  self.text = self.text .. self.pending
  self.pending = ""
  local rest = self.text:sub(self.emitted + 1)
  self.emitted = #self.text
  return rest
end

return M
