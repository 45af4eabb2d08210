--- lrun.repl — the interactive prompt.
-- Reads with GNU readline (reached through ffi: the launcher links it in)
-- when stdin is a terminal, with history in ~/.lrun_history ($LRUN_HISTORY
-- overrides); plain io.read otherwise, without prompts, so piped input
-- gives clean output. Each input is tried first as an expression
-- ("return <line>"; a leading "=" also works), then as a statement; the
-- results are printed with lrun.pretty. An incomplete chunk (the parser
-- stops at '<eof>') continues on the next line; an error is printed and
-- the session goes on; Ctrl-C at the prompt cancels the line; Ctrl-D (end
-- of input) leaves. Tab completes global names and the fields and methods
-- of tables ("lrun.lo", "m:gen"). help() says how to begin. A
-- generate/chat call prints its text and a one-line summary. With piped
-- input, an input that fails makes the launcher exit 1 at the end.
-- The global `lrun` is available without a require.
-- @module lrun.repl
local ffi = require("ffi")
local pretty = require("lrun.pretty")
local sys = require("lrun.sys")

local M = {}

M.prompt = "lrun> "
M.prompt2 = "...> "

-- ---------------------------------------------------------------- input

for _, decl in ipairs({
  "char *readline(const char *prompt);",
  "void add_history(const char *line);",
  "int read_history(const char *filename);",
  "int append_history(int nelements, const char *filename);",
  "int history_truncate_file(const char *filename, int nlines);",
  "void free(void *ptr);",
}) do pcall(ffi.cdef, decl) end

-- The readline functions: in the process when the launcher linked them,
-- else from the shared library, else nil.
local function readline_lib()
  if pcall(function() return ffi.C.readline end) then return ffi.C end
  for _, name in ipairs({ "readline", "libreadline.so.8", "libreadline.so.7" }) do
    local ok, lib = pcall(ffi.load, name)
    if ok and pcall(function() return lib.readline end) then return lib end
  end
  return nil
end

local function history_path()
  local p = os.getenv("LRUN_HISTORY")
  if p then return p ~= "" and p or nil end
  local home = os.getenv("HOME")
  return home and (home .. "/.lrun_history") or nil
end

--- Makes the line reader: function(prompt) → line or nil at end of input
-- (and true when Ctrl-C cancelled the line).
-- @tparam[opt] function complete the Tab completer, function(word, line) → {candidates}
-- @treturn function
-- @treturn boolean whether input is interactive (a terminal)
function M.reader(complete)
  local tty = sys.isatty(0)
  local launcher = package.loaded["lrun.launcher"]
  local rl = tty and readline_lib()
  if rl and launcher and launcher.readline then
    -- the launcher's readline: Ctrl-C cancels the line, Tab calls complete
    local path = history_path()
    if path then
      local f = io.open(path, "a")
      if f then f:close(); rl.read_history(path) else path = nil end
    end
    return function(prompt)
      local line, interrupted = launcher.readline(prompt, complete)
      if line and line:find("%S") then
        rl.add_history(line)
        if path then
          rl.append_history(1, path)
          rl.history_truncate_file(path, 1000)
        end
      end
      return line, interrupted
    end, true
  end
  if not rl then
    return function(prompt)
      if tty then io.write(prompt); io.flush() end
      return io.read("*l")
    end, tty
  end
  local path = history_path()
  if path then
    local f = io.open(path, "a") -- append_history needs the file to exist
    if f then f:close(); rl.read_history(path) else path = nil end
  end
  return function(prompt)
    local p = rl.readline(prompt)
    if p == nil then return nil end
    local line = ffi.string(p)
    ffi.C.free(p)
    if line:find("%S") then
      rl.add_history(line)
      if path then
        rl.append_history(1, path)
        rl.history_truncate_file(path, 1000)
      end
    end
    return line
  end, true
end

-- ---------------------------------------------------------------- completion

