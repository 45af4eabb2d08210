-- launcher_spec: the lrun executable — options, arg, exit codes, config.
local root = (debug.getinfo(1, "S").source:match("^@(.*)/tests/[^/]*$"))
if root == nil or root == "." then root = os.getenv("PWD")
elseif root:sub(1, 1) ~= "/" then root = os.getenv("PWD") .. "/" .. root end
package.path = "./?.lua;" .. package.path
local shell = require("tests.shell")
-- The launcher that runs the specs (build/, or build-asan/ under make asan).
local build = require("lrun.config").build
local lrun = shell.launcher
local sh_quote = shell.quote

-- Runs lrun with the given words (quoted), stdin from `input`; returns
-- stdout+stderr and the exit code.
local function run(words, input)
  local cmd = { sh_quote(lrun) }
  for _, w in ipairs(words) do cmd[#cmd + 1] = sh_quote(w) end
  local line = table.concat(cmd, " ")
  return shell.run(input and line or line .. " < /dev/null", input)
end

local function script(text)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w")); f:write(text); f:close()
  return path
end

local cleanup = {}
local function tmp_script(text)
  local p = script(text)
  cleanup[#cleanup + 1] = p
  return p
end
teardown(function() for _, p in ipairs(cleanup) do os.remove(p) end end)

describe("lrun launcher", function()
  it("builds arg as luajit does", function()
    local s = tmp_script([[
      for i = -3, #arg do io.write(i, "=", tostring(arg[i]), " ") end
      io.write("| ", select("#", ...), " ", table.concat({...}, ","), "\n")
    ]])
    local out, rc = run({ "-e", "x=1", s, "a", "b c" })
    assert.are.equal(0, rc)
    assert.are.equal("-3=" .. lrun .. " -2=-e -1=x=1 0=" .. s .. " 1=a 2=b c | 2 a,b c\n", out)
  end)

  it("passes arguments that look like options to the script", function()
    local s = tmp_script("io.write(table.concat(arg, ' '), '\\n')")
    local out, rc = run({ s, "-e", "--policy", "-i" })
    assert.are.equal(0, rc)
    assert.are.equal("-e --policy -i\n", out)
  end)

  it("stops reading options at --", function()
    local s = tmp_script("io.write(arg[0] == ... and 'same' or 'x', ' ', tostring(arg[-1]), '\\n')")
    local out, rc = run({ "--", s, s })
    assert.are.equal(0, rc)
    assert.are.equal("same --\n", out)
  end)

  it("runs -e chunks in order, before the script", function()
    local s = tmp_script("io.write('script\\n')")
    local out, rc = run({ "-e", "io.write('one ')", "-e", "io.write('two ')", s })
    assert.are.equal(0, rc)
    assert.are.equal("one two script\n", out)
  end)

  it("runs -e without a script and without a REPL", function()
    local out, rc = run({ "-e", "io.write(1+1)" }, "print('repl ran')\n")
    assert.are.equal(0, rc)
    assert.are.equal("2", out)
  end)

  it("starts the REPL with no script and no -e", function()
    local out, rc = run({}, "1+2\n")
    assert.are.equal(0, rc)
    assert.are.equal("3\n", out)
  end)

  it("opens the REPL after the script with -i, with its globals", function()
    local s = tmp_script("answer = 42")
    local out, rc = run({ "-i", s }, "answer\n")
    assert.are.equal(0, rc)
    assert.are.equal("42\n", out)
  end)

  it("prints a traceback and exits 1 when the script fails", function()
    local s = tmp_script("local function f() error('boom') end\nf()\n")
    local out, rc = run({ s })
    assert.are.equal(1, rc)
    assert.matches(":1: boom", out, 1, true)
    assert.matches("stack traceback:", out, 1, true)
  end)

  it("still opens the REPL with -i after a failing script, and exits 1", function()
    local s = tmp_script("error('boom')")
    local out, rc = run({ "-i", s }, "io.write('after\\n')\n")
    assert.are.equal(1, rc)
    assert.matches("boom", out, 1, true)
    assert.matches("after\n", out, 1, true)
  end)

  it("exits 1 when a -e chunk fails, without running the script", function()
    local s = tmp_script("io.write('script ran')")
    local out, rc = run({ "-e", "error('bad chunk')", s })
    assert.are.equal(1, rc)
    assert.matches("bad chunk", out, 1, true)
    assert.is_nil(out:find("script ran", 1, true))
  end)

  it("reports a syntax error in the script", function()
    local s = tmp_script("x = = 1")
    local out, rc = run({ s })
    assert.are.equal(1, rc)
    assert.matches("unexpected symbol", out, 1, true)
  end)

  it("keeps the script's os.exit code", function()
    local out, rc = run({ "-e", "os.exit(3)" })
    assert.are.equal(3, rc)
    assert.are.equal("", out)
  end)

  it("reads the script from stdin with -", function()
    local out, rc = run({ "-", "x" }, "io.write('from stdin ', arg[1], '\\n')")
    assert.are.equal(0, rc)
    assert.are.equal("from stdin x\n", out)
  end)

  it("prints its version", function()
    local out, rc = run({ "-v" })
    assert.are.equal(0, rc)
    assert.matches("^lrun %d+%.%d+%.%d+ %(LuaJIT", out)
    local out2 = run({ "--version" })
    assert.are.equal(out, out2)
    assert.matches(require("lrun.version"), out, 1, true)
  end)

  it("prints its help", function()
    local out, rc = run({ "--help" })
    assert.are.equal(0, rc)
    assert.matches("--gpu-budget SIZE", out, 1, true)
    assert.matches("-e CODE", out, 1, true)
  end)

  it("rejects an unknown option", function()
    local out, rc = run({ "--bogus", "x.lua" })
    assert.are.equal(2, rc)
    assert.matches("unknown option '--bogus'", out, 1, true)
  end)

  it("rejects an option without its value", function()
    local out, rc = run({ "--device" })
    assert.are.equal(2, rc)
    assert.matches("option '--device' needs a value", out, 1, true)
  end)

  it("finds its Lua package from any directory", function()
    local p = assert(io.popen("cd / && " .. sh_quote(lrun)
      .. " -e \"io.write(require('lrun').version, ' ', require('lrun.config').lib)\" 2>&1"))
    local out = p:read("*a")
    p:close()
    assert.are.equal(require("lrun.version") .. " " .. build .. "/liblrun.so", out)
  end)

  describe("config", function()
    local function config_of(words)
      local w = {}
      for _, x in ipairs(words) do w[#w + 1] = x end
      w[#w + 1] = "-e"
      w[#w + 1] = "local c = require('lrun.config'); io.write(tostring(c.device), ' ', tostring(c.gpu_budget), ' ', "
        .. "tostring(c.threads), ' ', table.concat(c.policies, ','))"
      return run(w)
    end

    it("has no device, budget, threads or policies by default", function()
      local out, rc = config_of({})
      assert.are.equal(0, rc)
      assert.are.equal("nil nil nil ", out)
    end)

    it("takes --device, -t and --threads", function()
      assert.are.equal("cuda:1 nil 4 ", (config_of({ "--device", "cuda:1", "-t", "4" })))
      assert.are.equal("cpu nil 2 ", (config_of({ "--device=cpu", "--threads", "2" })))
    end)

    it("rejects a bad thread count", function()
      local out, rc = config_of({ "-t", "many" })
      assert.are.equal(2, rc)
      assert.matches("-t: expected a thread count", out, 1, true)
    end)

    local budgets = {
      ["512M"] = 512 * 2^20, ["4G"] = 4 * 2^30, ["4GiB"] = 4 * 2^30, ["1.5G"] = 1.5 * 2^30,
      ["2g"] = 2 * 2^30, ["100"] = 100, ["1K"] = 1024, ["3GB"] = 3e9, ["0"] = 0, ["0.5T"] = 2^39,
    }
    for text, bytes in pairs(budgets) do
      it("parses --gpu-budget " .. text, function()
        local out, rc = config_of({ "--gpu-budget", text })
        assert.are.equal(0, rc)
        assert.are.equal(string.format("nil %d nil ", bytes), out)
      end)
    end

    it("takes --gpu-budget=SIZE", function()
      assert.are.equal(string.format("nil %d nil ", 2 * 2^30), (config_of({ "--gpu-budget=2G" })))
    end)

    for _, bad in ipairs({ "4X", "lots", "-1G", "", "G", "1.2.3G", "4 G B", "1e400" }) do
      it("rejects --gpu-budget '" .. bad .. "' naming the option", function()
        local out, rc = config_of({ "--gpu-budget", bad })
        assert.are.equal(2, rc)
        assert.matches("--gpu-budget", out, 1, true)
      end)
    end

    it("passes existing --policy files in order", function()
      local a, b = tmp_script("return {}"), tmp_script("return {}")
      local out, rc = config_of({ "--policy", a, "--policy", b })
      assert.are.equal(0, rc)
      assert.are.equal("nil nil nil " .. a .. "," .. b, out)
    end)

    it("rejects a missing --policy file, naming it", function()
      local out, rc = config_of({ "--policy", "/nonexistent/mine.lua" })
      assert.are.equal(2, rc)
      assert.matches("--policy /nonexistent/mine.lua: No such file or directory", out, 1, true)
    end)

    it("rejects a --policy that is a directory", function()
      local out, rc = config_of({ "--policy", "/tmp" })
      assert.are.equal(2, rc)
      assert.matches("--policy /tmp: not a readable file", out, 1, true)
    end)
  end)
end)

describe("lrun.size", function()
  local size = require("lrun.size")

  it("parses the forms the launcher accepts", function()
    assert.are.equal(512 * 2^20, size.parse("512M"))
    assert.are.equal(4 * 2^30, size.parse("4GiB"))
    assert.are.equal(1.5 * 2^30, size.parse("1.5G"))
    assert.are.equal(2^20, size.parse(" 1 MiB "))
    assert.are.equal(4e9, size.parse("4GB"))
    assert.are.equal(1234, size.parse(1234))
  end)

  it("explains what is wrong", function()
    local n, err = size.parse("4X")
    assert.is_nil(n)
    assert.matches("unknown unit 'X'", err, 1, true)
    n, err = size.parse("-3G")
    assert.is_nil(n)
    assert.matches("expected a size", err, 1, true)
    assert.is_nil((size.parse(-1)))
    assert.is_nil((size.parse(0.5)))
    assert.is_nil((size.parse({})))
  end)

  it("formats sizes", function()
    assert.are.equal("1.5 KiB", size.format(1536))
    assert.are.equal("12 B", size.format(12))
    assert.are.equal("4.0 GiB", size.format(4 * 2^30))
  end)
end)

describe("lrun launcher, for users", function()
  local model = os.getenv("LRUN_MODEL")

  it("has the lrun global in -e chunks and scripts", function()
    local out, rc = run({ "-e", "io.write(type(lrun), ' ', type(lrun.load))" })
    assert.are.equal(0, rc)
    assert.are.equal("table function", out)
  end)

  it("runs `lrun MODEL -p TEXT` as the generate tool", function()
    if not model then return pending("LRUN_MODEL is not set") end
    local out, rc = run({ model, "-p", "The capital of France is", "-n", "4", "--temp", "0", "--log-disable" })
    assert.are.equal(0, rc)
    assert.matches("^The capital of France is Paris", out)
    local out2, rc2 = run({ model, "-n", "-5" })
    assert.are.equal(2, rc2)
    assert.matches("^lrun: %-n %-5: expected", out2)
  end)

  it("opens `lrun MODEL` in the REPL as m", function()
    if not model then return pending("LRUN_MODEL is not set") end
    local out, rc = run({ model }, "m.n_vocab > 0\n")
    assert.are.equal(0, rc)
    assert.are.equal("true\n", out)
  end)

  it("says what to do when `lrun MODEL` cannot load", function()
    local out, rc = run({ "/nonexistent/model.gguf" })
    assert.are.equal(1, rc)
    assert.matches("/nonexistent/model.gguf", out, 1, true)
    assert.matches("-p TEXT", out, 1, true)
    assert.is_nil(out:find("unexpected symbol", 1, true)) -- not run as Lua
  end)

  local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>&1; echo \"rc=$?\""))
    local out = p:read("*a")
    p:close()
    local body, rc = out:match("^(.-)rc=(%d+)\n$")
    return body, tonumber(rc)
  end

  it("gives a hint when a copied binary cannot find its package", function()
    local dir = os.tmpname()
    os.remove(dir)
    local out, rc = sh("mkdir -p " .. sh_quote(dir) .. " && cp " .. sh_quote(lrun) .. " " .. sh_quote(dir .. "/lrun")
      .. " && env -u LRUN_ROOT " .. sh_quote(dir .. "/lrun") .. " -e 'print(1)'")
    sh("rm -rf " .. sh_quote(dir))
    assert.are.equal(1, rc)
    assert.matches("cannot find the lrun Lua package", out, 1, true)
    assert.matches("make install", out, 1, true)
  end)

  it("runs from make install's layout (PREFIX/bin, share/lrun, lib/lrun)", function()
    local dir = os.tmpname()
    os.remove(dir)
    local q = sh_quote
    local setup_cmd = table.concat({
      "mkdir -p " .. q(dir .. "/bin") .. " " .. q(dir .. "/share/lrun") .. " " .. q(dir .. "/lib/lrun/lua/lrun"),
      "cp " .. q(lrun) .. " " .. q(dir .. "/bin/lrun"),
      "ln -s " .. q(root .. "/lua") .. " " .. q(dir .. "/share/lrun/lua"),
      "ln -s " .. q(root .. "/policies") .. " " .. q(dir .. "/share/lrun/policies"),
      "ln -s " .. q(build .. "/liblrun.so") .. " " .. q(dir .. "/lib/lrun/liblrun.so"),
      "ln -s " .. q(build .. "/lua/lrun/cdef.lua") .. " " .. q(dir .. "/lib/lrun/lua/lrun/cdef.lua"),
    }, " && ")
    local out, rc = sh(setup_cmd .. " && env -u LRUN_ROOT " .. q(dir .. "/bin/lrun")
      .. " -e \"io.write(require('lrun.config').lib, ' ', tostring(require('lrun.ffi').C ~= nil))\"")
    sh("rm -rf " .. q(dir))
    assert.are.equal(0, rc, out)
    assert.are.equal(dir .. "/lib/lrun/liblrun.so true", out)
  end)
end)
