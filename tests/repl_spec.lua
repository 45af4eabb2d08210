-- repl_spec: the REPL, fed through a pipe to the launcher (build/lrun).
package.path = "./?.lua;" .. package.path
local shell = require("tests.shell")

-- Feeds input to the REPL; returns stdout+stderr and the exit code.
local function repl(input) return shell.run(shell.quote(shell.launcher), input) end

describe("the REPL", function()
  it("prints the value of an expression", function()
    assert.are.equal("3\n", (repl("1 + 2\n")))
  end)

  it("prints every value, tab-separated, nil included", function()
    assert.are.equal('1\tnil\t"two"\n', (repl("1, nil, 'two'\n")))
  end)

  it("prints nothing for a statement", function()
    assert.are.equal("", (repl("x = 5\nlocal y = 2\n")))
  end)

  it("accepts the = prefix", function()
    assert.are.equal("10\n", (repl("x = 5\n= x * 2\n")))
  end)

  it("prints tables readably", function()
    local out = repl("t = {1, 2, name = 'x', sub = {a = true}}\nt\n")
    assert.are.equal('{ 1, 2, name = "x", sub = { a = true } }\n', out)
  end)

  it("marks cycles instead of looping", function()
    local out = repl("t = {}; t.me = t\nt\n")
    assert.matches("^{ me = <cycle: table: 0x%x+> }\n$", out)
  end)

  it("breaks long tables over lines", function()
    local out = repl("t = {} for i = 1, 30 do t[i] = i * 1000 end\nt\n")
    assert.matches("^{\n  1000,\n  2000,\n", out)
    assert.matches("  30000\n}\n$", out)
  end)

  it("survives an error and goes on", function()
    local out, rc = repl("error('boom')\nprint('still here')\n")
    assert.are.equal(1, rc) -- piped input that failed: status 1 at the end
    assert.matches("stdin:1: boom", out, 1, true)
    assert.matches("still here\n$", out)
  end)

  it("survives a syntax error", function()
    local out, rc = repl("x = = 1\n2 * 21\n")
    assert.are.equal(1, rc)
    assert.matches("unexpected symbol near '='", out, 1, true)
    assert.matches("42\n$", out)
  end)

  it("shows where an error in a function came from", function()
    local out = repl("function f()\n  error('inner')\nend\nf()\n")
    assert.matches("stdin:2: inner", out, 1, true)
    assert.matches("in function 'f'", out, 1, true)
  end)

  it("prints error objects through __tostring", function()
    local out = repl("error(setmetatable({}, {__tostring = function() return 'custom error' end}))\n")
    assert.matches("^custom error", out)
  end)

  it("continues an incomplete chunk on the next lines", function()
    local out = repl("for i = 1, 3 do\n  io.write(i, ' ')\nend\nprint()\n")
    assert.are.equal("1 2 3 \n", out)
  end)

  it("continues an incomplete expression", function()
    assert.are.equal("6\n", (repl("1 +\n2 +\n3\n")))
    assert.are.equal("{ 1, 2 }\n", (repl("{1,\n2}\n")))
  end)

  it("reports a chunk left incomplete at the end of input", function()
    local out, rc = repl("for i = 1, 3 do\n")
    assert.are.equal(1, rc)
    assert.matches("'end' expected", out, 1, true)
  end)

  it("exits 0 at the end of input", function()
    local out, rc = repl("")
    assert.are.equal("", out)
    assert.are.equal(0, rc)
  end)

  it("has lrun without a require", function()
    assert.are.equal('"' .. require("lrun.version") .. '"\n', (repl("lrun.version\n")))
  end)

  it("keeps globals set with os.exit working", function()
    local out, rc = repl("os.exit(4)\nprint('not reached')\n")
    assert.are.equal("", out)
    assert.are.equal(4, rc)
  end)
end)

describe("lrun.repl.compile", function()
  local compile = require("lrun.repl").compile

  it("compiles expressions and statements", function()
    assert.are.equal(7, compile("3 + 4")())
    assert.is_function(compile("x = 1"))
  end)

  it("says when a chunk is incomplete", function()
    local f, err, incomplete = compile("if x then")
    assert.is_nil(f)
    assert.matches("<eof>", err, 1, true)
    assert.is_true(incomplete)
    f, err, incomplete = compile("x = = 1")
    assert.is_nil(f)
    assert.is_false(incomplete)
  end)
end)