-- The keys of v that completion offers: its string keys, and those of its
-- metatable's __index table (methods), one level.
local function keys_of(v, methods_only)
  local out, seen = {}, {}
  local function add(t)
    if type(t) ~= "table" then return end
    for k, x in pairs(t) do
      if type(k) == "string" and k:match("^[%a_][%w_]*$") and not seen[k]
          and (not methods_only or type(x) == "function") then
        seen[k] = true
        out[#out + 1] = k
      end
    end
  end
  if type(v) == "table" then add(v) end
  local mt = (type(v) == "table" or type(v) == "string") and getmetatable(v)
  if type(mt) == "table" then add(mt.__index) end
  if v == package.loaded.lrun then
    for _, name in ipairs({ "chat", "cli", "generate", "model", "pretty", "size", "tokenizer", "cache_kinds" }) do
      if not seen[name] then out[#out + 1] = name end
    end
  end
  return out
end

--- Tab completion: the candidates for `word` (the text before the cursor
-- back to a space or bracket): global names, or "a.b." / "a:" fields and
-- methods, found by walking names (nothing is evaluated).
-- @tparam string word
-- @tparam[opt] table env the session's globals
-- @treturn {string,...} sorted
function M.complete(word, env)
  env = env or M.session_env or _G
  local path, sep, prefix = word:match("^([%a_][%w_%.:]-)([%.:])([%w_]*)$")
  local names
  if path then
    local v = env
    for name in path:gmatch("[^%.:]+") do
      local ok, x = pcall(function() return v[name] end)
      if not ok or (type(x) ~= "table" and type(x) ~= "string") then return {} end
      v = x
    end
    names = keys_of(v, sep == ":")
  else
    prefix = word
    path, sep = "", ""
    names = keys_of(_G)
    if env ~= _G then for _, k in ipairs({ "lrun", "help" }) do names[#names + 1] = k end end
    for _, k in ipairs({ "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in",
      "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while" }) do
      names[#names + 1] = k
    end
  end
  local out, seen = {}, {}
  for _, k in ipairs(names) do
    if k:sub(1, #prefix) == prefix and not seen[k] then
      seen[k] = true
      out[#out + 1] = path .. sep .. k
    end
  end
  table.sort(out)
  return out
end

-- ---------------------------------------------------------------- help

M.help_text = [[
lrun's REPL: Lua (LuaJIT) with the lrun package as `lrun`.
  m = lrun.load("model.gguf")              load a GGUF file, .lrpk or HF directory
  m = lrun.load(path, {device = "cuda", gpu_budget = "4G"})   on a GPU, capped
  m:generate("Once upon a time", {max_new_tokens = 32})      text (and ids, stats)
  m:chat({{role = "user", content = "Hi!"}})                  with the chat template
  m:info()  m:placement()  m:stats()       the model, where its weights are, counters
  help(x)                                  the fields and methods of x
Tab completes names ("lrun.lo", "m:gen"); Ctrl-C cancels a line or stops a run;
Ctrl-D leaves. Docs: docs/scripting.md, docs/generation.md, docs/cli.md.]]

--- help() prints how to begin; help(x) lists the fields and methods of x.
function M.help(x)
  if x == nil then
    io.write(M.help_text, "\n")
    return
  end
  local names = keys_of(x)
  table.sort(names)
  if #names == 0 then
    io.write(type(x), ": ", tostring(x), "\n")
    return
  end
  local parts = {}
  for _, k in ipairs(names) do
    local ok, v = pcall(function() return x[k] end)
    parts[#parts + 1] = k .. (ok and type(v) == "function" and "()" or "")
  end
  io.write(table.concat(parts, "  "), "\n")
end

-- ---------------------------------------------------------------- evaluation

local function is_incomplete(err)
  return err ~= nil and err:sub(-7) == "'<eof>'"
end

--- Compiles REPL input: as an expression when it is one, else as statements.
-- @tparam string src
-- @treturn[1] function
-- @treturn[2] nil
-- @treturn[2] string the error
-- @treturn[2] boolean true when more input could complete the chunk
function M.compile(src, env)
  if src:sub(1, 1) == "=" then src = "return " .. src:sub(2) end
  -- Through an identity call, not `return <src>` directly: a tail call
  -- would lose the line of an error raised by the expression itself.
  local f = loadstring("return (function(...) return ... end)(" .. src .. "\n)", "=stdin")
  if not f then
    local err
    f, err = loadstring(src, "=stdin")
    if not f then
      -- "return 1 +" and "x = {" both stop at <eof>: either form may be the one cut short
      local _, err2 = loadstring("return " .. src, "=stdin")
      return nil, err, is_incomplete(err) or is_incomplete(err2)
    end
  end
  if env then setfenv(f, env) end
  return f
end

-- The traceback up to the user's chunk; the REPL's own frames say nothing.
local function trim_traceback(msg)
  local out = {}
  for line in (msg .. "\n"):gmatch("(.-)\n") do
    if line:find("in function 'call'", 1, true) or line:find("in function 'xpcall'", 1, true)
        or line:find("lrun/repl.lua", 1, true) then break end
    out[#out + 1] = line
  end
  if out[#out] == "stack traceback:" then out[#out] = nil end
  return table.concat(out, "\n")
end

local function handler(e)
  if type(e) ~= "string" then
    local mt = getmetatable(e)
    e = (type(mt) == "table" and mt.__tostring) and tostring(e) or ("(error object is a " .. type(e) .. " value)")
  end
  return debug.traceback(e, 2)
end

-- Runs f like pcall, interruptible by Ctrl-C when the launcher is there.
local function call(f)
  local launcher = package.loaded["lrun.launcher"]
  if launcher and launcher.pcall then return launcher.pcall(f) end
  return xpcall(f, handler)
end

--- The globals of the session: _G, plus `lrun` loaded when first used and `help`.
function M.env()
  return setmetatable({}, {
    __index = function(_, k)
      local v = _G[k]
      if v == nil and k == "lrun" then v = require("lrun") end
      if v == nil and k == "help" then v = M.help end
      return v
    end,
    __newindex = _G,
  })
end

-- A generate/chat result (text, ids, stats): the text as it is, then a
-- summary line; the values stay in _text, _ids and _stats.
local function generate_result(results, n)
  local text, ids, stats = results[2], results[3], results[4]
  if n ~= 4 or type(text) ~= "string" or type(ids) ~= "table" or type(stats) ~= "table"
      or stats.n_generated == nil or stats.stop_reason == nil then
    return false
  end
  rawset(_G, "_text", text); rawset(_G, "_ids", ids); rawset(_G, "_stats", stats)
  local rate = stats.generate_seconds > 0 and stats.n_generated / stats.generate_seconds or 0
  io.stdout:write(text, "\n", string.format("-- %d tokens, %.1f tokens/s, stopped by %s (_text, _ids, _stats)\n",
    stats.n_generated, rate, stats.stop_reason))
  return true
end

--- Evaluates one complete input and prints its results (or its error).
-- @treturn boolean true when it ran without error
function M.eval(src, env, out, err_out)
  out, err_out = out or io.stdout, err_out or io.stderr
  local f, err = M.compile(src, env)
  if not f then
    out:flush()
    err_out:write(err, "\n")
    return false
  end
  local results = { call(f) }
  local n = table.maxn(results)
  if not results[1] then
    out:flush()
    err_out:write(trim_traceback(tostring(results[2])), "\n")
    return false
  end
  if n > 1 and generate_result(results, n) then return true end
  if n > 1 then
    local parts = {}
    for i = 2, n do parts[#parts + 1] = pretty.format(results[i]) end
    out:write(table.concat(parts, "\t"), "\n")
  end
  return true
end

--- Runs the read-eval-print loop until end of input.
-- @tparam[opt] table opts read (a reader function, for tests)
function M.run(opts)
  opts = opts or {}
  local read, tty = opts.read, opts.tty
  local env = opts.env or M.env()
  M.session_env = env
  if not read then read, tty = M.reader(function(word) return M.complete(word, env) end) end
  -- --policy files load now, so a broken one is reported at once; the
  -- session goes on (lrun.load reports it again if it is used)
  for _, path in ipairs(require("lrun.config").policies or {}) do
    if not require("lrun.policy_file").builtin(path) then
      local ok, err = require("lrun.policy_file").load(path)
      if not ok then io.stderr:write("lrun: ", err, "\n") end
    end
  end
  if tty then
    io.write("lrun ", require("lrun.version"), " (", jit and jit.version or _VERSION,
      ") - help() to begin, Ctrl-D to leave\n")
  end
  local failed = false
  while true do
    local src, interrupted = read(M.prompt)
    if src == nil then break end
    local f, err, incomplete = M.compile(src, env)
    while not f and incomplete and not interrupted do
      local more
      more, interrupted = read(M.prompt2)
      if more == nil then break end
      src = src .. "\n" .. more
      f, err, incomplete = M.compile(src, env)
    end
    if interrupted then
      src = "" -- Ctrl-C: the line (and any unfinished chunk) is dropped
    end
    if src:find("%S") then
      if f then
        if not M.eval(src, env) then failed = true end
      else
        failed = true
        io.stdout:flush()
        io.stderr:write(err, "\n")
      end
    end
    io.stdout:flush()
  end
  if tty then io.write("\n") end
  return failed and not tty
end

return M
