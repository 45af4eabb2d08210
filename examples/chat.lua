-- chat.lua — a multi-turn chat with a model, keeping the conversation.
--
--   lrun examples/chat.lua -m model.gguf [-sys TEXT] [-n 256] [--temp 0.7]
--   printf 'Hi!\nWhat did I just say?\n' | lrun examples/chat.lua -m model.gguf --temp 0
--
-- The loop is lrun.cli_chat, the generate tool's conversation mode
-- (`lrun -m model.gguf -cnv`): /reset forgets the conversation, /quit (or
-- end of input) leaves. Works with a terminal (readline, history) and with
-- piped input alike.
local cli = require("lrun.cli")

local spec = cli.model_spec()
local opts = cli.parse_or_exit(arg, spec, "lrun examples/chat.lua -m FILE [options]")
cli.apply_escapes(opts)
local m = cli.load_or_exit(opts)
local gen = cli.generate_options(opts)
gen.max_new_tokens = gen.max_new_tokens or (m.n_ctx > 0 and m.n_ctx or m:info().n_ctx_train)
os.exit(require("lrun.cli_chat").run(m, opts, gen))