describe("lrun.pretty", function()
  local pretty = require("lrun.pretty")

  it("quotes strings and escapes control characters", function()
    assert.are.equal('"a\\nb\\t\\"c\\""', pretty.format('a\nb\t"c"'))
  end)

  it("writes keys that are not identifiers in brackets", function()
    assert.are.equal('{ [1.5] = 1, ["a b"] = 2, ["end"] = 3 }', pretty.format({ ["a b"] = 2, ["end"] = 3, [1.5] = 1 }))
  end)

  it("cuts deep and long tables", function()
    local deep = { { { { 1 } } } }
    assert.are.equal("{ { { … } } }", pretty.format(deep, { depth = 1 }))
    local long = {}
    for i = 1, 10 do long[i] = i end
    assert.are.equal("{ 1, 2, 3, … 7 more }", pretty.format(long, { max_items = 3 }))
  end)

  it("writes engine statistics, with a CUDA engine's host products when it ran some", function()
    local s = { steps = 3, bytes_streamed = 0, copy_seconds = 0, stall_seconds = 0, prefetch_hits = 0,
      prefetch_misses = 0, host_compute_bytes = 6e9, weight_device_bytes = 0, slot_bytes = 0, kv_bytes = 0,
      scratch_bytes = 0, host_compute_seconds = 0.1, host_wait_seconds = 0.025 }
    local text = pretty.stats(s)
    assert.truthy(text:find("host products 0.100 s (60.0 GB/s as run), host waited 0.025 s for the device", 1, true),
      text)
    s.host_compute_seconds = 0 -- none (the CPU backend, or nothing host-computed): no line
    assert.is_nil(pretty.stats(s):find("host products", 1, true))
  end)

  it("uses __tostring of objects", function()
    local obj = setmetatable({}, { __tostring = function() return "lrun.model<x>" end })
    assert.are.equal("{ m = lrun.model<x> }", pretty.format({ m = obj }))
  end)

  it("shows a tensor handle by name, dtype, shape and tier", function()
    local path = os.getenv("LRUN_MODEL")
    if not path then
      pending("LRUN_MODEL is not set")
      return
    end
    local m = assert(require("lrun").load(path, { progress = false }))
    local C = require("lrun.ffi").C
    local text = pretty.format(C.lrun_model_find_tensor(m.handle, "token_embd.weight"))
    m:free()
    assert.matches("^lrun_tensor<token_embd.weight q8_0 %[576, 49152%] %a+>$", text)
  end)
end)

describe("the REPL on a terminal", function()
  local have_python = os.execute("python3 -c 'import pty' >/dev/null 2>&1") == 0
  if not have_python then
    pending("python3 with pty is not installed")
    return
  end
  local out
  setup(function()
    local p = assert(io.popen("python3 tests/repl_pty.py " .. shell.quote(shell.launcher) .. " 2>&1"))
    out = p:read("*a")
    p:close()
  end)

  it("cancels the line on Ctrl-C and goes on", function()
    assert.matches("lrun> 40 + 2", out, 1, true)
    assert.matches("\n[^\n]*42\r?\n", out)
    assert.is_nil(out:find("1 + 40", 1, true))
    assert.is_nil(out:find("43", 1, true)) -- "1 + " was dropped, not joined to the next line
    assert.matches("status 0", out, 1, true)
  end)

  it("completes fields and module functions with Tab", function()
    assert.matches("x.alpha", out, 1, true)
    assert.matches("lrun.load(nil)", out, 1, true)
  end)
end)

describe("the REPL's helpers", function()
  local repl = require("lrun.repl")

  it("completes names, fields and methods without evaluating", function()
    local env = setmetatable({ mytable = { alpha = 1, beta = function() end } }, { __index = _G })
    assert.are.same({ "mytable.alpha", "mytable.beta" }, repl.complete("mytable.", env))
    assert.are.same({ "mytable:beta" }, repl.complete("mytable:", env))
    assert.are.same({ "string.format" }, repl.complete("string.form", env))
    assert.are.same({}, repl.complete("nosuch.x", env))
    local found = false
    for _, c in ipairs(repl.complete("lrun.lo", setmetatable({ lrun = require("lrun") }, { __index = _G }))) do
      if c == "lrun.load" then found = true end
    end
    assert.is_true(found)
  end)

  it("prints help", function()
    local out = shell.run(shell.quote(shell.launcher), "help()\nhelp(string)\n")
    assert.matches("lrun.load", out, 1, true)
    assert.matches("format()", out, 1, true)
  end)

  it("exits 1 when piped input fails", function()
    local _, rc = shell.run(shell.quote(shell.launcher), "1\nerror('x')\n2\n")
    assert.are.equal(1, rc)
    local _, rc2 = shell.run(shell.quote(shell.launcher), "1\n")
    assert.are.equal(0, rc2)
  end)
end)
