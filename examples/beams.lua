-- beams.lua — the seed scenario of issue 5: a long prompt, many beams in
-- diverse groups, under a device budget, with fallback strategies.
--
--   lrun examples/beams.lua -m model.gguf                       (40 beams, 40 groups, 23 tokens)
--   lrun examples/beams.lua -m model.gguf --gpu-budget 400M --fallback offload_kv,offload_weights
--   lrun examples/beams.lua -m model.gguf --beams 4 --groups 1 -n 32 -p "Once upon a time"
--
-- Without -p the prompt is ~1000 tokens of repeated text. Prints the best
-- few sequences with their scores, then timings and the fallbacks that fired.
local cli = require("lrun.cli")

local spec = cli.model_spec()
table.insert(spec, 2, { "-p", "--prompt", key = "prompt", arg = "TEXT", help = "the prompt (default: ~1000 tokens)" })
table.insert(spec, { "--beams", key = "beams", type = "int", default = 40, help = "num_beams" })
table.insert(spec, { "--groups", key = "groups", type = "int", default = 40, help = "num_beam_groups" })
table.insert(spec, { "--diversity", key = "diversity", type = "number", default = 1.0, help = "diversity_penalty" })
table.insert(spec, { "--show", key = "show", type = "int", default = 3, help = "sequences to print" })
table.insert(spec, { "--fallback", key = "fallback", arg = "LIST", help = "on_oom strategies, comma-separated" })
for _, s in ipairs(spec) do if s.key == "n_predict" then s.default = 23 end end
local opts = cli.parse_or_exit(arg, spec, "lrun examples/beams.lua -m FILE [options]")

local m = cli.load_or_exit(opts)
local ids
if opts.prompt then
  ids = m:tokenize(opts.prompt)
else
  local para = "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    .. "combined a screw press, oil-based ink and movable metal type into a system that could produce books "
    .. "quickly and cheaply. "
  local text = para
  while #m:tokenize(text) < 1000 do text = text .. para end
  ids = m:tokenize(text)
  while #ids > 1000 do ids[#ids] = nil end
end

local gen = {
  max_new_tokens = opts.n_predict, num_beams = opts.beams, num_beam_groups = opts.groups,
  diversity_penalty = opts.groups > 1 and opts.diversity or 0.0, num_return_sequences = opts.beams,
}
if opts.fallback then
  gen.on_oom = {}
  for name in opts.fallback:gmatch("[^,]+") do gen.on_oom[#gen.on_oom + 1] = name end
end

local texts, out, stats = m:generate(ids, gen)
if not texts then
  io.stderr:write("error: ", tostring(out), "\n")
  os.exit(1)
end
for i = 1, math.min(opts.show, #texts) do
  io.write(string.format("[%d] %.4f %s\n", i, stats.sequences_scores[i], (texts[i]:gsub("\n", " "))))
end
local C = require("lrun.ffi").C
io.stderr:write(string.format("prompt %d tokens: prefill %.2f s; %d sequences: decode %.2f s; %d cache copies; "
  .. "device peak %.1f MiB\n", #ids, stats.prompt_seconds, #texts, stats.generate_seconds, stats.beam_copies or 0,
  tonumber(C.lrun_device_peak(C.lrun_model_device(m.handle))) / 1048576))
for _, f in ipairs(stats.fallbacks or {}) do
  io.stderr:write(string.format("fallback %s %s: %s\n", f.strategy, f.fired and "fired" or "declined", f.reason))
end
