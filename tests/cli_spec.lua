-- cli_spec: the command line of the generate tool and the launcher —
-- one-line errors with status 2 before any output, every flag's mapping to
-- load and generate options, and runs with the default model (--json).
package.path = "./?.lua;" .. package.path
local shell = require("tests.shell")
local cli = require("lrun.cli")
local lrun = shell.launcher
local path = os.getenv("LRUN_MODEL")

-- Runs lrun with words (quoted); stdout and stderr apart.
local function run(words, input)
  local cmd = { shell.quote(lrun) }
  for _, w in ipairs(words) do cmd[#cmd + 1] = shell.quote(w) end
  local err, inp = os.tmpname(), os.tmpname()
  local f = io.open(inp, "w"); f:write(input or ""); f:close()
  local p = assert(io.popen("{ " .. table.concat(cmd, " ") .. " 2>" .. shell.quote(err) .. " < " .. shell.quote(inp)
    .. "; echo \"rc=$?\"; }"))
  local all = p:read("*a")
  p:close()
  f = io.open(err); local e = f:read("*a"); f:close()
  os.remove(err); os.remove(inp)
  local out, rc = all:match("^(.-)rc=(%d+)\n$")
  return out, tonumber(rc), e
end

local function tool(words)
  local w = { "examples/generate.lua", "-m", path or "/nonexistent.gguf" }
  for _, x in ipairs(words) do w[#w + 1] = x end
  return run(w)
end

describe("cli flags", function()
  local bad = {
    { { "--gpu-budget", "foo" }, "--gpu-budget foo: expected a size" },
    { { "-n", "-5" }, "-n -5: expected a whole number >= -1" },
    { { "--top-p", "2" }, "--top-p 2: expected a number in (0, 1]" },
    { { "--top-k", "-3" }, "--top-k -3: expected a whole number >= 0" },
    { { "-c", "-1" }, "-c -1: expected a whole number >= 0" },
    { { "-ngl", "-1" }, "-ngl -1: expected a whole number >= 0" },
    { { "--n-cpu-moe", "-2" }, "--n-cpu-moe -2: expected a whole number >= 0" },
    { { "--n-cpu-moe", "x" }, "--n-cpu-moe x: expected a whole number >= 0" },
    { { "--moe-host", "both" }, "--moe-host both: expected compute, cache or hybrid" },
    { { "--prefetch", "1000" }, "--prefetch 1000: expected a layer count from 1 to 64" },
    { { "--temp", "-1" }, "--temp -1: expected a number >= 0" },
    { { "--device", "tpu" }, "--device tpu: expected cpu, cuda, cuda:N" },
    { { "-ot", "bad" }, "-ot bad: expected PATTERN=TIER" },
    { { "-ot", "x=tape" }, "-ot x=tape: expected TIER" },
    { { "-ot", "[=host" }, "is not a valid Lua pattern" },
    { { "--policy", "smrt" }, "--policy smrt: expected conservative, aggressive, layers, smart" },
    { { "--min-p", "1.5" }, "--min-p 1.5: expected a number in [0, 1]" },
    { { "--typical", "0" }, "--typical 0: expected a number in (0, 1]" },
    { { "--top-p", "0" }, "--top-p 0: expected a number in (0, 1]" },
    { { "--repeat-penalty", "0" }, "--repeat-penalty 0: expected a number > 0" },
    { { "-s", "-2" }, "-s -2: expected a whole number from -1" },
    { { "-t", "many" }, "-t many: expected a thread count" },
    { { "-b", "0" }, "-b 0: expected a whole number >= 1" },
    { { "-ub", "x" }, "-ub x: expected a whole number >= 1" },
    { { "--cache-type", "paged" }, "--cache-type paged: expected dynamic, static" },
    { { "--cache-bits", "3" }, "--cache-bits 3: expected 8 or 4" },
    { { "-ctk", "q5_1" }, "-ctk q5_1: expected f16, f32, q8_0 or q4_0" },
    { { "-ctk", "q8_0", "-ctv", "f16" }, "give the same type to both" },
    { { "-ctk", "q8_0", "--cache-type", "static" }, "needs the quantized cache" },
    { { "--cache-bits", "4", "--cache-type", "static" }, "bits are for the quantized cache only" },
    { { "-f", "/nonexistent/prompt.txt" }, "-f /nonexistent/prompt.txt: no readable file" },
    { { "--chat-template", "/nonexistent.jinja" }, "--chat-template /nonexistent.jinja: expected a Jinja template" },
    { { "-r", "" }, "-r '': expected a non-empty text" },
    { { "--bogus" }, "unknown option '--bogus'" },
    { { "-p" }, "-p: missing value" },
    { { "-p", "" }, "-p '': the prompt is empty" },
    { { "-p", "hi", "-f", "examples/generate.lua" }, "-f and -p" },
    { { "--repeat-last-n", "-2" }, "--repeat-last-n -2: expected a whole number >= -1" },
    { { "-n", "1e30" }, "-n 1e30: expected a whole number >= -1, at most 2147483647" },
    { { "--top-k", "2147483648" }, "--top-k 2147483648: expected a whole number >= 0, at most 2147483647" },
    { { "--mirostat", "3" }, "--mirostat 3: expected 0, 1 or 2" },
    { { "--mirostat-lr", "-1" }, "--mirostat-lr -1: expected a number >= 0" },
    { { "--xtc-probability", "2" }, "--xtc-probability 2: expected a number in [0, 1]" },
    { { "--xtc-threshold", "x" }, "--xtc-threshold x: expected a number in [0, 1]" },
    { { "--dry-multiplier", "-1" }, "--dry-multiplier -1: expected a number >= 0" },
    { { "--dry-allowed-length", "x" }, "--dry-allowed-length x: expected a whole number >= 0" },
    { { "--dry-penalty-last-n", "-5" }, "--dry-penalty-last-n -5: expected a whole number >= -1" },
    { { "--dry-base", "0" }, "--dry-base 0: expected a number > 0" },
    { { "--top-nsigma", "x" }, "--top-nsigma x: expected a number" },
    { { "--numa", "spread" }, "--numa spread: expected distribute, isolate or numactl" },
    { { "-sm", "col" }, "-sm col: expected none, layer or row" },
    { { "-ts", "1,1" }, "-ts 1,1: lrun runs a model on one GPU" },
    { { "-ts", "a,b" }, "-ts a,b: proportion 1: expected a number >= 0" },
    { { "-mg", "1", "--device", "cpu" }, "-mg 1 --device cpu: they name different devices" },
    { { "-dev", "tpu" }, "-dev tpu: expected cpu, cuda, cuda:N, llama.cpp's CUDA0 or none, or a list" },
    { { "-fa", "--color=blue" }, "--color blue: expected on, off or auto" },
    { { "--keep", "-3" }, "--keep -3: expected a whole number >= -1" },
    { { "-lv", "x" }, "-lv x: expected a whole number" },
    { { "-cnv", "-no-cnv" }, "-cnv and -no-cnv: choose one" },
    { { "-cnv", "--json" }, "--json and -cnv" },
    { { "--chat-template", "chatmlx" }, "--chat-template chatmlx: not a template lrun has built in (it has chatglm3" },
    { { "--grammar", "root ::= x" }, "--grammar: not supported by lrun (no constrained decoding" },
    { { "--grammar-file", "g.gbnf" }, "--grammar-file: not supported by lrun (" },
    { { "--json-schema", "{}" }, "--json-schema: not supported by lrun (" },
    { { "-j", "{}" }, "-j: not supported by lrun (" },
    { { "--lora", "a.gguf" }, "--lora: not supported by lrun (no LoRA adapters" },
    { { "--override-kv", "a=int:1" }, "--override-kv: not supported by lrun (GGUF metadata" },
  }
  for _, case in ipairs(bad) do
    local words, want = case[1], case[2]
    if #words == 0 or words[1] ~= "-p" and not (words[3] == "-f") then
      if words[1] ~= "-p" and #words > 0 then table.insert(words, 1, "hi"); table.insert(words, 1, "-p") end
    end
    it("rejects " .. table.concat(words, " ") .. " in one line, status 2, nothing on stdout", function()
      local out, rc, err = tool(words)
      assert.are.equal(2, rc)
      assert.are.equal("", out)
      assert.matches(want, err, 1, true)
      local _, lines = err:gsub("\n", "")
      assert.are.equal(1, lines)
      assert.is_nil(err:find("traceback", 1, true))
      assert.is_nil(err:find(".lua:%d+:"))
    end)
  end

  it("says 'not supported by lrun' for the unsupported flags, not 'see --help'", function()
    local _, rc, err = tool({ "-p", "hi", "--lora", "x.gguf" })
    assert.are.equal(2, rc)
    assert.are.equal("lrun: --lora: not supported by lrun (no LoRA adapters; merge the adapter into the weights first)\n",
      err:gsub("^[^:]*: ", "lrun: "))
  end)

  it("wants a prompt with -no-cnv", function()
    local out, rc, err = tool({ "-no-cnv" })
    assert.are.equal(2, rc)
    assert.are.equal("", out)
    assert.matches("no prompt", err, 1, true)
  end)

  it("processes llama.cpp's escapes", function()
    assert.are.equal("a\nb\tc'\"\\d", cli.escapes("a\\nb\\tc\\'\\\"\\\\d"))
    assert.are.equal("AB\\q\\x4", cli.escapes("\\x41B\\q\\x4"))
    assert.are.equal("end\\", cli.escapes("end\\"))
    local o = assert(cli.parse({ "-r", "\\n", "--in-prefix", "\\t", "--dry-sequence-breaker", "\\n" }, cli.generate_spec()))
    cli.apply_escapes(o)
    assert.are.same({ "\n" }, o.stop)
    assert.are.equal("\t", o.in_prefix)
    assert.are.same({ "\n" }, o.dry_sequence_breaker)
    local n = assert(cli.parse({ "-r", "\\n", "--no-escape" }, cli.generate_spec()))
    cli.apply_escapes(n)
    assert.are.same({ "\\n" }, n.stop)
  end)

  it("maps llama.cpp's device, MoE, sampler and log flags", function()
    local function lo(words) return cli.load_options(assert(cli.parse(words, cli.generate_spec()))) end
    assert.are.equal("cuda:1", lo({ "-dev", "CUDA1" }).device)
    assert.are.equal("cpu", lo({ "-dev", "none" }).device)
    assert.are.equal("cuda:2", lo({ "-mg", "2" }).device)
    assert.are.equal("cuda:1", lo({ "-ts", "0,1" }).device)
    assert.are.equal("cuda:0", lo({ "-ts", "3" }).device)
    assert.are.equal("experts_on_host", lo({ "-cmoe" }).policy)
    assert.are.equal(false, lo({ "-lv", "0" }).progress)
    -- --no-packed: packed = false (smart never packs), absent: nil (smart may, lrun.pack_plan)
    assert.are.equal(false, lo({ "--no-packed" }).packed)
    assert.is_nil(lo({}).packed)
    local c = { device = "CUDA0" }
    assert.is_nil(cli.check_config(c))
    assert.are.equal("cuda:0", c.device)
    local o = assert(cli.parse({ "--temp", "0.7", "--repeat-last-n", "32", "--dry-multiplier", "0.8", "--dry-base", "2",
      "--dry-allowed-length", "3", "--dry-penalty-last-n", "100", "--dry-sequence-breaker", "none",
      "--top-nsigma", "1.5", "--xtc-probability", "0.5", "--xtc-threshold", "0.2", "--mirostat", "2",
      "--mirostat-lr", "0.2", "--mirostat-ent", "4", "-fa", "on", "--no-warmup", "-co", "-cb", "--numa", "isolate",
      "--keep", "4", "-sm", "layer", "--no-display-prompt", "--verbose-prompt", "-mli", "-sys", "S" },
      cli.generate_spec()))
    local g = cli.generate_options(o)
    assert.are.equal(32, g.repeat_last_n)
    assert.are.same({ 0.8, 2, 3, 100 }, { g.dry_multiplier, g.dry_base, g.dry_allowed_length, g.dry_penalty_last_n })
    assert.are.same({}, g.dry_sequence_breakers)
    assert.are.equal(1.5, g.top_n_sigma)
    assert.are.same({ 0.5, 0.2 }, { g.xtc_probability, g.xtc_threshold })
    assert.are.same({ 2, 4, 0.2 }, { g.mirostat, g.mirostat_tau, g.mirostat_eta })
    assert.are.equal("on", o.flash_attn)
    assert.are.equal("S", o.system)
    local d = cli.generate_options(assert(cli.parse({}, cli.generate_spec())))
    assert.are.equal(64, d.repeat_last_n) -- llama.cpp's default window
    assert.is_nil(d.dry_multiplier)
    assert.is_nil(d.mirostat)
    assert.is_true(assert(cli.parse({ "-fa", "-p", "x" }, cli.generate_spec())).flash_attn)
    assert.are.equal("llama3", cli.template_name("llama3"))
    assert.is_nil(cli.template_name("llama9"))
  end)

  it("rejects --device tpu and -ot bad at the launcher's start-up", function()
    for _, words in ipairs({ { "--device", "tpu" }, { "-ot", "bad" }, { "--gpu-budget", "foo" } }) do
      local w = { words[1], words[2], "-e", "print('ran')" }
      local out, rc, err = run(w)
      assert.are.equal(2, rc)
      assert.are.equal("", out)
      assert.matches(words[1] .. " " .. words[2], err, 1, true)
    end
  end)

  it("takes --policy by name in the launcher", function()
    local out, rc = run({ "--policy", "smart", "-e", "io.write(require('lrun.config').policies[1])" })
    assert.are.equal(0, rc)
    assert.are.equal("smart", out)
  end)

  it("maps every flag to load and generate options", function()
    local o = assert(cli.parse({ "-n", "-1", "-b", "64", "-ub", "32", "--temp", "0.5", "--typical", "0.9",
      "--presence-penalty", "0.5", "--frequency-penalty", "0.25", "-s", "-1", "-r", "a", "--stop", "b",
      "--ignore-eos", "--no-mmap", "--no-op-offload", "-ot", "ffn=cpu", "-ctk", "q4_0", "-ctv", "q4_0", "--mlock", "--jinja",
      "--log-disable", "-c", "256" }, cli.generate_spec()))
    local lo, g = cli.load_options(o), cli.generate_options(o)
    assert.is_nil(cli.check_combination(o))
    assert.are.same({ ".=host", "ffn=cpu" }, lo.overrides)
    assert.are.equal(-1, lo.host_stream_rows) -- --no-op-offload
    assert.are.equal("quantized", lo.cache_implementation)
    assert.are.same({ nbits = 4 }, lo.cache_config)
    assert.are.equal(256, lo.n_ctx)
    assert.are.equal(false, lo.progress)
    assert.is_nil(g.max_new_tokens) -- -1: filled in from the context
    assert.are.equal(32, g.n_batch)
    assert.are.equal(0.9, g.typical_p)
    assert.are.equal(0.5, g.presence_penalty)
    assert.are.equal(0.25, g.frequency_penalty)
    assert.is_nil(g.seed)
    assert.are.same({ "a", "b" }, g.stop)
    assert.are.equal(false, g.eos_token_id)
    assert.is_true(g.do_sample)
    local o2 = assert(cli.parse({ "--cache-type", "offloaded_static", "-ctk", "f32", "--temp", "0" }, cli.generate_spec()))
    local lo2, g2 = cli.load_options(o2), cli.generate_options(o2)
    assert.are.equal("offloaded_static", lo2.cache_implementation)
    assert.are.equal("f32", lo2.kv_dtype)
    assert.is_nil(g2.do_sample)
    local lo3 = cli.load_options(assert(cli.parse({ "--cache-bits", "8" }, cli.generate_spec())))
    assert.are.equal("quantized", lo3.cache_implementation)
    assert.are.same({ nbits = 8 }, lo3.cache_config)
    local lo4 = cli.load_options(assert(cli.parse({ "--n-cpu-moe", "3" }, cli.generate_spec())))
    assert.are.equal(3, lo4.n_cpu_moe)
    local lo5 = cli.load_options(assert(cli.parse({ "--moe-host", "hybrid" }, cli.generate_spec())))
    assert.are.equal("hybrid", lo5.moe_host)
  end)

  it("lists every flag in docs/cli.md's table", function()
    local f = assert(io.open("docs/cli.md"))
    local doc = f:read("*a")
    f:close()
    for _, s in ipairs(cli.generate_spec()) do
      assert.is_truthy(doc:find("\n| `" .. s[1] .. "`", 1, true), s[1] .. " is not in docs/cli.md")
    end
  end)

  it("has a llama.cpp name (or false) and help for every flag", function()
    for _, s in ipairs(cli.flags) do
      assert.is_not_nil(s.llama, s[1])
      assert.is_truthy(s.help, s[1])
    end
  end)
end)

describe("cli runs", function()
  if not path then
    pending("LRUN_MODEL is not set")
    return
  end
  local function decode(text) return assert(require("dkjson").decode(text)) end

  it("prints one JSON object with --json", function()
    local out, rc = tool({ "-p", "The capital of France is", "-n", "6", "--temp", "0", "--json" })
    assert.are.equal(0, rc)
    local v = decode(out)
    assert.are.equal("The capital of France is", v.prompt)
    assert.are.equal(6, v.n_generated)
    assert.are.equal("length", v.stop_reason)
    assert.are.equal(6, #v.ids)
    assert.is_truthy(v.timings.predicted_per_second)
    assert.is_truthy(v.placement.bytes)
  end)

  it("stops at -r text, ignores eos, reads -f, with --log-disable", function()
    local p = os.tmpname()
    local f = io.open(p, "w"); f:write("The capital of France is"); f:close()
    local out, rc, err = tool({ "-f", p, "-n", "20", "--temp", "0", "-r", ".", "--ignore-eos", "--log-disable" })
    os.remove(p)
    assert.are.equal(0, rc)
    assert.are.equal("The capital of France is Paris\n", out)
    assert.are.equal("", err)
  end)

  it("runs with the KV cache flags and --no-mmap", function()
    local base = tool({ "-p", "The capital of France is", "-n", "6", "--temp", "0", "--log-disable" })
    for _, words in ipairs({ { "--cache-type", "static" }, { "--no-mmap" },
      { "--cache-type", "offloaded" }, { "-b", "2" } }) do
      local w = { "-p", "The capital of France is", "-n", "6", "--temp", "0", "--log-disable" }
      for _, x in ipairs(words) do w[#w + 1] = x end
      local out, rc = tool(w)
      assert.are.equal(0, rc)
      assert.are.equal(base, out, table.concat(words, " "))
    end
    local a = tool({ "-p", "Once", "-n", "6", "--typical", "0.5", "--presence-penalty", "0.5",
      "--frequency-penalty", "0.2", "-s", "3", "--log-disable" })
    local b = tool({ "-p", "Once", "-n", "6", "--typical", "0.5", "--presence-penalty", "0.5",
      "--frequency-penalty", "0.2", "-s", "3", "--log-disable" })
    assert.are.equal(a, b)
    local out, rc = tool({ "-p", "The capital of France is", "-n", "6", "--temp", "0", "--cache-bits", "8", "--json" })
    assert.are.equal(0, rc)
    assert.are.equal(6, decode(out).n_generated)
    out, rc = tool({ "-p", "The capital of France is", "-n", "6", "--temp", "0", "-ctk", "f32", "-ctv", "f32", "--json" })
    assert.are.equal(0, rc) -- the f32 cache's numerics differ from f16's: only the run is checked
    assert.are.equal(6, decode(out).n_generated)
  end)

  it("takes llama-cli's form: lrun -m MODEL -p TEXT, launcher options first or not", function()
    local base = tool({ "-p", "The capital of France is", "-n", "6", "--temp", "0", "--log-disable" })
    for _, words in ipairs({
      { "-m", path, "-p", "The capital of France is", "-n", "6", "--temp", "0", "--log-disable" },
      { "--device", "cpu", "-m", path, "-p", "The capital of France is", "-n", "6", "--temp", "0", "--log-disable" },
      { "-p", "The capital of France is", "-n", "6", "-m", path, "--temp", "0", "--log-disable" },
      { path, "-p", "The capital of France is", "-n", "6", "--temp", "0", "--log-disable" },
    }) do
      local out, rc = run(words)
      assert.are.equal(0, rc, table.concat(words, " "))
      assert.are.equal(base, out, table.concat(words, " "))
    end
    local out, rc, err = run({ "-m", path, "-p", "hi", "--top-p", "2" })
    assert.are.equal(2, rc)
    assert.are.equal("", out)
    assert.matches("--top-p 2", err, 1, true)
  end)

  local function chat(words, input)
    local w = { "-m", path, "--temp", "0", "-n", "12", "--log-disable" }
    for _, x in ipairs(words) do w[#w + 1] = x end
    return run(w, input)
  end

  it("starts a conversation when there is no prompt; EOF ends it", function()
    local one = chat({ "-st", "-p", "What is the capital of France?" })
    local out, rc, err = chat({}, "What is the capital of France?\n")
    assert.are.equal(0, rc, err)
    assert.are.equal(one, out)
    assert.is_truthy(out:find("%S"))
    out, rc = chat({ "-cnv" }, "")
    assert.are.equal(0, rc)
    assert.are.equal("", out)
  end)

  it("-cnv -p sends the prompt first, then reads turns; -sys is the system message", function()
    local out, rc = chat({ "-cnv", "-p", "Hi!" }, "What is 2+2?\n/quit\nnot sent\n")
    assert.are.equal(0, rc)
    local first = chat({ "-st", "-p", "Hi!" })
    assert.are.equal(first, out:sub(1, #first))
    local _, turns = out:gsub("\n", "")
    assert.is_true(turns >= 2)
    local a = chat({ "-st", "-sys", "Answer in French.", "-p", "Hi!" })
    local b = chat({ "-sys", "Answer in French." }, "Hi!\n")
    assert.are.equal(a, b)
    assert.are_not.equal(a, first)
  end)

  it("-mli joins lines until one ends in \\; --in-prefix/--in-suffix wrap each message", function()
    local a = chat({ "-st", "-p", "Name a colour.\\nOne word." })
    local b = chat({ "-mli" }, "Name a colour.\nOne word.\\\n")
    assert.are.equal(a, b)
    local c = chat({}, "Name a colour.\\\nOne word.\n") -- without -mli: \ at the end goes on
    assert.are.equal(a, c)
    local d = chat({ "-st", "-p", "Q: Name a colour. A:" })
    local e = chat({ "--in-prefix", "Q: ", "--in-suffix", " A:" }, "Name a colour.\n")
    assert.are.equal(d, e)
  end)

  it("on a terminal: Ctrl-C stops an answer and the prompt comes back; Ctrl-C at the prompt ends", function()
    if os.execute("python3 -c 'import pty' >/dev/null 2>&1") ~= 0 then
      pending("python3 with pty is not installed")
      return
    end
    local p = assert(io.popen("python3 tests/chat_pty.py " .. shell.quote(lrun) .. " " .. shell.quote(path) .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    assert.matches("> Say hi.", out, 1, true) -- the prompt came back after the first Ctrl-C
    local _, prompts = out:gsub("> ", "")
    assert.is_true(prompts >= 3, out)
    assert.matches("status 0\n$", out)
  end)

  it("renders --chat-template by llama.cpp's built-in names", function()
    local _, rc, err = run({ "-m", path, "-st", "-p", "Hi", "-n", "1", "--temp", "0", "--verbose-prompt",
      "--chat-template", "chatml" })
    assert.are.equal(0, rc)
    assert.matches("prompt: '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'", err, 1, true)
    _, rc, err = run({ "-m", path, "-st", "-p", "Hi", "-n", "1", "--temp", "0", "--verbose-prompt",
      "--chat-template", "llama3" })
    assert.are.equal(0, rc)
    assert.matches("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", err, 1, true)
  end)

  it("escapes -p by default, shows the prompt's tokens, hides the prompt on request", function()
    local out = tool({ "-p", "The capital\\nof France is", "-n", "2", "--temp", "0", "--log-disable" })
    assert.are.equal("The capital\nof France is", out:sub(1, 24))
    out = tool({ "-p", "The capital\\nof France is", "-n", "2", "--temp", "0", "--log-disable", "--no-escape" })
    assert.are.equal("The capital\\nof France is", out:sub(1, 25))
    local full = tool({ "-p", "The capital of France is", "-n", "4", "--temp", "0", "--log-disable" })
    local rc, err
    out, rc, err = tool({ "-p", "The capital of France is", "-n", "4", "--temp", "0", "--log-disable",
      "--no-display-prompt", "--verbose-prompt" })
    assert.are.equal(0, rc)
    assert.are.equal(full, "The capital of France is" .. out)
    assert.matches("number of tokens in prompt = 5", err, 1, true)
  end)

  it("accepts llama.cpp's flags that lrun has no use for, with the same output", function()
    local base = tool({ "-p", "The capital of France is", "-n", "6", "--temp", "0", "--log-disable" })
    for _, words in ipairs({ { "-fa" }, { "-fa", "off" }, { "--flash-attn=auto" }, { "--no-warmup" }, { "--color" },
      { "-co", "on" }, { "-cb" }, { "-nocb" }, { "--numa", "distribute" }, { "--keep", "8" }, { "-sm", "none" },
      { "-sm", "layer" }, { "-lv", "3" }, { "-dev", "none" }, { "-cmoe" }, { "--repeat-last-n", "16" },
      { "--in-prefix", "x" }, { "-mli" }, { "--escape" } }) do
      local w = { "-p", "The capital of France is", "-n", "6", "--temp", "0", "--log-disable" }
      for _, x in ipairs(words) do w[#w + 1] = x end
      local out, rc, err = tool(w)
      assert.are.equal(0, rc, table.concat(words, " ") .. ": " .. err)
      assert.are.equal(base, out, table.concat(words, " "))
    end
  end)

  it("samples with DRY, top-n-sigma, XTC and mirostat, the same for a seed", function()
    for _, words in ipairs({ { "--dry-multiplier", "0.8" }, { "--top-nsigma", "1" },
      { "--xtc-probability", "0.5", "--xtc-threshold", "0.05" }, { "--mirostat", "1" },
      { "--mirostat", "2", "--mirostat-ent", "3", "--mirostat-lr", "0.2" },
      { "--repeat-penalty", "1.3", "--repeat-last-n", "8" } }) do
      local w = { "-p", "Once upon a time", "-n", "8", "-s", "7", "--json" }
      for _, x in ipairs(words) do w[#w + 1] = x end
      local a, rc = tool(w)
      assert.are.equal(0, rc, table.concat(words, " "))
      local b = tool(w)
      assert.are.same(decode(a).ids, decode(b).ids, table.concat(words, " "))
      assert.are.equal(8, #decode(a).ids)
    end
  end)

  it("fails a load in one line with status 1", function()
    local out, rc, err = run({ "examples/generate.lua", "-m", "/nonexistent.gguf", "-p", "hi" })
    assert.are.equal(1, rc)
    assert.are.equal("", out)
    assert.matches("/nonexistent.gguf", err, 1, true)
    assert.is_nil(err:find("traceback", 1, true))
  end)
end)
